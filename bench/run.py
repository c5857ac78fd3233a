"""The benchmark suite: hftd side by side with the pipelines it replaces.

    python -m bench.run [--quick] [--out DIR]       (make bench / make bench-quick)

Every design runs as its own process tree, measured from outside by `harness.measure`
(CPU, peak memory, wall time), on the same tick stream and strategy (`common`). Figures:
the highest rate with zero loss, tick-to-trade percentiles at 1k/10k/100k ticks/s, ticks
lost, CPU seconds and peak memory; then the ratio of hftd to each baseline.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import uuid
from importlib import metadata

from . import micro_ring
from .harness import PY, ROOT, measure

RATES = (1_000, 10_000, 100_000)
LADDER = (300_000, 100_000, 30_000, 10_000, 3_000, 1_000)

# hftd variants: extra TOML added to bench/hftd-bench.toml
HFTD_VARIANTS = {
    "hftd": "",  # the defaults: backoff idle
    "hftd (yield idle)": '[idle]\nstrategy = "yield"\n',  # the low-latency setting
    "hftd (no latency stats)": '[metrics]\nlisten = ""\nrecord_latency = false\n',
}

BASELINES = {
    "asyncio (current)": "asyncio_current",
    "asyncio (proposed)": "asyncio_proposed",
    "multiprocessing.Queue": "mpqueue",
    "ZeroMQ": "zmq_pipeline",
}
DESIGNS = [*HFTD_VARIANTS, *BASELINES]
COMPARED = ["hftd", *BASELINES]  # columns of the ratio table: hftd against the baselines


def run_design(design: str, rate: float, ticks: int, tmp: str) -> dict:
    out = os.path.join(tmp, f"{uuid.uuid4().hex}.json")
    timeout = 60 + ticks / max(rate, 20_000) * 3
    if design in HFTD_VARIANTS:
        inst = "bench" + uuid.uuid4().hex[:8]
        cfg = os.path.join(tmp, f"{inst}.toml")
        with open(cfg, "w") as f:
            base = open(os.path.join(ROOT, "bench", "hftd-bench.toml")).read()
            # every run starts from a clean trading state (positions, ids) of its own
            f.write(f'state_dir = "{os.path.join(tmp, "state")}"\n')
            f.write(_merge_toml(base, HFTD_VARIANTS[design]))
        cmd = [PY, "-m", "hftd", "run", "--config", cfg,
               "--instance", inst, "--ticks", str(ticks), "--rate", str(rate), "--report", out]
        m = measure(cmd, timeout, instance=inst)
        res = _from_hftd_report(out) if m["rc"] == 0 else {}
    else:
        cmd = [PY, "-m", f"bench.baselines.{BASELINES[design]}", "--rate", str(rate),
               "--ticks", str(ticks), "--out", out]
        m = measure(cmd, timeout)
        res = json.load(open(out)) if m["rc"] == 0 and os.path.exists(out) else {}
    if not res:
        res = {"error": f"exit {m['rc']}: {m['stderr_tail'][-400:]}"}
    res.update({k: m[k] for k in ("wall_s", "cpu_s", "peak_mem_bytes")})
    res["rate"] = rate
    return res


def _merge_toml(base: str, extra: str) -> str:
    """`base` with the tables of `extra` replacing its tables of the same name (whole
    tables: a variant spells out every key of a table it changes)."""
    import re

    body_re = r"((?:[^\[\n].*\n|\n)*)"
    tables = dict(re.findall(r"(\[[^\]]+\])\n" + body_re, extra))
    out = base
    for head, body in tables.items():
        if head in out:
            out = re.sub(re.escape(head) + r"\n" + body_re, lambda m: head + "\n" + body + "\n", out)
        else:
            out += "\n" + head + "\n" + body
    return out


def _from_hftd_report(path: str) -> dict:
    rep = json.load(open(path))
    t = rep["ticks"]
    delivered = t["delivered_to_strategies"]
    return {"sent": t["received"], "delivered": delivered,
            "lost": t["received"] - delivered - t["rejected"],
            "dropped_counted": t["dropped"] + t["conflated"], "orders": rep["orders"]["sent"],
            "active_s": rep["active_time_s"],
            "throughput": delivered / rep["active_time_s"] if rep["active_time_s"] else 0.0,
            "t2t_us": rep["tick_to_trade_us"]}


def sustained(design: str, ticks: int, seconds_per_step: float, tmp: str) -> dict:
    """Unpaced first; if that loses ticks, step down a ladder of paced rates until a run
    loses none. Returns the zero-loss run (its achieved throughput) and what was tried."""
    tried = []
    r = run_design(design, 0, ticks, tmp)
    tried.append((0, r.get("lost"), r.get("throughput")))
    if r.get("lost") == 0:
        return {"best": r, "tried": tried}
    for rate in LADDER:
        r = run_design(design, rate, max(int(rate * seconds_per_step), 2000), tmp)
        tried.append((rate, r.get("lost"), r.get("throughput")))
        if r.get("lost") == 0:
            return {"best": r, "tried": tried}
    return {"best": None, "tried": tried}


def machine() -> dict:
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    pkgs = {}
    for p in ("hftd", "numpy", "msgspec", "posix_ipc", "pyzmq", "faster-fifo", "psutil"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = "not installed"
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "machine": platform.machine(), "python": platform.python_version(), "packages": pkgs}


def _f(v, fmt="{:,.1f}"):
    return "—" if v is None else fmt.format(v)


def tables(res: dict) -> str:
    d = res["designs"]
    head = "| figure | " + " | ".join(DESIGNS) + " |\n|---|" + "---|" * len(DESIGNS) + "\n"
    rows = []

    def row(label, get, fmt="{:,.1f}"):
        vals = []
        for name in DESIGNS:
            try:
                vals.append(get(d[name]))
            except (KeyError, TypeError):
                vals.append(None)
        rows.append((label, vals, fmt))

    row("sustained throughput, zero loss (ticks/s)",
        lambda x: x["sustained"]["best"]["throughput"], "{:,.0f}")
    row("unpaced: ticks lost", lambda x: x["sustained"]["tried"][0][1], "{:,}")
    for rate in RATES:
        k = f"rate_{rate}"
        for q in ("p50", "p99", "p99.9"):
            row(f"tick-to-trade {q} @ {rate:,}/s (µs)", lambda x, k=k, q=q: x[k]["t2t_us"][q])
        row(f"ticks lost @ {rate:,}/s", lambda x, k=k: x[k]["lost"], "{:,}")
    row("CPU seconds per 1,000 ticks @ 10,000/s",
        lambda x: x["rate_10000"]["cpu_s"] / x["rate_10000"]["sent"] * 1000, "{:.3f}")
    row("peak memory @ 10,000/s (MB, RSS + shm)",
        lambda x: x["rate_10000"]["peak_mem_bytes"] / 1e6, "{:,.0f}")
    row("peak memory unpaced (MB, RSS + shm)",
        lambda x: x["sustained"]["best"]["peak_mem_bytes"] / 1e6, "{:,.0f}")
    out = head + "\n".join(f"| {lab} | " + " | ".join(_f(v, fmt) for v in vals) + " |"
                           for lab, vals, fmt in rows)

    # ratios: > 1 means hftd is better (more throughput, less latency/CPU/memory)
    higher_is_better = {rows[0][0]}
    rh = ("\n\n**hftd relative to each baseline** (> 1 = hftd better: × throughput, or × less "
          "latency / CPU / memory)\n\n| figure | " + " | ".join(BASELINES) + " |\n|---|" +
          "---|" * len(BASELINES) + "\n")
    lines = []
    base_cols = [DESIGNS.index(b) for b in BASELINES]
    for lab, vals, _ in rows:
        if "lost" in lab:
            continue
        h = vals[0]
        cells = []
        for v in (vals[i] for i in base_cols):
            if h is None or v is None or h == 0 or v == 0:
                cells.append("—")
            else:
                cells.append(f"{(h / v if lab in higher_is_better else v / h):,.1f}×")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    out += rh + "\n".join(lines)

    m = res.get("micro") or {}
    if m:
        out += ("\n\n**One hop, two processes** (same msgspec tick)\n\n| transport | msgs/s unpaced | "
                + " | ".join(f"p50 / p99 @ {r:,}/s (µs)" for r in RATES) + " |\n|---|---|"
                + "---|" * len(RATES) + "\n")
        for name, v in m.items():
            if "error" in v:
                out += f"| {name} | {v['error']} |\n"
                continue
            cells = [f"{v['throughput']['msgs_per_s']:,.0f}"]
            for r in RATES:
                lat = v[f"latency@{r}"]
                cells.append(lat["error"] if "error" in lat else
                             f"{_f(lat['p50'])} / {_f(lat['p99'])}")
            out += f"| {name} | " + " | ".join(cells) + " |\n"
    return out


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name in DESIGNS:
        x = res["designs"][name]
        pts = [(r, x[f"rate_{r}"]["t2t_us"]) for r in RATES if x.get(f"rate_{r}", {}).get("t2t_us")]
        pts = [(r, t) for r, t in pts if t.get("p50") is not None]
        if not pts:
            continue
        line, = ax1.plot([r for r, _ in pts], [t["p50"] for _, t in pts], "o-", label=f"{name} p50")
        ax1.plot([r for r, _ in pts], [t["p99"] for _, t in pts], "s--", color=line.get_color(),
                 label=f"{name} p99", alpha=0.7)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("tick rate (ticks/s)")
    ax1.set_ylabel("tick-to-trade (µs)")
    ax1.set_title("Tick-to-trade latency vs rate")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=7, ncol=2)
    vals = []
    for name in DESIGNS:
        best = res["designs"][name].get("sustained", {}).get("best")
        vals.append(best["throughput"] if best else 0)
    bars = ax2.bar(range(len(DESIGNS)), [max(v, 1) for v in vals],
                   color=["tab:green" if n in HFTD_VARIANTS else "tab:gray" for n in DESIGNS])
    ax2.set_xticks(range(len(DESIGNS)), DESIGNS, rotation=20, fontsize=8, ha="right")
    ax2.set_yscale("log")
    ax2.set_ylabel("ticks/s")
    ax2.set_title("Sustained throughput with zero loss")
    for b, v in zip(bars, vals):
        ax2.text(b.get_x() + b.get_width() / 2, max(v, 1), f"{v:,.0f}", ha="center",
                 va="bottom", fontsize=8)
    fig.suptitle(f"hftd benchmark ({res['mode']}, {res['machine']['cpus']} CPUs, "
                 f"{res['machine']['cpu_model']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (about 2 minutes)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--designs", help="comma-separated subset of: " + ", ".join(DESIGNS))
    ap.add_argument("--render", metavar="JSON",
                    help="measure nothing: rewrite the .md and .png of a saved results JSON")
    args = ap.parse_args()
    if args.render:
        res = json.load(open(args.render))
        write(res, os.path.splitext(args.render)[0], res["mode"] == "quick")
        return 0
    mode = "quick" if args.quick else "full"
    seconds = 1.5 if args.quick else 8.0
    unpaced_ticks = 200_000 if args.quick else 1_000_000
    designs = args.designs.split(",") if args.designs else DESIGNS
    res = {"mode": mode, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": machine(), "designs": {}}
    print(f"# hftd benchmark ({mode}) on {res['machine']['cpus']} CPUs: "
          f"{res['machine']['cpu_model']}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hftd-bench-") as tmp:
        print("one hop ...", flush=True)
        res["micro"] = micro_ring.run(args.quick)
        for name in DESIGNS:
            if name not in designs:
                res["designs"][name] = {}
                continue
            x = {}
            print(f"{name}: unpaced {unpaced_ticks:,} ticks ...", flush=True)
            x["sustained"] = sustained(name, unpaced_ticks, seconds / 2, tmp)
            for rate in RATES:
                print(f"{name}: {rate:,} ticks/s for {seconds:g} s ...", flush=True)
                x[f"rate_{rate}"] = run_design(name, rate, int(rate * seconds), tmp)
            res["designs"][name] = x
    os.makedirs(args.out, exist_ok=True)
    write(res, os.path.join(args.out, f"bench-{mode}"), args.quick)
    return 0


def write(res: dict, stem: str, quick: bool) -> None:
    """The results as markdown (table, ratios, one-hop table, then bench/ANALYSIS.md), JSON
    and a PNG plot, all named `stem`.*; the table is printed too."""
    table = tables(res)
    m = res["machine"]
    header = (f"# hftd benchmark ({res['mode']}), {res['date']}\n\nMachine: {m['cpus']} CPUs, "
              f"{m['cpu_model']}, {m['machine']}, Linux {m['kernel']}, Python {m['python']}; "
              + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".\n\nCommand: `python -m "
              f"bench.run{' --quick' if quick else ''}`. Plot: `{os.path.basename(stem)}.png`."
              "\n\n")
    analysis = os.path.join(ROOT, "bench", "ANALYSIS.md")
    text = header + table + "\n"
    if os.path.exists(analysis):
        text += "\n" + open(analysis).read()
    with open(stem + ".md", "w") as f:
        f.write(text)
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    try:
        plot(res, stem + ".png")
    except ImportError:
        print("matplotlib not installed: no plot", file=sys.stderr)
    print()
    print(table)
    print(f"\nwritten: {stem}.md {stem}.json {stem}.png")


if __name__ == "__main__":
    sys.exit(main())
