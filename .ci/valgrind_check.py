"""Fail on valgrind memcheck reports that involve fastio's native code.

Usage: python .ci/valgrind_check.py LOG...   (logs of ``valgrind --log-file=...``)

A report (invalid read/write/free, uninitialised value, definite leak) counts when any frame of
its stack, or of the origin of an uninitialised value, is in a fastio extension module or in
``csrc/``: the interpreter's own noise is printed as a count, not judged (see
valgrind-python.supp for what is suppressed outright).
"""

import re
import sys

OURS = re.compile(r"fastio/_\w+_c\.|fastio/_policy\.|csrc/fastio_|\bfio_\w+|_c\.pyx:|_c\.c:")
HEAD = re.compile(r"^==\d+==(.*)$")


def records(text):
    """The blank-line separated blocks of a valgrind log, without the ==pid== prefix."""
    block = []
    for line in text.splitlines():
        match = HEAD.match(line)
        if match is None:
            continue
        content = match.group(1)
        if content.strip():
            block.append(content)
        elif block:
            yield block
            block = []
    if block:
        yield block


def main(paths):
    bad, noise, finished = [], 0, 0
    for path in paths:
        with open(path, errors="replace") as f:
            text = f.read()
        if "ERROR SUMMARY" in text:
            finished += 1  # (a forked child that exec'd another program leaves only a header)
        for block in records(text):
            first = block[0].strip()
            is_error = (
                first.startswith(
                    (
                        "Invalid",
                        "Use of uninitialised",
                        "Conditional jump",
                        "Syscall param",
                        "Mismatched free",
                        "Source and destination overlap",
                    )
                )
                or "definitely lost" in first
            )
            if not is_error or first.startswith("definitely lost:"):
                continue
            if any(OURS.search(line) for line in block):
                bad.append((path, block))
            else:
                noise += 1
    if finished == 0:
        print("no log has an ERROR SUMMARY: valgrind did not finish", file=sys.stderr)
        return 2
    for path, block in bad:
        print(f"--- {path}", *block, sep="\n", file=sys.stderr)
    print(f"valgrind: {len(bad)} report(s) from fastio's code, {noise} from the interpreter")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
