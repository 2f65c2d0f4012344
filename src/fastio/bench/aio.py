"""asyncio scenarios (``fastio.aio``): small-file sends on one connection, 100 relayed
connections, length-prefixed frames, pool checkouts, each against the asyncio way a user
would otherwise write (``loop.sock_sendfile``, a streams relay, ``StreamReader.readexactly``
pairs, an ``asyncio.Queue`` pool), on the default asyncio loop.

Peers run in other processes (the transfer scenarios' draining sink, a source process), so
this process's time is the variant's own. ``full=True`` gives the issue's sizes (20,000 sends,
1 GiB relayed, 1,000,000 frames); the quick form takes a few seconds.
"""

import asyncio
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading

from ._harness import ScenarioResult, Variant, compare, scenario, twin_variants
from ._peers import SINK_SOURCE, MiB, Sink, cpu_line, make_file, target_note

__all__ = ["frames", "pool_pairs", "relay_many", "sendfile_small"]


def _aio(twin):
    from fastio import aio

    return aio._aio_for(twin)


def _run(coro_fn):
    """One round: a fresh default loop running ``coro_fn()``."""

    def run():
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(coro_fn())
        finally:
            loop.close()

    return run


@scenario("aio-sendfile-4k", "aio")
def sendfile_small(full=False):
    """Many sends of a 4 KiB file over one non-blocking loopback TCP connection."""
    n = 20_000 if full else 2_000
    rounds = 7 if full else 3
    directory = tempfile.mkdtemp(prefix="fastio-bench-")
    sink = Sink()
    sock = sink.connect()
    sock.setblocking(False)
    try:
        path = make_file(directory, "4k.bin", 4096)
        f = open(path, "rb")

        def with_fastio(twin):
            send = _aio(twin).sendfile

            async def main():
                for _ in range(n):
                    await send(sock, f, 0)

            return _run(main)

        async def with_loop():
            loop = asyncio.get_running_loop()
            for _ in range(n):
                await loop.sock_sendfile(sock, f, 0)

        variants = [
            *twin_variants(with_fastio),
            Variant("loop.sock_sendfile", _run(with_loop)),
        ]
        results = compare(variants, rounds=rounds, units=n * 4096)
        f.close()
    finally:
        sock.close()
        sink.close()
        shutil.rmtree(directory, ignore_errors=True)
    result = ScenarioResult(
        "aio-sendfile-4k",
        f"aio: {n} sends of a 4 KiB file on one connection",
        results,
        per_op=n,
    )
    result.notes.append(
        target_note(
            results, "fastio (c)", "loop.sock_sendfile", 3.0, "aio.sendfile vs sock_sendfile"
        )
    )
    return result


# A source process: on each line "n size" from stdin it opens n connections to the port given
# on its command line, sends ``size`` bytes of a cached file on each (one thread each,
# blocking sendfile), passes the EOF on, waits for the peer's EOF, closes, says "done".
_SOURCE = r"""
import os, socket, sys, threading
port, path = int(sys.argv[1]), sys.argv[2]
fd = os.open(path, os.O_RDONLY)
file_size = os.fstat(fd).st_size
def one(size):
    with socket.create_connection(("127.0.0.1", port)) as s:
        left = size
        while left:
            left -= os.sendfile(s.fileno(), fd, (size - left) % file_size,
                                min(left, file_size - (size - left) % file_size))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
for line in sys.stdin:
    n, size = map(int, line.split())
    threads = [threading.Thread(target=one, args=(size,)) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("done", flush=True)
"""


class _WideSink(Sink):
    """The transfer scenarios' sink with a listen backlog for 100 connections at once (a
    full backlog drops SYNs, and each drop costs a connect a one-second retransmit)."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", SINK_SOURCE.replace("backlog=64", "backlog=1024")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline())


class _Source:
    def __init__(self, path):
        self.server = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SOURCE, str(self.server.getsockname()[1]), path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def start(self, n, size):
        self.process.stdin.write(f"{n} {size}\n")
        self.process.stdin.flush()
        return [self.server.accept()[0] for _ in range(n)]

    def wait(self):
        assert self.process.stdout.readline().strip() == "done"

    def close(self):
        self.process.stdin.close()
        self.process.wait()
        self.process.stdout.close()
        self.server.close()


async def _streams_pipe(reader, writer):
    while True:
        data = await reader.read(65536)
        if not data:
            break
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _streams_relay(a, b):
    ra, wa = await asyncio.open_connection(sock=a)
    rb, wb = await asyncio.open_connection(sock=b)
    try:
        await asyncio.gather(_streams_pipe(ra, wb), _streams_pipe(rb, wa))
    finally:
        wa.close()
        wb.close()


@scenario("aio-relay-100", "aio")
def relay_many(full=False):
    """100 relayed connections at once: source process -> [relay] -> draining sink."""
    conns = 100
    total = 1 << 30 if full else 64 * MiB
    size = total // conns
    rounds = 3
    directory = tempfile.mkdtemp(prefix="fastio-bench-")
    path = make_file(directory, "src.bin", 16 * MiB)
    source = _Source(path)
    sink = _WideSink()

    def make(relay_pair):
        def run():
            accepted = source.start(conns, size)
            outgoing = [sink.connect() for _ in range(conns)]
            for s in (*accepted, *outgoing):
                s.setblocking(False)

            async def main():
                await asyncio.gather(*(relay_pair(a, b) for a, b in zip(accepted, outgoing)))

            loop = asyncio.new_event_loop()
            try:
                loop.run_until_complete(main())
            finally:
                loop.close()
                for s in (*accepted, *outgoing):
                    s.close()
            source.wait()
            return size * conns

        return run

    def with_fastio(twin):
        relay = _aio(twin).relay
        return make(relay)

    try:
        variants = [
            *twin_variants(with_fastio),
            Variant("asyncio streams relay", make(_streams_relay)),
        ]
        results = compare(variants, rounds=rounds, warmup=0 if full else 1, units=size * conns)
    finally:
        source.close()
        sink.close()
        shutil.rmtree(directory, ignore_errors=True)
    result = ScenarioResult(
        "aio-relay-100",
        f"aio: {conns} relayed connections, {total // MiB} MiB in total",
        results,
    )
    result.notes += [
        target_note(
            results, "fastio (c)", "asyncio streams relay", 2.0, "aio.relay vs streams relay"
        ),
        target_note(
            {label: _CpuOnly(r) for label, r in results.items()},
            "fastio (c)",
            "asyncio streams relay",
            2.0,
            "CPU time of this process (the relay's own cost; the peers run elsewhere)",
        ),
        cpu_line(results),
    ]
    return result


class _CpuOnly:
    """A result whose median is its CPU time (for a ratio of CPU costs)."""

    def __init__(self, result):
        self.median = statistics.median(result.cpu_times)


@scenario("aio-frames", "aio")
def frames(full=False):
    """Length-prefixed frames (4-byte header, 20 to 60 bytes of payload) from a writer
    thread (blocking sendfile of a cached file: the GIL is free while it runs), read with
    ``aio.Reader.read_frame`` or ``StreamReader.readexactly`` pairs."""
    n = 1_000_000 if full else 100_000
    rounds = 3
    directory = tempfile.mkdtemp(prefix="fastio-bench-")
    path = os.path.join(directory, "frames.bin")
    with open(path, "wb") as f:
        block = b"".join(
            struct.pack("!I", 20 + i % 41) + bytes([i % 256]) * (20 + i % 41) for i in range(1000)
        )
        for _ in range(n // 1000):
            f.write(block)

    def stream(consume):
        def run():
            a, b = socket.socketpair()

            def send():
                with b, open(path, "rb") as f:
                    b.sendfile(f)

            writer = threading.Thread(target=send)
            writer.start()
            a.setblocking(False)
            loop = asyncio.new_event_loop()
            try:
                count = loop.run_until_complete(consume(a))
            finally:
                loop.close()
                a.close()
                writer.join()
            assert count == n, count
            return n

        return run

    def with_fastio(twin):
        Reader = _aio(twin).Reader

        async def consume(sock):
            reader = Reader(sock, capacity=1 << 18)
            count = 0
            read_frame = reader.read_frame
            incomplete = twin.IncompleteReadError
            while True:
                try:
                    await read_frame()
                except incomplete:
                    break
                count += 1
            reader.close()
            return count

        return stream(consume)

    async def stream_reader(sock):
        reader, writer = await asyncio.open_connection(sock=sock, limit=1 << 18)
        count = 0
        unpack = struct.Struct("!I").unpack
        readexactly = reader.readexactly
        while True:
            try:
                (length,) = unpack(await readexactly(4))
            except asyncio.IncompleteReadError:
                break
            await readexactly(length)
            count += 1
        writer.close()
        return count

    try:
        variants = [
            *twin_variants(with_fastio),
            Variant("StreamReader.readexactly pairs", stream(stream_reader)),
        ]
        results = compare(variants, rounds=rounds, warmup=0, units=n, unit_name="frames")
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    result = ScenarioResult("aio-frames", f"aio: {n} length-prefixed frames", results, per_op=n)
    result.notes.append(
        target_note(
            results,
            "fastio (c)",
            "StreamReader.readexactly pairs",
            3.0,
            "aio.Reader.read_frame vs readexactly pairs",
        )
    )
    return result


class QueuePool:
    """The usual asyncio pool: an ``asyncio.Queue`` of idle connections, made on demand up to
    ``max_size``."""

    def __init__(self, factory, max_size):
        self.factory = factory
        self.max_size = max_size
        self.queue = asyncio.Queue()
        self.open = 0

    async def acquire(self):
        if self.queue.empty() and self.open < self.max_size:
            self.open += 1
            return await self.factory()
        return await self.queue.get()

    async def release(self, conn):
        self.queue.put_nowait(conn)


class _Conn:
    def close(self):
        pass


async def _make_conn():
    return _Conn()


@scenario("aio-pool", "aio")
def pool_pairs(full=False):
    """One coroutine: acquire + release of an idle connection, per pair."""
    n = 200_000 if full else 30_000
    rounds = 7 if full else 5

    def pairs(make_pool):
        async def main():
            pool = make_pool()
            acquire, release = pool.acquire, pool.release
            for _ in range(n):
                conn = await acquire()
                await release(conn)
            return n

        return _run(main)

    def with_fastio(twin):
        Pool = _aio(twin).Pool
        return pairs(lambda: Pool(_make_conn, max_size=4, max_lifetime=3600))

    variants = [
        *twin_variants(with_fastio),
        Variant("asyncio.Queue pool", pairs(lambda: QueuePool(_make_conn, 4))),
    ]
    results = compare(variants, rounds=rounds, units=n, unit_name="pairs")
    result = ScenarioResult(
        "aio-pool", f"aio: pool acquire + release ({n} pairs per round)", results, per_op=n
    )
    result.notes.append(
        target_note(results, "fastio (c)", "asyncio.Queue pool", 3.0, "aio.Pool vs asyncio.Queue")
    )
    return result
