"""Pool policy shared by both twins: settings, ``PoolStats``, lifetime jitter, leak reports,
fork handling, and the keyed pools (``KeyedPool``, ``SocketPool``) built over either twin's
``Pool``.

Nothing here is on the acquire/release fast path: the twins keep that (``_pool_c.pyx`` in C
fields with no lock under the GIL, ``_pool_py.py`` under one ``threading.Lock``). What is here
needs no C and is written once.
"""

import _thread
import dis
import functools
import logging
import math
import os
import random
import socket
import sys
import threading
import time
import traceback
import warnings
import weakref
from dataclasses import dataclass, fields

from . import _stats
from ._errors import PoolClosed, PoolTimeout

__all__ = [
    "CLOSED",
    "SLOT",
    "PoolConfig",
    "PoolStats",
    "capture_stack",
    "check_timeout_arg",
    "close_quietly",
    "default_close",
    "default_is_broken",
    "format_stack",
    "judge_broken",
    "lifetime_deadline",
    "make_keyed_pools",
    "pool_closed",
    "pool_config",
    "pool_timeout",
    "report_leak",
    "socket_is_alive",
    "track",
]

logger = logging.getLogger("fastio.pool")

#: What a waiter can be woken with besides a connection: a free slot to create one in, or the
#: news that the pool closed.
SLOT = type("_Slot", (), {"__repr__": lambda self: "<slot>"})()
CLOSED = type("_Closed", (), {"__repr__": lambda self: "<closed>"})()


@dataclass(frozen=True)
class PoolStats:
    """A snapshot of a pool's state and counters (``database/sql``'s ``DBStats`` and more).

    ``open == in_use + idle`` always holds; a connection being checked or reset counts as in
    use. ``wait_count``/``wait_duration`` are the acquires that had to wait and the seconds
    they waited in total. The ``closed_*`` counters say why connections were closed:
    ``closed_max_idle`` (over ``max_idle`` on return, or evicted for another key under a
    keyed pool's ``max_total``), ``closed_max_idle_time``, ``closed_max_lifetime``,
    ``closed_broken`` (discarded by the caller, ``is_broken``, or a failing ``reset``).
    """

    max_size: int
    open: int
    in_use: int
    idle: int
    waiting: int
    wait_count: int
    wait_duration: float
    created: int
    create_failures: int
    check_failures: int
    closed_max_idle: int
    closed_max_idle_time: int
    closed_max_lifetime: int
    closed_broken: int
    leaks_reported: int

    def __str__(self):
        return ", ".join(
            f"{f.name}={getattr(self, f.name):.3f}"
            if f.name == "wait_duration"
            else f"{f.name}={getattr(self, f.name)}"
            for f in fields(self)
        )

    @classmethod
    def total(cls, parts, max_size):
        """The sum of several pools' stats (a keyed pool's totals)."""
        values = {f.name: 0 for f in fields(cls)}
        values["wait_duration"] = 0.0
        for part in parts:
            for name in values:
                values[name] += getattr(part, name)
        values["max_size"] = max_size
        return cls(**values)


# --- settings ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolConfig:
    """Validated ``Pool`` settings; durations in seconds, ``inf`` for "no limit"."""

    max_size: int
    min_idle: int
    max_idle: int
    max_lifetime: float
    max_idle_time: float
    acquire_timeout: float  # -1.0: wait forever
    check_after: float
    leak_timeout: float  # 0.0: off
    lifetime_jitter: float


def _int_arg(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    # A size beyond any process means "no limit" that a C Py_ssize_t can hold (issue 9: the
    # native twin raised OverflowError for 2**63).
    return value if value <= sys.maxsize else sys.maxsize


def _seconds_arg(value, name, *, allow_zero=True):
    """``None`` -> inf; else a finite or infinite non-negative number of seconds."""
    if value is None:
        return math.inf
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    value = float(value)
    if not value >= 0.0 or (value == 0.0 and not allow_zero):  # also rejects NaN
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} or None, got {value!r}")
    return value


def check_timeout_arg(timeout, name="timeout"):
    """An acquire timeout: ``None`` (or more than a lock can wait) -> -1.0, wait forever;
    else seconds >= 0."""
    value = _seconds_arg(timeout, name)
    return -1.0 if value >= _thread.TIMEOUT_MAX else value


def _callable_arg(value, name):
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, not {type(value).__name__}")
    return value


def pool_config(
    factory,
    max_size,
    min_idle,
    max_idle,
    max_lifetime,
    max_idle_time,
    acquire_timeout,
    check,
    check_after,
    reset,
    close,
    is_broken,
    leak_timeout,
    lifetime_jitter,
    clock,
):
    """Validate every ``Pool`` argument (``TypeError``/``ValueError``) before anything runs."""
    if not callable(factory):
        raise TypeError(f"factory must be callable, not {type(factory).__name__}")
    for value, name in (
        (check, "check"),
        (reset, "reset"),
        (close, "close"),
        (is_broken, "is_broken"),
        (clock, "clock"),
    ):
        _callable_arg(value, name)
    max_size = _int_arg(max_size, "max_size", 1)
    min_idle = _int_arg(min_idle, "min_idle", 0)
    max_idle = max_size if max_idle is None else _int_arg(max_idle, "max_idle", 0)
    if max_idle > max_size:
        raise ValueError(f"max_idle ({max_idle}) cannot exceed max_size ({max_size})")
    if min_idle > max_idle:
        raise ValueError(f"min_idle ({min_idle}) cannot exceed max_idle ({max_idle})")
    jitter = lifetime_jitter
    if isinstance(jitter, bool) or not isinstance(jitter, (int, float)):
        raise TypeError(f"lifetime_jitter must be a number, not {type(jitter).__name__}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"lifetime_jitter must be between 0 and 1, got {jitter!r}")
    leak = _seconds_arg(leak_timeout, "leak_timeout", allow_zero=False)
    return PoolConfig(
        max_size=max_size,
        min_idle=min_idle,
        max_idle=max_idle,
        max_lifetime=_seconds_arg(max_lifetime, "max_lifetime", allow_zero=False),
        max_idle_time=_seconds_arg(max_idle_time, "max_idle_time", allow_zero=False),
        acquire_timeout=check_timeout_arg(acquire_timeout, "acquire_timeout"),
        check_after=0.0 if check_after is None else _seconds_arg(check_after, "check_after"),
        leak_timeout=0.0 if leak == math.inf else leak,
        lifetime_jitter=float(jitter),
    )


def lifetime_deadline(now, max_lifetime, jitter):
    """When a connection made at ``now`` must go: ``max_lifetime`` minus up to ``jitter`` of
    it, at random (HikariCP's variance, so connections made together do not all expire
    together)."""
    if max_lifetime == math.inf:
        return math.inf
    return now + max_lifetime * (1.0 - jitter * random.random())


# --- defaults and errors ----------------------------------------------------------------------


def default_close(conn):
    """Close a connection: ``conn.close()``."""
    conn.close()


def default_is_broken(exc):
    """Whether an exception inside ``connection()`` discards the connection: ``OSError``."""
    return isinstance(exc, OSError)


def judge_broken(is_broken, exc, conn):
    """Whether ``exc`` (an ``Exception`` raised inside ``connection()``) discards ``conn``:
    ``is_broken(exc)``, by default whether it is an ``OSError``. An ``is_broken`` that raises
    cannot vouch for the connection, so it is discarded; the failure is logged so that the
    caller's own exception goes on unhidden (an interrupt raised inside ``is_broken`` goes on
    instead, with the caller's exception as its ``__context__``). The caller releases the
    connection whatever happens here."""
    if is_broken is None:
        return isinstance(exc, OSError)
    try:
        return bool(is_broken(exc))
    except Exception:
        logger.warning("fastio pool: is_broken(%r) failed; discarding %r", exc, conn, exc_info=True)
        return True


def close_quietly(close, conn):
    """Close a connection the pool gave up on; an error is logged, never raised."""
    try:
        if close is None:
            conn.close()
        else:
            close(conn)
    except Exception:
        logger.warning("fastio pool: closing %r failed", conn, exc_info=True)


def pool_timeout(timeout, stats):
    """``PoolTimeout`` for an acquire that found nothing within ``timeout`` seconds."""
    return PoolTimeout(f"no connection available within {timeout:g} s ({stats})")


def pool_closed():
    return PoolClosed("the pool is closed")


# --- leak reports -----------------------------------------------------------------------------


def capture_stack(limit=32):
    """Where an acquire happened, cheap to take: a flat list ``[code, lasti, ...]`` of the
    caller's frames, innermost first (line numbers are worked out only when a leak is
    reported, from each code object's line table). The pool's own frames are left out."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in _POOL_FILES:
        frame = frame.f_back
    stack = []
    append = stack.append
    while frame is not None and limit:
        append(frame.f_code)
        append(frame.f_lasti)
        frame = frame.f_back
        limit -= 1
    return stack


def _line_of(code, lasti):
    """The source line of bytecode offset ``lasti`` in ``code``."""
    line = None
    if hasattr(code, "co_lines"):  # 3.10+
        for start, end, lineno in code.co_lines():
            if start <= lasti < end:
                line = lineno
                break
    else:
        for offset, lineno in dis.findlinestarts(code):
            if offset > lasti:
                break
            line = lineno
    return code.co_firstlineno if line is None else line


def format_stack(stack):
    """The traceback lines of a stack from ``capture_stack`` (outermost first)."""
    frames = [
        (code.co_filename, _line_of(code, lasti), code.co_name, None)
        for code, lasti in zip(stack[0::2], stack[1::2])
    ]
    frames.reverse()
    return "".join(traceback.StackSummary.from_list(frames).format())


_POOL_FILES = {
    os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    for name in ("_pool_py.py", "_pool_policy.py", "pool.py")
} | {__file__}


def report_leak(conn, held, leak_timeout, stack):
    """Report once that ``conn`` was held ``held`` seconds (> ``leak_timeout``): a
    ``ResourceWarning`` and a warning on the ``fastio.pool`` logger, with the acquire's
    traceback. The connection is not taken away."""
    where = format_stack(stack or ()) or "  (stack not captured)\n"
    message = (
        f"fastio pool: connection {conn!r} held for {held:.3f} s, longer than "
        f"leak_timeout={leak_timeout:g} s; acquired at:\n{where}"
    )
    logger.warning(message)
    warnings.warn(message, ResourceWarning, stacklevel=2)


# --- fork and housekeeping --------------------------------------------------------------------

# Objects whose ``_after_fork()`` the child runs: limits first (they own the locks their
# pools share), then pools and keyed pools. Weak, so tracking keeps nothing alive.
_fork_first = weakref.WeakSet()
_fork_then = weakref.WeakSet()
# Pools with background chores (leak scan, idle/lifetime eviction, min_idle top-up) -> how
# often, in seconds. One daemon thread serves them all, and ends when none is left.
_chores = weakref.WeakKeyDictionary()
_housekeeper = None
_housekeeper_lock = threading.Lock()


def housekeeping_every(config):
    """How often a pool's background chores run (0.0: it has none). Leaks are looked for
    every quarter of ``leak_timeout``; idle and expired connections are closed (and
    ``min_idle`` restored) every half of ``min(max_idle_time, max_lifetime)``, as
    ``database/sql``'s cleaner does; both within [5 ms, 30 s]."""
    every = math.inf
    if config.leak_timeout > 0.0:
        every = config.leak_timeout / 4.0
    ages = min(config.max_idle_time, config.max_lifetime)
    if ages < math.inf:
        every = min(every, ages / 2.0)
    elif config.min_idle:
        every = min(every, 30.0)
    if every == math.inf:
        return 0.0
    return min(30.0, max(0.005, every))


def track(obj, *, first=False, every=0.0):
    """Register a pool (or limit) for the fork handler and, with ``every`` > 0, for its
    background chores (``obj._housekeep()``)."""
    (_fork_first if first else _fork_then).add(obj)
    if every > 0.0:
        with _housekeeper_lock:
            _chores[obj] = every
        _start_housekeeper()


def _housekeep():
    global _housekeeper
    due = weakref.WeakKeyDictionary()
    while True:
        with _housekeeper_lock:
            chores = list(_chores.items())
            if not chores:
                _housekeeper = None
                return
        now = time.monotonic()
        wake = now + 30.0
        for pool, every in chores:
            when = due.get(pool)
            if when is None:
                when = due[pool] = now + every
            if now >= when:
                try:
                    pool._housekeep()
                except Exception:
                    logger.warning("fastio pool: housekeeping of %r failed", pool, exc_info=True)
                when = due[pool] = time.monotonic() + every
            wake = min(wake, when)
        del chores, pool  # hold no pool while asleep
        time.sleep(max(0.001, wake - time.monotonic()))


def _start_housekeeper():
    global _housekeeper
    with _housekeeper_lock:
        if _housekeeper is None or not _housekeeper.is_alive():
            _housekeeper = threading.Thread(
                target=_housekeep, name="fastio-pool-housekeeper", daemon=True
            )
            _housekeeper.start()


def _after_fork_in_child():
    global _housekeeper, _housekeeper_lock
    _housekeeper = None
    _housekeeper_lock = threading.Lock()
    for group in (_fork_first, _fork_then):
        for obj in list(group):
            obj._after_fork()
    if len(_chores):
        _start_housekeeper()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- sockets ----------------------------------------------------------------------------------


_DONTWAIT = getattr(socket, "MSG_DONTWAIT", 0)
_calls = _stats.syscalls("pool")  # looked up per call, so profile() sees the check


def socket_is_alive(sock):
    """The default check of ``SocketPool``: a non-blocking ``MSG_PEEK`` receive. EOF (the
    server closed the socket while it sat idle), unexpected bytes, or an error mean the
    connection is not fit to hand out; "would block" means it is."""
    timeout = sock.gettimeout()
    # A socket with a timeout polls before it receives, and without MSG_DONTWAIT (Windows) a
    # blocking one would wait: the peek is made on a non-blocking socket then.
    switch = timeout != 0.0 and (timeout is not None or not _DONTWAIT)
    if switch:
        sock.settimeout(0.0)
    try:
        _calls.recv(sock, 1, socket.MSG_PEEK | _DONTWAIT)
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False
    finally:
        if switch:
            sock.settimeout(timeout)
    return False


def _check_socket_key(key):
    if not isinstance(key, tuple) or len(key) != 2:
        raise TypeError(f"a SocketPool key is a (host, port) tuple, not {key!r}")
    host, port = key
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 < port < 65536:
        raise ValueError(f"port must be between 1 and 65535, got {port}")


# --- keyed pools ------------------------------------------------------------------------------


def make_keyed_pools(pool_class, limit_class, module_name, socket_check):
    """``KeyedPool`` and ``SocketPool`` over one twin's ``Pool`` and global ``Limit``;
    ``socket_check`` is the twin's default ``SocketPool`` check."""

    class KeyedPool:
        """One pool per key with per-key and global limits, as ``http.Transport`` keys by host.

        ``factory(key)`` makes a connection for ``key``. ``max_per_key`` is each key's
        ``max_size``, ``max_idle_per_key`` its ``max_idle``, ``max_total`` (``None``: no limit)
        bounds the connections of all keys together, counting those being created; at that
        bound an idle connection of another key is closed to make room, else the acquire waits.
        Other keyword arguments are ``Pool``'s and apply to each key.
        """

        def __init__(
            self,
            factory,
            *,
            max_per_key=10,
            max_idle_per_key=None,
            max_total=None,
            **options,
        ):
            if not callable(factory):
                raise TypeError(f"factory must be callable, not {type(factory).__name__}")
            unknown = set(options) - _POOL_OPTIONS
            if unknown:
                raise TypeError(f"unexpected keyword argument {sorted(unknown)[0]!r}")
            if max_total is not None:
                max_total = _int_arg(max_total, "max_total", 1)
            probe = dict(options, max_size=max_per_key, max_idle=max_idle_per_key)
            # Validate every setting now, not at the first acquire of a new key.
            pool_config(
                factory,
                **{name: probe.get(name, default) for name, default in _POOL_DEFAULTS.items()},
            )
            self._factory = factory
            self._max_per_key = max_per_key
            self._max_total = max_total
            self._options = dict(options, max_size=max_per_key, max_idle=max_idle_per_key)
            self._limit = limit_class(0 if max_total is None else max_total)
            self._pools = {}
            self._owner = {}
            self._closed = False
            self._forked = False
            track(self)

        def _check_key(self, key):
            hash(key)

        def _make_factory(self, key):
            return functools.partial(self._factory, key)

        def _pool(self, key):
            pool = self._pools.get(key)
            if pool is None:
                self._check_key(key)
                if self._closed:
                    raise pool_closed()
                pool = pool_class(self._make_factory(key), _limit=self._limit, **self._options)
                winner = self._pools.setdefault(key, pool)
                if winner is not pool:
                    pool.close()
                    return winner
                self._limit.add(pool)
                if self._closed:
                    pool.close()
            return pool

        def acquire(self, key, timeout=None):
            """A connection for ``key`` (see ``Pool.acquire``)."""
            pool = self._pools.get(key) or self._pool(key)
            conn = pool.acquire(timeout)
            self._owner[id(conn)] = pool
            return conn

        def release(self, conn, *, discard=False):
            """Give back a connection from ``acquire`` (see ``Pool.release``)."""
            pool = self._owner.pop(id(conn), None)
            if pool is None:
                if self._forked:
                    return  # the parent's: forgotten, not closed
                raise ValueError(f"{conn!r} was not acquired from this pool")
            if discard:
                pool.release(conn, discard=True)
            else:
                pool.release(conn)

        def connection(self, key, timeout=None):
            """``with pool.connection(key) as conn:`` (see ``Pool.connection``)."""
            return (self._pools.get(key) or self._pool(key)).connection(timeout)

        def stats(self, key=None):
            """One key's ``PoolStats``, or (``key=None``) the totals of every key, whose
            ``max_size`` is ``max_total`` (or the sum of the keys' limits without one)."""
            if key is not None:
                pool = self._pools.get(key)
                if pool is None:
                    self._check_key(key)
                    return PoolStats.total((), self._max_per_key)
                return pool.stats()
            pools = list(self._pools.values())
            max_size = self._max_total or self._max_per_key * len(pools)
            return PoolStats.total([p.stats() for p in pools], max_size)

        def keys(self):
            """The keys that have a pool."""
            return list(self._pools)

        def close(self):
            """Close every key's pool (see ``Pool.close``); a second call is harmless."""
            self._closed = True
            for pool in list(self._pools.values()):
                pool.close()

        @property
        def closed(self):
            return self._closed

        def _after_fork(self):
            self._owner.clear()
            self._forked = True

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            self.close()

        def __repr__(self):
            pools = list(self._pools.values())
            max_size = self._max_total or self._max_per_key * len(pools)
            totals = PoolStats.total([p._snapshot() for p in pools], max_size)
            return f"<{type(self).__name__} keys={len(pools)} {totals}>"

    class SocketPool(KeyedPool):
        """A keyed pool of TCP connections by ``(host, port)``.

        ``connect_timeout`` bounds each connect; ``timeout`` is the socket timeout of the
        connections handed out (``None``: blocking); ``nodelay`` sets ``TCP_NODELAY``. The
        default ``check`` (run on every checkout of an idle socket: ``check_after=0``) is a
        non-blocking ``MSG_PEEK`` that notices a socket the server closed while it sat idle, or
        that holds unexpected bytes, and replaces it before the caller sees it.
        """

        def __init__(
            self,
            *,
            connect_timeout=10.0,
            timeout=None,
            nodelay=True,
            check=_DEFAULT,
            check_after=0.0,
            **options,
        ):
            if connect_timeout is not None:
                _seconds_arg(connect_timeout, "connect_timeout", allow_zero=False)
            if timeout is not None:
                _seconds_arg(timeout, "timeout")
            self._connect_timeout = connect_timeout
            self._timeout = timeout
            self._nodelay = bool(nodelay)
            if check is _DEFAULT:
                check = socket_check
            super().__init__(self._connect, check=check, check_after=check_after, **options)

        def _check_key(self, key):
            _check_socket_key(key)

        def _connect(self, key):
            sock = socket.create_connection(key, timeout=self._connect_timeout)
            try:
                sock.settimeout(self._timeout)
                if self._nodelay and sock.family in (socket.AF_INET, socket.AF_INET6):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except BaseException:
                sock.close()
                raise
            return sock

    for cls in (KeyedPool, SocketPool):
        cls.__module__ = module_name
    return KeyedPool, SocketPool


_DEFAULT = object()

_POOL_DEFAULTS = {
    "max_size": 10,
    "min_idle": 0,
    "max_idle": None,
    "max_lifetime": None,
    "max_idle_time": None,
    "acquire_timeout": 30.0,
    "check": None,
    "check_after": None,
    "reset": None,
    "close": None,
    "is_broken": None,
    "leak_timeout": None,
    "lifetime_jitter": 0.05,
    "clock": None,
}
_POOL_OPTIONS = frozenset(_POOL_DEFAULTS) - {"max_size", "max_idle"}
