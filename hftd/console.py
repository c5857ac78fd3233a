"""Terminal rendering of an instance's status: `render` for `hftd status` (everything, one
line per item however long), `top_frame` for `hftd top` (80 columns: what happened in the
last seconds beside lifetime figures, the rest wrapped by hftd.terminal)."""

from __future__ import annotations

from .report import (accounting_lines, order_lines, pfcf_lines, position_lines,
                     recording_lines, recovery_lines, taifex_lines, venue_lines, view_note)

RATES = (("ticks_received", "ticks received"), ("ticks_delivered", "delivered"),
         ("orders", "orders"), ("fills", "fills"))


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


# --- hftd top -------------------------------------------------------------------------------
#
# Every table below is at most 78 columns wide (a terminal's last column is left free:
# hftd.terminal), its names in a column of 13 to 16: a longer name gets a line of its own
# above its figures rather than pushing them past the edge.

NAME_W = 16


def _dur(us) -> str:
    """A latency in at most 7 columns, with its unit (the columns mix µs and ms)."""
    if us is None:
        return "-"
    if us < 1:
        return f"{us * 1e3:.0f}ns"
    for unit, scale in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        v = us / scale
        if v < 1000 or unit == "s":
            return f"{v:.2f}{unit}" if v < 10 else f"{v:.1f}{unit}"
    raise AssertionError


def _count(n: int) -> str:
    """A count in at most 6 columns (exact below 100,000)."""
    if n < 100_000:
        return f"{n:,}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9)):
        if n / scale < 999.5 or unit == "G":
            return f"{n / scale:.0f}{unit}" if n / scale >= 10 else f"{n / scale:.1f}{unit}"
    raise AssertionError


def _secs(s) -> str:
    """A duration in seconds in at most 7 columns."""
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.2f}s"
    if s < 100_000:
        return f"{s:.0f}s"
    return f"{s / 3600:.0f}h"


def clock(s: float) -> str:
    """A duration as H:MM:SS (days as d+H:MM:SS)."""
    s = int(s)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{d}d+" if d else "") + f"{h}:{m:02}:{s:02}"


def _span(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds >= 9.95 else f"{seconds:.1f} s"


def _rows(name: str, rest: str, w: int) -> list[str]:
    """A table row: `name` in a column `w` wide, or on a line of its own above if longer."""
    if len(name) <= w:
        return [f"  {name:<{w}}{rest}"]
    return [f"  {name}", f"  {'':<{w}}{rest}"]


def _name_width(names) -> int:
    return max(13, min(max((len(n) for n in names), default=0), NAME_W))


def top_frame(st: dict, lately: dict, *, state: str, now: str) -> list[str]:
    """The lines of one frame of `hftd top`.

    `st`: `InstanceView.status()`. `lately`: "interval" and "window" (`monitor.History`'s, or
    None before there is a previous reading), "lifetime_rates_per_s" (counts over the
    supervisor's uptime) and "uptime_s". `state`: the instance's, in words; `now`: the time."""
    lines = [f"hftd top: instance {st['instance']!r} {state}; trading "
             f"{'PAUSED (kill switch on)' if st['trading_paused'] else 'on'}  "
             f"up {clock(lately['uptime_s'])}  {now}"]

    agents = st["agents"]
    w = _name_width(agents)
    lines.append(f"{'agents:':<{w + 2}}{'pid':>8} {'state':<11} {'up':<5}{'heartbeat':>9}"
                 f"{'restarts':>9}{'cpu':>8}{'rss':>8}")
    for name, a in agents.items():
        rss = "-" if a["rss_bytes"] is None else f"{a['rss_bytes'] / 2**20:.0f}MiB"
        lines += _rows(name, f"{a['pid']:>8} {a['state']:<11} {'up' if a['up'] else 'DOWN':<5}"
                             f"{_secs(a['heartbeat_age_s']):>9}{a['restarts']:>9}"
                             f"{_secs(a['cpu_seconds']):>8}{rss:>8}", w)

    interval, window = lately["interval"], lately["window"]
    lines.append(f"{'rates/s:':<16}" + "".join(f"{label:>15}" for _, label in RATES))
    for label, fig in ((f"last {_span(interval['seconds'])}" if interval else "last refresh",
                        interval),
                       (f"last {_span(window['seconds'])}" if window else "last 10 s", window),
                       ("lifetime avg", {"rates_per_s": lately["lifetime_rates_per_s"]})):
        r = fig["rates_per_s"] if fig else {}
        lines.append(f"  {label:<14}" + "".join(
            f"{r[k]:>15,.0f}" if k in r else f"{'-':>15}" for k, _ in RATES))

    stages = [(n, s["latency_us"]) for n, s in st["stages"].items()]
    stages.append(("tick-to-trade", st["tick_to_trade_us"]))
    w = _name_width(n for n, _ in stages)
    recent = window["latency_us"] if window else {}
    head = f"last {_span(window['seconds'])}" if window else "last 10 s"
    lines.append(f"{'latency:':<{w + 2}}{f' {head} '.center(23, '-')}  "
                 f"{' lifetime '.center(31, '-')}")
    lines.append(f"{'':<{w + 2}}{'p50':>8}{'p99':>8}{'count':>7}  {'p50':>8}{'p99':>8}"
                 f"{'max':>8}{'count':>7}")
    for name, life in stages:
        lat = recent.get(name)
        now_part = (f"{_dur(lat['p50']):>8}{_dur(lat['p99']):>8}{_count(lat['count']):>7}"
                    if lat else f"{'-':>8}{'-':>8}{'-':>7}")
        top = _dur(life["max"]) if life["count"] else "-"
        lines += _rows(name, now_part + f"  {_dur(life['p50']):>8}{_dur(life['p99']):>8}"
                                        f"{top:>8}{_count(life['count']):>7}", w)

    rings = st["rings"]
    quiet = [n for n, g in rings.items() if n.startswith("control.") and not g["in_flight"]
             and not g["backpressured"]]
    shown = [n for n in rings if n not in quiet]
    w = _name_width(shown)
    lines.append(f"{'rings:':<{w + 2}}{'in flight / capacity':>22}{'occupancy':>10}  "
                 f"{'backpressured':<14}{'episodes':>8}")
    for name in shown:
        g = rings[name]
        lines += _rows(name, f"{g['in_flight']:>11,} / {g['capacity']:<8,}"
                             f"{g['occupancy_ratio'] * 100:>9.1f}%  "
                             f"{'YES' if g['backpressured'] else 'no':<14}"
                             f"{g['backpressure_episodes']:>8,}", w)
    if quiet:
        lines.append(f"  control.* ({len(quiet)} rings): empty, not backpressured")

    t = st["ticks"]
    lines.append(f"ticks: received {t['received']:,} published {t['published']:,} delivered "
                 f"{t['delivered_to_strategies']:,} rejected {t['rejected']:,} conflated "
                 f"{t['conflated']:,} dropped {t['dropped']:,} seq gaps {t['seq_gaps']:,}")
    lines += taifex_lines(st) + recording_lines(st) + pfcf_lines(st)
    lines += order_lines(st) + venue_lines(st) + _position_lines(st)
    lines += recovery_lines(st) + accounting_lines(st)
    return lines


def _position_lines(st: dict) -> list[str]:
    """Positions in 80 columns: fees and tax per row are left to the P&L line (their sums)
    and to `hftd status`."""
    p = st.get("positions")
    if not p or not p["rows"]:
        return ["positions: none (no fills)"]
    cur = p["currency"]
    lines = [f"positions ({cur}; avg in price points):",
             f"  {'strategy':<12}{'symbol':<8}{'qty':>6}{'avg':>10}{'realized':>12}"
             f"{'unrealized':>12}{'net':>10}{'lots':>6}"]
    for r in p["rows"]:
        odd = view_note(r)
        lines += _rows(r["strategy"], f"{r['symbol']:<8}{r['qty']:>6}{r['avg_price']:>10,.2f}"
                                      f"{r['realized']:>12,.0f}{r['unrealized']:>12,.0f}"
                                      f"{r['pnl']:>10,.0f}{r['volume']:>6}{odd}", 12)
    t = p["total"]
    lines.append(f"P&L: net {t['pnl']:,.0f} {cur} = realized {t['realized']:,.0f} + unrealized "
                 f"{t['unrealized']:,.0f} - fees {t['fees']:,.0f} - tax {t['tax']:,.0f}; "
                 f"{t['volume']} lots traded")
    return lines


def instance_state(agents: dict) -> str:
    """The instance's state in words from its agents' (`InstanceView.agent_health`)."""
    down = [n for n, a in agents.items() if not a["up"]]
    if not down:
        return "running"
    if any(agents[n]["state"] in ("draining", "stopped") for n in down):
        return "stopping"
    return "running, DOWN: " + " ".join(down)
