"""The support/resistance "conditions" strategy, hosted as an hftd strategy.

The rules are `hftd.trading.conditions` (CONDITIONS.md, with the reference's flaws fixed);
this class only connects them to the strategy API: every trade price goes to the book, the
book's intents become market IOC orders (the executor's price band and risk checks own
their protection), and fills and order ends go back to the book.

Conditions come from the config (``params.conditions``, prices and points in the
instrument's price units, e.g. index points) the first time the strategy starts; from then
on the set is the strategy's saved state (`on_save`/`on_load`: the book's `to_state()` in
the strategy stage's file ``<state dir>/<strategy>.strategy.json``), so a restart of the
strategy or of the daemon resumes every condition in its phase, and `hftd conditions
add|list|remove` changes it while it runs (a bad condition is refused with the set
unchanged). Saved at once after an order is sent, a fill, an order's end and a command;
trailing moves (a falling market under a following BUY) at most every `save_every_s`.

Migration: a ``<strategy>.conditions.json`` of an earlier hftd, with no state file of the
new kind yet, is loaded once, saved as the new state and renamed ``….conditions.json.
migrated`` (a position open under it would otherwise be forgotten and never exited).
"""

from __future__ import annotations

import os

from ..trading import OrdState, TimeInForce
from ..trading.conditions import Condition, ConditionBook, ConditionError, ConditionFileError, Phase
from ..log import get as get_log
from .base import StateError, Strategy

_PRICE_KEYS = ("trigger_price", "turning_point", "take_profit_point", "stop_loss_point")


class Conditions(Strategy):
    # trailing moves (a falling market under a following BUY) are saved at most this often;
    # an order sent, a fill, an end of an order or a command is saved at once
    save_every_s = 0.5

    def on_start(self) -> None:
        # the config's conditions: the set unless a saved state replaces it (on_load); with a
        # saved state they are not even read (a stale one must not stop the strategy)
        self.book = ConditionBook()
        saved = self.state_file()
        if saved and os.path.exists(saved):
            return
        for i, spec in enumerate(self.params.get("conditions", [])):
            try:
                self.book.add(self._condition(spec))
            except (ValueError, TypeError) as e:
                raise ValueError(f"params.conditions[{i}]: {e}") from None
        self._migrate()

    def on_load(self, state) -> None:
        self.book = ConditionBook.from_state(state)
        self._log(f"resumed {len(self.book.list())} conditions from {self.state_file()} (the "
                  f"config's conditions seed a new state only)")

    def on_save(self):
        self.book.dirty = False
        return self.book.to_state()

    def _migrate(self) -> None:
        """An earlier hftd's own conditions file, and no state of the new kind: taken once."""
        old = os.path.join(self.state_dir(), f"{self.name}.conditions.json")
        new = self.state_file()
        if not new or os.path.exists(new) or not os.path.exists(old):
            return
        try:
            self.book = ConditionBook.load(old)
        except ConditionFileError as e:
            raise StateError(str(e)) from None
        if not self.save():  # said why; the old file stays, taken again at the next start
            return
        os.replace(old, old + ".migrated")
        self._log(f"migrated {len(self.book.list())} conditions from {old} to {new} (the old "
                  f"file is now {old}.migrated)")

    # --- the rules' inputs -------------------------------------------------------------
    def on_tick(self, tick) -> None:
        # the book answers with intents of conditions on this tick's instrument only
        intents = self.book.on_trade(self.symbol(tick.instrument), tick.price)
        for it in intents:
            send = self.buy if it.side > 0 else self.sell
            oid = send(tick.instrument, it.qty, 0, TimeInForce.IOC)
            if oid:
                self.book.on_order_sent(it.cond_id, it.purpose, oid)
            else:  # the kill switch is on: nothing was sent
                self.book.on_send_failed(it.cond_id, it.purpose)
        if intents:
            self.save()
        elif self.book.dirty:
            self.mark_dirty()  # a trailing move: saved within save_every_s

    def on_fill(self, fill) -> None:
        if self.book.on_fill(fill.order_id, fill.qty, fill.price):
            self.save()

    def on_order(self, order) -> None:
        if order.state in (OrdState.REJECTED, OrdState.CANCELED, OrdState.EXPIRED):
            if self.book.on_order_ended(order.client_id, OrdState(order.state)):
                self.save()

    # --- hftd conditions add|list|remove ---------------------------------------------
    def on_command(self, name: str, args: dict) -> str:
        if name != "conditions":
            return super().on_command(name, args)
        op = args.pop("op", None)
        if op == "list":
            entries = self.book.list()
            if args.get("json"):
                import msgspec

                return msgspec.json.encode([{"condition": e.condition, "state": e.state}
                                            for e in entries]).decode()
            return "\n".join(self._describe(e) for e in entries) or "no conditions"
        if op == "add":
            args.pop("json", None)
            cond = self._condition(args)
            self.book.add(cond)  # refuses a duplicate id, the book unchanged
            self.save()
            return f"added {self._describe(self.book.get(cond.id))}"
        if op == "remove":
            e = self.book.remove(str(args.get("id", "")), force=bool(args.get("force")))
            self.save()
            return f"removed {e.condition.id} ({e.state.phase})"
        raise ValueError(f"conditions: unknown operation {op!r} (add, list, remove)")

    # --- helpers ----------------------------------------------------------------------
    def _condition(self, spec: dict) -> Condition:
        """A Condition from config or CLI fields, prices in the instrument's price units."""
        import msgspec

        spec = dict(spec)
        sym = spec.get("instrument")
        try:
            i = self.instrument_id(sym)
        except ValueError:
            raise ConditionError(f"instrument {sym!r} is not traded by strategy {self.name} "
                                 f"(it trades {', '.join(self.api.symbols)})") from None
        contract = self.contract(i)
        for key in _PRICE_KEYS:
            if key in spec:
                try:
                    spec[key] = contract.to_ticks(str(spec[key]))
                except (ValueError, ArithmeticError) as e:
                    raise ConditionError(f"{key}: {e}") from None
        try:
            return msgspec.convert(spec, Condition)
        except msgspec.ValidationError as e:
            raise ConditionError(str(e)) from None

    def _describe(self, e) -> str:
        c, s = e.condition, e.state
        to = self.contract(self.instrument_id(c.instrument)).to_price
        levels = (f"trigger {to(s.trigger_price)} order {to(s.order_price)} take-profit "
                  f"{to(s.take_profit_price)} stop-loss {to(s.stop_loss_price)}")
        extra = f" exit {s.exit_reason}" if s.phase == Phase.DONE and s.exit_reason else ""
        return (f"{c.id}: {c.action} {c.quantity} {c.instrument} {s.phase}{extra}; {levels}"
                f"{' following' if c.is_following else ''}")

    def _log(self, msg: str) -> None:
        get_log(f"hftd strategy {self.name}").info(msg)

