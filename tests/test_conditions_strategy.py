"""The conditions strategy hosted in the pipeline: conditions from the config, changed while
it runs with `hftd conditions add|list|remove`, and resumed from the state directory (its
book is its saved state, kept by the strategy stage; an old conditions file is migrated)."""

from __future__ import annotations

import contextlib
import json
import os
import time

import pytest

from hftd import shm
from hftd.events import Codec, OrderReport, ReportKind
from hftd.ring import RingWriter
from hftd.trading.conditions import Condition, ConditionBook
from conftest import hftd, hftd_running, wait_running
from test_strategy_state import Host

CONFIG = """
state_dir = "{tmp}/state"
[metrics]
listen = ""
[producer.synthetic]
rate = 5000.0
[[strategies]]
name = "sr"
class = "hftd.strategies.conditions:Conditions"
instruments = ["TXF"]
params = {{ conditions = [{{ id = "c1", instrument = "TXF", action = "BUY", trigger_price = "19990", quantity = 2, turning_point = "3", take_profit_point = "8", stop_loss_point = "5" }}] }}
"""


@contextlib.contextmanager
def _running(instance, tmp_path, toml, agents=("producer", "dispatcher", "strategy.sr", "executor")):
    """`hftd run` of this test's instance, every agent running; yields (config path, Popen)."""
    with hftd_running(instance, tmp_path, toml=toml) as proc:
        wait_running(instance, agents)
        yield tmp_path / "hftd.toml", proc


def test_conditions_are_changed_while_running_and_survive_a_restart(instance, tmp_path):
    with _running(instance, tmp_path, CONFIG.format(tmp=tmp_path)) as (cfg, proc):
        res = hftd("conditions", "list", "--config", str(cfg))
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("c1: BUY 2 TXF"), res.stdout
        # bad input: a clear error naming what is wrong, the set unchanged
        for bad, named in ((["--instrument", "NOPE"], "instrument 'NOPE' is not traded"),
                           (["--instrument", "TXF", "--trigger", "abc"], "trigger_price"),
                           (["--instrument", "TXF", "--id", "c1"], "c1")):
            args = ["--id", "c2", "--action", "SELL", "--trigger", "20050", "--quantity", "1"]
            args = args + bad
            res = hftd("conditions", "add", "--config", str(cfg), *args)
            assert res.returncode == 1, (bad, res.stdout, res.stderr)
            assert named in res.stderr, (bad, res.stderr)
            assert "Traceback" not in res.stderr
        listed = json.loads(hftd("conditions", "list", "--config", str(cfg), "--json").stdout)
        assert [e["condition"]["id"] for e in listed] == ["c1"]
        res = hftd("conditions", "add", "--config", str(cfg), "--id", "c2", "--instrument",
                   "TXF", "--action", "SELL", "--trigger", "20050", "--quantity", "1",
                   "--following")
        assert res.returncode == 0 and "added c2: SELL 1 TXF WAITING" in res.stdout, res.stderr
        listed = json.loads(hftd("conditions", "list", "--config", str(cfg), "--json").stdout)
        assert [e["condition"]["id"] for e in listed] == ["c1", "c2"]
        assert listed[1]["condition"]["is_following"] is True
        res = hftd("conditions", "remove", "--config", str(cfg), "c2")
        assert res.returncode == 0 and "removed c2" in res.stdout, res.stderr
        time.sleep(1.0)  # let it trade a little
        res = hftd("stop", "--config", str(cfg))
        _, err = proc.communicate(timeout=60)
    assert res.returncode == 0 and proc.returncode == 0, err
    saved = json.loads((tmp_path / "state" / instance / "sr.strategy.json").read_text())
    assert (saved["version"], saved["strategy"], saved["class"]) == \
        (1, "sr", "hftd.strategies.conditions:Conditions")
    book = saved["state"]
    assert [e["condition"]["id"] for e in book["conditions"]] == ["c1"]
    assert book["conditions"][0]["state"]["phase"] in ("WAITING", "ARMED", "ENTERING", "ENTERED",
                                                       "EXITING", "DONE")

    # the daemon again: the state file wins over the config's seed, each condition resumed
    with _running(instance, tmp_path, CONFIG.format(tmp=tmp_path)) as (cfg, proc):
        listed = json.loads(hftd("conditions", "list", "--config", str(cfg), "--json").stdout)
        assert [e["condition"]["id"] for e in listed] == ["c1"]
        hftd("stop", "--config", str(cfg))
        _, err = proc.communicate(timeout=60)
    assert "resumed 1 conditions" in err
    assert shm.leftovers(instance) == []


def test_a_strategy_without_commands_refuses_them(instance, tmp_path):
    with _running(instance, tmp_path, '[metrics]\nlisten = ""\n[producer.synthetic]\nrate = 1000.0\n',
                  agents=("producer", "dispatcher", "strategy.sample", "executor")) as (cfg, proc):
        res = hftd("conditions", "list", "--config", str(cfg))
        assert res.returncode == 1
        assert "takes no 'conditions' commands" in res.stderr, res.stderr
        hftd("stop", "--config", str(cfg))
        proc.communicate(timeout=60)
    assert proc.returncode == 0


RUN_CONFIG = """
state_dir = "{tmp}/state"
[metrics]
listen = ""
[supervisor]
status_interval_s = 0.0
[producer.synthetic]
seed = 7
[executor.sim]
latency_us = 200.0
[[strategies]]
name = "sr"
class = "hftd.strategies.conditions:Conditions"
instruments = ["TXF", "MXF"]
params = {{ conditions = [
  {{ id = "long", instrument = "TXF", action = "BUY", trigger_price = "19996", quantity = 2, turning_point = "3", take_profit_point = "6", stop_loss_point = "4" }},
  {{ id = "short", instrument = "MXF", action = "SELL", trigger_price = "20004", quantity = 3, turning_point = "3", take_profit_point = "6", stop_loss_point = "4" }},
] }}
"""


def test_conditions_enter_and_exit_through_the_executor(run_hftd, instance, tmp_path):
    """A whole run on the synthetic feed: both conditions arm, enter and exit with market IOC
    orders that the executor checks and the simulated venue fills. Counted on two sides: the
    strategy's condition records (entry and exit fills, saved in its state file) and the
    executor's positions and P&L in the run report agree, lot for lot and to the cent."""
    report = tmp_path / "report.json"
    r = run_hftd("--ticks", "40000", "--rate", "20000", "--report", str(report),
                 toml=RUN_CONFIG.format(tmp=tmp_path))
    assert r.returncode == 0, r.stderr
    rep = json.loads(report.read_text())
    saved = json.loads((tmp_path / "state" / instance / "sr.strategy.json").read_text())
    states = {e["condition"]["id"]: e["state"] for e in saved["state"]["conditions"]}
    assert {k: v["phase"] for k, v in states.items()} == {"long": "DONE", "short": "DONE"}
    rows = {row["symbol"]: row for row in rep["positions"]["rows"]}
    orders = rep["orders"]
    # entry + exit per condition, each filled in full (market IOC at the next trade)
    assert orders["sent"] == orders["acks"] == orders["filled"] == orders["fills"] == 4
    assert orders["rejects"] == orders["expired"] == orders["canceled"] == 0
    for cid, sym, side, qty, mult in (("long", "TXF", 1, 2, 200), ("short", "MXF", -1, 3, 50)):
        st = states[cid]
        assert st["entry_qty"] == st["exit_qty"] == qty
        entry, exit_ = st["entry_fill_sum"], st["exit_fill_sum"]  # price x lots
        row = rows[sym]
        assert row["qty"] == 0 and row["volume"] == 2 * qty
        assert row["realized"] == pytest.approx(side * (exit_ - entry) * mult, abs=0.01)
        # one fill per order; TAIFEX tax: 0.00002 of each fill's notional, rounded to the
        # NTD (half up); fees 0 by default
        tax = sum(int(v * mult * 0.00002 + 0.5) for v in (entry, exit_))
        assert row["tax"] == tax and row["fees"] == 0
        assert row["strategy_view"]["realized"] == row["realized"]
        assert st["exit_reason"] in ("take profit", "stop loss")



# --- the state kept by the strategy stage, and the migration from the old file ------------

CONDITIONS = "hftd.strategies.conditions:Conditions"
SEED = [{"id": "c1", "instrument": "TXF", "action": "BUY", "trigger_price": "19990",
         "quantity": 2}]


def _entered_book() -> ConditionBook:
    """c9 entered: armed at 19990, entered on the turn (order 77), filled 1 lot at 20005."""
    book = ConditionBook()
    book.add(Condition("c9", "TXF", "BUY", 19990, 1))
    book.on_trade("TXF", 19990)
    [intent] = book.on_trade("TXF", 20005)
    book.on_order_sent("c9", intent.purpose, 77)
    book.on_fill(77, 1, 20005)
    return book


def test_an_old_conditions_file_is_migrated_once(plant, capsys):
    h = Host(plant, cls=CONDITIONS, conditions=SEED)
    old = os.path.join(h.dir, "sample.conditions.json")
    _entered_book().save(old)
    h.start()
    [e] = h.s.book.list()  # the old file's set, not the config's seed
    assert (e.condition.id, e.state.phase, e.state.entry_qty) == ("c9", "ENTERED", 1)
    saved = h.saved()
    assert saved["class"] == CONDITIONS
    assert [c["condition"]["id"] for c in saved["state"]["conditions"]] == ["c9"]
    assert not os.path.exists(old) and os.path.exists(old + ".migrated")
    assert f"migrated 1 conditions from {old}" in capsys.readouterr().err
    assert (h.stat("saves"), h.stat("loads")) == (1, 0)

    h.start()  # the next process: from the new file, the old one no longer read
    assert [e.condition.id for e in h.s.book.list()] == ["c9"]
    assert h.s.book.get("c9").state.phase == "ENTERED"
    assert h.stat("loads") == 1
    assert f"resumed 1 conditions from {h.path}" in capsys.readouterr().err


def test_the_state_file_wins_over_an_old_conditions_file(plant):
    h = Host(plant, cls=CONDITIONS, conditions=SEED)
    h.start()
    assert h.s.save()  # the seed, as the new state
    old = os.path.join(h.dir, "sample.conditions.json")
    _entered_book().save(old)
    h.start()
    assert [e.condition.id for e in h.s.book.list()] == ["c1"]
    assert os.path.exists(old)  # not taken, not renamed


def test_a_corrupt_old_conditions_file_stops_the_strategy_with_one_line(plant, capsys):
    h = Host(plant, cls=CONDITIONS, conditions=SEED)
    old = os.path.join(h.dir, "sample.conditions.json")
    with open(old, "w") as f:
        f.write("{not json")
    with pytest.raises(SystemExit) as exit_:
        h.start()
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"conditions file {old} is unusable" in err and "move it away" in err, err
    assert not os.path.exists(h.path) and open(old).read() == "{not json"


def test_a_state_the_book_refuses_stops_the_strategy_with_one_line(plant, capsys):
    h = Host(plant, cls=CONDITIONS, conditions=SEED)
    h.start()
    assert h.s.save()
    saved = h.saved()
    saved["state"]["conditions"][0]["state"]["order_price"] += 1  # not derived from the trigger
    h.write(json.dumps(saved).encode())
    with pytest.raises(SystemExit):
        h.start()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and h.path in err, err
    assert ("refused by Conditions.on_load: ConditionFileError: not a conditions book: "
            "condition 'c1' has levels that do not derive from its trigger price") in err, err


def test_an_order_and_its_fill_are_saved_at_once_a_trailing_move_later(plant):
    """The save points: the entry sent and its fill are in the file when the callback
    returns; a trailing move only marks the state changed, saved within save_every_s."""
    h = Host(plant, cls=CONDITIONS, conditions=[
        {"id": "c1", "instrument": "TXF", "action": "BUY", "trigger_price": "19990",
         "quantity": 1, "turning_point": "3"},
        {"id": "t1", "instrument": "TXF", "action": "BUY", "trigger_price": "19980",
         "quantity": 1, "turning_point": "3", "is_following": True}])
    h.start()
    reports = RingWriter(h.p.ring("reports.sample"))

    def report(oid, kind, qty, price, filled, leaves):
        now = time.monotonic_ns()
        assert reports.offer(0, now, Codec(OrderReport).encode(OrderReport(
            reports.position, now, oid, kind, 0, 1, qty, price, 0, filled, leaves)))

    def saved(cid):
        return {c["condition"]["id"]: c["state"]
                for c in h.saved()["state"]["conditions"]}[cid]
    h.tick(19990)  # c1 armed (a change: marked, saved within save_every_s)
    h.tick(19993)  # c1 enters: its order sent and the book saved before on_tick returns
    oid = h.s.book.get("c1").state.entry_order_id
    assert saved("c1")["phase"] == "ENTERING" and saved("c1")["entry_order_id"] == oid
    report(oid, ReportKind.ACK, 1, 0, 0, 1)
    report(oid, ReportKind.FILL, 1, 19993, 1, 0)
    h.work_until(lambda: h.s.position(0) == 1)
    assert saved("c1")["phase"] == "ENTERED" and saved("c1")["entry_qty"] == 1
    h.tick(19979, extra_pass=False)  # t1 arms and trails to 19979: marked, not yet saved
    assert h.s.book.get("t1").state.trigger_price == 19979 and h.stage.api.state_dirty
    assert saved("t1")["trigger_price"] == 19980
    h.work_until(lambda: not h.stage.api.state_dirty)  # once save_every_s has passed
    t1 = saved("t1")
    assert (t1["phase"], t1["trigger_price"], t1["order_price"]) == ("ARMED", 19979, 19982)
