"""/metrics, in-process: every stats value is exported under a family of one meaning (or
deliberately not), every series carries `instance`, no CLOCK_MONOTONIC value leaks out,
counters never go backwards when an agent rolls one back or a new process starts its CPU
time at 0, heartbeat ages are never negative, and the latency buckets are hftd's own edges,
close enough that Prometheus's histogram_quantile is within 10 % of hftd's own percentile.
Rendered from stats blocks planted in shared memory (the `plant` fixture): no processes."""

from __future__ import annotations

import math
import re
import time
from types import SimpleNamespace

import numpy as np
import pytest

from hftd import histogram
from hftd.exporter import (FAMILIES, LATENCY_BUCKETS_S, HftdCollector, _BOUNDS_NS, classify,
                           render)
from hftd.stats import GAUGE

LINE = re.compile(r'^(?P<name>[a-z_]+)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$')


def _samples(text: str) -> list[tuple[str, dict, float]]:
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = LINE.match(line)
        assert m, line
        labels = dict(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m["labels"] or ""))
        out.append((m["name"], labels, float(m["value"])))
    return out


def _scrape(collector) -> list[tuple[str, dict, float]]:
    return _samples(render(collector).decode())


def _value(samples, name, **labels) -> float:
    hits = [v for n, ls, v in samples if n == name and all(ls.get(k) == x
                                                            for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def _strategies(n: int, policy: str = "block") -> dict:
    return {"strategies": [{"name": f"s{i}", "class": "hftd.strategies.sample:Sample",
                            "policy": policy} for i in range(n)]}


def test_every_stats_value_is_exported_or_deliberately_left_out(plant):
    """classify() places every value of every agent's schema, the file feeds', the live
    PFCF feed's and venue's, and the recorder's: a value added later without a family (or
    a reason to leave it out) fails here rather than vanish from /metrics."""
    from hftd.stages import ROLES
    from hftd.stages import executor, producer

    p = plant(_strategies(2, "conflate"))
    cfg = p.cfg
    extra = {"producer": (producer._taifex_values(cfg) + producer._recording_values()
                          + producer._pfcf_values(cfg) + producer._RECORD_VALUES
                          + (("feed.files_id", GAUGE),)),
             "executor": executor._venue_values(  # as with venue = "pfcf"
                 SimpleNamespace(executor=SimpleNamespace(venue="pfcf")))}
    assert extra["executor"], "the PFCF venue's values were not made"
    unplaced = []
    for a in p.sup.view.agents:
        names = [n for n, _ in ROLES[a.role].schema(cfg).values] + \
            [n for n, _ in extra.get(a.role, ())]
        for name in names:
            where = classify(a.name, a.role, name, cfg)
            if where is None:
                unplaced.append((a.name, name))
            for key, labels in where or ():
                assert len(labels) == len(FAMILIES[key][3]), (a.name, name, key, labels)
    assert not unplaced


def test_every_series_carries_the_instance_and_stages_have_one_label_name(plant):
    p = plant(_strategies(2))
    samples = _scrape(HftdCollector(p.sup.view))
    assert samples
    assert all(ls.get("instance") == p.cfg.instance for _, ls, _ in samples)
    # the agent is `stage` wherever a series belongs to one; `agent` is gone
    assert not any("agent" in ls for _, ls, _ in samples)
    stages = {ls["stage"] for _, ls, _ in samples if "stage" in ls}
    assert stages == {"producer", "dispatcher", "strategy.s0", "strategy.s1", "executor"}
    # no label value names a strategy inside another word (`routed.sample`, the old way)
    for name, ls, _ in samples:
        for k, v in ls.items():
            if k not in ("stage", "ring", "instance"):
                assert not re.search(r"\.s[01]$", v), (name, k, v)
    # sums over a family mean something: ticks, orders, reports are families of their own
    names = {n for n, _, _ in samples}
    assert {"hftd_ticks_received_total", "hftd_ring_ticks_total", "hftd_strategy_ticks_total",
            "hftd_order_requests_total", "hftd_orders_ended_total", "hftd_order_rejects_total",
            "hftd_order_reports_total", "hftd_dispatcher_full_polls_total"} <= names
    assert not names & {"hftd_events_total", "hftd_stage_level"}


def test_no_clock_monotonic_value_is_exported_only_unix_times(plant):
    """The stats blocks hold CLOCK_MONOTONIC ns (first/last tick, rate bucket times): none is
    exported as such; the producer's last tick is exported as Unix time."""
    p = plant()
    blocks = p.sup.view.blocks
    mono = time.monotonic_ns()
    blocks["producer"].value("last_ingest_ns").set(mono - 2_000_000_000)
    blocks["producer"].value("first_ingest_ns").set(mono - 9_000_000_000)
    for name in ("first_tick_ns", "last_tick_ns"):
        blocks["strategy.sample"].value(name).set(mono)
    blocks["executor"].value("rate_t").set(mono)
    samples = _scrape(HftdCollector(p.sup.view))
    last = _value(samples, "hftd_last_tick_timestamp_seconds")
    assert abs(last - (time.time() - 2.0)) < 1.0
    # a ns time since boot or the epoch is above 1e11; Unix seconds and counts are far below
    assert max(v for _, _, v in samples if not math.isnan(v)) < 1e11


def test_no_last_tick_time_before_the_first_tick(plant):
    p = plant()
    names = {n for n, _, _ in _scrape(HftdCollector(p.sup.view))}
    assert "hftd_last_tick_timestamp_seconds" not in names


def test_a_counter_an_agent_sets_back_is_exported_at_its_highest_until_it_passes_it(plant):
    """A restarted producer re-derives `received` from its checkpoint, which may be below
    what the dead process had counted (hftd/stages/producer.py, _resume): /metrics holds the
    highest value it exported, so Prometheus sees no counter reset."""
    p = plant()
    c = HftdCollector(p.sup.view)
    received = p.sup.view.blocks["producer"].value("received")
    received.set(100)
    assert _value(_scrape(c), "hftd_ticks_received_total") == 100
    received.set(90)  # the restarted producer's re-derived count
    assert _value(_scrape(c), "hftd_ticks_received_total") == 100
    received.set(120)
    assert _value(_scrape(c), "hftd_ticks_received_total") == 120
    # a gauge is a level: it goes down with the value
    pending = p.sup.view.blocks["producer"].value("conflation_pending")
    pending.set(5)
    assert _value(_scrape(c), "hftd_ring_conflated_pending_ticks", ring="ticks.in") == 5
    pending.set(0)
    assert _value(_scrape(c), "hftd_ring_conflated_pending_ticks", ring="ticks.in") == 0


def test_an_agents_cpu_time_adds_up_its_processes(plant):
    """A restarted agent is a new process whose CPU time starts at 0: the exported counter
    adds what its earlier processes had when last seen."""
    c = HftdCollector(plant().sup.view)
    assert c._cpu_total("producer", 100, 2.5) == 2.5
    assert c._cpu_total("producer", 100, 3.0) == 3.0
    assert c._cpu_total("producer", 200, 0.1) == pytest.approx(3.1)  # restarted
    assert c._cpu_total("producer", 200, 0.4) == pytest.approx(3.4)
    assert c._cpu_total("executor", 300, 1.0) == 1.0


def test_a_heartbeat_read_after_now_is_age_0_not_negative(plant):
    from hftd import stats

    p = plant()
    blk = p.sup.view.blocks["dispatcher"]
    blk.q_header[stats.H_PID] = 0
    blk.heartbeat(time.monotonic_ns() + 5_000_000_000)  # beats "after" the reader's now
    assert p.sup.view.agent_health()["dispatcher"]["heartbeat_age_s"] == 0
    samples = _scrape(HftdCollector(p.sup.view))
    assert _value(samples, "hftd_agent_heartbeat_age_seconds", stage="dispatcher") == 0
    # an agent that never beat has no age at all (not NaN)
    assert not [ls for n, ls, _ in samples
                if n == "hftd_agent_heartbeat_age_seconds" and ls["stage"] == "producer"]


def test_latency_bounds_are_hftd_bucket_edges_dense_from_1us_past_10ms():
    b = [int(x) for x in _BOUNDS_NS]
    assert b == sorted(set(b)) and len(b) == len(LATENCY_BUCKETS_S) == 166
    for x in b:  # an edge: the value and the one below it are in different buckets
        assert histogram.bucket_of(x) != histogram.bucket_of(x - 1), x
    dense = [x for x in b if 1_000 <= x <= 1_100_000_000]
    assert dense[0] <= 1_024 and dense[-1] >= 1_000_000_000
    assert max(hi / lo for lo, hi in zip(dense, dense[1:])) < 1.095
    assert LATENCY_BUCKETS_S[-1] >= 5.0


def _prometheus_quantile(q: float, bounds_s, cumulative, total) -> float:
    """Prometheus's histogram_quantile (promql/quantile.go, bucketQuantile) on one
    histogram: find the bucket of rank q*count, interpolate linearly inside it."""
    rank = q * total
    uppers = list(bounds_s) + [math.inf]
    counts = list(cumulative) + [total]
    i = next(k for k, c in enumerate(counts) if c >= rank)
    if i == len(uppers) - 1:
        return uppers[-2]
    lo, hi = (0.0, uppers[0]) if i == 0 else (uppers[i - 1], uppers[i])
    below = counts[i - 1] if i > 0 else 0
    return lo + (hi - lo) * (rank - below) / (counts[i] - below)


@pytest.mark.parametrize("seed", range(6))
def test_prometheus_p99_of_the_exported_buckets_is_within_10_percent_of_hftds(seed):
    """Exact counts at each bound (checked against numpy on the raw samples), and the
    p50, p90 and p99 Prometheus would interpolate from them within 10 % of hftd's own, for
    latencies whose percentiles lie between 1 us and 0.98 s (past that the bounds are a
    power of two apart)."""
    rng = np.random.default_rng(seed)
    median_ns = [2_000, 20_000, 150_000, 1_000_000, 5_000_000, 30_000_000][seed]
    samples = rng.lognormal(math.log(median_ns), 0.8, 20_000).astype(np.int64)
    h = histogram.Histogram(np.zeros(histogram.WORDS, np.int64))
    h.record_many(samples)
    snap = h.snapshot()
    cum = snap.cumulative_at(_BOUNDS_NS)
    # a sample of v ns measured [v, v + 1) ns: within a bound b exactly when v < b
    assert cum.tolist() == [int((samples < b).sum()) for b in _BOUNDS_NS]
    for q in (0.5, 0.9, 0.99):
        ours = snap.percentile(q * 100) / 1e9
        assert 1e-6 <= ours <= 0.98
        theirs = _prometheus_quantile(q, LATENCY_BUCKETS_S, cum, snap.count)
        assert abs(theirs - ours) <= 0.10 * ours, (q, theirs, ours)


def test_refusals_are_exported_by_what_was_refused_and_why(plant):
    """A NEW order over max_order_qty is an order reject; a cancel of an unknown order is a
    cancel reject: each under its reason, in its own family (risk_reject.* still counts
    both, for the report)."""
    from test_executor import CANCEL, Desk

    d = Desk(plant)
    d.trade(20_000)
    d.new(qty=6)  # max_order_qty is 5
    d.send(CANCEL, 999)
    d.work()
    assert (d.stat("reject.MAX_ORDER_QTY"), d.stat("cancel_reject.UNKNOWN_ORDER")) == (1, 1)
    assert (d.stat("risk_reject.MAX_ORDER_QTY"), d.stat("risk_reject.UNKNOWN_ORDER")) == (1, 1)
    assert (d.stat("reject.UNKNOWN_ORDER"), d.stat("cancel_reject.MAX_ORDER_QTY")) == (0, 0)
    s = _scrape(HftdCollector(d.p.sup.view))
    assert _value(s, "hftd_order_rejects_total", reason="MAX_ORDER_QTY") == 1
    assert _value(s, "hftd_cancel_rejects_total", reason="UNKNOWN_ORDER") == 1
    assert sum(v for n, _, v in s if n == "hftd_order_rejects_total") == 1
    assert sum(v for n, _, v in s if n == "hftd_cancel_rejects_total") == 1
    assert _value(s, "hftd_orders_ended_total", outcome="rejected") == 1
    assert _value(s, "hftd_order_reports_total", kind="cancel_rejected") == 1
    assert _value(s, "hftd_order_requests_total", action="new") == 1
    assert _value(s, "hftd_order_requests_total", action="cancel") == 1


def test_two_scrapes_at_once_count_no_agents_cpu_time_twice(plant):
    """Two Prometheus servers (an HA pair) scrape the same supervisor at once: each scrape
    runs in a thread of its own. Scrape A read the executor's old process (pid 100, 3.0 s);
    before A turned that into the counter, scrape B read the restarted one (pid 200, 0.1 s)
    and finished. A's stale pid must not count process 100's 3.0 s a second time (found:
    hftd_agent_cpu_seconds_total went 2.1, 5.1, 5.3 instead of 3.0, 3.1, 3.2: 2 s too high
    for good, as each process change counted the other's time again)."""
    import threading

    p = plant()
    view = p.sup.view
    entered, go = threading.Event(), threading.Event()
    # (process, wait) of each read: one scrape before, then A's, held back
    health = [({"pid": 100, "cpu": 2.0}, False), ({"pid": 100, "cpu": 3.0}, True)]

    class View:
        def __getattr__(self, name):
            return getattr(view, name)

        def agent_health(self):
            out = view.agent_health()
            proc, wait = health.pop(0) if health else (current, False)
            if wait:
                entered.set()
                go.wait(10)  # bounded: a broken test must not hang the suite
            for h in out.values():
                h["pid"], h["cpu_seconds"], h["rss_bytes"] = proc["pid"], proc["cpu"], 0
            return out

    current = {"pid": 200, "cpu": 0.1}
    c = HftdCollector(View())
    assert _value(_scrape(c), "hftd_agent_cpu_seconds_total", stage="executor") == 2.0
    seen = {}
    a = threading.Thread(target=lambda: seen.setdefault("a", _scrape(c)))
    a.start()
    assert entered.wait(10)
    b = threading.Thread(target=lambda: seen.setdefault("b", _scrape(c)))
    b.start()
    b.join(1)  # B runs to its end unless scrapes are taken one at a time
    go.set()
    a.join(30)
    b.join(30)
    current = {"pid": 200, "cpu": 0.2}
    later = _value(_scrape(c), "hftd_agent_cpu_seconds_total", stage="executor")
    assert later == pytest.approx(3.2)  # 3.0 (pid 100) + 0.2 (pid 200), once each
    for k in ("a", "b"):
        assert _value(seen[k], "hftd_agent_cpu_seconds_total", stage="executor") <= later
