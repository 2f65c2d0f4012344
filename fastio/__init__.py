"""fastio: native I/O primitives for the hot paths of Python network and file code.

Zero-copy transfer (``sendfile``, ``splice``, ``copy``, ``relay``), batched writing
(``BatchWriter``), buffered reading (``RingBuffer``, ``Reader``) and connection reuse
(``Pool``, ``KeyedPool``, ``SocketPool``), each with a native (Cython) and a pure-Python twin
of the same behaviour. ``IMPLEMENTATION`` says which twin is live; ``info()`` what the
platform offers; ``stats()`` the counters of every primitive; ``profile()`` times every system
call the primitives make.
"""

from ._errors import IncompleteReadError, LimitOverrunError, PoolClosed, PoolTimeout
from ._impl import IMPLEMENTATION
from ._info import info
from ._profile import ProfileReport, profile
from ._stats import snapshot as _snapshot
from .batch import BatchWriter
from .pool import KeyedPool, Pool, PoolStats, SocketPool
from .ring import Reader, RingBuffer
from .transfer import copy, relay, sendfile, splice

__version__ = "0.1.0.dev0"


def stats(reset=False):
    """Counters of every primitive of the live implementation, by primitive name.

    Every primitive reports ``calls``, ``bytes``, ``syscalls``, ``would_block``, ``eintr``,
    ``partial`` and ``fallbacks`` (``fastio._stats.COMMON_FIELDS``) plus its own counters
    (the pool its wait count and wait time, for instance). Counting is always on and cheap;
    for latencies of the system calls use ``profile()``. ``reset=True`` zeroes the counters
    after taking the snapshot.
    """
    return _snapshot(IMPLEMENTATION, reset)


__all__ = [
    "IMPLEMENTATION",
    "BatchWriter",
    "IncompleteReadError",
    "KeyedPool",
    "LimitOverrunError",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "PoolTimeout",
    "ProfileReport",
    "Reader",
    "RingBuffer",
    "SocketPool",
    "__version__",
    "copy",
    "info",
    "profile",
    "relay",
    "sendfile",
    "splice",
    "stats",
]
