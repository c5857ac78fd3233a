"""The PFCF venue (hftd/venues/pfcf.py) and what it shares with the feed (hftd/pfcf.py),
tested at unitrade's callback boundary with the package's real objects (DOrderObject,
DReplaceObject, DOrderReply, DMatchReply, DOrderResponse, DQueryReplyResponse,
DQueryMatchResponse) and a stand-in for the network session (tests/pfcf_standin.py):
orders out as the exact DOrderObject fields; replies and matches in as the right answers;
a disconnect of the order path as an alarm; the start-up reconciliation with the day's
replies and matches; credentials that never show."""

from __future__ import annotations

import json
import os
import stat

import pytest

pytest.importorskip("unitrade")

from hypothesis import given, strategies as st  # noqa: E402

from hftd import pfcf  # noqa: E402
from hftd.config import Config  # noqa: E402
from hftd.events import RejectReason, ReportKind as K  # noqa: E402
from hftd.venues.pfcf import (PfcfVenue, client_id_of, instance_letter,  # noqa: E402
                              note_for)

from pfcf_standin import (ACCOUNT, CA_PASSWORD, PASSWORD, USERID, Session)  # noqa: E402

LIMIT, MARKET = 1, 0
ROD, IOC, FOK = 0, 1, 2
BUY, SELL = 1, -1
NONE = RejectReason.NONE
REFUSED = RejectReason.VENUE_REFUSED


def cid(n, owner=0):
    return (owner << 40) | n


@pytest.fixture
def venue(tmp_path):
    """A venue on the stand-in: instruments 0 (TXF, tick 1) and 3 (TE as EXF, tick 0.05)."""
    cfg = Config()
    api = Session()
    codes = {"TXFL6": 0, "EXFL6": 3}
    logged = []
    v = PfcfVenue(cfg, api, ACCOUNT, codes, log=logged.append,
                  journal=str(tmp_path / "journal.log"))
    v.logged = logged
    return v, api.dtrade


# --- orders out ----------------------------------------------------------------------------
def test_a_new_order_goes_out_as_the_exact_DOrderObject(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    v.submit(0, cid(2), 3, SELL, 1, LIMIT, IOC, 1001, 0)  # 1001 ticks of 0.05 = 50.05
    v.submit(1, cid(3, owner=1), 0, SELL, 3, MARKET, FOK, 0, 0)
    v.submit(0, cid(4), 0, BUY, 1, MARKET, ROD, 0, 0)  # TAIFEX: a market order is IOC/FOK
    letter = instance_letter("default")
    got = [(o.actno, o.subactno, o.productid, o.bs, o.ordertype, o.price, o.orderqty,
            o.ordercondition, o.opencloseflag, o.dtrade, o.note) for o in t.orders]
    assert got == [
        (ACCOUNT, "", "TXFL6", "B", "L", 23000.0, 2, "R", "", "N", note_for(letter, cid(1))),
        (ACCOUNT, "", "EXFL6", "S", "L", 50.05, 1, "I", "", "N", note_for(letter, cid(2))),
        (ACCOUNT, "", "TXFL6", "S", "M", 0, 3, "F", "", "N", note_for(letter, cid(3, 1))),
        (ACCOUNT, "", "TXFL6", "B", "M", 0, 1, "I", "", "N", note_for(letter, cid(4))),
    ]
    assert all(len(o.note) <= 10 and o.note.isascii() for o in t.orders)
    assert v.poll(0) == ()  # nothing is answered before PFCF answers


def test_an_order_pfcf_refuses_at_once_is_rejected_and_the_reason_logged(venue):
    v, t = venue
    t.refuse = "MSG014"
    v.submit(0, cid(1), 0, BUY, 1, LIMIT, ROD, 23000, 0)
    assert v.poll(0) == [(0, cid(1), K.REJECT, 1, 23000, REFUSED)]
    assert "MSG014" in v.logged[-1] and v.counts["refused"] == 1


def test_an_order_for_an_instrument_without_a_pfcf_code_is_rejected_not_sent(venue):
    v, t = venue
    v.submit(0, cid(1), 1, BUY, 1, LIMIT, ROD, 100, 0)
    assert t.orders == [] and v.poll(0)[0][2:] == (K.REJECT, 1, 100, REFUSED)


# --- answers in ----------------------------------------------------------------------------
def test_replies_and_matches_become_ack_fills_and_a_cancel(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 3, LIMIT, ROD, 23000, 0)
    t.ack(0)
    assert v.poll(0) == [(0, cid(1), K.ACK, 3, 23000, NONE)]
    t.fill(0, 1, 23000.0)
    t.fill(0, 1, 22999.0)
    assert v.poll(0) == [(0, cid(1), K.FILL, 1, 23000, NONE),
                         (0, cid(1), K.FILL, 1, 22999, NONE)]
    v.cancel(0, cid(1), 0)
    (r,) = t.replaces
    assert (r.replacetype, r.actno, r.orderno, r.note) == ("4", ACCOUNT, "o0000",
                                                           t.orders[0].note)
    t.cancelled(0)
    assert v.poll(0) == [(0, cid(1), K.CANCELED, 1, 23000, NONE)]
    assert v.working(0) == []


def test_an_ioc_rest_deleted_by_pfcf_expires_only_after_the_matches_its_reply_counted(venue):
    v, t = venue
    v.submit(0, cid(1), 0, SELL, 5, LIMIT, IOC, 23000, 0)
    t.ack(0)
    # PFCF's deletion reply counts 2 matched lots whose match messages come after it
    r = t.by_index[0]
    r.matchqty = 2
    t.cancelled(0)
    assert v.poll(0) == [(0, cid(1), K.ACK, 5, 23000, NONE)]  # the end waits
    r.matchqty = 0
    t.fill(0, 2, 23001.0, reply=False)
    assert v.poll(0) == [(0, cid(1), K.FILL, 2, 23001, NONE),
                         (0, cid(1), K.EXPIRED, 3, 23000, NONE)]


def test_a_full_fill_ends_the_order(venue):
    v, t = venue
    v.submit(0, cid(1), 3, BUY, 2, LIMIT, FOK, 1000, 0)
    t.ack(0)
    t.fill(0, 2, 50.0)
    assert v.poll(0) == [(0, cid(1), K.ACK, 2, 1000, NONE), (0, cid(1), K.FILL, 2, 1000, NONE)]
    assert v.working(0) == []


def test_a_match_before_the_reply_that_numbers_the_order_is_applied_once_it_comes(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    r = t.by_index[0]
    r.orderno = "o0000"
    t.fill(0, 2, 23000.0, reply=False)  # the match overtakes the order's reply
    assert v.poll(0) == () and v.counts["unmatched"] == 1
    t.ack(0)
    assert v.poll(0) == [(0, cid(1), K.ACK, 2, 23000, NONE), (0, cid(1), K.FILL, 2, 23000, NONE)]
    assert v.counts["unmatched"] == 0 and v.working(0) == []


def test_a_reply_of_none_from_unitrades_error_path_is_counted_not_a_crash(venue):
    v, t = venue
    t.on_reply(None)
    t.on_match(None)
    assert v.poll(0) == () and v.counts["errors"] == 2


def test_a_match_seen_twice_fills_once(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    t.ack(0)
    t.fill(0, 1, 23000.0)
    t.on_match(t.matches[-1])  # PFCF sends it again (after a reconnect, say)
    assert [e[2] for e in v.poll(0)] == [K.ACK, K.FILL]


def test_an_error_reply_rejects_an_order_not_yet_acknowledged(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 1, LIMIT, ROD, 99999, 0)
    t.reject(0)
    assert v.poll(0) == [(0, cid(1), K.REJECT, 1, 99999, REFUSED)]
    assert "price out of range" in v.logged[-1]


def test_an_error_reply_after_the_ack_refuses_the_cancel_in_flight(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 1, LIMIT, ROD, 23000, 0)
    t.ack(0)
    v.cancel(0, cid(1), 0)
    t.refuse_request(0)
    assert v.poll(0) == [(0, cid(1), K.ACK, 1, 23000, NONE),
                         (0, cid(1), K.CANCEL_REJECTED, 0, 0, REFUSED)]
    assert v.working(0) == [cid(1)]


def test_a_cancel_before_pfcf_numbers_the_order_is_sent_once_it_does(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 1, LIMIT, ROD, 23000, 0)
    v.cancel(0, cid(1), 0)
    assert t.replaces == []
    t.ack(0)
    v.poll(0)
    assert [(r.replacetype, r.orderno) for r in t.replaces] == [("4", "o0000")]


def test_a_replace_changes_the_price_then_reduces_the_quantity_and_is_answered_once(venue):
    v, t = venue
    v.submit(0, cid(1), 3, BUY, 5, LIMIT, ROD, 1000, 0)
    t.ack(0)
    v.poll(0)
    v.replace(0, cid(1), 3, 1002, 0)
    assert [(r.replacetype, r.price, r.orderqty, r.ordertype, r.ordercondition)
            for r in t.replaces] == [("m", 50.1, 0, "L", "R"), ("5", 0, 2, "", "")]
    t.price_changed(0, 50.1)
    assert v.poll(0) == ()  # half done
    t.cancelled(0, qty=2)  # PFCF deleted 2 of the 5: the reduction
    assert v.poll(0) == [(0, cid(1), K.REPLACED, 3, 1002, NONE)]


def test_a_replace_that_raises_the_quantity_is_refused_without_asking_pfcf(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    t.ack(0)
    v.poll(0)
    v.replace(0, cid(1), 3, 23000, 0)
    assert t.replaces == []
    assert v.poll(0) == [(0, cid(1), K.CANCEL_REJECTED, 0, 0, RejectReason.BAD_QTY)]


def test_a_disconnect_of_the_order_path_raises_the_alarm_and_is_counted(venue):
    v, t = venue
    t.drop()
    v.poll(0)
    (why,) = v.alarms()
    assert "connection lost" in why
    assert v.counts["disconnects"] == 1 and v.connected == 0
    t.on_connected()
    v.poll(0)
    assert v.counts["connects"] == 1 and v.connected == 1 and v.alarms() == []


def test_a_reply_object_changed_in_place_later_is_read_as_it_was(venue):
    """unitrade updates one DOrderReply per order in place: the callback copies it."""
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    r = t.ack(0)
    r.statuscode, r.delqty = "0002", 2  # changed before the executor polls
    assert v.poll(0) == [(0, cid(1), K.ACK, 2, 23000, NONE)]


# --- start-up: reconcile with PFCF's day ---------------------------------------------------
def test_reconcile_applies_missed_fills_and_ends_and_rejects_what_pfcf_never_got(tmp_path):
    cfg = Config()
    api = Session()
    t = api.dtrade
    j = str(tmp_path / "journal.log")
    v1 = PfcfVenue(cfg, api, ACCOUNT, {"TXFL6": 0}, log=lambda m: None, journal=j)
    for n in (1, 2, 3):
        v1.submit(0, cid(n), 0, BUY, 3, LIMIT, ROD, 23000, 0)
    for n in range(3):
        t.ack(n)
    t.fill(0, 1, 23000.0)
    v1.poll(0)  # the executor applied: acks, order 1's first fill; then it was killed
    t.fill(0, 2, 23000.0)  # while it was down: order 1 filled, order 2 canceled at PFCF
    t.cancelled(1)
    for o in t.by_index:
        o.note = ""  # a query that does not echo the note: the journal maps them
    api2 = Session()
    api2.dtrade.by_index, api2.dtrade.matches = t.by_index, t.matches
    v2 = PfcfVenue(cfg, api2, ACCOUNT, {"TXFL6": 0}, log=lambda m: None, journal=j)
    v2.restore(0, cid(1), 0, BUY, 3, 1, LIMIT, ROD, 23000, True, 0)
    v2.restore(0, cid(2), 0, BUY, 3, 0, LIMIT, ROD, 23000, True, 0)
    v2.restore(0, cid(3), 0, BUY, 3, 0, LIMIT, ROD, 23000, True, 0)
    v2.restore(0, cid(4), 0, BUY, 1, 0, LIMIT, ROD, 23000, False, 0)  # recorded, never sent
    v2.restore(0, cid(5), 0, SELL, 2, 0, LIMIT, ROD, 23001, True, 0)  # of an earlier day?
    assert v2.reconcile() == [(0, cid(1), K.FILL, 2, 23000, NONE),
                              (0, cid(2), K.CANCELED, 3, 23000, NONE),
                              (0, cid(4), K.REJECT, 1, 23000, REFUSED)]
    assert v2.working(0) == [cid(3), cid(5)]  # 5 is kept: sent, not in PFCF's day
    (why,) = v2.alarms()
    assert "1 order(s) the executor has as working are not in PFCF's orders of the day" in why
    assert api2.dtrade.reloads == 1  # the session learnt the day's working orders
    assert (v2.counts["reconciled_fills"], v2.counts["reconciled_ends"],
            v2.counts["reconciled_lost"]) == (2, 1, 1)
    t.fill(0, 1, 23000.0)  # a match seen at the start is never applied again
    api2.dtrade.on_match(t.matches[0])
    assert v2.poll(0) == ()


def test_reconcile_applies_a_replace_pfcf_carried_out_while_the_executor_was_down(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 5, LIMIT, ROD, 23000, 0)
    t.ack(0)
    v.poll(0)
    t.price_changed(0, 23001.0)  # while the executor was down: 5 -> 3 lots at 23001
    t.cancelled(0, qty=2)
    api2 = Session()
    api2.dtrade.by_index, api2.dtrade.matches = t.by_index, t.matches
    v2 = PfcfVenue(Config(), api2, ACCOUNT, {"TXFL6": 0}, log=lambda m: None)
    v2.restore(0, cid(1), 0, BUY, 5, 0, LIMIT, ROD, 23000, True, 0)
    assert v2.reconcile() == [(0, cid(1), K.REPLACED, 3, 23001, NONE)]
    assert v2.counts["reconciled_changes"] == 1


def test_a_reply_for_an_order_taken_as_never_received_raises_the_alarm(tmp_path):
    api = Session()
    v = PfcfVenue(Config(), api, ACCOUNT, {"TXFL6": 0}, log=lambda m: None)
    v.restore(0, cid(4), 0, BUY, 1, 0, LIMIT, ROD, 23000, False, 0)  # order() never returned
    assert v.reconcile() == [(0, cid(4), K.REJECT, 1, 23000, REFUSED)]
    assert v.alarms() == []
    from unitrade.unitrade import DOrderReply

    # PFCF's query lagged after all: the order is there, and it fills
    api.dtrade.on_reply(DOrderReply(orderno="x1", note=note_for(instance_letter("default"),
                                                                  cid(4)),
                                    statuscode="0000", orderqty="1", nomatchqty=1))
    v.poll(0)
    (why,) = v.alarms()
    assert f"a reply for order {cid(4)}, taken at the start as never received" in why


def test_a_fill_for_an_order_that_ended_here_raises_the_alarm(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    t.ack(0)
    t.cancelled(0)
    assert [e[2] for e in v.poll(0)] == [K.ACK, K.CANCELED]
    t.fill(0, 1, 23000.0, reply=False)  # PFCF says it filled after all
    assert v.poll(0) == ()
    (why,) = v.alarms()
    assert "a fill of 1 for order" in why and "which had ended here" in why


def test_a_fill_beyond_the_orders_quantity_or_at_no_price_raises_the_alarm(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    t.ack(0)
    t.fill(0, 3, 23000.0)
    assert [e[2:4] for e in v.poll(0)] == [(K.ACK, 2), (K.FILL, 2)]
    assert "a fill of 3 for order" in v.alarms()[0]
    v.submit(0, cid(2), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    t.ack(1)
    t.fill(1, 1, 0.0)  # unitrade turns a price it cannot read into 0
    assert [e[2] for e in v.poll(0)] == [K.ACK]
    assert "not understood" in v.alarms()[0]


def test_a_reduction_answered_under_unitrades_sending_mark_still_takes_effect(venue):
    """unitrade leaves an order's status at STAR when a match came before the reduction's
    reply; the deleted quantity says what happened."""
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 5, LIMIT, ROD, 23000, 0)
    t.ack(0)
    v.poll(0)
    v.replace(0, cid(1), 3, 23000, 0)
    r = t.by_index[0]
    r.delqty, r.statuscode = 2, "STAR"
    t.on_reply(r)
    assert v.poll(0) == [(0, cid(1), K.REPLACED, 3, 23000, NONE)]


def test_an_ioc_rest_ended_with_status_0002_and_no_deleted_quantity_expires(venue):
    v, t = venue
    v.submit(0, cid(1), 0, SELL, 5, LIMIT, IOC, 23000, 0)
    t.ack(0)
    t.fill(0, 2, 23000.0)
    r = t.by_index[0]
    r.statuscode = "0002"  # unitrade's ending of an IOC's rest
    t.on_reply(r)
    assert [e[2:4] for e in v.poll(0)] == [(K.ACK, 5), (K.FILL, 2), (K.EXPIRED, 3)]


def test_the_halves_of_a_replace_may_be_answered_in_either_order(venue):
    v, t = venue
    v.submit(0, cid(1), 3, BUY, 5, LIMIT, ROD, 1000, 0)
    t.ack(0)
    v.poll(0)
    v.replace(0, cid(1), 3, 1002, 0)
    t.cancelled(0, qty=2)  # the reduction's answer first
    assert v.poll(0) == ()
    t.price_changed(0, 50.1)
    assert v.poll(0) == [(0, cid(1), K.REPLACED, 3, 1002, NONE)]


def test_a_replace_while_the_previous_one_is_on_its_way_is_refused(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 5, LIMIT, ROD, 23000, 0)
    t.ack(0)
    v.poll(0)
    v.replace(0, cid(1), 5, 23001, 0)
    v.replace(0, cid(1), 5, 23002, 0)
    assert v.poll(0) == [(0, cid(1), K.CANCEL_REJECTED, 0, 0, RejectReason.REPLACE_PENDING)]
    t.price_changed(0, 23001.0)
    assert v.poll(0) == [(0, cid(1), K.REPLACED, 5, 23001, NONE)]
    assert len(t.replaces) == 1


def test_a_status_code_not_known_here_is_read_from_the_quantities_and_logged_once(venue):
    v, t = venue
    v.submit(0, cid(1), 0, BUY, 2, LIMIT, ROD, 23000, 0)
    r = t.ack(0)
    r.statuscode = "0042"
    t.on_reply(r)
    t.on_reply(r)
    assert [e[2] for e in v.poll(0)] == [K.ACK]
    assert sum("'0042'" in m for m in v.logged) == 1 and v.working(0) == [cid(1)]


def test_reconcile_raises_the_alarm_for_a_working_order_marked_ours_that_nobody_manages(tmp_path):
    cfg = Config()
    api = Session()
    v1 = PfcfVenue(cfg, api, ACCOUNT, {"TXFL6": 0}, log=lambda m: None)
    v1.submit(0, cid(7), 0, BUY, 1, LIMIT, ROD, 23000, 0)
    api.dtrade.ack(0)
    v2 = PfcfVenue(cfg, api, ACCOUNT, {"TXFL6": 0}, log=lambda m: None)
    assert v2.reconcile() == []
    (why,) = v2.alarms()
    assert "1 working order(s) at PFCF carry this instance's mark" in why


# --- notes, codes, credentials -------------------------------------------------------------
@given(st.integers(0, 63), st.integers(0, (1 << 34) - 1), st.text(min_size=1, max_size=20))
def test_a_note_carries_the_client_id_in_ten_ascii_characters(owner, n, instance):
    letter = instance_letter(instance)
    note = note_for(letter, (owner << 40) | n)
    assert len(note) == 10 and note.isascii() and note.isalnum()
    assert client_id_of(letter, note) == (owner << 40) | n
    other = "A" if letter != "A" else "B"
    assert client_id_of(other, note) is None


def test_contract_codes_follow_pfcf_month_letters_and_the_run_pins_the_front_month():
    import datetime

    assert pfcf.contract_code("TXF", "202612") == "TXFL6"
    assert pfcf.contract_code("MXF", "202701") == "MXFA7"
    assert pfcf.contract_code("EXF", "203009") == "EXFI0"
    with pytest.raises(pfcf.PfcfError, match="202613"):
        pfcf.contract_code("TXF", "202613")

    def at(y, m, d, hh=9, mm=0):  # Taipei
        tpe = datetime.timezone(datetime.timedelta(hours=8))
        return datetime.datetime(y, m, d, hh, mm, tzinfo=tpe).timestamp()

    # December 2026's contract trades until its third Wednesday, the 16th, 13:30
    assert pfcf.front_month(at(2026, 11, 26)) == "202612"
    assert pfcf.front_month(at(2026, 12, 16, 13, 29)) == "202612"
    assert pfcf.front_month(at(2026, 12, 16, 13, 30)) == "202701"
    assert pfcf.front_month(at(2026, 12, 31, 23, 0)) == "202701"
    assert pfcf.front_month(at(2027, 1, 19, 8, 45)) == "202701"  # (the 20th is its 3rd Wed)
    assert pfcf.front_month(at(2027, 1, 20, 15, 0)) == "202702"
    cfg = pfcf.pin_expiries(Config(), at(2026, 12, 1))
    assert pfcf.contract_codes(cfg.instruments) == {"TXFL6": 0, "MXFL6": 1, "TMFL6": 2,
                                                    "EXFL6": 3, "FXFL6": 4}
    # a reload after the roll keeps the run's contracts
    again = pfcf.pin_expiries(Config(), at(2026, 12, 20), running=cfg)
    assert [i.expiry for i in again.instruments] == ["202612"] * 5
    with pytest.raises(pfcf.PfcfError, match="no contract month"):
        pfcf.contract_codes(Config().instruments)


def test_two_instruments_on_one_pfcf_contract_are_refused():
    from hftd import config

    with pytest.raises(config.ConfigError, match=r"instruments\[1\]: PFCF contract TXFL6 is "
                                                 r"already instruments\[0\]'s"):
        config.load(overrides={"producer": {"feed": "pfcf"}, "instruments": [
            {"symbol": "A", "pfcf": "TXF", "expiry": "202612"},
            {"symbol": "B", "pfcf": "TXF", "expiry": "203612"}]})


def _creds_file(tmp_path, mode=0o600, text=None):
    p = tmp_path / "pfcf.toml"
    p.write_text(text if text is not None else
                 f'url = "https://test.example"\nuserid = "{USERID}"\npassword = "{PASSWORD}"\n'
                 f'ca_path = "/x/ca.pfx"\nca_password = "{CA_PASSWORD}"\n')
    os.chmod(p, mode)
    return str(p)


def test_a_credentials_file_others_may_read_is_refused_naming_it(tmp_path):
    p = _creds_file(tmp_path, 0o640)
    with pytest.raises(pfcf.PfcfError) as e:
        pfcf.load_credentials(p)
    assert p in str(e.value) and "chmod 600" in str(e.value)
    assert PASSWORD not in str(e.value)


def test_credentials_come_from_the_file_or_the_environment_and_never_show(tmp_path, monkeypatch):
    c = pfcf.load_credentials(_creds_file(tmp_path))
    for shown in (repr(c), str(c)):
        for secret in (USERID, PASSWORD, CA_PASSWORD):
            assert secret not in shown
    for k in pfcf.ENV.values():
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(pfcf.PfcfError, match="HFTD_PFCF_URL"):
        pfcf.load_credentials("")
    for k, v in dict(url="u", userid=USERID, password=PASSWORD, ca_path="c",
                     ca_password=CA_PASSWORD).items():
        monkeypatch.setenv(pfcf.ENV[k], v)
    assert pfcf.load_credentials("").password == PASSWORD


def test_a_fifo_a_huge_file_or_a_stray_key_as_credentials_is_refused_in_one_line(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(pfcf.PfcfError, match="not a regular file"):
        pfcf.load_credentials(str(fifo))  # (opening a FIFO used to hang)
    big = _creds_file(tmp_path, text="# " + "x" * (1 << 16) + "\n")
    with pytest.raises(pfcf.PfcfError, match="over 65536 bytes"):
        pfcf.load_credentials(big)
    stray = _creds_file(tmp_path, text=f'url = "u"\n{PASSWORD.replace("-", "_")} = "x"\n')
    with pytest.raises(pfcf.PfcfError, match="1 key\\(s\\) other than") as e:
        pfcf.load_credentials(stray)
    assert PASSWORD.replace("-", "_") not in str(e.value)


def test_a_broken_credentials_file_is_named_without_quoting_its_lines(tmp_path):
    p = _creds_file(tmp_path, text=f'password = {PASSWORD}\n')  # not TOML: unquoted
    with pytest.raises(pfcf.PfcfError) as e:
        pfcf.load_credentials(p)
    assert p in str(e.value) and PASSWORD not in str(e.value)


def test_a_failed_login_says_where_and_why_without_the_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv(pfcf.SESSION_ENV, "pfcf_standin:Session")
    c = pfcf.load_credentials(_creds_file(tmp_path, text=(
        f'url = "https://test.example"\nuserid = "{USERID}"\npassword = "wrong-{PASSWORD}"\n'
        f'ca_path = "/x/ca.pfx"\nca_password = "{CA_PASSWORD}"\n')))
    with pytest.raises(pfcf.PfcfError) as e:  # the stand-in's error quotes them back
        pfcf.login(c, workdir=pfcf.workdir(str(tmp_path)))
    msg = str(e.value)
    assert "https://test.example" in msg and USERID not in msg and PASSWORD not in msg
    assert stat.S_IMODE(os.stat(tmp_path / "pfcf").st_mode) == 0o700


def test_trading_hours_include_the_night_session_past_midnight_on_weekdays_only():
    import datetime

    h = pfcf.TradingHours(["08:45-13:45", "15:00-05:00"], holidays=["2026-12-25"])

    def at(d, hh, mm):  # Taipei wall time on December d, 2026 (the 1st is a Tuesday)
        tpe = datetime.timezone(datetime.timedelta(hours=8))
        return datetime.datetime(2026, 12, d, hh, mm, tzinfo=tpe).timestamp()

    assert h.open_at(at(1, 9, 0)) and h.open_at(at(1, 23, 0)) and h.open_at(at(2, 4, 59))
    assert not h.open_at(at(1, 14, 0)) and not h.open_at(at(2, 5, 0))
    assert not h.open_at(at(1, 8, 44))
    assert h.open_at(at(5, 4, 59))  # Friday's night session ends Saturday 05:00 ...
    assert not h.open_at(at(5, 9, 0)) and not h.open_at(at(5, 15, 0))  # ... none on Saturday
    assert not h.open_at(at(7, 4, 0)) and h.open_at(at(7, 9, 0))  # nor Sunday night
    assert not h.open_at(at(25, 9, 0)) and not h.open_at(at(25, 16, 0))  # a holiday
    assert h.open_at(at(25, 4, 0))  # the night session that opened the day before ends
    assert not h.open_at(at(26, 4, 0))  # and none opened on the holiday


def test_exchange_time_is_taken_on_the_taipei_day_nearest_the_receive_time():
    day = 20000 * 86400 * 10**9  # a UTC midnight = 08:00 Taipei
    at = lambda h, m, s=0: day + ((h - 8) * 3600 + m * 60 + s) * 10**9  # noqa: E731
    assert pfcf.exchange_time_ns("090000123456", at(9, 0, 1)) == at(9, 0) + 123456000
    # a print of 23:59:59 received at 00:00:01 (Taipei) is of the day before
    assert pfcf.exchange_time_ns("235959000000", at(24, 0, 1)) == at(23, 59, 59)
    assert pfcf.exchange_time_ns("xx", at(9, 0)) == 0
    assert pfcf.exchange_time_ns("256000000000", at(9, 0)) == 0


# --- the pipeline: a daemon whose executor trades at the stand-in --------------------------
def _daemon_toml(tmp_path, creds, every=20, ticks=4000, rate=0.0):
    out = tmp_path / "sent.json"
    return (f'state_dir = "{tmp_path}/state"\n[metrics]\nlisten = ""\n'
            f'[producer.synthetic]\nrate = {rate}\nticks = {ticks}\nseed = 5\n'
            f'[executor]\nvenue = "pfcf"\n'
            '[executor.risk]\norder_rate = 0.0\ninstance_order_rate = 0.0\n'
            'max_working_orders = 1000000\nmax_position = 100000\n'
            f'[pfcf]\ncredentials = "{creds}"\n'
            '[[strategies]]\nname = "sample"\nclass = "tests.test_recording:Alternator"\n'
            f'params = {{ out = "{out}", every = {every} }}\n'), out


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """The daemon's agents log in to the stand-in, which works from `tmp_path/standin`."""
    d = tmp_path / "standin"
    d.mkdir()
    monkeypatch.setenv(pfcf.SESSION_ENV, "tests.pfcf_standin:Session")
    monkeypatch.setenv("HFTD_PFCF_STANDIN", str(d))
    return d


def _sent_orders(d):
    """The new orders the stand-in received (not the cancels the end of the run sends)."""
    recs = [json.loads(line) for line in (d / "orders.jsonl").read_text().splitlines()]
    return [r for r in recs if "order" in r]


def test_orders_reach_pfcf_with_the_exact_fields_and_its_fills_make_the_positions(
        run_hftd, instance, tmp_path, standin):
    toml, out = _daemon_toml(tmp_path, _creds_file(tmp_path))
    import time

    started = time.time()
    res = run_hftd("--report", str(tmp_path / "r.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    sent = json.loads(out.read_text())["sent"]  # the strategy's own list
    assert len(sent) == 200
    cfg = pfcf.pin_expiries(Config(), started)  # as the supervisor pinned them
    code = {i: c for c, i in pfcf.contract_codes(cfg.instruments).items()}
    letter = instance_letter(instance)
    from decimal import Decimal

    expected = [{"order": {"actno": ACCOUNT, "subactno": "", "productid": code[i],
                           "bs": "B" if side > 0 else "S", "ordertype": "L",
                           "price": float(Decimal(price) * Decimal(cfg.instruments[i].tick_size)),
                           "orderqty": qty, "ordercondition": "I", "opencloseflag": "",
                           "dtrade": "N", "note": note_for(letter, c)}}
                for c, i, side, qty, price in sent]
    assert _sent_orders(standin) == expected
    o = rep["orders"]
    assert (o["sent"], o["acks"], o["fills"], o["filled"], o["working"]) == (200, 200, 200,
                                                                            200, 0)
    net = {}
    for c, i, side, qty, price in sent:  # every IOC filled whole at the stand-in
        net[cfg.instruments[i].symbol] = net.get(cfg.instruments[i].symbol, 0) + side * qty
    assert {r["symbol"]: r["qty"] for r in rep["positions"]["rows"]} == net
    v = rep["venue"]
    assert (v["connected"], v["connects"], v["disconnects"], v["refused"]) == (1, 1, 0, 0)
    assert rep["invariants"] == []
    for secret in (USERID, PASSWORD, CA_PASSWORD):
        assert secret not in res.stderr and secret not in res.stdout
        assert secret not in (tmp_path / "r.json").read_text()


def test_a_disconnect_of_the_order_path_trips_the_kill_switch(run_hftd, tmp_path, standin):
    (standin / "standin.json").write_text(json.dumps({"disconnect_after": 3}))
    # 2 s of ticks, an order every 10 ms: the alarm comes long before the last order
    toml, out = _daemon_toml(tmp_path, _creds_file(tmp_path), rate=2000.0)
    res = run_hftd("--report", str(tmp_path / "r.json"), toml=toml)
    assert res.returncode == 0, res.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert "PFCF order connection lost" in res.stderr and "kill switch on" in res.stderr
    assert rep["venue"]["disconnects"] == 1 and rep["venue"]["connected"] == 0
    o = rep["orders"]
    at_pfcf = len(_sent_orders(standin))  # counted by the stand-in
    paused = o["rejects_by_reason"].get("PAUSED", 0)  # refused by the executor's risk
    refused = o["by_strategy"]["sample"]["refused"]  # refused in the paused strategy
    assert at_pfcf >= 3 and paused + refused > 150  # (when the pause lands is timing)
    assert at_pfcf + paused + refused == len(json.loads(out.read_text())["sent"]) == 200


def test_a_killed_executor_reconciles_with_pfcf_and_sends_no_order_twice(instance, tmp_path,
                                                                         standin):
    """SIGKILL the executor while it trades at the stand-in (which, like a broker, outlives
    it): its successor queries the day's replies and matches, applies what it missed, and no
    order reaches PFCF twice; the executor's positions equal the stand-in's matches."""
    from conftest import hftd_running, kill_agent

    # orders come every 4 ms and are answered one by one, 6 ms each: a kill after 1 s finds
    # dozens sent and not answered, answered while the executor is down (the stand-in
    # answers them when the next one logs in)
    (standin / "standin.json").write_text(json.dumps({"answer_delay_s": 0.006}))
    toml, out = _daemon_toml(tmp_path, _creds_file(tmp_path), every=20, ticks=10_000,
                             rate=5_000.0)
    import time

    started = time.time()
    with hftd_running(instance, tmp_path, "--report", str(tmp_path / "r.json"),
                      toml=toml) as proc:
        kill_agent(proc, instance, "executor", after_s=1.0)
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["stages"]["executor"]["restarts"] == 1
    notes = [r["order"]["note"] for r in _sent_orders(standin)]
    assert len(notes) == len(set(notes)) > 250  # no order twice
    from pfcf_standin import Session as StandIn

    broker = StandIn().dtrade  # the broker's day, read back as the successor read it
    by_orderno = {r.orderno: r for r in broker.by_index}
    net = {}
    cfg = pfcf.pin_expiries(Config(), started)  # as the supervisor pinned them
    code_symbol = {c: cfg.instruments[i].symbol
                   for c, i in pfcf.contract_codes(cfg.instruments).items()}
    for m in broker.matches:
        sym = code_symbol[by_orderno[m.orderno].productid]
        net[sym] = net.get(sym, 0) + (1 if m.bs == "B" else -1) * m.matchqty
    assert {r["symbol"]: r["qty"] for r in rep["positions"]["rows"] if r["qty"]} == \
        {k: v for k, v in net.items() if v}
    assert rep["orders"]["working"] == 0
    v = rep["venue"]
    assert v["connects"] == 2 and v["reconciled_fills"] > 0, v


def test_a_day_that_cannot_be_queried_stops_the_start_naming_why(venue):
    from unitrade.unitrade import DQueryReplyResponse

    v, t = venue
    t.query_reply = lambda *a: DQueryReplyResponse(ok=False, error=f"no session {ACCOUNT}",
                                                   data=[])
    v.redact = lambda text: str(text).replace(ACCOUNT, "***")
    with pytest.raises(pfcf.PfcfError, match="cannot query the day's orders") as e:
        v.reconcile()
    assert ACCOUNT not in str(e.value)


def test_the_example_pfcf_config_checks_with_credentials_and_names_what_is_missing(monkeypatch):
    from conftest import hftd

    root = os.path.join(os.path.dirname(__file__), "..")
    cfg = os.path.join(root, "configs", "pfcf.toml")
    for k in pfcf.ENV.values():
        monkeypatch.delenv(k, raising=False)
    res = hftd("check-config", cfg, timeout=60)
    assert res.returncode == 2 and "HFTD_PFCF_PASSWORD" in res.stderr
    for k, v in dict(url="https://test.example", userid=USERID, password=PASSWORD,
                     ca_path="/x/ca.pfx", ca_password=CA_PASSWORD).items():
        monkeypatch.setenv(pfcf.ENV[k], v)
    res = hftd("check-config", cfg, timeout=60)
    assert res.returncode == 0, res.stderr
    assert PASSWORD not in res.stdout + res.stderr and USERID not in res.stdout + res.stderr


def test_pfcf_connections_and_counts_are_exported_to_prometheus():
    from prometheus_client import CollectorRegistry, generate_latest

    from hftd.exporter import _pfcf_metrics
    from hftd.feeds.pfcf import COUNTS, GAUGES
    from hftd.venues.pfcf import COUNTERS

    feed = {f"feed.{k}": n for n, k in enumerate(COUNTS, 1)}
    feed.update({f"feed.{k}": 0 for k in GAUGES}, **{"feed.connected": 1, "feed.silent_s": 12})
    venue = {f"venue.{k}": 10 + n for n, k in enumerate(COUNTERS)}
    venue["venue.connected"] = 0

    class C:
        def collect(self):
            return _pfcf_metrics(feed, venue)

    reg = CollectorRegistry()
    reg.register(C())
    text = generate_latest(reg).decode()
    assert 'hftd_pfcf_connected{path="quote"} 1.0' in text
    assert 'hftd_pfcf_connected{path="order"} 0.0' in text
    assert (f'hftd_pfcf_connection_events_total{{event="disconnects",path="order"}} '
            f'{float(venue["venue.disconnects"])}') in text
    assert f'hftd_pfcf_feed_total{{what="overflow"}} {float(feed["feed.overflow"])}' in text
    assert "hftd_pfcf_feed_silent_seconds 12.0" in text
    assert (f'hftd_pfcf_venue_total{{what="reconciled_lost"}} '
            f'{float(venue["venue.reconciled_lost"])}') in text
    assert _pfcf_metrics({}, {}) is not None and list(_pfcf_metrics({}, {})) == []
