"""The chaos run's strategy (`bench.chaos_strategy:Churn`): trades often and in every way,
and writes down each tick it begins handling where a SIGKILL cannot erase it.

Every `every`-th tick (by sequence) it acts, seeded: a market order (IOC or ROD), a limit
order a few ticks from the price (ROD, IOC or FOK), a cancel of one of its working orders or
a replace of a working limit order (new quantity and price). It keeps its net exposure near
`max_position` but lets the executor's risk limits bind now and then: its soft cap is
`soft_cap` (above the executor's `max_position`), and one order in `oversize` asks for
`max_order_qty + 1` lots.

The one idea: `on_tick` first adds 1 to `counts[tick.seq]` in a file mapped MAP_SHARED
(`params["counts"]`, made by the runner: int32 per sequence, the last slot for any sequence
past the end). A store into a shared file mapping is in the page cache at once: a process
killed right after it has still counted the tick, so the file says how many times each
tick's `on_tick` began, across every process of the strategy. The file is on tmpfs and
mapped with MAP_POPULATE, so that store never page-faults: a fault is a trip into the
kernel, where a pending SIGKILL takes the process before the store is done (on a disk
file, the first count on each fresh page, one tick in 1,024, was lost that way to kills
landing in the fault; tmpfs pages need no write-notify, so populated ones stay writable).
"""

from __future__ import annotations

import mmap
import os
import random

from hftd.strategies import Strategy
from hftd.trading import OrdType, TimeInForce

ROD, IOC, FOK = TimeInForce.ROD, TimeInForce.IOC, TimeInForce.FOK


class TickCounts:
    """The counts file: `slots` int32 counters (the last one: sequences past the others)."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED | mmap.MAP_POPULATE,
                                 mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.view = memoryview(self.map).cast("i")
        self.last = len(self.view) - 1

    @staticmethod
    def create(path: str, n: int) -> None:
        """A zeroed file for sequences 0..n-1, plus the overflow slot."""
        with open(path, "wb") as f:
            f.truncate(4 * (n + 1))


class Churn(Strategy):
    def on_start(self) -> None:
        p = self.params
        counts = TickCounts(p["counts"])
        self.counts, self.last_slot = counts.view, counts.last
        self._keep = counts  # the mapping lives as long as the strategy
        self.every = int(p.get("every", 50))
        self.rng = random.Random(int(p.get("seed", 1)))
        self.max_qty = int(p.get("max_order_qty", 3))
        self.soft_cap = int(p.get("soft_cap", 7))
        self.oversize = float(p.get("oversize", 0.03))
        self.max_working = int(p.get("max_working", 12))

    def on_tick(self, tick) -> None:
        # first of all (see the module docstring): this tick's on_tick has begun
        self.counts[tick.seq if tick.seq < self.last_slot else self.last_slot] += 1
        if tick.seq % self.every:
            return
        rng = self.rng
        i = tick.instrument
        working = self.working_orders()
        roll = rng.random()
        if working and (roll < 0.12 or len(working) >= self.max_working):
            self.cancel(rng.choice(working).client_id)
            return
        if working and roll < 0.27:
            limits = [o for o in working if o.ord_type == OrdType.LIMIT]
            if limits:
                o = rng.choice(limits)
                qty = max(o.filled + 1, min(self.max_qty, o.qty + rng.choice((-1, 1))))
                self.replace(o.client_id, qty=qty,
                             price=max(1, self.last_price(o.instrument) + rng.randint(-2, 2)))
                return
        side = rng.choice((1, -1))
        qty = self.max_qty + 1 if rng.random() < self.oversize else rng.randint(1, self.max_qty)
        if abs(self.position(i) + self.working(i) + side * qty) > self.soft_cap:
            side = -side
        kind = rng.random()
        if kind < 0.3:  # market: fills at the next trade
            price, tif = 0, (IOC if kind < 0.2 else ROD)
        else:  # limit: mostly resting a tick or two away, sometimes marketable
            price = max(1, tick.price - side * rng.randint(-1, 3))
            tif = ROD if kind < 0.75 else (IOC if kind < 0.9 else FOK)
        (self.buy if side > 0 else self.sell)(i, qty, price, tif)
