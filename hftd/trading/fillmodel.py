"""Simulated venue: orders fill against the market's own trades, after a latency.

The one idea: the venue has no order book of its own to match against; the evidence that an
order would have filled is a later trade print on its instrument. An order, cancel or
replace "arrives" `latency_ns` after it was sent; only trades after that arrival can fill
it; and a limit order gets at most the quantity the print shows, at its own limit price.

Fill rules (the README's copy):

- Arrival. `submit`, `cancel`, `replace` and `cancel_all` take effect at now + latency_ns,
  in the order they were sent (ties broken by call order). An order is acknowledged (ACK)
  when it arrives, or REJECTed there (qty <= 0: BAD_QTY; a limit price <= 0, or a market
  order with a price: BAD_PRICE). Arrivals due at or before a trade's time are handled
  before that trade, so the trade can fill them.
- Market orders (any time in force) fill in full at the price of the next trade on their
  instrument after their arrival, never at an earlier price. Known optimism: a print has no
  depth, so the whole quantity fills at that one price, and market orders do not draw on
  the print's quantity (they take liquidity from the book we do not see).
- Limit ROD orders rest and fill when a later trade reaches or crosses their price (buy:
  trade price <= limit; sell: trade price >= limit), at their limit price (conservative: a
  print through the limit gives no price improvement), partially when the print's quantity
  is smaller than their leaves. One print's quantity is shared by our resting orders on a
  side in priority order: better price first (higher buys, lower sells), then earlier
  arrival. The two sides draw on the print separately (it is evidence of a buyer for our
  sells and of a seller for our buys). Known optimism: there is no queue ahead of us, so a
  print at our price fills us as if we were first at that level.
- A marketable limit order does not fill on arrival: it waits for the next print too (there
  is no book to take from).
- IOC / FOK limit orders are matched only against the first trade on their instrument after
  arrival, in the same priority as resting orders. IOC fills min(leaves, what is left of the
  print) if the price crosses, and the remainder is EXPIRED. FOK fills in full if the price
  crosses and what is left of the print covers its quantity, else it is EXPIRED with
  nothing filled (and takes nothing from the print).
- IOC / FOK window: with `ioc_window_ns` = 0 (the default) an IOC/FOK order waits for the
  next trade however late it comes (cancel it to give up). With a window W > 0, an IOC/FOK
  order (limit or market) that has seen no trade in [arrival, arrival + W) is EXPIRED at
  arrival + W with nothing filled.
- Cancel on arrival: CANCELED with the order's leaves if it is working; CANCEL_REJECTED
  (UNKNOWN_ORDER) if it has ended or the venue never saw it (the venue forgets ended orders).
- Replace on arrival: the new quantity is the order's new total; it must exceed what has
  filled (else CANCEL_REJECTED, BAD_QTY); a limit order's new price must be > 0 and a market
  order's 0 (else CANCEL_REJECTED, BAD_PRICE); an ended order: CANCEL_REJECTED
  (UNKNOWN_ORDER). Otherwise REPLACED (new qty, new price), and the order loses its time
  priority (it queues behind everything at its price, as if it had just arrived).
- Our own orders never trade with each other.
- Deterministic: no randomness; the same calls give the same events.

Events: `on_trade`, `poll` return a sequence of `(owner, client_id, kind, qty, price,
reason)` tuples in the order they happened (the empty tuple when nothing happened, so the
quiet path allocates nothing). kind is a ReportKind; qty and price are: ACK the order's qty
and price; REJECT the same with the reason; FILL the quantity filled and the fill price;
CANCELED and EXPIRED the leaves that ended and the order's price; REPLACED the new qty and
price; CANCEL_REJECTED 0, 0 and the reason. Every order gets exactly one terminal event:
REJECT, CANCELED, EXPIRED, or the FILL that completes it; after it, only a CANCEL_REJECTED
can still name the order (a cancel or replace that arrived too late).

Data structures: per instrument, our buys and sells each in a list sorted by (price key,
arrival sequence), so a trade touches only the orders it fills, from the front; an insert
or a cancel is a bisect plus a list shift (a memmove: cheap at the hundreds of orders a
strategy keeps, and no stale entries to skip later, as a heap with lazy deletion would
have). Waiting market orders and not-yet-traded IOC/FOK orders sit in plain lists (they all
end at the next trade); one heap holds the timed actions (arrivals, IOC windows).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort

from ..events import RejectReason, ReportKind
from . import OrdState, OrdType, Side, TimeInForce, price_ok

ACK = ReportKind.ACK
REJECT = ReportKind.REJECT
FILL = ReportKind.FILL
CANCELED = ReportKind.CANCELED
EXPIRED = ReportKind.EXPIRED
REPLACED = ReportKind.REPLACED
CANCEL_REJECTED = ReportKind.CANCEL_REJECTED
_NONE = RejectReason.NONE
_BAD_QTY = RejectReason.BAD_QTY
_BAD_PRICE = RejectReason.BAD_PRICE
_UNKNOWN = RejectReason.UNKNOWN_ORDER
_PENDING = OrdState.PENDING_NEW
_NEW = OrdState.NEW
_PARTIAL = OrdState.PARTIALLY_FILLED
_FILLED = OrdState.FILLED  # states below this are working (OrdState numbering)
_BUY = Side.BUY
_MARKET = OrdType.MARKET
_LIMIT = OrdType.LIMIT
_ROD = TimeInForce.ROD
_FOK = TimeInForce.FOK
# timeline actions
_ARRIVE, _CANCEL, _REPLACE, _EXPIRE = range(4)
_NOTHING = ()


class _Order:
    __slots__ = ("owner", "cid", "inst", "side", "qty", "filled", "ord_type", "tif", "price",
                 "state", "seq", "booked", "cancel_sent")

    def __init__(self, owner, cid, inst, side, qty, ord_type, tif, price):
        self.owner = owner
        self.cid = cid
        self.inst = inst
        self.side = side
        self.qty = qty
        self.filled = 0
        self.ord_type = ord_type
        self.tif = tif
        self.price = price
        self.state = _PENDING
        self.seq = 0  # priority: arrival (or last replace) order
        self.booked = False  # in bids/asks
        self.cancel_sent = False  # a cancel is on its way (cancel_all sends no second one)


class _Book:
    """One instrument: entries (key, seq, order), key = -price for buys and price for sells,
    so both lists are ascending and the front is the best priority; an entry crosses a trade
    at price p when key <= -p (buys) or key <= p (sells)."""

    __slots__ = ("bids", "asks", "market", "ioc")

    def __init__(self):
        self.bids: list = []
        self.asks: list = []
        self.market: list = []  # market orders waiting for the next trade
        self.ioc: list = []  # IOC/FOK limit orders waiting for their (first) trade


class SimVenue:
    __slots__ = ("latency_ns", "ioc_window_ns", "_timeline", "_seq", "_books", "_owners")

    last_seq = 0  # a venue with a log (hftd.venues.sim) numbers what it logs; this one does not

    def take_seq(self) -> int:
        """The log sequence of the next answer returned (0: this venue keeps no log)."""
        return 0

    def __init__(self, latency_ns: int = 0, ioc_window_ns: int = 0):
        if latency_ns < 0 or ioc_window_ns < 0:
            raise ValueError("latency_ns and ioc_window_ns must be >= 0")
        self.latency_ns = int(latency_ns)
        self.ioc_window_ns = int(ioc_window_ns)
        self._timeline: list = []  # heap of (due_ns, seq, action, a, b, c, d)
        self._seq = 0
        self._books: dict[int, _Book] = {}
        self._owners: dict[int, dict[int, _Order]] = {}  # live orders (sent, not ended)

    # -- requests (take effect at now + latency) -------------------------------------------

    def submit(self, owner: int, client_id: int, instrument: int, side: int, qty: int,
               ord_type: int, tif: int, price: int, now_ns: int) -> None:
        o = self._register(owner, client_id, instrument, side, qty, ord_type, tif, price)
        self._at(now_ns + self.latency_ns, _ARRIVE, o, 0, 0, 0)

    def _register(self, owner, client_id, instrument, side, qty, ord_type, tif, price):
        """A new live order of `owner` (not yet at the venue)."""
        if side != 1 and side != -1:
            raise ValueError(f"side must be +1 or -1, got {side!r}")
        if ord_type not in (_MARKET, _LIMIT) or tif not in (0, 1, 2):
            raise ValueError(f"bad ord_type {ord_type!r} or tif {tif!r}")
        live = self._owners.get(owner)
        if live is None:
            live = self._owners[owner] = {}
        if client_id in live:
            # the executor's ids never repeat; a duplicate is a caller bug, not a venue answer
            raise ValueError(f"client id {client_id} of owner {owner} is already working")
        o = live[client_id] = _Order(owner, client_id, instrument, side, qty, ord_type, tif,
                                     price)
        return o

    def cancel(self, owner: int, client_id: int, now_ns: int) -> None:
        o = self._live(owner, client_id)
        if o is not None:
            o.cancel_sent = True
        self._at(now_ns + self.latency_ns, _CANCEL, owner, client_id, 0, 0)

    def replace(self, owner: int, client_id: int, new_qty: int, new_price: int,
                now_ns: int) -> None:
        self._at(now_ns + self.latency_ns, _REPLACE, owner, client_id, new_qty, new_price)

    def cancel_all(self, owner: int, now_ns: int) -> int:
        """Send a cancel for each of the owner's orders that has none on its way (orders not
        yet arrived included: the cancels arrive after them). Returns how many were sent."""
        n = 0
        for o in self._owners.get(owner, {}).values():
            if not o.cancel_sent:
                o.cancel_sent = True
                self._at(now_ns + self.latency_ns, _CANCEL, owner, o.cid, 0, 0)
                n += 1
        return n

    def restore(self, owner: int, client_id: int, instrument: int, side: int, qty: int,
                filled: int, ord_type: int, tif: int, price: int, acked: bool,
                now_ns: int) -> None:
        """An order the venue already has, taken back after the executor (and this venue in
        it) restarted: as if the venue were remote and had kept it. An acknowledged one is
        working again at once (a limit order at the back of its price: a restart does not
        keep time priority; an IOC/FOK waits for its first trade again, its window restarted);
        one not yet acknowledged arrives after the latency, like a new one."""
        if not acked:  # (not `submit`: a venue that logs what it receives logs this apart)
            o = self._register(owner, client_id, instrument, side, qty, ord_type, tif, price)
            self._at(now_ns + self.latency_ns, _ARRIVE, o, 0, 0, 0)
            return
        if not 0 <= filled < qty:
            raise ValueError(f"order {client_id}: filled {filled} of {qty} is not working")
        o = self._register(owner, client_id, instrument, side, qty, ord_type, tif, price)
        o.filled = filled
        o.state = _PARTIAL if filled else _NEW
        self._work(o, now_ns)

    # -- what happens --------------------------------------------------------------------

    def poll(self, now_ns: int):
        """Handle the requests (and IOC windows) due by now; their events."""
        tl = self._timeline
        if not tl or tl[0][0] > now_ns:
            return _NOTHING
        out: list = []
        self._advance(now_ns, out)
        return out or _NOTHING

    def on_trade(self, instrument: int, price: int, qty: int, now_ns: int):
        """A trade print on the market: first what is due by now arrives, then the print
        fills what it can. A print with qty <= 0 or price <= 0 is not a trade."""
        tl = self._timeline
        due = tl and tl[0][0] <= now_ns
        if qty <= 0 or price <= 0:
            return self.poll(now_ns) if due else _NOTHING
        if not due:  # the common case: nothing arrives; allocate only if the print fills
            book = self._books.get(instrument)
            if book is None:
                return _NOTHING
            bids = book.bids
            asks = book.asks
            if not (book.market or book.ioc or (bids and bids[0][0] <= -price)
                    or (asks and asks[0][0] <= price)):
                return _NOTHING
        out: list = []
        if due:
            self._advance(now_ns, out)
        book = self._books.get(instrument)
        if book is not None:
            self._match(book, price, qty, out)
        return out or _NOTHING

    def next_due_ns(self) -> int | None:
        """The earliest pending arrival or IOC window (None: nothing pending), for the
        executor's park. It may be an action that turns out to do nothing: an early wake."""
        tl = self._timeline
        return tl[0][0] if tl else None

    def working(self, owner: int) -> list[int]:
        """The owner's client ids not yet ended (sent but not arrived included), oldest
        first."""
        return list(self._owners.get(owner, ()))

    # -- inside ------------------------------------------------------------------------------

    def _at(self, due_ns, action, a, b, c, d) -> None:
        self._seq += 1
        heapq.heappush(self._timeline, (due_ns, self._seq, action, a, b, c, d))

    def _live(self, owner, cid):
        live = self._owners.get(owner)
        return live.get(cid) if live else None

    def _advance(self, now_ns, out) -> None:
        tl = self._timeline
        while tl and tl[0][0] <= now_ns:
            due, _, action, a, b, c, d = heapq.heappop(tl)
            if action == _ARRIVE:
                self._arrive(a, due, out)
            elif action == _CANCEL:
                self._cancel(a, b, out)
            elif action == _REPLACE:
                self._replace(a, b, c, d, out)
            elif a.state < _FILLED:  # _EXPIRE: an IOC/FOK that saw no trade in its window
                self._remove(a)
                out.append((a.owner, a.cid, EXPIRED, a.qty - a.filled, a.price, _NONE))
                self._end(a, OrdState.EXPIRED)

    def _arrive(self, o, due, out) -> None:
        if o.qty <= 0:
            reason = _BAD_QTY
        elif not price_ok(o.ord_type, o.price):
            reason = _BAD_PRICE
        else:
            reason = _NONE
        if reason:
            out.append((o.owner, o.cid, REJECT, o.qty, o.price, reason))
            self._end(o, OrdState.REJECTED)
            return
        o.state = _NEW
        out.append((o.owner, o.cid, ACK, o.qty, o.price, _NONE))
        self._work(o, due)

    def _work(self, o, t_ns) -> None:
        """An acknowledged order starts working at `t_ns`: a limit order rests in its book
        (an IOC/FOK also waits for its first trade), a market order waits for the next trade;
        an IOC/FOK's window starts."""
        book = self._books.get(o.inst)
        if book is None:
            book = self._books[o.inst] = _Book()
        if o.ord_type == _LIMIT:
            self._put(book, o)
            if o.tif != _ROD:
                book.ioc.append(o)
        else:
            book.market.append(o)
        if o.tif != _ROD and self.ioc_window_ns:
            self._at(t_ns + self.ioc_window_ns, _EXPIRE, o, 0, 0, 0)

    def _cancel(self, owner, cid, out) -> None:
        o = self._live(owner, cid)
        if o is None or o.state == _PENDING:  # ended, or the venue has not seen it
            out.append((owner, cid, CANCEL_REJECTED, 0, 0, _UNKNOWN))
            return
        self._remove(o)
        out.append((owner, cid, CANCELED, o.qty - o.filled, o.price, _NONE))
        self._end(o, OrdState.CANCELED)

    def _replace(self, owner, cid, new_qty, new_price, out) -> None:
        o = self._live(owner, cid)
        if o is None or o.state == _PENDING:
            reason = _UNKNOWN
        elif new_qty <= o.filled:
            reason = _BAD_QTY
        elif not price_ok(o.ord_type, new_price):
            reason = _BAD_PRICE
        else:
            reason = _NONE
        if reason:
            out.append((owner, cid, CANCEL_REJECTED, 0, 0, reason))
            return
        book = self._books[o.inst]
        if o.booked:
            self._unbook(book, o)
        o.qty = new_qty
        o.price = new_price
        if o.ord_type == _LIMIT:
            self._put(book, o)  # a new sequence number: behind everything at its price
        out.append((owner, cid, REPLACED, new_qty, new_price, _NONE))

    def _put(self, book, o) -> None:
        self._seq += 1
        o.seq = self._seq
        if o.side == _BUY:
            insort(book.bids, (-o.price, o.seq, o))
        else:
            insort(book.asks, (o.price, o.seq, o))
        o.booked = True

    def _unbook(self, book, o) -> None:
        if o.side == _BUY:
            lst, key = book.bids, -o.price
        else:
            lst, key = book.asks, o.price
        # (key, seq) sorts just before its own (key, seq, order) entry: seq is unique
        del lst[bisect_left(lst, (key, o.seq))]
        o.booked = False

    def _remove(self, o) -> None:
        """Take a working order out of every structure of its instrument."""
        book = self._books[o.inst]
        if o.booked:
            self._unbook(book, o)
        elif o.ord_type == _MARKET:
            book.market.remove(o)
        if o.tif != _ROD and o.ord_type == _LIMIT:
            book.ioc.remove(o)

    def _end(self, o, state) -> None:
        o.state = state
        del self._owners[o.owner][o.cid]

    def _match(self, book, price, qty, out) -> None:
        market = book.market
        if market:
            for o in market:
                out.append((o.owner, o.cid, FILL, o.qty - o.filled, price, _NONE))
                o.filled = o.qty
                self._end(o, OrdState.FILLED)
            market.clear()
        if book.bids and book.bids[0][0] <= -price:
            self._sweep(book.bids, -price, qty, out)
        if book.asks and book.asks[0][0] <= price:
            self._sweep(book.asks, price, qty, out)
        ioc = book.ioc
        if ioc:  # this was their trade: what it did not fill expires
            for o in ioc:
                if o.state < _FILLED:
                    if o.booked:
                        self._unbook(book, o)
                    out.append((o.owner, o.cid, EXPIRED, o.qty - o.filled, o.price, _NONE))
                    self._end(o, OrdState.EXPIRED)
            ioc.clear()

    def _sweep(self, lst, threshold, qty, out) -> None:
        """Fill the front of one side from a print of `qty`: every order it touches leaves
        the list (filled, or an IOC/FOK whose one trade this is), except a ROD order left
        partly filled when the print runs out, which is necessarily the last one touched."""
        left = qty
        i = 0
        n = len(lst)
        keep = 0
        while i < n and left > 0:
            key, _, o = lst[i]
            if key > threshold:
                break
            i += 1
            o.booked = False
            leaves = o.qty - o.filled
            if leaves > left:
                if o.tif == _FOK:
                    continue  # all or nothing: it takes none of this print
                f = left
            else:
                f = leaves
            o.filled += f
            left -= f
            out.append((o.owner, o.cid, FILL, f, o.price, _NONE))
            if f == leaves:
                self._end(o, _FILLED)
            else:
                o.state = _PARTIAL
                if o.tif == _ROD:
                    o.booked = True
                    keep = 1
        del lst[:i - keep]
