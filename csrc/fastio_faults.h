/* fastio_faults.h: fault injection into the fio_* system call wrappers.
 *
 * Compiled in only with FASTIO_FAULTS=1 (setup.py turns it into -DFASTIO_FAULTS, and
 * fastio_compat.h includes this header only then): a release build has none of it, not even a
 * symbol. Tests set a schedule through fastio._faults_c (which owns the one state of the process
 * and exports it as the capsule "fastio._faults_c._state"); every native module attaches to it
 * at import, from fio_profile_attach(). Each wrapper starts with one of three hooks:
 *
 *   FIO_FAULT(name, expr)       any call: may fail it with an errno (expr is not touched)
 *   FIO_FAULT_LEN(name, len)    len is an lvalue size_t (the wrapper's parameter): may also
 *                               shrink it before the real call (a short read or write)
 *   FIO_FAULT_IOV(name, iov, n) vectored calls: may also point iov/n at a shortened copy
 *
 * A schedule fails "the Nth matching call" or each matching call with a seeded probability, with
 * one of the enabled kinds: EINTR, EAGAIN, a short count (one byte, or half), a reset (EPIPE on
 * the sending calls, ECONNRESET on the others) or a lack of memory (ENOBUFS when sending, ENOMEM
 * otherwise). An injected error happens before the real call, so it moved nothing, as the kernel's
 * would. Decisions are a pure function of (seed, index of the matching call), so a seed replays.
 *
 * The types below are declared in every build (fastio._faults_c compiles against them to know
 * whether the hook exists); the functions and the state only with FASTIO_FAULTS.
 */
#ifndef FASTIO_FAULTS_H
#define FASTIO_FAULTS_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    FIO_FAULT_EINTR = 0,
    FIO_FAULT_EAGAIN,
    FIO_FAULT_SHORT1,
    FIO_FAULT_HALF,
    FIO_FAULT_RESET,
    FIO_FAULT_NOMEM,
    FIO_FAULT_KINDS
};

#define FIO_FAULT_MAX_CALLS 32
#define FIO_FAULT_NAME_LEN 24
#define FIO_FAULT_IOV_MAX 64

typedef struct {
    uint64_t size;        /* sizeof(fio_fault_state): modules of another build refuse it */
    uint64_t active;      /* 0: every wrapper goes straight to its call */
    uint64_t seed;
    uint64_t nth;         /* > 0: fault exactly the nth matching call (1-based), no other */
    uint64_t rate;        /* else: probability of a fault per matching call, in 2^-32 units */
    uint64_t max_faults;  /* stop injecting after this many (0: no limit) */
    uint32_t kinds;       /* bitmask of 1 << FIO_FAULT_* */
    uint32_t ncalls;      /* 0: every call matches; else only the names below */
    char calls[FIO_FAULT_MAX_CALLS][FIO_FAULT_NAME_LEN];
    uint64_t seen;        /* matching calls so far */
    uint64_t total;       /* faults injected so far */
    uint64_t injected[FIO_FAULT_KINDS];
} fio_fault_state;

#ifdef FASTIO_FAULTS

#if defined(__GNUC__)
#  define FIO_FAULT_UNUSED __attribute__((unused))
#else
#  define FIO_FAULT_UNUSED
#endif

#include <sys/uio.h>

/* This module's view of the process's state (NULL until attached: no faults). */
static fio_fault_state *fio_fault_state_ FIO_FAULT_UNUSED = NULL;

static inline uint64_t fio_fault_mix(uint64_t x)
{
    /* splitmix64: the Python layer (fastio/_faults.py) computes the same numbers. */
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static inline int fio_fault_sending(const char *call)
{
    return strncmp(call, "write", 5) == 0 || strncmp(call, "send", 4) == 0
        || strncmp(call, "pwrite", 6) == 0 || strcmp(call, "splice") == 0
        || strcmp(call, "copy_file_range") == 0;
}

/* The kind of fault to inject into this call of `call` moving `len` bytes (len_known: the
 * call has a length that may be shrunk), or -1 for none. */
static inline int fio_fault_pick(const char *call, int len_known, size_t len)
{
    fio_fault_state *s = fio_fault_state_;
    uint64_t n, r;
    uint32_t kinds, k, count, choice;
    if (s == NULL || !__atomic_load_n(&s->active, __ATOMIC_ACQUIRE)) return -1;
    if (s->ncalls) {
        uint32_t i;
        for (i = 0; i < s->ncalls; i++)
            if (strcmp(s->calls[i], call) == 0) break;
        if (i == s->ncalls) return -1;
    }
    n = __atomic_add_fetch(&s->seen, 1, __ATOMIC_RELAXED);
    r = fio_fault_mix(s->seed ^ fio_fault_mix(n));
    if (s->nth ? n != s->nth : (r & 0xFFFFFFFFull) >= s->rate) return -1;
    kinds = s->kinds;
    if (!len_known) {
        kinds &= (1u << FIO_FAULT_EINTR) | (1u << FIO_FAULT_NOMEM);
    } else {
        if (len < 2) kinds &= ~((1u << FIO_FAULT_SHORT1) | (1u << FIO_FAULT_HALF));
    }
    for (count = 0, k = 0; k < FIO_FAULT_KINDS; k++) count += (kinds >> k) & 1u;
    if (count == 0) return -1;
    if (s->max_faults
        && __atomic_add_fetch(&s->total, 1, __ATOMIC_RELAXED) > s->max_faults) {
        __atomic_sub_fetch(&s->total, 1, __ATOMIC_RELAXED);
        return -1;
    }
    if (!s->max_faults) __atomic_add_fetch(&s->total, 1, __ATOMIC_RELAXED);
    choice = (uint32_t)((r >> 32) % count);
    for (k = 0; k < FIO_FAULT_KINDS; k++) {
        if (((kinds >> k) & 1u) && choice-- == 0) break;
    }
    __atomic_add_fetch(&s->injected[k], 1, __ATOMIC_RELAXED);
    return (int)k;
}

static inline int fio_fault_errno(int kind, const char *call)
{
    switch (kind) {
    case FIO_FAULT_EINTR: return EINTR;
    case FIO_FAULT_EAGAIN: return EAGAIN;
    case FIO_FAULT_RESET: return fio_fault_sending(call) ? EPIPE : ECONNRESET;
    default: return fio_fault_sending(call) ? ENOBUFS : ENOMEM;
    }
}

static inline size_t fio_fault_shrunk(int kind, size_t len)
{
    return kind == FIO_FAULT_SHORT1 ? 1 : len / 2;
}

/* Copy the first iovecs of `iov` covering `want` bytes into `out` (at most
 * FIO_FAULT_IOV_MAX of them); returns how many. */
static inline int fio_fault_iov_cut(struct iovec *out, const struct iovec *iov, int n,
                                    size_t want)
{
    int i;
    for (i = 0; i < n && i < FIO_FAULT_IOV_MAX && want > 0; i++) {
        out[i] = iov[i];
        if (out[i].iov_len > want) out[i].iov_len = want;
        want -= out[i].iov_len;
    }
    return i > 0 ? i : 1;
}

static inline size_t fio_fault_iov_total(const struct iovec *iov, int n)
{
    size_t total = 0;
    int i;
    for (i = 0; i < n; i++) total += iov[i].iov_len;
    return total;
}

#define FIO_FAULT(call, ignored) do {                                                  \
        int fio_fk_ = fio_fault_pick((call), 0, 0);                                     \
        if (fio_fk_ >= 0) { errno = fio_fault_errno(fio_fk_, (call)); return -1; }      \
    } while (0)

#define FIO_FAULT_LEN(call, len) do {                                                  \
        int fio_fk_ = fio_fault_pick((call), 1, (size_t)(len));                         \
        if (fio_fk_ == FIO_FAULT_SHORT1 || fio_fk_ == FIO_FAULT_HALF)                   \
            (len) = fio_fault_shrunk(fio_fk_, (size_t)(len));                           \
        else if (fio_fk_ >= 0) { errno = fio_fault_errno(fio_fk_, (call)); return -1; } \
    } while (0)

#define FIO_FAULT_IOV(call, iov, n)                                                    \
    struct iovec fio_fault_iov_[FIO_FAULT_IOV_MAX];                                     \
    do {                                                                                \
        if (fio_fault_state_ != NULL                                                    \
            && __atomic_load_n(&fio_fault_state_->active, __ATOMIC_ACQUIRE)) {          \
            size_t fio_total_ = fio_fault_iov_total((iov), (n));                        \
            int fio_fk_ = fio_fault_pick((call), 1, fio_total_);                        \
            if (fio_fk_ == FIO_FAULT_SHORT1 || fio_fk_ == FIO_FAULT_HALF) {             \
                (n) = fio_fault_iov_cut(fio_fault_iov_, (iov), (n),                     \
                                        fio_fault_shrunk(fio_fk_, fio_total_));         \
                (iov) = fio_fault_iov_;                                                 \
            } else if (fio_fk_ >= 0) {                                                  \
                errno = fio_fault_errno(fio_fk_, (call));                               \
                return -1;                                                              \
            }                                                                           \
        }                                                                               \
    } while (0)

#ifdef Py_PYTHON_H
/* Attach this module to the process's fault state (called by fio_profile_attach at import;
 * returns -1 with an exception set). */
static inline int fio_fault_attach(void)
{
    PyObject *module, *capsule;
    fio_fault_state *state;
    module = PyImport_ImportModule("fastio._faults_c");
    if (module == NULL) return -1;
    capsule = PyObject_GetAttrString(module, "_state");
    Py_DECREF(module);
    if (capsule == NULL) return -1;
    state = (fio_fault_state *)PyCapsule_GetPointer(capsule, "fastio._faults_c._state");
    Py_DECREF(capsule);
    if (state == NULL) return -1;
    if (state->size != sizeof(fio_fault_state)) {
        PyErr_SetString(PyExc_ImportError,
                        "fastio._faults_c comes from another build of fastio (fault state)");
        return -1;
    }
    fio_fault_state_ = state;
    return 0;
}
#endif

#endif /* FASTIO_FAULTS */
#endif /* FASTIO_FAULTS_H */
