"""Synthetic feed: a random walk per instrument, generated a batch at a time with numpy.

Each tick picks an instrument at random and moves its price by -1, 0 or +1 tick (never
below 1). Rate-limited (`rate` ticks/s, ticks become due on a fixed schedule from the first
poll) or as fast as the producer asks; optionally a fixed number of ticks.
"""

from __future__ import annotations

import random
import time

import numpy as np

from . import FeedBatch


class SyntheticFeed:
    def __init__(self, cfg, n_instruments: int):
        self.rng = np.random.default_rng(cfg.seed)
        self.py_rng = random.Random(cfg.seed)  # a few ticks at a time: cheaper than numpy
        self.n_instruments = n_instruments
        self.prices = np.full(n_instruments, cfg.start_price, dtype=np.int64)
        self.max_qty = cfg.max_qty
        self.rate = cfg.rate
        self.limit = cfg.ticks
        self.emitted = 0
        self.t0 = 0

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.emitted >= self.limit

    def due(self, now_ns: int) -> int:
        """Ticks due by `now_ns` and not yet emitted."""
        if self.rate <= 0:
            return 1 << 62
        if not self.t0:
            self.t0 = now_ns
        return int((now_ns - self.t0) * self.rate / 1e9) + 1 - self.emitted

    def next_due_s(self, now_ns: int) -> float:
        """Seconds until the next tick is due (0 if one is due now)."""
        if self.rate <= 0 or not self.t0:
            return 0.0
        wait = self.t0 + self.emitted * 1e9 / self.rate - now_ns
        return wait / 1e9 if wait > 0 else 0.0

    def poll(self, max_n: int, now_ns: int) -> FeedBatch | None:
        n = min(max_n, self.due(now_ns))
        if self.limit:
            n = min(n, self.limit - self.emitted)
        if n <= 0:
            return None
        if n <= 8:
            return self._few(n)
        rng = self.rng
        instrument = rng.integers(0, self.n_instruments, n, dtype=np.int32)
        step = rng.integers(-1, 2, n, dtype=np.int64)
        price = np.empty(n, dtype=np.int64)
        # walk each instrument's price through its ticks in this batch
        order = np.argsort(instrument, kind="stable")
        sorted_inst = instrument[order]
        walk = np.cumsum(step[order])
        starts = np.flatnonzero(np.r_[True, sorted_inst[1:] != sorted_inst[:-1]])
        base = np.repeat(walk[starts] - step[order][starts], np.diff(np.r_[starts, n]))
        walked = self.prices[sorted_inst] + walk - base
        np.maximum(walked, 1, out=walked)
        price[order] = walked
        ends = np.r_[starts[1:], n] - 1
        self.prices[sorted_inst[ends]] = walked[ends]
        qty = rng.integers(1, self.max_qty + 1, n, dtype=np.int64)
        self.emitted += n
        t_ex = np.full(n, time.time_ns(), dtype=np.int64)
        return FeedBatch(instrument, price, qty, t_ex)

    def _few(self, n: int) -> FeedBatch:
        r = self.py_rng
        prices = self.prices
        inst, price = [], []
        for _ in range(n):
            i = r.randrange(self.n_instruments)
            p = max(int(prices[i]) + r.randrange(-1, 2), 1)
            prices[i] = p
            inst.append(i)
            price.append(p)
        qty = [r.randrange(1, self.max_qty + 1) for _ in range(n)]
        self.emitted += n
        return FeedBatch(np.array(inst, np.int32), np.array(price, np.int64),
                         np.array(qty, np.int64), np.full(n, time.time_ns(), np.int64))
