/* fastio_mirror.h: a "mirrored" mapping, the same memory mapped twice side by side, so that
 * a ring buffer's readable and writable regions are always contiguous (the second copy
 * continues the first).  Linux: memfd_create; other POSIX systems: an unlinked shm object.
 * Returns NULL with errno set when the platform cannot do it; the ring then uses two segments.
 */
#ifndef FASTIO_MIRROR_H
#define FASTIO_MIRROR_H

#include "fastio_compat.h"

#if FIO_HAVE_MMAP
#include <stdio.h>
#include <stdlib.h>

static inline int fio_mirror_backing_fd(void)
{
#if FIO_HAVE_MEMFD
    return fio_memfd_create("fastio-ring");
#else
    char name[64];
    for (int attempt = 0; attempt < 16; attempt++) {
        snprintf(name, sizeof name, "/fastio-%ld-%d-%d", (long)getpid(), attempt, rand());
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) { shm_unlink(name); return fd; }
        if (errno != EEXIST) return -1;
    }
    return -1;
#endif
}

/* size must be a multiple of the page size. */
static inline void *fio_mirror_map(size_t size)
{
    int fd = fio_mirror_backing_fd();
    if (fd < 0) return NULL;
    if (ftruncate(fd, (off_t)size) != 0) { int e = errno; close(fd); errno = e; return NULL; }
    /* Reserve 2*size of address space, then map the same file into both halves. */
    char *base = mmap(NULL, 2 * size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) { int e = errno; close(fd); errno = e; return NULL; }
    if (mmap(base, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
        mmap(base + size, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int e = errno; munmap(base, 2 * size); close(fd); errno = e; return NULL;
    }
    close(fd);  /* the mappings keep the memory alive */
    return base;
}

static inline int fio_mirror_unmap(void *base, size_t size)
{
    return munmap(base, 2 * size);
}

/* Run-time probe: map a one-page mirror, check that a write shows through, unmap. */
static inline int fio_mirror_supported(void)
{
    size_t page = (size_t)fio_page_size();
    volatile char *p = fio_mirror_map(page);
    if (p == NULL) return 0;
    p[0] = 42;
    int ok = p[page] == 42;
    fio_mirror_unmap((void *)p, page);
    return ok;
}
#else
static inline void *fio_mirror_map(size_t size) { (void)size; errno = ENOSYS; return NULL; }
static inline int fio_mirror_unmap(void *base, size_t size) { (void)base; (void)size; return 0; }
static inline int fio_mirror_supported(void) { return 0; }
#endif

#endif /* FASTIO_MIRROR_H */
