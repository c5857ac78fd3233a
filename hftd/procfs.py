"""What hftd reads about a process, straight from /proc (Linux).

The figures psutil gives (the same files, the same arithmetic), without importing psutil
into the supervisor: ~1.5 MiB of memory that would be in every agent's pages too (issue 12's
memory target). Each function raises ProcessLookupError when the process is gone.
"""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat(pid: int) -> list[bytes]:
    """/proc/PID/stat's fields from the third (state) on: field n is [n - 3]."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    return data[data.rindex(b")") + 2:].split()  # the command name may hold anything


def boot_time() -> float:
    with open("/proc/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise OSError("no btime in /proc/stat")


def create_time(pid: int) -> float:
    """Seconds since the epoch the process started (psutil.Process.create_time)."""
    return int(_stat(pid)[19]) / CLOCK_TICKS + boot_time()


def is_zombie(pid: int) -> bool:
    return _stat(pid)[0] == b"Z"


def ppid(pid: int) -> int:
    return int(_stat(pid)[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process."""
    f = _stat(pid)
    return (int(f[11]) + int(f[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`, zombies included."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if ppid(int(name)) == pid:
                    out.append(int(name))
            except (ProcessLookupError, OSError, ValueError, IndexError):
                continue
    return out
