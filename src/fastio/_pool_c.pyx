"""Native twin of the connection pool: the state machine of ``_pool_py.py`` in C fields.

Acquire and release take no Python-level lock. Under the GIL each critical section below is a
run of C code that executes no Python bytecode (list pop/append, dict lookups with int keys,
C field updates), so no other thread can interleave; user code (factory, check, reset, close,
an injected clock, leak stack capture) runs before or after those sections, when the books are
consistent. The sections also make no object the garbage collector tracks (no new list, tuple,
exception or bound method), since such an allocation can start a collection whose finalizers
run Python code, and so other threads, in the middle of a section: what needs one (a waiter,
the list of leaks) is made outside, and a pass closes at most one connection it gave up on.
Each section is marked ``critical section``: a free-threaded build needs
``with cython.critical_section(self):`` there (and, for the pools of a keyed pool, a section
on their shared ``Limit``). This module is not declared free-threading compatible, so such a
build re-enables the GIL on import until then.

Only waiting blocks: each waiter has its own lock, released by whoever hands it a connection,
a free slot, or the news that the pool closed; waiters are served first come, first served.

``AioPool`` is the same books for ``fastio.aio.Pool``: its waiters are futures (a cancelled one
refuses what it is handed, which goes to the next in line), and its fast paths return an
awaitable already done (``fio_ready``, below) instead of blocking.
"""

cimport cython
from cpython.list cimport PyList_GET_ITEM, PyList_SET_ITEM
from cpython.long cimport PyLong_FromVoidPtr
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memmove, memset

cdef extern from "<errno.h>":
    const int EWOULDBLOCK

cdef extern from "Python.h":
    ctypedef struct PyListObject:
        PyObject **ob_item

import _thread
import collections
import dataclasses

from fastio import _pool_policy as policy
from fastio import _stats
from fastio._errors import PoolClosed, PoolTimeout
from fastio._pool_policy import CLOSED, SLOT, PoolStats

from fastio._compat cimport (
    FIO_PRIM_POOL,
    MSG_DONTWAIT,
    MSG_PEEK,
    fio_monotonic,
    fio_monotonic_coarse,
    fio_profile_attach,
    fio_recv,
    fio_ssize_t,
)
from fastio._policy cimport fileno_of

__all__ = ["KeyedPool", "Pool", "PoolClosed", "PoolStats", "PoolTimeout", "SocketPool"]

fio_profile_attach(FIO_PRIM_POOL)


cdef struct PoolCounters:
    unsigned long long calls
    unsigned long long bytes
    unsigned long long syscalls
    unsigned long long would_block
    unsigned long long eintr
    unsigned long long partial
    unsigned long long fallbacks
    unsigned long long acquires
    unsigned long long releases
    unsigned long long waits
    unsigned long long wait_ns
    unsigned long long timeouts
    unsigned long long created
    unsigned long long closed
    unsigned long long check_failures

cdef PoolCounters _c


def _snapshot(bint reset=False):
    global _c
    values = dict(_c)
    if reset:
        memset(&_c, 0, sizeof(_c))
    return values


_snapshot(True)
_stats.register("c", "pool", _snapshot)

# Why a connection is closed: the PoolStats counter it adds to.
cdef enum:
    NOT_COUNTED = -1
    MAX_IDLE = 0
    MAX_IDLE_TIME = 1
    MAX_LIFETIME = 2
    BROKEN = 3
    POOL_CLOSED = 4

# What one pass of acquire decided.
cdef enum:
    M_NONE = 0
    M_GOT = 1
    M_CHECK = 2
    M_CREATE = 3
    M_WAIT = 4
    M_TIMEOUT = 5
    M_ALLOCATE = 6
    M_EXPIRED = 7

cdef object _SLOT = SLOT
cdef object _CLOSED = CLOSED
cdef double _TIMEOUT_MAX = _thread.TIMEOUT_MAX
cdef object _allocate_lock = _thread.allocate_lock
cdef object _close_quietly = policy.close_quietly

#: Idle stack slots a pool starts with; _create adds more as connections are made.
cdef Py_ssize_t _IDLE_SLOTS = 16


cdef class _Entry:
    """A pooled connection and what the pool knows of it."""

    cdef object conn
    cdef object key  # id(conn), the key of Pool._entries
    cdef double expires_at
    cdef double idle_since
    cdef double acquired_at
    cdef object stack
    cdef bint in_use
    cdef bint reported

    def __cinit__(self, conn, double expires_at):
        self.conn = conn
        self.key = PyLong_FromVoidPtr(<void *>conn)
        self.expires_at = expires_at
        self.in_use = True


cdef class _Waiter:
    """One blocked acquire: its own lock, released by whoever hands it a result."""

    cdef object lock
    cdef object result

    cdef int hand(self, object result) except -1:
        """Take ``result`` (1), or refuse it (0: the pool offers it to the next waiter)."""
        # Safe inside a critical section: the call goes through PyObject_VectorcallMethod
        # (no bound method is made) and releasing a lock runs no Python code.
        self.result = result
        self.lock.release()
        return 1


cdef _Waiter _new_waiter():
    cdef _Waiter waiter = _Waiter.__new__(_Waiter)
    waiter.lock = _allocate_lock()
    waiter.lock.acquire()
    return waiter


@cython.final
cdef class _FutureWaiter(_Waiter):
    """A waiting ``fastio.aio`` acquire: its future gets the connection (not the entry), a
    free slot or the news that the pool closed. A future already done (cancelled, or past its
    deadline) refuses, and the pool offers the result to the next waiter: nothing is lost.
    ``set_result`` runs Python code inside the pool's critical sections, which is sound for an
    asyncio pool only: one thread (its loop's) ever touches it."""

    cdef object future

    cdef int hand(self, object result) except -1:
        if self.future.done():
            return 0
        self.future.set_result((<_Entry>result).conn if isinstance(result, _Entry) else result)
        return 1


cdef class Pool


cdef class Limit:
    """The global bound of a keyed pool (``max_total``), shared by its pools."""

    cdef readonly Py_ssize_t max_total  # 0: no global limit
    cdef readonly Py_ssize_t total  # connections of every key, open or being created
    cdef object wanting  # deque of pools whose waiters wait for global room
    cdef list pools
    cdef object __weakref__

    def __init__(self, Py_ssize_t max_total):
        self.max_total = max_total
        self.total = 0
        self.wanting = collections.deque()
        self.pools = []
        policy.track(self, first=True)

    def add(self, pool):
        self.pools.append(pool)

    cdef bint reserve(self):
        if self.max_total and self.total >= self.max_total:
            return False
        self.total += 1
        return True

    cdef void freed(self):
        """A connection (or a slot being created) of some key is gone: give the room to the
        key that has waited longest, if any."""
        self.total -= 1
        while self.wanting:
            pool = self.wanting.popleft()
            if (<Pool>pool)._grant_slot():
                self.total += 1
                return

    cdef bint wanted(self):
        """Whether some key still waits for room under the global limit. A key is queued in
        ``wanting`` when one of its acquires starts waiting, but that waiter may be served by
        its own key's returns meanwhile: such stale entries are dropped here (no allocation),
        so that they never make a return close a healthy idle connection of another key."""
        while self.wanting:
            if (<Pool>self.wanting[0])._wants_room():
                return True
            self.wanting.popleft()
        return False

    cdef _Entry steal(self, Pool thief):
        """Take the least recently used idle connection of another key, to close it."""
        cdef Pool pool
        cdef _Entry entry
        for pool in self.pools:
            if pool is not thief and pool._n_idle:
                entry = pool._pop_lru()
                pool._forget(entry, MAX_IDLE)
                return entry
        return None

    def _after_fork(self):
        self.total = 0
        self.wanting.clear()


@cython.freelist(8)
@cython.final
cdef class _Lease:
    """``with pool.connection() as conn``: acquire on entry, release on exit."""

    cdef Pool pool
    cdef object timeout
    cdef object conn

    def __enter__(self):
        self.conn = self.pool._acquire(self.timeout)
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        conn = self.conn
        self.conn = None
        if exc is None:
            self.pool._release(conn, False)
        else:
            _release_after(self.pool, conn, exc)
        return False


cdef int _release_after(Pool pool, object conn, object exc) except -1:
    """Release a connection after ``exc`` was raised inside ``connection()``. Whatever
    ``is_broken`` does (even raise), the connection goes back: no slot is lost."""
    cdef bint discard = True  # KeyboardInterrupt & co: the conversation may be cut midway
    try:
        if isinstance(exc, Exception):
            discard = policy.judge_broken(pool._is_broken, exc, conn)
    finally:
        pool._release(conn, discard)
    return 0


cdef class Pool:
    """A pool of reusable connections made by ``factory()``; see ``fastio.pool.Pool``."""

    cdef readonly object _factory
    cdef readonly object _check
    cdef readonly object _reset
    cdef readonly object _close
    cdef readonly object _is_broken
    cdef object _clock  # None: CLOCK_MONOTONIC read in C
    cdef Limit _limit
    cdef readonly object _config
    cdef Py_ssize_t _max_size
    cdef Py_ssize_t _min_idle
    cdef Py_ssize_t _max_idle
    cdef double _max_lifetime
    cdef double _max_idle_time
    cdef double _acquire_timeout
    cdef double _check_after
    cdef double _leak_timeout
    cdef double _jitter

    # MRU stack of _Entry: _idle[:_n_idle], the top is the most recently returned. The list
    # keeps a slot for every connection that could be idle (min(max_idle, open + pending)),
    # so that pops and pushes never reallocate; _create grows it before a new connection
    # exists (issue 9: allocating max_size slots up front took a minute and 16 GiB for
    # max_size=2**31).
    cdef list _idle
    cdef Py_ssize_t _n_idle
    cdef dict _entries  # id(conn) -> _Entry, every open connection
    cdef object _waiters  # deque of _Waiter, oldest first
    cdef Py_ssize_t _open
    cdef Py_ssize_t _pending  # being created: they count against max_size
    cdef bint _closed
    cdef bint _forked
    # The entry last handed out: release checks it before the id() lookup (a release usually
    # returns the connection acquired last in that pool: one thread's checkout and return).
    cdef _Entry _last
    cdef _Entry _picked  # what _pick looked at, for its caller (cleared by it)

    cdef unsigned long long _wait_count
    cdef double _wait_duration
    cdef unsigned long long _created
    cdef unsigned long long _create_failures
    cdef unsigned long long _check_failures
    cdef unsigned long long _closed_max_idle
    cdef unsigned long long _closed_max_idle_time
    cdef unsigned long long _closed_max_lifetime
    cdef unsigned long long _closed_broken
    cdef unsigned long long _leaks_reported

    cdef object __weakref__

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
        Limit _limit=None,
        bint _track=True,
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
        self._clock = clock
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
        self._reset_state()
        if _track:  # not for fastio.aio's pools: their chores are coroutines, on their loop
            policy.track(self, every=policy.housekeeping_every(config))
            if self._min_idle:
                self._fill(self._min_idle)

    cdef void _reset_state(self):
        self._idle = [None] * min(self._max_idle, _IDLE_SLOTS)
        self._n_idle = 0
        self._entries = {}
        self._waiters = collections.deque()
        self._open = 0
        self._pending = 0
        self._closed = False
        self._forked = False
        self._last = None
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

    cdef inline double _now(self) except? -1.0:
        # Connection ages: the coarse clock is plenty (deadlines use fio_monotonic).
        if self._clock is None:
            return fio_monotonic_coarse()
        return float(self._clock())

    # --- accounting: each of these runs inside a critical section -------------------------

    cdef int _forget(self, _Entry entry, int why) except -1:
        """Drop an entry from the books; the caller closes the connection afterwards."""
        del self._entries[entry.key]
        self._open -= 1
        if why == MAX_IDLE:
            self._closed_max_idle += 1
        elif why == MAX_IDLE_TIME:
            self._closed_max_idle_time += 1
        elif why == MAX_LIFETIME:
            self._closed_max_lifetime += 1
        elif why == BROKEN:
            self._closed_broken += 1
        _c.closed += 1
        self._slot_freed()
        return 0

    cdef int _hand(self, object result) except -1:
        """Give ``result`` to the oldest waiter that takes it: 1, or 0 when none did."""
        while self._waiters:
            if (<_Waiter>self._waiters.popleft()).hand(result):
                return 1
        return 0

    cdef int _slot_freed(self) except -1:
        """A slot (an open connection or one being created) went away: hand it to the oldest
        waiter, or to the keyed pool's next key waiting for room."""
        if not self._closed and self._waiters:
            self._pending += 1
            if self._hand(_SLOT):
                return 0
            self._pending -= 1
        if self._limit is not None:
            self._limit.freed()
        return 0

    cdef inline bint _wants_room(self):
        """Whether a waiter of ours could use room freed under the keyed pool's global limit."""
        return (
            not self._closed and self._waiters and self._open + self._pending < self._max_size
        )

    cdef bint _grant_slot(self) except -1:
        """The keyed pool's global limit has room for this key: give it to our oldest waiter."""
        if not self._wants_room():
            return False
        self._pending += 1
        if self._hand(_SLOT):
            return True
        self._pending -= 1
        return False

    cdef inline _Entry _pop_mru(self):
        # The list's reference moves to the caller; None takes the slot.
        cdef PyObject *item
        self._n_idle -= 1
        item = PyList_GET_ITEM(self._idle, self._n_idle)
        Py_INCREF(None)
        PyList_SET_ITEM(self._idle, self._n_idle, None)
        entry = <_Entry>item
        Py_DECREF(entry)
        return entry

    cdef inline void _push_mru(self, _Entry entry):
        cdef PyObject *old = PyList_GET_ITEM(self._idle, self._n_idle)
        Py_INCREF(entry)
        PyList_SET_ITEM(self._idle, self._n_idle, entry)
        Py_XDECREF(old)
        self._n_idle += 1

    cdef _Entry _pop_lru(self):
        # Shift the stack down in place: no allocation (which could run a finalizer, and so
        # other threads, in the middle of this critical section).
        cdef PyObject **items = (<PyListObject *>self._idle).ob_item
        cdef PyObject *first = items[0]
        self._n_idle -= 1
        memmove(items, items + 1, self._n_idle * sizeof(PyObject *))
        Py_INCREF(None)
        items[self._n_idle] = <PyObject *>None
        entry = <_Entry>first
        Py_DECREF(entry)
        return entry

    cdef int _unwant(self) except -1:
        """A waiter left: it no longer wants room under the keyed pool's global limit."""
        # Looked up first: a ValueError caught here would allocate mid-section (see the
        # module docstring).
        if self._limit is not None and self in self._limit.wanting:
            self._limit.wanting.remove(self)
        return 0

    cdef bint _reserve(self):
        if self._open + self._pending >= self._max_size:
            return False
        if self._limit is not None and not self._limit.reserve():
            return False
        self._pending += 1
        return True

    cdef _Entry _put_back(self, _Entry entry, bint discard, double now):
        """Return an entry: to the oldest waiter, to the idle stack, or to be closed (then it
        is returned)."""
        cdef int why
        entry.in_use = False
        entry.stack = None
        entry.reported = False
        if discard:
            why = BROKEN
        elif self._closed:
            why = POOL_CLOSED
        elif now >= entry.expires_at:
            why = MAX_LIFETIME
        else:
            if self._waiters:
                entry.in_use = True
                if self._hand(entry):
                    return None
                entry.in_use = False
            if self._n_idle >= self._max_idle or (
                self._limit is not None and self._limit.wanted()
            ):
                why = MAX_IDLE
            else:
                entry.idle_since = now
                self._push_mru(entry)
                return None
        self._forget(entry, why)
        return entry

    cdef int _pick(self, double now) except -1:
        """One step of an acquire, in a critical section: the top idle connection (M_GOT, or
        M_CHECK when it needs a check; now in use), one given up on (M_EXPIRED: forgotten, to
        be closed), both in ``_picked``; else a slot reserved (M_CREATE), else M_NONE."""
        cdef _Entry entry
        if self._n_idle:
            entry = self._pop_mru()
            self._picked = entry
            if now >= entry.expires_at:
                self._forget(entry, MAX_LIFETIME)
                return M_EXPIRED
            if now - entry.idle_since >= self._max_idle_time and self._open > self._min_idle:
                self._forget(entry, MAX_IDLE_TIME)
                return M_EXPIRED
            entry.in_use = True
            if self._check is not None and now - entry.idle_since >= self._check_after:
                return M_CHECK
            return M_GOT
        if self._reserve():
            return M_CREATE
        return M_NONE

    cdef inline bint _fit(self, _Entry entry, double now):
        """Whether an idle connection may be handed out as it is (what _pick calls M_GOT)."""
        cdef double idle_for = now - entry.idle_since
        return (
            now < entry.expires_at
            and (idle_for < self._max_idle_time or self._open <= self._min_idle)
            and (self._check is None or idle_for < self._check_after)
        )

    cdef int _check_failed(self, _Entry entry) except -1:
        """A connection failed its check: off the books (the caller closes it)."""
        self._check_failures += 1
        _c.check_failures += 1
        self._forget(entry, NOT_COUNTED)
        return 0

    cdef _Entry _register(self, object conn, double now):
        """Book a connection the factory made in this caller's slot; None when the pool
        closed meanwhile (the caller closes it)."""
        cdef _Entry entry = _Entry.__new__(
            _Entry, conn, policy.lifetime_deadline(now, self._max_lifetime, self._jitter)
        )
        # --- critical section ---
        self._pending -= 1
        if self._closed:
            if self._limit is not None:
                self._limit.freed()
            return None
        if entry.key in self._entries:
            self._create_failures += 1
            self._slot_freed()
            raise ValueError(f"factory returned {conn!r}, a connection the pool already holds")
        self._entries[entry.key] = entry
        self._open += 1
        self._created += 1
        self._last = entry
        # --- end ---
        _c.created += 1
        return entry

    cdef int _create_failed(self) except -1:
        self._pending -= 1
        self._create_failures += 1
        self._slot_freed()
        return 0

    cdef int _stamp(self, _Entry entry, double now) except -1:
        # Not in a critical section: capturing the stack runs Python code. The stack is set
        # last, and the leak scan only looks at entries with a stack.
        entry.acquired_at = now
        entry.stack = policy.capture_stack()
        return 0

    # --- acquire ----------------------------------------------------------------------------

    def acquire(self, timeout=None):
        """Check out a connection: the most recently returned idle one (closing those past
        their lifetime or idle time, and checking one idle longer than ``check_after``), else a
        new one, else wait first come, first served. ``timeout`` (default ``acquire_timeout``;
        ``None`` there waits forever) is one deadline for waiting, checking and creating;
        ``PoolTimeout`` says the pool's stats when it passes."""
        return self._acquire(timeout)

    cdef object _acquire(self, object timeout):
        cdef double budget, deadline, now
        cdef _Entry entry = None
        cdef _Entry doomed
        cdef _Waiter waiter = None
        cdef int mode
        if timeout is None:
            budget = self._acquire_timeout
        else:
            budget = policy.check_timeout_arg(timeout)
        now = self._now()
        # The deadline is taken when first needed, before anything that can take time (a
        # check, a wait): never early, and the fast path reads no precise clock.
        deadline = -2.0
        while True:
            doomed = None  # at most one connection to close per pass: no list to allocate
            mode = M_NONE
            # --- critical section ---
            if self._closed:
                raise policy.pool_closed()
            mode = self._pick(now)
            if mode == M_GOT or mode == M_CHECK or mode == M_EXPIRED:
                entry = self._picked
                self._picked = None
                if mode == M_EXPIRED:
                    doomed = entry
            elif mode == M_NONE:
                if self._limit is not None and self._open + self._pending < self._max_size:
                    # The keyed pool is full: make room by closing another key's least
                    # recently used idle connection, if it has one.
                    doomed = self._limit.steal(self)
                if doomed is not None and self._reserve():
                    mode = M_CREATE
                elif budget == 0.0:
                    mode = M_TIMEOUT
                elif waiter is None:
                    # Allocating could run other threads: do it outside this section,
                    # then look again.
                    mode = M_ALLOCATE
                else:
                    self._waiters.append(waiter)
                    if self._limit is not None and (
                        self._open + self._pending < self._max_size
                    ):
                        self._limit.wanting.append(self)
                    mode = M_WAIT
            # --- end of critical section ---
            if mode == M_GOT:
                _c.acquires += 1
                _c.calls += 1
                self._last = entry
                if self._leak_timeout > 0.0:
                    self._stamp(entry, now)
                return entry.conn
            if doomed is not None:
                _close_quietly(self._close, doomed.conn)
            if mode == M_EXPIRED:
                continue  # look at the next idle connection
            if mode == M_CHECK:
                if deadline == -2.0:
                    deadline = -1.0 if budget < 0.0 else fio_monotonic() + budget
                if self._run_check(entry):
                    if self._leak_timeout > 0.0:
                        self._stamp(entry, now)
                    _c.acquires += 1
                    _c.calls += 1
                    return entry.conn
                if deadline >= 0.0 and fio_monotonic() >= deadline:
                    raise self._timeout(budget)
                now = self._now()
                continue
            if mode == M_CREATE:
                return self._create()
            if mode == M_ALLOCATE:
                waiter = _new_waiter()
                now = self._now()
                continue
            if mode == M_TIMEOUT:
                raise self._timeout(budget)
            if deadline == -2.0:
                deadline = -1.0 if budget < 0.0 else fio_monotonic() + budget
            result = self._wait(waiter, deadline, budget)
            if result is _SLOT:
                return self._create()
            entry = <_Entry>result
            if self._leak_timeout > 0.0:
                self._stamp(entry, self._now())
            _c.acquires += 1
            _c.calls += 1
            return entry.conn

    cdef int _close_all(self, list doomed) except -1:
        cdef _Entry entry
        for entry in doomed:
            _close_quietly(self._close, entry.conn)
        return 0

    cdef bint _run_check(self, _Entry entry) except -1:
        """Run ``check`` on an idle connection (already counted as in use); a failure closes
        it. Returns whether it passed."""
        try:
            ok = self._check(entry.conn)
        except Exception:
            ok = False
        except BaseException:
            self._forget(entry, BROKEN)
            _close_quietly(self._close, entry.conn)
            raise
        if ok is None or ok:
            return True
        self._check_failed(entry)  # a critical section
        _close_quietly(self._close, entry.conn)
        return False

    cdef int _grow_idle(self) except -1:
        """Make room in the idle stack for every connection open or being created (this
        thread's included), up to ``max_idle``; outside any critical section: allocating
        may run other threads."""
        cdef Py_ssize_t need = min(self._max_idle, self._open + self._pending)
        cdef Py_ssize_t have = len(self._idle)
        if have < need:
            self._idle.extend([None] * (min(self._max_idle, max(need, 2 * have)) - have))
        return 0

    cdef object _create(self):
        """Make a connection in the slot this thread reserved (no lock is held)."""
        cdef _Entry entry
        cdef double now
        try:
            self._grow_idle()
            conn = self._factory()
            now = self._now()
        except BaseException:
            self._create_failed()  # a critical section
            raise
        entry = self._register(conn, now)
        if entry is None:
            _close_quietly(self._close, conn)
            raise policy.pool_closed()
        _c.acquires += 1
        _c.calls += 1
        if self._leak_timeout > 0.0:
            self._stamp(entry, now)
        return conn

    cdef object _wait(self, _Waiter waiter, double deadline, double budget):
        """Block until handed a connection or a slot; PoolTimeout / PoolClosed otherwise."""
        cdef double began = fio_monotonic()
        cdef double left
        _c.waits += 1
        try:
            while True:
                if deadline < 0.0:
                    waiter.lock.acquire()
                else:
                    left = deadline - fio_monotonic()
                    if left > 0.0:
                        waiter.lock.acquire(True, left if left < _TIMEOUT_MAX else _TIMEOUT_MAX)
                # --- critical section ---
                result = waiter.result
                if result is None:
                    if deadline >= 0.0 and fio_monotonic() >= deadline:
                        self._waiters.remove(waiter)
                        self._unwant()
                        self._wait_count += 1
                        self._wait_duration += fio_monotonic() - began
                        raise self._timeout(budget)
                    continue  # woken early: the deadline has not passed
                self._wait_count += 1
                self._wait_duration += fio_monotonic() - began
                # --- end ---
                if result is _CLOSED:
                    raise policy.pool_closed()
                return result
        except BaseException as exc:
            if isinstance(exc, (PoolTimeout, PoolClosed)):
                raise
            # Interrupted (Ctrl-C): whatever was handed over meanwhile goes back.
            doomed = None
            # --- critical section ---
            result = waiter.result
            if result is None:
                self._waiters.remove(waiter)
                self._unwant()
            elif result is _SLOT:
                self._pending -= 1
                self._slot_freed()
            elif result is not _CLOSED:
                doomed = self._put_back(<_Entry>result, False, self._now())
            # --- end ---
            if doomed is not None:
                _close_quietly(self._close, (<_Entry>doomed).conn)
            raise
        finally:
            _c.wait_ns += <unsigned long long>((fio_monotonic() - began) * 1e9)

    cdef object _timeout(self, double budget):
        _c.timeouts += 1
        return policy.pool_timeout(budget, self.stats())

    # --- release ----------------------------------------------------------------------------

    def release(self, conn, *, bint discard=False):
        """Return a connection: to the oldest waiter, else to the idle stack (closed instead
        past ``max_lifetime``, over ``max_idle``, with ``discard=True``, or when the pool is
        closed). ``reset(conn)`` runs first; if it fails the connection is discarded. A
        connection not checked out (a stranger, or one already being released) raises
        ``ValueError``."""
        self._release(conn, discard)

    cdef int _release(self, object conn, bint discard) except -1:
        cdef _Entry entry
        cdef _Entry doomed
        cdef double now
        interrupt = None
        # --- critical section: find the entry and claim it ---
        found = self._last
        if found is None or (<_Entry>found).conn is not conn:
            found = self._entries.get(PyLong_FromVoidPtr(<void *>conn))
        else:
            self._last = None
        if found is None or (<_Entry>found).conn is not conn or not (<_Entry>found).in_use:
            if found is None and self._forked:
                return 0  # the parent's connection: forgotten, not closed
            raise ValueError(f"{conn!r} is not checked out from this pool")
        entry = <_Entry>found
        # Claimed before reset runs (other threads may run meanwhile): a second release of
        # the same connection is refused above instead of stacking it twice.
        entry.in_use = False
        # --- end ---
        if self._reset is not None and not discard and not self._closed:
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
        now = self._now()
        # --- critical section ---
        doomed = self._put_back(entry, discard, now)
        # --- end ---
        _c.releases += 1
        if doomed is not None:
            _close_quietly(self._close, conn)
        if interrupt is not None:
            raise interrupt
        return 0

    def connection(self, timeout=None):
        """``with pool.connection() as conn:`` acquire, then release on exit; an exception
        for which ``is_broken(exc)`` is true (default: ``OSError``), or any non-``Exception``
        such as ``KeyboardInterrupt``, discards the connection. No exception loses a slot."""
        cdef _Lease lease = _Lease.__new__(_Lease)
        lease.pool = self
        lease.timeout = timeout
        return lease

    # --- the rest ---------------------------------------------------------------------------

    cdef int _fill(self, Py_ssize_t count) except -1:
        """Open ``count`` idle connections now (``min_idle`` at construction)."""
        for _ in range(count):
            if not self._reserve():
                return 0
            try:
                conn = self._create()
            except BaseException:
                self.close()
                raise
            self._release(conn, False)
        return 0

    def stats(self):
        """A ``PoolStats`` snapshot; also reports connections held past ``leak_timeout``."""
        if self._leak_timeout > 0.0:
            self._check_leaks()
        return self._snapshot()

    def _snapshot(self):
        cdef Py_ssize_t idle = self._n_idle
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

    cdef int _maintain(self) except -1:
        cdef PyObject **items
        cdef Py_ssize_t i, kept = 0, n, open_left
        cdef _Entry entry
        cdef list doomed = []
        cdef Py_ssize_t missing = 0
        cdef double now
        if self._closed:
            return 0
        now = self._now()
        # --- critical section ---
        # The stack is compacted in place through raw pointers first, calling nothing that
        # could run Python code (appending to a list only reallocates its array, which runs
        # no collection); the books are updated, and freed slots handed on, only once the
        # stack is whole again.
        items = (<PyListObject *>self._idle).ob_item
        n = self._n_idle
        open_left = self._open
        for i in range(n):  # least recently used first
            entry = <_Entry>items[i]
            if now >= entry.expires_at or (
                now - entry.idle_since >= self._max_idle_time and open_left > self._min_idle
            ):
                doomed.append(entry)
                open_left -= 1
                Py_DECREF(entry)  # the stack's reference: its slot is reused or emptied below
            else:
                items[kept] = items[i]
                kept += 1
        for i in range(kept, n):
            Py_INCREF(None)
            items[i] = <PyObject *>None
        self._n_idle = kept
        for entry in doomed:
            self._forget(entry, MAX_LIFETIME if now >= entry.expires_at else MAX_IDLE_TIME)
        if not self._closed and not self._waiters:
            missing = self._min_idle - self._open - self._pending
        # --- end ---
        self._close_all(doomed)
        for _ in range(missing):
            if not self._reserve():
                break
            self._release(self._create(), False)
        return 0

    def _check_leaks(self):
        """Report (once each) connections held longer than ``leak_timeout``."""
        cdef _Entry entry
        cdef double now
        if self._leak_timeout <= 0.0:
            return
        now = self._now()
        leaks = []
        for entry in list(self._entries.values()):
            # --- critical section (one entry; the lists are built outside it) ---
            if (
                not entry.in_use
                or entry.reported
                or entry.stack is None
                or now - entry.acquired_at < self._leak_timeout
            ):
                continue
            entry.reported = True
            self._leaks_reported += 1
            # --- end ---
            leaks.append((entry.conn, now - entry.acquired_at, entry.stack))
        for conn, held, stack in leaks:
            policy.report_leak(conn, held, self._leak_timeout, stack)

    def close(self):
        """Close the pool: waiters get ``PoolClosed``, idle connections are closed now, those
        still out when they come back; later acquires raise ``PoolClosed``. Idempotent."""
        cdef list doomed = []
        # --- critical section ---
        if self._closed:
            return
        self._shut(doomed)
        # --- end ---
        self._close_all(doomed)

    cdef int _shut(self, list doomed) except -1:
        """Mark the pool closed: waiters get CLOSED, idle entries go off the books into
        ``doomed`` (the caller closes them)."""
        cdef _Entry entry
        self._closed = True
        while self._waiters:
            (<_Waiter>self._waiters.popleft()).hand(_CLOSED)
        while self._n_idle:
            entry = self._pop_mru()
            self._forget(entry, POOL_CLOSED)
            doomed.append(entry)
        return 0

    @property
    def closed(self):
        """Whether ``close()`` was called."""
        return self._closed

    def _after_fork(self):
        # The child forgets the parent's connections without closing them (that would hurt
        # the parent) and starts afresh.
        cdef bint closed = self._closed
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
    """The default check of ``SocketPool``: a non-blocking ``MSG_PEEK`` receive in C. EOF (the
    server closed the socket while it sat idle), unexpected bytes, or an error mean the
    connection is not fit to hand out; "would block" means it is."""
    cdef int fd = fileno_of(sock)
    cdef char byte
    cdef fio_ssize_t n
    while True:
        n = fio_recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT)
        if n < 0 and errno == EINTR:
            _c.eintr += 1
            continue
        break
    _c.syscalls += 1
    if n < 0:
        return errno == EAGAIN or errno == EWOULDBLOCK
    return False


KeyedPool, SocketPool = policy.make_keyed_pools(Pool, Limit, __name__, socket_is_alive)


# ---- the books of fastio.aio's pool ---------------------------------------------------------

cdef extern from *:
    """
    /* An awaitable that is done from birth: ``await`` gives its value at once, without a
     * coroutine frame, a Future or the event loop (am_send returns it, 3.10+; the iterator
     * protocol's StopIteration before). What fastio.aio's pool returns on its fast paths. */
    typedef struct {
        PyObject_HEAD
        PyObject *value;
    } fio_ready_object;

    static PyTypeObject fio_ready_type;

    static void fio_ready_dealloc(PyObject *self)
    {
        Py_XDECREF(((fio_ready_object *)self)->value);
        PyObject_Free(self);
    }

    static PyObject *fio_ready_await(PyObject *self)
    {
        Py_INCREF(self);
        return self;
    }

    static PyObject *fio_ready_next(PyObject *self)
    {
        PyObject *value = ((fio_ready_object *)self)->value;
        PyObject *stop;
        if (value == Py_None) {
            PyErr_SetNone(PyExc_StopIteration);
            return NULL;
        }
        stop = PyObject_CallOneArg(PyExc_StopIteration, value);
        if (stop == NULL) return NULL;
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
        return NULL;
    }

    #if PY_VERSION_HEX >= 0x030A0000
    static PySendResult fio_ready_send(PyObject *self, PyObject *arg, PyObject **result)
    {
        (void)arg;
        *result = ((fio_ready_object *)self)->value;
        Py_INCREF(*result);
        return PYGEN_RETURN;
    }
    #endif

    static PyObject *fio_ready_send_method(PyObject *self, PyObject *arg)
    {
        (void)arg;
        return fio_ready_next(self);
    }

    static PyMethodDef fio_ready_methods[] = {
        {"send", fio_ready_send_method, METH_O, "Finish: StopIteration with the value."},
        {NULL, NULL, 0, NULL},
    };

    static PyAsyncMethods fio_ready_async = {
        fio_ready_await, NULL, NULL,
    #if PY_VERSION_HEX >= 0x030A0000
        fio_ready_send,
    #endif
    };

    static int fio_ready_init(void)
    {
        fio_ready_type.tp_name = "fastio.aio.ready";
        fio_ready_type.tp_basicsize = sizeof(fio_ready_object);
        fio_ready_type.tp_dealloc = fio_ready_dealloc;
        fio_ready_type.tp_flags = Py_TPFLAGS_DEFAULT;
        fio_ready_type.tp_doc = "An awaitable whose await returns its value at once.";
        fio_ready_type.tp_as_async = &fio_ready_async;
        fio_ready_type.tp_iter = PyObject_SelfIter;
        fio_ready_type.tp_iternext = fio_ready_next;
        fio_ready_type.tp_methods = fio_ready_methods;
        return PyType_Ready(&fio_ready_type);
    }

    static PyObject *fio_ready_new(PyObject *value)
    {
        fio_ready_object *ready = PyObject_New(fio_ready_object, &fio_ready_type);
        if (ready == NULL) return NULL;
        Py_INCREF(value);
        ready->value = value;
        return (PyObject *)ready;
    }
    """
    int fio_ready_init() except -1
    object fio_ready_new(object value)


fio_ready_init()
cdef object _READY_NONE = fio_ready_new(None)  # no state: one serves every release


cdef class AioPool(Pool):
    """The books of ``fastio.aio.Pool``: the blocking pool's (limits, FIFO waiters, lifetimes,
    checks, stats), with waiters that are futures, and the fast paths: ``acquire()`` of a
    connection fit to hand out as it is and ``release()`` straight onto the idle stack
    return an awaitable that is already done, touching neither a Future nor the loop.
    Everything else goes to the subclass's coroutines ``_acquire_async(timeout)`` and
    ``_release_async(conn, discard)``, which drive the books through the methods below (one
    thread, the loop's, ever uses such a pool)."""

    def acquire(self, timeout=None):
        """Check out a connection: ``await pool.acquire()``."""
        cdef _Entry entry
        cdef double now
        if timeout is None and self._n_idle and not self._closed:
            now = self._now()
            entry = <_Entry>PyList_GET_ITEM(self._idle, self._n_idle - 1)
            if self._fit(entry, now):
                self._pop_mru()
                entry.in_use = True
                self._last = entry
                _c.acquires += 1
                _c.calls += 1
                return fio_ready_new(entry.conn)
        return self._acquire_async(timeout)

    def release(self, conn, *, bint discard=False):
        """Return a connection: ``await pool.release(conn)``."""
        cdef _Entry entry
        cdef double now
        entry = self._entry_of(conn)
        if not entry.in_use:
            raise ValueError(f"{conn!r} is not checked out from this pool")
        if (
            not discard
            and self._reset is None
            and not self._closed
            and not self._waiters
            and self._n_idle < self._max_idle
        ):
            now = self._now()
            if now < entry.expires_at:
                entry.in_use = False
                entry.idle_since = now
                self._push_mru(entry)
                _c.releases += 1
                return _READY_NONE
        entry.in_use = False  # claimed: a second release meanwhile is refused
        return self._release_async(conn, discard)

    cdef _Entry _entry_of(self, object conn):
        found = self._last
        if found is None or (<_Entry>found).conn is not conn:
            found = self._entries.get(PyLong_FromVoidPtr(<void *>conn))
        else:
            self._last = None
        if found is None or (<_Entry>found).conn is not conn:
            raise ValueError(f"{conn!r} is not checked out from this pool")
        return <_Entry>found

    # --- for the coroutines -----------------------------------------------------------------

    def _step(self):
        """One step of an acquire: ``("got", conn)``, ``("check", conn)`` (run the check, then
        ``_checked``), ``("expired", conn)`` (off the books: close it), ``("create", None)``
        (a slot is reserved: make one, then ``_made``) or ``("wait", None)``."""
        cdef int mode
        cdef _Entry entry
        if self._closed:
            raise policy.pool_closed()
        mode = self._pick(self._now())
        if mode == M_CREATE:
            return ("create", None)
        if mode == M_NONE:
            return ("wait", None)
        entry = self._picked
        self._picked = None
        if mode == M_GOT:
            self._last = entry
            _c.acquires += 1
            _c.calls += 1
            return ("got", entry.conn)
        return ("check" if mode == M_CHECK else "expired", entry.conn)

    def _checked(self, conn, bint ok):
        """The check of ``conn`` passed (it is handed out) or failed (off the books)."""
        cdef _Entry entry = self._entry_of(conn)
        if ok:
            self._last = entry
            _c.acquires += 1
            _c.calls += 1
        else:
            self._check_failed(entry)

    def _broken(self, conn):
        """``conn`` (in use) is given up on as broken: off the books."""
        self._forget(self._entry_of(conn), BROKEN)

    def _made(self, conn):
        """Book what the factory made in the reserved slot: False when the pool closed
        meanwhile (close it); ``ValueError`` for a connection the pool already holds."""
        if self._register(conn, self._now()) is None:
            return False
        _c.acquires += 1
        _c.calls += 1
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
        cdef _FutureWaiter waiter = _FutureWaiter.__new__(_FutureWaiter)
        waiter.future = future
        self._waiters.append(waiter)
        return waiter

    def _dequeue(self, waiter):
        """A waiter left without taking anything (cancelled, past its deadline)."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)

    def _waited(self, double seconds):
        self._wait_count += 1
        self._wait_duration += seconds
        _c.waits += 1
        _c.wait_ns += <unsigned long long>(seconds * 1e9)

    def _give_back(self, result):
        """A waiter was handed ``result`` but cannot take it (cancelled): pass it on. Returns
        a connection to close, or None."""
        cdef _Entry doomed
        if result is _SLOT:
            self._pending -= 1
            self._slot_freed()
            return None
        if result is _CLOSED:
            return None
        doomed = self._put_back(self._entry_of(result), False, self._now())
        return None if doomed is None else doomed.conn

    def _return(self, conn, bint discard):
        """A claimed connection comes back (after its reset): to a waiter, the idle stack or
        off the books (then it is returned, to be closed)."""
        cdef _Entry doomed = self._put_back(self._entry_of(conn), discard, self._now())
        _c.releases += 1
        return None if doomed is None else doomed.conn

    def _close_books(self):
        """Close the books (see ``close``); returns the idle connections to close."""
        cdef list doomed = []
        cdef _Entry entry
        if self._closed:
            return []
        self._shut(doomed)
        return [entry.conn for entry in doomed]

    def _timeout_error(self, double budget):
        return self._timeout(budget)

    def stats(self):
        """A ``PoolStats`` snapshot (waiters that were cancelled or timed out, and not yet
        gone from the line, do not count as waiting)."""
        cdef _FutureWaiter waiter
        snapshot = self._snapshot()
        waiting = 0
        for waiter in self._waiters:
            if not waiter.future.done():
                waiting += 1
        if waiting != snapshot.waiting:
            snapshot = dataclasses.replace(snapshot, waiting=waiting)
        return snapshot
