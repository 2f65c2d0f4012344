"""sendfile, splice, copy and relay against both twins: real files, sockets and pipes."""

import errno
import gzip
import io
import os
import socket
import struct
import sys
import threading
import time

import pytest
from conftest import Stop, alarm_raises, drain_in_thread, open_fds

from fastio import _impl, _stats

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX fds")

SIZE = 10 * 1024 * 1024 + 13  # odd on purpose
DATA = os.urandom(SIZE)


@pytest.fixture(scope="module")
def big_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("transfer") / "big.bin"
    path.write_bytes(DATA)
    return path


@pytest.fixture
def small_path(tmp_path):
    path = tmp_path / "small.bin"
    path.write_bytes(DATA[:100_003])
    return path


def counters(fio):
    return _stats.snapshot(fio.IMPLEMENTATION)["transfer"]


def splices(fio):
    """Whether this twin splices through internal pipes here (Python 3.10+ has os.splice)."""
    from fastio import _transfer_py

    return fio.IMPLEMENTATION == "c" or _transfer_py._HAVE_SPLICE


def reader_thread(sock, delay=0.0, chunk=65536, stop_after=None):
    """Read ``sock`` in a thread (slowly with ``delay``); ``join()`` gives the bytes."""
    received = bytearray()

    def run():
        try:
            while True:
                if delay:
                    time.sleep(delay)
                data = sock.recv(chunk)
                if not data:
                    break
                received.extend(data)
                if stop_after is not None and len(received) >= stop_after:
                    break
        except OSError:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Reader:
        def join(self, timeout=30):
            thread.join(timeout)
            assert not thread.is_alive(), "reader thread did not finish"
            return bytes(received)

    return Reader()


def pipe_reader(fd):
    received = bytearray()

    def run():
        while True:
            data = os.read(fd, 1 << 16)
            if not data:
                break
            received.extend(data)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Reader:
        def join(self, timeout=30):
            thread.join(timeout)
            assert not thread.is_alive()
            return bytes(received)

    return Reader()


def pipe_writer(fd, data, close=True):
    def run():
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        if close:
            os.close(fd)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def send_and_close(sock, data):
    sock.sendall(data)
    sock.shutdown(socket.SHUT_WR)


# ---- sendfile ------------------------------------------------------------------------------


def test_sendfile_ten_mib_byte_for_byte(fio, socketpair, big_path):
    a, b = socketpair
    reader = drain_in_thread(b)
    with open(big_path, "rb") as f:
        assert fio.sendfile(a, f) == SIZE
        assert f.tell() == SIZE
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA


def test_sendfile_tcp(fio, tcp_pair, big_path):
    a, b = tcp_pair
    reader = drain_in_thread(b)
    with open(big_path, "rb", buffering=0) as f:
        assert fio.sendfile(a, f, 1000, 3_000_000) == 3_000_000
        assert f.tell() == 3_001_000
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[1000:3_001_000]


def test_sendfile_small_file_arrives_without_more_data(fio, tcp_pair, small_path):
    # sendfile is asked for exactly the bytes the file has: a larger count would set
    # SPLICE_F_MORE on the last piece, which some kernels leave corked in TCP
    a, b = tcp_pair
    b.settimeout(10)
    with open(small_path, "rb") as f:
        assert fio.sendfile(a, f, 100_000, 1_000_000) == 3
    assert b.recv(10) == DATA[100_000:100_003]


@pytest.mark.parametrize(
    "offset,count",
    [
        (0, None),
        (1, None),
        (4095, 1),
        (12345, 777),
        (100_002, None),
        (100_003, None),  # at EOF
        (100_013, None),  # past EOF
        (100_013, 5),
        (0, 10_000_000),  # count past EOF
        (7, 0),
    ],
)
def test_sendfile_offsets_and_counts(fio, socketpair, small_path, offset, count):
    a, b = socketpair
    data = DATA[:100_003]
    expected = data[offset:] if count is None else data[offset : offset + count]
    reader = drain_in_thread(b)
    with open(small_path, "rb") as f:
        f.seek(50)
        assert fio.sendfile(a, f, offset, count) == len(expected)
        # the position ends after the last byte sent (untouched when nothing was sent)
        assert f.tell() == (offset + len(expected) if expected else 50)
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == expected


@pytest.mark.parametrize("kind", ["buffered", "raw", "fd"])
def test_sendfile_consecutive_counts_advance_the_position(fio, socketpair, small_path, kind):
    a, b = socketpair
    reader = drain_in_thread(b)
    f = open(small_path, "rb", buffering=0 if kind != "buffered" else -1)
    source = f.fileno() if kind == "fd" else f
    try:
        for _ in range(3):
            assert fio.sendfile(a, source, count=1001) == 1001
        position = os.lseek(f.fileno(), 0, os.SEEK_CUR) if kind == "fd" else f.tell()
        assert position == 3003
        assert fio.sendfile(a, source) == 100_003 - 3003
    finally:
        f.close()
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:100_003]


def test_sendfile_respects_buffered_read_ahead(fio, socketpair, small_path):
    a, b = socketpair
    reader = drain_in_thread(b)
    with open(small_path, "rb") as f:
        assert f.read(10) == DATA[:10]  # the reader has buffered far more than 10 bytes
        assert fio.sendfile(a, f, count=90) == 90
        assert f.read(5) == DATA[100:105]
        assert fio.sendfile(a, f) == 100_003 - 105
        assert f.read() == b""
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[10:100] + DATA[105:100_003]


def test_sendfile_empty_file(fio, socketpair, tmp_path):
    a, _ = socketpair
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with open(path, "rb") as f:
        assert fio.sendfile(a, f) == 0
        assert fio.sendfile(a, f, 0, 10) == 0
        assert f.tell() == 0


def test_sendfile_sparse_file_above_4_gib(fio, socketpair, tmp_path):
    a, b = socketpair
    path = tmp_path / "sparse"
    base = (4 << 30) + 4096 * 3
    with open(path, "wb") as f:
        f.seek(base)
        f.write(b"far away data")
        f.truncate(base + 100)
    reader = drain_in_thread(b)
    with open(path, "rb") as f:
        assert fio.sendfile(a, f, base - 2, 8) == 8
        assert f.tell() == base + 6
        f.seek(base + 4)
        assert fio.sendfile(a, f) == 96
        assert f.tell() == base + 100
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == b"\0\0far aw" + b"away data" + b"\0" * 87


def test_sendfile_bytesio_source(fio, socketpair):
    a, b = socketpair
    reader = drain_in_thread(b)
    source = io.BytesIO(DATA[:600_000])
    assert fio.sendfile(a, source, 100, 500_000) == 500_000
    assert source.tell() == 500_100
    assert fio.sendfile(a, source) == 99_900
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[100:600_000]


def test_sendfile_pipe_source(fio, socketpair):
    a, b = socketpair
    r, w = os.pipe()
    writer = pipe_writer(w, DATA[:1_000_000])
    reader = drain_in_thread(b)
    try:
        assert fio.sendfile(a, r) == 1_000_000
    finally:
        os.close(r)
    writer.join(30)
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:1_000_000]


def test_sendfile_to_a_pipe_and_a_file(fio, small_path, tmp_path):
    r, w = os.pipe()
    reader = pipe_reader(r)
    with open(small_path, "rb") as f:
        assert fio.sendfile(w, f) == 100_003
    os.close(w)
    assert reader.join() == DATA[:100_003]
    os.close(r)
    with open(small_path, "rb") as f, open(tmp_path / "out", "wb") as out:
        assert fio.sendfile(out, f, 3, 1000) == 1000
    assert (tmp_path / "out").read_bytes() == DATA[3:1003]


def test_sendfile_nonblocking_socket_resumes_without_loss(fio, socketpair, big_path):
    a, b = socketpair
    a.setblocking(False)
    with open(big_path, "rb") as f:
        with pytest.raises(BlockingIOError) as info:
            fio.sendfile(a, f)
        sent = info.value.characters_written
        assert info.value.transferred == sent
        assert 0 < sent < SIZE
        assert f.tell() == sent
        reader = drain_in_thread(b)
        while f.tell() < SIZE:
            try:
                sent += fio.sendfile(a, f)
            except BlockingIOError as exc:
                sent += exc.characters_written
                time.sleep(0.001)
        assert sent == SIZE
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA


def test_sendfile_timeout_is_one_deadline_for_the_call(fio, socketpair, big_path):
    a, b = socketpair
    a.settimeout(0.3)
    stop = threading.Event()

    def slow_reader():  # keeps every single wait short, for far longer than the timeout
        while not stop.is_set() and b.recv(4096):
            time.sleep(0.02)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    try:
        with open(big_path, "rb") as f:
            # per-wait timeouts would never expire here (the reader frees room every 20 ms,
            # 10 MiB take ~50 s at its pace): one deadline for the call does
            with pytest.raises(TimeoutError) as info:
                fio.sendfile(a, f)
            assert 0 < info.value.transferred < SIZE
            assert f.tell() == info.value.transferred
        assert a.gettimeout() == 0.3
    finally:
        stop.set()
        reader.join(30)


def test_sendfile_explicit_timeout_on_a_nonblocking_fd(fio, socketpair, big_path):
    a, _ = socketpair
    a.setblocking(False)
    with open(big_path, "rb") as f:
        with pytest.raises(TimeoutError) as info:
            fio.sendfile(a.fileno(), f, timeout=0.1)
        assert 0 < info.value.transferred == f.tell()


@pytest.mark.parametrize("how", ["close", "reset"])
def test_sendfile_peer_closes_mid_transfer(fio, tcp_pair, big_path, how):
    a, b = tcp_pair
    if how == "reset":
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    reader = reader_thread(b, stop_after=100_000)

    def close_when_read():
        reader.join()
        b.close()

    closer = threading.Thread(target=close_when_read)
    closer.start()
    with open(big_path, "rb") as f:
        with pytest.raises((BrokenPipeError, ConnectionResetError)) as info:
            for _ in range(100):  # the kernel buffers may take a full file before the error
                fio.sendfile(a, f, 0)
        assert 0 <= f.tell() <= SIZE
        assert info.value.transferred >= 0
    closer.join(30)


def test_sendfile_file_shrinks_while_sending(fio, socketpair, tmp_path):
    a, b = socketpair
    path = tmp_path / "shrinking"
    path.write_bytes(DATA)
    received = bytearray()

    def read_then_truncate():
        while len(received) < 1_000_000:
            received.extend(b.recv(65536))
        os.truncate(path, 2_000_000)
        while True:
            data = b.recv(1 << 20)
            if not data:
                break
            received.extend(data)

    thread = threading.Thread(target=read_then_truncate)
    thread.start()
    with open(path, "rb") as f:
        sent = fio.sendfile(a, f)
        assert 1_000_000 <= sent <= SIZE
        assert f.tell() == sent
    a.shutdown(socket.SHUT_WR)
    thread.join(30)
    assert bytes(received) == DATA[: len(received)]
    assert len(received) == sent


def test_sendfile_file_grows_while_sending(fio, socketpair, tmp_path):
    a, b = socketpair
    path = tmp_path / "growing"
    path.write_bytes(DATA[:3_000_000])
    received = bytearray()

    def read_and_grow():
        grown = False
        while True:
            data = b.recv(65536)
            if not data:
                break
            received.extend(data)
            if not grown:
                with open(path, "ab") as g:
                    g.write(b"x" * 1000)
                grown = True

    thread = threading.Thread(target=read_and_grow)
    thread.start()
    with open(path, "rb") as f:
        sent = fio.sendfile(a, f)
        assert sent == 3_000_000  # the size when the call started
        assert f.tell() == sent
    a.shutdown(socket.SHUT_WR)
    thread.join(30)
    assert bytes(received) == (DATA[:3_000_000] + b"x" * 1000)[:sent]


def test_sendfile_bad_arguments_fail_before_any_syscall(fio, socketpair, small_path, tmp_path):
    a, _ = socketpair
    before = counters(fio)["syscalls"]
    with open(small_path, "rb") as f:
        with pytest.raises(TypeError):
            fio.sendfile("not a socket", f)
        with pytest.raises(TypeError):
            fio.sendfile(a, str(small_path))
        with pytest.raises(TypeError):
            fio.sendfile(a, f, 1.5)
        with pytest.raises(TypeError):
            fio.sendfile(a, f, count="3")
        with pytest.raises(TypeError):
            fio.sendfile(a, True)
        with pytest.raises(ValueError):
            fio.sendfile(a, f, -1)
        with pytest.raises(ValueError):
            fio.sendfile(a, f, count=-5)
        with pytest.raises(ValueError):
            fio.sendfile(a, f, timeout=-1)
        with pytest.raises(ValueError):
            fio.sendfile(a, -3)
    with open(small_path) as text, pytest.raises(TypeError, match="text"):
        fio.sendfile(a, text)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with open(small_path, "rb") as f, pytest.raises(ValueError, match="SOCK_STREAM"):
            fio.sendfile(udp, f)
    assert counters(fio)["syscalls"] == before


def test_sendfile_closed_ends(fio, small_path):
    a, b = socket.socketpair()
    b.close()
    closed = socket.socket()
    closed.close()
    with open(small_path, "rb") as f:
        with pytest.raises(OSError) as info:
            fio.sendfile(closed, f)
        assert info.value.errno == errno.EBADF
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            fio.sendfile(a, f)
        assert f.tell() == 0
    a.close()
    f = open(small_path, "rb")
    f.close()
    c, d = socket.socketpair()
    with c, d:
        with pytest.raises(ValueError):
            fio.sendfile(c, f)
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        with pytest.raises(OSError) as info:
            fio.sendfile(c, r)
        assert info.value.errno == errno.EBADF


def test_sendfile_raising_signal_handler_stops_with_progress(fio, socketpair, big_path):
    a, b = socketpair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    reader = reader_thread(b, delay=0.01, chunk=32768)
    with open(big_path, "rb") as f:
        started = time.monotonic()
        with alarm_raises(0.3), pytest.raises(Stop) as info:
            fio.sendfile(a, f)
        assert time.monotonic() - started < 10  # prompt, not after the whole file
        sent = info.value.transferred
        assert 0 < sent < SIZE
        assert f.tell() == sent
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:sent]


def test_sendfile_counts(fio, socketpair, small_path):
    a, b = socketpair
    reader = drain_in_thread(b)
    before = counters(fio)
    with open(small_path, "rb") as f:
        fio.sendfile(a, f)
    after = counters(fio)
    assert after["calls"] == before["calls"] + 1
    assert after["bytes"] == before["bytes"] + 100_003
    assert after["sendfile_bytes"] == before["sendfile_bytes"] + 100_003
    assert after["syscalls"] > before["syscalls"]
    a.shutdown(socket.SHUT_WR)
    reader.join()


# ---- splice --------------------------------------------------------------------------------


def test_splice_socket_to_socket(fio, socketpair, tcp_pair):
    src_w, src = socketpair
    dst, dst_r = tcp_pair
    writer = threading.Thread(target=send_and_close, args=(src_w, DATA[:5_000_000]))
    writer.start()
    reader = drain_in_thread(dst_r)
    assert fio.splice(src, dst) == 5_000_000
    writer.join(30)
    dst.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:5_000_000]


def test_splice_count_leaves_the_rest(fio, socketpair):
    src_w, src = socketpair
    c, d = socket.socketpair()
    with c, d:
        src_w.sendall(DATA[:50_000])
        assert fio.splice(src, c, 12_345) == 12_345
        c.shutdown(socket.SHUT_WR)
        assert drain_in_thread(d).join() == DATA[:12_345]
        src_w.shutdown(socket.SHUT_WR)
        assert drain_in_thread(src).join() == DATA[12_345:50_000]


def test_splice_pipes_and_files(fio, socketpair, small_path, tmp_path):
    a, b = socketpair
    # pipe -> socket
    r, w = os.pipe()
    writer = pipe_writer(w, DATA[:300_000])
    reader = drain_in_thread(b)
    assert fio.splice(r, a) == 300_000
    writer.join(30)
    os.close(r)
    # file -> socket, positioned
    with open(small_path, "rb") as f:
        f.seek(3)
        assert fio.splice(f, a, 1000) == 1000
        assert f.tell() == 1003
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:300_000] + DATA[3:1003]
    # file -> pipe, socket -> pipe
    r, w = os.pipe()
    reader = pipe_reader(r)
    with open(small_path, "rb") as f:
        assert fio.splice(f, w) == 100_003
    c, d = socket.socketpair()
    with c, d:
        send_and_close(c, b"from a socket")
        assert fio.splice(d, w) == 13
    os.close(w)
    assert reader.join() == DATA[:100_003] + b"from a socket"
    os.close(r)
    # socket -> file
    c, d = socket.socketpair()
    with c, d, open(tmp_path / "out", "wb") as out:
        out.write(b"head")
        writer = threading.Thread(target=send_and_close, args=(c, DATA[:400_000]))
        writer.start()
        assert fio.splice(d, out) == 400_000
        writer.join(30)
        assert out.tell() == 400_004
    assert (tmp_path / "out").read_bytes() == b"head" + DATA[:400_000]


def test_splice_pipe_pool_leaves_no_fd_behind(fio, socketpair):
    a, b = socketpair
    c, d = socket.socketpair()
    # start from an empty pool (earlier tests, relays among them, may have filled it)
    _impl.twin_module("transfer", fio.IMPLEMENTATION)._forget_pipes()
    with c, d:
        c.sendall(b"warm up")
        assert fio.splice(d, a, 7) == 7  # the pool now holds a pipe
        assert b.recv(10) == b"warm up"
        before = open_fds()
        stats = counters(fio)
        for i in range(20):
            c.sendall(b"x" * 1000)
            assert fio.splice(d, a, 1000) == 1000
            assert b.recv(2000) == b"x" * 1000
            if i % 5 == 0:  # an error with bytes held in the pipe: that pipe is closed
                e, g = socket.socketpair()
                g.close()
                c.sendall(b"y" * 1000)
                with pytest.raises((BrokenPipeError, ConnectionResetError)):
                    fio.splice(d, e, 1000)
                e.close()
                # the bytes the failed call took from d are kept and come first
                assert fio.splice(d, a, 1000) == 1000
                assert b.recv(2000) == b"y" * 1000
        # Every fd that came or went is a pooled pipe's. Not simply ``== before``: the pool
        # may hold more than the warm-up's pipe (a relay earlier in the run leaves two), and
        # the pipes closed after errors are replaced only as far as one splice needs.
        after = counters(fio)
        pipes = (after["pipes_created"] - stats["pipes_created"]) - (
            after["pipes_closed"] - stats["pipes_closed"]
        )
        assert open_fds() == before + 2 * pipes
        assert pipes <= 0
        if splices(fio):  # without os.splice the twin has no pipes to pool
            assert after["pipes_reused"] > stats["pipes_reused"]
            assert after["pipes_closed"] >= stats["pipes_closed"] + 4


def test_splice_nonblocking_destination_loses_nothing(fio, socketpair):
    src_w, src = socketpair
    dst, dst_r = socket.socketpair()
    total = 4_000_000
    with dst, dst_r:
        dst.setblocking(False)
        writer = threading.Thread(target=send_and_close, args=(src_w, DATA[:total]))
        writer.start()
        with pytest.raises(BlockingIOError) as info:
            fio.splice(src, dst)
        moved = info.value.characters_written
        assert 0 < moved < total
        reader = drain_in_thread(dst_r)
        while True:
            try:
                n = fio.splice(src, dst)
                moved += n
                break
            except BlockingIOError as exc:
                moved += exc.characters_written
                time.sleep(0.001)
        writer.join(30)
        dst.shutdown(socket.SHUT_WR)
        assert moved == total
        assert reader.join() == DATA[:total]


def test_splice_timeout_loses_nothing(fio, socketpair):
    src_w, src = socketpair
    dst, dst_r = socket.socketpair()
    total = 3_000_000
    with dst, dst_r:
        dst.settimeout(0.2)
        writer = threading.Thread(target=send_and_close, args=(src_w, DATA[:total]))
        writer.start()
        with pytest.raises(TimeoutError) as info:
            fio.splice(src, dst)
        moved = info.value.transferred
        dst.shutdown(socket.SHUT_WR)
        delivered = drain_in_thread(dst_r).join()
        rest = drain_in_thread(src).join()
        writer.join(30)
        assert 0 < len(delivered) == moved
        assert delivered + rest == DATA[:total]


def test_splice_raising_signal_handler_loses_nothing(fio, socketpair):
    """A handler raising while splice waits on a slow blocking destination: the bytes the call
    already took from the source socket are kept, so calling again completes the stream."""
    src_peer, src = socket.socketpair()
    dst, dst_peer = socketpair
    dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
    writer = threading.Thread(target=send_and_close, args=(src_peer, DATA[:3_000_000]))
    writer.start()
    reader = reader_thread(dst_peer, delay=0.005, chunk=32768)
    with alarm_raises(0.2), pytest.raises(Stop) as info:
        fio.splice(src, dst)
    assert 0 < info.value.transferred < 3_000_000
    rest = fio.splice(src, dst)
    assert info.value.transferred + rest == 3_000_000
    dst.shutdown(socket.SHUT_WR)
    writer.join(30)
    src.close()
    src_peer.close()
    assert reader.join() == DATA[:3_000_000]


def test_splice_that_never_blocks_still_runs_signal_handlers(fio, tmp_path):
    """File -> /dev/null never blocks, so no call is ever interrupted: a raising handler must
    still stop the transfer promptly, with the progress and the file position right."""
    path = tmp_path / "sparse"
    with open(path, "wb") as f:
        f.truncate(1 << 30)  # a hole: read from the page cache without the disk
    sink = os.open(os.devnull, os.O_WRONLY)
    try:
        with open(path, "rb") as f:
            with alarm_raises(0.05), pytest.raises(Stop) as info:
                fio.splice(f, sink)
                time.sleep(5)  # the call ended before the signal: let the handler run
            sent = getattr(info.value, "transferred", None)
            assert sent is not None, "the handler ran only after splice returned"
            assert 0 < sent < 1 << 30
            assert f.tell() == sent
    finally:
        os.close(sink)


def test_splice_wrong_arguments(fio, socketpair, small_path):
    a, _ = socketpair
    with pytest.raises(TypeError):
        fio.splice(a, object())
    with pytest.raises(ValueError):
        fio.splice(a, a, -1)
    with open(small_path) as text, pytest.raises(TypeError):
        fio.splice(text, a)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(ValueError):
        fio.splice(udp, a)


# ---- copy ----------------------------------------------------------------------------------


def test_copy_file_to_file(fio, big_path, tmp_path):
    out_path = tmp_path / "copy"
    before = counters(fio)
    with open(big_path, "rb") as src, open(out_path, "wb") as dst:
        assert fio.copy(src, dst) == SIZE
        assert src.tell() == SIZE and dst.tell() == SIZE
    assert out_path.read_bytes() == DATA
    after = counters(fio)
    fast = after["copy_file_range_bytes"] + after["sendfile_bytes"]
    assert fast - before["copy_file_range_bytes"] - before["sendfile_bytes"] == SIZE


def test_copy_positions_and_counts(fio, small_path, tmp_path):
    out_path = tmp_path / "copy"
    with open(small_path, "rb") as src, open(out_path, "wb") as dst:
        assert src.read(10) == DATA[:10]
        dst.write(b"head")  # still in the writer's buffer
        assert fio.copy(src, dst, 1000) == 1000
        assert src.tell() == 1010
        assert dst.tell() == 1004
        assert src.read(5) == DATA[1010:1015]
        dst.write(b"tail")
        assert fio.copy(src, dst, 10_000_000) == 100_003 - 1015
    assert out_path.read_bytes() == b"head" + DATA[10:1010] + b"tail" + DATA[1015:100_003]


@pytest.mark.parametrize("how", ["copy", "sendfile"])
def test_copy_to_a_read_write_file_with_read_ahead(fio, small_path, tmp_path, how):
    # Issue 9: a BufferedRandom serves a seek inside its read-ahead from the buffer, so
    # seek(tell()) left its descriptor where the read-ahead stopped: the bytes landed at the
    # end of the file and reading them back through the object gave the old contents.
    out_path = tmp_path / "rw"
    out_path.write_bytes(b"-" * 3000)
    with open(small_path, "rb") as src, open(out_path, "r+b") as dst:
        assert dst.read(1) == b"-"  # reads ahead to the end: the descriptor is at 3000
        dst.seek(10)  # inside the read-ahead: the descriptor stays at 3000
        if how == "copy":
            assert fio.copy(src, dst, 100) == 100
        else:
            assert fio.sendfile(dst, src, 0, 100) == 100
        assert dst.tell() == 110
        assert dst.read(5) == b"-----"
        dst.seek(0)
        assert dst.read(120) == b"-" * 10 + DATA[:100] + b"-" * 10
    assert out_path.read_bytes() == b"-" * 10 + DATA[:100] + b"-" * 2890


def test_copy_append_mode_destination(fio, small_path, tmp_path):
    out_path = tmp_path / "log"
    out_path.write_bytes(b"existing ")
    with open(small_path, "rb") as src, open(out_path, "ab") as dst:
        assert fio.copy(src, dst) == 100_003
    assert out_path.read_bytes() == b"existing " + DATA[:100_003]


def test_copy_objects_without_descriptors(fio, small_path, tmp_path):
    sink = io.BytesIO()
    assert fio.copy(io.BytesIO(DATA[:700_000]), sink) == 700_000
    assert sink.getvalue() == DATA[:700_000]
    sink = io.BytesIO()
    with open(small_path, "rb") as src:
        assert fio.copy(src, sink, 5000) == 5000
        assert src.tell() == 5000
    assert sink.getvalue() == DATA[:5000]
    with open(tmp_path / "out", "wb") as dst:
        assert fio.copy(io.BytesIO(b"to a file"), dst) == 9
    assert (tmp_path / "out").read_bytes() == b"to a file"


def test_copy_gzip_is_never_bypassed(fio, tmp_path):
    path = tmp_path / "data.gz"
    with gzip.open(path, "wb") as gz:
        assert fio.copy(io.BytesIO(DATA[:300_000]), gz) == 300_000
    out = io.BytesIO()
    with gzip.open(path, "rb") as gz:
        assert fio.copy(gz, out) == 300_000
    assert out.getvalue() == DATA[:300_000]


def test_copy_buffered_reader_unread_bytes_go_first(fio, socketpair):
    a, b = socketpair
    r, w = os.pipe()
    writer = pipe_writer(w, b"hello world, " + DATA[:200_000])
    with open(r, "rb") as reader:
        assert reader.read(3) == b"hel"
        sink = drain_in_thread(b)
        assert fio.copy(reader, a) == 10 + 200_000
    writer.join(30)
    a.shutdown(socket.SHUT_WR)
    assert sink.join() == b"lo world, " + DATA[:200_000]


def test_copy_socket_and_pipe_sources(fio, socketpair, tmp_path):
    a, b = socketpair
    writer = threading.Thread(target=send_and_close, args=(a, DATA[:2_000_000]))
    writer.start()
    with open(tmp_path / "out", "wb") as dst:
        assert fio.copy(b, dst) == 2_000_000
    writer.join(30)
    assert (tmp_path / "out").read_bytes() == DATA[:2_000_000]
    r, w = os.pipe()
    pipe_writer(w, DATA[:100_000])
    out = io.BytesIO()
    assert fio.copy(r, out) == 100_000
    os.close(r)
    assert out.getvalue() == DATA[:100_000]


def test_copy_text_files_are_refused(fio, small_path, tmp_path):
    with open(small_path) as text, open(tmp_path / "o", "wb") as out:
        with pytest.raises(TypeError, match="text"):
            fio.copy(text, out)
    with open(small_path, "rb") as src, open(tmp_path / "o", "w") as text:
        with pytest.raises(TypeError, match="text"):
            fio.copy(src, text)
    with pytest.raises(TypeError):
        fio.copy(io.StringIO("text"), io.BytesIO())


def test_copy_to_closed_or_wrong_ends(fio, small_path):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with open(small_path, "rb") as src:
        with pytest.raises(OSError) as info:
            fio.copy(src, w)
        assert info.value.errno == errno.EBADF
        assert src.tell() == 0
        with pytest.raises(TypeError):
            fio.copy(src, 3.5)
        with pytest.raises(TypeError):
            fio.copy(src, None)


# ---- relay ---------------------------------------------------------------------------------


def relay_setup(fio, idle_timeout=None, tcp=False):
    """client <-> (a relay b) <-> server; the relay runs in a thread."""
    if tcp:
        pairs = []
        for _ in range(2):
            with socket.create_server(("127.0.0.1", 0)) as server:
                c = socket.create_connection(server.getsockname())
                s, _ = server.accept()
            pairs.append((c, s))
        (client, a), (b, server_side) = pairs
    else:
        client, a = socket.socketpair()
        b, server_side = socket.socketpair()
    outcome = {}

    def run():
        try:
            outcome["result"] = fio.relay(a, b, idle_timeout=idle_timeout)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return client, server_side, a, b, thread, outcome


def close_all(*socks):
    for s in socks:
        s.close()


@pytest.mark.parametrize("first", ["client", "server"])
def test_relay_half_close_in_each_direction(fio, first):
    client, server, a, b, thread, outcome = relay_setup(fio)
    one, other = (client, server) if first == "client" else (server, client)
    one.sendall(b"request " * 1000)
    one.shutdown(socket.SHUT_WR)
    assert drain_in_thread(other).join() == b"request " * 1000  # EOF passed on
    # the other direction keeps flowing after the half-close
    reader = drain_in_thread(one)
    other.sendall(DATA[:1_000_000])
    other.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[:1_000_000]
    thread.join(30)
    up, down = (8000, 1_000_000) if first == "client" else (1_000_000, 8000)
    assert outcome == {"result": (up, down)}
    close_all(client, server, a, b)


def test_relay_both_ways_at_once_over_tcp(fio):
    client, server, a, b, thread, outcome = relay_setup(fio, tcp=True)
    blocking = a.getblocking(), b.getblocking()
    w1 = threading.Thread(target=send_and_close, args=(client, DATA[:5_000_000]))
    w2 = threading.Thread(target=send_and_close, args=(server, DATA[-3_000_000:]))
    r1, r2 = drain_in_thread(server), drain_in_thread(client)
    w1.start()
    w2.start()
    assert r1.join() == DATA[:5_000_000]
    assert r2.join() == DATA[-3_000_000:]
    thread.join(30)
    w1.join(30)
    w2.join(30)
    assert outcome == {"result": (5_000_000, 3_000_000)}
    assert (a.getblocking(), b.getblocking()) == blocking  # flags restored
    close_all(client, server, a, b)


def test_relay_one_side_resets(fio):
    client, server, a, b, thread, outcome = relay_setup(fio, tcp=True)
    client.sendall(b"x" * 1000)
    assert server.recv(1000)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server.close()  # RST
    try:
        client.sendall(b"y" * 100_000)
    except OSError:
        pass
    thread.join(30)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, (ConnectionResetError, BrokenPipeError)), outcome
    assert error.transferred[0] >= 1000
    close_all(client, a, b)


def test_relay_idle_timeout(fio):
    client, server, a, b, thread, outcome = relay_setup(fio, idle_timeout=0.2)
    client.sendall(b"ping")
    assert server.recv(10) == b"ping"
    thread.join(30)
    assert not thread.is_alive()
    error = outcome["error"]
    assert isinstance(error, TimeoutError)
    assert error.transferred == (4, 0)
    close_all(client, server, a, b)


def test_relay_idle_timeout_restarts_on_traffic(fio):
    client, server, a, b, thread, outcome = relay_setup(fio, idle_timeout=0.5)
    for _ in range(6):
        client.sendall(b"tick")
        assert server.recv(10) == b"tick"
        time.sleep(0.15)  # 0.9 s in all: more than the idle timeout, never idle that long
    client.shutdown(socket.SHUT_WR)
    server.shutdown(socket.SHUT_WR)
    thread.join(30)
    assert outcome == {"result": (24, 0)}
    close_all(client, server, a, b)


def test_relay_raising_signal_handler_stops_it(fio):
    client, a = socket.socketpair()
    b, server = socket.socketpair()
    try:
        client.sendall(b"q" * 1000)
        started = time.monotonic()
        with alarm_raises(0.3), pytest.raises(Stop) as info:
            fio.relay(a, b)  # in the main thread: the signal interrupts its wait
        assert time.monotonic() - started < 10
        assert info.value.transferred == (1000, 0)
        assert server.recv(2000) == b"q" * 1000
    finally:
        close_all(client, a, b, server)


def test_relay_wrong_arguments(fio, socketpair):
    a, b = socketpair
    with pytest.raises(TypeError):
        fio.relay(a, "b")
    with pytest.raises(ValueError):
        fio.relay(a, a)
    with pytest.raises(ValueError):
        fio.relay(a, b, idle_timeout=-1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(ValueError):
        fio.relay(a, udp)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match="not a socket"):
            fio.relay(a, r)
    finally:
        os.close(r)
        os.close(w)


def test_relay_leaves_no_fd_behind(fio):
    client, server, a, b, thread, outcome = relay_setup(fio)
    client.close()
    server.close()
    thread.join(30)
    close_all(a, b)
    before = open_fds()
    for _ in range(5):
        client, server, a, b, thread, outcome = relay_setup(fio)
        send_and_close(client, b"data")
        assert drain_in_thread(server).join() == b"data"
        server.shutdown(socket.SHUT_WR)
        thread.join(30)
        assert outcome == {"result": (4, 0)}
        close_all(client, server, a, b)
    assert open_fds() == before


def test_stats_count_every_call(fio):
    before = counters(fio)
    out = io.BytesIO()
    fio.copy(io.BytesIO(b"abc"), out)
    after = counters(fio)
    assert after["calls"] == before["calls"] + 1
    assert after["loop_bytes"] == before["loop_bytes"] + 3
    assert set(after) >= set(_stats.COMMON_FIELDS)


# ---- the portable paths (what the Python twin does where os lacks the fast calls) --------


@pytest.fixture
def portable(monkeypatch):
    """The Python twin as on a platform without sendfile, splice, copy_file_range, preadv."""
    from fastio import _impl, _transfer_py

    for name in (
        "_HAVE_SENDFILE",
        "_HAVE_SPLICE",
        "_HAVE_COPY_FILE_RANGE",
        "_HAVE_READV",
        "_HAVE_PREADV",
        "_KERNEL_POSITION",
    ):
        monkeypatch.setattr(_transfer_py, name, False)
    return _impl.twin("python")


def test_portable_paths_move_the_same_bytes(portable, socketpair, small_path, tmp_path):
    a, b = socketpair
    before = counters(portable)
    reader = drain_in_thread(b)
    with open(small_path, "rb") as f:
        assert portable.sendfile(a, f, 5, 50_000) == 50_000
        assert f.tell() == 50_005
    c, d = socket.socketpair()
    with c, d:
        send_and_close(c, b"spliced")
        assert portable.splice(d, a) == 7
    a.shutdown(socket.SHUT_WR)
    assert reader.join() == DATA[5:50_005] + b"spliced"
    with open(small_path, "rb") as src, open(tmp_path / "out", "wb") as dst:
        assert portable.copy(src, dst) == 100_003
    assert (tmp_path / "out").read_bytes() == DATA[:100_003]
    after = counters(portable)
    assert after["loop_bytes"] - before["loop_bytes"] == 50_000 + 7 + 100_003
    assert after["sendfile_bytes"] == before["sendfile_bytes"]


def test_portable_nonblocking_destination_loses_nothing(portable, big_path):
    a, b = socket.socketpair()
    with a, b, open(big_path, "rb") as f:
        a.setblocking(False)
        with pytest.raises(BlockingIOError) as info:
            portable.sendfile(a, f)
        sent = info.value.characters_written
        assert 0 < sent == f.tell()
        reader = drain_in_thread(b)
        while f.tell() < SIZE:
            try:
                sent += portable.sendfile(a, f)
            except BlockingIOError as exc:
                sent += exc.characters_written
                time.sleep(0.001)
        a.shutdown(socket.SHUT_WR)
        assert reader.join() == DATA


def test_concurrent_splices_share_the_pipe_pool_safely(fio):
    """Threads splicing at once each get their own pipe; no byte crosses over."""
    errors = []

    def worker(seed):
        try:
            payload = bytes([seed]) * 300_000 + DATA[seed : seed + 200_000]
            src_w, src = socket.socketpair()
            dst, dst_r = socket.socketpair()
            with src_w, src, dst, dst_r:
                writer = threading.Thread(target=send_and_close, args=(src_w, payload))
                writer.start()
                reader = drain_in_thread(dst_r)
                for _ in range(5):
                    fio.splice(src, dst, 20_000)
                fio.splice(src, dst)
                writer.join(30)
                dst.shutdown(socket.SHUT_WR)
                if reader.join() != payload:
                    errors.append(f"worker {seed}: bytes differ")
        except Exception as exc:
            errors.append(f"worker {seed}: {exc!r}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []


def test_public_module_exports_the_live_twin():
    import fastio
    from fastio import _impl, transfer

    live = _impl.twin_module("transfer")
    for name in transfer.__all__:
        assert getattr(fastio, name) is getattr(live, name)
        assert getattr(live, name).__doc__
    assert set(transfer.__all__) == {"copy", "relay", "sendfile", "splice"}


def test_fallback_is_counted_and_moves_every_byte(fio, small_path, tmp_path):
    # sendfile refuses an O_APPEND destination (EINVAL) before moving a byte: the loop serves
    out_path = tmp_path / "appended"
    out_path.write_bytes(b"x")
    before = counters(fio)
    with open(small_path, "rb") as src, open(out_path, "ab") as dst:
        assert fio.sendfile(dst, src) == 100_003
        assert src.tell() == 100_003
    after = counters(fio)
    assert out_path.read_bytes() == b"x" + DATA[:100_003]
    assert after["fallbacks"] == before["fallbacks"] + 1
    assert after["loop_bytes"] == before["loop_bytes"] + 100_003
    assert after["sendfile_bytes"] == before["sendfile_bytes"]


def test_splice_file_to_nonblocking_socket_resumes_without_loss(fio, big_path):
    # bytes left in the internal pipe when the socket would block are read again from the
    # file next time (the position advanced only by what was delivered); that pipe is closed
    a, b = socket.socketpair()
    with a, b, open(big_path, "rb") as f:
        a.setblocking(False)
        closed = counters(fio)["pipes_closed"]
        with pytest.raises(BlockingIOError) as info:
            fio.splice(f, a)
        sent = info.value.characters_written
        assert 0 < sent == f.tell()
        assert counters(fio)["pipes_closed"] == closed + splices(fio)
        reader = drain_in_thread(b)
        while f.tell() < SIZE:
            try:
                sent += fio.splice(f, a)
            except BlockingIOError as exc:
                sent += exc.characters_written
                time.sleep(0.001)
        assert sent == SIZE
        a.shutdown(socket.SHUT_WR)
        assert reader.join() == DATA
