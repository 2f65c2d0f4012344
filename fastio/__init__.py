"""fastio: native I/O primitives for the hot paths of Python network and file code.

Zero-copy transfer (``sendfile``, ``splice``, ``copy``, ``relay``), batched writing
(``BatchWriter``), buffered reading (``RingBuffer``, ``Reader``) and connection reuse
(``Pool``, ``KeyedPool``, ``SocketPool``), each with a native (Cython) and a pure-Python twin
of the same behaviour. ``IMPLEMENTATION`` says which twin is live; ``info()`` what the
platform offers; ``stats()`` the counters of every primitive.
"""

from ._errors import IncompleteReadError, LimitOverrunError, PoolClosed, PoolTimeout
from ._impl import IMPLEMENTATION
from ._info import info
from ._stats import snapshot as _snapshot
from .transfer import copy, relay, sendfile, splice

__version__ = "0.1.0.dev0"


def stats(reset=False):
    """Counters of every primitive of the live implementation, by primitive name.

    ``reset=True`` zeroes them after taking the snapshot.
    """
    return _snapshot(IMPLEMENTATION, reset)


__all__ = [
    "IMPLEMENTATION",
    "IncompleteReadError",
    "LimitOverrunError",
    "PoolClosed",
    "PoolTimeout",
    "__version__",
    "copy",
    "info",
    "relay",
    "sendfile",
    "splice",
    "stats",
]
