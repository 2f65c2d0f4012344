# cython: binding=False
"""Control of the native fault-injection hook (``csrc/fastio_faults.h``), for tests.

Only a ``FASTIO_FAULTS=1`` build has the hook: there this module owns the schedule of the process
(exported as the capsule ``_state`` that every native module attaches to at import) and
``BUILT`` is True. In any other build it compiles to a stub: ``BUILT`` is False, the state does
not exist and ``configure`` raises ``RuntimeError``. Use it through ``fastio._faults``.
"""

from libc.stdint cimport uint32_t, uint64_t
from libc.string cimport memset, strncpy

cdef extern from *:
    """
    #include "fastio_faults.h"
    #ifdef FASTIO_FAULTS
    static fio_fault_state fio_fault_storage_ = {sizeof(fio_fault_state)};
    #  define FIO_FAULTS_BUILT 1
    #  define FIO_FAULTS_STATE (&fio_fault_storage_)
    #else
    #  define FIO_FAULTS_BUILT 0
    #  define FIO_FAULTS_STATE ((fio_fault_state *)0)
    #endif
    static inline void fio_faults_set_active_(fio_fault_state *s, uint64_t v)
    {
        __atomic_store_n(&s->active, v, __ATOMIC_RELEASE);
    }
    static inline uint64_t fio_faults_load_(uint64_t *p)
    {
        return __atomic_load_n(p, __ATOMIC_RELAXED);
    }
    """
    const int FIO_FAULTS_BUILT
    const int FIO_FAULT_KINDS
    const int FIO_FAULT_MAX_CALLS
    const int FIO_FAULT_NAME_LEN

    ctypedef struct fio_fault_state:
        uint64_t size
        uint64_t active
        uint64_t seed
        uint64_t nth
        uint64_t rate
        uint64_t max_faults
        uint32_t kinds
        uint32_t ncalls
        char calls[32][24]
        uint64_t seen
        uint64_t total
        uint64_t injected[6]

    fio_fault_state *FIO_FAULTS_STATE
    void fio_faults_set_active_(fio_fault_state *s, uint64_t v) nogil
    uint64_t fio_faults_load_(uint64_t *p) nogil

from cpython.pycapsule cimport PyCapsule_New

#: The kinds of fault, in the order of their bits.
KINDS = ("eintr", "eagain", "short1", "half", "reset", "nomem")

#: True when this build has the hook (FASTIO_FAULTS=1).
BUILT = bool(FIO_FAULTS_BUILT)

if FIO_FAULTS_BUILT:
    _state = PyCapsule_New(<void *>FIO_FAULTS_STATE, b"fastio._faults_c._state", NULL)


cdef fio_fault_state *_need() except NULL:
    if not FIO_FAULTS_BUILT:
        raise RuntimeError("fastio was built without fault injection (FASTIO_FAULTS=1)")
    return FIO_FAULTS_STATE


def configure(*, uint64_t seed=0, uint64_t nth=0, double rate=0.0, kinds=KINDS, calls=None,
              uint64_t max_faults=0):
    """Start injecting: the ``nth`` matching call (1-based), or each one with probability
    ``rate``; ``kinds`` among ``KINDS``; ``calls`` the wrapper names to match (None: all).
    Resets the counts."""
    cdef fio_fault_state *s = _need()
    cdef uint32_t mask = 0
    cdef uint32_t i
    cdef bytes name
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate!r}")
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; choose among {KINDS}")
        mask |= 1u << KINDS.index(kind)
    names = [] if calls is None else [str(c).encode() for c in calls]
    if len(names) > FIO_FAULT_MAX_CALLS:
        raise ValueError(f"at most {FIO_FAULT_MAX_CALLS} call names")
    fio_faults_set_active_(s, 0)
    s.seed = seed
    s.nth = nth
    s.rate = <uint64_t>(rate * 4294967296.0) if rate < 1.0 else 4294967296
    s.max_faults = max_faults
    s.kinds = mask
    memset(s.calls, 0, sizeof(s.calls))
    for i, name in enumerate(names):
        if len(name) >= FIO_FAULT_NAME_LEN:
            raise ValueError(f"call name too long: {name!r}")
        strncpy(s.calls[i], name, FIO_FAULT_NAME_LEN - 1)
    s.ncalls = len(names)
    s.seen = 0
    s.total = 0
    memset(s.injected, 0, sizeof(s.injected))
    fio_faults_set_active_(s, 1)


def disable():
    """Stop injecting (the counts stay readable). Harmless in a build without the hook."""
    if FIO_FAULTS_BUILT:
        fio_faults_set_active_(FIO_FAULTS_STATE, 0)


def counts():
    """{"seen": matching calls, "total": faults, <kind>: faults of that kind}."""
    cdef fio_fault_state *s = _need()
    cdef int k
    values = {"seen": fio_faults_load_(&s.seen), "total": fio_faults_load_(&s.total)}
    for k in range(FIO_FAULT_KINDS):
        values[KINDS[k]] = fio_faults_load_(&s.injected[k])
    return values
