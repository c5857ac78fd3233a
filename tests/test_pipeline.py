"""The whole daemon: `hftd run` with real agent processes and shared memory."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from hftd import shm, stats
from hftd.ring import Ring
from conftest import HFTD, agent, hftd_running, kill_agent, start_hftd, stop, wait_running

N = 200_000


def test_every_tick_reaches_the_strategy_once_and_in_order(run_hftd, instance, tmp_path):
    rep_path = tmp_path / "r.json"
    res = run_hftd("--ticks", str(N), "--rate", "0", "--report", str(rep_path))
    assert res.returncode == 0, res.stderr
    rep = json.loads(rep_path.read_text())
    t = rep["ticks"]
    assert t["received"] == t["published"] == t["delivered_to_strategies"] == N
    assert t["rejected"] == t["conflated"] == t["dropped"] == t["seq_gaps"] == 0
    strat = rep["stages"]["strategy.sample"]["values"]
    assert (strat["first_seq"], strat["last_seq"], strat["ticks_in"]) == (0, N - 1, N)
    # every ring drained; each carried its events plus one end-of-stream marker
    for name, r in rep["rings"].items():
        assert r["in_flight"] == 0, name
    assert rep["rings"]["ticks.in"]["published"] == N + 1
    assert rep["rings"]["ticks.sample"]["published"] == N + 1
    o = rep["orders"]
    assert o["sent"] > 0
    assert o["sent"] == o["received"] == o["acks"] + o["rejects"]
    # market orders fill in full at the next trade after they reach the venue, or are
    # canceled at the end of the stream if no trade of their instrument came after them
    assert o["fills"] == o["filled"] and o["filled"] + o["canceled"] == o["acks"]
    assert o["expired"] == o["replaced"] == o["cancel_rejects"] == o["working"] == 0
    # + its RECONCILE at start and the executor's answer (RECONCILED), + the end of stream
    reconciles = rep["stages"]["executor"]["values"]["reconciles"]
    assert reconciles == 1
    assert rep["rings"]["orders.sample"]["published"] == o["sent"] + reconciles + 1
    assert rep["rings"]["reports.sample"]["published"] == (o["acks"] + o["rejects"] + o["fills"]
                                                           + o["canceled"] + reconciles + 1)
    assert rep["tick_to_trade_us"]["count"] == o["acks"]
    assert rep["rings"]["ticks.executor"]["published"] == N + 1  # every tick, for the venue
    for stage in ("producer", "dispatcher", "strategy.sample"):
        assert rep["stages"][stage]["latency_us"]["count"] == N
    assert rep["throughput_ticks_per_s"] > 0
    assert shm.leftovers(instance) == []
    assert "throughput:" in res.stdout and "tick-to-trade:" in res.stdout  # the summary


PINNED = """
[producer]
cpus = [0]
[dispatcher]
cpus = [1]
[executor]
cpus = [0]
[[strategies]]
name = "sample"
cpus = [1]
"""


def _agents_of(sup: psutil.Process, n: int, timeout=30) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = [k for k in sup.children() if "agent" in k.cmdline()]
        if len(kids) == n:
            return kids
        time.sleep(0.05)
    raise AssertionError(f"expected {n} agents, saw {sup.children()}")


@pytest.mark.skipif(len(psutil.Process().cpu_affinity()) < 2, reason="needs 2 CPUs")
def test_five_pinned_processes_then_ctrl_c_drains_and_exits_zero(instance, tmp_path):
    proc = start_hftd(instance, tmp_path, toml=PINNED + '[producer.synthetic]\nrate = 20000\n')
    try:
        sup = psutil.Process(proc.pid)
        agents = _agents_of(sup, 4)
        pids = {proc.pid} | {a.pid for a in agents}
        assert len(pids) == 5
        by_role = {a.cmdline()[a.cmdline().index("agent") + 1]: a for a in agents}
        assert set(by_role) == {"producer", "dispatcher", "strategy", "executor"}
        # an agent pins itself before it says RUNNING (a fixed sleep lost the race under load:
        # the process exists while it is still importing, unpinned)
        wait_running(instance)
        time.sleep(0.5)  # let it trade a little
        expected = {"producer": [0], "dispatcher": [1], "strategy": [1], "executor": [0]}
        for role, cpus in expected.items():
            assert by_role[role].cpu_affinity() == cpus, role
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err
    assert "draining the pipeline" in err
    assert "seq gaps 0" in out  # the summary
    assert shm.leftovers(instance) == []
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in pids)


def test_stale_objects_of_the_same_instance_are_removed_and_only_those(run_hftd, instance):
    other = instance + "x"
    mine = shm.object_name(instance, "ticks.in")
    theirs = shm.object_name(other, "ticks.in")
    for name in (mine, theirs):
        shm.create_segment(name, 4096).close()
    try:
        res = run_hftd("--ticks", "1000")
        assert res.returncode == 0, res.stderr
        assert "removed 1 stale shared-memory objects" in res.stderr
        assert shm.leftovers(instance) == []
        assert shm.leftovers(other) == [theirs]
    finally:
        shm.remove_leftovers(other)


def test_a_second_supervisor_of_a_running_instance_is_refused(instance, tmp_path, run_hftd):
    proc = start_hftd(instance, tmp_path, toml='[producer.synthetic]\nrate = 1000\n')
    try:
        _agents_of(psutil.Process(proc.pid), 4)
        res = run_hftd("--ticks", "10")
        assert res.returncode != 0
        assert "already running" in res.stderr
        assert len(shm.leftovers(instance)) > 0  # the refused run touched nothing
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err


def _kill_strategy_mid_stream(proc, instance: str, after_s: float) -> dict:
    """conftest.kill_agent for the strategy, reading what the dead process left: once every
    agent runs (`wait_running`: the feed starts only then), let it work `after_s`, SIGKILL
    the strategy process and, before its successor's start, read its stats block and the
    read cursor of its ticks ring; return when the successor has been spawned.

    The successor reconciles with the executor before it takes a tick or sends an order, so
    `reconciled` read last and still 0 says every value read before it was the dead
    process's, whenever the successor started."""
    wait_running(instance)
    time.sleep(after_s)
    victim = agent(proc, "strategy")
    victim.kill()
    victim.wait(10)
    blk = stats.StatsBlock.attach(shm.object_name(instance, "stats.strategy.sample"))
    ring = Ring.attach(shm.object_name(instance, "ticks.sample"))
    try:
        left = {k: int(blk.get(k)) for k in ("ticks_in", "tick_started", "new_orders")}
        left["consumed"] = ring.consumed
        left["reconciled"] = int(blk.get("reconciled"))
    finally:
        ring.close()
        blk.close()
    agent(proc, "strategy", not_pids={victim.pid})
    return left


def test_a_killed_strategy_is_restarted_mid_stream_without_a_tick_or_an_order_twice(
        instance, tmp_path):
    """SIGKILL the strategy (the default sample one, which trades) mid-stream: the
    supervisor restarts it, the new process resumes at the ring's read cursor and skips the
    ticks the dead one had begun (their orders may have gone out), so every tick is handled
    once, in sequence, and no order reaches the executor twice."""
    n = 300_000
    toml = '[producer.synthetic]\nrate = 100000.0\n[metrics]\nlisten = ""\n'
    with hftd_running(instance, tmp_path, "--ticks", str(n), "--report", str(tmp_path / "r.json"),
                      toml=toml) as proc:
        at_kill = _kill_strategy_mid_stream(proc, instance, after_s=0.3)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "agent strategy.sample was killed by SIGKILL: restarting it" in err
    assert at_kill["reconciled"] == 0, ("read after the successor had started", at_kill)
    # mid-stream: the dead process had handled some ticks, not all, and had sent orders
    assert 0 < at_kill["ticks_in"] <= at_kill["tick_started"] < n, at_kill
    assert at_kill["new_orders"] > 0, at_kill
    rep = json.loads((tmp_path / "r.json").read_text())
    strat = rep["stages"]["strategy.sample"]
    assert strat["restarts"] == 1
    assert (rep["ticks"]["received"], rep["ticks"]["published"]) == (n, n)
    v = strat["values"]
    assert (v["ticks_in"], v["first_seq"], v["last_seq"], v["seq_gaps"]) == (n, 0, n - 1, 0)
    assert v["replays_suppressed"] == 0  # the dispatcher was not restarted: nothing re-routed
    # the successor skipped exactly the ticks the dead process had begun past its commit
    assert v["restart_skipped"] == at_kill["tick_started"] - at_kill["consumed"], (v, at_kill)
    # every tick handled by one of the two processes, counted apart from the ring's cursor:
    # a latency sample for each tick of a completed batch (either process's: the stats block
    # outlives them), + those of the batch the dead one died in that it had begun (no sample
    # recorded) and its successor skipped
    assert strat["latency_us"]["count"] + v["restart_skipped"] == n
    # orders: both processes traded, and none reached the executor twice
    o = rep["orders"]
    ex = rep["stages"]["executor"]["values"]
    assert o["sent"] > at_kill["new_orders"]
    assert ex["risk_reject.DUPLICATE_ORDER_ID"] == 0
    # every order the strategy counted sending, the executor counted receiving, but those
    # the dead process had not yet written out (lost with it, counted by its successor); a
    # kill between counting one and writing it out leaves `sent` one above (a counter is a
    # store apart from its event: hftd.report), never below
    assert 0 <= o["sent"] - o["received"] - v["signals_lost"] <= 1, (o, v["signals_lost"])
    assert o["received"] == o["acks"] + o["rejects"] and o["working"] == 0, o
    # the orders ring carried each of them once: every event on it (its write cursor), the
    # executor counted as an order, a cancel, a replace, a RECONCILE (a strategy process
    # asking for its state) or the end of the stream
    assert rep["rings"]["orders.sample"]["published"] == \
        o["received"] + o["cancels"] + o["replaces"] + ex["reconciles"] + 1
    for name, r in rep["rings"].items():
        assert r["in_flight"] == 0, name
    assert shm.leftovers(instance) == []


def test_embedded_default_config_runs_until_ctrl_c(instance, tmp_path):
    """`hftd run` with no config file (what `make run` does), stopped by Ctrl-C."""
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.Popen(HFTD + ["run", "--instance", instance], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        _agents_of(psutil.Process(proc.pid), 4)
        time.sleep(1.5)
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err
    assert "ticks/s" in err  # at least one status line
    assert shm.leftovers(instance) == []


def test_a_killed_producer_continues_its_feed_without_a_tick_twice_or_lost(instance, tmp_path):
    """SIGKILL the producer twice mid-run: each new process continues the synthetic feed
    where the last published batch left it (the checkpoint written before each publish and
    the ring's cursor say which), so exactly `n` ticks reach the strategy, in sequence, and
    the producer's counters are exact."""
    n = 200_000
    with hftd_running(instance, tmp_path, "--ticks", str(n), "--report", str(tmp_path / "r.json"),
                      toml='[producer.synthetic]\nrate = 50000.0\n[metrics]\nlisten = ""\n') as proc:
        for _ in range(2):
            kill_agent(proc, instance, "producer", after_s=0.7)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    prod = rep["stages"]["producer"]
    assert prod["restarts"] == 2 and prod["values"]["resumed_at"] > 0, prod
    assert (rep["ticks"]["received"], rep["ticks"]["published"]) == (n, n)
    strat = rep["stages"]["strategy.sample"]["values"]
    assert (strat["ticks_in"], strat["first_seq"], strat["last_seq"], strat["seq_gaps"]) == \
        (n, 0, n - 1, 0)
    assert strat["replays_suppressed"] == 0
    assert rep["rings"]["ticks.in"]["published"] == n + 1  # every tick once, + the end
