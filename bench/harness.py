"""Run one design as a process tree and measure it from outside, the same way for all:
CPU seconds (rusage of the tree, waited descendants included), peak memory (sum of the
tree's RSS plus the design's shared memory in /dev/shm, sampled every 200 ms -- often enough for a
flat or growing footprint, rarely enough not to steal CPU from the design), wall time."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from hftd import shm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc] + proc.children(recursive=True)
    except psutil.Error:
        return 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def _shm_bytes(instance: str | None) -> int:
    if not instance:
        return 0
    total = 0
    for name in shm.leftovers(instance):
        try:
            total += os.stat("/dev/shm/" + name[1:]).st_blocks * 512  # pages really in use
        except FileNotFoundError:
            pass
    return total


def measure(cmd: list[str], timeout: float, instance: str | None = None) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    rusage = None
    status = None
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        peak = max(peak, _tree_rss(ps) + _shm_bytes(instance))
        if time.monotonic() - t0 > timeout:
            for p in [ps] + ps.children(recursive=True):
                try:
                    p.kill()
                except psutil.Error:
                    pass
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return {"rc": proc.returncode, "wall_s": time.monotonic() - t0,
            "cpu_s": rusage.ru_utime + rusage.ru_stime, "peak_mem_bytes": peak,
            "stderr_tail": err[-2000:]}


PY = sys.executable
