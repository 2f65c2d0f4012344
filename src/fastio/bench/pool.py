"""Pool benchmark scenarios: an uncontended checkout and return, and 32 threads on 4
connections, each against the pools Python code usually has (``queue.LifoQueue`` as urllib3
does, a ``threading.Lock`` + list, and a list pool whose uncontended path takes no lock).

``full=True`` gives the issue's sizes; the quick form takes a few seconds.
"""

import queue
import statistics
import threading
import time

from ._harness import ScenarioResult, Variant, compare, scenario, twin_variants

__all__ = [
    "LifoQueuePool",
    "LockListPool",
    "TunedListPool",
    "contended",
    "percentile",
    "uncontended",
]


TUNED = "list pool, lock-free fast path"


class Conn:
    """A connection stand-in: the benchmark measures the pool, not a network."""

    def close(self):
        pass


class LifoQueuePool:
    """The urllib3 way (``HTTPConnectionPool._get_conn`` / ``_put_conn``): a LifoQueue
    pre-filled with ``None`` placeholders, a new connection made for a placeholder."""

    def __init__(self, factory, max_size, timeout=30.0):
        self.factory = factory
        self.timeout = timeout
        self.pool = queue.LifoQueue(max_size)
        for _ in range(max_size):
            self.pool.put(None)

    def acquire(self):
        conn = self.pool.get(block=True, timeout=self.timeout)
        return conn or self.factory()

    def release(self, conn):
        self.pool.put(conn, block=False)


class LockListPool:
    """The plain hand-written pool: a ``threading.Lock``, a list of idle connections, a
    ``Condition`` to wait on when all are out."""

    def __init__(self, factory, max_size, timeout=30.0):
        self.factory = factory
        self.max_size = max_size
        self.timeout = timeout
        self.lock = threading.Lock()
        self.available = threading.Condition(self.lock)
        self.idle = []
        self.open = 0

    def acquire(self):
        with self.lock:
            while True:
                if self.idle:
                    return self.idle.pop()
                if self.open < self.max_size:
                    self.open += 1
                    break
                if not self.available.wait(self.timeout):
                    raise TimeoutError("no connection")
        return self.factory()

    def release(self, conn):
        with self.lock:
            self.idle.append(conn)
            self.available.notify()


class TunedListPool:
    """The fastest hand-written pool we know: ``list.pop``/``list.append`` are atomic under
    the GIL, so the uncontended path takes no lock; the lock and condition serve only when
    all connections are out. ``waiting`` is raised under the lock before the waiter's second
    ``pop``, and ``release`` reads it after its ``append``: no wake-up is missed."""

    def __init__(self, factory, max_size, timeout=30.0):
        self.factory = factory
        self.max_size = max_size
        self.timeout = timeout
        self.lock = threading.Lock()
        self.available = threading.Condition(self.lock)
        self.idle = []
        self.open = 0
        self.waiting = 0

    def acquire(self):
        try:
            return self.idle.pop()
        except IndexError:
            pass
        with self.lock:
            self.waiting += 1
            try:
                while True:
                    try:
                        return self.idle.pop()
                    except IndexError:
                        pass
                    if self.open < self.max_size:
                        self.open += 1
                        break
                    if not self.available.wait(self.timeout):
                        raise TimeoutError("no connection")
            finally:
                self.waiting -= 1
        return self.factory()

    def release(self, conn):
        self.idle.append(conn)
        if self.waiting:
            with self.lock:
                self.available.notify()


def all_features(twin, **extra):
    """A fastio pool with every engine feature on (lifetime with jitter, idle time, max_idle,
    checks with check_after, is_broken, a deadline, counters): what the target is judged on."""
    options = dict(
        max_size=4,
        max_idle=4,
        max_lifetime=3600.0,
        lifetime_jitter=0.05,
        max_idle_time=600.0,
        acquire_timeout=30.0,
        check=lambda conn: True,
        check_after=1.0,
        is_broken=lambda exc: isinstance(exc, OSError),
    )
    options.update(extra)
    return twin.Pool(Conn, **options)


def _pair_loop(acquire, release, n):
    def run():
        for _ in range(n):
            conn = acquire()
            release(conn)
        return n

    return run


def _with_loop(connection, n):
    def run():
        for _ in range(n):
            with connection():
                pass
        return n

    return run


@scenario("pool-uncontended", "pool")
def uncontended(full=False):
    """One thread: acquire + release of an idle connection, per pair."""
    n = 200_000 if full else 30_000
    rounds = 9 if full else 5
    variants = []

    def fastio_pairs(twin):
        pool = all_features(twin)
        return _pair_loop(pool.acquire, pool.release, n)

    variants += twin_variants(fastio_pairs)
    for variant in twin_variants(lambda twin: _with_loop(all_features(twin).connection, n)):
        variant.label += " with connection()"
        variants.append(variant)
    for suffix, extra in (
        (" +reset", {"reset": lambda conn: None}),
        (" +leak_timeout", {"leak_timeout": 60.0}),
    ):

        def with_extra(twin, extra=extra):
            pool = all_features(twin, **extra)
            return _pair_loop(pool.acquire, pool.release, n)

        for variant in twin_variants(with_extra):
            variant.label += suffix
            variants.append(variant)
    lifo = LifoQueuePool(Conn, 4)
    locked = LockListPool(Conn, 4)
    tuned = TunedListPool(Conn, 4)
    variants += [
        Variant("queue.LifoQueue pool (urllib3)", _pair_loop(lifo.acquire, lifo.release, n)),
        Variant("threading.Lock + list pool", _pair_loop(locked.acquire, locked.release, n)),
        Variant(TUNED, _pair_loop(tuned.acquire, tuned.release, n)),
    ]
    results = compare(variants, rounds=rounds, units=n, unit_name="pairs")
    result = ScenarioResult(
        "pool-uncontended",
        f"pool: uncontended acquire + release ({n} pairs per round)",
        results,
        per_op=n,
    )
    native = results.get("fastio (c)")
    if native is not None:
        per_pair = native.median / n * 1e9
        lifo_ratio = results["queue.LifoQueue pool (urllib3)"].median / native.median
        lock_ratio = results["threading.Lock + list pool"].median / native.median
        tuned_ratio = results[TUNED].median / native.median
        result.notes += [
            f"target: native pair <= 250 ns: {per_pair:.0f} ns "
            f"({'met' if per_pair <= 250 else 'NOT met'})",
            f"target: >= 10x queue.LifoQueue pool: {lifo_ratio:.1f}x "
            f"({'met' if lifo_ratio >= 10 else 'NOT met'})",
            f"target: >= 3x threading.Lock + list pool: {lock_ratio:.1f}x "
            f"({'met' if lock_ratio >= 3 else 'NOT met'})",
            f"against the tuned list pool (no feature, lock-free fast path): {tuned_ratio:.1f}x",
        ]
    return result


def percentile(sorted_values, fraction):
    """The value at ``fraction`` (0..1) of sorted values (nearest rank)."""
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


def _contended_run(acquire, release, threads, per_thread, hold, waits_out):
    """``threads`` threads each doing ``per_thread`` checkouts that hold the connection for
    ``hold`` seconds (a sleep: the GIL is released, as during real I/O)."""

    def run():
        waits = []
        start = threading.Barrier(threads)

        def worker():
            local = []
            start.wait()
            for _ in range(per_thread):
                t0 = time.perf_counter()
                conn = acquire()
                local.append(time.perf_counter() - t0)
                time.sleep(hold)
                release(conn)
            waits.extend(local)

        workers = [threading.Thread(target=worker) for _ in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        waits_out.append(waits)
        return threads * per_thread

    return run


@scenario("pool-contended", "pool")
def contended(full=False):
    """32 threads sharing 4 connections: wait percentiles and starvation."""
    threads = 32
    per_thread = 300 if full else 60
    hold = 0.0002
    rounds = 3 if full else 1
    collected = {}
    variants = []

    def fastio_run(twin):
        pool = all_features(twin, acquire_timeout=None)
        label = f"fastio ({twin.IMPLEMENTATION})"
        collected[label] = []
        return _contended_run(
            pool.acquire, pool.release, threads, per_thread, hold, collected[label]
        )

    variants += twin_variants(fastio_run)
    for label, cls in (
        ("queue.LifoQueue pool (urllib3)", LifoQueuePool),
        ("threading.Lock + list pool", LockListPool),
        (TUNED, TunedListPool),
    ):
        pool = cls(Conn, 4, timeout=None)
        collected[label] = []
        run = _contended_run(
            pool.acquire, pool.release, threads, per_thread, hold, collected[label]
        )
        variants.append(Variant(label, run))
    results = compare(
        variants, rounds=rounds, warmup=0, units=threads * per_thread, unit_name="checkouts"
    )
    result = ScenarioResult(
        "pool-contended",
        f"pool: {threads} threads on 4 connections, {per_thread} checkouts each, "
        f"held {hold * 1e6:.0f} us",
        results,
        per_op=threads * per_thread,
    )
    result.notes.append(
        f"{'waits':<34} {'median':>9} {'p99':>9} {'p99.9':>9} {'max':>9} {'p99.9/med':>10}"
    )
    figures = {}
    for label, runs in collected.items():
        waits = sorted(w for run in runs for w in run)
        if not waits:
            continue
        median = statistics.median(waits)
        p99, p999, worst = percentile(waits, 0.99), percentile(waits, 0.999), waits[-1]
        ratio = p999 / median if median > 0 else float("inf")
        figures[label] = (median, p999, worst, ratio)
        result.notes.append(
            f"{label:<34} {median * 1e3:7.2f}ms {p99 * 1e3:7.2f}ms {p999 * 1e3:7.2f}ms "
            f"{worst * 1e3:7.1f}ms {ratio:9.1f}x"
        )
    native = figures.get("fastio (c)")
    if native is not None:
        median, p999, worst, ratio = native
        result.notes += [
            f"target: native p99.9 wait <= 10x median: {ratio:.1f}x "
            f"({'met' if ratio <= 10 else 'NOT met'})",
            f"target: no native waiter starved past 1 s: worst {worst * 1e3:.1f} ms "
            f"({'met' if worst <= 1.0 else 'NOT met'})",
        ]
    return result
