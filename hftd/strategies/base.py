"""The strategy API: subclass `Strategy`, override the callbacks, trade with buy/sell.

    class MyStrategy(Strategy):
        def on_tick(self, tick):
            if tick.price > self.params["level"] and self.position(tick.instrument) == 0:
                self.buy(tick.instrument, 1)

Callbacks run in the strategy process, one at a time, in order: `on_start`, then
`on_tick(tick)` for each tick routed to this strategy and `on_report(report)` for each
order report (ack, reject, fill), then `on_stop`. Prices are integers in the instrument's
minimum tick. `buy`/`sell` never block: an order the orders ring has no room for waits in
the stage (which stops taking ticks until it is sent) and is never dropped.
"""

from __future__ import annotations

from ..events import OrderReport, Side, Tick


class Strategy:
    def __init__(self, api: "StrategyApi", params: dict):
        self.api = api
        self.params = dict(params)

    # --- callbacks -----------------------------------------------------------------------
    def on_start(self) -> None:
        pass

    def on_tick(self, tick: Tick) -> None:
        pass

    def on_report(self, report: OrderReport) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def on_reload(self) -> None:
        """`hftd reload` (or SIGHUP) changed this strategy's params: `self.params` holds the
        new ones. Override to re-read them (the default does nothing more)."""

    # --- trading ------------------------------------------------------------------------
    def buy(self, instrument: int, qty: int, price: int = 0) -> int:
        """Send a buy order (price 0 = market); returns its order id, or 0 when trading is
        paused (the kill switch)."""
        return self.api.submit(instrument, Side.BUY, qty, price)

    def sell(self, instrument: int, qty: int, price: int = 0) -> int:
        return self.api.submit(instrument, Side.SELL, qty, price)

    def position(self, instrument: int) -> int:
        """Filled net position (long > 0)."""
        return self.api.positions[instrument]

    def working(self, instrument: int) -> int:
        """Net quantity of orders sent and not yet filled or rejected (buys > 0)."""
        return self.api.working[instrument]

    def symbol(self, instrument: int) -> str:
        return self.api.symbols[instrument]

    def instrument_id(self, symbol: str) -> int:
        return self.api.symbols.index(symbol)


class StrategyApi:
    """What the stage gives a strategy: order submission and the book-keeping behind it."""

    def __init__(self, symbols: list[str], submit):
        self.symbols = symbols
        self.positions = [0] * len(symbols)
        self.working = [0] * len(symbols)
        self.last_price = [0] * len(symbols)
        self.paused = False  # kill switch: while on, buy/sell send nothing and return 0
        self._submit = submit

    def submit(self, instrument: int, side: int, qty: int, price: int) -> int:
        if not 0 <= instrument < len(self.symbols):
            raise ValueError(f"unknown instrument id {instrument}")
        if qty <= 0:
            raise ValueError(f"order quantity must be > 0, got {qty}")
        self.working[instrument] += side * qty
        return self._submit(instrument, side, qty, price, self.last_price[instrument])
