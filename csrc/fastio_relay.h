/* fastio_relay.h: the whole full-duplex relay loop of fastio.relay, in C, run without the GIL.
 *
 * Each direction moves bytes from its source socket to its destination socket either through
 * a kernel pipe (splice: the bytes never reach user space) or through a memory buffer
 * (recv/send), chosen per direction: a direction starts with splice when it was given a pipe
 * and switches to its buffer if the kernel refuses splice for these sockets before any byte
 * moved. Both sockets must be non-blocking (the caller sets that and restores it). An EOF is
 * passed on with shutdown(SHUT_WR) once everything read before it was delivered (half-close);
 * the loop ends when both directions have done so.
 *
 * r->stop_fd (-1: none) stops the relay when it becomes readable (asyncio's cancellation: the
 * loop runs in a thread of its own and the awaiting coroutine closes the pipe's write end); it
 * is polled with the sockets and, while bytes keep moving, every FIO_RELAY_STOP_EVERY passes.
 * After a stop, fio_relay_settle() delivers what the destinations take at once; what a
 * direction still holds is fio_relay_held() bytes, which fio_relay_take() copies out.
 *
 * fio_relay_run() returns 0 when done, -1 with r->err set (EINTR: run the signal handlers and
 * call again; the state is kept), -2 when nothing moved for idle_ms milliseconds, or -3 when
 * stop_fd became readable (the state is kept: every byte counted in moved was delivered), or
 * -4 when bytes kept flowing for check_ms milliseconds: a loop that never waits gets no EINTR,
 * so the caller takes the GIL, runs the signal handlers and calls again.
 */
#ifndef FASTIO_RELAY_H
#define FASTIO_RELAY_H

#include "fastio_compat.h"

#if !FIO_WINDOWS

typedef struct {
    int src, dst;
    int pipe_r, pipe_w;      /* -1 -1: buffer mode */
    size_t pipe_cap, held;   /* splice mode: bytes sitting in the pipe */
    char *buf;               /* buffer mode */
    size_t buf_cap, start, end;
    int eof, shut;
    /* Readiness as last seen: set after EAGAIN or a short result (the socket was emptied or
     * filled), cleared by poll. Saves the failing call a level-triggered retry would cost. */
    int src_wait, dst_wait;
    /* The pipe refused more although bytes < capacity: its slots hold partial pages (socket
     * fragments). Only draining makes room, so the source is not polled meanwhile. */
    int pipe_full;
    unsigned long long moved;
} fio_relay_dir;

typedef struct {
    fio_relay_dir d[2];
    int idle_ms;             /* < 0: no idle timeout */
    int stop_fd;             /* < 0: none; readable: stop (-3) */
    double last_progress;
    int check_ms;            /* < 0: never return -4 (no signal handler runs in this thread) */
    double last_check;
    int err;
    /* counters, merged into the module's by the caller (with the GIL) */
    unsigned long long syscalls, would_block, eintr, partial, fallbacks;
    unsigned long long splice_bytes, loop_bytes;
} fio_relay;

#define FIO_RELAY_SPLICE_FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)
#define FIO_RELAY_STOP_EVERY 16

static inline int fio_relay_fallback_errno(int e)
{
    return e == EINVAL || e == ENOSYS || e == EOPNOTSUPP || e == ENOTSOCK || e == EXDEV
#if defined(ENOTSUP) && ENOTSUP != EOPNOTSUPP
        || e == ENOTSUP
#endif
        ;
}

static inline int fio_relay_again(int e)
{
    return e == EAGAIN || e == EWOULDBLOCK;
}

/* One pass over one direction: 1 if bytes moved (or EOF passed on), 0 if stuck, -1 error.
 * *want_src / *want_dst collect the poll events this direction waits for. */
static int fio_relay_step(fio_relay *r, fio_relay_dir *d, short *want_src, short *want_dst)
{
    int progress = 0;
    fio_ssize_t n;

    if (d->shut) return 0;
    /* fill: source -> pipe or buffer */
    if (!d->eof && d->src_wait) {
        /* wait for data only while there is room for it (else poll would spin) */
        if (d->pipe_r >= 0 ? d->held < d->pipe_cap && !d->pipe_full : d->end < d->buf_cap)
            *want_src |= POLLIN;
    } else if (!d->eof) {
        if (d->pipe_r >= 0) {
            if (d->held < d->pipe_cap && !d->pipe_full) {
                size_t room = d->pipe_cap - d->held;
                n = fio_splice(d->src, d->pipe_w, room, FIO_RELAY_SPLICE_FLAGS);
                r->syscalls++;
                if (n > 0) {
                    d->held += (size_t)n; progress = 1;
                    if ((size_t)n < room) { d->src_wait = 1; *want_src |= POLLIN; }
                }
                else if (n == 0) { d->eof = 1; progress = 1; }
                else if (fio_relay_again(errno) && d->held > 0) {
                    r->would_block++; d->pipe_full = 1;  /* see pipe_full */
                }
                else if (fio_relay_again(errno)) {
                    r->would_block++; d->src_wait = 1; *want_src |= POLLIN;
                }
                else if (fio_relay_fallback_errno(errno) && d->moved == 0 && d->held == 0) {
                    /* the kernel refuses splice here: this direction uses its buffer */
                    r->fallbacks++;
                    d->pipe_r = -1;
                    return 1;
                }
                else { r->err = errno; return -1; }
            }
        } else if (d->end < d->buf_cap) {
            size_t room = d->buf_cap - d->end;
            n = fio_recv(d->src, d->buf + d->end, room, MSG_DONTWAIT);
            r->syscalls++;
            if (n > 0) {
                d->end += (size_t)n; progress = 1;
                if ((size_t)n < room) { d->src_wait = 1; *want_src |= POLLIN; }
            }
            else if (n == 0) { d->eof = 1; progress = 1; }
            else if (fio_relay_again(errno)) {
                r->would_block++; d->src_wait = 1; *want_src |= POLLIN;
            }
            else { r->err = errno; return -1; }
        }
    }
    /* drain: pipe or buffer -> destination */
    if (d->dst_wait) {
        if (d->held > 0 || d->end > d->start) *want_dst |= POLLOUT;
    } else if (d->pipe_r >= 0) {
        if (d->held > 0) {
            n = fio_splice(d->pipe_r, d->dst, d->held, FIO_RELAY_SPLICE_FLAGS);
            r->syscalls++;
            if (n > 0) {
                if ((size_t)n < d->held) {
                    r->partial++; d->dst_wait = 1; *want_dst |= POLLOUT;
                }
                d->held -= (size_t)n; d->moved += (unsigned long long)n;
                r->splice_bytes += (unsigned long long)n; progress = 1;
                d->pipe_full = 0;
            }
            else if (n < 0 && fio_relay_again(errno)) {
                r->would_block++; d->dst_wait = 1; *want_dst |= POLLOUT;
            }
            else if (n < 0) { r->err = errno; return -1; }
        }
    } else if (d->end > d->start) {
        n = fio_send(d->dst, d->buf + d->start, d->end - d->start, MSG_DONTWAIT);
        r->syscalls++;
        if (n > 0) {
            if ((size_t)n < d->end - d->start) {
                r->partial++; d->dst_wait = 1; *want_dst |= POLLOUT;
            }
            d->start += (size_t)n; d->moved += (unsigned long long)n;
            r->loop_bytes += (unsigned long long)n; progress = 1;
            if (d->start == d->end) d->start = d->end = 0;
        }
        else if (n < 0 && fio_relay_again(errno)) {
            r->would_block++; d->dst_wait = 1; *want_dst |= POLLOUT;
        }
        else if (n < 0) { r->err = errno; return -1; }
    }
    /* pass the EOF on once everything before it was delivered */
    if (d->eof && d->held == 0 && d->start == d->end) {
        if (fio_shutdown_write(d->dst) < 0 && errno != ENOTCONN) { r->err = errno; return -1; }
        d->shut = 1;
        progress = 1;
    }
    return progress;
}

static int fio_relay_stopped(fio_relay *r)
{
    struct pollfd p;
    p.fd = r->stop_fd;
    p.events = POLLIN;
    p.revents = 0;
    r->syscalls++;
    return fio_poll(&p, 1, 0) > 0;
}

static int fio_relay_run(fio_relay *r)
{
    unsigned passes = 0;
    for (;;) {
        short want[2][2] = {{0, 0}, {0, 0}};  /* [direction][0 src, 1 dst] */
        int progress = 0, i;
        if (r->d[0].shut && r->d[1].shut) return 0;
        if (r->stop_fd >= 0 && ++passes % FIO_RELAY_STOP_EVERY == 0 && fio_relay_stopped(r))
            return -3;
        for (i = 0; i < 2; i++) {
            int rc = fio_relay_step(r, &r->d[i], &want[i][0], &want[i][1]);
            if (rc < 0) {
                if (r->err == EINTR) r->eintr++;
                return -1;
            }
            progress |= rc;
        }
        if (progress) {
            if (r->idle_ms >= 0) r->last_progress = fio_monotonic();
            if (r->check_ms >= 0) {
                double now = fio_monotonic_coarse();
                if (now - r->last_check >= r->check_ms / 1000.0) {
                    r->last_check = now;
                    return -4;
                }
            }
            continue;
        }
        /* nothing moved: wait. Direction 0 reads d[0].src (= a) and writes a's peer. */
        struct pollfd fds[3];
        fds[0].fd = r->d[0].src;
        fds[0].events = (short)(want[0][0] | want[1][1]);
        fds[1].fd = r->d[1].src;
        fds[1].events = (short)(want[1][0] | want[0][1]);
        fds[0].revents = fds[1].revents = 0;
        if (fds[0].events == 0) fds[0].fd = -1;
        if (fds[1].events == 0) fds[1].fd = -1;
        fds[2].fd = r->stop_fd;
        fds[2].events = POLLIN;
        fds[2].revents = 0;
        int timeout_ms = -1;
        if (r->idle_ms >= 0) {
            double left = r->last_progress + r->idle_ms / 1000.0 - fio_monotonic();
            if (left <= 0.0) return -2;
            timeout_ms = (int)(left * 1000.0 + 0.999);
            if (timeout_ms < 1) timeout_ms = 1;
        }
        int rc = fio_poll(fds, r->stop_fd >= 0 ? 3 : 2, timeout_ms);
        if (rc < 0) {
            r->err = errno;
            if (r->err == EINTR) r->eintr++;
            return -1;
        }
        if (rc == 0 && r->idle_ms >= 0
            && fio_monotonic() - r->last_progress >= r->idle_ms / 1000.0)
            return -2;
        if (r->stop_fd >= 0 && fds[2].revents) return -3;
        if ((fds[0].revents | fds[1].revents) & POLLNVAL) { r->err = EBADF; return -1; }
        /* fds[0] is a = d[0].src = d[1].dst; fds[1] is b = d[1].src = d[0].dst */
        {
            short ra = fds[0].revents, rb = fds[1].revents;
            if (ra & (POLLIN | POLLHUP | POLLERR)) r->d[0].src_wait = 0;
            if (ra & (POLLOUT | POLLHUP | POLLERR)) r->d[1].dst_wait = 0;
            if (rb & (POLLIN | POLLHUP | POLLERR)) r->d[1].src_wait = 0;
            if (rb & (POLLOUT | POLLHUP | POLLERR)) r->d[0].dst_wait = 0;
        }
    }
}

/* Bytes a direction took from its source and has not delivered (in its pipe or buffer). */
static inline size_t fio_relay_held(const fio_relay_dir *d)
{
    return d->pipe_r >= 0 ? d->held : d->end - d->start;
}

/* After a stop: deliver what each destination takes without waiting (errors end it quietly:
 * the bytes stay held). */
static void fio_relay_settle(fio_relay *r)
{
    int i;
    for (i = 0; i < 2; i++) {
        fio_relay_dir *d = &r->d[i];
        while (fio_relay_held(d) > 0) {
            fio_ssize_t n;
            if (d->pipe_r >= 0)
                n = fio_splice(d->pipe_r, d->dst, d->held, FIO_RELAY_SPLICE_FLAGS);
            else
                n = fio_send(d->dst, d->buf + d->start, d->end - d->start, MSG_DONTWAIT);
            r->syscalls++;
            if (n < 0 && errno == EINTR) { r->eintr++; continue; }
            if (n <= 0) break;
            if (d->pipe_r >= 0) { d->held -= (size_t)n; r->splice_bytes += (unsigned long long)n; }
            else { d->start += (size_t)n; r->loop_bytes += (unsigned long long)n; }
            d->moved += (unsigned long long)n;
        }
    }
}

/* Copy the n = fio_relay_held(d) bytes a direction holds to out (emptying its pipe). Returns 0,
 * or -1 with errno set. */
static int fio_relay_take(fio_relay_dir *d, char *out, size_t n)
{
    if (d->pipe_r < 0) {
        memcpy(out, d->buf + d->start, n);
        d->start = d->end = 0;
        return 0;
    }
    while (n > 0) {
        fio_ssize_t k = fio_read(d->pipe_r, out, n);
        /* the bytes are in the pipe: a "would block" cannot be, and is retried */
        if (k < 0 && (errno == EINTR || fio_relay_again(errno))) continue;
        if (k <= 0) { if (k == 0) errno = EIO; return -1; }
        out += k; n -= (size_t)k; d->held -= (size_t)k;
    }
    return 0;
}

#endif /* !FIO_WINDOWS */
#endif /* FASTIO_RELAY_H */
