"""Synthetic feed: a random walk per instrument.

Each tick picks an instrument at random and moves its price by -1, 0 or +1 tick (a price
shown is never below 1). Rate-limited (`rate` ticks/s, on a fixed schedule from the first
poll) or as fast as the producer asks; optionally a fixed number of ticks.

The stream depends only on the seed, never on how the producer batches its polls: random
draws come from numpy in blocks and are consumed in order, and the walk is computed
column-wise for a large poll and tick by tick for a small one, with the same result. So two
runs (or two designs in the benchmark) with one seed see the same ticks.
"""

from __future__ import annotations

import time

import numpy as np

from . import FeedBatch

BLOCK = 4096  # random draws made at a time
SMALL = 8  # polls up to this size walk tick by tick (numpy's per-call cost would dominate)


class SyntheticFeed:
    def __init__(self, cfg, n_instruments: int):
        self.rng = np.random.default_rng(cfg.seed)
        self.n_instruments = n_instruments
        self.walk = np.full(n_instruments, cfg.start_price, dtype=np.int64)  # unclamped
        self.max_qty = cfg.max_qty
        self.rate = cfg.rate
        self.limit = cfg.ticks
        self.emitted = 0
        self.t0 = 0
        self._at = BLOCK  # position in the current block of draws

    @property
    def position(self) -> int:
        """Ticks taken so far: where a restarted producer continues (`advance`)."""
        return self.emitted

    def advance(self, n: int) -> None:
        """Skip the first `n` ticks of the stream (generated and dropped, fast): a restarted
        producer continues where the previous one stopped, with the same prices."""
        rate, self.rate = self.rate, 0
        try:
            while n > 0:
                b = self.poll(min(n, 1 << 16), 0)
                if b is None:
                    break
                n -= len(b)
        finally:
            self.rate = rate

    @property
    def exhausted(self) -> bool:
        return self.limit > 0 and self.emitted >= self.limit

    def due(self, now_ns: int) -> int:
        """Ticks due by `now_ns` and not yet emitted."""
        if self.rate <= 0:
            return 1 << 62
        if not self.t0:  # the schedule starts now (after `advance`: as if it had run)
            self.t0 = now_ns - int(self.emitted * 1e9 / self.rate)
        return int((now_ns - self.t0) * self.rate / 1e9) + 1 - self.emitted

    def next_due_s(self, now_ns: int) -> float:
        """Seconds until the next tick is due (0 if one is due now)."""
        if self.rate <= 0 or not self.t0:
            return 0.0
        wait = self.t0 + self.emitted * 1e9 / self.rate - now_ns
        return wait / 1e9 if wait > 0 else 0.0

    def _refill(self) -> None:
        rng = self.rng
        self.inst = rng.integers(0, self.n_instruments, BLOCK, dtype=np.int32)
        self.step = rng.integers(-1, 2, BLOCK, dtype=np.int64)
        self.qty = rng.integers(1, self.max_qty + 1, BLOCK, dtype=np.int64)
        self.inst_l, self.step_l, self.qty_l = self.inst.tolist(), self.step.tolist(), self.qty.tolist()
        self._at = 0

    def poll(self, max_n: int, now_ns: int) -> FeedBatch | None:
        n = min(max_n, self.due(now_ns))
        if self.limit:
            n = min(n, self.limit - self.emitted)
        if n <= 0:
            return None
        parts = []
        left = n
        while left:
            if self._at == BLOCK:
                self._refill()
            k = min(left, BLOCK - self._at)
            parts.append(self._few(k) if k <= SMALL else self._many(k))
            self._at += k
            left -= k
        self.emitted += n
        if len(parts) == 1 and n <= SMALL:  # a few ticks stay Python lists: no numpy call
            inst, price, qty = parts[0]
            return FeedBatch(inst, price, qty, [time.time_ns()] * n)
        inst, price, qty = [np.concatenate([np.asarray(x) for x in c]) for c in zip(*parts)]
        return FeedBatch(inst.astype(np.int32), price.astype(np.int64), qty.astype(np.int64),
                         np.full(n, time.time_ns(), dtype=np.int64))

    def _many(self, k: int):
        a = self._at
        inst = self.inst[a: a + k]
        step = self.step[a: a + k]
        # walk each instrument's price through its ticks in this poll, column-wise
        order = np.argsort(inst, kind="stable")
        sorted_inst = inst[order]
        walk = np.cumsum(step[order])
        starts = np.flatnonzero(np.r_[True, sorted_inst[1:] != sorted_inst[:-1]])
        base = np.repeat(walk[starts] - step[order][starts], np.diff(np.r_[starts, k]))
        walked = self.walk[sorted_inst] + walk - base
        ends = np.r_[starts[1:], k] - 1
        self.walk[sorted_inst[ends]] = walked[ends]
        price = np.empty(k, dtype=np.int64)
        price[order] = np.maximum(walked, 1)
        return inst, price, self.qty[a: a + k]

    def _few(self, k: int):
        a = self._at
        walk = self.walk
        inst = self.inst_l[a: a + k]
        price = []
        for i, s in zip(inst, self.step_l[a: a + k]):
            p = int(walk[i]) + s
            walk[i] = p
            price.append(p if p > 1 else 1)
        return inst, price, self.qty_l[a: a + k]
