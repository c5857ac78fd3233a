"""Read a running instance from outside, the way AeronStat reads Aeron's counters: map its
stats blocks and ring headers and read them without locks. The supervisor's exporter, the
end-of-run report, `hftd status` and `hftd top` all read through here.
"""

from __future__ import annotations

import time

from . import agent as agent_mod
from . import config as config_mod
from . import report as report_mod
from . import procfs, shm, stats, topology
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

    def report(self, wall_time_s: float = 0.0) -> dict:
        agents = {a.name: (a.role, self.blocks[a.name].snapshot()) for a in self.agents}
        return report_mod.build(agents, self.ring_states(), wall_time_s, self.cfg)

    def status(self, rate_window_s: float = 0.5, since: tuple | None = None) -> dict:
        """Everything `hftd status --json` prints: the report's figures, agent health, and
        rates since the `sample()` `since` (or over `rate_window_s`; none if both are 0)."""
        if since is None and rate_window_s > 0:
            since = self.sample()
            time.sleep(rate_window_s)
        rep = self.report()
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
