/* fastio_profile.h: system call timing for fastio.profile(), included by fastio_compat.h.
 *
 * Every fio_* wrapper runs its system call through FIO_TIMED(call_id, expr). Outside
 * profile() that is one relaxed load of a flag and one predictable, not-taken branch; inside
 * it, the call is timed with the monotonic clock and recorded in a log-linear latency histogram
 * per (primitive, call) with relaxed atomics, so C loops running without the GIL (relay
 * threads) record too.
 *
 * The state lives once per process, in fastio._profile_c, which exports it as the capsule
 * "fastio._profile_c._state". Each native module includes this header (so it has its own copies
 * of the static variables below) and, at import, attaches to that state and names the
 * primitive its calls are counted under:
 *
 *     fio_profile_attach(FIO_PRIM_TRANSFER)     # module level of fastio/_transfer_c.pyx
 *
 * One native module is one primitive, so the tag is a per-module constant: nothing is set per
 * call (no thread-local to touch on every entry). A module that never attaches is never timed.
 */
#ifndef FASTIO_PROFILE_H
#define FASTIO_PROFILE_H

#include <stdint.h>
#include <errno.h>

#if defined(__GNUC__)
#  define FIO_UNUSED __attribute__((unused))
#else
#  define FIO_UNUSED
#endif

/* Primitives (the names match fastio._impl.PRIMITIVES; "bench" is the overhead benchmark). */
enum {
    FIO_PRIM_SYS = 0,
    FIO_PRIM_TRANSFER,
    FIO_PRIM_BATCH,
    FIO_PRIM_RING,
    FIO_PRIM_POOL,
    FIO_PRIM_BENCH,
    FIO_PRIM_COUNT
};

/* One id per fio_* wrapper that makes a system call. */
enum {
    FIO_CALL_SENDFILE = 0,
    FIO_CALL_SPLICE,
    FIO_CALL_COPY_FILE_RANGE,
    FIO_CALL_READ,
    FIO_CALL_WRITE,
    FIO_CALL_PREAD,
    FIO_CALL_READV,
    FIO_CALL_WRITEV,
    FIO_CALL_RECV,
    FIO_CALL_SEND,
    FIO_CALL_POLL,
    FIO_CALL_PIPE,
    FIO_CALL_MEMFD_CREATE,
    FIO_CALL_FSTAT,
    FIO_CALL_LSEEK,
    FIO_CALL_SHUTDOWN,
    FIO_CALL_SENDMSG,
    FIO_CALL_COUNT
};

static const char *const fio_profile_prim_names[FIO_PRIM_COUNT] FIO_UNUSED = {
    "sys", "transfer", "batch", "ring", "pool", "bench"};
static const char *const fio_profile_call_names[FIO_CALL_COUNT] FIO_UNUSED = {
    "sendfile", "splice", "copy_file_range", "read", "write", "pread", "readv",
    "writev", "recv", "send", "poll", "pipe", "memfd_create", "fstat", "lseek", "shutdown",
    "sendmsg"};

/* Log-linear buckets of nanoseconds: 0..7 exactly, then 8 buckets per power of two (each at
 * most 12.5% wide) up to 2^40 ns (18 minutes). fastio/_profile.py mirrors this layout. */
#define FIO_PROFILE_SUB_BITS 3
#define FIO_PROFILE_MAX_BITS 40
#define FIO_PROFILE_BUCKETS ((FIO_PROFILE_MAX_BITS - FIO_PROFILE_SUB_BITS + 1) << FIO_PROFILE_SUB_BITS)

typedef struct {
    uint64_t count;
    uint64_t errors;    /* calls that returned -1 (EAGAIN included) */
    uint64_t total_ns;
    uint64_t max_ns;
    uint64_t buckets[FIO_PROFILE_BUCKETS];
} fio_profile_cell;

typedef struct {
    uint64_t size;      /* sizeof(fio_profile_state): modules of another build refuse it */
    uint64_t enabled;
    fio_profile_cell cells[FIO_PRIM_COUNT][FIO_CALL_COUNT];
} fio_profile_state;

#if defined(__GNUC__) && !defined(_WIN32)
#  define FIO_HAVE_PROFILE 1
#  include <time.h>

/* Per module: the shared state once attached, and the primitive this module's calls count as.
 * Before attaching, the flag points at a zero that never changes. */
static uint64_t fio_profile_off_ FIO_UNUSED = 0;
static uint64_t *fio_profile_flag_ FIO_UNUSED = &fio_profile_off_;
static fio_profile_state *fio_profile_state_ FIO_UNUSED = NULL;
static int fio_profile_prim_ FIO_UNUSED = FIO_PRIM_SYS;

static inline uint64_t fio_profile_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int fio_profile_bucket(uint64_t ns)
{
    int exponent;
    if (ns < (1u << FIO_PROFILE_SUB_BITS)) return (int)ns;
    if (ns >= ((uint64_t)1 << FIO_PROFILE_MAX_BITS)) return FIO_PROFILE_BUCKETS - 1;
    exponent = 63 - __builtin_clzll(ns);
    return ((exponent - FIO_PROFILE_SUB_BITS + 1) << FIO_PROFILE_SUB_BITS)
        + (int)((ns >> (exponent - FIO_PROFILE_SUB_BITS)) & ((1u << FIO_PROFILE_SUB_BITS) - 1));
}

static inline void fio_profile_record_(int call, uint64_t t0, int failed)
{
    int saved_errno = errno;
    uint64_t ns = fio_profile_now_ns() - t0;
    fio_profile_cell *cell = &fio_profile_state_->cells[fio_profile_prim_][call];
    uint64_t seen = __atomic_load_n(&cell->max_ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&cell->count, 1, __ATOMIC_RELAXED);
    __atomic_fetch_add(&cell->total_ns, ns, __ATOMIC_RELAXED);
    __atomic_fetch_add(&cell->buckets[fio_profile_bucket(ns)], 1, __ATOMIC_RELAXED);
    if (failed) __atomic_fetch_add(&cell->errors, 1, __ATOMIC_RELAXED);
    while (ns > seen && !__atomic_compare_exchange_n(&cell->max_ns, &seen, ns, 1,
                                                     __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
    }
    errno = saved_errno;
}

/* The value of the system call expression `expr`, timed when profiling is on. A negative
 * result counts as an error. */
#  define FIO_TIMED(call, expr) __extension__({                                       \
        __typeof__(expr) fio_rc_;                                                     \
        if (__builtin_expect(__atomic_load_n(fio_profile_flag_, __ATOMIC_RELAXED) != 0, 0)) { \
            uint64_t fio_t0_ = fio_profile_now_ns();                                  \
            fio_rc_ = (expr);                                                         \
            fio_profile_record_((call), fio_t0_, fio_rc_ < 0);                        \
        } else {                                                                      \
            fio_rc_ = (expr);                                                         \
        }                                                                             \
        fio_rc_;                                                                      \
    })

#  ifdef Py_PYTHON_H
/* Attach this module to the process's profile state (returns -1 with ImportError set). */
static inline int fio_profile_attach(int primitive)
{
    PyObject *module, *capsule;
    fio_profile_state *state;
    if (primitive < 0 || primitive >= FIO_PRIM_COUNT) {
        PyErr_SetString(PyExc_ValueError, "fio_profile_attach: unknown primitive");
        return -1;
    }
    /* Not PyCapsule_Import: it walks attributes from "fastio", which is still importing. */
    module = PyImport_ImportModule("fastio._profile_c");
    if (module == NULL) return -1;
    capsule = PyObject_GetAttrString(module, "_state");
    Py_DECREF(module);
    if (capsule == NULL) return -1;
    state = (fio_profile_state *)PyCapsule_GetPointer(capsule, "fastio._profile_c._state");
    Py_DECREF(capsule);  /* the state itself is never freed */
    if (state == NULL) return -1;
    if (state->size != sizeof(fio_profile_state)) {
        PyErr_SetString(PyExc_ImportError,
                        "fastio._profile_c comes from another build of fastio (state layout)");
        return -1;
    }
    fio_profile_state_ = state;
    fio_profile_prim_ = primitive;
    fio_profile_flag_ = &state->enabled;
#    ifdef FASTIO_FAULTS
    return fio_fault_attach();  /* fault builds: the same import attaches the schedule */
#    else
    return 0;
#    endif
}
#  endif

#else  /* no GNU C: profiling is compiled out, the wrappers are the bare calls */
#  define FIO_HAVE_PROFILE 0
#  define FIO_TIMED(call, expr) (expr)
#  ifdef Py_PYTHON_H
static inline int fio_profile_attach(int primitive)
{
    (void)primitive;
#    ifdef FASTIO_FAULTS
    return fio_fault_attach();
#    else
    return 0;
#    endif
}
#  endif
#endif

#endif /* FASTIO_PROFILE_H */
