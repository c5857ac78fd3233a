"""Dispatcher: routes ticks from `ticks.in` to one ring per strategy, without decoding them.

A batch is handled column-wise: the envelope's key column (instrument id) picks, per
strategy, which slots go to its ring, and `RingWriter.forward` copies them with one
fancy-index assignment per column. Backpressure is the `block` policy: the batch is cut to
the longest prefix that every strategy ring has room for, so nothing is lost and a full ring
stops the dispatcher (and so the producer) until its strategy catches up.

An in-band control event (the end-of-stream marker) ends a batch; SHUTDOWN is passed on to
every strategy ring and ends the dispatcher.
"""

from __future__ import annotations

import time

import numpy as np

from ..agent import Agent
from ..events import ControlKind
from ..stats import COUNTER, GAUGE, Schema
from ..topology import strategy_agent
from .common import decode_control, end_of_stream, read_control

SMALL_BATCH = 8  # up to this many ticks are routed one by one, past it column-wise


class Dispatcher(Agent):
    SCHEMA = Schema(
        values=(("ticks_in", COUNTER), ("ticks_out", COUNTER), ("control_in", COUNTER),
                ("full_polls", COUNTER), ("backpressured", GAUGE)),
        histograms=("stage",),
    )

    def __init__(self, ctx):
        super().__init__(ctx)
        cfg = ctx.cfg
        self.control = ctx.reader("control.dispatcher")
        self.inp = ctx.reader("ticks.in")
        self.outs = []
        n_instr = len(cfg.instruments)
        for s in cfg.strategies:
            w = ctx.writer(f"ticks.{s.name}", strategy_agent(s.name))
            ids = cfg.routes(s)
            if len(ids) == n_instr:
                route = None  # everything: skip the mask
            else:
                route = np.zeros(n_instr, dtype=bool)
                route[ids] = True
            self.outs.append((w, route))
        # per instrument id, the writers it is routed to (the scalar path's routing table)
        self.targets = [[w for w, route in self.outs if route is None or route[k]]
                        for k in range(n_instr)]
        self.batch = cfg.dispatcher.batch
        st = ctx.stats
        self.ticks_in = st.value("ticks_in")
        self.ticks_out = st.value("ticks_out")
        self.control_in = st.value("control_in")
        self.full_polls = st.value("full_polls")
        self.latency = st.histogram("stage")
        self.ended: set[int] = set()

    def do_work(self) -> int:
        work = len(read_control(self.control))  # nothing to act on yet; drained first
        inp = self.inp
        n = inp.available()
        if n <= 0:
            return work
        if n > self.batch:
            n = self.batch
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
        selections = []
        for w, route in self.outs:
            if route is None:
                sel = None
                room = w.claim(n)
                if room < n:
                    n = room
            else:
                sel = route[keys]
                cum = np.cumsum(sel)
                need = int(cum[n - 1]) if n else 0
                room = w.claim(need)
                if room < need:
                    n = min(n, int(np.searchsorted(cum, room, side="right")))
            selections.append(sel)
        if n == 0:
            self.full_polls.add()
            return work
        positions = positions[:n]
        out = 0
        for (w, _), sel in zip(self.outs, selections):
            w.forward(src, positions if sel is None else positions[sel[:n]])
            out += w.publish()
        return work + self._consumed(n, out)

    def _route_each(self, n: int) -> int:
        """A few events: route them one by one (no numpy call, ~1 us an event)."""
        inp = self.inp
        src = inp.ring
        keys, mask = src.i_key, src.mask
        pos = inp.position
        done = 0
        for p in range(pos, pos + n):
            k = keys[p & mask]
            if k < 0:
                if done == 0:
                    return self._in_band_control(p)
                break
            targets = self.targets[k]
            if not all(w.claim(1) for w in targets):
                break
            for w in targets:
                w.copy_one(src, p)
            done += 1
        if done == 0:
            self.full_polls.add()
            return 0
        out = 0
        for w, _ in self.outs:
            out += w.publish()
        return self._consumed(done, out)

    def _consumed(self, n: int, out: int) -> int:
        """Book-keeping once `n` input ticks went out as `out` events: latency, commit."""
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
        for i, (w, _) in enumerate(self.outs):
            if i not in self.ended and end_of_stream(w):
                self.ended.add(i)
        if len(self.ended) == len(self.outs):
            self.inp.commit(1)
            self.control_in.add()
            self.done = True
            return 1
        return 0
