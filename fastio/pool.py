"""Connection pools: reuse connections at the cost of a couple of attribute lookups.

``Pool(factory, ...)`` keeps connections made by ``factory()`` for reuse; ``KeyedPool`` keeps
one pool per key (per host, as ``http.Transport`` does) under per-key and global limits;
``SocketPool`` is a keyed pool of TCP sockets by ``(host, port)`` that replaces sockets the
server closed while they sat idle. The live twin (native or Python, see ``fastio.IMPLEMENTATION``)
is chosen once per process.

Settings, against their ``database/sql`` / HikariCP / psycopg_pool names:

==================  ================================  ==========================================
fastio              database/sql / HikariCP           meaning
==================  ================================  ==========================================
max_size            SetMaxOpenConns / maximumPoolSize connections open or being created, at most
min_idle            - / minimumIdle                   connections opened at construction and
                                                      kept open by the housekeeper (never closed
                                                      for ``max_idle_time`` below it)
max_idle            SetMaxIdleConns / -               idle ones beyond this are closed on return
max_lifetime        SetConnMaxLifetime / maxLifetime  age after which a connection is closed
                                                      instead of reused (minus a random jitter up
                                                      to ``lifetime_jitter`` of it)
max_idle_time       SetConnMaxIdleTime / idleTimeout  idle time after which it is closed
acquire_timeout     (context deadline) /              one deadline for waiting, checking and
                    connectionTimeout                 creating; ``PoolTimeout`` after it
check, check_after  (driver Pinger) /                 validate a connection idle longer than
                    connectionTestQuery,              ``check_after`` s before handing it out
                    aliveBypassWindowMs
reset               (driver ResetSession) /           runs on every return
                    psycopg_pool ``reset``
is_broken           driver.ErrBadConn                 which exceptions in ``connection()``
                                                      discard the connection (default OSError;
                                                      one that raises discards it too, and the
                                                      caller's exception goes on)
leak_timeout        - / leakDetectionThreshold        report a connection held longer, with the
                                                      traceback of its acquire
==================  ================================  ==========================================

A connection past its lifetime or idle time is never handed out; a daemon housekeeper thread
(one per process, started only for pools that need it, as ``database/sql``'s cleaner) also closes
such idle connections in the background, every half of ``min(max_idle_time, max_lifetime)``,
restores ``min_idle``, and looks for leaks every quarter of ``leak_timeout``.

Example::

    pool = fastio.Pool(lambda: socket.create_connection(("db", 5432)), max_size=8,
                       max_lifetime=1800, check=ping, check_after=5)
    with pool.connection(timeout=2.0) as conn:
        conn.sendall(b"...")
    print(pool.stats())   # PoolStats(open=1, in_use=0, idle=1, wait_count=0, ...)
"""

from . import _impl
from ._errors import PoolClosed, PoolTimeout

_twin = _impl.twin_module("pool")

Pool = _twin.Pool
KeyedPool = _twin.KeyedPool
SocketPool = _twin.SocketPool
PoolStats = _twin.PoolStats

__all__ = ["KeyedPool", "Pool", "PoolClosed", "PoolStats", "PoolTimeout", "SocketPool"]
