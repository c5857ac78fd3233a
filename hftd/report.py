"""The run report: counts, accounting and latency percentiles from the stats blocks and rings.

One function builds it from snapshots, so `hftd run`'s summary, `--report FILE` and (later)
`hftd status --json` show the same numbers.
"""

from __future__ import annotations

import math

PCTS = (50, 90, 99, 99.9)

# (events in, events out) value names per role
_IO = {"producer": ("received", "published"), "dispatcher": ("ticks_in", "ticks_out"),
       "strategy": ("ticks_in", "orders_out"), "executor": ("orders_in", "reports_out")}


def latency_us(h) -> dict:
    """Percentiles of a HistogramSnapshot in microseconds (None when it has no samples)."""
    s = h.summary(PCTS)
    out = {"count": s["count"]}
    for k, v in s.items():
        if k == "count":
            continue
        out[k] = None if math.isnan(v) else round(v / 1e3, 3)
    return out


def build(agents: dict, rings: dict, wall_time_s: float) -> dict:
    """`agents`: name -> (role, StatsBlock.snapshot()); `rings`: name -> ring state dict."""
    stages = {}
    for name, (role, snap) in agents.items():
        v = snap["values"]
        i, o = _IO[role]
        stages[name] = {
            "role": role, "state": snap["state"], "restarts": snap["restarts"],
            "events_in": v[i], "events_out": v[o], "values": v,
            "latency_us": latency_us(snap["histograms"]["stage"]),
        }
    prod = agents["producer"][1]["values"]
    strategies = [snap["values"] for role, snap in agents.values() if role == "strategy"]
    execu = agents["executor"][1]
    ev = execu["values"]
    last = max((s["last_tick_ns"] for s in strategies), default=0)
    active = (last - prod["first_ingest_ns"]) / 1e9 if last and prod["first_ingest_ns"] else 0.0
    delivered = sum(s["ticks_in"] for s in strategies)
    disp = agents["dispatcher"][1]["values"]
    flow = {
        "feed": {k: prod[k] for k in ("received", "published", "conflated", "dropped",
                                       "rejected", "conflation_pending")},
        "rings": {},
    }
    for name, r in rings.items():
        if not name.startswith("ticks."):
            continue
        entry = {"published": r["published"], "consumed": r["consumed"],
                 "in_flight": r["in_flight"], "backpressure_episodes": r["backpressure_episodes"]}
        s = name.split(".", 1)[1]
        if s != "in":
            entry.update(routed=disp[f"routed.{s}"], delivered=disp[f"delivered.{s}"],
                         conflated=disp[f"conflated.{s}"],
                         dropped=disp[f"dropped.{s}"], quarantined=disp[f"quarantined.{s}"],
                         conflation_pending=disp[f"conflation_pending.{s}"])
        flow["rings"][name] = entry
    return {
        "flow": flow,
        "wall_time_s": round(wall_time_s, 3),
        "active_time_s": round(active, 6),
        "throughput_ticks_per_s": round(prod["published"] / active, 1) if active > 0 else 0.0,
        "ticks": {
            "received": prod["received"], "published": prod["published"],
            "conflated": prod["conflated"], "dropped": prod["dropped"],
            "rejected": prod["rejected"], "delivered_to_strategies": delivered,
            "seq_gaps": sum(s["seq_gaps"] for s in strategies),
        },
        "orders": {
            "sent": sum(s["orders_out"] for s in strategies), "received": ev["orders_in"],
            "acks": ev["acks"], "fills": ev["fills"], "rejects": ev["rejects"],
            "canceled": ev["canceled"],
        },
        "tick_to_trade_us": latency_us(execu["histograms"]["tick_to_trade"]),
        "stages": stages,
        "rings": rings,
    }


def _fmt(lat: dict) -> str:
    if not lat["count"]:
        return "no samples"
    return " ".join(f"{k}={lat[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max")) + \
        f" us (n={lat['count']})"


def summary_text(rep: dict) -> str:
    t, o = rep["ticks"], rep["orders"]
    lines = [
        f"ticks: received {t['received']} published {t['published']} delivered "
        f"{t['delivered_to_strategies']} rejected {t['rejected']} conflated {t['conflated']} "
        f"dropped {t['dropped']} seq gaps {t['seq_gaps']}",
        f"orders: sent {o['sent']} acks {o['acks']} fills {o['fills']} rejects {o['rejects']} "
        f"canceled {o['canceled']}",
        f"throughput: {rep['throughput_ticks_per_s']:,.0f} ticks/s over {rep['active_time_s']:.3f} s "
        f"(wall {rep['wall_time_s']:.1f} s)",
        f"tick-to-trade: {_fmt(rep['tick_to_trade_us'])}",
    ]
    for name, s in rep["stages"].items():
        lines.append(f"  {name:<20} in {s['events_in']:>10} out {s['events_out']:>10}  "
                     f"latency {_fmt(s['latency_us'])}")
    for name, r in rep["rings"].items():
        if not name.startswith("control."):
            lines.append(f"  ring {name:<15} published {r['published']:>10} consumed "
                         f"{r['consumed']:>10} in flight {r['in_flight']} backpressure episodes "
                         f"{r['backpressure_episodes']}")
    lines.extend(accounting_lines(rep))
    return "\n".join(lines)


def accounting_lines(rep: dict) -> list[str]:
    """The flow-control invariants, spelled out with their numbers. A ring's published count
    includes its end-of-stream marker once the stream has ended."""
    f = rep["flow"]["feed"]
    out = [f"accounting: feed received {f['received']} = published {f['published']} + conflated "
           f"{f['conflated']} + dropped {f['dropped']} + rejected {f['rejected']} + pending "
           f"{f['conflation_pending']}"]
    for name, r in rep["flow"]["rings"].items():
        line = f"accounting: {name}: published {r['published']} = consumed {r['consumed']} + in flight {r['in_flight']}"
        if "routed" in r:
            line += (f"; routed {r['routed']} = delivered {r['delivered']} + conflated "
                     f"{r['conflated']} + dropped {r['dropped']} + pending {r['conflation_pending']}")
            if r["quarantined"]:
                line += f" + quarantined {r['quarantined']}"
        out.append(line)
    return out
