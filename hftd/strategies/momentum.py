"""Sample strategy: trade short-term momentum, one lot at a time, within a position cap.

When an instrument's price has moved `threshold` ticks or more over its last `lookback`
ticks, buy (up) or sell (down) `qty` at market, as long as the net position plus working
orders stays within `max_position`.
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
            i = tick.instrument
            exposure = self.position(i) + self.working(i)
            if move >= self.threshold and exposure + self.qty <= self.max_position:
                self.buy(i, self.qty)
            elif move <= -self.threshold and exposure - self.qty >= -self.max_position:
                self.sell(i, self.qty)
        h.append(tick.price)
