"""Terminal rendering of an instance's status, shared by `hftd status` and `hftd top`."""

from __future__ import annotations

from .report import (accounting_lines, order_lines, pfcf_lines, position_lines,
                     recording_lines, recovery_lines, taifex_lines, venue_lines)


def _us(v) -> str:
    return "-" if v is None else f"{v:,.1f}"


def render(st: dict) -> str:
    lines = [f"hftd instance {st['instance']!r}: running; trading "
             f"{'PAUSED (kill switch on)' if st['trading_paused'] else 'on'}"]
    lines.append("agents:")
    for name, a in st["agents"].items():
        hb = "-" if a["heartbeat_age_s"] is None else f"{a['heartbeat_age_s']:.2f} s"
        cpu = "-" if a["cpu_seconds"] is None else f"{a['cpu_seconds']:.1f} s"
        rss = "-" if a["rss_bytes"] is None else f"{a['rss_bytes'] / 2**20:.0f} MiB"
        lines.append(f"  {name:<20} pid {a['pid']:<8} {a['state']:<9} {'up' if a['up'] else 'DOWN':<5}"
                     f" heartbeat {hb:<8} restarts {a['restarts']}  cpu {cpu:<9} rss {rss:<8}"
                     f" cpus {a['cpus'] or 'any'}")
    r = st.get("rates_per_s") or {}
    if r:
        lines.append(f"rates: ticks received {r['ticks_received']:,.0f}/s  delivered "
                     f"{r['ticks_delivered']:,.0f}/s  orders {r['orders']:,.0f}/s  fills "
                     f"{r['fills']:,.0f}/s")
    lines.append("rings:")
    for name, g in st["rings"].items():
        lines.append(f"  {name:<24} occupancy {g['occupancy_ratio'] * 100:5.1f}% "
                     f"({g['in_flight']}/{g['capacity']})  backpressured "
                     f"{'YES' if g['backpressured'] else 'no ':<3}  episodes "
                     f"{g['backpressure_episodes']}  published {g['published']}")
    lines.append(f"latency (us): {'':<14}{'p50':>10}{'p90':>10}{'p99':>10}{'p99.9':>10}"
                 f"{'max':>10}{'count':>12}")
    rows = [(n, s["latency_us"]) for n, s in st["stages"].items()]
    rows.append(("tick-to-trade", st["tick_to_trade_us"]))
    for name, lat in rows:
        lines.append(f"  {name:<25}" + "".join(f"{_us(lat[k]):>10}" for k in
                                              ("p50", "p90", "p99", "p99.9", "max"))
                     + f"{lat['count']:>12,}")
    t = st["ticks"]
    lines.append(f"ticks: received {t['received']:,} published {t['published']:,} delivered "
                 f"{t['delivered_to_strategies']:,} rejected {t['rejected']:,} conflated "
                 f"{t['conflated']:,} dropped {t['dropped']:,} seq gaps {t['seq_gaps']:,}")
    lines.extend(taifex_lines(st))
    lines.extend(recording_lines(st))
    lines.extend(pfcf_lines(st))
    lines.extend(order_lines(st))
    lines.extend(venue_lines(st))
    lines.extend(position_lines(st))
    lines.extend(recovery_lines(st))
    lines.extend(accounting_lines(st))
    return "\n".join(lines)
