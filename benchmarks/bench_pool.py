"""Side-by-side pool benchmark (issue 6): fastio's twins against a ``queue.LifoQueue`` pool
(urllib3's way) and a ``threading.Lock`` + list pool, in one process, alternating rounds.

Prints each table and states every target of the issue with the measured figure. Absolute
times on shared machines are noise; the ratios and the wait distribution are the figures.
Run from the source tree after ``python setup.py build_ext --inplace``:

    python benchmarks/bench_pool.py [--quick] [--json]
"""

import argparse
import json
import sys

from fastio.bench import pool


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick sizes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    results = [scenario(full=not args.quick) for scenario in (pool.uncontended, pool.contended)]
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        for result in results:
            print(result.format())
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
