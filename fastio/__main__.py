"""Command line: ``python -m fastio info [--json]``."""

import argparse
import json
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


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m fastio", description="fastio: native I/O primitives for Python."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    info = commands.add_parser("info", help="show the implementation and platform fast paths")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(run=_cmd_info)
    return parser


def main(argv=None):
    """Entry point of ``python -m fastio`` and the ``fastio`` script."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
