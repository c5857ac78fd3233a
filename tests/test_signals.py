"""Signals and crashes (issue 8): agents never outlive the supervisor, SIGTERM/SIGINT to an
agent is a clean exit the supervisor restarts from, SIGHUP reloads, a second SIGINT stops
within a second, and a stop that abandons events says so and exits non-zero.

The strategies below are loaded by the strategy agent as ``tests.test_signals:NAME`` (the
agents run with the repository as their working directory, as in test_flow), so this module
imports nothing at its top that only exists inside pytest (conftest)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest

from hftd import shm
from hftd.strategies import Strategy


# --- strategies run by the agents -------------------------------------------------------------
class Slow(Strategy):
    """Sleeps params['sleep_us'] per tick: its ticks ring, then ticks.in, fill up."""

    def on_start(self):
        self.sleep = self.params.get("sleep_us", 1000) / 1e6

    def on_tick(self, tick):
        time.sleep(self.sleep)


class SlowStart(Strategy):
    """Takes params['start_s'] to construct: its agent is not up until then."""

    def __init__(self, api, params):
        super().__init__(api, params)
        time.sleep(self.params.get("start_s", 1.0))


SLOW_START = ('[[strategies]]\nname = "sample"\nclass = "tests.test_signals:SlowStart"\n'
              'params = { start_s = 1.0 }\n')


class Churn(Strategy):
    """One order at a time per instrument: buys up to a position of params['target'] lots,
    then sells one, and so on (never beyond `target`, so never rejected by a max_position of
    `target` or more; with a smaller max_position every other order is rejected)."""

    def on_tick(self, tick):
        i = tick.instrument
        if self.working(i) == 0:
            if self.position(i) < self.params.get("target", 3):
                self.buy(i, 1)
            else:
                self.sell(i, 1)


HFTD = [sys.executable, "-m", "hftd"]


def backlog(sleep_us: int) -> str:
    """Small rings and a strategy slower than the feed (--rate 0): both rings fill up."""
    return (f'[rings.ticks]\ncapacity = 1024\n[[strategies]]\nname = "sample"\n'
            f'class = "tests.test_signals:Slow"\nparams = {{ sleep_us = {sleep_us} }}\n')


# --- helpers ----------------------------------------------------------------------------------
def write_config(path, instance: str, runtime_dir, toml: str = "") -> None:
    path.write_text(f'instance = "{instance}"\nruntime_dir = "{runtime_dir}"\n{toml}\n'
                    f'[metrics]\nlisten = ""\n')


class Hftd:
    """`hftd run` of the test's instance in the background, its stderr (where the agents'
    stderr goes too) collected line by line with the time each line arrived."""

    def __init__(self, instance: str, tmp_path, *args, toml: str = ""):
        self.cfg = tmp_path / "hftd.toml"
        write_config(self.cfg, instance, tmp_path / "run", toml)
        self.lines: list[tuple[float, str]] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(HFTD + ["run", "--config", str(self.cfg), *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        self.sup = psutil.Process(self.proc.pid)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append((time.monotonic(), line))
                self._cond.notify_all()
        with self._cond:
            self.lines.append((time.monotonic(), None))  # EOF
            self._cond.notify_all()

    @property
    def err(self) -> str:
        with self._cond:
            return "".join(line for _, line in self.lines if line is not None)

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        """The time the first stderr line containing `text` arrived (fails on timeout/EOF)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, line in self.lines:
                    if line is None:
                        raise AssertionError(f"hftd exited before logging {text!r}:\n{self.err}")
                    if text in line:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {text!r} within {timeout} s:\n{self.err}")
                self._cond.wait(left)

    def agents(self) -> dict[str, psutil.Process]:
        """The supervisor's agent processes by agent name (producer, ..., strategy.sample)."""
        out = {}
        for k in self.sup.children():
            try:
                cmd = k.cmdline()
            except psutil.Error:
                continue
            if "agent" in cmd:
                role = cmd[cmd.index("agent") + 1]
                out[f"strategy.{cmd[cmd.index('--name') + 1]}" if role == "strategy" else role] = k
        return out

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._reader.join(10)
        return rc

    def close(self) -> None:
        """Kill it if it still runs (the `instance` fixture then kills its agents)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._reader.join(10)


def instance_processes(pids, *needles: str) -> tuple[list[str], list[int]]:
    """(live processes, zombies) of an instance: those of `pids` (its agents, as seen
    earlier) still there, and any other process whose command line mentions one of `needles`
    (the instance name, on every agent's command line, or the config path, which a child the
    supervisor forked but had not yet exec'd still shows). A zombie has no command line, so
    zombies are found by pid."""
    live, zombies = [], []
    me = os.getpid()
    for p in psutil.process_iter(["pid", "cmdline", "status"]):
        pid, cmd = p.info["pid"], " ".join(p.info["cmdline"] or [])
        if pid == me or not (pid in pids or any(n in cmd for n in needles)):
            continue
        if p.info["status"] == psutil.STATUS_ZOMBIE:
            zombies.append(pid)
        else:
            live.append(f"{pid} {cmd}")
    return live, zombies


def status(cfg) -> dict:
    res = subprocess.run(HFTD + ["status", "--json", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def assert_no_traceback(err: str) -> None:
    assert "Traceback" not in err, err
    assert "SignalError" not in err, err


# --- 1. agents never outlive the supervisor ---------------------------------------------------
def _n_fork_servers(children) -> int:
    n = 0
    for c in children:
        try:
            n += "fork-server" in c.cmdline()
        except psutil.Error:
            pass
    return n


def _n_agents(children) -> int:
    """How many of the supervisor's `children` are agents (the others: its fork server)."""
    n = 0
    for c in children:
        try:
            n += "agent" in c.cmdline()
        except psutil.Error:
            pass
    return n


def _crash_then_restart(h: Hftd, instance: str, children=None) -> dict:
    """kill -9 the supervisor (`children`: its child processes just before); 1 s later no
    process of the instance may be left, and the next run of the instance must start
    cleanly, remove the crash's debris, and exit 0."""
    if children is None:
        children = h.sup.children()
    agents = _n_agents(children)
    h.proc.kill()
    h.wait(10)  # reap the supervisor itself (the test is its parent)
    time.sleep(1.0)
    live, zombies = instance_processes({c.pid for c in children}, instance, str(h.cfg))
    assert live == [], f"processes outlived the supervisor: {live}"
    # zombies are dead (no memory, no descriptor, so no lock held): the orphans wait for
    # init to reap them, which this sandbox's pid 1 does only every few seconds
    for pid in zombies:
        try:
            assert psutil.Process(pid).ppid() != h.proc.pid
        except psutil.NoSuchProcess:
            pass
    debris = [n for n in shm.leftovers(instance) if not n.endswith(".lock")]
    res = subprocess.run(HFTD + ["run", "--config", str(h.cfg), "--ticks", "1000"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert_no_traceback(res.stderr)
    if debris:
        assert f"removed {len(debris)} stale shared-memory objects of a crashed earlier run" \
               in res.stderr, res.stderr
    assert shm.leftovers(instance) == []
    return {"children_before": len(children), "agents_before": agents,
            "live_after": len(live),
            "zombies_after": len(zombies), "debris": len(debris)}


@pytest.mark.parametrize("when", [1, 2, 4], ids=["1st-child", "2nd-child", "4th-child"])
def test_kill_9_supervisor_during_start_up_leaves_no_agent(instance, tmp_path, when):
    """The supervisor dies while it spawns its agents: right after its `when`-th agent is
    forked (perhaps not yet reparented or exec'd: the lifeline's parent check catches that
    one). An agent forked by the fork server is up within milliseconds: the strategy takes
    a second to construct, so the pipeline is not up when the 4th agent is there."""
    h = Hftd(instance, tmp_path, toml=SLOW_START)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                children = h.sup.children()
                if len(children) - _n_fork_servers(children) >= when:
                    break
            except psutil.NoSuchProcess:
                pass
            assert time.monotonic() < deadline and h.proc.poll() is None, h.err
            time.sleep(0.001)
        got = _crash_then_restart(h, instance, children)
        assert "pipeline up" not in h.err  # it really died during start-up
        print(f"kill -9 at child {when}: {got}")
    finally:
        h.close()


def test_kill_9_supervisor_while_running_leaves_no_agent(instance, tmp_path):
    h = Hftd(instance, tmp_path)
    try:
        h.wait_for("pipeline up")
        time.sleep(0.3)
        got = _crash_then_restart(h, instance)
        print(f"kill -9: {got}")
        assert got["agents_before"] == 4 and got["debris"] > 0
    finally:
        h.close()


def test_kill_9_supervisor_with_a_full_ring_leaves_no_agent(instance, tmp_path):
    h = Hftd(instance, tmp_path, "--rate", "0", toml=backlog(500))
    try:
        h.wait_for("pipeline up")
        deadline = time.monotonic() + 15
        while True:
            occ = status(h.cfg)["rings"]["ticks.in"]["occupancy_ratio"]
            if occ >= 0.95:
                break
            assert time.monotonic() < deadline, f"ticks.in never filled: {occ:.0%}"
        got = _crash_then_restart(h, instance)
        print(f"kill -9: {got}")
        assert got["agents_before"] == 4 and got["debris"] > 0
    finally:
        h.close()


# --- 2. SIGTERM (or SIGINT) to an agent -------------------------------------------------------
PARKED = ("50", 100)  # an idle pipeline: 2 s of 50 ticks/s, agents parked on their doorbells
BUSY = ("0", 1_000_000)  # flat out: ~1 M ticks/s unloaded, so ~1-2 s of work


@pytest.mark.parametrize("agent,sig,load", [
    ("executor", signal.SIGTERM, PARKED),
    ("dispatcher", signal.SIGTERM, PARKED),
    ("executor", signal.SIGINT, PARKED),
    ("strategy.sample", signal.SIGTERM, BUSY),
    ("dispatcher", signal.SIGTERM, BUSY),
], ids=["parked-executor", "parked-dispatcher", "parked-executor-sigint", "busy-strategy",
        "busy-dispatcher"])
def test_a_signal_to_an_agent_is_a_clean_exit_and_a_restart(instance, tmp_path, agent, sig, load):
    rate, n = load
    rep_path = tmp_path / "r.json"
    h = Hftd(instance, tmp_path, "--ticks", str(n), "--rate", rate, "--report", str(rep_path))
    try:
        h.wait_for("pipeline up")
        target = h.agents()[agent]
        # parked: asleep on its doorbell; busy: on a CPU (or runnable)
        want = psutil.STATUS_SLEEPING if load is PARKED else psutil.STATUS_RUNNING
        time.sleep(0.5 if load is PARKED else 0.1)
        deadline = time.monotonic() + 5
        while target.status() != want:
            assert time.monotonic() < deadline, target.status()
            time.sleep(0.0005)
        target.send_signal(sig)
        target.wait(10)  # not our child: the supervisor's log says how it ended
        rc = h.wait(120)
    finally:
        h.close()
    err = h.err
    assert rc == 0, err
    assert_no_traceback(err)
    assert f"agent {agent} left on SIGTERM/SIGINT without being told to stop: restarting it" \
           in err, err
    rep = json.loads(rep_path.read_text())
    t = rep["ticks"]
    assert t["received"] == t["published"] == t["delivered_to_strategies"] == n, t
    assert t["seq_gaps"] == 0
    for name, r in rep["rings"].items():
        assert r["in_flight"] == 0, name
    assert {k: s["restarts"] for k, s in rep["stages"].items()} == {
        k: int(k == agent) for k in rep["stages"]}
    assert shm.leftovers(instance) == []


# --- 3. SIGHUP reloads ------------------------------------------------------------------------
def _rejects(cfg) -> tuple[int, int]:
    v = status(cfg)["stages"]["executor"]["values"]
    return v["rejects"], v["acks"]


def _wait_rejects_rising(cfg, timeout=15.0) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    first, _ = _rejects(cfg)
    while True:
        now, _ = _rejects(cfg)
        if now > first:
            return first, now
        assert time.monotonic() < deadline, f"rejects stay at {now}"


def test_sighup_reloads_live_keys_and_refuses_the_others(instance, tmp_path):
    strat = '[[strategies]]\nname = "sample"\nclass = "tests.test_signals:Churn"\n'

    def toml(max_position, capacity=65536):
        return (f"[rings.ticks]\ncapacity = {capacity}\n[executor.risk]\n"
                f"max_position = {max_position}\n{strat}")

    h = Hftd(instance, tmp_path, "--rate", "200", toml=toml(50))
    run_dir = tmp_path / "run"

    def edit(text):
        write_config(h.cfg, instance, run_dir, text)

    def hup_and_wait(text):
        n = h.err.count(text)
        h.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while h.err.count(text) == n:
            assert time.monotonic() < deadline and h.proc.poll() is None, h.err
            time.sleep(0.02)

    try:
        h.wait_for("pipeline up")
        hup_and_wait("reload: nothing changed")
        time.sleep(0.5)
        rejects, acks = _rejects(h.cfg)
        assert acks > 0 and rejects == 0  # Churn stays within 3 lots: never rejected

        edit(toml(1))
        hup_and_wait("reloaded executor.risk.max_position")
        r0, r1 = _wait_rejects_rising(h.cfg)  # the executor applies max_position 1

        # a fixed key changed beside a live one: refused as a whole, max_position stays 1
        edit(toml(50, capacity=1024))
        hup_and_wait("reload refused, nothing changed: rings.ticks.capacity cannot change")
        _wait_rejects_rising(h.cfg)
        res = subprocess.run(HFTD + ["reload", "--config", str(h.cfg)], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 1, res
        assert "reload refused, nothing changed: rings.ticks.capacity cannot" in res.stdout, res

        edit(toml(50))  # only max_position changed (back to 50): applied
        res = subprocess.run(HFTD + ["reload", "--config", str(h.cfg)], capture_output=True,
                             text=True, timeout=30)
        assert res.returncode == 0 and "reloaded: executor.risk.max_position" in res.stdout, res
        time.sleep(0.3)  # the executor applies it within a pass; then no reject any more
        a, acks_a = _rejects(h.cfg)
        time.sleep(0.5)
        b, acks_b = _rejects(h.cfg)
        assert a == b and acks_b > acks_a, (a, b, acks_a, acks_b)
        print(f"rejects: 0 at max_position 50, {r0} -> {r1} at 1, stay at {b} back at 50")

        assert h.proc.poll() is None  # SIGHUP never stopped it
        h.signal(signal.SIGINT)
        rc = h.wait(60)
    finally:
        h.close()
    err = h.err
    assert rc == 0, err
    assert_no_traceback(err)
    assert "restarting" not in err  # no agent died on the way
    assert shm.leftovers(instance) == []


# --- 4 and 5. stops that abandon events -------------------------------------------------------


def test_a_second_sigint_stops_within_a_second(instance, tmp_path):
    h = Hftd(instance, tmp_path, "--rate", "0", "--ticks", "10000000", toml=backlog(1000))
    try:
        h.wait_for("pipeline up")
        pids = {p.pid for p in h.sup.children()}
        time.sleep(0.5)  # ticks.in and ticks.sample fill up: ~2 s of work for the strategy
        h.signal(signal.SIGINT)
        h.wait_for("stopping: draining the pipeline")
        time.sleep(0.5)
        assert h.proc.poll() is None, h.err  # still draining
        t = time.monotonic()
        h.signal(signal.SIGINT)
        rc = h.wait(30)
        elapsed = time.monotonic() - t
    finally:
        h.close()
    err = h.err
    print(f"exit {elapsed:.3f} s after the second SIGINT; "
          f"{re.findall(r'stop abandoned events: .*', err)}")
    assert elapsed < 1.5, (elapsed, err)  # 0.4 s of grace for the agents, then SIGKILL
    assert rc == 1, err
    assert "second signal: stopping now" in err
    _assert_abandoned_and_gone(err, r"\bring ticks\.in \d+", pids, instance, h)


def test_a_stop_that_times_out_abandons_events_and_exits_1(instance, tmp_path):
    h = Hftd(instance, tmp_path, "--rate", "0",
             toml=backlog(2000) + "[supervisor]\nstop_timeout_s = 1.0\n")
    try:
        h.wait_for("pipeline up")
        pids = {p.pid for p in h.sup.children()}
        time.sleep(0.5)
        t = time.monotonic()
        h.signal(signal.SIGTERM)
        rc = h.wait(30)
        elapsed = time.monotonic() - t
    finally:
        h.close()
    err = h.err
    print(f"exit {elapsed:.3f} s after SIGTERM; {re.findall(r'stop abandoned events: .*', err)}")
    assert rc == 1, err
    assert "did not finish within 1 s: abandoning the drain" in err
    _assert_abandoned_and_gone(err, r"\bring ticks\.\w+ \d+", pids, instance, h)


def _assert_abandoned_and_gone(err, ring_pattern, pids, instance, h):
    """The stop listed what it abandoned (a ring matching `ring_pattern`), said nothing
    else went wrong, and left no process and no shared memory behind."""
    m = re.search(r"stop abandoned events: (.*)", err)
    assert m and re.search(ring_pattern, m.group(1)), err
    assert_no_traceback(err)
    live, zombies = instance_processes(pids, instance, str(h.cfg))
    assert live == [] and zombies == [], (live, zombies)
    assert shm.leftovers(instance) == []
