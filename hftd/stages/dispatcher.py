"""Dispatcher: routes ticks from `ticks.in` to one ring per strategy, and every tick to the
executor's market-data ring (`ticks.executor`, for the simulated venue), without decoding them.

A batch is handled column-wise: the envelope's key column (instrument id) picks, per
strategy, which slots go to its ring, and `RingWriter.forward` copies them with one
fancy-index assignment per column. A few ticks take a scalar path instead, where numpy's
per-call cost would dominate. The batch limit grows with the input ring's occupancy, from
`batch_min` (an idle pipeline: short passes, prompt control) to `batch` (a backlog: few,
large passes).

Each strategy ring has its own flow policy (`hftd.flow`). The ring of a quarantined strategy
(QUARANTINE from the supervisor) is fed no more: its routed ticks are counted as quarantined. `block` rings cut the batch to the
longest prefix they all have room for, so nothing is lost and a full ring stops the
dispatcher (and so the producer) until its strategy catches up. `conflate` and `drop` rings
never hold the batch up: what does not fit is conflated or dropped for that ring alone, so
a slow strategy backpressures only its own ring. Per ring: routed = published + conflated
+ dropped (+ conflated ticks still waiting).

The executor's ring is handled like a strategy's (its policy is
`executor.market_data_policy`, its counters are named `executor`) and comes last, so the
strategies get a tick before the copy for the venue (and the executor's wake-up) is made:
measured at 10k ticks/s, putting it first cost tick-to-trade ~10 us at the median. The
executor holds an order until the venue has seen the tick that caused it (see
hftd/stages/executor.py), which is published a few microseconds after the strategies'.

An in-band control event (the end-of-stream marker) ends a batch; SHUTDOWN flushes what
each ring holds, is passed on to every strategy ring and the executor's, and ends the
dispatcher.

Crash-only: the input is committed after a batch went out, so a dispatcher killed between
the two leaves up to one batch routed but not committed. Its successor reads, per output
ring, the producer sequence of the newest tick the ring holds (a tick's seq is its position
in `ticks.in`, and it travels with the tick) and does not route input ticks up to it to
that ring again (`replays_skipped`). Its counters are re-derived from the rings' cursors,
which are the truth (delivered = what a ring was published, ticks_in = what `ticks.in` was
committed), so the accounting stays exact whenever the process died. Conflated ticks that
waited in the dead process are counted as dropped. A ring that already got the
end-of-stream marker does not get a second one.
"""

from __future__ import annotations

import time

import numpy as np

from ..agent import Agent
from ..flow import BLOCK, CONFLATE, Flow
from ..events import Codec, ControlKind, Control, TickStream
from .. import stats as stats_mod
from ..stats import COUNTER, Schema
from ..topology import MARKET_DATA, strategy_agent
from .common import decode_control, end_of_stream, read_control

SMALL_BATCH = 8  # up to this many ticks are routed one by one, past it column-wise


class _Out:
    """One output ring (a strategy's, or the executor's market data): writer, flow control,
    routing mask and counters."""

    def __init__(self, ctx, cfg, name: str, ring: str, reader: str, policy: str,
                 ids: list[int] | None):
        self.name = name
        self.writer = ctx.writer(ring, reader)
        rc = cfg.rings.ticks
        self.flow = Flow(self.writer, policy, rc.high_watermark, rc.low_watermark)
        n = len(cfg.instruments)
        self.route = None if ids is None or len(ids) == n else np.isin(np.arange(n), ids)
        st = ctx.stats
        self.routed = st.value(f"routed.{name}")
        self.delivered = st.value(f"delivered.{name}")
        self.conflated = st.value(f"conflated.{name}")
        self.dropped = st.value(f"dropped.{name}")
        self.pending = st.value(f"conflation_pending.{name}")
        self.quarantined = st.value(f"quarantined.{name}")
        self.replays_skipped = st.value(f"replays_skipped.{name}")
        self.shut = False  # its strategy is quarantined: routed ticks are counted, not sent
        self.resume = -1  # after a restart: input ticks up to this seq are already in the ring
        self.taking = False  # per pass of the scalar path: see Dispatcher._route_each
        self.n_routed = 0

    @property
    def blocks(self) -> bool:
        return self.flow.policy == BLOCK

    def divert(self, src, positions) -> None:
        """Ticks that do not fit this ring: conflate (newest per instrument) or drop."""
        if self.flow.policy == CONFLATE:
            add = self.flow.pending.add
            keys, t_in, data, lengths = src.i_key, src.q_t_ingest, src.data, src.i_length
            ss, mask = src.slot_size, src.mask
            replaced = 0
            for p in positions:
                i = p & mask
                o = i * ss
                replaced += add(keys[i], (t_in[i], bytes(data[o: o + lengths[i]])))
            self.conflated.add(replaced)
            self.pending.set(len(self.flow.pending))
        else:
            self.dropped.add(len(positions))

    def flush(self, draining: bool = False) -> int:
        """Publish conflated ticks once the ring is below its low watermark again (or,
        `draining` at the end of the stream, whatever fits)."""
        pending = self.flow.pending
        if not pending or (not draining and self.flow.backpressured()):
            return 0
        w = self.writer
        n = pending.flush(w.claim(len(pending)), lambda k, item: w.put(k, item[0], item[1]))
        self.pending.set(len(pending))
        self.delivered.add(w.publish())
        return n


class Dispatcher(Agent):
    @classmethod
    def schema(cls, cfg) -> Schema:
        per_ring = []
        for name in ["executor"] + [s.name for s in cfg.strategies]:
            per_ring += [(f"routed.{name}", COUNTER), (f"delivered.{name}", COUNTER),
                         (f"conflated.{name}", COUNTER),
                         (f"dropped.{name}", COUNTER), (f"conflation_pending.{name}", "gauge"),
                         (f"quarantined.{name}", COUNTER),
                         (f"replays_skipped.{name}", COUNTER)]
        return Schema(values=(("ticks_in", COUNTER), ("ticks_out", COUNTER),
                              ("control_in", COUNTER), ("full_polls", COUNTER), *per_ring),
                      histograms=("stage",))

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.dispatcher")
        self.inp = ctx.reader("ticks.in")
        # the executor's ring last: see the module docstring
        self.strategy_outs = [
            _Out(ctx, cfg, s.name, f"ticks.{s.name}", strategy_agent(s.name), cfg.ticks_policy(s),
                 cfg.routes(s)) for s in cfg.strategies]
        self.outs = self.strategy_outs + [_Out(ctx, cfg, "executor", MARKET_DATA, "executor",
                                               cfg.executor.market_data_policy, None)]
        n_instr = len(cfg.instruments)
        # per instrument id, the rings it is routed to (the scalar path's routing table)
        self.targets = [[o for o in self.outs if o.route is None or o.route[k]]
                        for k in range(n_instr)]
        self.batch_min = cfg.dispatcher.batch_min
        self.batch_span = cfg.dispatcher.batch - cfg.dispatcher.batch_min
        self.capacity = self.inp.ring.capacity
        st = ctx.stats
        self.ticks_in = st.value("ticks_in")
        self.ticks_out = st.value("ticks_out")
        self.control_in = st.value("control_in")
        self.full_polls = st.value("full_polls")
        self.latency = ctx.histogram("stage")
        self.ended: set[str] = set()
        self.catching_up = False
        if ctx.stats.q_header[stats_mod.H_RESTARTS]:
            self._resume()

    def _resume(self) -> None:
        """A restarted dispatcher: see the module docstring (crash-only)."""
        decode = Codec(TickStream).decode
        for o in self.outs:
            ring = o.writer.ring
            end = ticks = o.writer.position
            newest = -1
            # the newest tick is among the last few slots: conflated ticks are flushed in
            # instrument order, at most one per instrument, before any newer tick
            window = min(ring.capacity, 2 * len(self.targets) + 8)
            for p in range(end - 1, max(end - window, 0) - 1, -1):
                ev = decode(ring.payload(p))
                if isinstance(ev, Control):
                    ticks -= 1
                    if ev.kind == ControlKind.SHUTDOWN:
                        self.ended.add(o.name)
                elif ev.seq > newest:
                    newest = ev.seq
            o.resume = newest
            o.delivered.set(ticks)
            lost = o.pending.value
            if lost:
                o.dropped.add(lost)
                o.pending.set(0)
            o.routed.set(ticks + o.conflated.value + o.dropped.value + o.quarantined.value)
        self.ticks_in.set(self.inp.position - self.control_in.value)
        self.ticks_out.set(sum(o.delivered.value for o in self.outs))
        self.catching_up = any(o.resume >= self.inp.position for o in self.outs)

    def _must_wait(self) -> bool:
        """A ring that blocks is short of room and its reader has not freed half of it."""
        return any(o.blocks and not o.shut and o.writer.must_wait() for o in self.outs)

    def sleep_for(self) -> float | None:
        if self.control.available() > 0:
            return 0.0
        if any(o.flow.pending and not o.flow.on for o in self.outs):
            return 0.0
        if self._must_wait():
            return None  # until that reader has freed half the ring and rings
        return super().sleep_for()

    def flush_pending(self) -> int:
        for o in self.outs:
            if o.flow.pending and not o.shut:
                o.flush(draining=True)
        return sum(len(o.flow.pending or ()) for o in self.outs if not o.shut)

    def _quarantine(self, index: int) -> None:
        """Strategy `index` is given up: its ring is fed no more; what would have gone to it
        is counted as quarantined (routed = delivered + conflated + dropped + quarantined +
        pending). The executor's market data is not a strategy's: it is never shut."""
        if 0 <= index < len(self.strategy_outs):
            o = self.strategy_outs[index]
            o.shut = True
            if o.flow.pending:
                o.quarantined.add(len(o.flow.pending))
                o.flow.pending.items.clear()
                o.pending.set(0)
            self.ended.add(o.name)  # no end-of-stream marker either: nobody reads it

    def do_work(self) -> int:
        work = 0
        for ev in read_control(self.control):  # drained first
            work += 1
            if ev.kind == ControlKind.RELOAD:
                self.reload()
            elif ev.kind == ControlKind.QUARANTINE:
                self._quarantine(ev.arg)
        for o in self.outs:
            if o.flow.pending and not o.shut:
                work += o.flush()
        inp = self.inp
        n = inp.available()
        if n <= 0:
            return work
        limit = self.batch_min + self.batch_span * n // self.capacity
        if n > limit:
            n = limit
        if self.catching_up:
            return work + self._catch_up()
        if n <= SMALL_BATCH:
            return work + self._route_each(n)
        src = inp.ring
        pos = inp.position
        positions = np.arange(pos, pos + n, dtype=np.int64)
        keys = src.key[positions & src.mask]
        ctl = np.flatnonzero(keys < 0)
        if ctl.size:
            if ctl[0] == 0:
                return work + self._in_band_control(pos)
            n = int(ctl[0])
            positions = positions[:n]
            keys = keys[:n]
        wanted = n
        selections = []
        for o in self.outs:
            sel = None if o.route is None else o.route[keys]
            selections.append(sel)
            if not o.blocks or o.shut:
                continue
            if sel is None:
                room = o.writer.claim(n)
                if room < n:
                    n = room
            else:
                cum = np.cumsum(sel)
                need = int(cum[n - 1]) if n else 0
                room = o.writer.claim(need)
                if room < need:
                    n = min(n, int(np.searchsorted(cum, room, side="right")))
        if n == 0 or (n < wanted and self._must_wait()):
            self.full_polls.add()  # parks until the ring's reader has freed half: no trickle
            return work
        positions = positions[:n]
        out = 0
        for o, sel in zip(self.outs, selections):
            mine = positions if sel is None else positions[sel[:n]]
            o.routed.add(len(mine))
            if o.shut:
                o.quarantined.add(len(mine))
                continue
            if not o.blocks:
                room = 0 if (o.flow.backpressured() or o.flow.pending) else o.writer.claim(len(mine))
                if room < len(mine):
                    o.divert(src, mine[room:].tolist())
                    mine = mine[:room]
            o.writer.forward(src, mine)
            published = o.writer.publish()
            o.delivered.add(published)
            out += published
        return work + self._consumed(n, out)

    def _catch_up(self) -> int:
        """After a restart, one input tick at a time until the input passes what the dead
        process had already routed: each output ring that holds the tick is skipped."""
        p = self.inp.position
        if all(o.resume < p for o in self.outs):
            self.catching_up = False
            return 0
        k = self.inp.ring.i_key[p & self.inp.ring.mask]
        if k < 0:
            return self._in_band_control(p)
        skipped = [o for o in self.targets[k] if o.resume >= p]
        for o in skipped:
            o.replays_skipped.add()
        return self._route_each(1, {k: [o for o in self.targets[k] if o.resume < p]})

    def _route_each(self, n: int, table=None) -> int:
        """A few events: route them one by one (no numpy call, ~1 us an event). `table`: the
        routing table to use instead of the configured one (see _catch_up)."""
        inp = self.inp
        src = inp.ring
        keys, mask = src.i_key, src.mask
        pos = inp.position
        table = table or self.targets
        for o in self.outs:
            # whether a conflate/drop ring takes ticks this pass: one look, not one per tick
            o.taking = not o.blocks and not (o.flow.backpressured() or o.flow.pending)
            o.n_routed = 0
        done = 0
        for p in range(pos, pos + n):
            k = keys[p & mask]
            if k < 0:
                if done == 0:
                    return self._in_band_control(p)
                break
            targets = table[k]
            if not all(o.writer.claim(1) for o in targets if o.blocks and not o.shut):
                break
            for o in targets:
                o.n_routed += 1
                if o.shut:
                    o.quarantined.add()
                elif o.blocks or (o.taking and o.writer.claim(1)):
                    o.writer.copy_one(src, p)
                else:
                    o.divert(src, (p,))
            done += 1
        if done == 0:
            self.full_polls.add()
            return 0
        out = 0
        for o in self.outs:
            o.routed.add(o.n_routed)
            published = o.writer.publish()
            o.delivered.add(published)
            out += published
        return self._consumed(done, out)

    def _consumed(self, n: int, out: int) -> int:
        """Book-keeping once `n` input ticks went out as `out` events: latency, commit."""
        for o in self.outs:
            if o.blocks and not o.shut:
                o.flow.backpressured()  # keeps the gauge and episode count of block rings
        inp = self.inp
        inp.record_ages(self.latency, time.monotonic_ns(), n)
        inp.commit(n)
        self.ticks_in.add(n)
        self.ticks_out.add(out)
        return n

    def _in_band_control(self, pos: int) -> int:
        ev = decode_control(self.inp, pos)
        if ev.kind != ControlKind.SHUTDOWN:
            self.inp.commit(1)
            self.control_in.add()
            return 1
        # end of stream: what each ring holds goes first (waiting for room), then the marker
        for o in self.outs:
            if o.name in self.ended:
                continue
            if o.flow.pending:
                o.flush(draining=True)
                if o.flow.pending:
                    continue
            if end_of_stream(o.writer):
                self.ended.add(o.name)
        if len(self.ended) == len(self.outs):
            self.inp.commit(1)
            self.control_in.add()
            self.done = True
            return 1
        return 0
