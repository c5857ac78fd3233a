"""Run one design as a process tree and measure it from outside, the same way for all.

- CPU: each process's own CPU time (user + system, all its threads), sampled every
  `CPU_EVERY_S` (200 ms) for every process of the tree; a process that has exited keeps its
  last sample, so the tree's total only grows. `cores(window)` is the tree's CPU seconds per
  wall second inside a window (the run's active window, from its first tick taken from the
  feed to the last one the strategy handled: start-up and shut-down left out), interpolated
  between samples. Also the whole run's CPU (rusage of the tree, waited descendants
  included) and wall time.
- Memory: every `MEM_EVERY_S` (500 ms) the sums over the tree's live processes of PSS
  (proportional set size: a page shared by k processes counts 1/k in each, so the sum counts
  it once; shared memory mapped by the processes included), USS (pages private to one
  process) and RSS (every mapped page in every process: double counts shared ones); the peak
  of each sum. From /proc/<pid>/smaps_rollup (psutil's memory_full_info). For hftd, also its
  shared memory objects in /dev/shm (`shm_bytes`, pages in use), mapped or not.
- The rest of the machine: its busy CPU time (/proc/stat), sampled with the tree's, so
  `background(window)` is the cores the machine spent on anything but the design in that
  window (other users' work, the harness itself): on a shared machine, how disturbed a run was.
- Wall time from start to exit.

Sampling costs the harness ~1-2 % of a core, the same for every design."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psutil

from hftd import shm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo ("?" if unknown): named beside every figure."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"
PY = sys.executable
CPU_EVERY_S = 0.2
MEM_EVERY_S = 0.5


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


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy since boot (all CPUs)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest time is inside user)
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / _CLK_TCK


def _label(p: psutil.Process, root: bool, n_seen: int) -> str:
    """hftd's processes by role ('agent strategy', 'supervisor'); others 'main' (the
    command run) and 'child 1', 'child 2', ... in the order they were first seen (pid order
    within one sample)."""
    try:
        cmd = p.cmdline()
    except psutil.Error:
        cmd = []
    if "agent" in cmd and "hftd" in cmd:
        i = cmd.index("agent")
        return "agent " + " ".join(cmd[i + 1:i + 2])
    if "hftd" in cmd and "run" in cmd:
        return "supervisor"
    return "main" if root else f"child {n_seen}"


class Tree:
    """The samples of one process tree."""

    def __init__(self, root: psutil.Process):
        self.root = root
        self.procs: dict[int, psutil.Process] = {}
        self.cpu: dict[int, float] = {}  # pid -> its last CPU seconds seen
        self.labels: dict[int, str] = {}
        self.samples: list[tuple[int, float]] = []  # (monotonic ns, the tree's CPU s)
        self.machine: list[tuple[int, float]] = []  # (monotonic ns, the machine's busy s)
        self.per_proc: list[tuple[int, dict[int, float]]] = []
        self.peak = {"pss": 0, "uss": 0, "rss": 0}

    def live(self) -> list[psutil.Process]:
        try:
            kids = self.root.children(recursive=True)
        except psutil.Error:
            kids = []
        out = []
        for p in [self.root, *sorted(kids, key=lambda k: k.pid)]:
            known = self.procs.get(p.pid)
            if known is None:
                self.procs[p.pid] = known = p
                self.labels[p.pid] = _label(p, p.pid == self.root.pid, len(self.procs) - 1)
            out.append(known)
        return out

    def sample(self, memory: bool) -> None:
        procs = self.live()
        t = time.monotonic_ns()
        for p in procs:
            try:
                c = p.cpu_times()
                self.cpu[p.pid] = c.user + c.system
            except psutil.Error:
                pass
        self.samples.append((t, sum(self.cpu.values())))
        self.machine.append((t, _machine_busy_s()))
        self.per_proc.append((t, dict(self.cpu)))
        if memory:
            tot = {"pss": 0, "uss": 0, "rss": 0}
            for p in procs:
                try:
                    m = p.memory_full_info()
                except psutil.Error:
                    continue
                for k in tot:
                    tot[k] += getattr(m, k)
            for k, v in tot.items():
                self.peak[k] = max(self.peak[k], v)

    def _clip(self, t0_ns: int, t1_ns: int) -> tuple[int, int] | None:
        """The window cut to the sampled span (a run may end less than one sampling interval
        after its last tick), or None if less than half of it is left or fewer than 3 samples
        fall in it (a window shorter than ~2 sampling intervals: too short to measure)."""
        if len(self.samples) < 2 or t1_ns <= t0_ns:
            return None
        a, b = max(t0_ns, self.samples[0][0]), min(t1_ns, self.samples[-1][0])
        inside = sum(1 for t, _ in self.samples if a <= t <= b)
        return (a, b) if b - a >= (t1_ns - t0_ns) / 2 and inside >= 3 else None

    def cores(self, t0_ns: int, t1_ns: int) -> float | None:
        """The tree's CPU seconds per second between t0 and t1 (None if the samples do not
        cover at least half of the window)."""
        w = self._clip(t0_ns, t1_ns)
        if w is None:
            return None
        t0_ns, t1_ns = w
        return (_at(self.samples, t1_ns) - _at(self.samples, t0_ns)) / ((t1_ns - t0_ns) / 1e9)

    def background(self, t0_ns: int, t1_ns: int) -> float | None:
        """Cores the machine spent on other things than the tree between t0 and t1."""
        w = self._clip(t0_ns, t1_ns)
        mine = self.cores(t0_ns, t1_ns)
        if w is None or mine is None:
            return None
        t0_ns, t1_ns = w
        busy = (_at(self.machine, t1_ns) - _at(self.machine, t0_ns)) / ((t1_ns - t0_ns) / 1e9)
        return max(busy - mine, 0.0)

    def cores_by_process(self, t0_ns: int, t1_ns: int) -> dict[str, float]:
        w = self._clip(t0_ns, t1_ns)
        if w is None:
            return {}
        t0_ns, t1_ns = w
        out = {}
        for pid, label in self.labels.items():
            series = [(t, c[pid]) for t, c in self.per_proc if pid in c]
            a, b = _at(series, t0_ns), _at(series, t1_ns)
            if a is not None and b is not None and t1_ns > t0_ns:
                out[label] = round((b - a) / ((t1_ns - t0_ns) / 1e9), 4)
        return out


def _at(series: list[tuple[int, float]], t: int) -> float | None:
    """The series linearly interpolated at t (None outside it)."""
    if len(series) < 2 or t < series[0][0] or t > series[-1][0]:
        return None
    lo, hi = 0, len(series) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if series[mid][0] <= t:
            lo = mid
        else:
            hi = mid
    (ta, ca), (tb, cb) = series[lo], series[hi]
    return ca if tb == ta else ca + (cb - ca) * (t - ta) / (tb - ta)


def measure(cmd: list[str], timeout: float, instance: str | None = None) -> dict:
    """Run `cmd` (cwd: the repository) to its end, or kill its tree after `timeout`. Returns
    rc, wall_s, cpu_s (whole run), the peak PSS/USS/RSS sums, shm_bytes, stderr's tail and
    `tree` (a Tree: `cores` over any window of the run)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tree = Tree(psutil.Process(proc.pid))
    shm_peak = 0
    rusage = None
    status = None
    next_mem = 0.0
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        now = time.monotonic()
        memory = now >= next_mem
        if memory:
            next_mem = now + MEM_EVERY_S
            shm_peak = max(shm_peak, _shm_bytes(instance))
        tree.sample(memory)
        if now - t0 > timeout:
            for p in tree.live():
                try:
                    p.kill()
                except psutil.Error:
                    pass
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(CPU_EVERY_S)
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return {"rc": proc.returncode, "wall_s": time.monotonic() - t0,
            "cpu_s": rusage.ru_utime + rusage.ru_stime, "pss_bytes": tree.peak["pss"],
            "uss_bytes": tree.peak["uss"], "rss_bytes": tree.peak["rss"], "shm_bytes": shm_peak,
            "stderr_tail": err[-2000:], "tree": tree}
