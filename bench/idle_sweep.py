"""How hftd's waiting and pinning settings trade CPU for tick-to-trade latency at a fixed
rate: one `hftd run` per variant, the same tick stream, numbers from hftd's own report.

    python -m bench.idle_sweep [--rate 10000] [--ticks 50000] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import uuid

from .harness import PY, ROOT

BASE = '[supervisor]\nstatus_interval_s = 0.0\n[metrics]\nlisten = ""\n'
PIN = ('[producer]\ncpus = [{0}]\n[dispatcher]\ncpus = [{1}]\n[[strategies]]\nname = "sample"\n'
       'cpus = [{2}]\n[executor]\ncpus = [{3}]\n')
VARIANTS = {
    "adaptive (default)": "",
    "adaptive spin_us=100": '[idle]\nspin_us = 100\n',
    "adaptive spin_us=0": '[idle]\nspin_us = 0\n',
    "blocking": '[idle]\nstrategy = "blocking"\n',
    "backoff (10 spins, 5 yields)": '[idle]\nstrategy = "backoff"\npark_us = 1000\n',
    "backoff spins=2": '[idle]\nstrategy = "backoff"\nspins = 2\nyields = 0\n',
    "backoff spins=50": '[idle]\nstrategy = "backoff"\nspins = 50\nyields = 0\n',
    "backoff yields=100": '[idle]\nstrategy = "backoff"\nspins = 0\nyields = 100\n',
    "yield": '[idle]\nstrategy = "yield"\n',
    "busy-spin": '[idle]\nstrategy = "busy-spin"\n',
    "blocking, all on CPU 0": '[idle]\nstrategy = "blocking"\n' + PIN.format(0, 0, 0, 0),
    "yield, pinned 0/1/1/0": '[idle]\nstrategy = "yield"\n' + PIN.format(0, 1, 1, 0),
    "yield, pinned 0/0/1/1": '[idle]\nstrategy = "yield"\n' + PIN.format(0, 0, 1, 1),
}


def run(name: str, toml: str, rate: float, ticks: int, tmp: str) -> dict:
    inst = "sweep" + uuid.uuid4().hex[:8]
    cfg = os.path.join(tmp, inst + ".toml")
    rep = os.path.join(tmp, inst + ".json")
    with open(cfg, "w") as f:
        f.write(BASE + toml)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run([PY, "-m", "hftd", "run", "--config", cfg, "--instance", inst,
                          "--ticks", str(ticks), "--rate", str(rate), "--report", rep],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        return {"error": res.stderr[-300:]}
    r = json.load(open(rep))
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return {"cpu_per_s": cpu / r["wall_time_s"], "t2t": r["tick_to_trade_us"],
            "dispatcher_p50": r["stages"]["dispatcher"]["latency_us"]["p50"],
            "strategy_p50": r["stages"]["strategy.sample"]["latency_us"]["p50"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=10_000)
    ap.add_argument("--ticks", type=int, default=50_000)
    ap.add_argument("--only", help="comma-separated variant names")
    a = ap.parse_args()
    names = a.only.split(",") if a.only else list(VARIANTS)
    print(f"`python -m bench.idle_sweep --rate {a.rate:g} --ticks {a.ticks}` "
          f"(tick-to-trade and stage latency from hftd's report, µs; CPU = agents + supervisor, "
          f"cores busy on average)\n")
    print("| variant | CPU (cores) | t2t p50 | t2t p90 | t2t p99 | t2t p99.9 | dispatcher p50 | strategy p50 |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            x = run(n, VARIANTS[n], a.rate, a.ticks, tmp)
            if "error" in x:
                print(f"| {n} | error: {x['error']} |")
                continue
            t = x["t2t"]
            print(f"| {n} | {x['cpu_per_s']:.2f} | {t['p50']:.1f} | {t['p90']:.1f} | {t['p99']:.1f} | "
                  f"{t['p99.9']:.1f} | {x['dispatcher_p50']:.1f} | {x['strategy_p50']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
