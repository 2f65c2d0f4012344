# Declarations of csrc/fastio_compat.h for the native twins, and the few inline helpers every
# native loop shares (signal checks with progress). Platform #ifdefs stay in the header.

from libc.stddef cimport size_t

cdef extern from "fastio_compat.h" nogil:
    ctypedef long fio_ssize_t
    ctypedef long long fio_off_t

    struct iovec:
        void *iov_base
        size_t iov_len

    struct pollfd:
        int fd
        short events
        short revents

    const int FIO_HAVE_SENDFILE
    const int FIO_HAVE_SPLICE
    const int FIO_HAVE_COPY_FILE_RANGE
    const int FIO_HAVE_WRITEV
    const int FIO_HAVE_POLL
    const int FIO_HAVE_MMAP
    const int FIO_HAVE_MEMFD
    const int FIO_HAVE_ATOMICS
    const int FIO_IOV_MAX_STATIC

    const unsigned int SPLICE_F_MOVE
    const unsigned int SPLICE_F_NONBLOCK
    const unsigned int SPLICE_F_MORE
    const int F_SETPIPE_SZ
    const int F_GETPIPE_SZ
    const int MSG_NOSIGNAL
    const int MSG_DONTWAIT
    const short POLLIN
    const short POLLOUT
    const short POLLERR
    const short POLLHUP
    const short POLLNVAL

    ctypedef size_t fio_atomic_size_t
    size_t fio_load_acquire(fio_atomic_size_t *p)
    void fio_store_release(fio_atomic_size_t *p, size_t v)
    size_t fio_load_relaxed(fio_atomic_size_t *p)

    fio_ssize_t fio_sendfile(int out_fd, int in_fd, fio_off_t *offset, size_t count)
    fio_ssize_t fio_splice(int fd_in, int fd_out, size_t len, unsigned int flags)
    fio_ssize_t fio_copy_file_range(int fd_in, fio_off_t *off_in, int fd_out,
                                    fio_off_t *off_out, size_t len)
    fio_ssize_t fio_read(int fd, void *buf, size_t len)
    fio_ssize_t fio_write(int fd, const void *buf, size_t len)
    fio_ssize_t fio_pread(int fd, void *buf, size_t len, fio_off_t offset)
    fio_ssize_t fio_readv(int fd, const iovec *iov, int n)
    fio_ssize_t fio_writev(int fd, const iovec *iov, int n)
    fio_ssize_t fio_sendmsg(int fd, const iovec *iov, int n)
    fio_ssize_t fio_recv(int fd, void *buf, size_t len, int flags)
    fio_ssize_t fio_send(int fd, const void *buf, size_t len, int flags)
    int fio_poll(pollfd *fds, unsigned long n, int timeout_ms)
    int fio_pipe(int fds[2])
    int fio_memfd_create(const char *name)
    long fio_iov_max()
    long fio_page_size()
    double fio_monotonic()

# System call timing for fastio.profile() (csrc/fastio_profile.h). A native twin calls
# ``fio_profile_attach(FIO_PRIM_<NAME>)`` once at module level; its fio_* calls are then timed
# under that primitive inside profile(), at the cost of one untaken branch outside it.
cdef extern from "fastio_profile.h":
    enum:
        FIO_PRIM_SYS
        FIO_PRIM_TRANSFER
        FIO_PRIM_BATCH
        FIO_PRIM_RING
        FIO_PRIM_POOL
        FIO_PRIM_BENCH
    const int FIO_HAVE_PROFILE
    int fio_profile_attach(int primitive) except -1

cdef extern from "fastio_mirror.h" nogil:
    void *fio_mirror_map(size_t size)
    int fio_mirror_unmap(void *base, size_t size)
    int fio_mirror_supported()

# ---- transfer (sendfile, splice, copy, relay): the extra calls of csrc/fastio_compat.h ----
cdef extern from "fastio_compat.h" nogil:
    const int FIO_KIND_OTHER
    const int FIO_KIND_REG
    const int FIO_KIND_PIPE
    const int FIO_KIND_SOCK
    const int MSG_PEEK
    int fio_fstat_kind(int fd, fio_off_t *size)
    fio_off_t fio_lseek(int fd, fio_off_t offset, int whence)
    int fio_close(int fd)
    fio_ssize_t fio_splice_from(int fd_in, fio_off_t *off_in, int fd_out, size_t len,
                                unsigned int flags)
    long fio_pipe_grow(int fd, long size)
    int fio_set_nonblock(int fd, int on)
    int fio_shutdown_write(int fd)

from cpython.exc cimport PyErr_CheckSignals
from fastio._policy cimport with_progress


cdef inline int run_signal_handlers(long long transferred) except -1:
    """After EINTR (with the GIL held): run Python's handlers; one that raises ends the call
    with the bytes already moved attached (PEP 475)."""
    try:
        PyErr_CheckSignals()
    except BaseException as exc:
        raise with_progress(exc, transferred)
    return 0


# --- pool (fastio/_pool_c.pyx) ---
cdef extern from "fastio_compat.h" nogil:
    const int MSG_PEEK
    double fio_monotonic_coarse()
# ---- ring (fastio/_ring_c.pyx): byte routines of csrc/fastio_ring.h ----
cdef extern from "fastio_ring.h" nogil:
    void fio_ring_copy_out(const char *base, size_t cap, int mirrored, size_t head,
                           size_t pos, char *dst, size_t n)
    void fio_ring_copy_in(char *base, size_t cap, int mirrored, size_t tail,
                          const char *src, size_t n)
    long long fio_ring_find(const char *base, size_t cap, int mirrored, size_t head,
                            size_t start, size_t end, const char *needle, size_t m)
    unsigned long long fio_ring_decode(const unsigned char *p, int size, int big)
    unsigned long long fio_ring_frame_length(const char *base, size_t cap, int mirrored,
                                             size_t head, int size, int big)
