"""Executor: pre-trade risk, order state and the venue; reports back to each strategy.

Reads every strategy's orders ring (after its own control ring: PAUSE is the kill switch),
checks each order against the risk limits, hands it to the venue and records tick-to-trade
(the moment the order goes to the venue minus `t_ingest` of the tick that caused it). The
executor never blocks: reports that do not fit a strategy's reports ring wait here, and the
executor reads no more of that strategy's orders until they are sent. That keeps a strategy
that is busy sending orders from deadlocking against an executor busy sending reports.
"""

from __future__ import annotations

import sys
import time

from .. import venues
from ..agent import Agent
from ..events import (Codec, Control, ControlKind, OrderReport, OrderStream, RejectReason,
                      ReportKind, ReportStream)
from ..stats import COUNTER, GAUGE, Schema
from ..topology import strategy_agent
from .common import Outbox, end_of_stream, read_control


class _Book:
    """Per strategy: its orders ring, its reports outbox, positions, stream state."""

    def __init__(self, orders, outbox: Outbox, n_instruments):
        self.orders = orders
        self.outbox = outbox
        self.position = [0] * n_instruments
        self.working = [0] * n_instruments
        self.orders_ended = False
        self.reports_ended = False
        self.quarantined = False  # its strategy is given up: no orders taken, no reports sent


class Executor(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        return Schema(
            values=(("orders_in", COUNTER), ("reports_out", COUNTER), ("acks", COUNTER),
                    ("fills", COUNTER), ("rejects", COUNTER), ("canceled", COUNTER),
                    ("paused", GAUGE), ("reports_waiting", GAUGE), ("alarms", COUNTER),
                    ("control_in", COUNTER), ("quarantined", COUNTER),
                    ("reports_discarded", COUNTER)),
            histograms=("stage", "tick_to_trade"),
        )

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.executor")
        self.n_instruments = len(cfg.instruments)
        self.risk = cfg.executor.risk
        self.venue = venues.make(cfg)
        self.decode = Codec(OrderStream).decode
        self.encode = Codec(ReportStream).encode
        st = ctx.stats
        for name, _ in self.schema(cfg).values:
            setattr(self, "c_" + name, st.value(name))
        self.latency = ctx.histogram("stage")
        self.t2t = ctx.histogram("tick_to_trade")
        self.paused = False
        deadline_ns = int(cfg.rings.reports.block_deadline_ms * 1e6)
        self.books = [
            _Book(ctx.reader(f"orders.{s.name}"),
                  Outbox(ctx.writer(f"reports.{s.name}", strategy_agent(s.name)), self.encode,
                         deadline_ns, self.c_reports_out, self._overdue),
                  len(cfg.instruments))
            for s in cfg.strategies
        ]

    def sleep_for(self) -> float | None:
        wait = super().sleep_for()
        due = self.venue.next_due_ns()
        if wait == 0.0 or due is None:
            return wait
        return max(0.0, (due - time.monotonic_ns()) / 1e9)  # wake for the next fill

    def do_work(self) -> int:
        work = 0
        for ev in read_control(self.control):
            work += 1
            self.c_control_in.add()
            if ev.kind == ControlKind.PAUSE:
                self.paused = True
            elif ev.kind == ControlKind.RESUME:
                self.paused = False
            elif ev.kind == ControlKind.RELOAD:
                self.reload()
            elif ev.kind == ControlKind.QUARANTINE:
                self._quarantine(ev.arg)
            self.c_paused.set(int(self.paused))
        for i, book in enumerate(self.books):
            if book.outbox:
                work += book.outbox.flush()  # reports that waited for room go first
            if not book.outbox and not book.orders_ended:
                work += self._take_orders(i, book)
        # fills now due, those of the orders just taken included (a zero-latency venue)
        for owner, order, qty, price in self.venue.poll(time.monotonic_ns()):
            book = self.books[owner]
            book.position[order.instrument] += order.side * qty
            book.working[order.instrument] -= order.side * qty
            self.c_fills.add()
            work += 1
            if book.quarantined:
                self.c_reports_discarded.add()  # nobody reads its reports ring any more
            else:
                self._report(book, order, ReportKind.FILL, qty, price)
        waiting = 0
        for i, book in enumerate(self.books):
            if book.outbox:
                book.outbox.flush()
            if book.orders_ended and not book.reports_ended:
                work += self._end(i, book)
            waiting += len(book.outbox)
        self.c_reports_waiting.set(waiting)
        if all(b.reports_ended for b in self.books):
            self.done = True
        return work

    def on_reload(self, cfg) -> None:
        self.risk = cfg.executor.risk

    def flush_pending(self) -> int:
        waiting = 0
        for book in self.books:
            if book.outbox:
                book.outbox.flush()
                waiting += len(book.outbox)
        return waiting

    def _quarantine(self, owner: int) -> None:
        """The supervisor gave strategy `owner` up: its resting orders are canceled, its
        orders ring is read no more, and reports for it are counted, not sent."""
        if not 0 <= owner < len(self.books) or self.books[owner].quarantined:
            return
        book = self.books[owner]
        book.quarantined = True
        book.orders_ended = book.reports_ended = True
        for order in self.venue.cancel_all(owner):
            book.working[order.instrument] -= order.side * order.qty
            self.c_canceled.add()
        self.c_reports_discarded.add(len(book.outbox))
        book.outbox.waiting.clear()
        self.c_quarantined.add()

    def _take_orders(self, owner: int, book: _Book) -> int:
        r = book.orders
        evs = r.read(self.decode, 256)
        if not evs:
            return 0
        taken = 0
        for ev in evs:
            taken += 1
            if ev.__class__ is Control:
                if ev.kind == ControlKind.SHUTDOWN:
                    book.orders_ended = True
                    break
                continue
            now = time.monotonic_ns()
            reason = self._check(book, ev)
            if reason:
                self.latency.record(now - ev.t_ingest)
                self._report(book, ev, ReportKind.REJECT, ev.qty, 0, reason)
                self.c_rejects.add()
                continue
            kind, reason = self.venue.submit(ev, owner, now)
            self.t2t.record(time.monotonic_ns() - ev.t_ingest)  # first: nothing before the venue
            self.latency.record(now - ev.t_ingest)
            if kind == ReportKind.REJECT:
                self._report(book, ev, kind, ev.qty, 0, reason)
                self.c_rejects.add()
                continue
            book.working[ev.instrument] += ev.side * ev.qty
            self._report(book, ev, ReportKind.ACK, ev.qty, 0)
            self.c_acks.add()
        r.commit(taken)
        self.c_orders_in.add(taken - (1 if book.orders_ended else 0))
        return taken

    def _check(self, book: _Book, o) -> int:
        if self.paused:
            return RejectReason.PAUSED
        if not 0 <= o.instrument < self.n_instruments:
            return RejectReason.UNKNOWN_INSTRUMENT
        if o.qty <= 0 or o.side not in (1, -1):
            return RejectReason.BAD_QTY
        if o.qty > self.risk.max_order_qty:
            return RejectReason.MAX_ORDER_QTY
        exposure = book.position[o.instrument] + book.working[o.instrument] + o.side * o.qty
        if abs(exposure) > self.risk.max_position:
            return RejectReason.MAX_POSITION
        return RejectReason.NONE

    def _report(self, book: _Book, order, kind, qty, price, reason=0) -> None:
        book.outbox.add(OrderReport(0, order.t_ingest, order.order_id, kind, order.instrument,
                                    order.side, qty, price, reason))

    def _overdue(self, n: int) -> None:
        if not self.paused:
            self.c_alarms.add()
            print(f"hftd[{self.ctx.instance}] executor: ALARM: {n} reports blocked for more than "
                  f"{self.books[0].outbox.deadline_ns / 1e6:g} ms on a full reports ring; kill "
                  f"switch on", file=sys.stderr, flush=True)
        self.paused = True
        self.c_paused.set(1)

    def _end(self, owner: int, book: _Book) -> int:
        """After the strategy's SHUTDOWN: finish due fills, cancel resting orders, then end
        the reports stream."""
        if self.venue.pending(owner) > 0:
            return 0
        for order in self.venue.cancel_all(owner):
            book.working[order.instrument] -= order.side * order.qty
            self._report(book, order, ReportKind.CANCELED, order.qty, 0)
            self.c_canceled.add()
        if book.outbox:
            book.outbox.flush()
            return 0
        if end_of_stream(book.outbox.writer):
            book.reports_ended = True
            return 1
        return 0
