/* fastio_compat.h: the one place that hides platform differences.
 *
 * Every capability is a 0/1 macro (FIO_HAVE_*) so the same Cython compiles everywhere and
 * branches at run time; a missing call is a stub that fails with ENOSYS, which the callers
 * treat as "fall back to the portable loop".  Every system call fastio makes from C goes
 * through one of the fio_* wrappers below, so fault injection (FASTIO_FAULTS) has one hook,
 * and profile() timing another: each wrapper is FIO_FAULT(...) then FIO_TIMED(FIO_CALL_x,
 * the call). A new wrapper follows the same pattern (and adds its FIO_CALL_ id).
 */
#ifndef FASTIO_COMPAT_H
#define FASTIO_COMPAT_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef _WIN32
#  define FIO_WINDOWS 1
#  include <io.h>
   typedef long long fio_ssize_t;
   typedef long long fio_off_t;
   struct iovec { void *iov_base; size_t iov_len; };
#else
#  define FIO_WINDOWS 0
#  include <fcntl.h>
#  include <limits.h>
#  include <poll.h>
#  include <sys/mman.h>
#  include <sys/socket.h>
#  include <sys/stat.h>
#  include <sys/types.h>
#  include <sys/uio.h>
#  include <unistd.h>
   typedef ssize_t fio_ssize_t;
   typedef off_t fio_off_t;
#endif

#if defined(__linux__)
#  include <sys/sendfile.h>
#  include <sys/syscall.h>
#  define FIO_HAVE_SENDFILE 1
#  define FIO_HAVE_SPLICE 1
#  ifdef SYS_copy_file_range
#    define FIO_HAVE_COPY_FILE_RANGE 1
#  else
#    define FIO_HAVE_COPY_FILE_RANGE 0
#  endif
#  ifdef SYS_memfd_create
#    define FIO_HAVE_MEMFD 1
#  else
#    define FIO_HAVE_MEMFD 0
#  endif
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__DragonFly__)
#  include <sys/uio.h>
#  define FIO_HAVE_SENDFILE 1
#  define FIO_HAVE_SPLICE 0
#  define FIO_HAVE_COPY_FILE_RANGE 0
#  define FIO_HAVE_MEMFD 0
#else
#  define FIO_HAVE_SENDFILE 0
#  define FIO_HAVE_SPLICE 0
#  define FIO_HAVE_COPY_FILE_RANGE 0
#  define FIO_HAVE_MEMFD 0
#endif

#if FIO_WINDOWS
#  define FIO_HAVE_WRITEV 0
#  define FIO_HAVE_POLL 0
#  define FIO_HAVE_MMAP 0
#else
#  define FIO_HAVE_WRITEV 1
#  define FIO_HAVE_POLL 1
#  define FIO_HAVE_MMAP 1
#endif

/* IOV_MAX: the compile-time value is a floor; fio_iov_max() asks sysconf at run time. */
#ifndef IOV_MAX
#  ifdef UIO_MAXIOV
#    define IOV_MAX UIO_MAXIOV
#  else
#    define IOV_MAX 1024
#  endif
#endif
#define FIO_IOV_MAX_STATIC IOV_MAX

#ifndef SPLICE_F_MOVE
#  define SPLICE_F_MOVE 1
#  define SPLICE_F_NONBLOCK 2
#  define SPLICE_F_MORE 4
#endif
#ifndef F_SETPIPE_SZ
#  define F_SETPIPE_SZ 1031
#  define F_GETPIPE_SZ 1032
#endif
#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0
#endif
#ifndef MSG_DONTWAIT
#  define MSG_DONTWAIT 0
#endif
#ifndef POLLIN
#  define POLLIN 1
#  define POLLOUT 4
#  define POLLERR 8
#  define POLLHUP 16
#  define POLLNVAL 32
   struct pollfd { int fd; short events; short revents; };
#endif

/* Atomics for single-producer/single-consumer indices and lock-free counters. */
#if defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L && !defined(__STDC_NO_ATOMICS__)
#  include <stdatomic.h>
#  define FIO_HAVE_ATOMICS 1
   typedef _Atomic size_t fio_atomic_size_t;
#  define fio_load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#  define fio_store_release(p, v) atomic_store_explicit((p), (v), memory_order_release)
#  define fio_load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#  define fio_add_relaxed(p, v) atomic_fetch_add_explicit((p), (v), memory_order_relaxed)
#elif defined(__GNUC__)
#  define FIO_HAVE_ATOMICS 1
   typedef size_t fio_atomic_size_t;
#  define fio_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#  define fio_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#  define fio_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#  define fio_add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)
#else
#  define FIO_HAVE_ATOMICS 0
   typedef volatile size_t fio_atomic_size_t;
#  define fio_load_acquire(p) (*(p))
#  define fio_store_release(p, v) (*(p) = (v))
#  define fio_load_relaxed(p) (*(p))
#  define fio_add_relaxed(p, v) (*(p) += (v))
#endif

/* Fault injection: compiled in only with FASTIO_FAULTS=1 (see fastio_faults.h). FIO_FAULT may
 * fail a call; FIO_FAULT_LEN (len: the wrapper's size_t parameter) and FIO_FAULT_IOV may also
 * shorten it. In a release build all three are empty. */
#ifdef FASTIO_FAULTS
#  include "fastio_faults.h"
#else
#  define FIO_FAULT(call, result_on_fault) do { } while (0)
#  define FIO_FAULT_LEN(call, len) do { } while (0)
#  define FIO_FAULT_IOV(call, iov, n) do { } while (0)
#endif

/* System call timing for fastio.profile(): FIO_TIMED(call_id, expr), see fastio_profile.h. */
#include "fastio_profile.h"

/* ---- system call wrappers: return -1 with errno set, as the calls do ---- */

static inline fio_ssize_t fio_sendfile(int out_fd, int in_fd, fio_off_t *offset, size_t count)
{
    FIO_FAULT_LEN("sendfile", count);
#if defined(__linux__)
    return FIO_TIMED(FIO_CALL_SENDFILE, sendfile(out_fd, in_fd, offset, count));
#elif defined(__APPLE__)
    off_t len = (off_t)count;
    int rc = FIO_TIMED(FIO_CALL_SENDFILE, sendfile(in_fd, out_fd, *offset, &len, NULL, 0));
    if (len > 0) { *offset += len; return (fio_ssize_t)len; }  /* progress wins over EAGAIN */
    return rc == 0 ? 0 : -1;
#elif defined(__FreeBSD__) || defined(__DragonFly__)
    off_t sent = 0;
    int rc = FIO_TIMED(FIO_CALL_SENDFILE,
                       sendfile(in_fd, out_fd, *offset, count, NULL, &sent, 0));
    if (sent > 0) { *offset += sent; return (fio_ssize_t)sent; }
    return rc == 0 ? 0 : -1;
#else
    (void)out_fd; (void)in_fd; (void)offset; (void)count;
    errno = ENOSYS;
    return -1;
#endif
}

static inline fio_ssize_t fio_splice(int fd_in, int fd_out, size_t len, unsigned int flags)
{
    FIO_FAULT_LEN("splice", len);
#if FIO_HAVE_SPLICE
    return FIO_TIMED(FIO_CALL_SPLICE, splice(fd_in, NULL, fd_out, NULL, len, flags));
#else
    (void)fd_in; (void)fd_out; (void)len; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

static inline fio_ssize_t fio_copy_file_range(int fd_in, fio_off_t *off_in, int fd_out,
                                              fio_off_t *off_out, size_t len)
{
    FIO_FAULT_LEN("copy_file_range", len);
#if FIO_HAVE_COPY_FILE_RANGE
    return FIO_TIMED(FIO_CALL_COPY_FILE_RANGE,
                     syscall(SYS_copy_file_range, fd_in, off_in, fd_out, off_out, len, 0u));
#else
    (void)fd_in; (void)off_in; (void)fd_out; (void)off_out; (void)len;
    errno = ENOSYS;
    return -1;
#endif
}

static inline fio_ssize_t fio_read(int fd, void *buf, size_t len)
{
    FIO_FAULT_LEN("read", len);
#if FIO_WINDOWS
    return _read(fd, buf, (unsigned int)len);
#else
    return FIO_TIMED(FIO_CALL_READ, read(fd, buf, len));
#endif
}

static inline fio_ssize_t fio_write(int fd, const void *buf, size_t len)
{
    FIO_FAULT_LEN("write", len);
#if FIO_WINDOWS
    return _write(fd, buf, (unsigned int)len);
#else
    return FIO_TIMED(FIO_CALL_WRITE, write(fd, buf, len));
#endif
}

static inline fio_ssize_t fio_pread(int fd, void *buf, size_t len, fio_off_t offset)
{
    FIO_FAULT_LEN("pread", len);
#if FIO_WINDOWS
    (void)fd; (void)buf; (void)len; (void)offset;
    errno = ENOSYS;
    return -1;
#else
    return FIO_TIMED(FIO_CALL_PREAD, pread(fd, buf, len, offset));
#endif
}

static inline fio_ssize_t fio_readv(int fd, const struct iovec *iov, int n)
{
    FIO_FAULT_IOV("readv", iov, n);
#if FIO_HAVE_WRITEV
    return FIO_TIMED(FIO_CALL_READV, readv(fd, iov, n));
#else
    if (n <= 0) return 0;
    return fio_read(fd, iov[0].iov_base, iov[0].iov_len);
#endif
}

static inline fio_ssize_t fio_writev(int fd, const struct iovec *iov, int n)
{
    FIO_FAULT_IOV("writev", iov, n);
#if FIO_HAVE_WRITEV
    return FIO_TIMED(FIO_CALL_WRITEV, writev(fd, iov, n));
#else
    if (n <= 0) return 0;
    return fio_write(fd, iov[0].iov_base, iov[0].iov_len);
#endif
}

#if !FIO_WINDOWS
static inline fio_ssize_t fio_recv(int fd, void *buf, size_t len, int flags)
{
    FIO_FAULT_LEN("recv", len);
    return FIO_TIMED(FIO_CALL_RECV, recv(fd, buf, len, flags));
}

static inline fio_ssize_t fio_send(int fd, const void *buf, size_t len, int flags)
{
    FIO_FAULT_LEN("send", len);
    return FIO_TIMED(FIO_CALL_SEND, send(fd, buf, len, flags | MSG_NOSIGNAL));
}

/* A vectored write to a socket: sendmsg with MSG_NOSIGNAL, so that a peer that went away is
 * EPIPE, never SIGPIPE (writev takes no flags; a program may restore SIGPIPE's default). */
static inline fio_ssize_t fio_sendmsg(int fd, const struct iovec *iov, int n)
{
    struct msghdr msg;
    FIO_FAULT_IOV("sendmsg", iov, n);
    memset(&msg, 0, sizeof msg);
    msg.msg_iov = (struct iovec *)iov;
    msg.msg_iovlen = n;
    return FIO_TIMED(FIO_CALL_SENDMSG, sendmsg(fd, &msg, MSG_NOSIGNAL));
}

static inline int fio_poll(struct pollfd *fds, unsigned long n, int timeout_ms)
{
    FIO_FAULT("poll", 0);
    return FIO_TIMED(FIO_CALL_POLL, poll(fds, (nfds_t)n, timeout_ms));
}
#endif

/* Internal pipe for splice: non-blocking, close-on-exec. */
static inline int fio_pipe(int fds[2])
{
#if defined(__linux__)
    return FIO_TIMED(FIO_CALL_PIPE, pipe2(fds, O_CLOEXEC | O_NONBLOCK));
#else
    (void)fds;
    errno = ENOSYS;
    return -1;
#endif
}

static inline int fio_memfd_create(const char *name)
{
#if FIO_HAVE_MEMFD
    return (int)FIO_TIMED(FIO_CALL_MEMFD_CREATE,
                          syscall(SYS_memfd_create, name, 1u /* MFD_CLOEXEC */));
#else
    (void)name;
    errno = ENOSYS;
    return -1;
#endif
}

/* ---- run-time facts ---- */

static inline long fio_iov_max(void)
{
#if !FIO_WINDOWS && defined(_SC_IOV_MAX)
    long v = sysconf(_SC_IOV_MAX);
    if (v > 0) return v;
#endif
    return FIO_IOV_MAX_STATIC;
}

static inline long fio_page_size(void)
{
#if !FIO_WINDOWS
    long v = sysconf(_SC_PAGESIZE);
    if (v > 0) return v;
#endif
    return 4096;
}

/* Monotonic clock in seconds, for deadlines computed in C loops. */
#if !FIO_WINDOWS
#include <time.h>
static inline double fio_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
#endif

/* --- pool (fastio/_pool_c.pyx) ------------------------------------------------------------ */
#if !FIO_WINDOWS
/* A cheap monotonic clock for connection ages (lifetime, idle time, check_after): a few ns
 * where the kernel offers a coarse clock (its resolution, a few ms, is plenty for ages);
 * deadlines keep using fio_monotonic(). */
static inline double fio_monotonic_coarse(void)
{
    struct timespec ts;
#  ifdef CLOCK_MONOTONIC_COARSE
    if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) == 0)
        return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
#  endif
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
#endif

/* ---- transfer (sendfile, splice, copy, relay): the few extra calls it needs ---- */

/* What fstat says of an fd, for choosing a fast path. */
#define FIO_KIND_OTHER 0
#define FIO_KIND_REG 1
#define FIO_KIND_PIPE 2
#define FIO_KIND_SOCK 3

static inline int fio_fstat_kind(int fd, fio_off_t *size)
{
    FIO_FAULT("fstat", 0);
#if FIO_WINDOWS
    (void)fd; *size = 0;
    errno = ENOSYS;
    return -1;
#else
    struct stat st;
    if (FIO_TIMED(FIO_CALL_FSTAT, fstat(fd, &st)) < 0) return -1;
    *size = (fio_off_t)st.st_size;
    if (S_ISREG(st.st_mode)) return FIO_KIND_REG;
    if (S_ISFIFO(st.st_mode)) return FIO_KIND_PIPE;
    if (S_ISSOCK(st.st_mode)) return FIO_KIND_SOCK;
    return FIO_KIND_OTHER;
#endif
}

static inline fio_off_t fio_lseek(int fd, fio_off_t offset, int whence)
{
    FIO_FAULT("lseek", 0);
#if FIO_WINDOWS
    return _lseeki64(fd, offset, whence);
#else
    return FIO_TIMED(FIO_CALL_LSEEK, lseek(fd, offset, whence));
#endif
}

static inline int fio_close(int fd)
{
#if FIO_WINDOWS
    return _close(fd);
#else
    return close(fd);
#endif
}

/* splice from a positioned source (offset advanced by the kernel) into a pipe. */
static inline fio_ssize_t fio_splice_from(int fd_in, fio_off_t *off_in, int fd_out, size_t len,
                                          unsigned int flags)
{
    FIO_FAULT_LEN("splice", len);
#if FIO_HAVE_SPLICE
    loff_t off = off_in ? (loff_t)*off_in : 0;
    fio_ssize_t n = FIO_TIMED(FIO_CALL_SPLICE,
                              splice(fd_in, off_in ? &off : NULL, fd_out, NULL, len, flags));
    if (off_in && n > 0) *off_in = (fio_off_t)off;
    return n;
#else
    (void)fd_in; (void)off_in; (void)fd_out; (void)len; (void)flags;
    errno = ENOSYS;
    return -1;
#endif
}

/* Grow a pipe towards `size` (F_SETPIPE_SZ); returns its capacity after the attempt. */
static inline long fio_pipe_grow(int fd, long size)
{
#if defined(__linux__)
    if (size > 0) (void)fcntl(fd, F_SETPIPE_SZ, (int)size);
    long cap = fcntl(fd, F_GETPIPE_SZ);
    return cap > 0 ? cap : 65536;
#else
    (void)fd; (void)size;
    return 65536;
#endif
}

/* Set O_NONBLOCK on (1) or off (0); returns the previous state (0/1) or -1. */
static inline int fio_set_nonblock(int fd, int on)
{
#if FIO_WINDOWS
    (void)fd; (void)on;
    errno = ENOSYS;
    return -1;
#else
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    int was = (flags & O_NONBLOCK) != 0;
    if (was != (on != 0) && fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK)) < 0)
        return -1;
    return was;
#endif
}

static inline int fio_shutdown_write(int fd)
{
    FIO_FAULT("shutdown", 0);
#if FIO_WINDOWS
    (void)fd;
    errno = ENOSYS;
    return -1;
#else
    return FIO_TIMED(FIO_CALL_SHUTDOWN, shutdown(fd, SHUT_WR));
#endif
}

#endif /* FASTIO_COMPAT_H */
