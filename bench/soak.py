"""Soak: hftd at a steady rate for a long time, memory and latency sampled as it runs.

    python -m bench.soak [--minutes 10] [--rate 100000] [--every 10] [--out bench/results]
    (make soak)

Every `--every` seconds: PSS and RSS of every process of the instance (the supervisor, the
fork server, each agent), and the executor's tick-to-trade histogram, read from its stats
block. From those: each process's memory growth after the first minute (issue 12: < 1 MiB),
and tick-to-trade p99 per minute (the histogram's words of one sample minus the one a minute
before), the last minute's against the second's (issue 12: within 1.5x). Writes soak.json,
soak.md and soak.png to `--out`; exits 1 if a criterion fails (the figures are kept either
way: they are reported as measured).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import psutil

from hftd import histogram as hist_mod
from hftd.monitor import InstanceView, NotRunning

from .harness import PY, ROOT, cpu_model
from .memory import _label

MIB = 1 << 20
GROWTH_LIMIT_MIB = 1.0
P99_RATIO_LIMIT = 1.5


def p99_between(a: np.ndarray, b: np.ndarray) -> float:
    """p99 (µs) of the samples recorded between two copies `a` (earlier) and `b` of a
    histogram's words: their buckets' difference, each bucket at its midpoint."""
    d = (b - a)[hist_mod.HEAD_WORDS:]
    cum = np.cumsum(d)
    total = int(cum[-1]) if len(cum) else 0
    if total <= 0:
        return float("nan")
    i = int(np.searchsorted(cum, max(1, int(np.ceil(0.99 * total)))))
    return float(hist_mod._MID[i]) / 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=100_000.0)
    ap.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    duration = a.minutes * 60
    inst = "soak" + uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="hftd-soak-")
    cfg = os.path.join(tmp, "soak.toml")
    with open(cfg, "w") as f:
        f.write(f'instance = "{inst}"\nstate_dir = "{tmp}/state"\nruntime_dir = "{tmp}/run"\n'
                f'[metrics]\nlisten = ""\n[supervisor]\nstatus_interval_s = 0.0\n')
    cmd = [PY, "-m", "hftd", "run", "--config", cfg, "--rate", str(a.rate),
           "--duration", str(duration), "--report", os.path.join(tmp, "report.json")]
    print(f"soak: {a.minutes:g} min at {a.rate:,.0f} ticks/s, a sample every {a.every:g} s "
          f"(instance {inst})", flush=True)
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    view = None
    deadline = time.monotonic() + 60
    while view is None:
        try:
            view = InstanceView.attach(inst, os.path.join(tmp, "run"))
        except NotRunning:
            if time.monotonic() > deadline or proc.poll() is not None:
                print("soak: the instance did not start", file=sys.stderr)
                proc.kill()
                return 1
            time.sleep(0.2)
    sup = psutil.Process(proc.pid)
    t0 = time.monotonic()
    samples = []
    try:
        while proc.poll() is None:
            t = time.monotonic() - t0
            mem = {}
            for p in [sup, *sup.children(recursive=True)]:
                try:
                    m = p.memory_full_info()
                    mem[_label(p, sup.pid, "supervisor")] = (m.pss / MIB, m.rss / MIB)
                except psutil.Error:
                    pass
            snap = view.blocks["executor"].snapshot()
            words = snap["histograms"]["tick_to_trade"].words.copy()
            published = view.blocks["producer"].snapshot()["values"]["published"]
            samples.append({"t": t, "mem": mem, "words": words, "published": published})
            print(f"[{t:6.0f} s] ticks {published:,}  PSS total "
                  f"{sum(v[0] for v in mem.values()):.1f} MiB", flush=True)
            time.sleep(max(0.0, a.every - (time.monotonic() - t0 - t)))
            if t > duration + 30:
                break
    finally:
        _, err = proc.communicate(timeout=120)
        view.close()
    return report(a, samples, proc.returncode, err, inst)


def report(a, samples, rc, err, inst) -> int:
    ok = True
    per_min = max(1, round(60 / a.every))
    late = [s for s in samples if s["t"] >= 60]
    names = sorted({n for s in samples for n in s["mem"]})
    growth = {}
    for n in names:
        xs = [s["mem"][n][0] for s in late if n in s["mem"]]
        if len(xs) >= 2:
            growth[n] = {"pss_at_1min": round(xs[0], 2), "pss_max_after": round(max(xs), 2),
                         "pss_last": round(xs[-1], 2), "growth_mib": round(max(xs) - xs[0], 3)}
    # p99 per minute: the histogram between samples a minute apart
    minutes = []
    for k in range(per_min, len(samples), per_min):
        minutes.append(p99_between(samples[k - per_min]["words"], samples[k]["words"]))
    second = minutes[1] if len(minutes) > 1 else float("nan")
    last = minutes[-1] if minutes else float("nan")
    ratio = last / second if second and second == second else float("nan")
    worst_growth = max((g["growth_mib"] for g in growth.values()), default=float("nan"))
    if not (worst_growth < GROWTH_LIMIT_MIB):
        ok = False
    if not (ratio <= P99_RATIO_LIMIT):
        ok = False
    if rc != 0:
        ok = False
    out = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "command": f"python -m bench.soak --minutes {a.minutes:g} --rate {a.rate:g} "
                   f"--every {a.every:g}",
        "machine": {"cpus": os.cpu_count(), "cpu_model": cpu_model(),
                    "python": platform.python_version()},
        "exit_code": rc, "ticks": samples[-1]["published"] if samples else 0,
        "memory_growth_after_first_minute": growth,
        "p99_us_per_minute": [round(x, 1) for x in minutes],
        "p99_last_over_second": round(ratio, 3) if ratio == ratio else None,
        "criteria": {"growth_under_1_mib_per_process": worst_growth < GROWTH_LIMIT_MIB,
                     "p99_last_within_1_5x_of_second": bool(ratio <= P99_RATIO_LIMIT),
                     "exit_0": rc == 0},
        "samples": [{"t": round(s["t"], 1), "published": s["published"],
                     "pss_mib": {n: round(v[0], 2) for n, v in s["mem"].items()},
                     "rss_mib": {n: round(v[1], 2) for n, v in s["mem"].items()}}
                    for s in samples],
    }
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "soak.json"), "w") as f:
        json.dump(out, f, indent=1)
    lines = [f"# hftd soak, {out['when']}", "",
             f"Machine: {out['machine']['cpus']} CPUs, **{out['machine']['cpu_model']}**, Python "
             f"{out['machine']['python']}. Command: `{out['command']}`. Exit code {rc}; "
             f"{out['ticks']:,} ticks.", "",
             "| process | PSS at 1 min (MiB) | most after (MiB) | last (MiB) | growth (MiB) |",
             "|---|---|---|---|---|"]
    for n, g in growth.items():
        lines.append(f"| {n} | {g['pss_at_1min']} | {g['pss_max_after']} | {g['pss_last']} | "
                     f"{g['growth_mib']} |")
    lines += ["", "Tick-to-trade p99 per minute (µs): "
              + ", ".join(f"{x:,.0f}" for x in minutes)
              + f"; last / second = {out['p99_last_over_second']}.", "",
              "Criteria (issue 12): " + ", ".join(f"{k} {'yes' if v else 'NO'}"
                                                   for k, v in out["criteria"].items()), ""]
    with open(os.path.join(a.out, "soak.md"), "w") as f:
        f.write("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7))
        ts = [s["t"] / 60 for s in samples]
        for n in names:
            ax1.plot(ts, [s["mem"].get(n, (np.nan,))[0] for s in samples], label=n)
        ax1.set_ylabel("PSS (MiB)")
        ax1.set_xlabel("minutes")
        ax1.legend(fontsize=7)
        ax1.set_title(f"hftd soak at {a.rate:,.0f} ticks/s ({out['machine']['cpu_model']})")
        ax2.plot(range(1, len(minutes) + 1), minutes, marker="o")
        ax2.set_ylabel("tick-to-trade p99 (µs)")
        ax2.set_xlabel("minute")
        fig.tight_layout()
        fig.savefig(os.path.join(a.out, "soak.png"), dpi=100)
    except ImportError:
        pass
    print("\n".join(lines))
    if rc != 0:
        print(f"soak: hftd run exited {rc}: {err[-2000:]}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
