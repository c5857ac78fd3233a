"""The executor: pre-trade risk by reason, the simulated venue driven by the market-data ring
(market orders at the next trade after the latency, resting limits, IOC/FOK), cancel and
replace through the rings, client ids, the kill switch and the daily loss limit, positions
and P&L in its stats block, the end of a strategy's stream. Driven in-process on real shared
memory: the test writes the strategy's orders ring and the dispatcher's market-data ring."""

from __future__ import annotations

import random
import time

import pytest

from hftd.events import (ORDER_ID_SHIFT, Codec, Control, ControlKind, OrderAction, OrderReport,
                         OrderRequest, RejectReason, ReportKind, ReportStream, Tick, TickStream)
from hftd.ring import CONTROL_KEY, RingReader, RingWriter
from hftd.stages import Executor
from hftd.trading import OrdType, TimeInForce

enc = Codec(OrderRequest)
tick_enc = Codec(TickStream)
reports_codec = Codec(ReportStream)
K = ReportKind
R = RejectReason
NEW, CANCEL, REPLACE = OrderAction.NEW, OrderAction.CANCEL, OrderAction.REPLACE
TXF = 0  # the default instruments: TXF (multiplier 200), MXF, TMF, TE, TF


class Desk:
    """One executor with the test standing in for strategy `sample` and the dispatcher."""

    def __init__(self, plant, latency_us=0.0, top=None, **risk):
        limits = {"max_order_qty": 5, "max_position": 3, **risk}
        self.p = plant({"executor": {"sim": {"latency_us": latency_us}, "risk": limits},
                        **(top or {})})
        self.ex = Executor(self.p.context("executor"))
        self.orders = RingWriter(self.p.ring("orders.sample"))
        self.reports = RingReader(self.p.ring("reports.sample"))
        self.md = RingWriter(self.p.ring("ticks.executor"))
        self.ctl = RingWriter(self.p.ring("control.executor"))
        self.seq = 0
        self.next_id = 1

    def trade(self, price, qty=10, inst=TXF):
        now = time.monotonic_ns()
        t = Tick(self.seq, now, inst, price, qty)
        self.seq += 1
        assert self.md.offer(inst, now, tick_enc.encode(t))
        return t.seq

    def send(self, action, oid, side=1, qty=1, price=0, inst=TXF, tif=TimeInForce.ROD,
             tick_seq=-1, ord_type=None):
        if ord_type is None:
            ord_type = OrdType.LIMIT if price else OrdType.MARKET
        now = time.monotonic_ns()
        req = OrderRequest(self.orders.position, now, oid, action, inst, side, qty, price,
                           ord_type, tif, tick_seq)
        assert self.orders.offer(0, now, enc.encode(req))
        return oid

    def new(self, side=1, qty=1, price=0, **kw) -> int:
        oid = self.next_id
        self.next_id += 1
        return self.send(NEW, oid, side, qty, price, **kw)

    def control(self, kind, arg=0):
        now = time.monotonic_ns()
        assert self.ctl.offer(CONTROL_KEY, now,
                              Codec(Control).encode(Control(self.ctl.position, now, kind, arg)))

    def end(self, ring):
        now = time.monotonic_ns()
        assert ring.offer(CONTROL_KEY, now, Codec(Control).encode(
            Control(ring.position, now, ControlKind.SHUTDOWN)))

    def work(self, passes=3):
        for _ in range(passes):
            self.ex.do_work()

    def mark(self, passes=3):
        """Run `passes` passes once the executor may mark to market again (at most once a
        millisecond)."""
        time.sleep(0.002)
        self.work(passes)

    def fill_market(self, price, side=1, qty=1) -> int:
        """A market order, acknowledged, then filled in full by a trade at `price`."""
        oid = self.new(side=side, qty=qty)
        self.work()
        self.trade(price)
        self.work()
        return oid

    def got(self):
        evs = self.reports.read(reports_codec.decode, 100_000)
        self.reports.commit(len(evs))
        return evs

    def stat(self, name):
        return self.ex.ctx.stats.get(name)


def _kinds(reports):
    return [(r.order_id, r.kind, r.reason) for r in reports]


def test_risk_limits_reject_with_a_reason_and_count_it(plant):
    d = Desk(plant)
    d.trade(20_000)
    a = d.new(qty=6)  # more than max_order_qty
    b = d.new(qty=3)  # working 3: the whole max_position
    c = d.new(qty=1)  # 3 working + 1 would be 4 > max_position
    e = d.new(side=-1, qty=2)  # a sell reduces the buy side's exposure: fine
    d.work()
    got = _kinds(d.got())
    assert (a, K.REJECT, R.MAX_ORDER_QTY) in got
    assert (c, K.REJECT, R.MAX_POSITION) in got
    assert {(b, K.ACK, 0), (e, K.ACK, 0)} <= set(got)
    assert (d.stat("risk_reject.MAX_ORDER_QTY"), d.stat("risk_reject.MAX_POSITION")) == (1, 1)
    assert (d.stat("new_in"), d.stat("acks"), d.stat("rejects"), d.stat("fills")) == (4, 2, 2, 0)
    assert d.ex.ctx.stats.snapshot()["histograms"]["tick_to_trade"].count == 0  # tick_seq -1
    d.trade(20_010)  # the next trade fills both market orders, at its price
    d.work()
    fills = [(r.order_id, r.qty, r.price, r.filled, r.leaves) for r in d.got()]
    assert fills == [(b, 3, 20_010, 3, 0), (e, 2, 20_010, 2, 0)]
    assert d.stat("pos.sample.TXF") == 1 and d.stat("filled") == 2


def test_a_market_order_with_no_last_trade_is_rejected(plant):
    d = Desk(plant)
    oid = d.new()
    d.work()
    assert _kinds(d.got()) == [(oid, K.REJECT, R.NO_LAST_PRICE)]


def test_market_orders_fill_at_the_next_trade_after_the_latency(plant):
    d = Desk(plant, latency_us=20_000)
    d.trade(20_000)
    oid = d.new(qty=2)
    t0 = time.monotonic()
    d.work()
    assert d.got() == []  # not at the venue yet: no ack
    assert 0 < d.ex.sleep_for() <= 0.02  # it will wake for the arrival, not sleep a whole park
    d.trade(20_005)  # before the arrival: cannot fill it
    d.work()
    assert d.got() == []
    while not (acked := d.got()):
        assert time.monotonic() - t0 < 5
        d.work(1)
    assert time.monotonic() - t0 >= 0.02
    assert _kinds(acked) == [(oid, K.ACK, 0)]
    d.trade(20_020)
    d.work()
    assert [(r.kind, r.qty, r.price) for r in d.got()] == [(K.FILL, 2, 20_020)]


def test_an_order_goes_to_the_venue_after_the_tick_that_caused_it(plant):
    """Market data is ahead of the orders: an order sent on tick 1500 (of 2,000 waiting) is
    handed to the venue after the venue has seen tick 1500 and before the trades after it,
    so it fills at a trade just after its tick: never at one from before it, nor later than
    it would have at the venue (the catch-up runs in steps of CATCH_UP ticks)."""
    from hftd.stages.executor import CATCH_UP

    d = Desk(plant, max_position=50)
    for k in range(2000):
        d.trade(20_000 + k)
    oid = d.new(tick_seq=1500)
    d.work(1)
    got = d.got()
    assert _kinds(got)[0] == (oid, K.ACK, 0)
    [fill] = [r for r in got if r.kind == K.FILL]
    assert 20_000 + 1500 < fill.price <= 20_000 + 1500 + CATCH_UP
    assert d.ex.ctx.stats.snapshot()["histograms"]["tick_to_trade"].count == 1


def test_an_order_waits_for_its_tick_to_reach_the_market_data(plant):
    """The dispatcher publishes a tick to the strategies before the executor's ring: an
    order can come first, and waits (a few microseconds in the pipeline) for its tick."""
    d = Desk(plant)
    d.trade(20_000)
    oid = d.new(tick_seq=1)  # its tick is not in the market data yet
    d.work()
    assert d.got() == [] and d.stat("new_in") == 0
    d.trade(20_005)  # tick 1
    d.work()
    assert _kinds(d.got()) == [(oid, K.ACK, 0)]  # not filled by its own tick ...
    d.trade(20_007)
    d.work()
    assert [(r.kind, r.price) for r in d.got()] == [(K.FILL, 20_007)]  # ... by the next one


def test_limit_orders_rest_and_fill_partially_at_their_price(plant):
    d = Desk(plant)
    d.trade(20_000)
    oid = d.new(qty=3, price=19_990)
    d.work()
    assert _kinds(d.got()) == [(oid, K.ACK, 0)]
    d.trade(19_995)  # above a buy's limit: no fill
    d.trade(19_985, qty=2)  # through the limit, 2 lots printed: 2 fill at the limit
    d.work()
    assert [(r.kind, r.qty, r.price, r.filled, r.leaves) for r in d.got()] == \
        [(K.FILL, 2, 19_990, 2, 1)]
    d.trade(19_990, qty=5)
    d.work()
    assert [(r.kind, r.qty, r.filled, r.leaves) for r in d.got()] == [(K.FILL, 1, 3, 0)]
    assert d.stat("fills") == 2 and d.stat("filled") == 1 and d.stat("working_orders") == 0
    assert d.stat("pos.sample.TXF") == 3  # at once; the money within a millisecond
    d.mark(1)
    assert d.stat("avg.sample.TXF") == 19_990 * 1_000_000


def test_ioc_and_fok_take_their_first_trade_or_expire(plant):
    d = Desk(plant)
    d.trade(20_000)
    ioc = d.new(qty=3, price=20_000, tif=TimeInForce.IOC)
    fok = d.new(side=-1, qty=3, price=20_000, tif=TimeInForce.FOK)
    d.work()
    d.got()
    d.trade(20_000, qty=2)  # 2 lots: the IOC buy takes 2, the FOK sell (needs 3) nothing
    d.work()
    got = [(r.order_id, r.kind, r.qty, r.leaves) for r in d.got()]
    assert got == [(ioc, K.FILL, 2, 1), (ioc, K.EXPIRED, 1, 0), (fok, K.EXPIRED, 3, 0)]
    assert d.stat("expired") == 2


def test_cancel_and_replace_go_through_the_venue(plant):
    d = Desk(plant)
    d.trade(20_000)
    oid = d.new(qty=2, price=19_990)
    d.work()
    d.send(REPLACE, oid, qty=3, price=19_995)
    d.work()
    rep = [(r.kind, r.qty, r.price, r.leaves) for r in d.got()]
    assert rep == [(K.ACK, 2, 19_990, 2), (K.REPLACED, 3, 19_995, 3)]
    d.send(REPLACE, oid, qty=9, price=19_995)  # above max_order_qty: refused, unchanged
    d.send(REPLACE, oid, qty=3, price=21_000)  # > 3 % from the last trade: refused
    d.send(CANCEL, oid)
    d.send(CANCEL, oid)  # too late: the first one ends it at the venue
    d.send(CANCEL, 999)  # never seen: refused at once, before the venue
    d.work()
    got = [(r.order_id, r.kind, r.reason, r.leaves) for r in d.got()]
    # the executor's own refusals go at once; the venue answers after (it is a pass later
    # even at zero latency: what was sent in a pass arrives when the venue is polled)
    assert got == [(oid, K.CANCEL_REJECTED, R.MAX_ORDER_QTY, 3),
                   (oid, K.CANCEL_REJECTED, R.PRICE_BAND, 3),
                   (999, K.CANCEL_REJECTED, R.UNKNOWN_ORDER, 0),
                   (oid, K.CANCELED, 0, 0),
                   (oid, K.CANCEL_REJECTED, R.UNKNOWN_ORDER, 0)]
    d.send(CANCEL, oid)  # after the executor has seen it end: refused before the venue
    d.work()
    assert _kinds(d.got()) == [(oid, K.CANCEL_REJECTED, R.UNKNOWN_ORDER)]
    assert (d.stat("cancels_in"), d.stat("replaces_in"), d.stat("replaced"), d.stat("canceled"),
            d.stat("cancel_rejects")) == (4, 3, 1, 1, 5)


def test_a_client_id_is_never_taken_twice(plant):
    d = Desk(plant)
    d.trade(20_000)
    d.send(NEW, 5)
    d.send(NEW, 5)  # again
    d.send(NEW, 4)  # below the last one: ids only grow, so it was seen (or skipped)
    d.send(NEW, (1 << ORDER_ID_SHIFT) | 6)  # another strategy's id
    d.send(NEW, 6)
    d.work()
    got = [(r.order_id & ((1 << ORDER_ID_SHIFT) - 1), r.kind, r.reason) for r in d.got()]
    # refusals at once, the venue's acks when it is polled
    assert got == [(5, K.REJECT, R.DUPLICATE_ORDER_ID), (4, K.REJECT, R.DUPLICATE_ORDER_ID),
                   (6, K.REJECT, R.DUPLICATE_ORDER_ID), (5, K.ACK, 0), (6, K.ACK, 0)]
    assert d.stat("risk_reject.DUPLICATE_ORDER_ID") == 3 and d.stat("last_id.sample") == 6


def test_price_band_rate_and_working_order_limits(plant):
    d = Desk(plant, max_position=50, max_working_orders=2, order_rate=1.0, order_burst=3,
             price_band_ticks=50)
    d.trade(20_000)
    far = d.new(price=20_051)  # 51 ticks away
    ok1 = d.new(price=19_960)
    ok2 = d.new(price=19_961)
    many = d.new(price=19_962)  # a third working order
    d.send(CANCEL, ok1)
    d.work()
    ok3 = d.new(price=19_963)  # the cancel freed a slot, but the bucket (3, 2 spent) ...
    ok4 = d.new(price=19_964)  # ... has one token: this is the rate's refusal (or the slot's)
    d.work()
    got = {(r.order_id, r.kind, r.reason) for r in d.got()}
    assert (far, K.REJECT, R.PRICE_BAND) in got
    assert (many, K.REJECT, R.MAX_WORKING_ORDERS) in got
    assert (ok3, K.ACK, 0) in got
    assert (ok4, K.REJECT, R.MAX_WORKING_ORDERS) in got
    d.send(CANCEL, ok2)
    d.work()
    ok5 = d.new(price=19_965)  # a free slot, an empty bucket
    d.work()
    assert (ok5, K.REJECT, R.ORDER_RATE) in {(r.order_id, r.kind, r.reason) for r in d.got()}
    assert d.stat("risk_reject.ORDER_RATE") == 1 and d.stat("risk_reject.PRICE_BAND") == 1


def test_pause_rejects_new_orders_until_resume_and_cancels_still_go(plant):
    d = Desk(plant)
    d.trade(20_000)
    resting = d.new(price=19_990)
    d.work()
    d.control(ControlKind.PAUSE)
    oid = d.new()
    d.send(CANCEL, resting)
    d.work()
    assert _kinds(d.got()) == [(resting, K.ACK, 0), (oid, K.REJECT, R.PAUSED),
                               (resting, K.CANCELED, 0)]
    assert d.stat("paused") == 1
    d.control(ControlKind.RESUME)
    oid = d.fill_market(20_001)
    assert [x.kind for x in d.got()] == [K.ACK, K.FILL]


def test_a_daily_loss_trips_the_kill_switch_and_raises_the_alarm(plant, capsys):
    d = Desk(plant, daily_loss_limit=100_000.0)
    d.trade(20_000)
    d.fill_market(20_000)
    assert [x.kind for x in d.got()] == [K.ACK, K.FILL]
    d.trade(19_600)  # long 1 TXF, 400 points down: -80,000 NTD - tax: above the limit
    d.work()
    d.mark()
    assert d.stat("alarms") == 0 and d.stat("paused") == 0
    d.trade(19_400)  # -120,000: crossed
    d.mark()
    assert d.stat("alarms") == 1 and d.stat("paused") == 1 and d.stat("loss_trips") == 1
    assert d.stat("unrealized.sample.TXF") == -120_000 * 100
    assert "ALARM: daily loss limit crossed" in capsys.readouterr().err
    oid = d.new(side=-1)
    d.work()
    assert _kinds(d.got()) == [(oid, K.REJECT, R.PAUSED)]


def test_positions_and_pnl_are_published_and_survive_a_restart_through_the_state_store(plant):
    """Positions and P&L reach the stats block (status, /metrics); a new executor with a
    blank stats block (the next run of the daemon) takes them and the last client id back
    from the state store."""
    d = Desk(plant)
    d.trade(20_000)
    d.fill_market(20_000, qty=2)
    d.new(side=-1, qty=1)
    d.work()
    d.trade(20_020)
    d.trade(20_030)
    d.work()
    d.mark()
    # bought 2 at 20,000, sold 1 at 20,020: realized 20 points * 200; tax 80 + 80 + 80
    assert d.stat("pos.sample.TXF") == 1 and d.stat("volume.sample.TXF") == 3
    assert d.stat("realized.sample.TXF") == 4_000 * 100
    assert d.stat("tax.sample.TXF") == 240 * 100
    assert d.stat("unrealized.sample.TXF") == 6_000 * 100  # 1 lot, 30 points up
    # a new executor, with a blank stats block as in the next run of the daemon, finds them
    # (and the last client id) in the state store
    q = d.ex.ctx.stats.q_values
    for i in range(len(q)):
        q[i] = 0
    ex2 = Executor(d.p.context("executor"))
    p = ex2.strategies[0].pos[TXF]
    assert (p.qty, p.avg_price, p.realized, p.tax, p.volume) == (1, 20_000.0, 4_000.0, 240.0, 3)
    assert ex2.strategies[0].last_id == 2


def test_working_orders_survive_an_executor_restart_and_fill_afterwards(plant):
    """Kill the executor (drop it unclosed) with orders in every working state: acknowledged
    and resting, partly filled, and sent but not yet arrived at the venue. The new one has
    them in its book and at the venue, and fills them with what trades next; the position
    continues from the old one's, and the last id is still refused."""
    d = Desk(plant, latency_us=2_000, max_position=20)
    d.trade(20_000)
    a = d.new(qty=3, price=19_990)  # will rest, partly filled
    b = d.new(side=-1, qty=2, price=20_050)  # will rest untouched
    d.work()
    time.sleep(0.003)
    d.work()
    d.trade(19_990, qty=1)  # fills 1 of a
    d.work()
    c = d.new(qty=1, price=19_980)  # sent, not arrived when the executor dies
    d.work()
    got = [(r.order_id, r.kind, r.qty) for r in d.got()]
    assert got == [(a, K.ACK, 3), (b, K.ACK, 2), (a, K.FILL, 1)]
    ex2 = Executor(d.p.context("executor"))
    d.ex = ex2
    book = {o.client_id: (o.state, o.filled, o.qty) for o in ex2.book.working()}
    assert book == {a: (2, 1, 3), b: (1, 0, 2), c: (0, 0, 1)}  # PARTIAL, NEW, PENDING_NEW
    assert ex2.strategies[0].pos[TXF].qty == 1 and d.stat("restored_orders") == 3
    assert d.stat("working_orders") == 3
    time.sleep(0.003)
    d.work()  # c arrives: acked
    d.trade(19_970, qty=10)  # through a's and c's prices
    d.trade(20_060, qty=10)  # through b's
    d.work()
    got = [(r.order_id, r.kind, r.qty, r.filled, r.leaves) for r in d.got()]
    assert got == [(c, K.ACK, 1, 0, 1), (a, K.FILL, 2, 3, 0), (c, K.FILL, 1, 1, 0),
                   (b, K.FILL, 2, 2, 0)]
    assert ex2.strategies[0].pos[TXF].qty == 1 + 2 + 1 - 2 and not ex2.book.working()
    assert ex2.state.orders() == []  # every record freed as its order ended
    d.send(NEW, c)  # an id the old executor accepted
    d.work()
    assert _kinds(d.got()) == [(c, K.REJECT, R.DUPLICATE_ORDER_ID)]


def test_the_daily_loss_limit_counts_from_the_start_of_the_trading_day(plant, monkeypatch):
    """Yesterday's loss does not count against today's limit: at the first mark of a new
    trading day each position's net P&L becomes its base."""
    import hftd.stages.executor as ex_mod

    day = [100]
    monkeypatch.setattr(ex_mod, "trading_day", lambda *a: day[0])
    d = Desk(plant, daily_loss_limit=100_000.0, max_position=5)
    d.trade(20_000)
    d.fill_market(20_000, qty=1)
    d.fill_market(19_700, side=-1, qty=1)  # sold at 19,700: -300 points * 200 = -60,000 realised (plus tax)
    d.mark()
    assert d.stat("paused") == 0 and -61_000 * 100 < d.stat("day_pnl") < -60_000 * 100
    day[0] = 101  # a new trading day: the -60,000 is yesterday's
    d.mark()
    assert d.stat("day_pnl") == 0 and d.stat("realized.sample.TXF") == -60_000 * 100
    d.fill_market(19_700, qty=1)
    d.trade(19_500)  # long 1 from 19,700: -40,000 today, -100,000 over two days
    d.mark()
    assert d.stat("paused") == 0 and d.stat("alarms") == 0
    d.trade(19_200)  # -100,000 today (and tax): crossed
    d.mark()
    assert d.stat("paused") == 1 and d.stat("loss_trips") == 1


def test_end_of_stream_cancels_working_orders_then_ends_the_reports(plant):
    d = Desk(plant, latency_us=5_000)
    d.trade(20_000)
    d.new(qty=1, price=19_500)  # a buy below the market rests
    d.end(d.orders)
    t0 = time.monotonic()
    while not d.ex.ctx.stats.get("canceled"):
        assert time.monotonic() - t0 < 5
        d.work(1)
    d.work()
    got = d.got()
    kinds = [x.kind if isinstance(x, OrderReport) else "end" for x in got]
    assert kinds == [K.ACK, K.CANCELED, "end"]
    assert not d.ex.done  # the market data has not ended yet
    d.end(d.md)
    d.work()
    assert d.ex.done


def test_quarantine_cancels_the_strategys_orders_and_discards_its_reports(plant):
    d = Desk(plant)
    d.trade(20_000)
    d.new(price=19_900)
    d.work()
    d.got()
    d.control(ControlKind.QUARANTINE, 0)
    d.work()
    assert d.stat("quarantined") == 1 and d.stat("canceled") == 1
    assert d.stat("working_orders") == 0 and d.got() == []
    assert d.stat("reports_discarded") >= 1


@pytest.mark.parametrize("seed", [1, 2])
def test_random_orders_never_take_a_position_past_its_limit(plant, seed):
    """2,000 random orders (market and limit, both sides, any size, cancels and replaces)
    against a random market: the position never passes max_position, and every refusal is
    counted by reason."""
    rng = random.Random(seed)
    d = Desk(plant, max_order_qty=4, max_position=5, order_rate=0.0, instance_order_rate=0.0,
             max_working_orders=3)
    price = 20_000
    d.trade(price)
    ids = []
    worst = 0
    for _ in range(2000):
        roll = rng.random()
        if roll < 0.7 or not ids:
            side = rng.choice((1, -1))
            p = 0 if rng.random() < 0.5 else price + rng.randint(-20, 20)
            ids.append(d.new(side=side, qty=rng.randint(1, 6), price=p))
        elif roll < 0.85:
            d.send(CANCEL, rng.choice(ids))
        else:
            d.send(REPLACE, rng.choice(ids), qty=rng.randint(1, 6), price=price)
        price += rng.randint(-3, 3)
        d.trade(price, qty=rng.randint(1, 4))
        d.ex.do_work()
        worst = max(worst, abs(d.stat("pos.sample.TXF")))
    d.work()
    assert worst <= 5
    refused = {k: d.stat(f"risk_reject.{k}") for k in ("MAX_ORDER_QTY", "MAX_POSITION",
                                                        "MAX_WORKING_ORDERS")}
    assert all(refused.values()), refused
    assert d.stat("illegal_transitions") == 0
    print(f"\nseed {seed}: worst |position| {worst}; refused {refused}; fills {d.stat('fills')}")


def test_a_new_trading_day_found_at_start_waits_for_prices_to_set_its_bases(plant, monkeypatch):
    """An executor that starts on a new trading day with open positions takes each one's
    base only once its instrument has traded, so the base includes the position's unrealised
    P&L at the market and the day starts at 0, as it does when the day turns while running."""
    import hftd.stages.executor as ex_mod

    day = [200]
    monkeypatch.setattr(ex_mod, "trading_day", lambda *a: day[0])
    d = Desk(plant, max_position=5)
    d.trade(20_000)
    d.fill_market(20_000, qty=1)
    d.trade(20_100)  # long 1 from 20,000: +20,000 unrealised
    d.mark()
    assert d.stat("unrealized.sample.TXF") == 20_000 * 100
    day[0] = 201
    d.ex = Executor(d.p.context("executor"))  # the next start, on the next day: no price yet
    d.mark()
    assert d.ex.state.day == 200  # not rolled over without a price
    d.trade(20_100)
    d.mark()
    d.mark()
    assert d.ex.state.day == 201 and d.stat("day_pnl") == 0
    assert d.stat("pos.sample.TXF") == 1


def test_a_replace_that_raises_the_quantity_is_at_risk_while_on_its_way(plant):
    """Found by the chaos run: with a replace from 1 to 3 lots on its way to the venue (not
    yet carried out), a new order was checked against the old 1 lot; once both filled the
    position was past max_position. The increase is now working quantity from the moment
    the replace is sent, and released when the venue answers."""
    d = Desk(plant, latency_us=2_000, max_position=3)
    d.trade(20_000)
    a = d.new(qty=1, price=19_990)
    d.work()
    time.sleep(0.003)
    d.work()  # acknowledged, resting
    d.send(REPLACE, a, qty=3, price=19_990)
    d.work()  # on its way
    b = d.new(qty=1, price=19_980)  # 3 (the replace) + 1 > 3
    d.work()
    assert (b, K.REJECT, R.MAX_POSITION) in _kinds(d.got())
    time.sleep(0.003)
    d.work()  # REPLACED: the order is 3 lots now, the reservation released
    assert d.ex.book.working_qty(0, TXF, 1) == 3
    d.send(CANCEL, a)
    d.work()
    time.sleep(0.003)
    d.work()
    assert d.ex.book.working_qty(0, TXF, 1) == 0
    c = d.new(qty=3, price=19_980)  # the whole limit is free again
    d.work()
    assert (c, K.REJECT, R.MAX_POSITION) not in _kinds(d.got())


def test_an_order_that_ends_before_its_replace_arrives_releases_what_it_reserved(plant):
    d = Desk(plant, latency_us=2_000, max_position=3)
    d.trade(20_000)
    a = d.new(qty=1, price=19_990)
    d.work()
    time.sleep(0.003)
    d.work()
    d.send(REPLACE, a, qty=3, price=19_990)
    d.work()
    assert d.ex.book.working_qty(0, TXF, 1) == 3  # reserved while on its way
    d.trade(19_990, qty=5)  # fills the 1 lot before the replace arrives
    d.work()
    assert d.ex.book.working_qty(0, TXF, 1) == 0  # ended: nothing at risk any more
    time.sleep(0.003)
    d.work()  # the replace arrives too late
    got = _kinds(d.got())
    assert (a, K.CANCEL_REJECTED, R.UNKNOWN_ORDER) in got
    assert d.ex.book.working_qty(0, TXF, 1) == 0 and d.stat("illegal_transitions") == 0



def test_reports_waiting_for_room_end_a_park_once_the_strategy_has_freed_the_ring(plant):
    """The reports ring was full, so reports wait in the executor's outbox. The strategy then
    read them all before the executor raised its waiting flag (so it did not ring): sleep_for
    must see the room and not park, or the reports would wait a whole park (idle.park_us).
    While the ring stays full, the strategy's next requests (which wait behind its reports)
    do not keep the executor awake: it parks until the strategy rings."""
    d = Desk(plant, top={"rings": {"reports": {"capacity": 4}}})
    d.trade(20_000)
    for _ in range(6):
        d.new(qty=6)  # over max_order_qty: one REJECT report each
    d.work()
    assert len(d.ex.strategies[0].outbox) == 2
    d.new(qty=6)  # waits behind the reports
    assert d.ex.sleep_for() is None
    assert len(d.got()) == 4  # the strategy reads them (no flag up: no ring)
    assert d.ex.sleep_for() == 0.0
    d.work()
    assert len(d.ex.strategies[0].outbox) == 0 and len(d.got()) == 3
