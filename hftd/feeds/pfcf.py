"""PFCF's live quotes (`feed = "pfcf"`): TAIFEX trades through unitrade's `dquote`.

The producer logs in (hftd.pfcf.login) and subscribes each configured contract
(`subscribe_trade_bid_offer("TXFL6")`); unitrade then calls `on_tick_data_trade` with a
`DTickDataTrade` for each trade message, on its own receive thread. One message holds one
or more matches: the first (matchprice, matchquantity) and the rest in matchpricedata /
matchqtydata, all at one match time ("HHMMSSffffff", Taipei).

The hand-off: the callback appends the message object to a deque (one append, no lock: the
GIL makes it atomic and only this thread appends, only the producer pops) and rings the
producer's doorbell when the deque was empty, so a producer with nothing to do parks. The
deque holds at most `[pfcf] queue` messages: a message that finds it full is not queued and
its ticks are counted (`overflow_ticks`, written by that thread alone); the producer counts
them as received and dropped, whatever the ring's policy (a live feed cannot be blocked at
its source), and says so in its log.

`poll` (the producer's thread) turns messages into ticks: the instrument from the contract
code, the price in ticks (matchprice / tick_size, exactly, with Decimal: a price off the
instrument's grid or not positive becomes price 0, which the producer rejects as bad_price
and counts, so it stays in received = published + ... + rejected; the feed's own `bad_price`
counts them too), the quantity, and the exchange time (hftd.pfcf.exchange_time_ns); a
message of a contract not subscribed is skipped and counted (`unknown`).

Per contract, matchtotalqty (the day's volume) finds repeats and losses: a message whose
total is not above the last one seen and whose time is not later is a duplicate (unitrade
repeats the last trade after a reconnect; skipped, counted); one whose total is lower but
whose time is later starts a new trading session (the volume restarts at the night
session: `sessions`); a total that grew by more than the message's lots counts the lots
missed (`gap_lots`: lots PFCF never sent us, or that overflowed our queue; a message that
overflowed is counted in ticks before it could be found to be a repeat).

Connection events of the quote path (`on_connected`, `on_disonnected`, `on_error`) go
through a second deque, never bounded, and are counted by the producer (`connects`,
`disconnects`, `errors`, the `connected` gauge). unitrade re-registers its subscriptions
itself when it reconnects; a subscription that failed (the quote path was not up yet) is
tried again at the next connect and every RETRY_S.

The silence alarm: while TAIFEX is open (`[pfcf] hours`) and no trade message has arrived
for longer than `[pfcf] silence_s`, `alarms()` returns one reason (the producer raises the
alarm: trading pauses); it is re-armed when trades come back. Silence is measured from the
last message or from when the session opened, whichever is later.

The feed never ends (`exhausted` is False); it has no position: a restarted producer logs in
again and continues with what PFCF sends from then on (what unitrade had handed the killed
one and it had not taken is lost with it). It takes back from the stats block each
contract's last total and time (`restore`, as the killed producer last wrote them, at most
a fraction of a second old), so a repeat or a gap across the restart is still found.
"""

from __future__ import annotations

import collections
import threading
import time
from decimal import Decimal, InvalidOperation

import numpy as np

from . import FeedBatch
from .. import pfcf
from ..log import get as get_log

# counters of the feed (producer values `feed.<name>`); messages = every trade message taken
COUNTS = ("messages", "ticks", "lots", "duplicates", "gap_lots", "bad_price", "bad_qty",
          "unknown", "sessions", "overflow", "connects", "disconnects", "errors")
# gauges (producer values `feed.<name>`)
GAUGES = ("connected", "subscribed", "contracts", "silent_s", "queued", "last_exchange_ns")
# per instrument with a pfcf code (producer values `feed.<name>.<symbol>`): ticks and lots
# passed on (counters); the last price (ticks), the day's volume and the exchange time of
# its last message (gauges: a restarted producer takes the last two back)
PER_INSTRUMENT = ("ticks", "lots", "last", "total", "time")
PER_COUNTERS = ("ticks", "lots")
SMALL = 8  # a poll of up to this many ticks returns lists (the producer's SMALL_BATCH)
CONNECT_WAIT_S = 5.0  # at start, how long the quote path may take to connect before subscribing
RETRY_S = 5.0  # a failed subscription is tried again this often (and at every connect)
_NS = 1_000_000_000


def _stderr(msg: str) -> None:
    """Where a feed made without `log` (a tool, a test) says what went wrong."""
    get_log("hftd").warning(msg)


def _nothing() -> None:
    pass


MAX_TICKS = 1 << 53  # a price in ticks beyond any real one (and inside int64)
MAX_TOTAL = 1 << 62


def _qty(x, most: int = 10**9) -> int:
    """A quantity of a message as an int; 0 (bad) if it is not one in 1..most. unitrade
    parses it with int(), so it may be any size (found: 10**25 crashed the producer)."""
    try:
        q = int(x)
    except (TypeError, ValueError, OverflowError):
        return 0
    return q if 0 < q <= most else 0


def _price_ticks(price, tick: Decimal) -> int:
    """`price` in ticks of `tick`, exactly; 0 if it is off the grid, not positive or not a
    number. unitrade's float is the shortest text of the server's price: str() gives it."""
    try:
        d = Decimal(str(price))
    except (InvalidOperation, ValueError, TypeError):
        return 0
    if not d.is_finite() or d <= 0:
        return 0
    q = d / tick
    if q != q.to_integral_value() or q > MAX_TICKS:
        return 0
    return int(q)


class _Contract:
    __slots__ = ("code", "inst", "tick", "total", "time", "ticks", "lots", "last")

    def __init__(self, code: str, inst: int, tick: Decimal):
        self.code, self.inst, self.tick = code, inst, tick
        self.total = -1  # matchtotalqty of the last message taken (-1: none yet)
        self.time = 0  # its exchange time (ns)
        self.ticks = self.lots = 0  # passed on with a good price, by this process
        self.last = 0  # the last good price (ticks)


class PfcfFeed:
    """The live feed. `log(msg)`: a line to the producer's log (a warning: what failed);
    `info(msg)`: a lifecycle line (logging in, subscribed; `log` when not given); `wake()`:
    rings the producer's doorbell (called on unitrade's thread); `wall_ns()`: the wall clock
    (trading hours, exchange dates); `api`: a logged-in session (tests; None: log in here)."""

    exhausted = False

    def __init__(self, cfg, log=_stderr, wake=_nothing, wall_ns=time.time_ns, api=None,
                 info=None):
        pc = cfg.pfcf
        self.log = log
        self.info = log if info is None else info
        self.wake = wake
        self.wall_ns = wall_ns
        self.bound = pc.queue
        self.silence_ns = int(pc.silence_s * _NS)
        self.hours = pfcf.TradingHours(pc.hours, pc.days, pc.holidays)
        self.inbox: collections.deque = collections.deque()  # unitrade's thread -> poll
        self.events: collections.deque = collections.deque()  # connection events
        self.overflow_ticks = 0  # written by unitrade's thread only
        self._overflow_taken = 0
        self.counts = dict.fromkeys(COUNTS, 0)
        self.connected = 0
        self._up = threading.Event()
        self._carry: list = []  # ticks of a message a poll had no room for
        self._alarms: list[str] = []
        self._quiet_since = 0  # monotonic ns: the last message, or when the session opened
        self._silent = False  # the alarm of this silence was raised
        self._open = False  # the market was open at the last check
        self.silent_ns = 0
        self.last_exchange_ns = 0
        self._retry_at = 0
        self._said: set = set()  # (code, reason) of the failed subscriptions logged
        self.redact = str
        codes = pfcf.contract_codes(cfg.instruments)  # (expiries pinned by the supervisor)
        if api is None:
            creds = pfcf.load_credentials(pc.credentials)
            self.redact = creds.redact
            self.info(f"logging in to PFCF at {creds.url} (quotes)")
            api = pfcf.login(creds, connect=self._attach,
                             workdir=pfcf.workdir(cfg.resolved_state_dir()))
        else:
            self._attach(api)
        self.api = api
        self.contracts = {c: _Contract(c, i, Decimal(cfg.instruments[i].tick_size))
                          for c, i in codes.items()}
        self.by_inst = {c.inst: c for c in self.contracts.values()}
        self.pending = list(self.contracts)  # codes not subscribed yet
        self._up.wait(CONNECT_WAIT_S)
        self._subscribe(time.monotonic_ns())

    # --- unitrade's thread: append, ring ---------------------------------------------------
    def _attach(self, api) -> None:
        q = api.dquote
        q.on_tick_data_trade = self._on_trade
        pfcf.set_connection_callbacks(q, self._on_connected, self._on_disconnected,
                                      self._on_error)

    def _on_trade(self, t) -> None:
        if len(self.inbox) >= self.bound:
            self.overflow_ticks += 1 + len(t.matchpricedata or ())
            return
        pfcf.hand_over(self.inbox, t, self.wake)

    def _event(self, e) -> None:
        pfcf.hand_over(self.events, e, self.wake)

    def _on_connected(self, *a) -> None:
        self._up.set()
        self._event(("C",))

    def _on_disconnected(self, *a) -> None:
        self._up.clear()
        self._event(("D",))

    def _on_error(self, *a) -> None:  # unitrade passes (message) or (itself, exception)
        self._event(("E", pfcf.error_text(a)))

    # --- the producer's thread ---------------------------------------------------------------
    def _subscribe(self, now_ns: int) -> None:
        """Subscribe the contracts not subscribed yet; a failure is logged and tried again."""
        self._retry_at = now_ns + int(RETRY_S * _NS)
        left = []
        for code in self.pending:
            try:
                r = self.api.dquote.subscribe_trade_bid_offer(code)
                ok, msg = (r[0], r[1]) if isinstance(r, tuple) else (bool(r), "")
            except Exception as e:  # the library's own failure (not connected, ...)
                ok, msg = False, f"{type(e).__name__}: {e}"
            if ok:
                self.info(f"pfcf feed: subscribed to the trades of {code}")
                continue
            left.append(code)
            why = self.redact(msg) or "no reason given"
            if (code, why) not in self._said:  # once per reason, not every retry
                self._said.add((code, why))
                self.log(f"pfcf feed: subscribing to the trades of {code} failed: {why}; "
                         f"tried again at the next connect and every {RETRY_S:g} s")
        self.pending = left

    def restore(self, code: str, total: int, time_ns: int) -> None:
        """A restarted producer's baseline for `code`: the last total and time it saw."""
        c = self.contracts.get(code)
        if c is not None and total > 0:
            c.total, c.time = total, time_ns

    def take_overflow(self) -> int:
        """Ticks lost to a full queue since the last call."""
        n = self.overflow_ticks
        lost, self._overflow_taken = n - self._overflow_taken, n
        self.counts["overflow"] += lost
        return lost

    def take_events(self) -> list:
        """Connection events since the last call, counted: ("C",), ("D",), ("E", text)."""
        out = []
        q = self.events
        while q:
            e = q.popleft()
            k = e[0]
            if k == "C":
                self.counts["connects"] += 1
                self.connected = 1
            elif k == "D":
                self.counts["disconnects"] += 1
                self.connected = 0
            else:
                self.counts["errors"] += 1
            out.append(e)
        if self.pending and any(e[0] == "C" for e in out):
            self._subscribe(time.monotonic_ns())
        return out

    def check(self, now_ns: int) -> None:
        """The silence alarm and a failed subscription's retry (every few hundred ms)."""
        if self.pending and now_ns >= self._retry_at:
            self._subscribe(now_ns)
        if self.inbox or not self._quiet_since:
            self._quiet_since = now_ns
        was_open, self._open = self._open, self.hours.open_at(self.wall_ns() / _NS)
        if not (self._open and was_open):  # closed, or just opened: silence counts from now
            self._quiet_since = now_ns
        self.silent_ns = now_ns - self._quiet_since
        if self.silent_ns > self.silence_ns:
            if not self._silent:
                self._silent = True
                self._alarms.append(
                    f"no PFCF trade for {self.silent_ns / _NS:.0f} s during trading hours "
                    f"(silence_s = {self.silence_ns / _NS:g}; quote path "
                    f"{'connected' if self.connected else 'DISCONNECTED'})")
        else:
            self._silent = False

    def alarms(self) -> list[str]:
        """Alarms raised since the last call."""
        a, self._alarms = self._alarms, []
        return a

    def next_due_s(self, now_ns: int) -> float:
        """0 while messages, events or lost ticks wait; else the producer may park (its
        doorbell rings when one arrives)."""
        if self.inbox or self._carry or self.events or self.overflow_ticks != self._overflow_taken:
            return 0.0
        return 1.0

    def poll(self, max_n: int, now_ns: int) -> FeedBatch | None:
        """Up to `max_n` ticks of the messages waiting (a message's extra matches past
        `max_n` wait for the next poll)."""
        carry = self._carry
        q = self.inbox
        if not (carry or q) or max_n <= 0:
            return None
        out = carry[:max_n]
        del carry[:max_n]
        if len(out) < max_n and q:
            wall = self.wall_ns()
            self._quiet_since = now_ns
            self._silent = False
            while q and len(out) < max_n:
                ticks = self._decode(q.popleft(), wall)
                room = max_n - len(out)
                out.extend(ticks[:room])
                if len(ticks) > room:
                    carry.extend(ticks[room:])
        if not out:
            return None
        inst, price, qty, tex = (list(c) for c in zip(*out))
        if len(out) <= SMALL:
            return FeedBatch(inst, price, qty, tex)
        return FeedBatch(np.array(inst, dtype=np.int32), np.array(price, dtype=np.int64),
                         np.array(qty, dtype=np.int64), np.array(tex, dtype=np.int64))

    def _decode(self, t, wall_ns: int) -> list:
        """One message as ticks (instrument, price in ticks, qty, exchange time): none for a
        duplicate or an unknown contract."""
        counts = self.counts
        counts["messages"] += 1
        c = self.contracts.get(str(t.commodityid).strip())
        if c is None:
            counts["unknown"] += 1
            return []
        more_p, more_q = t.matchpricedata or (), t.matchqtydata or ()
        pairs = [(t.matchprice, _qty(t.matchquantity)), *((p, _qty(q)) for p, q in
                                                           zip(more_p, more_q))]
        lots = sum(q for _, q in pairs if q > 0)
        tex = pfcf.exchange_time_ns(t.matchtime, wall_ns)
        total = _qty(t.matchtotalqty, MAX_TOTAL)
        if total > 0:
            if c.total >= 0 and total <= c.total:
                if tex <= c.time:
                    counts["duplicates"] += 1
                    return []
                counts["sessions"] += 1  # the volume restarted: a new trading session
            elif c.total >= 0 and total - c.total > lots:
                counts["gap_lots"] += total - c.total - lots
            c.total = total
        if tex > c.time:
            c.time = tex
        if tex:
            self.last_exchange_ns = tex
        out = []
        for p, q in pairs:
            ticks = _price_ticks(p, c.tick)
            if q <= 0:
                counts["bad_qty"] += 1  # (the producer rejects it: bad_qty)
            elif ticks:
                c.ticks += 1
                c.lots += q
                c.last = ticks
            else:
                counts["bad_price"] += 1
            out.append((c.inst, ticks, q, tex))
        counts["ticks"] += len(out)
        counts["lots"] += lots
        return out

    def gauges(self) -> dict:
        return {"connected": self.connected,
                "subscribed": len(self.contracts) - len(self.pending),
                "contracts": len(self.contracts), "silent_s": self.silent_ns // _NS,
                "queued": len(self.inbox), "last_exchange_ns": self.last_exchange_ns}

    def instrument_figures(self) -> dict[int, tuple]:
        """instrument id -> (ticks, lots, last price, day's volume, time of the last
        message) of this process."""
        return {c.inst: (c.ticks, c.lots, c.last, max(c.total, 0), c.time)
                for c in self.contracts.values()}

    def close(self) -> None:
        """Stop the callbacks and log out: unitrade's threads are not daemons, and would keep
        the process from exiting."""
        q = getattr(self.api, "dquote", None)
        if q is not None:
            q.on_tick_data_trade = None
        try:
            self.api.logout()
        except Exception as e:  # leaving anyway
            self.log(f"pfcf feed: logout failed: {self.redact(f'{type(e).__name__}: {e}')}")
