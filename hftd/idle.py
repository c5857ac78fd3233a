"""Idle strategies: what an agent does when `do_work()` found nothing to do (Agrona's model).

The runner calls ``idle(work_count)`` after every `do_work()`; a strategy resets when work
was done and escalates while there is none:

- ``BusySpin``  -- return at once. Lowest latency; only for a pinned, isolated core.
- ``Yield``     -- ``sched_yield()``: gives the core to another runnable process.
- ``Backoff``   -- spin `spins` times, then yield `yields` times, then park.
- ``Blocking``  -- park at once.

Parking waits on the agent's *doorbell*, a POSIX semaphore. Before parking the agent raises
the asleep flag of every ring it reads and looks once more for work; a writer that publishes
into a ring whose reader is flagged asleep posts the doorbell. So the hot path makes no
system call: the writer's check is one load, and a post happens only when the reader is
really asleep. A park is bounded by `park_us`, so a wake-up lost to the store-load
reordering x86 permits between "flag up / check" and "publish / check flag" costs at most
that much, never a hang.

This machine has 2 cores for 5 processes, so the default is Backoff ending in a park.
"""

from __future__ import annotations

import os
import time

import posix_ipc


class Doorbell:
    """Park on a semaphore after flagging `readers` asleep; `has_work()` re-checks."""

    def __init__(self, semaphore, readers, park_us: int):
        self.semaphore = semaphore
        self.readers = list(readers)
        self.timeout = park_us / 1e6

    def park(self, has_work) -> None:
        for r in self.readers:
            r.set_asleep(True)
        try:
            if has_work():
                return
            try:
                self.semaphore.acquire(self.timeout)
            except posix_ipc.BusyError:  # timed out
                pass
        finally:
            for r in self.readers:
                r.set_asleep(False)
        # swallow posts that piled up while we were waking, so the next park really parks
        try:
            while True:
                self.semaphore.acquire(0)
        except posix_ipc.BusyError:
            pass


class SleepPark:
    """Park without a doorbell: sleep `park_us` (for agents whose work is not a ring)."""

    def __init__(self, park_us: int):
        self.timeout = park_us / 1e6
        self.readers = []

    def park(self, has_work) -> None:
        time.sleep(self.timeout)


class BusySpin:
    name = "busy-spin"

    def idle(self, work_count: int) -> None:
        pass


class Yield:
    name = "yield"

    def idle(self, work_count: int) -> None:
        if work_count <= 0:
            os.sched_yield()


class Backoff:
    name = "backoff"

    def __init__(self, parker, has_work, spins: int = 200, yields: int = 50):
        self.parker = parker
        self.has_work = has_work
        self.spins = spins
        self.yields = spins + yields
        self.empty = 0

    def idle(self, work_count: int) -> None:
        if work_count > 0:
            self.empty = 0
            return
        self.empty += 1
        if self.empty <= self.spins:
            return
        if self.empty <= self.yields:
            os.sched_yield()
            return
        self.parker.park(self.has_work)


class Blocking(Backoff):
    name = "blocking"

    def __init__(self, parker, has_work):
        super().__init__(parker, has_work, 0, 0)


def make(cfg, parker, has_work):
    """The idle strategy named by an `IdleConfig`."""
    if cfg.strategy == "busy-spin":
        return BusySpin()
    if cfg.strategy == "yield":
        return Yield()
    if cfg.strategy == "blocking":
        return Blocking(parker, has_work)
    return Backoff(parker, has_work, cfg.spins, cfg.yields)
