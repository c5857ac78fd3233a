"""The agent contract and the one loop that runs every agent process.

As in Agrona: an agent has `on_start()`, `do_work() -> int` (how much it did) and
`on_close()`; `run()` owns the loop, hands the work count to the idle strategy, beats the
heartbeat in the agent's stats block, and pins the process to its configured CPUs. An
agent sets `done` when it has passed on the end of its stream: that is the only way it is
told to stop, and it then exits 0 in state "stopped". SIGTERM or SIGINT, whether the agent
is busy or parked, make it leave between two passes (every cursor committed), pass on what
it holds for at most `DRAIN_ON_SIGNAL_S`, and exit with 143 in state "exited": to the
supervisor that is a crash like any other, and the agent is restarted at its cursors.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import msgspec

from . import config as config_mod
from . import idle as idle_mod
from . import log as hftd_log
from . import shm, stats, topology
from .histogram import NullHistogram
from .ring import Ring, RingReader, RingWriter


BEAT_NS = 100_000_000  # the heartbeat is written at most this often (and after each pass past it)


class Agent:
    """Base class of the four stages. Subclasses define `schema(cfg)` (the names in their
    stats block) and implement `do_work`."""

    done = False

    @classmethod
    def schema(cls, cfg) -> stats.Schema:
        raise NotImplementedError

    def __init__(self, ctx: "AgentContext"):
        self.ctx = ctx

    def bind_values(self) -> None:
        """`self.c_<name>` for every value of the stage's schema whose name has no dot (the
        dotted ones, per ring or per position, are bound by the stage itself)."""
        st = self.ctx.stats
        for name, _ in self.schema(self.ctx.cfg).values:
            if "." not in name:
                setattr(self, "c_" + name, st.value(name))

    def on_start(self) -> None:
        pass

    def do_work(self) -> int:
        raise NotImplementedError

    def flush_pending(self) -> int:
        """After SIGTERM: pass on what the agent holds (orders or reports waiting for room,
        conflated ticks) as far as there is room; returns how much still waits."""
        return 0

    def reload(self) -> None:
        """RELOAD: re-read the instance's config spec and apply what may change live."""
        try:
            cfg = self.ctx.load_spec()
        except Exception as e:  # a bad spec must not take the agent down: keep the old one
            self.ctx.log.error(f"reload failed, config unchanged: {e}")
            return
        self.ctx.cfg = cfg
        self.ctx.reloads += 1  # the runner picks up a new idle strategy
        self.on_reload(cfg)

    def on_reload(self, cfg) -> None:
        pass

    def on_close(self) -> None:
        pass

    def sleep_for(self) -> float | None:
        """Asked just before parking: 0 if an input has something, else how long the agent
        may sleep (None: until a writer rings its doorbell)."""
        return 0.0 if any(r.available() >= r.wake_at for r in self.ctx.readers) else None


class AgentContext:
    """What an agent process is given: its config, names, stats block, rings and doorbell."""

    def __init__(self, cfg: config_mod.Config, agent: str, runtime_dir: str = ""):
        self.cfg = cfg
        self.instance = cfg.instance
        self.agent = agent
        self.runtime_dir = runtime_dir
        self.reloads = 0
        self.log = hftd_log.get(f"hftd[{self.instance}] {agent}")  # its lines say who wrote them
        self.stats = stats.StatsBlock.attach(self.obj(topology.stats_name(agent)))
        self.readers: list[RingReader] = []
        self.writers: list[RingWriter] = []
        self.rings: list[Ring] = []
        self._ring_writers: dict[str, str] | None = None
        self._bells = []
        self.doorbell = shm.open_semaphore(self.obj(topology.doorbell_name(agent)))

    def load_spec(self) -> config_mod.Config:
        return load_spec(self.runtime_dir, self.instance)

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
        """The reader of `ring`; it rings the writer's doorbell when the writer waits for
        room (an agent's; the supervisor, writer of the control rings, never waits)."""
        writer = self._writers_of().get(ring)
        bell = None if writer in (None, topology.SUPERVISOR) else self._bell(writer)
        r = RingReader(self._attach(ring), bell)
        self.readers.append(r)
        return r

    def writer(self, ring: str, reader_agent: str | None) -> RingWriter:
        bell = None if reader_agent is None else self._bell(reader_agent)
        w = RingWriter(self._attach(ring), bell)
        self.writers.append(w)
        return w

    def _writers_of(self) -> dict[str, str]:
        if self._ring_writers is None:
            self._ring_writers = {r.name: r.writer for r in topology.rings(self.cfg)}
        return self._ring_writers

    def _bell(self, agent: str):
        bell = shm.open_semaphore(self.obj(topology.doorbell_name(agent)))
        self._bells.append(bell)
        return bell

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


DRAIN_ON_SIGNAL_S = 0.3  # how long an agent told to exit by a signal tries to pass on what it holds


def run(agent: Agent, ctx: AgentContext) -> bool:
    """The agent loop. True when the agent ended its stream (told to by the pipeline),
    False when a signal made it leave: it passes on what it holds first."""
    block = ctx.stats
    signalled = []

    def on_sig(signum, frame):
        signalled.append(signum)

    signal.signal(signal.SIGTERM, on_sig)
    signal.signal(signal.SIGINT, on_sig)
    parker = idle_mod.Doorbell(ctx.doorbell, ctx.readers, ctx.cfg.idle.park_us, ctx.writers)
    n_agents = len(topology.agents(ctx.cfg))
    strategy = idle_mod.make(ctx.cfg.idle, parker, agent.sleep_for, n_agents)
    idle = strategy.idle
    reloads = ctx.reloads
    do_work = agent.do_work
    now = time.monotonic_ns
    heartbeat = block.heartbeat
    agent.on_start()
    heartbeat(now())
    block.set_state(stats.RUNNING)
    next_beat = 0
    while not agent.done:
        work = do_work()
        idle(work)
        t = now()
        # by the clock, not by passes: a slow strategy's pass may take 0.1 s (found: every 64
        # passes was 6 s, past heartbeat_timeout_s, and a working agent was killed as hung)
        if t >= next_beat:
            heartbeat(t)
            next_beat = t + BEAT_NS
            if ctx.reloads != reloads:
                reloads = ctx.reloads
                parker.timeout = ctx.cfg.idle.park_us / 1e6
                idle = idle_mod.make(ctx.cfg.idle, parker, agent.sleep_for, n_agents).idle
        if signalled:
            break
    block.set_state(stats.DRAINING)
    if not agent.done:  # a signal: between two passes, so every cursor is committed
        deadline = time.monotonic() + DRAIN_ON_SIGNAL_S
        while (left := agent.flush_pending()) and time.monotonic() < deadline:
            time.sleep(0.001)
        if left:
            block.q_header[stats.H_LOST] += left  # the supervisor reports them; the run fails
            ctx.log.error(f"leaving on a signal with {left} events it could not pass on within "
                          f"{DRAIN_ON_SIGNAL_S:g} s (no room downstream)")
    agent.on_close()
    heartbeat(now())
    block.set_state(stats.STOPPED if agent.done else stats.EXITED)
    return agent.done


def spec_path(runtime_dir: str, instance: str) -> str:
    return os.path.join(runtime_dir, f"{instance}.json")


def load_spec(runtime_dir: str, instance: str,
              known: tuple[bytes, config_mod.Config] | None = None) -> config_mod.Config:
    """The resolved config the supervisor wrote for its agents (a file of ours, no symlink).
    `known`: a spec's text and its config, already decoded: returned if the file says that
    (a forked agent inherits the supervisor's; decoding it again would copy ~1.4 MiB of the
    pages it shares, hftd.forkserver)."""
    from .identity import read_private

    path = spec_path(runtime_dir, instance)
    data = read_private(path)
    if known is not None and data == known[0]:
        return known[1]
    return config_mod.from_dict(msgspec.json.decode(data), path)


PROFILE_ENV = "HFTD_PROFILE_DIR"  # for bench/: each agent's cProfile, to <dir>/<agent>.prof


def _profiled(run_, agent: Agent, ctx: AgentContext) -> bool:
    """`run_(agent, ctx)`, under cProfile when $HFTD_PROFILE_DIR names a directory (how
    bench/ANALYSIS-style profiles of a stage are made; never in production)."""
    where = os.environ.get(PROFILE_ENV)
    if not where:
        return run_(agent, ctx)
    import cProfile

    prof = cProfile.Profile()
    try:
        return prof.runcall(run_, agent, ctx)
    finally:
        prof.dump_stats(os.path.join(where, f"{ctx.agent}.prof"))


EXIT_ON_SIGNAL = 128 + signal.SIGTERM  # what an agent that left on a signal exits with


def main(role: str, name: str | None, instance: str, runtime_dir: str,
         known_spec: tuple[bytes, config_mod.Config] | None = None) -> int:
    """Entry point of an agent process (`hftd agent ROLE --instance NAME`, or forked by
    hftd.forkserver, which passes the spec it knows: see `load_spec`). It logs as the
    supervisor does (hftd.log), from its first line; what would end it with a traceback or a
    `sys.exit("why")` is logged, with its level and who said it, and it exits 1."""
    agent_name = topology.strategy_agent(name) if role == "strategy" else role
    hftd_log.setup()  # the config's level once it is read; a spec that cannot be is said too
    log = hftd_log.get(f"hftd[{instance}] {agent_name}")
    _stdout_is_stderr()
    try:
        return _main(role, agent_name, instance, runtime_dir, known_spec)
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        log.error(e.code)
        return 1
    except Exception:
        log.critical("error: uncaught exception", exc_info=True)
        return 1


def _stdout_is_stderr() -> None:
    """An agent has no stdout of its own: the supervisor's carries the end-of-run summary
    alone (`hftd run > summary.txt`), so what an agent, or a strategy's `print`, writes there
    joins the diagnostics on stderr instead."""
    try:
        sys.stdout.flush()
        os.dup2(2, 1)
    except (OSError, ValueError, AttributeError):  # no stderr, or stdout closed: as it was
        pass
    # A write to the log's stream must never end the agent: with `hftd run 2>&1 | less` and
    # less quit (a `tee` that died, `2> /dev/full`), a strategy's print raised
    # BrokenPipeError into on_tick, so the strategy crashed on its next print, again after
    # each restart, and was quarantined. logging already drops a record it cannot write.
    if sys.stdout is not None:  # (None: no stream at all; print() then writes nothing)
        sys.stdout = _Unfailing(sys.stdout)
    if sys.stderr is not None:
        sys.stderr = _Unfailing(sys.stderr)


class _Unfailing:
    """A text stream whose write and flush drop what the stream cannot take (EPIPE, ENOSPC,
    EIO) instead of raising: nobody is left to read it, and the agent's work goes on."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except (OSError, ValueError):
            pass

    def __getattr__(self, name):  # fileno, encoding, isatty, ...: the stream's
        return getattr(self._stream, name)


def _main(role: str, agent_name: str, instance: str, runtime_dir: str,
          known_spec: tuple[bytes, config_mod.Config] | None) -> int:
    from .stages import ROLES

    cfg = load_spec(runtime_dir, instance, known_spec)
    hftd_log.set_level(cfg.supervisor.log_level)
    spec = {a.name: a for a in topology.agents(cfg)}.get(agent_name)
    if spec is None:
        hftd_log.get("hftd agent").error(f"no agent {agent_name!r} in instance {instance!r}")
        return 2
    # a terminal's hangup is the supervisor's business (it reloads); agents ignore it
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pin(spec.cpus)
    ctx = AgentContext(cfg, agent_name, runtime_dir)
    ctx.stats.q_header[stats.H_PID] = os.getpid()
    ctx.stats.set_state(stats.STARTING)
    agent = ROLES[role](ctx)
    try:
        ended = _profiled(run, agent, ctx)
    finally:
        ctx.close()
    return 0 if ended else EXIT_ON_SIGNAL
