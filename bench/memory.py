"""Memory of a running instance, counted fairly: PSS (proportional set size: a page shared by
n processes counts 1/n in each, so the sum over processes counts every page once) and USS
(pages only that process has) of every process, plus the instance's shared memory.

    python -m bench.memory [--rate 10000] [--settle 5] [--duration 8] [--baselines] [--json FILE]

hftd runs its default config (the embedded one; only the instance name, a free /metrics
port and a private state directory differ) at `--rate` ticks/s; after `--settle` seconds every
process of the tree is measured once. The PSS of a process includes the pages of /dev/shm it
maps and has touched, so "total PSS" already counts the rings and stats blocks; "shm" is
the instance's /dev/shm files apart (size, and pages really allocated), for reference.
`--baselines` measures the one-process asyncio designs of the benchmark the same way, at
the same rate. RSS sums are printed too: they count a shared page once per process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid

import psutil

from hftd import shm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 2 ** 20
BASELINES = ("asyncio_current", "asyncio_proposed")


def _label(p: psutil.Process, root_pid: int, root: str) -> str:
    try:
        cmd = [c for c in p.cmdline() if c]
    except psutil.Error:
        return "?"
    if "agent" in cmd:
        i = cmd.index("agent")
        role = cmd[i + 1] if i + 1 < len(cmd) else "?"
        if role == "strategy" and "--name" in cmd:
            role += "." + cmd[cmd.index("--name") + 1]
        return role
    if "fork-server" in cmd:
        return "fork-server"
    return root if p.pid == root_pid else " ".join(cmd[-3:])


def sample_tree(pid: int, root: str) -> list[dict]:
    root = psutil.Process(pid)
    out = []
    for p in [root] + root.children(recursive=True):
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        out.append({"pid": p.pid, "what": _label(p, pid, root), "pss": m.pss, "uss": m.uss,
                    "rss": m.rss})
    return out


def shm_of(instance: str) -> dict:
    size = alloc = 0
    for name in shm.leftovers(instance):
        try:
            st = os.stat("/dev/shm/" + name.lstrip("/"))
        except FileNotFoundError:
            continue
        size += st.st_size
        alloc += st.st_blocks * 512
    return {"size": size, "allocated": alloc}


def measure(cmd: list[str], settle: float, instance: str | None, env: dict,
            root: str = "process") -> dict:
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        time.sleep(settle)
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited early ({proc.returncode}): "
                               f"{proc.stderr.read().decode(errors='replace')[-2000:]}")
        procs = sample_tree(proc.pid, root)
        mem = shm_of(instance) if instance else {"size": 0, "allocated": 0}
    finally:
        _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    return {"processes": procs, "total_pss": sum(p["pss"] for p in procs),
            "total_uss": sum(p["uss"] for p in procs),
            "total_rss": sum(p["rss"] for p in procs), "shm": mem}


def hftd(rate: float, settle: float, duration: float, tmp: str) -> dict:
    inst = "mem" + uuid.uuid4().hex[:8]
    cfg = os.path.join(tmp, "hftd.toml")
    with open(cfg, "w") as f:  # the defaults, but a /metrics port of its own
        f.write('[metrics]\nlisten = "127.0.0.1:0"\n')
    env = dict(os.environ, XDG_STATE_HOME=os.path.join(tmp, "state"))
    cmd = [sys.executable, "-m", "hftd", "run", "--config", cfg, "--instance", inst,
           "--duration", str(duration), "--rate", str(rate)]
    return measure(cmd, settle, inst, env, root="supervisor")


def baseline(module: str, rate: float, settle: float, duration: float, tmp: str) -> dict:
    out = os.path.join(tmp, module + ".json")
    cmd = [sys.executable, "-m", f"bench.baselines.{module}", "--rate", str(rate),
           "--ticks", str(int(rate * duration)), "--out", out]
    return measure(cmd, settle, None, dict(os.environ))


def show(name: str, r: dict) -> str:
    lines = [f"{name}:"]
    for p in r["processes"]:
        lines.append(f"  {p['what']:<18} pid {p['pid']:>7}  PSS {p['pss'] / MiB:6.1f}  "
                     f"USS {p['uss'] / MiB:6.1f}  RSS {p['rss'] / MiB:6.1f} MiB")
    lines.append(f"  total PSS {r['total_pss'] / MiB:.1f} MiB, USS {r['total_uss'] / MiB:.1f} "
                 f"MiB (RSS sum {r['total_rss'] / MiB:.1f} MiB); shm files "
                 f"{r['shm']['size'] / MiB:.1f} MiB ({r['shm']['allocated'] / MiB:.1f} MiB "
                 f"allocated, already inside the PSS of the processes mapping it)")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before the sample")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds each design runs")
    ap.add_argument("--baselines", action="store_true",
                    help="also the one-process asyncio designs of the benchmark")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    res = {"rate": a.rate, "settle_s": a.settle, "cpu": _cpu_model()}
    with tempfile.TemporaryDirectory() as tmp:
        res["hftd"] = hftd(a.rate, a.settle, a.duration, tmp)
        print(show("hftd (default config)", res["hftd"]), flush=True)
        if a.baselines:
            for m in BASELINES:
                res[m] = baseline(m, a.rate, a.settle, a.duration, tmp)
                print(show(m, res[m]), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


if __name__ == "__main__":
    sys.exit(main())
