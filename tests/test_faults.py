"""Every primitive under injected faults: EINTR, EAGAIN, short counts, resets, lack of memory.

Each test runs one twin on real sockets or pipes while ``fastio._faults`` makes its system calls
fail on a seeded random schedule (the native twin needs a ``FASTIO_FAULTS=1`` build, which
.ci/run makes), and checks what the contract promises whatever the kernel says:

- byte-exact delivery (a hash on the receiving side) of everything a call reported done;
- a failing call carries exactly the progress it made (``.transferred``, ``.partial``), and
  the next call resumes from there;
- no fd, buffer or pool slot leaks; every run bounded in time (a hang fails).

``FASTIO_FAULT_SEEDS`` (default 6) sets how many seeds each test runs; a failing seed replays.
"""

import errno
import gc
import hashlib
import os
import random
import select
import socket
import struct
import threading
import time

import pytest
from conftest import bounded, open_fds

from fastio import _faults
from fastio._errors import IncompleteReadError

SEEDS = range(int(os.environ.get("FASTIO_FAULT_SEEDS", "6")))
INJECTED = (ConnectionResetError, BrokenPipeError)
INJECTED_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOMEM, errno.ENOBUFS, errno.EAGAIN}
BOUND = 30.0


def payload(seed, size):
    return random.Random(seed).randbytes(size)


def injected(exc):
    """An error the schedule injected (resets, ENOMEM/ENOBUFS, EAGAIN on a non-blocking fd)."""
    return isinstance(exc, OSError) and exc.errno in INJECTED_ERRNOS


def chunk(rng, schedule):
    """A count for one transfer call: mostly bounded, so a blocking call is many calls.

    ``None`` (the rest in one call) only once the schedule has fired: file to file, or to a
    blocking socket, the rest is one system call, and a seed whose first faulted call lies
    past the few calls made by then injected nothing (issue 9: seed 6 drew 5281, 17146, None:
    three system calls, and its schedule first fires at the sixth).
    """
    count = None if rng.random() < 0.05 else rng.randrange(1, 40000)
    if count is None and not schedule.counts()["total"]:
        count = rng.randrange(1, 40000)
    return count


def small_buffers(*socks):
    """Small kernel buffers: many system calls per transfer, so the schedule has calls to hit."""
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)


def sender(sock, data, close=True):
    """Send ``data`` from a thread (plain socket calls: no faults there), then close."""

    def run():
        try:
            sock.sendall(data)
        finally:
            if close:
                sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def receiver(sock):
    """Hash everything received on ``sock`` until EOF; ``join()`` returns (sha256, size)."""
    digest = hashlib.sha256()
    size = [0]

    def run():
        while True:
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            digest.update(chunk)
            size[0] += len(chunk)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Received:
        def join(self):
            thread.join(BOUND)
            assert not thread.is_alive(), "receiver did not finish"
            return digest.hexdigest(), size[0]

    return Received()


# --- ring: Reader --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("method", ["read", "readexactly", "readuntil", "read_frame", "read_all"])
def test_reader_delivers_every_byte_under_faults(fio, faults, seed, method):
    rng = random.Random(seed)
    if method == "read_frame":
        frames = [rng.randbytes(rng.randrange(0, 900)) for _ in range(300)]
        data = b"".join(struct.pack("!I", len(f)) + f for f in frames)
    elif method == "readuntil":
        lines = [
            rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"") + b"\n" for _ in range(400)
        ]
        data = b"".join(lines)
    else:
        data = payload(seed, 150_000)
    fds = open_fds()
    a, b = socket.socketpair()
    out = bytearray()
    errors = 0
    with bounded(BOUND), faults(seed=seed, rate=0.25) as schedule:
        writer = sender(a, data)
        reader = fio.Reader(b, capacity=4096, mirrored=rng.choice([None, False]))
        while True:
            buffered = reader.buffered
            try:
                if method == "read":
                    chunk = reader.read(rng.randrange(1, 3000))
                    if not chunk:
                        break
                elif method == "readexactly":
                    chunk = reader.readexactly(rng.randrange(1, 4096))
                elif method == "readuntil":
                    chunk = reader.readuntil(b"\n")
                elif method == "read_frame":
                    frame = reader.read_frame()
                    chunk = struct.pack("!I", len(frame)) + frame
                else:
                    chunk = reader.read()
                    out += chunk
                    break
            except IncompleteReadError as exc:
                out += exc.partial
                break
            except OSError as exc:
                assert injected(exc), exc
                errors += 1
                # A failed receive moved nothing. read(-1) keeps what it had gathered buffered
                # for the next call and shows a copy of it (.partial, .transferred).
                partial = getattr(exc, "partial", b"")
                assert getattr(exc, "transferred", 0) == len(partial)
                if method == "read_all" and partial:
                    assert reader.buffered == len(partial)
                else:
                    assert reader.buffered >= buffered  # nothing consumed
                continue
            out += chunk
        writer.join(BOUND)
        counts = schedule.counts()
    b.close()
    assert hashlib.sha256(out).digest() == hashlib.sha256(data).digest()
    assert len(out) == len(data)
    assert counts["total"] > 0, counts  # the schedule did fire: this test can fail
    del reader
    gc.collect()
    assert open_fds() == fds


@pytest.mark.parametrize("seed", SEEDS)
def test_ring_fill_from_a_nonblocking_pipe_under_faults(fio, faults, seed):
    """fill() on an O_NONBLOCK pipe: every failure moved nothing and leaves the ring as it was."""
    data = payload(seed, 100_000)
    r, w = os.pipe()
    os.set_blocking(r, False)
    rng = random.Random(seed)
    out = bytearray()
    ring = fio.RingBuffer(8192)

    def write_all():
        with os.fdopen(w, "wb") as f:
            f.write(data)

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    with bounded(BOUND), faults(seed=seed, rate=0.3) as schedule:
        while True:
            before = len(ring)
            try:
                n = ring.fill(r, rng.randrange(1, 9000))
            except BlockingIOError as exc:
                assert exc.characters_written == 0 and len(ring) == before
                select.select([r], [], [], BOUND)
                continue
            except OSError as exc:
                assert injected(exc), exc
                assert exc.transferred == 0 and len(ring) == before
                continue
            assert len(ring) == before + n
            if n == 0:
                break
            out += ring.read(rng.randrange(0, len(ring) + 1))
        out += ring.read()
        counts = schedule.counts()
    writer.join(BOUND)
    os.close(r)
    ring.close()
    assert out == data
    assert counts["total"] > 0


# --- ring: drain ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_ring_drain_reports_exact_progress_under_faults(fio, faults, seed, blocking):
    rng = random.Random(seed)
    data = payload(seed, 120_000)
    a, b = socket.socketpair()
    a.setblocking(blocking)
    got = receiver(b)
    ring = fio.RingBuffer(16384, mirrored=rng.choice([None, False]))
    fed = 0
    with bounded(BOUND), faults(seed=seed, rate=0.3) as schedule:
        while fed < len(data) or len(ring):
            if fed < len(data):
                fed += ring.write(data[fed : fed + rng.randrange(1, 16384)])
            before = len(ring)
            try:
                sent = ring.drain(a, rng.choice([None, rng.randrange(1, 20000)]))
            except OSError as exc:
                assert injected(exc), exc
                # Exactly what left the ring was sent, and is reported.
                assert exc.transferred == before - len(ring)
                if isinstance(exc, BlockingIOError):
                    assert exc.characters_written == exc.transferred
                    select.select([], [a], [], BOUND)
                continue
            assert sent == before - len(ring)
        counts = schedule.counts()
    a.close()
    digest, size = got.join()
    b.close()
    ring.close()
    assert size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert counts["total"] > 0


@pytest.mark.parametrize("kind", _faults.KINDS)
def test_each_kind_on_the_first_call(fio, faults, kind):
    """The Nth-call schedule: the first receive of a Reader fails or comes short with ``kind``,
    and the reader then carries on to the exact stream."""
    data = payload(7, 10_000)
    a, b = socket.socketpair()
    writer = sender(a, data)
    reader = fio.Reader(b, capacity=4096)
    out = bytearray()
    with bounded(BOUND), faults(nth=1, kinds=[kind]) as schedule:
        first = None
        try:
            out += reader.readexactly(2000)
        except OSError as exc:
            first = exc
        while len(out) < len(data):
            out += reader.read(4096)
        counts = schedule.counts()
    writer.join(BOUND)
    b.close()
    assert out == data
    assert counts[kind] == 1 and counts["total"] == 1
    if kind in ("reset", "nomem"):
        assert first is not None and first.errno in INJECTED_ERRNOS and first.transferred == 0
    else:  # eintr and eagain are retried inside; short counts are just short
        assert first is None


def test_a_failed_drain_loses_no_buffer_reference(fio, faults):
    """After injected failures the ring closes cleanly: no view or busy mark left behind."""
    a, b = socket.socketpair()
    ring = fio.RingBuffer(4096)
    ring.write(b"x" * 4000)
    with faults(nth=1, kinds=["reset"]):
        with pytest.raises(BrokenPipeError) as info:
            ring.drain(a)
    assert info.value.transferred == 0 and len(ring) == 4000
    assert ring.drain(a) == 4000
    ring.close()
    assert ring.closed
    assert b.recv(4000, socket.MSG_WAITALL) == b"x" * 4000
    a.close()
    b.close()


# --- pool: the liveness check of SocketPool under faults -----------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_socket_pool_under_faults_loses_no_slot_or_fd(fio, faults, seed):
    listener = socket.create_server(("127.0.0.1", 0))
    key = listener.getsockname()
    accepted = []
    running = [True]

    listener.settimeout(0.05)  # close() does not wake accept(): poll the flag instead

    def serve():
        while running[0]:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            accepted.append(conn)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    fds = open_fds()
    pool = fio.SocketPool(max_per_key=3, check_after=0.0, acquire_timeout=10.0)
    rng = random.Random(seed)
    held = []
    with bounded(BOUND), faults(seed=seed, rate=0.3, calls=["recv"]) as schedule:
        for _ in range(200):
            if held and (len(held) == 3 or rng.random() < 0.5):
                pool.release(held.pop(rng.randrange(len(held))), discard=rng.random() < 0.1)
            else:
                held.append(pool.acquire(key))
            s = pool.stats()
            assert s.open == s.in_use + s.idle and s.in_use == len(held)
        counts = schedule.counts()
    for conn in held:
        pool.release(conn)
    s = pool.stats(key)
    assert (s.in_use, s.waiting) == (0, 0) and s.open == s.idle
    closed = (
        s.closed_max_idle
        + s.closed_max_idle_time
        + s.closed_max_lifetime
        + s.closed_broken
        + s.check_failures
    )
    assert s.created - closed == s.open, s  # every slot accounted for
    assert counts["total"] > 0 and s.check_failures > 0
    pool.close()
    running[0] = False
    server.join(BOUND)
    listener.close()
    for conn in accepted:
        conn.close()
    gc.collect()
    deadline = time.monotonic() + 5
    while open_fds() > fds and time.monotonic() < deadline:
        time.sleep(0.01)
    assert open_fds() <= fds


# --- transfer: sendfile, splice, copy, relay -----------------------------------------------


@pytest.fixture
def big_file(tmp_path):
    data = payload(99, 700_000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    return path, data


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_sendfile_resumes_from_the_file_position_under_faults(
    fio, faults, big_file, seed, blocking
):
    path, data = big_file
    a, b = socket.socketpair()
    small_buffers(a, b)
    a.setblocking(blocking)
    got = receiver(b)
    with open(path, "rb") as f, bounded(BOUND), faults(seed=seed, rate=0.3) as schedule:
        sent = 0
        rng = random.Random(seed)
        while sent < len(data):
            try:
                n = fio.sendfile(a, f, count=chunk(rng, schedule))
            except OSError as exc:
                assert injected(exc), exc
                sent += exc.transferred
                # The file position is left where the data stopped: the next call resumes.
                assert f.tell() == sent
                if isinstance(exc, BlockingIOError):
                    select.select([], [a], [], BOUND)
                continue
            sent += n
            assert f.tell() == sent
        counts = schedule.counts()
    a.close()
    digest, size = got.join()
    b.close()
    assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert counts["total"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_splice_is_exact_under_retryable_faults(fio, faults, seed):
    """splice() socket to socket goes through an internal pipe; EINTR, EAGAIN and short
    counts on either side of it lose and duplicate nothing. (An error on the sending side
    drops what the pipe held: see the module docstring's note.)"""
    data = payload(seed, 400_000)
    src_peer, src = socket.socketpair()
    dst, dst_peer = socket.socketpair()
    small_buffers(src_peer, src, dst, dst_peer)
    writer = sender(src_peer, data)
    got = receiver(dst_peer)
    moved = 0
    warm_a, warm_b = socket.socketpair()
    warm_a.sendall(b"w")
    assert fio.splice(warm_b, warm_a, 1) == 1  # the pipe pool now holds its pipe
    warm_a.close()
    warm_b.close()
    fds = open_fds()
    rng = random.Random(seed)
    kinds = ["eintr", "eagain", "short1", "half"]
    with bounded(BOUND), faults(seed=seed, rate=0.2, kinds=kinds) as schedule:
        while True:
            try:
                n = fio.splice(src, dst, chunk(rng, schedule))
            except BlockingIOError as exc:  # only from an injected EAGAIN: never here
                raise AssertionError("blocking splice raised BlockingIOError") from exc
            moved += n
            if n == 0 or moved >= len(data):
                break
        counts = schedule.counts()
    writer.join(BOUND)
    assert open_fds() == fds - 1  # the sender closed src_peer; the pipe pool kept its pipe
    dst.close()
    digest, size = got.join()
    src.close()
    dst_peer.close()
    assert moved == size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert counts["total"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_copy_file_to_file_resumes_under_faults(fio, faults, big_file, tmp_path, seed):
    path, data = big_file
    out_path = tmp_path / "copy.bin"
    with open(path, "rb") as src, open(out_path, "wb") as dst:
        with bounded(BOUND), faults(seed=seed, rate=0.3) as schedule:
            done = 0
            rng = random.Random(seed)
            while done < len(data):
                try:
                    n = fio.copy(src, dst, chunk(rng, schedule))
                except OSError as exc:
                    assert injected(exc), exc
                    done += exc.transferred
                    assert src.tell() == done and dst.tell() == done
                    continue
                done += n
                if n == 0:
                    break
            counts = schedule.counts()
    assert out_path.read_bytes() == data
    assert counts["total"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_relay_is_exact_under_transparent_faults(fio, faults, seed):
    """EINTR, EAGAIN and short counts inside relay's loop change nothing a peer can see."""
    up, down = payload(seed, 300_000), payload(seed + 1000, 200_000)
    c1, a = socket.socketpair()
    b, c2 = socket.socketpair()
    small_buffers(c1, a, b, c2)
    result = {}

    def run():
        result["counts"] = fio.relay(a, b)

    # Warm up: one relay leaves the pipe pool holding its pipes.
    w1, w2 = socket.socketpair()
    w3, w4 = socket.socketpair()
    w1.shutdown(socket.SHUT_WR)
    w4.shutdown(socket.SHUT_WR)
    assert fio.relay(w2, w3) == (0, 0)
    for s in (w1, w2, w3, w4):
        s.close()
    fds = open_fds()
    with bounded(BOUND), faults(seed=seed, rate=0.3, kinds=["eintr", "eagain", "short1", "half"]):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        got_down = receiver(c1)
        got_up = receiver(c2)
        sender(c1, up, close=False).join(BOUND)
        c1.shutdown(socket.SHUT_WR)
        sender(c2, down, close=False).join(BOUND)
        c2.shutdown(socket.SHUT_WR)
        thread.join(BOUND)
        assert not thread.is_alive()
    assert result["counts"] == (len(up), len(down))
    assert got_up.join() == (hashlib.sha256(up).hexdigest(), len(up))
    assert got_down.join() == (hashlib.sha256(down).hexdigest(), len(down))
    assert open_fds() == fds
    for s in (a, b, c1, c2):
        s.close()


SPLICE_GAP = pytest.mark.xfail(
    strict=True,
    reason="known gap (issue 3): splice() between two sockets drops the bytes its internal pipe "
    "holds when the sending side fails with an error the caller may retry (ENOBUFS/ENOMEM, or "
    "a raising signal handler): the stream then has a hole",
)


def test_splice_keeps_held_bytes_when_the_sending_side_fails(fio, faults, request):
    from fastio import _transfer_py

    if fio.IMPLEMENTATION == "c" or _transfer_py._HAVE_SPLICE:
        request.applymarker(SPLICE_GAP)  # without os.splice (3.9) the twin holds no pipe bytes
    data = payload(3, 300_000)
    src_peer, src = socket.socketpair()
    dst, dst_peer = socket.socketpair()
    small_buffers(src_peer, src, dst, dst_peer)
    writer = sender(src_peer, data)
    got = receiver(dst_peer)
    with bounded(BOUND), faults(seed=3, rate=0.2, kinds=["nomem"], calls=["splice"]):
        while True:
            try:
                if fio.splice(src, dst, 20000) == 0:
                    break
            except OSError as exc:
                assert exc.errno in (errno.ENOBUFS, errno.ENOMEM)
    writer.join(BOUND)
    dst.close()
    digest, size = got.join()
    src.close()
    dst_peer.close()
    assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))


# --- batch: BatchWriter ----------------------------------------------------------------------


def pieces(seed, count=3000):
    rng = random.Random(seed)
    return [rng.randbytes(rng.choice([1, 5, 40, 300, 2000, 9000])) for _ in range(count)]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("blocking", [True, False], ids=["blocking", "nonblocking"])
def test_batch_writer_is_exact_under_retryable_faults(fio, faults, seed, blocking):
    """EINTR, EAGAIN and partial writes: every byte arrives once, in order."""
    parts = pieces(seed)
    data = b"".join(parts)
    a, b = socket.socketpair()
    a.setblocking(blocking)
    got = receiver(b)
    kinds = ["eintr", "eagain", "short1", "half"]
    with bounded(BOUND), faults(seed=seed, rate=0.3, kinds=kinds) as schedule:
        writer = fio.BatchWriter(a, buffer_size=16384, closefd=False)
        for part in parts:
            writer.write(part)
        while True:
            try:
                writer.flush()
                break
            except BlockingIOError as exc:
                assert exc.characters_written >= 0
                select.select([], [a], [], BOUND)
        assert writer.pending == 0
        writer.close()
        counts = schedule.counts()
    a.close()
    assert got.join() == (hashlib.sha256(data).hexdigest(), len(data))
    assert counts["total"] > 0


@pytest.mark.parametrize("seed", SEEDS)
def test_batch_writer_error_leaves_an_exact_prefix(fio, faults, seed):
    """A reset or ENOBUFS mid-stream: the peer has received exactly the bytes written minus
    ``pending``, and they are a prefix of the stream; the error is sticky, and close() still
    releases everything."""
    parts = pieces(seed)
    data = b"".join(parts)
    a, b = socket.socketpair()
    got = receiver(b)
    written = 0
    error = None
    fds = open_fds()
    with bounded(BOUND), faults(seed=seed, rate=0.05, kinds=["reset", "nomem", "half"]):
        writer = fio.BatchWriter(a, buffer_size=16384, closefd=False)
        try:
            for part in parts:
                writer.write(part)
                written += len(part)
            writer.flush()
        except OSError as exc:
            assert injected(exc), exc
            error = exc
        pending = writer.pending
        if error is not None:
            with pytest.raises(OSError):
                writer.flush()  # sticky
        try:
            writer.close()
        except OSError:
            pass
    assert writer.closed
    a.close()
    digest, size = got.join()
    b.close()
    if error is None:
        assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data))
    else:
        # A write() that failed may have taken its piece (then it counts in pending) or not.
        assert size in (written - pending, written + _next_len(parts, written) - pending)
        assert digest == hashlib.sha256(data[:size]).hexdigest()
    assert open_fds() == fds - 2


def _next_len(parts, written):
    total = 0
    for part in parts:
        if total == written:
            return len(part)
        total += len(part)
    return 0


# --- regressions found by these checks -----------------------------------------------------


def test_a_kept_drain_error_does_not_pin_the_ring(fio):
    """Python twin bug found by the fault tests: the traceback of a failed drain held slices
    of the ring's mmap (in the frame of the helper that called ``os.writev``), so while the
    caller kept the exception, ``close()`` and ``clear()`` raised ``BufferError``. Here with
    a real EPIPE, no injection."""
    a, b = socket.socketpair()
    b.close()
    ring = fio.RingBuffer(4096)
    ring.write(b"x" * 100)
    with pytest.raises(BrokenPipeError) as kept:
        ring.drain(a)
    assert kept.value.transferred == 0
    ring.clear()
    ring.close()
    assert ring.closed
    a.close()


def test_a_kept_fill_error_does_not_pin_the_ring(fio):
    """The same for ``fill``: a receive that fails with a real error (EISDIR)."""
    fd = os.open(os.path.dirname(__file__), os.O_RDONLY)
    ring = fio.RingBuffer(4096)
    with pytest.raises(IsADirectoryError) as kept:
        ring.fill(fd)
    assert kept.value.transferred == 0
    ring.close()
    assert ring.closed
    os.close(fd)


def test_huge_offset_and_count_are_value_errors_or_no_limit(fio, tmp_path):
    """Found by tests/test_bad_input.py: ``sendfile(offset=2**63)`` and a count of 2**63 or
    more raised ``OverflowError`` from the native twin (the policy returned them as C long
    long). An offset past the largest file offset is a ValueError; a count that large means
    "no limit", as None does."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    a, b = socket.socketpair()
    with open(path, "rb") as f:
        with pytest.raises(ValueError):
            fio.sendfile(a, f, 2**63)
        assert fio.sendfile(a, f, 0, 2**63) == 3
        f.seek(0)
        assert fio.sendfile(a, f, 0, 2**70) == 3
    assert b.recv(6, socket.MSG_WAITALL) == b"abcabc"
    a.close()
    b.close()
