"""What the scenarios measure against: a draining sink process, data files, and the notes
that compare two variants' medians. Shared by the transfer and aio scenarios."""

import os
import socket
import statistics
import subprocess
import sys

__all__ = [
    "SINK_SOURCE",
    "MiB",
    "Sink",
    "cpu_line",
    "cpu_median",
    "make_file",
    "ratio_of",
    "target_note",
]

MiB = 1 << 20

# A sink process: accepts connections forever, drains each to EOF in its own thread, closes.
# It splices into /dev/null where it can (no copy to user space), so that the sink costs as
# little CPU as possible and the variants' own costs decide the figures.
SINK_SOURCE = r"""
import fcntl, os, socket, sys, threading
server = socket.create_server(("127.0.0.1", 0), backlog=64)
print(server.getsockname()[1], flush=True)
def watch_parent():
    sys.stdin.read()  # EOF: the benchmark process is gone, however it ended
    os._exit(0)
threading.Thread(target=watch_parent, daemon=True).start()
def drain_splice(conn):
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        try:
            fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        while True:
            n = os.splice(conn.fileno(), w, 1 << 20)
            if not n:
                return
            while n:
                n -= os.splice(r, null, n)
    finally:
        os.close(r)
        os.close(w)
        os.close(null)
def drain(conn):
    buffer = bytearray(1 << 20)
    with conn:
        try:
            if hasattr(os, "splice"):
                drain_splice(conn)
                return
            while conn.recv_into(buffer):
                pass
        except OSError:
            pass
while True:
    conn, _ = server.accept()
    threading.Thread(target=drain, args=(conn,), daemon=True).start()
"""


class Sink:
    """The draining peer, in its own process."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", SINK_SOURCE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.process.stdout.readline())

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port))

    def close(self):
        self.process.kill()
        self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()


def make_file(directory, name, size):
    """A file of ``size`` bytes of incompressible data, left in the page cache."""
    path = os.path.join(directory, name)
    block = os.urandom(min(size, 4 * MiB)) or b""
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= len(block)
    with open(path, "rb") as f:  # read it once: "cached"
        while f.read(16 * MiB):
            pass
    return path


def ratio_of(results, fast, slow):
    if fast in results and slow in results:
        return results[slow].median / results[fast].median
    return None


def target_note(results, fast, slow, target, what):
    ratio = ratio_of(results, fast, slow)
    if ratio is None:
        return f"{what}: not measured ({fast!r} or {slow!r} missing)"
    verdict = "met" if ratio >= target else "NOT met"
    return f"{what}: {ratio:.2f}x (target >= {target:g}x: {verdict})"


def cpu_median(results, label):
    return statistics.median(results[label].cpu_times)


def cpu_line(results):
    """Median CPU seconds of this process per round, for every variant."""
    return "CPU s per round: " + ", ".join(
        f"{label} {cpu_median(results, label):.3f}" for label in results
    )
