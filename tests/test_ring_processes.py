"""Rings between real processes: a reader SIGKILLed mid-stream is replaced by a new one that
resumes at the first sequence its predecessor had not committed. Nothing is lost; what the
dead reader handled but had not yet committed (at most one batch) is handled again by its
successor: the ring delivers at least once to a reader that dies before it commits."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hftd import shm
from hftd.ring import Ring
from ring_peer import READ_BATCH

PEER = os.path.join(os.path.dirname(__file__), "ring_peer.py")
N = 200_000


@pytest.fixture
def procs():
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def counts_segment(name, n):
    mm = shm.create_segment(name, n * 8)
    return mm, np.ndarray((n,), np.int64, mm)


def test_restarted_reader_resumes_at_first_uncommitted_sequence(shm_name, procs):
    """Each reader counts every event it handles, before it commits the batch (ring_peer).
    The first reader, killed mid-stream, handled [0, resume_at) once each (resume_at: the
    read cursor it left) and possibly the first k <= READ_BATCH events after it, handled but
    not committed, and nothing further. The second reader handles exactly [resume_at, N),
    once each: so every event is handled at least once, those k twice, every other once."""
    ring = Ring.create(shm_name("ring"), 1024, 16)
    mm1, seen_by_first = counts_segment(shm_name("c1"), N)
    mm2, seen_by_second = counts_segment(shm_name("c2"), N)
    try:
        procs.append(subprocess.Popen([sys.executable, PEER, "writer", ring.name, str(N)]))
        first = subprocess.Popen([sys.executable, PEER, "reader", ring.name, shm_name("c1")])
        procs.append(first)
        deadline = time.monotonic() + 60
        while ring.consumed < N // 3:  # kill it mid-stream, whatever its speed
            assert time.monotonic() < deadline, "first reader made no progress"
            time.sleep(0.001)
        first.kill()
        first.wait()
        resume_at = ring.consumed  # the dead reader's last commit
        assert 0 < resume_at < N

        second = subprocess.Popen([sys.executable, PEER, "reader", ring.name, shm_name("c2")])
        procs.append(second)
        deadline = time.monotonic() + 60
        while ring.consumed < N:
            assert time.monotonic() < deadline, f"stuck at {ring.consumed}"
            time.sleep(0.01)
        second.kill()
        second.wait()

        # the first reader handled everything it committed exactly once ...
        assert (seen_by_first[:resume_at] == 1).all()
        # ... then k events past its commit, in order, once each, and nothing beyond them
        # (a batch is handled front to back; at most READ_BATCH of them before a commit)
        beyond = np.array(seen_by_first[resume_at:])  # a copy: no view outlives the segment
        k = int(np.count_nonzero(beyond))
        assert k <= READ_BATCH, k
        assert (beyond[:k] == 1).all() and (beyond[k:] == 0).all(), beyond[:2 * READ_BATCH]
        # the second reader started exactly at the commit and handled the rest once each
        assert (seen_by_second[:resume_at] == 0).all()
        assert (seen_by_second[resume_at:] == 1).all()
        # together: every event handled; the k uncommitted ones twice, no other
        both = seen_by_first + seen_by_second
        assert both.min() == 1 and both.max() <= 2
        assert np.flatnonzero(both == 2).tolist() == list(range(resume_at, resume_at + k))
        assert ring.published == ring.consumed == N
    finally:
        del seen_by_first, seen_by_second
        mm1.close()
        mm2.close()
        ring.unlink()
        ring.close()
