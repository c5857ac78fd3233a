"""Producer: feed adapter -> validated ticks -> the `ticks.in` ring.

Validates a batch with numpy (a bad tick is rejected and counted by reason, never passed
on), encodes it column-wise (each tick in the fixed-width wire form of hftd.events), writes
it with one assignment and publishes the cursor once. The ring's flow policy decides what
happens when it is backpressured (`hftd.flow`): with `block` the producer takes from the
feed only what fits; with `conflate` or `drop` it keeps taking (live data does not wait) and
conflates or drops what does not fit, counting every tick: received = published + conflated
+ dropped + rejected (+ conflated ticks still waiting).

It takes nothing from the feed until the supervisor's START control event says the whole
pipeline is up (ticks taken earlier would wait for agents still starting). On a SHUTDOWN
control event (the supervisor stopping), or when the feed is exhausted, it publishes what
it holds and ends its stream with a SHUTDOWN marker, which drains the pipeline behind it.

With `[producer] record = DIR`, each batch is also appended to a recording
(hftd.feeds.recording) before its publish; a restarted producer first cuts from the
recording what its predecessor wrote and did not publish, so each published tick is
recorded exactly once.

A file feed (`taifex`, `recording`) has values of its own (`feed.*`: rows or ticks by
outcome, where the replay is, and for taifex per instrument ticks, lots, first and last
price), written after each poll that took ticks or
opened a file; they are a function of the feed's position, so `_resume` re-derives them.

The live feed (`pfcf`, hftd.feeds.pfcf) logs in to PFCF when the producer starts (a failure
is one line naming the URL, exit status 2) and rings the producer's doorbell when quotes
arrive. Each pass the producer takes its connection events (counted, logged), the ticks lost
to its full queue (received and dropped, under any ring policy: there is nothing to block at
the source of live data) and, every UPKEEP_NS, its silence alarm (`alarms`: the supervisor
pauses trading). Its `feed.*` values are counters added as they grow, so a restarted
producer (which logs in again and continues: there is no position to resume) keeps them.
"""

from __future__ import annotations

import time

import numpy as np

from .. import feeds
from ..feeds import column
from ..agent import Agent
from ..events import ControlKind, encode_tick, encode_ticks
from ..flow import BLOCK, CONFLATE, Flow
from .. import stats as stats_mod
from ..stats import COUNTER, GAUGE, Schema
from .common import end_of_stream, read_control

REJECT_REASONS = ("bad_price", "bad_qty", "unknown_instrument")
SMALL_BATCH = 8  # up to this many ticks are checked and written one by one
UPKEEP_NS = 200_000_000  # a live feed's silence check and gauges, at most this often
LOST_LINE_NS = 10_000_000_000  # a live feed's "ticks lost" line, at most this often
PACE_QUANTUM_S = 50e-6
# a batch's checkpoint, written before its publish: the feed position and counters before
# the batch and once it is published, and the ring cursor it publishes up to (in two slots,
# `ck0.*` and `ck1.*`, `ck.slot` saying which stands)
_CHECKPOINT = ("fed_before", "fed_after", "received_before", "received_after",
               "published_before", "published_after", "cursor_after")


# [producer] record = DIR: the run's id (names its files), records cut back at restarts
# (written by a killed producer, never published), the trading day being written
_RECORD_VALUES = (("record.run", GAUGE), ("record.cut", COUNTER), ("record.day", GAUGE))


def _run_id(block) -> int:
    """The recording run's id: the wall time of the run's first producer start (kept in the
    stats block, so a restarted producer writes to the same files)."""
    run = block.value("record.run")
    if not run.value:
        run.set(time.time_ns())
    return run.value


def _recording_values() -> tuple:
    """The recording feed's values: its counts and where the replay is."""
    from ..feeds.recording import COUNTS, PROGRESS

    return (*((f"feed.{k}", COUNTER) for k in COUNTS),
            *((f"feed.{k}", GAUGE) for k in PROGRESS))


def _taifex_values(cfg) -> tuple:
    """The taifex feed's values: its row counts, where the replay is, and per instrument."""
    from ..feeds.taifex import COUNTS, PER_INSTRUMENT, PROGRESS

    return (*((f"feed.{k}", COUNTER) for k in COUNTS),
            *((f"feed.{k}", GAUGE) for k in PROGRESS),
            *((f"feed.{k}.{i.symbol}", COUNTER if k in ("ticks", "lots") else GAUGE)
              for i in cfg.instruments if i.taifex for k in PER_INSTRUMENT))


def _pfcf_values(cfg) -> tuple:
    """The live PFCF feed's values: its counters, gauges and per instrument figures."""
    from ..feeds.pfcf import COUNTS, GAUGES, PER_COUNTERS, PER_INSTRUMENT

    return (*((f"feed.{k}", COUNTER) for k in COUNTS),
            *((f"feed.{k}", GAUGE) for k in GAUGES),
            *((f"feed.{k}.{i.symbol}", COUNTER if k in PER_COUNTERS else GAUGE)
              for i in cfg.instruments if i.pfcf for k in PER_INSTRUMENT))


class Producer(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        # alarms: a live feed's (a silent feed pauses trading, hftd.supervisor)
        values = (("received", COUNTER), ("published", COUNTER), ("conflated", COUNTER),
                  ("dropped", COUNTER), ("rejected", COUNTER), ("alarms", COUNTER),
                  *((f"rejected_{r}", COUNTER) for r in REJECT_REASONS),
                  ("conflation_pending", GAUGE), ("first_ingest_ns", GAUGE),
                  ("last_ingest_ns", GAUGE), ("resumed_at", GAUGE),
                  *((f"ck{slot}.{k}", GAUGE) for slot in (0, 1) for k in _CHECKPOINT),
                  ("ck.slot", GAUGE))
        if cfg.producer.feed == "taifex":
            values += _taifex_values(cfg) + (("feed.files_id", GAUGE),)
        elif cfg.producer.feed == "recording":
            values += _recording_values() + (("feed.files_id", GAUGE),)
        elif cfg.producer.feed == "pfcf":
            values += _pfcf_values(cfg)
        if cfg.producer.record:
            values += _RECORD_VALUES
        return Schema(values=values, histograms=("stage",))

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.producer")
        self.out = ctx.writer("ticks.in", "dispatcher")
        rc = cfg.rings.ticks
        self.flow = Flow(self.out, cfg.ticks_policy(), rc.high_watermark, rc.low_watermark)
        self.feed = self._make_feed(ctx)
        self.n_instruments = len(cfg.instruments)
        self.batch = cfg.producer.batch
        self.encode = encode_tick  # the fixed-width wire form (hftd.events)
        s = ctx.stats
        self.bind_values()
        self.rejected_by = [s.value(f"rejected_{r}") for r in REJECT_REASONS]
        self.latency = ctx.histogram("stage")
        self.ending = False
        self.started = False
        s_q, idx = s.q_values, s.index
        # two checkpoint slots: one is written while the other stands (`_checkpoint`)
        self._ck2 = [[idx[f"ck{slot}.{k}"] for k in _CHECKPOINT] for slot in (0, 1)]
        self._ck_slot = idx["ck.slot"]
        self._q = s_q
        self._bind_feed(cfg)
        self.live = self._bind_live(cfg)
        restarted = bool(s.q_header[stats_mod.H_RESTARTS])
        self._pin_files(ctx, restarted)
        self.recorder = self._make_recorder(ctx, restarted)
        if restarted:
            self._resume()

    def _pin_files(self, ctx, restarted: bool) -> None:
        """A file feed's files as the run's first producer found them (names, sizes, times):
        a restarted producer continues the replay by its position in them, so if they changed
        meanwhile it would replay ticks twice or skip a day (found by a hostile review). It
        refuses instead, in one line: the run ends (the producer keeps failing)."""
        files = getattr(self.feed, "files", None)
        if not isinstance(files, list):
            return
        pinned = self.ctx.stats.value("feed.files_id")
        now = feeds.files_id(files)
        if not restarted or not pinned.value:
            pinned.set(now)
        elif pinned.value != now:
            ctx.log.error(f"error: the feed's files ({ctx.cfg.producer.feed} path) changed "
                          f"since this replay started (a file added, removed or rewritten): it "
                          f"cannot continue where it stopped without replaying ticks twice or "
                          f"skipping some; start the replay again")
            raise SystemExit(2)

    def _make_feed(self, ctx):
        if ctx.cfg.producer.feed != "pfcf":
            return feeds.make(ctx.cfg, **self._feed_args(ctx))
        from ..pfcf import PfcfError

        try:
            return feeds.make(ctx.cfg, **self._feed_args(ctx))
        except PfcfError as e:  # its message names the URL, never a secret
            ctx.log.error(f"error: {e}")
            raise SystemExit(2) from None

    # --- [producer] record = DIR ----------------------------------------------------------
    def _make_recorder(self, ctx, restarted: bool):
        """The session recorder (hftd.feeds.recording), or None. A restarted producer keeps
        the run's id and first cuts what its predecessor wrote and did not publish."""
        cfg = ctx.cfg
        if not cfg.producer.record:
            return None
        from ..feeds.recording import Recorder

        s = ctx.stats
        rec = Recorder(cfg.producer.record, [i.symbol for i in cfg.instruments], ctx.instance,
                       _run_id(s), self.out.position, restarted,
                       [i.tick_size for i in cfg.instruments])
        if rec.cut:
            s.value("record.cut").add(rec.cut)
        self._rec_day = s.value("record.day")
        return rec

    # --- a file feed's counts and progress (feed = "taifex") ----------------------------
    def _feed_args(self, ctx) -> dict:
        # a feed's lines are problems (a file skipped, rows rejected, a failed subscription)
        # but for the live feed's few lifecycle lines, which it says through `info`
        if ctx.cfg.producer.feed == "pfcf":
            return {"log": ctx.log.warning, "info": ctx.log.info, "wake": ctx.doorbell.release}
        if ctx.cfg.producer.feed not in ("taifex", "recording"):
            return {}
        block = ctx.stats
        args = {"log": ctx.log.warning, "beat": lambda: block.heartbeat(time.monotonic_ns())}
        if ctx.cfg.producer.feed == "recording" and ctx.cfg.producer.record:
            # never replay the files this run is recording (same directory, or a glob)
            args["skip_run"] = _run_id(block)
        return args

    def _bind_feed(self, cfg) -> None:
        """The feed's own values, written after each poll that took ticks or opened a file."""
        self._feed_file = None
        if cfg.producer.feed == "recording":
            from ..feeds.recording import COUNTS, PROGRESS

            PER_INSTRUMENT = ()
        elif cfg.producer.feed == "taifex":
            from ..feeds.taifex import COUNTS, PER_INSTRUMENT, PROGRESS
        else:
            self.feed_stats = None
            return

        s = self.ctx.stats
        self._f_counts = [(k, s.value(f"feed.{k}")) for k in COUNTS]
        self._f_progress = [(k, s.value(f"feed.{k}")) for k in PROGRESS]
        self._f_inst = {i: [s.value(f"feed.{k}.{ins.symbol}") for k in PER_INSTRUMENT]
                        for i, ins in enumerate(cfg.instruments) if ins.taifex and PER_INSTRUMENT}
        self.feed_stats = self._feed_stats

    def _feed_stats(self) -> None:
        f = self.feed
        self._feed_file = f.file_index
        counts = f.counts
        for k, v in self._f_counts:
            v.set(counts[k])
        prog = f.progress()
        for k, v in self._f_progress:
            v.set(prog[k])
        inst = self._f_inst
        for i, figures in f.instrument_figures().items():
            for v, x in zip(inst[i], figures):
                v.set(x)

    # --- the live feed (feed = "pfcf") -----------------------------------------------------
    def _bind_live(self, cfg) -> bool:
        """The live feed's values; its per-contract baselines back from the stats block (a
        restarted producer finds a repeat or a gap across the restart)."""
        if cfg.producer.feed != "pfcf":
            return False
        from ..feeds.pfcf import COUNTS, GAUGES, PER_COUNTERS, PER_INSTRUMENT

        s = self.ctx.stats
        f = self.feed
        self._l_counts = [(k, s.value(f"feed.{k}")) for k in COUNTS]
        self._l_gauges = [(k, s.value(f"feed.{k}")) for k in GAUGES]
        self._l_seen = dict.fromkeys(COUNTS, 0)  # what this process added so far
        self._l_inst = {}
        for code, c in f.contracts.items():
            sym = cfg.instruments[c.inst].symbol
            vals = [s.value(f"feed.{k}.{sym}") for k in PER_INSTRUMENT]
            self._l_inst[c.inst] = (vals, [k in PER_COUNTERS for k in PER_INSTRUMENT],
                                    [0] * len(PER_INSTRUMENT))
            f.restore(code, s.value(f"feed.total.{sym}").value,
                      s.value(f"feed.time.{sym}").value)
        self._l_next = 0
        self._l_lost_said = 0  # monotonic ns of the last "queue full" line
        self._l_lost_unsaid = 0
        return True

    def _live_upkeep(self) -> None:
        """Between batches: connection events, ticks lost to a full queue, and every
        UPKEEP_NS the silence alarm and the feed's values."""
        f = self.feed
        changed = False
        if f.events:
            for e in f.take_events():
                what = {"C": "connected", "D": "DISCONNECTED"}.get(e[0])
                if what == "connected":
                    self.ctx.log.info(f"pfcf feed: quote path {what}")
                else:
                    self.ctx.log.warning(f"pfcf feed: quote path {what}" if what else
                                         f"pfcf feed: quote path error: "
                                         f"{f.redact(e[1]) or '(no text)'}")
            changed = True
        lost = f.take_overflow()
        if lost:
            self._lost(lost)
            changed = True
        now = time.monotonic_ns()
        if now >= self._l_next or changed:
            self._l_next = now + UPKEEP_NS
            f.check(now)
            for why in f.alarms():
                self._alarm(why)
            self._live_stats()
            if self._l_lost_unsaid and now - self._l_lost_said >= LOST_LINE_NS:
                self._say_lost(now)

    def _lost(self, n: int) -> None:
        """`n` ticks found the feed's queue full: received and dropped (nothing can wait at
        a live source, whatever the ring's policy), in the checkpoint at once."""
        self.c_received.add(n)
        self.c_dropped.add(n)
        self._checkpoint(0, self.out)
        self._l_lost_unsaid += n
        now = time.monotonic_ns()
        if now - self._l_lost_said >= LOST_LINE_NS:
            self._say_lost(now)

    def _say_lost(self, now: int) -> None:
        n, self._l_lost_unsaid = self._l_lost_unsaid, 0
        self._l_lost_said = now
        self.ctx.log.warning(f"pfcf feed: {n} ticks lost: the quote queue was full ([pfcf] "
                             f"queue = {self.ctx.cfg.pfcf.queue} messages; ring policy "
                             f"{self.flow.policy}: a live feed cannot wait), counted as dropped")

    def _live_stats(self) -> None:
        f = self.feed
        counts, seen = f.counts, self._l_seen
        for k, v in self._l_counts:
            d = counts[k] - seen[k]
            if d:
                v.add(d)
                seen[k] = counts[k]
        g = f.gauges()
        for k, v in self._l_gauges:
            v.set(g[k])
        for i, figures in f.instrument_figures().items():
            vals, is_counter, had = self._l_inst[i]
            for j, (v, x) in enumerate(zip(vals, figures)):
                if is_counter[j]:
                    if x != had[j]:
                        v.add(x - had[j])
                        had[j] = x
                elif x:
                    v.set(x)

    def _alarm(self, why: str) -> None:
        """A live feed's alarm: counted (the supervisor pauses trading everywhere)."""
        self.c_alarms.add()
        self.ctx.log.critical(f"ALARM: {why}; kill switch on")

    def on_close(self) -> None:
        if self.live:
            self._live_upkeep()
            self.feed.close()

    def _resume(self) -> None:
        """A restarted producer continues the feed where the previous one stopped: the
        cursor of ticks.in says whether its last batch was published (the publish is one
        store of the cursor), and the checkpoint gives the feed position and counters either
        way. So no tick is published twice or skipped, and the counters stay exact."""
        q = self._q
        ck = self._ck2[q[self._ck_slot]]
        landed = self.out.position == q[ck[6]]
        fed, received, published = (q[ck[1]], q[ck[3]], q[ck[5]]) if landed else \
            (q[ck[0]], q[ck[2]], q[ck[4]])
        self.c_received.set(received)
        self.c_published.set(published)
        if fed and hasattr(self.feed, "advance"):
            self.feed.advance(fed)
        self.c_resumed_at.set(fed)
        if self.feed_stats:
            self.feed_stats()

    def flush_pending(self) -> int:
        if self.flow.pending:
            self._flush_conflated()
        return len(self.flow.pending or ())

    def sleep_for(self) -> float | None:
        if self.control.available() > 0 or self.ending or self.feed.exhausted:
            return 0.0
        if not self.started:
            return None  # until the supervisor rings
        if self.flow.pending and not self.flow.on:
            return 0.0
        if self.flow.policy == BLOCK and self.out.must_wait():
            return None  # until the dispatcher has freed half the ring and rings
        wait = self.feed.next_due_s(time.monotonic_ns())
        # a paced feed is polled at most every PACE_QUANTUM_S while nothing is due: ticks that
        # fall due meanwhile are taken together (each stamped when taken, so latency is still
        # measured from ingest), instead of the producer spinning a core between ticks
        return max(wait, PACE_QUANTUM_S) if wait > 0 else 0.0

    def do_work(self) -> int:
        for ev in read_control(self.control):
            if ev.kind == ControlKind.SHUTDOWN:
                self.ending = True
            elif ev.kind == ControlKind.START:
                self.started = True
            elif ev.kind == ControlKind.RELOAD:
                self.reload()
        if not (self.started or self.ending):
            return 0
        if self.live:
            self._live_upkeep()
        flow = self.flow
        if self.ending or self.feed.exhausted:
            if flow.pending and self._flush_conflated() and flow.pending:
                return 1
            if not flow.pending and end_of_stream(self.out):
                self.done = True
            return 1
        backpressured = flow.backpressured()
        if flow.policy == BLOCK:
            room = self.out.claim(self.batch)
            if room == 0 or (room < self.batch and self.out.must_wait()):
                return 0  # parks until the dispatcher has freed half the ring: no trickle
            return self._take(room, room)
        work = 0
        if flow.pending and not backpressured:
            work = self._flush_conflated()
        # live data does not wait: take what is due; what does not fit is conflated/dropped
        room = 0 if (backpressured or flow.pending) else self.out.claim(self.batch)
        return work + self._take(self.batch, room)

    def _take(self, wanted: int, room: int) -> int:
        """Poll up to `wanted` ticks, publish up to `room` of the good ones, divert the rest."""
        fed_before = getattr(self.feed, "position", 0)
        received_before = self.c_received.value
        published_before = self.c_published.value
        b = self.feed.poll(wanted, time.monotonic_ns())
        if self.feed_stats and (b is not None or self.feed.file_index != self._feed_file):
            self.feed_stats()
        if b is None:
            return 0
        t_ingest = time.monotonic_ns()  # the ticks exist now: ingest time
        n = len(b)
        self.c_received.add(n)
        if not self.c_first_ingest_ns.value:
            self.c_first_ingest_ns.set(t_ingest)
        w = self.out
        rec = self.recorder
        if n > SMALL_BATCH:
            ok = self._validate(b)
            if ok is not None:
                b = b.select(ok)
            if len(b) > room:
                self._divert(b.select(slice(room, None)), t_ingest)
                b = b.select(slice(0, room))
            seq0 = w.position
            self._put_batch(b, t_ingest)
            if rec is not None:  # written before the publish (module docstring of recording)
                rec.write(seq0, b.instrument, b.price, b.qty, b.t_exchange, t_ingest,
                          time.time_ns())
                self._recorded()
        else:
            self._put_each(b, t_ingest, room)
        self._checkpoint(n, w, fed_before, received_before, published_before)
        published = w.publish()
        self.c_published.add(published)
        self.c_last_ingest_ns.set(t_ingest)
        if published:
            self.latency.record_n(time.monotonic_ns() - t_ingest, published)
        return n

    def _checkpoint(self, n: int, w, fed_before: int | None = None,
                    received_before: int | None = None,
                    published_before: int | None = None) -> None:
        """Before a publish: the state before this batch and once it lands (`_resume`),
        written whole into the slot that does not stand, which then stands (one store): a
        kill between the stores leaves the previous checkpoint standing, whole (found by the
        chaos test: a kill between the received-after and the published-after stores of a
        single checkpoint resumed with received 4 above published)."""
        q = self._q
        slot = 1 - q[self._ck_slot]
        ck = self._ck2[slot]
        fed = getattr(self.feed, "position", 0)
        received = self.c_received.value
        published = self.c_published.value
        q[ck[0]] = fed if fed_before is None else fed_before
        q[ck[1]] = fed
        q[ck[2]] = received if received_before is None else received_before
        q[ck[3]] = received
        q[ck[4]] = published if published_before is None else published_before
        q[ck[5]] = published + w.position - w.published
        q[ck[6]] = w.position  # the cursor once published
        q[self._ck_slot] = slot

    def _recorded(self) -> None:
        """A batch went to the recording (before its publish, stamped with the wall clock):
        the day of its file, for status."""
        if self.recorder.day != self._rec_day.value:
            self._rec_day.set(self.recorder.day)

    def _divert(self, b, t_ingest: int) -> None:
        """Ticks that do not fit: conflate (newest per instrument) or drop, counted."""
        if self.flow.policy == CONFLATE:
            add = self.flow.pending.add
            replaced = 0
            for i, p, q, x in zip(column(b.instrument), column(b.price), column(b.qty),
                                  column(b.t_exchange)):
                replaced += add(i, (t_ingest, p, q, x))
            self.c_conflated.add(replaced)
            self.c_conflation_pending.set(len(self.flow.pending))
        else:
            self.c_dropped.add(len(b))

    def _flush_conflated(self) -> int:
        w = self.out
        encode = self.encode

        rows = [] if self.recorder is not None else None

        def emit(i, item):
            t, p, q, x = item
            if rows is not None:
                rows.append((w.position, t, i, p, q, x))
            w.put(i, t, encode(w.position, t, i, p, q, x))

        n = self.flow.pending.flush(w.claim(len(self.flow.pending)), emit)
        if rows:
            self.recorder.write_rows(rows, time.time_ns())
            self._recorded()
        if n:
            self._checkpoint(0, w)
            self.c_published.add(w.publish())
            self.c_conflation_pending.set(len(self.flow.pending))
        return n

    def _put_batch(self, b, t_ingest: int) -> None:
        """Encode the (validated) ticks column-wise in the fixed-width wire form
        (hftd.events.encode_ticks) and write them with one assignment."""
        rows = encode_ticks(self.out.position, t_ingest, b.instrument, b.price, b.qty,
                            b.t_exchange)
        self.out.put_rows(b.instrument, t_ingest, rows)

    def _put_each(self, b, t_ingest: int, room: int) -> None:
        """A few ticks: the same checks and writes one tick at a time, without numpy."""
        w = self.out
        encode = self.encode
        n_instr = self.n_instruments
        rows = [] if self.recorder is not None else None
        for k, (i, p, q, x) in enumerate(zip(column(b.instrument), column(b.price),
                                             column(b.qty), column(b.t_exchange))):
            reason = 0 if p > 0 else 1
            if not reason and q < 0:
                reason = 2
            if not reason and not 0 <= i < n_instr:
                reason = 3
            if reason:
                self.rejected_by[reason - 1].add()
                self.c_rejected.add()
                continue
            if room <= 0:
                self._divert(b.select(slice(k, k + 1)), t_ingest)
                continue
            if rows is not None:
                rows.append((w.position, t_ingest, i, p, q, x))
            w.put(i, t_ingest, encode(w.position, t_ingest, i, p, q, x))
            room -= 1
        if rows:
            self.recorder.write_rows(rows, time.time_ns())
            self._recorded()

    def _validate(self, b) -> np.ndarray | None:
        """Mask of good ticks, or None when all are good (the common case, one check)."""
        bad_price = b.price <= 0
        bad_qty = b.qty < 0
        bad_inst = (b.instrument < 0) | (b.instrument >= self.n_instruments)
        bad = bad_price | bad_qty | bad_inst
        if not bad.any():
            return None
        # count each bad tick once, under its first failing check
        for counter, mask in zip(self.rejected_by, (bad_price, bad_qty & ~bad_price,
                                                    bad_inst & ~bad_price & ~bad_qty)):
            counter.add(int(mask.sum()))
        self.c_rejected.add(int(bad.sum()))
        return ~bad
