"""The run report: counts, accounting, orders, positions and P&L, and latency percentiles from
the stats blocks and rings.

One function builds it from snapshots, so `hftd run`'s summary, `--report FILE` and
`hftd status` show the same numbers. Orders are counted twice, independently: by each
strategy (from the reports it applied to its own book) and by the executor; so are
positions (the executor's `pos.<strategy>.<symbol>` against the strategy's `pos.<symbol>`).

`recovery` says what crash recovery did (restarts, ticks not handled or routed again, order
requests not taken again, duplicates refused, signals lost, venue answers applied late or
reported again), and `invariants(report)` what does not hold at the end of a run (the
supervisor exits non-zero then). The invariants that hold across a kill -9 are checked from
state that recovery keeps exact (ring cursors, the producer's checkpoint, the dispatcher's
re-derived counts, the order book, positions); the order counters' identities (sent = acks
+ rejects, ...) are checked only in a run in which no agent restarted: a counter is a store
apart from the event it counts, so a kill between the two makes it one off.
"""

from __future__ import annotations

import math
from decimal import Decimal

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


ORDER_COUNTS = ("acks", "rejects", "fills", "filled", "canceled", "expired", "replaced",
                "cancel_rejects", "illegal_transitions")
MONEY = ("realized", "unrealized", "fees", "tax", "pnl")


def build(agents: dict, rings: dict, wall_time_s: float, cfg=None) -> dict:
    """`agents`: name -> (role, StatsBlock.snapshot()); `rings`: name -> ring state dict;
    `cfg`: the instance's config (for tick sizes and the currency; optional)."""
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
    by_name = {name.split(".", 1)[1]: snap["values"] for name, (role, snap) in agents.items()
               if role == "strategy"}
    strategies = list(by_name.values())
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
    orders = {"sent": sum(s["new_orders"] for s in strategies), "received": ev["new_in"],
              **{k: ev[k] for k in ORDER_COUNTS},
              "cancels": ev["cancels_in"], "replaces": ev["replaces_in"],
              "working": ev["working_orders"],
              # working orders an earlier run left, taken back from the state store at the
              # daemon's start: not sent in this run, but answered in it (an executor
              # restarted within the run takes its orders back too: recovery counts those)
              "restored_pending": ev["restored_pending"], "restored_acked": ev["restored_acked"],
              "rejects_by_reason": {k.split(".", 1)[1]: n for k, n in ev.items()
                                    if k.startswith("risk_reject.") and n},
              "by_strategy": {name: {"sent": v["new_orders"], "cancels": v["cancels_sent"],
                                     "replaces": v["replaces_sent"],
                                     **{k: v[k] for k in ORDER_COUNTS},
                                     "working": v["working_orders"],
                                     "report_mismatches": v["report_mismatches"],
                                     "refused": v["orders_refused"]}
                              for name, v in by_name.items()}}
    out = {
        "flow": flow,
        "recovery": recovery(agents, disp, by_name, ev),
        "wall_time_s": round(wall_time_s, 3),
        "active_time_s": round(active, 6),
        "throughput_ticks_per_s": round(prod["published"] / active, 1) if active > 0 else 0.0,
        "ticks": {
            "received": prod["received"], "published": prod["published"],
            "conflated": prod["conflated"], "dropped": prod["dropped"],
            "rejected": prod["rejected"], "delivered_to_strategies": delivered,
            "seq_gaps": sum(s["seq_gaps"] for s in strategies),
        },
        "orders": orders,
        "positions": positions(ev, by_name, cfg),
        "tick_to_trade_us": latency_us(execu["histograms"]["tick_to_trade"]),
        "stages": stages,
        "rings": rings,
    }
    feed = taifex(prod, cfg)
    if feed is not None:
        out["taifex"] = feed
    feed = recording(prod, cfg)
    if feed is not None:
        out["recording"] = feed
    feed = pfcf(prod, cfg)
    if feed is not None:
        out["pfcf"] = feed
    rec = recorded(prod, cfg)
    if rec is not None:
        out["record"] = rec
    live = venue(execu["values"])
    if live is not None:
        out["venue"] = live
    return out


def venue(ex: dict) -> dict | None:
    """A live venue's connection and reconciliation counts (venue = "pfcf",
    hftd.venues.pfcf); None for the simulated venue."""
    if "venue.connected" not in ex:
        return None
    return {k[6:]: v for k, v in ex.items() if k.startswith("venue.")}


def venue_lines(rep: dict) -> list[str]:
    v = rep.get("venue")
    if not v:
        return []
    return [f"venue PFCF: {'connected' if v['connected'] else 'DISCONNECTED'}, connects "
            f"{v['connects']} disconnects {v['disconnects']} errors {v['errors']}; refused "
            f"{v['refused']}; replies of other programs {v['foreign']}, matches not ours "
            f"{v['unmatched']}; at start: fills applied {v['reconciled_fills']}, orders ended "
            f"{v['reconciled_ends']}, orders PFCF never got {v['reconciled_lost']}"]


def _taipei(ns: int) -> str | None:
    import datetime

    return (datetime.datetime.fromtimestamp(ns / 1e9, datetime.timezone(
        datetime.timedelta(hours=8))).isoformat() if ns else None)


def _replay_progress(prod: dict, expand, path: str | None, error) -> dict:
    """Where a file feed's replay is (hftd.feeds.replay's progress values), with the name of
    the file (`expand(path)` as the feed lists them; None if they cannot be listed)."""
    files: list[str] = []
    if path is not None:
        try:
            files = expand(path)
        except error:
            pass
    k = prod["feed.file"]
    return {"file": k, "files": prod["feed.files"],
            "name": files[k - 1] if 0 < k <= len(files) else None,
            "file_position": prod["feed.file_position"], "file_ticks": prod["feed.file_ticks"],
            "percent": prod["feed.progress_ppm"] / 1e4,
            "last_exchange_time": _taipei(prod["feed.last_exchange_ns"])}


def _progress_line(what: str, p: dict) -> str:
    return (f"{what} replay: file {p['file']}/{p['files']} {p['name'] or '-'}  tick "
            f"{p['file_position']:,} of {p['file_ticks']:,}  {p['percent']:.1f} % done  "
            f"exchange time {p['last_exchange_time'] or '-'}")


def recording(prod: dict, cfg=None) -> dict | None:
    """The recording feed's replay (feed = "recording"): ticks of the files opened so far,
    fed and still to replay, files skipped or truncated, where the replay is. None for
    another feed."""
    if "feed.truncated_files" not in prod:
        return None
    from .feeds.recording import RecordingError, expand

    return {
        "ticks": prod["feed.ticks"], "fed": prod["feed.ticks"] - prod["feed.pending"],
        "ticks_to_replay": prod["feed.pending"],
        "unreadable_files": prod["feed.unreadable_files"],
        "truncated_files": prod["feed.truncated_files"],
        "progress": _replay_progress(prod, expand, cfg and cfg.producer.recording.path,
                                     RecordingError),
    }


def recorded(prod: dict, cfg=None) -> dict | None:
    """[producer] record = DIR: where this run records (every published tick)."""
    if "record.run" not in prod:
        return None
    from .feeds.recording import file_name

    day = prod["record.day"]
    return {"dir": cfg.producer.record if cfg is not None else None, "run": prod["record.run"],
            "file": file_name(day, prod["record.run"]) if day else None,
            "ticks": prod["published"], "cut_at_restarts": prod["record.cut"]}


def recording_lines(rep: dict) -> list[str]:
    lines = []
    t = rep.get("recording")
    if t:
        lines.append(_progress_line("recording", t["progress"]))
        lines.append(f"  ticks {t['ticks']:,} (fed {t['fed']:,}, to replay "
                     f"{t['ticks_to_replay']:,}); unreadable files {t['unreadable_files']}; "
                     f"truncated files {t['truncated_files']}")
    r = rep.get("record")
    if r:
        lines.append(f"recording to {r['dir']}/{r['file'] or '-'}: ticks {r['ticks']:,}"
                     + (f" ({r['cut_at_restarts']} written by a killed producer and not "
                        f"published, cut)" if r["cut_at_restarts"] else ""))
    return lines


def taifex(prod: dict, cfg=None) -> dict | None:
    """The taifex feed's replay (feed = "taifex"): every row of the files opened so far
    accounted for, where the replay is, and per instrument the ticks, lots, first and last
    price it fed. None for another feed."""
    if "feed.rows_read" not in prod:
        return None
    from .feeds.taifex import REJECT_REASONS, TaifexError, expand

    instruments = {}
    for ins in (cfg.instruments if cfg is not None else ()):
        if not ins.taifex or f"feed.ticks.{ins.symbol}" not in prod:
            continue
        tick = Decimal(ins.tick_size)
        f, lst = prod[f"feed.first.{ins.symbol}"], prod[f"feed.last.{ins.symbol}"]
        instruments[ins.symbol] = {
            "taifex": ins.taifex, "expiry": ins.expiry or "front month",
            "ticks": prod[f"feed.ticks.{ins.symbol}"], "lots": prod[f"feed.lots.{ins.symbol}"],
            "first": float(f * tick) if f else None, "last": float(lst * tick) if lst else None}
    return {
        "rows": {"read": prod["feed.rows_read"], "ticks": prod["feed.ticks"],
                 "ticks_to_replay": prod["feed.pending"],
                 "spread_skipped": prod["feed.spread_skipped"],
                 "unconfigured_skipped": prod["feed.unconfigured_skipped"],
                 "rejected": prod["feed.rejected"],
                 "rejected_by_reason": {r: prod[f"feed.rejected.{r}"] for r in REJECT_REASONS},
                 "auction_ticks": prod["feed.auction_ticks"],
                 "unreadable_files": prod["feed.unreadable_files"]},
        "fed": prod["feed.ticks"] - prod["feed.pending"],
        "progress": _replay_progress(prod, expand, cfg and cfg.producer.taifex.path,
                                     TaifexError),
        "instruments": instruments,
    }


def taifex_lines(rep: dict) -> list[str]:
    t = rep.get("taifex")
    if not t:
        return []
    r, p = t["rows"], t["progress"]
    why = ", ".join(f"{k} {n}" for k, n in r["rejected_by_reason"].items() if n)
    lines = [
        _progress_line("taifex", p),
        f"  rows read {r['read']:,} = ticks {r['ticks']:,} (fed {t['fed']:,}, to replay "
        f"{r['ticks_to_replay']:,}) + spread {r['spread_skipped']:,} + not configured "
        f"{r['unconfigured_skipped']:,} + rejected {r['rejected']:,}"
        + (f" ({why})" if why else "") + f"; opening auction ticks {r['auction_ticks']:,}"
        + (f"; unreadable files {r['unreadable_files']}" if r["unreadable_files"] else ""),
    ]
    for sym, v in t["instruments"].items():
        first = "-" if v["first"] is None else f"{v['first']:,.2f}"
        last = "-" if v["last"] is None else f"{v['last']:,.2f}"
        lines.append(f"  {sym:<8} ({v['taifex']} {v['expiry']}): ticks {v['ticks']:,} lots "
                     f"{v['lots']:,} first {first} last {last}")
    return lines


def pfcf(prod: dict, cfg=None) -> dict | None:
    """The live PFCF feed (feed = "pfcf"): its connection, its messages by outcome, ticks
    lost, silence, and per instrument the ticks, lots and last price. None for another feed."""
    if "feed.disconnects" not in prod:
        return None
    from .feeds.pfcf import COUNTS

    instruments = {}
    for ins in (cfg.instruments if cfg is not None else ()):
        if not ins.pfcf or f"feed.ticks.{ins.symbol}" not in prod:
            continue
        last = prod[f"feed.last.{ins.symbol}"]
        instruments[ins.symbol] = {
            "pfcf": ins.pfcf, "expiry": ins.expiry or "front month",
            "ticks": prod[f"feed.ticks.{ins.symbol}"], "lots": prod[f"feed.lots.{ins.symbol}"],
            "last": float(last * Decimal(ins.tick_size)) if last else None,
            "volume": prod[f"feed.total.{ins.symbol}"]}
    return {"connected": bool(prod["feed.connected"]),
            "subscribed": prod["feed.subscribed"], "contracts": prod["feed.contracts"],
            **{k: prod[f"feed.{k}"] for k in COUNTS},
            "silent_s": prod["feed.silent_s"], "queued": prod["feed.queued"],
            "alarms": prod["alarms"],
            "last_exchange_time": _taipei(prod["feed.last_exchange_ns"]),
            "instruments": instruments}


def pfcf_lines(rep: dict) -> list[str]:
    p = rep.get("pfcf")
    if not p:
        return []
    lines = [
        f"pfcf feed: quote path {'connected' if p['connected'] else 'DISCONNECTED'} "
        f"(connects {p['connects']}, disconnects {p['disconnects']}, errors {p['errors']}); "
        f"subscribed {p['subscribed']}/{p['contracts']}; silent {p['silent_s']} s; alarms "
        f"{p['alarms']}; exchange time {p['last_exchange_time'] or '-'}",
        f"  messages {p['messages']:,}: ticks {p['ticks']:,} (bad price {p['bad_price']:,}, "
        f"bad qty {p['bad_qty']:,}) "
        f"lots {p['lots']:,}; duplicates {p['duplicates']:,}; lots missed {p['gap_lots']:,}; "
        f"unknown contract {p['unknown']:,}; new sessions {p['sessions']}; lost to a full "
        f"queue {p['overflow']:,} ticks; queued {p['queued']:,}",
    ]
    for sym, v in p["instruments"].items():
        last = "-" if v["last"] is None else f"{v['last']:,.2f}"
        lines.append(f"  {sym:<8} ({v['pfcf']} {v['expiry']}): ticks {v['ticks']:,} lots "
                     f"{v['lots']:,} last {last} day volume {v['volume']:,}")
    return lines


def recovery(agents: dict, disp: dict, by_strategy: dict, ev: dict) -> dict:
    """What crash recovery did in this run, from the stages' own counters."""
    strategies = list(by_strategy.values())
    return {
        "restarts": {name: snap["restarts"] for name, (_, snap) in agents.items()},
        "ticks": {
            # ticks a strategy was given again and did not handle again (seen by seq)
            "replays_suppressed": sum(s["replays_suppressed"] for s in strategies),
            # ticks a killed strategy process had handled, or begun, and not committed: not
            # handed to the next one
            "handled_by_a_dead_process": sum(s["restart_skipped"] for s in strategies),
            # ticks a killed dispatcher had routed: not routed again by the next one
            "not_routed_again": sum(n for k, n in disp.items()
                                    if k.startswith("replays_skipped.")),
            # market data a killed executor had fed its venue: not fed again
            "not_fed_again": ev["md_restart_skipped"] + ev["md_replays"],
        },
        "orders": {
            "duplicates_refused": ev["risk_reject.DUPLICATE_ORDER_ID"],
            # orders a strategy decided that died with its process before reaching its ring
            "signals_lost": sum(s["signals_lost"] for s in strategies),
            "requests_not_taken_again": ev["requests_skipped"],
            "requests_taken_again": ev["requests_redone"],
            "working_orders_restored": ev["restored_orders"],
            "strategies_reconciled": sum(s["reconciled"] for s in strategies),
        },
        "venue": {
            "answers_applied_after_a_restart": ev["answers_replayed"],
            "answers_found_in_effect": ev["answers_in_effect"],
            "reports_sent_again": ev["reports_resent"],
            "requests_resent_to_the_venue": ev["requests_resent"],
            "store_updates_completed": ev["journal_replays"],
        },
    }


def invariants(rep: dict) -> list[str]:
    """What does not hold at the end of a run (empty: everything holds). See the module
    docstring for which are checked when."""
    bad = []

    def check(ok: bool, what: str) -> None:
        if not ok:
            bad.append(what)

    f = rep["flow"]["feed"]
    check(f["received"] == f["published"] + f["conflated"] + f["dropped"] + f["rejected"]
          + f["conflation_pending"], f"feed: received {f['received']} != published + conflated "
          f"+ dropped + rejected + pending")
    t = rep.get("taifex")
    if t:
        r = t["rows"]
        check(r["read"] == r["ticks"] + r["spread_skipped"] + r["unconfigured_skipped"]
              + r["rejected"], f"taifex: rows read {r['read']} != ticks + spread + not "
              f"configured + rejected")
        check(t["fed"] == f["received"], f"taifex: ticks fed {t['fed']} != received "
              f"{f['received']}")
    t = rep.get("recording")
    if t:
        check(t["fed"] == f["received"], f"recording: ticks fed {t['fed']} != received "
              f"{f['received']}")
    gaps = {name: v["seq_gaps"] for name, v in
            ((n.split(".", 1)[1], s["values"]) for n, s in rep["stages"].items()
             if s["role"] == "strategy")}
    drained = not rep.get("abandoned")  # (a stop that gave up is reported as such, apart)
    for name, r in rep["flow"]["rings"].items():
        if r.get("quarantined"):
            continue
        check(r["in_flight"] == 0 or not drained,
              f"{name}: {r['in_flight']} events left in the ring")
        if "routed" not in r:
            continue
        check(r["routed"] == r["delivered"] + r["conflated"] + r["dropped"]
              + r["conflation_pending"], f"{name}: routed {r['routed']} != delivered "
              f"{r['delivered']} + conflated + dropped + pending")
        owner = name.split(".", 1)[1]
        if owner in gaps and not (r["conflated"] or r["dropped"]):
            check(gaps[owner] == 0, f"{name}: strategy {owner} saw {gaps[owner]} sequence gaps "
                  f"on a ring that lost nothing")
    o = rep["orders"]
    check(o["working"] == 0, f"orders: {o['working']} still working at the end")
    check(o["illegal_transitions"] == 0,
          f"orders: {o['illegal_transitions']} venue answers the executor could not apply")
    for name, so in o["by_strategy"].items():
        check(so["illegal_transitions"] == 0 and so["report_mismatches"] == 0,
              f"strategy {name}: {so['illegal_transitions']} reports it could not apply, "
              f"{so['report_mismatches']} that disagreed with its book")
    for row in rep["positions"]["rows"]:
        view = row.get("strategy_view")
        if view is not None:
            check(view["qty"] == row["qty"] and all(
                abs(view[k] - row[k]) < 0.005 for k in ("realized", "fees", "tax")),
                f"position {row['strategy']} {row['symbol']}: the executor's {row['qty']} "
                f"(realized {row['realized']}) != the strategy's {view['qty']} "
                f"(realized {view['realized']})")
    if not any(rep["recovery"]["restarts"].values()):
        rp, ra = o.get("restored_pending", 0), o.get("restored_acked", 0)
        check(o["sent"] + rp == o["acks"] + o["rejects"],
              f"orders: sent {o['sent']} + restored {rp} != acks {o['acks']} + rejects "
              f"{o['rejects']}")
        check(o["acks"] + ra == o["filled"] + o["canceled"] + o["expired"] + o["working"],
              f"orders: acks {o['acks']} + restored {ra} != filled + canceled + expired + "
              f"working")
    return bad


def recovery_lines(rep: dict) -> list[str]:
    r = rep.get("recovery")
    if not r:
        return []
    restarted = {k: n for k, n in r["restarts"].items() if n}
    if not restarted and not r["orders"]["duplicates_refused"]:
        return ["recovery: no agent restarted"]
    t, o, v = r["ticks"], r["orders"], r["venue"]
    return [
        "recovery: restarts " + (" ".join(f"{k} {n}" for k, n in restarted.items()) or "none"),
        f"  ticks: replays suppressed {t['replays_suppressed']}, handled by a dead process "
        f"{t['handled_by_a_dead_process']}, not routed again {t['not_routed_again']}, not fed "
        f"again {t['not_fed_again']}",
        f"  orders: duplicates refused {o['duplicates_refused']}, signals lost "
        f"{o['signals_lost']}, requests not taken again {o['requests_not_taken_again']}, taken "
        f"again {o['requests_taken_again']}, working orders restored "
        f"{o['working_orders_restored']}, strategies reconciled {o['strategies_reconciled']}",
        f"  venue: answers applied after a restart {v['answers_applied_after_a_restart']}, "
        f"found in effect {v['answers_found_in_effect']}, reports sent again "
        f"{v['reports_sent_again']}, requests resent {v['requests_resent_to_the_venue']}",
    ]


def positions(ev: dict, by_strategy: dict, cfg=None) -> dict:
    """Positions and P&L per strategy and instrument from the executor's values (money in
    hundredths of the currency there, floats here), each with the strategy's own view, plus
    totals per strategy and for the instance."""
    ticks = {i.symbol: Decimal(i.tick_size) for i in cfg.instruments} if cfg else {}
    rows = []
    totals: dict[str, dict] = {}
    total = dict.fromkeys(MONEY, 0.0) | {"volume": 0}
    for key, qty in ev.items():
        if not key.startswith("pos."):
            continue
        _, strategy, symbol = key.split(".", 2)
        sfx = f"{strategy}.{symbol}"
        row = {"strategy": strategy, "symbol": symbol, "qty": qty,
               "avg_price": float(Decimal(ev[f"avg.{sfx}"]) / 1_000_000 * ticks.get(symbol, 1)),
               **{k: ev[f"{k}.{sfx}"] / 100 for k in ("realized", "unrealized", "fees", "tax")},
               "volume": ev[f"volume.{sfx}"]}
        if not (row["volume"] or qty):
            continue
        row["pnl"] = row["realized"] + row["unrealized"] - row["fees"] - row["tax"]
        own = by_strategy.get(strategy, {})
        if f"pos.{symbol}" in own:
            row["strategy_view"] = {"qty": own[f"pos.{symbol}"],
                                    **{k: own[f"{k}.{symbol}"] / 100
                                       for k in ("realized", "fees", "tax")}}
        rows.append(row)
        t = totals.setdefault(strategy, dict.fromkeys(MONEY, 0.0) | {"volume": 0})
        for acc in (t, total):
            for k in (*MONEY, "volume"):
                acc[k] += row[k]
    currency = cfg.instruments[0].currency if cfg else ""
    return {"currency": currency, "rows": rows, "strategies": totals, "total": total}


def _fmt(lat: dict) -> str:
    if not lat["count"]:
        return "no samples"
    return " ".join(f"{k}={lat[k]:.1f}" for k in ("p50", "p90", "p99", "p99.9", "max")) + \
        f" us (n={lat['count']})"


def order_lines(rep: dict) -> list[str]:
    o = rep["orders"]
    lines = [f"orders: sent {o['sent']} acks {o['acks']} rejects {o['rejects']} fills {o['fills']} "
             f"(orders filled {o['filled']}) canceled {o['canceled']} expired {o['expired']} "
             f"replaced {o['replaced']} cancel rejects {o['cancel_rejects']} working "
             f"{o['working']} illegal transitions {o['illegal_transitions']}"]
    if o["rejects_by_reason"]:
        lines.append("  refused by reason: " + " ".join(
            f"{k} {n}" for k, n in sorted(o["rejects_by_reason"].items())))
    return lines


def view_note(row: dict) -> str:
    """What a position row adds when the strategy's own count of its position differs."""
    view = row.get("strategy_view")
    return "" if view is None or view["qty"] == row["qty"] else \
        f"  (strategy's own view: {view['qty']})"


def position_lines(rep: dict) -> list[str]:
    p = rep.get("positions")
    if not p or not p["rows"]:
        return ["positions: none (no fills)"]
    cur = p["currency"]
    lines = [f"positions and P&L ({cur}; avg in price points):",
             f"  {'strategy':<12}{'symbol':<8}{'qty':>6}{'avg':>12}{'realized':>14}"
             f"{'unrealized':>14}{'fees':>10}{'tax':>10}{'net':>14}{'volume':>9}"]
    for r in p["rows"]:
        odd = view_note(r)
        lines.append(f"  {r['strategy']:<12}{r['symbol']:<8}{r['qty']:>6}"
                     f"{r['avg_price']:>12,.2f}{r['realized']:>14,.0f}{r['unrealized']:>14,.0f}"
                     f"{r['fees']:>10,.0f}{r['tax']:>10,.0f}{r['pnl']:>14,.0f}{r['volume']:>9}{odd}")
    t = p["total"]
    lines.append(f"P&L: net {t['pnl']:,.0f} {cur} = realized {t['realized']:,.0f} + unrealized "
                 f"{t['unrealized']:,.0f} - fees {t['fees']:,.0f} - tax {t['tax']:,.0f}; "
                 f"{t['volume']} lots traded")
    return lines


def summary_text(rep: dict) -> str:
    t = rep["ticks"]
    lines = [
        f"ticks: received {t['received']} published {t['published']} delivered "
        f"{t['delivered_to_strategies']} rejected {t['rejected']} conflated {t['conflated']} "
        f"dropped {t['dropped']} seq gaps {t['seq_gaps']}",
        *taifex_lines(rep),
        *recording_lines(rep),
        *pfcf_lines(rep),
        *order_lines(rep),
        *venue_lines(rep),
        *position_lines(rep),
        *recovery_lines(rep),
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
    if "invariants" in rep:
        lines.append("invariants: " + ("all hold" if not rep["invariants"] else
                                        "FAILED: " + "; ".join(rep["invariants"])))
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
    o = rep.get("orders")
    if o is not None:
        a = o["acks"]
        ended = o["filled"] + o["canceled"] + o["expired"]
        rp, ra = o.get("restored_pending", 0), o.get("restored_acked", 0)
        sent = f"sent {o['sent']}" + (f" + restored {rp}" if rp else "")
        acked = f"acks {a}" + (f" + restored {ra}" if ra else "")
        out.append(f"accounting: orders: {sent} = acks {a} + rejects {o['rejects']} + "
                   f"unanswered {o['sent'] + rp - a - o['rejects']}; {acked} = filled "
                   f"{o['filled']} + canceled {o['canceled']} + expired {o['expired']} + working "
                   f"{a + ra - ended} (in the executor's book: {o['working']})")
    return out
