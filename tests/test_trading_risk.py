"""Pre-trade risk: each limit under a test that tries to break it, and the engine's answer
for every order compared with an independent oracle (exact fractions, no shared code).
In-process and deterministic (seeded, simulated clock)."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from hftd.events import RejectReason as R
from hftd.trading import OrdType, Side
from hftd.trading.risk import RiskEngine, RiskLimits, TokenBucket

MKT, LMT = OrdType.MARKET, OrdType.LIMIT
BUY, SELL = Side.BUY, Side.SELL
S = 1_000_000_000  # ns per second
MS = 1_000_000

# generous limits, for tests of one limit at a time
OPEN = dict(max_order_qty=1000, max_position=10**6, max_working_orders=10**6, order_rate=0,
            instance_order_rate=0)


def order(eng, strategy=0, side=BUY, qty=1, ord_type=LMT, price=10000, last=10000,
          position=0, working=0, n_working=0, now=0):
    return eng.check(strategy, 0, side, qty, ord_type, price, last, position, working,
                     n_working, now)


# -- an independent oracle --------------------------------------------------------------


class OracleBucket:
    def __init__(self, rate, burst):
        self.rate, self.burst = Fraction(rate), burst
        self.tokens, self.t = Fraction(burst), None

    def level(self, now):
        if self.rate == 0:
            return Fraction(10**9)
        if self.t is not None and now > self.t:
            self.tokens = min(Fraction(self.burst), self.tokens + (now - self.t) * self.rate / S)
        if self.t is None or now > self.t:
            self.t = now
        return self.tokens


def oracle_reason(lim, paused, side, qty, typ, price, last, pos, working, n_working, sb, ib,
                  now):
    """The spec, written out independently of risk.py (exact fractions for bands and rates)."""
    if paused:
        return R.PAUSED
    if qty <= 0 or side not in (1, -1):
        return R.BAD_QTY
    if typ == LMT and price <= 0:
        return R.BAD_PRICE
    if qty > lim.max_order_qty:
        return R.MAX_ORDER_QTY
    if n_working + 1 > lim.max_working_orders:
        return R.MAX_WORKING_ORDERS
    worst = pos + side * (working + qty)  # every working order on that side filled
    if (worst > lim.max_position) if side == BUY else (worst < -lim.max_position):
        return R.MAX_POSITION
    if typ == MKT and last == 0:
        return R.NO_LAST_PRICE
    if typ == LMT and last:
        off = abs(price - last)
        if lim.price_band_ticks and off > lim.price_band_ticks:
            return R.PRICE_BAND
        pct = Fraction(str(lim.price_band_pct))
        if pct and Fraction(off) > pct / 100 * last:
            return R.PRICE_BAND
    if sb.level(now) < 1:
        return R.ORDER_RATE
    if ib.level(now) < 1:
        return R.INSTANCE_ORDER_RATE
    if sb.rate:
        sb.tokens -= 1
    if ib.rate:
        ib.tokens -= 1
    return R.NONE


# -- 10,000 random orders -----------------------------------------------------------------


def test_ten_thousand_random_orders_never_break_a_limit_and_counts_match_an_oracle():
    rng = random.Random(20240601)
    lim = RiskLimits(max_order_qty=5, max_position=8, max_working_orders=4, order_rate=1,
                     order_burst=2, instance_order_rate=2, instance_order_burst=4,
                     price_band_ticks=15, price_band_pct=0.1)
    n_strat, n_inst = 3, 2
    eng = RiskEngine(lim, n_strat)
    sbs = [OracleBucket(1, 2) for _ in range(n_strat)]
    ib = OracleBucket(2, 4)
    position = {(s, i): 0 for s in range(n_strat) for i in range(n_inst)}
    working: list[list] = [[] for _ in range(n_strat)]  # [instrument, side, leaves]
    last = [0] * n_inst  # no trade yet: market orders refused NO_LAST_PRICE
    tally = {r: 0 for r in R}
    paused = False
    now = 0
    sent = 0

    def same_side(s, i, side):
        return sum(w[2] for w in working[s] if w[0] == i and w[1] == side)

    def check_invariants():
        for s in range(n_strat):
            assert len(working[s]) <= lim.max_working_orders
            for i in range(n_inst):
                p = position[(s, i)]
                assert abs(p) <= lim.max_position, "a filled position past max_position"
                assert p + same_side(s, i, BUY) <= lim.max_position, "buy-side exposure"
                assert p - same_side(s, i, SELL) >= -lim.max_position, "sell-side exposure"

    while sent < 10_000:
        now += rng.choice([0, 0, 0, 1 * MS, 10 * MS, 100 * MS, 500 * MS])
        if sent > 200 and rng.random() < 0.3:
            i = rng.randrange(n_inst)
            last[i] = max(1000, (last[i] or rng.randint(2000, 20000)) + rng.randint(-20, 20))
        a = rng.random()
        if a < (0.05 if paused else 0.002):  # short pauses now and then
            paused = not paused
            eng.pause() if paused else eng.resume()
        elif a < 0.25:  # a fill of part or all of a random working order
            s = rng.randrange(n_strat)
            if working[s]:
                w = rng.choice(working[s])
                q = rng.randint(1, w[2])
                position[(s, w[0])] += w[1] * q
                w[2] -= q
                if w[2] == 0:
                    working[s].remove(w)
        elif a < 0.35:  # a cancel
            s = rng.randrange(n_strat)
            if working[s]:
                working[s].pop(rng.randrange(len(working[s])))
        else:  # a new order, often past some limit
            sent += 1
            s, i = rng.randrange(n_strat), rng.randrange(n_inst)
            side = rng.choice([BUY, SELL, BUY, SELL, 0] if rng.random() < 0.01 else [BUY, SELL])
            qty = rng.randint(-1, 3 * lim.max_order_qty) if rng.random() < 0.3 else \
                rng.randint(1, lim.max_order_qty)
            typ = MKT if rng.random() < 0.3 else LMT
            price = 0 if typ == MKT else (last[i] or 10000) + rng.randint(-30, 30)
            if typ == LMT and rng.random() < 0.01:
                price = rng.choice([0, -5])
            args = (side, qty, typ, price, last[i], position[(s, i)],
                    same_side(s, i, side), len(working[s]))
            got = eng.check(s, i, *args, now)
            want = oracle_reason(lim, paused, *args, sbs[s], ib, now)
            assert got == want, (sent, args, got, want)
            tally[want] += 1
            if got == R.NONE:
                working[s].append([i, side, qty])
            check_invariants()

    counts = {R(i).name: n for i, n in enumerate(eng.rejects) if n}
    print(f"\nreject counts by reason, 10,000 random orders: accepted={eng.accepted} {counts}")
    assert eng.accepted == tally[R.NONE]
    for r in R:
        if r != R.NONE:
            assert eng.rejects[r] == tally[r], r
    assert eng.accepted + sum(eng.rejects) == 10_000
    # the sequence reached every limit it was meant to try to break
    for r in (R.PAUSED, R.BAD_QTY, R.BAD_PRICE, R.MAX_ORDER_QTY, R.MAX_WORKING_ORDERS,
              R.MAX_POSITION, R.NO_LAST_PRICE, R.PRICE_BAND, R.ORDER_RATE,
              R.INSTANCE_ORDER_RATE):
        assert tally[r] > 0, r


# -- order rate -------------------------------------------------------------------------


def max_in_window(times: list[int], w: int) -> int:
    """The most events in any closed window [t, t + w] (times sorted)."""
    best, j = 0, 0
    for i, t in enumerate(times):
        while times[j] < t - w:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("rate,burst,irate,iburst", [(20, 5, 40, 8), (2.5, 3, 6, 4),
                                                     (1000, 1, 1500, 50)])
def test_accepted_orders_in_any_window_never_exceed_rate_times_window_plus_burst(
        rate, burst, irate, iburst):
    rng = random.Random(7)
    eng = RiskEngine(RiskLimits(**{**OPEN, "order_rate": rate, "order_burst": burst,
                                   "instance_order_rate": irate,
                                   "instance_order_burst": iburst}), 3)
    accepted: list[list[int]] = [[], [], []]
    everyone: list[int] = []
    now = 0
    period = S // int(max(rate, irate))  # offer much more than the limits allow, in bursts
    for _ in range(20_000):
        now += rng.choice([0, 0, 0, period // 7, period // 3, period, 5 * period])
        s = rng.randrange(3)
        r = order(eng, strategy=s, now=now)
        assert r in (R.NONE, R.ORDER_RATE, R.INSTANCE_ORDER_RATE)
        if r == R.NONE:
            accepted[s].append(now)
            everyone.append(now)
    for w in (0, 1, period // 2, period, 10 * period, S, 7 * S):
        for times in accepted:
            assert max_in_window(times, w) <= int(Fraction(rate) * w / S) + burst, w
        assert max_in_window(everyone, w) <= int(Fraction(irate) * w / S) + iburst, w


@pytest.mark.parametrize("rate", [3, 2.5, 7 / 3, 1000, 0.1])
def test_a_token_bucket_grants_the_kth_token_at_exactly_k_over_rate_with_no_drift(rate):
    """Drained at 0, token k is there at ceil(k / rate) ns and not a nanosecond before,
    for 100,000 tokens (a day and more at 1 order/s): the exact fraction, no rounding
    carried from one token to the next."""
    b = TokenBucket(rate, 2)
    assert b.take(0) and b.take(0) and not b.take(0)
    r = Fraction(rate).limit_denominator(1000)
    for k in range(1, 100_001):
        due = -(-k * S // r)  # ceil(k * 1e9 / rate)
        assert not b.take(due - 1)
        assert b.take(due)


def test_a_token_bucket_starts_full_and_ignores_time_going_backwards():
    b = TokenBucket(10, 3)
    assert [b.take(5 * S) for _ in range(4)] == [True, True, True, False]
    assert not b.take(4 * S)  # backwards: nothing added
    assert not b.take(5 * S + S // 10 - 1)
    assert b.take(5 * S + S // 10)


def test_a_rejected_order_does_not_spend_a_rate_token():
    eng = RiskEngine(RiskLimits(**{**OPEN, "max_position": 5, "order_rate": 1,
                                   "order_burst": 1, "instance_order_rate": 1,
                                   "instance_order_burst": 1}), 2)
    for _ in range(10):
        assert order(eng, qty=9) == R.MAX_POSITION
    assert order(eng, qty=1) == R.NONE
    assert order(eng, qty=1) == R.ORDER_RATE
    # the strategy bucket is not spent when the instance bucket refuses
    assert order(eng, strategy=1) == R.INSTANCE_ORDER_RATE
    assert eng.buckets[1].tokens(0) == 1
    assert order(eng, strategy=1, now=S) == R.NONE


# -- position, size, working orders -------------------------------------------------------


def test_max_position_counts_every_working_order_on_the_side_at_the_boundary():
    eng = RiskEngine(RiskLimits(**{**OPEN, "max_position": 8}), 1)
    assert order(eng, side=BUY, qty=1, position=5, working=2) == R.NONE  # 5 + 2 + 1 = 8
    assert order(eng, side=BUY, qty=2, position=5, working=2) == R.MAX_POSITION
    assert order(eng, side=SELL, qty=1, position=-5, working=2) == R.NONE
    assert order(eng, side=SELL, qty=2, position=-5, working=2) == R.MAX_POSITION
    # an order against the position: its own side's exposure counts
    assert order(eng, side=SELL, qty=16, position=8) == R.NONE  # worst case -8
    assert order(eng, side=SELL, qty=17, position=8) == R.MAX_POSITION


def test_after_a_lower_limit_is_reloaded_a_reducing_order_still_goes():
    eng = RiskEngine(RiskLimits(**{**OPEN, "max_position": 20}), 1)
    eng.reload(RiskLimits(**{**OPEN, "max_position": 5}))
    assert order(eng, side=SELL, qty=3, position=15) == R.NONE
    assert order(eng, side=BUY, qty=1, position=15) == R.MAX_POSITION
    assert order(eng, side=BUY, qty=3, position=-15) == R.NONE


def test_order_size_and_working_orders_at_the_boundary():
    eng = RiskEngine(RiskLimits(**{**OPEN, "max_order_qty": 5, "max_working_orders": 3}), 1)
    assert order(eng, qty=5) == R.NONE
    assert order(eng, qty=6) == R.MAX_ORDER_QTY
    assert order(eng, qty=0) == R.BAD_QTY
    assert order(eng, n_working=2) == R.NONE
    assert order(eng, n_working=3) == R.MAX_WORKING_ORDERS


def test_the_first_failing_check_in_the_documented_order_is_the_answer():
    lim = RiskLimits(max_order_qty=5, max_position=5, max_working_orders=2, order_rate=1,
                     order_burst=1, instance_order_rate=1, instance_order_burst=1,
                     price_band_ticks=10)
    everything = dict(qty=6, price=0, last=0, position=5, n_working=2)
    eng = RiskEngine(lim, 1)
    eng.pause()
    assert order(eng, **everything) == R.PAUSED
    eng.resume()
    assert order(eng, **{**everything, "qty": 0}) == R.BAD_QTY
    assert order(eng, **everything) == R.BAD_PRICE
    assert order(eng, **{**everything, "price": 1}) == R.MAX_ORDER_QTY
    assert order(eng, **{**everything, "price": 1, "qty": 1}) == R.MAX_WORKING_ORDERS
    assert order(eng, price=1, qty=1, position=5, last=100) == R.MAX_POSITION
    assert order(eng, price=1, qty=1, last=100) == R.PRICE_BAND
    assert order(eng, ord_type=MKT, price=0, qty=1, last=0) == R.NO_LAST_PRICE
    assert order(eng, price=100, qty=1, last=100) == R.NONE
    assert order(eng, price=100, qty=1, last=100) == R.ORDER_RATE
    assert eng.counts() == {name: 1 for name in (
        "PAUSED", "BAD_QTY", "BAD_PRICE", "MAX_ORDER_QTY", "MAX_WORKING_ORDERS",
        "MAX_POSITION", "PRICE_BAND", "NO_LAST_PRICE", "ORDER_RATE")}


# -- price band -------------------------------------------------------------------------


@pytest.mark.parametrize("ticks,pct,last,inside,outside", [
    (10, 0, 20000, [20010, 19990, 20000], [20011, 19989]),
    (0, 0.05, 20000, [20010, 19990], [20011, 19989]),  # exactly 0.05 % = 10 ticks
    (0, 0.05, 20001, [20011, 19991], [20012, 19990]),  # 10.0005 ticks
    (0, 0.3, 10000, [10030, 9970], [10031, 9969]),  # 0.3 is not exact in binary
    (0, 1, 7, [7], [8, 6]),  # 1 % of 7 is under a tick
    (5, 1, 10000, [10005, 9995], [10006, 9994]),  # the ticks band binds
    (50, 0.1, 10000, [10010, 9990], [10011, 9989]),  # the percent band binds
    (0, 0, 10000, [1, 10**9], []),  # both off
])
def test_prices_outside_the_band_are_refused_and_inside_accepted(ticks, pct, last, inside,
                                                                 outside):
    eng = RiskEngine(RiskLimits(**{**OPEN, "price_band_ticks": ticks, "price_band_pct": pct}),
                     1)
    for p in inside:
        assert order(eng, price=p, last=last) == R.NONE, p
    for p in outside:
        assert order(eng, price=p, last=last) == R.PRICE_BAND, p


def test_random_prices_against_the_band_agree_with_exact_arithmetic():
    rng = random.Random(3)
    for _ in range(5000):
        ticks = rng.choice([0, 1, 5, 20])
        pct = rng.choice([0, 0.01, 0.05, 0.1, 0.25, 1.5, 3])
        lim = RiskLimits(**{**OPEN, "price_band_ticks": ticks, "price_band_pct": pct})
        last = rng.randint(1, 30000)
        price = max(1, last + rng.randint(-60, 60))
        want = oracle_reason(lim, False, BUY, 1, LMT, price, last, 0, 0, 0,
                             OracleBucket(0, 0), OracleBucket(0, 0), 0)
        assert order(RiskEngine(lim, 1), price=price, last=last) == want


def test_market_orders_need_a_last_trade_and_limit_orders_do_not():
    eng = RiskEngine(RiskLimits(**{**OPEN, "price_band_ticks": 5}), 1)
    assert order(eng, ord_type=MKT, price=0, last=0) == R.NO_LAST_PRICE
    assert order(eng, ord_type=MKT, price=0, last=100) == R.NONE
    assert order(eng, price=12345, last=0) == R.NONE


# -- daily loss and the kill switch --------------------------------------------------------


def test_a_loss_crossing_the_limit_trips_the_kill_switch_until_resume():
    eng = RiskEngine(RiskLimits(**{**OPEN, "daily_loss_limit": 1000}), 2)
    assert not eng.on_pnl(0, -400)
    assert not eng.on_pnl(1, -599.99)  # the instance: -999.99
    assert order(eng) == R.NONE
    assert eng.on_pnl(1, -600.0)  # -1000: at the limit trips
    assert eng.kill_switch and eng.rejects[R.DAILY_LOSS] == 1
    assert not eng.on_pnl(0, -5000)  # already tripped: counted once
    for t in range(200):
        assert order(eng, now=t) == R.PAUSED
    assert eng.rejects[R.PAUSED] == 200
    eng.resume()
    assert order(eng) == R.NONE
    assert eng.on_pnl(0, -500)  # the instance still past the limit (-1100): trips again
    assert eng.rejects[R.DAILY_LOSS] == 2
    assert order(eng) == R.PAUSED
    # a raised limit lets it trade on
    eng.reload(RiskLimits(**{**OPEN, "daily_loss_limit": 5000}))
    eng.resume()
    assert not eng.on_pnl(0, -3000)
    assert order(eng) == R.NONE


def test_the_instance_figure_can_be_given_directly_and_zero_disables_the_limit():
    eng = RiskEngine(RiskLimits(**{**OPEN, "daily_loss_limit": 50}), 1)
    assert not eng.on_pnl(None, -49.5)
    assert eng.on_pnl(None, -50.5)
    off = RiskEngine(RiskLimits(**OPEN), 1)
    assert not off.on_pnl(None, -10**12) and not off.kill_switch


def test_pause_and_resume_by_hand():
    eng = RiskEngine(RiskLimits(**OPEN), 1)
    eng.pause()
    assert order(eng) == R.PAUSED
    eng.resume()
    assert order(eng) == R.NONE


# -- reload and validation ----------------------------------------------------------------


def test_reload_keeps_bucket_levels_so_it_is_never_a_fresh_burst():
    lim = RiskLimits(**{**OPEN, "order_rate": 1, "order_burst": 5})
    eng = RiskEngine(lim, 1)
    assert [order(eng) for _ in range(6)][-1] == R.ORDER_RATE
    eng.reload(RiskLimits(**{**OPEN, "order_rate": 1, "order_burst": 10}))
    assert order(eng) == R.ORDER_RATE
    assert order(eng, now=S) == R.NONE  # the rate still refills it
    # a smaller burst clamps what is there
    eng = RiskEngine(lim, 1)
    eng.reload(RiskLimits(**{**OPEN, "order_rate": 1, "order_burst": 2}))
    assert [order(eng) for _ in range(3)] == [R.NONE, R.NONE, R.ORDER_RATE]
    # a rate turned on starts from the burst; turned off, unlimited
    eng = RiskEngine(RiskLimits(**OPEN), 1)
    eng.reload(RiskLimits(**{**OPEN, "order_rate": 1, "order_burst": 1}))
    assert [order(eng) for _ in range(2)] == [R.NONE, R.ORDER_RATE]
    eng.reload(RiskLimits(**OPEN))
    assert all(order(eng) == R.NONE for _ in range(100))


@pytest.mark.parametrize("bad", [dict(max_position=0), dict(max_order_qty=1.5),
                                 dict(order_rate=-1), dict(price_band_pct=float("nan")),
                                 dict(order_rate=5, order_burst=0),
                                 dict(daily_loss_limit=float("inf"))])
def test_limits_refuse_bad_values_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad)) if "burst" not in str(bad) else
                       "order_burst"):
        RiskLimits(**bad)
