"""Restart policy: a doubling delay and a burst window instead of a lifetime cap, and a
strategy that keeps crashing is quarantined while the rest of the pipeline trades on."""

from __future__ import annotations

import json

from hftd import shm
from conftest import hftd_running, kill_agent

N = 40_000
RAISE_AT = 5_000

TWO_STRATEGIES = f"""
[metrics]
listen = ""
[rings.ticks]
capacity = 4096
[supervisor]
restart_delay_s = 0.05
restart_burst = 2
restart_window_s = 60.0
[[strategies]]
name = "good"
class = "tests.strategies:Recorder"
params = {{ keep_seqs = false, every = 50 }}
[[strategies]]
name = "bad"
class = "tests.strategies:Poison"
params = {{ raise_at = {RAISE_AT}, every_later = true }}
"""


def test_a_crashing_strategy_is_quarantined_and_the_other_gets_every_tick(instance, tmp_path):
    rep_path = tmp_path / "r.json"
    with hftd_running(instance, tmp_path, "--ticks", str(N), "--rate", "0", "--report",
                      str(rep_path), toml=TWO_STRATEGIES) as proc:
        out, err = proc.communicate(timeout=120)
    print(err[-3000:])
    # quarantine is a failure of the run, said so, but not of the other strategy
    assert proc.returncode == 1, err
    assert err.count("agent strategy.bad exited with code 1: restarting it") == 2
    assert "ALARM: agent strategy.bad exited with code 1; 3 crashes within 60 s" in err
    assert "quarantined during the run: strategy.bad" in err
    rep = json.loads(rep_path.read_text())
    assert rep["quarantined"] == ["strategy.bad"]
    good = rep["stages"]["strategy.good"]["values"]
    assert (good["ticks_in"], good["first_seq"], good["last_seq"], good["seq_gaps"]) == \
        (N, 0, N - 1, 0)
    assert rep["stages"]["strategy.good"]["restarts"] == 0
    assert rep["stages"]["strategy.bad"]["state"] == "quarantined"
    assert rep["stages"]["strategy.bad"]["restarts"] == 2
    # the bad ring got ticks up to the poison one, then was fed no more: counted
    disp = rep["stages"]["dispatcher"]["values"]
    assert disp["routed.bad"] == N
    assert disp["quarantined.bad"] > 0
    assert disp["routed.bad"] == disp["delivered.bad"] + disp["quarantined.bad"]
    bad_ring = rep["rings"]["ticks.bad"]
    assert bad_ring["published"] == disp["delivered.bad"]  # no end-of-stream marker for it
    # what it committed before the batch holding the first poison tick, then one tick per
    # restart: the tick that killed the previous process is skipped, not handled again
    bad = rep["stages"]["strategy.bad"]["values"]
    assert 0 < bad_ring["consumed"] <= RAISE_AT + 2
    assert bad["restart_skipped"] >= 2 and bad["reconciled"] == 2  # the batch up to each poison tick
    assert bad["ticks_in"] == bad_ring["consumed"]
    assert f"+ quarantined {disp['quarantined.bad']}" in out  # the summary
    ex = rep["stages"]["executor"]["values"]
    assert ex["quarantined"] == 1
    # the good strategy's orders all went through and were answered
    assert rep["rings"]["orders.good"]["in_flight"] == 0
    assert rep["rings"]["reports.good"]["in_flight"] == 0
    assert rep["orders"]["sent"] > 0
    assert shm.leftovers(instance) == []


def test_crashes_spread_wider_than_the_window_are_restarted_forever(instance, tmp_path):
    """Only `restart_burst` crashes within `restart_window_s` give up: an agent that
    crashes now and then (here 4 times, 1 s apart, with a burst of 1 per 0.5 s) is always
    restarted, and the run ends normally."""
    toml = """
[metrics]
listen = ""
[producer.synthetic]
rate = 5000.0
[supervisor]
restart_delay_s = 0.05
restart_burst = 1
restart_window_s = 0.5
"""
    with hftd_running(instance, tmp_path, "--duration", "6", "--report",
                      str(tmp_path / "r.json"), toml=toml) as proc:
        for _ in range(4):
            kill_agent(proc, instance, "executor", after_s=1.0)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert err.count("agent executor was killed by SIGKILL: restarting it") == 4
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["stages"]["executor"]["restarts"] == 4
    t = rep["ticks"]
    assert t["received"] == t["published"] == t["delivered_to_strategies"]
    assert shm.leftovers(instance) == []
