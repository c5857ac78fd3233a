"""Replace a file atomically: a new file beside it, renamed over it.

The new file is made with O_EXCL|O_NOFOLLOW (a name planted there is never written through)
and mode 0600; a rename replaces the name itself, never a file a symlink points to. Readers
see the old file or the new one, never a half-written one; a failure leaves the old one and
no temporary file. `durable` also fsyncs the file and its directory, so the new content
survives a power loss once this returns (what persisted state needs; runtime files do not).

Plain Python, no knowledge of processes: the trading domain and the daemon both use it.
"""

from __future__ import annotations

import os


def write_atomic(path: str, data: bytes, durable: bool = False) -> None:
    path = os.path.abspath(path)
    d, base = os.path.split(path)
    tmp = os.path.join(d, f".{base}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
