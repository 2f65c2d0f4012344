"""BatchWriter side by side with the standard-library ways (and a C loop), full sizes.

Run from the source tree after ``python setup.py build_ext --inplace``::

    python benchmarks/bench_batch.py            # the issue's sizes (a minute or two)
    python benchmarks/bench_batch.py --quick    # smaller, a few seconds

Prints each table and, under it, every target of the issue with the measured ratio. Ratios
are the figures (absolute times on a shared machine are noise); nothing here asserts timing.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastio import IMPLEMENTATION, info
from fastio.bench import batch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument(
        "--only", choices=("write", "writelines", "mixed"), action="append", help="one scenario"
    )
    args = parser.parse_args(argv)
    facts = info()
    print(
        f"fastio BatchWriter benchmark: implementation {IMPLEMENTATION}, "
        f"python {facts['python']}, IOV_MAX {facts['iov_max']}, {os.cpu_count()} CPUs"
    )
    scenarios = {
        "write": batch.write_per_message,
        "writelines": batch.writelines_list,
        "mixed": batch.mixed_sizes,
    }
    for name in args.only or scenarios:
        result = scenarios[name](full=not args.quick)
        print()
        print(result.format(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
