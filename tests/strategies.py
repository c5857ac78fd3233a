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

    def on_order(self, order):
        self.reports += 1

    def on_stop(self):
        out = self.params.get("out")
        if out:
            with open(out, "w") as f:
                json.dump({"seqs": self.seqs, "last": self.last, "paused_at": self.paused_at,
                           "n": self.n, "reports": self.reports}, f)


class Poison(Strategy):
    """Raises on the tick whose sequence number is params['raise_at'] (a tick whose on_tick
    began is not handled again by the restarted process, so it kills it once), or, with
    params['every_later'], on every tick from there on: a bug that kills every process."""

    def on_tick(self, tick):
        at = self.params["raise_at"]
        if tick.seq == at or (self.params.get("every_later") and tick.seq >= at):
            raise RuntimeError(f"poison tick {tick.seq}")


class Lifecycle(Strategy):
    """Exercises the whole life of orders through the pipeline (seeded): every
    params['every'] ticks it sends a market order, or a limit order a few ticks from the
    price as ROD, IOC or FOK, or cancels or replaces one of its working orders; it keeps
    its net exposure within 4 lots. On stop it writes its own view to params['out']."""

    def on_start(self):
        import random

        self.rng = random.Random(self.params.get("seed", 1))
        self.every = self.params.get("every", 5)
        self.n = 0
        self.fills = 0
        self.updates = 0

    def on_tick(self, tick):
        from hftd.trading import OrdType, TimeInForce

        self.n += 1
        if self.n % self.every:
            return
        rng, i = self.rng, tick.instrument
        working = self.working_orders()
        roll = rng.random()
        if roll < 0.15 and working:
            self.cancel(rng.choice(working).client_id)
        elif roll < 0.3 and working:
            o = rng.choice(working)
            if o.ord_type == OrdType.LIMIT:
                self.replace(o.client_id, qty=o.qty + rng.choice((-1, 1)) if o.qty > o.filled + 1
                             else o.qty + 1, price=tick.price + rng.randint(-3, 3))
        else:
            side = rng.choice((1, -1))
            if abs(self.position(i) + self.working(i) + side) > 4:
                side = -side
            qty = rng.randint(1, 2)
            if rng.random() < 0.3:
                price, tif = 0, TimeInForce.ROD
            else:
                price = tick.price - side * rng.randint(-1, 5)
                tif = rng.choice((TimeInForce.ROD, TimeInForce.ROD, TimeInForce.IOC,
                                  TimeInForce.FOK))
            (self.buy if side > 0 else self.sell)(i, qty, price, tif)

    def on_fill(self, fill):
        self.fills += 1

    def on_order(self, order):
        self.updates += 1

    def on_stop(self):
        out = self.params.get("out")
        if out:
            with open(out, "w") as f:
                json.dump({"fills": self.fills, "updates": self.updates,
                           "positions": {self.symbol(i): self.position(i)
                                         for i in range(len(self.api.symbols))},
                           "pnl": self.pnl(), "working": len(self.working_orders())}, f)


class Journal(Strategy):
    """Writes down every callback it gets (for in-process tests of the strategy stage);
    params['timer_s'] sets its timer, params['every'] buys 1 lot at market every N ticks."""

    def on_start(self):
        self.timer_s = self.params.get("timer_s", 0.0)
        self.log = []
        self.timers = 0
        self.n = 0

    def on_tick(self, tick):
        self.n += 1
        every = self.params.get("every", 0)
        if every and self.n % every == 0:
            self.buy(tick.instrument, 1)

    def on_order(self, order):
        self.log.append(("order", order.client_id, int(order.state), order.filled, order.leaves))

    def on_fill(self, fill):
        self.log.append(("fill", fill.order_id, fill.qty, fill.price))

    def on_timer(self):
        self.timers += 1


class Counter(Strategy):
    """A running indicator kept across restarts through the state hooks: `n` ticks handled,
    the sum of their prices, the seq of the last one, and `lost`: the ticks a process began
    but died before saving, which the next process sees as the gap between the saved last
    seq and its first tick (the stage does not hand a begun tick to the next process).
    Saved after every tick (params['each_tick'], default true), or marked dirty and saved
    every params['save_every_s']. params['fail_save']: on_save raises; params['save_in_start']:
    on_start calls save(); params['refuse']: on_load refuses a state with n < 0."""

    def on_start(self):
        self.n = self.sum = 0
        self.last_seq = -1
        self.lost = 0
        self.loaded = None  # what on_load was given
        self.resumed = False
        self.save_every_s = self.params.get("save_every_s", 0.0)
        self.each_tick = self.params.get("each_tick", True)
        if self.params.get("save_in_start"):
            self.saved_in_start = self.save()

    def on_load(self, state):
        if self.params.get("refuse", True) and state["n"] < 0:
            raise ValueError(f"n is {state['n']}, a count cannot be negative")
        self.loaded = state
        self.n, self.sum, self.last_seq, self.lost = (state["n"], state["sum"], state["last_seq"],
                                                      state["lost"])
        self.resumed = True

    def on_tick(self, tick):
        if self.resumed:
            self.resumed = False
            if tick.seq > self.last_seq:  # (a new run of the feed starts its seqs over)
                self.lost += tick.seq - self.last_seq - 1
        self.n += 1
        self.sum += tick.price
        self.last_seq = tick.seq
        if self.each_tick:
            self.save()
        else:
            self.mark_dirty()

    def on_save(self):
        if self.params.get("fail_save"):
            raise RuntimeError("on_save failed on purpose")
        return {"n": self.n, "sum": self.sum, "last_seq": self.last_seq, "lost": self.lost}


class Columns(Strategy):
    """A strategy with on_ticks: records each run it is handed (seqs, prices) and, with
    params['buy_each_run'], buys 1 lot of the run's last instrument per run."""

    def on_start(self):
        self.runs = []
        self.last_prices = []

    def on_ticks(self, ticks):
        self.runs.append((ticks.seq.tolist(), ticks.price.tolist(), ticks.t_ingest.tolist()))
        self.last_prices.append(list(self.api.last_price))
        if self.params.get("buy_each_run"):
            self.buy(int(ticks.instrument[-1]), 1)
        if self.params.get("die_at_run") == len(self.runs):
            raise SystemExit("killed inside on_ticks")


class Chatty(Strategy):
    """print()s a line for every params['every'] ticks, to stdout and to stderr, as a
    strategy being debugged does."""

    def on_tick(self, tick):
        if tick.seq % self.params.get("every", 100) == 0:
            print(f"chatty: tick {tick.seq}")
            print(f"chatty: tick {tick.seq} (stderr)", file=__import__("sys").stderr)
