"""Command line: ``python -m fastio info|bench|profile``.

- ``info [--json]``: the live implementation and the platform fast paths it found.
- ``bench [--quick|--full] [--only NAMES] [--rounds N] [--json FILE] [--plot FILE.png]
  [--list]``: every primitive's benchmark scenarios side by side with the standard-library
  ways (see ``fastio/bench/_run.py`` for the JSON keys).
- ``profile [--json FILE] (script.py | -m module) [args...]``: run a program under
  ``fastio.profile()`` and print its system call report (to stderr) when it ends, also when
  it raises or is interrupted.
"""

import argparse
import json
import os
import sys


def _format_value(value):
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if value is None:
        return "-"
    return str(value)


def _cmd_info(args):
    import fastio

    facts = fastio.info()
    if args.json:
        print(json.dumps(facts, indent=2, sort_keys=True))
        return 0
    width = max(len(key) for key in facts)
    print(f"fastio {fastio.__version__}")
    for key, value in facts.items():
        print(f"  {key:<{width}}  {_format_value(value)}")
    return 0


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")


def _cmd_bench(args):
    from fastio.bench import _harness, _run

    registry = _run.load_scenarios(sys.stderr)
    if args.list:
        for name, (primitive, function) in registry.items():
            doc = (function.__doc__ or "").strip().splitlines()
            print(f"{name:<26} {primitive:<10} {doc[0] if doc else ''}")
        return 0
    names = [n.strip() for n in (args.only or "").split(",") if n.strip()]
    if args.only is not None and not names:
        args.parser.error("--only needs at least one scenario or primitive name")
    try:
        selected = _run.select(names)
    except ValueError as exc:
        args.parser.error(str(exc))
    if not selected:
        print("no benchmark scenario is registered", file=sys.stderr)
        return 1
    pyplot = None
    if args.plot:
        pyplot = _run.plot_backend()
        if pyplot is None:
            print(f"fastio bench: {_run.MATPLOTLIB_MISSING}", file=sys.stderr)
            return 1
    _harness.ROUNDS_OVERRIDE = args.rounds
    report = _run.run(selected, full=args.full)
    if args.json:
        _write_json(args.json, report)
        print(f"wrote {args.json}")
    if pyplot is not None and report["scenarios"]:
        _run.plot(report, args.plot, pyplot)
        print(f"wrote {args.plot}")
    if report["interrupted"]:
        return 130
    return 1 if report["errors"] else 0


def _exit_status(code):
    """The process status ``sys.exit(code)`` would give, printing a message as Python does."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _cmd_profile(args):
    import runpy
    import traceback

    import fastio

    target = args.target
    if args.module:
        sys.argv = [target, *args.args]

        def program():
            runpy.run_module(target, run_name="__main__", alter_sys=True)

    else:
        if not os.path.isfile(target):
            args.parser.error(f"can't open file {target!r}: no such file")
        sys.argv = [target, *args.args]
        # As `python script.py` does: the script's directory first on sys.path.
        sys.path[0] = os.path.dirname(os.path.abspath(target))

        def program():
            runpy.run_path(target, run_name="__main__")

    session = fastio.profile()
    status = 0
    session.start()
    try:
        program()
    except SystemExit as exc:
        status = _exit_status(exc.code)
    except KeyboardInterrupt:
        print("KeyboardInterrupt", file=sys.stderr)
        status = 130  # as a shell reports a program ended by SIGINT
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        report = session.stop()
        sys.stdout.flush()
        print(f"\n{report}", file=sys.stderr, flush=True)
        if args.json:
            _write_json(args.json, report.as_dict())
    return status


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastio", description="fastio: native I/O primitives for Python."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    info = commands.add_parser("info", help="show the implementation and platform fast paths")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_cmd_info)

    bench = commands.add_parser(
        "bench",
        help="benchmark fastio against the standard-library ways, side by side",
        description="Runs each primitive's scenarios: fastio native, fastio Python twin and "
        "the standard-library ways, in alternating rounds in this one process; prints median "
        "time, spread, throughput and the ratio against the best standard-library way.",
    )
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="full",
        action="store_false",
        help="small sizes, about a minute in all (the default)",
    )
    mode.add_argument("--full", dest="full", action="store_true", help="the thorough run")
    bench.add_argument(
        "--only",
        metavar="NAMES",
        help="comma-separated scenario or primitive names (see --list)",
    )
    bench.add_argument(
        "--rounds", type=_positive_int, metavar="N", help="rounds per comparison (override)"
    )
    bench.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    bench.add_argument(
        "--plot", metavar="FILE.png", help="draw the ratios as a bar chart (needs matplotlib)"
    )
    bench.add_argument("--list", action="store_true", help="list the scenarios and exit")
    bench.set_defaults(run=_cmd_bench, parser=bench, full=False)

    profile = commands.add_parser(
        "profile",
        help="run a program under fastio.profile() and report its system calls",
        description="Runs a Python program (as `python script.py` or `python -m module` "
        "would) with every system call of fastio's primitives timed; prints the latency "
        "report to stderr when the program ends, raises or is interrupted. The exit status "
        "is the program's (130 after Ctrl-C, 1 after an uncaught exception).",
    )
    profile.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    profile.add_argument(
        "-m", dest="module", action="store_true", help="run TARGET as a module (like python -m)"
    )
    profile.add_argument("target", metavar="TARGET", help="script path, or module name with -m")
    profile.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    profile.set_defaults(run=_cmd_profile, parser=profile)
    return parser


def main(argv=None):
    """Entry point of ``python -m fastio`` and the ``fastio`` script."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except BrokenPipeError:
        # The reader went away (``python -m fastio info | head``): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
