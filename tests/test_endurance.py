"""Leak checks: each primitive 100,000 times in a loop, and nothing grows.

After a warm-up, the open fds must be the same, the traced Python allocations (tracemalloc)
and the process's resident memory must stay flat over 100,000 more operations, constructions
included, and every byte sent must arrive. Rounds that make sockets or whole relays run
10,000 times. Marked ``slow`` (seconds each); .ci/run runs them with the rest of the suite. The
pool's 32-thread endurance run with random failures is ``test_pool.py::
test_32_threads_on_4_connections`` (counters that add up, nothing leaked or closed twice).
"""

import errno
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


# ---- transfer ----------------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path):
    data = bytes(range(256)) * 64  # 16 KiB
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as f:
        yield f, data


def recv_exactly(sock, n):
    got = bytearray()
    while len(got) < n:
        chunk = sock.recv(n - len(got))
        assert chunk, "EOF before every byte arrived"
        got += chunk
    return bytes(got)


def test_sendfile_100k(fio, socketpair, data_file):
    a, b = socketpair
    f, data = data_file

    def step(i):
        offset, count = (i * 37) % 8192, 1 + i % 4000
        assert fio.sendfile(a, f, offset, count) == count
        assert recv_exactly(b, count) == data[offset : offset + count]

    steady(step)


def test_splice_100k(fio, socketpair):
    """Socket to socket through the splice pipe pool: no pipe may leak."""
    a, b = socketpair
    c, d = socket.socketpair()
    payload = bytes(range(256)) * 8

    def step(i):
        n = 1 + i % len(payload)
        c.sendall(payload[:n])
        assert fio.splice(d, a, n) == n
        assert recv_exactly(b, n) == payload[:n]

    try:
        steady(step)
    finally:
        c.close()
        d.close()


def test_copy_file_to_socket_and_file_100k(fio, socketpair, data_file, tmp_path):
    a, b = socketpair
    f, data = data_file
    with open(tmp_path / "out", "w+b") as out:

        def step(i):
            count = 1 + i % 3000
            f.seek(i % 5000)
            start = f.tell()
            if i % 2:
                assert fio.copy(f, a, count) == count
                assert recv_exactly(b, count) == data[start : start + count]
            else:
                out.seek(0)
                assert fio.copy(f, out, count) == count
                out.seek(0)
                assert out.read(count) == data[start : start + count]
            assert f.tell() == start + count  # the position follows the bytes delivered

        steady(step)


def test_transfer_error_paths_100k(fio, data_file):
    """Errors carry their progress and leave nothing behind: a peer gone (EPIPE) on a fresh
    socket pair each round, and a would-block on a full non-blocking socket."""
    f, data = data_file

    def step(i):
        a, b = socket.socketpair()
        try:
            if i % 2:
                b.close()
                try:
                    fio.sendfile(a, f, 0, 100)
                except BrokenPipeError as exc:
                    assert exc.transferred == 0
                else:
                    raise AssertionError("sendfile to a closed peer succeeded")
            else:
                a.setblocking(False)
                a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                sent = 0
                try:
                    while True:
                        sent += fio.sendfile(a, f, 0, len(data))
                except BlockingIOError as exc:
                    assert exc.characters_written == exc.transferred
                    sent += exc.transferred
                a.shutdown(socket.SHUT_WR)
                got = bytearray()
                while True:
                    chunk = b.recv(1 << 16)
                    if not chunk:
                        break
                    got += chunk
                assert len(got) == sent and got == (data * (sent // len(data) + 1))[:sent]
        finally:
            a.close()
            b.close()

    steady(step, ROUNDS // 10)  # two sockets per round


def test_relay_10k(fio):
    """A whole relay per round (four sockets, both directions to EOF)."""
    up, down = b"u" * 3000, b"d" * 2000

    def step(i):
        client, a = socket.socketpair()
        b, server = socket.socketpair()
        try:
            client.sendall(up[: 1 + i % 3000])
            client.shutdown(socket.SHUT_WR)
            server.sendall(down[: 1 + i % 2000])
            server.shutdown(socket.SHUT_WR)
            assert fio.relay(a, b, idle_timeout=30) == (1 + i % 3000, 1 + i % 2000)
            assert recv_exactly(server, 1 + i % 3000) == up[: 1 + i % 3000]
            assert recv_exactly(client, 1 + i % 2000) == down[: 1 + i % 2000]
            assert server.recv(1) == b"" and client.recv(1) == b""
        finally:
            for s in (client, a, b, server):
                s.close()

    steady(step, ROUNDS // 10)


# ---- batch ---------------------------------------------------------------------------------


def test_batch_writes_100k(fio, socketpair):
    """Small pieces copied into the staging buffer, larger ones sent by reference, flushed
    every eighth round; every byte read back and compared."""
    a, b = socketpair
    writer = fio.BatchWriter(a, closefd=False, buffer_size=4096, copy_threshold=256)
    small, big = b"s" * 40, bytes(range(256)) * 8
    expected = bytearray()

    def step(i):
        middle = big[: i % 2048]
        writer.write(small)
        writer.writelines([small, middle, small])
        expected.extend(small * 2 + middle + small)
        if i % 8 == 7:
            writer.write(big)
            expected.extend(big)
            writer.flush()
            assert recv_exactly(b, len(expected)) == expected
            expected.clear()

    steady(step)
    writer.close()


def test_batch_partial_writes_100k(fio, socketpair):
    """Every round fills a small non-blocking send buffer: a partial write, BlockingIOError
    with its progress, then the reader drains and the flush resumes; byte-exact."""
    a, b = socketpair
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    b.setblocking(False)
    writer = fio.BatchWriter(a, closefd=False, buffer_size=4096, copy_threshold=512)
    pieces = [bytes([j]) * (100 + 37 * j) for j in range(32)]  # 22 KiB a round
    expected = b"".join(pieces)
    got = bytearray()

    def drain():
        try:
            while True:
                chunk = b.recv(1 << 16)
                assert chunk
                got.extend(chunk)
        except BlockingIOError:
            pass

    def step(i):
        writer.writelines(pieces)
        blocked = False
        while True:
            try:
                writer.flush()
                break
            except BlockingIOError as exc:
                assert exc.characters_written == exc.transferred
                blocked = True
                drain()
        assert blocked or i % 100  # the buffer is far smaller than a round
        drain()
        assert got == expected, f"round {i}: {len(got)} bytes of {len(expected)}"
        got.clear()

    steady(step, ROUNDS // 10)  # 2 GiB in 22 KiB rounds would be long: 10,000 rounds
    assert writer.stats["partial_writes"] > 0
    writer.close()


def test_batch_construction_and_close_100k(fio):
    """Made and closed each round, owning its fd (closefd=True), with bytes left pending."""

    def step(i):
        r, w = os.pipe()
        os.set_blocking(w, False)
        writer = fio.BatchWriter(w, closefd=True, buffer_size=4096)
        writer.write(b"x" * (i % 100))
        if i % 2:
            writer.flush()
        writer.close()  # closes w: pending bytes are flushed or dropped, never leaked
        assert os.read(r, 200) == b"x" * (i % 100) or i % 2 == 0 or i % 100 == 0
        os.close(r)
        try:
            os.fstat(w)
        except OSError as exc:
            assert exc.errno == errno.EBADF
        else:
            raise AssertionError("closefd=True left the fd open")

    steady(step, ROUNDS // 5)
