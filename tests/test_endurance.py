"""Leak checks: each primitive 100,000 times in a loop, and nothing grows.

After a warm-up, the open fds must be the same, the traced Python allocations (tracemalloc)
and the process's resident memory must stay flat over 100,000 more operations, constructions
included. Marked ``slow`` (seconds each); .ci/run runs them with the rest of the suite. The
pool's 32-thread endurance run with random failures is ``test_pool.py::
test_32_threads_on_4_connections`` (counters that add up, nothing leaked or closed twice).
"""

import gc
import os
import socket
import tracemalloc

import pytest
from conftest import open_fds

pytestmark = pytest.mark.slow

ROUNDS = 100_000
WARMUP = 5_000
#: Allowed growth over the measured rounds: far below one leaked byte per round, well above
#: the noise of free lists and caches.
TRACED_SLACK = 64 * 1024
RSS_SLACK = 8 * 1024 * 1024


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def steady(step, rounds=ROUNDS):
    """Run ``step(i)`` WARMUP times, then ``rounds`` times, and check nothing grew: fds and
    resident memory over all the rounds, traced Python allocations over the last tenth (with
    tracemalloc on all along, the Python twins would take minutes)."""
    for i in range(WARMUP):
        step(i)
    gc.collect()
    fds, resident = open_fds(), rss()
    traced_rounds = rounds // 10
    for i in range(rounds - traced_rounds):
        step(i)
    tracemalloc.start()
    try:
        for i in range(WARMUP // 5):  # let tracemalloc's own tables settle
            step(i)
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        for i in range(traced_rounds):
            step(i)
        gc.collect()
        grown_traced = tracemalloc.get_traced_memory()[0] - traced
    finally:
        tracemalloc.stop()
    gc.collect()
    grown_rss = rss() - resident
    assert open_fds() == fds
    assert grown_traced < TRACED_SLACK, f"traced memory grew by {grown_traced} bytes"
    assert grown_rss < RSS_SLACK, f"resident memory grew by {grown_rss} bytes"


def test_ring_write_drain_fill_read_100k(fio, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(4096)
    data = bytes(range(256)) * 3  # 768 bytes: the indices wrap every few rounds

    def step(i):
        ring.write(data[: 100 + i % 600])
        ring.drain(a)
        got = ring.fill(b)
        assert ring.read(got) == data[:got] or got < 100
        ring.clear()

    steady(step)
    ring.close()


def test_ring_construction_and_views_100k(fio):
    def step(i):
        with fio.RingBuffer(4096, mirrored=None if i % 2 else False) as ring:
            ring.write(b"abc")
            with ring.peek() as view:
                assert view[0] == 97
            assert ring.find(b"c") == 2

    steady(step, ROUNDS // 5)  # a mirrored ring is a memfd and two mappings: 20,000 of each


def test_reader_100k(fio, socketpair):
    a, b = socketpair
    reader = fio.Reader(b, capacity=8192)
    line = b"x" * 40 + b"\n"
    frame = b"\x00\x00\x00\x05hello"

    def step(i):
        if i % 64 == 0:
            a.sendall((line + frame) * 64)
        assert reader.readline() == line
        assert reader.read_frame() == b"hello"

    steady(step)


def test_reader_errors_100k(fio):
    """Error paths too: every IncompleteReadError at EOF, on a fresh socket pair each round."""

    def step(i):
        a, b = socket.socketpair()
        a.sendall(b"abc")
        a.close()
        reader = fio.Reader(b, capacity=4096)
        try:
            reader.readexactly(10)
        except fio.IncompleteReadError as exc:
            assert exc.partial == b"abc"
        b.close()

    steady(step, ROUNDS // 5)  # two sockets per round


def test_pool_acquire_release_100k(fio):
    made = []

    class Conn:
        def close(self):
            pass

    def factory():
        made.append(Conn())
        return made[-1]

    pool = fio.Pool(factory, max_size=4)

    def step(i):
        conn = pool.acquire()
        if i % 1000 == 999:
            pool.release(conn, discard=True)
        else:
            pool.release(conn)

    steady(step)
    s = pool.stats()
    assert s.in_use == 0 and s.created == len(made)
    pool.close()


def test_aio_pool_acquire_release_100k(fio):
    """fastio.aio.Pool's fast paths (already-done awaitables) and, every 1000th round, its
    coroutines (a discard, then a creation)."""
    import asyncio

    from fastio import aio

    made = []

    class Conn:
        def close(self):
            pass

    async def factory():
        made.append(Conn())
        return made[-1]

    loop = asyncio.new_event_loop()
    pool = aio._aio_for(fio).Pool(factory, max_size=4)

    async def one(i):
        conn = await pool.acquire()
        await pool.release(conn, discard=i % 1000 == 999)

    def step(i):
        loop.run_until_complete(one(i))

    try:
        steady(step)
        s = pool.stats()
        assert s.in_use == 0 and s.created == len(made)
        loop.run_until_complete(pool.aclose())
    finally:
        loop.close()


def test_socket_pool_100k(fio):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        key = listener.getsockname()
        pool = fio.SocketPool(max_per_key=1, check_after=0.0)
        conn = pool.acquire(key)
        peer, _ = listener.accept()
        pool.release(conn)

        def step(i):
            c = pool.acquire(key)  # runs the liveness check each time
            pool.release(c)

        steady(step)
        assert pool.stats(key).created == 1
        pool.close()
        peer.close()
