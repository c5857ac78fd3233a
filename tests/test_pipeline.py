"""The whole daemon: `hftd run` with real agent processes and shared memory."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from hftd import shm
from conftest import HFTD, hftd_running, kill_agent, start_hftd, stop

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
    assert rep["rings"]["orders.sample"]["published"] == o["sent"] + 1
    assert rep["rings"]["reports.sample"]["published"] == (o["acks"] + o["rejects"] + o["fills"]
                                                           + o["canceled"] + 1)
    assert rep["tick_to_trade_us"]["count"] == o["acks"]
    assert rep["rings"]["ticks.executor"]["published"] == N + 1  # every tick, for the venue
    for stage in ("producer", "dispatcher", "strategy.sample"):
        assert rep["stages"][stage]["latency_us"]["count"] == N
    assert rep["throughput_ticks_per_s"] > 0
    assert shm.leftovers(instance) == []
    assert "throughput:" in res.stderr and "tick-to-trade:" in res.stderr


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
        time.sleep(1.0)  # let it trade a little
        expected = {"producer": [0], "dispatcher": [1], "strategy": [1], "executor": [0]}
        for role, cpus in expected.items():
            assert by_role[role].cpu_affinity() == cpus, role
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err
    assert "draining the pipeline" in err
    assert "seq gaps 0" in err
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


def test_a_killed_agent_is_restarted_and_the_stream_completes(instance, tmp_path):
    n = 300_000
    with hftd_running(instance, tmp_path, "--ticks", str(n), "--report",
                      str(tmp_path / "r.json"), toml='[producer.synthetic]\nrate = 100000.0\n') as proc:
        kill_agent(proc, instance, "strategy", after_s=0.3)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "agent strategy.sample was killed by SIGKILL: restarting it" in err
    rep = json.loads((tmp_path / "r.json").read_text())
    strat = rep["stages"]["strategy.sample"]
    assert strat["restarts"] == 1
    assert strat["values"]["last_seq"] == n - 1
    assert rep["ticks"]["published"] == n
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
