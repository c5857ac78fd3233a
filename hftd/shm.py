"""Named POSIX shared memory and semaphores for one hftd instance.

Every object an instance creates is named ``/hftd.<uid>.<instance>.<what>`` so that the
segments of two users, or of two instances of one user, never collide, and so that a
supervisor can find (and only find) what a crashed earlier run of *its own* instance
left in ``/dev/shm``. Segments and semaphores are created with mode 0600.
"""

from __future__ import annotations

import mmap
import os
import re

import posix_ipc

SHM_DIR = "/dev/shm"
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9_-]{1,40}$")


def check_instance_name(name: str) -> str:
    if not _INSTANCE_RE.match(name):
        raise ValueError(
            f"instance name {name!r} is invalid: use 1-40 letters, digits, '_' or '-'"
        )
    return name


def prefix(instance: str) -> str:
    """Name prefix (without the leading slash) of everything `instance` owns."""
    return f"hftd.{os.getuid()}.{check_instance_name(instance)}."


def object_name(instance: str, what: str) -> str:
    return "/" + prefix(instance) + what


# Map with every page faulted in up front, so a ring's first lap does not take a page fault
# per new page on the hot path.
_MAP_FLAGS = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)


class NameTaken(RuntimeError):
    """A segment or semaphore of ours exists already (another user's, or a live run's)."""


def path_of(name: str) -> str:
    """The /dev/shm path of a segment, or of a semaphore (`sem.` prefix) if that exists."""
    sem = os.path.join(SHM_DIR, "sem." + name.lstrip("/"))
    return sem if os.path.lexists(sem) else os.path.join(SHM_DIR, name.lstrip("/"))


def _taken(name: str) -> NameTaken:
    path = path_of(name)
    try:
        uid = os.lstat(path).st_uid
    except FileNotFoundError:
        return NameTaken(f"shared-memory object {path} appeared while being created")
    from .identity import owner_name

    return NameTaken(f"shared-memory object {path} already exists, owned by {owner_name(uid)}; "
                     f"remove it (as root or that user) or use another instance name")


def create_segment(name: str, size: int) -> mmap.mmap:
    """Create a new segment (failing if it exists) and map it; the fd is closed at once."""
    try:
        shm = posix_ipc.SharedMemory(name, posix_ipc.O_CREX, mode=0o600, size=size)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        raise _taken(name) from None
    try:
        return mmap.mmap(shm.fd, size, flags=_MAP_FLAGS)
    finally:
        shm.close_fd()


def attach_segment(name: str) -> mmap.mmap:
    """Map an existing segment with its full size."""
    try:
        shm = posix_ipc.SharedMemory(name)
    except posix_ipc.ExistentialError:
        raise FileNotFoundError(f"shared memory segment {name} does not exist") from None
    try:
        return mmap.mmap(shm.fd, shm.size, flags=_MAP_FLAGS)
    finally:
        shm.close_fd()


def unlink_segment(name: str) -> None:
    try:
        posix_ipc.unlink_shared_memory(name)
    except posix_ipc.ExistentialError:
        pass


def create_semaphore(name: str) -> posix_ipc.Semaphore:
    try:
        return posix_ipc.Semaphore(name, posix_ipc.O_CREX, mode=0o600, initial_value=0)
    except (posix_ipc.ExistentialError, posix_ipc.PermissionsError):
        raise _taken(name) from None


def open_semaphore(name: str) -> posix_ipc.Semaphore:
    return posix_ipc.Semaphore(name)


def unlink_semaphore(name: str) -> None:
    try:
        posix_ipc.unlink_semaphore(name)
    except posix_ipc.ExistentialError:
        pass


def leftovers(instance: str) -> list[str]:
    """Names (with leading slash) of segments and semaphores of `instance` in /dev/shm."""
    p = prefix(instance)
    found = []
    try:
        entries = os.listdir(SHM_DIR)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.startswith(p):
            found.append("/" + entry)
        elif entry.startswith("sem." + p):
            found.append("/" + entry[4:])
    return sorted(found)


def remove_leftovers(instance: str, keep_lock: bool = False) -> list[str]:
    """Unlink everything `instance` of this user left in /dev/shm that this user owns (the
    lock file too, unless `keep_lock`); returns what was removed."""
    removed = []
    p = prefix(instance)
    me = os.geteuid()
    lock = "/" + p + "lock"
    for name in leftovers(instance):
        if keep_lock and name == lock:
            continue
        path = path_of(name)
        try:
            if os.lstat(path).st_uid != me:
                continue  # another user's: never ours to remove (see identity.squatters)
        except FileNotFoundError:
            continue
        if os.path.basename(path).startswith("sem."):
            unlink_semaphore(name)
        elif name == lock:
            os.unlink(path)
        else:
            unlink_segment(name)
        assert name[1:].startswith(p)
        removed.append(name)
    return removed
