"""What profiling costs when it is off: the system call indirections of both twins, measured.

Every system call of the native twins goes through a ``fio_*`` wrapper that checks the profile
flag (one relaxed load, one untaken branch); every system call of the Python twins goes through
``fastio._stats.syscalls(...)``, a table whose attributes are the plain ``os``/``socket``
functions outside ``profile()``. This scenario makes one-byte writes to ``/dev/null`` (the
cheapest real system call at hand) through each path, profile off and on, next to the bare call.
"""

import os

from fastio import _profile, _stats

from ._harness import ScenarioResult, Variant, compare, scenario

try:
    from fastio import _profile_c
except ImportError:
    _profile_c = None

__all__ = ["profile_overhead"]

# Module globals, as in the twins: ``os.write(...)`` is what a Python twin would write without
# the indirection, ``_calls.write(...)`` what it writes with it.
_calls = _stats.syscalls("bench")


def _profiled(run):
    """``run`` inside a ``profile()`` session (started and stopped around the round)."""

    def round_():
        session = _profile.profile().start()
        try:
            return run()
        finally:
            session.stop()

    return round_


def _overhead_note(results, label, bare_label, what):
    if label not in results or bare_label not in results:
        return None
    mine, bare = results[label], results[bare_label]
    extra = mine.median / bare.median - 1.0
    per_call = (mine.median - bare.median) / mine.units
    best = min(mine.times) / min(bare.times) - 1.0
    return (
        f"{what}: {extra * 100:+.1f}% per call ({per_call * 1e9:+.1f} ns) vs '{bare_label}' "
        f"(medians; best rounds {best * 100:+.1f}%)"
    )


@scenario("profile-overhead", "profile")
def profile_overhead(full=False):
    """One-byte writes to /dev/null: bare, through fastio's indirection (profile off), timed."""
    n = 200_000 if full else 20_000
    fd = os.open(os.devnull, os.O_WRONLY)
    data = b"x"
    steps = range(n)

    def bare():
        for _ in steps:
            os.write(fd, data)
        return n

    def table():
        for _ in steps:
            _calls.write(fd, data)
        return n

    variants = [
        Variant("os.write", bare, kind="stdlib"),
        Variant("python table, profile off", table, kind="fastio"),
    ]
    # Under an enclosing profile() session (`python -m fastio profile -m fastio bench`) timing
    # is on for every variant: the "off" figures then are not what they say; leave them out.
    if _profile.active():
        variants = [variants[0]]
    variants.append(Variant("python table, profile on", _profiled(table), kind="fastio"))
    if _profile_c is not None:
        loop = _profile_c._write_loop
        variants.append(Variant("C loop, bare write()", lambda: loop(fd, n, False), kind="c"))
        if not _profile.active():
            variants.append(
                Variant("C loop, fio_write, profile off", lambda: loop(fd, n, True), kind="fastio")
            )
        if _profile_c.HAVE_PROFILE:
            variants.append(
                Variant(
                    "C loop, fio_write, profile on",
                    _profiled(lambda: loop(fd, n, True)),
                    kind="fastio",
                )
            )
    try:
        results = compare(variants, rounds=41 if full else 21, units=n, unit_name="op")
    finally:
        os.close(fd)
    notes = [
        _overhead_note(results, "python table, profile off", "os.write", "profile off, Python"),
        _overhead_note(results, "python table, profile on", "os.write", "profile on, Python"),
        _overhead_note(
            results, "C loop, fio_write, profile off", "C loop, bare write()", "profile off, C"
        ),
        _overhead_note(
            results, "C loop, fio_write, profile on", "C loop, bare write()", "profile on, C"
        ),
    ]
    return ScenarioResult(
        "profile-overhead",
        f"profile overhead: {n} one-byte writes to /dev/null",
        results,
        per_op=n,
        notes=[note for note in notes if note],
    )
