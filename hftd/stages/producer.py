"""Producer: feed adapter -> validated ticks -> the `ticks.in` ring.

Takes at most what the ring has room for (the `block` policy: lossless), validates a batch
with numpy (a bad tick is rejected and counted by reason, never passed on), encodes each
tick once, writes the batch and publishes the cursor once. On SIGTERM or a SHUTDOWN control
event, or when the feed is exhausted, it ends its stream with a SHUTDOWN marker, which
drains the pipeline behind it.
"""

from __future__ import annotations

import time

import numpy as np

from .. import feeds
from ..agent import Agent
from ..events import Codec, ControlKind, Tick, TickStream
from ..stats import COUNTER, GAUGE, Schema
from .common import end_of_stream, read_control

REJECT_REASONS = ("bad_price", "bad_qty", "unknown_instrument")
SMALL_BATCH = 8  # up to this many ticks are checked and written one by one


class Producer(Agent):
    SCHEMA = Schema(
        values=(("received", COUNTER), ("published", COUNTER), ("conflated", COUNTER),
                ("dropped", COUNTER), ("rejected", COUNTER),
                *((f"rejected_{r}", COUNTER) for r in REJECT_REASONS),
                ("backpressured", GAUGE), ("first_ingest_ns", GAUGE), ("last_ingest_ns", GAUGE)),
        histograms=("stage",),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.producer")
        self.out = ctx.writer("ticks.in", "dispatcher")
        self.feed = feeds.make(cfg)
        self.n_instruments = len(cfg.instruments)
        self.batch = cfg.producer.batch
        self.encode = Codec(TickStream).encode
        s = ctx.stats
        self.received = s.value("received")
        self.published = s.value("published")
        self.rejected = s.value("rejected")
        self.rejected_by = [s.value(f"rejected_{r}") for r in REJECT_REASONS]
        self.first_ingest = s.value("first_ingest_ns")
        self.last_ingest = s.value("last_ingest_ns")
        self.latency = s.histogram("stage")
        self.ending = False

    def on_signal(self) -> None:
        self.ending = True

    def sleep_for(self) -> float | None:
        if self.control.available() > 0 or self.ending or self.feed.exhausted:
            return 0.0
        return self.feed.next_due_s(time.monotonic_ns())

    def do_work(self) -> int:
        for ev in read_control(self.control):
            if ev.kind == ControlKind.SHUTDOWN:
                self.ending = True
        if self.ending or self.feed.exhausted:
            if end_of_stream(self.out):
                self.done = True
            return 1
        room = self.out.claim(self.batch)
        if room == 0:
            return 0
        b = self.feed.poll(room, time.monotonic_ns())
        if b is None:
            return 0
        t_ingest = time.monotonic_ns()  # the ticks exist now: ingest time
        n = len(b)
        self.received.add(n)
        if not self.first_ingest.value:
            self.first_ingest.set(t_ingest)
        if n <= SMALL_BATCH:
            self._put_each(b, t_ingest)
        else:
            self._put_batch(b, t_ingest)
        published = self.out.publish()
        self.published.add(published)
        self.last_ingest.set(t_ingest)
        self.latency.record_n(time.monotonic_ns() - t_ingest, published)
        return n

    def _put_batch(self, b, t_ingest: int) -> None:
        """Validate column-wise, encode each tick, write the envelope column-wise."""
        ok = self._validate(b)
        if ok is not None:
            b = type(b)(b.instrument[ok], b.price[ok], b.qty[ok], b.t_exchange[ok])
        encode = self.encode
        seq = self.out.position
        payloads = [
            encode(Tick(s, t_ingest, i, p, q, x))
            for s, i, p, q, x in zip(range(seq, seq + len(b)), b.instrument.tolist(),
                                     b.price.tolist(), b.qty.tolist(), b.t_exchange.tolist())
        ]
        self.out.put_many(b.instrument, t_ingest, payloads)

    def _put_each(self, b, t_ingest: int) -> None:
        """A few ticks: the same checks and writes one tick at a time, without numpy."""
        w = self.out
        encode = self.encode
        n_instr = self.n_instruments
        for i, p, q, x in zip(b.instrument.tolist(), b.price.tolist(), b.qty.tolist(),
                              b.t_exchange.tolist()):
            reason = 0 if p > 0 else 1
            if not reason and q < 0:
                reason = 2
            if not reason and not 0 <= i < n_instr:
                reason = 3
            if reason:
                self.rejected_by[reason - 1].add()
                self.rejected.add()
                continue
            w.put(i, t_ingest, encode(Tick(w.position, t_ingest, i, p, q, x)))

    def _validate(self, b) -> np.ndarray | None:
        """Mask of good ticks, or None when all are good (the common case, one check)."""
        bad_price = b.price <= 0
        bad_qty = b.qty < 0
        bad_inst = (b.instrument < 0) | (b.instrument >= self.n_instruments)
        bad = bad_price | bad_qty | bad_inst
        if not bad.any():
            return None
        # count each bad tick once, under its first failing check
        for counter, mask in zip(self.rejected_by, (bad_price, bad_qty & ~bad_price,
                                                    bad_inst & ~bad_price & ~bad_qty)):
            counter.add(int(mask.sum()))
        self.rejected.add(int(bad.sum()))
        return ~bad
