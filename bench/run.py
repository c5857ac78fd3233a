"""The benchmark suite: hftd side by side with the pipelines it replaces, and the ceiling.

    python -m bench.run [--quick] [--out DIR]       (make bench / make bench-quick)

Every design runs as its own process tree, measured from outside by `harness.measure`, on
the same tick stream and strategy (`common`). Two phases:

1. **Throughput, in interleaved rounds** (5; the design order rotated from round to round,
   the ceiling measured among them). In each round every design gets the same capacity
   measurement: one unpaced run (1M ticks; from round 2 on, a slow design's is cut to about
   4 s of its first-round capacity); if it loses no tick, its delivered rate is the design's
   zero-loss capacity (a design with backpressure blocks instead of losing); if it loses,
   the capacity is the highest paced rate that loses nothing, found by bisection to within
   5 % (`search_zero_loss`), and the figure is that run's delivered rate, not the rate
   offered. Every design's capacity is also given as a fraction of the ceiling of the same
   round (the same strategy code fed the same ticks in one process, batches of 256 decoded
   with one msgspec call, no IPC: `baselines/ceiling.py`). Figures: medians over the rounds,
   with their range.
2. **Latency and cost at fixed rates** (100, 1k, 10k, 100k ticks/s; each rate's designs in a
   rotated order): tick-to-trade percentiles, ticks lost, cores used (CPU seconds per wall
   second of the tree inside the run's active window), memory as the peak PSS sum of the
   tree (and USS, RSS sums).

Every run also records the cores the rest of the machine used meanwhile (`background_cores`):
the machine is shared. A fixed-rate run, or a round's unpaced run, during which that exceeded
`DISTURBED` (0.2 cores) is repeated, at most twice and within a time allowance per phase, and
the least disturbed attempt is kept (chosen by that load alone, never by its figures); the
tables show the load of what was kept.

Then the one-hop table (`micro_ring`), and an analysis written from this run's figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from importlib import metadata

from . import micro_ring
from .harness import PY, ROOT, cpu_model, measure

RATES = (100, 1_000, 10_000, 100_000)
MICRO_RATES = (1_000, 10_000, 100_000)
ROUNDS = 5  # full; quick: QUICK_ROUNDS
QUICK_ROUNDS = 3
TOLERANCE = 1.05  # the zero-loss search stops when the lossy and lossless rates are this close
MIN_STEP_TICKS = 2_000
UNPACED_S = 4.0  # after round 1, unpaced runs last about this long at most (>= 1/5 of the ticks)
# A run during which the rest of the machine used more than this many cores is repeated (up to
# twice, while the phase's allowance of time lasts) and the least disturbed attempt is kept.
DISTURBED = 0.2

# hftd variants: extra TOML added to bench/hftd-bench.toml
HFTD_VARIANTS = {
    "hftd": "",  # the defaults: adaptive idle
    "hftd (yield idle)": '[idle]\nstrategy = "yield"\n',  # the low-latency setting
    "hftd (no latency stats)": '[metrics]\nlisten = ""\nrecord_latency = false\n',
}
# hftd with the vectorised sample strategy (on_ticks over numpy columns) in place of Momentum:
# its own phase (unpaced, end to end), not a column of the tables (the ceiling is Momentum's)
VECTOR = "hftd (on_ticks: VectorMomentum)"
VECTOR_TOML = ('[[strategies]]\nname = "sample"\n'
               'class = "hftd.strategies.momentum:VectorMomentum"\n')
VECTOR_RUNS = 3

BASELINES = {
    "asyncio (current)": "asyncio_current",
    "asyncio (proposed)": "asyncio_proposed",
    "multiprocessing.Queue": "mpqueue",
    "ZeroMQ (per tick)": "zmq_pipeline",
    "ZeroMQ (batched)": "zmq_batched",
}
# the designs that fork their four stages, in this order, from a main process
FORKED_STAGES = {"multiprocessing.Queue", "ZeroMQ (per tick)", "ZeroMQ (batched)"}
STAGE_ROLES = ("producer", "dispatcher", "strategy", "executor")
CEILING = "ceiling"
CEILING_MODULE = "ceiling"
DESIGNS = [*HFTD_VARIANTS, *BASELINES]  # the pipelines: throughput rounds and fixed rates
ROUND_DESIGNS = [*DESIGNS, CEILING]  # the throughput rounds: the pipelines and the ceiling
STRONG = "ZeroMQ (batched)"  # the strongest baseline, hftd's reference in the analysis
ASYNCIO = ["asyncio (current)", "asyncio (proposed)"]


def run_design(design: str, rate: float, ticks: int, tmp: str) -> dict:
    """One run of `design` at `rate` ticks/s (0: unpaced) for `ticks` ticks, measured by the
    harness: the design's own result (sent, delivered, lost, throughput, t2t_us, ...) with
    wall_s, cpu_s, pss/uss/rss/shm_bytes and `cores` (over the active window)."""
    out = os.path.join(tmp, f"{uuid.uuid4().hex}.json")
    timeout = 60 + ticks / max(rate, 20_000) * 3
    if design in HFTD_VARIANTS or design == VECTOR:
        inst = "bench" + uuid.uuid4().hex[:8]
        cfg = os.path.join(tmp, f"{inst}.toml")
        with open(cfg, "w") as f:
            base = open(os.path.join(ROOT, "bench", "hftd-bench.toml")).read()
            # every run starts from a clean trading state (positions, ids) of its own
            f.write(f'state_dir = "{os.path.join(tmp, "state")}"\n')
            f.write(_merge_toml(base, HFTD_VARIANTS[design]) if design != VECTOR else
                    base + "\n" + VECTOR_TOML)
        cmd = [PY, "-m", "hftd", "run", "--config", cfg,
               "--instance", inst, "--ticks", str(ticks), "--rate", str(rate), "--report", out]
        m = measure(cmd, timeout, instance=inst)
        res = _from_hftd_report(out) if m["rc"] == 0 else {}
    else:
        module = CEILING_MODULE if design == CEILING else BASELINES[design]
        cmd = [PY, "-m", f"bench.baselines.{module}", "--rate", str(rate),
               "--ticks", str(ticks), "--out", out]
        m = measure(cmd, timeout)
        res = json.load(open(out)) if m["rc"] == 0 and os.path.exists(out) else {}
    if not res:
        res = {"error": f"exit {m['rc']}: {m['stderr_tail'][-400:]}"}
    res.update({k: m[k] for k in ("wall_s", "cpu_s", "pss_bytes", "uss_bytes", "rss_bytes",
                                  "shm_bytes")})
    t0, t1 = res.get("t_first_ns", 0), res.get("t_last_ns", 0)
    res["cores"] = m["tree"].cores(t0, t1) if t0 and t1 else None
    res["background_cores"] = m["tree"].background(t0, t1) if t0 and t1 else None
    byp = m["tree"].cores_by_process(t0, t1) if t0 and t1 else {}
    if design in FORKED_STAGES:  # their children are the stages, started in this order
        byp = {(STAGE_ROLES[int(k.split()[1]) - 1] if k.startswith("child ") and
                int(k.split()[1]) <= len(STAGE_ROLES) else k): v for k, v in byp.items()}
    res["cores_by_process"] = byp
    res["rate"] = rate
    res["ticks"] = ticks
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
    stages = rep.get("stages", {})
    first = stages.get("producer", {}).get("values", {}).get("first_ingest_ns", 0)
    last = max((s.get("values", {}).get("last_tick_ns", 0) for s in stages.values()
                if s.get("role") == "strategy"), default=0)
    return {"sent": t["received"], "delivered": delivered,
            "lost": t["received"] - delivered - t["rejected"],
            "dropped_counted": t["dropped"] + t["conflated"], "orders": rep["orders"]["sent"],
            "active_s": rep["active_time_s"],
            "throughput": delivered / rep["active_time_s"] if rep["active_time_s"] else 0.0,
            "t2t_us": rep["tick_to_trade_us"], "t_first_ns": first, "t_last_ns": last}


def _ok(r: dict | None) -> bool:
    return bool(r) and "error" not in r and r.get("lost") == 0 and r.get("delivered", 0) > 0


def search_zero_loss(probe, guess: float, factor: float = 2.0, tol: float = TOLERANCE,
                     max_runs: int = 10, floor: float = 100.0):
    """The highest paced rate at which `probe(rate)` (a run's result: lost, throughput)
    loses nothing, to within `tol`: from `guess`, step by `factor` up (while runs lose
    nothing) or down (while they lose), the step squared each time (a guess far off costs a
    few runs, not one per `factor`), until one run of each kind brackets it, then bisect
    (geometrically) until the lossy rate is within `tol` of the lossless one. Returns (the
    lossless run with the highest delivered rate or None, [(rate, lost, throughput), ...],
    whether it got to within `tol` before `max_runs`)."""
    lo = hi = None  # highest offered rate that lost nothing / lowest that lost
    best = None
    tried = []
    rate = guess
    converged = False
    while len(tried) < max_runs and rate >= floor:
        r = probe(rate)
        tried.append((rate, r.get("lost"), r.get("throughput")))
        if _ok(r):
            lo = rate if lo is None else max(lo, rate)
            if best is None or r["throughput"] > best["throughput"]:
                best = r
        else:
            hi = rate if hi is None else min(hi, rate)
        if lo is not None and hi is not None:
            if hi <= lo * tol * (1 + 1e-9) or hi <= lo:
                converged = True
                break
            rate = math.sqrt(lo * hi)
        elif lo is None:
            rate = hi / factor
            factor *= factor
        else:
            rate = lo * factor
            factor *= factor
    return best, tried, converged


class Budget:
    """Seconds that repeated runs may still take (a phase's allowance), and the monotonic
    time after which none is repeated at all (the whole run's limit)."""

    def __init__(self, seconds: float, until: float = math.inf):
        self._left = seconds
        self.until = until

    @property
    def left(self) -> float:
        return self._left if time.monotonic() < self.until else 0.0

    @left.setter
    def left(self, v: float) -> None:
        self._left = v


def undisturbed(run, budget: Budget, tries: int = 3) -> dict:
    """`run()`, repeated while the rest of the machine took more than DISTURBED cores during
    it (at most `tries` runs, while `budget` lasts): the least disturbed run, whatever its
    figures, with every attempt's load in `attempts`."""
    runs = [run()]
    while (len(runs) < tries and budget.left > 0
           and (runs[-1].get("background_cores") or 0) > DISTURBED):
        t0 = time.monotonic()
        runs.append(run())
        budget.left -= time.monotonic() - t0
    best = min(runs, key=lambda r: 9.0 if r.get("background_cores") is None
               else r["background_cores"])
    best["attempts"] = [r.get("background_cores") for r in runs]
    return best


def capacity(design: str, ticks: int, step_s: float, tmp: str, guess: float | None = None,
             factor: float = 2.0, budget: Budget | None = None) -> dict:
    """One round's zero-loss capacity of `design`: unpaced if that loses nothing, else the
    paced search (steps of `step_s` seconds). `throughput` is the chosen run's delivered rate.
    The unpaced run is repeated if it was disturbed (`undisturbed`)."""
    first = undisturbed(lambda: run_design(design, 0, ticks, tmp), budget or Budget(0))
    out = {"unpaced": first}
    if _ok(first):
        return {**out, "how": "unpaced", "best": first, "throughput": first["throughput"]}
    g = guess or first.get("throughput") or 10_000.0
    best, tried, converged = search_zero_loss(
        lambda rate: run_design(design, rate, max(int(rate * step_s), MIN_STEP_TICKS), tmp),
        g, factor)
    return {**out, "how": "paced" if converged else "paced, not within 5 %", "best": best,
            "tried": tried,
            "throughput": best["throughput"] if best else None}


def machine() -> dict:
    model = cpu_model()
    pkgs = {}
    for p in ("hftd", "numpy", "msgspec", "posix_ipc", "pyzmq", "faster-fifo", "psutil"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            pkgs[p] = "not installed"
    return {"cpus": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
            "machine": platform.machine(), "python": platform.python_version(), "packages": pkgs}


# --- the figures, from the saved results ---------------------------------------------------
def _rot(names: list, k: int, n: int) -> list:
    """`names` rotated for round (or phase) k of n, so each starts at a different place."""
    s = (k * len(names) // max(n, 1)) % len(names)
    return names[s:] + names[:s]


def round_figures(res: dict) -> dict:
    """Per design: its capacity in each round, the fraction of that round's ceiling, and the
    ratio hftd / design in each round."""
    rounds = res.get("rounds", [])
    out = {}
    for name in ROUND_DESIGNS:
        caps, fracs = [], []
        for rd in rounds:
            c = (rd.get(name) or {}).get("throughput")
            ceil = (rd.get(CEILING) or {}).get("throughput")
            caps.append(c)
            fracs.append(c / ceil if c and ceil else None)
        out[name] = {"caps": caps, "fracs": fracs}
    for name in ROUND_DESIGNS:
        h = out["hftd"]["caps"] if "hftd" in out else []
        out[name]["hftd_over"] = [a / b if a and b else None for a, b in zip(h, out[name]["caps"])]
    return out


def _med(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _rng(xs) -> tuple | None:
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else None


def _disturbed(run: dict | None) -> bool:
    """Whether the rest of the machine took more than DISTURBED cores during `run`."""
    return bool(run) and (run.get("background_cores") or 0) > DISTURBED


def _rates(res: dict) -> list:
    return list(res.get("settings", {}).get("rates", RATES))


def _f(v, fmt="{:,.1f}"):
    return "—" if v is None else fmt.format(v)


def _mib(b) -> float | None:
    return b / 2**20 if b else None


def _get(d: dict, *path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def tables(res: dict) -> str:
    d = res["designs"]
    rf = round_figures(res)
    n_rounds = len(res.get("rounds", []))
    rates = _rates(res)
    cols = ROUND_DESIGNS
    head = "| figure | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols) + "\n"
    rows = []

    def row(label, get, fmt="{:,.1f}", designs=DESIGNS, rate=None):
        """`rate`: the figure is of that fixed-rate run; it is marked † if the run was
        disturbed (more than DISTURBED cores of other load)."""
        vals = []
        for name in cols:
            try:
                v = get(name) if name in designs else None
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                v = None
            if v is not None and rate is not None and _disturbed(_get(d, name, f"rate_{rate}")):
                v = (v, "†")
            vals.append(v)
        rows.append((label, vals, fmt))

    row(f"zero-loss capacity, median of {n_rounds} rounds (ticks/s)",
        lambda n: _med(rf[n]["caps"]), "{:,.0f}", ROUND_DESIGNS)
    row("  its range over the rounds (ticks/s)",
        lambda n: "{:,.0f}–{:,.0f}".format(*_rng(rf[n]["caps"])), "{}", ROUND_DESIGNS)
    row("  measured", lambda n: "/".join(sorted({rd[n]["how"] for rd in res["rounds"]
                                                if rd.get(n)})) or None, "{}", ROUND_DESIGNS)
    row("  fraction of the ceiling, median (%)", lambda n: 100 * _med(rf[n]["fracs"]), "{:.0f}",
        ROUND_DESIGNS)
    row("  fraction of the ceiling, range (%)",
        lambda n: "{:.0f}–{:.0f}".format(*(100 * x for x in _rng(rf[n]["fracs"]))), "{}",
        ROUND_DESIGNS)
    row("unpaced: ticks lost (most in a round)",
        lambda n: max(_get(rd, n, "unpaced", "lost") for rd in res["rounds"]), "{:,}",
        ROUND_DESIGNS)
    for rate in rates:
        k = f"rate_{rate}"
        qs = ("p50", "p99") if rate == 100 else ("p50", "p99", "p99.9")
        for q in qs:
            row(f"tick-to-trade {q} @ {rate:,}/s (µs)", lambda n, k=k, q=q: d[n][k]["t2t_us"][q],
                rate=rate)
        row(f"ticks lost @ {rate:,}/s", lambda n, k=k: d[n][k]["lost"], "{:,}", rate=rate)
    for rate in rates:
        row(f"cores used @ {rate:,}/s", lambda n, r=rate: d[n][f"rate_{r}"]["cores"], "{:.2f}",
            rate=rate)
    row("memory @ 10,000/s: PSS sum (MiB)", lambda n: _mib(d[n]["rate_10000"]["pss_bytes"]),
        "{:,.0f}", rate=10_000)
    row("memory @ 10,000/s: USS sum (MiB)", lambda n: _mib(d[n]["rate_10000"]["uss_bytes"]),
        "{:,.0f}")
    row("memory @ 10,000/s: RSS sum (MiB, counts shared pages again in each process)",
        lambda n: _mib(d[n]["rate_10000"]["rss_bytes"]), "{:,.0f}")
    if 100_000 in rates:
        row("memory @ 100,000/s: PSS sum (MiB)",
            lambda n: _mib(d[n]["rate_100000"]["pss_bytes"]), "{:,.0f}")
    row("fixed-rate runs repeated because the machine was busy",
        lambda n: sum(len(d[n][f"rate_{r}"].get("attempts", [0])) - 1 for r in rates), "{:,}")
    row("other load on the machine during the fixed-rate runs (cores, most in a kept run)",
        lambda n: max(v for r in rates if (v := d[n][f"rate_{r}"].get("background_cores"))
                      is not None), "{:.2f}")
    def cell(v, fmt):
        return _f(v[0], fmt) + " " + v[1] if isinstance(v, tuple) else _f(v, fmt)

    out = head + "\n".join(f"| {lab} | " + " | ".join(cell(v, fmt) for v in vals) + " |"
                           for lab, vals, fmt in rows)
    out += (f"\n\n† the run shared the machine with more than {DISTURBED} cores of other work "
            "(every attempt did, or the time allowed for repeats was used up): read it as "
            "disturbed.")

    # ratios: > 1 means hftd is better (more throughput, less latency/CPU/memory)
    base = list(BASELINES)
    out += ("\n\n**hftd relative to each baseline** (> 1 = hftd better: × throughput, or × less "
            "latency / CPU / memory; throughput: median of the per-round ratios)\n\n| figure | "
            + " | ".join(base) + " |\n|---|" + "---|" * len(base) + "\n")
    ratio_rows = [("zero-loss capacity", lambda n: _med(rf[n]["hftd_over"]), False)]
    for rate in [r for r in rates if r >= 1_000]:
        for q in ("p50", "p99"):
            ratio_rows.append((f"tick-to-trade {q} @ {rate:,}/s",
                               lambda n, r=rate, q=q: d[n][f"rate_{r}"]["t2t_us"][q], True))
    ratio_rows.append(("cores used @ 10,000/s", lambda n: d[n]["rate_10000"]["cores"], True))
    ratio_rows.append(("memory @ 10,000/s (PSS sum)", lambda n: d[n]["rate_10000"]["pss_bytes"],
                       True))
    for lab, get, lower_is_better in ratio_rows:
        cells = []
        for n in base:
            try:
                if lower_is_better:
                    h, v = get("hftd"), get(n)
                    cells.append(f"{v / h:,.1f}×" if h and v else "—")
                else:
                    v = get(n)
                    cells.append(f"{v:,.2f}×" if v else "—")
            except (KeyError, TypeError):
                cells.append("—")
        out += f"| {lab} | " + " | ".join(cells) + " |\n"

    # every round, as measured: compare within a round
    out += ("\n**Every round** (zero-loss capacity in ticks/s, and % of that round's ceiling; "
            "the order the designs ran in is the round's own)\n\n| design | "
            + " | ".join(f"round {i + 1}" for i in range(n_rounds)) + " |\n|---|"
            + "---|" * n_rounds + "\n")
    for name in ROUND_DESIGNS:
        cells = []
        for rd, c, fr in zip(res["rounds"], rf[name]["caps"], rf[name]["fracs"]):
            mark = " †" if _disturbed(_get(rd, name, "best")) else ""
            cells.append("—" if c is None else f"{c:,.0f} ({100 * fr:.0f} %){mark}" if fr
                         else f"{c:,.0f}{mark}")
        out += f"| {name} | " + " | ".join(cells) + " |\n"
    bg = [[(rd.get(n) or {}).get("unpaced", {}).get("background_cores") for n in ROUND_DESIGNS]
          for rd in res["rounds"]]
    out += ("| (other load on the machine, cores: median / most in the round's unpaced runs) | "
            + " | ".join(f"{_f(_med(b), '{:.2f}')} / {_f(max([x for x in b if x is not None], default=None), '{:.2f}')}"
                         for b in bg) + " |\n")
    out += "| (order) | " + " | ".join(", ".join(str(ROUND_DESIGNS.index(n) + 1) for n in
                                               rd.get("order", [])) for rd in res["rounds"]) + " |\n"
    out += ("\n(Order: designs numbered as in the columns above, " +
            ", ".join(f"{i + 1} {n}" for i, n in enumerate(ROUND_DESIGNS)) + ".)\n")

    searched = [(n, rd[n]) for rd in res["rounds"] for n in ROUND_DESIGNS
                if (rd.get(n) or {}).get("how", "").startswith("paced")]
    if searched:
        out += ("\n**The zero-loss search** of the designs that lost ticks unpaced (offered rate "
                "→ ticks lost, delivered rate):\n\n")
        for n, x in searched:
            steps = "; ".join(f"{r:,.0f} → {_f(lost, '{:,}')}, {_f(tp, '{:,.0f}')}"
                              for r, lost, tp in x["tried"])
            out += f"- {n}: unpaced lost {x['unpaced'].get('lost', '?'):,}; {steps}\n"

    m = res.get("micro") or {}
    if m:
        out += ("\n**One hop, two processes** (same msgspec tick)\n\n| transport | msgs/s unpaced | "
                + " | ".join(f"p50 / p99 @ {r:,}/s (µs)" for r in MICRO_RATES) + " |\n|---|---|"
                + "---|" * len(MICRO_RATES) + "\n")
        for name, v in m.items():
            if "error" in v:
                out += f"| {name} | {v['error']} |\n"
                continue
            cells = [f"{v['throughput']['msgs_per_s']:,.0f}"]
            for r in MICRO_RATES:
                lat = v[f"latency@{r}"]
                cells.append(lat["error"] if "error" in lat else
                             f"{_f(lat['p50'])} / {_f(lat['p99'])}")
            out += f"| {name} | " + " | ".join(cells) + " |\n"
    return out


def analysis(res: dict) -> str:
    """What the run says, in words, from its own figures only."""
    d = res["designs"]
    rf = round_figures(res)
    n_rounds = len(res.get("rounds", []))
    lines = [f"## What this run says (written by `bench/run.py` from the figures above)\n"]

    def pct(x):
        return _f(None if x is None else 100 * x, "{:.0f} %")

    def frac_range(n):
        r = _rng(rf[n]["fracs"])
        return f"{100 * r[0]:.0f}–{100 * r[1]:.0f} %" if r else "—"

    ceil = rf[CEILING]["caps"]
    if _med(ceil):
        lines.append(
            f"- **The ceiling** (the Momentum strategy alone on the same ticks, batches of 256 "
            f"decoded with one msgspec call, no IPC) ran at a median {_med(ceil) / 1e6:.2f} M "
            f"ticks/s ({_rng(ceil)[0] / 1e6:.2f}–{_rng(ceil)[1] / 1e6:.2f} M over {n_rounds} "
            "rounds).")
        by_frac = sorted((n for n in DESIGNS if _med(rf[n]["fracs"])),
                         key=lambda n: -_med(rf[n]["fracs"]))
        lines.append("- **Zero-loss capacity as a fraction of the ceiling** (median of the rounds, "
                     "range): " + "; ".join(f"{n} {pct(_med(rf[n]['fracs']))} ({frac_range(n)})"
                                            for n in by_frac) + ".")
    ho = rf.get(STRONG, {}).get("hftd_over", [])
    if _med(ho):
        wins = sum(1 for x in ho if x and x > 1)
        lines.append(
            f"- **hftd against the batched ZeroMQ pipeline**, round by round: "
            + ", ".join(_f(x, "{:.2f}×") for x in ho)
            + f" (median {_med(ho):.2f}×): hftd moved more ticks in {wins} of {len(ho)} rounds.")
    lossy = [n for n in ROUND_DESIGNS if any((rd.get(n) or {}).get("how", "").startswith("paced")
                                             for rd in res["rounds"])]
    if lossy:
        parts = []
        for n in lossy:
            share = [lost / sent for rd in res["rounds"]
                     if (lost := _get(rd, n, "unpaced", "lost")) is not None
                     and (sent := _get(rd, n, "unpaced", "sent"))]
            parts.append(f"{n} lost {pct(_med(share))} of the ticks unpaced (median of the "
                         f"rounds); its zero-loss capacity is "
                         f"{_f(_med(rf[n]['caps']), '{:,.0f}')} ticks/s")
        lines.append("- **The designs that drop ticks** were measured at the highest paced rate "
                     "that lost none (bisection to within 5 %, the delivered rate): "
                     + "; ".join(parts) + ".")

    def lat(n, rate=10_000):
        t = _get(d, n, f"rate_{rate}", "t2t_us") or {}
        c = _get(d, n, f"rate_{rate}", "cores")
        mark = " (†)" if _disturbed(_get(d, n, f"rate_{rate}")) else ""
        return (f"{n} p50 {_f(t.get('p50'), '{:,.0f}')} µs, p99 {_f(t.get('p99'), '{:,.0f}')} µs"
                f" at {_f(c, '{:.2f}')} cores{mark}")

    p50s = {n: _get(d, n, "rate_10000", "t2t_us", "p50") for n in DESIGNS}
    p50s = {n: v for n, v in p50s.items() if v is not None}
    if p50s:
        best = min(p50s, key=p50s.get)
        lines.append("- **Tick-to-trade at 10,000 ticks/s**: " + "; ".join(lat(n) for n in DESIGNS
                                                                          if n in p50s)
                     + f". Lowest p50: {best}.")
    byp100 = _get(d, "hftd", "rate_100", "cores_by_process") or {}
    for n in ("hftd", STRONG):
        byp = _get(d, n, "rate_10000", "cores_by_process") or {}
        b100 = _get(d, n, "rate_100", "cores_by_process") or {}
        if byp:
            lines.append(f"- **Where {n}'s CPU goes** (cores by process in the active window) at "
                         "10,000 ticks/s: " + ", ".join(f"{k} {v:.2f}" for k, v in byp.items())
                         + (("; at 100 ticks/s: " + ", ".join(f"{k} {v:.3f}" for k, v in
                                                               b100.items())) if b100 else "")
                         + ".")
    ex_h = (_get(d, "hftd", "rate_10000", "cores_by_process") or {}).get("agent executor")
    ex_z = (_get(d, STRONG, "rate_10000", "cores_by_process") or {}).get("executor")
    if ex_h is not None and ex_z is not None:
        lines.append(f"- **hftd's executor does more than the baselines'**: its simulated venue "
                     "fills against the market's trades, so the dispatcher sends it every tick "
                     "too, while the baselines' venue fills each order at once without market "
                     f"data. At 10,000 ticks/s hftd's executor used {ex_h:.2f} cores, "
                     f"{STRONG}'s {ex_z:.2f}.")
    cores100 = {n: _get(d, n, "rate_100", "cores") for n in DESIGNS}
    if any(v is not None for v in cores100.values()):
        lines.append("- **Cores used at 100 ticks/s** (nearly idle): " + "; ".join(
            f"{n} {v:.3f}" for n, v in cores100.items() if v is not None) + ".")
    pss = {n: _get(d, n, "rate_10000", "pss_bytes") for n in DESIGNS}
    if any(pss.values()):
        lines.append("- **Memory** (PSS summed over the design's processes, peak at 10,000 "
                     "ticks/s; shared pages counted once): " + "; ".join(
                         f"{n} {_mib(v):,.0f} MiB" for n, v in pss.items() if v)
                     + f". hftd's USS sum is {_f(_mib(_get(d, 'hftd', 'rate_10000', 'uss_bytes')), '{:,.0f}')} MiB"
                     f" and its shared memory objects hold {_f(_mib(_get(d, 'hftd', 'rate_10000', 'shm_bytes')), '{:,.0f}')} MiB;"
                     " the forked baselines share their interpreter's pages with their parent, "
                     "hftd's agents are fresh interpreters.")

    # issue 12's targets, against this run
    h = d.get("hftd") or {}
    agents100 = [v for k, v in byp100.items() if k.startswith("agent")]
    t10 = _get(h, "rate_10000", "t2t_us") or {}
    targets = [
        ("capacity ≥ 50 % of the ceiling (median)", _med(rf["hftd"]["fracs"]) if "hftd" in rf
         else None, lambda v: v >= 0.5, lambda v: f"{100 * v:.0f} %"),
        ("capacity ≥ 1.25× the batched ZeroMQ pipeline (median of rounds)", _med(ho),
         lambda v: v >= 1.25, lambda v: f"{v:.2f}×"),
        ("tick-to-trade p50 ≤ 40 µs @ 10k/s", t10.get("p50"), lambda v: v <= 40,
         lambda v: f"{v:,.0f} µs"),
        ("tick-to-trade p99 ≤ 200 µs @ 10k/s", t10.get("p99"), lambda v: v <= 200,
         lambda v: f"{v:,.0f} µs"),
        ("≤ 0.4 cores in total @ 10k/s", _get(h, "rate_10000", "cores"), lambda v: v <= 0.4,
         lambda v: f"{v:.2f}"),
        ("≤ 1 % of a core per agent @ 100/s (the busiest agent)",
         max(agents100) if agents100 else None, lambda v: v <= 0.01, lambda v: f"{100 * v:.1f} %"),
        ("memory ≤ 64 MiB PSS in total", _mib(_get(h, "rate_10000", "pss_bytes")),
         lambda v: v <= 64, lambda v: f"{v:,.0f} MiB"),
    ]
    lines.append("\n**Issue 12's targets for hftd's default config, in this run**\n\n"
                 "| target | this run | met? |\n|---|---|---|")
    for lab, v, ok, fmt in targets:
        lines.append(f"| {lab} | {'—' if v is None else fmt(v)} | "
                     f"{'—' if v is None else ('yes' if ok(v) else 'no')} |")
    bg = [x for rd in res["rounds"] for n in ROUND_DESIGNS
          if (x := _get(rd, n, "unpaced", "background_cores")) is not None]
    bg += [x for n in DESIGNS for r in _rates(res)
           if (x := _get(d, n, f"rate_{r}", "background_cores")) is not None]
    if bg:
        lines.insert(1, f"- **Other load on the machine** during the measured runs (cores used by "
                        f"anything but the design, the harness included): median {_med(bg):.2f}, "
                        f"most {max(bg):.2f} of {res['machine']['cpus']}. A run that shared the "
                        "machine with other work is slower, and its ratios to runs that did not "
                        "are off: the rounds table gives each round's load.")
    lines.append(
        "\nThis machine is shared and noisy (figures vary by tens of % from run to run): compare "
        "designs within a round, and quote medians. bench/ANALYSIS.md holds the profiles and "
        "experiments of an earlier run (dated there); its figures are that run's, not these.")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = res["designs"]
    rf = round_figures(res)
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(19, 5.5))
    for name in DESIGNS:
        x = d.get(name) or {}
        pts = [(r, _get(x, f"rate_{r}", "t2t_us")) for r in _rates(res)]
        pts = [(r, t) for r, t in pts if t and t.get("p50") is not None]
        if not pts:
            continue
        line, = ax1.plot([r for r, _ in pts], [t["p50"] for _, t in pts], "o-", label=f"{name} p50")
        ax1.plot([r for r, _ in pts], [t["p99"] for _, t in pts], "s--", color=line.get_color(),
                 label=f"{name} p99", alpha=0.6)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("tick rate (ticks/s)")
    ax1.set_ylabel("tick-to-trade (µs)")
    ax1.set_title("Tick-to-trade latency vs rate")
    ax1.grid(True, which="both", alpha=0.3)
    ax1.legend(fontsize=6, ncol=2)

    names = [n for n in ROUND_DESIGNS if _med(rf[n]["caps"])]
    meds = [_med(rf[n]["caps"]) for n in names]
    rngs = [_rng(rf[n]["caps"]) or (0, 0) for n in names]
    err = [[m - r[0] for m, r in zip(meds, rngs)], [r[1] - m for m, r in zip(meds, rngs)]]
    colors = ["tab:green" if n in HFTD_VARIANTS else "tab:blue" if n == CEILING else "tab:gray"
              for n in names]
    bars = ax2.bar(range(len(names)), [max(v, 1) for v in meds], yerr=err, capsize=3,
                   color=colors)
    ax2.set_xticks(range(len(names)), names, rotation=25, fontsize=7, ha="right")
    ax2.set_yscale("log")
    if meds:
        ax2.set_ylim(min(meds) / 3, max(meds) * 3)
    ax2.set_ylabel("ticks/s")
    ax2.set_title(f"Zero-loss capacity: median of {len(res.get('rounds', []))} rounds "
                  "(min–max), % of the ceiling", fontsize=9)
    for b, n, v in zip(bars, names, meds):
        fr = _med(rf[n]["fracs"])
        lab = f"{v / 1e3:,.0f}k" + (f"\n{100 * fr:.0f} %" if fr and n != CEILING else "")
        ax2.text(b.get_x() + b.get_width() / 2, max(v, 1), lab, ha="center", va="bottom",
                 fontsize=7)

    shown = [n for n in DESIGNS if _get(d, n, "rate_10000")]
    cores = [_get(d, n, "rate_10000", "cores") or 0 for n in shown]
    pss = [(_mib(_get(d, n, "rate_10000", "pss_bytes")) or 0) for n in shown]
    xs = range(len(shown))
    ax3.bar([x - 0.2 for x in xs], cores, width=0.4, color="tab:orange", label="cores @ 10k/s")
    ax3.set_ylabel("cores used @ 10,000 ticks/s")
    ax3b = ax3.twinx()
    ax3b.bar([x + 0.2 for x in xs], pss, width=0.4, color="tab:purple", label="PSS sum (MiB)")
    ax3b.set_ylabel("PSS sum @ 10,000 ticks/s (MiB)")
    ax3.set_xticks(list(xs), shown, rotation=25, fontsize=7, ha="right")
    ax3.set_title("CPU (cores) and memory (PSS sum) at 10,000 ticks/s", fontsize=9)
    h1, l1 = ax3.get_legend_handles_labels()
    h2, l2 = ax3b.get_legend_handles_labels()
    ax3.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper center")
    fig.suptitle(f"hftd benchmark ({res['mode']}, {res['date']}, {res['machine']['cpus']} CPUs, "
                 f"{res['machine']['cpu_model']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short runs (under 2 minutes)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--designs", help="comma-separated subset of: " + ", ".join(ROUND_DESIGNS))
    ap.add_argument("--render", metavar="JSON",
                    help="measure nothing: rewrite the .md and .png of a saved results JSON")
    args = ap.parse_args()
    if args.render:
        res = json.load(open(args.render))
        write(res, os.path.splitext(args.render)[0])
        return 0
    mode = "quick" if args.quick else "full"
    # quick: fewer ticks, shorter steps, the hftd variants left out, no 100/s and 1k/s runs
    rounds = QUICK_ROUNDS if args.quick else ROUNDS
    seconds = 1.0 if args.quick else 5.0  # per fixed-rate run
    # time the repeats of disturbed runs may take, per phase (rounds, fixed rates)
    retry_s = (0.0, 0.0) if args.quick else (60.0, 90.0)
    no_retry_after_s = 660.0  # nor after this much of the run (make bench: <= 15 minutes)
    step_s = 0.4 if args.quick else 2.0  # per step of the zero-loss search
    unpaced_ticks = 100_000 if args.quick else 1_000_000
    rates = (10_000, 100_000) if args.quick else RATES
    designs = (args.designs.split(",") if args.designs else
               ["hftd", *BASELINES, CEILING] if args.quick else ROUND_DESIGNS)
    unknown = set(designs) - set(ROUND_DESIGNS)
    if unknown:
        ap.error(f"unknown designs: {', '.join(sorted(unknown))}")
    command = "python -m bench.run" + (" --quick" if args.quick else "") + (
        f" --designs '{args.designs}'" if args.designs else "")
    res = {"mode": mode, "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "command": command, "machine": machine(), "rounds": [], "designs": {},
           "settings": {"rounds": rounds, "unpaced_ticks": unpaced_ticks, "seconds": seconds,
                        "search_step_s": step_s, "tolerance": TOLERANCE, "rates": list(rates),
                        "disturbed_cores": DISTURBED, "retry_s": list(retry_s)}}
    print(f"# hftd benchmark ({mode}) on {res['machine']['cpus']} CPUs: "
          f"{res['machine']['cpu_model']}", flush=True)
    t_start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hftd-bench-") as tmp:
        print("one hop ...", flush=True)
        res["micro"] = micro_ring.run(args.quick)
        in_rounds = [n for n in ROUND_DESIGNS if n in designs]
        budget = Budget(retry_s[0], t_start + no_retry_after_s)
        for k in range(rounds):
            order = _rot(in_rounds, k, rounds)
            rd = {"order": order}
            for name in order:
                prev = [r[name] for r in res["rounds"] if (r.get(name) or {}).get("best")]
                guess = (prev[-1]["best"]["rate"] if prev and prev[-1]["how"].startswith("paced")
                         else None)
                # a slow design's unpaced run is cut to ~UNPACED_S of its first round's capacity
                first = (res["rounds"][0].get(name) or {}).get("throughput") if res["rounds"] else None
                ticks = (unpaced_ticks if not first else
                         min(unpaced_ticks, max(int(first * UNPACED_S), unpaced_ticks // 5)))
                print(f"[{time.monotonic() - t_start:5.0f} s] round {k + 1}: {name}: unpaced "
                      f"{ticks:,} ticks ...", flush=True)
                rd[name] = capacity(name, ticks, step_s, tmp, guess,
                                    factor=1.1 if guess else 2.0, budget=budget)
                print(f"    {_f(rd[name]['throughput'], '{:,.0f}')} ticks/s ({rd[name]['how']})",
                      flush=True)
            res["rounds"].append(rd)
        if not args.designs:
            vector_ticks = 1_000_000 if args.quick else 10_000_000
            res["vector"] = []
            for k in range(VECTOR_RUNS):
                print(f"[{time.monotonic() - t_start:5.0f} s] {VECTOR}: unpaced "
                      f"{vector_ticks:,} ticks ({k + 1}/{VECTOR_RUNS}) ...", flush=True)
                res["vector"].append(run_design(VECTOR, 0, vector_ticks, tmp))
                print(f"    {_f(res['vector'][-1].get('throughput'), '{:,.0f}')} ticks/s",
                      flush=True)
        paced = [n for n in DESIGNS if n in designs]
        for name in DESIGNS:
            res["designs"][name] = {}
        budget = Budget(retry_s[1], t_start + no_retry_after_s)
        for j, rate in enumerate(rates):
            for name in _rot(paced, j, len(rates)):
                print(f"[{time.monotonic() - t_start:5.0f} s] {name}: {rate:,} ticks/s for "
                      f"{seconds:g} s ...", flush=True)
                res["designs"][name][f"rate_{rate}"] = undisturbed(
                    lambda: run_design(name, rate, max(int(rate * seconds), 100), tmp), budget)
    res["elapsed_s"] = round(time.monotonic() - t_start, 1)
    os.makedirs(args.out, exist_ok=True)
    write(res, os.path.join(args.out, f"bench-{mode}"))
    print(f"elapsed: {res['elapsed_s']:.0f} s")
    return 0


def vector_table(res: dict) -> str:
    """The vectorised strategy's end-to-end runs (their own phase, after the rounds)."""
    runs = [r for r in res.get("vector") or [] if r.get("throughput")]
    if not runs:
        return ""
    caps = [r["throughput"] for r in runs]
    out = (f"**{VECTOR}**: hftd's default config with the vectorised sample strategy "
           f"(`Strategy.on_ticks` over numpy columns, at its own defaults: lookback 100, "
           f"threshold 30) in place of Momentum; unpaced, {len(runs)} runs of "
           f"{runs[0]['ticks']:,} ticks after the rounds. Median **{_med(caps):,.0f} ticks/s** "
           f"end to end ({min(caps):,.0f}–{max(caps):,.0f}); per run: "
           + "; ".join(f"{r['throughput']:,.0f} ticks/s, {r.get('orders', 0):,} orders, "
                       f"lost {r.get('lost')}, {_f(r.get('cores'), '{:.2f}')} cores"
                       for r in runs) + ".\n\n")
    return out


def write(res: dict, stem: str) -> None:
    """The results as markdown (tables, then the analysis written from them), JSON and a
    PNG plot, all named `stem`.*; the tables are printed too."""
    table = tables(res)
    m = res["machine"]
    st = res.get("settings", {})
    header = (f"# hftd benchmark ({res['mode']}), {res['date']}\n\nMachine: {m['cpus']} CPUs, "
              f"**{m['cpu_model']}**, {m['machine']}, Linux {m['kernel']}, Python {m['python']}; "
              + ", ".join(f"{k} {v}" for k, v in m["packages"].items()) + ".\n\nCommand: `"
              + res.get("command", "python -m bench.run") + f"` ({res.get('elapsed_s', 0):.0f} s). "
              f"Plot: `{os.path.basename(stem)}.png`.\n\n"
              f"Throughput: {st.get('rounds')} interleaved rounds of {st.get('unpaced_ticks', 0):,} "
              f"ticks unpaced per design (after round 1 at most ~{UNPACED_S:g} s of the design's "
              "first-round capacity, and at least a fifth of that; designs that lose ticks: "
              "bisection over paced runs of "
              f"{st.get('search_step_s')} s to within {100 * (st.get('tolerance', 1) - 1):.0f} %). "
              f"Fixed rates: {st.get('seconds')} s each. Cores: CPU seconds per second of the "
              "design's processes in the run's active window (first tick taken from the feed to "
              "the last one handled). Memory: peak sums over the design's processes. Runs during "
              f"which the rest of the machine used more than {st.get('disturbed_cores', '?')} "
              "cores were repeated (at most twice, within a time allowance) and the least "
              "disturbed attempt kept.\n\n")
    text = header + table + "\n" + vector_table(res) + analysis(res)
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
