"""A tick ends in a real order lifecycle: `hftd run` with the Momentum sample and a strategy
that uses every kind of order, checked from the run report. Orders are counted twice,
independently (by each strategy from the reports it applied to its own book, and by the
executor), and must agree; every order ends in exactly one terminal state; the strategy's
own positions equal the executor's."""

from __future__ import annotations

import json

from hftd import shm
from conftest import hftd_running, kill_agent

COUNTS = ("acks", "rejects", "fills", "filled", "canceled", "expired", "replaced",
          "cancel_rejects")


def assert_lifecycle(rep: dict) -> None:
    o = rep["orders"]
    # the executor's count: every NEW order answered once, every acked one ended once
    assert o["sent"] == o["received"] == o["acks"] + o["rejects"], o
    assert o["acks"] == o["filled"] + o["canceled"] + o["expired"], o
    assert o["working"] == 0 and o["illegal_transitions"] == 0, o
    assert rep["tick_to_trade_us"]["count"] == o["acks"]  # every order comes from a tick
    # each strategy's own count, from the reports it applied, agrees with the executor's
    strategies = o["by_strategy"]
    for k in COUNTS:
        assert sum(s[k] for s in strategies.values()) == o[k], k
    for name, s in strategies.items():
        assert s["sent"] == s["acks"] + s["rejects"], (name, s)
        assert s["acks"] == s["filled"] + s["canceled"] + s["expired"], (name, s)
        assert s["working"] == 0 and s["illegal_transitions"] == 0, (name, s)
        assert s["report_mismatches"] == 0, (name, s)
        ring = rep["rings"][f"reports.{name}"]
        reports = sum(s[k] for k in COUNTS if k != "filled")  # a filled order's last fill
        # + the answer to the strategy's RECONCILE at its start, + the end of stream
        assert ring["published"] == reports + 2 and ring["in_flight"] == 0, name
        assert rep["rings"][f"orders.{name}"]["published"] == \
            s["sent"] + s["cancels"] + s["replaces"] + 2  # + its RECONCILE, + the end
    # refusals by reason add up to the refusals
    assert sum(o["rejects_by_reason"].values()) == o["rejects"] + o["cancel_rejects"]
    # positions: the executor's, each with the strategy's own view, and the P&L
    p = rep["positions"]
    assert p["currency"] == "TWD" and p["rows"], p
    for row in p["rows"]:
        view = row["strategy_view"]
        assert view["qty"] == row["qty"], row
        for k in ("realized", "fees", "tax"):
            assert abs(view[k] - row[k]) < 0.011, (k, row)  # the same fills, to the cent
        assert row["pnl"] == row["realized"] + row["unrealized"] - row["fees"] - row["tax"]
        assert row["volume"] > 0 and row["tax"] > 0  # TAIFEX tax on every trade
    t = p["total"]
    for k in ("realized", "unrealized", "fees", "tax", "pnl"):
        assert abs(t[k] - sum(r[k] for r in p["rows"])) < 1e-6 * max(1.0, abs(t[k])), k
    assert sum(r["volume"] for r in p["rows"]) == t["volume"]


def test_momentum_orders_end_in_one_terminal_state_and_both_books_agree(run_hftd, instance,
                                                                        tmp_path):
    """The sample strategy at 10k ticks/s (the embedded defaults, a 100 us venue)."""
    rep_path = tmp_path / "r.json"
    res = run_hftd("--ticks", "40000", "--rate", "10000", "--report", str(rep_path),
                   toml="[metrics]\nlisten = \"\"\n[executor.sim]\nlatency_us = 100.0\n")
    assert res.returncode == 0, res.stderr
    rep = json.loads(rep_path.read_text())
    assert_lifecycle(rep)
    o = rep["orders"]
    assert o["sent"] > 1000 and o["fills"] > 1000
    # the default limits let the sample trade (see configs/hftd.toml); the reasons first, so
    # a failure says which limit (found: 306 rejects on a machine at load 5, reasons cut off)
    assert o["rejects"] == 0, (o["rejects_by_reason"], o)
    assert len(rep["positions"]["rows"]) == 5
    assert "positions and P&L (TWD" in res.stdout and "P&L: net" in res.stdout  # the summary
    assert "accounting: orders: sent" in res.stdout
    assert shm.leftovers(instance) == []


def test_limits_iocs_cancels_and_replaces_through_the_pipeline(run_hftd, tmp_path):
    """Two strategies at 20k ticks/s: the sample (sending ~1,700 orders/s, refused past an
    order rate of 1,000/s), and one that sends limit, IOC, FOK and market orders, cancels
    and replaces, with a venue latency that lets cancels race fills."""
    toml = f"""
[metrics]
listen = ""
[executor.sim]
latency_us = 300.0
[executor.risk]
max_position = 4
order_rate = 1000.0
order_burst = 20
[[strategies]]
name = "mom"
[[strategies]]
name = "life"
class = "tests.strategies:Lifecycle"
instruments = ["TXF", "MXF"]
params = {{ every = 10, seed = 7, out = "{tmp_path}/life.json" }}
"""
    rep_path = tmp_path / "r.json"
    res = run_hftd("--ticks", "30000", "--rate", "20000", "--report", str(rep_path), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = json.loads(rep_path.read_text())
    assert_lifecycle(rep)
    life = rep["orders"]["by_strategy"]["life"]
    for k in ("acks", "fills", "filled", "canceled", "expired", "replaced", "cancel_rejects"):
        assert life[k] > 0, (k, life)
    assert rep["orders"]["rejects_by_reason"].get("ORDER_RATE", 0) > 0  # the sample
    # on_fill was called for each fill up to on_stop (reports after it call nothing)
    own = json.loads((tmp_path / "life.json").read_text())
    assert 0 < own["fills"] <= life["fills"]
    rows = {(r["strategy"], r["symbol"]): r for r in rep["positions"]["rows"]}
    assert {s for s, _ in rows} == {"mom", "life"}
    assert {sym for s, sym in rows if s == "life"} <= {"TXF", "MXF"}


def test_a_strategy_killed_mid_run_takes_its_state_back_from_the_executor(instance, tmp_path):
    """SIGKILL the strategy twice while orders are working at a venue 5 ms away. Each new
    process asks the executor for its state before it takes a tick (RECONCILE), skips the
    reports the snapshot already holds, and goes on from there: at the end its own positions
    equal the executor's to the lot and the cent, no id was reused, and the orders the dead
    processes never wrote out are counted as lost signals, not sent twice."""
    report = tmp_path / "r.json"
    with hftd_running(instance, tmp_path, "--ticks", "100000", "--report", str(report),
                      toml='[producer.synthetic]\nrate = 20000.0\n[executor.sim]\n'
                           'latency_us = 5000.0\n[metrics]\nlisten = ""\n') as proc:
        for _ in range(2):
            kill_agent(proc, instance, "strategy", after_s=1.0)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads(report.read_text())
    st = rep["stages"]["strategy.sample"]
    assert st["restarts"] == 2 and st["values"]["reconciled"] == 2, st["values"]
    o = rep["orders"]
    assert o["rejects_by_reason"].get("DUPLICATE_ORDER_ID", 0) == 0
    assert o["received"] == o["acks"] + o["rejects"] and o["working"] == 0, o
    assert o["sent"] == o["received"] + st["values"]["signals_lost"], o
    assert o["acks"] == o["filled"] + o["canceled"] + o["expired"], o
    for row in rep["positions"]["rows"]:
        view = row["strategy_view"]
        assert view["qty"] == row["qty"], row
        for k in ("realized", "fees", "tax"):
            assert abs(view[k] - row[k]) < 0.011, (k, row)
    assert shm.leftovers(instance) == []
