"""Zero-copy transfer: move bytes between files, sockets and pipes without Python copies.

``copy`` is the one call to reach for: it picks, like Go's ``io.Copy`` and shutil's fast copy,
copy_file_range then sendfile for file to file, sendfile for file to socket or pipe, splice for
socket or pipe to anything, and a loop with a reusable 256 KiB buffer for objects without a
file descriptor. ``sendfile``, ``splice`` and ``relay`` are the specific forms.

Shared behaviour (both twins): a socket's own timeout (or ``timeout=``) is one deadline per
side of the call; on a non-blocking end the call moves what it can and raises
``BlockingIOError`` with ``characters_written``; any exception after progress carries
``.transferred``; a regular file's position is left after the last byte delivered.
"""

from . import _impl

_twin = _impl.twin_module("transfer")

__all__ = ["copy", "relay", "sendfile", "splice"]

sendfile = _twin.sendfile
splice = _twin.splice
copy = _twin.copy
relay = _twin.relay
