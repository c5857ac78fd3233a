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

import posix_ipc


class Doorbell:
    """Park on a semaphore after flagging `readers` asleep.

    `sleep_for()` is asked after the flags are up: 0 means there is work (do not park), a
    number of seconds bounds the park (a paced producer knows when its next tick is due),
    None means "until a writer rings", bounded by `park_us`.
    """

    def __init__(self, semaphore, readers, park_us: int):
        self.semaphore = semaphore
        self.readers = list(readers)
        self.timeout = park_us / 1e6

    def park(self, sleep_for) -> None:
        for r in self.readers:
            r.set_asleep(True)
        try:
            t = sleep_for()
            if t is None or t > self.timeout:
                t = self.timeout
            if t <= 0:
                return
            try:
                self.semaphore.acquire(t)
            except posix_ipc.BusyError:  # timed out
                pass
            except posix_ipc.SignalError:  # a signal (SIGTERM): the runner looks at it next
                pass
        finally:
            for r in self.readers:
                r.set_asleep(False)
        # swallow posts that piled up while we were waking, so the next park really parks
        sem = self.semaphore
        while sem.value > 0:
            try:
                sem.acquire(0)
            except posix_ipc.BusyError:
                break


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
    PARK_AT_ONCE_S = 20e-6

    def __init__(self, parker, sleep_for, spins: int = 200, yields: int = 50):
        self.parker = parker
        self.sleep_for = sleep_for
        self.spins = spins
        self.yields = spins + yields
        self.empty = 0

    def idle(self, work_count: int) -> None:
        if work_count > 0:
            self.empty = 0
            return
        self.empty += 1
        if self.empty == 1:
            # an agent whose next work is due later by the clock (a paced producer) parks
            # until then at once: spinning towards a known time only burns a core
            t = self.sleep_for()
            if t is not None and t > self.PARK_AT_ONCE_S:
                self.empty = self.yields
                self.parker.park(self.sleep_for)
                return
        if self.empty <= self.spins:
            return
        if self.empty <= self.yields:
            os.sched_yield()
            return
        self.parker.park(self.sleep_for)


class Blocking(Backoff):
    name = "blocking"

    def __init__(self, parker, sleep_for):
        super().__init__(parker, sleep_for, 0, 0)


def make(cfg, parker, sleep_for):
    """The idle strategy named by an `IdleConfig`."""
    if cfg.strategy == "busy-spin":
        return BusySpin()
    if cfg.strategy == "yield":
        return Yield()
    if cfg.strategy == "blocking":
        return Blocking(parker, sleep_for)
    return Backoff(parker, sleep_for, cfg.spins, cfg.yields)
