"""The strategy stage and the strategy API: requests on the orders ring with client ids that
never repeat (a restarted stage continues the counter kept in shared memory), the strategy's
own book driven by the executor's reports (on_fill, then on_order), positions and P&L from
its fills, the kill switch, timers. In-process, on real shared memory: the test stands in
for the executor and the dispatcher."""

from __future__ import annotations

import time

import pytest

from hftd.events import (ORDER_ID_SHIFT, Codec, Control, ControlKind, OrderAction, OrderReport,
                         OrderStream, RejectReason, ReportKind, Tick, TickStream)
from hftd.ring import CONTROL_KEY, RingReader, RingWriter
from hftd.stages import StrategyStage
from hftd.trading import OrdState, OrdType, TimeInForce

K = ReportKind
R = RejectReason
from hftd.stages.executor import state_path, write_snapshot
from hftd.trading.store import TradingState

orders_codec = Codec(OrderStream)
report_enc = Codec(OrderReport)
tick_enc = Codec(TickStream)


class Seat:
    def __init__(self, plant, cls="tests.strategies:Journal", top=None, **scfg):
        self.p = plant({"strategies": [{"name": "sample", "class": cls, **scfg}], **(top or {})})
        self.stage = self.start()
        self.orders = RingReader(self.p.ring("orders.sample"))
        self.reports = RingWriter(self.p.ring("reports.sample"))
        self.ticks = RingWriter(self.p.ring("ticks.sample"))
        self.seq = 0

    def start(self):
        st = StrategyStage(self.p.context("strategy.sample"))
        st.on_start()
        self.p.answer_reconcile(st, getattr(self, "orders", None), getattr(self, "reports", None))
        return st

    @property
    def s(self):
        return self.stage.strategy

    def sent(self):
        evs = self.orders.read(orders_codec.decode, 1000)
        self.orders.commit(len(evs))
        return evs

    def report(self, oid, kind, qty=0, price=0, filled=0, leaves=0, reason=0, inst=0, side=1):
        now = time.monotonic_ns()
        r = OrderReport(self.reports.position, now, oid, kind, inst, side, qty, price, reason,
                        filled, leaves)
        assert self.reports.offer(0, now, report_enc.encode(r))

    def tick(self, price, inst=0):
        now = time.monotonic_ns()
        assert self.ticks.offer(inst, now, tick_enc.encode(Tick(self.seq, now, inst, price, 1)))
        self.seq += 1

    def stat(self, name):
        return self.stage.ctx.stats.get(name)


def test_reports_drive_the_strategys_own_book_and_callbacks(plant):
    seat = Seat(plant)
    oid = seat.s.buy(0, 2, 20_000)
    assert oid == (0 << ORDER_ID_SHIFT) | 1
    [req] = seat.sent()
    assert (req.order_id, req.action, req.instrument, req.side, req.qty, req.price,
            req.ord_type, req.tif, req.tick_seq) == (oid, OrderAction.NEW, 0, 1, 2, 20_000,
                                                     OrdType.LIMIT, TimeInForce.ROD, -1)
    assert seat.s.working(0) == 2 and [o.client_id for o in seat.s.working_orders()] == [oid]
    seat.report(oid, K.ACK, 2, 20_000, 0, 2)
    seat.report(oid, K.FILL, 1, 20_000, 1, 1)
    seat.report(oid, K.FILL, 1, 20_000, 2, 0)
    seat.stage.do_work()
    P, F = int(OrdState.PARTIALLY_FILLED), int(OrdState.FILLED)
    assert seat.s.log == [("order", oid, int(OrdState.NEW), 0, 2),
                          ("fill", oid, 1, 20_000), ("order", oid, P, 1, 1),
                          ("fill", oid, 1, 20_000), ("order", oid, F, 2, 0)]
    assert seat.s.position(0) == 2 and seat.s.working(0) == 0 and seat.s.working_orders() == []
    # TXF: 200 NTD a point; tax 0.00002 of 20,000 * 200 = 80 NTD a lot
    seat.stage.api.last_price[0] = 20_010
    assert seat.s.pnl(0) == pytest.approx(10 * 200 * 2 - 160)
    assert (seat.stat("acks"), seat.stat("fills"), seat.stat("filled")) == (1, 2, 1)
    assert (seat.stat("pos.TXF"), seat.stat("tax.TXF")) == (2, 160 * 100)
    assert seat.stat("report_mismatches") == 0 and seat.stat("illegal_transitions") == 0


def test_an_illegal_report_changes_nothing_and_is_counted(plant):
    seat = Seat(plant)
    oid = seat.s.buy(0, 1, 20_000)
    seat.report(oid + 7, K.FILL, 1, 20_000, 1, 0)  # an order it never sent
    seat.report(oid, K.FILL, 3, 20_000, 3, 0)  # more than the order's quantity
    seat.report(oid, K.FILL, 1, 20_000, 5, 0)  # legal, but the executor's arithmetic differs
    seat.stage.do_work()
    assert seat.stat("illegal_transitions") == 2 and seat.stat("report_mismatches") == 1
    assert seat.s.position(0) == 1 and [x[0] for x in seat.s.log] == ["fill", "order"]


def test_cancel_replace_and_the_kill_switch(plant):
    seat = Seat(plant)
    oid = seat.s.sell(0, 3, 20_010, TimeInForce.IOC)
    assert seat.s.replace(oid, qty=4) and seat.s.cancel(oid)
    assert not seat.s.cancel(12345) and not seat.s.replace(12345, price=1)
    with pytest.raises(ValueError):
        seat.s.replace(oid, price=0)  # a limit order keeps a price
    ctl = RingWriter(seat.p.ring("control.strategy.sample"))
    now = time.monotonic_ns()
    ctl.offer(CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.PAUSE)))
    seat.stage.do_work()
    assert seat.s.buy(0, 1) == 0 and not seat.s.replace(oid, qty=2)  # refused while paused
    assert seat.s.cancel(oid)  # a cancel always goes
    assert seat.stat("orders_refused") == 2
    got = [(r.action, r.order_id, r.qty, r.price, r.tif) for r in seat.sent()]
    assert got == [(OrderAction.NEW, oid, 3, 20_010, TimeInForce.IOC),
                   (OrderAction.REPLACE, oid, 4, 20_010, TimeInForce.IOC),
                   (OrderAction.CANCEL, oid, 0, 20_010, TimeInForce.IOC),
                   (OrderAction.CANCEL, oid, 0, 20_010, TimeInForce.IOC)]
    assert (seat.stat("new_orders"), seat.stat("replaces_sent"), seat.stat("cancels_sent"),
            seat.stat("orders_out")) == (1, 1, 2, 4)
    seat.report(oid, K.REPLACED, 4, 20_010, 0, 4, side=-1)
    seat.report(oid, K.CANCELED, 4, 20_010, 0, 0, side=-1)
    seat.report(oid, K.CANCEL_REJECTED, 0, 0, 0, 0, reason=13, side=-1)
    seat.stage.do_work()
    assert [x[2] for x in seat.s.log] == [int(OrdState.NEW), int(OrdState.CANCELED),
                                          int(OrdState.CANCELED)]
    assert seat.s.order(oid).qty == 4 and seat.s.working(0) == 0
    assert (seat.stat("replaced"), seat.stat("canceled"), seat.stat("cancel_rejects")) == (1, 1, 1)


def test_orders_sent_on_a_tick_carry_it_and_ids_survive_a_restart(plant):
    seat = Seat(plant, params={"every": 2})
    for k in range(6):
        seat.tick(20_000 + k)
    seat.stage.do_work()
    reqs = seat.sent()
    assert [r.tick_seq for r in reqs] == [1, 3, 5]
    assert [r.order_id for r in reqs] == [1, 2, 3]
    store = TradingState.open(state_path(seat.stage.ctx.cfg), create=False)
    assert store.last_issued(0) == 3  # the counter is in the state store, not the process
    seat.stage = seat.start()  # a new process continues it
    assert seat.s.buy(0, 1) == 4
    assert store.last_issued(0) == 4
    store.close()
    with pytest.raises(ValueError):
        seat.s.buy(0, 0)


def test_an_unrouted_instrument_cannot_be_traded(plant):
    seat = Seat(plant, instruments=["MXF"])
    with pytest.raises(ValueError, match="not routed"):
        seat.s.buy(0, 1)
    assert seat.s.buy(1, 1) > 0


def test_on_timer_is_called_every_timer_s(plant):
    seat = Seat(plant, params={"timer_s": 0.01})
    assert 0 < seat.stage.sleep_for() <= 0.01  # a parked stage wakes for its timer
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.1:
        seat.stage.do_work()
        time.sleep(0.001)
    assert 5 <= seat.s.timers <= 11


def test_reports_that_came_while_the_strategy_was_dead_reach_the_next_process_once(plant):
    """The executor answered while the strategy's process was dead. The next process takes
    its positions from the executor's snapshot (so the fills are not counted twice) and its
    callbacks hear of every report no process had handled; the one report the dead process
    had handled but not committed is not handed over again."""
    from hftd import stats

    seat = Seat(plant)
    a, b = seat.s.buy(0, 1, 20_000), seat.s.buy(0, 1, 20_000)
    seat.sent()
    seat.report(a, K.ACK, 1, 20_000, 0, 1)
    seat.stage.reports.commit = lambda n: (_ for _ in ()).throw(SystemExit)  # dies at commit
    with pytest.raises(SystemExit):
        seat.stage.do_work()  # a's ACK handled (its callback ran), not committed
    assert seat.s.log == [("order", a, int(OrdState.NEW), 0, 1)]
    seat.report(a, K.FILL, 1, 20_000, 1, 0)
    seat.report(b, K.ACK, 1, 20_000, 0, 1)
    seat.report(b, K.FILL, 1, 20_000, 1, 0)
    ctx = seat.p.context("strategy.sample")
    ctx.stats.q_header[stats.H_RESTARTS] = 1
    st = StrategyStage(ctx)
    st.on_start()
    seat.p.answer_reconcile(st, seat.orders, seat.reports,
                            positions={"TXF": [2, 20_000.0, 0.0, 0.0, 160.0, 2]})
    seat.stage = st
    F, N = int(OrdState.FILLED), int(OrdState.NEW)
    assert seat.s.log == [("fill", a, 1, 20_000), ("order", a, F, 1, 0),
                          ("order", b, N, 0, 1), ("fill", b, 1, 20_000), ("order", b, F, 1, 0)]
    assert seat.s.position(0) == 2 and seat.s.working_orders() == []
    assert (seat.stat("reports_skipped"), seat.stat("reports_after_restart")) == (1, 3)
    assert seat.stat("illegal_transitions") == 0


def test_the_answer_to_a_dead_processs_reconcile_is_not_taken_for_the_next_ones(plant):
    """Found by the chaos run: a process killed after asking (RECONCILE) and before reading
    the answer left it on the reports ring; the next process asks again, and must not take
    the first answer (whose snapshot the second has replaced) for its own."""
    from hftd import stats
    from hftd.stages.common import offer_control

    seat = Seat(plant)
    ctx = seat.p.context("strategy.sample")
    ctx.stats.q_header[stats.H_RESTARTS] = 1
    dead = StrategyStage(ctx)
    dead.on_start()
    dead.do_work()  # asks; dies before the answer comes
    ctx2 = seat.p.context("strategy.sample")
    ctx2.stats.q_header[stats.H_RESTARTS] = 2
    st = StrategyStage(ctx2)
    st.on_start()
    st.do_work()  # asks again
    asks = [e for e in seat.sent() if isinstance(e, Control)]
    assert [e.kind for e in asks] == [ControlKind.RECONCILE] * 2
    # the executor answers both, in order; the file holds the second snapshot by the time
    # the new process reads the first answer
    offer_control(seat.reports, ControlKind.RECONCILED, 7)
    seat.report(99, K.FILL, 1, 20_000, 1, 0)  # between the two answers: in the later one
    write_snapshot(ctx2.runtime_dir, ctx2.instance, "sample", 8,
                   {"TXF": [1, 20_000.0, 0, 0, 80.0, 1]}, [])
    offer_control(seat.reports, ControlKind.RECONCILED, 8)
    for _ in range(5):
        st.do_work()
    assert not st.reconciling and st.strategy.position(0) == 1
    assert st.ctx.stats.get("stale_answers") == 1 and st.ctx.stats.get("illegal_transitions") == 0


def test_a_late_cancel_of_an_order_the_executor_no_longer_knows_is_not_a_mismatch(plant):
    """Found by the hostile review: a restarted executor knows only working orders, so it
    refuses a late cancel of an order that had filled with UNKNOWN_ORDER and no quantities.
    The strategy, whose book has the order filled, does not count that as a disagreement;
    the same refusal of an order it believes working still is one."""
    seat = Seat(plant)
    a, b = seat.s.buy(0, 1, 20_000), seat.s.buy(0, 1, 20_000)
    seat.report(a, K.ACK, 1, 20_000, 0, 1)
    seat.report(a, K.FILL, 1, 20_000, 1, 0)
    seat.report(b, K.ACK, 1, 20_000, 0, 1)
    seat.stage.do_work()
    seat.report(a, K.CANCEL_REJECTED, 0, 0, 0, 0, reason=R.UNKNOWN_ORDER)
    seat.stage.do_work()
    assert seat.stat("report_mismatches") == 0
    seat.report(b, K.CANCEL_REJECTED, 0, 0, 0, 0, reason=R.UNKNOWN_ORDER)  # b works, per its book
    seat.stage.do_work()
    assert seat.stat("report_mismatches") == 1


def _wire_ticks(writer, first_seq, prices, insts, t_ingest):
    """Ticks in the producer's wire form (hftd.events.encode_ticks), seqs from first_seq."""
    import numpy as np

    from hftd.events import encode_ticks

    rows = encode_ticks(first_seq, t_ingest, np.array(insts), np.array(prices), 1, 0)
    assert writer.claim(len(prices)) == len(prices)
    writer.put_rows(np.array(insts, np.int32), t_ingest, rows)
    writer.publish()


def test_on_ticks_gets_runs_as_columns_once_each_and_orders_name_the_runs_last_tick(plant):
    seat = Seat(plant, cls="tests.strategies:Columns", params={"buy_each_run": True})
    assert seat.stage.batched
    _wire_ticks(seat.ticks, 0, [20_000, 20_001, 20_002], [0, 1, 0], 500)
    _wire_ticks(seat.ticks, 3, [20_003, 20_004], [1, 1], 400)
    seat.stage.do_work()
    # a restarted dispatcher routes seq 3 and 4 again, then seq 5: only 5 is new
    _wire_ticks(seat.ticks, 3, [20_003, 20_004], [1, 1], 600)
    _wire_ticks(seat.ticks, 5, [20_005], [0], 700)
    seat.stage.do_work()
    s = seat.s
    assert [run[0] for run in s.runs] == [[0, 1, 2, 3, 4], [5]]  # the replays not handed over
    assert s.runs[0][1] == [20_000, 20_001, 20_002, 20_003, 20_004]
    assert s.last_prices[0][:2] == [20_002, 20_004]  # each instrument's last, before the call
    assert s.last_prices[1][:2] == [20_005, 20_004]
    reqs = seat.sent()
    # the run's last tick, and its oldest ingest time (the replays are not part of the run)
    assert [(r.tick_seq, r.t_ingest, r.instrument) for r in reqs] == [(4, 400, 1), (5, 700, 0)]
    assert seat.stat("ticks_in") == 6 and seat.stat("replays_suppressed") == 2
    assert seat.stat("tick_started") == 8  # ring position + 1 of the run's last event


def test_a_run_whose_on_ticks_began_is_not_handed_to_the_next_process(plant):
    from hftd import stats

    seat = Seat(plant, cls="tests.strategies:Columns", params={"die_at_run": 2})
    _wire_ticks(seat.ticks, 0, [1, 2, 3], [0, 0, 0], 1)
    seat.stage.do_work()
    _wire_ticks(seat.ticks, 3, [4, 5], [0, 0], 2)
    with pytest.raises(SystemExit):
        seat.stage.do_work()  # dies inside on_ticks of the second run, nothing committed
    ctx = seat.p.context("strategy.sample")
    ctx.stats.q_header[stats.H_RESTARTS] = 1
    seat.stage = seat.start()
    _wire_ticks(seat.ticks, 5, [6], [0], 3)
    seat.stage.do_work()
    seat.stage.do_work()
    assert [r[0] for r in seat.s.runs] == [[5]]  # seq 3 and 4 were not handed over again
    assert seat.stat("restart_skipped") == 2 and seat.stat("ticks_in") == 6


def test_on_ticks_gets_ticks_in_msgspec_minimal_form_too_and_then_the_end_of_stream(plant):
    """README: ticks encoded otherwise than in the wire form are decoded as before. For a
    strategy with on_ticks they must still reach on_ticks (its on_tick is not its code), in
    order, mixed with wire-form runs; the end of the stream after them stops the strategy."""
    from hftd.stages.common import end_of_stream

    seat = Seat(plant, cls="tests.strategies:Columns")
    seat.seq = 0
    seat.tick(20_000)  # msgspec's own encoding (smallest integers), not the wire form
    seat.tick(20_001, inst=1)
    _wire_ticks(seat.ticks, 2, [20_002, 20_003], [0, 1], 500)
    seat.seq = 4
    seat.tick(20_004)
    assert end_of_stream(seat.ticks)
    for _ in range(5):
        seat.stage.do_work()
    s = seat.s
    assert [seq for run in s.runs for seq in run[0]] == [0, 1, 2, 3, 4]
    assert [p for run in s.runs for p in run[1]] == [20_000, 20_001, 20_002, 20_003, 20_004]
    assert seat.stage.api.last_price[:2] == [20_004, 20_003]
    assert seat.stat("ticks_in") == 5 and seat.stat("seq_gaps") == 0
    assert seat.stage.stopped


def test_orders_waiting_for_room_end_a_park_once_the_executor_has_freed_the_ring(plant):
    """The orders ring was full, so orders wait in the stage's outbox. The executor then took
    them all before the stage raised its waiting flag (so it did not ring): sleep_for must see
    the room and not park. While the ring stays full, ticks (which wait with the orders) do
    not keep the stage awake: it parks until the executor rings."""
    seat = Seat(plant, top={"rings": {"orders": {"capacity": 4}}})
    for _ in range(6):
        seat.s.buy(0, 1, 20_000)
    assert len(seat.stage.outbox) == 2
    seat.stage.do_work()
    assert len(seat.stage.outbox) == 2  # still no room
    seat.tick(20_000)
    assert seat.stage.sleep_for() is None  # a tick waits, but behind the orders
    seat.sent()  # the executor takes all four (no flag up: no ring)
    assert seat.stage.sleep_for() == 0.0
    seat.stage.do_work()
    assert len(seat.stage.outbox) == 0 and len(seat.sent()) == 2
