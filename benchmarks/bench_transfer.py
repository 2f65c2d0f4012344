"""Side-by-side benchmark of fastio's transfer primitive at the issue's sizes.

Runs every transfer scenario with ``full=True`` (20,000 sends of 4 KiB files, 1 GiB files and
relays), prints the tables and each issue target with the measured ratio. No assertion on
timing: the figures are the result. ``--quick`` runs the small forms; scenario names as
arguments select some of them.

    python benchmarks/bench_transfer.py [--quick] [sendfile-4k sendfile-bulk relay ...]
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import fastio
from fastio.bench import _harness
from fastio.bench import transfer as _transfer  # noqa: F401  (registers the scenarios)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios to run (default: all of transfer)")
    parser.add_argument("--quick", action="store_true", help="the small, quick sizes")
    args = parser.parse_args(argv)
    names = [n for n, (primitive, _) in _harness.SCENARIOS.items() if primitive == "transfer"]
    unknown = set(args.names) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {names}")
    info = fastio.info()
    print(
        f"fastio {fastio.__version__}, implementation {info['implementation']}, "
        f"Python {info['python']}, {info['platform']} {info['machine']}, "
        f"{os.cpu_count()} cores, pipe-max-size {info['pipe_max_size']}"
    )
    for name in args.names or names:
        started = time.perf_counter()
        result = _harness.SCENARIOS[name][1](full=not args.quick)
        print()
        print(result.format())
        print(f"  ({time.perf_counter() - started:.1f} s)")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
