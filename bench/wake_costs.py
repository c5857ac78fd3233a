"""What sleeping and waking cost on this machine: the floor under hftd's CPU at ordinary rates.

    python -m bench.wake_costs [--seconds 2]

- a timed park (a semaphore wait that times out, as a paced producer's or a park's end):
  CPU per wait and how late it ends;
- a doorbell wake-up (one process posts, the other waits), as between two agents: round
  trip, and CPU per wake-up on each side;
- a full fence (hftd.fence) and an empty poll of a ring.

At 10k ticks/s every tick wakes the producer by its timer and the dispatcher and the
strategy by their doorbells: those costs times 10,000 are CPU no idle strategy can save
without spinning.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid

import posix_ipc

from hftd.fence import full_fence

from .harness import cpu_model


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed_park(timeout_s: float, seconds: float) -> dict:
    sem = posix_ipc.Semaphore(f"/hftd-wake-{uuid.uuid4().hex[:8]}", posix_ipc.O_CREX, 0o600, 0)
    try:
        n, c0, t0 = 0, _cpu(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            try:
                sem.acquire(timeout_s)
            except posix_ipc.BusyError:
                pass
            n += 1
        wall, cpu = time.monotonic() - t0, _cpu() - c0
    finally:
        sem.unlink()
        sem.close()
    return {"timeout_us": timeout_s * 1e6, "waits": n, "cpu_us_per_wait": cpu / n * 1e6,
            "wait_us": wall / n * 1e6}


def doorbell(rounds: int) -> dict:
    tag = uuid.uuid4().hex[:8]
    a = posix_ipc.Semaphore(f"/hftd-wake-a{tag}", posix_ipc.O_CREX, 0o600, 0)
    b = posix_ipc.Semaphore(f"/hftd-wake-b{tag}", posix_ipc.O_CREX, 0o600, 0)
    try:
        pid = os.fork()
        if pid == 0:
            try:
                for _ in range(rounds):
                    a.acquire()
                    b.release()
            finally:
                os._exit(0)
        time.sleep(0.1)
        c0, t0 = _cpu(), time.monotonic()
        for _ in range(rounds):
            a.release()
            b.acquire()
        wall, cpu = time.monotonic() - t0, _cpu() - c0
        _, status, ru = os.wait4(pid, 0)
        child = ru.ru_utime + ru.ru_stime
    finally:
        for s in (a, b):
            s.unlink()
            s.close()
    return {"round_trip_us": wall / rounds * 1e6, "cpu_us_per_round_trip_poster": cpu / rounds * 1e6,
            "cpu_us_per_round_trip_waiter": child / rounds * 1e6}


def fence(n: int = 200_000) -> dict:
    t0 = time.perf_counter()
    for _ in range(n):
        full_fence()
    return {"fence_ns": (time.perf_counter() - t0) / n * 1e9}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    out = {"cpu_model": cpu_model(), "cpus": os.cpu_count(),
           "timed_park": [timed_park(t, args.seconds) for t in (50e-6, 100e-6, 1e-3, 10e-3)],
           "doorbell": doorbell(20_000), **fence()}
    print(f"CPU: {out['cpu_model']} ({out['cpus']} CPUs)")
    for p in out["timed_park"]:
        print(f"timed park of {p['timeout_us']:,.0f} us: {p['cpu_us_per_wait']:.1f} us of CPU a "
              f"wait, ends after {p['wait_us']:,.0f} us")
    d = out["doorbell"]
    print(f"doorbell round trip (post, wake, post back, wake): {d['round_trip_us']:.1f} us; CPU "
          f"per round trip {d['cpu_us_per_round_trip_poster']:.1f} us (poster) + "
          f"{d['cpu_us_per_round_trip_waiter']:.1f} us (waiter)")
    print(f"full fence: {out['fence_ns']:.0f} ns")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
