"""The PFCF venue (`[executor] venue = "pfcf"`): the executor's orders as orders at PFCF
(統一期貨) through unitrade's `dtrade`, and PFCF's replies and matches as the executor's
venue answers. Same interface as the simulated venue (hftd.venues): `submit`, `cancel`,
`replace`, `cancel_all`, `restore`, `poll`, `on_trade`, `next_due_ns`, `working`.

Orders out. A new order is `dtrade.order(DOrderObject(actno, subactno, productid, bs,
ordertype, price, orderqty, ordercondition, opencloseflag, dtrade, note))`: productid is the
contract's PFCF code (TXFL6), bs B/S, ordertype L (limit) or M (market, price 0),
ordercondition R/I/F (ROD/IOC/FOK), opencloseflag "" (automatic), dtrade Y/N (`[pfcf]
day_trade`), and `note` carries the client order id: "H", a letter of the instance, and the
id in 8 base-36 digits (PFCF keeps at most 10 characters, no Chinese). A cancel is
`replace_order(DReplaceObject(replacetype "4", orderno))`; a replace is a price change ("m")
and/or a quantity reduction ("5", by the difference: PFCF cannot raise a quantity), one after
the other, answered REPLACED once both took effect. A cancel or replace of an order PFCF has
not yet numbered (no reply yet) waits for its number.

Answers in. unitrade calls `on_reply(DOrderReply)` and `on_match(DMatchReply)` on its own
thread, and updates the same reply object in place later: the callback copies the fields it
needs into a tuple and appends it to a deque (no lock: one append), and rings the executor's
doorbell when the deque was empty. `poll` (the executor's thread) turns them into answers:
- a reply with PFCF's number to an order not yet acknowledged: ACK; an error (status code
  9999 or ERRn) before that: REJECT (VENUE_REFUSED), after it: the pending cancel or replace
  is CANCEL_REJECTED (VENUE_REFUSED);
- a reply whose deleted quantity grew: the order ended (CANCELED, or EXPIRED for an IOC/FOK
  nobody canceled) if nothing is left, else a quantity reduction took effect; a price change
  (status 0006) took effect;
- a match: FILL (matched quantity and price), once per PFCF match sequence number. Fills
  come only from matches; an order's end waits until the matches its reply counted arrived.
`order()` refusing at once (issend False: not connected, PFCF's rate limit, ...) is a REJECT.

Connection. The order path's `on_connected`/`on_disonnected`/`on_error` are counted
(`venue.*` values of the executor, in `status`); a disconnect trips the kill switch (an
alarm: `alarms()`), since orders can neither be sent nor answered.

Start-up (`reconcile`, every start): PFCF's replies and matches of the day (`query_reply`,
`query_match`) are compared with the orders the executor restored: fills it lacks are
applied, orders PFCF ended are ended, orders PFCF never received (sent by a process killed
before `order()` returned, no trace at PFCF) are rejected, not sent again: an order is never
sent twice (acknowledged orders PFCF no longer lists, of an earlier trading day, expired).
If the day cannot be queried the executor does not start (exit 2; the supervisor retries). Orders that carry this instance's mark and that the executor does not manage
raise the alarm. The venue keeps a journal (`pfcf-orders.<instance>.log` in the state
directory: client id, PFCF sequence and order number, one line each as learned), so a
restarted executor finds its orders at PFCF even if PFCF does not echo the note.
"""

from __future__ import annotations

import collections
import os
import time
from decimal import Decimal

from .. import pfcf
from ..log import get as get_log
from ..events import RejectReason, ReportKind
from ..trading import OrdType, TimeInForce

ACK, REJECT, FILL = ReportKind.ACK, ReportKind.REJECT, ReportKind.FILL
CANCELED, EXPIRED = ReportKind.CANCELED, ReportKind.EXPIRED
REPLACED, CANCEL_REJECTED = ReportKind.REPLACED, ReportKind.CANCEL_REJECTED
REFUSED = RejectReason.VENUE_REFUSED
_NONE = RejectReason.NONE

OK_CODES = {"0000", "0001", "0002", "0003", "0004", "0006"}  # PFCF's status codes of success
PRICE_CHANGED = "0006"
CANCELED_CODE = "0002"
NOT_YET = "STAR"  # unitrade's own mark of an order it is sending
_B36 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OWNER_SHIFT = 40  # client ids are (strategy index << 40) | n (hftd.stages.strategy)
NOTE_N_BITS = 34  # the note keeps n < 2**34 (17 billion orders per strategy)
COUNTERS = ("connects", "disconnects", "errors", "refused", "foreign", "unmatched",
            "reconciled_fills", "reconciled_ends", "reconciled_lost", "reconciled_changes")


def instance_letter(instance: str) -> str:
    import hashlib

    return _B36[hashlib.blake2b(instance.encode(), digest_size=2).digest()[0] % 36]


def note_for(letter: str, client_id: int) -> str:
    owner, n = client_id >> OWNER_SHIFT, client_id & ((1 << OWNER_SHIFT) - 1)
    if not (0 <= owner < 64 and 0 <= n < (1 << NOTE_N_BITS)):
        raise ValueError(f"client id {client_id} does not fit PFCF's 10-character note")
    v = (owner << NOTE_N_BITS) | n
    digits = ""
    for _ in range(8):
        v, r = divmod(v, 36)
        digits = _B36[r] + digits
    return "H" + letter + digits


def client_id_of(letter: str, note) -> int | None:
    """The client id a note carries if it is this instance's mark, else None."""
    if not isinstance(note, str):
        return None
    note = note.strip()
    if len(note) != 10 or note[0] != "H" or note[1] != letter:
        return None
    v = 0
    for c in note[2:]:
        d = _B36.find(c)
        if d < 0:
            return None
        v = v * 36 + d
    return ((v >> NOTE_N_BITS) << OWNER_SHIFT) | (v & ((1 << NOTE_N_BITS) - 1))


class _Order:
    __slots__ = ("owner", "cid", "inst", "side", "qty", "price", "ord_type", "tif", "note",
                 "seq", "orderno", "acked", "filled", "deleted", "steps", "want", "waiting",
                 "cancel_sent", "end", "ended", "lost")

    def __init__(self, owner, cid, inst, side, qty, price, ord_type, tif, note):
        self.owner, self.cid, self.inst, self.side = owner, cid, inst, side
        self.qty, self.price, self.ord_type, self.tif = qty, price, ord_type, tif
        self.note = note
        self.seq = self.orderno = ""
        self.acked = False
        self.filled = 0  # from matches
        self.deleted = 0  # PFCF's deleted quantity, last seen
        self.steps = collections.deque()  # requests sent, answered in order: ("C",) ("P", price) ("Q", qty)
        self.want = None  # a replace's target (qty, price), answered REPLACED when reached
        self.waiting = []  # requests waiting for PFCF's order number
        self.cancel_sent = False
        self.end = None  # an end seen in a reply, waiting for the matches it counted: (kind, matched)
        self.ended = False
        self.lost = False  # taken as never received by PFCF (reconcile)


class PfcfVenue:
    last_seq = 0  # answers are not logged by sequence here (see the journal)

    def take_seq(self) -> int:
        return 0

    def __init__(self, cfg, api, account: str, codes: dict[str, int], values=None,
                 wake=None, log=None, journal: str = "", redact=str):
        """`api`: a logged-in unitrade session (hftd.pfcf.login); `codes`: PFCF contract code
        -> instrument id; `values`: the executor's stats values by name (venue.*); `wake()`:
        rings the executor's doorbell; `log(msg)`: a line to the executor's log."""
        self.account = account
        self.subaccount = cfg.pfcf.subaccount
        self.day_trade = "Y" if cfg.pfcf.day_trade else "N"
        self.letter = instance_letter(cfg.instance)
        self.set_codes(codes)
        self.tick = [Decimal(i.tick_size) for i in cfg.instruments]
        self.inbox: collections.deque = collections.deque()  # unitrade's thread -> poll
        self.wake = wake or (lambda: None)
        self.log = log or get_log("hftd").warning  # refusals and errors: warnings
        self.redact = redact
        self.values = values or {}
        # a restarted executor's counts go on from its predecessor's (in the stats block)
        self.counts = {k: (self.values[k].value if self.values else 0) for k in COUNTERS}
        self.connected = 1
        self._alarms: list[str] = []
        self.orders: dict[int, _Order] = {}  # client id -> order not ended
        self.by_orderno: dict[str, _Order] = {}
        self.by_seq: dict[str, _Order] = {}
        self.owners: dict[int, dict[int, _Order]] = {}
        self.match_seqs = _Recent()  # (order number, match number) applied
        self.ended_ordernos = _Recent()  # PFCF order number -> client id, ended here
        self.lost: dict[int, _Order] = {}  # taken at the start as never received by PFCF
        self.early = _Recent(10_000)  # order number -> matches that came before its reply
        self.odd_codes: set[str] = set()  # status codes not known here, logged once
        self.out: list = []
        self.journal_path = journal
        self.journal = {}  # client id -> [seq, orderno], from an earlier run's journal
        self._jfd = -1
        if journal:
            self._open_journal(journal)
        self.api = self.dtrade = None
        if api is not None:
            self.attach(api)
        self._publish()

    def attach(self, api) -> None:
        """Take unitrade's order callbacks of session `api` (before its login: the login
        connects, and that is counted)."""
        from unitrade.trade.ddata import DOrderObject, DReplaceObject  # the package's own

        self._order_object, self._replace_object = DOrderObject, DReplaceObject
        self.api = api
        d = self.dtrade = api.dtrade
        d.on_reply = self._on_reply
        d.on_match = self._on_match
        pfcf.set_connection_callbacks(d, self._on_connected, self._on_disconnected, self._on_error)

    def set_codes(self, codes: dict[str, int]) -> None:
        """PFCF contract code -> instrument id."""
        self.code_of = {i: c for c, i in codes.items()}

    # --- unitrade's thread: copy, append, ring -------------------------------------------
    def _put(self, item) -> None:
        pfcf.hand_over(self.inbox, item, self.wake)

    def _on_reply(self, r) -> None:
        if r is None:  # (unitrade's error path may hand over None)
            self._put(("E", "a reply without an order (None)"))
            return
        self._put(("R", str(r.note or "").strip(), str(r.seq or "").strip(),
                   str(r.orderno or "").strip(), str(r.statuscode or "").strip(),
                   str(r.orderstatus or ""), _int(r.orderqty), _int(r.matchqty),
                   _int(r.delqty), r.price, str(r.productid or "").strip()))

    def _on_match(self, m) -> None:
        if m is None:
            self._put(("E", "a match without an order (None)"))
            return
        self._put(("M", str(m.orderno or "").strip(), str(m.matchseq or "").strip(),
                   _int(m.matchqty), m.matchprice, str(m.productid or "").strip(),
                   str(m.bs or "").strip()))

    def _on_connected(self, *a) -> None:
        self._put(("C",))

    def _on_disconnected(self, *a) -> None:
        self._put(("D",))

    def _on_error(self, *a) -> None:
        self._put(("E", pfcf.error_text(a)))

    # --- the executor's thread -------------------------------------------------------------
    def alarms(self) -> list[str]:
        """Alarms raised since the last call (the executor trips the kill switch)."""
        a, self._alarms = self._alarms, []
        return a

    def submit(self, owner, client_id, instrument, side, qty, ord_type, tif, price,
               now_ns) -> None:
        code = self.code_of.get(instrument)
        try:
            note = note_for(self.letter, client_id)
        except ValueError:
            note = ""
        o = _Order(owner, client_id, instrument, side, qty, price, ord_type, tif, note)
        if code is None or not note:
            self._refuse(o, "no PFCF contract code for this instrument" if code is None
                         else "client id too large for PFCF's note")
            return
        obj = self._order_object(
            actno=self.account, subactno=self.subaccount, productid=code,
            bs="B" if side > 0 else "S", ordertype="L" if ord_type == OrdType.LIMIT else "M",
            price=self._price(instrument, price) if ord_type == OrdType.LIMIT else 0,
            orderqty=int(qty), ordercondition=_condition(ord_type, tif),
            opencloseflag="", dtrade=self.day_trade, note=note)
        self._add(o)
        try:
            resp = self.dtrade.order(obj)
        except Exception as e:  # the library's own failure: the order did not go
            self._refuse(o, f"order() raised {type(e).__name__}")
            return
        if not getattr(resp, "issend", False):
            self._refuse(o, f"{getattr(resp, 'errorcode', '')} {getattr(resp, 'errormsg', '')}")
            return
        o.seq = str(resp.seq or "").strip()
        if o.seq:
            self.by_seq[o.seq] = o
        self._journal(o)

    def cancel(self, owner, client_id, now_ns, log: bool = True) -> None:
        o = self.orders.get(client_id)
        if o is None or o.owner != owner:
            self.out.append((owner, client_id, CANCEL_REJECTED, 0, 0, RejectReason.UNKNOWN_ORDER))
            return
        o.cancel_sent = True
        self._request(o, ("C",))

    def replace(self, owner, client_id, new_qty, new_price, now_ns, log: bool = True) -> None:
        o = self.orders.get(client_id)
        if o is None or o.owner != owner:
            self.out.append((owner, client_id, CANCEL_REJECTED, 0, 0, RejectReason.UNKNOWN_ORDER))
            return
        if new_qty > o.qty or new_qty <= o.filled:
            # PFCF reduces a quantity, never raises it
            self.out.append((owner, client_id, CANCEL_REJECTED, 0, 0, RejectReason.BAD_QTY))
            return
        if o.want is not None:  # one at a time: each is answered REPLACED once whole
            self.out.append((owner, client_id, CANCEL_REJECTED, 0, 0,
                             RejectReason.REPLACE_PENDING))
            return
        if new_qty == o.qty and new_price == o.price:
            self.out.append((owner, client_id, REPLACED, new_qty, new_price, _NONE))
            return
        o.want = (new_qty, new_price)
        if new_price != o.price:
            self._request(o, ("P", new_price))
        if new_qty != o.qty:
            self._request(o, ("Q", new_qty))

    def cancel_all(self, owner, now_ns) -> int:
        n = 0
        for o in list(self.owners.get(owner, {}).values()):
            if not o.cancel_sent:
                o.cancel_sent = True
                self._request(o, ("C",))
                n += 1
        return n

    def restore(self, owner, client_id, instrument, side, qty, filled, ord_type, tif, price,
                acked, now_ns) -> None:
        """An order the executor restored from its store: PFCF has it (or never got it);
        `reconcile` tells."""
        o = _Order(owner, client_id, instrument, side, qty, price, ord_type, tif,
                   _safe_note(self.letter, client_id))
        o.acked, o.filled = bool(acked), filled
        seq, orderno = self.journal.get(client_id, ("", ""))
        o.seq, o.orderno = seq, orderno
        self._add(o)
        if seq:
            self.by_seq[seq] = o
        if orderno:
            self.by_orderno[orderno] = o

    def poll(self, now_ns):
        q = self.inbox
        while q:
            item = q.popleft()
            k = item[0]
            if k == "R":
                self._reply(*item[1:])
            elif k == "M":
                self._match(*item[1:])
            elif k == "C":
                self.counts["connects"] += 1
                self.connected = 1
            elif k == "D":
                self.counts["disconnects"] += 1
                self.connected = 0
                self._alarms.append("PFCF order connection lost: orders can be neither sent "
                                    "nor answered")
            elif k == "E":
                self.counts["errors"] += 1
                self.log(f"PFCF order path error: {self.redact(item[1])[:300]}")
        if self.values:
            self._publish()
        if not self.out:
            return ()
        out, self.out = self.out, []
        return out

    def close(self) -> None:
        """Log out: unitrade's connection threads are not daemon threads, a process with a
        session open would not exit."""
        if self.api is not None:
            try:
                self.api.logout()
            except Exception as e:  # the end of the run: say it, do not fail it
                self.log(f"PFCF logout failed: {self.redact(f'{type(e).__name__}: {e}')[:300]}")
            self.api = None

    def on_trade(self, instrument, price, qty, now_ns):
        return ()  # PFCF matches orders at the exchange, not against the feed

    def next_due_ns(self) -> int | None:
        """Now while answers wait (one appended after the executor looked rang the
        doorbell), else None: answers ring the doorbell."""
        return time.monotonic_ns() if self.inbox else None

    def working(self, owner) -> list[int]:
        return list(self.owners.get(owner, ()))

    # --- inside ----------------------------------------------------------------------------
    def _publish(self) -> None:
        v = self.values
        if not v:
            return
        for k, n in self.counts.items():
            v[k].set(n)
        v["connected"].set(self.connected)

    def _add(self, o) -> None:
        self.orders[o.cid] = o
        self.owners.setdefault(o.owner, {})[o.cid] = o

    def _end(self, o, kind, qty, reason=_NONE) -> None:
        self._forget(o)
        self.out.append((o.owner, o.cid, kind, qty, o.price, reason))

    def _forget(self, o) -> None:
        """An ended order: no longer managed; PFCF speaking of it again is an alarm."""
        o.ended = True
        self.orders.pop(o.cid, None)
        live = self.owners.get(o.owner)
        if live:
            live.pop(o.cid, None)
        if o.orderno:
            self.ended_ordernos[o.orderno] = o.cid

    def _refuse(self, o, why: str) -> None:
        self.counts["refused"] += 1
        self.log(f"PFCF refused order {o.cid}: {self.redact(why).strip()[:300]}")
        self._end(o, REJECT, o.qty, REFUSED)

    def _price(self, inst, ticks) -> float:
        return float(Decimal(int(ticks)) * self.tick[inst])

    def _ticks(self, inst, price) -> int | None:
        try:
            p = Decimal(str(price).replace(",", "").strip())
        except Exception:
            return None
        t = p / self.tick[inst]
        return int(t) if t == t.to_integral_value() else None

    def _request(self, o, step) -> None:
        if not o.orderno:
            o.waiting.append(step)  # sent once PFCF numbers the order
            return
        self._send_step(o, step)

    def _send_step(self, o, step) -> None:
        DReplaceObject = self._replace_object
        if step[0] == "C":
            obj = DReplaceObject(replacetype="4", actno=self.account, orderno=o.orderno,
                                 note=o.note)
        elif step[0] == "P":
            obj = DReplaceObject(replacetype="m", actno=self.account, orderno=o.orderno,
                                 ordercondition="RIF"[o.tif], ordertype="L",
                                 price=self._price(o.inst, step[1]), note=o.note)
        else:  # "Q": reduce by the difference
            obj = DReplaceObject(replacetype="5", actno=self.account, orderno=o.orderno,
                                 orderqty=int(o.qty - step[1]), note=o.note)
        try:
            resp = self.dtrade.replace_order(obj)
            ok = getattr(resp, "issend", False)
            why = f"{getattr(resp, 'errorcode', '')} {getattr(resp, 'errormsg', '')}"
        except Exception as e:
            ok, why = False, f"replace_order() raised {type(e).__name__}"
        if ok:
            o.steps.append(step)
            return
        self.counts["refused"] += 1
        self.log(f"PFCF refused a {'cancel' if step[0] == 'C' else 'replace'} of order "
                 f"{o.cid}: {self.redact(why).strip()[:300]}")
        self._step_failed(o, step)

    def _step_failed(self, o, step) -> None:
        if step[0] == "C":
            o.cancel_sent = False
        elif o.want is not None:
            o.want = None
        else:
            return  # the other half of a replace already answered
        self.out.append((o.owner, o.cid, CANCEL_REJECTED, 0, 0, REFUSED))

    def _find(self, note, seq, orderno):
        o = None
        if orderno:
            o = self.by_orderno.get(orderno)
        if o is None and note:
            cid = client_id_of(self.letter, note)
            if cid is not None:
                o = self.orders.get(cid) or self.lost.get(cid)
        if o is None and seq:
            o = self.by_seq.get(seq)
        return o

    def _reply(self, note, seq, orderno, code, status, orderqty, matchqty, delqty, price,
               productid) -> None:
        """One DOrderReply, as copied when it came. Quantities decide, not status codes
        alone: unitrade's status of an order whose match came before its own reply can stay
        at its "sending" mark (found by a hostile review running unitrade's own DLogic)."""
        o = self._find(note, seq, orderno)
        if o is not None and o.ended and o.lost:
            o.lost = False  # (one alarm)
            self.lost.pop(o.cid, None)
            self._not_managed(f"a reply for order {o.cid}, taken at the start as never "
                              f"received")
            return
        if o is None or o.ended:
            if client_id_of(self.letter, note) is None:
                self.counts["foreign"] += 1  # another program's order on the account
            elif o is None and orderno not in self.ended_ordernos:
                self._not_managed(f"a reply for an order ({note}) the executor does not manage")
            return
        if orderno and not o.orderno:
            o.orderno = orderno
            self.by_orderno[orderno] = o
            self._journal(o)
            early = self.early.pop(orderno, None)
        else:
            early = None
        if _is_error(code):  # an error: of the order, or of the request in flight
            self.counts["refused"] += 1
            self.log(f"PFCF refused order {o.cid} ({code}): {self.redact(status)[:300]}")
            if not o.acked:
                self._end(o, REJECT, o.qty, REFUSED)
            elif o.steps:
                self._step_failed(o, o.steps.popleft())
            return
        if code not in OK_CODES and code != NOT_YET:
            if code not in self.odd_codes:
                self.odd_codes.add(code)
                self.log(f"PFCF status code {code!r} ({self.redact(status)[:100]}) is not "
                         f"known here: read from the quantities only")
        if not o.acked and o.orderno and code != NOT_YET:
            o.acked = True
            self.out.append((o.owner, o.cid, ACK, o.qty, o.price, _NONE))
            for step in o.waiting:
                self._send_step(o, step)
            o.waiting = []
        if early:  # matches that came before the order had its number here: ours after all
            self.counts["unmatched"] -= len(early)
        for m in early or ():
            self._match(*m)
            if o.ended:
                return
        if code == PRICE_CHANGED and _take_step(o, "P"):
            p = self._ticks(o.inst, price)
            if p is not None:
                o.price = p
            self._replaced(o)
        total = orderqty if orderqty > 0 else o.qty
        left = total - matchqty - delqty
        if delqty > o.deleted and left > 0:  # a quantity reduction took effect
            o.deleted = delqty
            _take_step(o, "Q")
            o.qty = matchqty + left
            self._replaced(o)
        elif o.end is None and (left <= 0 and delqty > 0 or code == CANCELED_CODE):
            # PFCF deleted the rest (a cancel, an IOC/FOK's rest: unitrade ends those with
            # status 0002 and no deleted quantity)
            o.deleted = max(delqty, o.deleted)
            kind = CANCELED if (o.cancel_sent or o.tif == TimeInForce.ROD) else EXPIRED
            o.end = (kind, matchqty)
        self._maybe_end(o)

    def _replaced(self, o) -> None:
        if o.want is None:
            return
        if any(s[0] in "PQ" for s in o.steps):
            return  # the other half is still on its way
        o.want = None
        self.out.append((o.owner, o.cid, REPLACED, o.qty, o.price, _NONE))

    def _maybe_end(self, o) -> None:
        if o.end is None or o.ended:
            return
        kind, matched = o.end
        if o.filled < matched:
            return  # its matches first
        self._end(o, kind, o.qty - o.filled)

    def _not_managed(self, what: str) -> None:
        """PFCF speaks of an order with this instance's mark that the executor does not
        manage (ended here, or never known): positions may differ from PFCF's. Alarm."""
        self.counts["unmatched"] += 1
        self._alarms.append(f"PFCF sent {what}: positions may differ from PFCF's; check "
                            f"the account at PFCF")

    def _match(self, orderno, matchseq, qty, price, productid, bs) -> None:
        if matchseq:
            key = (orderno, matchseq)
            if key in self.match_seqs:
                return
            self.match_seqs.add(key)
        o = self.by_orderno.get(orderno)
        if o is None or o.ended:
            if orderno in self.ended_ordernos:
                self._not_managed(f"a fill of {qty} for order {self.ended_ordernos[orderno]}, "
                                  f"which had ended here")
            else:  # another program's order, or ours before its number reached us: kept
                self.counts["unmatched"] += 1
                self.early.setdefault(orderno, []).append(
                    (orderno, matchseq, qty, price, productid, bs))
                if matchseq:
                    self.match_seqs.pop((orderno, matchseq), None)  # (applied only later)
            return
        ticks = self._ticks(o.inst, price)
        if qty <= 0 or ticks is None or ticks <= 0:
            self._not_managed(f"a match of order {o.cid} not understood (qty {qty}, "
                              f"price {price!r})")
            return
        if qty > o.qty - o.filled:
            self._not_managed(f"a fill of {qty} for order {o.cid}, which had "
                              f"{o.qty - o.filled} left")
            qty = o.qty - o.filled
            if qty <= 0:
                return
        o.filled += qty
        self.out.append((o.owner, o.cid, FILL, qty, ticks, _NONE))
        if o.filled >= o.qty:
            self._forget(o)
            return
        self._maybe_end(o)

    # --- the journal: what PFCF calls our orders -------------------------------------------
    def _open_journal(self, path: str) -> None:
        from ..trading.store import StateError, check_private_file

        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            check_private_file(fd, "PFCF order journal", path)
        except StateError:
            os.close(fd)
            raise
        self._jfd = fd
        data = b""
        while True:
            chunk = os.pread(fd, 1 << 20, len(data))
            if not chunk:
                break
            data += chunk
        for line in data.decode("ascii", "replace").splitlines():
            parts = line.split(" ")
            if len(parts) == 3 and parts[0].isdigit():
                self.journal[int(parts[0])] = [parts[1] if parts[1] != "-" else "",
                                               parts[2] if parts[2] != "-" else ""]

    def _journal(self, o) -> None:
        if self._jfd < 0:
            return
        os.write(self._jfd, f"{o.cid} {o.seq or '-'} {o.orderno or '-'}\n".encode("ascii"))

    # --- start-up ----------------------------------------------------------------------
    def reconcile(self) -> list:
        """Bring the restored orders level with PFCF's replies and matches of the day (see
        the module's docstring). Returns the answers to apply, before trading."""
        d = self.dtrade
        reload = getattr(d, "reload_working_orders", None)
        if reload is not None:
            # unitrade cancels and replaces only orders its session knows: this one's are the
            # day's working orders (it loads them at its login; again here, to be sure)
            reload()
        replies = d.query_reply(self.account, 0, "", "", "", "")
        matches = d.query_match(self.account, 0, "", "", "", "")
        if not getattr(replies, "ok", False) or not getattr(matches, "ok", False):
            why = getattr(replies, "error", "") or getattr(matches, "error", "")
            raise pfcf.PfcfError(f"PFCF: cannot query the day's orders to reconcile the working "
                            f"orders with (no trading without): {self.redact(why)[:300]}")
        mine: dict[int, object] = {}  # client id -> PFCF's reply
        stray = 0
        for r in replies.data or []:
            orderno = str(r.orderno or "").strip()
            o = self.by_orderno.get(orderno)
            cid = o.cid if o is not None else client_id_of(self.letter, r.note)
            if cid is None:
                seq = str(r.seq or "").strip()
                o = self.by_seq.get(seq) if seq else None
                cid = o.cid if o is not None else None
            if cid is None:
                continue
            mine[cid] = r
            o = self.orders.get(cid)
            if o is None:
                if _int(r.nomatchqty) > 0 and not _is_error(str(r.statuscode).strip()):
                    stray += 1  # working at PFCF, marked ours, not managed
                continue
            if orderno and not o.orderno:
                o.orderno = orderno
                self.by_orderno[orderno] = o
                self._journal(o)
        # matches per order, in PFCF's order; the first `filled` lots were applied before.
        # Those of orders not managed here are never applied later.
        per: dict[int, list] = {}
        for m in matches.data or []:
            orderno = str(m.orderno or "").strip()
            o = self.by_orderno.get(orderno)
            if o is not None:
                per.setdefault(o.cid, []).append(m)
            elif str(m.matchseq or "").strip():
                self.match_seqs.add((orderno, str(m.matchseq).strip()))
        unlisted = []
        for o in list(self.orders.values()):
            r = mine.get(o.cid)
            if r is None:
                if o.acked or o.seq:
                    # sent (order() returned), yet not in PFCF's day: an earlier day's order
                    # (PFCF ended it) or a query that lags. Kept, and the operator told.
                    unlisted.append(o.cid)
                    continue
                # no trace at PFCF: the process died before order() returned and PFCF never
                # got it (at most once: not sent again). Should PFCF speak of it, the alarm.
                self.counts["reconciled_lost"] += 1
                o.lost = True
                self.lost[o.cid] = o
                self._end(o, REJECT, o.qty, REFUSED)
                continue
            self._reconcile_order(o, r, per.get(o.cid, ()))
        if stray:
            self._alarms.append(f"{stray} working order(s) at PFCF carry this instance's mark "
                                f"but the executor does not manage them; cancel them at PFCF "
                                f"or check the state directory")
        if unlisted:
            self._alarms.append(f"{len(unlisted)} order(s) the executor has as working are not "
                                f"in PFCF's orders of the day (client ids {unlisted[:5]}): an "
                                f"earlier day's, or PFCF's query lags; check them at PFCF")
        self._publish()
        out, self.out = self.out, []
        return out

    def _reconcile_order(self, o, r, matches) -> None:
        """Restored order `o` against PFCF's reply `r` and its matches: what PFCF did while
        the executor was down (acknowledged, filled, changed, ended) is applied."""
        code = str(r.statuscode).strip()
        if _is_error(code):
            if not o.acked:
                self.counts["reconciled_ends"] += 1
                self._end(o, REJECT, o.qty, REFUSED)
            return
        if not o.acked and code != NOT_YET and o.orderno:
            o.acked = True
            self.out.append((o.owner, o.cid, ACK, o.qty, o.price, _NONE))
        skip = o.filled
        for m in matches:
            ms = str(m.matchseq or "").strip()
            q = _int(m.matchqty)
            if skip >= q:
                skip -= q
                if ms:
                    self.match_seqs.add((o.orderno, ms))
                continue
            before = o.filled
            self._match(o.orderno, ms, q - skip, m.matchprice, m.productid, m.bs)
            skip = 0
            self.counts["reconciled_fills"] += o.filled - before
            if o.ended:
                return
        total = _int(r.orderqty) or o.qty
        matched, deleted = _int(r.matchqty), _int(r.delqty)
        left = total - matched - deleted
        o.deleted = deleted
        if (left <= 0 and deleted > 0) or code == CANCELED_CODE:
            self.counts["reconciled_ends"] += 1
            o.end = (CANCELED if o.tif == TimeInForce.ROD else EXPIRED, matched)
            self._maybe_end(o)
            return
        # a replace PFCF carried out while the executor was down
        qty = matched + left if left > 0 else o.qty
        price = self._ticks(o.inst, r.price) if o.ord_type == OrdType.LIMIT else o.price
        if qty > o.filled and (qty != o.qty or (price and price != o.price)):
            o.qty, o.price = qty, price or o.price
            self.counts["reconciled_changes"] += 1
            self.out.append((o.owner, o.cid, REPLACED, o.qty, o.price, _NONE))


class _Recent(dict):
    """A dict that keeps its newest `keep` entries (a long run's ended orders and applied
    match numbers would otherwise grow without end); `add(key)` for use as a set."""

    def __init__(self, keep: int = 200_000):
        super().__init__()
        self.keep = keep

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        if len(self) > self.keep:
            del self[next(iter(self))]

    def add(self, key) -> None:
        self[key] = True


def _condition(ord_type: int, tif: int) -> str:
    """PFCF's ordercondition: R/I/F for ROD/IOC/FOK. TAIFEX takes a market order only as IOC
    or FOK: a market ROD goes as IOC (what it would do: fill now, the rest expires)."""
    if ord_type != OrdType.LIMIT and tif == TimeInForce.ROD:
        return "I"
    return "RIF"[tif] if 0 <= tif <= 2 else "R"


def _is_error(code: str) -> bool:
    """PFCF's (and unitrade's) error codes: 9xxx (9999 the exchange's refusal, 9902 not
    accepting orders, ...) and ERRn (unitrade could not send)."""
    return code.startswith("9") or code.startswith("ERR")


def _take_step(o, kind: str) -> bool:
    """Remove the oldest request of `kind` (P, Q) on its way for order `o`: its answer came
    (the halves of a replace may be answered in either order)."""
    for k, step in enumerate(o.steps):
        if step[0] == kind:
            del o.steps[k]
            return True
    return False


def _int(x) -> int:
    try:
        return int(str(x).replace(",", "").strip() or 0)
    except ValueError:
        try:
            return int(float(str(x)))
        except ValueError:
            return 0


def _safe_note(letter, cid) -> str:
    try:
        return note_for(letter, cid)
    except ValueError:
        return ""
