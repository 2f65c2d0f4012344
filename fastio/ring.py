"""Buffered reading: ``RingBuffer`` (preallocated receive memory) and ``Reader`` over it.

Receiving code usually grows a ``bytearray``, slices out a message and deletes it from the
front: an allocation and a copy per message. A ``RingBuffer`` is memory the kernel fills
directly (``read``, or one ``readv`` into both free segments across the wrap), and ``Reader``
is a buffered reader on top of it with ``asyncio.StreamReader``'s names.

``RingBuffer(capacity, *, mirrored=None)``
    ``capacity`` is rounded up to a power of two that is a multiple of the page size. A
    *mirrored* ring (Linux memfd, or POSIX shared memory, mapped twice side by side) makes
    every readable or writable region contiguous whatever the wrap; ``mirrored=None`` means
    "when available", ``True`` "or raise ``OSError``" (always, in the Python twin, with
    errno ENOSYS), ``False`` a plain two-segment ring. The ``mirrored`` property says which.

    Producer side: ``write(data)`` copies what fits; ``fill(source, n=-1)`` receives from a
    socket or fd with one system call (``readv`` across the wrap on a plain ring), returns 0
    at EOF, raises ``BlockingIOError`` on a non-blocking source with nothing to read and
    ``BufferError`` on a full ring. ``fill(source, 0)`` returns 0 with no system call.

    Consumer side: ``peek(n=-1)`` (read-only memoryview, up to the wrap on a plain ring),
    ``consume(n)``, ``read(n=-1)``, ``readinto(buffer)``, ``find(sub, start=0, end=None)``
    (``bytes.find`` semantics, across the wrap: any int bound is clamped; a bool or non-int
    bound is a ``TypeError``), ``drain(target, n=-1)`` (``writev`` from the
    ring to a socket or fd until ``n`` bytes are sent; a non-blocking target that fills up
    raises ``BlockingIOError`` with ``characters_written``). ``len(ring)``, ``capacity``,
    ``free``, ``clear()``, ``close()``: while a ``peek`` view is alive, ``clear()`` and
    ``close()`` raise ``BufferError``. A view shows the ring's memory: after ``consume`` the
    bytes it shows may be overwritten by later writes.

    Threads: one producer thread (``write``, ``fill``) and one consumer thread (everything
    else, ``clear`` and ``close`` included) may use one ring at the same time without a lock;
    any other sharing (two producers, two consumers, ``close`` from a third thread) needs the
    caller's lock. ``clear()`` while the producer is inside ``fill`` discards what was
    readable and keeps what the fill then receives; only a live ``peek`` view makes it raise
    ``BufferError``. ``close()`` also raises ``BufferError`` while a fill or drain runs.

``Reader(source, *, capacity=65536, timeout=None, header="!I", mirrored=None)``
    A buffered reader over a socket or fd that fills its ring as needed: ``read(n=-1)``,
    ``readexactly(n)``, ``readuntil(separator=b"\\n")``, ``readline()``, ``peek(n)``,
    ``read_frame(header=None)`` and iteration over frames (``header``: the struct format of
    the length prefix, one integer such as ``"!I"``, ``"<H"``, ``"!Q"``).

    Anything the reader must hold whole (a frame with its header, ``readexactly(n)``,
    ``peek(n)``, a line) must fit the capacity, else ``LimitOverrunError`` and nothing is
    consumed. EOF in the middle raises ``IncompleteReadError`` with ``.partial`` (the bytes
    read, consumed) and ``.expected``; ``readline`` returns the partial line instead, as
    asyncio does (but keeps the data and raises ``LimitOverrunError`` when a line does not
    fit, where asyncio discards it). A timeout (``timeout=``, else the socket's own) is one
    deadline per call; on a non-blocking source a call raises ``BlockingIOError`` and keeps
    every received byte for the next call. That holds for ``read()`` (to EOF) too, which may
    gather more than the ring holds: interrupted by a would-block, a timeout or any other
    error, it consumes nothing; the exception carries ``.partial`` (a copy of every byte
    gathered) and ``.transferred`` (their count), and the next call of any kind returns
    those bytes first (``buffered`` counts them; ``reader.ring`` holds the first
    ``capacity`` of them, the reader the rest).

    Until ``__init__`` has run (``Reader.__new__``, a subclass that skips it) every call
    raises ``ValueError``, as on a closed reader.

Counters (``fastio.stats()["ring"]``): the common ones plus ``fills``, ``received``,
``readv`` (two-segment receives), ``wraps`` (receives or sends that crossed the end of the
memory) and ``frames``.
"""

from ._errors import IncompleteReadError, LimitOverrunError
from ._impl import twin_module

_twin = twin_module("ring")

RingBuffer = _twin.RingBuffer
Reader = _twin.Reader

__all__ = ["IncompleteReadError", "LimitOverrunError", "Reader", "RingBuffer"]
