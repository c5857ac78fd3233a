"""Read a running instance from outside, the way AeronStat reads Aeron's counters: map its
stats blocks and ring headers and read them without locks. The supervisor's exporter, the
end-of-run report, `hftd status` and `hftd top` all read through here.
"""

from __future__ import annotations

import os
import time
from collections import deque
from typing import NamedTuple

import numpy as np

from . import agent as agent_mod
from . import config as config_mod
from . import report as report_mod
from . import histogram, identity, procfs, shm, stats, topology
from .ring import Ring


class NotRunning(Exception):
    pass


class InstanceView:
    """Stats blocks and rings of one instance, mapped read-only in spirit."""

    def __init__(self, cfg: config_mod.Config, blocks=None, rings=None):
        self.cfg = cfg
        self.agents = topology.agents(cfg)
        self._owned = blocks is None
        if blocks is None:
            blocks = {a.name: stats.StatsBlock.attach(
                shm.object_name(cfg.instance, topology.stats_name(a.name))) for a in self.agents}
            rings = {r.name: Ring.attach(shm.object_name(cfg.instance, r.name))
                     for r in topology.rings(cfg)}
        self.blocks = blocks
        self.rings = rings

    @classmethod
    def attach(cls, instance: str, runtime_dir: str) -> "InstanceView":
        """The running instance (its resolved config is read from the spec its supervisor
        wrote in `runtime_dir`). Raises NotRunning."""
        from .identity import IdentityError

        try:
            return cls(agent_mod.load_spec(runtime_dir, instance))
        except (FileNotFoundError, IdentityError, config_mod.ConfigError):
            raise NotRunning(f"instance {instance!r} is starting or stopping") from None

    def close(self) -> None:
        if self._owned:
            for b in self.blocks.values():
                b.close()
            for r in self.rings.values():
                r.close()

    # --- readings -------------------------------------------------------------------------
    def ring_states(self) -> dict:
        return {
            n: {"capacity": r.capacity, "published": r.published, "consumed": r.consumed,
                "in_flight": r.published - r.consumed,
                "occupancy_ratio": (r.published - r.consumed) / r.capacity,
                "backpressure_episodes": r.backpressure_episodes,
                "backpressured": r.backpressured}
            for n, r in self.rings.items()
        }

    def agent_health(self) -> dict:
        """Per agent: pid, state, up (running with a fresh heartbeat), heartbeat age, restarts,
        CPU seconds and RSS of its process."""
        now = time.monotonic_ns()
        limit = int(self.cfg.supervisor.heartbeat_timeout_s * 1e9)
        out = {}
        for a in self.agents:
            b = self.blocks[a.name]
            pid = b.pid
            # an agent may beat between `now` and this read: its age is 0, never negative
            hb = b.heartbeat_ns
            age = max(now - hb, 0) / 1e9 if hb else None
            alive = pid > 0
            cpu = rss = None
            if alive:
                try:
                    cpu, rss = procfs.cpu_seconds(pid), procfs.rss_bytes(pid)
                except (ProcessLookupError, PermissionError):
                    alive = False
            state = stats.STATE_NAMES.get(b.state, "unknown")
            out[a.name] = {
                "role": a.role, "pid": pid, "state": state,
                "up": bool(alive and b.fresh(now, limit)),
                "heartbeat_age_s": age, "restarts": int(b.header[stats.H_RESTARTS]),
                "cpu_seconds": cpu, "rss_bytes": rss, "cpus": list(a.cpus),
            }
        return out

    def snapshots(self) -> dict:
        """name -> (role, StatsBlock.snapshot()) of every agent."""
        return {a.name: (a.role, self.blocks[a.name].snapshot()) for a in self.agents}

    def report(self, wall_time_s: float = 0.0, snaps: dict | None = None) -> dict:
        agents = self.snapshots() if snaps is None else snaps
        return report_mod.build(agents, self.ring_states(), wall_time_s, self.cfg)

    def status(self, rate_window_s: float = 0.5, since: tuple | None = None,
               snaps: dict | None = None) -> dict:
        """Everything `hftd status --json` prints: the report's figures, agent health, and
        rates since the `sample()` `since` (or over `rate_window_s`; none if both are 0).
        `snaps`: `snapshots()` already taken (top keeps their histograms, below)."""
        if since is None and rate_window_s > 0:
            since = self.sample()
            time.sleep(rate_window_s)
        rep = self.report(snaps=snaps)
        rep["instance"] = self.cfg.instance
        rep["agents"] = self.agent_health()
        rep["rates_per_s"] = self.rates(since, self.sample()) if since else {}
        rep["trading_paused"] = bool(self.blocks["executor"].get("paused"))
        return rep

    def sample(self) -> tuple[float, dict]:
        """(monotonic time, the counts rates are made of)."""
        strategies = [a.name for a in self.agents if a.role == "strategy"]
        return time.monotonic(), {
            "ticks_received": self.blocks["producer"].get("received"),
            "ticks_delivered": sum(self.blocks[s].get("ticks_in") for s in strategies),
            "orders": sum(self.blocks[s].get("new_orders") for s in strategies),
            "fills": self.blocks["executor"].get("fills"),
        }

    @staticmethod
    def rates(before: tuple, after: tuple) -> dict:
        """Per-second rates between two `sample()`s."""
        dt = max(after[0] - before[0], 1e-9)
        return {k: (after[1][k] - before[1][k]) / dt for k in after[1]}

    def reading(self, snaps: dict | None = None) -> "Reading":
        """The latency histograms (of `snaps`, or taken now) and the rates' counts, now."""
        snaps = self.snapshots() if snaps is None else snaps
        t, counts = self.sample()
        latency = {name: snap["histograms"]["stage"] for name, (_, snap) in snaps.items()}
        latency["tick-to-trade"] = snaps["executor"][1]["histograms"]["tick_to_trade"]
        return Reading(t, latency, counts)


# --- what happened lately (hftd top) --------------------------------------------------------
#
# Lifetime percentiles never forget: after one stall the lifetime p99 stays up for the rest of
# the run. A histogram's buckets only ever grow, so the difference of two snapshots of it is
# exactly the histogram of the samples recorded between them: keeping the snapshots of the
# last few seconds gives the percentiles of those seconds, at no cost to the agents.


class Reading(NamedTuple):
    """One look at the instance: when (monotonic s), its latency histograms by stage name
    (and "tick-to-trade"), and the counts its rates are made of (`InstanceView.sample`)."""

    t: float
    latency: dict
    counts: dict


def difference(later: histogram.HistogramSnapshot,
          earlier: histogram.HistogramSnapshot) -> histogram.HistogramSnapshot:
    """The histogram of the samples recorded between two snapshots of one histogram.

    Bucket by bucket, what the later one has more. A bucket with fewer (a histogram made anew
    in between, or a snapshot torn by a writer: buckets are written before the count) counts
    as none rather than as a negative. The window's max is not stored anywhere: it is bounded
    by the top of its highest non-empty bucket and by the later lifetime max."""
    words = later.words - earlier.words
    buckets = words[histogram.HEAD_WORDS:]
    np.maximum(buckets, 0, out=buckets)
    nz = np.flatnonzero(buckets)
    top = 0
    if len(nz):
        low, width = histogram.bucket_bounds(int(nz[-1]))
        top = min(int(low + width - 1), later.max)
    words[histogram.W_MAX] = top
    words[histogram.W_COUNT] = int(buckets.sum())
    words[histogram.W_SUM] = max(int(words[histogram.W_SUM]), 0)
    return histogram.HistogramSnapshot(words)


class History:
    """Readings of the last `span_s` seconds, so that figures of what happened lately can stand
    beside lifetime ones: p50/p99 of the window (`difference` of its first and newest readings) and
    rates over it and over the last interval.

    A reading holds a copy of every latency histogram (~31 KiB each), so one is kept at most
    every `span_s / 20` s whatever the refresh interval. The window starts at the newest kept
    reading at least `span_s` old: it is `span_s` long (plus up to one refresh interval) once
    there is that much history, shorter before; its length is part of the figures."""

    def __init__(self, span_s: float = 10.0):
        self.span_s = span_s
        self.kept: deque[Reading] = deque()
        self.newest: Reading | None = None
        self.previous: Reading | None = None

    def add(self, r: Reading) -> None:
        self.previous, self.newest = self.newest, r
        if not self.kept or r.t - self.kept[-1].t >= self.span_s / 20:
            self.kept.append(r)
        while len(self.kept) >= 2 and r.t - self.kept[1].t >= self.span_s:
            self.kept.popleft()

    def interval(self) -> dict | None:
        """{"seconds", "rates_per_s"} since the previous reading; None before there is one."""
        if self.previous is None:
            return None
        return _between(self.previous, self.newest, latency=False)

    def window(self) -> dict | None:
        """{"seconds", "rates_per_s", "latency_us"} (each stage's as `report.latency_us`)
        over the window; None before there are two readings."""
        if self.newest is None or not self.kept or self.kept[0] is self.newest:
            return None
        return _between(self.kept[0], self.newest, latency=True)


def _between(a: Reading, b: Reading, latency: bool) -> dict:
    dt = max(b.t - a.t, 1e-9)
    out = {"seconds": b.t - a.t,
           "rates_per_s": {k: (b.counts[k] - a.counts[k]) / dt for k in b.counts}}
    if latency:
        out["latency_us"] = {name: report_mod.latency_us(difference(h, a.latency[name]))
                             for name, h in b.latency.items() if name in a.latency}
    return out


# --- whether the instance still runs ----------------------------------------------------------


class Presence:
    """Whether the instance a view was attached to is still the one running: its supervisor
    (`rec`: pid and start time) lives, its lock still names that supervisor, and its stats
    blocks are still the ones mapped. A view keeps reading the memory it mapped after the
    instance has gone (an unlinked segment lives on while mapped), so it cannot tell by
    itself: this asks the three things that end with the instance, any one of them.

    `gone()` is the first of them that no longer holds, in words, or None."""

    def __init__(self, instance: str, rec: identity.Record, view: InstanceView):
        self.instance = instance
        self.rec = rec
        self.paths = [shm.path_of(shm.object_name(instance, topology.stats_name(a.name)))
                      for a in view.agents]
        self.inodes = {}
        for p in self.paths:
            try:
                self.inodes[p] = os.stat(p).st_ino
            except FileNotFoundError:
                self.inodes[p] = None

    def gone(self) -> str | None:
        if not identity.alive(self.rec):
            return f"supervisor pid {self.rec.pid} gone"
        try:
            now = identity.running(self.instance)
        except identity.IdentityError as e:
            return f"its lock cannot be read: {e}"
        if now is None:
            return "its lock released"
        if (now.pid, now.started) != (self.rec.pid, self.rec.started):
            return f"its lock now held by another supervisor (pid {now.pid})"
        for p in self.paths:
            try:
                ino = os.stat(p).st_ino
            except FileNotFoundError:
                ino = None
            if ino is None or ino != self.inodes[p]:
                return f"its shared memory removed ({p})"
        return None
