"""Native twin of ``BatchWriter``: many small writes, few ``writev`` calls, nothing lost.

Small pieces are copied into one malloc'd staging buffer (adjacent ones merge into one
iovec); large immutable pieces are kept by reference (a strong reference to a ``bytes``, a
held ``Py_buffer`` for other read-only exporters) and handed to the kernel where they lie.
The iovec array is exactly what ``writev`` gets, so a partial write only advances the first
iovec (as uvloop's stream write path does). Counters live in C structs: ``write`` of a small
``bytes`` is a type check, a ``memcpy`` and a few increments.
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.ref cimport PyObject
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy, memmove

from fastio._compat cimport (
    FIO_PRIM_BATCH,
    fio_iov_max,
    fio_profile_attach,
    fio_ssize_t,
    fio_sendmsg,
    fio_writev,
    iovec,
    run_signal_handlers,
)
from fastio._policy cimport (
    deadline_after,
    error_from_errno,
    timeout_error,
    wait_fd,
    would_block,
)

from fastio import _stats
from fastio._policy import batch_close_target, batch_options

__all__ = ["BatchWriter"]

fio_profile_attach(FIO_PRIM_BATCH)


cdef extern from "<errno.h>":
    const int EWOULDBLOCK


cdef extern from "Python.h":
    # Borrowed references: the writelines loop touches no reference count per item.
    PyObject *list_item "PyList_GET_ITEM" (object, Py_ssize_t)
    Py_ssize_t list_size "PyList_GET_SIZE" (object)
    PyObject *tuple_item "PyTuple_GET_ITEM" (object, Py_ssize_t)
    Py_ssize_t tuple_size "PyTuple_GET_SIZE" (object)
    bint PyList_CheckExact(object)
    bint PyTuple_CheckExact(object)
    bint bytes_check "PyBytes_CheckExact" (PyObject *)
    bint PyBytes_CheckExact(object)
    char *bytes_data "PyBytes_AS_STRING" (PyObject *)
    Py_ssize_t bytes_size "PyBytes_GET_SIZE" (PyObject *)
    void incref "Py_INCREF" (PyObject *)
    void decref "Py_DECREF" (PyObject *)


ctypedef struct owner_t:
    PyObject *obj       # a bytes object kept by reference (strong), or NULL
    Py_buffer *view     # a held buffer (read-only; or writable while sent in place), or NULL


ctypedef struct counters_t:
    unsigned long long calls
    unsigned long long nbytes
    unsigned long long syscalls
    unsigned long long would_block
    unsigned long long eintr
    unsigned long long partial
    unsigned long long fallbacks
    unsigned long long writes
    unsigned long long copied
    unsigned long long referenced


cdef counters_t _g   # process-wide counters (fastio.stats()["batch"])

_EXTRA_FIELDS = ("writes", "copied", "referenced")


def _snapshot(bint reset):
    values = {
        "calls": _g.calls,
        "bytes": _g.nbytes,
        "syscalls": _g.syscalls,
        "would_block": _g.would_block,
        "eintr": _g.eintr,
        "partial": _g.partial,
        "fallbacks": _g.fallbacks,
        "writes": _g.writes,
        "copied": _g.copied,
        "referenced": _g.referenced,
    }
    if reset:
        memset_counters(&_g)
    return values


cdef inline void memset_counters(counters_t *c) noexcept:
    c.calls = c.nbytes = c.syscalls = c.would_block = c.eintr = 0
    c.partial = c.fallbacks = c.writes = c.copied = c.referenced = 0


_stats.register("c", "batch", _snapshot)


@cython.final
cdef class BatchWriter:
    """Batch many small writes into few ``writev`` calls on a socket, file or fd.

    See ``fastio.batch`` for the full contract.
    """

    cdef object target
    cdef int fd
    cdef double budget              # -1.0 blocking, 0.0 non-blocking, else seconds
    cdef bint closefd
    cdef bint release_gil
    cdef bint is_closed
    cdef bint busy
    cdef int error_code             # errno of the sticky error, 0 when none
    cdef Py_ssize_t buffer_size
    cdef Py_ssize_t copy_threshold
    cdef Py_ssize_t max_pending     # -1: no limit
    cdef Py_ssize_t limit           # a small piece that keeps pending below this needs no flush
    cdef Py_ssize_t fast_limit      # `limit`, or 0 while closed, failed or inside a call
    cdef Py_ssize_t iov_max
    cdef char *stage
    cdef Py_ssize_t stage_cap
    cdef Py_ssize_t stage_end
    cdef iovec *iov
    cdef owner_t *own
    cdef Py_ssize_t cap             # slots in iov/own
    cdef Py_ssize_t head            # first unsent piece
    cdef Py_ssize_t count           # pieces in use (unsent: head..count-1)
    cdef Py_ssize_t pending
    cdef bint tail_staged           # the last piece is staging that ends at stage_end
    cdef bint defer                 # inside writelines(list): only copied bytes fill the buffer
    cdef counters_t st
    cdef bint is_socket             # written with sendmsg(MSG_NOSIGNAL): EPIPE, never SIGPIPE

    def __cinit__(self):
        self.fd = -1
        self.is_closed = True

    def __init__(self, target, *, buffer_size=65536, copy_threshold=1024, max_pending=None,
                 timeout=None, closefd=True):
        if self.stage != NULL:
            raise RuntimeError("BatchWriter.__init__ called twice")
        fd, budget, limit, fd_blocking, is_socket = batch_options(
            target, buffer_size, copy_threshold, max_pending, timeout
        )
        self.target = target
        self.fd = fd
        self.is_socket = is_socket
        self.budget = budget
        # The GIL is kept around a writev that cannot block (a non-blocking target):
        # releasing it would cost more than the call.
        self.release_gil = budget != 0.0 or fd_blocking
        self.closefd = bool(closefd)
        self.buffer_size = buffer_size
        self.copy_threshold = copy_threshold
        self.max_pending = limit
        self.limit = buffer_size if limit < 0 else min(buffer_size, limit + 1)
        self.iov_max = fio_iov_max()
        # Room for a full buffer plus one more piece that may be copied before the flush.
        self.stage_cap = buffer_size + copy_threshold
        self.stage = <char *>PyMem_Malloc(self.stage_cap)
        self.cap = min(64, self.iov_max)
        self.iov = <iovec *>PyMem_Malloc(self.cap * sizeof(iovec))
        self.own = <owner_t *>PyMem_Malloc(self.cap * sizeof(owner_t))
        if self.stage == NULL or self.iov == NULL or self.own == NULL:
            raise MemoryError()
        self.is_closed = False
        self.fast_limit = self.limit

    def __dealloc__(self):
        # No I/O here (as the pieces are not flushed): only references and memory go back.
        self._release_all()
        PyMem_Free(self.stage)
        PyMem_Free(self.iov)
        PyMem_Free(self.own)

    # ---- state ----

    cdef int _check(self) except -1:
        if self.is_closed:
            raise ValueError("I/O operation on closed BatchWriter")
        if self.busy:
            raise RuntimeError("concurrent or reentrant call on the same BatchWriter")
        if self.error_code:
            raise error_from_errno(self.error_code, 0)
        return 0

    cdef inline void _enter(self) noexcept:
        self.busy = True
        self.fast_limit = 0

    cdef inline void _leave(self) noexcept:
        self.busy = False
        if not self.is_closed and not self.error_code:
            self.fast_limit = self.limit

    cdef void _release_piece(self, Py_ssize_t i) noexcept:
        cdef owner_t o = self.own[i]
        self.own[i].obj = NULL
        self.own[i].view = NULL
        if o.obj != NULL:
            decref(o.obj)
        elif o.view != NULL:
            PyBuffer_Release(o.view)
            PyMem_Free(o.view)

    cdef void _release_all(self) noexcept:
        cdef Py_ssize_t i, end = self.count
        self.count = 0
        for i in range(self.head, end):
            self._release_piece(i)
        self.head = 0
        self.pending = 0
        self.stage_end = 0
        self.tail_staged = False

    # ---- pieces ----

    cdef int _new_slot(self) except -1:
        """Make room for one more piece at index ``count``."""
        cdef Py_ssize_t live, new_cap
        cdef void *p
        if self.count < self.cap:
            return 0
        live = self.count - self.head
        if self.head > 0:
            memmove(self.iov, self.iov + self.head, live * sizeof(iovec))
            memmove(self.own, self.own + self.head, live * sizeof(owner_t))
            self.head = 0
            self.count = live
            return 0
        new_cap = self.cap * 2
        p = PyMem_Realloc(self.iov, new_cap * sizeof(iovec))
        if p == NULL:
            raise MemoryError()
        self.iov = <iovec *>p
        p = PyMem_Realloc(self.own, new_cap * sizeof(owner_t))
        if p == NULL:
            raise MemoryError()
        self.own = <owner_t *>p
        self.cap = new_cap
        return 0

    cdef int _stage_room(self, Py_ssize_t n) except -1:
        """Make ``n`` free bytes at ``stage_end``: compact the unsent staging bytes to the
        front, or grow the buffer (only when earlier bytes could not be sent yet)."""
        cdef Py_ssize_t i, first = self.stage_end, live, new_cap
        cdef char *old = self.stage
        cdef char *p
        if self.stage_end + n <= self.stage_cap:
            return 0
        for i in range(self.head, self.count):
            if self.own[i].obj == NULL and self.own[i].view == NULL:
                first = <char *>self.iov[i].iov_base - old
                break
        live = self.stage_end - first
        if live + n <= self.stage_cap:
            memmove(old, old + first, live)
            p = old
        else:
            new_cap = max(self.stage_cap * 2, live + n)
            p = <char *>PyMem_Malloc(new_cap)
            if p == NULL:
                raise MemoryError()
            memcpy(p, old + first, live)
            self.stage = p
            self.stage_cap = new_cap
        # Staging pieces keep their order; only their base moves.
        for i in range(self.head, self.count):
            if self.own[i].obj == NULL and self.own[i].view == NULL:
                self.iov[i].iov_base = p + (<char *>self.iov[i].iov_base - old - first)
        if p != old:
            PyMem_Free(old)
        self.stage_end = live
        return 0

    cdef inline Py_ssize_t _fill(self) noexcept:
        """The bytes that count towards ``buffer_size``: all pending ones, or, inside
        ``writelines`` of a list or tuple (whose items the caller keeps alive anyway), only
        those copied into staging, so that pieces kept by reference go out in IOV_MAX
        batches."""
        return self.stage_end if self.defer else self.pending

    cdef Py_ssize_t _copy_run(self, object lines, bint is_list, Py_ssize_t i,
                              Py_ssize_t size, Py_ssize_t *taken) noexcept:
        """writelines' inner loop: copy consecutive small ``bytes`` items into the open
        staging piece with everything in locals; returns the index of the first item it
        did not take (the general path handles that one)."""
        cdef PyObject *item
        cdef Py_ssize_t n, start = i
        cdef char *stage = self.stage
        cdef Py_ssize_t end = self.stage_end, first = self.stage_end
        cdef Py_ssize_t cap = self.stage_cap, threshold = self.copy_threshold
        cdef Py_ssize_t room = self.limit - self._fill()   # a piece must leave room > 0
        taken[0] = 0
        if not self.tail_staged:
            return i
        while i < size:
            item = list_item(lines, i) if is_list else tuple_item(lines, i)
            if not bytes_check(item):
                break
            n = bytes_size(item)
            if n <= 0 or n >= threshold or n >= room or end + n > cap:
                break
            memcpy(stage + end, bytes_data(item), n)
            end += n
            room -= n
            i += 1
        n = end - first
        taken[0] = n
        self.iov[self.count - 1].iov_len += n
        self.stage_end = end
        self.pending += n
        self.st.writes += i - start
        self.st.copied += n
        _g.writes += i - start
        _g.copied += n
        return i

    cdef inline bint _fast_copy(self, const char *data, Py_ssize_t n, Py_ssize_t limit) noexcept:
        """The common case, inlined: a small piece that fits and needs no flush."""
        cdef Py_ssize_t end = self.stage_end
        if n <= 0 or n >= self.copy_threshold or self._fill() + n >= limit:
            return False
        if end + n > self.stage_cap:
            return False
        if self.tail_staged:
            self.iov[self.count - 1].iov_len += n
        elif self.count < self.cap and self.count - self.head + 1 < self.iov_max:
            self.iov[self.count].iov_base = self.stage + end
            self.iov[self.count].iov_len = n
            self.own[self.count].obj = NULL
            self.own[self.count].view = NULL
            self.count += 1
            self.tail_staged = True
        else:
            return False
        memcpy(self.stage + end, data, n)
        self.stage_end = end + n
        self.pending += n
        self.st.writes += 1
        self.st.copied += n
        _g.writes += 1
        _g.copied += n
        return True

    cdef int _copy_in(self, const char *data, Py_ssize_t n) except -1:
        self._stage_room(n)
        if self.tail_staged:
            self.iov[self.count - 1].iov_len += n
        else:
            self._new_slot()
            self.iov[self.count].iov_base = self.stage + self.stage_end
            self.iov[self.count].iov_len = n
            self.own[self.count].obj = NULL
            self.own[self.count].view = NULL
            self.count += 1
            self.tail_staged = True
        memcpy(self.stage + self.stage_end, data, n)
        self.stage_end += n
        self.pending += n
        self.st.copied += n
        _g.copied += n
        return 0

    cdef int _hold(self, PyObject *obj, Py_buffer *view, char *data, Py_ssize_t n) except -1:
        """Keep a piece by reference: ``obj`` (a bytes, reference taken) or ``view``."""
        self._new_slot()
        self.iov[self.count].iov_base = data
        self.iov[self.count].iov_len = n
        self.own[self.count].obj = obj
        self.own[self.count].view = view
        if obj != NULL:
            incref(obj)
        self.count += 1
        self.tail_staged = False
        self.pending += n
        return 0

    cdef bint _last_is(self, Py_buffer *view) noexcept:
        return self.count > self.head and view != NULL and self.own[self.count - 1].view == view

    cdef int _detach_last(self) except -1:
        """The last piece is a caller's writable buffer still unsent: copy what is left of
        it, so the caller may reuse the buffer as soon as ``write`` returns."""
        cdef Py_ssize_t i = self.count - 1
        cdef Py_ssize_t left = self.iov[i].iov_len
        copy = PyBytes_FromStringAndSize(<char *>self.iov[i].iov_base, left)
        self._release_piece(i)
        incref(<PyObject *>copy)
        self.own[i].obj = <PyObject *>copy
        self.iov[i].iov_base = bytes_data(<PyObject *>copy)
        self.st.copied += left
        _g.copied += left
        return 0

    cdef void _drop_last(self) noexcept:
        """Forget the unsent rest of the last piece (a refused write)."""
        cdef Py_ssize_t i = self.count - 1
        self.pending -= self.iov[i].iov_len
        if self.own[i].obj == NULL and self.own[i].view == NULL:
            self.stage_end -= self.iov[i].iov_len
        self._release_piece(i)
        self.count -= 1
        self.tail_staged = False
        if self.count == self.head:
            self.count = self.head = 0
            self.stage_end = 0

    cdef object _refusal(self, Py_ssize_t accepted):
        if self.budget == 0.0:
            return would_block(accepted)
        return timeout_error(accepted)

    # ---- sending ----

    cdef void _advance(self, Py_ssize_t sent) noexcept:
        cdef Py_ssize_t i
        self.pending -= sent
        self.st.nbytes += sent
        _g.nbytes += sent
        while sent > 0:
            i = self.head
            if <size_t>sent >= self.iov[i].iov_len:
                sent -= self.iov[i].iov_len
                self.head = i + 1
                self._release_piece(i)
            else:
                self.iov[i].iov_base = <char *>self.iov[i].iov_base + sent
                self.iov[i].iov_len -= sent
                sent = 0
        if self.head == self.count:
            self.head = self.count = 0
            self.stage_end = 0
            self.tail_staged = False

    cdef bint _flush(self, bint explicit) except -1:
        """writev until nothing is pending: True. An automatic flush (``explicit`` false)
        stops quietly where the kernel or the deadline stops it: False. Hard errors are
        sticky; EINTR runs the signal handlers (a raising one stops with progress)."""
        cdef fio_ssize_t r
        cdef Py_ssize_t n, i, requested, done = 0
        cdef int err, fd = self.fd
        cdef bint blocking = self.budget != 0.0
        cdef double deadline = deadline_after(self.budget) if self.budget > 0.0 else -1.0
        cdef iovec *vec
        while self.head < self.count:
            n = min(self.count - self.head, self.iov_max)
            vec = self.iov + self.head
            requested = 0
            for i in range(n):
                requested += vec[i].iov_len
            if self.release_gil:
                with nogil:
                    if self.is_socket:
                        r = fio_sendmsg(fd, vec, <int>n)
                    else:
                        r = fio_writev(fd, vec, <int>n)
                    err = errno
            else:
                if self.is_socket:
                    r = fio_sendmsg(fd, vec, <int>n)
                else:
                    r = fio_writev(fd, vec, <int>n)
                err = errno
            self.st.syscalls += 1
            _g.syscalls += 1
            if r >= 0:
                done += r
                self._advance(r)
                if r < requested:
                    self.st.partial += 1
                    _g.partial += 1
                    if blocking:
                        # A signal cut the write short: its handler runs now, not after
                        # the next (blocking) writev; one that raises ends with progress.
                        run_signal_handlers(done)
                continue
            if err == EINTR:
                _g.eintr += 1
                run_signal_handlers(done)
                continue
            if err == EAGAIN or err == EWOULDBLOCK:
                self.st.would_block += 1
                _g.would_block += 1
                if not blocking:
                    if explicit:
                        raise would_block(done)
                    return False
                try:
                    wait_fd(fd, True, deadline, done)
                except TimeoutError:
                    if explicit:
                        raise
                    return False
                except OSError as exc:
                    self._fail(exc.errno or 0)
                    raise
                continue
            self._fail(err)
            raise error_from_errno(err, done)
        return True

    cdef void _fail(self, int code) noexcept:
        self.error_code = code if code else -1
        self.fast_limit = 0

    # ---- accepting ----

    cdef Py_ssize_t _accept(self, object data, Py_ssize_t before) except -1:
        """Take one piece of any bytes-like type; returns its length."""
        cdef Py_buffer tmp
        cdef Py_buffer *held = NULL
        cdef Py_ssize_t n
        cdef bint over
        if PyBytes_CheckExact(data):
            n = bytes_size(<PyObject *>data)
            if not self._fast_copy(bytes_data(<PyObject *>data), n, self.limit):
                self._accept_piece(<PyObject *>data, NULL, bytes_data(<PyObject *>data), n,
                                   True, before)
            return n
        PyObject_GetBuffer(data, &tmp, PyBUF_SIMPLE)  # TypeError for str and non-buffers
        try:
            n = tmp.len
            if self._fast_copy(<char *>tmp.buf, n, self.limit):
                return n
            over = 0 <= self.max_pending < n
            if (n >= self.copy_threshold or over) and (
                tmp.readonly or self._fill() + n >= self.buffer_size or over
            ):
                # Kept in place (a writable one only while this call sends it): hold a
                # Py_buffer of our own at a stable address.
                held = <Py_buffer *>PyMem_Malloc(sizeof(Py_buffer))
                if held == NULL:
                    raise MemoryError()
                try:
                    PyObject_GetBuffer(data, held, PyBUF_SIMPLE)
                except BaseException:
                    PyMem_Free(held)
                    raise
            self._accept_piece(NULL, held, <char *>tmp.buf, n, tmp.readonly, before)
        finally:
            PyBuffer_Release(&tmp)
        return n

    cdef int _accept_piece(self, PyObject *obj, Py_buffer *view, char *data, Py_ssize_t n,
                           bint immutable, Py_ssize_t before) except -1:
        """The slow path of one piece: backpressure, copy or reference, automatic flush.

        ``obj`` (a bytes) or ``view`` (already held, ours to release) mean "keep by
        reference"; neither means "copy". A writable ``view`` is only sent in place by
        this call: what is left of it afterwards is copied. ``before`` counts the bytes of
        this call taken before this piece (for ``characters_written``)."""
        cdef bint by_ref = obj != NULL or view != NULL
        cdef bint writable = view != NULL and not immutable
        cdef Py_ssize_t left
        self.st.writes += 1
        _g.writes += 1
        if n == 0 or (self.max_pending >= 0 and self.pending + n > self.max_pending
                      and self.pending):
            try:
                if n:
                    # Backpressure: make room first; refuse the piece whole if there is none.
                    self._flush(False)
                    if self.pending and self.pending + n > self.max_pending:
                        raise self._refusal(before)
            except BaseException:
                _free_view(view)
                raise
            if n == 0:
                _free_view(view)
                return 0
        if obj != NULL and n < self.copy_threshold and not 0 <= self.max_pending < n:
            by_ref = False
        if by_ref:
            try:
                self._hold(obj, view, data, n)
            except BaseException:
                _free_view(view)
                raise
            if not writable:
                self.st.referenced += n
                _g.referenced += n
        else:
            self._copy_in(data, n)
        if not (self._fill() >= self.buffer_size or self.count - self.head >= self.iov_max
                or 0 <= self.max_pending < self.pending):
            if writable:
                self._settle_writable(view, n)
            return 0
        try:
            self._flush(False)
        except BaseException:
            if writable:
                self._settle_writable(view, n)
            raise
        if 0 <= self.max_pending < self.pending:
            # Refused: only this piece can be over the limit (the writer was empty before
            # it); what the kernel took of it counts as taken, the rest is dropped.
            left = self.iov[self.count - 1].iov_len
            if writable:
                self.st.referenced += n - left
                _g.referenced += n - left
            elif by_ref:
                self.st.referenced -= left
                _g.referenced -= left
            else:
                self.st.copied -= left
                _g.copied -= left
            self._drop_last()
            raise self._refusal(before + n - left)
        if writable:
            self._settle_writable(view, n)
        return 0

    cdef int _settle_writable(self, Py_buffer *view, Py_ssize_t n) except -1:
        """After a writable buffer was sent in place: copy what the kernel did not take."""
        cdef Py_ssize_t left = 0
        if self._last_is(view):
            left = self.iov[self.count - 1].iov_len
            self._detach_last()
        self.st.referenced += n - left
        _g.referenced += n - left
        return 0

    # ---- public API ----

    @cython.always_allow_keywords(False)
    def write(self, data):
        """Accept ``data`` (any bytes-like object) and return its length.

        Small pieces are copied into the staging buffer, large immutable ones kept by
        reference; the writer flushes by itself when ``buffer_size`` bytes or IOV_MAX pieces
        are pending. ``BlockingIOError`` (non-blocking target) or ``TimeoutError`` (target
        with a timeout) means ``max_pending`` refused the data: ``characters_written`` /
        ``transferred`` bytes of it were taken, the rest was not.
        """
        cdef Py_ssize_t n
        _g.calls += 1
        if PyBytes_CheckExact(data):
            n = bytes_size(<PyObject *>data)
            if self._fast_copy(bytes_data(<PyObject *>data), n, self.fast_limit):
                return n
        self._check()
        self._enter()
        try:
            return self._accept(data, 0)
        finally:
            self._leave()

    def writelines(self, lines):
        """Write every bytes-like piece of the iterable ``lines`` (a list or tuple is
        iterated in C). On a refusal (``max_pending``), ``characters_written`` counts the
        bytes of this call that were taken; the pieces before the refused one are taken
        whole."""
        cdef Py_ssize_t i = 0, before = 0, n, size
        cdef PyObject *item
        cdef bint is_list
        _g.calls += 1
        self._check()
        self._enter()
        try:
            if PyList_CheckExact(lines) or PyTuple_CheckExact(lines):
                is_list = PyList_CheckExact(lines)
                self.defer = self.max_pending < 0
                while True:
                    # The size is read again each time: a flush may let another thread in.
                    size = list_size(lines) if is_list else tuple_size(lines)
                    i = self._copy_run(lines, is_list, i, size, &n)
                    before += n
                    if i >= size:
                        break
                    item = list_item(lines, i) if is_list else tuple_item(lines, i)
                    i += 1
                    if bytes_check(item):
                        n = bytes_size(item)
                        if not self._fast_copy(bytes_data(item), n, self.limit):
                            self._accept_piece(item, NULL, bytes_data(item), n, True, before)
                        before += n
                    else:
                        before += self._accept(<object>item, before)
                self.defer = False
                if self.pending >= self.buffer_size:
                    self._flush(False)
            else:
                for obj in lines:
                    before += self._accept(obj, before)
        finally:
            self.defer = False
            self._leave()

    def flush(self):
        """Send everything pending (``writev`` in batches of at most IOV_MAX pieces).

        A non-blocking target raises ``BlockingIOError`` (``characters_written`` = bytes
        sent by this call) when the kernel takes no more; a timeout raises ``TimeoutError``
        with ``transferred``; the rest stays pending, byte for byte, for the next flush.
        Other ``OSError``s are sticky: every later call raises them again.
        """
        _g.calls += 1
        self._check()
        self._enter()
        try:
            self._flush(True)
        finally:
            self._leave()

    def close(self):
        """Flush, release every reference, and close the target when ``closefd`` is true.

        The writer is closed even when the flush fails; the error is raised after. A sticky
        error is raised again here (the pending bytes are lost). Closing twice is a no-op.
        """
        cdef int code
        if self.is_closed:
            return
        if self.busy:
            raise RuntimeError("concurrent or reentrant call on the same BatchWriter")
        code = self.error_code
        try:
            if code == 0 and self.pending:
                self._enter()
                try:
                    self._flush(True)
                finally:
                    self._leave()
        finally:
            self._shut()
        if code:
            raise error_from_errno(code, 0)

    cdef int _shut(self) except -1:
        self._release_all()
        self.is_closed = True
        self.fast_limit = 0
        if self.closefd:
            self.closefd = False
            batch_close_target(self.target, self.fd)
        return 0

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, exc_type, exc, tb):
        """Clean exit: ``close()``. Exit by an exception: the pending pieces are dropped
        unsent (no half-built message goes out), references released, target closed as
        ``closefd`` says, and the exception goes on."""
        if exc_type is None:
            self.close()
        elif not self.is_closed and not self.busy:
            self._shut()
        return False

    @property
    def pending(self):
        """Bytes accepted and not yet sent."""
        return self.pending

    @property
    def closed(self):
        """True after ``close()``."""
        return self.is_closed

    @property
    def stats(self):
        """Counters of this writer: writes, bytes_sent, bytes_copied, bytes_referenced,
        writev_calls, partial_writes, would_block."""
        return {
            "writes": self.st.writes,
            "bytes_sent": self.st.nbytes,
            "bytes_copied": self.st.copied,
            "bytes_referenced": self.st.referenced,
            "writev_calls": self.st.syscalls,
            "partial_writes": self.st.partial,
            "would_block": self.st.would_block,
        }

    def fileno(self):
        """The file descriptor written to."""
        return self.fd

    def __repr__(self):
        state = "closed" if self.is_closed else f"fd={self.fd} pending={self.pending}"
        return f"<fastio.BatchWriter {state}>"


cdef inline void _free_view(Py_buffer *view) noexcept:
    if view != NULL:
        PyBuffer_Release(view)
        PyMem_Free(view)
