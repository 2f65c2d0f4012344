"""fastio.profile(): system call timing in both twins, and the indirection it rests on."""

import json
import os
import threading

import pytest

import fastio
from fastio import _impl, _profile, _stats

try:
    from fastio import _profile_c
except ImportError:
    _profile_c = None

LAYER = {"c": "c", "python": "python"}


def probe_of(fio):
    return _impl.twin_module("sys", fio.IMPLEMENTATION).probe


def test_probe_calls_are_timed_in_both_twins(fio):
    # The sys twins probe sendfile/splice/copy_file_range with invalid fds: each call fails
    # (EBADF, or ENOSYS where missing) and is counted as one call with one error.
    with fastio.profile() as report:
        assert len(report) == 0 and not report.complete  # filled when the block ends
        fio.probe()
    assert report.complete
    row = report.get("sys", "sendfile", layer=LAYER[fio.IMPLEMENTATION])
    assert row is not None, str(report)
    assert (row.count, row.errors) == (1, 1)
    assert 0 < row.max_ns == row.total_ns
    assert "sendfile" in str(report) and "p99" in str(report)


def test_nothing_is_timed_outside_profile(fio):
    with fastio.profile() as report:
        pass
    fio.probe()
    assert len(report) == 0
    with fastio.profile() as second:
        pass
    assert len(second) == 0, str(second)  # the probe above left nothing behind
    assert _stats.syscalls("sys").sendfile is os.sendfile
    if _profile_c is not None:
        assert not _profile_c.enabled()


def test_python_table_counts_real_writes_and_errors():
    calls = _stats.syscalls("test-table")
    r, w = os.pipe()
    try:
        with fastio.profile() as report:
            for _ in range(5):
                assert calls.write(w, b"abc") == 3
            assert calls.read(r, 15) == b"abc" * 5
            os.close(r)
            with pytest.raises(BrokenPipeError):
                calls.write(w, b"x")  # the error passes through unchanged, and is counted
    finally:
        os.close(w)
    write = report.get("test-table", "write", layer="python")
    assert (write.count, write.errors) == (6, 1)
    assert report.get("test-table", "read").count == 1
    assert write.p50_ns <= write.p90_ns <= write.p99_ns <= write.max_ns
    assert write.total_ns >= write.max_ns > 0
    data = json.loads(json.dumps(report.as_dict()))
    assert set(data) == {"duration_s", "calls"}
    row = next(r for r in data["calls"] if r["primitive"] == "test-table" and r["call"] == "write")
    assert {"layer", "count", "errors", "p50_ns", "p90_ns", "p99_ns", "max_ns", "buckets"} <= set(
        row
    )
    assert sum(n for _, _, n in row["buckets"]) == 6
    assert calls.write is os.write  # the plain function is back


@pytest.mark.skipif(_profile_c is None, reason="the native twin did not build")
def test_native_threads_without_the_gil_lose_no_count():
    fd = os.open(os.devnull, os.O_WRONLY)
    per_thread = 20_000
    try:
        with fastio.profile() as report:
            threads = [
                threading.Thread(target=_profile_c._write_loop, args=(fd, per_thread, True))
                for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        assert _profile_c._write_loop(fd, 100, True) == 100  # after the block: not counted
    finally:
        os.close(fd)
    row = report.get("bench", "write", layer="c")
    assert row.count == 4 * per_thread and row.errors == 0
    assert sum(row.buckets.values()) == row.count
    # The C histogram layout is the Python one: bounds of the buckets bracket the totals.
    low = sum(_profile.bucket_bounds(i)[0] * n for i, n in row.buckets.items())
    high = sum(_profile.bucket_bounds(i)[1] * n for i, n in row.buckets.items())
    assert low <= row.total_ns <= high
    top_low, top_high = _profile.bucket_bounds(max(row.buckets))
    assert top_low <= row.max_ns < top_high


def test_sessions_nest_and_explicit_start_stop():
    calls = _stats.syscalls("test-nest")
    r, w = os.pipe()
    try:
        outer = fastio.profile().start()
        calls.write(w, b"a")
        with fastio.profile() as inner:
            calls.write(w, b"bc")
            calls.write(w, b"de")
        calls.write(w, b"f")
        assert calls.write is not os.write  # timing stays on for the outer session
        report = outer.stop()
        assert calls.read(r, 10) == b"abcdef"  # not timed: every session ended
    finally:
        os.close(r)
        os.close(w)
    assert inner.get("test-nest", "write").count == 2
    assert report is outer.report and report.complete
    assert report.get("test-nest", "write").count == 4
    assert report.get("test-nest", "read") is None
    assert outer.stop() is report  # stopping twice is harmless
    with pytest.raises(RuntimeError, match="already started"):
        outer.start()
    assert not _profile.active() and calls.write is os.write


def test_session_ends_when_the_block_raises():
    calls = _stats.syscalls("test-raise")
    fds = []
    with pytest.raises(ZeroDivisionError), fastio.profile() as report:
        fds += calls.pipe()
        1 / 0  # noqa: B018
    for fd in fds:
        os.close(fd)
    assert report.complete and report.get("test-raise", "pipe").count == 1
    assert calls.pipe is os.pipe
    with fastio.profile():  # the session was released
        pass


def test_layers_stack_and_come_off():
    # The same indirection serves fault injection: a layer that sees every call.
    seen = []

    def spy(primitive, name, function):
        def wrapper(*args, **kwargs):
            seen.append((primitive, name))
            return function(*args, **kwargs)

        return wrapper

    calls = _stats.syscalls("test-layers")
    token = _stats.add_layer(spy)
    try:
        with fastio.profile() as report:
            r, w = calls.pipe()
            calls.write(w, b"x")
            os.close(r)
            os.close(w)
    finally:
        _stats.remove_layer(token)
    assert seen == [("test-layers", "pipe"), ("test-layers", "write")]
    assert report.get("test-layers", "write").count == 1
    assert calls.write is os.write and calls.pipe is os.pipe


def test_missing_call_is_an_enosys_stub():
    stub = _stats._missing("frobnicate")
    with pytest.raises(OSError) as info:
        stub(1, 2)
    assert info.value.errno == __import__("errno").ENOSYS


def test_bucket_layout():
    for ns in [*range(0, 3000), *(2**k + d for k in range(3, 40) for d in (-1, 0, 1))]:
        index = _profile.bucket_index(ns)
        low, high = _profile.bucket_bounds(index)
        assert low <= ns < high
        assert high - low <= max(1, low // 8)  # at most 12.5% wide
    assert _profile.bucket_index(2**50) == _profile.BUCKETS - 1
    if _profile_c is not None:
        assert _profile_c.BUCKETS == _profile.BUCKETS


def test_percentiles_from_the_histogram():
    values = [1000] * 50 + [2000] * 40 + [10_000] * 9 + [100_000]
    buckets = {}
    for v in values:
        i = _profile.bucket_index(v)
        buckets[i] = buckets.get(i, 0) + 1
    row = _profile.CallStats("python", "p", "c", len(values), 0, sum(values), max(values), buckets)
    for q, expected in ((0.5, 1000), (0.9, 2000), (0.99, 10_000), (1.0, 100_000)):
        assert abs(row.percentile(q) - expected) <= expected * 0.0625, (q, row.percentile(q))
    assert row.max_ns == 100_000 and row.mean_ns == sum(values) / 100


def test_stats_still_returns_the_live_twins_counters():
    snapshot = fastio.stats()
    assert isinstance(snapshot, dict)
    for primitive, counters in snapshot.items():
        assert set(_stats.COMMON_FIELDS) <= set(counters), primitive
