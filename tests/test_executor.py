"""The executor: pre-trade risk, the simulated venue's latency and fills, the kill switch,
and the end of a strategy's stream. Driven in-process on real shared memory."""

from __future__ import annotations

import time

from hftd.events import (Codec, Control, ControlKind, OrderRequest, OrderReport, RejectReason,
                         ReportKind, ReportStream)
from hftd.ring import CONTROL_KEY, RingReader, RingWriter
from hftd.stages import Executor

enc = Codec(OrderRequest)
reports_codec = Codec(ReportStream)


def _setup(plant, latency_us=0.0):
    p = plant({"executor": {"sim": {"latency_us": latency_us},
                            "risk": {"max_order_qty": 5, "max_position": 3}}})
    ex = Executor(p.context("executor"))
    return p, ex, RingWriter(p.ring("orders.sample")), RingReader(p.ring("reports.sample"))


def _order(w, oid, side, qty, price=0, ref=20000):
    now = time.monotonic_ns()
    assert w.offer(0, now, enc.encode(OrderRequest(w.position, now, oid, 0, side, qty, price, ref)))


def _reports(r):
    got = r.read(reports_codec.decode, 1000)
    r.commit(len(got))
    return got


def test_risk_limits_reject_with_a_reason(plant):
    p, ex, w, r = _setup(plant)
    _order(w, 1, 1, 6)  # more than max_order_qty
    _order(w, 2, 1, 3)  # fills: position 3
    _order(w, 3, 1, 1)  # would make 4 > max_position
    _order(w, 4, -1, 2)  # reduces: fine
    ex.do_work()
    ex.do_work()
    got = [(x.order_id, x.kind, x.reason) for x in _reports(r)]
    assert (1, ReportKind.REJECT, RejectReason.MAX_ORDER_QTY) in got
    assert (3, ReportKind.REJECT, RejectReason.MAX_POSITION) in got
    assert {(2, ReportKind.ACK, 0), (2, ReportKind.FILL, 0), (4, ReportKind.ACK, 0),
            (4, ReportKind.FILL, 0)} <= set(got)
    st = ex.ctx.stats
    assert (st.get("acks"), st.get("fills"), st.get("rejects")) == (2, 2, 2)
    assert st.get("orders_in") == 4
    assert st.snapshot()["histograms"]["tick_to_trade"].count == 2  # the two sent to the venue


def test_fills_come_after_the_venue_latency_at_the_reference_price(plant):
    p, ex, w, r = _setup(plant, latency_us=20_000)
    _order(w, 1, 1, 2, ref=20_123)
    t0 = time.monotonic()
    ex.do_work()
    first = _reports(r)
    assert [x.kind for x in first] == [ReportKind.ACK]
    assert 0 < ex.sleep_for() <= 0.02  # it will wake for the fill, not sleep a whole park
    while not (got := _reports(r)):
        assert time.monotonic() - t0 < 5
        ex.do_work()
    assert time.monotonic() - t0 >= 0.02
    assert [(x.kind, x.qty, x.price) for x in got] == [(ReportKind.FILL, 2, 20_123)]


def test_pause_rejects_new_orders_until_resume(plant):
    p, ex, w, r = _setup(plant)
    ctl = RingWriter(p.ring("control.executor"))
    now = time.monotonic_ns()
    ctl.offer(CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.PAUSE)))
    _order(w, 1, 1, 1)
    ex.do_work()
    assert [(x.kind, x.reason) for x in _reports(r)] == [(ReportKind.REJECT, RejectReason.PAUSED)]
    ctl.offer(CONTROL_KEY, now, Codec(Control).encode(Control(1, now, ControlKind.RESUME)))
    _order(w, 2, 1, 1)
    ex.do_work()
    assert [x.kind for x in _reports(r)] == [ReportKind.ACK, ReportKind.FILL]


def test_end_of_stream_cancels_resting_orders_then_ends_the_reports(plant):
    p, ex, w, r = _setup(plant)
    _order(w, 1, 1, 1, price=19_000, ref=20_000)  # a buy below the market rests
    now = time.monotonic_ns()
    w.offer(CONTROL_KEY, now, Codec(Control).encode(Control(w.position, now, ControlKind.SHUTDOWN)))
    for _ in range(5):
        ex.do_work()
    got = _reports(r)
    kinds = [x.kind if isinstance(x, OrderReport) else "end" for x in got]
    assert kinds == [ReportKind.ACK, ReportKind.CANCELED, "end"]
    assert ex.done
