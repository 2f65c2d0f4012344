"""BatchWriter: byte-exact delivery, IOV_MAX batches, partial writes, non-blocking targets,
backpressure, sticky errors, references. Every test runs against both twins (``fio``)."""

import errno
import hashlib
import os
import random
import signal
import socket
import sys
import threading
import time

import pytest
from conftest import drain_in_thread

from fastio import _stats

IOV_MAX = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024


class HashSink:
    """Reads a socket to EOF in a thread, hashing what arrives (optionally slowly)."""

    def __init__(self, sock, chunk=1 << 20, delay=0.0, paused=False):
        self.sock = sock
        self.digest = hashlib.sha256()
        self.count = 0
        self.go = threading.Event()
        if not paused:
            self.go.set()
        self.chunk = chunk
        self.delay = delay
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.go.wait()
            while True:
                data = self.sock.recv(self.chunk)
                if not data:
                    break
                self.digest.update(data)
                self.count += len(data)
                if self.delay:
                    time.sleep(self.delay)
        except OSError as exc:
            self.error = exc

    def result(self, timeout=30):
        self.go.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "reader did not finish"
        return self.count, self.digest.hexdigest()


def digest_of(pieces):
    h = hashlib.sha256()
    total = 0
    for p in pieces:
        h.update(p)
        total += len(bytes(p))
    return total, h.hexdigest()


def random_pieces(rng, count, max_size):
    """A mix of sizes and bytes-like types; returns (pieces_to_write, their_bytes)."""
    pieces, expected = [], []
    for _ in range(count):
        kind = rng.random()
        if kind < 0.6:
            size = rng.randint(0, 200)
        elif kind < 0.9:
            size = rng.randint(200, 70_000)
        else:
            size = rng.randint(70_000, max_size)
        data = rng.randbytes(size)
        form = rng.randrange(4)
        if form == 0:
            piece = data
        elif form == 1:
            piece = bytearray(data)
        elif form == 2:
            piece = memoryview(data)
        else:
            piece = memoryview(bytearray(data))
        pieces.append(piece)
        expected.append(data)
    return pieces, expected


def common(fio):
    return _stats.snapshot(fio.IMPLEMENTATION)["batch"]


# ---- delivery ----


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_mix_arrives_byte_exact(fio, tcp_pair, seed):
    client, peer = tcp_pair
    rng = random.Random(seed)
    pieces, expected = random_pieces(rng, 300, 1 << 20)
    sink = HashSink(peer)
    with fio.BatchWriter(client, closefd=False) as w:
        half = len(pieces) // 2
        for piece in pieces[:half]:
            assert w.write(piece) == len(bytes(piece))
        w.writelines(pieces[half:])
    client.shutdown(socket.SHUT_WR)
    assert sink.result() == digest_of(expected)
    assert w.pending == 0


def test_writelines_generator_and_tuple(fio, socketpair):
    a, b = socketpair
    drain = drain_in_thread(b)
    w = fio.BatchWriter(a, closefd=False)
    w.writelines(bytes([i % 256]) * (i % 50) for i in range(2000))
    w.writelines(tuple(b"t%d" % i for i in range(100)))
    w.writelines([b"x" * 5000, bytearray(b"y" * 5000), memoryview(b"z" * 3)])
    w.close()
    a.shutdown(socket.SHUT_WR)
    expected = b"".join(bytes([i % 256]) * (i % 50) for i in range(2000))
    expected += b"".join(b"t%d" % i for i in range(100))
    expected += b"x" * 5000 + b"y" * 5000 + b"zzz"
    assert drain.join() == expected


def test_file_and_pipe_targets(fio, tmp_path):
    path = tmp_path / "out.bin"
    with open(path, "wb") as f:
        w = fio.BatchWriter(f, closefd=False)
        w.writelines([b"ab", b"c" * 3000, bytearray(b"d" * 10)])
        w.write(b"e" * 200_000)
        w.close()
    assert path.read_bytes() == b"ab" + b"c" * 3000 + b"d" * 10 + b"e" * 200_000

    r, wfd = os.pipe()
    try:
        received = bytearray()

        def read_all():
            while True:
                data = os.read(r, 1 << 16)
                if not data:
                    return
                received.extend(data)

        t = threading.Thread(target=read_all, daemon=True)
        t.start()
        w = fio.BatchWriter(wfd)  # closefd=True: closes the write end
        for i in range(10_000):
            w.write(b"%05d" % i)
        w.close()
        t.join(30)
        assert received == b"".join(b"%05d" % i for i in range(10_000))
        with pytest.raises(OSError):
            os.fstat(wfd)
    finally:
        os.close(r)


def test_large_write_into_empty_writer_goes_straight_out(fio, socketpair):
    a, b = socketpair
    drain = drain_in_thread(b)
    w = fio.BatchWriter(a, closefd=False, buffer_size=4096)
    big = os.urandom(100_000)
    assert w.write(big) == len(big)
    assert w.pending == 0  # sent by write itself
    st = w.stats
    assert st["bytes_copied"] == 0 and st["bytes_referenced"] == len(big)
    assert st["writev_calls"] >= 1
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == big


def test_writelines_list_sends_references_in_iov_max_batches(fio, socketpair):
    a, b = socketpair
    drain = drain_in_thread(b)
    pieces = []
    for i in range(600):
        pieces.append(b"h%05d" % i)  # small: copied, merged
        pieces.append(os.urandom(5000))  # large, immutable: by reference
    w = fio.BatchWriter(a, closefd=False)
    w.writelines(pieces)
    # A list keeps its items alive: its references go out in IOV_MAX batches, not one
    # writev per buffer_size (3 MB here, one call on a blocking socket).
    assert w.pending == 0
    assert w.stats["writev_calls"] == 2
    assert w.stats["bytes_copied"] == 600 * 6
    calls = w.stats["writev_calls"]
    w.writelines(iter(pieces))  # a generator's pieces are ours alone: buffer_size rules
    assert w.stats["writev_calls"] - calls >= 40
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == b"".join(pieces) * 2


def test_writelines_writable_buffers_are_safe_to_reuse(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    w = fio.BatchWriter(a, closefd=False)
    bufs = [bytearray(os.urandom(3000 + i)) for i in range(300)]
    bufs += [memoryview(bytearray(os.urandom(70_000)))]
    expected = b"".join(bytes(x) for x in bufs)
    w.writelines(bufs)
    for x in bufs[:-1]:
        x[:] = b"\0" * len(x)
        x.extend(b"reused")
    bufs[-1][:] = b"\1" * len(bufs[-1])
    assert w.pending > 0
    drain = drain_in_thread(b)
    deadline = time.monotonic() + 30
    while True:
        try:
            w.flush()
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == expected


# ---- IOV_MAX ----


@pytest.mark.parametrize("count", [IOV_MAX, IOV_MAX + 1])
def test_exactly_iov_max_pieces(fio, socketpair, count):
    a, b = socketpair
    drain = drain_in_thread(b)
    # copy_threshold=1: every piece is kept by reference, one iovec each.
    w = fio.BatchWriter(a, closefd=False, buffer_size=1 << 24, copy_threshold=1)
    pieces = [b"%06d|" % i for i in range(count)]
    w.writelines(pieces)
    # Reaching IOV_MAX pieces flushes by itself: one writev of exactly IOV_MAX iovecs.
    assert w.stats["writev_calls"] == 1
    assert w.pending == (count - IOV_MAX) * 7
    w.flush()
    assert w.stats["writev_calls"] == (1 if count == IOV_MAX else 2)
    assert w.stats["bytes_copied"] == 0
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == b"".join(pieces)


def test_flush_in_iov_max_batches_after_backlog(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    w = fio.BatchWriter(a, closefd=False, buffer_size=1 << 24, copy_threshold=1)
    filler = b"f" * 65536
    # Fill the socket so nothing goes out, then pile up more than IOV_MAX pieces.
    with pytest.raises(BlockingIOError):
        while True:
            a.send(filler)
    pieces = [b"%07d" % i for i in range(3 * IOV_MAX + 5)]
    w.writelines(pieces)
    assert w.pending == len(pieces) * 7
    drain = drain_in_thread(b)
    deadline = time.monotonic() + 30
    while w.pending:
        try:
            w.flush()
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    received = drain.join()
    # The filler that got in first, then the pieces, whole and in order.
    body = b"".join(pieces)
    assert received.endswith(body)
    assert received[: -len(body)] == b"f" * (len(received) - len(body))
    assert w.stats["writev_calls"] >= 4  # at most IOV_MAX iovecs per writev


# ---- empty ----


def test_empty_pieces_and_lists(fio, socketpair):
    a, b = socketpair
    w = fio.BatchWriter(a, closefd=False)
    assert w.write(b"") == 0
    assert w.write(bytearray()) == 0
    assert w.write(memoryview(b"")) == 0
    w.writelines([])
    w.writelines([b"", b"", bytearray()])
    w.writelines(iter(()))
    assert w.pending == 0
    w.flush()
    assert w.stats["writev_calls"] == 0  # nothing to send, no system call
    w.writelines([b"", b"a", b"", b"b"])
    w.close()
    assert b.recv(10) == b"ab"


# ---- partial writes, non-blocking ----


def test_partial_writes_small_sndbuf_slow_reader(fio, socketpair):
    client, peer = socketpair
    client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.settimeout(30)  # one deadline per flush; the fd is non-blocking underneath
    rng = random.Random(7)
    pieces, expected = random_pieces(rng, 60, 200_000)
    sink = HashSink(peer, chunk=3000, delay=0.00005)
    w = fio.BatchWriter(client, closefd=False)
    for piece in pieces:
        w.write(piece)
    w.flush()
    client.shutdown(socket.SHUT_WR)
    assert sink.result() == digest_of(expected)
    st = w.stats
    assert st["partial_writes"] > 0
    assert st["would_block"] > 0
    assert st["bytes_sent"] == sum(len(e) for e in expected)


def test_nonblocking_socket_paused_reader_resumes_byte_for_byte(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    rng = random.Random(11)
    pieces, expected = random_pieces(rng, 200, 400_000)
    sink = HashSink(b, paused=True)
    w = fio.BatchWriter(a, closefd=False)
    for piece in pieces:
        w.write(piece)  # automatic flushes stop quietly when the kernel is full
    total = sum(len(e) for e in expected)
    assert w.pending > 0
    sent_by_flushes = 0
    with pytest.raises(BlockingIOError) as info:
        w.flush()
    assert info.value.characters_written == info.value.transferred
    sent_by_flushes += info.value.characters_written
    sink.go.set()  # the reader resumes
    deadline = time.monotonic() + 30
    while True:
        before = w.pending
        try:
            w.flush()
        except BlockingIOError as exc:
            assert w.pending == before - exc.characters_written
            sent_by_flushes += exc.characters_written
            assert time.monotonic() < deadline
            time.sleep(0.0005)
            continue
        sent_by_flushes += before
        break
    assert w.pending == 0
    a.shutdown(socket.SHUT_WR)
    assert sink.result() == (total, digest_of(expected)[1])
    assert w.stats["bytes_sent"] == total
    assert w.stats["would_block"] >= 1


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_nonblocking_random_operations_byte_exact(fio, socketpair, seed):
    """Leftovers after partial sends, staging compaction and growth, merges after a
    partial piece: whatever the order, the stream that arrives is the stream written."""
    a, b = socketpair
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    rng = random.Random(seed)
    buffer_size = rng.choice([64, 1000, 4096, 65536])
    copy_threshold = rng.randint(0, buffer_size)
    w = fio.BatchWriter(a, closefd=False, buffer_size=buffer_size, copy_threshold=copy_threshold)
    gate = threading.Event()
    gate.set()
    received = hashlib.sha256()
    count = [0]

    def reader():
        while True:
            gate.wait()
            data = b.recv(rng.choice([100, 5000, 1 << 16]))
            if not data:
                return
            received.update(data)
            count[0] += len(data)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    expected = hashlib.sha256()
    total = 0
    for step in range(1500):
        if step % 200 == 0:
            gate.clear() if gate.is_set() else gate.set()
        op = rng.random()
        if op < 0.6:
            size = rng.choice([0, 1, 7, 63, 500, copy_threshold, buffer_size, 3 * buffer_size])
            data = rng.randbytes(size)
            piece = rng.choice([bytes, bytearray, memoryview])(data)
            w.write(piece)
            if isinstance(piece, bytearray):
                piece[:] = b"!" * len(piece)
            expected.update(data)
            total += size
        elif op < 0.8:
            pieces = [rng.randbytes(rng.randint(0, 300)) for _ in range(rng.randint(0, 40))]
            w.writelines(pieces)
            for p in pieces:
                expected.update(p)
                total += len(p)
        else:
            try:
                w.flush()
            except BlockingIOError as exc:
                assert exc.characters_written >= 0
    gate.set()
    deadline = time.monotonic() + 30
    while True:
        try:
            w.flush()
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    t.join(30)
    assert count[0] == total
    assert received.hexdigest() == expected.hexdigest()
    assert w.stats["bytes_sent"] == total


def test_timeout_target_flush_raises_timeout_and_resumes(fio, socketpair):
    a, b = socketpair
    a.settimeout(0.2)
    w = fio.BatchWriter(a, closefd=False)
    data = os.urandom(8 << 20)
    w.write(data)  # the automatic flush stops at the deadline, the rest stays pending
    assert 0 < w.pending < len(data)
    pending = w.pending
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        w.flush()
    assert time.monotonic() - t0 < 5
    assert w.pending == pending - info.value.transferred
    drain = drain_in_thread(b)
    w.flush()
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == data


def test_max_pending_backpressure(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    limit = 100_000
    w = fio.BatchWriter(a, closefd=False, max_pending=limit)
    sink = HashSink(b, paused=True)
    accepted = []
    refused = None
    for i in range(100_000):
        piece = (b"%08d" % i) * 64  # 512 bytes
        try:
            w.write(piece)
        except BlockingIOError as exc:
            assert exc.characters_written == 0  # refused whole, nothing of it taken
            refused = piece
            break
        accepted.append(piece)
        assert w.pending <= limit
    assert refused is not None, "the writer never pushed back"
    assert w.pending <= limit
    assert w.pending + len(refused) > limit
    with pytest.raises(BlockingIOError):
        w.writelines([refused])
    sink.go.set()
    deadline = time.monotonic() + 30
    while True:
        try:
            w.write(refused)  # the caller retries the refused piece
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    accepted.append(refused)
    while True:
        try:
            w.flush()
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    assert sink.result() == digest_of(accepted)


def test_max_pending_piece_larger_than_limit(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
    w = fio.BatchWriter(a, closefd=False, max_pending=1000)
    big = os.urandom(4 << 20)
    with pytest.raises(BlockingIOError) as info:
        w.write(big)
    taken = info.value.characters_written
    assert 0 < taken < len(big)  # what went straight to the kernel counts as taken
    assert w.pending == 0
    drain = drain_in_thread(b)
    rest = memoryview(big)[taken:]
    deadline = time.monotonic() + 30
    while len(rest):
        try:
            w.write(rest)
            break
        except BlockingIOError as exc:
            rest = rest[exc.characters_written :]
            assert time.monotonic() < deadline
            time.sleep(0.001)
    while True:
        try:
            w.flush()
            break
        except BlockingIOError:
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == big


# ---- what the caller may do with its buffers ----


def test_caller_mutates_bytearray_after_write(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    w = fio.BatchWriter(a, closefd=False, buffer_size=8192, copy_threshold=256)
    expected = []
    # Small (copied), large writable (copied), and larger than buffer_size (sent in place,
    # the rest copied when the kernel is full: the socket is non-blocking and nobody reads).
    for size in (10, 300, 5000, 3 << 20, 40):
        buf = bytearray(os.urandom(size))
        expected.append(bytes(buf))
        w.write(buf)
        buf[:] = b"\xff" * size  # reused at once...
        buf.extend(b"more")  # ...and even resized: no export is left on it
        view = memoryview(bytearray(os.urandom(size)))
        expected.append(bytes(view))
        w.write(view)
        view[:] = b"\x00" * size
    assert w.pending > 0
    drain = drain_in_thread(b)
    deadline = time.monotonic() + 30
    while True:
        try:
            w.flush()
            break
        except BlockingIOError:
            assert time.monotonic() < deadline
            time.sleep(0.001)
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == b"".join(expected)


def test_references_return_to_baseline(fio, socketpair):
    a, b = socketpair
    drain = drain_in_thread(b)
    big = os.urandom(100_000)
    medium = os.urandom(5000)
    source = os.urandom(20_000)
    ro_view = memoryview(source)
    holder = bytearray(50_000)
    counts = [sys.getrefcount(x) for x in (big, medium, source, holder)]
    w = fio.BatchWriter(a, closefd=False, buffer_size=1 << 20)
    for _ in range(20):
        w.write(medium)  # kept by reference until flushed
        w.write(ro_view)  # a held read-only buffer
        w.write(holder)
    assert sys.getrefcount(medium) > counts[1]  # really held by reference
    w.write(big)
    w.writelines([big, medium, ro_view])
    w.flush()
    assert [sys.getrefcount(x) for x in (big, medium, source, holder)] == counts
    holder.extend(b"x")  # no export left on the bytearray
    ro_view.release()  # no export left on the view either
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert len(drain.join()) == 20 * (5000 + 20_000 + 50_000) + 2 * 100_000 + 5000 + 20_000


def test_close_releases_unsent_references(fio, socketpair):
    a, b = socketpair
    big = os.urandom(50_000)
    base = sys.getrefcount(big)
    w = fio.BatchWriter(a, closefd=False, buffer_size=1 << 20)
    w.write(big)
    assert sys.getrefcount(big) == base + 1
    with pytest.raises(ZeroDivisionError):
        with w:
            w.write(big)
            raise ZeroDivisionError
    # An exit by an exception drops the unsent pieces: nothing went out.
    assert w.closed
    assert sys.getrefcount(big) == base
    b.setblocking(False)
    with pytest.raises(BlockingIOError):
        b.recv(10)


# ---- errors ----


def test_peer_close_error_is_sticky(fio, tcp_pair):
    client, peer = tcp_pair
    peer.close()
    w = fio.BatchWriter(client, closefd=False)
    chunk = b"z" * 100_000
    with pytest.raises((BrokenPipeError, ConnectionResetError)) as info:
        for _ in range(1000):
            w.write(chunk)
            w.flush()
            time.sleep(0.001)
    first = type(info.value)
    assert isinstance(info.value.transferred, int)
    with pytest.raises(first):
        w.write(b"x")
    with pytest.raises(first):
        w.writelines([b"x"])
    with pytest.raises(first):
        w.flush()
    with pytest.raises(first):
        w.close()  # the unsent bytes are lost: close says so, and closes
    assert w.closed
    w.close()  # a second close is a no-op
    with pytest.raises(ValueError):
        w.write(b"x")


def test_bad_fd_is_an_oserror(fio):
    r, wfd = os.pipe()
    os.close(r)
    os.close(wfd)
    for kwargs in ({}, {"timeout": 5}):
        with pytest.raises(OSError) as info:
            fio.BatchWriter(wfd, closefd=False, **kwargs)  # its mode cannot be read
        assert info.value.errno == errno.EBADF
    r, wfd = os.pipe()
    w = fio.BatchWriter(wfd, closefd=False)
    w.write(b"abc")
    os.close(wfd)  # closed behind the writer's back
    os.close(r)
    with pytest.raises(OSError) as info:
        w.flush()
    assert info.value.errno == errno.EBADF
    assert info.value.transferred == 0
    with pytest.raises(OSError):
        w.write(b"x")
    with pytest.raises(OSError):
        w.close()
    assert w.closed


def test_explicit_timeout_on_raw_fd(fio):
    r, wfd = os.pipe()
    os.set_blocking(wfd, False)
    try:
        w = fio.BatchWriter(wfd, closefd=False, timeout=0.1)
        t0 = time.monotonic()
        w.write(b"p" * (1 << 20))  # the pipe fills; the automatic flush stops at the deadline
        assert 0 < w.pending < 1 << 20
        pending = w.pending
        with pytest.raises(TimeoutError) as info:
            w.flush()
        assert info.value.transferred == 0 == pending - w.pending
        with pytest.raises(TimeoutError):
            w.close()  # closed anyway; the unsent bytes are lost and the error says so
        assert w.closed
        assert time.monotonic() - t0 < 5
    finally:
        os.close(r)
        os.close(wfd)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_zero_timeout_on_blocking_fd_does_not_hold_the_gil(fio):
    # timeout=0 on a blocking fd: the kernel blocks in writev (non-blocking behaviour is
    # not promised there), but the GIL must not be held meanwhile: the Python reader
    # thread below has to run for the write to finish.
    r, wfd = os.pipe()
    received = []

    def drain():
        time.sleep(0.1)
        while sum(map(len, received)) < 1 << 20:
            received.append(os.read(r, 1 << 16))

    # Watchdog: a child process that unblocks the writer after 20 s if the thread could
    # not (the test then fails on the data instead of hanging).
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(20)
            while os.read(r, 1 << 16):
                pass
        finally:
            os._exit(0)
    try:
        w = fio.BatchWriter(wfd, closefd=False, timeout=0)
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        w.write(b"q" * (1 << 20))
        w.flush()
        t.join(30)
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(wfd)
        os.close(r)
    assert b"".join(received) == b"q" * (1 << 20)


def test_wrong_types_and_values(fio, socketpair):
    a, _ = socketpair
    w = fio.BatchWriter(a, closefd=False)
    for bad in ("text", 5, None, 3.0, [b"a"], object()):
        with pytest.raises(TypeError):
            w.write(bad)
    with pytest.raises(TypeError):
        w.writelines([b"ok", "text"])
    with pytest.raises(TypeError):
        w.writelines(5)
    with pytest.raises(BufferError):
        w.write(memoryview(bytearray(100))[::2])
    assert w.pending == 2  # b"ok" before the bad item was taken, as io's writelines does
    w.write(memoryview(bytes(range(16))).cast("i"))  # any format, taken as bytes
    assert w.pending == 18
    for kwargs, exc in (
        (dict(buffer_size=0), ValueError),
        (dict(buffer_size="1"), TypeError),
        (dict(buffer_size=True), TypeError),
        (dict(copy_threshold=-1), ValueError),
        (dict(copy_threshold=10**6), ValueError),
        (dict(max_pending=-1), ValueError),
        (dict(max_pending=1.5), TypeError),
        (dict(timeout=-1), ValueError),
        (dict(timeout="1"), TypeError),
    ):
        with pytest.raises(exc):
            fio.BatchWriter(a, closefd=False, **kwargs)
    for target in ("a", 1.5, None, -1):
        with pytest.raises((TypeError, ValueError)):
            fio.BatchWriter(target)
    with pytest.raises(TypeError):
        fio.BatchWriter(a, 1024)  # keywords only
    closed = socket.socket()
    closed.close()
    with pytest.raises(OSError):
        fio.BatchWriter(closed)


def test_after_close(fio, socketpair):
    a, b = socketpair
    w = fio.BatchWriter(a, closefd=False)
    w.write(b"last")
    w.close()
    assert w.closed
    assert b.recv(10) == b"last"
    for call in (lambda: w.write(b"x"), lambda: w.writelines([b"x"]), w.flush, w.__enter__):
        with pytest.raises(ValueError):
            call()
    w.close()
    assert a.fileno() != -1  # closefd=False


def test_closefd(fio):
    a, b = socket.socketpair()
    with fio.BatchWriter(a) as w:  # default closefd=True, as open(fd) and io.FileIO
        w.write(b"hi")
    assert a.fileno() == -1
    assert b.recv(10) == b"hi"
    b.close()
    r, wfd = os.pipe()
    fio.BatchWriter(wfd, closefd=False).close()
    os.fstat(wfd)  # still open
    fio.BatchWriter(wfd).close()
    with pytest.raises(OSError):
        os.fstat(wfd)
    os.close(r)


def test_concurrent_call_is_refused(fio, socketpair):
    a, b = socketpair
    w = fio.BatchWriter(a, closefd=False)
    errors = []
    drains = []

    def other():
        time.sleep(0.2)
        try:
            w.write(b"x" * 5000)
        except RuntimeError as exc:
            errors.append(exc)
        drains.append(drain_in_thread(b))

    # The write below blocks in its flush (nobody reads) until `other` starts draining.
    t = threading.Thread(target=other, daemon=True)
    t.start()
    w.write(os.urandom(8 << 20))
    t.join(30)
    assert len(errors) == 1
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert len(drains[0].join()) == 8 << 20


# ---- signals ----


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_signal_handler_runs_during_blocking_flush(fio, socketpair):
    a, b = socketpair
    calls = []
    old = signal.signal(signal.SIGALRM, lambda *args: calls.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05, 0.05)
        w = fio.BatchWriter(a, closefd=False)
        data = os.urandom(16 << 20)

        def late_reader():
            time.sleep(0.3)
            return drain_in_thread(b)

        result = {}
        t = threading.Thread(target=lambda: result.update(d=late_reader()), daemon=True)
        t.start()
        w.write(data)
        w.flush()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    a.shutdown(socket.SHUT_WR)
    t.join(30)
    assert result["d"].join() == data
    assert calls


class Stop(Exception):
    pass


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_raising_signal_handler_stops_blocking_flush(fio, socketpair):
    a, b = socketpair

    def handler(*args):
        raise Stop()

    old = signal.signal(signal.SIGALRM, handler)
    data = os.urandom(16 << 20)
    w = fio.BatchWriter(a, closefd=False)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        t0 = time.monotonic()
        with pytest.raises(Stop) as info:
            w.write(data)  # blocks: nobody reads
        assert time.monotonic() - t0 < 10
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    drain = drain_in_thread(b)
    if fio.IMPLEMENTATION == "c":
        # Progress is exact: the rest is still pending and goes out byte for byte.
        assert info.value.transferred == len(data) - w.pending
        w.flush()
        a.shutdown(socket.SHUT_WR)
        assert drain.join() == data
    else:
        # Python drops the count of a writev cut short by a raising handler: the Python
        # twin cannot know what went out, so it fails (sticky) rather than send twice.
        with pytest.raises(InterruptedError):
            w.flush()
        a.shutdown(socket.SHUT_WR)
        received = drain.join()
        assert data.startswith(received)
    if fio.IMPLEMENTATION == "c":
        w.close()
    else:
        with pytest.raises(InterruptedError):
            w.close()


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs setitimer")
def test_raising_signal_handler_while_waiting_keeps_pieces(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    filled = 0
    with pytest.raises(BlockingIOError):
        while True:
            filled += a.send(b"f" * 65536)
    a.settimeout(20)  # the flush waits in poll (the socket itself is non-blocking)

    def handler(*args):
        raise Stop()

    old = signal.signal(signal.SIGALRM, handler)
    source = os.urandom(4 << 20)
    data = memoryview(source)  # read-only: kept by reference
    w = fio.BatchWriter(a, closefd=False)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        with pytest.raises(Stop) as info:
            w.write(data)  # its flush waits (nobody reads) until the handler raises
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, old)
    assert info.value.transferred == len(source) - w.pending
    drain = drain_in_thread(b)
    w.flush()  # the pieces (and the held view) are intact: the rest goes out
    a.shutdown(socket.SHUT_WR)
    assert drain.join() == b"f" * filled + source
    w.close()


# ---- counters ----


def test_stats_and_global_counters(fio, socketpair):
    a, b = socketpair
    drain = drain_in_thread(b)
    before = common(fio)
    w = fio.BatchWriter(a, closefd=False, copy_threshold=1024)
    small = [b"s" * 100] * 50
    large = [os.urandom(65536) for _ in range(4)]
    for s in small:
        w.write(s)
    for piece in large:
        w.write(piece)
    w.write(bytearray(2000))  # writable: copied
    w.flush()
    st = w.stats
    assert set(st) == {
        "writes",
        "bytes_sent",
        "bytes_copied",
        "bytes_referenced",
        "writev_calls",
        "partial_writes",
        "would_block",
    }
    assert st["writes"] == 55
    assert st["bytes_copied"] == 100 * 50 + 2000  # large pieces never copied
    assert st["bytes_referenced"] == 4 * 65536
    assert st["bytes_sent"] == 100 * 50 + 4 * 65536 + 2000
    assert 1 <= st["writev_calls"] <= 6
    after = common(fio)
    for key in ("calls", "bytes", "syscalls", "would_block", "eintr", "partial", "fallbacks"):
        assert key in after
    assert after["writes"] - before["writes"] == 55
    assert after["bytes"] - before["bytes"] == st["bytes_sent"]
    assert after["copied"] - before["copied"] == st["bytes_copied"]
    assert after["referenced"] - before["referenced"] == st["bytes_referenced"]
    assert after["syscalls"] - before["syscalls"] == st["writev_calls"]
    assert after["calls"] - before["calls"] == 56
    w.close()
    a.shutdown(socket.SHUT_WR)
    assert len(drain.join()) == st["bytes_sent"]


def test_public_module_and_repr(fio, socketpair):
    import fastio
    import fastio.batch

    assert fastio.BatchWriter is fastio.batch.BatchWriter
    assert "BatchWriter" in fastio.__all__
    a, _ = socketpair
    w = fio.BatchWriter(a, closefd=False)
    assert w.fileno() == a.fileno()
    assert "pending=0" in repr(w)
    w.close()
    assert "closed" in repr(w)


def test_closed_peer_is_broken_pipe_even_with_sigpipe_at_its_default(fio):
    """A program that restores SIGPIPE's default (as command-line tools do) is not killed when
    a BatchWriter writes to a socket whose peer went away: sendmsg(MSG_NOSIGNAL), EPIPE."""
    import subprocess

    script = f"""
import signal, socket, fastio._impl as impl
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
a, b = socket.socketpair()
b.close()
w = impl.twin({fio.IMPLEMENTATION!r}).BatchWriter(a)
w.write(b"x" * 100)
try:
    w.flush()
except BrokenPipeError:
    print("EPIPE")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, (done.returncode, done.stderr)  # -13: killed by SIGPIPE
    assert done.stdout.strip() == "EPIPE"
