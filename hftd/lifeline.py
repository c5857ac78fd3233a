"""An agent never outlives its supervisor.

First thing in an agent process (before the heavy imports), ask the kernel to SIGKILL it
when its parent dies (PR_SET_PDEATHSIG), then check the parent is still the supervisor that
started it: one that died before the request was made would otherwise leave the agent
orphaned, reparented to init. SIGKILL rather than SIGTERM: with its supervisor gone nobody
coordinates a drain, and the rings are crash-safe (a new run starts from its own state).
"""

from __future__ import annotations

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
PR_SET_TIMERSLACK = 29


def bind_to_supervisor(argv: list[str]) -> None:
    """Called with the agent's argv, which carries ``--supervisor-pid PID``."""
    try:
        expected = int(argv[argv.index("--supervisor-pid") + 1])
    except (ValueError, IndexError):
        return  # started by hand (a test, a debugger): no supervisor to follow
    if not follow(expected):
        os._exit(70)  # the supervisor died while we were starting


def follow(supervisor: int) -> bool:
    """Die with `supervisor`, our parent: False if it is not our parent (any more)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        # 1 us of timer slack instead of 50 us, so a timed park ends when asked
        libc.prctl(PR_SET_TIMERSLACK, 1000)
    except (OSError, AttributeError):
        pass
    return os.getppid() == supervisor


_early: list[int] = []


def catch_early_signals() -> None:
    """`hftd run`: from the first moment, a stop signal is remembered instead of killing the
    process mid-import (a KeyboardInterrupt traceback, or click's "Aborted!"); the supervisor
    acts on it once it is up (`early_signals`)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
        signal.signal(sig, lambda signum, frame: _early.append(signum))


def early_signals() -> list[int]:
    return list(_early)
