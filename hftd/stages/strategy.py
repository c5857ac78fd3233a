"""Strategy stage: hosts one user strategy; ticks and order reports in, order requests out.

Each pass drains, in priority order, the control ring, then order reports, then sends any
requests still waiting for room, and only then takes a batch of ticks. Requests that do not
fit the orders ring wait here (never dropped) and the stage takes no more ticks until they
are sent, so a full orders ring backpressures the ticks ring rather than losing anything.

The stage keeps the strategy's own view of its orders and positions (`StrategyApi`: an
`OrderBook` and a `Portfolio` applied from the executor's reports), so `on_order`/`on_fill`
are driven by reports and the strategy's `position`/`pnl` are its own count, independent of
the executor's (the run report compares the two). Client order ids are
`(strategy index << 40) | n`, n from this strategy's counter in the executor's state store
(hftd.trading.store, a mapped file of the instance's state directory): a restarted strategy
process, and the next run of the daemon, continue it, so an id is never issued twice.

Start-up is recovery (every start, the daemon's or after a kill): before its first tick the
stage asks the executor for its positions and working orders (RECONCILE in order on the
orders ring; the executor answers with a snapshot and RECONCILED in order on the reports
ring) and starts its book from them; then the strategy's `on_start` and `on_load` (its saved
state) run, seeing those positions. The reports queued before the answer have their effect
in the snapshot; those no process of this strategy had handled still reach its callbacks
(`reports_after_restart`), and the ones a dead process had handled or begun do not
(`report_started`, written before a report's callbacks; `reports_skipped`). Likewise a tick
a dead process began is not handed over again (`tick_started`; `restart_skipped`): at most
once where a process died, so an order is never sent twice for one tick.

Timers: a strategy class with `timer_s > 0` gets `on_timer()` that often, checked once per
pass (a parked stage wakes for it), so it may come as late as the pass that was running.

The strategy's own state (its indicators, phases: whatever `on_save` returns) is kept in
`<state dir>/<name>.strategy.json`, an envelope {version, strategy, class, saved_at, state}
replaced atomically (hftd.atomic_file, mode 0600) whenever the strategy calls `save()`, at
most every `save_every_s` once it called `mark_dirty()`, at stop (fsynced) and when the
process leaves on a signal. At start the file is read and checked before `on_start` (so a
save from there cannot replace it unread) and handed to `on_load` after it. A file that
cannot be used (unreadable, not JSON, another version, another class's, refused by
`on_load`) stops the strategy at start with one line naming it, exit 2: it is never replaced
by a fresh state. A save that fails is counted (`save_errors`) and said on stderr; the
strategy keeps trading. Saves and loads are counted (`saves`, `loads`).

End of stream: the tick stream's SHUTDOWN calls `on_stop`, sends the remaining requests and
a SHUTDOWN on the orders ring; the executor cancels what this strategy left working and ends
the reports stream once every order has ended; the stage stops there, so its book ends with
every order in a terminal state.
"""

from __future__ import annotations

import datetime
import importlib
import os
import re
import time
from typing import Any, NamedTuple

import msgspec
import numpy as np

from .. import stats
from ..agent import Agent
from ..atomic_file import write_atomic
from ..events import (Codec, Control, ControlKind, OrderRequest, ReportKind, ReportStream, Tick,
                      TickColumns, TickStream, tick_columns)
from ..identity import IdentityError, read_private
from ..stats import COUNTER, GAUGE, Schema
from ..strategies.base import StateError, Strategy, StrategyApi
from ..trading import OrdState
from ..trading.orders import IdSource, Order
from ..trading.store import TradingState
from .common import Outbox, end_of_stream, fixed, offer_control, read_control
from .executor import snapshot_path, state_path

_ACK, _REJECT, _FILL = ReportKind.ACK, ReportKind.REJECT, ReportKind.FILL
_CANCELED, _EXPIRED = ReportKind.CANCELED, ReportKind.EXPIRED
_REPLACED, _CANCEL_REJECTED = ReportKind.REPLACED, ReportKind.CANCEL_REJECTED
_FILLED = int(OrdState.FILLED)
KEEP_ENDED = 4096  # ended orders the strategy's book keeps ...
FORGET_ABOVE = 8192  # ... once more than this have ended
# per routed instrument: the strategy's own view of its position (see executor.POSITION_VALUES)
POSITION_VALUES = ("pos", "realized", "fees", "tax")
STATE_VERSION = 1  # of the strategy state file's envelope
EXIT_BAD_STATE = 2  # a strategy whose saved state cannot be used exits with this at start
SMALL_RUN = 8  # up to this many ticks are decoded one by one for on_tick
SAVE_ERROR_LINE_NS = 1_000_000_000  # at most one line a second about failing saves


def state_file_path(state_dir: str, name: str) -> str:
    """Where the strategy stage keeps strategy `name`'s state (`Strategy.on_save`)."""
    return os.path.join(state_dir, f"{name}.strategy.json")


class _Version(msgspec.Struct):
    version: int


class StateFile(msgspec.Struct, forbid_unknown_fields=True):
    """The strategy state file: what `on_save` returned, in an envelope saying whose it is."""

    version: int
    strategy: str  # the [[strategies]] name it was saved under (for people)
    class_: str = msgspec.field(name="class")  # module:qualname of the class that saved it
    saved_at: str  # UTC, ISO 8601 (for people)
    state: Any


def class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def read_state_file(path: str, cls: type) -> StateFile | None:
    """The state file at `path` if it is one of class `cls`; None if there is none;
    StateError naming the file and what is wrong otherwise."""
    def bad(why: str) -> StateError:
        return StateError(f"strategy state file {path} {why}; fix it or move it away (the "
                          f"strategy's state is not reset in its place)")
    try:
        data = read_private(path)
    except FileNotFoundError:
        return None
    except IdentityError as e:
        raise StateError(f"strategy state file: {e}") from None
    except OSError as e:
        raise bad(f"cannot be read: {e.strerror or e}") from None
    try:
        version = msgspec.json.decode(data, type=_Version).version
        if version != STATE_VERSION:
            raise bad(f"is version {version}, this hftd reads version {STATE_VERSION}")
        f = msgspec.json.decode(data, type=StateFile)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        raise bad(f"is unusable: {e}") from None
    if f.class_ != class_path(cls):
        raise bad(f"holds the state of class {f.class_}, not of this strategy's class "
                  f"{class_path(cls)}")
    return f


_ENDED_STATE = {_REJECT: OrdState.REJECTED, _CANCELED: OrdState.CANCELED,
                _EXPIRED: OrdState.EXPIRED}


def _ended_view(ev, strategy: int) -> Order:
    """An order no longer in the strategy's book, as report `ev` leaves it (for callbacks
    of reports that arrived while a new process reconciled)."""
    k = ev.kind
    qty = ev.qty if k in (_REJECT, _REPLACED) else ev.filled + (ev.qty if k in _ENDED_STATE
                                                                else ev.leaves)
    o = Order(ev.order_id, strategy, ev.instrument, ev.side, max(qty, ev.filled, 1), ev.price)
    o.filled = ev.filled
    o.state = _ENDED_STATE.get(k) or (OrdState.FILLED if ev.filled and not ev.leaves else
                                      OrdState.PARTIALLY_FILLED if ev.filled else OrdState.NEW)
    return o


def load_strategy_class(path: str) -> type[Strategy]:
    module, _, name = path.partition(":")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"strategy class {path!r} cannot be loaded: {e}") from None
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise ValueError(f"strategy class {path!r} is not a subclass of hftd Strategy")
    return cls


class _Screened(NamedTuple):
    """A run of ticks after `StrategyStage._screen`."""

    cols: TickColumns  # the run's new ticks
    fresh: np.ndarray | None  # which of the run's ticks those are (None: all)
    replays: int  # ticks of the run routed before, left out
    gaps: int  # sequence gaps found
    expect: int  # the seq expected next
    lasts: list  # (instrument, index in `cols` of its last tick)


class StrategyStage(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        return Schema(
            values=(("ticks_in", COUNTER), ("orders_out", COUNTER), ("new_orders", COUNTER),
                    ("cancels_sent", COUNTER), ("replaces_sent", COUNTER),
                    ("reports_in", COUNTER), ("acks", COUNTER), ("fills", COUNTER),
                    ("filled", COUNTER), ("rejects", COUNTER), ("canceled", COUNTER),
                    ("expired", COUNTER), ("replaced", COUNTER), ("cancel_rejects", COUNTER),
                    ("illegal_transitions", COUNTER), ("report_mismatches", COUNTER),
                    ("seq_gaps", COUNTER), ("first_seq", GAUGE), ("last_seq", GAUGE),
                    ("orders_waiting", GAUGE), ("orders_refused", COUNTER), ("control_in", COUNTER),
                    ("paused", GAUGE), ("alarms", COUNTER),
                    ("working_orders", GAUGE), ("command_done", GAUGE),
                    ("first_tick_ns", GAUGE), ("last_tick_ns", GAUGE),
                    ("tick_started", GAUGE), ("report_started", GAUGE),
                    ("reports_after_restart", COUNTER), ("stale_answers", COUNTER),
                    ("replays_suppressed", COUNTER),
                    ("restart_skipped", COUNTER), ("reports_skipped", COUNTER),
                    ("reconciled", COUNTER),
                    ("signals_lost", COUNTER),
                    ("saves", COUNTER), ("loads", COUNTER), ("save_errors", COUNTER),
                    *cls._position_values(cfg)),
            histograms=("stage",),
        )

    @staticmethod
    def _position_values(cfg) -> list:
        # the schema is the same for every strategy agent of an instance (one per role), so
        # it names the union of their routed instruments; each uses its own
        syms = cfg.symbols()
        routed = sorted({i for s in cfg.strategies for i in cfg.routes(s)})
        return [(f"{v}.{syms[i]}", GAUGE) for i in routed for v in POSITION_VALUES]

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.name = ctx.agent.split(".", 1)[1]
        self.index = next(i for i, s in enumerate(cfg.strategies) if s.name == self.name)
        scfg = cfg.strategies[self.index]
        self.control = ctx.reader(f"control.{ctx.agent}")
        self.reports = ctx.reader(f"reports.{self.name}")
        self.ticks = ctx.reader(f"ticks.{self.name}")
        self.orders = ctx.writer(f"orders.{self.name}", "executor")
        self.batch_min = scfg.batch_min
        self.batch_span = scfg.batch - scfg.batch_min
        self.capacity = self.ticks.ring.capacity
        routed = self.routed = cfg.routes(scfg)
        self.check_seq = len(routed) == len(cfg.instruments)
        self.decode_tick = Codec(TickStream).decode
        self.decode_report = Codec(ReportStream).decode
        self.encode_order = Codec(OrderRequest).encode
        st = ctx.stats
        self.bind_values()
        # a report applied to the book is counted under its kind (apply refused any other)
        self.c_by_kind = {_ACK: self.c_acks, _REJECT: self.c_rejects, _FILL: self.c_fills,
                          _CANCELED: self.c_canceled, _EXPIRED: self.c_expired,
                          _REPLACED: self.c_replaced, _CANCEL_REJECTED: self.c_cancel_rejects}
        syms = cfg.symbols()
        self.gauges = [None] * len(syms)
        for i in routed:
            self.gauges[i] = [st.value(f"{v}.{syms[i]}") for v in POSITION_VALUES]
        self.latency = ctx.histogram("stage")
        self.outbox = Outbox(self.orders, self.encode_order,
                             int(cfg.rings.orders.block_deadline_ms * 1e6), self.c_orders_out,
                             self._overdue)
        # the id counter is this strategy's word in the executor's state store (a store per
        # order): it outlives this process and the daemon, so an id is never issued twice
        self.state = TradingState.open(state_path(cfg))
        self.api = StrategyApi(syms, cfg.contracts(), self._send, self.index,
                               IdSource(self.state.q, self.state.id_slot(self.index)), routed)
        self.api.refused = self.c_orders_refused
        # the strategy learns its positions and working orders from the executor before it
        # sees a tick, at every start: the executor may have applied venue answers at its own
        # start (hftd.venues.sim), so its answer, in order on the rings, is the one truth
        self.reconciling = True
        self.restarted = bool(st.q_header[stats.H_RESTARTS])
        self.asked = False
        # reports the previous process handled (or began: at most once) are not handed to the
        # strategy again; `report_started` is the ring position + 1 of the last one, written
        # before its callbacks (see _take_reports); the others reach it after reconciling
        self.report_skip_to = self.c_report_started.value
        self.late_reports: list = []
        if self.restarted:
            # orders the previous process had not yet written to the ring died with it: they
            # never reached the executor (no duplicate), a signal not acted on (counted)
            self.c_signals_lost.add(self.c_orders_waiting.value)
            self.c_orders_waiting.set(0)
        # ticks whose on_tick a previous process of this strategy began (it may have sent
        # their orders) are not handled again: `tick_started` is the ring position + 1 of the
        # last one, written before its on_tick (see _take_ticks)
        self._started_q, self._started_i = st.q_values, st.index["tick_started"]
        self._report_i = st.index["report_started"]
        self.skip_to = self.c_tick_started.value
        self.seen_seq = [-1] * len(syms)  # per instrument, the seq of the last tick handled
        self.api.name = self.name
        self.api.state_dir = cfg.resolved_state_dir()
        self.state_file = self.api.state_file = state_file_path(self.api.state_dir, self.name)
        self.api.save_state = self._save_state
        self.strategy = load_strategy_class(scfg.class_)(self.api, scfg.params)
        # a strategy with its own on_ticks is handed runs of ticks as columns
        self.batched = type(self.strategy).on_ticks is not Strategy.on_ticks
        self._last_at = np.empty(len(syms), dtype=np.int64)  # _take_columns' scratch
        self.started = False  # on_start (and on_load) done
        self.saved = None  # the saved state, read at the process's start, for on_load
        self.load_pending = False  # a saved state is still to be given to on_load ...
        self.save_deferred = False  # ... and the strategy asked for a save meanwhile
        self.save_every_ns = 0
        self.next_save_ns = 0  # a state marked dirty is saved from then on
        self.save_error_line_ns = 0
        self.expect_seq = -1
        self.ticks_ended = False
        self.orders_ended = False
        self.stopped = False  # on_stop was called: no callback any more
        self.timer_ns = 0
        self.next_timer_ns = 0

    def _adopt(self, positions: dict, orders) -> None:
        """Start the strategy's view from the executor's: `positions` maps an instrument to
        `Position.values()`, `orders` are working orders as (client id, instrument, side,
        qty, price, type, tif, state, filled, fill value, created)."""
        api = self.api
        for i, values in positions.items():
            api.positions[i].restore(*values)
        for cid, inst, side, qty, price, ord_type, tif, state, filled, value, t in orders:
            api.restore_order(Order(cid, self.index, inst, side, qty, price, ord_type, tif, t),
                              state, filled, value)
        self.c_working_orders.set(len(api.working))
        self._publish_positions(self.routed)

    def on_close(self) -> None:
        if self.started and not self.stopped:  # left on a signal: what it has, for the next
            self._save_state(durable=True)
        self.state.flush()  # its id counter, to the disk now

    def _command(self, seq: int) -> None:
        """A command the supervisor handed over (hftd.commands): the strategy's on_command
        answers, or refuses with ValueError; the reply goes back before `command_done`."""
        from .. import commands

        ctx = self.ctx
        try:
            cmd = commands.read_command(ctx.runtime_dir, ctx.instance, ctx.agent)
            if cmd.seq != seq:
                raise ValueError(f"command {seq} was replaced by command {cmd.seq}")
            if not self.started:
                raise ValueError(f"strategy {self.name} is starting (reconciling with the "
                                 f"executor): try again in a moment")
            reply = commands.CommandReply(seq, True, self.strategy.on_command(cmd.name,
                                                                               dict(cmd.args)))
        except ValueError as e:
            reply = commands.CommandReply(seq, False, str(e))
        except Exception as e:  # a bug in the strategy's command code: say so, keep trading
            reply = commands.CommandReply(seq, False, f"{type(e).__name__}: {e}")
        commands.write_reply(ctx.runtime_dir, ctx.instance, ctx.agent, reply)
        self.c_command_done.set(seq)

    def on_start(self) -> None:
        """The process's start: the saved state is read and checked at once (an unusable
        file stops it before anything else); the strategy's own on_start and on_load come
        once the executor's answer has given it its positions and working orders (`_begin`),
        so they see them."""
        try:
            self._remove_stale_temporaries()
            self.saved = read_state_file(self.state_file, type(self.strategy))
        except StateError as e:
            self._bad_state(e)

    def _bad_state(self, e: StateError) -> None:
        """One line, no traceback, exit 2: the file must be fixed first."""
        self.ctx.log.error(f"error: {e}")
        raise SystemExit(EXIT_BAD_STATE) from None

    def _begin(self) -> None:
        """Reconciled: the strategy's on_start, then on_load with its saved state."""
        try:
            self._start_strategy()
        except StateError as e:
            self._bad_state(e)
        self.started = True
        strategy = self.strategy
        self.timer_ns = int(strategy.timer_s * 1e9)
        self.next_timer_ns = time.monotonic_ns() + self.timer_ns
        self.save_every_ns = int(strategy.save_every_s * 1e9)
        if self.save_deferred:
            self._save_state()

    def _start_strategy(self) -> None:
        """on_start, then on_load with the saved state if there is one; the file is read and
        checked first (on_start), so a save from on_start never replaces a file nobody
        read."""
        strategy = self.strategy
        saved, self.saved = self.saved, None
        self.load_pending = saved is not None
        strategy.on_start()
        if saved is None:
            return
        try:
            strategy.on_load(saved.state)
        except Exception as e:
            raise StateError(f"strategy state file {self.state_file} (saved {saved.saved_at}) "
                             f"is refused by {type(strategy).__name__}.on_load: "
                             f"{type(e).__name__}: {e}; fix it or move it away (the "
                             f"strategy's state is not reset in its place)") from None
        self.load_pending = False
        self.c_loads.add()

    def _remove_stale_temporaries(self) -> None:
        """write_atomic's temporary files of the state file that a killed process left (one
        process of this strategy runs at a time: any there now is debris)."""
        d, base = os.path.split(self.state_file)
        stale = re.compile(re.escape(f".{base}.") + r"\d+\.[0-9a-f]+\.tmp")
        try:
            names = os.listdir(d)
        except OSError:
            return
        for n in names:
            if stale.fullmatch(n):
                try:
                    os.unlink(os.path.join(d, n))
                except OSError:
                    pass

    def _save_state(self, durable: bool = False) -> bool:
        """`on_save`'s state to the state file, atomically; False if that failed (counted,
        said on stderr, never fatal). Only `durable` saves (at stop, on a signal) are fsynced:
        a killed process (kill -9) leaves what it wrote in the page cache, which only a crash
        of the OS loses (and the executor's mapped store is not synced per order either),
        while a strategy saving after each order or tick would wait milliseconds per fsync."""
        if self.load_pending:  # from on_start: after on_load, or it replaces the saved state
            self.save_deferred = True
            return True
        strategy = self.strategy
        try:
            state = strategy.on_save()
            if state is not None:
                now = datetime.datetime.now(datetime.timezone.utc).isoformat()
                data = msgspec.json.encode(StateFile(STATE_VERSION, self.name, class_path(
                    type(strategy)), now, state))
                write_atomic(self.state_file, msgspec.json.format(data, indent=1) + b"\n",
                             durable)
        except Exception as e:
            self._save_failed(e)
            return False
        self.api.state_dirty = False
        self.save_deferred = False
        self.next_save_ns = time.monotonic_ns() + self.save_every_ns
        if state is not None:
            self.c_saves.add()
        return True

    def _save_failed(self, e: Exception) -> None:
        """Counted and said; the state stays dirty, so a strategy with `save_every_s` tries
        again that much later (and the stop saves it in any case)."""
        self.c_save_errors.add()
        now = time.monotonic_ns()
        self.api.state_dirty = True
        self.next_save_ns = now + self.save_every_ns
        if now - self.save_error_line_ns < SAVE_ERROR_LINE_NS:
            return  # counted; said at most once a second
        self.save_error_line_ns = now
        self.ctx.log.warning(f"state not saved to {self.state_file}: {type(e).__name__}: {e} "
                             f"({self.c_save_errors.value} failed saves so far); trading goes on")

    def on_reload(self, cfg) -> None:
        scfg = next(s for s in cfg.strategies if s.name == self.name)
        if scfg.params != self.strategy.params:
            self.strategy.params = dict(scfg.params)
            self.strategy.on_reload()

    def flush_pending(self) -> int:
        self.outbox.flush()
        return len(self.outbox)

    def sleep_for(self) -> float | None:
        if self.reconciling:  # ticks wait: only the executor's answer (or room to ask) matters
            if not self.asked:
                return 0.001
            return 0.0 if self.reports.available() > 0 or self.control.available() > 0 else None
        if self.outbox:
            # orders wait for room, and ticks with them (do_work takes none): only room (the
            # executor rings once it has freed half the ring; it may have done so before the
            # waiting flag went up), reports and control end the park
            if not self.orders.must_wait() or self.reports.available() > 0 or \
                    self.control.available() > 0:
                return 0.0
            wait = None
        else:
            wait = super().sleep_for()
            if wait == 0.0:
                return wait
        due = []  # a parked stage wakes for its timer and for a save that is due
        if self.timer_ns and not self.stopped:
            due.append(self.next_timer_ns)
        if self.api.state_dirty and self.save_every_ns:
            due.append(self.next_save_ns)
        if not due:
            return wait  # None: until a doorbell
        return max(0.0, (min(due) - time.monotonic_ns()) / 1e9)

    # called through the api from inside the strategy's callbacks
    def _send(self, req: OrderRequest) -> None:
        action = req.action
        if action == 0:
            self.c_new_orders.add()
        elif action == 1:
            self.c_cancels_sent.add()
        else:
            self.c_replaces_sent.add()
        self.outbox.send(req)
        if self.outbox:  # queued: a process killed now loses it, and the next counts it
            self.c_orders_waiting.set(len(self.outbox))

    def _overdue(self, n: int) -> None:
        self._alarm(f"{n} orders blocked for more than {self.outbox.deadline_ns / 1e6:g} ms on a "
                    f"full orders ring")

    def _alarm(self, why: str) -> None:
        """Trip the kill switch: no new orders until RESUME. The supervisor sees the alarm
        counter and pauses trading everywhere."""
        if not self.api.paused:
            self.c_alarms.add()
            self.ctx.log.critical(f"ALARM: {why}; kill switch on")
        self.api.paused = True
        self.c_paused.set(1)

    def do_work(self) -> int:
        work = 0
        for ev in read_control(self.control):
            work += 1
            self.c_control_in.add()
            if ev.kind == ControlKind.PAUSE:
                self.api.paused = True
            elif ev.kind == ControlKind.RESUME:
                self.api.paused = False
            elif ev.kind == ControlKind.RELOAD:
                self.reload()
            elif ev.kind == ControlKind.COMMAND:
                self._command(ev.arg)
            self.c_paused.set(int(self.api.paused))
        if self.reconciling:
            return work + self._await_snapshot()
        work += self._take_reports()
        if self.timer_ns and not self.stopped:
            now = time.monotonic_ns()
            if now >= self.next_timer_ns:
                self.next_timer_ns = now + self.timer_ns
                self.strategy.on_timer()
                work += 1
        if self.api.state_dirty and self.save_every_ns and \
                time.monotonic_ns() >= self.next_save_ns:
            self._save_state()
            work += 1
        if self.outbox:
            work += self.outbox.flush()
            self.c_orders_waiting.set(len(self.outbox))
            if self.outbox:
                return work
        if self.ticks_ended:
            if not self.orders_ended and end_of_stream(self.orders):
                self.orders_ended = True
                work += 1
            return work
        return work + self._take_ticks()

    def _publish_positions(self, instruments) -> None:
        """The gauges of these instruments' positions (status, report, /metrics)."""
        for i in instruments:
            p = self.api.positions[i]
            g = self.gauges[i]
            g[0].set(p.qty)
            g[1].set(fixed(p.realized, 100))
            g[2].set(fixed(p.fees, 100))
            g[3].set(fixed(p.tax, 100))

    def _await_snapshot(self) -> int:
        """At start: ask the executor for its state (RECONCILE, in order behind whatever a
        previous process sent), take positions and working orders from its answer; the
        reports queued before the answer have their effect in it, so they are not applied to
        the book, but those a previous process had not handled reach the strategy's callbacks
        after the answer (`_late_reports`): its on_fill and on_order hear of every order."""
        if not self.asked:
            self.asked = offer_control(self.orders, ControlKind.RECONCILE)
            return int(self.asked)
        r = self.reports
        evs = r.read(self.decode_report, 1024)
        if not evs:
            return 0
        n = 0
        pos = r.position
        for ev in evs:
            n += 1
            if ev.__class__ is Control:
                if ev.kind == ControlKind.RECONCILED:
                    if self._load_snapshot(ev.arg):
                        break
                    continue
                if ev.kind == ControlKind.SHUTDOWN:
                    self.done = True
                    break
            elif pos + n <= self.report_skip_to:
                self.c_reports_skipped.add()  # handled (or begun) by the previous process
            else:
                self.late_reports.append(ev)
        r.commit(n)
        if not self.reconciling:
            self._begin()
            self._late_reports()
        return n

    def _late_reports(self) -> None:
        """The reports before the executor's answer that no process of this strategy has
        handled: their effect is in the book already; the strategy's callbacks hear of them
        now, with the order as the book has it (or, one that has ended since, as the report
        says it ended)."""
        evs, self.late_reports = self.late_reports, []
        if self.stopped or not self.started:
            return
        strategy, book = self.strategy, self.api.book
        for ev in evs:
            self.c_reports_after_restart.add()
            o = book.get(ev.order_id)
            if o is None or o.state >= _FILLED:
                o = _ended_view(ev, self.index)
            if ev.kind == _FILL:
                strategy.on_fill(ev)
            strategy.on_order(o)

    def _load_snapshot(self, number: int) -> bool:
        """Adopt snapshot `number`; False if the file already holds a later one: this was the
        answer to a RECONCILE of a process that died before reading it (found by the chaos
        run: the next processes took it for theirs and crashed for ever). The answer to ours
        comes later; the reports between the two have their effect in it."""
        ctx = self.ctx
        path = snapshot_path(ctx.runtime_dir, ctx.instance, self.name)
        snap = msgspec.json.decode(read_private(path))
        if snap["n"] > number:
            self.c_stale_answers.add()
            return False
        if snap["n"] != number:
            raise RuntimeError(f"{path} is snapshot {snap['n']}, expected {number}")
        syms = self.ctx.cfg.symbols()
        self._adopt({syms.index(sym): v for sym, v in snap["positions"].items()},
                    snap["orders"])
        self.reconciling = False
        if self.restarted:
            self.c_reconciled.add()
        return True

    def _skip_replayed(self, evs, pos: int) -> int:
        """The first ticks after a restart that the previous process already began: skipped
        (committed, counted in `restart_skipped`, and in ticks_in: they were handled once,
        by the previous process). Their prices still update the last prices."""
        n = min(self.skip_to - pos, len(evs))
        last_price = self.api.last_price
        seen = self.seen_seq
        for ev in evs[:n]:
            last_price[ev.instrument] = ev.price
            seen[ev.instrument] = ev.seq
        self.expect_seq = evs[n - 1].seq + 1
        self.ticks.commit(n)
        self.c_restart_skipped.add(n)
        self._count_ticks(pos + n)
        return n

    def _count_ticks(self, position: int) -> None:
        """ticks_in, with the ticks themselves: every ring position up to `position` was a
        tick handled once, but the re-deliveries skipped."""
        self.c_ticks_in.set(position - self.c_replays_suppressed.value)

    def _take_reports(self) -> int:
        r = self.reports
        evs = r.read(self.decode_report, 1024)
        if not evs:
            return 0
        api = self.api
        apply = api.apply_report
        strategy = self.strategy
        controls = 0
        filled_in = set()
        counted = self.c_by_kind
        started_q, started_i = self._started_q, self._report_i
        pos = r.position + 1
        for ev in evs:
            started_q[started_i] = pos  # before the callbacks: a restart does not repeat them
            pos += 1
            if ev.__class__ is Control:
                controls += 1
                if ev.kind == ControlKind.SHUTDOWN:
                    self.done = True
                continue
            kind = ev.kind
            o = apply(ev)
            if o is None:
                self.c_illegal_transitions.add()
                continue
            counted[kind].add()
            if kind == _FILL:
                if o.state == _FILLED:
                    self.c_filled.add()
                filled_in.add(o.instrument)
            if not self.stopped:
                if kind == _FILL:
                    strategy.on_fill(ev)
                strategy.on_order(o)
        r.commit(len(evs))
        self.c_reports_in.add(len(evs) - controls)
        self._publish_positions(filled_in)  # once per batch
        if api.mismatches != self.c_report_mismatches.value:
            self.c_report_mismatches.set(api.mismatches)
        self.c_working_orders.set(len(api.working))
        book = api.book
        if len(book.orders) - book.n_working > FORGET_ABOVE:
            book.forget_terminal(KEEP_ENDED)
        if self.outbox:
            self.outbox.flush()
        return len(evs)

    def _take_ticks(self) -> int:
        r = self.ticks
        avail = r.available()
        if avail <= 0:
            return 0
        # on_tick: runs grow with the ring's occupancy (reports get their turn between them);
        # on_ticks: as many as there are, up to `batch` (the longer the run, the cheaper)
        limit = self.batch_min + (self.batch_span if self.batched else
                                  self.batch_span * avail // self.capacity)
        pos = r.position
        n = avail if avail < limit else limit
        # a run of ticks in the wire form is viewed as columns (no decoding); a few events,
        # or anything else (the end of the stream, a tick encoded otherwise), are decoded
        # slot by slot (numpy's fixed costs would dominate)
        if n <= SMALL_RUN and not self.batched:
            k, cols = n, None
        else:
            k, cols = tick_columns(r.ring, pos, n)
        if cols is None:
            evs = r.read(self.decode_tick, k)
            if self.batched and self.skip_to <= pos and evs[0].__class__ is Tick:
                # ticks encoded otherwise are on_ticks' too (on_tick is not the strategy's
                # code): the leading ticks as columns; the end of the stream after them is
                # the next pass's
                m = 0
                while m < len(evs) and evs[m].__class__ is Tick:
                    m += 1
                return self._take_columns(TickColumns.of(evs[:m]), pos)
        elif self.skip_to <= pos:
            return self._take_columns(cols, pos) if self.batched else self._take_run(cols, pos)
        else:
            evs = cols.ticks()
        if self.skip_to > pos:
            return self._skip_replayed(evs, pos)
        api = self.api
        on_tick = self.strategy.on_tick
        last_price = api.last_price
        expect = self.expect_seq
        check = self.check_seq
        gaps = 0
        taken = 0
        replays = 0
        started_q, started_i = self._started_q, self._started_i
        seen = self.seen_seq
        for ev in evs:
            if ev.__class__ is not Tick:  # the end of the stream: the dispatcher passes no other
                taken += 1
                self.ticks_ended = True
                break
            i = ev.instrument
            if ev.seq <= seen[i]:  # a tick routed again (a restarted dispatcher): not twice
                replays += 1
                taken += 1
                continue
            seen[i] = ev.seq
            if check:
                if ev.seq != expect and expect >= 0:
                    gaps += 1
                expect = ev.seq + 1
            started_q[started_i] = pos + taken + 1  # before on_tick: a restart skips it
            api.tick = ev
            last_price[i] = ev.price
            on_tick(ev)
            taken += 1
        api.tick = None
        return self._ticks_taken(pos, taken, taken - (1 if self.ticks_ended else 0), replays,
                                 gaps, expect, evs[0].seq)

    def _screen(self, cols: TickColumns) -> "_Screened":
        """The book-keeping of `on_tick`'s loop, done column-wise for a run: which ticks are
        new (not routed before), sequence gaps, the next expected seq, and where each
        instrument's last tick is; `seen_seq` is brought up to those last ticks."""
        seq = cols.seq
        step = np.diff(seq)
        seen = self.seen_seq
        fresh = None  # the common case, every tick new: one comparison and one numpy call
        if not (seq[0] > max(seen) and bool((step > 0).all())):
            fresh = self._fresh(seq, cols.instrument)
        replays = 0
        if fresh is not None:
            replays = len(cols) - int(np.count_nonzero(fresh))
            cols = cols.select(fresh)
            seq = cols.seq
            step = np.diff(seq)
        expect = self.expect_seq
        gaps = 0
        lasts = []
        if len(cols):
            if self.check_seq:
                gaps = int(0 <= expect != seq[0]) + int(np.count_nonzero(step != 1))
                expect = int(seq[-1]) + 1
            last = self._last_at
            last.fill(-1)
            np.maximum.at(last, cols.instrument, np.arange(len(cols)))
            lasts = [(i, int(last[i])) for i in np.flatnonzero(last >= 0).tolist()]
            for i, j in lasts:
                seen[i] = int(seq[j])
        return _Screened(cols, fresh, replays, gaps, expect, lasts)

    def _take_run(self, cols: TickColumns, pos: int) -> int:
        """A run of ticks to `on_tick`, one at a time: replays and gaps screened column-wise
        first, so the loop does only what must be done per tick (its `tick_started` mark
        before the call, and the last price, which the strategy may read for any
        instrument: never ahead of the tick it is handed)."""
        n = len(cols)
        first_seq = int(cols.seq[0])
        sc = self._screen(cols)
        # each tick's tick_started mark: its ring position + 1 (the replays get none)
        marks = (range(pos + 1, pos + n + 1) if sc.fresh is None else
                 (np.flatnonzero(sc.fresh) + (pos + 1)).tolist())
        api = self.api
        on_tick = self.strategy.on_tick
        last_price = api.last_price
        started_q, started_i = self._started_q, self._started_i
        try:
            for ev, mark in zip(sc.cols.ticks(), marks):
                started_q[started_i] = mark  # before on_tick: a restart skips it
                api.tick = ev
                last_price[ev.instrument] = ev.price
                on_tick(ev)
        finally:
            api.tick = None
        return self._ticks_taken(pos, n, n, sc.replays, sc.gaps, sc.expect, first_seq)

    def _take_columns(self, cols: TickColumns, pos: int) -> int:
        """A run of ticks to a strategy with `on_ticks`: one call for the run, after the same
        book-keeping as `on_tick`'s loop done column-wise (`_screen`, and the last prices).
        `tick_started` covers the whole run before the call: a restart skips it. Orders sent
        from the call carry the run's last tick's seq (the executor feeds its market data up
        to it first) and its first tick's t_ingest (tick-to-trade counts the wait of the
        run's oldest tick)."""
        n = len(cols)
        first_seq = int(cols.seq[0])
        sc = self._screen(cols)
        cols = sc.cols
        if len(cols):
            seq, inst, price = cols.seq, cols.instrument, cols.price
            last_price = self.api.last_price
            for i, j in sc.lasts:
                last_price[i] = int(price[j])
            self._started_q[self._started_i] = pos + n  # before on_ticks: a restart skips them
            api = self.api
            api.tick = Tick(int(seq[-1]), int(cols.t_ingest.min()), int(inst[-1]),
                            int(price[-1]), int(cols.qty[-1]), int(cols.t_exchange[-1]))
            try:
                self.strategy.on_ticks(cols)
            finally:
                api.tick = None
        return self._ticks_taken(pos, n, n, sc.replays, sc.gaps, sc.expect, first_seq)

    def _fresh(self, seq: np.ndarray, inst: np.ndarray) -> np.ndarray:
        """Mask of the ticks not routed before (see `on_tick`'s loop): per instrument, a
        tick is new if its seq is above every earlier one's, this run's and `seen_seq`."""
        seen = self.seen_seq
        keep = np.empty(len(seq), dtype=bool)
        for i in np.unique(inst).tolist():
            at = np.flatnonzero(inst == i)
            s = seq[at]
            before = np.maximum.accumulate(np.concatenate(([seen[i]], s[:-1])))
            keep[at] = s > before
        return keep

    def _ticks_taken(self, pos: int, taken: int, n_ticks: int, replays: int, gaps: int,
                     expect: int, first_seq: int) -> int:
        """After a pass over `taken` ring events (`n_ticks` of them ticks, the first's seq
        `first_seq`): latency, counters, commit; the end of the stream if it came."""
        r = self.ticks
        now = time.monotonic_ns()
        if n_ticks:
            r.record_ages(self.latency, now, n_ticks)
            if self.c_first_tick_ns.value == 0:
                self.c_first_tick_ns.set(now)
                self.c_first_seq.set(first_seq)  # a tick: a stream never starts with SHUTDOWN
            self.c_last_tick_ns.set(now)
            self.c_last_seq.set(expect - 1 if self.check_seq else 0)
            if replays:
                self.c_replays_suppressed.add(replays)
            self._count_ticks(pos + n_ticks)
            if gaps:
                self.c_seq_gaps.add(gaps)
        self.expect_seq = expect
        r.commit(taken)
        if self.ticks_ended:
            self.strategy.on_stop()
            self.stopped = True
            self.api.closed = True
            self._save_state(durable=True)
        if self.outbox:
            self.outbox.flush()
            self.c_orders_waiting.set(len(self.outbox))
        return taken
