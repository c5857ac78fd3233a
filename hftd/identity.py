"""One identity per (user, instance): the instance lock, and the runtime directory it names.

The lock is a file beside the instance's shared memory, ``/dev/shm/hftd.<uid>.<instance>.lock``,
so it guards exactly the namespace it protects: whatever runtime directory a supervisor
uses ($RUNTIME_DIRECTORY under systemd, $XDG_RUNTIME_DIR/hftd in a shell), a second one of
the same user and instance finds the lock held and is refused, and the CLI finds the
running instance's control socket through the record the lock holds (pid, start time,
runtime directory). The supervisor passes the locked descriptor on to its agents (flock
locks belong to the open file, which children share), so the lock stays held while any
process of the instance lives: "lock acquired" proves every process of an earlier run is
dead, and only then are its leftovers removed.

/dev/shm is world-writable, so every file here is opened without following symlinks, and
anything of our names owned by another user is refused with a message naming it and its
owner (sticky /dev/shm: we could not remove it anyway). The runtime directory holds the
control socket and the agents' config spec; it must be ours, mode 0700, not a symlink.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import stat

import msgspec

from . import procfs, shm
from .atomic_file import write_atomic


class IdentityError(RuntimeError):
    """Refused for a reason the message explains (no traceback for the user)."""


class AlreadyRunning(IdentityError):
    pass


class RuntimeDirError(IdentityError):
    pass


class Record(msgspec.Struct):
    """What the lock file says about the supervisor holding it."""

    pid: int
    started: float  # the supervisor process's start time (as psutil's create_time): pid reuse check
    runtime_dir: str


def owner_name(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def lock_path(instance: str) -> str:
    return os.path.join(shm.SHM_DIR, shm.prefix(instance) + "lock")


def _open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """Open `path` without following a symlink; a file of ours only."""
    # O_NONBLOCK: a FIFO planted at the name must not hang us (no effect on a regular file)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    except FileNotFoundError:
        raise
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise IdentityError(f"{path} is a symlink: refusing to follow it (remove it)") from None
        try:
            st = os.lstat(path)
        except OSError:
            raise IdentityError(f"cannot open {path}: {e.strerror}") from None
        raise IdentityError(_not_ours(path, st)) from None
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IdentityError(_not_ours(path, st))
    return fd


def _not_ours(path: str, st: os.stat_result) -> str:
    if st.st_uid != os.geteuid():
        return (f"{path} belongs to {owner_name(st.st_uid)}, not to you: another user has "
                f"taken this instance's name; remove it (as root or that user) or use another "
                f"instance name")
    return (f"{path} is not a regular file (mode {stat.filemode(st.st_mode)}); remove it or "
            f"use another instance name")


def _read(fd: int) -> Record | None:
    data = os.pread(fd, 4096, 0)
    try:
        return msgspec.json.decode(data, type=Record)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


class InstanceLock:
    """The held lock of one instance (see the module docstring)."""

    def __init__(self, instance: str):
        self.instance = instance
        self.path = lock_path(instance)
        self.fd: int | None = None

    def acquire(self, runtime_dir: str) -> None:
        for _ in range(10):
            fd = _open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                rec = _read(fd)
                os.close(fd)
                if rec is None:
                    raise AlreadyRunning(f"instance {self.instance!r} is already running "
                                         f"(lock {self.path} is held)") from None
                live = alive(rec)
                raise AlreadyRunning(
                    f"instance {self.instance!r} is already running: supervisor pid {rec.pid}, "
                    f"runtime dir {rec.runtime_dir}" if live else
                    f"instance {self.instance!r} is still held by agents of supervisor pid "
                    f"{rec.pid}, which is gone (lock {self.path}); they end within a second "
                    f"of it, try again") from None
            # the file we locked must still be the one at the path (a stopping supervisor
            # unlinks it: then we locked a dead inode and must start over)
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        else:
            raise IdentityError(f"could not take the lock {self.path}: it keeps being replaced")
        me = os.getpid()
        os.ftruncate(fd, 0)
        os.pwrite(fd, msgspec.json.encode(Record(me, procfs.create_time(me), runtime_dir)), 0)
        self.fd = fd

    def release(self) -> None:
        """Unlink, then unlock: the next supervisor creates a fresh file."""
        if self.fd is None:
            return
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        os.close(self.fd)
        self.fd = None


def alive(rec: Record) -> bool:
    """Whether the supervisor of `rec` still runs (pid and start time match)."""
    try:
        return (abs(procfs.create_time(rec.pid) - rec.started) < 0.01
                and not procfs.is_zombie(rec.pid))
    except (ProcessLookupError, PermissionError):
        return False


def running(instance: str) -> Record | None:
    """The record of the live supervisor of `instance` (of this user), or None.

    Reads the lock file without locking it (a shared lock, even for an instant, could make a
    starting supervisor think the instance runs)."""
    try:
        fd = _open_nofollow(lock_path(instance), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        rec = _read(fd)
    finally:
        os.close(fd)
    return rec if rec is not None and alive(rec) else None


def squatters(instance: str) -> list[str]:
    """Objects of `instance`'s names in /dev/shm that another user owns (one line each)."""
    me = os.geteuid()
    out = []
    for name in shm.leftovers(instance):
        path = shm.path_of(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if st.st_uid != me:
            out.append(f"{path} (owned by {owner_name(st.st_uid)})")
    return out


def check_runtime_dir(path: str, create: bool, what: str = "runtime directory",
                      setting: str = "runtime_dir in the config, or XDG_RUNTIME_DIR") -> None:
    """The runtime directory (or `what`) must be a directory of ours (not a symlink), mode
    0700. With `create`, a missing one is made (mode 0700; its parent must exist)."""
    fix = (f"use a directory you own with mode 0700 (set {setting}), or fix this one: "
           f"chown {os.geteuid()} {path} && chmod 700 {path}")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            parent = os.path.dirname(os.path.abspath(path)) or "/"
            if not os.path.isdir(parent):
                raise RuntimeDirError(f"{what} {path}: its parent {parent} is not "
                                      f"a directory") from None
            return
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass  # somebody made it meanwhile: judged below like any existing one
        except OSError as e:
            raise RuntimeDirError(f"{what} {path} cannot be created: "
                                  f"{e.strerror}") from None
        st = os.lstat(path)
    elsewhere = f"remove it, or use a directory you own with mode 0700 (set {setting})"
    if stat.S_ISLNK(st.st_mode):
        raise RuntimeDirError(f"{what} {path} is a symlink; {elsewhere}")
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeDirError(f"{what} {path} is not a directory; {elsewhere}")
    if st.st_uid != os.geteuid():
        raise RuntimeDirError(f"{what} {path} belongs to {owner_name(st.st_uid)}, "
                              f"not to you; {fix}")
    if st.st_mode & 0o077:
        raise RuntimeDirError(f"{what} {path} has mode "
                              f"{stat.S_IMODE(st.st_mode):04o}, not 0700 (others could replace "
                              f"its files); {fix}")


def check_state_dir(path: str) -> str:
    """An instance's state directory, made if missing (its parents too, mode 0700): a
    directory of ours, no symlink, mode 0700. Returns `path`."""
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    check_runtime_dir(path, True, "state directory",
                      "state_dir in the config, STATE_DIRECTORY or XDG_STATE_HOME")
    return path


def write_private(path: str, data: bytes) -> None:
    """Write `data` to `path` atomically, never following a symlink; mode 0600."""
    write_atomic(path, data)


def check_report_path(path: str) -> None:
    """Raise OSError unless `path` can be written as a report: really opened, not just
    os.access (which says yes to root everywhere), and without truncating anything."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NONBLOCK)
        os.close(fd)
        return
    os.close(fd)
    os.unlink(path)


def write_report(path: str, data: bytes) -> None:
    """Write a report where the user asked, like a shell's `>`: into the file (or device, or
    the file a symlink names), never replacing what is there by another file."""
    with open(path, "wb") as f:
        f.write(data)


def read_private(path: str) -> bytes:
    """Read a file that `write_private` wrote: no symlink, ours."""
    fd = _open_nofollow(path, os.O_RDONLY)
    try:
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)
