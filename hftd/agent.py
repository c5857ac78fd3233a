"""The agent contract and the one loop that runs every agent process.

As in Agrona: an agent has `on_start()`, `do_work() -> int` (how much it did) and
`on_close()`; `run()` owns the loop, hands the work count to the idle strategy, beats the
heartbeat in the agent's stats block, turns SIGTERM/SIGINT into `on_signal()`, and pins the
process to its configured CPUs. An agent sets `done` when it has nothing more to do (it has
passed on the end of its stream).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

import msgspec

from . import config as config_mod
from . import idle as idle_mod
from . import shm, stats, topology
from .histogram import NullHistogram
from .ring import Ring, RingReader, RingWriter


class Agent:
    """Base class of the four stages. Subclasses define `schema(cfg)` (the names in their
    stats block) and implement `do_work`."""

    done = False

    @classmethod
    def schema(cls, cfg) -> stats.Schema:
        raise NotImplementedError

    def __init__(self, ctx: "AgentContext"):
        self.ctx = ctx

    def on_start(self) -> None:
        pass

    def do_work(self) -> int:
        raise NotImplementedError

    def on_signal(self) -> None:
        """SIGTERM/SIGINT: stop now. The producer overrides this to end its stream instead,
        which is how the supervisor drains the pipeline front to back."""
        self.done = True

    def on_close(self) -> None:
        pass

    def sleep_for(self) -> float | None:
        """Asked just before parking: 0 if an input has something, else how long the agent
        may sleep (None: until a writer rings its doorbell)."""
        return 0.0 if any(r.available() > 0 for r in self.ctx.readers) else None


class AgentContext:
    """What an agent process is given: its config, names, stats block, rings and doorbell."""

    def __init__(self, cfg: config_mod.Config, agent: str):
        self.cfg = cfg
        self.instance = cfg.instance
        self.agent = agent
        self.stats = stats.StatsBlock.attach(self.obj(topology.stats_name(agent)))
        self.readers: list[RingReader] = []
        self.rings: list[Ring] = []
        self._bells = []
        self.doorbell = shm.open_semaphore(self.obj(topology.doorbell_name(agent)))

    def obj(self, what: str) -> str:
        return shm.object_name(self.instance, what)

    def histogram(self, name: str):
        """The agent's latency histogram `name`. With `metrics.record_latency` off, the
        per-stage histograms are no-ops; tick-to-trade (one sample per order, the figure the
        daemon exists for) is always recorded."""
        if not self.cfg.metrics.record_latency and name != "tick_to_trade":
            return NullHistogram()
        return self.stats.histogram(name)

    def reader(self, ring: str) -> RingReader:
        r = RingReader(self._attach(ring))
        self.readers.append(r)
        return r

    def writer(self, ring: str, reader_agent: str | None) -> RingWriter:
        bell = None
        if reader_agent is not None:
            bell = shm.open_semaphore(self.obj(topology.doorbell_name(reader_agent)))
            self._bells.append(bell)
        return RingWriter(self._attach(ring), bell)

    def _attach(self, ring: str) -> Ring:
        r = Ring.attach(self.obj(ring))
        self.rings.append(r)
        return r

    def close(self) -> None:
        for b in self._bells + [self.doorbell]:
            b.close()
        for r in self.rings:
            r.close()
        self.stats.close()


def pin(cpus) -> None:
    if cpus:
        os.sched_setaffinity(0, set(cpus))


def _prepare_process() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so no agent is orphaned; and for
    1 us of timer slack instead of 50 us, so a timed park (a paced producer waiting for its
    next tick) ends when asked."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        libc.prctl(29, 1000)  # PR_SET_TIMERSLACK, ns
    except (OSError, AttributeError):
        pass


def run(agent: Agent, ctx: AgentContext) -> None:
    """The agent loop."""
    block = ctx.stats
    signalled = []

    def on_sig(signum, frame):
        signalled.append(signum)

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    parker = idle_mod.Doorbell(ctx.doorbell, ctx.readers, ctx.cfg.idle.park_us)
    strategy = idle_mod.make(ctx.cfg.idle, parker, agent.sleep_for)
    idle = strategy.idle
    do_work = agent.do_work
    now = time.monotonic_ns
    heartbeat = block.heartbeat
    agent.on_start()
    heartbeat(now())
    block.set_state(stats.RUNNING)
    beat = 0
    while not agent.done:
        work = do_work()
        idle(work)
        beat += 1
        if beat >= 64:  # a park lasts at most park_us: a beat at least every 64 of those
            heartbeat(now())
            beat = 0
        if signalled:
            signalled.clear()
            agent.on_signal()
    block.set_state(stats.DRAINING)
    agent.on_close()
    heartbeat(now())
    block.set_state(stats.STOPPED)


def spec_path(runtime_dir: str, instance: str) -> str:
    return os.path.join(runtime_dir, f"{instance}.json")


def main(role: str, name: str | None, instance: str, runtime_dir: str) -> int:
    """Entry point of an agent process (`hftd agent ROLE --instance NAME`)."""
    from .stages import ROLES

    _prepare_process()
    with open(spec_path(runtime_dir, instance), "rb") as f:
        cfg = config_mod.from_dict(msgspec.json.decode(f.read()), "agent spec")
    agent_name = topology.strategy_agent(name) if role == "strategy" else role
    spec = {a.name: a for a in topology.agents(cfg)}.get(agent_name)
    if spec is None:
        print(f"hftd agent: no agent {agent_name!r} in instance {instance!r}", file=sys.stderr)
        return 2
    pin(spec.cpus)
    ctx = AgentContext(cfg, agent_name)
    ctx.stats.q_header[stats.H_PID] = os.getpid()
    ctx.stats.set_state(stats.STARTING)
    agent = ROLES[role](ctx)
    try:
        run(agent, ctx)
    finally:
        ctx.close()
    return 0
