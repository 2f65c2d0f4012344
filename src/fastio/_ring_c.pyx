# cython: binding=False
"""Native twin of ``fastio.ring``: ``RingBuffer`` and ``Reader`` (see ``fastio/ring.py``).

The ring is preallocated memory (mirrored where the platform allows, see
``csrc/fastio_mirror.h``) with free-running ``size_t`` indices: ``_tail`` is written only by
the producer (``write``, ``fill``), ``_head`` only by the consumer (everything else), each with
release ordering and read by the other side with acquire ordering, so one producer thread and
one consumer thread can share a ring without a lock. Counters are a C struct.
"""

from cpython.buffer cimport (
    PyBUF_FORMAT,
    PyBUF_ND,
    PyBUF_SIMPLE,
    PyBUF_STRIDES,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.errno cimport EAGAIN, EINTR, ENOSYS, errno
from libc.stdlib cimport free, malloc
from libc.string cimport memset

from fastio._compat cimport (
    FIO_PRIM_RING,
    fio_atomic_size_t,
    fio_load_acquire,
    fio_load_relaxed,
    fio_mirror_map,
    fio_mirror_unmap,
    fio_page_size,
    fio_profile_attach,
    fio_read,
    fio_readv,
    fio_ring_copy_in,
    fio_ring_copy_out,
    fio_ring_find,
    fio_ring_frame_length,
    fio_ssize_t,
    fio_store_release,
    fio_writev,
    iovec,
    run_signal_handlers,
)
from fastio._policy cimport (
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
    would_block,
    with_progress,
)

from fastio import _stats
from fastio._errors import IncompleteReadError, LimitOverrunError

__all__ = ["IncompleteReadError", "LimitOverrunError", "Reader", "RingBuffer"]

fio_profile_attach(FIO_PRIM_RING)

cdef extern from "Python.h":
    object PyMemoryView_FromObject(object obj)

cdef extern from "<errno.h>":
    const int EWOULDBLOCK

cdef char *_FORMAT_B = "B"


# ---- counters ----

cdef struct RingCounters:
    unsigned long long calls
    unsigned long long bytes
    unsigned long long syscalls
    unsigned long long would_block
    unsigned long long eintr
    unsigned long long partial
    unsigned long long fallbacks
    unsigned long long fills
    unsigned long long received
    unsigned long long readv
    unsigned long long wraps
    unsigned long long frames

cdef RingCounters C

EXTRA_FIELDS = ("fills", "received", "readv", "wraps", "frames")


def _snapshot(bint reset=False):
    """Counters of the native ring, by name; ``reset`` zeroes them after the snapshot."""
    values = dict(C)
    if reset:
        memset(&C, 0, sizeof(C))
    return values


_stats.register("c", "ring", _snapshot)


# ---- the ring ----

cdef class RingBuffer:
    """RingBuffer(capacity, *, mirrored=None)

    Preallocated receive memory: the kernel fills it directly and the consumer parses it in
    place. See ``fastio.ring.RingBuffer`` for the full contract.
    """

    cdef char *_base
    cdef size_t _cap
    cdef size_t _mask
    cdef fio_atomic_size_t _head
    cdef fio_atomic_size_t _tail
    cdef bint _mirrored
    cdef bint _closed
    cdef int _busy
    cdef Py_ssize_t _exports
    cdef size_t _view_off
    cdef size_t _view_len
    cdef bint _view_pending
    cdef object __weakref__

    def __cinit__(self, capacity, *, mirrored=None):
        cdef size_t cap
        cdef int code
        if mirrored is not None and not isinstance(mirrored, bool):
            raise TypeError(f"mirrored must be True, False or None, not {type(mirrored).__name__}")
        cap = <size_t>ring_capacity(capacity, fio_page_size())
        self._base = NULL
        if mirrored is not False:
            self._base = <char *>fio_mirror_map(cap)
            if self._base == NULL:
                code = errno or ENOSYS
                if mirrored is True:
                    raise error_from_errno(code, 0)
            else:
                self._mirrored = True
        if self._base == NULL:
            self._base = <char *>malloc(cap)
            if self._base == NULL:
                raise MemoryError(f"cannot allocate a ring of {cap} bytes")
        self._cap = cap
        self._mask = cap - 1
        fio_store_release(&self._head, 0)
        fio_store_release(&self._tail, 0)

    def __init__(self, capacity, *, mirrored=None):
        pass  # built in __cinit__; this lets a subclass call super().__init__(capacity)

    def __dealloc__(self):
        self._release_memory()

    cdef void _release_memory(self) noexcept:
        if self._base != NULL:
            if self._mirrored:
                fio_mirror_unmap(self._base, self._cap)
            else:
                free(self._base)
            self._base = NULL

    cdef inline int _check_open(self) except -1:
        if self._closed:
            raise ValueError("I/O operation on a closed RingBuffer")
        return 0

    cdef inline size_t _readable(self) noexcept nogil:
        return fio_load_acquire(&self._tail) - fio_load_acquire(&self._head)

    cdef inline void _advance(self, size_t n) noexcept nogil:
        fio_store_release(&self._head, fio_load_relaxed(&self._head) + n)

    cdef bytes _take(self, size_t skip, size_t n):
        """The ``n`` readable bytes after the first ``skip`` as bytes; consumes skip + n."""
        cdef size_t head = fio_load_relaxed(&self._head)
        cdef size_t off = (head + skip) & self._mask
        cdef bytes out
        if self._mirrored or off + n <= self._cap:
            # Contiguous (always, on a mirrored ring): one allocation, one copy from the ring.
            out = PyBytes_FromStringAndSize(self._base + off, <Py_ssize_t>n)
        else:
            out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
            fio_ring_copy_out(self._base, self._cap, False, head, skip, PyBytes_AS_STRING(out), n)
        self._advance(skip + n)
        return out

    cdef bytes _copy(self, size_t n):
        cdef bytes out = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
        fio_ring_copy_out(self._base, self._cap, self._mirrored, fio_load_relaxed(&self._head),
                          0, PyBytes_AS_STRING(out), n)
        return out

    cdef Py_ssize_t _fill(self, int fd, long long limit, double budget, double deadline,
                          bint poll_first) except -1:
        """One receive into free space (two segments with readv on a plain ring)."""
        cdef iovec iov[2]
        cdef int niov = 1
        cdef fio_ssize_t r = 0
        cdef int code
        cdef size_t tail, space, off
        self._check_open()
        if limit == 0:
            return 0
        tail = fio_load_relaxed(&self._tail)
        space = self._cap - (tail - fio_load_acquire(&self._head))
        if space == 0:
            raise BufferError("the ring is full: consume data before filling it")
        if limit > 0 and <size_t>limit < space:
            space = <size_t>limit
        off = tail & self._mask
        iov[0].iov_base = self._base + off
        iov[0].iov_len = space
        if not self._mirrored and off + space > self._cap:
            iov[0].iov_len = self._cap - off
            iov[1].iov_base = self._base
            iov[1].iov_len = space - iov[0].iov_len
            niov = 2
        self._busy += 1
        try:
            while True:
                if poll_first:
                    wait_ready(fd, False, budget, deadline, 0)
                if budget < 0.0:
                    with nogil:
                        if niov == 2:
                            r = fio_readv(fd, iov, 2)
                        else:
                            r = fio_read(fd, iov[0].iov_base, iov[0].iov_len)
                elif niov == 2:
                    r = fio_readv(fd, iov, 2)
                else:
                    r = fio_read(fd, iov[0].iov_base, iov[0].iov_len)
                C.syscalls += 1
                if niov == 2:
                    C.readv += 1
                if r >= 0:
                    break
                code = errno
                if code == EINTR:
                    C.eintr += 1
                    run_signal_handlers(0)
                elif code == EAGAIN or code == EWOULDBLOCK:
                    C.would_block += 1
                    if budget == 0.0:
                        raise would_block(0)
                    wait_fd(fd, False, deadline, 0)
                else:
                    raise error_from_errno(code, 0)
        finally:
            self._busy -= 1  # close() refuses while a fill or drain runs
        fio_store_release(&self._tail, tail + <size_t>r)
        C.fills += 1
        C.received += <unsigned long long>r
        C.bytes += <unsigned long long>r
        if off + <size_t>r > self._cap:
            C.wraps += 1
        return r

    # -- properties --

    @property
    def capacity(self):
        """Size of the ring in bytes (the requested capacity rounded up)."""
        return self._cap

    @property
    def mirrored(self):
        """True when the memory is mapped twice, so every region is contiguous."""
        return self._mirrored

    @property
    def free(self):
        """Bytes that can be written before the ring is full."""
        if self._closed:
            return 0
        return self._cap - self._readable()

    @property
    def closed(self):
        """True after ``close()``."""
        return self._closed

    def __len__(self):
        if self._closed:
            return 0
        return self._readable()

    def __repr__(self):
        state = "closed" if self._closed else f"{len(self)}/{self._cap} bytes"
        kind = "mirrored" if self._mirrored else "plain"
        return f"<fastio.RingBuffer {kind} {state}>"

    # -- producer side --

    def write(self, data):
        """Copy as much of ``data`` as fits; returns the number of bytes copied (producer)."""
        cdef Py_buffer view
        cdef size_t tail, space, n
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            self._check_open()
            tail = fio_load_relaxed(&self._tail)
            space = self._cap - (tail - fio_load_acquire(&self._head))
            n = <size_t>view.len if <size_t>view.len < space else space
            fio_ring_copy_in(self._base, self._cap, self._mirrored, tail, <const char *>view.buf, n)
            fio_store_release(&self._tail, tail + n)
        finally:
            PyBuffer_Release(&view)
        return n

    def fill(self, source, n=-1):
        """Receive from a socket or fd straight into free space with one system call.

        Returns the bytes received, 0 at EOF; ``BlockingIOError`` on a non-blocking source
        with nothing to read; ``BufferError`` when the ring is full (producer).
        """
        cdef int fd = fileno_of(source)
        cdef long long limit = ring_size(n, "n")
        cdef double budget
        self._check_open()
        C.calls += 1
        if limit == 0:
            return 0
        budget = resolve_timeout(source, fd, None)
        return self._fill(fd, limit, budget, deadline_after(budget), False)

    # -- consumer side --

    def peek(self, n=-1):
        """A read-only memoryview of up to ``n`` readable bytes, without consuming them.

        On a plain ring the view stops at the wrap; on a mirrored ring it covers everything
        asked for. While the view is alive ``clear()`` and ``close()`` raise ``BufferError``.
        """
        cdef long long limit = ring_size(n, "n")
        cdef size_t avail, off
        self._check_open()
        avail = self._readable()
        if 0 <= limit < <long long>avail:
            avail = <size_t>limit
        off = fio_load_relaxed(&self._head) & self._mask
        if not self._mirrored and off + avail > self._cap:
            avail = self._cap - off
        self._view_off = off
        self._view_len = avail
        self._view_pending = True
        try:
            return PyMemoryView_FromObject(self)
        finally:
            self._view_pending = False

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        if not self._view_pending:
            raise TypeError("a RingBuffer is not a bytes-like object; use peek() for a view")
        self._view_pending = False
        if flags & PyBUF_WRITABLE:
            raise BufferError("RingBuffer views are read-only")
        buffer.buf = <void *>(self._base + self._view_off)
        buffer.obj = self
        buffer.len = <Py_ssize_t>self._view_len
        buffer.readonly = 1
        buffer.itemsize = 1
        buffer.format = _FORMAT_B if (flags & PyBUF_FORMAT) == PyBUF_FORMAT else NULL
        buffer.ndim = 1
        buffer.shape = &buffer.len if (flags & PyBUF_ND) == PyBUF_ND else NULL
        buffer.strides = &buffer.itemsize if (flags & PyBUF_STRIDES) == PyBUF_STRIDES else NULL
        buffer.suboffsets = NULL
        buffer.internal = NULL
        self._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self._exports -= 1

    def consume(self, n):
        """Discard ``n`` readable bytes (0 <= n <= len(ring))."""
        cdef size_t avail
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        self._check_open()
        avail = self._readable()
        if n < 0 or n > avail:
            raise ValueError(f"cannot consume {n} bytes: 0 to {avail} are readable")
        self._advance(<size_t>n)

    def read(self, n=-1):
        """Up to ``n`` readable bytes (all when ``n`` is negative or None), consumed."""
        cdef long long limit = ring_size(n, "n")
        cdef size_t avail
        self._check_open()
        avail = self._readable()
        if 0 <= limit < <long long>avail:
            avail = <size_t>limit
        return self._take(0, avail)

    def readinto(self, buffer):
        """Copy readable bytes into a writable buffer; returns how many were copied."""
        cdef Py_buffer view
        cdef size_t n
        try:
            PyObject_GetBuffer(buffer, &view, PyBUF_WRITABLE)
        except BufferError:
            raise TypeError("readinto() argument must be a writable bytes-like object") from None
        try:
            self._check_open()
            n = self._readable()
            if <size_t>view.len < n:
                n = <size_t>view.len
            fio_ring_copy_out(self._base, self._cap, self._mirrored,
                              fio_load_relaxed(&self._head), 0, <char *>view.buf, n)
            self._advance(n)
        finally:
            PyBuffer_Release(&view)
        return n

    def find(self, sub, start=0, end=None):
        """Index of ``sub`` in the readable bytes (across the wrap), or -1; as ``bytes.find``."""
        cdef Py_buffer view
        cdef Py_ssize_t lo, hi
        cdef long long found
        PyObject_GetBuffer(sub, &view, PyBUF_SIMPLE)
        try:
            lo, hi = ring_find_range(start, end, 0 if self._closed else self._readable())
            self._check_open()
            if lo < 0:
                return -1
            if view.len == 0:
                return lo
            found = fio_ring_find(self._base, self._cap, self._mirrored,
                                  fio_load_relaxed(&self._head), <size_t>lo, <size_t>hi,
                                  <const char *>view.buf, <size_t>view.len)
            if found == -2:
                raise MemoryError()
            return found
        finally:
            PyBuffer_Release(&view)

    def drain(self, target, n=-1):
        """Send up to ``n`` readable bytes (all by default) straight from the ring to a socket
        or fd (``writev`` across the wrap), consuming what was sent; returns the count.

        A non-blocking target that fills up raises ``BlockingIOError`` with
        ``characters_written`` (and ``transferred``) set to what was sent.
        """
        cdef int fd = fileno_of(target)
        cdef long long limit = ring_size(n, "n")
        cdef double budget, deadline
        cdef size_t want, total = 0, head, off, chunk
        cdef iovec iov[2]
        cdef int niov
        cdef fio_ssize_t r = 0
        cdef int code
        self._check_open()
        C.calls += 1
        want = self._readable()
        if 0 <= limit < <long long>want:
            want = <size_t>limit
        if want == 0:
            return 0
        budget = resolve_timeout(target, fd, None)
        deadline = deadline_after(budget)
        self._busy += 1
        try:
            while total < want:
                head = fio_load_relaxed(&self._head)
                off = head & self._mask
                chunk = want - total
                niov = 1
                iov[0].iov_base = self._base + off
                iov[0].iov_len = chunk
                if not self._mirrored and off + chunk > self._cap:
                    iov[0].iov_len = self._cap - off
                    iov[1].iov_base = self._base
                    iov[1].iov_len = chunk - iov[0].iov_len
                    niov = 2
                if budget < 0.0:
                    with nogil:
                        r = fio_writev(fd, iov, niov)
                else:
                    r = fio_writev(fd, iov, niov)
                C.syscalls += 1
                if r >= 0:
                    self._advance(<size_t>r)
                    total += <size_t>r
                    C.bytes += <unsigned long long>r
                    if off + <size_t>r > self._cap:
                        C.wraps += 1
                    if <size_t>r < chunk:
                        C.partial += 1
                    continue
                code = errno
                if code == EINTR:
                    C.eintr += 1
                    run_signal_handlers(total)
                elif code == EAGAIN or code == EWOULDBLOCK:
                    C.would_block += 1
                    if budget == 0.0:
                        raise would_block(total)
                    wait_fd(fd, True, deadline, total)
                else:
                    raise error_from_errno(code, total)
        finally:
            self._busy -= 1
        return total

    def clear(self):
        """Discard every readable byte (consumer); ``BufferError`` while a view is alive."""
        self._check_open()
        if self._exports > 0:
            raise BufferError(f"cannot clear: {self._exports} peek view(s) still alive")
        fio_store_release(&self._head, fio_load_acquire(&self._tail))

    def close(self):
        """Free the memory; ``BufferError`` while a view is alive. Idempotent."""
        if self._closed:
            return
        if self._exports > 0:
            raise BufferError(f"cannot close: {self._exports} peek view(s) still alive")
        if self._busy > 0:
            raise BufferError("cannot close: a fill or drain is in progress in another thread")
        self._closed = True
        self._release_memory()

    def __enter__(self):
        self._check_open()
        return self

    def __exit__(self, *exc_info):
        self.close()


# ---- the reader ----

cdef str _UNINITIALIZED = (
    "I/O operation on an uninitialized Reader (Reader.__init__ was not called)"
)


cdef struct CallState:
    double budget
    double deadline
    bint started


cdef class Reader:
    """Reader(source, *, capacity=65536, timeout=None, header="!I", mirrored=None)

    A buffered reader over a socket or fd with ``asyncio.StreamReader``'s names. See
    ``fastio.ring.Reader`` for the full contract.
    """

    cdef readonly RingBuffer ring
    cdef object _source
    cdef object _timeout
    cdef bint _poll_first
    cdef bint _eof
    cdef object _default_header
    cdef object _header
    cdef object _backlog  # memoryview of bytes an interrupted read() kept, or None
    cdef size_t _hsize
    cdef int _hbig
    cdef int _hsigned

    def __cinit__(self, *args, **kwargs):
        # Until __init__ runs, ring is None and every call raises ValueError (_open_ring).
        self._default_header = "!I"

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

    cdef inline RingBuffer _open_ring(self):
        """The ring, open; ValueError when closed or when __init__ did not run (ring None)."""
        cdef RingBuffer ring = self.ring
        if ring is None:
            raise ValueError(_UNINITIALIZED)
        ring._check_open()
        return ring

    cdef int _set_header(self, object header) except -1:
        _, size, big, signed = frame_header(header)
        self._header = header
        self._hsize = size
        self._hbig = big
        self._hsigned = signed
        return 0

    cdef Py_ssize_t _more(self, CallState *st) except -1:
        """One fill for the current call (one deadline per call); 0 at EOF.

        Bytes an interrupted ``read()`` kept in the backlog come first, with no system call.
        """
        cdef Py_ssize_t r
        cdef int fd
        if self._backlog is not None:
            r = self.ring.write(self._backlog)
            if r:
                if r < len(self._backlog):
                    self._backlog = self._backlog[r:]
                else:
                    self._backlog = None
                return r
        if self._eof:
            return 0
        fd = fileno_of(self._source)
        if not st.started:
            st.budget = resolve_timeout(self._source, fd, self._timeout)
            st.deadline = deadline_after(st.budget)
            st.started = True
        r = self.ring._fill(fd, -1, st.budget, st.deadline, self._poll_first)
        if r == 0:
            self._eof = True
        return r

    @property
    def source(self):
        """The socket or fd this reader reads from."""
        return self._source

    @property
    def buffered(self):
        """Bytes received and not yet returned."""
        if self.ring is None:
            return 0
        return len(self.ring) + (0 if self._backlog is None else len(self._backlog))

    def at_eof(self):
        """True when the source reached EOF and every buffered byte was returned."""
        return self._eof and self.buffered == 0

    cdef bytes _keep(self, bytearray parts):
        """After ``read()`` was interrupted: put the bytes it took out of the full ring back in
        front of what is buffered (the ring holds the first ``capacity`` bytes, the backlog the
        rest), so the next call returns them first. Returns them all, as bytes."""
        cdef RingBuffer ring = self.ring
        cdef bytes data = bytes(parts) + ring._take(0, ring._readable())
        cdef Py_ssize_t moved
        if self._backlog is not None:
            data += self._backlog
        moved = ring.write(data)
        self._backlog = memoryview(data)[moved:] if moved < len(data) else None
        return data

    def read(self, n=-1):
        """Up to ``n`` bytes (at most one receive when none is buffered); b"" at EOF.

        With ``n`` negative or None, read until EOF and return everything.
        """
        cdef long long limit = ring_size(n, "n")
        cdef RingBuffer ring = self._open_ring()
        cdef CallState st
        cdef size_t avail
        st.started = False
        C.calls += 1
        if limit == 0:
            return b""
        if limit > 0:
            avail = ring._readable()
            if avail == 0:
                self._more(&st)
                avail = ring._readable()
            if <long long>avail > limit:
                avail = <size_t>limit
            return ring._take(0, avail)
        parts = bytearray()
        try:
            while True:
                if ring._readable() == ring._cap:
                    parts += ring._take(0, ring._cap)
                if self._more(&st) == 0:
                    break
        except BaseException as exc:
            # Nothing is lost: every byte gathered stays buffered for the next call; the
            # exception says how many (``.transferred``) and shows them (``.partial``, a copy).
            if not ring._closed and (parts or ring._readable()):
                exc.partial = self._keep(parts)
                with_progress(exc, len(exc.partial))
            raise
        if not parts:
            return ring._take(0, ring._readable())
        parts += ring._take(0, ring._readable())
        return bytes(parts)

    def readexactly(self, n):
        """Exactly ``n`` bytes; ``IncompleteReadError`` (``.partial``, ``.expected``) at EOF.

        ``n`` must fit the ring (``LimitOverrunError`` otherwise, nothing consumed);
        ``readexactly(0)`` returns b"" with no system call.
        """
        cdef RingBuffer ring
        cdef CallState st
        cdef size_t want
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError("readexactly size can not be less than zero")
        ring = self._open_ring()
        C.calls += 1
        if n == 0:
            return b""
        if n > ring._cap:
            raise LimitOverrunError(
                f"readexactly({n}) does not fit the reader's capacity {ring._cap}", 0
            )
        want = <size_t>n
        st.started = False
        while ring._readable() < want:
            if self._more(&st) == 0:
                raise IncompleteReadError(ring._take(0, ring._readable()), n)
        return ring._take(0, want)

    cdef object _readuntil(self, object separator, bint partial_at_eof):
        cdef RingBuffer ring
        cdef Py_buffer view
        cdef CallState st
        cdef size_t m, avail, searched = 0
        cdef long long found
        PyObject_GetBuffer(separator, &view, PyBUF_SIMPLE)
        try:
            m = <size_t>view.len
            if m == 0:
                raise ValueError("Separator should be at least one-byte string")
            ring = self._open_ring()
            if m > ring._cap:
                raise ValueError(f"separator of {m} bytes is longer than the capacity")
            st.started = False
            while True:
                avail = ring._readable()
                found = fio_ring_find(ring._base, ring._cap, ring._mirrored,
                                      fio_load_relaxed(&ring._head), searched, avail,
                                      <const char *>view.buf, m)
                if found >= 0:
                    return ring._take(0, <size_t>found + m)
                if found == -2:
                    raise MemoryError()
                if avail >= m:
                    searched = avail - m + 1
                if avail == ring._cap:
                    raise LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit", avail
                    )
                if self._more(&st) == 0:
                    partial = ring._take(0, ring._readable())
                    if partial_at_eof:
                        return partial
                    raise IncompleteReadError(partial, None)
        finally:
            PyBuffer_Release(&view)

    def readuntil(self, separator=b"\n"):
        """Bytes up to and including ``separator``.

        ``LimitOverrunError`` when the ring fills without it (the data stays);
        ``IncompleteReadError`` when EOF comes first (the data is in ``.partial``).
        """
        C.calls += 1
        return self._readuntil(separator, False)

    def readline(self):
        """One line including b"\\n"; at EOF the last partial line, then b""."""
        C.calls += 1
        return self._readuntil(b"\n", True)

    def peek(self, n):
        """The next ``n`` bytes as bytes without consuming them (fewer only at EOF)."""
        cdef RingBuffer ring
        cdef CallState st
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"n must be an int, not {type(n).__name__}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        ring = self._open_ring()
        C.calls += 1
        if n > ring._cap:
            raise LimitOverrunError(f"peek({n}) does not fit the reader's capacity {ring._cap}", 0)
        st.started = False
        while ring._readable() < <size_t>n:
            if self._more(&st) == 0:
                break
        cdef size_t avail = ring._readable()
        return ring._copy(avail if avail < <size_t>n else <size_t>n)

    cdef inline object _buffered_frame(self):
        """The next frame when it is whole in the ring (the steady state), as bytes made
        straight from the ring's memory with no system call and no intermediate object; None
        when ``_frame`` must decide (too few bytes, a header to reject, no open ring)."""
        cdef RingBuffer ring = self.ring
        cdef size_t hs = self._hsize, head, avail, off
        cdef unsigned long long value
        cdef object frame
        if ring is None or ring._closed:
            return None
        head = fio_load_relaxed(&ring._head)
        avail = fio_load_acquire(&ring._tail) - head
        if avail < hs:
            return None
        value = fio_ring_frame_length(ring._base, ring._cap, ring._mirrored, head, <int>hs,
                                      self._hbig)
        # Incomplete, larger than the capacity, or negative: _frame fills or raises.
        if value > avail - hs or (self._hsigned and (value >> (8 * hs - 1))):
            return None
        C.frames += 1
        off = (head + hs) & ring._mask
        if not ring._mirrored and off + value > ring._cap:
            return ring._take(hs, <size_t>value)  # the payload wraps on a plain ring
        frame = PyBytes_FromStringAndSize(ring._base + off, <Py_ssize_t>value)
        ring._advance(hs + <size_t>value)
        return frame

    cdef object _frame(self):
        cdef RingBuffer ring = self._open_ring()
        cdef size_t hs = self._hsize, avail, length = 0
        cdef unsigned long long value
        cdef bint known = False
        cdef CallState st
        st.started = False
        while True:
            avail = ring._readable()
            if avail >= hs:
                if not known:
                    value = fio_ring_frame_length(ring._base, ring._cap, ring._mirrored,
                                                  fio_load_relaxed(&ring._head), <int>hs,
                                                  self._hbig)
                    if self._hsigned and hs < 8 and (value >> (8 * hs - 1)) & 1:
                        raise ValueError("negative frame length in the header")
                    if self._hsigned and hs == 8 and (value >> 63):
                        raise ValueError("negative frame length in the header")
                    if value > ring._cap - hs:
                        raise LimitOverrunError(
                            f"frame of {value} bytes plus its {hs}-byte header does not fit "
                            f"the reader's capacity {ring._cap}",
                            0,
                        )
                    length = <size_t>value
                    known = True
                if avail >= hs + length:
                    C.frames += 1
                    return ring._take(hs, length)
            if self._more(&st) == 0:
                raise IncompleteReadError(
                    ring._take(0, ring._readable()), hs + length if known else hs
                )

    def read_frame(self, header=None):
        """One length-prefixed frame's payload; ``header`` is the struct format of the length
        (None: the reader's, "!I" by default).

        ``IncompleteReadError`` at EOF (``.partial`` holds the raw bytes of the cut frame;
        b"" at a clean end); ``LimitOverrunError`` when header plus payload exceed capacity.
        """
        cdef object frame
        C.calls += 1
        if header is None:
            if self._header is not self._default_header:
                self._set_header(self._default_header)
        elif header is not self._header and header != self._header:
            self._set_header(header)
        frame = self._buffered_frame()
        if frame is not None:
            return frame
        return self._frame()

    def __iter__(self):
        return self

    def __next__(self):
        cdef object frame
        C.calls += 1
        if self._header is not self._default_header:
            self._set_header(self._default_header)
        frame = self._buffered_frame()
        if frame is not None:
            return frame
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
