"""asyncio forms of fastio's primitives, for servers on the default loop or on uvloop.

Every primitive already behaves on a non-blocking socket: it moves what the kernel takes and
raises ``BlockingIOError`` with the progress, keeping the rest (byte for byte) for the next
call. This module is that loop for coroutines: call, and on ``BlockingIOError`` wait for
readiness with the running loop's ``add_reader``/``add_writer`` (removed in ``finally``, so a
cancelled await leaves nothing registered) and call again. It is written once, over the live
twin (native or Python); nothing here blocks the loop.

- ``await sendfile(sock, file, offset=None, count=None)``, ``await splice(src, dst,
  count=None)``, ``await copy(src, dst, count=None)``, ``await relay(a, b, *,
  idle_timeout=None)``: the blocking forms' results, errors and file-position rules. Sockets
  must be non-blocking (``sock.setblocking(False)``, as asyncio's ``sock_*`` methods want);
  a blocking socket or fd is a ``ValueError``. An exception carries the progress of the
  whole await in ``.transferred``; a cancelled ``sendfile`` leaves the file position after
  the last byte sent. ``relay`` is the exception to "call and wait for readiness": it runs
  ``fastio.relay``'s whole loop (zero-copy, in C without the GIL) on a thread of its own and
  awaits its end; a cancellation stops that loop through a pipe it polls, and the bytes it
  had taken and could not deliver at once come back in the ``CancelledError``'s
  ``.unsent``.
- ``BatchWriter(sock, ...)``: ``write``/``writelines`` as ``fastio.BatchWriter``;
  ``await drain()`` flushes and, while more than the high water mark is pending, waits until
  the kernel took the writer down to the low water mark (asyncio's ``StreamWriter`` marks:
  64 KiB and a quarter of it by default); bytes still pending after ``drain`` are sent in the
  background as the socket becomes writable, as a transport does (until a ``drain`` is
  cancelled: then they wait for the next ``drain``). ``await aclose()``.
- ``Reader(sock, ...)``: ``readexactly``, ``readuntil``, ``readline``, ``read``, ``peek``,
  ``read_frame`` and ``async for frame in reader``, with ``fastio.Reader``'s and
  ``asyncio.StreamReader``'s errors. A cancelled read loses nothing: received bytes stay
  buffered for the next call.
- ``Pool(factory, ...)`` where ``factory`` is a coroutine function: ``fastio.Pool``'s limits,
  FIFO waiters, checks, lifetimes, stats and close for coroutines (``await acquire()``,
  ``await release(conn)``, ``async with pool.connection() as conn``). A cancelled acquire
  that raced a release hands the connection to the next waiter; no slot leaks. The books
  are the live twin's blocking pool's (``AioPool``, its subclass whose waiters are futures);
  an acquire of an idle connection fit to hand out and a release straight back onto the
  idle stack are synchronous underneath: they return an awaitable already done, without a
  coroutine, a Future or the loop.

Timeouts are the caller's: ``asyncio.wait_for`` or ``asyncio.timeout()`` (3.11+) cancel the
await, with the guarantees above.
"""

import asyncio
import errno
import inspect
import os
import select
import socket
import stat
import threading
import types
import weakref
from time import monotonic as _monotonic

from . import _impl
from . import _pool_policy as policy
from ._errors import PoolClosed, PoolTimeout
from ._policy import fileno_of

__all__ = [
    "BatchWriter",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "Reader",
    "copy",
    "relay",
    "sendfile",
    "splice",
]

PoolStats = policy.PoolStats

_get_loop = asyncio.get_running_loop


def _wake(future):
    if not future.done():
        future.set_result(None)


async def _readable(fd):
    """Wait until ``fd`` is readable; the reader is removed whatever happens."""
    loop = _get_loop()
    future = loop.create_future()
    loop.add_reader(fd, _wake, future)
    try:
        await future
    finally:
        loop.remove_reader(fd)


async def _writable(fd):
    """Wait until ``fd`` is writable; the writer is removed whatever happens."""
    loop = _get_loop()
    future = loop.create_future()
    loop.add_writer(fd, _wake, future)
    try:
        await future
    finally:
        loop.remove_writer(fd)


# ---- endpoints -------------------------------------------------------------------------------

_NEVER_WAITS = -1  # a regular file or an object without a descriptor: never "not ready"

# File objects already seen to be regular files (an fstat saved per small-file send): id ->
# (weak reference, fd), checked on use, so neither a reused id nor a reused fd is mistaken.
_regular = {}


def _endpoint_fd(obj, name):
    """The fd to wait on for ``obj``, or ``_NEVER_WAITS``; ``ValueError`` when it would block
    the loop (a blocking socket or fd), ``TypeError`` for what no primitive accepts."""
    if isinstance(obj, socket.socket):
        if obj.gettimeout() != 0.0:
            raise ValueError(
                f"{name} is a blocking socket (or one with a timeout): fastio.aio needs "
                "non-blocking sockets (sock.setblocking(False))"
            )
        return fileno_of(obj)
    if isinstance(obj, bool):
        raise TypeError(f"{name} must be a socket, file or fd, not bool")
    if not isinstance(obj, int) and getattr(obj, "fileno", None) is None:
        return _NEVER_WAITS  # BytesIO and friends: the blocking form's object loop
    try:
        fd = fileno_of(obj)
    except (OSError, ValueError, TypeError):
        if isinstance(obj, int):
            raise
        return _NEVER_WAITS  # a file object without a usable fd (io.UnsupportedOperation)
    seen = _regular.get(id(obj))
    if seen is not None and seen[1] == fd and seen[0]() is obj:
        return _NEVER_WAITS  # this open file was a regular file: it still is
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        if not isinstance(obj, int):
            key = id(obj)
            try:
                ref = weakref.ref(obj, lambda _, key=key: _regular.pop(key, None))
            except TypeError:  # not weakly referenceable
                pass
            else:
                _regular[key] = (ref, fd)
        return _NEVER_WAITS
    if os.get_blocking(fd):
        raise ValueError(
            f"{name} (fd {fd}) is in blocking mode: fastio.aio needs non-blocking fds "
            "(os.set_blocking(fd, False))"
        )
    return fd


def _socket_fd(sock, name):
    if not isinstance(sock, socket.socket):
        raise TypeError(f"{name} must be a socket.socket, not {type(sock).__name__}")
    return _endpoint_fd(sock, name)


async def _wait_for_pair(src_fd, dst_fd):
    """A transfer from ``src_fd`` to ``dst_fd`` would block: wait for the end that is not
    ready (the source when it has nothing to read, else the destination)."""
    if src_fd == _NEVER_WAITS:
        if dst_fd == _NEVER_WAITS:
            await asyncio.sleep(0)  # an object said "would block": let the loop run, retry
        else:
            await _writable(dst_fd)
        return
    if dst_fd != _NEVER_WAITS:
        poller = select.poll()
        poller.register(src_fd, select.POLLIN)
        if poller.poll(0):  # the source has bytes (or EOF, or an error): the destination is full
            await _writable(dst_fd)
            return
    await _readable(src_fd)


def _add_progress(exc, before):
    """Make ``exc`` tell the progress of the whole await, not only of its last call."""
    moved = getattr(exc, "transferred", None)
    exc.transferred = before + (moved if isinstance(moved, int) else 0)
    if isinstance(exc, BlockingIOError):
        exc.characters_written = exc.transferred
    return exc


# ---- the adapters, bound to one twin --------------------------------------------------------


def _aio_for(twin):
    """The asyncio adapters over ``twin`` (a namespace of one twin's public names, as
    ``fastio._impl.twin`` gives): how the module binds the live twin and the tests both."""
    t_sendfile = twin.sendfile
    t_splice = twin.splice
    t_copy = twin.copy

    async def _pump(call, src, dst, src_fd, dst_fd, count):
        """Call ``call(src, dst, count)`` until it finishes, waiting whenever it would block."""
        total = 0
        while True:
            try:
                n = call(src, dst, count)
            except BlockingIOError as exc:
                n = exc.characters_written
                total += n
                if count is not None:
                    count -= n
                    if count == 0:
                        return total
                try:
                    await _wait_for_pair(src_fd, dst_fd)
                except BaseException as stop:
                    _add_progress(stop, total)
                    raise
            except BaseException as exc:
                _add_progress(exc, total)
                raise
            else:
                return total + n

    async def sendfile(sock, file, offset=None, count=None):
        """Send ``file``'s bytes to the non-blocking socket ``sock`` and return the number of
        bytes sent (``fastio.sendfile``'s rules: the file position ends after the last byte
        sent, also when the await is cancelled or fails)."""
        dst_fd = _socket_fd(sock, "sock")
        src_fd = _endpoint_fd(file, "file")
        try:
            # The first call checks the arguments and sends what the socket takes at once.
            return t_sendfile(sock, file, offset, count)
        except BlockingIOError as exc:
            n = exc.characters_written
        if count is not None:
            count -= n
            if count == 0:
                return n
        if offset is not None:
            offset += n

        def call(src, dst, count):
            nonlocal offset
            if offset is None:  # the file position is where the last call stopped
                return t_sendfile(dst, src, None, count)
            try:
                k = t_sendfile(dst, src, offset, count)
            except BlockingIOError as exc:
                offset += exc.characters_written
                raise
            return k

        try:
            return n + await _pump(call, file, sock, src_fd, dst_fd, count)
        except BaseException as exc:
            _add_progress(exc, n)
            raise

    async def splice(src, dst, count=None):
        """Move bytes from ``src`` to ``dst`` until EOF or ``count`` (``fastio.splice``)
        without blocking the loop; returns the bytes moved."""
        src_fd = _endpoint_fd(src, "src")
        dst_fd = _endpoint_fd(dst, "dst")
        return await _pump(t_splice, src, dst, src_fd, dst_fd, count)

    async def copy(src, dst, count=None):
        """Copy ``src`` to ``dst`` until EOF or ``count`` (``fastio.copy``) without blocking
        the loop; returns the bytes copied."""
        src_fd = _endpoint_fd(src, "src")
        dst_fd = _endpoint_fd(dst, "dst")
        return await _pump(t_copy, src, dst, src_fd, dst_fd, count)

    relay_until = _impl.twin_module("transfer", twin.IMPLEMENTATION).relay_until

    async def relay(a, b, *, idle_timeout=None):
        """Relay two connected non-blocking stream sockets both ways until both reached EOF.

        An EOF one way is passed on with ``shutdown(SHUT_WR)`` while the other way keeps
        flowing; ``idle_timeout`` ends a relay in which nothing moved for that long with
        ``TimeoutError``. Returns ``(bytes a to b, bytes b to a)``; an exception (and a
        cancellation) carries that pair in ``.transferred``.

        The whole loop is ``fastio.relay``'s (zero-copy splice through a pipe, in C without
        the GIL for the native twin), run on a thread of its own; the await ends when it
        does. Cancelling the await stops that loop at once (a pipe it polls is closed) and
        waits until it let go of the sockets; the bytes it had taken are delivered if the
        destination takes them at once, and what it still held comes with the
        ``CancelledError`` in ``.unsent`` ``(bytes for b, bytes for a)``: nothing is lost.
        (The caller that awaited ``relay`` sees that exception; before Python 3.11 a task's
        other awaiters get a fresh ``CancelledError`` without these attributes.)
        """
        if idle_timeout is not None:
            if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, (int, float)):
                raise TypeError(
                    f"idle_timeout must be a number or None, not {type(idle_timeout).__name__}"
                )
            if not idle_timeout >= 0.0:
                raise ValueError(f"idle_timeout must be >= 0, got {idle_timeout!r}")
        fa = _socket_fd(a, "a")
        fb = _socket_fd(b, "b")
        if fa == fb:
            raise ValueError("relay needs two different sockets")
        for sock, name in ((a, "a"), (b, "b")):
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f"relay needs connected stream sockets; {name} is not one")
        loop = _get_loop()
        outcome = []
        wakeup = [loop.create_future()]

        def finished(result):  # on the loop
            outcome.append(result)
            _wake(wakeup[0])

        # Closing stop_w is the stop signal (its read end turns readable); the thread closes
        # stop_r when it is done with it, the coroutine closes stop_w on every way out.
        stop_r, stop_w = os.pipe()

        def run():
            try:
                result = (True, relay_until(a, b, idle_timeout, stop_r))
            except BaseException as exc:  # carried to the awaiting coroutine
                result = (False, exc)
            finally:
                os.close(stop_r)
            try:
                loop.call_soon_threadsafe(finished, result)
            except RuntimeError:  # the loop is closed: nobody waits any more
                pass

        try:
            threading.Thread(target=run, name="fastio-aio-relay", daemon=True).start()
        except BaseException:
            os.close(stop_r)
            os.close(stop_w)
            raise
        try:
            await wakeup[0]
        except asyncio.CancelledError as exc:
            os.close(stop_w)
            stop_w = -1
            while not outcome:  # the loop stops within a pass: wait until it let go
                wakeup[0] = loop.create_future()
                try:
                    await wakeup[0]
                except asyncio.CancelledError:
                    pass
            ok, result = outcome[0]
            if ok:
                exc.transferred = result[:2]
                exc.unsent = result[2] or (b"", b"")
            else:
                exc.transferred = getattr(result, "transferred", (0, 0))
                exc.unsent = (b"", b"")
            raise
        finally:
            if stop_w >= 0:
                os.close(stop_w)
        ok, result = outcome[0]
        if not ok:
            if isinstance(result, TimeoutError) and not isinstance(result, BlockingIOError):
                moved = result.transferred
                result = TimeoutError(errno.ETIMEDOUT, "relay idle timeout")
                result.transferred = moved
            raise result
        return result[:2]

    class Reader:
        """Reader(sock, *, capacity=65536, header="!I", mirrored=None)

        ``fastio.Reader`` for coroutines over a non-blocking socket or fd: ``await
        readexactly(n)``, ``readuntil(separator)``, ``readline()``, ``read(n=-1)``,
        ``peek(n)``, ``read_frame(header=None)`` and ``async for frame in reader``, with the
        blocking Reader's (and ``asyncio.StreamReader``'s) errors. Nothing received is lost
        when an await is cancelled: it stays buffered for the next call.
        """

        __slots__ = ("_fd", "_read_frame", "_reader", "_waiting")

        def __init__(self, sock, *, capacity=65536, header="!I", mirrored=None):
            fd = _endpoint_fd(sock, "sock")
            self._reader = twin.Reader(sock, capacity=capacity, header=header, mirrored=mirrored)
            self._read_frame = self._reader.read_frame
            self._fd = fd
            self._waiting = False

        async def _wait(self):
            # One reader callback per fd and loop: a second waiting coroutine would silently
            # replace the first one's (asyncio.StreamReader raises the same RuntimeError).
            if self._waiting:
                raise RuntimeError(
                    "another coroutine is already waiting for incoming data on this Reader"
                )
            self._waiting = True
            try:
                await _readable(self._fd)
            finally:
                self._waiting = False

        @property
        def source(self):
            """The socket or fd this reader reads from."""
            return self._reader.source

        @property
        def buffered(self):
            """Bytes received and not yet returned."""
            return self._reader.buffered

        @property
        def reader(self):
            """The blocking ``fastio.Reader`` underneath (its ring, its counters)."""
            return self._reader

        def at_eof(self):
            """True when the source reached EOF and every buffered byte was returned."""
            return self._reader.at_eof()

        async def readexactly(self, n):
            """Exactly ``n`` bytes; ``IncompleteReadError`` at EOF."""
            method = self._reader.readexactly
            while True:
                try:
                    return method(n)
                except BlockingIOError:
                    await self._wait()

        async def readuntil(self, separator=b"\n"):
            """Bytes up to and including ``separator``; ``LimitOverrunError`` when the ring
            fills without it, ``IncompleteReadError`` when EOF comes first."""
            method = self._reader.readuntil
            while True:
                try:
                    return method(separator)
                except BlockingIOError:
                    await self._wait()

        async def readline(self):
            """One line including b"\\n"; at EOF the last partial line, then b""."""
            method = self._reader.readline
            while True:
                try:
                    return method()
                except BlockingIOError:
                    await self._wait()

        async def read(self, n=-1):
            """Up to ``n`` bytes (b"" at EOF); with ``n`` negative, everything until EOF."""
            method = self._reader.read
            while True:
                try:
                    return method(n)
                except BlockingIOError:
                    await self._wait()

        async def peek(self, n):
            """The next ``n`` bytes without consuming them (fewer only at EOF)."""
            method = self._reader.peek
            while True:
                try:
                    return method(n)
                except BlockingIOError:
                    await self._wait()

        async def read_frame(self, header=None):
            """One length-prefixed frame's payload (``fastio.Reader.read_frame``)."""
            try:
                return self._read_frame(header)
            except BlockingIOError:
                pass
            method = self._read_frame
            while True:
                await self._wait()
                try:
                    return method(header)
                except BlockingIOError:
                    pass

        def __aiter__(self):
            return self

        async def __anext__(self):
            try:
                return await self.read_frame()
            except twin.IncompleteReadError as exc:
                if not exc.partial:
                    raise StopAsyncIteration from None
                raise

        def close(self):
            """Release the ring's memory (the socket stays open)."""
            self._reader.ring.close()

        def __repr__(self):
            return f"<fastio.aio.Reader {self._reader!r}>"

    class BatchWriter:
        """BatchWriter(sock, *, buffer_size=65536, copy_threshold=1024, max_pending=None,
        closefd=True, high_water=None, low_water=None)

        ``fastio.BatchWriter`` over a non-blocking socket or fd, for coroutines: ``write``
        and ``writelines`` buffer (and send what the kernel takes at once, never waiting);
        ``await drain()`` flushes and, while more than ``high_water`` bytes are pending,
        waits until the kernel took all but ``low_water`` (asyncio's defaults: 64 KiB and a
        quarter of it). What stays pending is sent in the background as the socket becomes
        writable (a cancelled ``drain`` stops that: the bytes wait for the next ``drain`` or
        ``aclose``). ``await aclose()`` sends everything, then closes (the target too, with
        ``closefd=True``). ``abort()`` drops the unsent bytes and closes.
        """

        def __init__(
            self,
            sock,
            *,
            buffer_size=65536,
            copy_threshold=1024,
            max_pending=None,
            closefd=True,
            high_water=None,
            low_water=None,
        ):
            fd = _endpoint_fd(sock, "sock")
            for value, name in ((high_water, "high_water"), (low_water, "low_water")):
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
            if high_water is None:
                high_water = 65536 if low_water is None else 4 * low_water
            if low_water is None:
                low_water = high_water // 4
            if not high_water >= low_water >= 0:
                raise ValueError(
                    f"high_water ({high_water!r}) must be >= low_water ({low_water!r}) must be >= 0"
                )
            self._writer = twin.BatchWriter(
                sock,
                buffer_size=buffer_size,
                copy_threshold=copy_threshold,
                max_pending=max_pending,
                closefd=closefd,
            )
            self._fd = fd
            self._high = high_water
            self._low = low_water
            self._loop = None  # set while the background flush is registered
            self._waiters = []
            self.write = self._writer.write
            self.writelines = self._writer.writelines

        @property
        def pending(self):
            """Bytes not yet sent."""
            return self._writer.pending

        @property
        def closed(self):
            """Whether the writer is closed."""
            return self._writer.closed

        @property
        def stats(self):
            """This writer's counters (``fastio.BatchWriter.stats``)."""
            return self._writer.stats

        @property
        def writer(self):
            """The ``fastio.BatchWriter`` underneath."""
            return self._writer

        def get_write_buffer_limits(self):
            """``(low_water, high_water)`` as asyncio's transports say them."""
            return (self._low, self._high)

        def fileno(self):
            """The target's file descriptor."""
            return self._fd

        def _flush_now(self):
            """Send what the kernel takes now; True when nothing is pending."""
            try:
                self._writer.flush()
            except BlockingIOError:
                return False
            return True

        def _start(self):
            if self._loop is None and self._fd != _NEVER_WAITS:
                loop = _get_loop()
                loop.add_writer(self._fd, self._on_writable)
                self._loop = loop

        def _stop(self):
            loop, self._loop = self._loop, None
            if loop is not None:
                loop.remove_writer(self._fd)

        def _on_writable(self):
            try:
                empty = self._flush_now()
            except BaseException as exc:  # sticky in the writer: drain/aclose raise it again
                self._stop()
                self._wake(exc)
                return
            if empty:
                self._stop()
            if self._writer.pending <= self._low:
                self._wake(None)

        def _wake(self, exc):
            waiters, self._waiters = self._waiters, []
            for future in waiters:
                if not future.done():
                    if exc is None:
                        future.set_result(None)
                    else:
                        future.set_exception(exc)

        async def drain(self):
            """Flush; wait while more than the high water mark is pending (until the low
            water mark is reached); raise the writer's error if a flush failed."""
            if self._flush_now():
                self._stop()
                return
            self._start()
            if self._fd == _NEVER_WAITS:
                await asyncio.sleep(0)
                return
            while self._writer.pending > self._high:
                future = _get_loop().create_future()
                self._waiters.append(future)
                try:
                    await future
                except asyncio.CancelledError:
                    # A cancelled await leaves nothing registered: the pending bytes stay
                    # in the writer for the next drain() or aclose().
                    self._stop()
                    raise
                finally:
                    if future in self._waiters:
                        self._waiters.remove(future)
                if self._writer.pending <= self._low:
                    break
            if self._loop is None and self._writer.pending:
                self._flush_now()  # raises the sticky error the background flush met

        async def aclose(self):
            """Send every pending byte (waiting as needed), then close; cancelled or failed,
            the unsent bytes are dropped and the writer closed all the same."""
            writer = self._writer
            if writer.closed:
                return
            self._stop()
            try:
                while not self._flush_now():
                    await _writable(self._fd)
            except BaseException as exc:
                writer.__exit__(type(exc), exc, exc.__traceback__)
                raise
            writer.close()

        def abort(self):
            """Drop what is pending and close now."""
            self._stop()
            self._wake(ConnectionAbortedError(errno.ECONNABORTED, "writer aborted"))
            exc = ConnectionAbortedError(errno.ECONNABORTED, "writer aborted")
            self._writer.__exit__(type(exc), exc, None)

        async def __aenter__(self):
            return self

        async def __aexit__(self, exc_type, exc, tb):
            if exc_type is None:
                await self.aclose()
            else:
                self.abort()

        def __repr__(self):
            return f"<fastio.aio.BatchWriter {self._writer!r}>"

    return types.SimpleNamespace(
        BatchWriter=BatchWriter,
        Pool=_pool_class(_impl.twin_module("pool", twin.IMPLEMENTATION).AioPool),
        PoolClosed=PoolClosed,
        PoolStats=PoolStats,
        PoolTimeout=PoolTimeout,
        Reader=Reader,
        copy=copy,
        relay=relay,
        sendfile=sendfile,
        splice=splice,
        IMPLEMENTATION=twin.IMPLEMENTATION,
    )


# ---- the pool --------------------------------------------------------------------------------

_SLOT = policy.SLOT
_CLOSED = policy.CLOSED


async def _maybe_await(value):
    if inspect.isawaitable(value):
        return await value
    return value


async def _close_quietly(close, conn):
    try:
        if close is None:
            await _maybe_await(conn.close())
        else:
            await _maybe_await(close(conn))
    except Exception:
        policy.logger.warning("fastio aio pool: closing %r failed", conn, exc_info=True)


class _Lease:
    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool, timeout):
        self.pool = pool
        self.timeout = timeout
        self.conn = None

    async def __aenter__(self):
        self.conn = await self.pool.acquire(self.timeout)
        return self.conn

    async def __aexit__(self, exc_type, exc, tb):
        conn, self.conn = self.conn, None
        pool = self.pool
        discard = True  # a cancellation & co: the conversation may be cut midway
        try:
            if exc is None:
                discard = False
            elif isinstance(exc, Exception):
                discard = policy.judge_broken(pool._is_broken, exc, conn)
        finally:
            await pool.release(conn, discard=discard)


_NOT_AIO_OPTIONS = ("leak_timeout", "_limit", "_track")


def _pool_class(books):
    """``fastio.aio.Pool`` over ``books``, one twin's ``AioPool``: the books (shared with the
    blocking pool of that twin) and the fast paths are the twin's; the coroutines that
    create, check, reset, close and wait are written here once."""

    class Pool(books):
        """Pool(factory, *, max_size=10, min_idle=0, max_idle=None, max_lifetime=None,
        max_idle_time=None, acquire_timeout=30.0, check=None, check_after=None, reset=None,
        close=None, is_broken=None, lifetime_jitter=0.05, clock=None)

        ``fastio.Pool`` for coroutines, on one event loop: ``factory``, ``check``, ``reset``
        and ``close`` may be coroutine functions (or plain ones). The most recently returned
        idle connection is handed out first (those past ``max_lifetime`` or ``max_idle_time``
        are closed instead, one idle longer than ``check_after`` is checked); else a new one
        is made while fewer than ``max_size`` are open; else the acquire waits, first come
        first served, up to ``acquire_timeout`` (``PoolTimeout``). A cancelled acquire never
        loses a slot: what a release handed it goes to the next waiter. ``await pool.open()``
        opens ``min_idle`` connections; ``stats()`` is the blocking pool's ``PoolStats``;
        ``await aclose()``. Expired idle connections are closed when an acquire meets them
        (no housekeeper); leak reports are the blocking pool's only.

        ``await pool.acquire()`` of an idle connection fit to hand out, and ``await
        pool.release(conn)`` straight back onto the idle stack, are synchronous underneath:
        neither creates a Future nor touches the loop.
        """

        def __init__(self, factory, **options):
            for name in _NOT_AIO_OPTIONS:  # the blocking pool's only
                if name in options:
                    raise TypeError(f"unexpected keyword argument {name!r}")
            super().__init__(factory, **options, _track=False)
            self._closers = set()

        # --- acquire ------------------------------------------------------------------------

        # acquire(timeout=None): the books' fast path, else this coroutine. ``timeout``
        # (default ``acquire_timeout``) is one deadline for waiting, checking and creating.
        async def _acquire_async(self, timeout):
            if timeout is None:
                budget = self._config.acquire_timeout
            else:
                budget = policy.check_timeout_arg(timeout)
            deadline = -1.0 if budget < 0.0 else _monotonic() + budget
            while True:
                mode, conn = self._step()
                if mode == "got":
                    return conn
                if mode == "expired":
                    await _close_quietly(self._close, conn)
                elif mode == "check":
                    if await self._run_check(conn, deadline, budget):
                        return conn
                elif mode == "create":
                    return await self._create(deadline, budget)
                else:
                    if budget == 0.0:
                        raise self._timeout_error(budget)
                    result = await self._wait(deadline, budget)
                    if result is _SLOT:
                        return await self._create(deadline, budget)
                    return result

        async def _bounded(self, awaitable, deadline, budget):
            if deadline < 0.0:
                return await awaitable
            left = deadline - _monotonic()
            try:
                return await asyncio.wait_for(awaitable, max(left, 0.0))
            except asyncio.TimeoutError:
                raise self._timeout_error(budget) from None

        async def _run_check(self, conn, deadline, budget):
            try:
                ok = await self._bounded(_maybe_await(self._check(conn)), deadline, budget)
            except PoolTimeout:
                self._broken(conn)
                await _close_quietly(self._close, conn)
                raise
            except Exception:
                ok = False
            except BaseException:
                self._broken(conn)
                await _close_quietly(self._close, conn)
                raise
            ok = ok is None or bool(ok)
            self._checked(conn, ok)
            if not ok:
                await _close_quietly(self._close, conn)
            return ok

        async def _create(self, deadline, budget):
            """Make a connection in the slot reserved for it."""
            try:
                conn = await self._bounded(_maybe_await(self._factory()), deadline, budget)
            except BaseException:
                self._make_failed()
                raise
            if not self._made(conn):
                await _close_quietly(self._close, conn)
                raise policy.pool_closed()
            return conn

        async def _wait(self, deadline, budget):
            loop = _get_loop()
            future = loop.create_future()
            waiter = self._enqueue(future)
            began = _monotonic()
            handle = None
            if deadline >= 0.0:
                handle = loop.call_later(max(deadline - began, 0.0), _expire, future)
            try:
                result = await future
            except BaseException as exc:
                if future.done() and not future.cancelled() and future.exception() is None:
                    # Handed something just as we were cancelled: pass it on, lose nothing.
                    doomed = self._give_back(future.result())
                    if doomed is not None:
                        self._closing(doomed)
                else:
                    self._dequeue(waiter)
                self._waited(_monotonic() - began)
                if isinstance(exc, _Expired):
                    raise self._timeout_error(budget) from None
                raise
            finally:
                if handle is not None:
                    handle.cancel()
            self._waited(_monotonic() - began)
            if result is _CLOSED:
                raise policy.pool_closed()
            return result

        def _closing(self, conn):
            """Close ``conn`` in the background (from code that cannot await)."""
            task = asyncio.ensure_future(_close_quietly(self._close, conn))
            self._closers.add(task)  # a reference until it is done (the loop keeps weak ones)
            task.add_done_callback(self._closers.discard)

        # --- release ------------------------------------------------------------------------

        # release(conn, *, discard=False): the books' fast path (straight back onto the idle
        # stack), else this coroutine. Either way an awaitable: ``await pool.release(conn)``.
        async def _release_async(self, conn, discard):
            interrupt = None
            if self._reset is not None and not discard and not self.closed:
                try:
                    await _maybe_await(self._reset(conn))
                except Exception:
                    policy.logger.warning(
                        "fastio aio pool: reset of %r failed; discarding it", conn, exc_info=True
                    )
                    discard = True
                except BaseException as exc:
                    discard = True
                    interrupt = exc
            doomed = self._return(conn, discard)
            if doomed is not None:
                if interrupt is not None:
                    self._closing(doomed)
                else:
                    await _close_quietly(self._close, doomed)
            if interrupt is not None:
                raise interrupt

        def connection(self, timeout=None):
            """``async with pool.connection() as conn:`` acquire, then release on exit; an
            exception for which ``is_broken(exc)`` is true (default ``OSError``), or any
            non-``Exception`` (a cancellation), discards the connection."""
            return _Lease(self, timeout)

        async def open(self):
            """Open connections up to ``min_idle`` now."""
            while self._reserve_min_idle():
                conn = await self._create(-1.0, -1.0)
                await self.release(conn)

        async def aclose(self):
            """Close the pool: waiters get ``PoolClosed``, idle connections are closed now,
            those still out when they come back; later acquires raise ``PoolClosed``.
            Idempotent."""
            for conn in self._close_books():
                await _close_quietly(self._close, conn)

        def close(self):
            """Not for coroutines: ``await pool.aclose()``."""
            raise TypeError("fastio.aio.Pool closes with 'await pool.aclose()'")

        def __enter__(self):
            raise TypeError("fastio.aio.Pool is used with 'async with'")

        async def __aenter__(self):
            await self.open()
            return self

        async def __aexit__(self, *exc_info):
            await self.aclose()

        def __repr__(self):
            s = self._snapshot()
            state = "closed" if self.closed else f"open={s.open} idle={s.idle}"
            return f"<fastio.aio.Pool {state} max_size={s.max_size}>"

    if hasattr(books, "_released"):  # the Python twin's: it awaits this one fastest
        Pool._released = _DONE
    Pool.__module__ = __name__
    Pool.__qualname__ = "Pool"
    return Pool


class _NoLoop:
    """Enough of a loop for a Future that is done from birth and never schedules anything."""

    def get_debug(self):
        return False


# The awaitable of a release that already happened, for the Python twin's pool: a finished
# Future (awaiting one is a C call that returns at once, on any loop, never touching it).
_DONE = asyncio.Future(loop=_NoLoop())
_DONE.set_result(None)


class _Expired(Exception):
    """The acquire's deadline passed while it waited."""


def _expire(future):
    if not future.done():
        future.set_exception(_Expired())


# ---- the live twin ---------------------------------------------------------------------------

_bound = {}


def _aio_for_impl(implementation):
    adapters = _bound.get(implementation)
    if adapters is None:
        adapters = _bound[implementation] = _aio_for(_impl.twin(implementation))
    return adapters


_live = _aio_for_impl(_impl.IMPLEMENTATION)
sendfile = _live.sendfile
splice = _live.splice
copy = _live.copy
relay = _live.relay
Pool = _live.Pool
Reader = _live.Reader
BatchWriter = _live.BatchWriter
