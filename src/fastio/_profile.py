"""``fastio.profile()``: time every system call the primitives make, per primitive and call.

Two layers record, whichever twins run in the process:

- the native twins' ``fio_*`` wrappers (``csrc/fastio_profile.h``): a flag checked by one
  predictable branch per call, histograms updated with relaxed atomics (C threads without the
  GIL record too), owned by ``fastio._profile_c``;
- the Python twins' system call tables (``fastio._stats.syscalls``): inside ``profile()`` each
  table's functions are swapped for timing wrappers, and put back when it ends.

Outside ``profile()`` nothing is timed: the C branch is not taken and the Python tables hold
the plain ``os``/``socket`` functions. Histograms are log-linear (exact below 8 ns, then eight
buckets per power of two, each at most 12.5 % wide), so percentiles are within about 6 %.
"""

import math
import threading
import time

from . import _stats

try:
    from . import _profile_c as _native
except ImportError:  # a pure-Python install: only the Python twins can be timed
    _native = None

__all__ = ["CallStats", "Profile", "ProfileReport", "active", "profile"]

SUB_BITS = 3  # _Cell.add inlines bucket_index() for this value
MAX_BITS = 40
BUCKETS = (MAX_BITS - SUB_BITS + 1) << SUB_BITS
_SUB_MASK = (1 << SUB_BITS) - 1


def bucket_index(ns):
    """The histogram bucket of a latency of ``ns`` nanoseconds (as in fastio_profile.h)."""
    if ns < (1 << SUB_BITS):
        return max(ns, 0)
    exponent = ns.bit_length() - 1
    if exponent >= MAX_BITS:
        return BUCKETS - 1
    return ((exponent - SUB_BITS + 1) << SUB_BITS) + ((ns >> (exponent - SUB_BITS)) & _SUB_MASK)


def bucket_bounds(index):
    """``(low, high)``: the latencies (ns) bucket ``index`` holds, ``low <= ns < high``."""
    if index < (1 << SUB_BITS):
        return index, index + 1
    exponent = (index >> SUB_BITS) + SUB_BITS - 1
    width = 1 << (exponent - SUB_BITS)
    low = ((1 << SUB_BITS) + (index & _SUB_MASK)) * width
    return low, low + width


if _native is not None:
    assert _native.BUCKETS == BUCKETS, "fastio_profile.h and _profile.py disagree"


# ---- Python layer ----


class _Cell:
    """Histogram of one (primitive, call) of the Python twins (updated with the GIL held)."""

    __slots__ = ("buckets", "count", "errors", "max_ns", "total_ns")

    def __init__(self):
        self.reset()

    def reset(self):
        self.count = self.errors = self.total_ns = self.max_ns = 0
        self.buckets = {}

    def add(self, ns, failed):
        self.count += 1
        self.total_ns += ns
        if ns > self.max_ns:
            self.max_ns = ns
        if failed:
            self.errors += 1
        # bucket_index(), inlined: this runs once per timed call
        if ns < 8:
            index = ns if ns > 0 else 0
        else:
            exponent = ns.bit_length() - 1
            if exponent >= MAX_BITS:
                index = BUCKETS - 1
            else:
                index = ((exponent - 2) << 3) + ((ns >> (exponent - 3)) & 7)
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1


_cells = {}  # (primitive, call) -> _Cell
_clock = time.perf_counter_ns


def _timing_layer(primitive, name, function):
    cell = _cells.get((primitive, name))
    if cell is None:
        cell = _cells[(primitive, name)] = _Cell()
    clock = _clock

    def timed(*args, **kwargs):
        start = clock()
        try:
            result = function(*args, **kwargs)
        except BaseException:
            cell.add(clock() - start, True)
            raise
        finally:
            del args, kwargs  # a kept traceback must not pin the caller's buffers
        cell.add(clock() - start, False)
        return result

    timed.__name__ = getattr(function, "__name__", name)
    timed.__wrapped__ = function
    return timed


# ---- report ----


def _human_ns(ns):
    if ns < 1e3:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.1f}us"
    if ns < 1e9:
        return f"{ns / 1e6:.2f}ms"
    return f"{ns / 1e9:.2f}s"


class CallStats:
    """Latencies of one system call of one primitive, in one layer ("c" or "python")."""

    __slots__ = ("buckets", "call", "count", "errors", "layer", "max_ns", "primitive", "total_ns")

    def __init__(self, layer, primitive, call, count, errors, total_ns, max_ns, buckets):
        self.layer = layer
        self.primitive = primitive
        self.call = call
        self.count = count
        self.errors = errors
        self.total_ns = total_ns
        self.max_ns = max_ns
        self.buckets = dict(buckets)  # {bucket index: count}

    @property
    def mean_ns(self):
        return self.total_ns / self.count if self.count else 0.0

    def percentile(self, q):
        """Latency (ns) below which a fraction ``q`` of the calls fell (bucket midpoint)."""
        if not self.count:
            return 0.0
        target = max(1, math.ceil(q * self.count))
        if target >= self.count:
            return float(self.max_ns)  # the slowest call is known exactly
        seen = 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= target:
                low, high = bucket_bounds(index)
                middle = low if high - low == 1 else (low + high) / 2
                return float(min(middle, self.max_ns))
        return float(self.max_ns)

    p50_ns = property(lambda self: self.percentile(0.50))
    p90_ns = property(lambda self: self.percentile(0.90))
    p99_ns = property(lambda self: self.percentile(0.99))

    def as_dict(self):
        return {
            "layer": self.layer,
            "primitive": self.primitive,
            "call": self.call,
            "count": self.count,
            "errors": self.errors,
            "total_ns": self.total_ns,
            "mean_ns": self.mean_ns,
            "p50_ns": self.p50_ns,
            "p90_ns": self.p90_ns,
            "p99_ns": self.p99_ns,
            "max_ns": self.max_ns,
            "buckets": [[*bucket_bounds(i), n] for i, n in sorted(self.buckets.items())],
        }

    def __repr__(self):
        return (
            f"<CallStats {self.layer}/{self.primitive}/{self.call}: {self.count} calls, "
            f"p50 {_human_ns(self.p50_ns)}, max {_human_ns(self.max_ns)}>"
        )


class ProfileReport:
    """What one ``profile()`` session timed: one ``CallStats`` per (layer, primitive, call).

    Empty while the session runs; filled when it ends. ``str(report)`` is a table (largest
    total time first); ``as_dict()`` the same as JSON-ready data; ``report.get(primitive,
    call)`` one row; iterating yields the rows.
    """

    def __init__(self):
        self.calls = []
        self.duration = 0.0
        self.complete = False

    def get(self, primitive, call, layer=None):
        """The ``CallStats`` of ``call`` made by ``primitive`` (in ``layer`` if given), or None."""
        for row in self.calls:
            if row.primitive == primitive and row.call == call:
                if layer is None or row.layer == layer:
                    return row
        return None

    def __iter__(self):
        return iter(self.calls)

    def __len__(self):
        return len(self.calls)

    def as_dict(self):
        return {
            "duration_s": self.duration,
            "calls": [row.as_dict() for row in self.calls],
        }

    def format(self):
        total = sum(row.count for row in self.calls)
        lines = [f"fastio profile: {total} system calls timed during {self.duration:.3f} s"]
        if not self.calls:
            lines.append("  (no system call was made by fastio's primitives)")
            return "\n".join(lines)
        lines.append(
            f"  {'layer':<6} {'primitive':<9} {'call':<15} {'calls':>8} {'errors':>7} "
            f"{'total':>9} {'mean':>8} {'p50':>8} {'p90':>8} {'p99':>8} {'max':>8}"
        )
        for row in self.calls:
            lines.append(
                f"  {row.layer:<6} {row.primitive:<9} {row.call:<15} {row.count:>8} "
                f"{row.errors:>7} {_human_ns(row.total_ns):>9} {_human_ns(row.mean_ns):>8} "
                f"{_human_ns(row.p50_ns):>8} {_human_ns(row.p90_ns):>8} "
                f"{_human_ns(row.p99_ns):>8} {_human_ns(row.max_ns):>8}"
            )
        return "\n".join(lines)

    __str__ = format

    def __repr__(self):
        return f"<ProfileReport: {len(self.calls)} rows, {self.duration:.3f} s>"


# ---- session ----

_session_lock = threading.Lock()
_depth = 0  # sessions running; timing is on while it is above zero
_token = None  # the Python timing layer while timing is on


def _read_all():
    """Every non-empty histogram of both layers: {(layer, primitive, call): row dict}."""
    rows = {}
    if _native is not None:
        for row in _native.read():
            rows[("c", row["primitive"], row["call"])] = row
    for (primitive, call), cell in list(_cells.items()):
        if cell.count:
            rows[("python", primitive, call)] = {
                "primitive": primitive,
                "call": call,
                "count": cell.count,
                "errors": cell.errors,
                "total_ns": cell.total_ns,
                "max_ns": cell.max_ns,
                "buckets": dict(cell.buckets),
            }
    return rows


def _difference(end, start):
    """What was recorded between two ``_read_all()`` readings, as ``CallStats``."""
    rows = []
    for (layer, primitive, call), now in end.items():
        before = start.get((layer, primitive, call))
        if before is None:
            rows.append(CallStats(layer, **now))
            continue
        count = now["count"] - before["count"]
        if count <= 0:
            continue
        buckets = {
            i: n - before["buckets"].get(i, 0)
            for i, n in now["buckets"].items()
            if n > before["buckets"].get(i, 0)
        }
        max_ns = now["max_ns"]
        if max_ns <= before["max_ns"] and buckets:
            # The slowest call predates this (nested) session: bound it by its bucket.
            max_ns = min(max_ns, bucket_bounds(max(buckets))[1] - 1)
        rows.append(
            CallStats(
                layer,
                primitive,
                call,
                count,
                now["errors"] - before["errors"],
                now["total_ns"] - before["total_ns"],
                max_ns,
                buckets,
            )
        )
    return rows


class Profile:
    """One profiling session; see ``profile()``."""

    def __init__(self):
        self.report = ProfileReport()
        self._started = None
        self._baseline = None
        self._running = False

    def start(self):
        """Start timing (the report covers from here to ``stop()``). Returns self."""
        global _depth, _token
        with _session_lock:
            if self._started is not None:
                raise RuntimeError("this profile() session was already started")
            if _depth == 0:
                for cell in _cells.values():
                    cell.reset()
                if _native is not None:
                    _native.reset()
                    _native.enable()
                _token = _stats.add_layer(_timing_layer)
            _depth += 1
            self._running = True
            self._baseline = _read_all()
            self._started = time.perf_counter()
        return self

    def stop(self):
        """Stop this session and fill (and return) ``self.report``. Stopping twice is harmless.

        Timing goes off when the last running session stops.
        """
        global _depth, _token
        with _session_lock:
            if not self._running:
                return self.report
            duration = time.perf_counter() - self._started
            end = _read_all()
            self._running = False
            _depth -= 1
            if _depth == 0:
                if _native is not None:
                    _native.disable()
                _stats.remove_layer(_token)
                _token = None
            rows = _difference(end, self._baseline)
            rows.sort(key=lambda row: (-row.total_ns, row.layer, row.primitive, row.call))
            self.report.calls = rows
            self.report.duration = duration
            self.report.complete = True
        return self.report

    def __enter__(self):
        self.start()
        return self.report

    def __exit__(self, *exc_info):
        self.stop()
        return False


def active():
    """Whether a ``profile()`` session is running in this process."""
    return _depth > 0


def profile():
    """Time every system call fastio's primitives make, with latency histograms.

    Use it as a context manager; the ``as`` target is the report, filled when the block ends::

        with fastio.profile() as report:
            serve_some_requests()
        print(report)              # table: calls, errors, total, mean, p50, p90, p99, max
        report.as_dict()           # the same as data (JSON-ready)

    or explicitly: ``p = fastio.profile().start(); ...; report = p.stop()``. Sessions may nest
    or overlap (a script using ``profile()`` under ``python -m fastio profile``): each reports
    the calls made while it ran. Both twins are timed: the native ``fio_*`` wrappers (layer
    ``"c"``, threads running without the GIL included) and the Python twins' calls (layer
    ``"python"``). Outside every session nothing is timed.
    """
    return Profile()
