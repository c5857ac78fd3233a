"""Instruments as contracts: what turns an integer price in ticks into money.

A price travels as an int count of the instrument's tick; the contract holds the tick size
(exactly, as a Decimal, for parsing and printing), the multiplier (currency per index
point) and the per-side costs. The one idea: everything a fill needs is precomputed at
construction, so the per-fill arithmetic is int and float only (no Decimal on the hot path)
and the transaction tax is still exact: the tax rate and the value of a tick are kept as
integer ratios, and TWD tax is rounded per trade with integer arithmetic.

Costs of one side of one trade (a fill), as TAIFEX computes them:
    fee = fee_per_lot * qty                      (the broker's and exchange's per-lot fee)
    tax = tax_rate * notional, notional = price * multiplier * qty
For currency TWD the tax of each trade is rounded to the integer NTD, half up (TAIFEX and
the brokers round each trade's futures transaction tax 四捨五入 to the yuan: MTX at 8,500
points is 8,500 * 50 * 0.00002 = 8.5, charged 9). Other currencies keep the exact amount.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction

# Currencies whose tax is rounded to the integer unit per trade (half up).
INTEGER_TAX_CURRENCIES = frozenset({"TWD"})

# TAIFEX index futures: multiplier in NTD per index point, tick in points, transaction tax
# 0.00002 of notional per side (futures transaction tax, stock index futures). Fees are the
# broker's and vary, so they are left to the config (default 0).
TAIFEX_DEFAULTS: dict[str, dict] = {
    "TX": {"multiplier": 200, "tick_size": "1", "tax_rate": "0.00002", "currency": "TWD"},
    "MTX": {"multiplier": 50, "tick_size": "1", "tax_rate": "0.00002", "currency": "TWD"},
    "TMF": {"multiplier": 10, "tick_size": "1", "tax_rate": "0.00002", "currency": "TWD"},
    "TE": {"multiplier": 4000, "tick_size": "0.05", "tax_rate": "0.00002", "currency": "TWD"},
    "TF": {"multiplier": 1000, "tick_size": "0.2", "tax_rate": "0.00002", "currency": "TWD"},
}


def _exact(name: str, v) -> Decimal:
    """`v` (str, int, Decimal, or float by its shortest repr) as a finite Decimal."""
    if isinstance(v, float):
        v = repr(v)  # the shortest round-trip string: "0.05", not 0.05000000000000000278
    try:
        d = Decimal(v)
    except (decimal.InvalidOperation, TypeError, ValueError):
        raise ValueError(f"{name} {v!r} is not a number") from None
    if not d.is_finite():
        raise ValueError(f"{name} {v!r} is not a finite number")
    return d


@dataclass(frozen=True, slots=True)
class Contract:
    """One tradable contract. `tick_size`, `multiplier`, `fee_per_lot` and `tax_rate` accept
    a decimal string, int, Decimal or float; they are validated (errors name the field) and
    stored as Decimal (`tick_size`) or float.

    Precomputed for the hot path: `point_per_tick` (float index points per tick) and
    `value_per_tick` (float currency per tick per lot = tick_size * multiplier)."""

    symbol: str
    tick_size: Decimal
    multiplier: float
    currency: str = "TWD"
    fee_per_lot: float = 0.0
    tax_rate: float = 0.0
    point_per_tick: float = field(init=False)
    value_per_tick: float = field(init=False)
    # The tax of one trade, exactly: price_ticks * qty * _tax_num / _tax_den (ints).
    _tax_num: int = field(init=False, repr=False, compare=False)
    _tax_den: int = field(init=False, repr=False, compare=False)
    _round_tax: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        tick = _exact("tick_size", self.tick_size)
        mult = _exact("multiplier", self.multiplier)
        fee = _exact("fee_per_lot", self.fee_per_lot)
        rate = _exact("tax_rate", self.tax_rate)
        if tick <= 0:
            raise ValueError(f"tick_size {self.tick_size!r} of {self.symbol} must be positive")
        if mult <= 0:
            raise ValueError(f"multiplier {self.multiplier!r} of {self.symbol} must be positive")
        if fee < 0:
            raise ValueError(f"fee_per_lot {self.fee_per_lot!r} of {self.symbol} must be >= 0")
        if not 0 <= rate < 1:
            raise ValueError(f"tax_rate {self.tax_rate!r} of {self.symbol} must be in [0, 1)")
        tax = Fraction(tick) * Fraction(mult) * Fraction(rate)  # per tick of price per lot
        put = object.__setattr__  # frozen: derived fields are set once, here
        put(self, "tick_size", tick)
        put(self, "multiplier", float(mult))
        put(self, "fee_per_lot", float(fee))
        put(self, "tax_rate", float(rate))
        put(self, "point_per_tick", float(tick))
        put(self, "value_per_tick", float(tick * mult))
        put(self, "_tax_num", tax.numerator)
        put(self, "_tax_den", tax.denominator)
        put(self, "_round_tax", self.currency in INTEGER_TAX_CURRENCIES)

    @classmethod
    def taifex(cls, symbol: str, **overrides) -> "Contract":
        """The TAIFEX_DEFAULTS contract for `symbol`, with `overrides` (fee_per_lot, say)."""
        try:
            spec = TAIFEX_DEFAULTS[symbol]
        except KeyError:
            raise ValueError(f"{symbol!r} has no TAIFEX defaults (known: "
                             f"{', '.join(TAIFEX_DEFAULTS)})") from None
        return cls(symbol=symbol, **{**spec, **overrides})

    # --- money (hot path: plain int/float arithmetic) -----------------------------------
    def notional(self, price_ticks: int, qty: int) -> float:
        """Contract value of `qty` lots at `price_ticks`, in currency."""
        return price_ticks * qty * self.value_per_tick

    def fee(self, qty: int) -> float:
        return self.fee_per_lot * qty

    def tax(self, price_ticks: int, qty: int) -> float:
        """Transaction tax of one side of one trade; TWD: rounded to the NTD, half up."""
        a = abs(price_ticks * qty) * self._tax_num  # tax = a / den, exactly
        den = self._tax_den
        if self._round_tax:
            return float((2 * a + den) // (2 * den))  # floor(a/den + 1/2): half up, in ints
        return a / den

    def costs(self, price_ticks: int, qty: int) -> tuple[float, float]:
        """(fee, tax) of one side of one trade of `qty` lots at `price_ticks`."""
        return self.fee_per_lot * qty, self.tax(price_ticks, qty)

    # --- prices (config, control socket, reports: exact) --------------------------------
    def to_ticks(self, price) -> int:
        """A price (decimal string, Decimal, int; a float by its repr) as an int of ticks;
        a price off the tick grid raises ValueError."""
        p = _exact("price", price)
        try:
            q, r = divmod(p, self.tick_size)  # exact: no rounding to the context's precision
        except decimal.InvalidOperation:
            raise ValueError(f"price {price} is out of range for {self.symbol}") from None
        if r:
            raise ValueError(f"price {price} is not on the tick grid of {self.symbol} "
                             f"(tick_size {self.tick_size})")
        return int(q)

    def to_price(self, ticks: int) -> Decimal:
        return ticks * self.tick_size
