"""RingBuffer and Reader, both twins, on real sockets and pipes."""

import errno
import mmap
import os
import random
import signal
import socket
import struct
import threading
import time
import tracemalloc
import zlib

import pytest
from conftest import Stop, alarm_raises
from hypothesis import given, settings
from hypothesis import strategies as st

from fastio import _stats
from fastio._errors import IncompleteReadError, LimitOverrunError

PAGE = mmap.PAGESIZE


def counters(fio):
    return _stats.snapshot(fio.IMPLEMENTATION)["ring"]


def delta(before, after):
    return {key: after[key] - before[key] for key in after}


@pytest.fixture(params=[None, False], ids=["mirrored-if-available", "plain"])
def mirrored(request):
    """None: mirrored where the twin can (native on Linux); False: always two segments."""
    return request.param


def positioned(fio, mirrored, offset, capacity=PAGE):
    """An empty ring whose indices sit at ``offset`` (so the next write wraps there)."""
    ring = fio.RingBuffer(capacity, mirrored=mirrored)
    ring.write(b"\0" * offset)
    ring.consume(offset)
    return ring


def frames_of(payloads, header="!I"):
    return b"".join(struct.pack(header, len(p)) + p for p in payloads)


def sender(sock, data, close=True, chunk=None):
    """Send ``data`` from a thread (in pieces of ``chunk``), then close (EOF)."""

    def run():
        try:
            if chunk is None:
                sock.sendall(data)
            else:
                for i in range(0, len(data), chunk):
                    sock.sendall(data[i : i + chunk])
        finally:
            if close:
                sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# ---- construction ----


def test_capacity_rounds_to_power_of_two_page_multiple(fio):
    assert fio.RingBuffer(1, mirrored=False).capacity == PAGE
    assert fio.RingBuffer(PAGE, mirrored=False).capacity == PAGE
    assert fio.RingBuffer(PAGE + 1, mirrored=False).capacity == 2 * PAGE
    assert fio.RingBuffer(3 * PAGE, mirrored=False).capacity == 4 * PAGE
    assert fio.RingBuffer(100_000).capacity == 131072
    ring = fio.RingBuffer(5000)
    assert len(ring) == 0 and ring.free == ring.capacity == 2 * PAGE


@pytest.mark.parametrize("bad", [0, -1, -PAGE, 1 << 41])
def test_capacity_zero_negative_or_huge_is_value_error(fio, bad):
    with pytest.raises(ValueError):
        fio.RingBuffer(bad)


@pytest.mark.parametrize("bad", [1.5, "4096", None, True, b"1"])
def test_capacity_wrong_type(fio, bad):
    with pytest.raises(TypeError):
        fio.RingBuffer(bad)


def test_mirrored_argument(fio):
    assert fio.RingBuffer(PAGE, mirrored=False).mirrored is False
    with pytest.raises(TypeError):
        fio.RingBuffer(PAGE, mirrored=1)
    if fio.IMPLEMENTATION == "python":
        assert fio.RingBuffer(PAGE).mirrored is False
        with pytest.raises(OSError) as info:
            fio.RingBuffer(PAGE, mirrored=True)
        assert info.value.errno == errno.ENOSYS
        assert "native" in str(info.value)
    else:
        import fastio

        available = fastio.info()["mirrored_ring"] if fastio.IMPLEMENTATION == "c" else True
        assert fio.RingBuffer(PAGE).mirrored is available
        if available:
            assert fio.RingBuffer(PAGE, mirrored=True).mirrored is True


# ---- producer and consumer basics, at the wrap ----


def test_write_read_across_the_wrap(fio, mirrored):
    ring = positioned(fio, mirrored, PAGE - 10)
    data = bytes(range(256)) * 3
    assert ring.write(data) == len(data)
    assert len(ring) == len(data) and ring.free == PAGE - len(data)
    view = ring.peek()
    if ring.mirrored:
        assert bytes(view) == data
    else:
        assert bytes(view) == data[:10]  # a plain ring's view stops at the wrap
    del view
    assert ring.read(5) == data[:5]
    assert ring.read() == data[5:]
    assert ring.read() == b"" and len(ring) == 0


def test_write_copies_only_what_fits(fio, mirrored):
    ring = positioned(fio, mirrored, 100)
    assert ring.write(b"x" * (PAGE + 50)) == PAGE
    assert ring.free == 0
    assert ring.write(b"more") == 0
    assert ring.read(PAGE) == b"x" * PAGE


def test_readinto_and_consume_across_the_wrap(fio, mirrored):
    ring = positioned(fio, mirrored, PAGE - 3)
    ring.write(b"abcdefghij")
    ring.consume(1)
    target = bytearray(6)
    assert ring.readinto(target) == 6
    assert target == b"bcdefg"
    big = bytearray(100)
    assert ring.readinto(memoryview(big)) == 3
    assert big[:3] == b"hij"
    assert ring.readinto(bytearray(4)) == 0


def test_write_accepts_any_buffer(fio):
    ring = fio.RingBuffer(PAGE)
    ring.write(bytearray(b"ab"))
    ring.write(memoryview(b"xcdx")[1:3])
    import array

    ring.write(array.array("H", [0x4545]))
    assert ring.read() == b"abcdEE"


def test_peek_n_and_view_is_read_only(fio, mirrored):
    ring = positioned(fio, mirrored, 0)
    ring.write(b"hello world")
    view = ring.peek(5)
    assert view.readonly and bytes(view) == b"hello"
    with pytest.raises(TypeError):
        view[0] = 0
    assert len(ring.peek(0)) == 0
    assert bytes(ring.peek(None)) == b"hello world"
    assert len(ring) == 11  # peek consumes nothing
    del view


def test_the_ring_itself_is_not_a_buffer(fio):
    ring = fio.RingBuffer(PAGE)
    with pytest.raises(TypeError):
        memoryview(ring)


def test_clear_and_close_refuse_while_a_view_is_alive(fio, mirrored):
    ring = fio.RingBuffer(PAGE, mirrored=mirrored)
    ring.write(b"data")
    view = ring.peek()
    sliced = view[1:3]
    del view
    with pytest.raises(BufferError):
        ring.clear()
    with pytest.raises(BufferError):
        ring.close()
    assert bytes(sliced) == b"at"  # the memory is still there
    del sliced
    ring.clear()
    assert len(ring) == 0
    view = ring.peek()
    with pytest.raises(BufferError):
        ring.close()
    view.release()
    ring.close()
    assert ring.closed
    ring.close()  # idempotent


def test_closed_ring_raises_value_error(fio):
    with fio.RingBuffer(PAGE) as ring:
        ring.write(b"x")
    assert ring.closed and len(ring) == 0 and ring.free == 0
    for call in (
        lambda: ring.write(b"x"),
        ring.read,
        ring.peek,
        ring.clear,
        lambda: ring.consume(0),
        lambda: ring.find(b"x"),
        lambda: ring.readinto(bytearray(1)),
    ):
        with pytest.raises(ValueError):
            call()


def test_sizes_zero_and_negative(fio, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(PAGE)
    ring.write(b"abc")
    assert ring.read(0) == b""
    assert ring.read(-5) == b"abc"  # negative means all, as io and asyncio
    ring.write(b"abc")
    with pytest.raises(ValueError):
        ring.consume(-1)
    with pytest.raises(ValueError):
        ring.consume(4)
    ring.consume(0)
    assert len(ring) == 3
    before = counters(fio)
    assert ring.fill(a, 0) == 0  # no system call: a blocking recv would hang here
    assert ring.drain(b, 0) == 0
    assert delta(before, counters(fio))["syscalls"] == 0


def test_wrong_types(fio, socketpair):
    a, _ = socketpair
    ring = fio.RingBuffer(PAGE)
    ring.write(b"abc")
    with pytest.raises(TypeError):
        ring.write("text")
    with pytest.raises(TypeError):
        ring.write(12)
    with pytest.raises(TypeError):
        ring.fill("not a socket")
    with pytest.raises(TypeError):
        ring.fill(a, 1.5)
    with pytest.raises(TypeError):
        ring.drain(object())
    with pytest.raises(TypeError):
        ring.find("b")
    with pytest.raises(TypeError):
        ring.find(b"b", 1.0)
    with pytest.raises(TypeError):
        ring.readinto(b"read-only")
    with pytest.raises(TypeError):
        ring.consume(1.0)
    with pytest.raises(TypeError):
        ring.read("1")
    with pytest.raises(ValueError):
        ring.fill(-3)
    assert ring.read() == b"abc"  # nothing was touched


# ---- find ----


@pytest.mark.parametrize("offset", [0, PAGE - 1, PAGE - 2, PAGE - 5, PAGE // 2])
def test_find_matches_bytes_find_across_the_wrap(fio, mirrored, offset):
    rng = random.Random(offset)
    ring = positioned(fio, mirrored, offset)
    data = bytes(rng.choice(b"abc") for _ in range(64))
    ring.write(data)
    needles = [b"a", b"abc", b"cab", b"bb", b"zz", b"", data[PAGE - offset - 2 : PAGE - offset + 3]]
    for needle in needles:
        for start in (0, 1, 3, 40, -7, 70):
            for end in (None, 64, 10, -1, 5, 100):
                expected = data.find(needle, start, 64 if end is None else end)
                if end is None:
                    expected = data.find(needle, start)
                assert ring.find(needle, start, end) == expected, (needle, start, end)


def test_find_separator_straddling_the_wrap(fio, mirrored):
    ring = positioned(fio, mirrored, PAGE - 2)
    ring.write(b"xxSEPARATORyy")
    # "xx" before the wrap, "SEPARATOR" starts exactly at the wrap; shift by one and retry
    assert ring.find(b"xSEP") == 1
    assert ring.find(b"SEPARATOR") == 2
    assert ring.find(b"TORyy") == 8
    ring2 = positioned(fio, mirrored, PAGE - 5)
    ring2.write(b"ab" + b"\r\n\r\n" + b"cd")  # the separator splits 3 | 1 across the wrap
    assert ring2.find(b"\r\n\r\n") == 2
    assert ring2.find(b"\r\n\r\n", 3) == -1
    big = b"Q" * 600  # a needle larger than the small window buffer in C
    ring3 = positioned(fio, mirrored, PAGE - 300, capacity=4 * PAGE)
    ring3.write(b"." * (4 * PAGE - 1000))
    ring3.consume(4 * PAGE - 1000)
    ring3.write(b"z" + big + b"z")
    assert ring3.find(big) == 1


@settings(max_examples=60, deadline=None)
@given(
    offset=st.integers(0, PAGE - 1),
    data=st.binary(min_size=0, max_size=300),
    needle=st.binary(min_size=1, max_size=6),
    start=st.integers(-320, 320),
)
def test_find_property_both_twins_plain(offset, data, needle, start):
    from fastio import _impl

    implementations = ("c", "python") if _impl.native_available() else ("python",)
    for implementation in implementations:
        fio = _impl.twin(implementation)
        for mirror in (None, False):
            ring = positioned(fio, mirror, offset)
            ring.write(data)
            assert ring.find(needle, start) == data.find(needle, start)


# ---- fill ----


def test_fill_receives_at_the_wrap_with_one_readv(fio, mirrored, socketpair):
    a, b = socketpair
    ring = positioned(fio, mirrored, PAGE - 100)
    payload = os.urandom(300)
    b.sendall(payload)
    before = counters(fio)
    got = ring.fill(a)
    assert got == 300
    assert ring.read() == payload
    d = delta(before, counters(fio))
    assert d["fills"] == 1 and d["received"] == 300 and d["syscalls"] == 1
    assert d["wraps"] == 1
    assert d["readv"] == (0 if ring.mirrored else 1)


def test_fill_limit_and_full_ring(fio, mirrored, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(PAGE, mirrored=mirrored)
    b.sendall(b"z" * (PAGE + 10))
    assert ring.fill(a, 10) == 10
    total = 10
    while ring.free:
        total += ring.fill(a)
    assert total == PAGE
    with pytest.raises(BufferError):
        ring.fill(a)
    assert ring.read(PAGE) == b"z" * PAGE
    assert ring.fill(a) == 10


def test_fill_returns_zero_at_eof(fio, socketpair):
    a, b = socketpair
    b.sendall(b"last")
    b.close()
    ring = fio.RingBuffer(PAGE)
    assert ring.fill(a) == 4
    assert ring.fill(a) == 0
    assert ring.read() == b"last"


def test_fill_from_a_pipe_fd(fio, mirrored):
    r, w = os.pipe()
    try:
        ring = positioned(fio, mirrored, PAGE - 7)
        os.write(w, b"0123456789abcdef")
        assert ring.fill(r) == 16
        assert ring.read() == b"0123456789abcdef"
    finally:
        os.close(r)
        os.close(w)


def test_fill_non_blocking_with_nothing_to_read(fio, socketpair):
    a, _ = socketpair
    a.setblocking(False)
    ring = fio.RingBuffer(PAGE)
    before = counters(fio)
    with pytest.raises(BlockingIOError):
        ring.fill(a)
    assert delta(before, counters(fio))["would_block"] == 1
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        with pytest.raises(BlockingIOError):
            ring.fill(r)
    finally:
        os.close(r)
        os.close(w)


def test_fill_honours_the_socket_timeout(fio, socketpair):
    a, _ = socketpair
    a.settimeout(0.05)
    ring = fio.RingBuffer(PAGE)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        ring.fill(a)
    assert time.monotonic() - t0 < 10


def test_fill_closed_fd_is_os_error(fio):
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    ring = fio.RingBuffer(PAGE)
    with pytest.raises(OSError) as info:
        ring.fill(r)
    assert info.value.errno == errno.EBADF
    closed = socket.socket()
    closed.close()
    with pytest.raises(OSError):
        ring.fill(closed)


def test_fill_raising_signal_handler_stops_promptly(fio, socketpair):
    a, _ = socketpair
    ring = fio.RingBuffer(PAGE)
    with alarm_raises(0.1), pytest.raises(Stop) as info:
        ring.fill(a)
    assert getattr(info.value, "transferred", 0) == 0


def test_fill_retries_after_a_quiet_signal(fio, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(PAGE)
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *args: seen.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        timer = threading.Timer(0.3, b.sendall, args=(b"after the signal",))
        timer.start()
        assert ring.fill(a) == 16
        timer.join()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert seen and ring.read() == b"after the signal"


# ---- drain ----


def test_drain_across_the_wrap(fio, mirrored, socketpair):
    a, b = socketpair
    ring = positioned(fio, mirrored, PAGE - 50)
    data = os.urandom(200)
    ring.write(data)
    before = counters(fio)
    assert ring.drain(a, 120) == 120
    assert len(ring) == 80
    assert ring.drain(a) == 80
    assert b.recv(200, socket.MSG_WAITALL) == data
    d = delta(before, counters(fio))
    assert d["bytes"] == 200 and d["wraps"] == 1


def test_drain_non_blocking_target_keeps_the_rest(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    ring = fio.RingBuffer(1 << 22)
    data = os.urandom(ring.capacity)
    ring.write(data)
    sent = 0
    with pytest.raises(BlockingIOError) as info:
        ring.drain(a)
    sent = info.value.characters_written
    assert sent == info.value.transferred
    assert 0 < sent < len(data) and len(ring) == len(data) - sent
    received = bytearray()
    while len(received) < sent:
        received += b.recv(1 << 20)
    assert bytes(received) == data[:sent]
    with pytest.raises(BlockingIOError) as info:
        b.setblocking(False)
        while True:
            b.recv(1)
    assert ring.read() == data[sent:]


def test_drain_to_a_reset_peer_is_an_os_error(fio, tcp_pair):
    client, peer = tcp_pair
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    time.sleep(0.05)
    ring = fio.RingBuffer(1 << 20)
    ring.write(b"x" * (1 << 20))
    with pytest.raises((ConnectionResetError, BrokenPipeError)) as info:
        for _ in range(3):
            ring.drain(client)
            ring.write(b"x" * (1 << 20))
    assert hasattr(info.value, "transferred")


# ---- Reader ----


def test_reader_arguments(fio, socketpair):
    a, _ = socketpair
    with pytest.raises(TypeError):
        fio.Reader("socket")
    with pytest.raises(TypeError):
        fio.Reader(a, timeout="1")
    with pytest.raises(ValueError):
        fio.Reader(a, timeout=-1)
    with pytest.raises(ValueError):
        fio.Reader(a, capacity=0)
    with pytest.raises(ValueError):
        fio.Reader(a, capacity=-5)
    with pytest.raises(TypeError):
        fio.Reader(a, capacity=1.0)
    with pytest.raises(ValueError):
        fio.Reader(a, header="!II")
    with pytest.raises(ValueError):
        fio.Reader(a, header="!f")
    with pytest.raises(TypeError):
        fio.Reader(a, header=4)
    reader = fio.Reader(a, capacity=10)
    assert reader.ring.capacity == PAGE
    with pytest.raises(ValueError):
        reader.readexactly(-1)
    with pytest.raises(TypeError):
        reader.readexactly(1.0)
    with pytest.raises(ValueError):
        reader.readuntil(b"")
    with pytest.raises(TypeError):
        reader.readuntil("\n")
    with pytest.raises(ValueError):
        reader.peek(-1)
    with pytest.raises(ValueError):
        reader.read_frame("xI")


def test_readexactly_zero_makes_no_system_call(fio, socketpair):
    a, _ = socketpair  # blocking and silent: any receive would hang
    reader = fio.Reader(a)
    before = counters(fio)
    assert reader.readexactly(0) == b""
    assert reader.read(0) == b""
    assert reader.peek(0) == b""
    d = delta(before, counters(fio))
    assert d["syscalls"] == 0 and d["fills"] == 0


def test_reader_mixed_calls(fio, mirrored, socketpair):
    a, b = socketpair
    data = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + frames_of([b"abc", b""]) + b"tail\nrest"
    sender(b, data, chunk=3)
    reader = fio.Reader(a, capacity=64, mirrored=mirrored)
    assert reader.readline() == b"GET / HTTP/1.1\r\n"
    assert reader.readuntil(b"\r\n\r\n") == b"Host: x\r\n\r\n"
    assert reader.peek(4) == struct.pack("!I", 3)
    assert reader.read_frame() == b"abc"
    assert reader.read_frame("!I") == b""
    assert reader.readexactly(2) == b"ta"
    assert reader.readline() == b"il\n"
    assert reader.read() == b"rest"
    assert reader.read() == b""
    assert reader.readline() == b""
    assert reader.at_eof()


def test_read_n_returns_after_one_receive(fio, socketpair):
    a, b = socketpair
    reader = fio.Reader(a)
    b.sendall(b"12345")
    assert reader.read(100) == b"12345"  # does not wait for 100
    b.sendall(b"678")
    assert reader.read(2) == b"67"
    assert reader.buffered == 1
    assert reader.read(2) == b"8"


def test_read_all_beyond_the_capacity(fio, socketpair):
    a, b = socketpair
    data = os.urandom(5 * PAGE + 123)
    sender(b, data, chunk=1000)
    reader = fio.Reader(a, capacity=PAGE)
    assert reader.read() == data
    assert reader.at_eof()


def test_separator_split_across_receives_and_the_wrap(fio, mirrored, socketpair):
    a, b = socketpair
    reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
    reader.ring.write(b"\0" * (PAGE - 6))
    reader.ring.consume(PAGE - 6)
    b.sendall(b"abc\r\n")
    threading.Timer(0.1, b.sendall, args=(b"\r\nnext\r\n\r\n",)).start()
    # "\r\n" arrives first, the second "\r\n" after; the separator also crosses the wrap
    assert reader.readuntil(b"\r\n\r\n") == b"abc\r\n\r\n"
    assert reader.readuntil(b"\r\n\r\n") == b"next\r\n\r\n"


def test_eof_in_the_middle_of_a_line(fio, socketpair):
    a, b = socketpair
    b.sendall(b"one\ntwo")
    b.close()
    reader = fio.Reader(a)
    assert reader.readline() == b"one\n"
    with pytest.raises(IncompleteReadError) as info:
        reader.readuntil(b"\n")
    assert isinstance(info.value, EOFError)
    assert info.value.partial == b"two" and info.value.expected is None
    assert reader.readline() == b""


def test_readline_returns_the_partial_last_line(fio, socketpair):
    a, b = socketpair
    b.sendall(b"one\ntwo")
    b.close()
    reader = fio.Reader(a)
    assert [reader.readline() for _ in range(3)] == [b"one\n", b"two", b""]


def test_eof_in_the_middle_of_a_frame(fio, mirrored, socketpair):
    a, b = socketpair
    b.sendall(frames_of([b"whole"]) + struct.pack("!I", 10) + b"cut")
    b.close()
    reader = fio.Reader(a, mirrored=mirrored)
    assert reader.read_frame() == b"whole"
    with pytest.raises(IncompleteReadError) as info:
        reader.read_frame()
    assert info.value.partial == struct.pack("!I", 10) + b"cut"
    assert info.value.expected == 14
    with pytest.raises(IncompleteReadError) as info:
        reader.read_frame()
    assert info.value.partial == b"" and info.value.expected == 4


def test_eof_in_the_middle_of_a_header_and_readexactly(fio, socketpair):
    a, b = socketpair
    b.sendall(b"\0\0")
    b.close()
    reader = fio.Reader(a)
    with pytest.raises(IncompleteReadError) as info:
        reader.readexactly(3)
    assert info.value.partial == b"\0\0" and info.value.expected == 3
    a2, b2 = socket.socketpair()
    with a2, b2:
        b2.sendall(b"\0\0")
        b2.close()
        with pytest.raises(IncompleteReadError) as info:
            fio.Reader(a2).read_frame()
        assert info.value.partial == b"\0\0" and info.value.expected == 4


def test_iteration_over_frames(fio, mirrored, socketpair):
    a, b = socketpair
    rng = random.Random(7)
    payloads = [os.urandom(rng.randint(0, 700)) for _ in range(300)]
    sender(b, frames_of(payloads), chunk=997)
    reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
    assert list(reader) == payloads
    assert reader.at_eof()


def test_iteration_stops_with_an_error_on_a_cut_frame(fio, socketpair):
    a, b = socketpair
    b.sendall(frames_of([b"a", b"bc"]) + b"\0\0\0\x09xy")
    b.close()
    got = []
    with pytest.raises(IncompleteReadError):
        for frame in fio.Reader(a):
            got.append(frame)
    assert got == [b"a", b"bc"]


@pytest.mark.parametrize("header", ["!H", "<H", ">Q", "<I", "B", "=I", "!q", "@I"])
def test_frame_headers(fio, socketpair, header):
    a, b = socketpair
    payloads = [b"", b"x", os.urandom(200)]
    sender(b, frames_of(payloads, header))
    reader = fio.Reader(a, header=header)
    assert list(reader) == payloads


def test_read_frame_header_argument_overrides_the_default(fio, socketpair):
    a, b = socketpair
    b.sendall(frames_of([b"one"], "!H") + frames_of([b"two"], "<Q") + frames_of([b"three"]))
    reader = fio.Reader(a)
    assert reader.read_frame("!H") == b"one"
    assert reader.read_frame(header="<Q") == b"two"
    assert reader.read_frame() == b"three"


def test_negative_frame_length_is_value_error(fio, socketpair):
    a, b = socketpair
    b.sendall(struct.pack("!i", -5) + b"xxxxx")
    reader = fio.Reader(a)
    with pytest.raises(ValueError):
        reader.read_frame("!i")
    assert reader.buffered == 9  # nothing consumed


def test_buffered_frames_at_every_position_around_the_wrap(fio, mirrored, socketpair):
    """Frames already in the ring are parsed in place wherever the header and the payload
    fall: before, across or after the wrap (on a plain ring, in two pieces), with no receive
    (a non-blocking source with nothing to read would raise)."""
    a, _ = socketpair
    a.setblocking(False)
    payloads = [b"abcdefghij", b"", b"xyz" * 5, bytes(range(256)) * 2]
    data = frames_of(payloads)
    for start in range(PAGE - len(data) - 8, PAGE + 8):
        reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
        position = start % PAGE
        reader.ring.write(b"\0" * position)
        reader.ring.consume(position)
        assert reader.ring.write(data) == len(data)
        assert [reader.read_frame() for _ in payloads] == payloads, start
        assert reader.buffered == 0
        reader.ring.write(data)
        assert [frame for _, frame in zip(payloads, reader)] == payloads, start


@pytest.mark.parametrize(
    "header, value", [("b", -128), ("b", -1), ("!h", -32768), ("<h", -2), ("!i", -5), ("q", -1)]
)
def test_negative_frame_length_of_a_buffered_frame(fio, socketpair, header, value):
    """A signed header whose bits, read unsigned, would fit the buffered data is still a
    negative length: ValueError, nothing consumed, however the frame is read."""
    a, _ = socketpair
    raw = struct.pack(header, value) + b"x" * 40000
    reader = fio.Reader(a, capacity=1 << 16, header=header)
    assert reader.ring.write(raw) == len(raw)
    for read in (reader.read_frame, lambda: reader.read_frame(header), lambda: next(reader)):
        with pytest.raises(ValueError, match="negative"):
            read()
        assert reader.buffered == len(raw)


def test_frame_longer_than_capacity(fio, mirrored, socketpair):
    a, b = socketpair
    b.sendall(struct.pack("!I", PAGE) + b"x" * 10)
    reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
    with pytest.raises(LimitOverrunError) as info:
        reader.read_frame()
    assert info.value.consumed == 0
    assert reader.buffered == 14  # kept
    assert reader.readexactly(4) == struct.pack("!I", PAGE)
    with pytest.raises(LimitOverrunError):
        reader.readexactly(PAGE + 1)
    with pytest.raises(LimitOverrunError):
        reader.peek(PAGE + 1)
    assert reader.read(100) == b"x" * 10
    # the largest frame that fits: header plus payload == capacity
    payload = os.urandom(PAGE - 4)
    sender(b, frames_of([payload]))
    assert reader.read_frame() == payload


def test_full_ring_without_a_separator(fio, mirrored, socketpair):
    a, b = socketpair
    b.sendall(b"y" * (PAGE + 10) + b"\n")
    reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
    with pytest.raises(LimitOverrunError) as info:
        reader.readuntil(b"\n")
    assert info.value.consumed == PAGE
    with pytest.raises(LimitOverrunError):
        reader.readline()
    assert reader.buffered == PAGE  # the data stays
    assert reader.readexactly(PAGE) == b"y" * PAGE
    assert reader.readline() == b"y" * 10 + b"\n"


def test_reader_non_blocking_source_keeps_partial_data(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    reader = fio.Reader(a)
    with pytest.raises(BlockingIOError):
        reader.read_frame()
    b.sendall(struct.pack("!I", 6) + b"abc")
    with pytest.raises(BlockingIOError):
        reader.read_frame()
    with pytest.raises(BlockingIOError):
        reader.readexactly(8)
    with pytest.raises(BlockingIOError):
        reader.readline()
    assert reader.buffered == 7
    b.sendall(b"def")
    assert reader.read_frame() == b"abcdef"
    with pytest.raises(BlockingIOError):
        reader.read(10)


def test_reader_timeout_is_one_deadline_and_keeps_data(fio, socketpair):
    a, b = socketpair
    reader = fio.Reader(a, timeout=0.3)
    stop = threading.Event()

    def trickle():  # a byte every 50 ms: each wait is short, the call is not
        while not stop.is_set():
            b.send(b"z")
            time.sleep(0.05)

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            reader.readexactly(1000)
        assert time.monotonic() - t0 < 10
    finally:
        stop.set()
        thread.join(10)
    kept = reader.buffered
    assert kept > 0
    assert reader.read(1000)[:kept] == b"z" * kept


def test_reader_timeout_zero_on_a_blocking_socket(fio, socketpair):
    a, b = socketpair
    reader = fio.Reader(a, timeout=0)
    with pytest.raises(BlockingIOError):
        reader.readline()
    b.sendall(b"ok\n")
    assert reader.readline() == b"ok\n"


def test_reader_uses_the_socket_timeout(fio, socketpair):
    a, _ = socketpair
    a.settimeout(0.1)
    reader = fio.Reader(a)
    with pytest.raises(TimeoutError):
        reader.read_frame()


def test_reader_source_resets(fio, tcp_pair):
    client, peer = tcp_pair
    peer.sendall(frames_of([b"before"]))
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    time.sleep(0.05)
    reader = fio.Reader(client)
    assert reader.read_frame() == b"before"
    peer.close()
    with pytest.raises(ConnectionResetError):
        reader.read_frame()


def test_reader_source_closed_is_os_error(fio):
    a, b = socket.socketpair()
    reader = fio.Reader(a)
    a.close()
    b.close()
    with pytest.raises(OSError):
        reader.read(10)


def test_reader_over_a_pipe_with_lines(fio):
    r, w = os.pipe()
    lines = [b"line %d\n" % i for i in range(2000)]
    thread = threading.Thread(target=lambda: (os.write(w, b"".join(lines)), os.close(w)))
    thread.start()
    try:
        reader = fio.Reader(r, capacity=PAGE)
        got = []
        while True:
            line = reader.readline()
            if not line:
                break
            got.append(line)
        assert got == lines
    finally:
        thread.join(30)
        os.close(r)


# ---- concurrency: one producer thread, one consumer thread, no lock ----


def _spsc(fio, mirrored, total, produce):
    ring = fio.RingBuffer(2 * PAGE, mirrored=mirrored)
    result = {}
    errors = []

    def consumer():
        try:
            crc = 0
            got = 0
            rng = random.Random(2)
            idle = 0
            while got < total:
                if len(ring) == 0:
                    idle += 1
                    time.sleep(0)
                    continue
                how = rng.randrange(3)
                if how == 0:
                    chunk = ring.read(rng.randint(1, 3000))
                elif how == 1:
                    view = ring.peek(rng.randint(1, 3000))
                    chunk = bytes(view)
                    view.release()
                    ring.consume(len(chunk))
                else:
                    buffer = bytearray(rng.randint(1, 3000))
                    n = ring.readinto(buffer)
                    chunk = bytes(buffer[:n])
                crc = zlib.crc32(chunk, crc)
                got += len(chunk)
            result["crc"] = crc
            result["got"] = got
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=consumer)
    thread.start()
    expected = produce(ring)
    thread.join(60)
    assert not thread.is_alive(), "consumer did not finish"
    assert not errors, errors
    assert result == {"crc": expected, "got": total}


def test_two_threads_write_and_read_without_a_lock(fio, mirrored):
    total = 3_000_000

    def produce(ring):
        rng = random.Random(1)
        block = os.urandom(1 << 16)
        crc = 0
        sent = 0
        while sent < total:
            size = min(rng.randint(1, 5000), total - sent)
            start = rng.randrange(len(block) - size)
            piece = memoryview(block)[start : start + size]
            while piece:
                n = ring.write(piece)
                crc = zlib.crc32(piece[:n], crc)
                sent += n
                piece = piece[n:]
                if n == 0:
                    time.sleep(0)
        return crc

    _spsc(fio, mirrored, total, produce)


def test_two_threads_fill_from_a_socket_and_read(fio, mirrored, socketpair):
    a, b = socketpair
    total = 2_000_000
    data = os.urandom(total)
    sender(b, data, close=False, chunk=7000)

    def produce(ring):
        got = 0
        while got < total:
            if ring.free == 0:
                time.sleep(0)
                continue
            got += ring.fill(a)
        return zlib.crc32(data)

    _spsc(fio, mirrored, total, produce)


# ---- allocation ----


def test_read_frame_allocates_nothing_but_the_frame(fio, socketpair):
    a, b = socketpair
    rng = random.Random(3)
    count = 3000
    payloads = [b"p" * rng.randint(16, 512) for _ in range(count)]
    sender(b, frames_of(payloads))
    reader = fio.Reader(a, capacity=1 << 16)
    for _ in range(500):  # warm up: every fill path, the header cache
        reader.read_frame()
    keep = [None] * (count - 500)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        base_current, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for i in range(len(keep)):
            keep[i] = reader.read_frame()
        current, peak = tracemalloc.get_traced_memory()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    assert keep == payloads[500:]
    kept = sum(len(p) + 33 for p in keep)  # bytes object: 33 bytes of header + data
    stats = after.compare_to(before, "filename")
    blocks = sum(stat.count_diff for stat in stats if stat.count_diff > 0)
    # one block per returned frame, plus a small constant (tracemalloc's own frames)
    assert blocks <= len(keep) + 50, blocks
    assert current - base_current <= kept + 16384
    # nothing transient bigger than a frame or two: no per-frame copy of the buffer
    assert peak - base_current <= kept + 16384


# ---- counters ----


def test_counters_are_registered(fio, socketpair):
    import fastio

    snapshot = counters(fio)
    for field in (*_stats.COMMON_FIELDS, "fills", "received", "readv", "wraps", "frames"):
        assert isinstance(snapshot[field], int)
    a, b = socketpair
    b.sendall(frames_of([b"abc", b"de"]))
    reader = fio.Reader(a)
    before = counters(fio)
    reader.read_frame()
    reader.read_frame()
    d = delta(before, counters(fio))
    assert d["frames"] == 2 and d["fills"] >= 1 and d["received"] == 13
    assert d["calls"] == 2 and d["bytes"] == 13
    if fio.IMPLEMENTATION == fastio.IMPLEMENTATION:
        assert "ring" in fastio.stats()


def test_read_all_non_blocking_keeps_every_byte(fio, socketpair):
    """read() gathers more than the ring holds, then would block: nothing is consumed; the
    exception shows what was gathered and the next read() returns it first."""
    a, b = socketpair
    a.setblocking(False)
    data = os.urandom(2 * PAGE + 100)
    b.sendall(data)
    reader = fio.Reader(a, capacity=PAGE)
    with pytest.raises(BlockingIOError) as info:
        reader.read()
    assert info.value.partial == data
    assert info.value.transferred == len(data)
    assert reader.buffered == len(data)
    b.sendall(b"tail")
    b.close()
    assert reader.read() == data + b"tail"
    assert reader.at_eof()


def test_drain_to_a_pipe(fio, mirrored):
    r, w = os.pipe()
    try:
        ring = positioned(fio, mirrored, PAGE - 1)
        ring.write(b"to the pipe")
        assert ring.drain(w) == 11
        assert os.read(r, 100) == b"to the pipe"
    finally:
        os.close(r)
        os.close(w)


def test_reader_on_a_closed_ring(fio, socketpair):
    a, _ = socketpair
    reader = fio.Reader(a)
    reader.ring.close()
    for call in (reader.read, reader.readline, reader.read_frame, lambda: reader.readexactly(1)):
        with pytest.raises(ValueError):
            call()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reader_random_mix_across_the_wrap(fio, mirrored, seed):
    """Random records of every kind, sent in random pieces through a ring of one page: every
    Reader operation meets the wrap many times, on plain and mirrored rings."""
    rng = random.Random(seed)
    alphabet = b"abc\r\n\0"
    records = []
    for _ in range(600):
        kind = rng.choice(("exact", "line", "frame", "until", "peek", "read"))
        size = rng.randint(0, 300)
        data = bytes(rng.choice(alphabet) for _ in range(size))
        if kind == "line":
            data = data.replace(b"\n", b"") + b"\n"
        elif kind == "until":
            data = data.replace(b"\r", b"") + b"\r\n"  # the first b"\r\n" ends it
        elif kind == "frame":
            data = struct.pack("!H", size) + data
        elif kind in ("exact", "peek", "read"):
            data = data or b"x"
        records.append((kind, data))
    stream = b"".join(data for _, data in records)
    a, b = socket.socketpair()
    with a, b:
        sender(b, stream, chunk=rng.randint(1, 2000))
        reader = fio.Reader(a, capacity=PAGE, mirrored=mirrored)
        for kind, data in records:
            if kind == "exact":
                assert reader.readexactly(len(data)) == data
            elif kind == "line":
                assert reader.readline() == data
            elif kind == "until":
                assert reader.readuntil(b"\r\n") == data
            elif kind == "frame":
                assert reader.read_frame("!H") == data[2:]
            elif kind == "peek":
                assert reader.peek(len(data)) == data
                assert reader.readexactly(len(data)) == data
            else:
                got = b""
                while len(got) < len(data):
                    got += reader.read(len(data) - len(got))
                assert got == data
        assert reader.read() == b""
        assert reader.at_eof()


def test_python_twin_without_vectored_calls(monkeypatch, socketpair, mirrored):
    """Where ``os`` has no readv/writev (Windows), one segment per call, same results."""
    from fastio import _impl, _ring_py

    fio = _impl.twin("python")
    monkeypatch.setattr(_ring_py, "_HAVE_VECTORED", False)
    a, b = socketpair
    ring = positioned(fio, mirrored, PAGE - 10)
    b.sendall(b"0123456789abcdefghij")
    got = ring.fill(a)
    assert got == 10  # up to the wrap
    assert ring.fill(a) == 10
    assert ring.drain(b) == 20
    assert a.recv(100) == b"0123456789abcdefghij"
    r, w = os.pipe()
    try:
        os.write(w, b"pipe data")
        assert ring.fill(r) == 9
        assert ring.drain(w) == 9
        assert os.read(r, 100) == b"pipe data"
    finally:
        os.close(r)
        os.close(w)
    reader = fio.Reader(a, capacity=PAGE)
    b.sendall(frames_of([b"x" * 3000, b"y" * 3000]))
    assert list(reader.read_frame() for _ in range(2)) == [b"x" * 3000, b"y" * 3000]


def test_close_refuses_during_a_fill_in_another_thread(fio, socketpair):
    a, b = socketpair
    ring = fio.RingBuffer(PAGE)
    result = []
    thread = threading.Thread(target=lambda: result.append(ring.fill(a)))
    thread.start()
    time.sleep(0.2)  # the producer is blocked in its receive, inside the ring's memory
    with pytest.raises(BufferError):
        ring.close()
    b.sendall(b"late")
    thread.join(30)
    assert result == [4]
    assert ring.read() == b"late"
    ring.close()
    assert ring.closed


# ---- review fixes (issue 5): lost bytes, uninitialized objects, clear during fill, find ----


def test_read_all_retried_after_would_block_returns_everything(fio):
    """The reviewer's case: 10000 bytes through a 4096-byte ring, a would-block, 10 more."""
    a, b = socket.socketpair()
    with a, b:
        b.setblocking(False)
        a.sendall(b"x" * 10000)
        reader = fio.Reader(b, capacity=4096)
        with pytest.raises(BlockingIOError):
            reader.read()
        a.sendall(b"y" * 10)
        a.close()
        assert reader.read() == b"x" * 10000 + b"y" * 10


def test_read_all_retried_after_a_timeout_returns_everything(fio, socketpair):
    a, b = socketpair
    data = os.urandom(3 * PAGE + 7)
    b.sendall(data)
    reader = fio.Reader(a, capacity=PAGE, timeout=0.2)
    with pytest.raises(TimeoutError) as info:
        reader.read(-1)
    assert info.value.transferred == len(data)
    b.close()
    assert reader.read(None) == data


def test_kept_bytes_come_first_for_every_reader_call(fio, socketpair):
    """After an interrupted read(), the kept bytes (more than the ring holds) feed read(n),
    readexactly, readline, read_frame and peek, in order, before the source."""
    a, b = socketpair
    a.setblocking(False)
    payloads = [bytes([65 + i % 26]) * 1000 for i in range(9)]
    stream = frames_of(payloads) + b"a line\n" + b"z" * 50
    b.sendall(stream)
    reader = fio.Reader(a, capacity=PAGE)
    with pytest.raises(BlockingIOError):
        reader.read()
    assert reader.buffered == len(stream)
    assert reader.read(3)[:3] == stream[:3]
    assert reader.readexactly(1001) == stream[3:1004]
    got = [reader.read_frame() for _ in range(8)]
    assert got == payloads[1:]
    assert reader.peek(4) == b"a li"
    assert reader.readline() == b"a line\n"
    b.sendall(b"!")
    assert reader.readexactly(51) == b"z" * 50 + b"!"
    with pytest.raises(BlockingIOError):
        reader.read(1)


def test_read_n_after_an_interrupted_read_makes_no_system_call(fio, socketpair):
    a, b = socketpair
    a.setblocking(False)
    b.sendall(b"q" * (PAGE + 1))
    reader = fio.Reader(a, capacity=PAGE)
    with pytest.raises(BlockingIOError):
        reader.read()
    before = counters(fio)
    assert reader.read(PAGE) == b"q" * PAGE
    assert reader.read(PAGE) == b"q"
    assert delta(before, counters(fio))["syscalls"] == 0


def _reader_calls(reader):
    return {
        "read": lambda: reader.read(10),
        "read_all": lambda: reader.read(),
        "readexactly": lambda: reader.readexactly(1),
        "readuntil": lambda: reader.readuntil(),
        "readline": lambda: reader.readline(),
        "peek": lambda: reader.peek(1),
        "read_frame": lambda: reader.read_frame(),
        "read_frame_header": lambda: reader.read_frame("!H"),
        "next": lambda: next(reader),
    }


READER_CALLS = tuple(_reader_calls(None))


@pytest.mark.parametrize("call", READER_CALLS)
def test_reader_whose_init_did_not_run_raises_value_error(fio, call):
    reader = fio.Reader.__new__(fio.Reader)
    with pytest.raises(ValueError, match="uninitialized"):
        _reader_calls(reader)[call]()
    assert reader.ring is None
    assert reader.buffered == 0
    assert not reader.at_eof()
    assert "uninitialized" in repr(reader)


@pytest.mark.parametrize("call", READER_CALLS)
def test_reader_subclass_skipping_super_init_raises_value_error(fio, socketpair, call):
    class Lazy(fio.Reader):
        def __init__(self, source):
            self.extra = source  # forgets super().__init__()

    reader = Lazy(socketpair[0])
    with pytest.raises(ValueError, match="uninitialized"):
        _reader_calls(reader)[call]()


def test_ring_buffer_is_built_before_init(fio):
    """Both twins build the ring in __new__/__cinit__: no half-made RingBuffer exists."""
    with pytest.raises(TypeError):
        fio.RingBuffer.__new__(fio.RingBuffer)

    class Sub(fio.RingBuffer):
        def __init__(self, capacity, **kwargs):
            pass  # skips super().__init__()

    ring = Sub(100)
    assert ring.capacity == PAGE
    assert ring.write(b"abc") == 3
    assert ring.read() == b"abc"
    ring.close()

    class Polite(fio.RingBuffer):
        def __init__(self, capacity):
            super().__init__(capacity, mirrored=False)
            self.tag = "polite"

    ring = Polite(PAGE + 1)
    assert ring.capacity == 2 * PAGE and ring.tag == "polite"
    assert ring.write(b"xyz") == 3 and ring.read() == b"xyz"


def test_clear_while_a_fill_is_in_flight(fio, socketpair, mirrored):
    """clear() is a consumer call: it works while the producer thread waits in fill() (both
    twins); only a live peek view makes it raise."""
    a, b = socketpair
    ring = fio.RingBuffer(PAGE, mirrored=mirrored)
    ring.write(b"old")
    result = []
    thread = threading.Thread(target=lambda: result.append(ring.fill(a)))
    thread.start()
    try:
        time.sleep(0.2)  # the producer is blocked in its receive, inside the ring's memory
        ring.clear()
        assert len(ring) == 0
        view = ring.peek()
        with pytest.raises(BufferError):
            ring.clear()
        view.release()
        ring.clear()
    finally:
        b.sendall(b"new")
        thread.join(30)
    assert result == [3]
    assert ring.read() == b"new"
    ring.close()


@pytest.mark.parametrize(
    "start, end",
    [
        (2**70, None),
        (-(2**70), None),
        (0, 2**70),
        (0, -(2**70)),
        (2**63, 2**64),
        (-(2**63), 2**63),
        (1 << 62, None),
        (-3, 2**100),
    ],
)
def test_find_clamps_huge_bounds_like_bytes_find(fio, mirrored, start, end):
    ring = positioned(fio, mirrored, PAGE - 4)
    data = b"abcabcabc"
    ring.write(data)
    for sub in (b"c", b"ca", b"", b"zz"):
        assert ring.find(sub, start, end) == data.find(sub, start, end)


@pytest.mark.parametrize("bad", [True, False, 1.0, "1", b"1"])
def test_find_rejects_bool_and_non_int_bounds(fio, bad):
    ring = fio.RingBuffer(PAGE)
    ring.write(b"abc")
    with pytest.raises(TypeError):
        ring.find(b"b", bad)
    with pytest.raises(TypeError):
        ring.find(b"b", 0, bad)
    with pytest.raises(TypeError):
        ring.find(b"b", None)
    assert ring.find(b"b", 0, None) == 1


def test_python_twin_without_memfd_maps_a_temporary_file(monkeypatch, socketpair):
    """Where there is no memfd (or it fails), the Python twin maps a temporary file twice:
    same behaviour, peek views counted apart from a fill in flight."""
    from fastio import _impl

    fio = _impl.twin("python")
    monkeypatch.delattr(os, "memfd_create", raising=False)
    a, b = socketpair
    ring = positioned(fio, False, PAGE - 2)
    ring.write(b"wrap")
    assert ring.find(b"ra") == 1
    view = ring.peek()
    assert bytes(view) == b"wr"
    with pytest.raises(BufferError):
        ring.clear()
    view.release()
    b.sendall(b"abc")
    assert ring.fill(a) == 3
    assert ring.read() == b"wrapabc"
    ring.close()
    assert ring.closed
