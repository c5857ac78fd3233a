"""Executor: the source of truth for orders and positions. Pre-trade risk, the order book,
positions and P&L, and the venue; reports back to each strategy.

It hosts the trading domain (hftd.trading): an `OrderBook` of every order it handed to the
venue (a venue answer is applied only if it is a legal transition; an illegal one is
counted, never applied), the `RiskEngine` (every NEW order and every REPLACE is checked;
refusals counted by reason; its kill switch is PAUSE/RESUME; RELOAD swaps the limits), a
`Portfolio` (positions and P&L per strategy and instrument, from fills), and the venue
(`hftd.venues`: the simulated one fills against the market data).

Each pass reads, in order: control, each strategy's orders, market data (`ticks.executor`,
every tick, written by the dispatcher), then what fell due at the venue. The venue sees the
trades in order, and an order is handed to it only once it has seen the tick that caused it
(`OrderRequest.tick_seq`: the executor first feeds the market data up to that tick, and holds
the order the few microseconds until the dispatcher has published it there, right after the
strategies): a market order then fills at the first trade after its tick, never at one from
before it, whatever the rings' timing. (Orders come before the rest of the market data
rather than after, as first designed: the trades after an order's tick have nothing to do
with it, and feeding them first cost the order ~10 us at 10k ticks/s. For the same reason
the venue's answers to the trades fed while catching up to an order are applied right
after it: see `_catch_up`.)

Market data is cheap when nobody trades an instrument: a batch's instrument column (the
ring's envelope) picks the ticks of instruments with orders at the venue, and only those
are decoded and fed to the fill model, one by one and in order; of the others only the last
tick per instrument is decoded, once per pass, for its price (price bands, P&L). Market
data wakes a parked executor while it has orders working, or once MD_WAKE ticks (128) wait
(see `sleep_for`). Marking open positions to market (unrealised P&L, the daily loss limit)
happens at most once per `MARK_INTERVAL_NS` (and at the end): fills move positions at once,
their money reaches the stats block and the loss limit with the next mark.

Client order ids are the strategies' own ((index << 40) | n, n increasing: see the strategy
stage); an id that is not above the strategy's last one, or not the strategy's, is refused
(DUPLICATE_ORDER_ID), so an id is never used twice. A cancel or replace of an order the
executor does not know (or that has ended) is answered CANCEL_REJECTED (UNKNOWN_ORDER).

The executor never blocks: reports that do not fit a strategy's reports ring wait here, and
the executor reads no more of that strategy's orders until they are sent. At the end of a
strategy's orders stream its working orders are canceled (through the venue, with its
latency) and, once every one has ended, its reports stream is ended. The executor stops once
the market data and every strategy's stream have ended.

State (hftd.trading.store: a fixed-layout file of the instance's state directory, mapped,
written only by the executor but for the strategies' id counters): each strategy's last
accepted client id, every position and its money, and every working order, recorded before it
is handed to the venue and updated with each venue answer (a fill together with its position,
through the store's journal). A restarted executor, or the next run of the daemon, re-attaches:
positions, P&L, the daily-loss bases and the working orders come back from there, and the
simulated venue gets the working orders back as a remote venue would have kept them. The
instance has at most `store.ORDER_SLOTS` working orders (past that, MAX_WORKING_ORDERS).

Crash-only (see `_recover`): the simulated venue logs what it receives and answers
(hftd.venues.sim) before the executor sees an answer, and the store records the log sequence
of the last answer applied, with its effect. So a restarted executor applies the answers the
dead one had not, reports again the answers whose reports had not reached the strategy (a
report carries the sequence of the last answer reported to its strategy: the newest report in
the ring says where to resume), gives the venue back the cancels and replaces it had received
and not carried out, and does not take again the order requests the dead one had handled but
not committed (`taking.<strategy>` says which request it was handling; that one is taken
again only if it left no trace). Nothing reaches the venue twice, and no answer is lost.

The stats block (which the supervisor creates) carries what status and /metrics show: per
strategy and routed instrument the position and its money (`pos.`, `avg.`, `realized.`,
`unrealized.`, `fees.`, `tax.`, `volume.` + strategy + "." + symbol; money in hundredths of the
currency, `avg` in millionths of a tick), each strategy's last client id (`last_id.<strategy>`),
the daily P&L (`day_pnl`, hundredths) and counters of refusals by reason
(`risk_reject.<REASON>`; split into NEW orders refused, `reject.<REASON>`, and cancels or
replaces refused, `cancel_reject.<REASON>`) and of illegal transitions.

The daily loss limit counts from the start of the trading day (`executor.day_starts_at`, local
time at `executor.utc_offset`): at the first mark of a new day each position's net P&L becomes
its base, and the limit is checked against net P&L minus the bases. A tripped kill switch stays
on across the new day (the operator resumes).
"""

from __future__ import annotations

import os
import time

import msgspec
import numpy as np

from .. import stats as stats_mod
from .. import venues
from ..agent import Agent
from ..events import (ORDER_ID_SHIFT, Codec, Control, ControlKind, OrderAction, OrderReport,
                      OrderStream, RejectReason, ReportKind, ReportStream, TickStream)
from ..stats import COUNTER, GAUGE, Schema
from ..identity import check_state_dir, write_private
from ..topology import MARKET_DATA, strategy_agent
from ..trading import OrdState, OrdType, price_ok
from ..trading.orders import Order, OrderBook
from ..trading.positions import Portfolio
from ..trading.risk import RiskEngine, trading_day
from ..trading.store import SavedOrder, StateError, TradingState, key, path_for
from ..venues.sim import VenueLog, check_log, log_path, read_log
from .common import Outbox, decode_control, end_of_stream, fixed, read_control

MD_BATCH = 1024  # market-data ticks per pass at most
MD_WAKE = 128  # market data waiting that wakes an idle executor (or a quarter of the ring)
CATCH_UP = 8  # market-data ticks per step while catching up to an order's tick
MD_SCALAR = 32  # up to this many market-data ticks are looked at one by one, past it with numpy
MARK_INTERVAL_NS = 1_000_000  # open positions are marked to market at most this often (and on fills)
KEEP_ENDED = 4096  # ended orders kept in the book for late cancels ...
FORGET_ABOVE = 8192  # ... once more than this have ended

_NEW, _CANCEL, _REPLACE = OrderAction.NEW, OrderAction.CANCEL, OrderAction.REPLACE
_ACK, _REJECT, _FILL = ReportKind.ACK, ReportKind.REJECT, ReportKind.FILL
_CANCELED, _EXPIRED = ReportKind.CANCELED, ReportKind.EXPIRED
_REPLACED, _CANCEL_REJECTED = ReportKind.REPLACED, ReportKind.CANCEL_REJECTED
_MARKET, _LIMIT = OrdType.MARKET, OrdType.LIMIT
_FILLED = int(OrdState.FILLED)  # states below it are working
REASONS = [r for r in RejectReason if r != RejectReason.NONE]

# per (strategy, instrument): (value name prefix, what it holds)
POSITION_VALUES = (("pos", "net position in lots (long > 0)"),
                   ("avg", "average open price, millionths of a tick"),
                   ("realized", "realised P&L, hundredths of the currency"),
                   ("unrealized", "unrealised P&L at the last trade, hundredths"),
                   ("fees", "fees paid, hundredths"), ("tax", "transaction tax paid, hundredths"),
                   ("volume", "lots traded, both sides"))


def snapshot_path(runtime_dir: str, instance: str, strategy: str) -> str:
    """Where the executor leaves a restarted strategy's snapshot (see `_reconcile`)."""
    return os.path.join(runtime_dir, f"{instance}.{strategy}.snapshot.json")


def write_snapshot(runtime_dir: str, instance: str, strategy: str, n: int, positions: dict,
                   orders: list) -> None:
    """Snapshot `n` of a strategy's state (`_reconcile`): `positions` maps a symbol to
    `Position.values()`, `orders` are its working orders as (client id, instrument, side,
    qty, price, type, tif, state, filled, fill value, created)."""
    write_private(snapshot_path(runtime_dir, instance, strategy),
                  msgspec.json.encode({"n": n, "positions": positions, "orders": orders}))


def state_path(cfg) -> str:
    """The instance's state store (made by the supervisor before the agents start)."""
    return path_for(check_state_dir(cfg.resolved_state_dir()))


def venue_log_path(cfg) -> str:
    """The simulated venue's log (hftd.venues.sim), beside the state store."""
    return log_path(os.path.dirname(state_path(cfg)))


def unmanageable(o: SavedOrder, cfg) -> str:
    """Why the working order on record `o` cannot be managed under this config ("" if it
    can): the same strategy at the same index, an instrument routed to it, a sound record.
    The supervisor refuses to start over such an order; the executor leaves it untouched."""
    strategies = cfg.strategies
    if not 0 <= o.strategy < len(strategies):
        return f"its strategy #{o.strategy} is not configured"
    sc = strategies[o.strategy]
    if o.strategy_key != key(sc.name):
        return f"it was sent by another strategy than {sc.name} (strategy #{o.strategy} now)"
    syms = cfg.symbols()
    inst = next((i for i in cfg.routes(sc) if key(syms[i]) == o.instrument_key), None)
    if inst is None:
        return f"its instrument is not routed to strategy {sc.name}"
    if o.side not in (1, -1) or o.qty <= 0 or not 0 <= o.filled < o.qty \
            or not 0 <= o.state < _FILLED or o.ord_type not in (0, 1) or not 0 <= o.tif <= 2:
        return (f"the record is corrupt (side {o.side}, qty {o.qty}, filled {o.filled}, "
                f"state {o.state}, type {o.ord_type}, tif {o.tif})")
    return ""


class _Strategy:
    """One strategy as the executor sees it: its orders ring, reports outbox, positions,
    stream state and gauges."""

    def __init__(self, ex: "Executor", index: int, scfg, cfg):
        ctx = ex.ctx
        self.index = index
        self.name = scfg.name
        self.orders = ctx.reader(f"orders.{scfg.name}")
        self.outbox = Outbox(ctx.writer(f"reports.{scfg.name}", strategy_agent(scfg.name)),
                             ex.encode, int(cfg.rings.reports.block_deadline_ms * 1e6),
                             ex.c_reports_out, ex._overdue)
        n = len(cfg.instruments)
        routed = cfg.routes(scfg)
        self.routed = [False] * n
        self.pos = [None] * n  # Position per routed instrument
        self.slots = [-1] * n  # its record in the state store
        self.gauges = [None] * n  # per routed instrument: the POSITION_VALUES Values
        st = ctx.stats
        syms = cfg.symbols()
        for i in routed:
            self.routed[i] = True
            self.pos[i] = ex.portfolio.position(index, i)
            self.slots[i] = ex.state.position_slot(scfg.name, syms[i])
            self.gauges[i] = [st.value(f"{v}.{scfg.name}.{syms[i]}") for v, _ in POSITION_VALUES]
        self.held = set()  # instruments with an open position
        self.dirty = set()  # instruments whose position a fill changed since the last mark
        self.g_last_id = st.value(f"last_id.{scfg.name}")
        # crash-only: the ring position + 1 of the order request being handled, and the venue
        # log's last sequence when it began (written before it is handled: see _take_orders)
        self.g_taking = st.value(f"taking.{scfg.name}")
        self.g_taking_vseq = st.value(f"taking_vseq.{scfg.name}")
        self.vseq = 0  # venue log sequence of the last venue answer reported to it
        self.last_id = ex.state.last_seen(index)
        self.g_last_id.set(self.last_id)
        self.day_base = 0.0  # net P&L of its positions when the trading day started
        self.key = key(scfg.name)
        self.orders_ended = False
        self.canceling = False  # cancel_all sent at the end of its stream
        self.reports_ended = False
        self.quarantined = False  # given up: no orders taken, no reports sent


def _venue_values(cfg) -> tuple:
    """A live venue's connection values (hftd.venues.pfcf): venue.connected and counters."""
    if cfg.executor.venue != "pfcf":
        return ()
    from ..venues.pfcf import COUNTERS

    return (("venue.connected", GAUGE), *((f"venue.{k}", COUNTER) for k in COUNTERS))


class Executor(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        syms = cfg.symbols()
        per_strategy = []
        for s in cfg.strategies:
            per_strategy += [(f"last_id.{s.name}", GAUGE), (f"taking.{s.name}", GAUGE),
                             (f"taking_vseq.{s.name}", GAUGE), (f"rate_level.{s.name}", GAUGE),
                             (f"rate_t.{s.name}", GAUGE)]
            for i in cfg.routes(s):
                per_strategy += [(f"{v}.{s.name}.{syms[i]}", GAUGE) for v, _ in POSITION_VALUES]
        return Schema(
            values=(("orders_in", COUNTER), ("new_in", COUNTER), ("cancels_in", COUNTER),
                    ("replaces_in", COUNTER), ("reports_out", COUNTER), ("acks", COUNTER),
                    ("fills", COUNTER), ("filled", COUNTER), ("rejects", COUNTER),
                    ("canceled", COUNTER), ("expired", COUNTER), ("replaced", COUNTER),
                    ("cancel_rejects", COUNTER), ("illegal_transitions", COUNTER),
                    ("md_ticks", COUNTER), ("md_trades", COUNTER), ("loss_trips", COUNTER),
                    ("day_pnl", GAUGE), ("restored_orders", COUNTER),
                    ("restored_pending", COUNTER), ("restored_acked", COUNTER), ("reconciles", COUNTER),
                    ("md_fed", GAUGE), ("md_replays", COUNTER), ("md_restart_skipped", COUNTER),
                    ("orphan_orders", GAUGE), ("journal_replays", COUNTER),
                    ("working_orders", GAUGE), ("paused", GAUGE), ("reports_waiting", GAUGE),
                    ("alarms", COUNTER), ("control_in", COUNTER), ("quarantined", COUNTER),
                    ("reports_discarded", COUNTER), ("venue_log_start", GAUGE),
                    ("rate_level", GAUGE), ("rate_t", GAUGE),
                    ("answers_replayed", COUNTER), ("answers_in_effect", COUNTER),
                    ("reports_resent", COUNTER), ("requests_skipped", COUNTER),
                    ("requests_redone", COUNTER), ("requests_resent", COUNTER),
                    *((f"risk_reject.{r.name}", COUNTER) for r in REASONS),
                    *((f"reject.{r.name}", COUNTER) for r in REASONS),
                    *((f"cancel_reject.{r.name}", COUNTER) for r in REASONS),
                    *_venue_values(cfg),
                    *per_strategy),
            histograms=("stage", "tick_to_trade"),
        )

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.executor")
        self.md = ctx.reader(MARKET_DATA)
        # market data wakes a parked executor at every tick only while it has orders at the
        # venue (set after each pass: `md.wake_at`), else once this many ticks wait: an order
        # then has at most that many to catch up on before it is handled (a quarter of the
        # ring, 2048 at 10k ticks/s, put ~1 ms on some orders' tick-to-trade)
        self.md_wake = max(1, min(self.md.ring.capacity // 4, MD_WAKE))
        self.md_blocks = cfg.executor.market_data_policy == "block"  # every tick comes
        n = self.n_instruments = len(cfg.instruments)
        self.symbols = cfg.symbols()
        self.restarted = bool(ctx.stats.q_header[stats_mod.H_RESTARTS])
        # the simulated venue's log (hftd.venues.sim): read and the venue made in _recover
        self.venue = None
        self.venue_log = None
        if cfg.executor.venue == "sim" and cfg.executor.sim.log:
            self.venue_log = venue_log_path(cfg)
        self.vlog = VenueLog()
        self.decode = Codec(OrderStream).decode
        self.decode_tick = Codec(TickStream).decode
        self.encode = Codec(ReportStream).encode
        self.decode_report = Codec(ReportStream).decode
        st = ctx.stats
        self.bind_values()
        # a venue answer applied is counted under its kind
        self.c_by_kind = {_ACK: self.c_acks, _REJECT: self.c_rejects, _FILL: self.c_fills,
                          _CANCELED: self.c_canceled, _EXPIRED: self.c_expired,
                          _REPLACED: self.c_replaced, _CANCEL_REJECTED: self.c_cancel_rejects}
        # every refusal by reason, and the same split by what was refused: a NEW order
        # (REJECT) or a cancel or replace (CANCEL_REJECTED), so /metrics can say how many
        # orders were refused for each reason without counting refused cancels among them
        self.c_reject_by = [None] * (max(RejectReason) + 1)
        self.c_new_reject_by = [None] * (max(RejectReason) + 1)
        self.c_cancel_reject_by = [None] * (max(RejectReason) + 1)
        for r in REASONS:
            self.c_reject_by[r] = st.value(f"risk_reject.{r.name}")
            self.c_new_reject_by[r] = st.value(f"reject.{r.name}")
            self.c_cancel_reject_by[r] = st.value(f"cancel_reject.{r.name}")
        self.latency = ctx.histogram("stage")
        self.t2t = ctx.histogram("tick_to_trade")
        self.book = OrderBook()
        self.portfolio = Portfolio(cfg.contracts())
        self.state = TradingState.open(state_path(cfg))
        self.inst_keys = [key(sym) for sym in self.symbols]
        self.day_start_s = cfg.executor.day_start_s()
        self.utc_offset_s = cfg.executor.utc_offset_s()
        self.risk = RiskEngine(cfg.executor.risk.limits(), len(cfg.strategies))
        self.strategies = [_Strategy(self, i, s, cfg) for i, s in enumerate(cfg.strategies)]
        # the order-rate buckets live in the stats block: a restarted executor's go on
        idx = st.index
        for s in self.strategies:
            self.risk.buckets[s.index].keep_in(st.q_values, idx[f"rate_level.{s.name}"],
                                               idx[f"rate_t.{s.name}"], self.restarted)
        self.risk.instance_bucket.keep_in(st.q_values, idx["rate_level"], idx["rate_t"],
                                          self.restarted)
        self.last = [0] * n  # last trade price per instrument, in ticks (0: none yet)
        self.live = [0] * n  # orders at the venue (sent, not ended) per instrument ...
        self.live_np = np.zeros(n, np.int64)  # ... the same, for a batch's numpy selection
        self.md_seq = -1  # seq of the last market-data tick fed to the venue (-2: not decoded)
        self.md_pos = self.md.position  # the next tick to feed
        self.md_lasts: dict[int, int] = {}  # instrument -> position of its last tick fed
        self.md_at = np.empty(n, np.int64)  # scratch: per instrument, its last index in a batch
        # the venue's answers to the trades fed while catching up to an order's tick: applied
        # once the pass's orders are handed over (see _catch_up)
        self.deferred: list = []
        self.on_events = self._venue_events
        self.md_ended = False
        self.marked_ns = 0
        # market data: ring position + 1 of the last trade handed to the venue, written before
        # it is (a restarted executor does not hand it over again: a fill is never made twice
        # from one print), and per instrument the seq of the last trade fed (a tick routed
        # again by a restarted dispatcher is not a new trade)
        self._fed_q, self._fed_i = st.q_values, st.index["md_fed"]
        self.md_seen = [-1] * n
        self._skip_fed()
        self._recover()
        self.c_paused.set(int(self.risk.kill_switch))

    def _recover(self) -> None:
        """Start-up is the recovery path (every start, the daemon's or a restart's): re-attach
        to the state store (positions and their money, the daily-loss bases, the working
        orders), then bring it level with the venue's log: a restarted process first reports
        again the answers it had applied whose reports had not reached their strategy, then
        applies the answers it had not applied (reporting them). Then the venue gets back
        the orders still working and the cancels and replaces it had received and not yet
        carried out, as a remote venue would have kept them. The order requests a previous
        process had taken are not taken again (`_resume_orders`)."""
        st = self.state
        if st.replayed_journal:
            self.c_journal_replays.add()
        for s in self.strategies:
            for i, p in enumerate(s.pos):
                if p is None:
                    continue
                st.load_position(s.slots[i], p)
                s.gauges[i][0].set(p.qty)
                s.day_base += st.day_base(s.slots[i])
                if p.qty:
                    s.held.add(i)
                if p.volume:
                    s.dirty.add(i)  # its gauges are written at the first mark
        by_key = {k: i for i, k in enumerate(self.inst_keys)}
        orphans = 0
        for so in st.orders():
            if unmanageable(so, self.ctx.cfg):
                orphans += 1  # the supervisor refuses to start with these: kept, untouched
                continue
            s, inst = self.strategies[so.strategy], by_key[so.instrument_key]
            o = Order(so.client_id, s.index, inst, so.side, so.qty, so.price, so.ord_type,
                      so.tif, so.t_created_ns)
            if not self.book.restore(o, so.state, so.filled, so.fill_value):
                orphans += 1
                continue
            if not self.restarted:  # an earlier run's: not among this run's sent and acks;
                # counted by the state the store kept, before the log's answers apply (an
                # ACK applied below is this run's ack of a restored pending order)
                (self.c_restored_acked if so.state else self.c_restored_pending).add()
            self.live[inst] += 1
            self.live_np[inst] += 1
        self.c_orphan_orders.set(orphans)
        applied = st.venue_seq
        last = check_log(self.venue_log, applied) if self.venue_log else 0
        # what each strategy was told of the venue's answers: at this run's start, everything
        # (it reconciles with the executor at its start); after, the newest report in its
        # ring says. The run's first executor keeps the start in the stats block first of all
        # (found: one killed before that made the next re-report every answer in the log)
        if not self.c_venue_log_start.value:
            self.c_venue_log_start.set(last + 1)
        at_start = self.c_venue_log_start.value - 1
        for s in self.strategies:
            s.vseq = next((ev.vseq for ev in self._last_reports(s, 1 << 62)
                           if ev.__class__ is OrderReport), at_start) if self.restarted \
                else last
        # the order request each strategy's orders ring shows a dead process was handling
        begun = {}
        for s in self.strategies:
            r = s.orders
            p = s.g_taking.value - 1
            if self.restarted and r.position <= p < r.position + r.available():
                begun[s.index] = (p, self.decode(r.ring.payload(p)))
        if self.venue_log:
            since = min([applied] + [s.vseq for s in self.strategies])
            cids = [o.client_id for o in self.book.working()] + [
                ev.order_id for _, ev in begun.values() if ev.__class__ is not Control]
            self.vlog = read_log(self.venue_log, since, cids)
        for e in self.vlog.events:  # in the venue's order
            if e[0] > applied and self._venue_events([e[1:7]], [e[0]]):
                continue  # applied now, and reported
            self._report_again(e)  # in effect already: reported if its strategy was not told
        self.venue = self._make_venue(last)
        now = time.monotonic_ns()
        for o in self.book.working():
            self.venue.restore(o.strategy, o.client_id, o.instrument, o.side, o.qty, o.filled,
                               o.ord_type, o.tif, o.price, o.state != 0, now)
            self.c_restored_orders.add()
            lo = self.vlog.orders.get(o.client_id)
            for what, qty, price in (lo.requests if lo is not None else ()):
                if what == "C":  # (in the log already: carried out, not logged again)
                    self.venue.cancel(o.strategy, o.client_id, now, log=False)
                    self.book.requested(o)
                else:
                    self.venue.replace(o.strategy, o.client_id, qty, price, now, log=False)
                    self.book.requested(o, qty)
                self.c_requests_resent.add()
        if hasattr(self.venue, "reconcile"):  # a live venue: its word on the restored orders
            from ..pfcf import PfcfError

            try:
                self._venue_events(self.venue.reconcile())
            except PfcfError as e:
                self.ctx.log.error(f"error: {e}")
                self.venue.close()
                raise SystemExit(2) from None
        self.c_working_orders.set(self.book.n_working)
        for s in self.strategies:
            s.skip_to, s.redo = 0, False
            if s.index in begun:
                p, ev = begun[s.index]
                s.skip_to = p + 1
                s.redo = not self._left_trace(s, ev)
        self.vlog = VenueLog()  # what it said is applied (a long run's log is big: not kept)

    def _make_venue(self, last: int):
        """The configured venue; a live one (PFCF) is logged in here, its alarms polled."""
        ctx = self.ctx
        cfg = ctx.cfg
        self.venue_alarms = None
        if cfg.executor.venue != "pfcf":
            return venues.make(cfg, self.venue_log, last)
        from .. import pfcf
        from ..venues.pfcf import COUNTERS, PfcfVenue

        st = ctx.stats
        values = {k: st.value(f"venue.{k}") for k in (*COUNTERS, "connected")}
        journal = os.path.join(cfg.resolved_state_dir(), f"pfcf-orders.{ctx.instance}.log")
        v = None
        try:
            creds = pfcf.load_credentials(cfg.pfcf.credentials)
            v = PfcfVenue(cfg, None, "", {}, values, wake=ctx.doorbell.release,
                          log=ctx.log.warning,  # refusals, errors: its lines are warnings
                          journal=journal, redact=creds.redact)
            # (it may take a while: unitrade's HTTP calls wait up to 30 s)
            ctx.log.info(f"logging in to PFCF at {creds.url} (orders)")
            api = pfcf.login(creds, connect=v.attach,
                             workdir=pfcf.workdir(cfg.resolved_state_dir()))
            v.account = pfcf.account_of(api, creds, cfg.pfcf.account)
            v.set_codes(pfcf.contract_codes(cfg.instruments))
        except (pfcf.PfcfError, StateError) as e:  # (StateError: the order journal's file)
            ctx.log.error(f"error: {e}")
            if v is not None:
                v.close()
            raise SystemExit(2) from None
        self.venue_alarms = v.alarms
        return v

    def _last_reports(self, s: _Strategy, n: int):
        """The newest reports (and controls) in strategy `s`'s reports ring, newest first, at
        most `n` of them (a ring keeps its last `capacity` events readable)."""
        w = s.outbox.writer
        ring = w.ring
        end = w.position
        for p in range(end - 1, max(end - min(n, ring.capacity), 0) - 1, -1):
            yield self.decode_report(ring.payload(p))

    def _report_again(self, e) -> None:
        """Venue answer `e` of the log (see hftd.venues.sim.read_log) is in effect, but its
        report may not have reached its strategy (queued, or the process died between the
        effect and the report, or between an order's one-word end and the sequence that says
        it was applied): reported now, from the log, if the strategy was not told of it."""
        seq, owner, cid, kind, qty, price, reason, inst, side, filled, leaves = e
        if not 0 <= owner < len(self.strategies) or inst < 0:
            return
        s = self.strategies[owner]
        if seq <= s.vseq:
            return
        s.vseq = seq
        self._send(s, OrderReport(0, 0, cid, kind, inst, side, qty, price, reason, filled,
                                  leaves, seq))
        self.c_reports_resent.add()

    def _skip_fed(self) -> None:
        """After a restart: the market data the previous process fed is not fed again (only
        each instrument's last price is taken from it)."""
        md = self.md
        fed = self._fed_q[self._fed_i]
        n = min(fed - md.position, md.available())
        if n <= 0:
            return
        ring = md.ring
        for p in range(md.position, md.position + n):
            k = ring.i_key[p & ring.mask]
            if k >= 0:
                self.md_lasts[k] = p
        self.md_pos = md.position + n
        self.md_seq = -2
        self.c_md_restart_skipped.add(n)

    # --- the loop ---------------------------------------------------------------------------
    def sleep_for(self) -> float | None:
        """Asked before parking (after the runner flagged its rings asleep, market data with
        `md.wake_at`, set after each pass). Market data wakes the executor at every tick only
        while it has orders working at the venue (a trade may fill them), else when MD_WAKE
        ticks are waiting (the dispatcher rings then);
        otherwise it is read when something else wakes the executor (an order, which first
        has the venue catch up to its tick): at 10k ticks/s a wake-up per tick would cost
        the strategies a core's worth of scheduling on a small machine."""
        if self.control.available() > 0:
            return 0.0
        for s in self.strategies:
            if s.outbox:
                # its reports wait for room, and its orders with them (do_work takes none):
                # the strategy rings once it has freed half the ring, but it may have done so
                # before the waiting flag went up (then it will not ring)
                if not s.outbox.writer.must_wait():
                    return 0.0
            elif not s.orders_ended and s.orders.available() > 0:
                return 0.0
        if self.md.available() >= self.md.wake_at:
            return 0.0
        due = self.venue.next_due_ns()
        if due is None:
            return None
        return max(0.0, (due - time.monotonic_ns()) / 1e9)  # wake for what falls due

    def do_work(self) -> int:
        work = 0
        for ev in read_control(self.control):
            work += 1
            self.c_control_in.add()
            if ev.kind == ControlKind.PAUSE:
                self.risk.pause()
            elif ev.kind == ControlKind.RESUME:
                self.risk.resume()
            elif ev.kind == ControlKind.RELOAD:
                self.reload()
            elif ev.kind == ControlKind.QUARANTINE:
                self._quarantine(ev.arg)
            self.c_paused.set(int(self.risk.kill_switch))
        for s in self.strategies:
            if s.outbox:
                work += s.outbox.flush()  # reports that waited for room go first
            if not s.outbox and not s.orders_ended:
                work += self._take_orders(s)
        if self.deferred:
            evs, self.deferred = self.deferred, []
            work += self._venue_events(evs)
        if not self.md_ended:
            work += self._feed(MD_BATCH)
        self._settle()
        # what is due at the venue: acks of the orders just sent (at zero latency, now),
        # cancels, replaces, IOC windows
        evs = self.venue.poll(time.monotonic_ns())
        if evs:
            work += self._venue_events(evs)
        if self.venue_alarms is not None:  # a live venue's: a lost connection, say
            for why in self.venue_alarms():
                self._alarm(why)
        now = time.monotonic_ns()
        if now - self.marked_ns >= MARK_INTERVAL_NS:
            self._mark(now)
        waiting = 0
        done = self.md_ended
        for s in self.strategies:
            if s.outbox:
                s.outbox.flush()
            if s.orders_ended and not s.reports_ended:
                work += self._end(s)
            waiting += len(s.outbox)
            if not s.reports_ended or (s.quarantined and self.book.working_orders(s.index)):
                done = False
        self.c_reports_waiting.set(waiting)
        if done:
            self._mark(now)  # the last fills' money, before the block is read for the report
        book = self.book
        if len(book.orders) - book.n_working > FORGET_ABOVE:
            book.forget_terminal(KEEP_ENDED)
        self.done = done
        self.md.wake_at = 1 if book.n_working else self.md_wake  # for the park after this pass
        return work

    def on_reload(self, cfg) -> None:
        self.risk.reload(cfg.executor.risk.limits())

    def flush_pending(self) -> int:
        waiting = 0
        for s in self.strategies:
            if s.outbox:
                s.outbox.flush()
                waiting += len(s.outbox)
        return waiting

    # --- market data --------------------------------------------------------------------
    # Ticks are fed to the venue from `md_pos` on (`_feed`), possibly in several steps within
    # a pass (catching up to orders' ticks), and committed once at the end of the pass
    # (`_settle`): each instrument's last price is decoded once, from its last tick, however
    # many steps the pass took. Until then the fed slots stay valid (the reader has not
    # released them). `md_seq` is the seq of the last tick fed (-2: not decoded yet).

    def _md_available(self) -> int:
        """Ticks published and not yet fed."""
        return self.md.available() - (self.md_pos - self.md.position)

    def _feed(self, limit: int) -> int:
        """Feed up to `limit` ticks: the trades of instruments with orders at the venue go to
        the fill model, decoded, in order; of the others only the position of each
        instrument's last tick is noted (decoded at `_settle`)."""
        n = self._md_available()
        if n <= 0:
            return 0
        if n > limit:
            n = limit
        r = self.md
        ring = r.ring
        keys, mask = ring.i_key, ring.mask
        pos = self.md_pos
        decode = self.decode_tick
        payload = r.payload
        now = time.monotonic_ns()
        on_trade = self.venue.on_trade
        on_events = self.on_events
        last = self.last
        lasts = self.md_lasts
        trades = 0
        replays = 0
        seen = self.md_seen
        fed_q, fed_i = self._fed_q, self._fed_i
        if n <= MD_SCALAR:
            live = self.live
            taken = 0
            for p in range(pos, pos + n):
                k = keys[p & mask]
                if k < 0:
                    if taken == 0:
                        return self._md_control(p)
                    break
                taken += 1
                if live[k]:
                    t = decode(payload(p))
                    last[k] = t.price
                    if k in lasts:
                        del lasts[k]  # its price is known
                    if t.seq <= seen[k]:
                        replays += 1
                        continue
                    seen[k] = t.seq
                    fed_q[fed_i] = p + 1
                    trades += 1
                    evs = on_trade(k, t.price, t.qty, now)
                    if evs:
                        on_events(evs)
                else:
                    lasts[k] = p
            n = taken
        else:
            idx = np.arange(pos, pos + n, dtype=np.int64) & mask
            k = ring.key[idx]
            ctl = np.flatnonzero(k < 0)
            if ctl.size:
                if ctl[0] == 0:
                    return self._md_control(pos)
                n = int(ctl[0])
                k = k[:n]
            sel = np.flatnonzero(self.live_np[k])
            if sel.size:
                live = self.live
                for j, i in zip(sel.tolist(), k[sel].tolist()):
                    if not live[i]:
                        continue  # its orders ended earlier in this batch (a market order's first trade)
                    t = decode(payload(pos + j))
                    last[i] = t.price
                    if t.seq <= seen[i]:
                        replays += 1
                        continue
                    seen[i] = t.seq
                    fed_q[fed_i] = pos + j + 1
                    trades += 1
                    evs = on_trade(i, t.price, t.qty, now)
                    if evs:
                        on_events(evs)
            at = self.md_at
            at.fill(-1)
            np.maximum.at(at, k, np.arange(n))  # each instrument's last index in the batch
            for i in np.flatnonzero(at >= 0).tolist():
                lasts[i] = pos + int(at[i])
        self.md_pos = pos + n
        fed_q[fed_i] = pos + n
        self.md_seq = -2
        if trades:
            self.c_md_trades.add(trades)
        if replays:
            self.c_md_replays.add(replays)
        return n

    def _fed_seq(self) -> int:
        """Seq of the last tick fed (-1: none yet)."""
        if self.md_seq == -2:
            self.md_seq = self.decode_tick(self.md.payload(self.md_pos - 1)).seq
        return self.md_seq

    def _last_price(self, i: int) -> int:
        """Instrument `i`'s last trade price, from the ticks fed so far."""
        p = self.md_lasts.pop(i, None)
        if p is not None:
            self.last[i] = self.decode_tick(self.md.payload(p)).price
        return self.last[i]

    def _settle(self) -> int:
        """Decode what the fed ticks left to decode (each instrument's last price) and
        commit them."""
        r = self.md
        n = self.md_pos - r.position
        if n <= 0:
            return 0
        lasts = self.md_lasts
        if lasts:
            decode, payload, last = self.decode_tick, r.payload, self.last
            for k, p in lasts.items():
                last[k] = decode(payload(p)).price
            lasts.clear()
        self._fed_seq()
        r.commit(n)
        self.c_md_ticks.add(n)
        return n

    def _md_control(self, p: int) -> int:
        """The in-band control event at `p` (the next to feed): the end of the market data."""
        self._settle()
        ev = decode_control(self.md, p)
        self.md.commit(1)
        self.md_pos = p + 1
        if ev.kind == ControlKind.SHUTDOWN:
            self.md_ended = True
        return 1

    def _catch_up(self, tick_seq: int) -> bool:
        """Feed the venue the market data up to the tick `tick_seq` (-1: all that has been
        published: an order sent from a report or a timer comes after it); False when that
        tick is not in the ring yet (the dispatcher publishes it to the strategies first),
        so the order must wait.

        What the venue answers to those trades (fills of other orders) is applied right after
        the order is handed over, keeping that bookkeeping off its path. Its risk check then
        sees those fills a little late, which only errs on the safe side: a fill of a
        same-side order moves quantity from working to position (the exposure the order is
        checked against is unchanged), an opposite-side fill reduces the exposure, and an
        ended order frees a working-order slot."""
        self.on_events = self.deferred.extend
        try:
            if tick_seq < 0:
                while not self.md_ended and self._feed(MD_BATCH):
                    pass
                return True
            seq = self._fed_seq()
            # ticks carry consecutive seqs (a block ring has them all): feed exactly up to
            # `tick_seq` in one go when the tick there is the one; else in small steps
            need = tick_seq - seq
            if seq >= 0 and 0 < need <= self._md_available():
                md = self.md
                ring = md.ring
                p = self.md_pos + need - 1
                if ring.i_key[p & ring.mask] >= 0 and \
                        self.decode_tick(md.payload(p)).seq == tick_seq:
                    self._feed(need)
                    self.md_seq = seq = tick_seq
            while seq < tick_seq and not self.md_ended:
                if not self._feed(CATCH_UP):
                    # a conflating ring may have replaced the tick: nothing to wait for then
                    return not self.md_blocks
                seq = self._fed_seq()
            return True
        finally:
            self.on_events = self._venue_events

    # --- orders -------------------------------------------------------------------------
    def _take_orders(self, s: _Strategy) -> int:
        r = s.orders
        if s.skip_to:
            return self._resume_orders(s)
        evs = r.read(self.decode, 256)
        if not evs:
            return 0
        taken = 0
        taking, taking_vseq, venue = s.g_taking, s.g_taking_vseq, self.venue
        pos = r.position
        for ev in evs:
            # crash-only: which request is being handled, and how far the venue's log was
            taking_vseq.set(venue.last_seq)
            taking.set(pos + taken + 1)
            if ev.__class__ is Control:
                taken += 1
                if ev.kind == ControlKind.SHUTDOWN:
                    s.orders_ended = True
                    break
                if ev.kind == ControlKind.RECONCILE:
                    self._reconcile(s)
                continue
            action = ev.action
            if action == _NEW or action == _REPLACE:
                # the venue sees the order's tick (and every trade before it) first
                if ev.tick_seq < 0 or ev.tick_seq > self._fed_seq():
                    if not self._catch_up(ev.tick_seq):
                        break  # its tick is a few microseconds away: the next pass
                if action == _NEW:
                    self._new(s, ev)
                else:
                    self._replace(s, ev)
                if self.deferred:  # the venue's answers to the trades before it: now
                    evs, self.deferred = self.deferred, []
                    self._venue_events(evs)
            elif action == _CANCEL:
                self._cancel(s, ev)
            else:
                self._cancel_rejected(s, ev, RejectReason.BAD_ORDER)
            taken += 1
        if not taken:
            return 0
        r.commit(taken)
        self.c_orders_in.add(taken - (1 if s.orders_ended else 0))
        return taken

    def _resume_orders(self, s: _Strategy) -> int:
        """A restarted executor, before it takes strategy `s`'s next order request: the
        requests a previous process had handled (up to the one it was handling when it died,
        `taking`) were not committed if it died before the end of its batch. Those it had
        finished are skipped; the one it had begun is handled again only if it left no trace:
        a new order that is neither on record nor reported, a cancel or replace the venue's
        log does not show after the moment it began (`taking_vseq`). So none is handled
        twice, and none is lost."""
        r = s.orders
        n = s.skip_to - 1 - r.position  # handled to the end
        s.skip_to = 0
        if n:
            r.commit(n)
            self.c_requests_skipped.add(n)
            self.c_orders_in.add(n)
        ev = r.read(self.decode, 1)[0]
        if not s.redo:
            r.commit(1)
            self.c_requests_skipped.add()
            if ev.__class__ is Control:
                s.orders_ended = s.orders_ended or ev.kind == ControlKind.SHUTDOWN
            else:
                self.c_orders_in.add()
            return n + 1
        self.c_requests_redone.add()
        if ev.__class__ is not Control and ev.action == _NEW and ev.order_id == s.last_id:
            s.last_id -= 1  # it was seen, not handled: it is not a duplicate
        return n + self._take_orders(s)

    def _left_trace(self, s: _Strategy, ev) -> bool:
        """Whether request `ev`, begun by a process that died, took effect (see above; at
        start-up, while the venue's log is at hand)."""
        if ev.__class__ is Control:
            if ev.kind != ControlKind.RECONCILE:
                return False
            return any(e.__class__ is Control and e.kind == ControlKind.RECONCILED
                       for e in self._last_reports(s, 16))
        cid = ev.order_id
        if ev.action == _NEW:
            if cid > s.last_id:
                return False  # not even seen
            if cid < s.last_id or self.book.get(cid) is not None or cid in self.vlog.orders:
                return True  # handled before, or on record (the venue gets it back)
            return any(e.__class__ is OrderReport and e.order_id == cid
                       for e in self._last_reports(s, 256))
        lo = self.vlog.orders.get(cid)
        return lo is not None and lo.last_request_seq > s.g_taking_vseq.value

    def _reconcile(self, s: _Strategy) -> None:
        """A strategy starting asks for its state: its positions and working orders as of
        now (every order it sent before asking has been taken: the ring is in order) go to a
        snapshot file, and RECONCILED follows, in order, the reports already queued for it:
        the strategy does not apply those to its book (the snapshot has their effect), only
        hands them to its callbacks, and applies what comes after."""
        self.c_reconciles.add()
        positions = {self.symbols[i]: p.values() for i, p in enumerate(s.pos)
                     if p is not None and p.volume}
        orders = [[o.client_id, o.instrument, o.side, o.qty, o.price, o.ord_type, o.tif,
                   o.state, o.filled, o.fill_value, o.t_created_ns]
                  for o in self.book.working() if o.strategy == s.index]
        n = self.c_reconciles.value
        write_snapshot(self.ctx.runtime_dir, self.ctx.instance, s.name, n, positions, orders)
        now = time.monotonic_ns()
        s.outbox.add(Control(0, now, ControlKind.RECONCILED, n))
        s.outbox.flush()

    def _new(self, s: _Strategy, ev) -> None:
        self.c_new_in.add()
        now = time.monotonic_ns()
        oid = ev.order_id
        inst = ev.instrument
        if oid <= s.last_id or oid >> ORDER_ID_SHIFT != s.index:
            reason = RejectReason.DUPLICATE_ORDER_ID
        else:
            s.last_id = oid
            self.state.set_seen(s.index, oid)
            s.g_last_id.set(oid)
            if not (0 <= inst < self.n_instruments and s.routed[inst]):
                reason = RejectReason.UNKNOWN_INSTRUMENT
            elif (ev.ord_type != _MARKET and ev.ord_type != _LIMIT) or not 0 <= ev.tif <= 2 \
                    or (ev.ord_type == _MARKET and ev.price != 0):
                reason = RejectReason.BAD_ORDER
            else:
                book = self.book
                reason = self.risk.check(s.index, inst, ev.side, ev.qty, ev.ord_type, ev.price,
                                         self._last_price(inst), s.pos[inst].qty,
                                         book.working_qty(s.index, inst, ev.side),
                                         book.working_orders(s.index), now)
            if not reason and not self.state.has_room():
                reason = RejectReason.MAX_WORKING_ORDERS  # the instance's store is full
        if reason:
            self.latency.record(now - ev.t_ingest)
            self.c_rejects.add()
            self.c_reject_by[reason].add()
            self.c_new_reject_by[reason].add()
            self._send(s, OrderReport(0, ev.t_ingest, oid, _REJECT, inst, ev.side, ev.qty, ev.price,
                                      reason, 0, 0, s.vseq))
            return
        o = Order(oid, s.index, inst, ev.side, ev.qty, ev.price, ev.ord_type, ev.tif, ev.t_ingest)
        self.state.add_order(o, self.inst_keys[inst], s.key)  # on record before the venue has it
        self.venue.submit(s.index, oid, inst, ev.side, ev.qty, ev.ord_type, ev.tif, ev.price, now)
        if ev.tick_seq >= 0:
            self.t2t.record(time.monotonic_ns() - ev.t_ingest)  # first: nothing before the venue
        # into the book after the hand-over (the venue answers nothing before the next poll)
        self.book.add(o)
        self.latency.record(now - ev.t_ingest)
        self.live[inst] += 1
        self.live_np[inst] += 1

    def _working(self, s: _Strategy, ev):
        """The strategy's working order that `ev` names, or None."""
        o = self.book.get(ev.order_id)
        if o is None or o.strategy != s.index or o.state >= _FILLED:
            return None
        return o

    def _cancel(self, s: _Strategy, ev) -> None:
        self.c_cancels_in.add()
        now = time.monotonic_ns()
        self.latency.record(now - ev.t_ingest)
        o = self._working(s, ev)
        if o is None:
            self._cancel_rejected(s, ev, RejectReason.UNKNOWN_ORDER)
        else:
            self.venue.cancel(s.index, ev.order_id, now)
            self.book.requested(o)

    def _replace(self, s: _Strategy, ev) -> None:
        """A replace is checked as the order it would become: its new quantity against
        max_order_qty, its new leaves against max_position, its new price against the band,
        and it spends a rate token; a replace is refused while the kill switch is on (a
        cancel never is)."""
        self.c_replaces_in.add()
        now = time.monotonic_ns()
        self.latency.record(now - ev.t_ingest)
        o = self._working(s, ev)
        qty, price = ev.qty, ev.price
        if o is None:
            reason = RejectReason.UNKNOWN_ORDER
        elif qty <= o.filled:
            reason = RejectReason.BAD_QTY
        elif not price_ok(o.ord_type, price):
            reason = RejectReason.BAD_PRICE
        elif qty > self.risk.limits.max_order_qty:
            reason = RejectReason.MAX_ORDER_QTY
        else:
            book, i = self.book, o.instrument
            old_leaves = o.qty - o.filled
            reason = self.risk.check(s.index, i, o.side, qty - o.filled, o.ord_type, price,
                                     self._last_price(i), s.pos[i].qty,
                                     book.working_qty(s.index, i, o.side) - old_leaves,
                                     book.working_orders(s.index) - 1, now)
        if reason:
            self._cancel_rejected(s, ev, reason)
        else:
            self.venue.replace(s.index, ev.order_id, qty, price, now)
            self.book.requested(o, qty)  # an increase is at risk from now on

    def _cancel_rejected(self, s: _Strategy, ev, reason: int) -> None:
        """A cancel or replace refused here, before the venue."""
        self.c_cancel_rejects.add()
        self.c_reject_by[reason].add()
        self.c_cancel_reject_by[reason].add()
        o = self.book.get(ev.order_id)
        filled, leaves = (o.filled, o.leaves) if o is not None and o.strategy == s.index else (0, 0)
        self._send(s, OrderReport(0, ev.t_ingest, ev.order_id, _CANCEL_REJECTED, ev.instrument,
                                  ev.side, 0, 0, reason, filled, leaves, s.vseq))

    def _send(self, s: _Strategy, report: OrderReport) -> None:
        if s.quarantined:
            self.c_reports_discarded.add()  # nobody reads its reports ring any more
        else:
            s.outbox.add(report)

    # --- the venue's answers ----------------------------------------------------------------
    def _venue_events(self, evs, seqs=None) -> int:
        """Apply the venue's answers `evs`, each with its venue log sequence (taken from the
        venue in order, or `seqs`: answers read back from the log at start-up, some of which
        may already be in effect: an acknowledgement or an end is one word, written before
        the sequence that says it was applied). Returns how many (with `seqs`: how many were
        applied now)."""
        book = self.book
        state = self.state
        take = self.venue.take_seq if seqs is None else iter(seqs).__next__
        counted = self.c_by_kind
        applied = 0
        for owner, cid, kind, qty, price, reason in evs:
            seq = take()
            o = book.get(cid)
            if o is None or not book.apply(kind, cid, qty, price, reason):
                if seqs is not None:
                    self.c_answers_in_effect.add()
                    state.set_venue_seq(seq)
                else:
                    self.c_illegal_transitions.add()
                continue
            applied += 1
            if seqs is not None:
                self.c_answers_replayed.add()
            s = self.strategies[owner]
            counted[kind].add()
            if reason:  # a REJECT's, a CANCEL_REJECTED's
                self.c_reject_by[reason].add()
                (self.c_cancel_reject_by if kind == _CANCEL_REJECTED
                 else self.c_new_reject_by)[reason].add()
            if kind == _FILL:  # the order, its position and the sequence: one journaled step
                self._fill(s, o, qty, price, seq)
                if o.state == _FILLED:
                    self.c_filled.add()
                    self._ended(o)
            elif kind == _REPLACED:
                state.update(o, venue_seq=seq)
            else:  # one word (or none), then the sequence that says it was applied
                if kind == _ACK:
                    state.set_state(o)
                elif kind != _CANCEL_REJECTED:  # CANCELED, EXPIRED, REJECT
                    self._ended(o)
                state.set_venue_seq(seq)
            if seq:
                s.vseq = seq
            self._send(s, OrderReport(0, o.t_created_ns, cid, kind, o.instrument, o.side, qty,
                                      price, reason, o.filled, o.leaves, s.vseq))
        self.c_working_orders.set(book.n_working)
        return len(evs) if seqs is None else applied

    def _ended(self, o: Order) -> None:
        self.state.end_order(o.client_id)  # a fill's end was written with it (no-op then)
        self.live[o.instrument] -= 1
        self.live_np[o.instrument] -= 1

    def _fill(self, s: _Strategy, o: Order, qty: int, price: int, venue_seq: int = 0) -> None:
        """A fill moves the position at once (risk reads it); its money reaches the stats
        block and the daily loss limit at the next mark (`_mark`, within a millisecond):
        that bookkeeping stays off the path of the orders behind it."""
        i = o.instrument
        p = s.pos[i]
        p.apply_fill(o.side, qty, price)
        self.state.update(o, s.slots[i], p, venue_seq)  # order, position, answer: one step
        s.gauges[i][0].set(p.qty)
        if p.qty:
            s.held.add(i)
        else:
            s.held.discard(i)
        s.dirty.add(i)

    def _mark(self, now: int) -> None:
        """Mark open positions to market and publish what fills changed: the money gauges of
        each position, and each strategy's daily net P&L to the daily loss limit."""
        self.marked_ns = now
        day = trading_day(time.time(), self.utc_offset_s, self.day_start_s)
        if day != self.state.day and self._priced():
            self._new_day(day)
        for s in self.strategies:
            if s.held or s.dirty:
                self._mark_strategy(s)
        self.c_day_pnl.set(fixed(self.risk.instance_pnl, 100))

    def _priced(self) -> bool:
        """Every open position has a last trade price (its base for the day includes its
        unrealised P&L at the market; a start with none yet waits for the first trades)."""
        last = self.last
        return all(last[i] for s in self.strategies for i in s.held)

    def _new_day(self, day: int) -> None:
        """The trading day changed: each position's net P&L now is its base for the day."""
        st, last = self.state, self.last
        for s in self.strategies:
            s.day_base = 0.0
            for i, p in enumerate(s.pos):
                if p is None:
                    continue
                base = p.net(last[i])
                st.set_day_base(s.slots[i], base)
                s.day_base += base
                if p.volume:
                    s.dirty.add(i)
        st.day = day  # last: killed before it, the next process sets the bases again

    def _mark_strategy(self, s: _Strategy) -> None:
        last = self.last
        net = 0.0
        dirty = s.dirty
        for p in s.pos:
            if p is None or not p.volume:
                continue
            i = p.instrument
            net += p.realized - p.fees - p.tax
            if p.qty:
                u = p.unrealized(last[i])
                s.gauges[i][3].set(fixed(u, 100))
                net += u
            elif i in dirty:
                s.gauges[i][3].set(0)
            if i in dirty:
                g = s.gauges[i]
                g[0].set(p.qty)
                g[1].set(fixed(p.avg_price, 1_000_000))
                g[2].set(fixed(p.realized, 100))
                g[4].set(fixed(p.fees, 100))
                g[5].set(fixed(p.tax, 100))
                g[6].set(p.volume)
        dirty.clear()
        net -= s.day_base
        if self.risk.on_pnl(s.index, net):
            self.c_loss_trips.add()
            self._alarm(f"daily loss limit crossed: net P&L {self.risk.instance_pnl:,.2f} <= "
                        f"-{self.risk.limits.daily_loss_limit:,.2f}")

    def on_close(self) -> None:
        self._mark(time.monotonic_ns())
        self.state.flush()  # to the disk now, not at the kernel's next write-back
        if hasattr(self.venue, "close"):  # a live venue's session
            self.venue.close()

    # --- kill switch, quarantine, end of stream ---------------------------------------------
    def _alarm(self, why: str) -> None:
        """Trip the kill switch and raise the alarm: the supervisor sees the counter and
        pauses trading everywhere until `hftd resume`."""
        if not self.c_paused.value:
            self.c_alarms.add()
            self.ctx.log.critical(f"ALARM: {why}; kill switch on")
        self.risk.pause()
        self.c_paused.set(1)

    def _overdue(self, n: int) -> None:
        deadline = self.strategies[0].outbox.deadline_ns / 1e6
        self._alarm(f"{n} reports blocked for more than {deadline:g} ms on a full reports ring")

    def _quarantine(self, owner: int) -> None:
        """The supervisor gave strategy `owner` up: its working orders are canceled, its
        orders ring is read no more, and reports for it are counted, not sent."""
        if not 0 <= owner < len(self.strategies) or self.strategies[owner].quarantined:
            return
        s = self.strategies[owner]
        s.quarantined = True
        s.orders_ended = s.reports_ended = True
        self._cancel_all(owner)
        s.canceling = True
        self.c_reports_discarded.add(len(s.outbox))
        s.outbox.waiting.clear()
        self.c_quarantined.add()

    def _cancel_all(self, owner: int) -> None:
        self.venue.cancel_all(owner, time.monotonic_ns())
        for o in self.book.working():
            if o.strategy == owner:
                self.book.requested(o)  # (an order with a cancel on its way gets none more)

    def _end(self, s: _Strategy) -> int:
        """After the strategy's SHUTDOWN: cancel its working orders (they end with the venue's
        latency), wait until every one has ended, then end its reports stream."""
        if not s.canceling:
            s.canceling = True
            self._cancel_all(s.index)
        if self.book.working_orders(s.index):
            return 0
        if s.outbox:
            s.outbox.flush()
            return 0
        if end_of_stream(s.outbox.writer):
            s.reports_ended = True
            return 1
        return 0
