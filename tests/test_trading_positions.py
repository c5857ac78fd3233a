"""Contracts, positions and P&L: hand-computed TAIFEX examples (TX, TE with a flip, MTX tax
rounding) and a property test that money is conserved: over any fills that end flat, the
net realized P&L is exactly the cash that changed hands, computed by the test itself."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hftd.trading import Side
from hftd.trading.instruments import TAIFEX_DEFAULTS, Contract
from hftd.trading.positions import Portfolio, Position

BUY, SELL = Side.BUY, Side.SELL
TX, MTX, TE, TF = (Contract.taifex(s) for s in ("TX", "MTX", "TE", "TF"))


# --- contracts ----------------------------------------------------------------------------
def test_taifex_defaults_carry_the_exchange_specs():
    assert {s: (Contract.taifex(s).multiplier, str(Contract.taifex(s).tick_size))
            for s in TAIFEX_DEFAULTS} == {"TX": (200, "1"), "MTX": (50, "1"), "TMF": (10, "1"),
                                          "TE": (4000, "0.05"), "TF": (1000, "0.2")}
    assert [c.value_per_tick for c in (TX, MTX, TE, TF)] == [200.0, 50.0, 200.0, 200.0]
    assert (TE.point_per_tick, TE.currency, TE.tax_rate, TE.fee_per_lot) == (0.05, "TWD", 2e-5, 0)
    assert Contract.taifex("TX", fee_per_lot=30).fee_per_lot == 30.0
    with pytest.raises(ValueError, match="'XX' has no TAIFEX defaults"):
        Contract.taifex("XX")


def test_prices_convert_to_ticks_exactly_and_off_grid_prices_are_named():
    assert TE.to_ticks("300.05") == 6001 and TE.to_price(6001) == Decimal("300.05")
    assert TF.to_ticks(Decimal("1500.2")) == 7501 and TF.to_ticks(1500) == 7500
    assert TE.to_ticks(0.15) == 3  # a float by its shortest repr, "0.15"
    assert TX.to_ticks("20000") == 20000 and str(TX.to_price(20000)) == "20000"
    with pytest.raises(ValueError, match=r"price 300\.03 is not on the tick grid of TE "
                                         r"\(tick_size 0\.05\)"):
        TE.to_ticks("300.03")
    with pytest.raises(ValueError, match="not on the tick grid of TF"):
        TF.to_ticks("1500.1")
    for bad in ("abc", "nan", "inf", ""):
        with pytest.raises(ValueError, match="price"):
            TE.to_ticks(bad)


@pytest.mark.parametrize("field, value", [("tick_size", "0"), ("tick_size", "x"),
                                          ("multiplier", -1), ("fee_per_lot", "-1"),
                                          ("tax_rate", "1.5"), ("tax_rate", "nan")])
def test_a_bad_contract_field_is_named(field, value):
    spec = {"symbol": "TX", "tick_size": "1", "multiplier": 200, field: value}
    with pytest.raises(ValueError, match=field):
        Contract(**spec)


def test_notional_and_costs_of_one_side_of_one_trade():
    assert TX.notional(20000, 2) == 8_000_000.0  # 20,000 points * 200 NTD * 2 lots
    assert TX.costs(20000, 2) == (0.0, 160.0)  # 8,000,000 * 0.00002
    fee = Contract.taifex("TX", fee_per_lot=45)
    assert fee.costs(20000, 3) == (135.0, 240.0)
    assert TE.notional(6001, 1) == 1_200_200.0  # 300.05 points * 4,000


@pytest.mark.parametrize("contract, price, qty, tax", [
    (MTX, 8500, 1, 9.0),  # 8.5: half up (a bank's half-even would say 8)
    (MTX, 8500, 2, 17.0),  # rounded per trade, not per lot
    (TX, 20125, 1, 81.0),  # 80.5 -> 81
    (TX, 20124, 1, 80.0),  # 80.496 -> 80
    (Contract.taifex("TMF"), 20025, 1, 4.0),  # 4.005 -> 4
    (TE, 6001, 1, 24.0),  # 24.004 -> 24
    (TE, 6250, 1, 25.0),  # 312.5 points: exactly 25
    (TF, 9375, 1, 38.0),  # 1875 points * 1000 * 0.00002 = 37.5 -> 38
])
def test_twd_tax_is_rounded_per_trade_to_the_ntd_half_up(contract, price, qty, tax):
    assert contract.tax(price, qty) == tax
    exact = (contract.to_price(price) * Decimal(contract.multiplier) * qty * Decimal("0.00002"))
    assert tax == float(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def test_other_currencies_keep_the_exact_tax():
    es = Contract("ES", "0.25", 50, currency="USD", fee_per_lot=1.5, tax_rate="0.00002")
    assert es.value_per_tick == 12.5
    assert es.tax(20001, 1) == pytest.approx(5000.25 * 50 * 0.00002)  # 5.00025, not 5
    assert es.costs(20001, 2) == (3.0, pytest.approx(10.0005))


# --- positions: hand-computed ----------------------------------------------------------------
def test_tx_adds_partially_closes_and_closes_at_the_average_cost():
    p = Position(TX)
    p.apply_fill(BUY, 2, 20000)  # tax 160
    p.apply_fill(BUY, 1, 20030)  # tax 80.12 -> 80; average (2*20000 + 20030) / 3 = 20010
    assert (p.qty, p.avg_price, p.realized, p.tax) == (3, 20010.0, 0.0, 240.0)
    assert p.unrealized(20020) == 10 * 3 * 200
    p.apply_fill(SELL, 2, 20050)  # closes 2 at +40: 16,000; tax 160.4 -> 160; average stays
    assert (p.qty, p.avg_price, p.realized, p.tax) == (1, 20010.0, 16_000.0, 400.0)
    assert p.unrealized(20000) == -2000.0 and p.pnl(20000) == 16_000 - 2000 - 400
    p.apply_fill(SELL, 1, 19990)  # closes the last at -20: -4,000; tax 79.96 -> 80
    assert (p.qty, p.avg_price, p.realized, p.tax, p.volume) == (0, 0.0, 12_000.0, 480.0, 6)
    assert p.unrealized(25000) == 0.0 and p.pnl(25000) == 11_520.0
    # the same as the cash: -(2*20000 + 20030)*200 + (2*20050 + 19990)*200 = 12,000


def test_te_flips_from_long_to_short_and_the_rest_opens_at_the_fill():
    p = Position(TE)  # tick 0.05 point, 4,000 NTD a point: 200 NTD a tick
    p.apply_fill(BUY, 3, TE.to_ticks("300.00"))  # tax 300*4000*3*0.00002 = 72
    p.apply_fill(SELL, 5, TE.to_ticks("300.50"))  # closes 3 at +0.5 point: 6,000; short 2
    assert (p.qty, p.avg_price, p.realized) == (-2, 6010.0, 6000.0)
    assert p.tax == 72 + 120  # 300.5*4000*5*0.00002 = 120.2 -> 120
    p.apply_fill(BUY, 1, TE.to_ticks("300.25"))  # covers 1 at +0.25 point: 1,000
    assert (p.qty, p.avg_price, p.realized, p.tax) == (-1, 6010.0, 7000.0, 216.0)
    last = TE.to_ticks("300.10")
    assert p.unrealized(last) == 0.4 * 4000  # short 1 from 300.50, now 300.10
    assert p.pnl(last) == 7000 + 1600 - 216
    p.apply_fill(BUY, 3, TE.to_ticks("301.00"))  # flips back: covers 1 at -0.5 point, long 2
    assert (p.qty, p.avg_price, p.realized) == (2, 6020.0, 5000.0)


def test_a_short_position_gains_when_the_price_falls_and_fees_count_per_lot_and_side():
    p = Position(Contract.taifex("MTX", fee_per_lot=20))
    p.apply_fill(SELL, 4, 17000)  # tax 17000*50*4*0.00002 = 68
    p.apply_fill(BUY, 1, 16990)  # +10 points * 50: 500; tax 16.99 -> 17
    assert (p.qty, p.realized, p.fees, p.tax) == (-3, 500.0, 100.0, 85.0)
    assert p.unrealized(16980) == 20 * 3 * 50 and p.pnl(16980) == 500 + 3000 - 100 - 85


def test_portfolio_keeps_positions_per_strategy_and_instrument_and_totals_them():
    pf = Portfolio([TX, TE])
    pf.apply_fill(0, 0, BUY, 1, 20000)
    pf.apply_fill(0, 1, SELL, 2, 6000)
    pf.apply_fill(1, 0, SELL, 1, 20010)
    assert [pf.net_qty(s, i) for s, i in ((0, 0), (0, 1), (1, 0), (1, 1))] == [1, -2, -1, 0]
    assert pf.position(0, 0) is pf.position(0, 0)
    last = {0: 20005, 1: 5990}
    snap = pf.snapshot(last)
    assert snap["currency"] == "TWD" and len(snap["positions"]) == 3
    row = snap["positions"][1]
    assert (row["symbol"], row["qty"], row["avg_price"], row["last"], row["unrealized"]) == \
        ("TE", -2, 300.0, 299.5, 10 * 2 * 200)
    s0, s1 = snap["strategies"][0], snap["strategies"][1]
    assert s0["unrealized"] == 5 * 200 + 4000 and s1["unrealized"] == 5 * 200
    assert s0["tax"] == 80 + 48 and s1["tax"] == 80  # 20010*200*0.00002 = 80.04
    assert snap["total"]["pnl"] == pytest.approx(s0["pnl"] + s1["pnl"])
    assert pf.pnl(last, 0) == s0["pnl"] and pf.pnl(last) == snap["total"]["pnl"]
    assert snap["total"]["volume"] == 4
    # no last price: the open position counts unrealized 0
    blind = pf.snapshot({})
    assert blind["total"]["unrealized"] == 0.0 and blind["positions"][0]["last"] is None


def test_portfolio_refuses_mixed_currencies_and_unknown_instruments():
    with pytest.raises(ValueError, match="ES is in USD but TX in TWD"):
        Portfolio({0: TX, 3: Contract("ES", "0.25", 50, currency="USD")})
    with pytest.raises(KeyError, match="instrument 5"):
        Portfolio([TX]).apply_fill(0, 5, BUY, 1, 100)


# --- property: money is conserved --------------------------------------------------------------
def cash_of(contract: Contract, side: int, qty: int, price: int) -> Decimal:
    """Cash of one fill, the test's own way (Decimal, exact): what was paid or received at
    the contract's value, less the fee and the half-up-rounded tax."""
    value = Decimal(price) * contract.tick_size * Decimal(contract.multiplier)
    tax = (value * qty * Decimal("0.00002")).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return -side * qty * value - Decimal(str(contract.fee_per_lot)) * qty - tax


fills = st.lists(st.tuples(st.sampled_from([BUY, SELL]), st.integers(1, 30),
                           st.integers(1, 40_000)), max_size=60)


@settings(max_examples=300, deadline=None)
@given(symbol=st.sampled_from(sorted(TAIFEX_DEFAULTS)), fee=st.sampled_from([0, 12, 45]),
       fills=fills, close_at=st.integers(1, 40_000))
def test_over_fills_that_end_flat_net_realized_pnl_is_the_cash(symbol, fee, fills, close_at):
    c = Contract.taifex(symbol, fee_per_lot=fee)
    p = Position(c)
    cash, net, scale = Decimal(0), 0, 1.0
    for side, qty, price in fills:
        p.apply_fill(side, qty, price)
        cash += cash_of(c, side, qty, price)
        net += side * qty
        scale += qty * price * c.value_per_tick
        # marking to the last fill: net P&L is the cash plus the open position's value
        assert p.qty == net
        mark = float(cash) + net * price * c.value_per_tick
        assert p.pnl(price) == pytest.approx(mark, rel=0, abs=1e-9 * scale)
    if net:  # close what is open
        side = SELL if net > 0 else BUY
        p.apply_fill(side, abs(net), close_at)
        cash += cash_of(c, side, abs(net), close_at)
        scale += abs(net) * close_at * c.value_per_tick
    assert p.qty == 0 and p.avg_price == 0.0 and p.unrealized(close_at) == 0.0
    assert p.realized - p.fees - p.tax == pytest.approx(float(cash), rel=0, abs=1e-9 * scale)
    assert p.pnl(12345) == p.realized - p.fees - p.tax
