"""The PFCF live feed (hftd/feeds/pfcf.py), tested at unitrade's callback boundary with the
package's real DTickDataTrade objects built by the stand-in session (tests/pfcf_standin.py):
prices to ticks on decimal grids, off-grid prices rejected and counted, a message's extra
matches, duplicates and gaps by the day's volume, the bounded hand-off and its overflow
(counted as dropped by the producer under every ring policy), exchange times, the silence
alarm on a fake clock, connection counts, the contracts subscribed; then the daemon end to
end with the stand-in playing trades in its producer process."""

from __future__ import annotations

import datetime
import json
import os
import time

import pytest

pytest.importorskip("unitrade")

from hftd import config, pfcf, shm, stats  # noqa: E402
from hftd.events import Codec, Control, ControlKind, TickStream  # noqa: E402
from hftd.feeds.pfcf import PfcfFeed  # noqa: E402
from hftd.ring import CONTROL_KEY, RingReader, RingWriter  # noqa: E402

from conftest import hftd, hftd_running, stop, wait_running  # noqa: E402
from pfcf_standin import CA_PASSWORD, PASSWORD, USERID, raw_trade  # noqa: E402

TPE = datetime.timezone(datetime.timedelta(hours=8))
S = 1_000_000_000
# (symbol, pfcf product, expiry, tick size): December 2026 contracts (TE is PFCF's EXF, TF its
# FXF); an expiry "" is pinned by the supervisor (tests/test_pfcf_venue.py)
INSTRUMENTS = [("TXF", "TXF", "202612", "1"), ("TE", "EXF", "202612", "0.05"),
               ("TF", "FXF", "202612", "0.2")]
URL = "https://pfcf.example.test"


def _wall(y=2026, mo=12, d=1, h=10, mi=0, s=0) -> int:
    return int(datetime.datetime(y, mo, d, h, mi, s, tzinfo=TPE).timestamp()) * S


class Clock:
    """A settable wall clock (ns)."""

    def __init__(self, ns: int):
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


@pytest.fixture
def creds_env(monkeypatch, tmp_path):
    """The stand-in session and credentials in the environment, as an agent would have."""
    monkeypatch.setenv(pfcf.SESSION_ENV, "pfcf_standin:Session")
    monkeypatch.delenv("HFTD_PFCF_STANDIN", raising=False)
    for k, v in {"url": URL, "userid": USERID, "password": PASSWORD,
                 "ca_path": str(tmp_path / "ca.pfx"), "ca_password": CA_PASSWORD}.items():
        monkeypatch.setenv(pfcf.ENV[k], v)
    monkeypatch.delenv(pfcf.ENV["account"], raising=False)


def _cfg(**pfcf_over) -> config.Config:
    return config.load(overrides={
        "producer": {"feed": "pfcf"},
        "instruments": [{"symbol": s, "pfcf": p, "expiry": e, "tick_size": t}
                        for s, p, e, t in INSTRUMENTS],
        "pfcf": pfcf_over})


def _feed(wall=None, **pfcf_over):
    logged, woken = [], []
    f = PfcfFeed(_cfg(**pfcf_over), log=logged.append, wake=lambda: woken.append(1),
                 wall_ns=wall or Clock(_wall()))
    f.logged, f.woken = logged, woken
    return f


def _ticks(f, n=1000, now=1):
    b = f.poll(n, now)
    if b is None:
        return []
    col = [list(map(int, c)) for c in (b.instrument, b.price, b.qty, b.t_exchange)]
    return list(zip(*col))


@pytest.fixture
def feed(creds_env):
    return _feed()


# --- contracts -------------------------------------------------------------------------------
def test_it_logs_in_and_subscribes_each_configured_contract(feed):
    q = feed.api.dquote
    assert q.subscribed == ["TXFL6", "EXFL6", "FXFL6"]
    url, userid, password, _, ca_password = feed.api.logins[0]
    assert (url, userid, password, ca_password) == (URL, USERID, PASSWORD, CA_PASSWORD)
    assert {c: x.inst for c, x in feed.contracts.items()} == {"TXFL6": 0, "EXFL6": 1, "FXFL6": 2}
    assert q.on_tick_data_trade is not None and q.on_disonnected is not None
    assert feed.gauges()["subscribed"] == feed.gauges()["contracts"] == 3
    assert not any(s in line for line in feed.logged for s in (USERID, PASSWORD, CA_PASSWORD))


def test_a_failed_subscription_is_logged_once_and_tried_again_at_the_next_connect(
        creds_env, monkeypatch):
    from pfcf_standin import Quote

    real = Quote.subscribe_trade_bid_offer
    refuse = {"on": True}

    def sub(self, code):
        if refuse["on"]:
            return False, "not connected"
        return real(self, code)

    monkeypatch.setattr(Quote, "subscribe_trade_bid_offer", sub)
    f = _feed()
    assert f.pending == ["TXFL6", "EXFL6", "FXFL6"] and f.gauges()["subscribed"] == 0
    assert sum("failed: not connected" in line for line in f.logged) == 3
    f._subscribe(0)  # a retry that fails again says nothing new
    assert sum("failed: not connected" in line for line in f.logged) == 3
    refuse["on"] = False
    f.api.dquote.on_connected()
    f.take_events()
    assert f.pending == [] and f.api.dquote.subscribed == ["TXFL6", "EXFL6", "FXFL6"]


def test_a_failed_login_names_the_url_and_never_a_secret(creds_env, monkeypatch):
    monkeypatch.setenv(pfcf.ENV["password"], "wrong-password")
    with pytest.raises(pfcf.PfcfError) as e:
        _feed()
    assert URL in str(e.value)
    assert USERID not in str(e.value) and "wrong-password" not in str(e.value)


# --- trades to ticks -----------------------------------------------------------------------
def test_prices_become_ticks_exactly_on_decimal_grids(feed):
    send = feed.api.dquote.send
    send(raw_trade("TXFL6", 23456, 2, 100))
    send(raw_trade("EXFL6", 812.35, 1, 10))  # 0.05 ticks: 16247
    send(raw_trade("EXFL6", 0.05, 3, 13))
    send(raw_trade("FXFL6", 1234.4, 4, 20))  # 0.2 ticks: 6172
    got = [(i, p, q) for i, p, q, _ in _ticks(feed)]
    assert got == [(0, 23456, 2), (1, 16247, 1), (1, 1, 3), (2, 6172, 4)]
    assert feed.counts["bad_price"] == 0 and feed.counts["ticks"] == 4
    assert feed.counts["lots"] == 10 and feed.counts["messages"] == 4
    assert feed.instrument_figures()[1] == (2, 4, 1, 13, feed.contracts["EXFL6"].time)


def test_a_price_off_the_grid_or_not_positive_is_passed_as_0_and_counted(feed):
    """Price 0: the producer rejects it (bad_price) and counts it; never passed on."""
    send = feed.api.dquote.send
    send(raw_trade("EXFL6", 812.33, 1, 10))  # off the 0.05 grid
    send(raw_trade("FXFL6", 1234.5, 1, 10))  # off the 0.2 grid
    send(raw_trade("TXFL6", 23456.5, 1, 10))  # off the 1 grid
    send(raw_trade("TXFL6", 0, 1, 11))
    send(raw_trade("TXFL6", -5, 1, 12))
    send(raw_trade("TXFL6", "nan", 1, 13))
    assert [p for _, p, _, _ in _ticks(feed)] == [0] * 6
    assert feed.counts["bad_price"] == 6
    assert feed.instrument_figures()[0][:3] == (0, 0, 0)  # no good tick of TXF


def test_extra_matches_of_a_message_are_ticks_in_order_and_wait_for_room(feed):
    feed.api.dquote.send(raw_trade("TXFL6", 23456, 2, 106, "091500123456",
                                   extra=[(23457, 1), (23458, 3)]))
    feed.api.dquote.send(raw_trade("EXFL6", 812.35, 1, 7, "091500200000",
                                   extra=[(812.4, 2), (812.41, 1)]))
    first = _ticks(feed, n=2)
    rest = _ticks(feed, n=100)
    t1 = int(datetime.datetime(2026, 12, 1, 9, 15, 0, 123456, tzinfo=TPE).timestamp() * 1e6) * 1000
    t2 = int(datetime.datetime(2026, 12, 1, 9, 15, 0, 200000, tzinfo=TPE).timestamp() * 1e6) * 1000
    assert first == [(0, 23456, 2, t1), (0, 23457, 1, t1)]
    assert rest == [(0, 23458, 3, t1), (1, 16247, 1, t2), (1, 16248, 2, t2), (1, 0, 1, t2)]
    assert feed.counts["ticks"] == 6 and feed.counts["bad_price"] == 1
    assert feed.counts["gap_lots"] == 0  # a contract's first message sets its baseline


def test_a_big_poll_returns_numpy_columns_a_small_one_lists(feed):
    import numpy as np

    for k in range(20):
        feed.api.dquote.send(raw_trade("TXFL6", 23000 + k, 1, 1 + k))
    b = feed.poll(5, 1)
    assert isinstance(b.price, list) and b.price == [23000, 23001, 23002, 23003, 23004]
    b = feed.poll(100, 1)
    assert isinstance(b.price, np.ndarray) and b.price.dtype == np.int64
    assert b.price.tolist() == list(range(23005, 23020)) and b.instrument.dtype == np.int32
    assert feed.poll(100, 1) is None


def test_the_exchange_time_is_the_match_time_in_taipei_on_the_nearest_day(creds_env):
    clock = Clock(_wall(2026, 12, 2, 0, 0, 5))  # just after midnight
    f = _feed(wall=clock)
    f.api.dquote.send(raw_trade("TXFL6", 23456, 1, 10, "235959999999"))  # yesterday's
    f.api.dquote.send(raw_trade("TXFL6", 23457, 1, 11, "000001000001"))
    f.api.dquote.send(raw_trade("TXFL6", 23458, 1, 12, "bad"))
    got = [t for *_, t in _ticks(f)]
    want = [datetime.datetime(2026, 12, 1, 23, 59, 59, 999999, tzinfo=TPE),
            datetime.datetime(2026, 12, 2, 0, 0, 1, 1, tzinfo=TPE)]
    assert got == [int(w.timestamp() * 1e6) * 1000 for w in want] + [0]
    assert f.gauges()["last_exchange_ns"] == got[1]


# --- duplicates and gaps ---------------------------------------------------------------------
def test_a_repeated_trade_is_a_duplicate_skipped_and_counted(feed):
    send = feed.api.dquote.send
    send(raw_trade("TXFL6", 23456, 2, 100, "091500000001"))
    send(raw_trade("TXFL6", 23457, 1, 101, "091500000002"))
    send(raw_trade("TXFL6", 23457, 1, 101, "091500000002"))  # repeated after a reconnect
    send(raw_trade("TXFL6", 23456, 2, 100, "091500000001"))  # an older one again
    send(raw_trade("EXFL6", 812.35, 1, 101, "091500000002"))  # another contract's own total
    send(raw_trade("TXFL6", 23458, 1, 102, "091500000003"))
    got = [(i, p) for i, p, _, _ in _ticks(feed)]
    assert got == [(0, 23456), (0, 23457), (1, 16247), (0, 23458)]
    assert feed.counts["duplicates"] == 2 and feed.counts["gap_lots"] == 0
    assert feed.counts["messages"] == 6 and feed.counts["ticks"] == 4


def test_a_jump_of_the_days_volume_beyond_the_messages_lots_counts_the_lots_missed(feed):
    send = feed.api.dquote.send
    send(raw_trade("TXFL6", 23456, 2, 100, "091500000001"))
    send(raw_trade("TXFL6", 23457, 1, 101, "091500000002"))  # +1, 1 lot: none missed
    send(raw_trade("TXFL6", 23458, 1, 105, "091500000003"))  # +4, 1 lot: 3 missed
    send(raw_trade("TXFL6", 23459, 2, 110, "091500000004", extra=[(23460, 3)]))  # +5, 5 lots
    assert len(_ticks(feed)) == 5
    assert feed.counts["gap_lots"] == 3 and feed.counts["duplicates"] == 0


def test_a_lower_volume_at_a_later_time_starts_a_new_session_not_a_duplicate(feed):
    send = feed.api.dquote.send
    send(raw_trade("TXFL6", 23456, 2, 90_000, "134459000000"))  # the day session's end
    send(raw_trade("TXFL6", 23500, 3, 3, "150000100000"))  # the night session's first
    send(raw_trade("TXFL6", 23501, 1, 4, "150000200000"))
    assert [p for _, p, _, _ in _ticks(feed)] == [23456, 23500, 23501]
    assert feed.counts["sessions"] == 1 and feed.counts["duplicates"] == 0
    assert feed.counts["gap_lots"] == 0


def test_a_restarted_producers_feed_finds_a_repeat_and_a_gap_across_the_restart(feed):
    t = pfcf.exchange_time_ns("091500000002", _wall())
    feed.restore("TXFL6", 101, t)
    feed.api.dquote.send(raw_trade("TXFL6", 23457, 1, 101, "091500000002"))  # the repeat
    feed.api.dquote.send(raw_trade("TXFL6", 23458, 1, 110, "091501000000"))  # 8 missed
    assert [p for _, p, _, _ in _ticks(feed)] == [23458]
    assert feed.counts["duplicates"] == 1 and feed.counts["gap_lots"] == 8


# --- the hand-off ----------------------------------------------------------------------------
def test_the_queue_is_bounded_and_what_finds_no_room_is_counted_in_ticks(creds_env):
    f = _feed(queue=16)
    f.take_events()  # the login's connect (it rang too)
    f.woken.clear()
    send = f.api.dquote.send
    for k in range(16):
        send(raw_trade("TXFL6", 23000 + k, 1, 1 + k))
    assert f.woken == [1]  # rung once, when the queue went from empty to not empty
    send(raw_trade("TXFL6", 23100, 1, 30))
    send(raw_trade("TXFL6", 23101, 1, 40, extra=[(23102, 1), (23103, 1)]))
    assert len(f.inbox) == 16 and f.next_due_s(0) == 0.0
    assert f.take_overflow() == 4 and f.take_overflow() == 0
    assert f.counts["overflow"] == 4
    assert len(_ticks(f)) == 16 and f.next_due_s(0) > 0
    send(raw_trade("TXFL6", 23200, 1, 50))
    assert f.woken == [1, 1]  # empty again: rung again
    assert len(_ticks(f)) == 1 and f.counts["gap_lots"] == 50 - 16 - 1  # lost lots show


@pytest.mark.parametrize("policy", ["block", "drop", "conflate"])
def test_the_producer_counts_ticks_lost_to_a_full_queue_as_dropped_and_keeps_its_identity(
        creds_env, plant, policy):
    """In-process producer on real shared memory: ticks lost at the hand-off are received and
    dropped under every ring policy, logged once; the received = published + conflated +
    dropped + rejected identity stays exact; the bad price is rejected; feed.* values show."""
    from hftd.stages import Producer

    p = plant({"producer": {"feed": "pfcf"}, "rings": {"ticks": {"policy": policy}},
               "instruments": [{"symbol": s, "pfcf": c, "expiry": e, "tick_size": t}
                               for s, c, e, t in INSTRUMENTS],
               "pfcf": {"queue": 16, "hours": []}})
    prod = Producer(p.context("producer"))
    now = time.monotonic_ns()
    RingWriter(p.ring("control.producer")).offer(
        CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.START)))
    send = prod.feed.api.dquote.send
    for k in range(20):  # 16 fit, 4 do not
        send(raw_trade("TXFL6", 23000 + k, 1, 1 + k))
    for _ in range(5):
        prod.do_work()
    send(raw_trade("EXFL6", 812.33, 1, 1))  # off the grid
    send(raw_trade("EXFL6", 812.35, 1, 2))
    for _ in range(5):
        prod.do_work()
    prod._live_stats()
    st = prod.ctx.stats
    assert st.get("received") == 22 and st.get("dropped") == 4
    assert st.get("rejected") == st.get("rejected_bad_price") == 1
    assert st.get("received") == st.get("published") + st.get("conflated") + \
        st.get("dropped") + st.get("rejected") + st.get("conflation_pending")
    assert st.get("published") == 17
    got = RingReader(p.ring("ticks.in")).read(Codec(TickStream).decode, 100)
    assert [t.price for t in got] == list(range(23000, 23016)) + [16247]
    assert st.get("feed.overflow") == 4 and st.get("feed.bad_price") == 1
    assert st.get("feed.messages") == 18 and st.get("feed.connects") == 1
    assert st.get("feed.connected") == 1 and st.get("feed.subscribed") == 3
    assert st.get("feed.ticks.TXF") == 16 and st.get("feed.total.TXF") == 16
    assert st.get("feed.ticks.TE") == 1 and st.get("feed.last.TE") == 16247


# --- connection and silence ------------------------------------------------------------------
def test_connection_events_of_the_quote_path_are_counted(feed):
    q = feed.api.dquote
    feed.take_events()  # the login's connect
    assert feed.counts["connects"] == 1 and feed.connected == 1
    q.drop()
    q.on_error("disconnected")
    q.on_error(q, RuntimeError("tcpclient_on_connected -Exception boom"))  # (itself, e)
    assert feed.next_due_s(0) == 0.0  # events wait: the producer does not park
    got = feed.take_events()
    assert got == [("D",), ("E", "disconnected"), ("E", "tcpclient_on_connected -Exception boom")]
    assert feed.counts["disconnects"] == 1 and feed.counts["errors"] == 2
    assert feed.connected == 0 and feed.gauges()["connected"] == 0
    q.on_connected()
    feed.take_events()
    assert feed.counts["connects"] == 2 and feed.connected == 1
    assert len(feed.woken) == 3  # each time the events went from none to some


def test_silence_during_trading_hours_raises_one_alarm_per_silence(creds_env):
    clock = Clock(_wall(h=10))  # the day session
    f = _feed(wall=clock, silence_s=10.0)
    t0 = 1_000 * S
    f.check(t0)
    f.check(t0 + 10 * S)
    assert f.alarms() == []
    f.check(t0 + 11 * S)
    (why,) = f.alarms()
    assert "no PFCF trade for 11 s" in why and "silence_s = 10" in why
    assert f.gauges()["silent_s"] == 11
    f.check(t0 + 30 * S)
    assert f.alarms() == []  # one per silence
    f.api.dquote.send(raw_trade("TXFL6", 23456, 1, 1))
    assert len(_ticks(f, now=t0 + 31 * S)) == 1
    f.check(t0 + 32 * S)
    assert f.alarms() == [] and f.gauges()["silent_s"] == 1
    f.check(t0 + 42 * S)
    assert len(f.alarms()) == 1  # re-armed by the trade


def test_no_silence_alarm_while_closed_and_silence_counts_from_the_opening(creds_env):
    clock = Clock(_wall(h=14))  # between the day and the night session
    f = _feed(wall=clock, silence_s=10.0)
    t0 = 1_000 * S
    for k in range(0, 3600, 60):
        f.check(t0 + k * S)
    assert f.alarms() == [] and f.gauges()["silent_s"] == 0
    clock.ns = _wall(h=15)  # the night session opens: its first 10 s are not silence yet
    f.check(t0 + 3600 * S)
    f.check(t0 + 3605 * S)
    assert f.alarms() == []
    f.check(t0 + 3611 * S)
    assert len(f.alarms()) == 1


def test_the_producer_counts_a_silence_alarm_and_the_supervisor_pauses_on_it(creds_env, plant,
                                                                             capsys):
    from hftd.stages import Producer

    p = plant({"producer": {"feed": "pfcf"},
               "instruments": [{"symbol": s, "pfcf": c, "expiry": e, "tick_size": t}
                               for s, c, e, t in INSTRUMENTS],
               "pfcf": {"silence_s": 0.001, "hours": ["00:00-23:59", "23:59-00:00"],
                        "days": [1, 2, 3, 4, 5, 6, 7]}})
    prod = Producer(p.context("producer"))
    now = time.monotonic_ns()
    RingWriter(p.ring("control.producer")).offer(
        CONTROL_KEY, now, Codec(Control).encode(Control(0, now, ControlKind.START)))
    prod.do_work()
    deadline = time.monotonic() + 10
    while prod.ctx.stats.get("alarms") == 0 and time.monotonic() < deadline:
        prod._l_next = 0
        prod.do_work()
    assert prod.ctx.stats.get("alarms") == 1
    sup = p.sup
    capsys.readouterr()
    sup._check_alarms()
    assert sup.paused and "ALARM raised by an agent: kill switch on" in capsys.readouterr().err


# --- end to end ------------------------------------------------------------------------------
def _creds_file(tmp_path, password=PASSWORD) -> str:
    path = tmp_path / "pfcf.toml"
    path.write_text(f'url = "{URL}"\nuserid = "{USERID}"\npassword = "{password}"\n'
                    f'ca_path = "{tmp_path}/ca.pfx"\nca_password = "{CA_PASSWORD}"\n')
    os.chmod(path, 0o600)
    return str(path)


def _toml(tmp_path, creds: str, out) -> str:
    ins = "".join(f'[[instruments]]\nsymbol = "{s}"\npfcf = "{c}"\nexpiry = "{e}"\n'
                  f'tick_size = "{t}"\n' for s, c, e, t in INSTRUMENTS)
    return (ins + f'[producer]\nfeed = "pfcf"\n[pfcf]\ncredentials = "{creds}"\nhours = []\n'
            f'[metrics]\nlisten = ""\n[[strategies]]\nname = "sample"\n'
            f'class = "tests.strategies:Recorder"\nparams = {{ out = "{out}" }}\n')


def _standin_env(monkeypatch, tmp_path, trades):
    d = tmp_path / "standin"
    d.mkdir()
    (d / "ticks.json").write_text(json.dumps(trades))
    monkeypatch.setenv(pfcf.SESSION_ENV, "tests.pfcf_standin:Session")
    monkeypatch.setenv("HFTD_PFCF_STANDIN", str(d))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return d


def _wait_value(blk, name: str, want: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while blk.get(name) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    assert blk.get(name) == want, (name, blk.get(name), want)


def _tx_trades(first: int, n: int, total0: int) -> list:
    """n TXF trades from the k-th of the session on: 1-3 lots, the day's volume following."""
    out, total = [], total0
    for k in range(first, first + n):
        total += 1 + k % 3
        out.append(raw_trade("TXFL6", 23000 + k % 7, 1 + k % 3, total,
                             f"0915{k // 100:02d}{k % 100:06d}"))
    return out


def test_hftd_run_takes_pfcf_trades_through_the_pipeline_and_a_restarted_producer_continues(
        instance, tmp_path, monkeypatch):
    """The stand-in plays its trade messages in the producer process once it subscribes:
    every good tick reaches the strategy, the off-grid one is rejected, the repeat is skipped,
    and status and the report show the feed's counts. Then the producer is killed: the next
    one logs in again, the stand-in plays every message again plus new ones, and only the new
    ones go through (the others are repeats, found by the volume and time the stats block
    kept), a jump of the volume counted as lots missed. Then the daemon stops cleanly."""
    from conftest import agent

    n_tx = 150
    trades = _tx_trades(0, n_tx, 1000)
    trades.append(list(trades[-1]))  # a repeat: skipped
    trades += [raw_trade("EXFL6", 812.35, 1, 3, "091500000001", extra=[(812.4, 2)]),
               raw_trade("EXFL6", 812.33, 1, 4, "091500000002"),  # off the grid: rejected
               raw_trade("FXFL6", 1234.4, 5, 5, "091500000003")]
    ticks = n_tx + 2 + 1 + 1  # TXF, EXF's 2 matches, the off-grid one, FXF
    d = _standin_env(monkeypatch, tmp_path, trades)
    tx_total = int(trades[n_tx - 1][4])
    more = _tx_trades(n_tx, 20, tx_total + 7)  # 7 lots PFCF never sent
    out = tmp_path / "seen.json"
    toml = _toml(tmp_path, _creds_file(tmp_path), out)
    with hftd_running(instance, tmp_path, "--report", str(tmp_path / "r.json"),
                      toml=toml) as proc:
        wait_running(instance)
        blk = stats.StatsBlock.attach(shm.object_name(instance, "stats.producer"))
        try:
            _wait_value(blk, "received", ticks)
            _wait_value(blk, "feed.total.TXF", tx_total)  # written every 0.2 s
            _wait_value(blk, "feed.duplicates", 1)
            st = hftd("status", "--config", str(tmp_path / "hftd.toml"), timeout=60)
            assert st.returncode == 0, st.stderr
            assert "pfcf feed: quote path connected" in st.stdout, st.stdout
            assert f"messages {len(trades)}:" in st.stdout and "duplicates 1;" in st.stdout
            (d / "ticks.json").write_text(json.dumps(trades + more))
            victim = agent(proc, "producer")
            victim.kill()
            victim.wait(10)
            _wait_value(blk, "received", ticks + len(more))
            _wait_value(blk, "feed.duplicates", 1 + len(trades))
        finally:
            blk.close()
        rc, _, err = stop(proc)
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err
    assert not any(s in err for s in (USERID, PASSWORD, CA_PASSWORD))
    assert err.count("subscribed to the trades of TXFL6") == 2
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["stages"]["producer"]["restarts"] == 1
    t = rep["ticks"]
    total = ticks + len(more)
    assert t["received"] == total and t["rejected"] == 1 and t["dropped"] == 0
    assert t["published"] == t["delivered_to_strategies"] == total - 1
    assert rep["invariants"] == []
    f = rep["pfcf"]
    assert f["messages"] == 2 * len(trades) + len(more) and f["duplicates"] == 1 + len(trades)
    assert f["ticks"] == total and f["bad_price"] == 1 and f["overflow"] == 0
    assert f["gap_lots"] == 7 and f["connects"] == 2 and f["subscribed"] == 3
    assert f["alarms"] == 0
    assert f["instruments"]["TXF"]["ticks"] == n_tx + len(more)
    assert f["instruments"]["TXF"]["volume"] == int(more[-1][4])
    assert f["instruments"]["TE"] == {"pfcf": "EXF", "expiry": "202612", "ticks": 2,
                                      "lots": 3, "last": 812.4, "volume": 4}
    seen = json.loads(out.read_text())
    assert seen["n"] == total - 1 and seen["seqs"] == list(range(total - 1))
    assert seen["last"]["0"][1:] == [int(more[-1][2]), int(more[-1][3])]
    assert seen["last"]["2"][1:] == [6172, 5]


def test_a_failed_login_ends_the_run_in_one_line_naming_the_url_and_no_secret(
        instance, tmp_path, monkeypatch):
    _standin_env(monkeypatch, tmp_path, [])
    toml = _toml(tmp_path, _creds_file(tmp_path, password="not-the-password"),
                 tmp_path / "seen.json") + "[supervisor]\nrestart_burst = 1\n"
    with hftd_running(instance, tmp_path, toml=toml) as proc:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert f"producer: error: PFCF login to {URL} failed" in err, err[-3000:]
    assert "Traceback" not in err
    assert not any(s in err for s in (USERID, "not-the-password", CA_PASSWORD))
