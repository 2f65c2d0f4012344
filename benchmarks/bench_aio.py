"""Side-by-side asyncio benchmark (issue 7): ``fastio.aio`` over both twins against the asyncio
ways (``loop.sock_sendfile``, a streams relay, ``StreamReader.readexactly`` pairs, an
``asyncio.Queue`` pool), in one process, alternating rounds, on the default asyncio loop.

Prints each table and states every target of the issue with the measured ratio. Absolute
times on shared machines are noise; the ratios are the figures. Run from the source tree
after ``python setup.py build_ext --inplace``:

    python benchmarks/bench_aio.py [--quick] [--json] [--only NAME ...]
"""

import argparse
import json
import sys

from fastio.bench import aio

SCENARIOS = {
    "sendfile": aio.sendfile_small,
    "relay": aio.relay_many,
    "frames": aio.frames,
    "pool": aio.pool_pairs,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick sizes")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="some scenarios")
    args = parser.parse_args(argv)
    results = []
    for name in args.only or SCENARIOS:
        result = SCENARIOS[name](full=not args.quick)
        results.append(result)
        if not args.json:
            print(result.format())
            print(flush=True)
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
