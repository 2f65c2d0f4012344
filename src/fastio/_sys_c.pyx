"""Native probe of the platform's fast paths: what this process can really call."""

from libc.errno cimport ENOSYS, errno

from fastio._compat cimport (
    FIO_HAVE_ATOMICS,
    FIO_HAVE_COPY_FILE_RANGE,
    FIO_HAVE_MEMFD,
    FIO_HAVE_POLL,
    FIO_HAVE_SENDFILE,
    FIO_HAVE_SPLICE,
    FIO_HAVE_WRITEV,
    FIO_PRIM_SYS,
    fio_copy_file_range,
    fio_iov_max,
    fio_mirror_supported,
    fio_off_t,
    fio_page_size,
    fio_profile_attach,
    fio_sendfile,
    fio_splice,
)

__all__ = ["probe"]

# Inside fastio.profile(), this module's fio_* calls are timed as primitive "sys".
fio_profile_attach(FIO_PRIM_SYS)


cdef bint _syscall_exists(int have, int which):
    """Call with invalid fds: EBADF proves the kernel knows the call, ENOSYS that it does not."""
    cdef fio_off_t offset = 0
    cdef long rc
    if not have:
        return False
    if which == 0:
        rc = fio_sendfile(-1, -1, &offset, 1)
    elif which == 1:
        rc = fio_splice(-1, -1, 1, 0)
    else:
        rc = fio_copy_file_range(-1, NULL, -1, NULL, 1)
    return rc != -1 or errno != ENOSYS


def probe():
    """Fast paths found at run time by the native layer."""
    return {
        "sendfile": _syscall_exists(FIO_HAVE_SENDFILE, 0),
        "splice": _syscall_exists(FIO_HAVE_SPLICE, 1),
        "copy_file_range": _syscall_exists(FIO_HAVE_COPY_FILE_RANGE, 2),
        "writev": bool(FIO_HAVE_WRITEV),
        "iov_max": fio_iov_max(),
        "poll": bool(FIO_HAVE_POLL),
        "memfd": bool(FIO_HAVE_MEMFD),
        "mirrored_ring": bool(fio_mirror_supported()),
        "atomics": bool(FIO_HAVE_ATOMICS),
        "page_size": fio_page_size(),
    }
