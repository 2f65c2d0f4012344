"""The native side of ``fastio.profile()``: the process's system call histograms.

Owns the one ``fio_profile_state`` of the process (csrc/fastio_profile.h) and exports it as
the capsule ``_state``, to which every native twin attaches at import. ``fastio._profile``
(Python) drives it: ``enable``/``disable``, ``reset`` and ``read``.
"""

from cpython.pycapsule cimport PyCapsule_New
from libc.stdint cimport uint64_t
from libc.stdlib cimport calloc
from posix.unistd cimport write

from fastio._compat cimport FIO_HAVE_PROFILE, FIO_PRIM_BENCH, fio_write

__all__ = ["BUCKETS", "HAVE_PROFILE", "disable", "enable", "enabled", "read", "reset"]

cdef extern from "fastio_profile.h" nogil:
    enum:
        FIO_PRIM_COUNT
        FIO_CALL_COUNT
        FIO_PROFILE_BUCKETS

    ctypedef struct fio_profile_cell:
        uint64_t count
        uint64_t errors
        uint64_t total_ns
        uint64_t max_ns
        uint64_t buckets[1]  # really FIO_PROFILE_BUCKETS long

    ctypedef struct fio_profile_state:
        uint64_t size
        uint64_t enabled

    const char *fio_profile_prim_names[1]
    const char *fio_profile_call_names[1]

cdef extern from *:
    """
    static inline uint64_t fio_profile_load_(uint64_t *p)
    {
    #if FIO_HAVE_PROFILE
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    #else
        return *p;
    #endif
    }
    static inline fio_profile_cell *fio_profile_cell_(fio_profile_state *s, int prim, int call)
    {
        return &s->cells[prim][call];
    }
    /* This module owns the state: it attaches without importing itself. */
    static inline void fio_profile_own_(fio_profile_state *s, int primitive)
    {
    #if FIO_HAVE_PROFILE
        fio_profile_state_ = s;
        fio_profile_prim_ = primitive;
        fio_profile_flag_ = &s->enabled;
    #else
        (void)s; (void)primitive;
    #endif
    }
    static inline void fio_profile_store_(uint64_t *p, uint64_t v)
    {
    #if FIO_HAVE_PROFILE
        __atomic_store_n(p, v, __ATOMIC_RELAXED);
    #else
        *p = v;
    #endif
    }
    """
    uint64_t fio_profile_load_(uint64_t *p) nogil
    fio_profile_cell *fio_profile_cell_(fio_profile_state *s, int prim, int call) nogil
    void fio_profile_own_(fio_profile_state *s, int primitive) nogil
    void fio_profile_store_(uint64_t *p, uint64_t v) nogil

#: Number of histogram buckets per (primitive, call); the layout is fastio._profile's.
BUCKETS = FIO_PROFILE_BUCKETS
#: Whether this build can time system calls at all (GNU C, not Windows).
HAVE_PROFILE = bool(FIO_HAVE_PROFILE)

# Allocated once and never freed: attached modules keep pointers to it for the process's life.
cdef fio_profile_state *_cstate = <fio_profile_state *>calloc(1, sizeof(fio_profile_state))
if _cstate == NULL:
    raise MemoryError("fastio profile state")
_cstate.size = sizeof(fio_profile_state)
# What fio_profile_attach() imports: "fastio._profile_c._state".
_state = PyCapsule_New(<void *>_cstate, "fastio._profile_c._state", NULL)
# This module's own calls (the overhead benchmark's loop) count as "bench".
fio_profile_own_(_cstate, FIO_PRIM_BENCH)


cdef inline fio_profile_cell *_cell(int prim, int call) noexcept nogil:
    return fio_profile_cell_(_cstate, prim, call)


def enable():
    """Start timing the system calls of every attached native module."""
    fio_profile_store_(&_cstate.enabled, 1)


def disable():
    """Stop timing (calls already inside a timed wrapper still record)."""
    fio_profile_store_(&_cstate.enabled, 0)


def enabled():
    """Whether timing is on."""
    return fio_profile_load_(&_cstate.enabled) != 0


def reset():
    """Zero every histogram."""
    cdef int prim, call, i
    cdef fio_profile_cell *cell
    for prim in range(FIO_PRIM_COUNT):
        for call in range(FIO_CALL_COUNT):
            cell = _cell(prim, call)
            fio_profile_store_(&cell.count, 0)
            fio_profile_store_(&cell.errors, 0)
            fio_profile_store_(&cell.total_ns, 0)
            fio_profile_store_(&cell.max_ns, 0)
            for i in range(FIO_PROFILE_BUCKETS):
                fio_profile_store_(&cell.buckets[i], 0)


def read():
    """Every (primitive, call) that recorded something, as a list of dicts.

    Keys: ``primitive``, ``call``, ``count``, ``errors``, ``total_ns``, ``max_ns`` and
    ``buckets`` ({bucket index: count}, non-empty buckets only).
    """
    cdef int prim, call, i
    cdef uint64_t n
    cdef fio_profile_cell *cell
    rows = []
    for prim in range(FIO_PRIM_COUNT):
        for call in range(FIO_CALL_COUNT):
            cell = _cell(prim, call)
            if fio_profile_load_(&cell.count) == 0:
                continue
            buckets = {}
            for i in range(FIO_PROFILE_BUCKETS):
                n = fio_profile_load_(&cell.buckets[i])
                if n:
                    buckets[i] = n
            rows.append(
                {
                    "primitive": fio_profile_prim_names[prim].decode(),
                    "call": fio_profile_call_names[call].decode(),
                    "count": fio_profile_load_(&cell.count),
                    "errors": fio_profile_load_(&cell.errors),
                    "total_ns": fio_profile_load_(&cell.total_ns),
                    "max_ns": fio_profile_load_(&cell.max_ns),
                    "buckets": buckets,
                }
            )
    return rows


def _write_loop(int fd, Py_ssize_t n, bint wrapped):
    """Benchmark aid: ``n`` one-byte writes to ``fd`` in C without the GIL, through
    ``fio_write`` (``wrapped``, the profile branch included) or the bare ``write()``.
    Returns the number of successful writes."""
    cdef Py_ssize_t _i, ok = 0
    cdef char byte = 120  # "x"
    with nogil:
        if wrapped:
            for _i in range(n):
                ok += fio_write(fd, &byte, 1) == 1
        else:
            for _i in range(n):
                ok += write(fd, &byte, 1) == 1
    return ok
