"""A stand-in for unitrade's network session (no PFCF server is reachable from here).

`Session` has the shape of `unitrade.unitrade.Unitrade` as hftd uses it (login, accounts,
contracts, `dquote`, `dtrade`) and speaks in the package's real objects: it builds
`DTickDataTrade` from the raw field list the quote server sends, and `DOrderReply`,
`DMatchReply`, `DOrderResponse`, `DQueryReplyResponse`, `DQueryMatchResponse` as unitrade
does, updating one reply object per order in place as unitrade's DLogic does.

In a test process the test drives it: `session.dquote.send(raw)`, `session.dtrade.ack(n)`,
`.fill(n, qty, price)`, `.cancelled(n)`, `.drop()`. In a daemon's agent processes (picked
with HFTD_PFCF_SESSION=tests.pfcf_standin:Session) it runs by itself from the directory
HFTD_PFCF_STANDIN names: the quote side plays `ticks.json` (a list of raw field lists) from
a thread once a contract is subscribed; the order side acknowledges every order from a
thread (as unitrade's receive thread would), fills IOC/FOK and market orders at once at
their price (a market order at `market_price`), writes every DOrderObject and
DReplaceObject it gets to `orders.jsonl`, and drops the order connection after
`disconnect_after` orders (`standin.json`). Like a broker, it outlives the agent: its
replies and matches are kept in `broker.jsonl`, so the executor that follows a killed one
queries the day's orders from it (`broker.jsonl`: each reply as it changed, each match).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import threading
import time

from unitrade.unitrade import (DMatchReply, DOrderReply, DOrderResponse, DQueryMatchResponse,
                               DQueryReplyResponse, DTickDataTrade, LoginResponse)

ACCOUNT = "1234567"
USERID = "A123456789"
PASSWORD = "s3cret-pass"
CA_PASSWORD = "ca-s3cret"


def raw_trade(code: str, price, qty: int, total: int, hhmmss_us: str = "090000000000",
              extra: list | None = None) -> list:
    """A raw field list as the quote server sends a trade (DTickDataTrade's input): code,
    info time, price, qty, total qty, buy count, sell count, match time, -, number of extra
    matches, then price/qty pairs."""
    raw = [code, hhmmss_us, str(price), str(qty), str(total), "0", "0", hhmmss_us, ""]
    if extra:
        raw.append(str(len(extra)))
        for p, q in extra:
            raw += [str(p), str(q)]
        raw.append("")  # unitrade reads the extras only when the list is longer than 11
    return raw


class Quote:
    def __init__(self, session):
        self.session = session
        self.on_tick_data_trade = None
        self.on_connected = self.on_disonnected = self.on_disconnected = self.on_error = None
        self.subscribed: list[str] = []

    def subscribe_trade_bid_offer(self, code):
        self.subscribed.append(code)
        self.session._subscribed(code)
        return True, ""

    def unsubscribe_trade_bid_offer(self, code):
        if code in self.subscribed:
            self.subscribed.remove(code)
        return True, ""

    def send(self, raw: list) -> None:
        self.on_tick_data_trade(DTickDataTrade(raw))

    def drop(self) -> None:
        (self.on_disonnected or self.on_disconnected)()

    def close(self):
        pass


class Trade:
    def __init__(self, session):
        self.session = session
        self.on_reply = self.on_match = None
        self.on_connected = self.on_disonnected = self.on_disconnected = self.on_error = None
        self.orders: list = []  # DOrderObject, as received
        self.replaces: list = []  # DReplaceObject, as received
        self.replies: dict[str, DOrderReply] = {}  # orderno -> the order's reply (in place)
        self.by_index: list[DOrderReply] = []
        self.matches: list[DMatchReply] = []
        self.refuse = ""  # an errorcode: order() answers issend=False with it
        self.known: set[str] = set()  # order numbers this session knows (unitrade's rule)
        self.reloads = 0
        self._seq = 0
        self._match = 0

    # --- the API ---
    def order(self, obj):
        with self.session.lock:
            return self._order(obj)

    def _order(self, obj):
        self.orders.append(dataclasses.replace(obj))
        if self.refuse:
            return DOrderResponse(issend=False, errorcode=self.refuse, errormsg="refused",
                                  note=obj.note)
        self._seq += 1
        seq = f"AB{self._seq:04d}"
        r = DOrderReply(investoracno=obj.actno, productid=obj.productid, bs=obj.bs,
                        ordertype=obj.ordertype, price=float(obj.price), orderqty=obj.orderqty,
                        ordercondition=obj.ordercondition, note=obj.note, seq=seq,
                        statuscode="STAR", orderstatus="委託中", rawstatus="1")
        self.by_index.append(r)
        self.session._ordered(len(self.by_index) - 1, obj)
        return DOrderResponse(issend=True, note=obj.note, seq=seq)

    def replace_order(self, obj):
        self.replaces.append(dataclasses.replace(obj))
        if obj.orderno not in self.known:  # as unitrade: only orders its session has seen
            return DOrderResponse(issend=False, errorcode="MSG016", errormsg="委託單不存在",
                                  note=obj.note)
        self._seq += 1
        self.session._replaced(obj)
        return DOrderResponse(issend=True, note=obj.note, seq=f"AB{self._seq:04d}")

    def reload_working_orders(self):
        """As unitrade: the session learns the day's working orders (it does so at login)."""
        self.reloads += 1
        n = 0
        for r in self.by_index:
            if r.orderno and int(r.orderqty) - r.matchqty - r.delqty > 0:
                n += r.orderno not in self.known
                self.known.add(r.orderno)
        return n

    def query_reply(self, actno, num, a, b, c, d):
        return DQueryReplyResponse(ok=True, error="", data=list(self.by_index))

    def query_match(self, actno, num, a, b, c, d):
        return DQueryMatchResponse(ok=True, error="", data=list(self.matches))

    def close(self):
        pass

    # --- the exchange's side (a test, or the auto thread) ---
    @staticmethod
    def _tell(callback, obj) -> None:
        if callback is not None:  # (none while the broker's day is loaded)
            callback(obj)

    def ack(self, n: int) -> DOrderReply:
        r = self.by_index[n]
        r.orderno = r.orderno or f"o{n:04d}"
        r.statuscode, r.orderstatus = "0000", "委託成功"
        r.nomatchqty = int(r.orderqty) - r.matchqty - r.delqty
        self.replies[r.orderno] = r
        self.known.add(r.orderno)
        self._tell(self.on_reply, r)
        return r

    def reject(self, n: int, code="9999", why=":9999 price out of range") -> None:
        r = self.by_index[n]
        r.statuscode, r.orderstatus = code, why
        self.on_reply(r)

    def fill(self, n: int, qty: int, price: float, reply: bool = True) -> None:
        r = self.by_index[n]
        self._match += 1
        r.matchqty += qty
        r.nomatchqty = int(r.orderqty) - r.matchqty - r.delqty
        r.statuscode = "0004" if r.nomatchqty == 0 else "0003"
        m = DMatchReply(investoracno=r.investoracno, orderno=r.orderno, productid=r.productid,
                        bs=r.bs, matchprice=float(price), matchqty=qty,
                        matchseq=f"{self._match:010d}", networkid=str(self._match))
        self.matches.append(m)
        if reply:
            self._tell(self.on_reply, r)
        self._tell(self.on_match, m)

    def cancelled(self, n: int, qty: int | None = None) -> None:
        """PFCF deleted `qty` (all that is left) of order n: a cancel or an IOC's rest."""
        r = self.by_index[n]
        left = int(r.orderqty) - r.matchqty - r.delqty
        r.delqty += left if qty is None else qty
        r.nomatchqty = int(r.orderqty) - r.matchqty - r.delqty
        r.statuscode = "0002" if r.nomatchqty == 0 else "0001"
        self.on_reply(r)

    def price_changed(self, n: int, price: float) -> None:
        r = self.by_index[n]
        r.price, r.statuscode = float(price), "0006"
        self.on_reply(r)

    def refuse_request(self, n: int) -> None:
        r = self.by_index[n]
        r.statuscode, r.orderstatus = "9999", ":9999 order already done"
        self.on_reply(r)

    def drop(self) -> None:
        (self.on_disonnected or self.on_disconnected)()


class Session:
    """unitrade.unitrade.Unitrade's shape. With HFTD_PFCF_STANDIN set, it runs by itself."""

    def __init__(self):
        self.dquote = Quote(self)
        self.dtrade = Trade(self)
        self.logins: list[tuple] = []
        self.dir = os.environ.get("HFTD_PFCF_STANDIN", "")
        self.conf = {}
        if self.dir:
            p = os.path.join(self.dir, "standin.json")
            if os.path.exists(p):
                with open(p) as f:
                    self.conf = json.load(f)
        self.work: queue.Queue = queue.Queue()
        self._thread = None
        self.lock = threading.RLock()
        if self.dir:
            self._load()

    def login(self, url, userid, password, ca_path, ca_password):
        self.logins.append((url, userid, password, ca_path, ca_password))
        if (userid, password, ca_password) != (USERID, PASSWORD, CA_PASSWORD):
            return LoginResponse(ok=False, error=f"login failed for {userid}/{password}")
        for c in (self.dquote, self.dtrade):
            if c.on_connected:
                c.on_connected()
        if self.dir:
            # not a daemon thread, like unitrade's: a process that does not log out hangs
            self._thread = threading.Thread(target=self._run, daemon=False)
            self._thread.start()
        return LoginResponse(ok=True, error="")

    def get_accounts(self):
        return [ACCOUNT]

    def logout(self):
        self.work.put(("stop", None))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)  # what it was answering is answered and saved first

    # --- by itself (a daemon's agents) ---
    def _subscribed(self, code) -> None:
        if self.dir:
            self.work.put(("play", code))

    def _ordered(self, n, obj) -> None:
        if self.dir:
            self._write({"order": dataclasses.asdict(obj)})
            self._save(n)
            self.work.put(("order", n))

    def _replaced(self, obj) -> None:
        if self.dir:
            self._write({"replace": dataclasses.asdict(obj)})
            self.work.put(("replace", obj))

    def _load(self) -> None:
        """The broker's day from `broker.jsonl`: each reply as last changed, each match."""
        p = os.path.join(self.dir, "broker.jsonl")
        if not os.path.exists(p):
            return
        t = self.dtrade
        replies: dict[int, dict] = {}
        with open(p) as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if "reply" in rec:
                    replies[rec["n"]] = rec["reply"]
                else:
                    t.matches.append(DMatchReply(**rec["match"]))
        t.by_index = [DOrderReply(**replies[n]) for n in sorted(replies)]
        t.replies = {r.orderno: r for r in t.by_index if r.orderno}
        t._seq, t._match = len(t.by_index) + 1000, len(t.matches)
        self.saved = len(t.matches)
        # what the exchange did while nobody listened: the orders received, answered
        for n, r in enumerate(t.by_index):
            if r.statuscode == "STAR":
                self._answer(n)

    def _save(self, n: int | None = None) -> None:
        """Append order `n`'s reply as it is now, and the matches not yet saved."""
        t = self.dtrade
        with self.lock:
            lines = []
            if n is not None:
                lines.append({"n": n, "reply": dataclasses.asdict(t.by_index[n])})
            for m in t.matches[getattr(self, "saved", 0):]:
                lines.append({"match": dataclasses.asdict(m)})
            self.saved = len(t.matches)
            with open(os.path.join(self.dir, "broker.jsonl"), "a") as f:
                f.write("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))

    def _answer(self, n: int) -> None:
        """The exchange's answer to order n: acknowledged; an IOC/FOK or market order filled
        whole at its price."""
        t = self.dtrade
        with self.lock:
            t.ack(n)
            r = t.by_index[n]
            if r.ordercondition in ("I", "F") or r.ordertype == "M":
                price = r.price if r.ordertype == "L" else self.conf.get("market_price", 0)
                t.fill(n, int(r.orderqty), price)
            self._save(n)

    def _write(self, rec) -> None:
        with open(os.path.join(self.dir, "orders.jsonl"), "a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    def _run(self) -> None:
        t = self.dtrade
        n_orders = 0
        while True:
            what, x = self.work.get()
            if what == "stop":
                return
            if what == "play":
                p = os.path.join(self.dir, "ticks.json")
                if os.path.exists(p):
                    with open(p) as f:
                        for raw in json.load(f):
                            if raw[0] == x:
                                self.dquote.send(raw)
                                time.sleep(self.conf.get("tick_gap_s", 0.0005))
            elif what == "order":
                n_orders += 1
                time.sleep(self.conf.get("answer_delay_s", 0))
                self._answer(x)
                if n_orders == self.conf.get("disconnect_after", -1):
                    t.drop()
            elif what == "replace":  # 4 cancel, 5 reduce by orderqty, m new price
                with self.lock:
                    r = t.replies.get(x.orderno)
                    left = int(r.orderqty) - r.matchqty - r.delqty if r is not None else 0
                    if left > 0:
                        n = t.by_index.index(r)
                        if x.replacetype == "4":
                            t.cancelled(n)
                        elif x.replacetype == "5":
                            t.cancelled(n, qty=min(int(x.orderqty), left - 1))
                        elif x.replacetype == "m":
                            t.price_changed(n, x.price)
                        self._save(n)

