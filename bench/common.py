"""What every design in the benchmark shares, so they are measured the same way.

- The tick stream: hftd's own synthetic feed (same seed, same ticks, same order), encoded
  as hftd's msgspec `Tick`.
- The strategy: hftd's sample `Momentum` strategy, hosted by `StrategyHost` through hftd's
  own `StrategyApi` (its book of orders and positions), so every design sends the same
  orders for the same ticks. The baselines have no market data at their "venue": it fills
  every order in full at once (`fill_for`), which is what they are measured with; hftd's
  executor runs its real fill model.
- The clock: `time.monotonic_ns()` (CLOCK_MONOTONIC, one clock for all processes).
  `t_ingest` is stamped when the producer takes a tick from the feed; tick-to-trade is
  measured by the executor when the order arrives there, as `now - t_ingest`.
- Loss: ticks the producer took from the feed minus ticks the strategy received.
- Batches: designs that move ticks in batches carry up to `BATCH` (256) ticks per message as
  one msgpack array (`batch_encode`, one msgspec call), decoded with one call
  (`batch_decoder`).
- The result file: `write_result`, one JSON per run.
"""

from __future__ import annotations

import argparse
import json
import time

import msgspec
import numpy as np

from hftd.config import Config, SyntheticFeedConfig
from hftd.events import OrderReport, OrderRequest, ReportKind, Tick
from hftd.feeds import column
from hftd.feeds.synthetic import SyntheticFeed
from hftd.strategies.base import StrategyApi
from hftd.strategies.momentum import Momentum

N_INSTRUMENTS = 5
SEED = 1

tick_encoder = msgspec.msgpack.Encoder()
tick_decoder = msgspec.msgpack.Decoder(Tick)
order_decoder = msgspec.msgpack.Decoder(OrderRequest)
report_decoder = msgspec.msgpack.Decoder(OrderReport)
encode = tick_encoder.encode
BATCH = 256  # ticks per message in the batched designs (and the ceiling)
batch_encode = msgspec.msgpack.Encoder().encode  # a list of Ticks: one msgpack array
batch_decoder = msgspec.msgpack.Decoder(list[Tick])


class TickSource:
    """The benchmark's tick stream: `poll(max_n)` returns the ticks due now (paced at
    `rate` ticks/s, or up to `max_n` when rate is 0) as Tick objects stamped with t_ingest,
    until `total` ticks have been produced."""

    def __init__(self, total: int, rate: float, seed: int = SEED):
        self.feed = SyntheticFeed(SyntheticFeedConfig(rate=rate, ticks=total, seed=seed),
                                  N_INSTRUMENTS)
        self.seq = 0

    @property
    def exhausted(self) -> bool:
        return self.feed.exhausted

    def next_due_s(self) -> float:
        return self.feed.next_due_s(time.monotonic_ns())

    def poll(self, max_n: int) -> list[Tick]:
        return self.poll_keyed(max_n)[0]

    def poll_keyed(self, max_n: int) -> tuple[list[Tick], bytes]:
        """`poll`, and the ticks' instrument ids as bytes (one per tick, from the feed's
        column: a routing key got without touching the ticks)."""
        b = self.feed.poll(max_n, time.monotonic_ns())
        if b is None:
            return [], b""
        t = time.monotonic_ns()
        s = self.seq
        out = [Tick(s + k, t, i, p, q, x) for k, (i, p, q, x) in
               enumerate(zip(column(b.instrument), column(b.price), column(b.qty),
                             column(b.t_exchange)))]
        self.seq = s + len(out)
        keys = b.instrument
        keys = (keys.astype(np.uint8).tobytes() if isinstance(keys, np.ndarray)
                else bytes(keys))
        return out, keys


class StrategyHost:
    """hftd's sample strategy outside hftd: `on_tick` returns the orders it sent; reports go
    back through `on_report` (applied to the strategy's book, then its callbacks)."""

    def __init__(self, params: dict | None = None):
        self.orders: list[OrderRequest] = []
        cfg = Config()  # the default instruments, as contracts
        self.api = StrategyApi([f"I{i}" for i in range(N_INSTRUMENTS)],
                               cfg.contracts()[:N_INSTRUMENTS], self.orders.append)
        self.strategy = Momentum(self.api, params or {})
        self.strategy.on_start()

    def on_tick(self, tick: Tick) -> list[OrderRequest]:
        self.api.tick = tick
        self.api.last_price[tick.instrument] = tick.price
        self.strategy.on_tick(tick)
        self.api.tick = None
        if not self.orders:
            return self.orders
        out = self.orders[:]
        self.orders.clear()
        return out

    def on_report(self, r: OrderReport) -> None:
        o = self.api.apply_report(r)
        if o is not None:
            if r.kind == ReportKind.FILL:
                self.strategy.on_fill(r)
            self.strategy.on_order(o)


def fill_for(order: OrderRequest) -> OrderReport:
    """The baselines' venue: every order filled in full at once, at its limit price (a market
    order at 1 tick: they have no market data, and the benchmark measures transport)."""
    return OrderReport(order.seq, order.t_ingest, order.order_id, ReportKind.FILL,
                       order.instrument, order.side, order.qty, order.price or 1, 0, order.qty, 0)


def percentiles_us(samples_ns) -> dict:
    a = np.asarray(samples_ns, dtype=np.int64)
    if a.size == 0:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "p99.9": None, "max": None}
    qs = np.percentile(a, [50, 90, 99, 99.9], method="inverted_cdf") / 1e3
    return {"count": int(a.size), "p50": float(qs[0]), "p90": float(qs[1]), "p99": float(qs[2]),
            "p99.9": float(qs[3]), "max": float(a.max() / 1e3)}


def write_result(path: str, *, sent: int, delivered: int, t2t_ns, active_s: float,
                 dropped: int | None = None, orders: int = 0, **extra) -> None:
    """`sent`: ticks taken from the feed; `delivered`: ticks the strategy received;
    `dropped`: ticks the design itself counted as dropped (None if it cannot know)."""
    res = {"sent": sent, "delivered": delivered, "lost": sent - delivered,
           "dropped_counted": dropped, "orders": orders, "active_s": active_s,
           "throughput": delivered / active_s if active_s > 0 else 0.0,
           "t2t_us": percentiles_us(t2t_ns), **extra}
    with open(path, "w") as f:
        json.dump(res, f, indent=2)


def cli(run, doc: str, dropped_counted: bool, argv=None) -> None:
    """The command line every baseline shares: ``--rate R --ticks N --out FILE``.
    `run(rate, ticks)` returns a dict with sent, delivered, t2t (ns samples), t_first,
    t_last (monotonic ns), orders, reports and, where the design counts them, dropped."""
    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--rate", type=float, default=0, help="ticks/s, 0 = as fast as possible")
    ap.add_argument("--ticks", type=int, required=True)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    r = run(a.rate, a.ticks)
    write_result(a.out, sent=r.get("sent", 0), delivered=r.get("delivered", 0),
                 t2t_ns=r.get("t2t", []),
                 active_s=max(r.get("t_last", 0) - r.get("t_first", 0), 0) / 1e9,
                 dropped=r.get("dropped", 0) if dropped_counted else None,
                 orders=r.get("orders", 0), reports=r.get("reports", 0),
                 # the active window on CLOCK_MONOTONIC: the harness measures cores in it
                 t_first_ns=r.get("t_first", 0), t_last_ns=r.get("t_last", 0))


def kill_instance_processes(instance: str) -> None:
    """SIGKILL every process whose command line names `--instance <instance>` (a run's
    supervisor and agents), for clean-ups that must not depend on the supervisor."""
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "--instance" in cmd and instance in cmd:
            try:
                p.kill()
            except psutil.Error:
                pass
