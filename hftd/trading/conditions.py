"""The support/resistance "conditions" strategy's rules: a book of conditions, each a small
state machine driven by trade prices and by what became of the orders it asked for.

A condition waits for the price to reach a level (support for BUY, resistance for SELL),
then for the price to turn back by `turning_point`, enters at market, and exits at market
at a take-profit or stop-loss distance from the entry level. The rules are those of the
reference implementation traders already run (``../shared/CONDITIONS.md``), reproduced
exactly where they are sound and fixed where they are not (see "How hftd differs").

The one idea: `ConditionBook` never sends anything. `on_trade(instrument, price)` returns
`Intent`s (entry or exit, side, quantity); the strategy host sends the orders and reports
back with `on_order_sent`, `on_fill` and `on_order_ended`. The book is plain, synchronous
Python, so every transition is tested by replaying price paths.

Units: every price and every "point" is an integer in the instrument's ticks. For TX, MTX
and TMF one index point is one tick, so the reference's points are used as they are; for
other instruments the config layer converts points to ticks before building a `Condition`.

Derived levels (BUY; SELL mirrors every sign), set at `add` and moved by trailing::

    order_price       = trigger_price + turning_point
    take_profit_price = order_price + take_profit_point
    stop_loss_price   = order_price - stop_loss_point

Phases and events (BUY shown; SELL mirrors: ``>=`` for ``<=`` and the other way round).
"Ended" is `on_order_ended` (rejected, canceled, expired) or `on_send_failed`. On a trade,
each condition takes at most one of steps 1 to 3, then step 4 (trailing)::

  phase     event                      next phase  and
  --------  -------------------------  ----------  ------------------------------------------
  WAITING   1: trade p <= trigger      ARMED       then step 4 on the same trade
  ARMED     2: trade p >= order        ENTERING    entry intent: entry side, `quantity` lots
  ARMED     4: trade p <= trigger      ARMED       if trailing: trigger = p, levels follow
  ENTERING  trade (any price)          ENTERING    nothing: no exit, no trailing before the fill
  ENTERING  order sent                 ENTERING    the entry's client order id is recorded
  ENTERING  fill                       ENTERING    entry_qty += qty; once it reaches
                                       or ENTERED  `quantity`: ENTERED
  ENTERING  ended, nothing filled      WAITING     at the configured levels: it must re-arm
  ENTERING  ended, some filled         ENTERED     the exit will be for the quantity filled
  ENTERED   3: trade p >= take_profit  EXITING     exit intent "take profit": opposite side,
                                                   the open quantity
  ENTERED   3: trade p <= stop_loss    EXITING     exit intent "stop loss" (the same)
  EXITING   trade (any price)          EXITING     nothing
  EXITING   order sent                 EXITING     the exit's client order id is recorded
  EXITING   fill                       EXITING     exit_qty += qty; once it reaches entry_qty:
                                       or DONE     DONE
  EXITING   ended                      ENTERED     with what is still open; the next trade
                                                   re-evaluates step 3
  DONE      anything                   DONE        not evaluated; listed and saved until
                                                   `remove`d (its id stays taken till then)

Step 4 (trailing) applies only while WAITING or ARMED, when `is_following` and
`turning_point != 0`. As in the reference it runs after step 1 on the same trade, so the
trade that arms a following condition also moves its trigger to that trade's price
(CONDITIONS.md: "19998 arms and moves the trigger to 19998 (order 20013)"); it never runs
on the trade that enters (the reference has set `is_ordered` by then).

Exits use the derived levels (from `order_price`), not the fill price, as the reference
does; the average fill prices are kept for reporting. Take profit is tested before stop
loss (they can only both hold when both distances are 0).

How hftd differs from the reference (its known flaws):

1. The reference evaluates every condition against every tick, whatever the instrument.
   Here a condition belongs to one `instrument`; `on_trade` evaluates that instrument's
   conditions only.
2. The reference sends 1 lot whatever the condition says; the entry here is `quantity`
   lots and the exit is the quantity actually entered.
3. The reference evaluates exits as if the entry filled the moment it was sent, and has no
   defined state for a rejected or canceled entry (it waits forever). Here ENTERING waits for the fill (exits are
   evaluated only once the entry is filled, or ended partly filled), and every order
   outcome leads to a defined phase (the table above). A rejected or canceled entry with
   nothing filled goes back to WAITING with the configured levels, so it has to re-arm
   before it can send again: no order storm. A rejected exit goes back to ENTERED, and
   since a condition has at most one order in flight and exits are evaluated only on
   trades, repeated exit rejects are retried at most once per trade of the instrument.
4. The reference reads and writes a file-backed repository on every tick. Here the book
   lives in memory; `dirty` says something changed, and the host saves it when it is set
   (never per tick). `to_state()` is the whole book as a msgspec-encodable value and
   `from_state` rebuilds it (what the conditions strategy hands the strategy stage's state
   file); `save`/`load` do the same with a file of its own. Either resumes every condition
   in its phase, in-flight order ids included. A missing file is an empty book; a corrupt
   one is an error naming the file, never an empty book in its place.

(The reference's entry and exit are market IOC orders; on TAIFEX a market order needs a
protection price band in practice: hftd's pre-trade risk owns that, not this module.)

The host's side of the contract:

- answer every `Intent` with `on_order_sent(cond_id, purpose, client_order_id)`, or with
  `on_send_failed(cond_id, purpose)` when no order went out (kill switch, refused before
  sending); an intent neither sent nor failed keeps its condition ENTERING/EXITING;
- report fills before the order's end, and every terminal order with `on_order_ended`;
- after a restart, reconcile what `in_flight()` lists (an order id of None there means the
  intent was saved but not known to be sent): report those orders' fills and ends, or
  `on_send_failed` for an intent that never became an order.
"""

from __future__ import annotations

import enum
import errno
import os
from typing import Literal

import msgspec

from ..atomic_file import write_atomic
from . import TERMINAL, OrdState, Side

FILE_VERSION = 1
MAX_ID_CHARS = 64
MAX_PRICE = 10**12  # ticks: far beyond any real price, well inside a JSON-safe integer
MAX_QTY = 10**9  # lots: the config's bound
MAX_FILE_BYTES = 1 << 24

Purpose = Literal["entry", "exit"]
ExitReason = Literal["take profit", "stop loss"]


class ConditionError(ValueError):
    """A condition or a book operation refused; the message says which and why."""


class ConditionFileError(ValueError):
    """A conditions file that cannot be read back; the message names the file."""


def _is_int(v) -> bool:
    return type(v) is int  # not bool, not float


def _name_ok(v) -> bool:
    return (isinstance(v, str) and 0 < len(v) <= MAX_ID_CHARS
            and all(c.isprintable() and not c.isspace() for c in v))


class Condition(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One condition as the trader defines it (CONDITIONS.md's fields plus `instrument`).
    Prices and points are integers in the instrument's ticks (TX/MTX/TMF: a point is a
    tick). Immutable: what moves at run time is in `ConditionState`."""

    id: str
    instrument: str  # the symbol whose trades drive it
    action: Literal["BUY", "SELL"]  # the entry side
    trigger_price: int
    quantity: int  # lots, for the entry; the exit is the quantity entered
    turning_point: int = 15
    take_profit_point: int = 90
    stop_loss_point: int = 30
    is_following: bool = False  # trailing while waiting/armed

    def __post_init__(self):
        if not _name_ok(self.id):
            raise ValueError(f"id must be 1 to {MAX_ID_CHARS} printable characters without "
                             f"spaces, got {self.id!r:.80}")
        if not _name_ok(self.instrument):
            raise ValueError(f"instrument must be a symbol (1 to {MAX_ID_CHARS} printable "
                             f"characters without spaces), got {self.instrument!r:.80}")
        if self.action not in ("BUY", "SELL"):
            raise ValueError(f"action must be 'BUY' or 'SELL', got {self.action!r:.80}")
        if not _is_int(self.trigger_price) or not 0 < self.trigger_price <= MAX_PRICE:
            raise ValueError(f"trigger_price must be an integer price in ticks, 1 to "
                             f"{MAX_PRICE}, got {self.trigger_price!r:.80}")
        if not _is_int(self.quantity) or not 0 < self.quantity <= MAX_QTY:
            raise ValueError(f"quantity must be an integer number of lots, 1 to {MAX_QTY}, "
                             f"got {self.quantity!r:.80}")
        for name in ("turning_point", "take_profit_point", "stop_loss_point"):
            v = getattr(self, name)
            if not _is_int(v) or not 0 <= v <= MAX_PRICE:
                raise ValueError(f"{name} must be an integer distance in ticks, 0 to "
                                 f"{MAX_PRICE}, got {v!r:.80}")
        if type(self.is_following) is not bool:
            raise ValueError(f"is_following must be true or false, got "
                             f"{self.is_following!r:.80}")
        # A level at or below 0 would never be reached: a stop loss that never stops.
        _, order, tp, sl = self.levels(self.trigger_price)
        for name, level, dist in (("turning_point", order, self.turning_point),
                                  ("take_profit_point", tp, self.take_profit_point),
                                  ("stop_loss_point", sl, self.stop_loss_point)):
            if not 0 < level <= MAX_PRICE:
                raise ValueError(f"{name} {dist} puts a level at {level}, outside 1 to "
                                 f"{MAX_PRICE} (trigger_price {self.trigger_price}, "
                                 f"action {self.action})")

    @property
    def side(self) -> Side:
        return Side.BUY if self.action == "BUY" else Side.SELL

    def levels(self, trigger: int) -> tuple[int, int, int, int]:
        """(trigger, order, take profit, stop loss) derived from a trigger price."""
        k = 1 if self.action == "BUY" else -1
        order = trigger + k * self.turning_point
        return trigger, order, order + k * self.take_profit_point, order - k * self.stop_loss_point


class Phase(enum.StrEnum):
    WAITING = "WAITING"  # not armed
    ARMED = "ARMED"  # the trigger was reached; waiting for the turn
    ENTERING = "ENTERING"  # entry intent issued, the entry not yet filled
    ENTERED = "ENTERED"  # entry filled (or ended partly filled): exits are evaluated
    EXITING = "EXITING"  # exit intent issued, the exit not yet filled
    DONE = "DONE"  # exit filled: finished


WAITING, ARMED, ENTERING, ENTERED, EXITING, DONE = Phase


class ConditionState(msgspec.Struct, forbid_unknown_fields=True):
    """A condition's run-time state, saved with it. The levels move when trailing; the
    order ids are those of the latest entry and exit orders (the one in flight while
    ENTERING/EXITING; None before `on_order_sent`)."""

    phase: Phase
    trigger_price: int
    order_price: int
    take_profit_price: int
    stop_loss_price: int
    entry_order_id: int | None = None
    entry_qty: int = 0  # lots filled by the entry
    entry_fill_sum: int = 0  # sum of price * qty over the entry fills (ticks x lots)
    exit_order_id: int | None = None
    exit_qty: int = 0  # lots filled by exits
    exit_fill_sum: int = 0
    exit_reason: ExitReason | None = None

    @property
    def entry_price(self) -> float | None:
        """Average entry fill price (ticks), None before the first fill."""
        return self.entry_fill_sum / self.entry_qty if self.entry_qty else None

    @property
    def exit_price(self) -> float | None:
        return self.exit_fill_sum / self.exit_qty if self.exit_qty else None

    @property
    def open_qty(self) -> int:
        """Lots entered and not yet exited."""
        return self.entry_qty - self.exit_qty


def _waiting(cond: Condition) -> ConditionState:
    trigger, order, tp, sl = cond.levels(cond.trigger_price)
    return ConditionState(WAITING, trigger, order, tp, sl)


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    """A condition and its state: one element of the book and of its file."""

    condition: Condition
    state: ConditionState


class Intent(msgspec.Struct, frozen=True):
    """An order the book wants sent: market, on `side`, for `qty` lots."""

    cond_id: str
    side: Side
    qty: int
    purpose: Purpose


class _Header(msgspec.Struct):
    version: int


class _File(msgspec.Struct, forbid_unknown_fields=True):
    version: int
    conditions: list[Entry]


class ConditionBook:
    """The conditions of one strategy (module docstring: the rules, the phases and the
    host's contract). Ids are unique among everything the book holds, DONE included."""

    def __init__(self):
        self._entries: dict[str, Entry] = {}  # every condition, DONE included, in add order
        self._by_instrument: dict[str, list[Entry]] = {}  # the active ones (not DONE)
        self._orders: dict[int, tuple[Entry, Purpose]] = {}  # order id -> its condition
        self.dirty = False  # something changed since the last save/load

    # --- managing conditions -------------------------------------------------------------
    def add(self, cond: Condition) -> None:
        """Add a condition, WAITING at its configured levels."""
        if not isinstance(cond, Condition):
            raise ConditionError(f"expected a Condition, got {type(cond).__name__}")
        old = self._entries.get(cond.id)
        if old is not None:
            raise ConditionError(f"condition id {cond.id!r} already exists "
                                 f"({old.state.phase.value.lower()}); remove it first")
        self._insert(Entry(cond, _waiting(cond)))
        self.dirty = True

    def remove(self, cond_id: str, *, force: bool = False) -> Entry:
        """Remove a condition and return it. One with an order in flight or a position open
        (ENTERING, ENTERED, EXITING) is refused unless `force`: its position would be left
        to the strategy's owner to close, and a late report for its order is ignored."""
        e = self._entry(cond_id)
        if e.state.phase in (ENTERING, ENTERED, EXITING) and not force:
            raise ConditionError(
                f"condition {cond_id!r} is {e.state.phase.value.lower()} (an order in flight "
                f"or {e.state.open_qty} lot(s) open): removing it would orphan them; "
                f"force to remove anyway")
        del self._entries[cond_id]
        if e.state.phase is not DONE:
            self._by_instrument[e.condition.instrument].remove(e)
        for oid in (e.state.entry_order_id, e.state.exit_order_id):
            if oid is not None and self._orders.get(oid, (None,))[0] is e:
                del self._orders[oid]
        self.dirty = True
        return _copy(e)

    def list(self) -> list[Entry]:
        """Every condition with its state (copies), in add order; DONE ones included (their
        phase says so) until removed."""
        return [_copy(e) for e in self._entries.values()]

    def get(self, cond_id: str) -> Entry:
        return _copy(self._entry(cond_id))

    def in_flight(self) -> list[tuple[str, Purpose, int | None]]:
        """(condition id, purpose, client order id or None if not yet reported sent) of
        every ENTERING/EXITING condition: what a restarted host reconciles."""
        out = []
        for e in self._entries.values():
            s = e.state
            if s.phase is ENTERING:
                out.append((e.condition.id, "entry", s.entry_order_id))
            elif s.phase is EXITING:
                out.append((e.condition.id, "exit", s.exit_order_id))
        return out

    # --- the rules: one trade ------------------------------------------------------------
    def on_trade(self, instrument: str, price: int) -> list[Intent]:
        """Evaluate the conditions of `instrument` (only) against a trade at `price`, in add
        order; return the orders to send."""
        intents: list[Intent] = []
        entries = self._by_instrument.get(instrument)
        if not entries:
            return intents
        for e in entries:
            s = e.state
            phase = s.phase
            if phase is ENTERING or phase is EXITING:
                continue  # one order in flight at most; its fate decides what comes next
            c = e.condition
            # k mirrors SELL onto BUY: every comparison below is BUY's on k * price.
            k = 1 if c.action == "BUY" else -1
            p = k * price
            if phase is WAITING:  # 1: waiting -> armed
                if p <= k * s.trigger_price:
                    s.phase = ARMED
                    self.dirty = True
            elif phase is ARMED:  # 2: armed -> entered (never on the arming trade)
                if p >= k * s.order_price:
                    s.phase = ENTERING
                    self.dirty = True
                    intents.append(Intent(c.id, c.side, c.quantity, "entry"))
                    continue
            else:  # ENTERED: 3: entered -> exited
                if p >= k * s.take_profit_price:
                    s.exit_reason = "take profit"
                elif p <= k * s.stop_loss_price:
                    s.exit_reason = "stop loss"
                else:
                    continue
                s.phase = EXITING
                self.dirty = True
                intents.append(Intent(c.id, Side(-c.side), s.open_qty, "exit"))
                continue
            # 4: trailing (WAITING or ARMED here: not entered, not exited), after step 1 on
            # the same trade, exactly as the reference. The reference's `p <= trigger`: at
            # equality its assignment changes nothing, so `<` (and no dirty flag) is the same.
            if c.is_following and c.turning_point and p < k * s.trigger_price:
                (s.trigger_price, s.order_price, s.take_profit_price,
                 s.stop_loss_price) = c.levels(price)
                self.dirty = True
        return intents

    # --- what became of the orders -------------------------------------------------------
    def on_order_sent(self, cond_id: str, purpose: Purpose, client_order_id: int) -> None:
        """The host sent the order an `Intent` asked for, with this client order id."""
        if purpose not in ("entry", "exit"):
            self._entry(cond_id)
            raise ConditionError(f"purpose must be 'entry' or 'exit', got {purpose!r:.80}")
        e = self._unsent(cond_id, purpose, "has no {purpose} to send ({phase}, {purpose} "
                                           "order {oid})")
        if client_order_id in self._orders:
            raise ConditionError(f"client order id {client_order_id} is already in use by "
                                 f"condition {self._orders[client_order_id][0].condition.id!r}")
        if purpose == "entry":
            e.state.entry_order_id = client_order_id
        else:
            e.state.exit_order_id = client_order_id
        self._orders[client_order_id] = (e, purpose)
        self.dirty = True

    def on_send_failed(self, cond_id: str, purpose: Purpose) -> None:
        """No order went out for the intent (kill switch, refused before sending): the same
        as an order rejected with nothing filled."""
        self._order_over(self._unsent(cond_id, purpose, "has no unsent {purpose} ({phase}, "
                                                        "order {oid})"), purpose)

    def _entry(self, cond_id: str):
        e = self._entries.get(cond_id)
        if e is None:
            raise ConditionError(f"no condition with id {cond_id!r}")
        return e

    def _unsent(self, cond_id: str, purpose: Purpose, why: str):
        """The condition waiting for its `purpose` order to be sent (ENTERING or EXITING,
        with no order yet); else ConditionError "condition '<id>' " + `why` (formatted with
        purpose, phase and oid)."""
        e = self._entry(cond_id)
        s = e.state
        want, oid = (ENTERING, s.entry_order_id) if purpose == "entry" else \
            (EXITING, s.exit_order_id)
        if s.phase is not want or oid is not None:
            raise ConditionError(f"condition {cond_id!r} " + why.format(
                purpose=purpose, phase=s.phase.value.lower(), oid=oid))
        return e

    def on_fill(self, client_order_id: int, qty: int, price: int) -> bool:
        """A fill of one of the book's orders (partial fills accumulate); False if the order
        is not one of the book's in flight (ignored)."""
        if not _is_int(qty) or qty <= 0 or not _is_int(price) or price <= 0:
            raise ConditionError(f"a fill needs a positive integer qty and price, got qty "
                                 f"{qty!r:.40}, price {price!r:.40}")
        hit = self._orders.get(client_order_id)
        if hit is None:
            return False
        e, purpose = hit
        s = e.state
        self.dirty = True
        if purpose == "entry":
            s.entry_qty += qty
            s.entry_fill_sum += qty * price
            if s.entry_qty >= e.condition.quantity:
                del self._orders[client_order_id]
                s.phase = ENTERED
        else:
            s.exit_qty += qty
            s.exit_fill_sum += qty * price
            if s.exit_qty >= s.entry_qty:
                del self._orders[client_order_id]
                s.phase = DONE
                self._by_instrument[e.condition.instrument].remove(e)
        return True

    def on_order_ended(self, client_order_id: int, state: OrdState) -> bool:
        """One of the book's orders reached a terminal state before being filled in full
        (rejected, canceled, expired): the condition acts on what was filled (module
        docstring). False if the order is not one of the book's in flight: ignored, as is
        the FILLED that follows the fills completing an order (a FILLED with fills missing
        is taken at the quantity reported filled, like any other end)."""
        state = OrdState(state)
        if state not in TERMINAL:
            raise ConditionError(f"on_order_ended needs a terminal order state, got "
                                 f"{state.name}")
        hit = self._orders.pop(client_order_id, None)
        if hit is None:
            return False
        self._order_over(*hit)
        return True

    def _order_over(self, e: Entry, purpose: Purpose) -> None:
        s = e.state
        if purpose == "entry":
            if s.entry_qty == 0:
                # Back to the start, configured levels included: it must re-arm.
                e.state = _waiting(e.condition)
            else:
                s.phase = ENTERED  # the exit will be for the quantity entered
        else:
            s.phase = ENTERED  # what is still open; the next trade re-evaluates the exit
            s.exit_order_id = None
            s.exit_reason = None
        self.dirty = True

    # --- persistence ---------------------------------------------------------------------
    def to_state(self) -> _File:
        """The whole book as a msgspec-encodable value ({"version", "conditions"}); encode it
        before the book changes again (it shares the book's state)."""
        return _File(FILE_VERSION, list(self._entries.values()))

    @classmethod
    def from_state(cls, state) -> ConditionBook:
        """A book from `to_state()` as JSON decodes it (dicts, lists, ...); ConditionFileError
        saying what is wrong if it is not one (the host names the file)."""
        def bad(why: str) -> ConditionFileError:
            return ConditionFileError(f"not a conditions book: {why}")
        try:
            version = msgspec.convert(state, _Header).version
            if version != FILE_VERSION:
                raise bad(f"version {version}, this hftd reads version {FILE_VERSION}")
            f = msgspec.convert(state, _File)
        except msgspec.ValidationError as e:
            raise bad(str(e)) from None
        return cls._from_file(f, bad)

    def dumps(self) -> bytes:
        """The whole book as the JSON `save` writes."""
        data = msgspec.json.encode(self.to_state())
        return msgspec.json.format(data, indent=1) + b"\n"

    def save(self, path: str) -> None:
        """Write the whole book to `path` atomically: a new file in the same directory
        (O_EXCL|O_NOFOLLOW, mode 0600), fsync, renamed over `path`, and the directory
        fsynced; then `dirty` is cleared. A crash leaves either the old file or the new."""
        write_atomic(path, self.dumps(), durable=True)
        self.dirty = False

    @classmethod
    def loads(cls, data: bytes, source: str = "<bytes>") -> ConditionBook:
        """A book from the JSON `dumps` made; ConditionFileError naming `source` if it is
        not one."""
        def bad(why: str) -> ConditionFileError:
            return ConditionFileError(f"conditions file {source} is unusable: {why}; fix it "
                                      f"or move it away (the conditions are not reset in its "
                                      f"place)")
        try:
            version = msgspec.json.decode(data, type=_Header).version
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise bad(str(e)) from None
        if version != FILE_VERSION:
            raise bad(f"version {version}, this hftd reads version {FILE_VERSION}")
        try:
            f = msgspec.json.decode(data, type=_File)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise bad(str(e)) from None
        return cls._from_file(f, bad)

    @classmethod
    def _from_file(cls, f: _File, bad) -> ConditionBook:
        """The book of a decoded file; `bad(why)` makes the error if it is inconsistent."""
        book = cls()
        for e in f.conditions:
            why = _inconsistent(e)
            if why is None and e.condition.id in book._entries:
                why = "appears twice"
            if why is None:
                for oid in _live_order_ids(e.state):
                    if oid in book._orders:
                        why = f"uses client order id {oid}, as another condition does"
            if why is not None:
                raise bad(f"condition {e.condition.id!r} {why}")
            book._insert(e)
        return book

    @classmethod
    def load(cls, path: str) -> ConditionBook:
        """The book `save` wrote to `path`; an empty book if there is no such file;
        ConditionFileError naming the file if it cannot be read or is not a book."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return cls()
        except OSError as e:
            why = "it is a symlink (not followed)" if e.errno == errno.ELOOP else e.strerror
            raise ConditionFileError(f"conditions file {path}: cannot open: {why}") from None
        try:
            with os.fdopen(fd, "rb") as fh:
                data = fh.read(MAX_FILE_BYTES + 1)
        except OSError as e:
            raise ConditionFileError(f"conditions file {path}: cannot read: {e.strerror}") \
                from None
        if len(data) > MAX_FILE_BYTES:
            raise ConditionFileError(f"conditions file {path} is larger than "
                                     f"{MAX_FILE_BYTES} bytes: not a conditions file")
        return cls.loads(data, path)

    # --- internals -----------------------------------------------------------------------
    def _insert(self, e: Entry) -> None:
        self._entries[e.condition.id] = e
        if e.state.phase is not DONE:
            self._by_instrument.setdefault(e.condition.instrument, []).append(e)
        for oid in _live_order_ids(e.state):
            self._orders[oid] = (e, "entry" if e.state.phase is ENTERING else "exit")


def _copy(e: Entry) -> Entry:
    return Entry(e.condition, msgspec.structs.replace(e.state))


def _live_order_ids(s: ConditionState) -> list[int]:
    """The order in flight, if it is known."""
    if s.phase is ENTERING and s.entry_order_id is not None:
        return [s.entry_order_id]
    if s.phase is EXITING and s.exit_order_id is not None:
        return [s.exit_order_id]
    return []


def _inconsistent(e: Entry) -> str | None:
    """Why a loaded state cannot be this condition's, or None."""
    c, s = e.condition, e.state
    if s.entry_qty < 0 or s.exit_qty < 0:
        return f"has impossible fill quantities (entry {s.entry_qty}, exit {s.exit_qty})"
    trigger, order, tp, sl = c.levels(s.trigger_price)
    if (s.order_price, s.take_profit_price, s.stop_loss_price) != (order, tp, sl):
        return "has levels that do not derive from its trigger price"
    if s.phase in (WAITING, ARMED) and s.entry_qty:
        return f"is {s.phase.value.lower()} with {s.entry_qty} lot(s) entered"
    if s.phase is WAITING and s.trigger_price != c.trigger_price:
        return "is waiting with a trigger other than its own"
    if s.phase in (ENTERED, EXITING) and not s.entry_qty:
        return f"is {s.phase.value.lower()} with nothing entered"
    if s.phase in (ENTERED, EXITING) and s.exit_qty >= s.entry_qty:
        return f"is {s.phase.value.lower()} with nothing open"
    if s.phase is DONE and (not s.entry_qty or s.exit_qty < s.entry_qty):
        return "is done with a position still open"
    return None
