"""Python twin of ``BatchWriter``: the same behaviour and counters over ``os.writev``.

Small pieces are appended to a staging ``bytearray`` (adjacent ones are one piece); large
immutable pieces are kept by reference; ``flush`` hands up to IOV_MAX pieces to
``os.writev`` at a time and resumes a partial write in the middle of a piece.
"""

import errno
import os
import socket
import weakref

from . import _policy, _stats
from ._policy import (
    batch_close_target,
    batch_options,
    deadline_after,
    error_from_errno,
    timeout_error,
    wait_fd,
    with_progress,
    would_block,
)

__all__ = ["BatchWriter"]

_counters = _stats.Counters("writes", "copied", "referenced")
_stats.register("python", "batch", _counters.snapshot)
_calls = _stats.syscalls("batch")  # looked up per call, so profile() sees them
_G = _counters.__dict__  # the counters themselves: plain dict updates on hot paths


def _iov_max():
    try:
        value = os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        value = -1
    return value if value > 0 else 1024


_IOV_MAX = _iov_max()


def _as_view(data):
    """``(piece, length, readonly)`` of any bytes-like object; the same errors as the
    buffer protocol of the native twin."""
    if type(data) is bytes:
        return data, len(data), True
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not '{type(data).__name__}'") from None
    if not view.c_contiguous:
        view.release()
        raise BufferError("memoryview: underlying buffer is not C-contiguous")
    if view.ndim != 1 or view.itemsize != 1 or view.format != "B":
        view = view.cast("B")
    return view, view.nbytes, view.readonly


class BatchWriter:
    """Batch many small writes into few ``writev`` calls on a socket, file or fd.

    See ``fastio.batch`` for the full contract.
    """

    __slots__ = (
        "__weakref__",
        "_budget",
        "_buffer_size",
        "_busy",
        "_closed",
        "_closefd",
        "_copy_threshold",
        "_defer",
        "_detach",
        "_error",
        "_fd",
        "_head",
        "_limit",
        "_max_pending",
        "_pending",
        "_pieces",
        "_sock",
        "_st",
        "_stage",
        "_staged",
        "_target",
        "_temp",
    )

    def __init__(
        self,
        target,
        *,
        buffer_size=65536,
        copy_threshold=1024,
        max_pending=None,
        timeout=None,
        closefd=True,
    ):
        fd, budget, limit, _, is_socket = batch_options(
            target, buffer_size, copy_threshold, max_pending, timeout
        )
        self._target = target
        self._fd = fd
        # A socket is written with sendmsg(MSG_NOSIGNAL) (EPIPE, never SIGPIPE), through a
        # socket object over the fd that is detached, never closed, when the writer goes.
        self._sock = None
        if is_socket:
            self._sock = _policy.socket_over(fd)
            self._detach = weakref.finalize(self, self._sock.detach)
        self._budget = budget
        self._closefd = bool(closefd)
        self._buffer_size = buffer_size
        self._copy_threshold = copy_threshold
        self._max_pending = limit
        # A small piece that keeps pending below this needs no flush.
        self._limit = buffer_size if limit < 0 else min(buffer_size, limit + 1)
        self._pieces = []  # unsent pieces in order: bytes, memoryview, sealed bytearray
        self._head = 0  # first unsent piece of _pieces
        self._stage = None  # the open staging bytearray (the last piece), or None
        self._pending = 0
        self._staged = 0  # bytes copied into staging since everything was last sent
        self._defer = False  # inside writelines(list): only copied bytes fill the buffer
        self._temp = None  # the caller's writable buffer while this call sends it in place
        self._busy = False
        self._closed = False
        self._error = 0
        self._st = dict.fromkeys(
            (
                "writes",
                "bytes_sent",
                "bytes_copied",
                "bytes_referenced",
                "writev_calls",
                "partial_writes",
                "would_block",
            ),
            0,
        )

    # ---- state ----

    def _check(self):
        if self._closed:
            raise ValueError("I/O operation on closed BatchWriter")
        if self._busy:
            raise RuntimeError("concurrent or reentrant call on the same BatchWriter")
        if self._error:
            raise error_from_errno(self._error, 0)

    def _count(self, name, n, common):
        self._st[name] += n
        _G[common] += n

    def _release_all(self):
        self._pieces = []
        self._head = 0
        self._stage = None
        self._pending = 0
        self._staged = 0

    # ---- pieces ----

    def _copy_in(self, data, n):
        if self._stage is None:
            self._stage = bytearray(data)
            self._pieces.append(self._stage)
        else:
            self._stage += data
        self._pending += n
        self._staged += n
        self._count("bytes_copied", n, "copied")

    def _hold(self, piece, n):
        self._pieces.append(piece)
        self._stage = None
        self._pending += n

    def _unsent(self):
        return len(self._pieces) - self._head

    def _last_left(self):
        """Unsent bytes of the last piece."""
        return len(self._pieces[-1])

    def _refusal(self, accepted):
        if self._budget == 0.0:
            return would_block(accepted)
        return timeout_error(accepted)

    # ---- sending ----

    def _advance(self, sent):
        self._pending -= sent
        self._st["bytes_sent"] += sent
        _G["bytes"] += sent
        pieces = self._pieces
        while sent:
            piece = pieces[self._head]
            size = len(piece)
            if sent >= size:
                sent -= size
                pieces[self._head] = None
                self._head += 1
            else:
                if piece is self._stage:
                    self._stage = None  # a sliced staging piece takes no more bytes
                rest = memoryview(piece)[sent:]
                if piece is self._temp:
                    self._temp = rest
                    piece.release()
                pieces[self._head] = rest
                sent = 0
        if self._head == len(pieces):
            self._release_all()

    def _flush(self, explicit):
        """writev until nothing is pending: True. An automatic flush stops quietly where
        the kernel or the deadline stops it: False. Hard errors are sticky."""
        done = 0
        fd = self._fd
        blocking = self._budget != 0.0
        deadline = deadline_after(self._budget) if self._budget > 0.0 else -1.0
        while self._head < len(self._pieces):
            batch = self._pieces[self._head : self._head + _IOV_MAX]
            requested = sum(map(len, batch))
            self._st["writev_calls"] += 1
            _G["syscalls"] += 1
            try:
                # EINTR: retried inside, after the handlers
                if self._sock is not None:
                    sent = _calls.sendmsg(self._sock, batch, (), socket.MSG_NOSIGNAL)
                else:
                    sent = _calls.writev(fd, batch)
            except BlockingIOError:
                self._st["would_block"] += 1
                _G["would_block"] += 1
                if not blocking:
                    if explicit:
                        raise would_block(done) from None
                    return False
                try:
                    wait_fd(fd, True, deadline, done)
                except TimeoutError:
                    if explicit:
                        raise
                    return False
                except OSError as exc:
                    self._fail(exc.errno)
                    raise
                continue
            except OSError as exc:
                self._fail(exc.errno)
                raise with_progress(exc, done) from None
            except BaseException as exc:
                # A signal handler raised around os.writev: Python dropped the count of a
                # partial write, if there was one, so what went out is unknown. The
                # writer fails (EINTR, sticky) rather than send bytes twice.
                self._fail(errno.EINTR)
                raise with_progress(exc, done) from None
            if sent < requested:
                self._st["partial_writes"] += 1
                _G["partial"] += 1
            done += sent
            self._advance(sent)
        return True

    def _fail(self, code):
        self._error = code or -1

    # ---- accepting ----

    def _accept(self, data, before):
        """Take one piece of any bytes-like type; returns its length."""
        piece, n, readonly = _as_view(data)
        try:
            self._accept_piece(piece, n, readonly, before)
        finally:
            # Unless kept whole (a read-only piece held by reference), the view goes now:
            # the caller may resize its buffer as soon as we return. Slices taken of it
            # by a partial write live on by themselves.
            if type(piece) is memoryview and not (
                self._head < len(self._pieces) and self._pieces[-1] is piece
            ):
                piece.release()
        return n

    def _accept_piece(self, piece, n, readonly, before):
        self._st["writes"] += 1
        _G["writes"] += 1
        if n == 0:
            return
        limit = self._max_pending
        if limit >= 0 and self._pending and self._pending + n > limit:
            # Backpressure: make room first; refuse the piece whole if there is none.
            self._flush(False)
            if self._pending and self._pending + n > limit:
                raise self._refusal(before)
        over = 0 <= limit < n
        by_ref = n >= self._copy_threshold or over
        fill = self._staged if self._defer else self._pending
        if by_ref and not readonly and fill + n < self._buffer_size and not over:
            by_ref = False  # a writable buffer is copied unless it goes out right now
        writable = by_ref and not readonly
        if by_ref:
            self._hold(piece, n)
            if writable:
                self._temp = piece
            else:
                self._count("bytes_referenced", n, "referenced")
        else:
            self._copy_in(piece, n)
        if not (
            (self._staged if self._defer else self._pending) >= self._buffer_size
            or self._unsent() >= _IOV_MAX
            or 0 <= limit < self._pending
        ):
            if writable:
                self._settle_writable(piece, n)
            return
        try:
            self._flush(False)
        except BaseException:
            if writable:
                self._settle_writable(piece, n)
            raise
        if 0 <= limit < self._pending:
            # Refused: only this piece can be over the limit (the writer was empty before
            # it); what the kernel took of it counts as taken, the rest is dropped.
            left = self._last_left()
            if writable:
                self._count("bytes_referenced", n - left, "referenced")
            elif by_ref:
                self._count("bytes_referenced", -left, "referenced")
            else:
                self._count("bytes_copied", -left, "copied")
            self._temp = None
            self._drop_last()
            raise self._refusal(before + n - left)
        if writable:
            self._settle_writable(piece, n)

    def _settle_writable(self, piece, n):
        """After a writable buffer was sent in place: copy what the kernel did not take."""
        left = 0
        temp, self._temp = self._temp, None
        if temp is not None and self._head < len(self._pieces) and self._pieces[-1] is temp:
            left = len(temp)
            self._pieces[-1] = bytes(temp)
            if temp is not piece:
                temp.release()
            self._count("bytes_copied", left, "copied")
        self._count("bytes_referenced", n - left, "referenced")

    def _drop_last(self):
        last = self._pieces.pop()
        self._pending -= len(last)
        if last is self._stage:
            self._staged -= len(last)
            self._stage = None
        elif type(last) is memoryview:
            last.release()
        self._stage = None
        if self._head == len(self._pieces):
            self._release_all()

    # ---- public API ----

    def write(self, data):
        """Accept ``data`` (any bytes-like object) and return its length.

        Small pieces are copied into the staging buffer, large immutable ones kept by
        reference; the writer flushes by itself when ``buffer_size`` bytes or IOV_MAX pieces
        are pending. ``BlockingIOError`` (non-blocking target) or ``TimeoutError`` (target
        with a timeout) means ``max_pending`` refused the data: ``characters_written`` /
        ``transferred`` bytes of it were taken, the rest was not.
        """
        _G["calls"] += 1
        stage = self._stage
        if type(data) is bytes and stage is not None and not self._busy and not self._error:
            # The common case: a small piece merged into the open staging piece.
            n = len(data)
            if 0 < n < self._copy_threshold and self._pending + n < self._limit:
                stage += data
                self._pending += n
                self._staged += n
                st = self._st
                st["writes"] += 1
                st["bytes_copied"] += n
                _G["writes"] += 1
                _G["copied"] += n
                return n
        self._check()
        self._busy = True
        try:
            return self._accept(data, 0)
        finally:
            self._busy = False

    def writelines(self, lines):
        """Write every bytes-like piece of the iterable ``lines``. On a refusal
        (``max_pending``), ``characters_written`` counts the bytes of this call that were
        taken; the pieces before the refused one are taken whole."""
        _G["calls"] += 1
        self._check()
        self._busy = True
        try:
            before = 0
            # A list or tuple keeps its items alive during the call: pieces kept by
            # reference then go out in IOV_MAX batches (only copied bytes fill the buffer).
            defer = self._defer = type(lines) in (list, tuple) and self._max_pending < 0
            threshold = self._copy_threshold
            limit = self._limit
            for data in lines:
                stage = self._stage
                if type(data) is bytes and stage is not None:
                    # The common case: a small piece merged into the open staging piece.
                    n = len(data)
                    if 0 < n < threshold and (self._staged if defer else self._pending) + n < limit:
                        stage += data
                        self._pending += n
                        self._staged += n
                        self._st["writes"] += 1
                        self._st["bytes_copied"] += n
                        _G["writes"] += 1
                        _G["copied"] += n
                        before += n
                        continue
                before += self._accept(data, before)
            self._defer = False
            if self._pending >= self._buffer_size:
                self._flush(False)
        finally:
            self._defer = False
            self._busy = False

    def flush(self):
        """Send everything pending (``writev`` in batches of at most IOV_MAX pieces).

        A non-blocking target raises ``BlockingIOError`` (``characters_written`` = bytes
        sent by this call) when the kernel takes no more; a timeout raises ``TimeoutError``
        with ``transferred``; the rest stays pending, byte for byte, for the next flush.
        Other ``OSError``s are sticky: every later call raises them again.
        """
        _G["calls"] += 1
        self._check()
        self._busy = True
        try:
            self._flush(True)
        finally:
            self._busy = False

    def close(self):
        """Flush, release every reference, and close the target when ``closefd`` is true.

        The writer is closed even when the flush fails; the error is raised after. A sticky
        error is raised again here (the pending bytes are lost). Closing twice is a no-op.
        """
        if self._closed:
            return
        if self._busy:
            raise RuntimeError("concurrent or reentrant call on the same BatchWriter")
        code = self._error
        try:
            if code == 0 and self._pending:
                self._busy = True
                try:
                    self._flush(True)
                finally:
                    self._busy = False
        finally:
            self._shut()
        if code:
            raise error_from_errno(code, 0)

    def _shut(self):
        for piece in self._pieces[self._head :]:
            if type(piece) is memoryview:
                piece.release()
        self._release_all()
        self._closed = True
        if self._sock is not None:
            self._detach()
        if self._closefd:
            self._closefd = False
            batch_close_target(self._target, self._fd)

    def __enter__(self):
        self._check()
        return self

    def __exit__(self, exc_type, exc, tb):
        """Clean exit: ``close()``. Exit by an exception: the pending pieces are dropped
        unsent (no half-built message goes out), references released, target closed as
        ``closefd`` says, and the exception goes on."""
        if exc_type is None:
            self.close()
        elif not self._closed and not self._busy:
            self._shut()
        return False

    @property
    def pending(self):
        """Bytes accepted and not yet sent."""
        return self._pending

    @property
    def closed(self):
        """True after ``close()``."""
        return self._closed

    @property
    def stats(self):
        """Counters of this writer: writes, bytes_sent, bytes_copied, bytes_referenced,
        writev_calls, partial_writes, would_block."""
        return dict(self._st)

    def fileno(self):
        """The file descriptor written to."""
        return self._fd

    def __repr__(self):
        state = "closed" if self._closed else f"fd={self._fd} pending={self._pending}"
        return f"<fastio.BatchWriter {state}>"
