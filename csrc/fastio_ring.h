/* fastio_ring.h: the byte-level routines of the ring buffer that read more clearly in C.
 *
 * The ring is `cap` bytes (a power of two) at `base`; logical position i of the readable data
 * lives at physical offset (head + i) & (cap - 1).  On a mirrored ring the memory continues
 * past `cap` with a second copy, so any region of up to `cap` bytes is contiguous; on a plain
 * ring a region may wrap, and these routines handle the two segments.
 */
#ifndef FASTIO_RING_H
#define FASTIO_RING_H

#include "fastio_compat.h"
#include <stdlib.h>

/* memmem: glibc, musl, macOS and the BSDs have it; a portable loop elsewhere. */
#if defined(__linux__) || defined(__APPLE__) || defined(__FreeBSD__) || defined(__DragonFly__)
#  define fio_memmem memmem
#else
static inline void *fio_memmem(const void *hay, size_t n, const void *needle, size_t m)
{
    const char *h = (const char *)hay, *p = (const char *)needle;
    if (m == 0) return (void *)h;
    while (n >= m) {
        const char *c = (const char *)memchr(h, p[0], n - m + 1);
        if (c == NULL) return NULL;
        if (memcmp(c, p, m) == 0) return (void *)c;
        n -= (size_t)(c - h) + 1;
        h = c + 1;
    }
    return NULL;
}
#endif

/* Copy `n` bytes at logical position `pos` from `head` out of the ring into `dst`. */
static inline void fio_ring_copy_out(const char *base, size_t cap, int mirrored, size_t head,
                                     size_t pos, char *dst, size_t n)
{
    size_t off = (head + pos) & (cap - 1);
    size_t first = (mirrored || off + n <= cap) ? n : cap - off;
    memcpy(dst, base + off, first);
    if (first < n) memcpy(dst + first, base, n - first);
}

/* Copy `n` bytes from `src` into the ring at logical position `tail`. */
static inline void fio_ring_copy_in(char *base, size_t cap, int mirrored, size_t tail,
                                    const char *src, size_t n)
{
    size_t off = tail & (cap - 1);
    size_t first = (mirrored || off + n <= cap) ? n : cap - off;
    memcpy(base + off, src, first);
    if (first < n) memcpy(base, src + first, n - first);
}

/* Logical index of the first `needle` (length m >= 1) in readable positions [start, end) of
 * the ring, or -1.  On a plain ring a match may straddle the wrap: it is found by searching a
 * small window made of the last m-1 bytes before the wrap and the first m-1 after it.
 * Returns -2 when the window cannot be allocated (the caller raises MemoryError). */
static inline long long fio_ring_find(const char *base, size_t cap, int mirrored, size_t head,
                                      size_t start, size_t end, const char *needle, size_t m)
{
    if (end < start || end - start < m) return -1;
    size_t off = (head + start) & (cap - 1);
    size_t span = end - start;
    if (mirrored || off + span <= cap) {
        const char *hit = fio_memmem(base + off, span, needle, m);
        return hit ? (long long)(start + (size_t)(hit - (base + off))) : -1;
    }
    /* The region wraps: logical position `wrap` is physical offset 0. */
    size_t wrap = start + (cap - off);
    const char *hit = fio_memmem(base + off, cap - off, needle, m);
    if (hit) return (long long)(start + (size_t)(hit - (base + off)));
    if (m > 1) {
        /* Matches that start in [max(start, wrap-m+1), wrap) and end after the wrap. */
        size_t lo = wrap - start >= m - 1 ? wrap - (m - 1) : start;
        size_t hi = end - wrap >= m - 1 ? wrap + (m - 1) : end;
        size_t n = hi - lo;
        char stack[512];
        char *window = n <= sizeof stack ? stack : (char *)malloc(n);
        if (window == NULL) return -2;
        fio_ring_copy_out(base, cap, 0, head, lo, window, n);
        const char *w = fio_memmem(window, n, needle, m);
        long long found = w ? (long long)(lo + (size_t)(w - window)) : -1;
        if (window != stack) free(window);
        if (found >= 0) return found;
    }
    hit = fio_memmem(base, end - wrap, needle, m);
    return hit ? (long long)(wrap + (size_t)(hit - base)) : -1;
}

/* Unsigned big- or little-endian integer of `size` (1, 2, 4 or 8) bytes.  One case per size,
 * so the compiler turns each into a load and a byte swap (read_frame decodes a header per
 * frame). */
static inline unsigned long long fio_ring_decode(const unsigned char *p, int size, int big)
{
    unsigned long long v = 0;
    switch (size) {
    case 1:
        return p[0];
    case 2:
        return big ? ((unsigned long long)p[0] << 8) | p[1]
                   : ((unsigned long long)p[1] << 8) | p[0];
    case 4:
        return big ? ((unsigned long long)p[0] << 24) | ((unsigned long long)p[1] << 16)
                         | ((unsigned long long)p[2] << 8) | p[3]
                   : ((unsigned long long)p[3] << 24) | ((unsigned long long)p[2] << 16)
                         | ((unsigned long long)p[1] << 8) | p[0];
    default:
        if (big) {
            for (int i = 0; i < size; i++) v = (v << 8) | p[i];
        } else {
            for (int i = size - 1; i >= 0; i--) v = (v << 8) | p[i];
        }
        return v;
    }
}

/* The `size`-byte length header at logical position 0 of the readable data, decoded in place
 * (through a small copy only where it straddles the wrap of a plain ring). */
static inline unsigned long long fio_ring_frame_length(const char *base, size_t cap, int mirrored,
                                                       size_t head, int size, int big)
{
    size_t off = head & (cap - 1);
    unsigned char tmp[8];
    const unsigned char *p = (const unsigned char *)base + off;
    if (!mirrored && off + (size_t)size > cap) {
        fio_ring_copy_out(base, cap, 0, head, 0, (char *)tmp, (size_t)size);
        p = tmp;
    }
    return fio_ring_decode(p, size, big);
}

#endif /* FASTIO_RING_H */
