"""Strategies used by the tests (loaded by the strategy stage as tests.strategies:Name)."""

from __future__ import annotations

import json
import time

from hftd.strategies import Strategy


class Recorder(Strategy):
    """Records what it sees; writes it as JSON to params['out'] on stop. Optionally slow
    (params['sleep_us'] per tick) and trading (buys/sells 1 lot every params['every'] ticks)."""

    def on_start(self):
        self.seqs = []
        self.last = {}
        self.paused_at = None
        self.sleep = self.params.get("sleep_us", 0) / 1e6
        self.every = self.params.get("every", 0)
        self.n = 0
        self.reports = 0

    def on_tick(self, tick):
        self.n += 1
        if self.params.get("keep_seqs", True):
            self.seqs.append(tick.seq)
        self.last[tick.instrument] = [tick.seq, tick.price, tick.qty]
        if self.api.paused and self.paused_at is None:
            self.paused_at = len(self.seqs)
        if self.every and self.n % self.every == 0:
            side = 1 if self.position(tick.instrument) <= 0 else -1
            (self.buy if side > 0 else self.sell)(tick.instrument, 1)
        if self.sleep:
            time.sleep(self.sleep)

    def on_report(self, report):
        self.reports += 1

    def on_stop(self):
        out = self.params.get("out")
        if out:
            with open(out, "w") as f:
                json.dump({"seqs": self.seqs, "last": self.last, "paused_at": self.paused_at,
                           "n": self.n, "reports": self.reports}, f)


class Poison(Strategy):
    """Raises on the tick whose sequence number is params['raise_at']: a strategy bug that
    kills its process every time that tick is delivered."""

    def on_tick(self, tick):
        if tick.seq == self.params["raise_at"]:
            raise RuntimeError(f"poison tick {tick.seq}")
