"""The conditions strategy hosted in the pipeline: conditions from the config, changed while
it runs with `hftd conditions add|list|remove`, and resumed from the state directory."""

from __future__ import annotations

import contextlib
import json
import time

import pytest

from hftd import shm
from conftest import hftd, hftd_running, wait_running

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
    saved = json.loads((tmp_path / "state" / instance / "sr.conditions.json").read_text())
    assert [e["condition"]["id"] for e in saved["conditions"]] == ["c1"]
    assert saved["conditions"][0]["state"]["phase"] in ("WAITING", "ARMED", "ENTERING", "ENTERED",
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
    saved = json.loads((tmp_path / "state" / instance / "sr.conditions.json").read_text())
    states = {e["condition"]["id"]: e["state"] for e in saved["conditions"]}
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
