"""Benchmark scenarios of ``BatchWriter``: loopback TCP into a draining sink.

- ``batch-write``: one ``write`` per 64-byte message, against ``io.BufferedWriter`` over
  ``sock.makefile('wb', 65536)`` (BatchWriter's own buffer size: the fair baseline), the same
  with the 8 KiB default, and ``sendall`` per message.
- ``batch-writelines``: the whole list in one ``writelines``, against ``b"".join`` +
  ``sendall`` and a C loop that copies the messages into a 64 KiB buffer and writes it.
- ``batch-mixed``: sizes from 16 bytes to 64 KiB (log-uniform), against ``b"".join`` +
  ``sendall`` and ``socket.sendmsg`` in IOV_MAX batches; the counters show that the large
  pieces were never copied. ``writelines`` of the list sends its references in IOV_MAX
  batches as ``sendmsg`` does; ``write`` per piece must flush every ``buffer_size`` bytes
  (the memory bound), which the 1 MiB variant shows the price of.

The sink is a C ``recv`` loop run through ctypes (the GIL released), so the reader costs no
Python time; without a C compiler it is a Python thread.
"""

import ctypes
import os
import random
import socket
import threading

from ._harness import ScenarioResult, Variant, compare, compile_c, scenario, twin_variants

MESSAGE_SIZE = 64
BUFFER_SIZE = 65536  # BatchWriter's default buffer_size
BUFFERED_64K = "io.BufferedWriter(makefile('wb', 65536))"
BUFFERED_8K = "io.BufferedWriter(makefile('wb')), 8 KiB default"

_C_SOURCE = r"""
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <errno.h>

static char sink_buf[1 << 20];

/* Read fd to EOF; returns the bytes read. */
long long fio_bench_drain(int fd)
{
    long long total = 0;
    for (;;) {
        ssize_t r = recv(fd, sink_buf, sizeof sink_buf, 0);
        if (r > 0) { total += r; continue; }
        if (r < 0 && errno == EINTR) continue;
        return total;
    }
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r < 0) { if (errno == EINTR) continue; return -1; }
        p += r; n -= (size_t)r;
    }
    return 0;
}

/* The C reference: copy the messages into a 64 KiB buffer, write it when full. */
long long fio_bench_copy_write(int fd, const char **ptrs, const long *lens, long count)
{
    static char buf[65536];
    size_t used = 0;
    long long total = 0;
    for (long i = 0; i < count; i++) {
        size_t n = (size_t)lens[i];
        if (used + n > sizeof buf) {
            if (write_all(fd, buf, used)) return -1;
            used = 0;
        }
        if (n > sizeof buf) {
            if (write_all(fd, ptrs[i], n)) return -1;
        } else {
            memcpy(buf + used, ptrs[i], n);
            used += n;
        }
        total += (long long)n;
    }
    if (used && write_all(fd, buf, used)) return -1;
    return total;
}
"""

_lib = None


def _c_lib():
    global _lib
    if _lib is None:
        _lib = compile_c(_C_SOURCE, "fastio_bench_batch") or False
        if _lib:
            _lib.fio_bench_drain.argtypes = [ctypes.c_int]
            _lib.fio_bench_drain.restype = ctypes.c_longlong
            _lib.fio_bench_copy_write.argtypes = [
                ctypes.c_int,
                ctypes.POINTER(ctypes.c_char_p),
                ctypes.POINTER(ctypes.c_long),
                ctypes.c_long,
            ]
            _lib.fio_bench_copy_write.restype = ctypes.c_longlong
    return _lib or None


class Link:
    """A loopback TCP connection whose receiving end is drained until ``close()``."""

    def __init__(self):
        with socket.create_server(("127.0.0.1", 0)) as server:
            self.sock = socket.create_connection(server.getsockname())
            self.peer, _ = server.accept()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        lib = _c_lib()
        if lib:
            target = lib.fio_bench_drain
            args = (self.peer.fileno(),)
        else:
            target, args = self._drain_python, ()
        self.thread = threading.Thread(target=target, args=args, daemon=True)
        self.thread.start()

    def _drain_python(self):
        buf = bytearray(1 << 20)
        while self.peer.recv_into(buf):
            pass

    def close(self):
        self.sock.shutdown(socket.SHUT_WR)
        self.thread.join(60)
        self.sock.close()
        self.peer.close()


def _messages(count, distinct=4096, size=MESSAGE_SIZE):
    rng = random.Random(64)
    pool = [rng.randbytes(size) for _ in range(distinct)]
    return [pool[i % distinct] for i in range(count)]


def _mixed(count):
    """Log-uniform sizes from 16 bytes to 64 KiB."""
    rng = random.Random(16)
    blob = rng.randbytes(1 << 17)
    pieces = []
    for _ in range(count):
        size = int(2 ** rng.uniform(4, 16))
        start = rng.randrange(0, len(blob) - size)
        pieces.append(blob[start : start + size])
    return pieces


def _sendmsg_batches(sock, pieces, iov_max):
    """``socket.sendmsg`` in IOV_MAX batches, resuming partial sends (what a careful user
    writes by hand)."""
    for start in range(0, len(pieces), iov_max):
        batch = pieces[start : start + iov_max]
        while batch:
            sent = sock.sendmsg(batch)
            while batch and sent >= len(batch[0]):
                sent -= len(batch[0])
                batch.pop(0)
            if sent:
                batch[0] = memoryview(batch[0])[sent:]


def _iov_max():
    try:
        return os.sysconf("SC_IOV_MAX")
    except (AttributeError, ValueError, OSError):
        return 1024


@scenario("batch-write", "batch")
def write_per_message(full=False):
    count = 2_000_000 if full else 200_000
    msgs = _messages(count)
    link = Link()
    sock = link.sock
    try:

        def make(fio):
            writer = fio.BatchWriter(sock, closefd=False)

            def run():
                write = writer.write
                for m in msgs:
                    write(m)
                writer.flush()

            return run

        # The fair baseline has BatchWriter's own 64 KiB buffer; the 8 KiB default is shown too.
        buffered = sock.makefile("wb", buffering=BUFFER_SIZE)
        buffered_default = sock.makefile("wb")

        def buffered_run(stream):
            def run():
                write = stream.write
                for m in msgs:
                    write(m)
                stream.flush()

            return run

        def run_sendall():
            sendall = sock.sendall
            for m in msgs:
                sendall(m)

        variants = [
            *twin_variants(make),
            Variant(BUFFERED_64K, buffered_run(buffered)),
            Variant(BUFFERED_8K, buffered_run(buffered_default)),
            Variant("sendall per message", run_sendall),
        ]
        results = compare(variants, rounds=5 if full else 3, units=count * MESSAGE_SIZE)
        buffered.close()
        buffered_default.close()
    finally:
        link.close()
    res = ScenarioResult(
        "batch-write",
        f"BatchWriter.write: {count:,} messages of {MESSAGE_SIZE} B, loopback TCP",
        results,
        per_op=count,
    )
    if "fastio (c)" in results:
        c = results["fastio (c)"].median
        for label, target in (
            (BUFFERED_64K, 2.0),
            (BUFFERED_8K, 3.0),
            ("sendall per message", 15.0),
        ):
            ratio = results[label].median / c
            verdict = "met" if ratio >= target else "NOT met"
            res.notes.append(f"target >= {target:g}x faster than {label}: {ratio:.2f}x ({verdict})")
    return res


@scenario("batch-writelines", "batch")
def writelines_list(full=False):
    count = 2_000_000 if full else 200_000
    msgs = _messages(count)
    link = Link()
    sock = link.sock
    lib = _c_lib()
    try:

        def make(fio):
            writer = fio.BatchWriter(sock, closefd=False)

            def run():
                writer.writelines(msgs)
                writer.flush()

            return run

        def run_join():
            sock.sendall(b"".join(msgs))

        variants = [*twin_variants(make), Variant('b"".join + sendall', run_join)]
        if lib:
            ptrs = (ctypes.c_char_p * count)(*msgs)
            lens = (ctypes.c_long * count)(*map(len, msgs))
            fd = sock.fileno()

            def run_c():
                if lib.fio_bench_copy_write(fd, ptrs, lens, count) < 0:
                    raise OSError(ctypes.get_errno(), "C reference write failed")

            variants.append(Variant("C copy + write(64 KiB) loop", run_c, kind="c"))
        results = compare(variants, rounds=5 if full else 3, units=count * MESSAGE_SIZE)
    finally:
        link.close()
    res = ScenarioResult(
        "batch-writelines",
        f"BatchWriter.writelines: a list of {count:,} messages of {MESSAGE_SIZE} B",
        results,
        per_op=count,
    )
    if lib and "fastio (c)" in results:
        ratio = results["fastio (c)"].median / results["C copy + write(64 KiB) loop"].median
        verdict = "met" if ratio <= 1.5 else "NOT met"
        res.notes.append(f"target within 1.5x of the C loop: {ratio:.2f}x its time ({verdict})")
    return res


@scenario("batch-mixed", "batch")
def mixed_sizes(full=False):
    count = 20_000 if full else 4_000
    pieces = _mixed(count)
    total = sum(map(len, pieces))
    iov_max = _iov_max()
    link = Link()
    sock = link.sock
    seen = {}
    try:

        def make(fio):
            writer = fio.BatchWriter(sock, closefd=False)

            def run():
                writer.writelines(pieces)
                writer.flush()
                seen[fio.IMPLEMENTATION] = writer.stats

            return run

        def make_loop(fio, buffer_size=65536):
            writer = fio.BatchWriter(sock, closefd=False, buffer_size=buffer_size)

            def run():
                write = writer.write
                for p in pieces:
                    write(p)
                writer.flush()

            return run

        variants = twin_variants(make)
        from fastio import _impl

        if _impl.native_available():
            native = _impl.twin("c")
            variants.append(Variant("fastio (c) write per piece", make_loop(native), "fastio"))
            variants.append(
                Variant(
                    "fastio (c) write, 1 MiB buffer",
                    make_loop(native, 1 << 20),
                    "fastio",
                )
            )
        variants += [
            Variant('b"".join + sendall', lambda: sock.sendall(b"".join(pieces))),
            Variant(
                "sendmsg in IOV_MAX batches",
                lambda: _sendmsg_batches(sock, list(pieces), iov_max),
            ),
        ]
        results = compare(variants, rounds=7 if full else 3, units=total)
    finally:
        link.close()
    res = ScenarioResult(
        "batch-mixed",
        f"BatchWriter: {count:,} pieces of 16 B..64 KiB (log-uniform, {total / 2**20:.0f} MiB)",
        results,
        per_op=count,
    )
    stdlib = min(results['b"".join + sendall'].median, results["sendmsg in IOV_MAX batches"].median)
    for label in (
        "fastio (c)",
        "fastio (c) write per piece",
        "fastio (c) write, 1 MiB buffer",
    ):
        if label in results:
            ratio = stdlib / results[label].median
            verdict = "met" if ratio >= 1.0 else "NOT met"
            res.notes.append(
                f"target never slower than the better stdlib way ({label}): "
                f"{ratio:.2f}x ({verdict})"
            )
    small = sum(len(p) for p in pieces if len(p) < 1024)
    for impl, st in seen.items():
        rounds = st["bytes_sent"] // total if total else 0
        res.notes.append(
            f"counters ({impl}), per round: copied {st['bytes_copied'] // max(rounds, 1):,} B "
            f"(= the pieces under 1 KiB: {small:,} B), by reference "
            f"{st['bytes_referenced'] // max(rounds, 1):,} B: large pieces never copied"
        )
    return res
