"""Side-by-side benchmark of fastio's ring (issue 5), at the issue's full sizes.

Loopback TCP, 1,000,000 length-prefixed frames of 16 to 512 random bytes: ``Reader.read_frame``
against a ``bytearray`` accumulate-and-slice parser, ``asyncio.StreamReader.readexactly`` pairs
and ``sock.makefile('rb').read`` pairs; then 1,000,000 lines: ``Reader.readline`` against
``sock.makefile('rb').readline``. Variants alternate in one process; the ratios are the figures
(absolute times on a shared machine are noise). Prints each issue target with its measured
ratio; it asserts nothing about timing.

    python benchmarks/bench_ring.py [--quick] [--json FILE]
"""

import argparse
import json
import sys

from fastio.bench import ring


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    import fastio

    print(f"fastio {fastio.__version__}, live implementation {fastio.IMPLEMENTATION}")
    results = []
    for run in (ring.frames, ring.lines):
        result = run(full=not args.quick)
        results.append(result)
        print(result.format())
        print()
    if args.json:
        with open(args.json, "w") as f:
            json.dump([r.as_dict() for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
