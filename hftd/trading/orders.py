"""Orders and their state machine: the executor's book of every order it has sent.

The one idea: a venue report is applied only if it is a legal transition of the order it
names; anything else (a duplicate, a late or garbled report, an overfill) changes nothing
and is counted by kind, so a bad venue or a bug shows up in the stats instead of in the
positions. Transitions (rows: the report; columns: the order's state; `-`: illegal,
counted, not applied):

    event \\ state     PENDING_NEW      NEW              PARTIALLY_FILLED   terminal
    ack               NEW              -                -                  -
    reject            REJECTED         -                -                  -
    fill(q <= leaves) PART./FILLED *   PART./FILLED     PART./FILLED       -
    cancel            CANCELED *       CANCELED         CANCELED           -
    expire            EXPIRED *        EXPIRED          EXPIRED            -
    replace(q > fill) NEW *            NEW              PARTIALLY_FILLED   -
    cancel_reject     (unchanged)      (unchanged)      (unchanged)        (unchanged)

    * implies the ack: the venue has the order if it fills, cancels, expires or replaces it.
    fill: FILLED when filled reaches qty; q <= 0, q > leaves or a price <= 0 is illegal.
    replace: new qty must exceed filled (leaves become new_qty - filled); a limit order's
    new price must be > 0, a market order's 0.
    expire: any time in force (TAIFEX expires an IOC/FOK remainder at once, a ROD one at
    the session's end).
    Every report about an unknown client id is illegal; so is adding an id twice.

The working indexes the risk engine reads per order (working quantity by strategy,
instrument and side; working orders by strategy) are maintained by each transition in O(1):
an order holds references to its own counter cells, so after finding the order by its id
an event looks nothing else up.

A replace that raises an order's quantity is at risk from the moment it is sent, not from
when the venue carries it out: `requested` adds the increase to the working quantity at
once (found by a chaos run: a new order checked while such a replace was on its way took the
position past its limit once both filled). A venue answers an order's cancels and replaces
in the order they were sent, so the answer to the oldest request (REPLACED or
CANCEL_REJECTED) releases its reservation; an order's end releases them all.
"""

from __future__ import annotations

import collections
import time

from ..events import ReportKind, RejectReason
from . import WORKING, OrdState, OrdType, TimeInForce, price_ok

_PENDING_NEW = OrdState.PENDING_NEW
_NEW = OrdState.NEW
_PARTIAL = OrdState.PARTIALLY_FILLED
_FILLED = OrdState.FILLED
_CANCELED = OrdState.CANCELED
_REJECTED = OrdState.REJECTED
_EXPIRED = OrdState.EXPIRED
# "working" is tested as `state < FILLED` (an int compare, no set lookup): it relies on the
# working states being numbered below the terminal ones.
assert WORKING == {s for s in OrdState if s < _FILLED}


class IdSource:
    """Client order ids: 1, 2, 3, ... never repeating, over a counter the caller keeps.

    The counter holds the last id issued and lives where the caller puts it: `store[index]`
    of anything indexable (a numpy int64 array or a stats block's `q_values` in shared
    memory, so the next process continues it), or an object with `.value` and `.set(v)`
    (a stats `Value`) when `index` is None. Default: a private in-memory counter."""

    __slots__ = ("_store", "_index")

    def __init__(self, store=None, index: int | None = 0):
        if store is None:
            store, index = [0], 0
        self._store = store
        self._index = index
        if self.last < 0:
            raise ValueError(f"order id counter holds {self.last}, expected >= 0")

    @property
    def last(self) -> int:
        """The last id issued (0: none yet)."""
        i = self._index
        return int(self._store.value if i is None else self._store[i])

    def next(self) -> int:
        s, i = self._store, self._index
        if i is None:
            n = int(s.value) + 1
            s.set(n)
        else:
            n = int(s[i]) + 1
            s[i] = n
        return n


class _Cell:
    """One shared counter (a working quantity or a working-order count)."""

    __slots__ = ("n",)

    def __init__(self):
        self.n = 0


class Order:
    """One order. Prices are ints in ticks (0 for a market order); `avg_fill_price` is the
    float VWAP of its fills in ticks (`fill_value / filled`, so it is exact to one division);
    `reason` is the RejectReason of a rejected order. Only the book changes an order."""

    __slots__ = ("client_id", "strategy", "instrument", "side", "qty", "price", "ord_type",
                 "tif", "state", "filled", "fill_value", "reason",
                 "t_created_ns", "_qty_cell", "_count_cell", "pending")

    def __init__(self, client_id: int, strategy: int, instrument: int, side: int, qty: int,
                 price: int = 0, ord_type: OrdType | None = None,
                 tif: TimeInForce = TimeInForce.ROD, t_created_ns: int | None = None):
        self.client_id = client_id
        self.strategy = strategy
        self.instrument = instrument
        self.side = side
        self.qty = qty
        self.price = price
        if ord_type is None:
            ord_type = OrdType.LIMIT if price else OrdType.MARKET
        self.ord_type = ord_type
        self.tif = tif
        self.state = _PENDING_NEW
        self.filled = 0
        self.fill_value = 0  # sum of fill price * qty (ticks * lots): the VWAP stays exact
        self.reason = RejectReason.NONE
        self.t_created_ns = time.monotonic_ns() if t_created_ns is None else t_created_ns
        self._qty_cell = None
        self._count_cell = None
        self.pending = None  # the quantity each request on its way reserves (see requested)

    @property
    def avg_fill_price(self) -> float:
        return self.fill_value / self.filled if self.filled else 0.0

    @property
    def leaves(self) -> int:
        """Quantity still working at the venue: qty - filled while working, 0 when ended."""
        return self.qty - self.filled if self.state < _FILLED else 0

    @property
    def is_working(self) -> bool:
        return self.state < _FILLED

    def __repr__(self) -> str:
        return (f"Order(id={self.client_id}, strategy={self.strategy}, "
                f"instrument={self.instrument}, {'BUY' if self.side > 0 else 'SELL'} "
                f"{self.filled}/{self.qty}"
                f" @ {self.price}, {OrdType(self.ord_type).name}/{TimeInForce(self.tif).name},"
                f" {OrdState(self.state).name})")


class OrderBook:
    """All orders of one executor (or one strategy's view of its own), by client id.

    Each transition returns True if applied; an illegal one returns False and is counted in
    `illegal` and `illegal_by_kind` ("<event>:<why>", e.g. "fill:overfill"). Ended orders
    stay for lookup until `forget_terminal` drops the oldest."""

    def __init__(self):
        self.orders: dict[int, Order] = {}
        self.illegal = 0
        self.illegal_by_kind: dict[str, int] = {}
        self.n_working = 0
        self._qty_cells: dict[tuple[int, int, int], _Cell] = {}  # (strategy, instrument, side)
        self._count_cells: dict[int, _Cell] = {}  # strategy
        self._ended: collections.deque[int] = collections.deque()  # ids, in the order they ended

    # --- queries (the risk engine's, per order) -----------------------------------------
    def get(self, client_id: int) -> Order | None:
        return self.orders.get(client_id)

    def __len__(self) -> int:
        return len(self.orders)

    def __contains__(self, client_id: int) -> bool:
        return client_id in self.orders

    def working_qty(self, strategy: int, instrument: int, side: int) -> int:
        """Sum of the leaves of `strategy`'s working orders on `instrument` and `side`."""
        cell = self._qty_cells.get((strategy, instrument, side))
        return cell.n if cell is not None else 0

    def working_orders(self, strategy: int) -> int:
        cell = self._count_cells.get(strategy)
        return cell.n if cell is not None else 0

    def working(self):
        """The working orders, oldest first (to cancel them all, or to reconcile)."""
        return [o for o in self.orders.values() if o.state < _FILLED]

    # --- transitions --------------------------------------------------------------------
    def _bad(self, kind: str) -> bool:
        self.illegal += 1
        self.illegal_by_kind[kind] = self.illegal_by_kind.get(kind, 0) + 1
        return False

    def _working(self, event: str, client_id: int) -> Order | None:
        """The working order `client_id`, or None (counted illegal)."""
        o = self.orders.get(client_id)
        if o is None:
            self._bad(event + ":unknown_order")
            return None
        if o.state >= _FILLED:
            self._bad(event + ":terminal")
            return None
        return o

    def requested(self, o: Order, new_qty: int = 0) -> None:
        """A cancel (`new_qty` 0) or a replace to `new_qty` of working order `o` was sent to
        the venue: a replace above the order's quantity reserves the increase until answered."""
        extra = new_qty - o.qty if new_qty > o.qty else 0
        if o.pending is None:
            o.pending = collections.deque()
        o.pending.append(extra)
        o._qty_cell.n += extra

    def _answered(self, o: Order) -> None:
        """The venue answered `o`'s oldest request: its reservation is released."""
        if o.pending:
            o._qty_cell.n -= o.pending.popleft()

    def _end(self, o: Order, state: OrdState) -> None:
        """Leave the working indexes at once: the order's leaves are no longer at risk."""
        if o.pending:
            o._qty_cell.n -= sum(o.pending)
            o.pending = None
        o._qty_cell.n -= o.qty - o.filled
        o._count_cell.n -= 1
        self.n_working -= 1
        o.state = state
        self._ended.append(o.client_id)

    def add(self, order: Order) -> bool:
        """A new order, sent to the venue: PENDING_NEW, in the working indexes."""
        if order.client_id in self.orders:
            return self._bad("add:duplicate_order")
        if order.state != _PENDING_NEW or order.filled:
            return self._bad("add:not_new")
        if order.qty <= 0:
            return self._bad("add:bad_qty")
        if not price_ok(order.ord_type, order.price):
            return self._bad("add:bad_price")
        key = (order.strategy, order.instrument, order.side)
        qc = self._qty_cells.get(key)
        if qc is None:
            qc = self._qty_cells[key] = _Cell()
        cc = self._count_cells.get(order.strategy)
        if cc is None:
            cc = self._count_cells[order.strategy] = _Cell()
        order._qty_cell = qc
        order._count_cell = cc
        qc.n += order.qty
        cc.n += 1
        self.n_working += 1
        self.orders[order.client_id] = order
        return True

    def restore(self, order: Order, state: int, filled: int, fill_value: int) -> bool:
        """A working order taken back from a store (a restarted executor's): in its `state`
        with `filled` lots (of value `fill_value`) done, in the working indexes."""
        if not (_PENDING_NEW <= state < _FILLED and 0 <= filled < order.qty) \
                or (state == _PENDING_NEW and filled):
            return self._bad("restore:not_working")
        if not self.add(order):
            return False
        order.state = state
        order.filled = filled
        order.fill_value = fill_value
        order._qty_cell.n -= filled
        return True

    def on_ack(self, client_id: int) -> bool:
        o = self._working("ack", client_id)
        if o is None:
            return False
        if o.state != _PENDING_NEW:
            return self._bad("ack:not_pending")
        o.state = _NEW
        return True

    def on_reject(self, client_id: int, reason: int = RejectReason.NONE) -> bool:
        o = self._working("reject", client_id)
        if o is None:
            return False
        if o.state != _PENDING_NEW:
            return self._bad("reject:not_pending")
        o.reason = reason
        self._end(o, _REJECTED)
        return True

    def on_fill(self, client_id: int, qty: int, price: int) -> bool:
        o = self._working("fill", client_id)
        if o is None:
            return False
        if qty <= 0:
            return self._bad("fill:bad_qty")
        if qty > o.qty - o.filled:
            return self._bad("fill:overfill")
        if price <= 0:
            return self._bad("fill:bad_price")
        o.filled += qty
        o.fill_value += price * qty
        o._qty_cell.n -= qty
        if o.filled == o.qty:
            self._end(o, _FILLED)
        else:
            o.state = _PARTIAL
        return True

    def on_cancel(self, client_id: int) -> bool:
        o = self._working("cancel", client_id)
        if o is None:
            return False
        self._end(o, _CANCELED)
        return True

    def on_expire(self, client_id: int) -> bool:
        o = self._working("expire", client_id)
        if o is None:
            return False
        self._end(o, _EXPIRED)
        return True

    def on_replace(self, client_id: int, new_qty: int, new_price: int) -> bool:
        o = self._working("replace", client_id)
        if o is None:
            return False
        if new_qty <= o.filled:
            return self._bad("replace:below_filled")
        if not price_ok(o.ord_type, new_price):
            return self._bad("replace:bad_price")
        self._answered(o)
        o._qty_cell.n += new_qty - o.qty  # leaves go from qty - filled to new_qty - filled
        o.qty = new_qty
        o.price = new_price
        if o.state == _PENDING_NEW:
            o.state = _NEW
        return True

    def on_cancel_reject(self, client_id: int) -> bool:
        """A cancel or replace came too late (or was refused): the order is unchanged."""
        o = self.orders.get(client_id)
        if o is None:
            return self._bad("cancel_reject:unknown_order")
        if o.state < _FILLED:
            self._answered(o)
        return True

    def apply(self, kind: int, client_id: int, qty: int = 0, price: int = 0,
              reason: int = RejectReason.NONE) -> bool:
        """One venue report (an OrderReport's fields): qty and price are the fill's for
        FILL, the new order quantity and price for REPLACED."""
        if kind == ReportKind.FILL:
            return self.on_fill(client_id, qty, price)
        if kind == ReportKind.ACK:
            return self.on_ack(client_id)
        if kind == ReportKind.CANCELED:
            return self.on_cancel(client_id)
        if kind == ReportKind.EXPIRED:
            return self.on_expire(client_id)
        if kind == ReportKind.REJECT:
            return self.on_reject(client_id, reason)
        if kind == ReportKind.REPLACED:
            return self.on_replace(client_id, qty, price)
        if kind == ReportKind.CANCEL_REJECTED:
            return self.on_cancel_reject(client_id)
        return self._bad("report:unknown_kind")

    # --- memory ---------------------------------------------------------------------------
    def forget_terminal(self, keep_last: int = 0) -> int:
        """Drop ended orders but the `keep_last` most recently ended; returns how many were
        dropped. A long-running executor calls it now and then to stay flat."""
        if keep_last < 0:
            raise ValueError(f"keep_last {keep_last} must be >= 0")
        ended, orders = self._ended, self.orders
        n = 0
        while len(ended) > keep_last:
            del orders[ended.popleft()]
            n += 1
        return n
