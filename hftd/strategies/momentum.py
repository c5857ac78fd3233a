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

from .base import Strategy


class Momentum(Strategy):
    def on_start(self) -> None:
        p = self.params
        self.lookback = int(p.get("lookback", 20))
        self.threshold = int(p.get("threshold", 4))
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
        return sum(o.leaves for o in self.working_orders(instrument) if o.side == side)
