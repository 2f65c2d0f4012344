"""Batched writing: ``BatchWriter``, the ``bufio.Writer`` of Python, built on ``writev``.

Protocol code writes many small pieces (headers, length prefixes, short messages) and now
and then a large body. ``BatchWriter`` copies the small pieces into a preallocated staging
buffer (adjacent ones merge into one iovec), keeps large immutable pieces (``bytes``,
read-only buffers) by reference without copying, and sends up to IOV_MAX pieces with one
``writev`` call::

    with fastio.BatchWriter(sock, closefd=False) as w:
        for header, body in messages:
            w.write(header)      # copied into the staging buffer
            w.write(body)        # kept by reference when large and immutable
    # a clean exit flushes; closefd=False leaves the socket open

``BatchWriter(target, *, buffer_size=65536, copy_threshold=1024, max_pending=None,
timeout=None, closefd=True)``; ``target`` is a socket, a file object with ``fileno()`` or an
fd (written through its fd: do not mix with the object's own buffered writes).

- ``write(data) -> int`` takes any bytes-like object (``str`` is a ``TypeError``). Pieces
  shorter than ``copy_threshold`` are copied; ``bytes`` and read-only buffers at or above it
  are kept by reference; writable buffers (``bytearray``, writable ``memoryview``) are
  copied, or sent in place by this very call, so the caller may reuse them as soon as
  ``write`` returns. When ``buffer_size`` bytes or IOV_MAX pieces are pending the writer
  flushes by itself; a large write into an empty writer goes straight to the kernel.
- ``writelines(iterable)``: the same for many pieces in one call (lists and tuples are
  iterated in C by the native twin).
- ``flush()``: ``writev`` in batches of at most IOV_MAX iovecs; a partial write resumes in
  the middle of the piece where the kernel stopped. ``pending``: bytes not yet sent.
- Blocking, timeout, non-blocking: the target's mode is read when the writer is made (a
  socket's ``gettimeout()``, an fd's O_NONBLOCK) unless ``timeout=`` is given. A timeout is
  one deadline for a whole flush. On a non-blocking target ``flush()`` sends what the
  kernel takes and raises ``BlockingIOError`` (``characters_written`` = bytes sent by the
  call) keeping the rest, byte for byte; on a timeout it raises ``TimeoutError`` with
  ``transferred``. The flushes that ``write`` runs by itself stop quietly there instead
  (the bytes stay pending). ``timeout=`` on a raw fd that is itself blocking bounds the
  waits between writes, not a ``writev`` the kernel blocks in.
- ``max_pending`` (default ``None``: no bound) bounds memory: a write that would take
  ``pending`` over it first flushes; if that does not make room, it raises
  ``BlockingIOError`` (non-blocking target) or ``TimeoutError`` (timeout) without taking
  the data (``characters_written``/``transferred`` say how many bytes of it were taken,
  which is only non-zero for a single piece larger than ``max_pending``). On a blocking
  target it only makes the flush come earlier.
- Errors are sticky: after a flush fails with an ``OSError`` (broken pipe, reset, bad fd)
  every later call raises that error again. ``BlockingIOError`` and ``TimeoutError`` are not
  failures: the next flush resumes.
- ``close()`` flushes, releases every reference and closes the target when ``closefd`` is
  true. The default, ``closefd=True``, is that of the standard library's file objects that
  wrap an fd (``open(fd)``, ``io.FileIO``, ``os.fdopen``): the writer owns its target, an
  int fd is ``os.close``d, a socket or file object has its ``close()`` called. Pass
  ``closefd=False`` to keep the target open (as ``socket.makefile`` does for its socket).
  The writer is a context manager: a clean exit closes it (flushing); an exit by an
  exception drops the unsent pieces (no half-built message goes out) and closes.
  Dropping a writer without ``close()`` frees its memory and references, sends nothing
  and closes nothing.
- Not thread-safe: one writer is used by one thread at a time (a concurrent or reentrant
  call raises ``RuntimeError``, never corrupts memory).
- ``stats``: this writer's counters (``writes``, ``bytes_sent``, ``bytes_copied``,
  ``bytes_referenced``, ``writev_calls``, ``partial_writes``, ``would_block``);
  ``fastio.stats()["batch"]`` adds them up for the process.
"""

from . import _impl

_twin = _impl.twin_module("batch")

BatchWriter = _twin.BatchWriter

__all__ = ["BatchWriter"]
