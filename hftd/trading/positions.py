"""Positions and P&L per (strategy, instrument), in the instrument's currency.

The one idea: average cost. A fill that adds to a position moves its average price (the
fill-weighted mean, in float ticks); a fill that reduces it realizes (price - average) *
closed lots * value per tick and leaves the average alone; a fill that flips it closes the
old side at the average and opens the rest at the fill price. (Exchanges offset lots FIFO;
over a round trip back to flat the realized P&L is the same either way, only how it is
split between intermediate reductions differs. Average cost is what brokers' position
screens show.) Fees and tax are charged per fill, per side (Contract.fee / Contract.tax).

    net P&L = realized + unrealized(last) - fees - tax
    unrealized(last) = (last - average) * net qty * value per tick

Per fill: float and int arithmetic only, no allocation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .instruments import Contract


class Position:
    """Net position of one strategy in one instrument (long > 0). Money in currency;
    `avg_price` in float ticks (0 when flat); `volume` is lots traded, both sides."""

    __slots__ = ("strategy", "instrument", "contract", "qty", "avg_price", "realized", "fees",
                 "tax", "volume", "_vpt")

    def __init__(self, contract: Contract, strategy: int = 0, instrument: int = 0):
        self.strategy = strategy
        self.instrument = instrument
        self.contract = contract
        self._vpt = contract.value_per_tick
        self.qty = 0
        self.avg_price = 0.0
        self.realized = 0.0
        self.fees = 0.0
        self.tax = 0.0
        self.volume = 0

    def apply_fill(self, side: int, qty: int, price_ticks: int) -> None:
        """One fill of `qty` > 0 lots on `side` (+1 buy, -1 sell) at `price_ticks`."""
        c = self.contract
        self.fees += c.fee_per_lot * qty
        self.tax += c.tax(price_ticks, qty)
        self.volume += qty
        pos = self.qty
        new = pos + side * qty
        if pos == 0 or (pos > 0) == (side > 0):  # opening or adding: a new average
            self.avg_price = (self.avg_price * abs(pos) + price_ticks * qty) / abs(new)
        else:  # reducing, closing or flipping: realize the closed lots against the average
            closed = qty if qty < abs(pos) else abs(pos)
            # a long gains when the price rose; a short when it fell
            gain = price_ticks - self.avg_price if pos > 0 else self.avg_price - price_ticks
            self.realized += gain * closed * self._vpt
            if new == 0:
                self.avg_price = 0.0
            elif (new > 0) != (pos > 0):  # flipped: the rest opened at this fill
                self.avg_price = float(price_ticks)
        self.qty = new

    def unrealized(self, last_price_ticks: int) -> float:
        """At the last trade price; 0 when flat or with no price yet (0: a price is > 0)."""
        if not (self.qty and last_price_ticks):
            return 0.0
        return (last_price_ticks - self.avg_price) * self.qty * self._vpt

    def values(self) -> tuple:
        """(qty, avg_price, realized, fees, tax, volume): what `restore` takes back."""
        return self.qty, self.avg_price, self.realized, self.fees, self.tax, self.volume

    def restore(self, qty: int, avg_price: float, realized: float, fees: float, tax: float,
                volume: int) -> None:
        """Take back a position kept elsewhere (a state store, a snapshot)."""
        self.qty, self.avg_price, self.realized = qty, avg_price, realized
        self.fees, self.tax, self.volume = fees, tax, volume

    def net(self, last_price_ticks: int) -> float:
        """Net P&L marked at `last_price_ticks` (0: not marked, no unrealised P&L yet)."""
        return self.realized - self.fees - self.tax + self.unrealized(last_price_ticks)

    def pnl(self, last_price_ticks: int) -> float:
        """Net P&L: realized + unrealized at `last_price_ticks` - fees - tax."""
        return self.realized + self.unrealized(last_price_ticks) - self.fees - self.tax

    def __repr__(self) -> str:
        return (f"Position(strategy={self.strategy}, {self.contract.symbol}, qty={self.qty}, "
                f"avg={self.avg_price:g}, realized={self.realized:g}, fees={self.fees:g}, "
                f"tax={self.tax:g})")


class Portfolio:
    """Positions by (strategy, instrument), created on first use, with totals per strategy
    and for the instance. `contracts` maps an instrument index to its Contract (a sequence
    is indexed by position). Totals add money, so every contract has one currency."""

    def __init__(self, contracts: Mapping[int, Contract] | Sequence[Contract]):
        if not isinstance(contracts, Mapping):
            contracts = dict(enumerate(contracts))
        self.contracts: dict[int, Contract] = dict(contracts)
        currencies = {c.currency for c in self.contracts.values()}
        if len(currencies) > 1:
            first = next(iter(self.contracts.values()))
            odd = next(c for c in self.contracts.values() if c.currency != first.currency)
            raise ValueError(f"instruments: {odd.symbol} is in {odd.currency} but "
                             f"{first.symbol} in {first.currency}: P&L totals need one currency")
        self.currency = currencies.pop() if currencies else ""
        self.positions: dict[tuple[int, int], Position] = {}

    def position(self, strategy: int, instrument: int) -> Position:
        """The position (created flat on first use); an executor may keep the reference."""
        p = self.positions.get((strategy, instrument))
        if p is None:
            try:
                contract = self.contracts[instrument]
            except KeyError:
                raise KeyError(f"instrument {instrument} has no contract") from None
            p = self.positions[(strategy, instrument)] = Position(contract, strategy, instrument)
        return p

    def net_qty(self, strategy: int, instrument: int) -> int:
        p = self.positions.get((strategy, instrument))
        return p.qty if p is not None else 0

    def apply_fill(self, strategy: int, instrument: int, side: int, qty: int,
                   price_ticks: int) -> Position:
        p = self.position(strategy, instrument)
        p.apply_fill(side, qty, price_ticks)
        return p

    def pnl(self, last_prices: Mapping[int, int], strategy: int | None = None) -> float:
        """Net P&L of `strategy` (None: the instance); an instrument without a last price
        counts unrealized 0."""
        total = 0.0
        for (s, i), p in self.positions.items():
            if strategy is None or s == strategy:
                last = last_prices.get(i)
                total += p.realized - p.fees - p.tax
                if last is not None:
                    total += p.unrealized(last)
        return total

    # --- reporting (status, --report, /metrics, end of run: not the hot path) ------------
    def snapshot(self, last_prices: Mapping[int, int]) -> dict:
        """Every position, totals per strategy and for the instance, as plain data.

        `last_prices` maps an instrument index to its last trade in ticks; an open
        position whose instrument has none counts unrealized 0 (and shows last None)."""
        rows = []
        by_strategy: dict[int, dict] = {}
        total = _zero_totals()
        for (s, i), p in sorted(self.positions.items()):
            last = last_prices.get(i)
            unreal = p.unrealized(last) if last is not None else 0.0
            pt = p.contract.point_per_tick
            row = {"strategy": s, "instrument": i, "symbol": p.contract.symbol, "qty": p.qty,
                   "avg_price": p.avg_price * pt, "avg_price_ticks": p.avg_price,
                   "last": None if last is None else last * pt, "realized": p.realized,
                   "unrealized": unreal, "fees": p.fees, "tax": p.tax,
                   "pnl": p.realized + unreal - p.fees - p.tax, "volume": p.volume}
            rows.append(row)
            for t in (by_strategy.setdefault(s, _zero_totals()), total):
                for k in t:
                    t[k] += row[k]
        return {"currency": self.currency, "positions": rows, "strategies": by_strategy,
                "total": total}


def _zero_totals() -> dict:
    return {"realized": 0.0, "unrealized": 0.0, "fees": 0.0, "tax": 0.0, "pnl": 0.0,
            "volume": 0}
