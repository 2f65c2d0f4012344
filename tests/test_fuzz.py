"""Hypothesis stateful fuzzing: random operation sequences against a simple model, and the two
twins against each other (also under random fault schedules).

``FASTIO_FUZZ_EXAMPLES`` sets the examples per test (default 40, what the suite and .ci/run
use); a longer local run: ``FASTIO_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py``.
"""

import errno
import os
import random
import socket
import struct
import threading

import pytest
from conftest import NATIVE, REQUIRE_FAULTS, bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastio import _faults, _impl
from fastio._errors import IncompleteReadError, LimitOverrunError

EXAMPLES = int(os.environ.get("FASTIO_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    stateful_step_count=40,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PAGE = 4096
INJECTED_ERRNOS = {errno.ECONNRESET, errno.EPIPE, errno.ENOMEM, errno.ENOBUFS}
TWINS = ["c", "python"] if NATIVE else ["python"]


def ring_machine(implementation):
    fio = _impl.twin(implementation)

    class RingMachine(RuleBasedStateMachine):
        """A RingBuffer against a ``bytearray``; fill and drain go through a real pipe."""

        def __init__(self):
            super().__init__()
            self.mirrored = random.choice([None, False])
            self.ring = fio.RingBuffer(PAGE, mirrored=self.mirrored)
            self.model = bytearray()
            self.r, self.w = os.pipe()
            os.set_blocking(self.r, False)

        def teardown(self):
            self.ring.close()
            os.close(self.r)
            os.close(self.w)

        @rule(data=st.binary(max_size=PAGE + 100))
        def write(self, data):
            n = self.ring.write(data)
            assert n == min(len(data), PAGE - len(self.model))
            self.model += data[:n]

        @rule(n=st.integers(-2, PAGE + 10) | st.none())
        def read(self, n):
            got = self.ring.read(n)
            k = len(self.model) if n is None or n < 0 else min(n, len(self.model))
            assert got == bytes(self.model[:k])
            del self.model[:k]

        @rule(n=st.integers(-1, PAGE + 10))
        def peek(self, n):
            with self.ring.peek(n) as view:
                data = bytes(view)
            k = len(self.model) if n < 0 else min(n, len(self.model))
            assert bytes(self.model[: len(data)]) == data
            if self.ring.mirrored:
                assert len(data) == k
            else:
                assert len(data) <= k and (k == 0 or len(data) > 0)

        @rule(data=st.data())
        def consume(self, data):
            n = data.draw(st.integers(0, len(self.model)))
            self.ring.consume(n)
            del self.model[:n]

        @rule(n=st.integers(0, PAGE + 10))
        def readinto(self, n):
            buffer = bytearray(n)
            got = self.ring.readinto(buffer)
            assert got == min(n, len(self.model))
            assert bytes(buffer[:got]) == bytes(self.model[:got])
            del self.model[:got]

        @rule(
            sub=st.binary(min_size=0, max_size=4),
            start=st.integers(-PAGE - 5, PAGE + 5),
            end=st.none() | st.integers(-PAGE - 5, PAGE + 5),
        )
        def find(self, sub, start, end):
            assert self.ring.find(sub, start, end) == bytes(self.model).find(sub, start, end)

        @rule()
        def clear(self):
            self.ring.clear()
            self.model.clear()

        @rule(data=st.binary(min_size=1, max_size=PAGE), n=st.integers(1, PAGE + 10))
        def fill(self, data, n):
            os.write(self.w, data)
            room = PAGE - len(self.model)
            if room == 0:
                with pytest.raises(BufferError):
                    self.ring.fill(self.r, n)
            else:
                got = self.ring.fill(self.r, n)
                assert got == min(n, room, len(data))
                self.model += data[:got]
            while True:  # empty the pipe for the next rule
                try:
                    os.read(self.r, 1 << 16)
                except BlockingIOError:
                    break

        @precondition(lambda self: len(self.model) > 0)
        @rule(n=st.integers(-1, PAGE + 10))
        def drain(self, n):
            want = len(self.model) if n < 0 else min(n, len(self.model))
            sent = self.ring.drain(self.w, n)
            assert sent == want
            if want:
                assert os.read(self.r, PAGE + 10) == bytes(self.model[:want])
            del self.model[:want]

        @invariant()
        def sizes(self):
            assert len(self.ring) == len(self.model)
            assert self.ring.free == PAGE - len(self.model)

    RingMachine.TestCase.settings = FUZZ
    return RingMachine


for _impl_name in TWINS:
    globals()[f"TestRingModel_{_impl_name}"] = ring_machine(_impl_name).TestCase


# ---- the Reader: both twins on the same operation sequence (and fault schedule) ----

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("readexactly"), st.integers(0, 3000)),
        st.tuples(st.just("readuntil"), st.sampled_from([b"\n", b"\r\n", b"xyz"])),
        st.tuples(st.just("readline"), st.none()),
        st.tuples(st.just("peek"), st.integers(0, 3000)),
        st.tuples(st.just("read_frame"), st.sampled_from(["!I", "<H", "B"])),
    ),
    min_size=1,
    max_size=30,
)


def run_reader(implementation, data, ops, capacity, fault_seed=None, rate=0.0):
    """Results of ``ops`` on a Reader over a socket receiving ``data`` (then EOF). Injected
    errors are retried (the call resumes); anything else is part of the result."""
    fio = _impl.twin(implementation)
    a, b = socket.socketpair()
    writer = threading.Thread(target=lambda: (a.sendall(data), a.close()), daemon=True)
    writer.start()
    reader = fio.Reader(b, capacity=capacity)
    results = []
    schedule = (
        _faults.inject(implementation, seed=fault_seed, rate=rate)
        if fault_seed is not None
        else _nothing()
    )
    with bounded(30), schedule:
        for name, arg in ops:
            while True:
                try:
                    method = getattr(reader, name)
                    value = method() if arg is None else method(arg)
                    results.append((name, value))
                except (IncompleteReadError, LimitOverrunError, ValueError) as exc:
                    partial = getattr(exc, "partial", None)
                    results.append((name, type(exc).__name__, partial))
                except OSError as exc:
                    assert exc.errno in INJECTED_ERRNOS, exc
                    assert getattr(exc, "transferred", 0) == 0
                    continue
                break
    writer.join(30)
    b.close()
    return results


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def stream(seed, size):
    """Lines, CRLFs, frames and noise mixed: every op finds something to parse."""
    rng = random.Random(seed)
    parts = []
    total = 0
    while total < size:
        kind = rng.randrange(4)
        if kind == 0:
            part = rng.randbytes(rng.randrange(0, 200)).replace(b"\n", b"") + b"\n"
        elif kind == 1:
            payload = rng.randbytes(rng.randrange(0, 300))
            part = struct.pack("!I", len(payload)) + payload
        elif kind == 2:
            part = b"abc" * rng.randrange(0, 50) + b"xyz"
        else:
            part = rng.randbytes(rng.randrange(0, 500))
        parts.append(part)
        total += len(part)
    return b"".join(parts)


@pytest.mark.skipif(not NATIVE, reason="compares the native twin with the Python twin")
@FUZZ
@given(ops=OPS, seed=st.integers(0, 2**32), capacity=st.sampled_from([4096, 8192, 65536]))
def test_reader_twins_agree(ops, seed, capacity):
    data = stream(seed, 20_000)
    assert run_reader("c", data, ops, capacity) == run_reader("python", data, ops, capacity)


@pytest.mark.skipif(not NATIVE, reason="compares the native twin with the Python twin")
@FUZZ
@given(
    ops=OPS,
    seed=st.integers(0, 2**32),
    fault_seed=st.integers(0, 2**64 - 1),
    rate=st.sampled_from([0.05, 0.2, 0.5]),
)
def test_reader_twins_agree_under_faults(ops, seed, fault_seed, rate):
    """Under random fault schedules (each twin's own hook, same seed) the twins return the same
    results as without faults: injected failures only delay, never change, what is parsed."""
    if not _faults.native_available():
        if REQUIRE_FAULTS:
            pytest.fail("FASTIO_REQUIRE_FAULTS=1 but this build has no fault hook")
        pytest.skip("the native fault hook exists only in a FASTIO_FAULTS=1 build")
    data = stream(seed, 20_000)
    clean = run_reader("python", data, ops, 4096)
    assert run_reader("c", data, ops, 4096, fault_seed, rate) == clean
    assert run_reader("python", data, ops, 4096, fault_seed, rate) == clean


@FUZZ
@given(ops=OPS, seed=st.integers(0, 2**32), fault_seed=st.integers(0, 2**64 - 1))
def test_python_reader_under_faults_matches_its_clean_run(ops, seed, fault_seed):
    """Runs in every build: the Python twin with and without a random fault schedule."""
    data = stream(seed, 20_000)
    assert run_reader("python", data, ops, 8192, fault_seed, 0.3) == run_reader(
        "python", data, ops, 8192
    )


# --- BatchWriter: random writes, writelines, flushes and buffer mutations against a model ---

SIZES = [0, 1, 7, 100, 1023, 1024, 1025, 5000, 16383, 16384, 16385, 70_000]
PIECE = st.tuples(st.sampled_from(["bytes", "bytearray", "memoryview"]), st.sampled_from(SIZES))
BATCH_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write"), PIECE),
        st.tuples(st.just("writelines"), st.lists(PIECE, max_size=8)),
        st.tuples(st.just("flush"), st.none()),
        st.tuples(st.just("mutate"), st.none()),  # scribble on every bytearray written so far
    ),
    min_size=1,
    max_size=40,
)


def run_batch(implementation, ops, seed, buffer_size, copy_threshold, fault_seed=None):
    """Run ``ops`` on a BatchWriter over a socketpair; returns (bytes received, the model's
    bytes, the results of the calls). The model snapshots each piece when it is written: what
    the caller changes afterwards must never reach the peer."""
    fio = _impl.twin(implementation)
    rng = random.Random(seed)
    a, b = socket.socketpair()
    received = bytearray()

    def drain():
        while True:
            chunk = b.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    model = bytearray()
    results = []
    mutable = []

    def make(kind, size):
        raw = rng.randbytes(size)
        if kind == "bytes":
            return raw
        piece = bytearray(raw)
        mutable.append(piece)
        return piece if kind == "bytearray" else memoryview(piece)

    schedule = (
        _faults.inject(implementation, seed=fault_seed, rate=0.3, kinds=["eintr", "short1", "half"])
        if fault_seed is not None
        else _nothing()
    )
    with bounded(30), schedule:
        writer = fio.BatchWriter(
            a, buffer_size=buffer_size, copy_threshold=copy_threshold, closefd=False
        )
        for name, arg in ops:
            if name == "write":
                piece = make(*arg)
                model += piece
                results.append(("write", writer.write(piece)))
            elif name == "writelines":
                pieces = [make(*spec) for spec in arg]
                for piece in pieces:
                    model += piece
                results.append(("writelines", writer.writelines(pieces)))
            elif name == "flush":
                writer.flush()
                results.append(("flush", writer.pending))
            else:
                for piece in mutable:
                    piece[:] = bytes(len(piece))  # same length: views stay valid
        writer.close()
    a.close()
    reader.join(30)
    b.close()
    return bytes(received), bytes(model), results


@pytest.mark.parametrize("implementation", TWINS)
@FUZZ
@given(
    ops=BATCH_OPS,
    seed=st.integers(0, 2**32),
    buffer_size=st.sampled_from([4096, 16384, 65536]),
    copy_threshold=st.sampled_from([0, 1024, 4096]),
)
def test_batch_writer_matches_its_model(implementation, ops, seed, buffer_size, copy_threshold):
    received, model, results = run_batch(implementation, ops, seed, buffer_size, copy_threshold)
    assert received == model
    for name, value in results:
        if name == "flush":
            assert value == 0  # a blocking target: flush leaves nothing pending


@pytest.mark.skipif(not NATIVE, reason="compares the native twin with the Python twin")
@FUZZ
@given(ops=BATCH_OPS, seed=st.integers(0, 2**32), fault_seed=st.integers(0, 2**64 - 1))
def test_batch_writer_twins_agree_under_faults(ops, seed, fault_seed):
    """EINTR and partial writes at random: both twins deliver the model's bytes and return the
    same values as a clean run."""
    if not _faults.native_available():
        if REQUIRE_FAULTS:
            pytest.fail("FASTIO_REQUIRE_FAULTS=1 but this build has no fault hook")
        pytest.skip("the native fault hook exists only in a FASTIO_FAULTS=1 build")
    clean = run_batch("python", ops, seed, 16384, 1024)
    assert clean[0] == clean[1]
    assert run_batch("c", ops, seed, 16384, 1024, fault_seed) == clean
    assert run_batch("python", ops, seed, 16384, 1024, fault_seed) == clean
