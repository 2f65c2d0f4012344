"""Python twin of ``fastio.ring``: ``RingBuffer`` and ``Reader`` (see ``fastio/ring.py``).

The ring is shared memory (never mirrored: Python's ``mmap`` cannot place two mappings side
by side) with free-running integer indices: ``_tail`` is written only by the producer, ``_head``
only by the consumer, so under the GIL one producer thread and one consumer thread can share
a ring without a lock, as with the native twin. Receives use ``os.readv`` into one or two
segments of the ring; sends ``os.writev``. Where ``os`` has neither (Windows), one segment at
a time goes through the socket's ``recv_into``/``send`` or ``os.read``/``os.write``.

The memory is one memfd (else a temporary file) mapped twice: ``peek`` views are
``memoryview`` objects of one mapping, which nothing else exports, so the export check of
``mmap.resize`` (to the same size) tells ``clear`` and ``close`` exactly whether a view is
alive; receives, sends and copies use the other mapping, so a fill in flight in the producer
thread does not count as a view (``close`` still refuses then: that mapping is exported).
EINTR retries happen inside ``os.readv`` (PEP 475), so ``eintr`` stays 0 here.
"""

import errno
import mmap
import os
import tempfile

from fastio import _stats
from fastio._errors import IncompleteReadError, LimitOverrunError
from fastio._policy import (
    check_timeout,
    deadline_after,
    error_from_errno,
    fileno_of,
    frame_header,
    resolve_timeout,
    ring_capacity,
    ring_find_range,
    ring_size,
    wait_fd,
    wait_ready,
    with_progress,
    would_block,
)

__all__ = ["IncompleteReadError", "LimitOverrunError", "Reader", "RingBuffer"]

EXTRA_FIELDS = ("fills", "received", "readv", "wraps", "frames")
_counters = _stats.Counters(*EXTRA_FIELDS)
# The two counters bumped once per parsed item live in a list (a Counters attribute costs a
# Python-level __setattr__ call); the snapshot folds them in.
_hot = [0, 0]  # calls, frames


def _snapshot(reset=False):
    values = _counters.snapshot(reset)
    values["calls"] += _hot[0]
    values["frames"] += _hot[1]
    if reset:
        _hot[0] = _hot[1] = 0
    return values


_stats.register("python", "ring", _snapshot)
_calls = _stats.syscalls("ring")  # looked up per call, so profile() sees them

_RETRY = (errno.EAGAIN, errno.EWOULDBLOCK)

#: Vectored calls (POSIX). Without them, one segment per call (see _read_into, _write_from).
_HAVE_VECTORED = hasattr(os, "readv") and hasattr(os, "writev")


def _read_into(source, fd, buffers):
    """One receive into ``buffers`` (one or two memoryviews); returns the bytes received."""
    try:
        if _HAVE_VECTORED:
            return _calls.readv(fd, buffers)
        recv_into = getattr(source, "recv_into", None)
        if recv_into is not None:
            return recv_into(buffers[0])
        data = _calls.read(fd, len(buffers[0]))
        buffers[0][: len(data)] = data
        return len(data)
    finally:
        # An error's traceback keeps this frame: without this, a caller holding the exception
        # would keep views of the ring's mmap alive and close()/clear() would refuse.
        del buffers


def _write_from(target, fd, buffers):
    """One send from ``buffers``; returns the bytes sent."""
    try:
        if _HAVE_VECTORED:
            return _calls.writev(fd, buffers)
        send = getattr(target, "send", None)
        if send is not None:
            return send(buffers[0])
        return _calls.write(fd, buffers[0])
    finally:
        del buffers  # as in _read_into: no ring view pinned by a kept traceback


def _shared_memory(cap):
    """Two mappings of the same ``cap`` bytes: one for receives, sends and copies, one that
    only ``peek`` views export, so its export count is the number of live views alone."""
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None:
        try:
            fd = memfd_create("fastio-ring", getattr(os, "MFD_CLOEXEC", 0))
        except OSError:
            pass  # no memfd here (old kernel, seccomp): a temporary file serves
        else:
            try:
                os.ftruncate(fd, cap)
                return mmap.mmap(fd, cap), mmap.mmap(fd, cap)
            finally:
                os.close(fd)  # each mmap keeps its own duplicate
    with tempfile.TemporaryFile() as file:
        file.truncate(cap)
        return mmap.mmap(file.fileno(), cap), mmap.mmap(file.fileno(), cap)


def _is_retry(exc):
    return isinstance(exc, BlockingIOError) or exc.errno in _RETRY


class RingBuffer:
    """RingBuffer(capacity, *, mirrored=None)

    Preallocated receive memory: the kernel fills it directly and the consumer parses it in
    place. See ``fastio.ring.RingBuffer`` for the full contract. This twin is never mirrored;
    ``mirrored=True`` raises ``OSError(ENOSYS)``.
    """

    __slots__ = ("__weakref__", "_cap", "_closed", "_head", "_mask", "_mm", "_peek_mm", "_tail")

    # Built in __new__ (as the native twin's __cinit__), so a subclass whose __init__ skips
    # super().__init__() still gets a working ring.
    def __new__(cls, capacity, *, mirrored=None):
        self = super().__new__(cls)
        if mirrored is not None and not isinstance(mirrored, bool):
            raise TypeError(f"mirrored must be True, False or None, not {type(mirrored).__name__}")
        cap = ring_capacity(capacity, mmap.PAGESIZE)
        if mirrored is True:
            raise OSError(
                errno.ENOSYS,
                "mirrored rings need the native twin on a platform with memfd or shm "
                "(the Python twin cannot map memory twice)",
            )
        self._mm, self._peek_mm = _shared_memory(cap)
        self._cap = cap
        self._mask = cap - 1
        self._head = 0
        self._tail = 0
        self._closed = False
        return self

    def __init__(self, capacity, *, mirrored=None):
        pass  # built in __new__; this lets a subclass call super().__init__(capacity)

    # -- internals shared with Reader --

    def _check_open(self):
        if self._closed:
            raise ValueError("I/O operation on a closed RingBuffer")

    def _copy(self, pos, n):
        """``n`` readable bytes from logical position ``pos`` as bytes (not consumed)."""
        off = (self._head + pos) & self._mask
        end = off + n
        if end <= self._cap:
            return self._mm[off:end]
        return self._mm[off:] + self._mm[: end - self._cap]

    def _take(self, skip, n):
        data = self._copy(skip, n)
        self._head += skip + n
        return data

    def _fill(self, source, fd, limit, budget, deadline, poll_first):
        self._check_open()
        if limit == 0:
            return 0
        tail = self._tail
        space = self._cap - (tail - self._head)
        if space == 0:
            raise BufferError("the ring is full: consume data before filling it")
        if 0 < limit < space:
            space = limit
        off = tail & self._mask
        counters = _counters
        segments = 2 if off + space > self._cap else 1
        with memoryview(self._mm) as whole:
            if segments == 2:
                buffers = [whole[off:], whole[: off + space - self._cap]]
            else:
                buffers = [whole[off : off + space]]
            try:
                while True:
                    if poll_first:
                        wait_ready(fd, False, budget, deadline, 0)
                    counters.syscalls += 1
                    if _HAVE_VECTORED:
                        counters.readv += segments - 1
                    try:
                        received = _read_into(source, fd, buffers)
                    except OSError as exc:
                        if not _is_retry(exc):
                            raise with_progress(exc, 0) from None
                        counters.would_block += 1
                        if budget == 0.0:
                            raise would_block(0) from None
                        wait_fd(fd, False, deadline, 0)
                        continue
                    break
            finally:
                del buffers
        self._tail = tail + received
        counters.fills += 1
        counters.received += received
        counters.bytes += received
        if off + received > self._cap:
            counters.wraps += 1
        return received

    # -- properties --

    @property
    def capacity(self):
        """Size of the ring in bytes (the requested capacity rounded up)."""
        return self._cap

    @property
    def mirrored(self):
        """Always False in the Python twin."""
        return False

    @property
    def free(self):
        """Bytes that can be written before the ring is full."""
        if self._closed:
            return 0
        return self._cap - (self._tail - self._head)

    @property
    def closed(self):
        """True after ``close()``."""
        return self._closed

    def __len__(self):
        if self._closed:
            return 0
        return self._tail - self._head

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self)}/{self._cap} bytes"
        return f"<fastio.RingBuffer plain {state}>"

    # -- producer side --

    def write(self, data):
        """Copy as much of ``data`` as fits; returns the number of bytes copied (producer)."""
        with memoryview(data) as view:
            self._check_open()
            tail = self._tail
            space = self._cap - (tail - self._head)
            n = min(view.nbytes, space)
            if n:
                source = view.cast("B") if view.ndim != 1 or view.itemsize != 1 else view
                off = tail & self._mask
                first = min(n, self._cap - off)
                self._mm[off : off + first] = source[:first]
                if first < n:
                    self._mm[: n - first] = source[first:n]
            self._tail = tail + n
        return n

    def fill(self, source, n=-1):
        """Receive from a socket or fd straight into free space with one system call.

        Returns the bytes received, 0 at EOF; ``BlockingIOError`` on a non-blocking source
        with nothing to read; ``BufferError`` when the ring is full (producer).
        """
        fd = fileno_of(source)
        limit = ring_size(n, "n")
        self._check_open()
        _hot[0] += 1
        if limit == 0:
            return 0
        budget = resolve_timeout(source, fd, None)
        return self._fill(source, fd, limit, budget, deadline_after(budget), False)

    # -- consumer side --

    def peek(self, n=-1):
        """A read-only memoryview of up to ``n`` readable bytes, without consuming them.

        The view stops at the wrap. While it is alive ``clear()`` and ``close()`` raise
        ``BufferError``.
        """
        limit = ring_size(n, "n")
        self._check_open()
        avail = self._tail - self._head
        if 0 <= limit < avail:
            avail = limit
        off = self._head & self._mask
        avail = min(avail, self._cap - off)
        return memoryview(self._peek_mm)[off : off + avail].toreadonly()

    def consume(self, n):
        """Discard ``n`` readable bytes (0 <= n <= len(ring))."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        self._check_open()
        avail = self._tail - self._head
        if n < 0 or n > avail:
            raise ValueError(f"cannot consume {n} bytes: 0 to {avail} are readable")
        self._head += n

    def read(self, n=-1):
        """Up to ``n`` readable bytes (all when ``n`` is negative or None), consumed."""
        limit = ring_size(n, "n")
        self._check_open()
        avail = self._tail - self._head
        if 0 <= limit < avail:
            avail = limit
        return self._take(0, avail)

    def readinto(self, buffer):
        """Copy readable bytes into a writable buffer; returns how many were copied."""
        with memoryview(buffer) as view:
            if view.readonly:
                raise TypeError("readinto() argument must be a writable bytes-like object")
            self._check_open()
            target = view.cast("B") if view.ndim != 1 or view.format != "B" else view
            n = min(target.nbytes, self._tail - self._head)
            off = self._head & self._mask
            first = min(n, self._cap - off)
            target[:first] = self._mm[off : off + first]
            if first < n:
                target[first:n] = self._mm[: n - first]
            self._head += n
        return n

    def _find(self, sub, start, stop):
        """Index of ``sub`` (non-empty bytes) in logical [start, stop), or -1."""
        m = len(sub)
        if stop - start < m:
            return -1
        cap = self._cap
        off = (self._head + start) & self._mask
        span = stop - start
        if off + span <= cap:
            found = self._mm.find(sub, off, off + span)
            return -1 if found < 0 else start + found - off
        wrap = start + cap - off
        found = self._mm.find(sub, off, cap)
        if found >= 0:
            return start + found - off
        if m > 1:
            lo = max(start, wrap - (m - 1))
            hi = min(stop, wrap + (m - 1))
            found = self._copy(lo, hi - lo).find(sub)
            if found >= 0:
                return lo + found
        found = self._mm.find(sub, 0, stop - wrap)
        return -1 if found < 0 else wrap + found

    def find(self, sub, start=0, end=None):
        """Index of ``sub`` in the readable bytes (across the wrap), or -1; as ``bytes.find``."""
        with memoryview(sub) as view:
            needle = view.tobytes()
        start, stop = ring_find_range(start, end, len(self))
        self._check_open()
        if start < 0:
            return -1
        if not needle:
            return start
        return self._find(needle, start, stop)

    def drain(self, target, n=-1):
        """Send up to ``n`` readable bytes (all by default) straight from the ring to a socket
        or fd (``writev`` across the wrap), consuming what was sent; returns the count.

        A non-blocking target that fills up raises ``BlockingIOError`` with
        ``characters_written`` (and ``transferred``) set to what was sent.
        """
        fd = fileno_of(target)
        limit = ring_size(n, "n")
        self._check_open()
        counters = _counters
        _hot[0] += 1
        want = self._tail - self._head
        if 0 <= limit < want:
            want = limit
        if want == 0:
            return 0
        budget = resolve_timeout(target, fd, None)
        deadline = deadline_after(budget)
        total = 0
        cap = self._cap
        with memoryview(self._mm) as whole:
            while total < want:
                off = self._head & self._mask
                chunk = want - total
                if off + chunk > cap:
                    buffers = [whole[off:], whole[: off + chunk - cap]]
                else:
                    buffers = [whole[off : off + chunk]]
                counters.syscalls += 1
                try:
                    sent = _write_from(target, fd, buffers)
                except OSError as exc:
                    if not _is_retry(exc):
                        raise error_from_errno(exc.errno, total) from None
                    counters.would_block += 1
                    if budget == 0.0:
                        raise would_block(total) from None
                    wait_fd(fd, True, deadline, total)
                    continue
                except BaseException as exc:
                    raise with_progress(exc, total) from None
                finally:
                    del buffers
                self._head += sent
                total += sent
                counters.bytes += sent
                if off + sent > cap:
                    counters.wraps += 1
                if sent < chunk:
                    counters.partial += 1
        return total

    def _views_alive(self):
        """True while a peek view is alive: only peek views export ``_peek_mm`` (a receive in
        flight in the producer thread exports ``_mm``), and a resize checks exports first."""
        try:
            self._peek_mm.resize(self._cap)
        except BufferError:
            return True
        except (OSError, SystemError, ValueError, TypeError):
            pass  # platforms that cannot resize (no mremap) check exports first all the same
        return False

    def clear(self):
        """Discard every readable byte (consumer); ``BufferError`` while a view is alive."""
        self._check_open()
        if self._views_alive():
            raise BufferError("cannot clear: peek view(s) still alive")
        self._head = self._tail

    def close(self):
        """Free the memory; ``BufferError`` while a view is alive. Idempotent."""
        if self._closed:
            return
        if self._views_alive():
            raise BufferError("cannot close: peek view(s) still alive")
        try:
            self._mm.close()
        except BufferError:
            raise BufferError(
                "cannot close: a fill or drain is in progress in another thread"
            ) from None
        self._peek_mm.close()
        self._closed = True

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()


_UNINITIALIZED = "I/O operation on an uninitialized Reader (Reader.__init__ was not called)"


class _CallState:
    """One deadline per public call: the budget is resolved at the call's first receive."""

    __slots__ = ("budget", "deadline")

    def __init__(self):
        self.budget = None
        self.deadline = None


class Reader:
    """Reader(source, *, capacity=65536, timeout=None, header="!I", mirrored=None)

    A buffered reader over a socket or fd with ``asyncio.StreamReader``'s names. See
    ``fastio.ring.Reader`` for the full contract.
    """

    __slots__ = (
        "_backlog",
        "_default_header",
        "_eof",
        "_header",
        "_hsigned",
        "_hsize",
        "_poll_first",
        "_source",
        "_struct",
        "_timeout",
        "ring",
    )

    def __new__(cls, *args, **kwargs):
        # Defaults, so a Reader whose __init__ did not run raises ValueError (as the native
        # twin does) instead of AttributeError.
        self = super().__new__(cls)
        self.ring = None
        self._source = None
        self._timeout = None
        self._poll_first = False
        self._eof = False
        self._backlog = None
        self._default_header = "!I"
        self._header = None
        self._struct = None
        self._hsize = 0
        self._hsigned = False
        return self

    def __init__(self, source, *, capacity=65536, timeout=None, header="!I", mirrored=None):
        fileno_of(source)
        check_timeout(timeout)
        self._set_header(header)
        self._default_header = header
        self.ring = RingBuffer(capacity, mirrored=mirrored)
        self._source = source
        self._timeout = timeout
        self._poll_first = timeout is not None
        self._eof = False
        self._backlog = None

    def _open_ring(self):
        ring = self.ring
        if ring is None:
            raise ValueError(_UNINITIALIZED)
        ring._check_open()
        return ring

    def _set_header(self, header):
        compiled, size, _big, signed = frame_header(header)
        self._header = header
        self._struct = compiled
        self._hsize = size
        self._hsigned = signed

    def _more(self, state):
        """One fill for the current call (one deadline per call); 0 at EOF.

        Bytes an interrupted ``read()`` kept in the backlog come first, with no system call.
        """
        backlog = self._backlog
        if backlog is not None:
            moved = self.ring.write(backlog)
            if moved:
                self._backlog = backlog[moved:] if moved < len(backlog) else None
                return moved
        if self._eof:
            return 0
        fd = fileno_of(self._source)
        if state.budget is None:
            state.budget = resolve_timeout(self._source, fd, self._timeout)
            state.deadline = deadline_after(state.budget)
        received = self.ring._fill(
            self._source, fd, -1, state.budget, state.deadline, self._poll_first
        )
        if received == 0:
            self._eof = True
        return received

    @property
    def source(self):
        """The socket or fd this reader reads from."""
        return self._source

    @property
    def buffered(self):
        """Bytes received and not yet returned."""
        if self.ring is None:
            return 0
        backlog = self._backlog
        return len(self.ring) + (0 if backlog is None else len(backlog))

    def at_eof(self):
        """True when the source reached EOF and every buffered byte was returned."""
        return self._eof and self.buffered == 0

    def _keep(self, parts):
        """After ``read()`` was interrupted: put the bytes it took out of the full ring back in
        front of what is buffered (the ring holds the first ``capacity`` bytes, the backlog the
        rest), so the next call returns them first. Returns them all, as bytes."""
        ring = self.ring
        data = bytes(parts) + ring._take(0, ring._tail - ring._head)
        if self._backlog is not None:
            data += self._backlog
        moved = ring.write(data)
        self._backlog = memoryview(data)[moved:] if moved < len(data) else None
        return data

    def read(self, n=-1):
        """Up to ``n`` bytes (at most one receive when none is buffered); b"" at EOF.

        With ``n`` negative or None, read until EOF and return everything.
        """
        limit = ring_size(n, "n")
        ring = self._open_ring()
        _hot[0] += 1
        if limit == 0:
            return b""
        state = _CallState()
        if limit > 0:
            if ring._tail == ring._head:
                self._more(state)
            return ring._take(0, min(limit, ring._tail - ring._head))
        parts = bytearray()
        try:
            while True:
                if ring._tail - ring._head == ring._cap:
                    parts += ring._take(0, ring._cap)
                if self._more(state) == 0:
                    break
        except BaseException as exc:
            # Nothing is lost: every byte gathered stays buffered for the next call; the
            # exception says how many (``.transferred``) and shows them (``.partial``, a copy).
            if not ring._closed and (parts or ring._tail != ring._head):
                exc.partial = self._keep(parts)
                with_progress(exc, len(exc.partial))
            raise
        rest = ring._take(0, ring._tail - ring._head)
        if not parts:
            return rest
        parts += rest
        return bytes(parts)

    def readexactly(self, n):
        """Exactly ``n`` bytes; ``IncompleteReadError`` (``.partial``, ``.expected``) at EOF.

        ``n`` must fit the ring (``LimitOverrunError`` otherwise, nothing consumed);
        ``readexactly(0)`` returns b"" with no system call.
        """
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        ring = self._open_ring()
        _hot[0] += 1
        if n == 0:
            return b""
        if n > ring._cap:
            raise LimitOverrunError(
                f"readexactly({n}) does not fit the reader's capacity {ring._cap}", 0
            )
        state = _CallState()
        while ring._tail - ring._head < n:
            if self._more(state) == 0:
                raise IncompleteReadError(ring._take(0, ring._tail - ring._head), n)
        return ring._take(0, n)

    def _readuntil(self, separator, partial_at_eof):
        with memoryview(separator) as view:
            needle = view.tobytes()
        m = len(needle)
        if m == 0:
            raise ValueError("Separator should be at least one-byte string")
        ring = self._open_ring()
        if m > ring._cap:
            raise ValueError(f"separator of {m} bytes is longer than the capacity")
        state = _CallState()
        searched = 0
        while True:
            avail = ring._tail - ring._head
            found = ring._find(needle, searched, avail)
            if found >= 0:
                return ring._take(0, found + m)
            if avail >= m:
                searched = avail - m + 1
            if avail == ring._cap:
                raise LimitOverrunError("Separator is not found, and chunk exceed the limit", avail)
            if self._more(state) == 0:
                partial = ring._take(0, ring._tail - ring._head)
                if partial_at_eof:
                    return partial
                raise IncompleteReadError(partial, None)

    def readuntil(self, separator=b"\n"):
        """Bytes up to and including ``separator``.

        ``LimitOverrunError`` when the ring fills without it (the data stays);
        ``IncompleteReadError`` when EOF comes first (the data is in ``.partial``).
        """
        _hot[0] += 1
        return self._readuntil(separator, False)

    def readline(self):
        """One line including b"\\n"; at EOF the last partial line, then b""."""
        _hot[0] += 1
        # Fast path: a whole line is buffered before the wrap.
        ring = self.ring
        if ring is not None and ring._tail != ring._head and not ring._closed:
            head = ring._head
            avail = ring._tail - head
            off = head & ring._mask
            end = off + avail
            if end <= ring._cap:
                found = ring._mm.find(b"\n", off, end)
                if found >= 0:
                    line = ring._mm[off : found + 1]
                    ring._head = head + found + 1 - off
                    return line
        return self._readuntil(b"\n", True)

    def peek(self, n):
        """The next ``n`` bytes as bytes without consuming them (fewer only at EOF)."""
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ring = self._open_ring()
        _hot[0] += 1
        if n > ring._cap:
            raise LimitOverrunError(f"peek({n}) does not fit the reader's capacity {ring._cap}", 0)
        state = _CallState()
        while ring._tail - ring._head < n:
            if self._more(state) == 0:
                break
        return ring._copy(0, min(n, ring._tail - ring._head))

    def _frame(self):
        ring = self._open_ring()
        hs = self._hsize
        cap = ring._cap
        length = -1
        state = None
        while True:
            avail = ring._tail - ring._head
            if avail >= hs:
                if length < 0:
                    off = ring._head & ring._mask
                    if off + hs <= cap:
                        (value,) = self._struct.unpack_from(ring._mm, off)
                    else:
                        (value,) = self._struct.unpack(ring._copy(0, hs))
                    if value < 0:
                        raise ValueError("negative frame length in the header")
                    if value > cap - hs:
                        raise LimitOverrunError(
                            f"frame of {value} bytes plus its {hs}-byte header does not fit "
                            f"the reader's capacity {cap}",
                            0,
                        )
                    length = value
                if avail >= hs + length:
                    _hot[1] += 1
                    return ring._take(hs, length)
            if state is None:
                state = _CallState()
            if self._more(state) == 0:
                raise IncompleteReadError(
                    ring._take(0, ring._tail - ring._head), hs + length if length >= 0 else hs
                )

    def read_frame(self, header=None):
        """One length-prefixed frame's payload; ``header`` is the struct format of the length
        (None: the reader's, "!I" by default).

        ``IncompleteReadError`` at EOF (``.partial`` holds the raw bytes of the cut frame;
        b"" at a clean end); ``LimitOverrunError`` when header plus payload exceed capacity.
        """
        hot = _hot
        hot[0] += 1
        if header is None:
            header = self._default_header
        if header is not self._header and header != self._header:
            self._set_header(header)
        # Fast path: the whole frame is buffered and does not cross the wrap.
        ring = self.ring
        hs = self._hsize
        if ring is not None and ring._tail - ring._head >= hs and not ring._closed:
            head = ring._head
            off = head & ring._mask
            start = off + hs
            if start <= ring._cap:
                (n,) = self._struct.unpack_from(ring._mm, off)
                if 0 <= n <= ring._tail - head - hs and start + n <= ring._cap:
                    frame = ring._mm[start : start + n]
                    ring._head = head + hs + n
                    hot[1] += 1
                    return frame
        return self._frame()

    def __iter__(self):
        return self

    def __next__(self):
        _hot[0] += 1
        if self._header is not self._default_header:
            self._set_header(self._default_header)
        try:
            return self._frame()
        except IncompleteReadError as exc:
            if not exc.partial:
                raise StopIteration from None
            raise

    def __repr__(self):
        if self.ring is None:
            return "<fastio.Reader uninitialized>"
        return f"<fastio.Reader {self._source!r} buffered={self.buffered} eof={self._eof}>"
