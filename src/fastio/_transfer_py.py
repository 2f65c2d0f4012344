"""Python twin of fastio's zero-copy transfer: ``sendfile``, ``splice``, ``copy``, ``relay``.

The same algorithm as the native twin (``_transfer_c.pyx``) through the ``os`` module:
``os.sendfile``, ``os.splice`` (Python 3.10+), ``os.copy_file_range`` where they exist, and a
portable loop with a reusable 256 KiB buffer everywhere else. Argument checks, endpoint rules,
timeouts and progress on errors come from ``_policy`` (shared with the native twin).

How a transfer runs (both twins): the source is *positioned* (a regular file: bytes are read
at an explicit offset that advances only by the bytes delivered, and the file position is set
there at the end, also on errors) or a *stream* (pipe, socket, device, object). Stages are
tried in order (copy_file_range, sendfile, splice, loop); a stage that fails with a
"not supported" errno before any byte moved hands over to the next one.
"""

import errno
import os
import select
import socket
import stat
import sys
import time

from . import _policy, _stats
from ._policy import (
    BUFFER_SIZE,
    COPY_FILE_RANGE_FALLBACK_ERRNOS,
    EP_BUFFERED,
    EP_FD,
    EP_OBJECT,
    FALLBACK_ERRNOS,
    MAX_CHUNK,
)

__all__ = ["copy", "relay", "sendfile", "splice"]

_counters = _stats.Counters(*_policy.TRANSFER_FIELDS)
_stats.register("python", "transfer", _counters.snapshot)
_calls = _stats.syscalls("transfer")  # looked up per call, so profile() sees them

_AGAIN = frozenset((errno.EAGAIN, errno.EWOULDBLOCK))
_HAVE_SENDFILE = hasattr(os, "sendfile")
_HAVE_SPLICE = hasattr(os, "splice")
_HAVE_COPY_FILE_RANGE = hasattr(os, "copy_file_range")
_HAVE_READV = hasattr(os, "readv")
_HAVE_PREADV = hasattr(os, "preadv")
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)

# Linux's sendfile takes offset=None (the fd position, which the kernel advances); elsewhere
# os.sendfile needs an int offset.
_KERNEL_POSITION = sys.platform.startswith("linux")

KIND_OTHER, KIND_REG, KIND_PIPE, KIND_SOCK = 0, 1, 2, 3


def _durable(box, call, *args):
    """``call(*args)``, a system call that moves bytes, with its count appended to ``box``.

    CPython runs a pending signal handler as soon as a builtin returns, before the result is
    stored: if the handler raises, the count of a call the signal cut short (a partial read or
    write) is lost, and with it bytes taken from a stream or the position to resume from.
    Called from C (``map`` inside ``list.extend``), the count is in ``box`` before the
    interpreter looks at signals; the caller's ``except`` path takes the truth from there.
    (Under a profiling or fault layer the call is Python code and this guarantee is void.)
    """
    box.extend(map(call, *[(a,) for a in args]))
    return box[-1]


def _resync(op, sent):
    """After an exception: ``sent`` is the truth; bring the derived fields in line."""
    if sent != op.sent:
        op.move(sent - op.sent)


def _read_into(fd, chunk):
    """One read of ``fd`` into ``chunk`` (os.readv where it exists)."""
    if _HAVE_READV:
        return _calls.readv(fd, [chunk])
    data = _calls.read(fd, len(chunk))
    chunk[: len(data)] = data
    return len(data)


def _pread_into(fd, chunk, pos):
    """One read of ``fd`` at ``pos`` into ``chunk``, the fd position untouched where possible."""
    if _HAVE_PREADV:
        return _calls.preadv(fd, [chunk], pos)
    if hasattr(os, "pread"):
        data = _calls.pread(fd, len(chunk), pos)
    else:  # Windows: no positioned read; the position is set at the end of the call anyway
        _calls.lseek(fd, pos, os.SEEK_SET)
        data = _calls.read(fd, len(chunk))
    chunk[: len(data)] = data
    return len(data)


MODE_SENDFILE, MODE_SPLICE, MODE_COPY = 0, 1, 2


def _kind(fd):
    """(kind, size) of an fd from fstat."""
    st = _calls.fstat(fd)
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return KIND_REG, st.st_size
    if stat.S_ISFIFO(mode):
        return KIND_PIPE, 0
    if stat.S_ISSOCK(mode):
        return KIND_SOCK, 0
    return KIND_OTHER, 0


# ---- the splice pipe pool and the loop buffers ----------------------------------------------

#: Idle pipes kept for reuse; a pipe that may still hold bytes is closed instead.
PIPE_POOL_SIZE = 4
_pipes = []
_buffers = []
_pipe_max_size = None


def _pipe_target_size():
    global _pipe_max_size
    if _pipe_max_size is None:
        try:
            with open("/proc/sys/fs/pipe-max-size", "rb") as f:
                _pipe_max_size = int(f.read().strip())
        except (OSError, ValueError):
            _pipe_max_size = 0
    return _pipe_max_size


def _pipe_get():
    if _pipes:
        try:
            pipe = _pipes.pop()
        except IndexError:  # another thread took the last one
            pass
        else:
            _counters.pipes_reused += 1
            return pipe
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    capacity = 65536
    try:
        import fcntl

        target = _pipe_target_size()
        if target > capacity:
            try:
                fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, target)
            except OSError:
                pass  # EPERM past the user's pipe quota: keep the default size
        capacity = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
    except (ImportError, AttributeError, OSError):
        pass
    _counters.pipes_created += 1
    return (r, w, capacity)


def _pipe_put(pipe, clean):
    if clean and len(_pipes) < PIPE_POOL_SIZE:
        _pipes.append(pipe)
        return
    os.close(pipe[0])
    os.close(pipe[1])
    _counters.pipes_closed += 1


def _forget_pipes():
    """In a forked child the pooled pipes are shared with the parent: never reuse them."""
    while _pipes:
        r, w, _ = _pipes.pop()
        os.close(r)
        os.close(w)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pipes)


def _buffer_get():
    try:
        return _buffers.pop()
    except IndexError:
        return bytearray(BUFFER_SIZE)


def _buffer_put(buffer):
    if len(_buffers) < 4:
        _buffers.append(buffer)


# ---- one transfer --------------------------------------------------------------------------


class _Op:
    """State of one call: the two ends, the budget of each side, and the progress so far."""

    __slots__ = (
        "budget",
        "deadline",
        "dst",
        "dst_ep",
        "dst_fd",
        "dst_kind",
        "pending",
        "pos",
        "remaining",
        "sent",
        "src",
        "src_ep",
        "src_fd",
        "src_kind",
        "timeout",
    )

    def __init__(self, src, src_ep, src_fd, dst, dst_ep, dst_fd, count, timeout):
        self.src, self.src_ep, self.src_fd = src, src_ep, src_fd
        self.dst, self.dst_ep, self.dst_fd = dst, dst_ep, dst_fd
        self.src_kind = self.dst_kind = KIND_OTHER
        self.remaining = count  # -1: until EOF
        self.timeout = timeout
        self.budget = [None, None]
        self.deadline = [-2.0, -2.0]
        self.sent = 0
        self.pos = -1  # >= 0: positioned source, offset of the next byte to deliver
        self.pending = b""

    def want(self, limit=MAX_CHUNK):
        r = self.remaining
        return limit if r < 0 or r > limit else r

    def move(self, n):
        """``n`` more bytes delivered: the progress, what is left, the source position."""
        self.sent += n
        if self.remaining > 0:
            self.remaining -= n
        if self.pos >= 0:
            self.pos += n

    def advance(self, n, field, wanted):
        """One system call delivered ``n`` of ``wanted`` bytes: ``move`` and the counters.
        (A signal handler that raises before this runs hides ``n``; every caller's except
        path recovers the truth: ``_resync`` or ``_recover_progress``.)"""
        self.move(n)
        _counters.syscalls += 1
        _counters.bytes += n
        setattr(_counters, field, getattr(_counters, field) + n)
        if n < wanted:
            _counters.partial += 1

    def side_budget(self, side):
        budget = self.budget[side]
        if budget is None:
            obj, fd = (self.dst, self.dst_fd) if side else (self.src, self.src_fd)
            budget = self.budget[side] = _policy.resolve_timeout(obj, fd, self.timeout)
        return budget

    def wait(self, side):
        """The fd of ``side`` (0 source, 1 destination) would block: wait or raise."""
        budget = self.side_budget(side)
        if budget == 0.0:
            raise _policy.would_block(self.sent)
        if self.deadline[side] == -2.0:  # one deadline per side, from its first wait
            self.deadline[side] = _policy.deadline_after(budget)
        fd = self.dst_fd if side else self.src_fd
        _policy.wait_fd(fd, side == 1, self.deadline[side], self.sent)

    def blocked_side(self):
        """A splice between a pipe and another fd said EAGAIN: which end is not ready?"""
        poller = select.poll()
        poller.register(self.src_fd, select.POLLIN)
        return 1 if _calls.poll(poller, 0) else 0

    def error(self, exc):
        _counters.syscalls += 1
        if exc.errno in _AGAIN:
            _counters.would_block += 1
            return True
        return False


def _recover_progress(op):
    """CPython runs signal handlers right after a C call returns, so a handler that raises
    there hides that call's result; the file position the kernel advanced tells the truth."""
    try:
        actual = _calls.lseek(op.src_fd, 0, os.SEEK_CUR)
    except OSError:
        return
    if actual > op.pos:
        op.move(actual - op.pos)


def _kernel_positioned(op, loop):
    """Run ``loop`` with the source's fd position as the offset (the kernel advances it, see
    ``_recover_progress``); a buffered object's own idea of its fd position is put back."""
    saved = _calls.lseek(op.src_fd, 0, os.SEEK_CUR) if op.src_ep == EP_BUFFERED else -1
    _calls.lseek(op.src_fd, op.pos, os.SEEK_SET)
    try:
        return loop(op)
    except BaseException:
        _recover_progress(op)
        raise
    finally:
        if saved >= 0:
            _calls.lseek(op.src_fd, saved, os.SEEK_SET)


def _stage_copy_file_range(op):
    """File to file inside the kernel. True when finished, False to fall back."""
    return _kernel_positioned(op, _copy_file_range_loop)


def _copy_file_range_loop(op):
    while op.remaining:
        n = op.want()
        try:
            k = _calls.copy_file_range(op.src_fd, op.dst_fd, n)
        except OSError as exc:
            op.error(exc)
            if op.sent == 0 and exc.errno in COPY_FILE_RANGE_FALLBACK_ERRNOS:
                _counters.fallbacks += 1
                return False
            raise _policy.with_progress(exc, op.sent) from None
        if k == 0:
            _counters.syscalls += 1
            # some filesystems copy nothing: let sendfile say whether it is EOF
            return op.sent != 0
        op.advance(k, "copy_file_range_bytes", n)
    return True


def _stage_sendfile(op):
    """A positioned (regular) file to any fd."""
    if not _KERNEL_POSITION:
        return _sendfile_loop(op)
    return _kernel_positioned(op, _sendfile_loop)


def _sendfile_loop(op):
    while op.remaining:
        n = op.want()
        try:
            k = _calls.sendfile(op.dst_fd, op.src_fd, None if _KERNEL_POSITION else op.pos, n)
        except OSError as exc:
            if op.error(exc):
                op.wait(1)
                continue
            if op.sent == 0 and exc.errno in FALLBACK_ERRNOS:
                _counters.fallbacks += 1
                return False
            raise _policy.with_progress(exc, op.sent) from None
        if k == 0:  # the file ended early (it shrank): never spin
            _counters.syscalls += 1
            return True
        op.advance(k, "sendfile_bytes", n)
    return True


def _splice_direct(op):
    """One end is a pipe: splice straight between them (nothing is ever held in between)."""
    sent0 = op.sent
    box = []  # the count of every splice (see _durable)
    try:
        return _splice_direct_loop(op, box)
    except BaseException:
        _resync(op, sent0 + sum(box))
        raise


def _splice_direct_loop(op, box):
    while op.remaining:
        n = op.want()
        offset = op.pos if op.pos >= 0 else None
        try:
            k = _durable(box, _calls.splice, op.src_fd, op.dst_fd, n, offset, None, _SPLICE_FLAGS)
        except OSError as exc:
            if op.error(exc):
                op.wait(op.blocked_side())
                continue
            if op.sent == 0 and exc.errno in FALLBACK_ERRNOS:
                _counters.fallbacks += 1
                return False
            raise _policy.with_progress(exc, op.sent) from None
        if k == 0:
            _counters.syscalls += 1
            return True
        op.advance(k, "splice_bytes", k)
    return True


def _splice_via_pipe(op):
    """Neither end is a pipe: source -> pooled internal pipe -> destination."""
    pipe = _pipe_get()
    r, w, capacity = pipe
    held = 0
    sent0 = op.sent
    out = []  # the count of every splice out of the pipe (see _durable)
    try:
        while op.remaining:
            if held == 0:
                n = op.want(capacity)
                try:
                    if op.pos >= 0:
                        k = _calls.splice(op.src_fd, w, n, op.pos, None, _SPLICE_FLAGS)
                    else:
                        k = _calls.splice(op.src_fd, w, n, flags=_SPLICE_FLAGS)
                except OSError as exc:
                    if op.error(exc):
                        op.wait(0)
                        continue
                    if op.sent == 0 and exc.errno in FALLBACK_ERRNOS:
                        _counters.fallbacks += 1
                        return False
                    raise _policy.with_progress(exc, op.sent) from None
                held = k
                _counters.syscalls += 1
                if k == 0:
                    return True
            try:
                k = _durable(out, _calls.splice, r, op.dst_fd, held, None, None, _SPLICE_FLAGS)
            except OSError as exc:
                if op.error(exc):
                    op.wait(1)
                    continue
                if op.sent == 0 and exc.errno in FALLBACK_ERRNOS:
                    _counters.fallbacks += 1
                    if op.pos < 0:  # a stream's bytes cannot be read again: keep them
                        op.pending = _calls.read(r, held)
                    else:
                        _calls.read(r, held)
                    held = 0
                    return False
                raise _policy.with_progress(exc, op.sent) from None
            held -= k
            op.advance(k, "splice_bytes", k + held)
        return True
    except BaseException:
        _resync(op, sent0 + sum(out))  # a handler may have raised before the accounting
        rest = _policy.drain_pipe(r)
        if op.pos < 0:  # a stream's bytes cannot be read again: keep what the pipe holds
            _policy.park(op.src_fd, rest)
        held = -1
        raise
    finally:
        _pipe_put(pipe, held == 0)


def _write_all(op, view, field):
    """Deliver all of ``view`` to the destination (waits or raises when it would block)."""
    sent0 = op.sent
    box = []  # the count of every write (see _durable)
    try:
        _write_loop(op, view, field, box)
    except BaseException:
        _resync(op, sent0 + sum(box))
        raise


def _write_loop(op, view, field, box):
    done = 0
    total = len(view)
    while done < total:
        if op.dst_ep == EP_OBJECT:
            k = _policy.write_object(op.dst, view[done:])
            box.append(k)
            op.advance(k, field, k)
            if done + k < total:
                raise _policy.would_block(op.sent)
        else:
            try:
                k = _durable(box, _calls.write, op.dst_fd, view[done:])
            except OSError as exc:
                if op.error(exc):
                    op.wait(1)
                    continue
                raise _policy.with_progress(exc, op.sent) from None
            op.advance(k, field, total - done)
        done += k


def _send_pending(op):
    """Deliver ``op.pending`` (a stream's bytes); what a failure leaves undelivered is parked."""
    before = op.sent
    data, op.pending = op.pending, b""
    try:
        _write_all(op, memoryview(data), "loop_bytes")
    except BaseException:
        _policy.park(op.src_fd, data[op.sent - before :])
        raise


def _stage_loop(op, peek):
    """The portable loop: read into a reusable 256 KiB buffer, write it all out.

    A positioned source is read with pread at the delivery offset; with ``peek`` a socket
    source is read with MSG_PEEK and only the delivered bytes are consumed, so a destination
    that would block or time out never makes bytes vanish.
    """
    buffer = _buffer_get()
    view = memoryview(buffer)
    wrapper = _policy.socket_over(op.src_fd) if peek else None
    got = []  # the count of the last read of a stream (see _durable)
    try:
        if op.pending:
            _send_pending(op)
        while op.remaining:
            n = op.want(BUFFER_SIZE)
            chunk = view[:n]
            if op.src_ep == EP_OBJECT:
                k = _policy.read_object(op.src, chunk)
                _counters.syscalls += 1
                if k < 0:
                    raise _policy.would_block(op.sent)
            else:
                try:
                    if op.pos >= 0:
                        k = _pread_into(op.src_fd, chunk, op.pos)
                    elif peek:
                        k = _calls.recv_into(wrapper, chunk, n, socket.MSG_PEEK)
                    elif _HAVE_READV:
                        del got[:]
                        k = _durable(got, _calls.readv, op.src_fd, [chunk])
                    else:
                        k = _read_into(op.src_fd, chunk)
                except OSError as exc:
                    if op.error(exc):
                        op.wait(0)
                        continue
                    raise _policy.with_progress(exc, op.sent) from None
                _counters.syscalls += 1
            if k == 0:
                break
            before = op.sent
            try:
                _write_all(op, view[:k], "loop_bytes")
            finally:
                del got[:]  # these bytes are now delivered, or parked just below
                delivered = op.sent - before
                if peek:
                    if delivered:
                        _calls.recv_into(wrapper, view[:delivered], delivered)
                elif delivered < k and op.pos < 0:
                    # bytes read but not delivered: parked for the next transfer from a
                    # stream, or back where a seekable object allows
                    if op.src_ep != EP_OBJECT:
                        _policy.park(op.src_fd, view[delivered:k])
                    elif getattr(op.src, "seekable", None) and op.src.seekable():
                        op.src.seek(delivered - k, os.SEEK_CUR)
        return True
    except BaseException:
        if got and op.pos < 0 and not peek:  # a read whose count a raising handler hid
            _policy.park(op.src_fd, view[: got[-1]])
        raise
    finally:
        if wrapper is not None:
            wrapper.detach()
        _buffer_put(buffer)


def _stage_splice(op):
    if not _HAVE_SPLICE:
        return False
    if op.src_kind == KIND_PIPE or op.dst_kind == KIND_PIPE:
        return _splice_direct(op)
    return _splice_via_pipe(op)


def _needs_peek(op):
    """A socket source whose destination may stop us (non-blocking or timeout) is peeked."""
    return (
        op.pos < 0
        and op.src_kind == KIND_SOCK
        and op.dst_ep != EP_OBJECT
        and op.dst_kind != KIND_PIPE
        and op.side_budget(1) >= 0.0
    )


def _run(src, dst, offset, count, timeout, mode):
    """Resolve both ends, pick the stages of ``mode``, run them, leave positions right."""
    src_ep, src_fd = _policy.endpoint(src, False)
    dst_ep, dst_fd = _policy.endpoint(dst, True)
    _counters.calls += 1
    op = _Op(src, src_ep, src_fd, dst, dst_ep, dst_fd, count, timeout)
    try:
        try:
            if dst_ep == EP_BUFFERED:
                _policy.prepare_buffered_destination(dst)
            size = 0
            if src_ep == EP_OBJECT:
                if offset >= 0:
                    src.seek(offset)
            else:
                op.src_kind, size = _kind(src_fd)
                if op.src_kind == KIND_REG:
                    if offset >= 0:
                        op.pos = offset
                    elif src_ep == EP_BUFFERED:
                        op.pos = _policy.buffered_source_position(src)
                    else:
                        op.pos = _calls.lseek(src_fd, 0, os.SEEK_CUR)
                    if size > 0:  # st_size 0 may be a /proc file: read it to EOF
                        left = size - op.pos if size > op.pos else 0
                        op.remaining = left if count < 0 or count > left else count
                else:
                    if offset >= 0:
                        _calls.lseek(src_fd, offset, os.SEEK_SET)  # ESPIPE for pipes, sockets
                    if src_ep == EP_BUFFERED or _policy.PARKED:
                        op.pending = _policy.stream_pending(src, src_ep, src_fd, count)
            if op.remaining == 0 and not op.pending:
                return 0
            if dst_ep != EP_OBJECT and not (mode == MODE_SENDFILE and op.src_kind == KIND_REG):
                op.dst_kind = _kind(dst_fd)[0]
            _dispatch(op, mode, size)
            return op.sent
        finally:
            if op.pos >= 0 and op.sent:
                if src_ep == EP_BUFFERED:
                    src.seek(op.pos)
                else:
                    _calls.lseek(src_fd, op.pos, os.SEEK_SET)
            if dst_ep == EP_BUFFERED and op.sent:
                _policy.resync_buffered(dst, dst_fd)
    except BaseException as exc:
        if getattr(exc, "transferred", None) is None:
            _policy.with_progress(exc, op.sent)
        raise


def _dispatch(op, mode, size):
    if op.pending:
        # bytes taken from the stream before (parked, or a buffered reader's) go first
        _send_pending(op)
        if op.remaining == 0:
            return
    if op.src_ep == EP_OBJECT or op.dst_ep == EP_OBJECT:
        _stage_loop(op, False)
        return
    if op.src_kind == KIND_REG and size > 0:
        if mode == MODE_SPLICE:
            if _stage_splice(op):
                return
        else:
            if mode == MODE_COPY and op.dst_kind == KIND_REG and _HAVE_COPY_FILE_RANGE:
                if _stage_copy_file_range(op):
                    return
            if _HAVE_SENDFILE and _stage_sendfile(op):
                return
        _stage_loop(op, False)
        return
    if op.pos < 0 and _needs_peek(op):
        _stage_loop(op, True)
        return
    if _stage_splice(op):
        return
    _stage_loop(op, False)


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
    offset = _policy.check_offset(offset)
    count = _policy.check_count(count)
    if timeout is not None:
        _policy.check_timeout(timeout)
    return _run(file, sock, offset, count, timeout, MODE_SENDFILE)


def splice(src, dst, count=None, *, timeout=None):
    """Move bytes from ``src`` to ``dst`` (fds, sockets, files) through a kernel pipe, until
    EOF or ``count``; returns the bytes moved.

    The internal pipes are non-blocking, close-on-exec, grown to ``/proc/sys/fs/pipe-max-size``
    when permitted and kept in a small pool; a pipe that may still hold data is closed, never
    reused. Where splice is missing or refuses the fds, a receive-and-send loop does the work.
    """
    count = _policy.check_count(count)
    if timeout is not None:
        _policy.check_timeout(timeout)
    return _run(src, dst, -1, count, timeout, MODE_SPLICE)


def copy(src, dst, count=None, *, timeout=None):
    """Copy ``src`` to ``dst`` until EOF or ``count`` and return the bytes copied.

    The path is chosen like Go's ``io.Copy``: copy_file_range then sendfile for file to file,
    sendfile for file to socket or pipe, splice from sockets and pipes, and a buffered loop for
    objects without a usable descriptor (BytesIO, gzip files, TLS sockets, anything with
    ``readinto``/``read`` and ``write``). Text files raise ``TypeError``; the unread bytes of a
    buffered reader are copied first.
    """
    count = _policy.check_count(count)
    if timeout is not None:
        _policy.check_timeout(timeout)
    return _run(src, dst, -1, count, timeout, MODE_COPY)


# ---- relay ---------------------------------------------------------------------------------


def _relay_fd(obj):
    kind, fd = _policy.endpoint(obj, True)
    if kind != EP_FD:
        raise TypeError(f"relay needs plain stream sockets or fds, not {type(obj).__name__}")
    if _kind(fd)[0] != KIND_SOCK:
        raise ValueError(f"relay needs connected stream sockets; fd {fd} is not a socket")
    return fd


def _shutdown_write(fd):
    sock = socket.socket(fileno=fd)
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:  # the peer is already gone: nothing to pass on
            raise
    finally:
        sock.detach()


class _Direction:
    __slots__ = ("buffer", "dst", "end", "eof", "moved", "shut", "src", "start", "view")

    def __init__(self, src, dst):
        self.src, self.dst = src, dst
        self.buffer = _buffer_get()
        self.view = memoryview(self.buffer)
        self.start = self.end = self.moved = 0
        self.eof = self.shut = False


def relay(a, b, *, idle_timeout=None):
    """Relay two connected stream sockets both ways until both have reached EOF.

    An EOF in one direction is passed on with ``shutdown(SHUT_WR)`` while the other keeps
    flowing. ``idle_timeout`` ends a relay in which nothing moved for that long with
    ``TimeoutError``. Returns ``(bytes a to b, bytes b to a)``; errors carry that pair in
    ``.transferred``. The native twin runs the whole loop in C without the GIL.
    """
    return _relay(a, b, idle_timeout, -1)[:2]


def relay_until(a, b, idle_timeout, stop_fd):
    """``relay`` that also stops when ``stop_fd`` becomes readable (``fastio.aio.relay`` runs
    it in a thread of its own and closes the write end of that pipe to cancel it). Returns
    ``(a to b, b to a, unsent)``: ``unsent`` is None when the relay ended by itself, else the
    bytes it had taken and the destinations did not take at once when it stopped
    ``(for b, for a)``: nothing is lost."""
    if stop_fd < 0:
        raise ValueError(f"stop_fd must be a file descriptor, got {stop_fd}")
    return _relay(a, b, idle_timeout, stop_fd)


_STOP_EVERY = 16  # passes between looks at the stop fd while bytes keep moving


def _stopped(stop_fd):
    poller = select.poll()
    poller.register(stop_fd, select.POLLIN)
    _counters.syscalls += 1
    return bool(_calls.poll(poller, 0))


def _settle(dirs):
    """After a stop: deliver what the destinations take at once; return what stays held."""
    unsent = []
    for d in dirs:
        while d.end > d.start:
            try:
                k = _calls.write(d.dst, d.view[d.start : d.end])
            except InterruptedError:
                continue
            except OSError:
                break
            _counters.syscalls += 1
            _counters.bytes += k
            _counters.loop_bytes += k
            d.moved += k
            d.start += k
        unsent.append(bytes(d.view[d.start : d.end]))
        d.start = d.end = 0
    return tuple(unsent)


def _relay(a, b, idle_timeout, stop_fd):
    idle = _policy.check_timeout(idle_timeout, "idle_timeout")
    fa = _relay_fd(a)
    fb = _relay_fd(b)
    if fa == fb:
        raise ValueError("relay needs two different sockets")
    _counters.calls += 1
    dirs = (_Direction(fa, fb), _Direction(fb, fa))
    blocking = (os.get_blocking(fa), os.get_blocking(fb))
    os.set_blocking(fa, False)
    os.set_blocking(fb, False)
    last = time.monotonic()
    passes = 0
    try:
        while not (dirs[0].shut and dirs[1].shut):
            passes += 1
            if stop_fd >= 0 and passes % _STOP_EVERY == 0 and _stopped(stop_fd):
                unsent = _settle(dirs)  # first: it delivers what it can
                return (*_moved(dirs), unsent)
            progress = False
            want = {fa: 0, fb: 0}
            for d in dirs:
                if d.shut:
                    continue
                if not d.eof and d.end < BUFFER_SIZE:
                    try:
                        k = _read_into(d.src, d.view[d.end :])
                    except OSError as exc:
                        _counters.syscalls += 1
                        if exc.errno not in _AGAIN:
                            raise
                        _counters.would_block += 1
                        want[d.src] |= select.POLLIN
                    else:
                        d.end += k
                        if k == 0:
                            d.eof = True
                        progress = True
                        _counters.syscalls += 1
                if d.end > d.start:
                    try:
                        k = _calls.write(d.dst, d.view[d.start : d.end])
                    except OSError as exc:
                        _counters.syscalls += 1
                        if exc.errno not in _AGAIN:
                            raise
                        _counters.would_block += 1
                        want[d.dst] |= select.POLLOUT
                    else:
                        d.moved += k
                        d.start += k
                        if d.start == d.end:
                            d.start = d.end = 0
                        else:
                            _counters.partial += 1
                        progress = True
                        _counters.syscalls += 1
                        _counters.bytes += k
                        _counters.loop_bytes += k
                if d.eof and d.start == d.end:
                    _shutdown_write(d.dst)  # pass the EOF on (half-close)
                    d.shut = True
                    progress = True
            if progress:
                last = time.monotonic()
                continue
            poller = select.poll()
            for fd, events in want.items():
                if events:
                    poller.register(fd, events)
            if stop_fd >= 0:
                poller.register(stop_fd, select.POLLIN)
            if idle >= 0.0:
                left = last + idle - time.monotonic()
                ready = left > 0.0 and _calls.poll(poller, max(1, int(left * 1000.0 + 0.999)))
                if not ready and time.monotonic() - last >= idle:
                    raise _policy.timeout_error(0)
            else:
                ready = _calls.poll(poller)
            if stop_fd >= 0 and ready and any(fd == stop_fd for fd, _ in ready):
                unsent = _settle(dirs)  # first: it delivers what it can
                return (*_moved(dirs), unsent)
    except BaseException as exc:
        exc.transferred = (dirs[0].moved, dirs[1].moved)
        if isinstance(exc, BlockingIOError):
            exc.characters_written = dirs[0].moved + dirs[1].moved
        raise
    finally:
        for fd, was_blocking in ((fa, blocking[0]), (fb, blocking[1])):
            try:
                os.set_blocking(fd, was_blocking)
            except OSError:
                pass
        for d in dirs:
            _buffer_put(d.buffer)
    return (*_moved(dirs), None)


def _moved(dirs):
    return (dirs[0].moved, dirs[1].moved)
