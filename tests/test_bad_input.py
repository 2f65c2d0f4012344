"""Bad input, everywhere: every public function and method of both twins called with wrong
types, None, negative and huge numbers, closed fds, fds of the wrong kind (directory, datagram
socket, listening socket, /dev/null) and objects whose ``fileno()`` raises.

Each call must raise ``TypeError``, ``ValueError`` or ``OSError`` (or the primitive's own
documented errors), or, where the value is legitimately usable (``/dev/null`` is a fine
target), succeed; never crash the interpreter, hang (each call is bounded), or corrupt later
calls (each test ends with a normal round trip through the same primitive).
"""

import inspect
import os
import socket
import tempfile

import pytest
from conftest import bounded

from fastio._errors import IncompleteReadError, LimitOverrunError, PoolClosed, PoolTimeout

ALLOWED = (TypeError, ValueError, OSError, IncompleteReadError, LimitOverrunError, PoolTimeout)


class FilenoRaises:
    def fileno(self):
        raise OSError(9, "fileno() refused")


class FilenoLies:
    def fileno(self):
        return "3"


class Opaque:
    pass


#: Values wrong for any parameter (some are right for a few: then the call may succeed).
GENERIC = [
    None,
    "x",
    b"x",
    1.5,
    float("nan"),
    True,
    Opaque(),
    -1,
    -(2**63),
    2**31,
    2**63,
    2**64 + 5,
    10**30,
]


class Ends:
    """File descriptors of every wrong kind, made once per test and closed after."""

    def __init__(self):
        self.closing = []
        r, w = os.pipe()
        os.close(r)
        os.close(w)
        self.closed_fd = r  # a number that was an fd a moment ago
        self.dir_fd = self.keep(os.open(tempfile.gettempdir(), os.O_RDONLY))
        self.dgram = self.keep(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        self.dgram.bind(("127.0.0.1", 0))
        self.dgram.setblocking(False)
        self.listener = self.keep(socket.create_server(("127.0.0.1", 0)))
        self.listener.setblocking(False)
        self.devnull = self.keep(os.open(os.devnull, os.O_RDWR))
        closed_sock = socket.socket()
        closed_sock.close()
        self.values = [
            self.closed_fd,
            self.dir_fd,
            self.dgram,
            self.listener,
            self.devnull,
            closed_sock,
            FilenoRaises(),
            FilenoLies(),
        ]

    def keep(self, thing):
        self.closing.append(thing)
        return thing

    def close(self):
        for thing in self.closing:
            try:
                if isinstance(thing, int):
                    os.close(thing)  # a BatchWriter given closefd=<truthy> may have closed it
                else:
                    thing.close()
            except OSError:
                pass


@pytest.fixture
def ends():
    e = Ends()
    yield e
    e.close()


def attempt(call, *args, **kwargs):
    """Call with bounded time; the outcome must be a return or an allowed error."""
    with bounded(10):
        try:
            return call(*args, **kwargs)
        except ALLOWED:
            pass
        except BufferError:
            pass  # RingBuffer: "full" / "views alive" is its documented error
        except PoolClosed:
            pass
    return None


def each_substitution(args, extra_values):
    """Every way of replacing one argument of ``args`` (a dict) by a bad value."""
    for name in args:
        for value in [*GENERIC, *extra_values]:
            if "timeout" in name and _forever(value):
                continue  # a huge timeout (or None) legitimately waits forever
            yield {**args, name: value}


def _forever(value):
    return value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value > 1e6
    )


# ---- transfer ----------------------------------------------------------------------------


def test_transfer_functions(fio, ends, tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789" * 100)
    a, b = socket.socketpair()
    c, d = socket.socketpair()  # splice's source: never a loop back into a
    for s in (a, b, c, d):
        s.setblocking(False)
    with open(path, "rb") as f:
        cases = {
            fio.sendfile: {"sock": a, "file": f, "offset": 0, "count": 10, "timeout": 0.01},
            fio.splice: {"src": d, "dst": a, "count": 10, "timeout": 0.01},
            fio.copy: {"src": f, "dst": a, "count": 10, "timeout": 0.01},
        }
        for function, good in cases.items():
            for args in each_substitution(good, ends.values):
                f.seek(0)
                if function is fio.splice:
                    # A readable peer: the fds among ends.values are small ints, so as a
                    # ``timeout`` they are valid seconds (12 under pytest), and splice
                    # legitimately waits that long on a source with nothing to read. With
                    # ``count`` bytes ready it returns at once, whatever the timeout.
                    c.sendall(b"x" * good["count"])
                attempt(function, **args)
        relay_good = {"a": ends.dgram, "b": ends.listener, "idle_timeout": 0.01}
        for args in each_substitution(relay_good, ends.values):
            attempt(fio.relay, **args)
        # Not corrupted: a normal transfer right after.
        f.seek(0)
        _drain(b)
        assert fio.sendfile(a, f, 0, 100) == 100
        assert b.recv(200) == b"0123456789" * 10
    for s in (a, b, c, d):
        s.close()


def _drain(sock):
    try:
        while sock.recv(1 << 16):
            pass
    except BlockingIOError:
        pass


# ---- batch ---------------------------------------------------------------------------------


def test_batch_writer(fio, ends):
    good = {
        "target": ends.devnull,
        "buffer_size": 4096,
        "copy_threshold": 64,
        "max_pending": None,
        "timeout": 0.01,
        "closefd": False,
    }
    for args in each_substitution(good, ends.values):
        target = args.pop("target")
        try:
            with bounded(10):
                writer = fio.BatchWriter(target, **args)
        except ALLOWED:
            continue
        _exercise_writer(writer, ends)
    a, b = socket.socketpair()
    writer = fio.BatchWriter(a, closefd=False)
    for bad in [*GENERIC, *ends.values, "text", ["a"], [1, 2], [None]]:
        attempt(writer.write, bad)
        attempt(writer.writelines, bad)
        attempt(writer.writelines, [b"ok", bad])
    writer.write(b"still fine")
    writer.flush()
    assert b.recv(100).endswith(b"still fine")
    writer.close()
    for method in ("write", "writelines", "flush", "fileno"):
        attempt(getattr(writer, method), *([b"x"] if method == "write" else []))
    attempt(writer.writelines, [b"x"])
    a.close()
    b.close()


def _exercise_writer(writer, ends):
    for call, args in [
        (writer.write, (b"abc",)),
        (writer.writelines, ([b"a", b"b"],)),
        (writer.flush, ()),
        (writer.fileno, ()),
    ]:
        attempt(call, *args)
    _ = writer.pending, writer.closed, writer.stats
    attempt(writer.close)


# ---- ring ----------------------------------------------------------------------------------


def test_ring_buffer(fio, ends):
    for args in each_substitution({"capacity": 4096, "mirrored": None}, []):
        capacity = args.pop("capacity")
        attempt(fio.RingBuffer, capacity, **args)
    ring = fio.RingBuffer(4096)
    for bad in [*GENERIC, *ends.values, bytearray(3), memoryview(b"abc")[::2]]:
        attempt(ring.write, bad)
        attempt(ring.fill, bad)
        attempt(ring.fill, ends.devnull, bad)
        attempt(ring.peek, bad)
        attempt(ring.consume, bad)
        attempt(ring.read, bad)
        attempt(ring.readinto, bad)
        attempt(ring.find, bad)
        attempt(ring.find, b"a", bad)
        attempt(ring.find, b"a", 0, bad)
        attempt(ring.drain, bad)
        attempt(ring.drain, ends.devnull, bad)
    # Not corrupted: it still works as a ring.
    ring.clear()
    assert ring.write(b"hello") == 5
    assert ring.find(b"l") == 2
    assert ring.read() == b"hello"
    ring.close()
    for name, args in [
        ("write", (b"x",)),
        ("fill", (ends.devnull,)),
        ("peek", ()),
        ("consume", (0,)),
        ("read", ()),
        ("readinto", (bytearray(2),)),
        ("find", (b"x",)),
        ("drain", (ends.devnull,)),
        ("clear", ()),
    ]:
        with pytest.raises(ValueError):
            getattr(ring, name)(*args)


def test_reader(fio, ends):
    good = {"source": ends.devnull, "capacity": 4096, "timeout": 0.01, "header": "!I"}
    for args in each_substitution(good, ends.values):
        source = args.pop("source")
        try:
            with bounded(10):
                reader = fio.Reader(source, **args)
        except ALLOWED:
            continue
        for call, call_args in [
            (reader.read, ()),
            (reader.readexactly, (3,)),
            (reader.readuntil, ()),
            (reader.readline, ()),
            (reader.peek, (2,)),
            (reader.read_frame, ()),
            (reader.at_eof, ()),
        ]:
            attempt(call, *call_args)
    a, b = socket.socketpair()
    reader = fio.Reader(b, capacity=4096, timeout=0.05)
    for bad in [*GENERIC, *ends.values, b"", "\n", "!f", "!II", "x"]:
        attempt(reader.read, bad)
        attempt(reader.readexactly, bad)
        attempt(reader.readuntil, bad)
        attempt(reader.peek, bad)
        attempt(reader.read_frame, bad)
    a.sendall(b"line\n\x00\x02hi")
    assert reader.readline() == b"line\n"
    assert reader.read_frame("!H") == b"hi"
    a.close()
    b.close()


# ---- pool ----------------------------------------------------------------------------------


class Conn:
    def close(self):
        pass


def test_pools(fio, ends):
    pool_args = {
        "max_size": 2,
        "min_idle": 0,
        "max_idle": None,
        "max_lifetime": None,
        "max_idle_time": None,
        "acquire_timeout": 0.01,
        "check": None,
        "check_after": None,
        "reset": None,
        "close": None,
        "is_broken": None,
        "leak_timeout": None,
        "lifetime_jitter": 0.05,
        "clock": None,
    }
    for args in each_substitution(pool_args, []):
        attempt(fio.Pool, Conn, **args)
    for bad in GENERIC:
        attempt(fio.Pool, bad)
    keyed_args = {k: v for k, v in pool_args.items() if k not in ("max_size", "max_idle")}
    keyed_args.update(max_per_key=2, max_idle_per_key=None, max_total=None)
    for args in each_substitution(keyed_args, []):
        attempt(fio.KeyedPool, lambda key: Conn(), **args)
    socket_args = {**keyed_args, "connect_timeout": 1.0, "timeout": None, "nodelay": True}
    for args in each_substitution(socket_args, []):
        attempt(fio.SocketPool, **args)

    pool = fio.Pool(Conn, max_size=2, acquire_timeout=0.05)
    keyed = fio.KeyedPool(lambda key: Conn(), max_per_key=2, acquire_timeout=0.05)
    sockets = fio.SocketPool(connect_timeout=0.1, acquire_timeout=0.05)
    for bad in [*GENERIC, *ends.values, Conn(), ("127.0.0.1", -1), ("", 0), ("x",)]:
        if _forever(bad):
            continue  # as a timeout: waits forever on an exhausted pool, as documented
        got = attempt(pool.acquire, bad)  # a huge timeout is legitimate: give it back
        if isinstance(got, Conn):
            pool.release(got)
        attempt(pool.release, bad)
        attempt(pool.release, Conn(), discard=bad)
        got = attempt(keyed.acquire, "k", bad)
        if isinstance(got, Conn):
            keyed.release(got)
        attempt(keyed.release, bad)
        attempt(keyed.stats, bad)
        attempt(sockets.acquire, bad)
        attempt(sockets.acquire, ("127.0.0.1", 9), bad)
        attempt(sockets.release, bad)
        attempt(sockets.stats, bad)
    # Not corrupted: the counts still add up and a round trip works.
    conn = pool.acquire()
    pool.release(conn)
    s = pool.stats()
    assert (s.open, s.in_use, s.idle) == (1, 0, 1)
    conn = keyed.acquire("k")
    keyed.release(conn)
    assert keyed.stats("k").in_use == 0
    for p in (pool, keyed, sockets):
        p.close()
        attempt(p.acquire, *(["k"] if p is keyed else [("127.0.0.1", 9)] if p is sockets else []))


# ---- the table covers every public callable ------------------------------------------------

COVERED = {
    "sendfile",
    "splice",
    "copy",
    "relay",
    "probe",
    "BatchWriter",
    "RingBuffer",
    "Reader",
    "Pool",
    "KeyedPool",
    "SocketPool",
    "PoolStats",
}


def test_every_public_callable_is_in_the_table(fio):
    public = {
        name
        for name, value in vars(fio).items()
        if callable(value) and not (inspect.isclass(value) and issubclass(value, BaseException))
    }
    assert public <= COVERED, f"add {sorted(public - COVERED)} to tests/test_bad_input.py"


def test_sys_probe_takes_no_bad_arguments(fio):
    if not hasattr(fio, "probe"):
        pytest.skip("no probe() in this build")
    for bad in GENERIC:
        attempt(fio.probe, bad)
    assert fio.probe() is not None
