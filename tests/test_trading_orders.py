"""The order state machine: every transition of the table in hftd/trading/orders.py, legal
and illegal, and a property test that random order/report sequences (a plausible model
venue mixed with garbage) never corrupt the book: each report is applied or counted, the
quantities add up, and every order ends in exactly one terminal state."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hftd.events import RejectReason, ReportKind
from hftd.stats import Value
from hftd.trading import TERMINAL, OrdState, OrdType, Side, TimeInForce
from hftd.trading.orders import IdSource, Order, OrderBook

PN, NEW, PF = OrdState.PENDING_NEW, OrdState.NEW, OrdState.PARTIALLY_FILLED
FILLED, CANCELED, REJECTED, EXPIRED = (OrdState.FILLED, OrdState.CANCELED, OrdState.REJECTED,
                                       OrdState.EXPIRED)
QTY = 5


def book_with(state: OrdState, price: int = 100) -> tuple[OrderBook, Order]:
    """A book holding one limit order (id 1, buy QTY at `price`) brought to `state`."""
    b = OrderBook()
    o = Order(1, strategy=0, instrument=0, side=Side.BUY, qty=QTY, price=price)
    assert b.add(o)
    steps = {PN: [], NEW: [b.on_ack], PF: [b.on_ack, lambda i: b.on_fill(i, 2, price)],
             FILLED: [b.on_ack, lambda i: b.on_fill(i, QTY, price)],
             CANCELED: [b.on_ack, b.on_cancel], REJECTED: [b.on_reject],
             EXPIRED: [b.on_ack, b.on_expire]}[state]
    for step in steps:
        assert step(1)
    assert o.state == state and b.illegal == 0
    return b, o


# --- the transition table, cell by cell ---------------------------------------------------
EVENTS = {
    "ack": lambda b: b.on_ack(1),
    "reject": lambda b: b.on_reject(1, RejectReason.MAX_POSITION),
    "fill_part": lambda b: b.on_fill(1, 1, 101),
    "fill_rest": lambda b: b.on_fill(1, b.get(1).qty - b.get(1).filled, 101),
    "cancel": lambda b: b.on_cancel(1),
    "expire": lambda b: b.on_expire(1),
    "replace": lambda b: b.on_replace(1, QTY + 3, 99),
}
# (event, state) -> state after; absent: illegal, not applied
TABLE = {
    ("ack", PN): NEW,
    ("reject", PN): REJECTED,
    **{("fill_part", s): PF for s in (PN, NEW, PF)},
    **{("fill_rest", s): FILLED for s in (PN, NEW, PF)},
    **{("cancel", s): CANCELED for s in (PN, NEW, PF)},
    **{("expire", s): EXPIRED for s in (PN, NEW, PF)},
    ("replace", PN): NEW, ("replace", NEW): NEW, ("replace", PF): PF,
}
STATES = [PN, NEW, PF, FILLED, CANCELED, REJECTED, EXPIRED]


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
@pytest.mark.parametrize("event", list(EVENTS))
def test_each_cell_of_the_transition_table(event, state):
    b, o = book_with(state)
    before = (o.state, o.qty, o.filled, o.price, b.working_qty(0, 0, Side.BUY))
    applied = EVENTS[event](b)
    want = TABLE.get((event, state))
    assert applied == (want is not None)
    if want is None:  # illegal: nothing changed, one count of a named kind
        assert (o.state, o.qty, o.filled, o.price, b.working_qty(0, 0, Side.BUY)) == before
        assert b.illegal == 1 and sum(b.illegal_by_kind.values()) == 1
        kind = next(iter(b.illegal_by_kind))
        assert kind.startswith(event.split("_")[0] + ":")
        assert kind.endswith(":terminal") == (state in TERMINAL)
    else:
        assert o.state == want and b.illegal == 0
        assert b.working_qty(0, 0, Side.BUY) == o.leaves
        assert b.working_orders(0) == (1 if o.is_working else 0)


@pytest.mark.parametrize("state", STATES, ids=lambda s: s.name)
def test_a_cancel_reject_changes_nothing_and_is_legal_for_any_known_order(state):
    b, o = book_with(state)
    before = (o.state, o.leaves, b.working_qty(0, 0, Side.BUY))
    assert b.on_cancel_reject(1)
    assert (o.state, o.leaves, b.working_qty(0, 0, Side.BUY)) == before and b.illegal == 0


def test_a_fill_on_a_pending_order_implies_the_ack():
    b, o = book_with(PN)
    assert b.on_fill(1, 2, 100) and o.state == PF and o.leaves == QTY - 2
    assert not b.on_ack(1) and b.illegal_by_kind == {"ack:not_pending": 1}


@pytest.mark.parametrize("qty, price, kind", [(QTY - 1, 100, "fill:overfill"),
                                              (0, 100, "fill:bad_qty"),
                                              (-1, 100, "fill:bad_qty"),
                                              (1, 0, "fill:bad_price")])
def test_an_illegal_fill_is_counted_and_not_applied(qty, price, kind):
    b, o = book_with(PF)  # 2 of 5 filled: leaves 3
    assert not b.on_fill(1, qty, price)
    assert (o.filled, o.leaves, o.state, b.working_qty(0, 0, Side.BUY)) == (2, 3, PF, 3)
    assert b.illegal_by_kind == {kind: 1}


def test_fills_keep_an_exact_vwap_and_end_filled_at_qty():
    b, o = book_with(NEW)
    assert b.on_fill(1, 1, 100) and b.on_fill(1, 3, 103) and o.avg_fill_price == 409 / 4
    assert b.on_fill(1, 1, 110) and o.state == FILLED and o.avg_fill_price == 519 / 5
    assert (o.leaves, b.working_qty(0, 0, Side.BUY), b.working_orders(0)) == (0, 0, 0)


@pytest.mark.parametrize("new_qty, kind", [(2, "replace:below_filled"),
                                           (1, "replace:below_filled"),
                                           (0, "replace:below_filled")])
def test_a_replace_must_leave_something_to_fill(new_qty, kind):
    b, o = book_with(PF)  # 2 filled
    assert not b.on_replace(1, new_qty, 100) and b.illegal_by_kind == {kind: 1}
    assert (o.qty, o.leaves) == (QTY, 3)


def test_a_replace_moves_leaves_and_price_and_the_working_qty():
    b, o = book_with(PF)  # 2 of 5 filled
    assert b.on_replace(1, 3, 95) and (o.qty, o.price, o.leaves, o.state) == (3, 95, 1, PF)
    assert b.working_qty(0, 0, Side.BUY) == 1
    assert b.on_replace(1, 12, 96) and b.working_qty(0, 0, Side.BUY) == 10
    assert not b.on_replace(1, 12, 0) and b.illegal_by_kind == {"replace:bad_price": 1}


def test_a_market_order_has_price_zero_and_keeps_it():
    b = OrderBook()
    o = Order(1, 0, 0, Side.SELL, 2)
    assert o.ord_type == OrdType.MARKET and b.add(o)
    assert not b.on_replace(1, 3, 100) and b.on_replace(1, 3, 0)
    assert b.working_qty(0, 0, Side.SELL) == 3 and b.working_qty(0, 0, Side.BUY) == 0


@pytest.mark.parametrize("order, kind", [
    (Order(1, 0, 0, Side.BUY, 0, 100), "add:bad_qty"),
    (Order(1, 0, 0, Side.BUY, 1, 0, OrdType.LIMIT), "add:bad_price"),
    (Order(1, 0, 0, Side.BUY, 1, -5), "add:bad_price"),
    (Order(1, 0, 0, Side.BUY, 1, 100, OrdType.MARKET), "add:bad_price"),
])
def test_an_invalid_order_is_not_added(order, kind):
    b = OrderBook()
    assert not b.add(order) and len(b) == 0 and b.illegal_by_kind == {kind: 1}
    assert b.working_orders(0) == 0 and b.working_qty(0, 0, Side.BUY) == 0


def test_an_id_is_added_once():
    b, o = book_with(NEW)
    assert not b.add(Order(1, 0, 0, Side.BUY, 1, 100)) and not b.add(o)
    assert b.illegal_by_kind == {"add:duplicate_order": 2} and b.working_qty(0, 0, 1) == QTY


@pytest.mark.parametrize("kind", list(ReportKind), ids=lambda k: k.name)
def test_a_report_about_an_unknown_id_is_illegal(kind):
    b = OrderBook()
    assert not b.apply(kind, 1, qty=1, price=100) and b.illegal == 1
    [name] = b.illegal_by_kind
    assert name.endswith(":unknown_order")


def test_apply_dispatches_report_kinds_and_counts_unknown_ones():
    b = OrderBook()
    b.add(Order(7, 0, 0, Side.BUY, 4, 100))
    assert b.apply(ReportKind.ACK, 7)
    assert b.apply(ReportKind.REPLACED, 7, qty=6, price=101) and b.get(7).qty == 6
    assert b.apply(ReportKind.FILL, 7, qty=2, price=101) and b.get(7).filled == 2
    assert b.apply(ReportKind.CANCEL_REJECTED, 7)
    assert not b.apply(99, 7) and b.illegal_by_kind == {"report:unknown_kind": 1}
    assert b.apply(ReportKind.CANCELED, 7) and b.get(7).state == CANCELED
    b.add(Order(8, 0, 0, Side.BUY, 1, 100))
    assert b.apply(ReportKind.REJECT, 8, reason=RejectReason.PRICE_BAND)
    assert b.get(8).reason == RejectReason.PRICE_BAND
    b.add(Order(9, 0, 0, Side.BUY, 1, 100, tif=TimeInForce.IOC))
    assert b.apply(ReportKind.EXPIRED, 9) and b.get(9).state == EXPIRED


def test_working_indexes_are_per_strategy_instrument_and_side():
    b = OrderBook()
    b.add(Order(1, 0, 0, Side.BUY, 3, 100))
    b.add(Order(2, 0, 0, Side.BUY, 2, 99))
    b.add(Order(3, 0, 1, Side.SELL, 4, 50))
    b.add(Order(4, 1, 0, Side.SELL, 1, 101))
    assert [b.working_qty(0, 0, 1), b.working_qty(0, 0, -1), b.working_qty(0, 1, -1),
            b.working_qty(1, 0, -1), b.working_qty(2, 0, 1)] == [5, 0, 4, 1, 0]
    assert [b.working_orders(0), b.working_orders(1), b.working_orders(2)] == [3, 1, 0]
    b.on_reject(3)
    b.on_fill(1, 3, 100)
    assert [b.working_qty(0, 0, 1), b.working_qty(0, 1, -1), b.working_orders(0)] == [2, 0, 1]
    assert [o.client_id for o in b.working()] == [2, 4] and b.n_working == 2


def test_forget_terminal_keeps_the_most_recently_ended_and_all_working():
    b = OrderBook()
    for i in range(1, 11):
        b.add(Order(i, 0, 0, Side.BUY, 1, 100))
    for i in (3, 1, 7, 5):  # end in this order
        b.on_cancel(i)
    assert b.forget_terminal(keep_last=2) == 2
    assert 3 not in b and 1 not in b and 7 in b and 5 in b and len(b) == 8
    assert b.forget_terminal() == 2 and len(b) == 6 == b.n_working
    assert not b.on_fill(3, 1, 100) and b.illegal_by_kind == {"fill:unknown_order": 1}


def test_a_book_that_forgets_stays_flat_over_many_orders():
    b, ids = OrderBook(), IdSource()
    for _ in range(20_000):
        i = ids.next()
        b.add(Order(i, 0, 0, Side.BUY, 2, 100))
        b.on_ack(i)
        b.on_fill(i, 2, 100)
        b.forget_terminal(keep_last=100)
    assert len(b) == 100 and len(b._ended) == 100 and b.illegal == 0


def test_ids_start_at_one_never_repeat_and_continue_from_the_store():
    mem = IdSource()
    assert [mem.next() for _ in range(3)] == [1, 2, 3] and mem.last == 3
    arr = np.zeros(4, np.int64)  # say, a word of a shared-memory segment
    a = IdSource(arr, 2)
    assert [a.next(), a.next()] == [1, 2] and arr[2] == 2
    again = IdSource(arr, 2)  # a restarted executor re-attaches: it continues
    assert again.next() == 3 and arr.tolist() == [0, 0, 3, 0]
    cells = np.zeros(2, np.int64)
    v = IdSource(Value(cells, 1), None)  # a stats-block value
    assert [v.next(), v.next()] == [1, 2] and cells[1] == 2
    assert IdSource(Value(cells, 1), None).next() == 3
    with pytest.raises(ValueError, match="-1"):
        IdSource([-1])


def test_leaves_and_is_working():
    b, o = book_with(PF)
    assert (o.leaves, o.is_working) == (3, True)
    b.on_cancel(1)
    assert (o.leaves, o.is_working, o.filled) == (0, False, 2)
    assert "CANCELED" in repr(o)


# --- property: random order and report sequences -------------------------------------------
class Model:
    """The test's own account of one order, driven by the reference table below."""

    def __init__(self, o: Order):
        self.side, self.strategy, self.instrument = o.side, o.strategy, o.instrument
        self.qty, self.market = o.qty, o.ord_type == OrdType.MARKET
        self.state, self.filled, self.value = PN, 0, 0

    @property
    def leaves(self):
        return self.qty - self.filled if self.state not in TERMINAL else 0


def reference(m: Model | None, kind: int, qty: int, price: int) -> OrdState | None:
    """Next state by the documented table (None: illegal), written as plainly as possible."""
    if kind == ReportKind.CANCEL_REJECTED:
        return None if m is None else m.state
    if m is None or m.state in TERMINAL or kind not in set(ReportKind):
        return None
    if kind == ReportKind.ACK:
        return NEW if m.state == PN else None
    if kind == ReportKind.REJECT:
        return REJECTED if m.state == PN else None
    if kind == ReportKind.CANCELED:
        return CANCELED
    if kind == ReportKind.EXPIRED:
        return EXPIRED
    if kind == ReportKind.FILL:
        if not 0 < qty <= m.qty - m.filled or price <= 0:
            return None
        return FILLED if m.filled + qty == m.qty else PF
    if kind == ReportKind.REPLACED:
        if qty <= m.filled or (price != 0 if m.market else price <= 0):
            return None
        return PF if m.filled else NEW
    raise AssertionError(kind)


def apply_model(m: Model, kind: int, qty: int, price: int, new_state: OrdState) -> None:
    if kind == ReportKind.FILL:
        m.filled += qty
        m.value += qty * price
    elif kind == ReportKind.REPLACED:
        m.qty = qty
    m.state = new_state


PLAUSIBLE = [ReportKind.ACK, ReportKind.REJECT, ReportKind.FILL, ReportKind.FILL, ReportKind.FILL,
             ReportKind.CANCELED, ReportKind.EXPIRED, ReportKind.REPLACED,
             ReportKind.CANCEL_REJECTED]
new_order = st.tuples(st.just("new"), st.integers(0, 2), st.integers(0, 1),
                      st.sampled_from([Side.BUY, Side.SELL]), st.integers(1, 10), st.booleans(),
                      st.sampled_from(list(TimeInForce)))
venue_event = st.tuples(st.just("venue"), st.integers(0, 10_000), st.sampled_from(PLAUSIBLE),
                        st.integers(0, 10_000))
garbage = st.tuples(st.just("garbage"), st.sampled_from(list(ReportKind) + [0, 8, 99]),
                    st.integers(-1, 40), st.integers(-3, 15), st.integers(-2, 120))
duplicate = st.tuples(st.just("duplicate"), st.integers(0, 10_000))
# mostly plausible traffic, so orders live long lives; garbage and duplicates throughout
ops = st.lists(st.one_of(new_order, venue_event, venue_event, venue_event, garbage, duplicate),
               min_size=20, max_size=200)


def check_indexes(book: OrderBook, models: dict[int, Model]) -> None:
    qty, count = {}, {}
    for m in models.values():
        key = (m.strategy, m.instrument, m.side)
        qty[key] = qty.get(key, 0) + m.leaves
        count[m.strategy] = count.get(m.strategy, 0) + (m.state not in TERMINAL)
    for (s, i, side), n in qty.items():
        assert book.working_qty(s, i, side) == n
    for s, n in count.items():
        assert book.working_orders(s) == n
    assert book.n_working == sum(count.values())


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops)
def test_random_reports_never_corrupt_the_book(ops):
    book, ids, models = OrderBook(), IdSource(), {}
    events = applied = 0
    for op in ops:
        if op[0] == "new":
            _, strategy, instrument, side, qty, limit, tif = op
            o = Order(ids.next(), strategy, instrument, side, qty, 100 if limit else 0, tif=tif)
            ok = book.add(o)
            assert ok
            models[o.client_id] = Model(o)
        elif op[0] == "duplicate":  # an id used before: refused, counted
            if not models:
                continue
            cid = list(models)[op[1] % len(models)]
            ok = book.add(Order(cid, 0, 0, Side.BUY, 1, 100))
            assert not ok
        else:
            if op[0] == "venue":  # plausible: about a working order, sized to (just) fit it
                working = [i for i, m in models.items() if m.state not in TERMINAL]
                if not working:
                    continue
                _, pick, kind, r = op
                cid = working[pick % len(working)]
                m = models[cid]
                if kind == ReportKind.FILL:  # now and then 0 or one lot too many, or price 0
                    qty, price = r % (m.leaves + 2), 90 + r % 21 if r % 13 else 0
                elif kind == ReportKind.REPLACED:  # now and then down to the filled qty
                    qty, price = m.filled + r % 8, 0 if m.market else 95 + r % 11
                else:
                    qty, price = 0, 0
            else:
                _, kind, cid, qty, price = op
            m = models.get(cid)
            want = reference(m, kind, qty, price)
            ok = book.apply(kind, cid, qty, price)
            assert ok == (want is not None), (kind, cid, qty, price)
            if ok:
                apply_model(m, kind, qty, price, want)
        events += 1
        applied += ok
        assert applied + book.illegal == events
        check_indexes(book, models)

    # the venue finishes every order: what is still working is canceled
    for cid, m in models.items():
        if m.state not in TERMINAL:
            assert book.on_cancel(cid)
            m.state = CANCELED
    check_indexes(book, models)
    assert book.n_working == 0 and book.working() == []
    for cid, m in models.items():
        o = book.get(cid)
        assert o.state in TERMINAL and o.state == m.state
        assert 0 <= o.filled <= o.qty and o.filled == m.filled and o.leaves == 0
        assert (o.filled == o.qty) == (o.state == FILLED)
        assert o.avg_fill_price == (m.value / m.filled if m.filled else 0.0)
        assert o.state != REJECTED or o.filled == 0
    assert sum(book.illegal_by_kind.values()) == book.illegal
    # what the examples reached (pytest --hypothesis-show-statistics)
    for m in models.values():
        if 0 < m.filled < m.qty:
            event(f"ended {m.state.name} partly filled")
        else:
            event(f"ended {m.state.name}")
    event(f"illegal: {min(book.illegal, 10)}{'+' if book.illegal >= 10 else ''}")
    book.forget_terminal(keep_last=3)
    assert len(book) == min(3, len(models))
