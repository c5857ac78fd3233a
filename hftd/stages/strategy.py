"""Strategy stage: hosts one user strategy; ticks and order reports in, orders out.

Each pass drains, in priority order, the control ring, then order reports, then sends any
orders still waiting for room, and only then takes a batch of ticks. Orders that do not fit
the orders ring wait here (never dropped) and the stage takes no more ticks until they are
sent, so a full orders ring backpressures the ticks ring rather than losing anything.

End of stream: the tick stream's SHUTDOWN calls `on_stop`, sends the remaining orders and
a SHUTDOWN on the orders ring; the stage stops when the executor's SHUTDOWN arrives on the
reports ring, so every order it sent has had its reports.
"""

from __future__ import annotations

import importlib
import sys
import time

from ..agent import Agent
from ..events import (Codec, Control, ControlKind, OrderRequest, OrderReport, ReportKind,
                      ReportStream, Tick, TickStream)
from ..stats import COUNTER, GAUGE, Schema
from ..strategies.base import Strategy, StrategyApi
from .common import Outbox, end_of_stream, read_control


def load_strategy_class(path: str) -> type[Strategy]:
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"strategy class {path!r} cannot be loaded: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"strategy class {path!r} is not a subclass of hftd Strategy")
    return cls


class StrategyStage(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        return Schema(
            values=(("ticks_in", COUNTER), ("orders_out", COUNTER), ("reports_in", COUNTER),
                    ("acks", COUNTER), ("fills", COUNTER), ("rejects", COUNTER),
                    ("seq_gaps", COUNTER), ("first_seq", GAUGE), ("last_seq", GAUGE),
                    ("orders_waiting", GAUGE), ("orders_refused", COUNTER), ("control_in", COUNTER),
                    ("paused", GAUGE), ("alarms", COUNTER),
                    ("first_tick_ns", GAUGE), ("last_tick_ns", GAUGE)),
            histograms=("stage",),
        )

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.name = ctx.agent.split(".", 1)[1]
        scfg = next(s for s in cfg.strategies if s.name == self.name)
        self.control = ctx.reader(f"control.{ctx.agent}")
        self.reports = ctx.reader(f"reports.{self.name}")
        self.ticks = ctx.reader(f"ticks.{self.name}")
        self.orders = ctx.writer(f"orders.{self.name}", "executor")
        self.batch_min = scfg.batch_min
        self.batch_span = scfg.batch - scfg.batch_min
        self.capacity = self.ticks.ring.capacity
        self.check_seq = len(cfg.routes(scfg)) == len(cfg.instruments)
        self.decode_tick = Codec(TickStream).decode
        self.decode_report = Codec(ReportStream).decode
        self.encode_order = Codec(OrderRequest).encode
        self.api = StrategyApi(cfg.symbols(), self._submit)
        self.strategy = load_strategy_class(scfg.class_)(self.api, scfg.params)
        self.next_order_id = 1
        self.current_t_ingest = 0
        self.expect_seq = -1
        self.ticks_ended = False
        self.orders_ended = False
        st = ctx.stats
        for name, _ in self.schema(cfg).values:
            setattr(self, "c_" + name, st.value(name))
        self.latency = ctx.histogram("stage")
        self.outbox = Outbox(self.orders, self.encode_order,
                             int(cfg.rings.orders.block_deadline_ms * 1e6), self.c_orders_out,
                             self._overdue)

    def on_start(self) -> None:
        self.strategy.on_start()

    def on_reload(self, cfg) -> None:
        scfg = next(s for s in cfg.strategies if s.name == self.name)
        if scfg.params != self.strategy.params:
            self.strategy.params = dict(scfg.params)
            self.strategy.on_reload()

    def flush_pending(self) -> int:
        self.outbox.flush()
        return len(self.outbox)

    # called by the strategy (through the api) from inside on_tick/on_report
    def _submit(self, instrument, side, qty, price, ref_price) -> int:
        if self.api.paused:
            self.c_orders_refused.add()
            self.api.working[instrument] -= side * qty  # never sent
            return 0
        oid = self.next_order_id
        self.next_order_id = oid + 1
        self.outbox.send(OrderRequest(0, self.current_t_ingest, oid, instrument, side, qty, price,
                                      ref_price))
        return oid

    def _overdue(self, n: int) -> None:
        self._alarm(f"{n} orders blocked for more than {self.outbox.deadline_ns / 1e6:g} ms on a "
                    f"full orders ring")

    def _alarm(self, why: str) -> None:
        """Trip the kill switch: no new orders until RESUME. The supervisor sees the alarm
        counter and pauses trading everywhere."""
        if not self.api.paused:
            self.c_alarms.add()
            print(f"hftd[{self.ctx.instance}] {self.ctx.agent}: ALARM: {why}; kill switch on",
                  file=sys.stderr, flush=True)
        self.api.paused = True
        self.c_paused.set(1)

    def do_work(self) -> int:
        work = 0
        for ev in read_control(self.control):
            work += 1
            self.c_control_in.add()
            if ev.kind == ControlKind.PAUSE:
                self.api.paused = True
            elif ev.kind == ControlKind.RESUME:
                self.api.paused = False
            elif ev.kind == ControlKind.RELOAD:
                self.reload()
            self.c_paused.set(int(self.api.paused))
        work += self._take_reports()
        if self.outbox:
            work += self.outbox.flush()
            self.c_orders_waiting.set(len(self.outbox))
            if self.outbox:
                return work
        if self.ticks_ended:
            if not self.orders_ended and end_of_stream(self.orders):
                self.orders_ended = True
                work += 1
            return work
        return work + self._take_ticks()

    def _take_reports(self) -> int:
        r = self.reports
        evs = r.read(self.decode_report, 1024)
        if not evs:
            return 0
        api, on_report = self.api, self.strategy.on_report
        controls = 0
        for ev in evs:
            if ev.__class__ is Control:
                controls += 1
                if ev.kind == ControlKind.SHUTDOWN:
                    self.done = True
                continue
            kind = ev.kind
            if kind == ReportKind.FILL:
                api.positions[ev.instrument] += ev.side * ev.qty
                api.working[ev.instrument] -= ev.side * ev.qty
                self.c_fills.add()
            elif kind == ReportKind.REJECT:
                api.working[ev.instrument] -= ev.side * ev.qty
                self.c_rejects.add()
            elif kind == ReportKind.ACK:
                self.c_acks.add()
            on_report(ev)
        r.commit(len(evs))
        self.c_reports_in.add(len(evs) - controls)
        return len(evs)

    def _take_ticks(self) -> int:
        r = self.ticks
        avail = r.available()
        limit = self.batch_min + self.batch_span * avail // self.capacity
        evs = r.read(self.decode_tick, limit)
        if not evs:
            return 0
        on_tick = self.strategy.on_tick
        last_price = self.api.last_price
        expect = self.expect_seq
        check = self.check_seq
        gaps = 0
        taken = 0
        for ev in evs:
            if ev.__class__ is not Tick:  # the end of the stream: the dispatcher passes no other
                taken += 1
                self.ticks_ended = True
                break
            if check:
                if ev.seq != expect and expect >= 0:
                    gaps += 1
                expect = ev.seq + 1
            self.current_t_ingest = ev.t_ingest
            last_price[ev.instrument] = ev.price
            on_tick(ev)
            taken += 1
        n_ticks = taken - (1 if self.ticks_ended else 0)
        now = time.monotonic_ns()
        if n_ticks:
            r.record_ages(self.latency, now, n_ticks)
            if self.c_first_tick_ns.value == 0:
                self.c_first_tick_ns.set(now)
                self.c_first_seq.set(evs[0].seq)  # a tick: a stream never starts with SHUTDOWN
            self.c_last_tick_ns.set(now)
            self.c_last_seq.set(expect - 1 if check else 0)
            self.c_ticks_in.add(n_ticks)
            if gaps:
                self.c_seq_gaps.add(gaps)
        self.expect_seq = expect
        r.commit(taken)
        if self.ticks_ended:
            self.strategy.on_stop()
        if self.outbox:
            self.outbox.flush()
            self.c_orders_waiting.set(len(self.outbox))
        return taken
