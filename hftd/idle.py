"""Idle strategies: what an agent does when `do_work()` found nothing to do (Agrona's model).

The runner calls ``idle(work_count)`` after every `do_work()`; a strategy resets when work
was done and escalates while there is none:

- ``Adaptive``  -- (the default) spin while work has lately come often enough that the next
  is due within `spin_us` (a park and its wake-up cost more than that), else park at once.
- ``BusySpin``  -- return at once. Lowest latency; only for a pinned, isolated core.
- ``Yield``     -- ``sched_yield()``: gives the core to another runnable process.
- ``Backoff``   -- spin `spins` times, then yield `yields` times, then park.
- ``Blocking``  -- park at once.

Parking waits on the agent's *doorbell*, a POSIX semaphore. Before parking the agent raises
the asleep flag of every ring it reads, and the waiting flag of every ring it writes whose
last claim came up short (it waits for room), and looks once more for work; a writer that
publishes into a ring whose reader is flagged asleep posts the reader's doorbell, and a
reader that frees half of a ring whose writer waits posts the writer's. So the hot path
makes no system call: the check is one load (after a fence, hftd.fence: without it x86 may
let both sides miss the other's store), and a post happens only when the other side really
sleeps. A park is bounded by `park_us` all the same (the heartbeat, and market data the
executor reads lazily, need a pass now and then).

Measured on this machine's VMs (bench/idle_sweep.py): a timed park and its wake-up cost
~21 us of CPU, a doorbell wake-up ~6 us on each side and ~7 us of latency, and a
sched_yield() on 2 cores shared by 5 processes may give the core away for a whole time
slice (~180 us measured in the strategy stage). Hence the default: no yields, spin only
when the arrivals say it pays, otherwise sleep until a doorbell rings.
"""

from __future__ import annotations

import os
import time

import posix_ipc

from .fence import full_fence


class Doorbell:
    """Park on a semaphore after flagging `readers` asleep.

    `sleep_for()` is asked after the flags are up: 0 means there is work (do not park), a
    number of seconds bounds the park (a paced producer knows when its next tick is due),
    None means "until a writer rings", bounded by `park_us`.
    """

    def __init__(self, semaphore, readers, park_us: int, writers=()):
        self.semaphore = semaphore
        self.readers = list(readers)
        self.writers = writers  # the agent's list: writers it makes later are seen too
        self.timeout = park_us / 1e6

    def park(self, sleep_for) -> None:
        # the writers short of room (a writer that has half its ring free again waits for
        # nothing: flagged, its reader would ring at every commit while we wait for another)
        waiting = [w for w in self.writers if w.must_wait()]
        for r in self.readers:
            r.set_asleep(r.wake_at)
        for w in waiting:
            w.set_waiting(True)
        full_fence()  # the flags' stores before the cursors' loads in sleep_for
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
            for w in waiting:
                w.set_waiting(False)
        # swallow posts that piled up while we were waking, so the next park really parks
        sem = self.semaphore
        while sem.value > 0:
            try:
                sem.acquire(0)
            except posix_ipc.BusyError:
                break


class Adaptive:
    """Spin after work only while the recent gaps between work (an average over about the
    last 8) are within `spin_us`, and then at most twice that long; otherwise park at once,
    right after the pass that did work when the gaps are longer than twice `spin_us`.
    At 100k events/s an agent spins through the 10 us gaps; at 10k/s and below it sleeps
    until a doorbell rings, paying ~6 us of CPU a wake-up instead of a core."""

    name = "adaptive"

    def __init__(self, parker, sleep_for, spin_us: int):
        self.parker = parker
        self.sleep_for = sleep_for
        self.spin_ns = spin_us * 1000
        self.gap = 1 << 62  # average gap between passes with work, after an empty one
        self.last_work = 0
        self.empty_since = 0  # when the current run of empty passes began (0: none)

    def idle(self, work_count: int) -> None:
        now = time.monotonic_ns()
        if work_count > 0:
            if self.empty_since:
                g = now - self.last_work
                self.gap = g if self.gap > 1 << 61 else self.gap + ((g - self.gap) >> 3)
                self.empty_since = 0
            self.last_work = now
            if self.gap > 2 * self.spin_ns:
                # work comes seldom: park now rather than after an empty pass (a cold pass
                # costs tens of us of CPU on a VM); the park looks for more work first
                self.empty_since = now
                self.parker.park(self.sleep_for)
            return
        if not self.empty_since:
            self.empty_since = now
        if self.gap <= self.spin_ns and now - self.empty_since < 2 * self.spin_ns:
            return
        self.parker.park(self.sleep_for)


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


AUTO_SPIN_US = 20  # adaptive's spin where every agent has a CPU


def spin_us(configured: int, n_agents: int, cpus: int | None = None) -> int:
    """`idle.spin_us`, with -1 (auto) resolved: AUTO_SPIN_US when this process may run on
    at least `n_agents` + 1 CPUs (every agent and the supervisor), else 0. Measured on 2
    cores and 5 processes at 100k ticks/s: spinning 20 us took tick-to-trade p99 from
    ~3.6 ms to ~13.6 ms (the spinners took the CPU the agents with work needed)."""
    if configured >= 0:
        return configured
    if cpus is None:
        cpus = len(os.sched_getaffinity(0))
    return AUTO_SPIN_US if cpus >= n_agents + 1 else 0


def make(cfg, parker, sleep_for, n_agents: int = 4):
    """The idle strategy named by an `IdleConfig` (`n_agents`: how many agents the
    instance runs, for adaptive's automatic spin)."""
    if cfg.strategy == "busy-spin":
        return BusySpin()
    if cfg.strategy == "yield":
        return Yield()
    if cfg.strategy == "blocking":
        return Blocking(parker, sleep_for)
    if cfg.strategy == "adaptive":
        return Adaptive(parker, sleep_for, spin_us(cfg.spin_us, n_agents))
    return Backoff(parker, sleep_for, cfg.spins, cfg.yields)
