"""The strategy API: subclass `Strategy`, override the callbacks, trade with buy/sell/cancel/
replace (vn.py's CTA template and NautilusTrader's Strategy, cut to what a trader uses).

    class Breakout(Strategy):
        def on_start(self):
            self.level = int(self.params["level"])

        def on_tick(self, tick):                  # tick.instrument, tick.price (ticks), tick.qty
            i = tick.instrument
            if tick.price > self.level and self.position(i) + self.working(i) == 0:
                self.buy(i, 1)                     # market; buy(i, 1, price) is a limit order

        def on_fill(self, fill):                  # fill.order_id, instrument, side, qty, price
            self.sell(fill.instrument, fill.qty, fill.price + 10)   # take profit, resting

Callbacks run in the strategy process, one at a time, in order: `on_start`; `on_load(state)`
if a saved state exists; then, as they come, `on_tick(tick)` for each tick routed to this
strategy, `on_fill(fill)` and `on_order(order)` for what the executor reports about this
strategy's orders, `on_timer()` every `timer_s` seconds if the class sets it, `on_reload()`
when `hftd reload` changed the params, `on_command(name, args)` for a command from the CLI,
`on_save()` whenever the state is saved; `on_stop()` last (then `on_save()` once more).
Reports that arrive after `on_stop` (the executor canceling what was left working) still
update positions and orders, but call nothing.

- `on_ticks(ticks)`, for vectorised work: a strategy class that defines it is handed each run
  of ticks the stage takes (up to `[[strategies]] batch`) as one `hftd.events.TickColumns`,
  numpy int64 columns `seq`, `t_ingest`, `instrument`, `price`, `qty`, `t_exchange`, in
  arrival order, instead of `on_tick` per tick (no Tick objects are made). Ticks routed twice
  are already removed and `last_price` is already updated to the run's last. An order sent
  from it carries the run's last tick as its cause (the simulated venue fills it after that
  tick) and the run's oldest t_ingest (tick-to-trade counts the run's wait). A run is handled
  at most once: if the process dies inside the call, its successor goes on after the run.
- `on_order(order)`: the order's state changed (acknowledged, rejected with `order.reason`,
  partly or fully filled, canceled, expired, replaced), or a cancel/replace of it was
  refused (the order unchanged). `order` is the strategy's own `hftd.trading.orders.Order`
  (client_id, instrument, side, qty, price, ord_type, tif, state, filled, leaves,
  avg_fill_price): read it, keep it, never change it.
- `on_fill(fill)`: one fill, before the `on_order` of the same report. `fill` is the
  OrderReport: order_id, instrument, side, qty, price (ticks), and the order's cumulative
  `filled` and remaining `leaves`.

Actions never block: a request the orders ring has no room for waits in the stage (which
takes no more ticks until it is sent) and is never dropped.

- `buy(instrument, qty, price=0, tif=ROD)` / `sell(...)`: a market order (price 0) or a limit
  order at `price` ticks, time in force ROD, IOC or FOK (`hftd.trading.TimeInForce`).
  Returns the client order id, or 0 when the kill switch is on (nothing is sent).
- `cancel(order_id)`: True if a cancel was sent (the order is working), else False. Allowed
  while the kill switch is on.
- `replace(order_id, qty=None, price=None)`: new total quantity and/or price of a working
  order; True if sent. Refused (False) while the kill switch is on.

Queries (the strategy's own view, from the reports it has had): `position(instrument)` (net
filled lots, long > 0), `working(instrument)` (net leaves of its working orders, buys > 0),
`working_on(instrument, side)` (leaves of its working orders on that side, 1 buys, -1 sells),
`working_orders(instrument=None)` (the working `Order`s), `order(order_id)`, `pnl(instrument
=None)` (net P&L in the instruments' currency: realised + unrealised at the last price this
strategy saw - fees - tax, with the contracts' multipliers: hftd.trading.positions),
`last_price(instrument)` (ticks; 0 before its first tick), `symbol(i)`, `instrument_id(sym)`,
`contract(i)`.

Prices are integers in the instrument's tick. A strategy trades only the instruments routed
to it (`[[strategies]] instruments`); an order for another one, a quantity <= 0 or a negative
price raises ValueError (a bug in the strategy, not a market event).

State that outlives the process (a kill -9, a restart of the daemon): the strategy's own
indicators, phases and the like. The stage keeps what `on_save()` returns in one file,
`<state dir>/<name>.strategy.json`, and gives it back to `on_load(state)` in the next process.

- `on_save() -> object | None`: the state as builtins (dict, list, str, int, float, bool,
  None) or msgspec Structs; None: nothing to save (an existing file is left as it is).
  Called when the strategy calls `save()`, when it called `mark_dirty()` and `save_every_s`
  has passed since the last save, after `on_stop`, and when the process leaves on a signal.
- `on_load(state)`: what `on_save` last returned, decoded from JSON (Structs come back as
  dicts): once, after `on_start` and before the first tick, only when a saved state exists.
  Rebuild from it; raise ValueError naming what is wrong if it cannot be used. A state file
  that cannot be read, is not JSON, is another class's or that `on_load` refuses stops the
  strategy at start with one line naming the file (exit 2): fix it or move it away; it is
  never replaced by a fresh state. (`StateError` from `on_start` does the same, for a file
  of the strategy's own.)
- `save() -> bool`: save now, synchronously (`on_save`, then the file replaced atomically),
  e.g. right after sending an order. A save that fails (a bug in `on_save`, a full disk) is
  counted (`save_errors`), said on stderr, and trading goes on: it returns False. A `save()`
  from `on_start`, while a saved state is still to be given to `on_load`, is done right after
  `on_load` (it would otherwise replace the saved state by a fresh one).
- `mark_dirty()` with `save_every_s > 0`: "changed, save soon": saved once `save_every_s`
  has passed since the last save (checked once per pass of the stage, like the timer). With
  `save_every_s` 0, a state marked dirty is saved at the next `save()` or at stop only.

A save writes to the page cache, no fsync (a killed process loses nothing it wrote; only a
crash of the OS could); the saves at stop and on a signal are fsynced. What a kill -9 takes
is what changed since the last save.
"""

from __future__ import annotations

import time

from ..events import (ORDER_ID_SHIFT, OrderAction, OrderReport, OrderRequest, RejectReason,
                      ReportKind, Side, Tick, TickColumns)
from ..trading import OrdState, OrdType, TimeInForce, price_ok
from ..trading.orders import IdSource, Order, OrderBook
from ..trading.positions import Portfolio

_FILL = ReportKind.FILL
_CANCEL_REJECTED, _UNKNOWN = ReportKind.CANCEL_REJECTED, RejectReason.UNKNOWN_ORDER
_FILLED = int(OrdState.FILLED)  # states below it are working
_NEW, _CANCEL, _REPLACE = OrderAction.NEW, OrderAction.CANCEL, OrderAction.REPLACE
_MARKET, _LIMIT = OrdType.MARKET, OrdType.LIMIT
ROD, IOC, FOK = TimeInForce.ROD, TimeInForce.IOC, TimeInForce.FOK


class StateError(ValueError):
    """Saved state that cannot be used: raised from on_start (about a file of the strategy's
    own) it stops the strategy at start with its message in one line, which should name the
    file and what is wrong (from on_load, any exception does that)."""


class Strategy:
    timer_s: float = 0.0  # > 0: `on_timer` is called about this often (set it in the class or in on_start)
    # > 0: a state marked changed (`mark_dirty`) is saved at most this often (class or on_start)
    save_every_s: float = 0.0

    def __init__(self, api: "StrategyApi", params: dict):
        self.api = api
        self.params = dict(params)
        self.name = api.name  # the [[strategies]] name

    def state_dir(self) -> str:
        """A directory of this instance (ours, mode 0700) for what must outlive a restart of
        the strategy or of the daemon; made on first use."""
        from ..identity import check_state_dir

        return check_state_dir(self.api.state_dir)

    def state_file(self) -> str:
        """The file the host keeps this strategy's saved state in ("" if it keeps none)."""
        return self.api.state_file

    def save(self) -> bool:
        """Save the state now (`on_save`, the file replaced atomically) before returning;
        False if that failed (counted and said on stderr; trading goes on)."""
        return self.api.save_state()

    def mark_dirty(self) -> None:
        """The state changed: saved once `save_every_s` has passed since the last save."""
        self.api.state_dirty = True

    def on_command(self, name: str, args: dict) -> str:
        """A command from the CLI through the supervisor (e.g. `hftd conditions`): return the
        reply's text; raise ValueError to refuse it (the message is the reply)."""
        raise ValueError(f"strategy {self.name} ({type(self).__name__}) takes no {name!r} "
                         f"commands")

    # --- callbacks -----------------------------------------------------------------------
    def on_start(self) -> None:
        pass

    def on_tick(self, tick: Tick) -> None:
        pass

    def on_ticks(self, ticks: TickColumns) -> None:
        """Override for vectorised work: then it is called instead of `on_tick` (see the
        module's docstring). This default, never called by the stage, is `on_tick` per tick."""
        for tick in ticks.ticks():
            self.on_tick(tick)

    def on_order(self, order: Order) -> None:
        pass

    def on_fill(self, fill: OrderReport) -> None:
        pass

    def on_timer(self) -> None:
        pass

    def on_stop(self) -> None:
        pass

    def on_save(self) -> object | None:
        """The state to keep across restarts (builtins or msgspec Structs); None: nothing."""
        return None

    def on_load(self, state) -> None:
        """What `on_save` last returned (decoded from JSON), after `on_start`, before the
        first tick; only when a saved state exists. Raise ValueError if it is unusable."""

    def on_reload(self) -> None:
        """`hftd reload` (or SIGHUP) changed this strategy's params: `self.params` holds the
        new ones. Override to re-read them (the default does nothing more)."""

    # --- trading ------------------------------------------------------------------------
    def buy(self, instrument: int, qty: int, price: int = 0, tif: int = ROD) -> int:
        """A buy order (price 0 = market); its client order id, or 0 when trading is paused
        (the kill switch)."""
        return self.api.order(instrument, Side.BUY, qty, price, tif)

    def sell(self, instrument: int, qty: int, price: int = 0, tif: int = ROD) -> int:
        return self.api.order(instrument, Side.SELL, qty, price, tif)

    def cancel(self, order_id: int) -> bool:
        return self.api.cancel(order_id)

    def replace(self, order_id: int, qty: int | None = None, price: int | None = None) -> bool:
        return self.api.replace(order_id, qty, price)

    # --- queries ------------------------------------------------------------------------
    def position(self, instrument: int) -> int:
        """Filled net position (long > 0)."""
        return self.api.positions[instrument].qty

    def working(self, instrument: int) -> int:
        """Net leaves of the working orders (buys > 0, sells < 0)."""
        return self.api.net_working[instrument]

    def working_on(self, instrument: int, side: int) -> int:
        """Leaves of the working orders on `side` (1 buys, -1 sells), as a positive count."""
        return self.api.side_working[side][instrument]

    def working_orders(self, instrument: int | None = None) -> list[Order]:
        w = self.api.working.values()
        return list(w) if instrument is None else [o for o in w if o.instrument == instrument]

    def order(self, order_id: int) -> Order | None:
        return self.api.book.get(order_id)

    def pnl(self, instrument: int | None = None) -> float:
        return self.api.pnl(instrument)

    def last_price(self, instrument: int) -> int:
        return self.api.last_price[instrument]

    def symbol(self, instrument: int) -> str:
        return self.api.symbols[instrument]

    def instrument_id(self, symbol: str) -> int:
        return self.api.symbols.index(symbol)

    def contract(self, instrument: int):
        return self.api.portfolio.contracts[instrument]


def _no_saving() -> bool:
    return False  # a host that keeps no state (the benchmark's): nothing is saved


class _Nothing:
    def add(self, n: int = 1) -> None:
        pass


class StrategyApi:
    """What the host (the strategy stage, or the benchmark's StrategyHost) gives a strategy:
    order requests with client ids, and the strategy's own book of its orders and positions,
    kept from the reports the host hands to `apply_report`.

    `send(request)` writes an OrderRequest out; `ids` issues the counter part of client ids
    (an `IdSource`, ideally over shared memory so a restarted strategy continues it);
    `routed` lists the instrument ids routed to the strategy (None: all). The host sets
    `tick` to the tick being handled during `on_tick` (None otherwise): a request carries its
    t_ingest and seq, or, sent from another callback, the time it was sent and seq -1."""

    def __init__(self, symbols: list[str], contracts, send, index: int = 0,
                 ids: IdSource | None = None, routed: list[int] | None = None):
        n = len(symbols)
        self.symbols = symbols
        self.index = index
        self.id_base = index << ORDER_ID_SHIFT
        self.ids = ids or IdSource()
        self.book = OrderBook()
        self.portfolio = Portfolio(contracts)
        self.positions = [self.portfolio.position(index, i) for i in range(n)]
        self.net_working = [0] * n
        # leaves of the working buys ([1]) and sells ([-1]) per instrument, kept with net_working
        self.side_working = {1: [0] * n, -1: [0] * n}
        self.working: dict[int, Order] = {}  # client id -> working order, oldest first
        self.last_price = [0] * n
        self.routed = [routed is None] * n
        for i in routed or ():
            self.routed[i] = True
        self.paused = False  # kill switch: while on, new orders and replaces are refused
        self.closed = False  # after on_stop: nothing more is sent
        self.name = ""  # set by the host: the strategy's name, and its state directory
        self.state_dir = ""
        # set by a host that keeps the strategy's state (the strategy stage): its file, and
        # save_state() -> bool, which saves it now; state_dirty: changed since the last save
        self.state_file = ""
        self.save_state = _no_saving
        self.state_dirty = False
        self.tick = None
        self.mismatches = 0  # reports whose filled/leaves disagree with this book
        self.refused = _Nothing()  # the host may count refusals (a stats Value)
        self._send = send

    def _context(self) -> tuple[int, int]:
        t = self.tick
        return (t.t_ingest, t.seq) if t is not None else (time.monotonic_ns(), -1)

    def order(self, instrument: int, side: int, qty: int, price: int, tif: int) -> int:
        if qty <= 0 or price < 0 or not 0 <= tif <= 2 or not 0 <= instrument < len(self.routed) \
                or not self.routed[instrument]:
            raise ValueError(self._bad_order(instrument, qty, price, tif))
        if self.paused or self.closed:
            self.refused.add()
            return 0
        oid = self.id_base | self.ids.next()
        t = self.tick
        if t is not None:
            t_ingest, seq = t.t_ingest, t.seq
        else:
            t_ingest, seq = time.monotonic_ns(), -1
        ord_type = _LIMIT if price else _MARKET
        o = Order(oid, self.index, instrument, side, qty, price, ord_type, tif, t_ingest)
        self.book.add(o)
        self.working[oid] = o
        self.net_working[instrument] += side * qty
        self.side_working[side][instrument] += qty
        self._send(OrderRequest(0, t_ingest, oid, _NEW, instrument, side, qty, price, ord_type,
                                tif, seq))
        return oid

    def _bad_order(self, instrument, qty, price, tif) -> str:
        if not (0 <= instrument < len(self.routed) and self.routed[instrument]):
            return f"instrument id {instrument} is not routed to this strategy"
        if qty <= 0:
            return f"order quantity must be > 0, got {qty}"
        if price < 0:
            return f"a limit price must be > 0 (0: a market order), got {price}"
        return f"time in force must be ROD (0), IOC (1) or FOK (2), got {tif}"

    def cancel(self, order_id: int) -> bool:
        o = self.working.get(order_id)
        if o is None or self.closed:
            return False
        t_ingest, seq = self._context()
        self._send(OrderRequest(0, t_ingest, order_id, _CANCEL, o.instrument, o.side, 0, o.price,
                                o.ord_type, o.tif, seq))
        return True

    def replace(self, order_id: int, qty: int | None, price: int | None) -> bool:
        o = self.working.get(order_id)
        if o is None or self.closed:
            return False
        qty = o.qty if qty is None else qty
        price = o.price if price is None else price
        if qty <= 0:
            raise ValueError(f"order quantity must be > 0, got {qty}")
        if not price_ok(o.ord_type, price):
            raise ValueError(f"a limit order's price must be > 0, a market order's 0; got "
                             f"{price}")
        if self.paused:
            self.refused.add()
            return False
        t_ingest, seq = self._context()
        self._send(OrderRequest(0, t_ingest, order_id, _REPLACE, o.instrument, o.side, qty, price,
                                o.ord_type, o.tif, seq))
        return True

    def restore_order(self, o: Order, state: int, filled: int, fill_value: int) -> bool:
        """A working order the executor has on record (reconciliation at start-up)."""
        if not self.book.restore(o, state, filled, fill_value):
            return False
        self.working[o.client_id] = o
        self.net_working[o.instrument] += o.side * (o.qty - filled)
        self.side_working[o.side][o.instrument] += o.qty - filled
        return True

    def apply_report(self, r: OrderReport) -> Order | None:
        """Apply one of the executor's reports to this book; the order, or None if the
        report is not a legal transition (counted in `book.illegal`, nothing applied)."""
        book = self.book
        o = book.get(r.order_id)
        if o is None:
            book.apply(r.kind, r.order_id, r.qty, r.price, r.reason)  # counts it
            return None
        before = o.leaves
        if not book.apply(r.kind, r.order_id, r.qty, r.price, r.reason):
            return None
        after = o.leaves
        if after != before:
            self.net_working[o.instrument] += o.side * (after - before)
            self.side_working[o.side][o.instrument] += after - before
        if r.kind == _FILL:
            self.positions[o.instrument].apply_fill(o.side, r.qty, r.price)
        if o.state >= _FILLED:
            self.working.pop(o.client_id, None)
        if (r.filled != o.filled or r.leaves != o.leaves) and not (
                r.kind == _CANCEL_REJECTED and r.reason == _UNKNOWN and o.state >= _FILLED):
            # (an executor that no longer knows an order it had ended - restarted, or it
            # forgot old ones - refuses a late cancel with no quantities to tell)
            self.mismatches += 1
        return o

    def pnl(self, instrument: int | None = None) -> float:
        last = self.last_price
        if instrument is not None:
            return self.positions[instrument].net(last[instrument])
        return sum(p.net(last[i]) for i, p in enumerate(self.positions) if p.volume)
