"""Session recording (`[producer] record = DIR`) and its replay (`feed = "recording"`),
hftd/feeds/recording.py: the file format and its crash-only rules on their own; then the
pipeline: a recorded run replayed gives the same ticks and the same orders; a producer killed
while recording (and while replaying) records each published tick exactly once; a recording
whose instruments the config lacks is refused in one line; a truncated or corrupt recording
replays what it can, with one line naming the file."""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from hftd.strategies import Strategy

try:
    import pytest

    from conftest import hftd, hftd_running, kill_agent, wait_running
except ImportError:  # (loaded by a strategy agent as tests.test_recording:Alternator)
    pass

FIELDS = ("seq", "instrument", "price", "qty", "t_exchange")


class Alternator(Strategy):
    """Deterministic given its ticks: every params['every'] ticks, a 1-lot IOC limit order at
    the tick's price, buying and selling in turn per instrument (whatever fills). Writes the
    orders it sent (client id, instrument, side, qty, price) to params['out'] on stop."""

    def on_start(self):
        self.n = 0
        self.sent = []
        self.side = {}

    def on_tick(self, tick):
        self.n += 1
        if self.n % self.params.get("every", 20):
            return
        i = tick.instrument
        buy = self.side.get(i, True)
        self.side[i] = not buy
        cid = (self.buy if buy else self.sell)(i, 1, tick.price, 1)
        self.sent.append([cid, i, 1 if buy else -1, 1, tick.price])

    def on_stop(self):
        out = self.params.get("out")
        if out:
            with open(out, "w") as f:
                json.dump({"sent": self.sent, "n": self.n}, f)


# --- the format, in process -------------------------------------------------------------
def _recorder(d, run=7, next_seq=0, resumed=False, symbols=("A", "B")):
    from hftd.feeds.recording import Recorder

    return Recorder(str(d), list(symbols), "x", run, next_seq, resumed)


def _batch(rec, seq0, n, t_wall):
    inst = np.arange(seq0, seq0 + n, dtype=np.int32) % 2
    rec.write(seq0, inst, np.arange(seq0, seq0 + n) + 100, np.ones(n, dtype=np.int64),
              np.full(n, 5, dtype=np.int64), 1000 + seq0, t_wall)


T0 = 1_795_000_000 * 10**9  # 2026-11-18T16:53:20+08:00: trading day 2026-11-19


def test_records_rotate_by_taipei_trading_day_at_15_00(tmp_path):
    from hftd.feeds.recording import load, trading_day

    h = 3600 * 10**9
    base = (T0 // (86400 * 10**9)) * 86400 * 10**9  # 00:00 UTC = 08:00 Taipei
    assert trading_day(base + 7 * h - 1) == trading_day(base)  # 14:59:59.999 Taipei
    assert trading_day(base + 7 * h) == trading_day(base) + 1  # 15:00 Taipei: the next day
    rec = _recorder(tmp_path)
    _batch(rec, 0, 10, base + 5 * h)  # 13:00 Taipei (day session)
    _batch(rec, 10, 10, base + 8 * h)  # 16:00 Taipei (night session: next trading day)
    rec.write_rows([(20, 1, 1, 300, 2, 9)], base + 20 * h)  # 04:00 Taipei, same night
    rec.close()
    files = sorted(os.listdir(tmp_path))
    assert files == ["ticks-20261118-7.rec", "ticks-20261119-7.rec"], files
    a, head, msg = load(str(tmp_path / files[0]))
    b, _, _ = load(str(tmp_path / files[1]))
    assert head["instruments"] == ["A", "B"] and msg == ""
    assert a["seq"].tolist() == list(range(10)) and b["seq"].tolist() == list(range(10, 21))
    assert b["price"].tolist()[-1] == 300 and b["t_exchange"].tolist()[-1] == 9


def test_a_restarted_recorder_cuts_what_was_not_published(tmp_path):
    """A batch written and never published (killed before the cursor store), and a record
    cut short: the successor keeps exactly the records below the ring's cursor."""
    from hftd.feeds.recording import RECORD, load

    rec = _recorder(tmp_path)
    _batch(rec, 0, 100, T0)
    _batch(rec, 100, 50, T0)  # this batch's publish "did not happen"
    rec.close()
    path = str(tmp_path / os.listdir(tmp_path)[0])
    with open(path, "ab") as f:
        f.write(b"\1" * (RECORD.itemsize // 2))  # and a torn record
    rec = _recorder(tmp_path, next_seq=100, resumed=True)
    assert rec.cut == 50
    _batch(rec, 100, 30, T0)
    rec.close()
    r, _, msg = load(path)
    assert msg == "" and r["seq"].tolist() == list(range(130))
    rec = _recorder(tmp_path, next_seq=130, resumed=True)  # nothing to cut
    assert rec.cut == 0 and len(load(path)[0]) == 130
    # a header cut short (killed as it opened a new day's file) is written again
    with open(tmp_path / "ticks-20261120-7.rec", "wb") as f:
        f.write(rec.header[:11])
    rec = _recorder(tmp_path, next_seq=130, resumed=True)
    _batch(rec, 130, 5, T0 + 86400 * 10**9)
    rec.close()
    assert load(str(tmp_path / "ticks-20261120-7.rec"))[0]["seq"].tolist() == list(range(130, 135))
    # another run's files are never touched
    other = _recorder(tmp_path, run=8, next_seq=0, resumed=True)
    assert other.cut == 0 and len(load(path)[0]) == 130


def test_the_feed_replays_continues_and_reports_a_truncated_or_corrupt_file(tmp_path):
    from hftd import config
    from hftd.feeds.recording import RECORD, RecordingFeed

    rec = _recorder(tmp_path)
    _batch(rec, 0, 40, T0)
    _batch(rec, 40, 40, T0 + 24 * 3600 * 10**9)  # the next trading day
    rec.close()
    first, second = sorted(glob.glob(str(tmp_path / "*.rec")))
    with open(second, "ab") as f:
        f.write(b"\0" * 10)
    bad = tmp_path / "ticks-20261118-6.rec"
    bad.write_bytes(b"not a recording at all")
    instruments = [config.Instrument(symbol="B"), config.Instrument(symbol="A")]  # remapped
    cfg = config.RecordingFeedConfig(path=str(tmp_path))
    log = []
    f = RecordingFeed(cfg, instruments, log=log.append)
    got = []
    while not f.exhausted:
        b = f.poll(7, 0)
        if b is not None:
            got += list(zip(b.instrument.tolist(), b.price.tolist()))
    assert got == [(1 - k % 2, 100 + k) for k in range(80)]
    assert f.counts == {"ticks": 80, "unreadable_files": 1, "truncated_files": 1}
    assert len(log) == 2 and str(bad) in log[0] and "bad magic" in log[0] \
        and "skipped" in log[0], log
    assert second in log[1] and "truncated: the last 10 bytes" in log[1] and "40 whole" in log[1]
    assert f.progress()["progress_ppm"] == 1_000_000
    g = RecordingFeed(cfg, instruments, log=log.append)
    g.advance(55)
    b = g.poll(100, 0)
    assert g.position == 80 and b.price.tolist() == list(range(155, 180))
    assert RECORD.itemsize == 56


# --- the pipeline ------------------------------------------------------------------------
def _toml(tmp_path, tag, *, record=None, replay=None, speed=0.0, rate=0.0, ticks=0, every=20):
    out = tmp_path / f"sent.{tag}.json"
    t = (f'state_dir = "{tmp_path}/state.{tag}"\n[metrics]\nlisten = ""\n'
         f'[producer]\n' + (f'record = "{record}"\n' if record else "")
         + (f'feed = "recording"\n[producer.recording]\npath = "{replay}"\nspeed = {speed}\n'
            if replay else f'[producer.synthetic]\nrate = {rate}\nticks = {ticks}\nseed = 5\n')
         + '[executor.risk]\norder_rate = 0.0\ninstance_order_rate = 0.0\n'
           'max_working_orders = 1000000\nmax_position = 100000\n'
         + f'[[strategies]]\nname = "sample"\nclass = "tests.test_recording:Alternator"\n'
           f'params = {{ out = "{out}", every = {every} }}\n')
    return t, out


def _load_dir(d):
    from hftd.feeds.recording import load

    parts = [load(f)[0] for f in sorted(glob.glob(os.path.join(str(d), "*.rec")))]
    return np.concatenate(parts) if parts else None


def _orders(state_dir):
    from hftd.venues.sim import log_path, records

    (d,) = glob.glob(os.path.join(str(state_dir), "*"))  # <state_dir>/<instance>
    return [r[2:] for r in records(log_path(d)) if r[1] == "N"]


def _same_ticks(a, b):
    assert len(a) == len(b)
    for k in FIELDS:
        assert (a[k] == b[k]).all(), k


def test_a_recorded_run_replays_with_the_same_ticks_and_the_same_orders(run_hftd, tmp_path):
    toml, sent1 = _toml(tmp_path, "rec", record=tmp_path / "rec1", ticks=30_000)
    res = run_hftd("--report", str(tmp_path / "r1.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rec1 = _load_dir(tmp_path / "rec1")
    assert rec1["seq"].tolist() == list(range(30_000))
    assert "recording to " in res.stdout  # the summary
    toml, sent2 = _toml(tmp_path, "replay", record=tmp_path / "rec2", replay=tmp_path / "rec1")
    res = run_hftd("--report", str(tmp_path / "r2.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r2.json").read_text())
    assert rep["invariants"] == [] and rep["recording"]["fed"] == 30_000
    assert rep["recording"]["progress"]["percent"] == 100.0
    assert "recording replay: file 1/1" in res.stdout
    _same_ticks(rec1, _load_dir(tmp_path / "rec2"))
    a, b = json.loads(sent1.read_text()), json.loads(sent2.read_text())
    assert a["n"] == b["n"] == 30_000 and len(a["sent"]) == 1500 and a["sent"] == b["sent"]
    o1, o2 = _orders(tmp_path / "state.rec"), _orders(tmp_path / "state.replay")
    assert len(o1) == 1500 and o1 == o2  # owner, cid, inst, side, qty, type, tif, price


def test_a_killed_producer_records_each_published_tick_once(instance, tmp_path):
    """SIGKILL the producer while it records (then while it replays that recording): each
    published tick is recorded once, in sequence, with the stream's content."""
    from hftd import config
    from hftd.feeds.synthetic import SyntheticFeed

    toml, _ = _toml(tmp_path, "rec", record=tmp_path / "rec1", rate=20_000.0, ticks=60_000)
    with hftd_running(instance, tmp_path, "--report", str(tmp_path / "r1.json"),
                      toml=toml) as proc:
        kill_agent(proc, instance, "producer", after_s=1.0)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads((tmp_path / "r1.json").read_text())
    assert rep["stages"]["producer"]["restarts"] == 1 and rep["invariants"] == []
    rec1 = _load_dir(tmp_path / "rec1")
    assert rec1["seq"].tolist() == list(range(60_000))
    assert len(glob.glob(str(tmp_path / "rec1" / "*.rec"))) in (1, 2)  # (15:00 Taipei)
    f = SyntheticFeed(config.SyntheticFeedConfig(rate=0, ticks=60_000, seed=5), 5)
    b = f.poll(60_000, 0)
    assert (rec1["instrument"] == b.instrument).all() and (rec1["price"] == b.price).all() \
        and (rec1["qty"] == b.qty).all()
    # the replay of it, at 3x its recorded pace (about 1 s), its producer killed too
    toml, _ = _toml(tmp_path, "replay", record=tmp_path / "rec2", replay=tmp_path / "rec1",
                    speed=3.0)
    with hftd_running(instance, tmp_path, "--report", str(tmp_path / "r2.json"),
                      toml=toml) as proc:
        kill_agent(proc, instance, "producer", after_s=0.4)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads((tmp_path / "r2.json").read_text())
    prod = rep["stages"]["producer"]
    assert prod["restarts"] == 1 and 0 < prod["values"]["resumed_at"] < 60_000, prod
    assert rep["recording"]["fed"] == rep["ticks"]["published"] == 60_000
    assert rep["invariants"] == []
    _same_ticks(rec1, _load_dir(tmp_path / "rec2"))


def test_a_replay_of_other_instruments_is_refused_in_one_line(tmp_path):
    from hftd.feeds.recording import Recorder

    rec = Recorder(str(tmp_path / "rec"), ["TXF", "NOPE"], "x", 1, 0, False)
    _batch(rec, 0, 5, T0)
    rec.close()
    cfg = tmp_path / "hftd.toml"
    cfg.write_text(f'[producer]\nfeed = "recording"\n[producer.recording]\n'
                   f'path = "{tmp_path}/rec"\n')
    res = hftd("check-config", str(cfg), timeout=60)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "records instruments ['TXF', 'NOPE']; the config has no 'NOPE'" in res.stderr
    assert "ticks-20261119-1.rec" in res.stderr
    res = hftd("run", "--config", str(cfg), timeout=60)
    assert res.returncode == 2 and "the config has no 'NOPE'" in res.stderr


def test_a_truncated_recording_replays_its_whole_records(run_hftd, tmp_path):
    from hftd.feeds.recording import RECORD, Recorder

    rec = Recorder(str(tmp_path / "rec"), ["TXF", "MXF"], "x", 1, 0, False)
    _batch(rec, 0, 1000, T0)
    rec.close()
    path = glob.glob(str(tmp_path / "rec" / "*.rec"))[0]
    os.truncate(path, os.path.getsize(path) - RECORD.itemsize - 3)
    (tmp_path / "rec" / "ticks-20261118-0.rec").write_bytes(b"HFTDREC\0garbage")
    toml, _ = _toml(tmp_path, "replay", replay=tmp_path / "rec")
    res = run_hftd("--report", str(tmp_path / "r.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["ticks"]["published"] == rep["recording"]["fed"] == 998
    assert rep["recording"]["unreadable_files"] == 1 and rep["recording"]["truncated_files"] == 1
    lines = [ln for ln in res.stderr.splitlines() if "recording feed:" in ln]
    assert len(lines) == 2, res.stderr
    assert "ticks-20261118-0.rec" in lines[0] and "skipped" in lines[0]
    assert f"{path}: truncated: the last {RECORD.itemsize - 3} bytes" in lines[1]


def test_a_record_directory_that_cannot_be_written_stops_the_start_in_one_line(run_hftd, tmp_path):
    """Found by a hostile review: the producer crashed for ever on an unwritable `record`."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    res = run_hftd("--ticks", "1000", toml=f'[metrics]\nlisten = ""\n[producer]\n'
                   f'record = "{blocker}/sub"\n')
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.splitlines() if "producer.record" in ln]
    assert len(lines) == 1 and f"{blocker}/sub" in lines[0] and "Traceback" not in res.stderr


def test_a_recording_replayed_on_another_tick_size_is_refused(tmp_path):
    """Found by a hostile review: prices are recorded in ticks, so a replay whose instrument
    has another tick size read every price on another grid (TXF 23,000 became 115,000)."""
    from hftd.feeds.recording import Recorder, RecordingError, check_instruments

    rec = Recorder(str(tmp_path / "rec"), ["TXF", "TE"], "x", 1, 0, False, ["1", "0.05"])
    _batch(rec, 0, 4, T0)
    rec.close()
    path = str(tmp_path / "rec")
    check_instruments(path, ["TXF", "TE"], ["1", "0.050"])  # the same grid, written otherwise
    with pytest.raises(RecordingError, match="recorded TE on a tick size of 0.05; the config has 1"):
        check_instruments(path, ["TXF", "TE"], ["1", "1"])
