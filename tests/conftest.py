"""Runs every behavioural test against both twins: ids ``[c]`` and ``[python]``.

A test asks for the ``fio`` fixture and gets a namespace of one twin's public names
(``fio.sendfile``, ``fio.BatchWriter``, ...). Where the native twin did not build, only
``[python]`` runs, unless ``FASTIO_REQUIRE_C=1``, which makes that a failure.
"""

import contextlib
import functools
import os
import signal
import socket
import threading

import pytest

from fastio import _faults, _impl

REQUIRE_C = os.environ.get("FASTIO_REQUIRE_C", "") not in ("", "0")
#: Set by .ci/run's fault-injection step: a native twin without the hook is then a failure.
REQUIRE_FAULTS = os.environ.get("FASTIO_REQUIRE_FAULTS", "") not in ("", "0")
NATIVE = _impl.native_available()


def _twins():
    if NATIVE or REQUIRE_C:
        return ["c", "python"]
    return ["python"]


def pytest_configure(config):
    # Registered here too, so the suite run from outside the tree (against a wheel) knows it.
    config.addinivalue_line("markers", "slow: longer tests (still run by .ci/run)")


def pytest_report_header(config):
    return (
        f"fastio: live implementation {_impl.IMPLEMENTATION}, native twin "
        f"{'available' if NATIVE else 'NOT available: ' + str(_impl.NATIVE_UNAVAILABLE)}"
    )


def pytest_sessionstart(session):
    if REQUIRE_C and not NATIVE:
        raise pytest.UsageError(
            f"FASTIO_REQUIRE_C=1 but the native twin did not load: {_impl.NATIVE_UNAVAILABLE}"
        )


@pytest.fixture(params=_twins())
def fio(request):
    """The public names of one twin (native ``c`` or pure ``python``)."""
    return _impl.twin(request.param)


@pytest.fixture
def socketpair():
    """A connected pair of Unix stream sockets, closed after the test."""
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


@pytest.fixture
def tcp_pair():
    """A connected pair of loopback TCP sockets, closed after the test."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    yield client, peer
    client.close()
    peer.close()


def drain_in_thread(sock, chunk=1 << 20):
    """Read ``sock`` to EOF in a thread; ``join()`` returns the bytes received."""
    received = bytearray()
    done = threading.Event()

    def run():
        try:
            while True:
                data = sock.recv(chunk)
                if not data:
                    break
                received.extend(data)
        finally:
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    class Drain:
        def join(self, timeout=60):
            thread.join(timeout)
            assert done.is_set(), "reader thread did not finish"
            return bytes(received)

    return Drain()


def open_fds():
    """Number of open file descriptors of this process (Linux)."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def faults(fio):
    """``faults(seed=..., rate=... | nth=..., kinds=..., calls=...)``: a context manager that
    injects faults into this twin's system calls (see ``fastio._faults``). The native twin
    needs a ``FASTIO_FAULTS=1`` build: elsewhere its ``[c]`` cases skip, unless
    ``FASTIO_REQUIRE_FAULTS=1`` (set by .ci/run) makes that a failure."""
    if fio.IMPLEMENTATION == "c" and not _faults.native_available():
        if REQUIRE_FAULTS:
            pytest.fail("FASTIO_REQUIRE_FAULTS=1 but this build has no fault hook")
        pytest.skip("the native fault hook exists only in a FASTIO_FAULTS=1 build")
    return functools.partial(_faults.inject, fio.IMPLEMENTATION)


class Hang(Exception):
    """Raised by ``bounded`` (not an OSError, so no ``except OSError`` swallows it)."""


@contextlib.contextmanager
def _alarm(seconds, handler):
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def bounded(seconds):
    """Fail (``Hang`` from a SIGALRM handler) if the block runs longer than ``seconds``: a
    hang becomes a test failure. Main thread only."""

    def expired(signum, frame):
        raise Hang(f"still running after {seconds} s: a hang")

    return _alarm(seconds, expired)


class Stop(Exception):
    """Raised by the signal handler of ``alarm_raises``."""


def _raise_stop(signum, frame):
    raise Stop


def alarm_raises(seconds):
    """A signal handler that raises ``Stop`` after ``seconds``, as Ctrl-C does: calls under
    test must stop promptly with their progress. Main thread only."""
    return _alarm(seconds, _raise_stop)
