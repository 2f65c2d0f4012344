"""Fault injection for tests: one schedule, for either twin.

``inject(implementation, seed=..., rate=... | nth=..., kinds=..., calls=...)`` is a context
manager that makes system calls fail or come up short on a schedule, and yields a ``Faults``
object whose ``counts()`` say what was injected:

- native twin (``"c"``): the hook of ``csrc/fastio_faults.h``, compiled only in a
  ``FASTIO_FAULTS=1`` build (``native_available()`` says whether this build has it);
- Python twin (``"python"``): a layer over ``_stats.add_layer`` wrapping the calls of the
  ``_stats.syscalls`` tables, available in every build.

Kinds (``KINDS``): ``eintr``, ``eagain``, ``short1`` (one byte), ``half`` (half the length),
``reset`` (EPIPE when sending, ECONNRESET otherwise), ``nomem`` (ENOBUFS when sending, ENOMEM
otherwise). Errors are injected before the real call, so they moved nothing. Both sides draw
their decisions from the same function of (seed, index of the matching call).

In Python, ``os``/``socket`` calls retry EINTR themselves (PEP 475): the layer models an
``eintr`` fault as that retry (the call proceeds; it is counted), since a Python twin can never
see ``InterruptedError`` from them unless a signal handler raises.

Release builds contain none of the native part; this module is pure Python and inert until
``inject`` is entered.
"""

import contextlib
import errno
import os
import threading

from fastio import _stats

__all__ = ["DATA_CALLS", "KINDS", "inject", "native_available"]

KINDS = ("eintr", "eagain", "short1", "half", "reset", "nomem")

#: The calls that move bytes (the default ``calls`` filter): the native wrapper names plus the
#: Python twins' socket methods.
DATA_CALLS = (
    "read",
    "write",
    "pread",
    "pwrite",
    "readv",
    "writev",
    "preadv",
    "recv",
    "recv_into",
    "recvmsg_into",
    "send",
    "sendmsg",
    "sendfile",
    "splice",
    "copy_file_range",
)

_SENDING = ("write", "send", "pwrite", "splice", "copy_file_range")
_MASK64 = (1 << 64) - 1


def native_available():
    """True when this build of the native twin has the fault hook (``FASTIO_FAULTS=1``)."""
    try:
        from fastio import _faults_c
    except ImportError:
        return False
    return bool(_faults_c.BUILT)


def _mix(x):
    """splitmix64, as in ``csrc/fastio_faults.h``."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _sending(name):
    return name.startswith(_SENDING)


class _Schedule:
    """The Python layer's decisions: the same arithmetic as ``fio_fault_pick``."""

    def __init__(self, seed, nth, rate, kinds, calls, max_faults):
        self.seed = seed & _MASK64
        self.nth = nth
        self.rate = min(int(rate * 4294967296.0), 4294967296)
        self.kinds = [k in kinds for k in KINDS]
        self.calls = None if calls is None else frozenset(calls)
        self.max_faults = max_faults
        self.lock = threading.Lock()
        self.counts = dict.fromkeys(("seen", "total", *KINDS), 0)

    def pick(self, name, length):
        """The kind to inject into this call (``length`` None: no length to shrink), or None."""
        if self.calls is not None and name not in self.calls:
            return None
        with self.lock:
            self.counts["seen"] += 1
            n = self.counts["seen"]
            r = _mix(self.seed ^ _mix(n))
            if (n != self.nth) if self.nth else ((r & 0xFFFFFFFF) >= self.rate):
                return None
            allowed = list(self.kinds)
            if length is None:
                allowed = [ok and k in ("eintr", "nomem") for ok, k in zip(allowed, KINDS)]
            elif length < 2:
                allowed[2] = allowed[3] = False
            choices = [k for ok, k in zip(allowed, KINDS) if ok]
            if not choices:
                return None
            if self.max_faults and self.counts["total"] >= self.max_faults:
                return None
            kind = choices[(r >> 32) % len(choices)]
            self.counts["total"] += 1
            self.counts[kind] += 1
            return kind


def _total(buffers):
    return sum(memoryview(b).nbytes for b in buffers)


def _cut(buffers, want):
    out = []
    for b in buffers:
        if want <= 0:
            break
        view = memoryview(b).cast("B")
        out.append(view[:want])
        want -= len(out[-1])
    return out or [memoryview(b"")]


# name -> (position of the length or data argument, how it is shrunk)
#   "n": an int length; "data": a bytes-like; "bufs": a list of bytes-likes
_SHAPES = {
    "read": (1, "n"),
    "pread": (1, "n"),
    "write": (1, "data"),
    "pwrite": (1, "data"),
    "readv": (1, "bufs"),
    "writev": (1, "bufs"),
    "preadv": (1, "bufs"),
    "recv": (1, "n"),
    "recv_into": (1, "data"),
    "recvmsg_into": (1, "bufs"),
    "send": (1, "data"),
    "sendmsg": (1, "bufs"),
    "sendfile": (3, "n"),
    "splice": (2, "n"),
    "copy_file_range": (2, "n"),
}


def _length(shape, args):
    pos, how = shape
    if len(args) <= pos:
        return None
    value = args[pos]
    if how == "n":
        return value if isinstance(value, int) and value >= 0 else None
    if how == "data":
        return memoryview(value).nbytes
    return _total(value)


def _shrink(shape, args, want):
    pos, how = shape
    value = args[pos]
    if how == "n":
        new = want
    elif how == "data":
        new = memoryview(value).cast("B")[:want]
    else:
        new = _cut(value, want)
    return (*args[:pos], new, *args[pos + 1 :])


def _layer(schedule):
    def factory(primitive, name, function):
        shape = _SHAPES.get(name)

        def faulty(*args, **kwargs):
            try:
                length = _length(shape, args) if shape is not None else None
                kind = schedule.pick(name, length)
                if kind is None or kind == "eintr":
                    return function(*args, **kwargs)  # eintr: the retry of PEP 475
                if kind in ("short1", "half"):
                    want = 1 if kind == "short1" else length // 2
                    return function(*_shrink(shape, args, want), **kwargs)
            finally:
                del args, kwargs  # a kept traceback must not pin the caller's buffers
            if kind == "eagain":
                code = errno.EAGAIN
            elif kind == "reset":
                code = errno.EPIPE if _sending(name) else errno.ECONNRESET
            else:
                code = errno.ENOBUFS if _sending(name) else errno.ENOMEM
            raise OSError(code, f"{os.strerror(code)} (injected)")

        faulty.__name__ = getattr(function, "__name__", name)
        return faulty

    return factory


class Faults:
    """What ``inject`` yields: ``counts()`` of the calls seen and faults injected."""

    def __init__(self, implementation, counts):
        self.implementation = implementation
        self._counts = counts

    def counts(self):
        """{"seen": matching calls, "total": faults, <kind>: faults of that kind}."""
        return dict(self._counts())


@contextlib.contextmanager
def inject(
    implementation,
    *,
    seed=0,
    nth=0,
    rate=0.0,
    kinds=KINDS,
    calls=DATA_CALLS,
    max_faults=0,
):
    """Inject faults into ``implementation``'s system calls ("c" or "python") while inside."""
    kinds = tuple(kinds)
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose among {KINDS}")
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate!r}")
    if implementation == "c":
        from fastio import _faults_c

        _faults_c.configure(
            seed=seed,
            nth=nth,
            rate=rate,
            kinds=kinds,
            calls=None if calls is None else list(calls),
            max_faults=max_faults,
        )
        try:
            yield Faults("c", _faults_c.counts)
        finally:
            _faults_c.disable()
    elif implementation == "python":
        schedule = _Schedule(seed, nth, rate, kinds, calls, max_faults)
        token = _stats.add_layer(_layer(schedule))
        try:
            yield Faults("python", lambda: schedule.counts)
        finally:
            _stats.remove_layer(token)
    else:
        raise ValueError(f"implementation must be 'c' or 'python', not {implementation!r}")
