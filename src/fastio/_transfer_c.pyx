"""Native twin of fastio's zero-copy transfer: ``sendfile``, ``splice``, ``copy``, ``relay``.

The algorithm of ``_transfer_py.py`` (see there) with every system call made from C through
``csrc/fastio_compat.h``, the GIL released around the calls that can block, and counters in
a C struct. ``sendfile`` of a small regular file to a socket is done in one pass of C (fstat,
one sendfile, the position set) before any Python object is made; ``relay`` runs its whole
loop in C without the GIL (``csrc/fastio_relay.h``).
"""

import _socket
import io
import os
import socket
import threading

from libc.errno cimport EAGAIN, EINTR, errno
from libc.stdio cimport SEEK_CUR, SEEK_SET
from libc.string cimport memset

from cpython.bytearray cimport PyByteArray_AS_STRING
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

from fastio._compat cimport (
    FIO_PRIM_TRANSFER,
    fio_profile_attach,
    FIO_HAVE_COPY_FILE_RANGE,
    FIO_HAVE_SENDFILE,
    FIO_HAVE_SPLICE,
    FIO_KIND_OTHER,
    FIO_KIND_PIPE,
    FIO_KIND_REG,
    FIO_KIND_SOCK,
    MSG_PEEK,
    POLLIN,
    SPLICE_F_MOVE,
    SPLICE_F_NONBLOCK,
    fio_close,
    fio_copy_file_range,
    fio_fstat_kind,
    fio_lseek,
    fio_monotonic,
    fio_monotonic_coarse,
    fio_off_t,
    fio_pipe,
    fio_pipe_grow,
    fio_poll,
    fio_pread,
    fio_read,
    fio_recv,
    fio_send,
    fio_sendfile,
    fio_set_nonblock,
    fio_splice,
    fio_splice_from,
    fio_ssize_t,
    fio_write,
    pollfd,
    run_signal_handlers,
)
from fastio._policy cimport (
    check_count,
    check_offset,
    check_timeout,
    deadline_after,
    error_from_errno,
    resolve_timeout,
    timeout_error,
    wait_fd,
    with_progress,
    would_block,
)

from fastio import _policy, _stats

cdef extern from "<errno.h>" nogil:
    const int EWOULDBLOCK

cdef extern from "fastio_relay.h" nogil:
    ctypedef struct fio_relay_dir:
        int src
        int dst
        int pipe_r
        int pipe_w
        size_t pipe_cap
        size_t held
        char *buf
        size_t buf_cap
        size_t start
        size_t end
        int eof
        int shut
        unsigned long long moved
    ctypedef struct fio_relay:
        fio_relay_dir d[2]
        int idle_ms
        int stop_fd
        double last_progress
        int err
        unsigned long long syscalls
        unsigned long long would_block
        unsigned long long eintr
        unsigned long long partial
        unsigned long long fallbacks
        unsigned long long splice_bytes
        unsigned long long loop_bytes
        int check_ms
        double last_check
    int fio_relay_run(fio_relay *r)
    void fio_relay_settle(fio_relay *r)
    size_t fio_relay_held(const fio_relay_dir *d)
    int fio_relay_take(fio_relay_dir *d, char *out, size_t n)

cdef extern from *:
    """
    /* A descriptor's value (here _socket.socket.type, the C-level int) through its type's
     * tp_descr_get: no attribute lookup, no bound-method object per call. */
    static long fio_descr_long(PyObject *descr, PyObject *obj)
    {
        descrgetfunc get = Py_TYPE(descr)->tp_descr_get;
        PyObject *value;
        long result;
        if (get == NULL) {
            PyErr_SetString(PyExc_TypeError, "not a descriptor");
            return -1;
        }
        value = get(descr, obj, (PyObject *)Py_TYPE(obj));
        if (value == NULL) return -1;
        result = PyLong_AsLong(value);
        Py_DECREF(value);
        return result;
    }
    """
    long fio_descr_long(object descr, object obj) except? -1

__all__ = ["copy", "relay", "sendfile", "splice"]

fio_profile_attach(FIO_PRIM_TRANSFER)

# ---- counters ------------------------------------------------------------------------------

# Field order is _stats.COMMON_FIELDS + _policy.TRANSFER_FIELDS (the snapshot walks it).
cdef struct Counters:
    unsigned long long calls
    unsigned long long bytes
    unsigned long long syscalls
    unsigned long long would_block
    unsigned long long eintr
    unsigned long long partial
    unsigned long long fallbacks
    unsigned long long sendfile_bytes
    unsigned long long copy_file_range_bytes
    unsigned long long splice_bytes
    unsigned long long loop_bytes
    unsigned long long pipes_created
    unsigned long long pipes_reused
    unsigned long long pipes_closed

cdef Counters C
memset(&C, 0, sizeof(C))
_FIELDS = tuple(_stats.COMMON_FIELDS) + tuple(_policy.TRANSFER_FIELDS)
assert len(_FIELDS) * sizeof(unsigned long long) == sizeof(Counters)


def _snapshot(reset=False):
    cdef unsigned long long *values = <unsigned long long *>&C
    snapshot = {name: values[i] for i, name in enumerate(_FIELDS)}
    if reset:
        memset(&C, 0, sizeof(C))
    return snapshot


_stats.register("c", "transfer", _snapshot)

# ---- constants and types -------------------------------------------------------------------

cdef enum:
    EP_FD = 0
    EP_BUFFERED = 1
    EP_OBJECT = 2
    MODE_SENDFILE = 0
    MODE_SPLICE = 1
    MODE_COPY = 2
    POOL_SIZE = 4

cdef long long MAX_CHUNK = _policy.MAX_CHUNK
cdef long long BUFFER_SIZE = _policy.BUFFER_SIZE
cdef unsigned int SPLICE_FLAGS = SPLICE_F_MOVE | SPLICE_F_NONBLOCK
cdef object _Socket = socket.socket
cdef object _FileIO = io.FileIO
cdef object _BufferedReader = io.BufferedReader
# The methods themselves: no attribute lookup per call once the exact type is known.
cdef object _br_seek = io.BufferedReader.seek
cdef object _br_tell = io.BufferedReader.tell
cdef object _br_fileno = io.BufferedReader.fileno
cdef object _fileio_fileno = io.FileIO.fileno
cdef object _socket_type = _socket.socket.type
cdef object _socket_fileno = _socket.socket.fileno
cdef int SOCK_STREAM = socket.SOCK_STREAM
cdef object FALLBACK_ERRNOS = _policy.FALLBACK_ERRNOS
cdef object CFR_FALLBACK_ERRNOS = _policy.COPY_FILE_RANGE_FALLBACK_ERRNOS
cdef object _endpoint = _policy.endpoint
cdef object _write_object = _policy.write_object
cdef object _read_object = _policy.read_object
cdef object _parked = _policy.PARKED
cdef object _park = _policy.park


cdef inline bint _again(int err) noexcept nogil:
    return err == EAGAIN or err == EWOULDBLOCK


# ---- the splice pipe pool and the loop buffers (protected by the GIL) ----------------------

cdef int _pool_r[POOL_SIZE]
cdef int _pool_w[POOL_SIZE]
cdef long _pool_cap[POOL_SIZE]
cdef int _pool_n = 0
cdef long _pipe_target = -1
_buffers = []


cdef long _target_size():
    global _pipe_target
    if _pipe_target < 0:
        try:
            with open("/proc/sys/fs/pipe-max-size", "rb") as f:
                _pipe_target = int(f.read().strip())
        except (OSError, ValueError):
            _pipe_target = 0
    return _pipe_target if _pipe_target > 65536 else 0


cdef int _pipe_get(int *fds, long *capacity) except -1:
    global _pool_n
    if _pool_n > 0:
        _pool_n -= 1
        fds[0] = _pool_r[_pool_n]
        fds[1] = _pool_w[_pool_n]
        capacity[0] = _pool_cap[_pool_n]
        C.pipes_reused += 1
        return 0
    if fio_pipe(fds) < 0:
        raise error_from_errno(errno, 0)
    capacity[0] = fio_pipe_grow(fds[1], _target_size())
    C.pipes_created += 1
    return 0


cdef void _pipe_put(int *fds, long capacity, bint clean) noexcept:
    global _pool_n
    if clean and _pool_n < POOL_SIZE:
        _pool_r[_pool_n] = fds[0]
        _pool_w[_pool_n] = fds[1]
        _pool_cap[_pool_n] = capacity
        _pool_n += 1
        return
    fio_close(fds[0])
    fio_close(fds[1])
    C.pipes_closed += 1


def _forget_pipes():
    """In a forked child the pooled pipes are shared with the parent: never reuse them."""
    global _pool_n
    while _pool_n > 0:
        _pool_n -= 1
        fio_close(_pool_r[_pool_n])
        fio_close(_pool_w[_pool_n])


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pipes)


cdef bytearray _buffer_get():
    try:
        return _buffers.pop()
    except IndexError:
        return bytearray(BUFFER_SIZE)


cdef void _buffer_put(bytearray buffer) noexcept:
    if len(_buffers) < 4:
        _buffers.append(buffer)


# ---- one transfer --------------------------------------------------------------------------

cdef class _Op:
    """State of one call: the two ends, the budget of each side, and the progress so far."""

    cdef object src, dst, timeout, pending
    cdef int src_ep, dst_ep, src_fd, dst_fd, src_kind, dst_kind
    cdef long long remaining, sent, pos
    cdef double budget[2]
    cdef double deadline[2]
    cdef bint resolved[2]

    def __cinit__(self):
        self.pending = b""
        self.pos = -1
        self.remaining = -1
        self.src_kind = self.dst_kind = FIO_KIND_OTHER
        self.resolved[0] = self.resolved[1] = False
        self.deadline[0] = self.deadline[1] = -2.0

    cdef inline long long want(self, long long limit) noexcept:
        if self.remaining < 0 or self.remaining > limit:
            return limit
        return self.remaining

    cdef inline void advance(self, long long n, unsigned long long *field) noexcept:
        self.sent += n
        if self.remaining > 0:
            self.remaining -= n
        if self.pos >= 0:
            self.pos += n
        C.bytes += <unsigned long long>n
        field[0] += <unsigned long long>n

    cdef double side_budget(self, int side) except? -9.0:
        if not self.resolved[side]:
            if side:
                self.budget[1] = resolve_timeout(self.dst, self.dst_fd, self.timeout)
            else:
                self.budget[0] = resolve_timeout(self.src, self.src_fd, self.timeout)
            self.resolved[side] = True
        return self.budget[side]

    cdef int wait(self, int side) except -1:
        """The fd of ``side`` (0 source, 1 destination) would block: wait or raise."""
        cdef double budget = self.side_budget(side)
        if budget == 0.0:
            raise would_block(self.sent)
        if self.deadline[side] == -2.0:  # one deadline per side, from its first wait
            self.deadline[side] = deadline_after(budget)
        wait_fd(self.dst_fd if side else self.src_fd, side == 1, self.deadline[side], self.sent)
        return 0

    cdef int blocked_side(self) noexcept:
        """A splice between a pipe and another fd said EAGAIN: which end is not ready?"""
        cdef pollfd p
        p.fd = self.src_fd
        p.events = POLLIN
        p.revents = 0
        return 1 if fio_poll(&p, 1, 0) > 0 else 0

    cdef int failed(self, int err) except -1:
        """An error that is neither EINTR nor EAGAIN: raise it with the progress."""
        raise error_from_errno(err, self.sent)


cdef int _checkpoint(_Op op, bint short) except -1:
    """After every call that moved bytes: run the handler of a signal that arrived meanwhile
    (one that raises ends the transfer with the progress attached). Also when the call was
    not cut short: a loop whose calls never block would otherwise get no EINTR to notice it."""
    if short:
        C.partial += 1
    run_signal_handlers(op.sent)
    return 0


cdef int _retry(_Op op, int err, int side) except -1:
    """Common handling of EINTR and EAGAIN: 1 to retry the call, 0 for other errors."""
    if err == EINTR:
        C.eintr += 1
        run_signal_handlers(op.sent)
        return 1
    if _again(err):
        C.would_block += 1
        op.wait(side if side >= 0 else op.blocked_side())
        return 1
    return 0


cdef bint _stage_copy_file_range(_Op op) except -1:
    cdef fio_off_t off
    cdef fio_ssize_t k
    cdef long long n
    cdef int err, src = op.src_fd, dst = op.dst_fd
    while op.remaining:
        n = op.want(MAX_CHUNK)
        off = op.pos
        with nogil:
            k = fio_copy_file_range(src, &off, dst, NULL, <size_t>n)
            err = errno
        C.syscalls += 1
        if k < 0:
            if _retry(op, err, 1):
                continue
            if op.sent == 0 and err in CFR_FALLBACK_ERRNOS:
                C.fallbacks += 1
                return False
            op.failed(err)
        if k == 0:
            return op.sent != 0  # nothing copied at all: let sendfile say whether it is EOF
        op.advance(k, &C.copy_file_range_bytes)
        _checkpoint(op, k < n)
    return True


cdef bint _stage_sendfile(_Op op) except -1:
    cdef fio_off_t off
    cdef fio_ssize_t k
    cdef long long n
    cdef int err, src = op.src_fd, dst = op.dst_fd
    while op.remaining:
        n = op.want(MAX_CHUNK)
        off = op.pos
        with nogil:
            k = fio_sendfile(dst, src, &off, <size_t>n)
            err = errno
        C.syscalls += 1
        if k < 0:
            if _retry(op, err, 1):
                continue
            if op.sent == 0 and err in FALLBACK_ERRNOS:
                C.fallbacks += 1
                return False
            op.failed(err)
        if k == 0:  # the file ended early (it shrank): never spin
            return True
        op.advance(k, &C.sendfile_bytes)
        _checkpoint(op, k < n)
    return True


cdef bint _splice_direct(_Op op) except -1:
    """One end is a pipe: splice straight between them (nothing is held in between)."""
    cdef fio_off_t off
    cdef fio_ssize_t k
    cdef long long n
    cdef int err, src = op.src_fd, dst = op.dst_fd
    cdef bint positioned = op.pos >= 0
    while op.remaining:
        n = op.want(MAX_CHUNK)
        off = op.pos
        with nogil:
            if positioned:
                k = fio_splice_from(src, &off, dst, <size_t>n, SPLICE_FLAGS)
            else:
                k = fio_splice(src, dst, <size_t>n, SPLICE_FLAGS)
            err = errno
        C.syscalls += 1
        if k < 0:
            if _retry(op, err, -1):
                continue
            if op.sent == 0 and err in FALLBACK_ERRNOS:
                C.fallbacks += 1
                return False
            op.failed(err)
        if k == 0:
            return True
        op.advance(k, &C.splice_bytes)
        _checkpoint(op, False)  # a pipe takes or gives what it can: short is normal here
    return True


cdef bint _splice_via_pipe(_Op op) except -1:
    """Neither end is a pipe: source -> pooled internal pipe -> destination."""
    cdef int fds[2]
    cdef long capacity
    cdef fio_off_t off
    cdef fio_ssize_t k
    cdef long long n, held = 0
    cdef int err, src = op.src_fd, dst = op.dst_fd
    cdef bint positioned = op.pos >= 0
    _pipe_get(fds, &capacity)
    try:
        while op.remaining:
            if held == 0:
                n = op.want(capacity)
                off = op.pos
                with nogil:
                    if positioned:
                        k = fio_splice_from(src, &off, fds[1], <size_t>n, SPLICE_FLAGS)
                    else:
                        k = fio_splice(src, fds[1], <size_t>n, SPLICE_FLAGS)
                    err = errno
                C.syscalls += 1
                if k < 0:
                    if _retry(op, err, 0):
                        continue
                    if op.sent == 0 and err in FALLBACK_ERRNOS:
                        C.fallbacks += 1
                        return False
                    op.failed(err)
                if k == 0:
                    return True
                held = k
            with nogil:
                k = fio_splice(fds[0], dst, <size_t>held, SPLICE_FLAGS)
                err = errno
            C.syscalls += 1
            if k < 0:
                if _retry(op, err, 1):
                    continue
                if op.sent == 0 and err in FALLBACK_ERRNOS:
                    C.fallbacks += 1
                    if op.pos < 0:  # a stream's bytes cannot be read again: keep them
                        op.pending = os.read(fds[0], held)
                    else:
                        os.read(fds[0], held)
                    held = 0
                    return False
                op.failed(err)
            held -= k
            op.advance(k, &C.splice_bytes)
            _checkpoint(op, held != 0)
        return True
    except BaseException:
        if held > 0 and op.pos < 0:  # a stream's bytes cannot be read again: keep them
            _park(src, _policy.drain_pipe(fds[0]))
        held = -1  # same rule as the Python twin: a pipe is never reused after an error
        raise
    finally:
        _pipe_put(fds, capacity, held == 0)


cdef int _write_all(_Op op, bytearray buffer, object data, long long total) except -1:
    """Deliver ``total`` bytes (of ``data``, or of ``buffer`` when ``data`` is None)."""
    cdef long long done = 0
    cdef fio_ssize_t k
    cdef int err, dst = op.dst_fd
    cdef bint is_socket = op.dst_kind == FIO_KIND_SOCK
    cdef const char *base
    cdef object view
    if data is None:
        view = memoryview(buffer)
        base = PyByteArray_AS_STRING(buffer)
    else:
        data = bytes(data)
        view = memoryview(data)
        base = <const char *>data
    while done < total:
        if op.dst_ep == EP_OBJECT:
            k = _write_object(op.dst, view[done:total])
            C.syscalls += 1
            if k:
                op.advance(k, &C.loop_bytes)
            if done + k < total:
                raise would_block(op.sent)
        else:
            with nogil:
                if is_socket:
                    k = fio_send(dst, base + done, <size_t>(total - done), 0)
                else:
                    k = fio_write(dst, base + done, <size_t>(total - done))
                err = errno
            C.syscalls += 1
            if k < 0:
                if _retry(op, err, 1):
                    continue
                op.failed(err)
            op.advance(k, &C.loop_bytes)
            _checkpoint(op, k < total - done)
        done += k
    return 0


cdef int _send_pending(_Op op) except -1:
    """Deliver ``op.pending`` (a stream's bytes); what a failure leaves undelivered is parked."""
    cdef long long before = op.sent
    data, op.pending = op.pending, b""
    try:
        _write_all(op, None, data, len(data))
    except BaseException:
        _park(op.src_fd, data[op.sent - before:])
        raise
    return 0


cdef bint _stage_loop(_Op op, bint peek) except -1:
    """The portable loop: read into a reusable 256 KiB buffer, write it all out.

    A positioned source is read with pread at the delivery offset; with ``peek`` a socket
    source is read with MSG_PEEK and only the delivered bytes are consumed.
    """
    cdef bytearray buffer = _buffer_get()
    cdef char *base = PyByteArray_AS_STRING(buffer)
    cdef long long n, before, delivered
    cdef fio_off_t pos
    cdef fio_ssize_t k
    cdef int err, src = op.src_fd
    cdef bint positioned = op.pos >= 0
    cdef bint is_socket = op.src_kind == FIO_KIND_SOCK
    cdef object view = memoryview(buffer)
    try:
        if op.pending:
            _send_pending(op)
        while op.remaining:
            n = op.want(BUFFER_SIZE)
            if op.src_ep == EP_OBJECT:
                k = _read_object(op.src, view[:n])
                C.syscalls += 1
                if k < 0:
                    raise would_block(op.sent)
            else:
                pos = op.pos
                with nogil:
                    if positioned:
                        k = fio_pread(src, base, <size_t>n, pos)
                    elif peek:
                        k = fio_recv(src, base, <size_t>n, MSG_PEEK)
                    elif is_socket:
                        k = fio_recv(src, base, <size_t>n, 0)
                    else:
                        k = fio_read(src, base, <size_t>n)
                    err = errno
                C.syscalls += 1
                if k < 0:
                    if _retry(op, err, 0):
                        continue
                    op.failed(err)
            if k == 0:
                break
            before = op.sent
            try:
                _write_all(op, buffer, None, k)
            finally:
                delivered = op.sent - before
                if peek:
                    if delivered:
                        with nogil:
                            fio_recv(src, base, <size_t>delivered, 0)  # consume the delivered
                elif delivered < k and not positioned:
                    if op.src_ep != EP_OBJECT:
                        _park(src, buffer[delivered:k])
                    elif getattr(op.src, "seekable", None) and op.src.seekable():
                        op.src.seek(delivered - k, os.SEEK_CUR)
        return True
    finally:
        _buffer_put(buffer)


cdef bint _stage_splice(_Op op) except -1:
    if not FIO_HAVE_SPLICE:
        return False
    if op.src_kind == FIO_KIND_PIPE or op.dst_kind == FIO_KIND_PIPE:
        return _splice_direct(op)
    return _splice_via_pipe(op)


cdef bint _needs_peek(_Op op) except -1:
    """A socket source whose destination may stop us (non-blocking or timeout) is peeked."""
    return (
        op.pos < 0
        and op.src_kind == FIO_KIND_SOCK
        and op.dst_ep != EP_OBJECT
        and op.dst_kind != FIO_KIND_PIPE
        and op.side_budget(1) >= 0.0
    )


cdef int _dispatch(_Op op, int mode, long long size) except -1:
    if op.pending:
        # bytes taken from the stream before (parked, or a buffered reader's) go first
        _send_pending(op)
        if op.remaining == 0:
            return 0
    if op.src_ep == EP_OBJECT or op.dst_ep == EP_OBJECT:
        _stage_loop(op, False)
        return 0
    if op.src_kind == FIO_KIND_REG and size > 0:
        if mode == MODE_SPLICE:
            if _stage_splice(op):
                return 0
        else:
            if mode == MODE_COPY and op.dst_kind == FIO_KIND_REG and FIO_HAVE_COPY_FILE_RANGE:
                if _stage_copy_file_range(op):
                    return 0
            if FIO_HAVE_SENDFILE and _stage_sendfile(op):
                return 0
        _stage_loop(op, False)
        return 0
    if op.pos < 0 and _needs_peek(op):
        _stage_loop(op, True)
        return 0
    if _stage_splice(op):
        return 0
    _stage_loop(op, False)
    return 0


cdef int _fd_kind(int fd, fio_off_t *size) except -1:
    cdef int kind = fio_fstat_kind(fd, size)
    if kind < 0:
        raise error_from_errno(errno, 0)
    return kind


cdef void _restore(_Op op) noexcept:
    """Leave a positioned source after the last byte delivered; resync buffered objects."""
    try:
        if op.pos >= 0 and op.sent:
            if op.src_ep == EP_BUFFERED:
                op.src.seek(op.pos)
            else:
                fio_lseek(op.src_fd, op.pos, SEEK_SET)
        if op.dst_ep == EP_BUFFERED and op.sent:
            _policy.resync_buffered(op.dst, op.dst_fd)
    except Exception:
        pass  # the transfer's own result or error matters more than a failed resync


cdef object _execute(_Op op, int mode, long long size):
    try:
        try:
            _dispatch(op, mode, size)
            return op.sent
        finally:
            _restore(op)
    except BaseException as exc:
        if getattr(exc, "transferred", None) is None:
            with_progress(exc, op.sent)
        raise


cdef object _run(object src, object dst, long long offset, long long count, object timeout,
                 int mode):
    """Resolve both ends, pick the stages of ``mode``, run them, leave positions right."""
    cdef fio_off_t size = 0, dummy
    cdef _Op op
    src_ep, src_fd = _endpoint(src, False)
    dst_ep, dst_fd = _endpoint(dst, True)
    C.calls += 1
    op = _Op()
    op.src, op.src_ep, op.src_fd = src, src_ep, src_fd
    op.dst, op.dst_ep, op.dst_fd = dst, dst_ep, dst_fd
    op.remaining = count
    op.timeout = timeout
    try:
        if dst_ep == EP_BUFFERED:
            _policy.prepare_buffered_destination(dst)
        if src_ep == EP_OBJECT:
            if offset >= 0:
                src.seek(offset)
        else:
            op.src_kind = _fd_kind(op.src_fd, &size)
            if op.src_kind == FIO_KIND_REG:
                if offset >= 0:
                    op.pos = offset
                elif src_ep == EP_BUFFERED:
                    op.pos = _policy.buffered_source_position(src)
                else:
                    op.pos = fio_lseek(op.src_fd, 0, SEEK_CUR)
                    if op.pos < 0:
                        raise error_from_errno(errno, 0)
                if size > 0:  # st_size 0 may be a /proc file: read it to EOF
                    left = size - op.pos if size > op.pos else 0
                    op.remaining = left if count < 0 or count > left else count
            else:
                if offset >= 0:
                    os.lseek(op.src_fd, offset, os.SEEK_SET)  # ESPIPE for pipes, sockets
                if src_ep == EP_BUFFERED or _parked:
                    op.pending = _policy.stream_pending(src, src_ep, src_fd, count)
        if op.remaining == 0 and not op.pending:
            return 0
        if dst_ep != EP_OBJECT and not (mode == MODE_SENDFILE and op.src_kind == FIO_KIND_REG):
            op.dst_kind = _fd_kind(op.dst_fd, &dummy)
    except BaseException as exc:
        if getattr(exc, "transferred", None) is None:
            with_progress(exc, 0)
        raise
    return _execute(op, mode, size)


cdef inline object _checked_timeout(object timeout):
    if timeout is not None:
        check_timeout(timeout)
    return timeout


cdef object _sendfile_fast(object sock, object file, object ftype, object offset, object count):
    """sendfile of a regular file to a socket object, all in C while nothing goes wrong."""
    cdef long long start = check_offset(offset)
    cdef long long limit = check_count(count)
    cdef long long want
    cdef int out_fd, in_fd, err, kind
    cdef fio_off_t size = 0, pos, off
    cdef fio_ssize_t k
    cdef _Op op
    if type(sock) is int:
        if sock < 0 or sock > 0x7FFFFFFF:
            return None
        out_fd = sock
    else:
        if fio_descr_long(_socket_type, sock) != SOCK_STREAM:
            return None
        out_fd = _socket_fileno(sock)
    if ftype is int:
        if file < 0 or file > 0x7FFFFFFF:
            return None
        in_fd = file
    elif ftype is _BufferedReader:
        in_fd = _br_fileno(file)
    else:
        in_fd = _fileio_fileno(file)
    if out_fd < 0:
        return None
    # fstat for the size: sendfile is then asked for exactly the bytes the file has (a larger
    # count sets SPLICE_F_MORE on the last piece, which may leave it corked in TCP), and a
    # file that is not regular goes to the general path. Then one sendfile, one lseek.
    kind = fio_fstat_kind(in_fd, &size)
    if kind != FIO_KIND_REG or size <= 0:
        return None
    if start >= 0:
        pos = start
    elif ftype is _BufferedReader:
        pos = _br_tell(file)
    else:
        pos = fio_lseek(in_fd, 0, SEEK_CUR)
        if pos < 0:
            return None
    want = size - pos if size > pos else 0
    if limit >= 0 and limit < want:
        want = limit
    if want == 0 or want > MAX_CHUNK:
        return None
    off = pos
    with nogil:
        k = fio_sendfile(out_fd, in_fd, &off, <size_t>want)
        err = errno
    if k == want:
        C.calls += 1
        C.syscalls += 1
        C.bytes += <unsigned long long>k
        C.sendfile_bytes += <unsigned long long>k
        if ftype is _BufferedReader:
            _br_seek(file, pos + k)
        else:
            fio_lseek(in_fd, pos + k, SEEK_SET)
        return k
    if k == 0:  # the file shrank since fstat: it ends the transfer
        C.calls += 1
        C.syscalls += 1
        return 0
    if k < 0 and not (err == EINTR or _again(err)):
        if err in FALLBACK_ERRNOS:
            return None  # the general path repeats the call and falls back
        C.calls += 1
        C.syscalls += 1
        raise error_from_errno(err, 0)
    # interrupted, would block or short of EOF: the general engine carries on from here
    C.calls += 1
    C.syscalls += 1
    op = _Op()
    op.src, op.src_ep, op.src_fd = file, EP_BUFFERED if ftype is _BufferedReader else EP_FD, in_fd
    op.dst, op.dst_ep, op.dst_fd = sock, EP_FD, out_fd
    op.src_kind = FIO_KIND_REG
    op.pos = pos
    op.remaining = want
    try:
        if k > 0:
            op.advance(k, &C.sendfile_bytes)
            _checkpoint(op, True)
        else:
            _retry(op, err, 1)
    except BaseException as exc:
        _restore(op)
        if getattr(exc, "transferred", None) is None:
            with_progress(exc, op.sent)
        raise
    return _execute(op, MODE_SENDFILE, size)


# ---- public functions ----------------------------------------------------------------------


def sendfile(sock, file, offset=None, count=None, *, timeout=None):
    """Send ``file``'s bytes to ``sock`` and return the number of bytes sent.

    ``sock`` is a connected stream socket or any writable fd; ``file`` a binary file object or
    fd. ``offset=None`` starts at the file's current position; ``count=None`` sends to EOF (the
    size when the call starts; a file that shrinks simply ends the transfer). The file
    position ends after the last byte sent, also when an exception interrupts, as
    ``socket.sendfile`` does. Sources sendfile cannot read (BytesIO, pipes) use splice or a
    read-and-send loop.
    """
    cdef object ftype = type(file)
    cdef object stype = type(sock)
    if timeout is None and (stype is _Socket or stype is int) and (
        ftype is _BufferedReader or ftype is int or ftype is _FileIO
    ):
        result = _sendfile_fast(sock, file, ftype, offset, count)
        if result is not None:
            return result
    return _run(file, sock, check_offset(offset), check_count(count), _checked_timeout(timeout),
                MODE_SENDFILE)


def splice(src, dst, count=None, *, timeout=None):
    """Move bytes from ``src`` to ``dst`` (fds, sockets, files) through a kernel pipe, until
    EOF or ``count``; returns the bytes moved.

    The internal pipes are non-blocking, close-on-exec, grown to ``/proc/sys/fs/pipe-max-size``
    when permitted and kept in a small pool; a pipe that may still hold data is closed, never
    reused. Where splice is missing or refuses the fds, a receive-and-send loop does the work.
    """
    return _run(src, dst, -1, check_count(count), _checked_timeout(timeout), MODE_SPLICE)


def copy(src, dst, count=None, *, timeout=None):
    """Copy ``src`` to ``dst`` until EOF or ``count`` and return the bytes copied.

    The path is chosen like Go's ``io.Copy``: copy_file_range then sendfile for file to file,
    sendfile for file to socket or pipe, splice from sockets and pipes, and a buffered loop for
    objects without a usable descriptor (BytesIO, gzip files, TLS sockets, anything with
    ``readinto``/``read`` and ``write``). Text files raise ``TypeError``; the unread bytes of a
    buffered reader are copied first.
    """
    return _run(src, dst, -1, check_count(count), _checked_timeout(timeout), MODE_COPY)


# ---- relay ---------------------------------------------------------------------------------


cdef int _relay_fd(object obj) except -1:
    cdef fio_off_t size
    kind, fd = _endpoint(obj, True)
    if kind != EP_FD:
        raise TypeError(f"relay needs plain stream sockets or fds, not {type(obj).__name__}")
    if _fd_kind(fd, &size) != FIO_KIND_SOCK:
        raise ValueError(f"relay needs connected stream sockets; fd {fd} is not a socket")
    return fd


def relay(a, b, *, idle_timeout=None):
    """Relay two connected stream sockets both ways until both have reached EOF.

    An EOF in one direction is passed on with ``shutdown(SHUT_WR)`` while the other keeps
    flowing. ``idle_timeout`` ends a relay in which nothing moved for that long with
    ``TimeoutError``. Returns ``(bytes a to b, bytes b to a)``; errors carry that pair in
    ``.transferred``. The native twin runs the whole loop in C without the GIL.
    """
    return _relay(a, b, idle_timeout, -1)[:2]


def relay_until(a, b, idle_timeout, int stop_fd):
    """``relay`` that also stops when ``stop_fd`` becomes readable (``fastio.aio.relay`` runs
    it in a thread of its own and closes the write end of that pipe to cancel it). Returns
    ``(a to b, b to a, unsent)``: ``unsent`` is None when the relay ended by itself, else the
    bytes it had taken and the destinations did not take at once when it stopped
    ``(for b, for a)``: nothing is lost."""
    if stop_fd < 0:
        raise ValueError(f"stop_fd must be a file descriptor, got {stop_fd}")
    return _relay(a, b, idle_timeout, stop_fd)


cdef tuple _relay(a, b, idle_timeout, int stop_fd):
    cdef double idle = check_timeout(idle_timeout, "idle_timeout")
    cdef int fa = _relay_fd(a)
    cdef int fb = _relay_fd(b)
    cdef fio_relay r
    cdef int rc, i
    cdef int pipes[2][2]
    cdef long caps[2]
    cdef int was_nonblocking[2]
    cdef list buffers = [None, None]
    cdef object unsent = None
    cdef list held
    cdef size_t n
    if fa == fb:
        raise ValueError("relay needs two different sockets")
    memset(&r, 0, sizeof(r))
    r.idle_ms = -1 if idle < 0.0 else <int>(idle * 1000.0 + 0.999)
    r.stop_fd = stop_fd

    C.calls += 1
    pipes[0][0] = pipes[0][1] = pipes[1][0] = pipes[1][1] = -1
    was_nonblocking[0] = was_nonblocking[1] = -1
    try:
        for i in range(2):
            r.d[i].src = fa if i == 0 else fb
            r.d[i].dst = fb if i == 0 else fa
            buffers[i] = _buffer_get()
            r.d[i].buf = PyByteArray_AS_STRING(<bytearray>buffers[i])
            r.d[i].buf_cap = <size_t>BUFFER_SIZE
            r.d[i].pipe_r = r.d[i].pipe_w = -1
            if FIO_HAVE_SPLICE:
                _pipe_get(pipes[i], &caps[i])
                r.d[i].pipe_r = pipes[i][0]
                r.d[i].pipe_w = pipes[i][1]
                r.d[i].pipe_cap = <size_t>caps[i]
        for i in range(2):
            was_nonblocking[i] = fio_set_nonblock(fa if i == 0 else fb, 1)
            if was_nonblocking[i] < 0:
                raise error_from_errno(errno, 0)
        r.last_progress = fio_monotonic()
        # Python runs signal handlers in the main thread only: elsewhere the loop never yields
        r.check_ms = 50 if threading.current_thread() is threading.main_thread() else -1
        r.last_check = fio_monotonic_coarse()
        while True:
            with nogil:
                rc = fio_relay_run(&r)
            if rc == 0:
                break
            if rc == -3:
                with nogil:
                    fio_relay_settle(&r)
                held = []
                for i in range(2):
                    n = fio_relay_held(&r.d[i])
                    data = PyBytes_FromStringAndSize(NULL, <Py_ssize_t>n)
                    if n and fio_relay_take(&r.d[i], PyBytes_AS_STRING(data), n) < 0:
                        raise error_from_errno(errno, 0)
                    held.append(data)
                unsent = tuple(held)
                break
            if rc == -2:
                raise timeout_error(0)
            if rc == -4 or r.err == EINTR:
                run_signal_handlers(0)
                continue
            raise error_from_errno(r.err, 0)
    except BaseException as exc:
        exc.transferred = (r.d[0].moved, r.d[1].moved)
        if isinstance(exc, BlockingIOError):
            exc.characters_written = r.d[0].moved + r.d[1].moved
        raise
    finally:
        for i in range(2):
            if was_nonblocking[i] == 0:
                fio_set_nonblock(fa if i == 0 else fb, 0)
            if pipes[i][0] >= 0:
                _pipe_put(pipes[i], caps[i], r.d[i].held == 0)
            if buffers[i] is not None:
                _buffer_put(<bytearray>buffers[i])
        C.syscalls += r.syscalls
        C.would_block += r.would_block
        C.eintr += r.eintr
        C.partial += r.partial
        C.fallbacks += r.fallbacks
        C.splice_bytes += r.splice_bytes
        C.loop_bytes += r.loop_bytes
        C.bytes += r.d[0].moved + r.d[1].moved
    return (r.d[0].moved, r.d[1].moved, unsent)
