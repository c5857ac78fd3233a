"""Idle strategies and doorbells: the adaptive strategy spins only while work comes often,
a writer short of room parks until its reader has freed half the ring and rings, and the
executor's market data rings only once the threshold it set is waiting."""

from __future__ import annotations

import threading
import time

import numpy as np
import posix_ipc
import pytest

from hftd import idle
from hftd.ring import Ring, RingReader, RingWriter


class Parker:
    def __init__(self):
        self.parks = 0

    def park(self, sleep_for):
        self.parks += 1


@pytest.fixture
def clock(monkeypatch):
    now = [10**12]
    monkeypatch.setattr(idle.time, "monotonic_ns", lambda: now[0])
    return now


def _passes(strategy, clock, gap_ns, cycles, empty_polls=3, poll_ns=1_000):
    """`cycles` times: a pass with work, then `empty_polls` empty ones `poll_ns` apart, the
    next work `gap_ns` after the last."""
    for _ in range(cycles):
        strategy.idle(1)
        for _ in range(empty_polls):
            clock[0] += poll_ns
            strategy.idle(0)
        clock[0] += gap_ns - empty_polls * poll_ns


def test_adaptive_parks_at_once_when_work_comes_seldom(clock):
    p = Parker()
    a = idle.Adaptive(p, lambda: None, spin_us=20)
    _passes(a, clock, gap_ns=100_000, cycles=50)  # 10k events/s
    # right after each pass with work, and at every empty pass after it: none spun
    assert p.parks == 50 + 50 * 3


def test_adaptive_spins_through_short_gaps_and_parks_after_twice_spin_us(clock):
    p = Parker()
    a = idle.Adaptive(p, lambda: None, spin_us=20)
    _passes(a, clock, gap_ns=100_000, cycles=3)
    parked_first = p.parks
    _passes(a, clock, gap_ns=5_000, cycles=200, empty_polls=3)  # 200k events/s
    late = p.parks
    # the average gap falls below spin_us within a few cycles; from then on no park
    assert late - parked_first < 3 * 20
    _passes(a, clock, gap_ns=5_000, cycles=50, empty_polls=3)
    assert p.parks == late
    a.idle(1)
    for _ in range(39):  # 39 us of nothing: within 2 * spin_us, still spinning
        clock[0] += 1_000
        a.idle(0)
    assert p.parks == late
    clock[0] += 2_000
    a.idle(0)
    assert p.parks == late + 1  # past 40 us: parks


@pytest.fixture
def bells(shm_name):
    made = []

    def bell(name):
        s = posix_ipc.Semaphore(shm_name(name), posix_ipc.O_CREX, 0o600, 0)
        made.append(s)
        return s

    yield bell
    for s in made:
        s.unlink()
        s.close()


@pytest.fixture
def ring(make_ring):
    return make_ring(64, 64)


def test_a_writer_short_of_room_sleeps_until_its_reader_has_freed_half(ring, bells):
    wbell = bells("writer")
    w = RingWriter(Ring.attach(ring.name))
    reader = RingReader(ring, writer_bell=wbell)
    assert w.claim(64) == 64
    w.put_rows(0, 0, np.zeros((64, 8), np.uint8))
    w.publish()
    assert w.claim(8) == 0 and w.starved and w.must_wait()
    parker = idle.Doorbell(wbell, [], park_us=30_000_000, writers=[w])  # a 30 s park
    woke = []

    def writer():
        t0 = time.monotonic()
        parker.park(lambda: None if w.must_wait() else 0.0)
        woke.append(time.monotonic() - t0)

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(0.2)
    reader.commit(8)  # 56 still waiting: more than half, no ring
    time.sleep(0.3)
    assert not woke
    reader.commit(24)  # 32 waiting: half the ring free
    t.join(10)
    assert woke and woke[0] < 10  # rung, not the park's 30 s end
    assert ring.q_header[5 * 128 // 8] == 0  # the waiting flag is down again
    assert w.claim(32) == 32 and not w.starved


def test_a_reader_asleep_until_a_count_is_rung_only_then(ring, bells):
    rbell = bells("reader")
    w = RingWriter(Ring.attach(ring.name), rbell)
    r = RingReader(ring)
    r.set_asleep(10)  # the executor's market data: ring once 10 wait
    for k in range(9):
        w.claim(1)
        w.put(0, 0, b"x")
        w.publish()
    assert rbell.value == 0
    w.claim(1)
    w.put(0, 0, b"x")
    w.publish()
    assert rbell.value == 1
    r.set_asleep(True)
    rbell.acquire(0)
    w.claim(1)
    w.put(0, 0, b"x")
    w.publish()
    assert rbell.value == 1  # flagged plainly asleep: every publish rings


def test_adaptive_spins_by_default_only_where_every_agent_and_the_supervisor_have_a_cpu():
    assert idle.spin_us(-1, n_agents=4, cpus=2) == 0
    assert idle.spin_us(-1, n_agents=4, cpus=4) == 0
    assert idle.spin_us(-1, n_agents=4, cpus=5) == idle.AUTO_SPIN_US
    assert idle.spin_us(35, n_agents=4, cpus=2) == 35  # a configured value is kept
    assert idle.spin_us(0, n_agents=4, cpus=64) == 0


def _fill(w: RingWriter, n: int) -> None:
    assert w.claim(n) == n
    w.put_rows(0, 0, np.zeros((n, 8), np.uint8))
    w.publish()


def test_a_restarted_writer_starts_with_the_waiting_flag_down(ring, bells):
    """A writer SIGKILLed while parked for room leaves the ring's waiting flag up; its
    successor is not waiting (it has claimed nothing), so the reader must not ring it at every
    commit: the flag is the writer's, and a new writer starts with it down."""
    wbell = bells("writer")
    w = RingWriter(Ring.attach(ring.name))
    _fill(w, 64)
    assert w.claim(8) == 0 and w.must_wait()
    w.set_waiting(True)  # parked ... and killed there
    RingWriter(Ring.attach(ring.name))  # the restarted writer
    reader = RingReader(ring, writer_bell=wbell)
    reader.commit(40)  # 24 waiting: past half free, where a waiting writer is rung
    reader.commit(24)
    assert wbell.value == 0



def test_a_writer_with_half_its_ring_free_again_is_not_flagged_waiting(ring, bells):
    """Its last claim came up short, but its reader has since freed the ring: it waits for
    nothing, so a park does not flag it (the reader would ring at every commit while the agent
    waits for something else) and it is no longer starved. Whether the agent should park at
    all is its sleep_for's to say (it looks at its outboxes' rings: see the executor's and the
    strategy stage's tests)."""
    wbell = bells("writer")
    w = RingWriter(Ring.attach(ring.name))
    reader = RingReader(ring, writer_bell=wbell)
    _fill(w, 64)
    assert w.claim(8) == 0 and w.starved
    reader.commit(64)  # drained: no flag was up, no ring
    flags = []

    class Bell:
        value = 0

        def acquire(self, timeout=None):
            flags.append(int(ring.q_header[5 * 128 // 8]))

    idle.Doorbell(Bell(), [], park_us=1000, writers=[w]).park(lambda: None)
    assert flags == [0] and not w.starved
