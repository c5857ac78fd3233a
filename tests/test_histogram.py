"""Latency histograms: precision against numpy on raw samples, and lock-free reading."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from hftd import histogram
from hftd.histogram import Histogram, HistogramSnapshot
from hftd.stats import COUNTER, Schema, StatsBlock

REL = 1 / 128  # a bucket is at most 1/128 of its lower bound wide


def _samples(kind: str, rng) -> np.ndarray:
    n = 50_000
    if kind == "uniform":
        return rng.integers(1, 1_000_000, n)
    if kind == "exponential":
        return rng.exponential(20_000, n).astype(np.int64) + 1
    if kind == "lognormal":  # heavy tail
        return np.minimum(rng.lognormal(9, 2.5, n), 9e10).astype(np.int64) + 1
    if kind == "pareto":  # heavier tail
        return np.minimum((rng.pareto(1.1, n) + 1) * 500, 9e10).astype(np.int64)
    if kind == "small":
        return rng.integers(0, 300, n)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["uniform", "exponential", "lognormal", "pareto", "small"])
@pytest.mark.parametrize("vectorised", [True, False])
def test_percentiles_are_within_the_stated_precision_of_numpy(kind, vectorised):
    rng = np.random.default_rng(42)
    values = _samples(kind, rng)
    h = Histogram(np.zeros(histogram.WORDS, np.int64))
    if vectorised:
        for chunk in np.array_split(values, 37):
            h.record_many(chunk)
    else:
        for v in values.tolist():
            h.record(v)
    snap = h.snapshot()
    assert snap.count == len(values) and snap.sum == int(values.sum())
    assert snap.max == int(values.max())
    for q in (1, 25, 50, 90, 99, 99.9, 99.99):
        expected = float(np.percentile(values, q, method="inverted_cdf"))
        got = snap.percentile(q)
        assert abs(got - expected) <= expected * REL + 0.5, (q, got, expected)
    assert snap.percentile(100) == values.max()


def test_bucket_index_is_monotonic_and_bounds_cover_the_range():
    vals = np.unique(np.r_[np.arange(0, 5000), np.geomspace(1, histogram.MAX_VALUE_NS, 20000)
                           .astype(np.int64)])
    idx = histogram.buckets_of(vals)
    assert (np.diff(idx) >= 0).all()
    low, width = histogram.bucket_bounds(idx)
    assert ((low <= vals) & (vals < low + width)).all()
    assert (width <= np.maximum(low * REL, 1)).all()
    assert [histogram.bucket_of(int(v)) for v in vals[:300]] == idx[:300].tolist()


def test_values_beyond_the_range_are_clamped_not_lost():
    h = Histogram(np.zeros(histogram.WORDS, np.int64))
    h.record(-5)
    h.record(10**15)
    h.record_many(np.array([-1, 10**14] * 10))
    assert h.snapshot().count == 22


def test_empty_histogram_reports_nothing():
    snap = HistogramSnapshot(np.zeros(histogram.WORDS, np.int64))
    assert snap.count == 0 and np.isnan(snap.percentile(50))


def _writer(name, n):
    block = StatsBlock.attach(name)
    h = block.histogram("lat")
    c = block.value("events")
    rng = np.random.default_rng(1)
    for chunk in np.array_split(rng.lognormal(9, 2, n).astype(np.int64), 200):
        h.record_many(chunk)
        for v in chunk[:5].tolist():
            h.record(v)
        c.add(len(chunk) + 5)


def test_a_concurrent_reader_never_sees_a_count_go_backwards(shm_name):
    block = StatsBlock.create(shm_name("stats"), Schema(values=(("events", COUNTER),),
                                                        histograms=("lat",)))
    try:
        p = mp.get_context("fork").Process(target=_writer, args=(block.name, 400_000))
        p.start()
        last_count, last_buckets, last_events = 0, np.zeros(histogram.N_BUCKETS, np.int64), 0
        reads = 0
        while p.is_alive() or reads < 10:
            words = block.hist_words[0].copy()
            events = block.get("events")
            buckets = words[histogram.HEAD_WORDS:]
            assert words[histogram.W_COUNT] >= last_count
            assert (buckets >= last_buckets).all()
            assert events >= last_events
            last_count, last_buckets, last_events = words[histogram.W_COUNT], buckets, events
            reads += 1
        p.join()
        assert p.exitcode == 0
        assert block.snapshot()["histograms"]["lat"].count == 400_000 + 200 * 5
    finally:
        block.unlink()
        block.close()
