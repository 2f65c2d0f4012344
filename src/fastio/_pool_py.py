"""Python twin of the connection pool: the same state machine as ``_pool_c.pyx``, guarded by
one ``threading.Lock`` (shared by every key's pool under a ``KeyedPool``).

Idle connections are a most-recently-used stack; waiters are served first come, first served,
each blocking on its own lock and handed the connection (or a free slot, or the news that the
pool closed) directly by whoever frees it. Factories, checks, resets and closes run outside
the lock. ``AioPool`` is the same books for ``fastio.aio.Pool``, with waiters that are futures.
"""

import _thread
import collections
import dataclasses
import math
import threading
import time

from . import _pool_policy as policy
from . import _stats
from ._errors import PoolClosed, PoolTimeout
from ._pool_policy import CLOSED, SLOT, PoolStats

__all__ = ["KeyedPool", "Pool", "PoolClosed", "PoolStats", "PoolTimeout", "SocketPool"]

_counters = _stats.Counters(
    "acquires", "releases", "waits", "wait_ns", "timeouts", "created", "closed", "check_failures"
)
_stats.register("python", "pool", _counters.snapshot)
# Counters.__setattr__ guards the names; on hot paths the pool adds straight into its dict
# (the same dict object for the life of the process: reset() writes into it).
_count = _counters.__dict__
_monotonic = time.monotonic
_INF = math.inf

# Why a connection is closed: the PoolStats counter it adds to (None: not counted).
_MAX_IDLE, _MAX_IDLE_TIME, _MAX_LIFETIME, _BROKEN, _POOL_CLOSED = range(5)


class _Entry:
    """A pooled connection and what the pool knows of it."""

    __slots__ = (
        "acquired_at",
        "conn",
        "expires_at",
        "idle_since",
        "in_use",
        "key",
        "reported",
        "stack",
    )

    def __init__(self, conn, expires_at):
        self.conn = conn
        self.key = id(conn)
        self.expires_at = expires_at
        self.idle_since = 0.0
        self.acquired_at = 0.0
        self.stack = None
        self.in_use = True
        self.reported = False


class _Waiter:
    """One blocked acquire: its own lock, released by whoever hands it a result."""

    __slots__ = ("lock", "result")

    def __init__(self):
        self.lock = _thread.allocate_lock()
        self.lock.acquire()
        self.result = None

    def hand(self, result):
        """Take ``result`` (True), or refuse it (False: the pool offers it to the next)."""
        self.result = result
        self.lock.release()
        return True


class _FutureWaiter:
    """A waiting ``fastio.aio`` acquire: its future gets the connection (not the entry), a
    free slot or the news that the pool closed. A future already done (cancelled, or past its
    deadline) refuses, and the pool offers the result to the next waiter: nothing is lost."""

    __slots__ = ("future",)

    def __init__(self, future):
        self.future = future

    def hand(self, result):
        if self.future.done():
            return False
        self.future.set_result(result.conn if isinstance(result, _Entry) else result)
        return True


class Limit:
    """The global bound of a keyed pool (``max_total``): its pools share this lock, so the
    count of every key's connections, and the queue of keys waiting for room, stay exact."""

    def __init__(self, max_total):
        self.lock = threading.RLock()  # reentrant: see Pool.release
        self.max_total = max_total  # 0: no global limit
        self.total = 0
        self.wanting = collections.deque()
        self.pools = []
        policy.track(self, first=True)

    def add(self, pool):
        with self.lock:
            self.pools.append(pool)

    # The methods below run with self.lock held.

    def reserve(self):
        if self.max_total and self.total >= self.max_total:
            return False
        self.total += 1
        return True

    def freed(self):
        """A connection (or a slot being created) of some key is gone: give the room to the
        key that has waited longest, if any."""
        self.total -= 1
        while self.wanting:
            pool = self.wanting.popleft()
            if pool._grant_slot():
                self.total += 1
                return

    def wanted(self):
        """Whether some key still waits for room under the global limit. A key is queued in
        ``wanting`` when one of its acquires starts waiting, but that waiter may be served by
        its own key's returns meanwhile: such stale entries are dropped here, so that they
        never make a return close a healthy idle connection of another key."""
        wanting = self.wanting
        while wanting:
            if wanting[0]._wants_room():
                return True
            wanting.popleft()
        return False

    def steal(self, thief):
        """Close the least recently used idle connection of another key to make room."""
        for pool in self.pools:
            if pool is not thief and pool._idle:
                entry = pool._idle.pop(0)
                pool._forget(entry, _MAX_IDLE)
                return entry
        return None

    def _after_fork(self):
        self.lock = threading.RLock()
        self.total = 0
        self.wanting.clear()


class _Lease:
    """``with pool.connection() as conn``: acquire on entry, release on exit."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool, timeout):
        self.pool = pool
        self.timeout = timeout
        self.conn = None

    def __enter__(self):
        self.conn = self.pool.acquire(self.timeout)
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        conn, self.conn = self.conn, None
        if exc is None:
            self.pool.release(conn)
            return False
        # Whatever is_broken does (even raise), the connection goes back: no slot is lost.
        discard = True  # KeyboardInterrupt & co: the conversation may be cut midway
        try:
            if isinstance(exc, Exception):
                discard = policy.judge_broken(self.pool._is_broken, exc, conn)
        finally:
            self.pool.release(conn, discard=discard)
        return False


class Pool:
    """A pool of reusable connections made by ``factory()``; see ``fastio.pool.Pool``."""

    def __init__(
        self,
        factory,
        *,
        max_size=10,
        min_idle=0,
        max_idle=None,
        max_lifetime=None,
        max_idle_time=None,
        acquire_timeout=30.0,
        check=None,
        check_after=None,
        reset=None,
        close=None,
        is_broken=None,
        leak_timeout=None,
        lifetime_jitter=0.05,
        clock=None,
        _limit=None,
        _track=True,
    ):
        config = policy.pool_config(
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
        )
        self._config = config
        self._factory = factory
        self._check = check
        self._reset = reset
        self._close = close
        self._is_broken = is_broken
        self._clock = clock or _monotonic
        self._limit = _limit
        self._max_size = config.max_size
        self._min_idle = config.min_idle
        self._max_idle = config.max_idle
        self._max_lifetime = config.max_lifetime
        self._max_idle_time = config.max_idle_time
        self._acquire_timeout = config.acquire_timeout
        self._check_after = config.check_after
        self._leak_timeout = config.leak_timeout
        self._jitter = config.lifetime_jitter
        # Reentrant so that a finalizer the garbage collector runs inside a critical section
        # cannot deadlock the thread on it (see release: such a release is deferred).
        self._lock = _limit.lock if _limit is not None else threading.RLock()
        self._reset_state()
        if _track:  # not for fastio.aio's pools: their chores are coroutines, on their loop
            policy.track(self, every=policy.housekeeping_every(config))
            if self._min_idle:
                self._fill(self._min_idle)

    def _reset_state(self):
        self._idle = []  # MRU stack of _Entry: the top is the most recently returned
        self._entries = {}  # id(conn) -> _Entry, every open connection
        self._waiters = collections.deque()
        self._open = 0
        self._pending = 0  # connections being created: they count against max_size
        self._closed = False
        self._forked = False
        self._wait_count = 0
        self._wait_duration = 0.0
        self._created = 0
        self._create_failures = 0
        self._check_failures = 0
        self._closed_max_idle = 0
        self._closed_max_idle_time = 0
        self._closed_max_lifetime = 0
        self._closed_broken = 0
        self._leaks_reported = 0
        self._deferred = []  # (conn, discard) released from inside a critical section

    # --- accounting (lock held) -----------------------------------------------------------

    def _forget(self, entry, why):
        """Drop an entry from the books; the caller closes the connection outside the lock."""
        del self._entries[entry.key]
        self._open -= 1
        if why == _MAX_IDLE:
            self._closed_max_idle += 1
        elif why == _MAX_IDLE_TIME:
            self._closed_max_idle_time += 1
        elif why == _MAX_LIFETIME:
            self._closed_max_lifetime += 1
        elif why == _BROKEN:
            self._closed_broken += 1
        _count["closed"] += 1
        self._slot_freed()

    def _hand(self, result):
        """Give ``result`` to the oldest waiter that takes it; False when none did."""
        waiters = self._waiters
        while waiters:
            if waiters.popleft().hand(result):
                return True
        return False

    def _slot_freed(self):
        """A slot (an open connection or one being created) went away: hand it to the oldest
        waiter, or to the keyed pool's next key waiting for room."""
        if not self._closed and self._waiters:
            self._pending += 1
            if self._hand(SLOT):
                return
            self._pending -= 1
        if self._limit is not None:
            self._limit.freed()

    def _wants_room(self):
        """Whether a waiter of ours could use room freed under the keyed pool's global limit."""
        return (
            not self._closed and bool(self._waiters) and self._open + self._pending < self._max_size
        )

    def _grant_slot(self):
        """The keyed pool's global limit has room for this key: give it to our oldest waiter."""
        if not self._wants_room():
            return False
        self._pending += 1
        if self._hand(SLOT):
            return True
        self._pending -= 1
        return False

    def _unwant(self):
        """A waiter left: it no longer wants room under the keyed pool's global limit."""
        # Looked up first, as the native twin does: deque.remove's ValueError would format
        # repr(self), whose snapshot takes the lock held here (issue 9: every keyed acquire
        # that timed out on its own key's limit deadlocked).
        if self._limit is not None and self in self._limit.wanting:
            self._limit.wanting.remove(self)

    def _reserve(self):
        if self._open + self._pending >= self._max_size:
            return False
        if self._limit is not None and not self._limit.reserve():
            return False
        self._pending += 1
        return True

    def _put_back(self, entry, discard, now):
        """Return an entry: to the oldest waiter, to the idle stack, or to be closed (returned)."""
        entry.in_use = False
        entry.stack = None
        entry.reported = False
        if discard:
            why = _BROKEN
        elif self._closed:
            why = _POOL_CLOSED
        elif now >= entry.expires_at:
            why = _MAX_LIFETIME
        else:
            if self._waiters:
                entry.in_use = True
                if self._hand(entry):
                    return None
                entry.in_use = False
            if len(self._idle) >= self._max_idle or (
                self._limit is not None and self._limit.wanted()
            ):
                why = _MAX_IDLE
            else:
                entry.idle_since = now
                self._idle.append(entry)
                return None
        self._forget(entry, why)
        return entry

    def _pick(self, now):
        """One step of an acquire (lock held): ``("got" | "check", entry)`` (the top idle
        connection, now in use; "check" when it needs a check), ``("expired", entry)`` (given
        up on: off the books, to be closed), ``("create", None)`` (a slot is reserved) or
        ``(None, None)``."""
        idle = self._idle
        if idle:
            entry = idle.pop()
            if now >= entry.expires_at:
                self._forget(entry, _MAX_LIFETIME)
                return ("expired", entry)
            if now - entry.idle_since >= self._max_idle_time and self._open > self._min_idle:
                self._forget(entry, _MAX_IDLE_TIME)
                return ("expired", entry)
            entry.in_use = True
            if self._check is not None and now - entry.idle_since >= self._check_after:
                return ("check", entry)
            return ("got", entry)
        if self._reserve():
            return ("create", None)
        return (None, None)

    def _fit(self, entry, now):
        """Whether an idle connection may be handed out as it is (what _pick calls "got")."""
        idle_for = now - entry.idle_since
        return (
            now < entry.expires_at
            and (idle_for < self._max_idle_time or self._open <= self._min_idle)
            and (self._check is None or idle_for < self._check_after)
        )

    def _check_failed(self, entry):
        """A connection failed its check: off the books (lock held; the caller closes it)."""
        self._check_failures += 1
        self._forget(entry, None)
        _count["check_failures"] += 1

    def _register(self, conn, now):
        """Book a connection the factory made in this caller's slot (lock held); None when
        the pool closed meanwhile (the caller closes it)."""
        self._pending -= 1
        if self._closed:
            if self._limit is not None:
                self._limit.freed()
            return None
        if id(conn) in self._entries:
            self._create_failures += 1
            self._slot_freed()
            raise ValueError(f"factory returned {conn!r}, a connection the pool already holds")
        entry = _Entry(conn, policy.lifetime_deadline(now, self._max_lifetime, self._jitter))
        self._entries[entry.key] = entry
        self._open += 1
        self._created += 1
        _count["created"] += 1
        return entry

    def _create_failed(self):
        self._pending -= 1
        self._create_failures += 1
        self._slot_freed()

    def _shut(self):
        """Mark the pool closed (lock held): waiters get CLOSED; returns the idle entries,
        now off the books (the caller closes them)."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().hand(CLOSED)
        doomed = []
        while self._idle:
            entry = self._idle.pop()
            self._forget(entry, _POOL_CLOSED)
            doomed.append(entry)
        return doomed

    def _stamp(self, entry, now):
        if self._leak_timeout:
            entry.acquired_at = now
            entry.stack = policy.capture_stack()

    # --- acquire ----------------------------------------------------------------------------

    def acquire(self, timeout=None):
        """Check out a connection: the most recently returned idle one (closing those past
        their lifetime or idle time, and checking one idle longer than ``check_after``), else a
        new one, else wait first come, first served. ``timeout`` (default ``acquire_timeout``;
        ``None`` there waits forever) is one deadline for waiting, checking and creating;
        ``PoolTimeout`` says the pool's stats when it passes."""
        if timeout is not None:
            policy.check_timeout_arg(timeout)
        if self._deferred:
            self._release_deferred()
        # Fast path: the top idle connection is fit to hand out as it is.
        if not self._leak_timeout:
            with self._lock:
                idle = self._idle
                if idle and not self._closed:
                    entry = idle[-1]
                    now = self._clock()
                    idle_for = now - entry.idle_since
                    if (
                        now < entry.expires_at
                        and idle_for < self._max_idle_time
                        and (self._check is None or idle_for < self._check_after)
                    ):
                        idle.pop()
                        entry.in_use = True
                        _count["acquires"] += 1
                        _count["calls"] += 1
                        return entry.conn
        return self._acquire(timeout)

    def _acquire(self, timeout):
        """The slow path: expiry, checks, creation, waiting."""
        budget = self._acquire_timeout if timeout is None else policy.check_timeout_arg(timeout)
        start = _monotonic()
        deadline = -1.0 if budget < 0.0 else start + budget
        while True:
            doomed = []
            entry = None
            mode = None
            with self._lock:
                if self._closed:
                    raise policy.pool_closed()
                now = self._clock()
                mode, entry = self._pick(now)
                while mode == "expired":
                    doomed.append(entry)
                    mode, entry = self._pick(now)
                if mode is None:
                    stolen = None
                    if self._limit is not None and self._open + self._pending < self._max_size:
                        # The keyed pool is full: make room by closing another key's
                        # least recently used idle connection, if it has one.
                        stolen = self._limit.steal(self)
                        if stolen is not None:
                            doomed.append(stolen)
                    if stolen is not None and self._reserve():
                        mode = "create"
                    elif budget == 0.0:
                        mode = "timeout"
                    else:
                        waiter = _Waiter()
                        self._waiters.append(waiter)
                        if self._limit is not None and (
                            self._open + self._pending < self._max_size
                        ):
                            self._limit.wanting.append(self)
                        mode = "wait"
                if mode == "got":
                    self._stamp(entry, now)
                    _count["acquires"] += 1
                    _count["calls"] += 1
            for old in doomed:
                policy.close_quietly(self._close, old.conn)
            if mode == "got":
                return entry.conn
            if mode == "check":
                if self._run_check(entry):
                    with self._lock:
                        self._stamp(entry, now)
                    _count["acquires"] += 1
                    _count["calls"] += 1
                    return entry.conn
                if deadline >= 0.0 and _monotonic() >= deadline:
                    raise self._timeout(budget)
                continue
            if mode == "create":
                return self._create()
            if mode == "timeout":
                raise self._timeout(budget)
            if self._deferred:  # may be the very connection this waiter needs
                self._release_deferred()
            result = self._wait(waiter, deadline, budget)
            if result is SLOT:
                return self._create()
            with self._lock:
                self._stamp(result, self._clock())
            _count["acquires"] += 1
            _count["calls"] += 1
            return result.conn

    def _run_check(self, entry):
        """Run ``check`` on an idle connection (already counted as in use); a failure closes
        it. Returns whether it passed."""
        try:
            ok = self._check(entry.conn)
        except Exception:
            ok = False
        except BaseException:
            with self._lock:
                self._forget(entry, _BROKEN)
            policy.close_quietly(self._close, entry.conn)
            raise
        if ok is None or ok:
            return True
        with self._lock:
            self._check_failed(entry)
        policy.close_quietly(self._close, entry.conn)
        return False

    def _create(self):
        """Make a connection in the slot this thread reserved (outside the lock)."""
        try:
            conn = self._factory()
        except BaseException:
            with self._lock:
                self._create_failed()
            raise
        with self._lock:
            now = self._clock()
            entry = self._register(conn, now)
            if entry is not None:
                self._stamp(entry, now)
        if entry is None:
            policy.close_quietly(self._close, conn)
            raise policy.pool_closed()
        _count["acquires"] += 1
        _count["calls"] += 1
        return conn

    def _wait(self, waiter, deadline, budget):
        """Block until handed a connection or a slot; PoolTimeout / PoolClosed otherwise."""
        began = _monotonic()
        _count["waits"] += 1
        try:
            while True:
                if deadline < 0.0:
                    waiter.lock.acquire()
                else:
                    left = deadline - _monotonic()
                    if left > 0.0:
                        waiter.lock.acquire(True, left)
                with self._lock:
                    result = waiter.result
                    if result is None:
                        if deadline >= 0.0 and _monotonic() >= deadline:
                            self._waiters.remove(waiter)
                            self._unwant()
                            self._wait_count += 1
                            self._wait_duration += _monotonic() - began
                            timed_out = True
                        else:
                            continue  # woken early: the deadline has not passed
                    else:
                        self._wait_count += 1
                        self._wait_duration += _monotonic() - began
                        timed_out = False
                if timed_out:
                    raise self._timeout(budget)
                if result is CLOSED:
                    raise policy.pool_closed()
                return result
        except BaseException as exc:
            if isinstance(exc, (PoolTimeout, PoolClosed)):
                raise
            # Interrupted (Ctrl-C): whatever was handed over meanwhile goes back.
            doomed = None
            with self._lock:
                result = waiter.result
                if result is None:
                    self._waiters.remove(waiter)
                    self._unwant()
                elif result is SLOT:
                    self._pending -= 1
                    self._slot_freed()
                elif result is not CLOSED:
                    doomed = self._put_back(result, False, self._clock())
            if doomed is not None:
                policy.close_quietly(self._close, doomed.conn)
            raise
        finally:
            _count["wait_ns"] += int((_monotonic() - began) * 1e9)

    def _timeout(self, budget):
        _count["timeouts"] += 1
        return policy.pool_timeout(budget, self.stats())

    # --- release ----------------------------------------------------------------------------

    def release(self, conn, *, discard=False):
        """Return a connection: to the oldest waiter, else to the idle stack (closed instead
        past ``max_lifetime``, over ``max_idle``, with ``discard=True``, or when the pool is
        closed). ``reset(conn)`` runs first; if it fails the connection is discarded. A
        connection not checked out (a stranger, or one already being released) raises
        ``ValueError``."""
        if self._lock._is_owned():
            # This thread is inside one of the pool's critical sections: a finalizer run by
            # the garbage collector there. Releasing now would see half-updated state, so
            # the release is queued; the next acquire, release or upkeep does it.
            self._deferred.append((conn, discard))
            return
        reset = self._reset is not None and not discard
        with self._lock:
            entry = self._entries.get(id(conn))
            claimed = entry is not None and entry.conn is conn and entry.in_use
            if claimed:
                now = self._clock()
                if (
                    not discard
                    and not self._waiters
                    and now < entry.expires_at
                    and len(self._idle) < self._max_idle
                    and self._limit is None
                    and not self._closed
                    and not reset
                ):
                    # Fast path: straight back onto the idle stack.
                    entry.in_use = False
                    entry.stack = None
                    entry.reported = False
                    entry.idle_since = now
                    self._idle.append(entry)
                    _count["releases"] += 1
                    return
                # Claimed under the lock before reset runs: a second release of the same
                # connection meanwhile is refused instead of stacking it twice.
                entry.in_use = False
                reset = reset and not self._closed
        if not claimed:
            if entry is None and self._forked:
                return  # the parent's connection: forgotten, not closed
            raise ValueError(f"{conn!r} is not checked out from this pool")
        interrupt = None
        if reset:
            try:
                self._reset(conn)
            except Exception:
                policy.logger.warning(
                    "fastio pool: reset of %r failed; discarding it", conn, exc_info=True
                )
                discard = True
            except BaseException as exc:
                discard = True
                interrupt = exc
        with self._lock:
            doomed = self._put_back(entry, discard, self._clock())
        _count["releases"] += 1
        if doomed is not None:
            policy.close_quietly(self._close, conn)
        if self._deferred:
            self._release_deferred()
        if interrupt is not None:
            raise interrupt

    def _release_deferred(self):
        """Do the releases a finalizer queued from inside a critical section."""
        while self._deferred:
            try:
                conn, discard = self._deferred.pop(0)
            except IndexError:  # another thread took the last one
                return
            try:
                self.release(conn, discard=discard)
            except Exception:
                policy.logger.warning(
                    "fastio pool: deferred release of %r failed", conn, exc_info=True
                )

    def connection(self, timeout=None):
        """``with pool.connection() as conn:`` acquire, then release on exit; an exception
        for which ``is_broken(exc)`` is true (default: ``OSError``), or any non-``Exception``
        such as ``KeyboardInterrupt``, discards the connection. No exception loses a slot."""
        return _Lease(self, timeout)

    # --- the rest ---------------------------------------------------------------------------

    def _fill(self, count):
        """Open ``count`` idle connections now (``min_idle`` at construction)."""
        for _ in range(count):
            with self._lock:
                if not self._reserve():
                    return
            try:
                conn = self._create()
            except BaseException:
                self.close()
                raise
            self.release(conn)

    def stats(self):
        """A ``PoolStats`` snapshot; also reports connections held past ``leak_timeout``."""
        if self._leak_timeout:
            self._check_leaks()
        return self._snapshot()

    def _snapshot(self):
        with self._lock:
            idle = len(self._idle)
            return PoolStats(
                max_size=self._max_size,
                open=self._open,
                in_use=self._open - idle,
                idle=idle,
                waiting=len(self._waiters),
                wait_count=self._wait_count,
                wait_duration=self._wait_duration,
                created=self._created,
                create_failures=self._create_failures,
                check_failures=self._check_failures,
                closed_max_idle=self._closed_max_idle,
                closed_max_idle_time=self._closed_max_idle_time,
                closed_max_lifetime=self._closed_max_lifetime,
                closed_broken=self._closed_broken,
                leaks_reported=self._leaks_reported,
            )

    def _housekeep(self):
        """Background chores: report leaks, close idle connections past their idle time or
        lifetime, and open connections back up to ``min_idle``."""
        self._check_leaks()
        self._maintain()

    def _maintain(self):
        if self._deferred:
            self._release_deferred()
        if self._closed:
            return
        doomed = []
        with self._lock:
            now = self._clock()
            keep = []
            for entry in self._idle:  # least recently used first
                if now >= entry.expires_at:
                    self._forget(entry, _MAX_LIFETIME)
                elif now - entry.idle_since >= self._max_idle_time and self._open > self._min_idle:
                    self._forget(entry, _MAX_IDLE_TIME)
                else:
                    keep.append(entry)
                    continue
                doomed.append(entry)
            self._idle[:] = keep
            missing = 0
            if not self._closed and not self._waiters:
                missing = self._min_idle - self._open - self._pending
        for entry in doomed:
            policy.close_quietly(self._close, entry.conn)
        for _ in range(missing):
            with self._lock:
                if not self._reserve():
                    return
            self.release(self._create())

    def _check_leaks(self):
        """Report (once each) connections held longer than ``leak_timeout``."""
        if not self._leak_timeout:
            return
        leaks = []
        with self._lock:
            now = self._clock()
            for entry in self._entries.values():
                if (
                    entry.in_use
                    and not entry.reported
                    and entry.stack is not None
                    and now - entry.acquired_at >= self._leak_timeout
                ):
                    entry.reported = True
                    self._leaks_reported += 1
                    leaks.append((entry.conn, now - entry.acquired_at, entry.stack))
        for conn, held, stack in leaks:
            policy.report_leak(conn, held, self._leak_timeout, stack)

    def close(self):
        """Close the pool: waiters get ``PoolClosed``, idle connections are closed now, those
        still out when they come back; later acquires raise ``PoolClosed``. Idempotent."""
        with self._lock:
            if self._closed:
                return
            doomed = self._shut()
        for entry in doomed:
            policy.close_quietly(self._close, entry.conn)

    @property
    def closed(self):
        """Whether ``close()`` was called."""
        return self._closed

    def _after_fork(self):
        # The child forgets the parent's connections without closing them (that would hurt
        # the parent) and starts afresh.
        self._lock = self._limit.lock if self._limit is not None else threading.RLock()
        closed = self._closed
        self._reset_state()
        self._closed = closed
        self._forked = True

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self._snapshot()}>"


def socket_is_alive(sock):
    """The default check of ``SocketPool``: a non-blocking ``MSG_PEEK`` receive (see
    ``_pool_policy.socket_is_alive``); counted as one system call, as the native twin does."""
    _count["syscalls"] += 1
    return policy.socket_is_alive(sock)


KeyedPool, SocketPool = policy.make_keyed_pools(Pool, Limit, __name__, socket_is_alive)


# ---- the books of fastio.aio's pool ---------------------------------------------------------


class _Ready:
    """An awaitable done from birth: ``await`` gives its value at once (no Future, no loop)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __await__(self):
        yield from ()  # a generator that returns at its first step
        return self.value


_READY_NONE = _Ready(None)


class AioPool(Pool):
    """The books of ``fastio.aio.Pool``: the blocking pool's (limits, FIFO waiters, lifetimes,
    checks, stats), with waiters that are futures, and the fast paths: ``acquire()`` of a
    connection fit to hand out as it is (one coroutine that never suspends) and
    ``release()`` straight onto the idle stack (an awaitable already done), touching neither
    a new Future nor the loop. Everything else goes to the subclass's coroutines
    ``_acquire_async(timeout)`` and ``_release_async(conn, discard)``, which drive the books
    through the methods below. One thread, the loop's, ever uses such a pool: no lock is
    taken."""

    async def acquire(self, timeout=None):
        """Check out a connection: ``await pool.acquire()`` (one coroutine: in pure Python
        that is cheaper than any awaitable object)."""
        idle = self._idle
        if timeout is None and idle and not self._closed:
            entry = idle[-1]
            now = self._clock()
            idle_for = now - entry.idle_since
            if (
                now < entry.expires_at
                and (idle_for < self._max_idle_time or self._open <= self._min_idle)
                and (self._check is None or idle_for < self._check_after)
            ):  # _fit, inline
                idle.pop()
                entry.in_use = True
                _count["acquires"] += 1
                _count["calls"] += 1
                return entry.conn
        return await self._acquire_async(timeout)

    def release(self, conn, *, discard=False):
        """Return a connection: ``await pool.release(conn)``."""
        entry = self._entries.get(id(conn))
        if entry is None or entry.conn is not conn or not entry.in_use:
            raise ValueError(f"{conn!r} is not checked out from this pool")
        if (
            not discard
            and self._reset is None
            and not self._closed
            and not self._waiters
            and len(self._idle) < self._max_idle
        ):
            now = self._clock()
            if now < entry.expires_at:
                entry.in_use = False
                entry.idle_since = now
                self._idle.append(entry)
                _count["releases"] += 1
                return self._released
        entry.in_use = False  # claimed: a second release meanwhile is refused
        return self._release_async(conn, discard)

    # What a release that already happened returns: fastio.aio puts a finished asyncio Future
    # here (cheaper to await than anything this module can make without importing asyncio).
    _released = _READY_NONE

    def _entry_of(self, conn):
        entry = self._entries.get(id(conn))
        if entry is None or entry.conn is not conn:
            raise ValueError(f"{conn!r} is not checked out from this pool")
        return entry

    # --- for the coroutines -----------------------------------------------------------------

    def _step(self):
        """One step of an acquire: ``("got", conn)``, ``("check", conn)`` (run the check, then
        ``_checked``), ``("expired", conn)`` (off the books: close it), ``("create", None)``
        (a slot is reserved: make one, then ``_made``) or ``("wait", None)``."""
        if self._closed:
            raise policy.pool_closed()
        mode, entry = self._pick(self._clock())
        if mode is None:
            return ("wait", None)
        if entry is None:
            return (mode, None)
        if mode == "got":
            _count["acquires"] += 1
            _count["calls"] += 1
        return (mode, entry.conn)

    def _checked(self, conn, ok):
        """The check of ``conn`` passed (it is handed out) or failed (off the books)."""
        entry = self._entry_of(conn)
        if ok:
            _count["acquires"] += 1
            _count["calls"] += 1
        else:
            self._check_failed(entry)

    def _broken(self, conn):
        """``conn`` (in use) is given up on as broken: off the books."""
        self._forget(self._entry_of(conn), _BROKEN)

    def _made(self, conn):
        """Book what the factory made in the reserved slot: False when the pool closed
        meanwhile (close it); ``ValueError`` for a connection the pool already holds."""
        if self._register(conn, self._clock()) is None:
            return False
        _count["acquires"] += 1
        _count["calls"] += 1
        return True

    def _make_failed(self):
        """The factory failed: the reserved slot goes to the next waiter."""
        self._create_failed()

    def _reserve_min_idle(self):
        """Reserve a slot when fewer than ``min_idle`` are open or being made."""
        if self._closed or self._open + self._pending >= self._min_idle:
            return False
        return self._reserve()

    def _enqueue(self, future):
        """Queue a waiter (last in line) whose ``future`` gets what it is handed."""
        waiter = _FutureWaiter(future)
        self._waiters.append(waiter)
        return waiter

    def _dequeue(self, waiter):
        """A waiter left without taking anything (cancelled, past its deadline)."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _waited(self, seconds):
        self._wait_count += 1
        self._wait_duration += seconds
        _count["waits"] += 1
        _count["wait_ns"] += int(seconds * 1e9)

    def _give_back(self, result):
        """A waiter was handed ``result`` but cannot take it (cancelled): pass it on. Returns
        a connection to close, or None."""
        if result is SLOT:
            self._pending -= 1
            self._slot_freed()
            return None
        if result is CLOSED:
            return None
        doomed = self._put_back(self._entry_of(result), False, self._clock())
        return None if doomed is None else doomed.conn

    def _return(self, conn, discard):
        """A claimed connection comes back (after its reset): to a waiter, the idle stack or
        off the books (then it is returned, to be closed)."""
        doomed = self._put_back(self._entry_of(conn), discard, self._clock())
        _count["releases"] += 1
        return None if doomed is None else doomed.conn

    def _close_books(self):
        """Close the books (see ``close``); returns the idle connections to close."""
        if self._closed:
            return []
        return [entry.conn for entry in self._shut()]

    def _timeout_error(self, budget):
        return self._timeout(budget)

    def stats(self):
        """A ``PoolStats`` snapshot (waiters that were cancelled or timed out, and not yet
        gone from the line, do not count as waiting)."""
        snapshot = self._snapshot()
        waiting = sum(1 for waiter in self._waiters if not waiter.future.done())
        if waiting != snapshot.waiting:
            snapshot = dataclasses.replace(snapshot, waiting=waiting)
        return snapshot
