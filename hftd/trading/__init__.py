"""The trading domain: contracts, orders and their state machine, pre-trade risk, positions
and P&L, the simulated venue's fill model, the conditions strategy's rules.

Plain Python with no knowledge of rings or processes (NautilusTrader's layering: core types
-> model -> engines -> adapters): the executor and strategy stages host it, and it is tested
in-process, exhaustively. Prices are integers in the instrument's tick (fixed point); money
(P&L, fees, tax) is in the instrument's currency.

The shared vocabulary lives here so every module speaks it the same way.
"""

from __future__ import annotations

import enum

from ..events import Side  # one Side for the wire and the domain

__all__ = ["Side", "OrdType", "TimeInForce", "OrdState", "TERMINAL", "WORKING", "price_ok"]


class OrdType(enum.IntEnum):
    MARKET = 0
    LIMIT = 1


class TimeInForce(enum.IntEnum):
    """TAIFEX's: ROD (rest of day), IOC (fill what you can now, expire the rest), FOK (fill
    all now or nothing)."""

    ROD = 0
    IOC = 1
    FOK = 2


class OrdState(enum.IntEnum):
    PENDING_NEW = 0  # sent, not yet acknowledged by the venue
    NEW = 1  # working at the venue, nothing filled
    PARTIALLY_FILLED = 2  # working, some filled
    FILLED = 3  # terminal
    CANCELED = 4  # terminal: canceled with nothing or part filled
    REJECTED = 5  # terminal: refused (by risk or the venue), nothing filled
    EXPIRED = 6  # terminal: an IOC/FOK remainder the venue did not fill


def price_ok(ord_type: int, price: int) -> bool:
    """A limit order's price is > 0; a market order's is 0 (it has none)."""
    return price > 0 if ord_type == OrdType.LIMIT else price == 0


TERMINAL = frozenset({OrdState.FILLED, OrdState.CANCELED, OrdState.REJECTED, OrdState.EXPIRED})
WORKING = frozenset({OrdState.PENDING_NEW, OrdState.NEW, OrdState.PARTIALLY_FILLED})
