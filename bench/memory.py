"""Memory of a running instance, counted fairly: PSS (proportional set size: a page shared by
n processes counts 1/n in each, so the sum over processes counts every page once) and USS
(pages only that process has) of every process, plus the instance's shared memory.

    python -m bench.memory [--rate 10000] [--settle 5] [--duration 8] [--runs 3] [--baselines]
                           [--json FILE] [--toml TEXT]

hftd runs its default config (the embedded one; only the instance name, a free /metrics
port and a private state directory differ) at `--rate` ticks/s; after `--settle` seconds every
process of the tree is measured once. The PSS of a process includes the pages of /dev/shm it
maps and has touched, so "total PSS" already counts the rings and stats blocks; "shm" is
the instance's /dev/shm files apart (size, and pages really allocated), for reference.

PSS also divides a page shared with processes outside the tree (libpython, numpy's and
libc's code in the page cache, mapped by every Python program running) among all of them,
so it is lower on a busy machine than on one where the instance runs alone. "Distinct
pages" (as root: /proc/PID/pagemap) counts every physical page the tree maps once, as if
no other process shared it: the instance's footprint on a machine of its own, and an upper
bound of its PSS anywhere.
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

import struct

import psutil

from hftd import shm

from .harness import ROOT, cpu_model

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
    top = psutil.Process(pid)
    out = []
    for p in [top] + top.children(recursive=True):
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        out.append({"pid": p.pid, "what": _label(p, pid, root), "pss": m.pss, "uss": m.uss,
                    "rss": m.rss})
    return out


def distinct_pages(pids: list[int]) -> dict | None:
    """Bytes of the distinct physical pages the processes map, by kind (anon, file, shm);
    None without the privilege to see page frame numbers (root)."""
    frames: dict[int, str] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/pagemap", "rb") as pm:
                for line in maps:
                    parts = line.split()
                    path = parts[5] if len(parts) > 5 else ""
                    if path == "[vsyscall]":
                        continue
                    kind = ("shm" if path.startswith("/dev/shm/") else
                            "file" if path.startswith("/") else "anon")
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    pm.seek(lo // 4096 * 8)
                    for (e,) in struct.iter_unpack("<Q", pm.read((hi - lo) // 4096 * 8)):
                        if e >> 63:  # present
                            frames[e & ((1 << 55) - 1)] = kind
        except (FileNotFoundError, ProcessLookupError):
            continue
        except PermissionError:
            return None
    if frames and not any(frames):  # frame numbers read as 0: not privileged
        return None
    out = {"anon": 0, "file": 0, "shm": 0}
    for kind in frames.values():
        out[kind] += 4096
    out["total"] = sum(out.values())
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
        distinct = distinct_pages([p["pid"] for p in procs])
        mem = shm_of(instance) if instance else {"size": 0, "allocated": 0}
    finally:
        _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} exited {proc.returncode}: "
                           f"{err.decode(errors='replace')[-2000:]}")
    return {"processes": procs, "total_pss": sum(p["pss"] for p in procs),
            "total_uss": sum(p["uss"] for p in procs),
            "total_rss": sum(p["rss"] for p in procs), "shm": mem, "distinct": distinct}


def hftd(rate: float, settle: float, duration: float, tmp: str, toml: str = "") -> dict:
    inst = "mem" + uuid.uuid4().hex[:8]
    cfg = os.path.join(tmp, "hftd.toml")
    with open(cfg, "w") as f:  # the defaults, but a /metrics port of its own
        f.write(toml or '[metrics]\nlisten = "127.0.0.1:0"\n')
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
    d = r["distinct"]
    if d:
        lines.append(f"  distinct pages {d['total'] / MiB:.1f} MiB (anon {d['anon'] / MiB:.1f}, "
                     f"files {d['file'] / MiB:.1f}, shm {d['shm'] / MiB:.1f}): every page once, "
                     f"shared libraries whole")
    return "\n".join(lines)


def _median_run(runs: list[dict]) -> dict:
    """The run of median total PSS, with every run's totals beside it (PSS moves with what
    else runs on the machine: the shared libraries' pages are divided among more or fewer
    processes)."""
    best = sorted(runs, key=lambda r: r["total_pss"])[len(runs) // 2]
    best = dict(best)
    best["runs"] = [{k: r[k] for k in ("total_pss", "total_uss", "total_rss")}
                    | {"distinct": (r["distinct"] or {}).get("total")} for r in runs]
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds before the sample")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds each design runs")
    ap.add_argument("--runs", type=int, default=3,
                    help="runs of each design, interleaved; the one of median PSS is shown")
    ap.add_argument("--baselines", action="store_true",
                    help="also the one-process asyncio designs of the benchmark")
    ap.add_argument("--json", help="write the figures to this file")
    ap.add_argument("--toml", default="", help="hftd's config instead of the defaults (whose "
                    "/metrics port is made 0)")
    a = ap.parse_args(argv)
    res = {"command": "python -m bench.memory " + " ".join(argv if argv is not None
                                                          else sys.argv[1:]),
           "rate": a.rate, "settle_s": a.settle, "cpu": cpu_model(), "cpus": os.cpu_count()}
    runs: dict[str, list] = {"hftd": [], **{m: [] for m in (BASELINES if a.baselines else ())}}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.runs):
            runs["hftd"].append(hftd(a.rate, a.settle, a.duration, tmp, a.toml))
            for m in BASELINES if a.baselines else ():
                runs[m].append(baseline(m, a.rate, a.settle, a.duration, tmp))
    for name, rs in runs.items():
        res[name] = _median_run(rs)
        print(show("hftd (default config)" if name == "hftd" else name, res[name]))
        print("  every run: total PSS " + ", ".join(f"{r['total_pss'] / MiB:.1f}" for r in rs)
              + " MiB", flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
