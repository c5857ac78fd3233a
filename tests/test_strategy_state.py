"""A strategy's own state outlives its process: what `on_save` returns is kept by the strategy
stage in `<state dir>/<name>.strategy.json` and handed to `on_load` in the next process; a
file that cannot be used stops the strategy at start with one line naming it, never replaced
by a fresh state; a save that fails is counted and trading goes on. In-process, on real
shared memory (the test stands in for the dispatcher), then through the whole pipeline with
the strategy process SIGKILLed and the daemon restarted."""

from __future__ import annotations

import datetime
import errno
import json
import os
import stat
import time

import pytest

from hftd import shm
from hftd.events import Codec, Tick, TickStream
from hftd.identity import check_state_dir
from hftd.ring import RingWriter
from hftd.stages import StrategyStage
from hftd.stages.common import end_of_stream
from conftest import hftd_running, kill_agent, log_records

COUNTER = "tests.strategies:Counter"
tick_enc = Codec(TickStream)


class Host:
    """The instance's shared memory with one strategy `sample` of class `cls`; `start()` is a
    new process of its stage (the same rings and stats block, as after a restart)."""

    def __init__(self, plant, cls=COUNTER, **params):
        self.p = plant({"strategies": [{"name": "sample", "class": cls, "params": params}]})
        self.dir = check_state_dir(self.p.cfg.resolved_state_dir())
        self.path = os.path.join(self.dir, "sample.strategy.json")
        self.ticks = RingWriter(self.p.ring("ticks.sample"))
        self.seq = 0
        self.stage = None

    def start(self) -> StrategyStage:
        self.stage = StrategyStage(self.p.context("strategy.sample"))
        self.stage.on_start()
        self.p.answer_reconcile(self.stage)
        return self.stage

    @property
    def s(self):
        return self.stage.strategy

    def tick(self, *prices, extra_pass: bool = True) -> None:
        """Ticks at these prices (instrument 0), all handled by the stage, and one pass more
        (a save due after a pass is made at the next)."""
        for price in prices:
            now = time.monotonic_ns()
            assert self.ticks.offer(0, now, tick_enc.encode(Tick(self.seq, now, 0, price, 1)))
            self.seq += 1
        self.work_until(lambda: self.stage.ticks.available() == 0)
        if extra_pass:
            self.stage.do_work()

    def stop(self) -> None:
        assert end_of_stream(self.ticks)
        self.work_until(lambda: self.stage.stopped)

    def work_until(self, done, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.stage.do_work()
            if done():
                return
            time.sleep(0.0005)
        raise AssertionError(f"the stage did not get there within {timeout} s")

    def stat(self, name):
        return self.stage.ctx.stats.get(name)

    def saved(self) -> dict:
        return json.loads(open(self.path, "rb").read())

    def write(self, data: bytes) -> None:
        with open(self.path, "wb") as f:
            f.write(data)
        os.chmod(self.path, 0o600)


def envelope(state, cls=COUNTER, version=1) -> bytes:
    return json.dumps({"version": version, "strategy": "sample", "class": cls,
                       "saved_at": "2024-01-02T03:04:05+00:00", "state": state}).encode()


def state(n, price_sum=0, last_seq=-1, lost=0) -> dict:
    return {"n": n, "sum": price_sum, "last_seq": last_seq, "lost": lost}


def test_the_state_round_trips_to_the_next_process(plant):
    h = Host(plant)
    h.start()
    assert h.s.loaded is None and h.stat("loads") == 0 and not os.path.exists(h.path)
    h.tick(20_000, 20_001, 20_002)
    assert h.stat("saves") == 3  # after every tick: it calls save()
    f = h.saved()
    assert (f["version"], f["strategy"], f["class"]) == (1, "sample", COUNTER)
    assert f["state"] == state(3, 60_003, 2)
    saved_at = datetime.datetime.fromisoformat(f["saved_at"])
    assert saved_at.tzinfo is not None
    assert abs((datetime.datetime.now(datetime.timezone.utc) - saved_at).total_seconds()) < 3600
    assert stat.S_IMODE(os.stat(h.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(h.dir).st_mode) == 0o700
    assert [n for n in os.listdir(h.dir) if n.endswith(".tmp")] == []

    h.start()  # the next process: on_load gets what on_save returned, the count goes on
    assert h.s.loaded == state(3, 60_003, 2) and h.stat("loads") == 1
    h.tick(20_010)
    assert (h.s.n, h.s.sum, h.s.last_seq, h.s.lost) == (4, 80_013, 3, 0)
    h.stop()  # the stop saves too (fsynced)
    assert h.stat("saves") == 3 + 1 + 1
    assert h.saved()["state"] == state(4, 80_013, 3)


def test_a_save_from_on_start_waits_for_on_load(plant):
    """on_start runs before on_load: a save from there would replace the saved state by a
    fresh one, so it is done right after on_load; with no saved state it is done at once."""
    h = Host(plant, save_in_start=True)
    h.start()
    assert h.s.saved_in_start is True and h.saved()["state"] == state(0)
    h.write(envelope(state(7, 140_000, 6)))
    h.start()
    assert h.s.loaded == state(7, 140_000, 6)
    assert h.saved()["state"] == state(7, 140_000, 6)  # saved after on_load, not before
    assert h.stat("saves") == 2 and h.stat("loads") == 1


@pytest.mark.parametrize("content, why", [
    (b"garbage", "is unusable: JSON is malformed"),
    (b"", "is unusable: Input data was truncated"),
    (b'{"version": 1, "strategy": "sample", "class": "' + COUNTER.encode() + b'"}',
     "is unusable: Object missing required field `saved_at`"),
    (b"[1, 2]", "is unusable: Expected `object`, got `array`"),
    (envelope(state(1), version=2), "is version 2, this hftd reads version 1"),
    (envelope(state(1), cls="tests.strategies:Journal"),
     f"holds the state of class tests.strategies:Journal, not of this strategy's class {COUNTER}"),
    (envelope(state(-1)), "is refused by Counter.on_load: ValueError: n is -1, a count cannot "
                          "be negative"),
    (envelope({"n": 1}), "is refused by Counter.on_load: KeyError: 'sum'"),
])
def test_an_unusable_state_file_stops_the_strategy_with_one_line(plant, capsys, content, why):
    h = Host(plant)
    h.write(content)
    with pytest.raises(SystemExit) as exit_:
        h.start()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"hftd[{h.p.cfg.instance}] strategy.sample: error: strategy state "
                          f"file {h.path}"), err
    assert why in err and "fix it or move it away" in err, err
    with open(h.path, "rb") as f:
        assert f.read() == content  # never replaced by a fresh state
    assert h.stage.ctx.stats.get("saves") == 0


def test_a_state_file_that_is_a_symlink_is_refused(plant, capsys, tmp_path):
    h = Host(plant)
    target = tmp_path / "elsewhere.json"
    target.write_bytes(envelope(state(1)))
    os.symlink(target, h.path)
    with pytest.raises(SystemExit):
        h.start()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and h.path in err and "symlink" in err, err
    assert os.path.islink(h.path) and target.read_bytes() == envelope(state(1))


def test_a_failing_save_is_counted_and_trading_goes_on(plant, capsys, monkeypatch):
    h = Host(plant, fail_save=True)
    h.start()
    h.tick(20_000, 20_001)
    assert h.s.n == 2  # every tick handled
    assert h.stat("save_errors") == 2 and h.stat("saves") == 0 and not os.path.exists(h.path)
    assert h.s.save() is False and h.stat("save_errors") == 3
    lines = capsys.readouterr().err.splitlines()
    assert 1 <= len(lines) <= 3, lines  # at most one line a second: the rest are counted
    assert lines[0].startswith(f"hftd[{h.p.cfg.instance}] strategy.sample: state not saved to "
                               f"{h.path}: RuntimeError: on_save failed on purpose"), lines
    assert "trading goes on" in lines[0]

    h.s.params["fail_save"] = False  # the bug fixed: the next save goes through
    h.tick(20_002)
    assert h.stat("saves") == 1 and h.saved()["state"] == state(3, 60_003, 2)

    # a full disk, then a state msgspec cannot encode: counted, the last good file kept
    import hftd.stages.strategy as stage_mod

    def full(path, data, durable=False):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(stage_mod, "write_atomic", full)
    h.tick(20_003)
    monkeypatch.undo()
    h.s.on_save = lambda: {"n": object()}
    h.tick(20_004)
    assert h.stat("save_errors") == 5 and h.stat("saves") == 1 and h.s.n == 5
    assert h.saved()["state"] == state(3, 60_003, 2)
    assert [n for n in os.listdir(h.dir) if n.endswith(".tmp")] == []


def test_a_state_marked_dirty_is_saved_at_most_every_save_every_s(plant):
    h = Host(plant, each_tick=False, save_every_s=3600.0)
    h.start()
    h.tick(20_000)
    assert h.stat("saves") == 1  # the first change: nothing saved for 3600 s before it
    h.tick(20_001, 20_002)
    assert h.stat("saves") == 1 and h.saved()["state"]["n"] == 1
    assert h.stage.api.state_dirty and 0 < h.stage.sleep_for() <= 3600  # a parked stage wakes
    h.stop()
    assert h.stat("saves") == 2 and h.saved()["state"]["n"] == 3


def test_a_state_marked_dirty_is_saved_again_once_save_every_s_has_passed(plant):
    h = Host(plant, each_tick=False, save_every_s=0.001)
    h.start()
    h.tick(20_000)
    h.tick(20_001)
    h.work_until(lambda: not h.stage.api.state_dirty)  # once 1 ms has passed
    assert h.saved()["state"]["n"] == 2 and h.stat("saves") == 2


def test_a_process_leaving_on_a_signal_saves_what_it_has(plant):
    h = Host(plant, each_tick=False)  # save_every_s 0: marked dirty, saved at the end only
    h.start()
    h.tick(20_000, 20_001)
    assert not os.path.exists(h.path)
    h.stage.on_close()  # what agent.run does after SIGTERM
    assert h.saved()["state"] == state(2, 40_001, 1) and h.stat("saves") == 1


def test_temporaries_a_killed_save_left_are_removed_at_start(plant):
    h = Host(plant)
    ours = os.path.join(h.dir, ".sample.strategy.json.4242.0a1b2c3d.tmp")
    other = os.path.join(h.dir, ".sample2.strategy.json.4242.0a1b2c3d.tmp")
    for p in (ours, other):
        open(p, "w").close()
    h.start()
    assert not os.path.exists(ours) and os.path.exists(other)


# --- through the pipeline ----------------------------------------------------------------

PIPELINE = """
state_dir = "{tmp}/state"
[metrics]
listen = ""
[producer.synthetic]
rate = {rate}
[[strategies]]
name = "sample"
class = "tests.strategies:Counter"
"""


def test_an_indicator_survives_sigkills_of_the_strategy_and_a_restart_of_the_daemon(
        instance, tmp_path, run_hftd):
    """The Counter strategy (every instrument routed, so it sees every seq) counts its ticks
    and sums their prices, saving after every tick; its process is SIGKILLed twice. The
    stage's ticks_in counts each tick handled once (ring positions: a tick a dead process
    began is skipped by the next, and counted as handled). The one thing a kill can take:
    the tick whose on_tick was running, when it died before its save; the next process sees
    it as the gap between the saved last seq and its first tick (`lost`), at most one per
    kill. So n + lost == ticks_in exactly: not reset (n would start over), not counted twice
    (n would exceed it). Then the daemon is restarted and the count goes on, exactly."""
    report = tmp_path / "r1.json"
    toml = PIPELINE.format(tmp=tmp_path, rate=4000.0)
    with hftd_running(instance, tmp_path, "--ticks", "12000", "--report", str(report),
                      toml=toml) as proc:
        for _ in range(2):
            kill_agent(proc, instance, "strategy", after_s=1.0)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    st = json.loads(report.read_text())["stages"]["strategy.sample"]
    v = st["values"]
    path = tmp_path / "state" / instance / "sample.strategy.json"
    s1 = json.loads(path.read_text())["state"]
    assert st["restarts"] == 2 and v["loads"] == 2, v  # each new process loaded the state
    assert v["save_errors"] == 0 and v["seq_gaps"] == 0, v
    assert 0 <= s1["lost"] <= 2 and s1["lost"] <= v["restart_skipped"], (s1, v)
    assert s1["n"] + s1["lost"] == v["ticks_in"], (s1, v)
    # a save a tick and one at the stop, each counted once written; a kill can come between
    # the write (the rename completes: SIGKILL waits for the system call) and the count
    assert s1["n"] + 1 - 2 <= v["saves"] <= s1["n"] + 1, (s1, v)
    assert s1["sum"] > 0 and s1["last_seq"] == v["last_seq"]
    assert v["ticks_in"] == 12000  # every tick of the feed reached it (policy block)
    assert [n for n in os.listdir(path.parent) if n.endswith(".tmp")] == []

    # the next run of the daemon (its feed starts its seqs over): the count goes on
    report2 = tmp_path / "r2.json"
    r = run_hftd("--ticks", "3000", "--report", str(report2),
                 toml=PIPELINE.format(tmp=tmp_path, rate=20000.0))
    assert r.returncode == 0, r.stderr
    v2 = json.loads(report2.read_text())["stages"]["strategy.sample"]["values"]
    s2 = json.loads(path.read_text())["state"]
    assert v2["loads"] == 1 and v2["ticks_in"] == 3000, v2
    assert s2["n"] == s1["n"] + 3000 and s2["lost"] == s1["lost"], (s1, s2)
    assert s2["sum"] > s1["sum"]
    assert shm.leftovers(instance) == []


def test_a_corrupt_state_file_is_one_line_per_attempt_then_the_strategy_is_quarantined(
        instance, tmp_path, run_hftd):
    """Each process of the strategy refuses the file in one line naming it (exit 2, no
    traceback); the supervisor restarts it as any agent that failed at start and, past
    restart_burst, quarantines it. The file is left as it was."""
    d = tmp_path / "state" / instance
    os.makedirs(d, mode=0o700)
    path = d / "sample.strategy.json"
    path.write_bytes(b"garbage")
    r = run_hftd("--ticks", "1000", toml=PIPELINE.format(tmp=tmp_path, rate=20000.0)
                 + "[supervisor]\nrestart_burst = 1\n")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    refused = [rec for rec in log_records(r.stderr) if "strategy state file" in rec[1]]
    assert refused == [("ERROR", f"hftd[{instance}] strategy.sample: error: strategy state file "
                                 f"{path} is unusable: JSON is malformed: invalid character (byte "
                                 f"0); fix it or move it away (the strategy's state is not reset "
                                 f"in its place)")] * 2, r.stderr
    assert "agent strategy.sample exited with code 2" in r.stderr
    assert "quarantined" in r.stderr
    assert path.read_bytes() == b"garbage"
    assert shm.leftovers(instance) == []
