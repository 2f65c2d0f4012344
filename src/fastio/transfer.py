"""Zero-copy transfer: move bytes between files, sockets and pipes without Python copies.

``copy`` is the one call to reach for: it picks, like Go's ``io.Copy`` and shutil's fast copy,
copy_file_range then sendfile for file to file, sendfile for file to socket or pipe, splice for
socket or pipe to anything, and a loop with a reusable 256 KiB buffer for objects without a
file descriptor. ``sendfile``, ``splice`` and ``relay`` are the specific forms.

Shared behaviour (both twins):

- Timeouts: ``timeout=`` (else a socket's own timeout, else the fd's O_NONBLOCK flag) is one
  deadline per side of the call, started at that side's first wait. It governs the waits
  fastio makes on non-blocking descriptors; a blocking fd blocks in the kernel.
- On a non-blocking end the call moves what it can and raises ``BlockingIOError`` with
  ``characters_written``; the next call resumes and no byte is lost: regular files are read at
  an offset that advances only with the bytes delivered, pipes are spliced directly, and a
  socket source whose destination may stop the call is read with ``MSG_PEEK`` and consumed
  only as far as delivered.
- When the destination fails or a signal handler raises after bytes were taken from a stream
  source (a socket, a pipe) but before they were delivered, they are kept, not dropped: the
  next fastio transfer from that same source (same fd, same socket) sends them first. Only
  ``relay`` ends both connections and keeps nothing.
- Any exception after progress carries ``.transferred`` (``relay``: the pair of counts); a
  regular file's position is left after the last byte delivered (untouched when nothing was).
- ``count=None`` means to EOF as the file's size stood when the call started (like
  ``socket.sendfile``): a file that shrinks ends the transfer, bytes appended meanwhile wait
  for the next call.
- Text files are refused (``TypeError``); datagram sockets too (``ValueError``). TLS sockets,
  compressed files and other wrappers are used through their methods, never bypassed.
- ``relay`` makes both sockets non-blocking while it runs and restores their flags after.
"""

from . import _impl

_twin = _impl.twin_module("transfer")

__all__ = ["copy", "relay", "sendfile", "splice"]

sendfile = _twin.sendfile
splice = _twin.splice
copy = _twin.copy
relay = _twin.relay
