"""fastio.aio over both twins and both loops (the default asyncio loop and uvloop), on real
loopback sockets: byte-exact transfers with slow readers, cancellation at awkward moments,
a peer reset, 100 concurrent relays, the pool's waiters and slots."""

import asyncio
import hashlib
import os
import socket
import struct
import tempfile

import pytest
from conftest import open_fds

import fastio
from fastio import _impl
from fastio import aio as aio_module
from fastio._errors import IncompleteReadError, LimitOverrunError, PoolClosed, PoolTimeout

try:
    import uvloop
except ImportError:  # pragma: no cover - where no wheel exists
    uvloop = None


class _Tracking:
    """Keeps the set of fds with a reader or writer registered through the loop's public
    methods (uvloop's ``remove_reader`` does not say whether one was there)."""

    def _track(self):
        if not hasattr(self, "registered"):
            self.registered = set()
        return self.registered

    def add_reader(self, fd, *args):
        self._track().add(("r", fd))
        return super().add_reader(fd, *args)

    def add_writer(self, fd, *args):
        self._track().add(("w", fd))
        return super().add_writer(fd, *args)

    def remove_reader(self, fd):
        self._track().discard(("r", fd))
        return super().remove_reader(fd)

    def remove_writer(self, fd):
        self._track().discard(("w", fd))
        return super().remove_writer(fd)


class TrackingLoop(_Tracking, asyncio.SelectorEventLoop):
    pass


if uvloop is not None:

    class TrackingUVLoop(_Tracking, uvloop.Loop):
        pass


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine to completion on a fresh loop of one kind (30 s bound against hangs)."""
    if request.param == "uvloop" and uvloop is None:
        pytest.skip("uvloop is not installed here (no wheel for this platform)")
    factory = TrackingUVLoop if request.param == "uvloop" else TrackingLoop

    def runner(coro, limit=30):
        loop = factory()
        try:
            return loop.run_until_complete(asyncio.wait_for(coro, limit))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    return runner


@pytest.fixture
def aio(fio):
    return aio_module._aio_for(fio)


def nb_pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def tcp_nb_pair():
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def data_file(size, seed=1):
    f = tempfile.TemporaryFile()
    f.write(os.urandom(size) if seed is None else _pattern(size, seed))
    f.seek(0)
    return f


def _pattern(size, seed):
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    reps = size // len(block) + 1
    return (block * reps)[:size]


def nothing_registered(loop, *fds):
    """True when fastio.aio left no reader or writer registered on the loop for ``fds``
    (for any fd when none are given)."""
    left = loop._track()
    if fds:
        left = {(kind, fd) for kind, fd in left if fd in fds}
    return not left


async def slow_recv(sock, total=None, chunk=65536, pause=0.0005):
    """Read until EOF (or ``total`` bytes) slowly, so the sender keeps hitting a full socket."""
    loop = asyncio.get_running_loop()
    got = bytearray()
    while total is None or len(got) < total:
        data = await loop.sock_recv(sock, chunk)
        if not data:
            break
        got += data
        if pause:
            await asyncio.sleep(pause)
    return bytes(got)


# ---- transfer ------------------------------------------------------------------------------


def test_sendfile_large_slow_reader(aio, run):
    size = 6 << 20
    a, b = nb_pair()
    with a, b, data_file(size) as f:

        async def main():
            reader = asyncio.ensure_future(slow_recv(b, size))
            sent = await aio.sendfile(a, f)
            return sent, await reader

        sent, got = run(main())
        assert sent == size
        assert got == _pattern(size, 1)
        assert f.tell() == size


def test_sendfile_offset_and_count(aio, run):
    size = 3 << 20
    a, b = nb_pair()
    with a, b, data_file(size) as f:

        async def main():
            reader = asyncio.ensure_future(slow_recv(b, 2 << 20))
            sent = await aio.sendfile(a, f, 1000, 2 << 20)
            return sent, await reader

        sent, got = run(main())
        assert sent == 2 << 20
        assert got == _pattern(size, 1)[1000 : 1000 + (2 << 20)]
        assert f.tell() == 1000 + (2 << 20)


def test_blocking_socket_is_value_error(aio, run):
    a, b = socket.socketpair()
    with a, b, data_file(10) as f:
        with pytest.raises(ValueError, match="non-blocking"):
            run(aio.sendfile(a, f))
        a.settimeout(5.0)
        with pytest.raises(ValueError):
            run(aio.splice(b, a))
        r, w = os.pipe()  # a blocking pipe fd
        try:
            with pytest.raises(ValueError):
                run(aio.copy(r, a))
        finally:
            os.close(r)
            os.close(w)
        with pytest.raises(ValueError):
            aio.Reader(a)
        with pytest.raises(ValueError):
            aio.BatchWriter(a, closefd=False)
        a.setblocking(False)
        b.setblocking(False)
        with pytest.raises(TypeError):
            run(aio.sendfile(a, "not a file"))


def test_sendfile_cancelled_mid_transfer_file_position(aio, run):
    """The file position tells exactly how far a cancelled sendfile got."""
    size = 8 << 20
    a, b = nb_pair()
    with a, b, data_file(size) as f:

        async def main():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(aio.sendfile(a, f))
            got = bytearray()
            while len(got) < (1 << 20):  # read a part, then cancel while it waits
                got += await loop.sock_recv(b, 65536)
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert nothing_registered(loop, a.fileno(), b.fileno())
            a.shutdown(socket.SHUT_WR)
            got += await slow_recv(b, pause=0)
            return bytes(got)

        got = run(main())
        position = f.tell()
        assert 0 < position < size
        assert got == _pattern(size, 1)[:position]


def test_splice_and_copy_socket_to_socket(aio, run):
    size = 4 << 20
    payload = _pattern(size, 7)
    for name in ("splice", "copy"):
        src_w, src = nb_pair()
        dst, dst_r = nb_pair()
        with src_w, src, dst, dst_r:

            async def main(name=name, src_w=src_w, src=src, dst=dst, dst_r=dst_r):
                loop = asyncio.get_running_loop()

                async def feed():
                    await loop.sock_sendall(src_w, payload)
                    src_w.shutdown(socket.SHUT_WR)

                feeder = asyncio.ensure_future(feed())
                reader = asyncio.ensure_future(slow_recv(dst_r, size))
                moved = await getattr(aio, name)(src, dst)
                await feeder
                return moved, await reader

            moved, got = run(main())
            assert moved == size, name
            assert got == payload, name


def test_copy_file_to_pipe_with_count(aio, run):
    size = 2 << 20
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    try:
        with data_file(size) as f:

            async def main():
                loop = asyncio.get_running_loop()
                got = bytearray()
                done = loop.create_future()

                def on_read():
                    try:
                        data = os.read(r, 65536)
                    except BlockingIOError:
                        return
                    got.extend(data)
                    if len(got) >= size - 5 and not done.done():
                        done.set_result(None)

                loop.add_reader(r, on_read)
                try:
                    moved = await aio.copy(f, w, size - 5)
                    await done
                finally:
                    loop.remove_reader(r)
                return moved, bytes(got)

            moved, got = run(main())
            assert moved == size - 5
            assert got == _pattern(size, 1)[: size - 5]
            assert f.tell() == size - 5
    finally:
        os.close(r)
        os.close(w)


def test_splice_progress_on_peer_reset(aio, run):
    """A reset while sending: ConnectionResetError/BrokenPipeError with the progress."""
    a, b = tcp_nb_pair()
    with a, b, data_file(16 << 20) as f:

        async def main():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(aio.sendfile(a, f))
            got = 0
            while got < (1 << 20):
                got += len(await loop.sock_recv(b, 65536))
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            b.close()  # RST
            with pytest.raises((ConnectionResetError, BrokenPipeError)) as info:
                await task
            assert nothing_registered(loop, a.fileno())
            return info.value, got

        exc, got = run(main())
        assert exc.transferred >= got
        assert f.tell() == exc.transferred


# ---- relay ---------------------------------------------------------------------------------


def test_relay_100_pairs(aio, run):
    pairs = 100

    async def one(i):
        loop = asyncio.get_running_loop()
        client, ra = nb_pair()
        rb, server = nb_pair()
        up = _pattern(20000 + 997 * i, i)
        down = _pattern(15000 + 331 * i, -i)
        try:

            async def talk(sock, data):
                await loop.sock_sendall(sock, data)
                sock.shutdown(socket.SHUT_WR)
                return await slow_recv(sock, pause=0)

            relayed = asyncio.ensure_future(aio.relay(ra, rb))
            client_got, server_got = await asyncio.gather(talk(client, up), talk(server, down))
            moved = await relayed
            fds = (client.fileno(), ra.fileno(), rb.fileno(), server.fileno())
            assert nothing_registered(loop, *fds)
        finally:
            for s in (client, ra, rb, server):
                s.close()
        return moved, up, down, client_got, server_got

    async def main(pairs):
        return await asyncio.gather(*(one(i) for i in range(pairs)))

    # the transfer twin keeps a few splice pipes for reuse: emptied before each count
    forget_pipes = _impl.twin_module("transfer", aio.IMPLEMENTATION)._forget_pipes
    run(asyncio.sleep(0))  # uvloop's first loop opens fds it keeps for the process
    forget_pipes()
    before = open_fds()
    for moved, up, down, client_got, server_got in run(main(pairs)):
        assert moved == (len(up), len(down))
        assert server_got == up
        assert client_got == down
    forget_pipes()
    assert open_fds() == before


def test_relay_peer_reset(aio, run):
    client, ra = tcp_nb_pair()
    rb, server = tcp_nb_pair()
    with client, ra, rb, server:

        async def main():
            loop = asyncio.get_running_loop()
            task = asyncio.ensure_future(aio.relay(ra, rb))
            await loop.sock_sendall(client, b"x" * 1000)
            got = b""
            while len(got) < 1000:
                got += await loop.sock_recv(server, 65536)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()  # RST to ra
            with pytest.raises(ConnectionResetError) as info:
                await task
            assert nothing_registered(loop, ra.fileno(), rb.fileno(), server.fileno())
            return info.value

        exc = run(main())
        assert exc.transferred == (1000, 0)


def test_relay_idle_timeout_and_cancel(aio, run):
    client, ra = nb_pair()
    rb, server = nb_pair()
    with client, ra, rb, server:

        async def main():
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(client, b"hello")
            with pytest.raises(TimeoutError) as info:
                await aio.relay(ra, rb, idle_timeout=0.2)
            assert info.value.transferred == (5, 0)
            assert await loop.sock_recv(server, 10) == b"hello"
            assert nothing_registered(loop, ra.fileno(), rb.fileno())
            # cancelled by the caller's timeout: nothing registered, nothing consumed unsent
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(aio.relay(ra, rb), 0.1)
            assert nothing_registered(loop, ra.fileno(), rb.fileno())

        run(main())
        with pytest.raises(ValueError):
            run(aio.relay(ra, ra))
        with pytest.raises(ValueError):
            run(aio.relay(ra, rb, idle_timeout=-1))


def test_relay_cancelled_mid_transfer_loses_nothing(aio, run):
    """Cancelled while bytes flow and the far reader is slow: the await ends, the relay lets go
    of the sockets, and every byte is either delivered, handed back in ``.unsent`` or still in
    the source socket, in order."""
    client, ra = nb_pair()
    rb, server = nb_pair()
    data = _pattern(4 << 20, 7)
    with client, ra, rb, server:

        async def main():
            loop = asyncio.get_running_loop()
            sending = asyncio.ensure_future(loop.sock_sendall(client, data))

            async def relay_until_cancelled():
                try:
                    await aio.relay(ra, rb)
                except asyncio.CancelledError as exc:  # what the relay's caller sees
                    return exc
                raise AssertionError("the relay ended by itself")

            relayed = asyncio.ensure_future(relay_until_cancelled())
            got = bytearray()
            while len(got) < 300_000:  # a slow reader: the relay fills up and holds bytes
                got += await loop.sock_recv(server, 65536)
            assert not relayed.done()
            relayed.cancel()
            exc = await asyncio.wait_for(relayed, 10)
            ab, ba = exc.transferred
            for_b, for_a = exc.unsent
            assert ba == 0 and for_a == b""
            assert nothing_registered(loop, ra.fileno(), rb.fileno())
            while True:  # what the relay delivered before it stopped
                try:
                    got += server.recv(1 << 20)
                except BlockingIOError:
                    break
            assert len(got) == ab
            got += for_b
            while len(got) < len(data):  # the rest never left the source socket
                got += await loop.sock_recv(ra, 1 << 20)
            await asyncio.wait_for(sending, 10)
            assert bytes(got) == data
            # the sockets are ours again: a new relay carries on
            relayed = asyncio.ensure_future(aio.relay(ra, rb))
            client.shutdown(socket.SHUT_WR)
            rest = b"tail"
            await loop.sock_sendall(server, rest)
            server.shutdown(socket.SHUT_WR)
            assert await slow_recv(client, pause=0) == rest
            assert await slow_recv(server, pause=0) == b""
            assert await asyncio.wait_for(relayed, 10) == (0, len(rest))

        run(main())


# ---- Reader --------------------------------------------------------------------------------


def test_reader_methods_over_dribbled_bytes(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            stream = b"line one\nline two\n" + b"0123456789" + struct.pack("!I", 5) + b"frame"
            stream += b"A;B;" + struct.pack("!I", 3) + b"abc" + struct.pack("!I", 2) + b"xy"

            async def dribble():
                for i in range(0, len(stream), 3):
                    await loop.sock_sendall(a, stream[i : i + 3])
                    await asyncio.sleep(0.001)
                a.shutdown(socket.SHUT_WR)

            feeder = asyncio.ensure_future(dribble())
            r = aio.Reader(b, capacity=4096)
            assert await r.readline() == b"line one\n"
            assert await r.readuntil(b"\n") == b"line two\n"
            assert await r.readexactly(10) == b"0123456789"
            assert await r.read_frame() == b"frame"
            assert await r.peek(2) == b"A;"
            assert await r.readuntil(b";") == b"A;"
            assert await r.read(2) == b"B;"
            frames = [bytes(f) async for f in r]
            await feeder
            assert r.at_eof()
            assert await r.read() == b""
            with pytest.raises(IncompleteReadError):
                await r.readexactly(1)
            assert nothing_registered(loop, b.fileno())
            return frames

        assert run(main()) == [b"abc", b"xy"]


def test_reader_errors_as_stream_reader(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            r = aio.Reader(b, capacity=4096)
            await loop.sock_sendall(a, b"x" * 5000)
            with pytest.raises(LimitOverrunError):
                await r.readuntil(b"\n")
            assert r.buffered >= 4096  # the data stays
            with pytest.raises(LimitOverrunError):
                await r.readexactly(10000)
            assert len(await r.readexactly(4096)) == 4096
            await loop.sock_sendall(a, struct.pack("!I", 100) + b"short")
            a.shutdown(socket.SHUT_WR)
            rest = await r.readexactly(904)
            assert rest == b"x" * 904
            with pytest.raises(IncompleteReadError) as info:
                await r.read_frame()
            assert info.value.partial == struct.pack("!I", 100) + b"short"

        run(main())


def test_reader_cancel_loses_nothing(aio, run):
    """A readexactly cancelled halfway: the bytes it had received come back next time."""
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            r = aio.Reader(b)
            await loop.sock_sendall(a, b"abc")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(r.readexactly(6), 0.05)
            assert nothing_registered(loop, b.fileno())
            await loop.sock_sendall(a, b"def")
            assert await r.readexactly(6) == b"abcdef"
            # cancelled while waiting for a frame's body
            await loop.sock_sendall(a, struct.pack("!I", 4) + b"12")
            task = asyncio.ensure_future(r.read_frame())
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await loop.sock_sendall(a, b"34")
            assert await r.read_frame() == b"1234"

        run(main())


def test_reader_one_waiter_at_a_time(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            r = aio.Reader(b)
            first = asyncio.ensure_future(r.readexactly(2))
            await asyncio.sleep(0.01)
            with pytest.raises(RuntimeError, match="already waiting"):
                await r.readline()
            await loop.sock_sendall(a, b"ok\n")
            assert await first == b"ok"
            assert await r.readline() == b"\n"

        run(main())


def test_reader_large_stream_of_frames(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            frames = [_pattern(i * 37 % 3000, i) for i in range(3000)]
            wire = b"".join(struct.pack("!I", len(f)) + f for f in frames)

            async def feed():
                await loop.sock_sendall(a, wire)
                a.shutdown(socket.SHUT_WR)

            feeder = asyncio.ensure_future(feed())
            r = aio.Reader(b, capacity=8192)
            got = [bytes(f) async for f in r]
            await feeder
            return frames, got

        frames, got = run(main())
        assert got == frames


# ---- BatchWriter ---------------------------------------------------------------------------


def test_batch_writer_drain_water_marks_slow_reader(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            pieces = [_pattern(10 + i % 500, i) for i in range(20000)]
            w = aio.BatchWriter(a, closefd=False, high_water=32768)
            assert w.get_write_buffer_limits() == (8192, 32768)
            reader = asyncio.ensure_future(slow_recv(b, pause=0.001))
            for i, piece in enumerate(pieces):
                w.write(piece)
                if i % 100 == 99:
                    await w.drain()
                    assert w.pending <= 32768
            await w.aclose()
            assert w.closed and a.fileno() >= 0  # closefd=False
            a.shutdown(socket.SHUT_WR)
            got = await reader
            assert nothing_registered(loop, a.fileno(), b.fileno())
            return b"".join(pieces), got

        sent, got = run(main())
        assert got == sent


def test_batch_writer_cancelled_drain_keeps_bytes(aio, run):
    a, b = nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            payload = _pattern(4 << 20, 3)
            w = aio.BatchWriter(a, closefd=False)
            w.write(payload)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(w.drain(), 0.05)  # nobody reads: the kernel is full
            assert nothing_registered(loop, a.fileno())
            assert w.pending > 0
            reader = asyncio.ensure_future(slow_recv(b, pause=0))
            await w.aclose()
            assert nothing_registered(loop, a.fileno())
            a.shutdown(socket.SHUT_WR)
            return payload, await reader

        sent, got = run(main())
        assert got == sent


def test_batch_writer_error_on_reset(aio, run):
    a, b = tcp_nb_pair()
    with a, b:

        async def main():
            loop = asyncio.get_running_loop()
            w = aio.BatchWriter(a, closefd=False)
            b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            b.close()
            await asyncio.sleep(0.02)
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                for _ in range(100):
                    w.write(b"x" * 100000)
                    await w.drain()
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await w.aclose()  # sticky
            assert nothing_registered(loop, a.fileno())

        run(main())


# ---- Pool ----------------------------------------------------------------------------------


class Conn:
    made = 0

    def __init__(self):
        Conn.made += 1
        self.id = Conn.made
        self.closed = False

    async def close(self):
        self.closed = True


async def make_conn():
    await asyncio.sleep(0)
    return Conn()


def test_pool_reuse_limits_fifo(aio, run):
    async def main():
        pool = aio.Pool(make_conn, max_size=2)
        c1 = await pool.acquire()
        await pool.release(c1)
        assert await pool.acquire() is c1  # reused
        c2 = await pool.acquire()
        order = []

        async def waiter(i):
            conn = await pool.acquire()
            order.append((i, conn))

        tasks = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        await asyncio.sleep(0.01)
        assert pool.stats().waiting == 3
        await pool.release(c1)
        await pool.release(c2)
        await asyncio.sleep(0.01)
        assert [i for i, _ in order] == [0, 1]
        await pool.release(order[0][1])
        await asyncio.gather(*tasks)
        assert [i for i, _ in order] == [0, 1, 2]
        stats = pool.stats()
        assert stats.open == 2 and stats.created == 2 and stats.wait_count == 3
        with pytest.raises(ValueError):
            await pool.release(Conn())
        await pool.release(order[1][1])
        await pool.release(order[2][1])
        async with pool.connection() as conn:
            assert conn in (c1, c2)
        with pytest.raises(OSError):
            async with pool.connection() as conn:
                raise OSError("broken")  # discards it
        assert conn.closed and pool.stats().closed_broken == 1
        await pool.aclose()

    run(main())


def test_pool_timeout_and_cancel_leak_no_slot(aio, run):
    async def main():
        pool = aio.Pool(make_conn, max_size=1, acquire_timeout=0.05)
        c = await pool.acquire()
        with pytest.raises(PoolTimeout):
            await pool.acquire()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pool.acquire(timeout=10), 0.05)
        assert pool.stats().waiting == 0
        # cancelled while waiting for a slot, many times: the slot is still there after
        for _ in range(20):
            task = asyncio.ensure_future(pool.acquire(timeout=10))
            await asyncio.sleep(0)
            task.cancel()
        await asyncio.sleep(0.01)
        await pool.release(c, discard=True)
        c2 = await pool.acquire(timeout=1)
        assert c2 is not c and c.closed
        await pool.release(c2)
        s = pool.stats()
        assert (s.open, s.in_use, s.idle, s.waiting) == (1, 0, 1, 0)

    run(main())


def test_pool_cancel_raced_with_release_goes_to_next_waiter(aio, run):
    async def main():
        pool = aio.Pool(make_conn, max_size=1)
        c = await pool.acquire()
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)
        await pool.release(c)  # handed to ``first`` ...
        first.cancel()  # ... which is cancelled before it runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 5) is c
        await pool.release(c)
        s = pool.stats()
        assert (s.open, s.in_use, s.idle, s.waiting) == (1, 0, 1, 0)
        # a slot (not a connection) handed to a cancelled waiter goes on too
        c = await pool.acquire()
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0.01)
        await pool.release(c, discard=True)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        c3 = await asyncio.wait_for(second, 5)
        assert c3 is not c
        await pool.release(c3)
        s = pool.stats()
        assert (s.open, s.in_use, s.idle, s.waiting) == (1, 0, 1, 0)

    run(main())


def test_pool_cancelled_before_a_release_in_the_same_tick_loses_nothing(aio, run):
    """The first waiter is cancelled, and a release comes before its coroutine ran again:
    the cancelled waiter refuses the connection, the next waiter in line gets it."""

    async def main():
        pool = aio.Pool(make_conn, max_size=1)
        c = await pool.acquire()
        first = asyncio.ensure_future(pool.acquire())
        second = asyncio.ensure_future(pool.acquire())
        third = asyncio.ensure_future(pool.acquire(timeout=0.01))  # expires while in line
        await asyncio.sleep(0.05)
        with pytest.raises(PoolTimeout):
            await third
        assert pool.stats().waiting == 2
        first.cancel()
        assert pool.stats().waiting == 1  # the cancelled one no longer counts
        await pool.release(c)  # before ``first`` runs again
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await asyncio.wait_for(second, 5) is c
        s = pool.stats()
        assert (s.open, s.in_use, s.idle, s.waiting, s.wait_count) == (1, 1, 0, 0, 3)
        await pool.release(c)
        await pool.aclose()
        assert c.closed

    run(main())


def test_pool_fast_paths_are_synchronous(aio, run):
    """An idle connection fit to hand out, and a release straight back onto the idle stack:
    the awaitable is done when returned (its first step ends it), with no Future and no loop
    involved."""

    async def main():
        loop = asyncio.get_running_loop()
        made = []
        pool = aio.Pool(make_conn, max_size=2, max_lifetime=3600)
        c = await pool.acquire()
        await pool.release(c)
        real = loop.create_future
        loop.create_future = lambda: made.append(1) or real()
        try:
            for _ in range(3):
                awaitable = pool.acquire()
                with pytest.raises(StopIteration) as done:
                    awaitable.__await__().send(None)
                assert done.value.value is c
                assert pool.stats().in_use == 1
                with pytest.raises(StopIteration) as done:
                    pool.release(c).__await__().send(None)
                assert done.value.value is None
                assert pool.stats().idle == 1
            assert await pool.acquire() is c
            assert await asyncio.ensure_future(pool.release(c)) is None
        finally:
            loop.create_future = real
        assert made == []
        with pytest.raises(ValueError):  # released twice
            pool.release(c)
        with pytest.raises(TypeError):
            pool.close()  # the blocking pool's close: not for coroutines
        await pool.aclose()

    run(main())


def test_pool_release_claims_before_reset(aio, run):
    """A connection being reset is no longer checked out: a second release meanwhile is
    refused instead of stacking it twice."""

    async def reset(conn):
        await asyncio.sleep(0.01)

    async def main():
        pool = aio.Pool(make_conn, max_size=2, reset=reset)
        c = await pool.acquire()
        releasing = asyncio.ensure_future(pool.release(c))
        await asyncio.sleep(0)
        with pytest.raises(ValueError):
            await pool.release(c)
        await releasing
        s = pool.stats()
        assert (s.open, s.idle, s.in_use) == (1, 1, 0)
        assert await pool.acquire() is c
        await pool.release(c)
        await pool.aclose()

    run(main())


def test_pool_checks_lifetimes_close(aio, run):
    now = [0.0]

    async def check(conn):
        return conn.id % 2 == 0  # odd ones fail their check

    async def main():
        pool = aio.Pool(
            make_conn,
            max_size=3,
            max_lifetime=100,
            lifetime_jitter=0,
            check=check,
            check_after=5,
            clock=lambda: now[0],
        )
        c = await pool.acquire()
        await pool.release(c)
        now[0] = 10.0  # idle past check_after
        got = await pool.acquire()
        if c.id % 2:
            assert got is not c and c.closed and pool.stats().check_failures == 1
        else:
            assert got is c
        await pool.release(got)
        now[0] = 200.0  # past its lifetime: closed, not handed out
        fresh = await pool.acquire()
        assert fresh is not got and got.closed
        assert pool.stats().closed_max_lifetime == 1
        waiter_pool = aio.Pool(make_conn, max_size=1)
        held = await waiter_pool.acquire()
        waiting = asyncio.ensure_future(waiter_pool.acquire())
        await asyncio.sleep(0.01)
        await waiter_pool.aclose()
        with pytest.raises(PoolClosed):
            await waiting
        await waiter_pool.release(held)
        assert held.closed
        with pytest.raises(PoolClosed):
            await waiter_pool.acquire()
        await pool.release(fresh)
        await pool.aclose()
        assert fresh.closed

    run(main())
    with pytest.raises(TypeError):
        aio.Pool(42)
    with pytest.raises(ValueError):
        aio.Pool(make_conn, max_size=0)
    with pytest.raises(TypeError):
        aio.Pool(make_conn, leak_timeout=1)  # the blocking pool's only


def test_pool_factory_failure_frees_slot(aio, run):
    calls = [0]

    async def flaky():
        calls[0] += 1
        if calls[0] == 1:
            raise ConnectionRefusedError("no")
        return Conn()

    async def main():
        pool = aio.Pool(flaky, max_size=1)
        with pytest.raises(ConnectionRefusedError):
            await pool.acquire()
        c = await pool.acquire(timeout=1)
        s = pool.stats()
        assert (s.open, s.create_failures) == (1, 1)
        await pool.release(c)

    run(main())


def test_public_module():
    import subprocess
    import sys

    # ``import fastio`` alone does not import asyncio; ``fastio.aio`` is there on first use
    code = "import sys, fastio; a = 'asyncio' in sys.modules; fastio.aio.Pool; print(a)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=os.getcwd()
    )
    assert out.stdout.strip() == "False"
    assert fastio.aio.sendfile is aio_module.sendfile
    assert aio_module._aio_for_impl(fastio.IMPLEMENTATION).relay is aio_module.relay
    for name in aio_module.__all__:
        assert getattr(aio_module, name) is not None
