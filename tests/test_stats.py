"""fastio.stats(): counters move by exactly the expected amounts, in both twins."""

import threading

import pytest

import fastio
from fastio import _stats
from fastio._stats import COMMON_FIELDS


def snapshot(fio, primitive):
    return _stats.snapshot(fio.IMPLEMENTATION)[primitive]


def delta(before, after):
    return {key: after[key] - before[key] for key in after if after[key] != before[key]}


def test_every_primitive_reports_the_common_fields(fio):
    counters = _stats.snapshot(fio.IMPLEMENTATION)
    assert {"transfer", "batch", "ring", "pool"} <= set(counters)
    for values in counters.values():
        assert set(COMMON_FIELDS) <= set(values)
        assert all(isinstance(v, int) and v >= 0 for v in values.values())


def test_public_stats_is_the_live_twin():
    assert fastio.stats() == _stats.snapshot(fastio.IMPLEMENTATION)


def test_stats_reset_zeroes_every_counter(fio, socketpair):
    a, _b = socketpair
    with fio.BatchWriter(a, closefd=False) as writer:
        writer.write(b"x" * 10)
    _stats.snapshot(fio.IMPLEMENTATION, reset=True)
    assert all(
        value == 0
        for values in _stats.snapshot(fio.IMPLEMENTATION).values()
        for value in values.values()
    )


def test_batch_counts_one_writev_for_three_small_writes(fio, socketpair):
    a, b = socketpair
    before = snapshot(fio, "batch")
    with fio.BatchWriter(a, closefd=False) as writer:
        for piece in (b"alpha", b"beta", b"gamma"):
            writer.write(piece)
    assert b.recv(100) == b"alphabetagamma"
    changed = delta(before, snapshot(fio, "batch"))
    assert changed["writes"] == 3
    assert changed["copied"] == 14
    assert changed["bytes"] == 14
    assert changed["syscalls"] == 1
    assert "referenced" not in changed and "partial" not in changed


def test_batch_counts_large_bytes_by_reference(fio, socketpair):
    a, b = socketpair
    body = bytes(range(256)) * 64  # 16 KiB: above copy_threshold
    before = snapshot(fio, "batch")
    with fio.BatchWriter(a, closefd=False) as writer:
        writer.write(b"head")
        writer.write(body)
    received = bytearray()
    while len(received) < len(body) + 4:
        received += b.recv(65536)
    assert bytes(received) == b"head" + body
    changed = delta(before, snapshot(fio, "batch"))
    assert changed["referenced"] == len(body)
    assert changed["copied"] == 4
    assert changed["bytes"] == len(body) + 4


def test_ring_counts_one_fill(fio, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(4096)
    a.sendall(b"0123456789")
    before = snapshot(fio, "ring")
    assert ring.fill(b) == 10
    changed = delta(before, snapshot(fio, "ring"))
    assert changed["fills"] == 1
    assert changed["received"] == 10
    assert changed["syscalls"] == 1
    ring.close()


def test_transfer_counts_one_sendfile(fio, socketpair, tmp_path):
    a, b = socketpair
    path = tmp_path / "data"
    path.write_bytes(b"z" * 1000)
    before = snapshot(fio, "transfer")
    with open(path, "rb") as f:
        assert fio.sendfile(a, f) == 1000
    received = bytearray()
    while len(received) < 1000:
        received += b.recv(4096)
    changed = delta(before, snapshot(fio, "transfer"))
    assert changed["calls"] == 1
    assert changed["bytes"] == 1000
    assert changed["sendfile_bytes"] == 1000
    assert "fallbacks" not in changed


def test_pool_counts_acquires_releases_and_waits(fio):
    pool = fio.Pool(object, max_size=1, close=lambda conn: None)
    before = snapshot(fio, "pool")
    conn = pool.acquire()
    waited = threading.Event()

    def waiter():
        waited.set()
        pool.release(pool.acquire(timeout=10))

    thread = threading.Thread(target=waiter)
    thread.start()
    waited.wait(10)
    while pool.stats().waiting == 0:
        threading.Event().wait(0.001)
    pool.release(conn)
    thread.join(10)
    changed = delta(before, snapshot(fio, "pool"))
    assert changed["acquires"] == 2
    assert changed["releases"] == 2
    assert changed["created"] == 1
    assert changed["waits"] == 1
    assert changed["wait_ns"] > 0
    pool.close()


@pytest.mark.parametrize("primitive", ["transfer", "batch", "ring", "pool"])
def test_both_twins_report_the_same_counter_names(primitive):
    from fastio import _impl

    if not _impl.native_available():
        pytest.skip("the native twin is not built here")
    assert set(_stats.snapshot("c")[primitive]) == set(_stats.snapshot("python")[primitive])
