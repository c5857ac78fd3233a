"""Log-linear (HDR-style) latency histogram over an int64 array, e.g. a shared-memory view.

Values are nanoseconds. Values below 256 ns have a bucket each; above, every power of two
is split into 128 equal buckets, so a bucket is at most 1/128 of its lower bound wide:
a value read back from the histogram (the bucket's midpoint) is within 0.4 % of every
sample in that bucket -- better than two significant digits -- from 1 ns up to
`MAX_VALUE_NS` (100 s; larger samples are clamped and still counted).

The bucket of v is ``(e << 7) + (v >> e)`` with ``e = max(bit_length(v) - 8, 0)``: a few
integer operations and one increment, no allocation. Writers touch the buckets before the
total count, so a concurrent reader may see a sample in a bucket before it sees the count
rise, never a count that goes backwards.

Layout of one histogram (`WORDS` int64): count, sum, max, reserved, then `N_BUCKETS` buckets.
"""

from __future__ import annotations

import numpy as np

SUB_BITS = 8
HALF = 1 << (SUB_BITS - 1)
MAX_VALUE_NS = 100_000_000_000  # 100 s
W_COUNT, W_SUM, W_MAX = 0, 1, 2
HEAD_WORDS = 4


def bucket_of(v: int) -> int:
    if v > MAX_VALUE_NS:
        v = MAX_VALUE_NS
    elif v < 0:
        v = 0
    e = v.bit_length() - SUB_BITS
    if e < 0:
        e = 0
    return (e << (SUB_BITS - 1)) + (v >> e)


N_BUCKETS = bucket_of(MAX_VALUE_NS) + 1
WORDS = HEAD_WORDS + N_BUCKETS


def bucket_bounds(index: np.ndarray | int):
    """(lower bound, width) in ns of bucket(s) `index`."""
    index = np.asarray(index, dtype=np.int64)
    e = np.maximum((index >> (SUB_BITS - 1)) - 1, 0)
    m = index - (e << (SUB_BITS - 1))
    return m << e, np.int64(1) << e


def bucket_midpoints() -> np.ndarray:
    low, width = bucket_bounds(np.arange(N_BUCKETS))
    return low + (width - 1) / 2.0


_MID = bucket_midpoints()
_LOW, _WIDTH = bucket_bounds(np.arange(N_BUCKETS))
_UPPER = _LOW + _WIDTH  # exclusive upper bound of each bucket


def buckets_of(values: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(values, dtype=np.int64), 0, MAX_VALUE_NS)
    _, exp = np.frexp(v.astype(np.float64))  # exp == bit_length for v >= 1
    e = np.maximum(exp.astype(np.int64) - SUB_BITS, 0)
    return (e << (SUB_BITS - 1)) + (v >> e)


class Histogram:
    """A histogram living in `words` (an int64 numpy array of `WORDS` elements)."""

    __slots__ = ("words", "buckets", "_q", "_base")

    def __init__(self, words: np.ndarray, q_words=None, base: int = 0):
        assert words.shape == (WORDS,) and words.dtype == np.int64
        self.words = words
        self.buckets = words[HEAD_WORDS:]
        # a memoryview('q') over the same memory makes scalar updates ~3x cheaper than numpy
        self._q = q_words if q_words is not None else memoryview(words).cast("B").cast("q")
        self._base = base

    def record(self, v: int) -> None:
        self.record_n(v, 1)

    def record_n(self, v: int, n: int) -> None:
        """Record `n` samples of the same value `v` (a batch that shares one t_ingest)."""
        if n <= 0:
            return
        if v > MAX_VALUE_NS:
            v = MAX_VALUE_NS
        elif v < 0:
            v = 0
        q = self._q
        b = self._base
        q[b + HEAD_WORDS + bucket_of(v)] += n
        q[b + W_SUM] += v * n
        if v > q[b + W_MAX]:
            q[b + W_MAX] = v
        q[b + W_COUNT] += n

    def record_many(self, values: np.ndarray) -> None:
        n = len(values)
        if n == 0:
            return
        if n < 16:
            for v in values.tolist():
                self.record(v)
            return
        v = np.clip(np.asarray(values, dtype=np.int64), 0, MAX_VALUE_NS)
        np.add.at(self.buckets, buckets_of(v), 1)
        w = self.words
        w[W_SUM] += int(v.sum())
        mx = int(v.max())
        if mx > w[W_MAX]:
            w[W_MAX] = mx
        w[W_COUNT] += n

    def snapshot(self) -> "HistogramSnapshot":
        return HistogramSnapshot(self.words.copy())


class NullHistogram:
    """Stands in for a Histogram when latency recording is off (`metrics.record_latency`)."""

    def record(self, v: int) -> None:
        pass

    def record_n(self, v: int, n: int) -> None:
        pass

    def record_many(self, values) -> None:
        pass


class HistogramSnapshot:
    """A copy of a histogram's words, for reports, status and the exporter."""

    def __init__(self, words: np.ndarray):
        self.words = words
        self.buckets = words[HEAD_WORDS:]

    @property
    def count(self) -> int:
        return int(self.buckets.sum())

    @property
    def sum(self) -> int:
        return int(self.words[W_SUM])

    @property
    def max(self) -> int:
        return int(self.words[W_MAX])

    def percentile(self, q: float) -> float:
        """Value (ns) at percentile q (0..100): the midpoint of the bucket holding the sample
        of rank ceil(q/100 * count) (numpy's 'inverted_cdf'); nan when empty."""
        cum = np.cumsum(self.buckets)
        total = int(cum[-1]) if len(cum) else 0
        if total == 0:
            return float("nan")
        rank = max(1, int(np.ceil(q / 100.0 * total)))
        i = int(np.searchsorted(cum, rank))
        if q >= 100.0:
            return float(self.max)
        return float(min(_MID[i], self.max)) if self.max else float(_MID[i])

    def cumulative_at(self, bounds_ns: np.ndarray) -> np.ndarray:
        """Cumulative counts of samples <= each bound: exact where a bound is a bucket edge;
        otherwise the bucket straddling the bound (under 1 % of it wide) counts above it."""
        cum = np.cumsum(self.buckets)
        j = np.searchsorted(_UPPER, np.asarray(bounds_ns, dtype=np.int64) + 1, side="right")
        out = np.where(j > 0, cum[np.maximum(j - 1, 0)], 0)
        return out

    def summary(self, qs=(50, 90, 99, 99.9)) -> dict:
        d = {"count": self.count}
        for q in qs:
            d[f"p{q:g}"] = self.percentile(q)
        d["max"] = self.max
        d["mean"] = self.sum / d["count"] if d["count"] else float("nan")
        return d
