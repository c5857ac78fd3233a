"""Sample strategy: trade short-term momentum, one lot at a time, within a position cap.

When an instrument's price has moved `threshold` ticks or more over its last `lookback`
ticks, buy (up) or sell (down) `qty` at market, as long as the position plus the working
orders on the order's side stays within `max_position` (the executor's own position rule).
So at most 2 * `max_position` lots are working per instrument (found: counting working orders
net, buys and sells cancelled out, and on a busy machine whose fills lagged they piled up past
the executor's max_working_orders).
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .base import Strategy


class Momentum(Strategy):
    LOOKBACK, THRESHOLD = 20, 4  # the params' defaults

    def on_start(self) -> None:
        p = self.params
        self.lookback = int(p.get("lookback", self.LOOKBACK))
        self.threshold = int(p.get("threshold", self.THRESHOLD))
        self.qty = int(p.get("qty", 1))
        self.max_position = int(p.get("max_position", 3))
        self.history = [deque(maxlen=self.lookback) for _ in self.api.symbols]

    def on_tick(self, tick) -> None:
        h = self.history[tick.instrument]
        if len(h) == self.lookback:
            move = tick.price - h[0]
            if move >= self.threshold or move <= -self.threshold:
                i = tick.instrument
                side = 1 if move > 0 else -1
                after = side * self.position(i) + self._working_on(i, side) + self.qty
                if after <= self.max_position:
                    (self.buy if side > 0 else self.sell)(i, self.qty)
        h.append(tick.price)

    def _working_on(self, instrument: int, side: int) -> int:
        """Lots working on `side` (1 buys, -1 sells) of `instrument`."""
        return self.working_on(instrument, side)


class VectorMomentum(Momentum):
    """Momentum's rule over runs of ticks (`on_ticks`, numpy), for rates one tick at a time
    cannot keep up with: the move over `lookback` ticks of the same instrument at every tick
    of the run, all instruments at once; where an instrument's newest move at or past
    `threshold` is up (down), buy (sell) `qty` at market, once per instrument and run, within
    the same position cap. It sees every move Momentum sees, but acts at most once an
    instrument and run (Momentum may act on each tick). Its defaults look for rarer moves
    than Momentum's (100 ticks, 30 ticks of price: a strategy that trades on every few
    hundred ticks is bounded by the order path, ~60 us of CPU an order between the strategy
    and the executor, not by the ticks); Momentum's own are `lookback = 20, threshold = 4`."""

    LOOKBACK, THRESHOLD = 100, 30  # defaults: a move of ~3.7 sigma of the synthetic walk

    def on_start(self) -> None:
        super().on_start()
        n, lookback = len(self.api.symbols), self.lookback
        self.window = np.zeros((n, lookback), dtype=np.int64)  # last prices, oldest first
        self.seen = np.zeros(n, dtype=np.int64)  # ticks seen per instrument (up to lookback)

    def on_ticks(self, ticks) -> None:
        inst, price = ticks.instrument, ticks.price
        lookback, window, seen = self.lookback, self.window, self.seen
        n = len(inst)
        order = np.argsort(inst, kind="stable")  # by instrument, in arrival order within one
        si, sp = inst[order], price[order]
        counts = np.bincount(si, minlength=len(seen))
        starts = np.cumsum(counts) - counts
        rank = np.arange(n) - starts[si]  # the tick's place among its instrument's in the run
        # the price `lookback` ticks of the same instrument earlier: in this run, or before it
        back = rank - lookback
        earlier = np.where(back >= 0, sp[np.maximum(np.arange(n) - lookback, 0)],
                           window[si, np.minimum(rank, lookback - 1)])
        move = sp - earlier
        full = seen[si] + rank >= lookback  # that many prices are known
        hit = full & ((move >= self.threshold) | (move <= -self.threshold))
        at = np.flatnonzero(hit)
        if at.size:
            last = at[np.r_[si[at][1:] != si[at][:-1], True]]  # each instrument's newest hit
            for i, m in zip(si[last].tolist(), move[last].tolist()):
                side = 1 if m > 0 else -1
                if side * self.position(i) + self.working_on(i, side) + self.qty <= \
                        self.max_position:
                    (self.buy if side > 0 else self.sell)(i, self.qty)
        # keep each instrument's last `lookback` prices
        for i in np.flatnonzero(counts).tolist():
            c = int(counts[i])
            mine = sp[starts[i]: starts[i] + c]
            if c >= lookback:
                window[i] = mine[c - lookback:]
            else:
                window[i, :lookback - c] = window[i, c:]
                window[i, lookback - c:] = mine
        np.minimum(seen + counts, lookback, out=seen)
