"""The benchmark's baselines and hftd's own bench path still run: tiny sizes, sane results.
(Numbers are the benchmark's business; this only keeps `make bench` from rotting. No timing
is asserted anywhere here.)"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

BASELINES = ["asyncio_current", "asyncio_proposed", "mpqueue", "zmq_pipeline", "zmq_batched"]
NEEDS_ZMQ = {"zmq_pipeline", "zmq_batched"}
# the designs that lose ticks, and where each counts them, apart from the ticks delivered
LOSSY = {"asyncio_current": "the producer, when a tick finds the FIFO full",
         "zmq_pipeline": "the strategy, from the gaps in the ticks' sequence numbers"}


def _run(module: str, rate: float, ticks: int, tmp_path) -> dict:
    out = tmp_path / "r.json"
    res = subprocess.run([sys.executable, "-m", f"bench.baselines.{module}", "--rate", str(rate),
                          "--ticks", str(ticks), "--out", str(out)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("module", BASELINES)
@pytest.mark.parametrize("rate, ticks", [(0, 3000), (5000, 1000)])
def test_baseline_runs_and_accounts_for_every_tick(module, rate, ticks, tmp_path):
    if module in NEEDS_ZMQ:
        pytest.importorskip("zmq", reason="pyzmq is a bench extra: pip install -e '.[bench]'")
    r = _run(module, rate, ticks, tmp_path)
    assert r["sent"] == ticks
    # two counts made apart: ticks the strategy received, ticks counted lost where they are
    # (`lost` itself is sent - delivered, so delivered + lost == sent would prove nothing)
    if module in LOSSY:
        assert r["delivered"] + r["dropped_counted"] == ticks, LOSSY[module]
    else:  # the lossless designs: every tick the producer sent, the strategy received
        assert r["lost"] == 0 and r["delivered"] == ticks
    assert r["orders"] > 0 and r["t2t_us"]["count"] == r["orders"]
    assert 0 < r["t_first_ns"] <= r["t_last_ns"]  # the active window the harness measures in


def test_batched_zeromq_and_the_ceiling_run_the_same_stream(tmp_path):
    """Same ticks, same strategy code, whole batches: both hand every tick to the strategy
    (their orders may differ: the pipeline's fills come back later, the ceiling's at once)."""
    pytest.importorskip("zmq", reason="pyzmq is a bench extra: pip install -e '.[bench]'")
    a = _run("zmq_batched", 0, 5000, tmp_path)
    b = _run("ceiling", 0, 5000, tmp_path)
    assert a["delivered"] == b["delivered"] == 5000
    assert a["orders"] > 0 and b["orders"] > 0


def test_ceiling_runs_the_strategy_on_every_tick(tmp_path):
    r = _run("ceiling", 0, 3000, tmp_path)
    assert r["sent"] == r["delivered"] == 3000 and r["lost"] == 0
    assert r["orders"] > 0 and r["reports"] == r["orders"]
    assert r["t2t_us"]["count"] == 0  # no trade path in one process: no tick-to-trade


def test_ceiling_refuses_a_paced_run(tmp_path):
    res = subprocess.run([sys.executable, "-m", "bench.baselines.ceiling", "--rate", "1000",
                          "--ticks", "100", "--out", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "unpaced only" in res.stderr


def test_zero_loss_search_brackets_and_reports_the_delivered_rate():
    from bench.run import TOLERANCE, search_zero_loss

    capacity = 123_456.0
    probes = []

    def probe(rate):  # a design that loses above its capacity and delivers 2 % below offered
        probes.append(rate)
        return {"lost": 0 if rate <= capacity else 7, "throughput": rate * 0.98,
                "delivered": 1000, "rate": rate}

    for guess in (10_000.0, 1_000_000.0, capacity):  # 12x below, 8x above, on the spot
        probes.clear()
        best, tried, converged = search_zero_loss(probe, guess)
        assert converged
        ok = [r for r, lost, _ in tried if lost == 0]
        lossy = [r for r, lost, _ in tried if lost]
        assert ok and lossy and min(lossy) <= max(ok) * TOLERANCE * (1 + 1e-9)
        assert max(ok) <= capacity < min(lossy)
        assert best["throughput"] == max(ok) * 0.98  # the delivered rate, not the offered one
        assert len(tried) == len(probes) <= 10


def test_zero_loss_search_gives_up_below_the_floor():
    from bench.run import search_zero_loss

    best, tried, converged = search_zero_loss(lambda rate: {"lost": 1, "throughput": rate,
                                                            "delivered": 1}, 1_000.0, floor=100.0)
    assert best is None and not converged and tried and min(r for r, _, _ in tried) >= 100.0


def test_zero_loss_search_says_when_it_ran_out_of_runs():
    from bench.run import search_zero_loss

    best, tried, converged = search_zero_loss(
        lambda rate: {"lost": 0 if rate <= 123_456 else 1, "throughput": rate, "delivered": 1},
        100.0, max_runs=6)
    assert not converged and len(tried) == 6 and best["throughput"] == max(
        r for r, lost, _ in tried if lost == 0)


def test_a_disturbed_run_is_repeated_and_the_least_disturbed_kept():
    from bench.run import Budget, undisturbed

    loads = iter([0.9, 0.5, 0.7])
    runs = []

    def run():
        runs.append(1)
        return {"background_cores": next(loads), "throughput": len(runs)}

    r = undisturbed(run, Budget(100.0))
    assert len(runs) == 3 and r["background_cores"] == 0.5 and r["attempts"] == [0.9, 0.5, 0.7]
    runs.clear()
    r = undisturbed(lambda: {"background_cores": 0.05}, Budget(100.0))  # quiet: once
    assert r["attempts"] == [0.05]
    r = undisturbed(lambda: {"background_cores": 0.9}, Budget(0.0))  # no time left: once
    assert r["attempts"] == [0.9]


def test_cores_are_cpu_seconds_per_second_inside_the_window():
    from bench.harness import Tree

    t = Tree.__new__(Tree)
    s = 1_000_000_000
    # the tree's CPU seconds: 0.5 core for 2 s, then 1.5 cores for 2 s
    t.samples = [(k * s, 0.5 * k) for k in range(5)] + [(k * s, 2 + 1.5 * (k - 4))
                                                        for k in range(5, 9)]
    assert t.cores(0, 4 * s) == pytest.approx(0.5)
    assert t.cores(4 * s, 8 * s) == pytest.approx(1.5)
    assert t.cores(2.5 * s, 5.5 * s) == pytest.approx(1.0)  # interpolated at both ends
    assert t.cores(6 * s, 9 * s) == pytest.approx(1.5)  # cut to the sampled span
    assert t.cores(6 * s, 16 * s) is None  # less than half of the window sampled
    assert t.cores(1 * s, 2.5 * s) is None  # too short: 2 samples in it
    # the machine was busy 1 core in the first 4 s, 2 cores after: the rest is someone else's
    t.machine = [(k * s, 100.0 + k) for k in range(5)] + [(k * s, 104.0 + 2 * (k - 4))
                                                         for k in range(5, 9)]
    assert t.background(0, 4 * s) == pytest.approx(0.5)
    assert t.background(4 * s, 8 * s) == pytest.approx(0.5)


def test_hftd_bench_path_renders_a_report(tmp_path):
    from bench.run import run_design

    r = run_design("hftd", 5000, 1000, str(tmp_path))
    assert "error" not in r, r
    assert r["sent"] == r["delivered"] == 1000 and r["lost"] == 0
    assert r["t2t_us"]["count"] > 0 and r["cpu_s"] > 0
    assert r["pss_bytes"] > 0 and 0 < r["uss_bytes"] <= r["pss_bytes"] <= r["rss_bytes"]
    assert 0 < r["t_first_ns"] < r["t_last_ns"]


def test_soak_takes_p99_per_minute_from_the_difference_of_two_histogram_copies():
    """bench/soak.py's per-minute p99: only the samples recorded between the two copies."""
    import numpy as np

    from bench.soak import p99_between
    from hftd.histogram import WORDS, Histogram

    h = Histogram(np.zeros(WORDS, np.int64))
    for _ in range(1000):
        h.record(1_000_000)  # 1 ms, the first minute
    a = h.snapshot().words.copy()
    for _ in range(1000):
        h.record(10_000)  # 10 us, the next
    b = h.snapshot().words.copy()
    assert 9.0 <= p99_between(a, b) <= 11.0  # the 1 ms samples are not in it
    assert 900.0 <= p99_between(np.zeros_like(a), a) <= 1100.0
    assert p99_between(b, b) != p99_between(b, b)  # nan: nothing between
