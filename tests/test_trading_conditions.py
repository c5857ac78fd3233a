"""The conditions strategy's rules (hftd/trading/conditions.py), replayed on price paths.

Every worked example of CONDITIONS.md is checked tick by tick (phase and levels after each
trade, and the intents it produced), with its SELL mirror; then the flaws hftd fixes, the
order outcomes, persistence across a restart, and a property test over random paths."""

from __future__ import annotations

import os
import stat

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftd.trading import OrdState, Side
from hftd.trading.conditions import (
    ARMED, DONE, ENTERED, ENTERING, EXITING, WAITING, Condition, ConditionBook,
    ConditionError, ConditionFileError, Intent)

MID = 20000  # the SELL mirror of a BUY price p is 2 * MID - p


def mirror(p: int, side: str) -> int:
    return p if side == "BUY" else 2 * MID - p


def cond(id="c1", side="BUY", trigger=20000, qty=1, instrument="TX", **kw) -> Condition:
    return Condition(id=id, instrument=instrument, action=side, trigger_price=trigger,
                     quantity=qty, **kw)


class Host:
    """The strategy host, simulated: sends every intent with a new client order id and
    (when `fill`) fills it in full at the trade price at once; `delay` fills the orders of
    one trade at the next trade instead (so orders are in flight between trades)."""

    def __init__(self, book: ConditionBook, fill: bool = True, delay: bool = False):
        self.book, self.fill, self.delay = book, fill, delay
        self.next_id = 1000
        self.pending: list[tuple[int, int, int]] = []  # (order id, qty, price) to fill
        self.orders: dict[str, int] = {}  # cond id -> last order id

    def trade(self, price: int, instrument: str = "TX") -> list[Intent]:
        for oid, qty, p in self.pending:
            assert self.book.on_fill(oid, qty, p)
        self.pending = []
        intents = self.book.on_trade(instrument, price)
        for it in intents:
            oid = self.next_id
            self.next_id += 1
            self.book.on_order_sent(it.cond_id, it.purpose, oid)
            self.orders[it.cond_id] = oid
            if self.delay:
                self.pending.append((oid, it.qty, price))
            elif self.fill:
                assert self.book.on_fill(oid, it.qty, price)
        return intents


def entering(qty: int) -> tuple[ConditionBook, Host]:
    """A BUY `c1` of `qty` lots (trigger 20000), armed at 19998, its entry sent at 20015 and
    not yet filled (the host fills nothing by itself)."""
    book = ConditionBook()
    book.add(cond(qty=qty))
    h = Host(book, fill=False)
    h.trade(19998)
    h.trade(20015)
    return book, h


def levels(book, cid="c1"):
    s = book.get(cid).state
    return (s.trigger_price, s.order_price, s.take_profit_price, s.stop_loss_price)


def mirrored_levels(lv, side):
    return tuple(mirror(x, side) for x in lv)


def replay(host, side, steps):
    """Each step: (BUY price, expected phase, expected BUY levels or None, expected intents
    as (purpose, qty) or []); prices and levels are mirrored for SELL."""
    entry_side, exit_side = (Side.BUY, Side.SELL) if side == "BUY" else (Side.SELL, Side.BUY)
    for price, phase, lv, want in steps:
        got = host.trade(mirror(price, side))
        assert [(i.purpose, i.qty) for i in got] == want, f"intents at {price}"
        for i in got:
            assert i.side == (entry_side if i.purpose == "entry" else exit_side)
        s = host.book.get("c1").state
        assert s.phase is phase, f"phase after {price}"
        if lv is not None:
            assert levels(host.book) == mirrored_levels(lv, side), f"levels after {price}"


SIDES = pytest.mark.parametrize("side", ["BUY", "SELL"])

# --- the worked examples ---------------------------------------------------------------


@SIDES
def test_worked_example_without_following(side):
    """BUY trigger 20000, turning 15, TP 90, SL 30: 20010, 19998 (armed), 20005, 20015
    (enter), 20050, 20105 (take profit). SELL: 19990, 20002 (armed), 19995, 19985 (enter),
    19950, 19895 (take profit)."""
    book = ConditionBook()
    book.add(cond(side=side, trigger=mirror(20000, side)))
    base = (20000, 20015, 20105, 19985)
    replay(Host(book), side, [
        (20010, WAITING, base, []),
        (19998, ARMED, base, []),
        (20005, ARMED, base, []),
        (20015, ENTERED, base, [("entry", 1)]),  # the host filled it at once
        (20050, ENTERED, base, []),
        (20105, DONE, base, [("exit", 1)]),
    ])
    s = book.get("c1").state
    assert s.exit_reason == "take profit"
    assert (s.entry_price, s.exit_price) == (mirror(20015, side), mirror(20105, side))
    assert book.on_trade("TX", mirror(19000, side)) == []  # finished: never evaluated again


@SIDES
def test_worked_example_with_following(side):
    """19998 arms and moves the trigger to 19998 (order 20013); 19990 moves it to 19990
    (order 20005); 20005 enters; the take profit is then 20095 (from the moved order price).
    SELL: 20002 arms (order 19987), 20010 moves it (order 19995), 19995 enters."""
    book = ConditionBook()
    book.add(cond(side=side, trigger=mirror(20000, side), is_following=True))
    replay(Host(book), side, [
        (20010, WAITING, (20000, 20015, 20105, 19985), []),
        (19998, ARMED, (19998, 20013, 20103, 19983), []),
        (19990, ARMED, (19990, 20005, 20095, 19975), []),
        (19995, ARMED, (19990, 20005, 20095, 19975), []),  # above the trigger: no move
        (20005, ENTERED, (19990, 20005, 20095, 19975), [("entry", 1)]),
        (19980, ENTERED, (19990, 20005, 20095, 19975), []),  # entered: trailing has stopped
        (20095, DONE, (19990, 20005, 20095, 19975), [("exit", 1)]),
    ])
    assert book.get("c1").state.exit_reason == "take profit"


def test_sell_trailing_with_literal_prices():
    """The SELL mirror spelled out: resistance 20000, trailing up with the price."""
    book = ConditionBook()
    book.add(cond(side="SELL", trigger=20000, is_following=True))
    h = Host(book)
    assert levels(book) == (20000, 19985, 19895, 20015)
    h.trade(20002)
    assert book.get("c1").state.phase is ARMED
    assert levels(book) == (20002, 19987, 19897, 20017)
    h.trade(20010)
    assert levels(book) == (20010, 19995, 19905, 20025)
    h.trade(20004)
    assert levels(book) == (20010, 19995, 19905, 20025)
    assert h.trade(19995) == [Intent("c1", Side.SELL, 1, "entry")]
    assert h.trade(20025) == [Intent("c1", Side.BUY, 1, "exit")]
    assert book.get("c1").state.exit_reason == "stop loss"


@SIDES
@pytest.mark.parametrize("reason,exit_at", [("take profit", 20105), ("stop loss", 19985)])
def test_take_profit_and_stop_loss(side, reason, exit_at):
    book = ConditionBook()
    book.add(cond(side=side, trigger=mirror(20000, side)))
    base = (20000, 20015, 20105, 19985)
    replay(Host(book), side, [
        (19998, ARMED, base, []),
        (20015, ENTERED, base, [("entry", 1)]),
        (20104, ENTERED, base, []),  # one tick short of the take profit
        (19986, ENTERED, base, []),  # one tick short of the stop loss
        (exit_at, DONE, base, [("exit", 1)]),
    ])
    assert book.get("c1").state.exit_reason == reason


@SIDES
def test_turning_point_zero_disables_trailing_and_never_enters_on_the_arming_trade(side):
    book = ConditionBook()
    book.add(cond(side=side, trigger=mirror(20000, side), turning_point=0, is_following=True))
    base = (20000, 20000, 20090, 19970)
    replay(Host(book), side, [
        (20000, ARMED, base, []),  # p <= trigger arms; p >= order would enter: not this trade
        (19990, ARMED, base, []),  # following, but turning_point 0: no trailing
        (20000, ENTERED, base, [("entry", 1)]),
    ])


@SIDES
def test_arming_trade_never_enters_even_far_past_the_order_price(side):
    book = ConditionBook()
    book.add(cond(side=side, trigger=mirror(20000, side)))
    h = Host(book)
    assert h.trade(mirror(19000, side)) == []  # a gap far below: arms only
    assert book.get("c1").state.phase is ARMED
    assert [i.purpose for i in h.trade(mirror(20500, side))] == ["entry"]


def test_a_condition_ignores_other_instruments_trades():
    book = ConditionBook()
    book.add(cond("tx", instrument="TX"))
    book.add(cond("mtx", instrument="MTX"))
    h = Host(book)
    for p in (19998, 20015, 20105):
        h.trade(p, instrument="MTX")
    assert book.get("mtx").state.phase is DONE
    assert book.get("tx").state.phase is WAITING
    assert levels(book, "tx") == (20000, 20015, 20105, 19985)
    book.dirty = False
    assert book.on_trade("TMF", 19000) == [] and not book.dirty


def test_quantity_is_honoured_on_entry_and_exit():
    book = ConditionBook()
    book.add(cond(side="SELL", qty=7))
    h = Host(book)
    h.trade(20001)
    assert h.trade(19985) == [Intent("c1", Side.SELL, 7, "entry")]
    assert book.get("c1").state.entry_qty == 7
    assert h.trade(19895) == [Intent("c1", Side.BUY, 7, "exit")]


def test_conditions_of_one_instrument_are_evaluated_in_add_order():
    book = ConditionBook()
    book.add(cond("b", qty=2))
    book.add(cond("a", qty=3))
    h = Host(book)
    h.trade(19990)
    assert [i.cond_id for i in h.trade(20020)] == ["b", "a"]


# --- the entry and exit orders' fates ---------------------------------------------------


def test_exits_and_trailing_wait_for_the_entry_fill():
    book = ConditionBook()
    book.add(cond(qty=2, is_following=True))
    h = Host(book, fill=False)
    h.trade(19998)
    [entry] = h.trade(20013)
    oid = h.orders["c1"]
    assert book.in_flight() == [("c1", "entry", oid)]
    for p in (20103, 20500, 19983, 19000):  # take profit, stop loss, a new low: nothing
        assert h.trade(p) == []
        assert book.get("c1").state.phase is ENTERING
    assert levels(book) == (19998, 20013, 20103, 19983)
    assert book.on_fill(oid, 1, 20014)
    assert h.trade(20200) == []  # half filled: still entering
    assert book.on_fill(oid, 1, 20016)
    s = book.get("c1").state
    assert (s.phase, s.entry_qty, s.entry_price) == (ENTERED, 2, 20015.0)
    assert book.on_order_ended(oid, OrdState.FILLED) is False  # already counted filled
    assert h.trade(20103) == [Intent("c1", Side.SELL, 2, "exit")]  # the derived level


@pytest.mark.parametrize("how", [OrdState.REJECTED, OrdState.CANCELED, OrdState.EXPIRED,
                                 "send failed"])
def test_an_entry_ended_with_nothing_filled_returns_to_waiting_and_must_rearm(how):
    book = ConditionBook()
    book.add(cond(is_following=True))
    h = Host(book, fill=False)
    h.trade(19990)
    if how == "send failed":
        book.on_trade("TX", 20005)
        book.on_send_failed("c1", "entry")
    else:
        h.trade(20005)
        assert book.on_order_ended(h.orders["c1"], how)
    s = book.get("c1").state
    assert s.phase is WAITING and s.entry_order_id is None
    assert levels(book) == (20000, 20015, 20105, 19985)  # the configured levels again
    assert book.in_flight() == []
    for p in (20005, 20015, 20100):  # no order storm: nothing until it re-arms
        assert h.trade(p) == []
    h.trade(19999)
    assert book.get("c1").state.phase is ARMED
    assert [i.purpose for i in h.trade(20014)] == ["entry"]


def test_a_partly_filled_entry_that_ends_is_entered_with_the_filled_quantity():
    book, h = entering(5)
    oid = h.orders["c1"]
    assert book.on_fill(oid, 2, 20016)
    assert book.on_order_ended(oid, OrdState.CANCELED)
    s = book.get("c1").state
    assert (s.phase, s.entry_qty, s.entry_price) == (ENTERED, 2, 20016.0)
    assert book.on_fill(oid, 1, 20016) is False  # a late report of an ended order: ignored
    assert h.trade(19985) == [Intent("c1", Side.SELL, 2, "exit")]
    assert book.get("c1").state.exit_reason == "stop loss"


def test_a_rejected_exit_returns_to_entered_and_is_retried_on_the_next_trade_only():
    book, h = entering(3)
    book.on_fill(h.orders["c1"], 3, 20015)
    assert h.trade(20105) == [Intent("c1", Side.SELL, 3, "exit")]
    assert h.trade(20110) == []  # exit in flight: nothing more
    assert book.on_order_ended(h.orders["c1"], OrdState.REJECTED)
    s = book.get("c1").state
    assert (s.phase, s.exit_order_id, s.exit_reason) == (ENTERED, None, None)
    # Rejected on every attempt: one retry per trade, never more.
    for p in (20106, 20107, 20108):
        assert h.trade(p) == [Intent("c1", Side.SELL, 3, "exit")]
        assert book.on_order_ended(h.orders["c1"], OrdState.REJECTED)
    assert h.trade(20050) == []  # back between the levels: the exit is re-evaluated, not due
    assert h.trade(19980) == [Intent("c1", Side.SELL, 3, "exit")]
    assert book.get("c1").state.exit_reason == "stop loss"
    assert book.on_fill(h.orders["c1"], 3, 19980)
    assert book.get("c1").state.phase is DONE


def test_a_partly_filled_exit_that_expires_exits_the_rest_next():
    book, h = entering(4)
    book.on_fill(h.orders["c1"], 4, 20015)
    h.trade(20105)
    assert book.on_fill(h.orders["c1"], 1, 20105)
    assert book.on_order_ended(h.orders["c1"], OrdState.EXPIRED)
    s = book.get("c1").state
    assert (s.phase, s.open_qty) == (ENTERED, 3)
    assert h.trade(20105) == [Intent("c1", Side.SELL, 3, "exit")]
    assert book.on_fill(h.orders["c1"], 3, 20104)
    s = book.get("c1").state
    assert (s.phase, s.exit_qty, s.exit_price) == (DONE, 4, (20105 + 3 * 20104) / 4)


def test_order_reports_that_break_the_contract_are_refused():
    book = ConditionBook()
    book.add(cond())
    with pytest.raises(ConditionError, match="no entry to send"):
        book.on_order_sent("c1", "entry", 1)  # no intent was issued
    with pytest.raises(ConditionError, match="no condition with id 'zz'"):
        book.on_order_sent("zz", "entry", 1)
    book.on_trade("TX", 19990)
    book.on_trade("TX", 20015)
    book.on_order_sent("c1", "entry", 1)
    with pytest.raises(ConditionError, match="no entry to send"):
        book.on_order_sent("c1", "entry", 2)  # already sent
    with pytest.raises(ConditionError, match="terminal"):
        book.on_order_ended(1, OrdState.NEW)
    with pytest.raises(ConditionError, match="positive integer qty"):
        book.on_fill(1, 0, 20015)
    assert book.on_fill(99, 1, 20015) is False  # not ours
    assert book.on_order_ended(99, OrdState.REJECTED) is False
    book.add(cond("c2"))
    book.on_trade("TX", 19990)
    book.on_trade("TX", 20015)
    with pytest.raises(ConditionError, match="client order id 1 is already in use by "
                                             "condition 'c1'"):
        book.on_order_sent("c2", "entry", 1)


# --- managing conditions ----------------------------------------------------------------


def test_a_duplicate_id_is_refused_and_the_book_is_unchanged():
    book = ConditionBook()
    book.add(cond("s1", trigger=20000))
    Host(book).trade(19990)
    book.dirty = False
    before = book.list()
    with pytest.raises(ValueError, match="condition id 's1' already exists \\(armed\\)"):
        book.add(cond("s1", trigger=21000))
    assert book.list() == before and not book.dirty


@pytest.mark.parametrize("field,value", [
    ("id", ""), ("id", "x" * 65), ("id", "a b"), ("id", "a\n"),
    ("instrument", ""), ("action", "buy"), ("action", "HOLD"),
    ("trigger_price", 0), ("trigger_price", -5), ("trigger_price", 20000.5),
    ("quantity", 0), ("quantity", -1), ("quantity", True), ("quantity", 10**10),
    ("turning_point", -1), ("take_profit_point", -1), ("stop_loss_point", -30),
    ("stop_loss_point", 1.5), ("is_following", 1),
])
def test_bad_fields_are_refused_with_a_message_naming_the_field(field, value):
    good = dict(id="c1", instrument="TX", action="BUY", trigger_price=20000, quantity=1)
    with pytest.raises(ValueError, match=f"^{field} "):
        Condition(**{**good, field: value})
    # The same through msgspec (how the control socket and config decode a condition).
    with pytest.raises(msgspec.ValidationError, match=field):
        msgspec.convert({**good, field: value}, Condition)


def test_levels_that_could_never_be_reached_are_refused():
    with pytest.raises(ValueError, match="^stop_loss_point 30 puts a level at -15"):
        cond(trigger=10, turning_point=5)
    with pytest.raises(ValueError, match="^take_profit_point 90 puts a level at -5"):
        cond(side="SELL", trigger=100)
    with pytest.raises(ValueError, match="^turning_point 15 puts a level at -5"):
        cond(side="SELL", trigger=10)


def test_unknown_and_missing_fields_are_refused():
    with pytest.raises(msgspec.ValidationError, match="unknown field `qty`"):
        msgspec.convert(dict(id="c1", instrument="TX", action="BUY", trigger_price=20000,
                             quantity=1, qty=2), Condition)
    with pytest.raises(msgspec.ValidationError, match="missing required field `quantity`"):
        msgspec.convert(dict(id="c1", instrument="TX", action="BUY", trigger_price=20000),
                        Condition)


def test_defaults_are_those_of_the_reference():
    c = msgspec.convert(dict(id="c1", instrument="TX", action="SELL", trigger_price=20000,
                             quantity=1), Condition)
    assert (c.turning_point, c.take_profit_point, c.stop_loss_point, c.is_following) == \
        (15, 90, 30, False)
    assert c.side is Side.SELL


def test_remove_refuses_a_condition_with_an_order_or_position_unless_forced():
    book = ConditionBook()
    book.add(cond("w"))
    book.add(cond("e", trigger=30000))
    h = Host(book)
    h.trade(29990)
    h.trade(30015)  # "w" still waiting, "e" entered
    with pytest.raises(ConditionError, match="'e' is entered .*1 lot"):
        book.remove("e")
    assert [x.condition.id for x in book.list()] == ["w", "e"]
    assert book.remove("w").state.phase is WAITING
    assert book.remove("e", force=True).condition.id == "e"
    assert book.list() == [] and h.trade(30200) == []
    with pytest.raises(ConditionError, match="no condition with id 'w'"):
        book.remove("w")


def test_a_done_condition_is_reported_until_removed_and_its_id_stays_taken():
    book = ConditionBook()
    book.add(cond())
    h = Host(book)
    for p in (19998, 20015, 20105):
        h.trade(p)
    [e] = book.list()
    assert e.state.phase is DONE and e.state.exit_reason == "take profit"
    with pytest.raises(ConditionError, match="already exists \\(done\\)"):
        book.add(cond())
    book.remove("c1")
    book.add(cond())
    assert book.get("c1").state.phase is WAITING


def test_list_returns_copies():
    book = ConditionBook()
    book.add(cond())
    book.list()[0].state.trigger_price = 1
    assert levels(book)[0] == 20000


def test_dirty_says_whether_anything_changed():
    book = ConditionBook()
    assert not book.dirty
    book.add(cond(is_following=True))
    assert book.dirty
    book.dirty = False
    book.on_trade("TX", 20010)  # nothing happens
    assert not book.dirty
    book.on_trade("TX", 19998)  # arms
    assert book.dirty
    book.dirty = False
    book.on_trade("TX", 19998)  # armed, at the trigger: nothing moves
    assert not book.dirty
    book.on_trade("TX", 19997)  # trails
    assert book.dirty


# --- persistence ------------------------------------------------------------------------


def _phase_book() -> tuple[ConditionBook, Host]:
    """One condition in each phase, on its own instrument, with 2 lots each."""
    book = ConditionBook()
    names = ["waiting", "armed", "entering", "entered", "exiting", "done"]
    for n in names:
        book.add(cond(n, instrument=n.upper(), qty=2, is_following=True))
    h = Host(book, fill=False)
    for n in names[1:]:
        h.trade(19990, n.upper())
    for n in names[2:]:
        h.trade(20005, n.upper())
    for n in names[3:]:
        book.on_fill(h.orders[n], 1, 20005)
        book.on_fill(h.orders[n], 1, 20007)
    for n in names[4:]:
        h.trade(20095, n.upper())
    book.on_fill(h.orders["done"], 2, 20096)
    assert [e.state.phase for e in book.list()] == [WAITING, ARMED, ENTERING, ENTERED,
                                                     EXITING, DONE]
    return book, h


def test_save_and_load_round_trip_every_phase(tmp_path):
    book, h = _phase_book()
    path = str(tmp_path / "conditions.json")
    book.save(path)
    assert not book.dirty
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["conditions.json"]  # no temporary file left
    again = ConditionBook.load(path)
    assert again.list() == book.list() and not again.dirty
    assert again.in_flight() == book.in_flight() == [
        ("entering", "entry", h.orders["entering"]), ("exiting", "exit", h.orders["exiting"])]
    # Each resumes where it was.
    assert again.on_fill(h.orders["entering"], 2, 20006)
    assert again.get("entering").state.phase is ENTERED
    assert again.on_order_ended(h.orders["exiting"], OrdState.REJECTED)
    assert again.get("exiting").state.phase is ENTERED
    assert [i.cond_id for i in again.on_trade("ARMED", 20005)] == ["armed"]
    assert again.on_trade("WAITING", 19990) == [] and again.get("waiting").state.phase is ARMED
    assert again.on_trade("DONE", 30000) == []
    assert again.dumps() != book.dumps()


PATH = [20010, 19998, 19990, 19995, 20005, 20020, 20050, 19980, 20010, 20095, 20100,
        20120, 19960, 19930, 20030, 20060, 20200, 19800]


def _conditions():
    return [cond("buy", is_following=True, qty=2),
            cond("sell", side="SELL", trigger=20030, turning_point=20, take_profit_point=40,
                 stop_loss_point=100),
            cond("buy2", trigger=19970, turning_point=5, take_profit_point=200, qty=3),
            cond("other", instrument="MTX", trigger=20010)]


def _run(prices, split=None, tmp_path=None):
    book = ConditionBook()
    for c in _conditions():
        book.add(c)
    host = Host(book, delay=True)  # fills arrive one trade late: orders in flight between
    out = []
    for i, p in enumerate(prices):
        if i == split:
            path = str(tmp_path / "c.json")
            book.save(path)
            host.book = book = ConditionBook.load(path)  # the host (executor) survives
            out.append(("in flight at the restart", sorted(book.in_flight())))
        for inst in ("TX", "MTX"):
            out.append((i, inst, host.trade(p, inst)))
    return out, book


def test_a_path_split_by_a_restart_gives_the_same_intents(tmp_path):
    whole, book = _run(PATH)
    intents = [x for x in whole if x[2]]
    assert len(intents) >= 8  # the path exercises entries and exits of every condition
    assert {e.state.phase for e in book.list()} == {DONE}
    in_flight_at_restart = set()
    for split in range(1, len(PATH)):
        got, resumed = _run(PATH, split, tmp_path)
        what, flying = got.pop(split * 2)
        assert what == "in flight at the restart"
        in_flight_at_restart.update(purpose for _, purpose, oid in flying if oid)
        assert got == whole, f"split at {split}"
        assert resumed.list() == book.list()
    assert in_flight_at_restart == {"entry", "exit"}  # restarts with orders in flight too


def test_a_missing_file_is_an_empty_book(tmp_path):
    book = ConditionBook.load(str(tmp_path / "none.json"))
    assert book.list() == [] and not book.dirty


@pytest.mark.parametrize("content,why", [
    (b"", "unusable"),
    (b"{\"version\": 1, \"conditions\": [", "unusable"),
    (b"\x00\xff garbage", "unusable"),
    (b"[]", "Expected `object`"),
    (b"{\"version\": 2, \"conditions\": []}", "version 2, this hftd reads version 1"),
    (b"{\"conditions\": []}", "missing required field `version`"),
    (b"{\"version\": 1, \"conditions\": [], \"extra\": 1}", "unknown field `extra`"),
])
def test_a_corrupt_file_is_an_error_naming_the_file(tmp_path, content, why):
    path = tmp_path / "conditions.json"
    path.write_bytes(content)
    with pytest.raises(ConditionFileError, match=why) as e:
        ConditionBook.load(str(path))
    assert str(path) in str(e.value)


def _edit_saved(tmp_path, edit) -> str:
    book, _ = _phase_book()
    path = str(tmp_path / "conditions.json")
    book.save(path)
    d = msgspec.json.decode(open(path, "rb").read())
    edit(d["conditions"])
    open(path, "wb").write(msgspec.json.encode(d))
    return path


@pytest.mark.parametrize("edit,why", [
    (lambda cs: cs.append(cs[0]), "'waiting' appears twice"),
    (lambda cs: cs[1]["state"].update(order_price=1), "'armed' has levels that do not derive"),
    (lambda cs: cs[0]["state"].update(phase="ENTERED"), "'waiting' is entered with nothing"),
    (lambda cs: cs[5]["state"].update(exit_qty=1), "'done' is done with a position"),
    (lambda cs: cs[4]["state"].update(exit_order_id=cs[2]["state"]["entry_order_id"]),
     "'exiting' uses client order id"),
    (lambda cs: cs[0]["condition"].update(quantity=0), "quantity must be"),
    (lambda cs: cs[0]["state"].update(phase="LOST"), "Invalid enum value 'LOST'"),
])
def test_a_file_whose_states_cannot_be_is_refused(tmp_path, edit, why):
    path = _edit_saved(tmp_path, edit)
    with pytest.raises(ConditionFileError, match=why) as e:
        ConditionBook.load(path)
    assert path in str(e.value)


def test_load_does_not_follow_a_symlink_and_save_replaces_it(tmp_path):
    target = tmp_path / "elsewhere.json"
    ConditionBook().save(str(target))
    link = tmp_path / "conditions.json"
    link.symlink_to(target)
    with pytest.raises(ConditionFileError, match="conditions.json: cannot open: .*symlink"):
        ConditionBook.load(str(link))
    book = ConditionBook()
    book.add(cond())
    book.save(str(link))
    assert not link.is_symlink() and ConditionBook.load(str(link)).list() == book.list()
    assert ConditionBook.load(str(target)).list() == []


def test_a_failed_save_leaves_the_book_dirty(tmp_path):
    book = ConditionBook()
    book.add(cond())
    with pytest.raises(FileNotFoundError):
        book.save(str(tmp_path / "no" / "such" / "dir.json"))
    assert book.dirty


# --- the property -----------------------------------------------------------------------

condition_params = st.fixed_dictionaries(dict(
    side=st.sampled_from(["BUY", "SELL"]),
    trigger=st.integers(19970, 20030),
    qty=st.integers(1, 4),
    turning_point=st.integers(0, 20),
    take_profit_point=st.integers(0, 40),
    stop_loss_point=st.integers(0, 40),
    is_following=st.booleans(),
))

OUTCOMES = ["fill", "fill in parts", "partial then cancel", "reject", "expire"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(params=st.lists(condition_params, min_size=1, max_size=3), data=st.data())
def test_property_one_order_in_flight_no_exit_before_entry_done_only_after_exit_fill(
        params, data):
    book = ConditionBook()
    for i, p in enumerate(params):
        book.add(cond(f"c{i}", **p))
    ids = [f"c{i}" for i in range(len(params))]
    live: dict[str, tuple[int, str, int]] = {}  # cond -> (order id, purpose, qty left)
    position = dict.fromkeys(ids, 0)  # lots held, from the fills the host reported
    entry_over = dict.fromkeys(ids, False)  # the entry order has ended or filled
    next_id, price = 1, 20000
    for _ in range(data.draw(st.integers(10, 80), label="steps")):
        phases_before = {c: book.get(c).state.phase for c in ids}
        op = data.draw(st.sampled_from(["trade", "trade", "trade", "resolve", "restart"]))
        exit_filled = set()
        if op == "trade":
            price += data.draw(st.integers(-25, 25))
            for it in book.on_trade("TX", price):
                c = it.cond_id
                assert c not in live, "a second order while one is in flight"
                if it.purpose == "exit":
                    assert entry_over[c] and position[c] > 0, "an exit before the entry filled"
                    assert it.qty == position[c]
                else:
                    assert position[c] == 0 and it.qty == book.get(c).condition.quantity
                    entry_over[c] = False
                if data.draw(st.integers(0, 9)) == 0:
                    book.on_send_failed(c, it.purpose)
                    if it.purpose == "entry":
                        entry_over[c] = True
                    continue
                book.on_order_sent(c, it.purpose, next_id)
                live[c] = (next_id, it.purpose, it.qty)
                next_id += 1
        elif op == "resolve" and live:
            c = data.draw(st.sampled_from(sorted(live)))
            oid, purpose, left = live.pop(c)
            how = data.draw(st.sampled_from(OUTCOMES))
            sign = 1 if purpose == "entry" else -1
            if how in ("fill", "fill in parts"):
                while left:
                    q = left if how == "fill" else data.draw(st.integers(1, left))
                    assert book.on_fill(oid, q, price)
                    left -= q
                    position[c] += sign * q
                book.on_order_ended(oid, OrdState.FILLED)  # too late to matter: ignored
                if purpose == "exit":
                    exit_filled.add(c)
            else:
                if how == "partial then cancel" and left > 1:
                    q = data.draw(st.integers(1, left - 1))
                    assert book.on_fill(oid, q, price)
                    position[c] += sign * q
                state = {"reject": OrdState.REJECTED, "expire": OrdState.EXPIRED}.get(
                    how, OrdState.CANCELED)
                assert book.on_order_ended(oid, state)
            if purpose == "entry":
                entry_over[c] = True
        elif op == "restart":
            book = ConditionBook.loads(book.dumps())
        for c in ids:
            s = book.get(c).state
            assert (s.phase in (ENTERING, EXITING)) == (c in live), "in flight iff phase says"
            assert s.entry_qty - s.exit_qty == position[c] or s.phase is DONE
            if s.phase is DONE:
                assert position[c] == 0
                if phases_before[c] is not DONE:
                    assert c in exit_filled, "DONE without an exit fill"
            if s.phase in (WAITING, ARMED):
                assert position[c] == 0
