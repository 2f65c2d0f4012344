"""Policy shared by both twins: argument checks, timeouts, progress on errors, fallback rules.

Written once. The native build compiles this module with Cython (``_policy.pxd`` gives the
C signatures, so the native twins call these functions at C speed); the pure-Python install
imports it as it is. The only system calls here are waits (``wait_fd``, ``wait_ready``) and
the bookkeeping of bytes parked by a failed transfer (``park``, ``stream_pending``).
"""

import errno
import os
import select
import stat as _stat
import struct
import sys
import time

from . import _stats

# ---- profile/fault hook (issue 8): wait_fd polls through the system call table "wait" ----
_wait_calls = _stats.syscalls("wait")

#: The largest file offset or byte count (off_t, long long): larger counts mean "no limit",
#: larger offsets are a ValueError.
MAX_OFFSET = (1 << 63) - 1

#: Timeouts above this (about 24 days: poll's int milliseconds) mean "no timeout".
MAX_TIMEOUT = 2_000_000.0

#: Size of the reusable buffer of every portable fallback loop (never 8 KiB).
BUFFER_SIZE = 256 * 1024

#: A fast call failing with one of these before moving a byte falls back to the portable loop.
FALLBACK_ERRNOS = frozenset(
    e
    for e in (
        errno.ENOSYS,
        errno.EINVAL,
        getattr(errno, "EOPNOTSUPP", None),
        getattr(errno, "ENOTSUP", None),
        errno.ENOTSOCK,
        errno.EXDEV,
    )
    if e is not None
)

#: Only these answers may be remembered for the rest of the process ("not supported here").
CACHEABLE_ERRNOS = frozenset((errno.ENOSYS, errno.EPERM))

#: ``timeout`` values after ``resolve_timeout``: wait forever, or never wait.
BLOCKING = -1.0
NONBLOCKING = 0.0


def fileno_of(obj):
    """Return the file descriptor of an fd, socket or file object; ``TypeError`` otherwise.

    A closed socket (``fileno() == -1``) is an ``OSError(EBADF)``, as the kernel would say.
    """
    if isinstance(obj, bool):
        raise TypeError("expected a file descriptor, socket or file object, not bool")
    if isinstance(obj, int):
        fd = obj
    else:
        getter = getattr(obj, "fileno", None)
        if getter is None:
            raise TypeError(
                f"expected a file descriptor, socket or file object, not {type(obj).__name__}"
            )
        fd = getter()
        if not isinstance(fd, int) or isinstance(fd, bool):
            raise TypeError(f"fileno() returned {type(fd).__name__}, not int")
        if fd == -1:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    if fd < 0:
        raise ValueError(f"file descriptor cannot be a negative integer ({fd})")
    if fd > 0x7FFFFFFF:
        raise ValueError(f"file descriptor is too large ({fd})")
    return fd


def check_count(count, name="count"):
    """Validate an optional byte count: ``None`` means "no limit" and comes back as -1."""
    if count is None:
        return -1
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"{name} must be an int or None, not {type(count).__name__}")
    if count < 0:
        raise ValueError(f"{name} must be >= 0 or None, got {count}")
    # A count beyond any file or stream means "no limit" that a C long long can hold
    # (issue 9: 2**63 raised OverflowError in the native twin).
    return count if count <= MAX_OFFSET else MAX_OFFSET


def check_timeout(timeout, name="timeout"):
    """Validate a timeout argument: ``None`` (-1.0 here) or a non-negative number of seconds."""
    if timeout is None:
        return BLOCKING
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number or None, not {type(timeout).__name__}")
    if not timeout >= 0.0:  # also rejects NaN
        raise ValueError(f"{name} must be >= 0 or None, got {timeout!r}")
    if timeout > MAX_TIMEOUT:
        # Longer than any wait can be (poll takes int milliseconds): wait forever, as None.
        # Issue 9: 2**63 or inf raised OverflowError from the first poll.
        return BLOCKING
    return float(timeout)


def resolve_timeout(obj, fd, timeout):
    """The time budget of one call on ``obj``: -1.0 blocks, 0.0 never waits, else seconds.

    An explicit ``timeout`` wins; otherwise a socket's own timeout (``settimeout``) applies,
    and a raw fd or file follows its O_NONBLOCK flag.
    """
    if timeout is not None:
        return check_timeout(timeout)
    gettimeout = getattr(obj, "gettimeout", None)
    if gettimeout is not None:
        value = gettimeout()
        return BLOCKING if value is None else float(value)
    if os.get_blocking(fd):
        return BLOCKING
    return NONBLOCKING


def deadline_after(budget):
    """Absolute monotonic deadline for a budget from ``resolve_timeout`` (-1.0: none)."""
    if budget < 0.0:
        return BLOCKING
    return time.monotonic() + budget


def remaining(deadline):
    """Seconds left before ``deadline`` (-1.0 when there is none; 0.0 when it has passed)."""
    if deadline < 0.0:
        return BLOCKING
    left = deadline - time.monotonic()
    return left if left > 0.0 else 0.0


def with_progress(exc, transferred):
    """Attach the bytes moved to ``exc`` (and ``characters_written`` when it would block)."""
    exc.transferred = transferred
    if isinstance(exc, BlockingIOError):
        exc.characters_written = transferred
    return exc


def error_from_errno(code, transferred=0, filename=None):
    """The standard ``OSError`` subclass for ``code`` (``BrokenPipeError``...), with progress."""
    if filename is None:
        exc = OSError(code, os.strerror(code))
    else:
        exc = OSError(code, os.strerror(code), filename)
    return with_progress(exc, transferred)


def timeout_error(transferred=0):
    """The error raised when a call's deadline passes, carrying the bytes already moved."""
    return with_progress(TimeoutError(errno.ETIMEDOUT, "timed out"), transferred)


def would_block(transferred=0):
    """``BlockingIOError`` for a non-blocking call that moved ``transferred`` bytes so far."""
    return with_progress(BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN)), transferred)


def wait_fd(fd, for_write, deadline, transferred=0):
    """Wait until ``fd`` is ready or ``deadline`` passes (``TimeoutError`` with progress).

    ``deadline`` is from ``deadline_after``; -1.0 waits forever. EINTR is retried after the
    signal handlers ran (PEP 475); a handler that raises ends the wait, progress attached.
    """
    poller = select.poll()
    events = select.POLLOUT if for_write else select.POLLIN
    poller.register(fd, events)
    while True:
        left = remaining(deadline)
        if left == 0.0 and deadline >= 0.0:
            raise timeout_error(transferred)
        try:
            ready = _wait_calls.poll(
                poller, None if left < 0.0 else max(1, int(left * 1000.0 + 0.999))
            )
        except BaseException as exc:
            raise with_progress(exc, transferred) from None
        if ready:
            if ready[0][1] & select.POLLNVAL:
                raise error_from_errno(errno.EBADF, transferred)
            return


# ---- ring (RingBuffer, Reader): shared argument rules and waiting ----

#: The largest ring either twin will allocate (1 TiB of address space).
MAX_RING_CAPACITY = 1 << 40

#: Integer codes a frame header may use (one integer, any byte order prefix).
_FRAME_CODES = "bBhHiIlLqQ"


def ring_capacity(capacity, page_size):
    """``capacity`` rounded up to a power of two that is a multiple of ``page_size``.

    ``page_size`` is a power of two, so the answer is the larger of the page and the next
    power of two. ``TypeError`` for a non-int, ``ValueError`` for zero, negative or too large.
    """
    if isinstance(capacity, bool) or not isinstance(capacity, int):
        raise TypeError(f"capacity must be an int, not {type(capacity).__name__}")
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    if capacity > MAX_RING_CAPACITY:
        raise ValueError(f"capacity must be <= {MAX_RING_CAPACITY}, got {capacity}")
    size = page_size
    while size < capacity:
        size <<= 1
    return size


def ring_size(n, name="n"):
    """A size argument where ``None`` or a negative int mean "all there is" (returned as -1)."""
    if n is None:
        return -1
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"{name} must be an int or None, not {type(n).__name__}")
    if n < 0:
        return -1
    return n if n < (1 << 62) else (1 << 62)


def frame_header(header):
    """Parse a frame-length format (``"!I"``, ``"<H"``, ``"Q"``...): (Struct, size, big, signed).

    The format must be one integer code with an optional byte-order prefix, as ``struct``
    spells it; anything else is a ``ValueError`` (``TypeError`` for a non-str).
    """
    if not isinstance(header, str):
        raise TypeError(f"header must be a struct format str, not {type(header).__name__}")
    prefix = header[:1] if header[:1] in ("@", "=", "<", ">", "!") else ""
    code = header[len(prefix) :]
    if len(code) != 1 or code not in _FRAME_CODES:
        raise ValueError(
            f"header must be a struct format of one integer such as '!I', got {header!r}"
        )
    compiled = struct.Struct(header)
    if compiled.size not in (1, 2, 4, 8):
        raise ValueError(f"header {header!r} has an unsupported size {compiled.size}")
    if prefix in (">", "!"):
        big = True
    elif prefix == "<":
        big = False
    else:
        big = sys.byteorder == "big"
    return compiled, compiled.size, big, code.islower()


def ring_find_range(start, end, length):
    """``find(sub, start, end)``'s slice over ``length`` readable bytes, as ``bytes.find``
    clamps it (any int, however large): ``(start, stop)`` within [0, length], or ``(-1, -1)``
    when nothing can match. ``TypeError`` for a bool or non-int (``end`` may be None).
    """
    if isinstance(start, bool) or not isinstance(start, int):
        raise TypeError(f"start must be an int, not {type(start).__name__}")
    if end is not None and (isinstance(end, bool) or not isinstance(end, int)):
        raise TypeError(f"end must be an int or None, not {type(end).__name__}")
    stop = length if end is None else end
    if start < 0:
        start = start + length if start + length > 0 else 0
    if stop < 0:
        stop = stop + length if stop + length > 0 else 0
    elif stop > length:
        stop = length
    if start > length or start > stop:
        return (-1, -1)
    return (start, stop)


def wait_ready(fd, for_write, budget, deadline, transferred=0):
    """Wait, before a call on an fd that may be in blocking mode, until it will not block.

    ``budget`` from ``resolve_timeout``: -1.0 returns at once (the call may block), 0.0 polls
    once and raises ``BlockingIOError`` (with progress) when not ready, else ``wait_fd``.
    """
    if budget < 0.0:
        return
    if budget == 0.0:
        poller = select.poll()
        poller.register(fd, select.POLLOUT if for_write else select.POLLIN)
        try:
            ready = _wait_calls.poll(poller, 0)
        except BaseException as exc:
            raise with_progress(exc, transferred) from None
        if not ready:
            raise would_block(transferred)
        return
    wait_fd(fd, for_write, deadline, transferred)


# ---- batch (BatchWriter): argument checks and target ownership, shared by both twins ----


def batch_options(target, buffer_size, copy_threshold, max_pending, timeout):
    """Check ``BatchWriter``'s arguments; returns ``(fd, budget, max_pending, fd_blocking,
    is_socket)``.

    ``budget`` is from ``resolve_timeout`` (read once, when the writer is made); ``max_pending``
    comes back as -1 for "no limit"; ``fd_blocking`` says whether a write on the fd itself
    may block (an explicit ``timeout=0`` on a blocking fd must not hold the GIL while the
    kernel blocks); a socket is written with sendmsg(MSG_NOSIGNAL), which never raises
    SIGPIPE. Bad values raise before any system call.
    """
    for name, value in (("buffer_size", buffer_size), ("copy_threshold", copy_threshold)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if buffer_size < 1 or buffer_size > 1 << 30:
        raise ValueError(f"buffer_size must be between 1 and 2**30, got {buffer_size}")
    if copy_threshold < 0 or copy_threshold > buffer_size:
        raise ValueError(
            f"copy_threshold must be between 0 and buffer_size ({buffer_size}), "
            f"got {copy_threshold}"
        )
    limit = check_count(max_pending, "max_pending")
    if timeout is not None:
        check_timeout(timeout)
    fd = fileno_of(target)
    budget = resolve_timeout(target, fd, timeout)
    # Without an explicit timeout the budget tells: a socket with a timeout, or a raw fd
    # with O_NONBLOCK, is non-blocking underneath.
    fd_blocking = os.get_blocking(fd) if timeout is not None else budget < 0.0
    return fd, budget, limit, fd_blocking, _stat.S_ISSOCK(os.fstat(fd).st_mode)


def batch_close_target(target, fd):
    """Close what a ``BatchWriter`` was given (``closefd=True``): the object, or the raw fd."""
    if isinstance(target, int):
        os.close(fd)
    else:
        target.close()


# ---- transfer (sendfile, splice, copy, relay): the ends of a transfer ----------------------

import _socket  # noqa: E402
import io  # noqa: E402
import socket  # noqa: E402

#: Kinds of transfer endpoints (``endpoint()``): a bare descriptor, a buffered file object
#: whose buffer must be reconciled with its descriptor, or an object used only through its
#: methods (``readinto``/``read``/``write``) because its descriptor would bypass it.
EP_FD = 0
EP_BUFFERED = 1
EP_OBJECT = 2

#: Beyond ``FALLBACK_ERRNOS``, copy_file_range refuses O_APPEND targets (EBADF), some
#: filesystems (EPERM, ETXTBSY, EIO on old kernels): the next stage (sendfile) is tried.
COPY_FILE_RANGE_FALLBACK_ERRNOS = FALLBACK_ERRNOS | frozenset(
    (errno.EBADF, errno.EPERM, errno.ETXTBSY, errno.EIO)
)

#: Counters of the transfer primitive beyond ``_stats.COMMON_FIELDS``: which mechanism moved
#: the bytes, and the life of the splice pipe pool.
TRANSFER_FIELDS = (
    "sendfile_bytes",
    "copy_file_range_bytes",
    "splice_bytes",
    "loop_bytes",
    "pipes_created",
    "pipes_reused",
    "pipes_closed",
)

#: Bytes asked of one sendfile/splice/copy_file_range call (Linux caps a call at this).
MAX_CHUNK = 0x7FFFF000

_BUFFERED_TYPES = (io.BufferedReader, io.BufferedWriter, io.BufferedRandom)
_socket_type = _socket.socket.type  # the C getter: an int, not socket.socket's enum property


def check_offset(offset):
    """Validate ``sendfile``'s offset: ``None`` (the file's position) comes back as -1."""
    if offset is None:
        return -1
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise TypeError(f"offset must be an int or None, not {type(offset).__name__}")
    if offset < 0:
        raise ValueError(f"offset must be >= 0 or None, got {offset}")
    if offset > MAX_OFFSET:  # issue 9: OverflowError in the native twin before
        raise ValueError(f"offset must be <= {MAX_OFFSET} (the largest file offset), got {offset}")
    return offset


def socket_over(fd):
    """A socket object over ``fd`` for the socket-only calls (recv flags, sendmsg), leaving the
    fd's blocking mode as it was: ``detach()`` it when done, never close it."""
    blocking = os.get_blocking(fd)
    sock = socket.socket(fileno=fd)
    sock.settimeout(None)  # one system call per method call, no waiting inside
    os.set_blocking(fd, blocking)
    return sock


def check_stream_socket(obj):
    """A socket end must be a stream socket (``ValueError`` for datagram sockets)."""
    kind = _socket_type.__get__(obj)
    if kind != socket.SOCK_STREAM:
        raise ValueError(f"transfer requires a SOCK_STREAM socket, got socket type {kind}")


def _is_tls(obj):
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(obj, ssl.SSLSocket)


def endpoint(obj, writing):
    """``(kind, fd)`` of one end of a transfer; ``fd`` is -1 for ``EP_OBJECT``.

    Only objects whose descriptor carries exactly their bytes are used through the descriptor:
    ints, sockets, raw and buffered files. Text files are refused (``TypeError``); TLS sockets,
    compressed files and other wrappers are used through their methods, never bypassed.
    """
    if isinstance(obj, int):
        return EP_FD, fileno_of(obj)
    if isinstance(obj, io.TextIOBase):
        raise TypeError(
            f"{'destination' if writing else 'source'} is a text file "
            f"({type(obj).__name__}); open it in binary mode"
        )
    if isinstance(obj, socket.socket):
        check_stream_socket(obj)
        if _is_tls(obj):
            return EP_OBJECT, -1
        return EP_FD, fileno_of(obj)
    if isinstance(obj, io.FileIO):
        return EP_FD, obj.fileno()
    if isinstance(obj, _BUFFERED_TYPES):
        return EP_BUFFERED, obj.fileno()
    if writing:
        usable = hasattr(obj, "write")
    else:
        usable = hasattr(obj, "readinto") or hasattr(obj, "read")
    if usable:
        return EP_OBJECT, -1
    if hasattr(obj, "fileno"):
        return EP_FD, fileno_of(obj)
    raise TypeError(
        f"expected a file descriptor, socket or binary file object with "
        f"{'write()' if writing else 'readinto() or read()'}, not {type(obj).__name__}"
    )


def buffered_source_position(obj):
    """Logical position of a buffered source (pending writes flushed), or -1 if unseekable."""
    if obj.seekable():
        if obj.writable():
            obj.flush()
        return obj.tell()
    return -1


def buffered_unread(obj, limit):
    """The bytes an unseekable buffered reader already holds (or one read of the source):
    they go first, before the descriptor is used directly."""
    data = obj.read1(limit)
    return b"" if data is None else data


#: Bytes a transfer took from a stream (socket, pipe, unseekable file) but could not deliver,
#: because its destination failed or a signal handler raised: ``(fd, st_dev, st_ino) ->
#: bytes``. The next transfer from the same stream sends them first, so a retried call leaves
#: no hole. fstat names the stream: a closed fd reused by another socket or pipe has another
#: inode. Bounded: beyond ``PARKED_LIMIT`` streams the oldest (abandoned) entry is dropped.
PARKED = {}
PARKED_LIMIT = 16


def _stream_key(fd):
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (fd, st.st_dev, st.st_ino)


def park(fd, data):
    """Keep ``data``, taken from stream ``fd`` and not delivered, for the next transfer."""
    if not data:
        return
    key = _stream_key(fd)
    if key is None:
        return  # the stream is closed: nobody can read on from it
    PARKED[key] = bytes(data) + PARKED.pop(key, b"")
    while len(PARKED) > PARKED_LIMIT:
        del PARKED[next(iter(PARKED))]


def stream_pending(obj, ep, fd, count):
    """The bytes that go before stream ``fd`` is read directly: first those a failed
    transfer took from it (``park``), then those a buffered reader ``obj`` already holds
    (or one read of it). At most ``count`` bytes (-1: no limit)."""
    if count == 0:
        return b""
    data = b""
    if PARKED:
        key = _stream_key(fd)
        data = PARKED.pop(key, b"")
        if 0 <= count < len(data):
            PARKED[key] = data[count:]
            return data[:count]
    if ep == EP_BUFFERED:
        limit = BUFFER_SIZE if count < 0 else min(count - len(data), BUFFER_SIZE)
        if limit > 0:
            data += buffered_unread(obj, limit)
    return data


def drain_pipe(fd):
    """Everything a non-blocking pipe holds (the bytes an interrupted splice took)."""
    parts = []
    while True:
        try:
            chunk = os.read(fd, 1 << 20)
        except (BlockingIOError, InterruptedError):
            break
        if not chunk:
            break
        parts.append(chunk)
    return b"".join(parts)


def prepare_buffered_destination(obj):
    """Flush a buffered destination so that its descriptor can be written directly."""
    if obj.seekable():
        # A seek from the end always reaches the descriptor: it flushes pending writes and
        # drops the read-ahead; then back to the logical position. (seek(tell()) alone is
        # served from the read-ahead of a BufferedRandom, leaving the descriptor where the
        # read-ahead stopped: issue 9, the bytes landed there.)
        position = obj.tell()
        obj.seek(0, os.SEEK_END)
        obj.seek(position)
    else:
        obj.flush()


def resync_buffered(obj, fd):
    """After writing or reading the descriptor directly, make the object agree with it."""
    if obj.seekable():
        obj.seek(os.lseek(fd, 0, os.SEEK_CUR))


def read_object(obj, view):
    """One read of an ``EP_OBJECT`` source into ``view``: bytes read, 0 at EOF, -1 would block."""
    readinto = getattr(obj, "readinto", None)
    if readinto is None:
        recv_into = getattr(obj, "recv_into", None)
        if recv_into is not None:
            return recv_into(view)
        data = obj.read(len(view))
        if data is None:
            return -1
        if isinstance(data, str):
            raise TypeError("source returned str: text streams cannot be copied as bytes")
        view[: len(data)] = data
        return len(data)
    n = readinto(view)
    return -1 if n is None else n


def write_object(obj, view):
    """Write all of ``view`` to an ``EP_OBJECT`` destination; bytes written (short only when a
    non-blocking object would block)."""
    sendall = getattr(obj, "sendall", None)
    if sendall is not None:
        sendall(view)
        return len(view)
    done = 0
    total = len(view)
    while done < total:
        n = obj.write(view[done:])
        if n is None:
            # A raw non-blocking file says "would block"; other objects say nothing.
            if isinstance(obj, io.RawIOBase):
                break
            n = total - done
        done += n
    return done
