"""Flow control: policies, accounting, priority and isolation. In-process tests drive the
stages by hand on real shared memory (deterministic: event counts and sequence numbers,
never wall-clock time); end-to-end tests run the daemon."""

from __future__ import annotations

import json
import time

import msgspec
import numpy as np
import psutil
import pytest

from hftd import shm
from hftd.events import Codec, Control, ControlKind, Tick, TickStream
from hftd.feeds import FeedBatch
from hftd.ring import CONTROL_KEY, RingReader, RingWriter
from hftd.stages import Dispatcher, Producer, StrategyStage
from conftest import agents_of, hftd, start_hftd, stop

CAP = 64
enc = Codec(TickStream)


def _small_rings(policy="block", **extra):
    o = {"rings": {"ticks": {"capacity": CAP, "policy": policy}}}
    o.update(extra)
    return o


class TestProducer:
    """The test is the feed; the producer writes ticks.in; the test reads it."""

    def _producer(self, plant, policy="block", batch=512):
        p = plant(_small_rings(policy, producer={"batch": batch}))
        prod = Producer(p.context("producer"))
        now = time.monotonic_ns()
        RingWriter(p.ring("control.producer")).offer(
            CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.START)))
        return p, prod

    def _feed(self, prod, inst, price, qty):
        n = len(inst)
        batch = FeedBatch(np.array(inst, np.int32), np.array(price, np.int64),
                          np.array(qty, np.int64), np.zeros(n, np.int64))
        calls = []

        class Fake:
            exhausted = False

            def poll(self, max_n, now):
                if calls:
                    return None
                calls.append(max_n)
                return batch

            def due(self, now):
                return 0

            def next_due_s(self, now):
                return 1.0

        prod.feed = Fake()

    @pytest.mark.parametrize("n_good", [3, 40])  # the scalar path and the column-wise path
    def test_bad_ticks_are_rejected_by_reason_and_never_passed_on(self, plant, n_good):
        p, prod = self._producer(plant)
        inst = [0, 1, 99, 2, -1, 3, 1] + [k % 5 for k in range(n_good)]
        price = [100, -5, 100, 0, 100, 100, 100] + [200 + k for k in range(n_good)]
        qty = [1, 1, 1, 1, 1, -3, 0] + [1] * n_good
        self._feed(prod, inst, price, qty)
        prod.do_work()
        st = prod.ctx.stats
        assert st.get("rejected_bad_price") == 2  # -5 and 0
        assert st.get("rejected_unknown_instrument") == 2  # 99 and -1
        assert st.get("rejected_bad_qty") == 1  # -3 (qty 0 is allowed)
        assert st.get("rejected") == 5
        assert st.get("received") == st.get("published") + st.get("rejected")
        got = RingReader(p.ring("ticks.in")).read(enc.decode, 1000)
        assert [t.price for t in got] == [100, 100] + [200 + k for k in range(n_good)]
        assert [t.seq for t in got] == list(range(len(got)))


def _write_ticks(w: RingWriter, ticks):
    """Write (instrument, price) ticks into ticks.in as the producer would."""
    n = w.claim(len(ticks))
    for inst, price in ticks[:n]:
        now = time.monotonic_ns()
        w.put(inst, now, enc.encode(Tick(w.position, now, inst, price, 1)))
    w.publish()
    return n


def _write_eos(w: RingWriter) -> bool:
    now = time.monotonic_ns()
    if not w.claim(1):
        return False
    w.put(CONTROL_KEY, now, Codec(Control).encode(Control(w.position, now, ControlKind.SHUTDOWN)))
    w.publish()
    return True


def _dispatch_burst(plant, policy: str, n: int, consume_every: int | None):
    """Push `n` ticks (10 instruments... 5, cycling, rising prices) through an in-process
    dispatcher into a strategy ring of CAP slots that the test drains only every
    `consume_every` passes (None: only after the end of stream). The test also stands in for
    the executor, which reads its market-data ring (ticks.executor, block) as fast as it can."""
    p = plant(_small_rings(policy))
    disp = Dispatcher(p.context("dispatcher"))
    w = RingWriter(p.ring("ticks.in"))
    r = RingReader(p.ring("ticks.sample"))
    md = RingReader(p.ring("ticks.executor"))
    ticks = [(k % 5, 1000 + k) for k in range(n)]
    seen = []
    i = passes = 0
    while i < n:
        i += _write_ticks(w, ticks[i:])
        disp.do_work()
        md.commit(md.available())
        passes += 1
        if consume_every and passes % consume_every == 0:
            got = r.read(enc.decode, CAP)
            r.commit(len(got))
            seen += got
    eos = False
    for _ in range(10_000):
        eos = eos or _write_eos(w)
        disp.do_work()
        md.commit(md.available())
        got = r.read(enc.decode, CAP)
        r.commit(len(got))
        seen += got
        if disp.done:
            break
    assert disp.done
    return p, disp, [t for t in seen if isinstance(t, Tick)], ticks


def _ring_invariant(ring, taken: int):
    """Everything the ring's writer published (its cursor) its reader took, as the reader
    counted it (`taken`, end-of-stream marker included), and committed (its cursor).
    (published == consumed + occupancy() would hold by construction: occupancy() is the
    difference of the two cursors.)"""
    assert ring.published == taken == ring.consumed


def test_block_burst_of_ten_capacities_loses_nothing(plant):
    p, disp, seen, sent = _dispatch_burst(plant, "block", 10 * CAP, consume_every=3)
    st = disp.ctx.stats
    assert [t.seq for t in seen] == list(range(10 * CAP))  # contiguous, in order
    assert st.get("routed.sample") == st.get("delivered.sample") == 10 * CAP
    assert st.get("conflated.sample") == st.get("dropped.sample") == 0
    assert p.ring("ticks.sample").published == 10 * CAP + 1  # + end of stream
    assert p.ring("ticks.sample").backpressure_episodes >= 1
    _ring_invariant(p.ring("ticks.in"), st.get("ticks_in") + 1)  # + the end of stream
    _ring_invariant(p.ring("ticks.sample"), len(seen) + 1)  # + the end of stream


def test_conflate_burst_keeps_the_newest_tick_of_every_instrument(plant):
    p, disp, seen, sent = _dispatch_burst(plant, "conflate", 10 * CAP, consume_every=None)
    st = disp.ctx.stats
    newest_sent = {inst: price for inst, price in sent}
    newest_seen = {t.instrument: t.price for t in seen}
    assert newest_seen == newest_sent
    routed, delivered = st.get("routed.sample"), st.get("delivered.sample")
    conflated = st.get("conflated.sample")
    assert routed == 10 * CAP
    assert routed == delivered + conflated + st.get("dropped.sample")
    assert st.get("dropped.sample") == 0 and conflated > 0
    assert delivered == len(seen)
    assert p.ring("ticks.sample").backpressure_episodes >= 1
    _ring_invariant(p.ring("ticks.sample"), len(seen) + 1)  # + the end of stream


def test_drop_burst_counts_are_exact(plant):
    p, disp, seen, sent = _dispatch_burst(plant, "drop", 10 * CAP, consume_every=None)
    st = disp.ctx.stats
    dropped = st.get("dropped.sample")
    assert dropped > 0 and st.get("conflated.sample") == 0
    assert st.get("routed.sample") == 10 * CAP == len(seen) + dropped
    assert st.get("delivered.sample") == len(seen)
    # what got through is a prefix of the stream in order (drop the newest)
    assert [t.seq for t in seen] == sorted(t.seq for t in seen)
    _ring_invariant(p.ring("ticks.sample"), len(seen) + 1)  # + the end of stream


def test_control_behind_a_full_backlog_waits_at_most_one_batch(plant, tmp_path):
    batch = 16
    p = plant({"rings": {"ticks": {"capacity": 1024}},
               "strategies": [{"name": "sample", "class": "tests.strategies:Recorder",
                               "batch_min": batch, "batch": batch,
                               "params": {"out": str(tmp_path / "rec.json")}}]})
    stage = StrategyStage(p.context("strategy.sample"))
    stage.on_start()
    p.answer_reconcile(stage)  # as the executor does at every strategy start
    w = RingWriter(p.ring("ticks.sample"))
    _write_ticks(w, [(k % 5, 1000 + k) for k in range(1000)])  # a backlog of 62 batches
    stage.do_work()  # one batch taken
    ctl = RingWriter(p.ring("control.strategy.sample"))
    now = time.monotonic_ns()
    ctl.offer(CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.PAUSE)))
    seen_when_written = len(stage.strategy.seqs)
    for _ in range(5):
        stage.do_work()
    rec = stage.strategy
    assert rec.paused_at is not None
    assert rec.paused_at - seen_when_written <= batch
    assert stage.ctx.stats.get("paused") == 1


# --- end to end ---------------------------------------------------------------------------

def _report(tmp_path):
    return json.loads((tmp_path / "r.json").read_text())


def _taken_by_reader(rep, ring: str) -> int:
    """The ticks the reader of tick ring `ring` counted taking (without the end-of-stream
    marker), counted apart from the ring's cursors."""
    stages = rep["stages"]
    if ring == "ticks.in":
        return stages["dispatcher"]["values"]["ticks_in"]  # summed batch by batch
    if ring == "ticks.executor":
        return stages["executor"]["values"]["md_ticks"]  # summed commit by commit
    # a strategy's ticks_in is its ring position (less the replays), so not that: its
    # latency histogram has one sample per tick it took, recorded batch by batch, and a
    # process restarted mid-batch counts the ticks its predecessor had begun (the batch it
    # died in, not recorded) as it skips them
    s = stages[f"strategy.{ring.split('.', 1)[1]}"]
    return s["latency_us"]["count"] + s["values"]["restart_skipped"]


def _assert_accounting(rep):
    f = rep["flow"]["feed"]
    assert f["received"] == f["published"] + f["conflated"] + f["dropped"] + f["rejected"] + \
        f["conflation_pending"]
    assert f["conflation_pending"] == 0
    for name, r in rep["flow"]["rings"].items():
        # what the writer published (its cursor), the reader took: as the reader counted it,
        # and as it committed (its cursor). (The report's in_flight is published - consumed:
        # published == consumed + in_flight would hold by construction.)
        assert r["published"] == _taken_by_reader(rep, name) + 1 == r["consumed"], name
        if "routed" in r:
            assert r["routed"] == r["delivered"] + r["conflated"] + r["dropped"] + \
                r["conflation_pending"], name
    o = rep["orders"]
    assert o["sent"] == o["received"] == o["acks"] + o["rejects"]
    # every acknowledged order ended once: filled (in one fill or more), canceled or expired
    assert o["filled"] + o["canceled"] + o["expired"] == o["acks"]
    assert o["fills"] >= o["filled"] and o["working"] == 0


@pytest.mark.parametrize("policy", ["block", "conflate", "drop"])
def test_end_to_end_burst_accounting_is_exact(run_hftd, tmp_path, policy):
    n = 20 * 1024
    toml = f"""
[rings.ticks]
capacity = 1024
policy = "{policy}"
[[strategies]]
name = "sample"
class = "tests.strategies:Recorder"
params = {{ sleep_us = 20, every = 50, out = "{tmp_path}/rec.json" }}
"""
    res = run_hftd("--ticks", str(n), "--rate", "0", "--report", str(tmp_path / "r.json"),
                   toml=toml)
    assert res.returncode == 0, res.stderr
    rep = _report(tmp_path)
    _assert_accounting(rep)
    f = rep["flow"]["feed"]
    assert f["received"] == n
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["n"] == rep["stages"]["strategy.sample"]["values"]["ticks_in"]
    assert rec["n"] == rep["flow"]["rings"]["ticks.sample"]["delivered"]
    rings = rep["flow"]["rings"]
    # the burst backs up somewhere: at the producer (block) or at the slow strategy's ring
    assert rings["ticks.in"]["backpressure_episodes"] + rings["ticks.sample"]["backpressure_episodes"] >= 1
    if policy == "block":
        assert rec["seqs"] == list(range(n))
        assert f["conflated"] == f["dropped"] == 0
    elif policy == "conflate":
        assert f["conflated"] + rep["flow"]["rings"]["ticks.sample"]["conflated"] > 0
        assert f["dropped"] == 0
    else:
        assert f["dropped"] + rep["flow"]["rings"]["ticks.sample"]["dropped"] > 0
        assert f["conflated"] == 0
    print("\n" + "\n".join(l for l in res.stdout.splitlines() if l.startswith("accounting")))


def _rss(pids):
    return {p: psutil.Process(p).memory_info().rss for p in pids}


def test_a_slow_strategy_keeps_memory_bounded_and_loses_no_order(tmp_path, instance):
    toml = f"""
[rings.ticks]
capacity = 4096
policy = "conflate"
[producer.synthetic]
rate = 20000.0
[[strategies]]
name = "sample"
class = "tests.strategies:Recorder"
params = {{ sleep_us = 500, every = 5, keep_seqs = false, out = "{tmp_path}/rec.json" }}
"""
    proc = start_hftd(instance, tmp_path, "--duration", "5", "--report", str(tmp_path / "r.json"),
                      toml=toml)
    try:
        sup = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(agents_of(sup)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        pids = [proc.pid] + [c.pid for c in sup.children()]  # the fork server's too
        time.sleep(1.5)
        early = _rss(pids)
        time.sleep(2.5)
        late = _rss(pids)
    finally:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    for pid in pids:  # flat: conflation bounds what waits, whatever the strategy's speed
        assert late[pid] - early[pid] < 8 * 2**20, (pid, early[pid], late[pid])
    rep = _report(tmp_path)
    _assert_accounting(rep)
    ring = rep["flow"]["rings"]["ticks.sample"]
    assert ring["backpressure_episodes"] >= 1 and ring["conflated"] > 0
    s = rep["stages"]["strategy.sample"]["values"]
    # every event on the reports ring was a report the strategy counted, but the executor's
    # answer to each RECONCILE (one per strategy start) and the end of the stream
    reconciles = rep["stages"]["executor"]["values"]["reconciles"]
    assert s["reports_in"] == rep["rings"]["reports.sample"]["published"] - reconciles - 1
    assert shm.leftovers(instance) == []


def test_a_slow_strategy_does_not_hold_back_a_fast_one(run_hftd, tmp_path):
    toml = f"""
[rings.ticks]
capacity = 1024
[producer.synthetic]
rate = 20000.0
[[strategies]]
name = "fast"
class = "tests.strategies:Recorder"
instruments = ["TXF", "MXF"]
params = {{ out = "{tmp_path}/fast.json" }}
[[strategies]]
name = "slow"
class = "tests.strategies:Recorder"
instruments = ["TXF", "TE", "TF"]
policy = "drop"
params = {{ sleep_us = 1000, out = "{tmp_path}/slow.json" }}
"""
    res = run_hftd("--ticks", "40000", "--report", str(tmp_path / "r.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = _report(tmp_path)
    _assert_accounting(rep)
    fast, slow = rep["flow"]["rings"]["ticks.fast"], rep["flow"]["rings"]["ticks.slow"]
    assert fast["dropped"] == fast["conflated"] == 0
    assert fast["delivered"] == fast["routed"]  # everything routed to it, nothing lost
    assert slow["dropped"] > 0
    # the fast one kept pace: its ring never backed up while the slow one's did
    assert fast["backpressure_episodes"] == 0 and slow["backpressure_episodes"] >= 1
    rec = json.loads((tmp_path / "fast.json").read_text())
    assert rec["n"] == fast["routed"]


def test_orders_blocked_past_the_deadline_trip_the_kill_switch(plant, tmp_path):
    p = plant({"rings": {"orders": {"capacity": 4, "block_deadline_ms": 5.0}},
               "strategies": [{"name": "sample", "class": "tests.strategies:Recorder",
                               "params": {"every": 1}}]})
    stage = StrategyStage(p.context("strategy.sample"))
    stage.on_start()
    p.answer_reconcile(stage)  # as the executor does at every strategy start
    _write_ticks(RingWriter(p.ring("ticks.sample")), [(k % 5, 1000 + k) for k in range(20)])
    stage.do_work()  # an order per tick for a ring of 4 that nobody reads: the rest wait
    st = stage.ctx.stats
    waiting = st.get("ticks_in") - 4
    assert st.get("orders_out") == 4 and st.get("orders_waiting") == waiting > 0
    assert st.get("alarms") == 0
    deadline = time.monotonic() + 5
    while st.get("alarms") == 0 and time.monotonic() < deadline:
        time.sleep(0.002)
        stage.do_work()
    assert st.get("alarms") == 1 and st.get("paused") == 1
    # the waiting orders are kept (never dropped); new ones are refused while paused
    assert st.get("orders_waiting") == waiting
    assert stage.strategy.buy(0, 1) == 0 and st.get("orders_refused") == 1


def test_pause_and_resume_from_the_command_line(instance, tmp_path):
    toml = f"""
[producer.synthetic]
rate = 5000.0
[[strategies]]
name = "sample"
class = "tests.strategies:Recorder"
params = {{ every = 10, keep_seqs = false }}
"""
    proc = start_hftd(instance, tmp_path, "--report", str(tmp_path / "r.json"), toml=toml)
    cfg = str(tmp_path / "hftd.toml")
    try:
        sup = psutil.Process(proc.pid)
        deadline = time.monotonic() + 30
        while len(agents_of(sup)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        res = hftd("pause", "--config", cfg, timeout=30)
        assert res.returncode == 0 and "pause sent to 2 agents" in res.stdout, res
        time.sleep(0.5)
        res = hftd("resume", "--config", cfg, timeout=30)
        assert res.returncode == 0, res
        time.sleep(0.5)
        res = hftd("stop", "--config", cfg, timeout=30)
        assert res.returncode == 0 and "stopping" in res.stdout
        proc.wait(60)
    finally:
        rc, out, err = stop(proc)
    assert rc == 0, err
    assert "trading paused (kill switch on) by request" in err
    rep = _report(tmp_path)
    s = rep["stages"]["strategy.sample"]["values"]
    assert s["orders_refused"] > 0  # while paused
    assert s["paused"] == 0 and rep["stages"]["executor"]["values"]["paused"] == 0
    assert s["control_in"] == 2
    _assert_accounting(rep)
    res = hftd("pause", "--config", cfg, timeout=30)
    assert res.returncode == 3 and "is not running" in res.stderr
