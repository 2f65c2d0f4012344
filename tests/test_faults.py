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
