"""Rings between real processes: a reader SIGKILLed mid-stream is replaced by a new one that
resumes at the first unread sequence, with nothing lost and nothing repeated."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from hftd import shm
from hftd.ring import Ring

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


def test_restarted_reader_resumes_at_first_unread_sequence(shm_name, procs):
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
        resume_at = ring.consumed
        assert 0 < resume_at < N

        second = subprocess.Popen([sys.executable, PEER, "reader", ring.name, shm_name("c2")])
        procs.append(second)
        deadline = time.monotonic() + 60
        while ring.consumed < N:
            assert time.monotonic() < deadline, f"stuck at {ring.consumed}"
            time.sleep(0.01)
        second.kill()

        # everything the first reader committed it saw exactly once ...
        assert (seen_by_first[:resume_at] == 1).all()
        # ... and the second reader started exactly there and saw the rest exactly once
        assert (seen_by_second[:resume_at] == 0).all()
        assert (seen_by_second[resume_at:] == 1).all()
        assert ring.published == ring.consumed == N
    finally:
        del seen_by_first, seen_by_second
        mm1.close()
        mm2.close()
        ring.unlink()
        ring.close()
