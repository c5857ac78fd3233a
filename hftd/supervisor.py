"""The supervisor: `hftd run`. Creates the instance's shared memory, starts and watches the
agents, and on SIGINT/SIGTERM (or at the end of `--duration`/`--ticks`) stops the pipeline
front to back so every ring drains, then removes everything it created.

Crash-only start-up: an instance is one lock (`hftd.identity`) beside its shared memory.
Holding it proves no process of an earlier run of this instance and user is alive (the
agents share the locked file), so whatever of the instance is still in /dev/shm is debris
of a crash: it is removed, and nothing else.

Restart policy (systemd's RestartSec/StartLimitBurst/StartLimitIntervalSec): an agent that
dies, hangs or leaves without being told to is restarted after a delay that doubles with
each crash; more than `restart_burst` crashes within `restart_window_s` and it is given up:
a strategy is quarantined (its ticks are no longer fed, its orders are canceled, the rest
keep trading), any other agent ends the run. Signals: SIGINT/SIGTERM drain and stop, a
second one stops within a second (abandoning what is in the rings, reported, exit 1);
SIGHUP reloads what may change live. The control socket is served throughout, the drain
included, so the kill switch always answers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import msgspec

from . import agent as agent_mod
from . import commands
from . import config as config_mod
from . import forkserver, identity, lifeline, procfs
from . import log as hftd_log
from . import report as report_mod
from . import control as control_mod
from . import shm, stats, topology
from .trading import store as store_mod
from .events import ControlKind
from .monitor import InstanceView
from .ring import Ring, RingWriter, require_supported_platform
from .stages import ROLES
from .stages.common import offer_control
from .stages.executor import snapshot_path, state_path, unmanageable, venue_log_path
from .venues.sim import check_log
from .systemd import PRIVATE_ENV, Notifier

# config keys `hftd reload` (SIGHUP) may change while running; any other change needs a restart
LIVE_KEYS = (r"executor\.risk(\..*)?", r"idle(\..*)?", r"supervisor\.status_interval_s",
             r"strategies\[[^\]]+\]\.params(\..*)?")
_LIVE = re.compile("|".join(f"(?:{k})" for k in LIVE_KEYS))
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT)  # drain and stop (QUIT as nginx)
# logrotate's "reopen logs" and stray timers: hftd logs to stderr, nothing to reopen
IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM)
SECOND_SIGNAL_S = 0.25
STATUS_S = 1.0  # STATUS= this often under systemd when no status line is logged
# what a stop needs beyond waiting for one agent's drain: terminating the ones left (2 s at
# most), the report, removing the shared memory. Added to each EXTEND_TIMEOUT_USEC.
STOP_SLACK_S = 10.0


class SupervisorError(RuntimeError):
    pass


class _Agent:
    def __init__(self, spec: topology.AgentSpec, index: int):
        self.spec = spec
        self.name = spec.name
        self.index = index  # strategies: the position in the config (QUARANTINE's argument)
        self.proc: subprocess.Popen | forkserver.ForkedAgent | None = None
        self.block: stats.StatsBlock | None = None
        self.restarts = 0
        self.crashes: list[float] = []  # monotonic times of crashes within the window
        self.restart_at: float | None = None  # dead, to be restarted then
        self.finished = False  # exited 0 after passing on its end of stream
        self.quarantined = False
        self.told_to_start = False  # (producer) START sent since it was last spawned
        self.told_to_stop = False  # (producer) SHUTDOWN sent since it was last spawned
        self.command_seq = 0  # the last command handed to it (hftd.commands) ...
        self.command_sent = 0.0  # ... and when

    @property
    def out(self) -> bool:
        """Out of the pipeline for good: finished its stream or quarantined."""
        return self.finished or self.quarantined


def describe_exit(rc: int, state: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    if rc == agent_mod.EXIT_ON_SIGNAL and state == stats.EXITED:
        return "left on SIGTERM/SIGINT without being told to stop"
    return f"exited with code {rc}"


def changed_keys(old, new, path: str = "") -> list[str]:
    """Dotted key paths whose values differ between two config dicts (strategies by name)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in old or k not in new:
                out.append(sub)
            else:
                out += changed_keys(old[k], new[k], sub)
        return out
    if path == "strategies" and isinstance(old, list) and isinstance(new, list):
        if [s.get("name") for s in old] != [s.get("name") for s in new]:
            return ["strategies"]
        out = []
        for a, b in zip(old, new):
            out += changed_keys(a, b, f"strategies[{a.get('name')}]")
        return out
    return [] if old == new else [path]


class Supervisor:
    def __init__(self, cfg: config_mod.Config, duration: float | None = None,
                 report_path: str | None = None, out=None,
                 config_path: str | None = None, overrides: dict | None = None):
        if cfg.producer.feed == "pfcf" or cfg.executor.venue == "pfcf":
            from .pfcf import pin_expiries

            cfg = pin_expiries(cfg, time.time())  # one contract per instrument for the run
        self.cfg = cfg
        self.instance = cfg.instance
        self.duration = duration
        self.report_path = report_path
        self.out = out  # the end-of-run summary (None: stdout); the log is on stderr
        self.log = hftd_log.get(f"hftd[{self.instance}]")
        self.config_path = config_path  # re-read by reload
        self.overrides = overrides
        self.runtime_dir = cfg.resolved_runtime_dir()
        specs = topology.agents(cfg)
        strategy_index = {topology.strategy_agent(s.name): i for i, s in enumerate(cfg.strategies)}
        self.agents = [_Agent(s, strategy_index.get(s.name, -1)) for s in specs]
        self.rings: dict[str, Ring] = {}
        self.control: dict[str, RingWriter] = {}
        self.bells: dict[str, object] = {}
        self.created: list[tuple[str, str]] = []  # (kind, name) for clean-up
        self.stop_requested = False
        self.stopping = False
        self.force = False  # a second signal: stop now, whatever is left in the rings
        self.reload_requested = False
        self.stop_requested_at = 0.0
        self.ignored_signal = 0
        self.failed = False  # a fatal error: stop at once, no drain
        self.notifier = Notifier()
        self.lock = identity.InstanceLock(self.instance)
        self.report: dict | None = None
        self.server: control_mod.Server | None = None
        self.view: InstanceView | None = None
        self.metrics_server = None
        self.forkserver: forkserver.ForkServer | None = None
        self.alarms_seen = 0
        self.paused = False
        self.control_backlog: list[tuple[str, int, int]] = []  # (agent, kind, arg) not yet sent
        self.command_seq = 0
        self.abandoned: dict[str, int] = {}
        self.lost: dict[str, int] = {}

    def obj(self, what: str) -> str:
        return shm.object_name(self.instance, what)

    # --- lifecycle ------------------------------------------------------------------------
    def run(self) -> int:
        """The whole life of the instance; returns the exit status (0 ok, 1 failure, 2 a
        runtime directory that must be fixed first)."""
        # the log's form from here on (here, not in the CLI: tests drive the CLI in-process,
        # with a stand-in Supervisor, and the test process's log must stay as it is)
        hftd_log.setup(self.cfg.supervisor.log_level)
        require_supported_platform()
        agent_mod.pin(self.cfg.supervisor.cpus)
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._on_signal)
        signal.signal(signal.SIGHUP, self._on_hangup)
        for sig in IGNORED_SIGNALS:
            signal.signal(sig, self._on_ignored)
        for signum in lifeline.early_signals():  # arrived while hftd was still importing
            self._on_signal(signum, None)
        try:
            identity.check_runtime_dir(self.runtime_dir, create=True)
            self._lock()
        except identity.RuntimeDirError as e:
            self.log.error(f"error: {e}")
            return 2
        except (identity.IdentityError, shm.NameTaken) as e:
            self.log.error(f"error: {e}")
            return 1
        except OSError as e:
            self.log.error(f"error: cannot take the instance lock {self.lock.path}: {e.strerror}")
            return 1
        try:
            self._check_state()
        except (identity.RuntimeDirError, store_mod.StateError) as e:
            self.log.error(f"error: {e}")
            self._unlock()
            return 2
        t0 = time.monotonic()
        rc = 1
        try:
            self._start_forkserver()  # first: before any thread, shared memory or socket
            self._create()
            self.server = control_mod.Server(
                control_mod.socket_path(self.runtime_dir, self.instance), self._command,
                self.log.warning)  # (it says only what failed)
            self._serve_metrics()
            rc = self._monitor() if self._start_all() else 0
        except (SupervisorError, shm.NameTaken, OSError) as e:
            self.log.error(f"error: {e}")
            self.failed = True
            rc = 1
        finally:
            self.stopping = True
            self.notifier.stopping()
            self._stop_all()
            try:
                self.report = self._final_report(time.monotonic() - t0)
            except Exception as e:  # the report must never keep shm from being removed
                self.log.error(f"could not build the report: {e!r}")
            if self.server is not None:
                self.server.close()
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            self._destroy()
            if self.forkserver is not None:
                self.forkserver.close()
            self._unlock()
        if self.report is not None:
            # the run's output, not a diagnostic: `hftd run > file` keeps it
            rc = self._print_summary(rc)
        if self.abandoned:
            self.log.error("stop abandoned events: " + ", ".join(
                f"{k} {v}" for k, v in self.abandoned.items()))
            rc = rc or 1
        if self.lost:
            self.log.error("events lost by agents that left on a signal (held, no room "
                           "downstream): " + ", ".join(f"{k} {v}" for k, v in self.lost.items()))
            rc = rc or 1
        if self.report is not None and self.report["invariants"]:
            for why in self.report["invariants"]:
                self.log.error(f"invariant failed: {why}")
            rc = rc or 1
        quarantined = [a.name for a in self.agents if a.quarantined]
        if quarantined:
            self.log.error(f"quarantined during the run: {' '.join(quarantined)}")
            rc = rc or 1
        if self.report is not None and self.report_path:
            try:
                identity.write_report(self.report_path, msgspec.json.format(
                    msgspec.json.encode(self.report), indent=2) + b"\n")
                self.log(f"report written to {self.report_path}")
            except OSError as e:
                self.log.error(f"error: cannot write the report to {self.report_path}: "
                               f"{e.strerror}")
                rc = rc or 1
        return rc

    def _print_summary(self, rc: int) -> int:
        """Write the summary to stdout; a stdout that cannot take it (`> /dev/full`, a pipe
        whose reader has gone: `| head -1` once head exits) is logged as an error and the run
        exits 1, but what follows still happens: the --report file, the invariant and
        abandoned-event lines. Found: the OSError propagated, so the report was never written
        and nothing said why (click turns EPIPE into a silent exit 1)."""
        out = self.out or sys.stdout
        try:
            print(report_mod.summary_text(self.report), file=out, flush=True)
        except (OSError, ValueError) as e:  # ValueError: a stdout already closed
            why = e.strerror if isinstance(e, OSError) and e.strerror else repr(e)
            self.log.error(f"error: the end-of-run summary could not be written to stdout: "
                           f"{why}")
            if self.out is None:
                # what is left in stdout's buffer would fail again at interpreter exit
                # ("Exception ignored ... BrokenPipeError", exit status 120): stdout goes
                # nowhere from here on (Python's documented answer to EPIPE)
                try:
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, sys.stdout.fileno())
                    os.close(devnull)
                except (OSError, ValueError):
                    pass
            rc = rc or 1
        return rc

    def _on_signal(self, signum, frame) -> None:
        now = time.monotonic()
        # one stop request often arrives as a burst (timeout(1) signals its child and then its
        # process group): a second signal counts only once the first is SECOND_SIGNAL_S old
        if self.stop_requested and now - self.stop_requested_at >= SECOND_SIGNAL_S:
            self.force = True
        if not self.stop_requested:
            self.stop_requested_at = now
        self.stop_requested = True

    def _on_ignored(self, signum, frame) -> None:
        self.ignored_signal = signum  # logged from the loop (no I/O in a signal handler)

    def _on_hangup(self, signum, frame) -> None:
        self.reload_requested = True

    def _lock(self) -> None:
        self.lock.acquire(self.runtime_dir)
        try:
            stale = shm.remove_leftovers(self.instance, keep_lock=True)
            if stale:
                self.log.warning(f"removed {len(stale)} stale shared-memory objects of a crashed "
                                 f"earlier run: {' '.join(stale)}")
            squat = identity.squatters(self.instance)
            if squat:
                raise identity.IdentityError(
                    f"shared memory of this instance's names belongs to another user: "
                    f"{'; '.join(squat)}; remove it (as root or that user) or use another "
                    f"instance name")
        except BaseException:
            self.lock.release()
            raise

    @staticmethod
    def _check_record_dir(path: str) -> None:
        """`[producer] record`: a directory the producer can write, made if missing (found by
        a hostile review: an unwritable one crashed the producer for ever)."""
        try:
            os.makedirs(path, mode=0o750, exist_ok=True)
            probe = os.path.join(path, f".hftd-probe-{os.getpid()}")
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise store_mod.StateError(f"producer.record: cannot write recordings in {path}: "
                                       f"{e.strerror or e}") from None

    def _check_state(self) -> None:
        """The executor's state store (hftd.trading.store), made if missing: every working
        order on record must be one this config can trade (the same strategy at the same
        index, an instrument routed to it), or the executor could neither manage nor cancel
        it. An open position of a strategy or instrument no longer configured is kept in the
        store and named in the log (nothing trades it)."""
        try:
            path = state_path(self.cfg)
            st = store_mod.TradingState.open(path)
        except OSError as e:
            raise store_mod.StateError(f"state directory of {self.cfg.resolved_state_dir()}: "
                                       f"{e.strerror or e}") from None
        try:
            strategies = self.cfg.strategies
            n = len(strategies)
            if n > store_mod.ID_SLOTS:
                raise store_mod.StateError(f"strategies: {n} strategies, the state store keeps "
                                           f"id counters for {store_mod.ID_SLOTS}")
            positions = st.positions()
            names = {store_mod.key(p.symbol): p.symbol for p in positions}
            for o in st.orders():
                why = unmanageable(o, self.cfg)
                if why:
                    sym = names.get(o.instrument_key, "an unknown instrument")
                    raise store_mod.StateError(
                        f"{path} holds working order {o.client_id} ({sym}) that this config "
                        f"cannot manage: {why}. Start with the config it was sent under (the "
                        f"order is then managed and can be canceled), or, if it is known to be "
                        f"gone at the venue, move the file away (positions and id counters "
                        f"start over)")
            pairs = {(sc.name, sym) for sc in strategies for sym in
                     (self.cfg.symbols()[i] for i in self.cfg.routes(sc))}
            for p in positions:
                if p.qty and (p.strategy, p.symbol) not in pairs:
                    self.log.warning(f"warning: {path} holds an open position of {p.qty} "
                                     f"{p.symbol} for strategy {p.strategy}, which this config "
                                     f"does not trade: kept, untouched")
            if st.replayed_journal:
                self.log.warning(f"state store {path}: completed an update interrupted by a crash")
            if self.cfg.executor.venue == "sim" and self.cfg.executor.sim.log:
                check_log(venue_log_path(self.cfg), st.venue_seq)
            if self.cfg.producer.record:
                self._check_record_dir(self.cfg.producer.record)
        finally:
            st.close()

    def _unlock(self) -> None:
        try:
            os.unlink(agent_mod.spec_path(self.runtime_dir, self.instance))
        except FileNotFoundError:
            pass
        for a in self.agents:
            commands.remove_all(self.runtime_dir, self.instance, a.name)
        for scfg in self.cfg.strategies:
            try:
                os.unlink(snapshot_path(self.runtime_dir, self.instance, scfg.name))
            except FileNotFoundError:
                pass
        self.lock.release()

    def _write_spec(self, cfg: config_mod.Config) -> None:
        identity.write_private(agent_mod.spec_path(self.runtime_dir, self.instance),
                               msgspec.json.encode(cfg))

    def _create(self) -> None:
        for spec in topology.rings(self.cfg):
            name = self.obj(spec.name)
            self.rings[spec.name] = Ring.create(name, spec.geometry.capacity,
                                                spec.geometry.slot_size)
            self.created.append(("shm", name))
        for a in self.agents:
            bell = self.obj(topology.doorbell_name(a.name))
            self.bells[a.name] = shm.create_semaphore(bell)
            self.created.append(("sem", bell))
            blk = self.obj(topology.stats_name(a.name))
            a.block = stats.StatsBlock.create(blk, ROLES[a.spec.role].schema(self.cfg))
            self.created.append(("shm", blk))
            self.control[a.name] = RingWriter(self.rings[f"control.{a.name}"], self.bells[a.name])
        self.view = InstanceView(self.cfg, {a.name: a.block for a in self.agents}, self.rings)
        self._write_spec(self.cfg)

    def _destroy(self) -> None:
        for a in self.agents:
            if a.block is not None:
                a.block.close()
        for r in self.rings.values():
            r.close()
        for b in self.bells.values():
            b.close()
        for kind, name in self.created:
            (shm.unlink_semaphore if kind == "sem" else shm.unlink_segment)(name)
        self.created.clear()

    # --- agents -------------------------------------------------------------------------
    def _start_forkserver(self) -> None:
        """Agents are forked from a copy of this process (hftd.forkserver), so they share the
        pages of everything it has imported; where that cannot be done safely, they start as
        new interpreters."""
        try:
            self.forkserver = forkserver.ForkServer.start(self.cfg, self.runtime_dir,
                                                          self.lock.fd)
        except (forkserver.ForkServerError, OSError) as e:
            self.log.warning(f"agents start as new interpreters (no fork server: {e})")

    def _spawn(self, a: _Agent) -> None:
        role = a.spec.role
        name = a.name.split(".", 1)[1] if role == "strategy" else None
        a.block.set_state(0)
        a.proc = None
        if self.forkserver is not None:
            try:
                a.proc = self.forkserver.spawn(role, name)
            except forkserver.ForkServerError as e:
                self.log.warning(f"{e}: agents start as new interpreters from now on")
                self._drop_forkserver()
        if a.proc is None:
            cmd = forkserver.agent_argv(role, name, self.instance, self.runtime_dir, os.getpid())
            env = {k: v for k, v in os.environ.items() if k not in PRIVATE_ENV}
            # own process group: a terminal's Ctrl-C reaches only the supervisor, which then
            # drains the pipeline in order instead of every agent stopping at once. The lock's
            # descriptor goes along: the instance stays locked while any of its processes lives.
            a.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, process_group=0, env=env,
                                      pass_fds=(self.lock.fd,))
        a.restart_at = None
        a.finished = False
        a.told_to_start = False
        a.told_to_stop = False
        # what a new incarnation must know that an earlier one was told: the kill switch,
        # the strategies given up
        if role in ("strategy", "executor") and self.paused:
            self._send(a.name, ControlKind.PAUSE)
        if role in ("dispatcher", "executor"):
            for q in self.agents:
                if q.quarantined:
                    self._send(a.name, ControlKind.QUARANTINE, q.index)

    def _drop_forkserver(self) -> None:
        """The fork server failed: end it, and any agent it forked that we were not told of
        (one it answered too late for), so no role ever runs twice."""
        fs, self.forkserver = self.forkserver, None
        try:
            os.killpg(fs.pid, signal.SIGKILL)  # it and an intermediate it may be waiting for
        except OSError:
            pass
        fs.close(timeout=1.0)
        known = {a.proc.pid for a in self.agents if a.proc is not None}
        time.sleep(0.05)  # an orphan of a killed intermediate is ours once reparented
        for pid in procfs.children(os.getpid()):
            if pid not in known:
                stray = forkserver.ForkedAgent(pid, ["stray"])
                stray.kill()
                stray.wait()

    def _start_all(self) -> bool:
        """Start every agent and wait until all run; False if asked to stop meanwhile. An
        agent that dies while starting is handled by the restart policy like any crash."""
        for a in self.agents:
            self._spawn(a)
        deadline = time.monotonic() + self.cfg.supervisor.start_timeout_s
        while True:
            self._check_agents()
            self._flush_control()
            if all(a.out or (self._alive(a) and a.block.state == stats.RUNNING)
                   for a in self.agents):
                break
            if time.monotonic() > deadline:
                slow = [a.name for a in self.agents
                        if not a.out and a.block.state != stats.RUNNING]
                raise SupervisorError(
                    f"agents {slow} not up within {self.cfg.supervisor.start_timeout_s} s")
            if self.stop_requested:
                self.log("stop requested while starting")
                return False
            self.server.poll(0.01)
        self._start_producer()
        pids = " ".join(f"{a.name}={a.proc.pid}" for a in self.agents if not a.out)
        self.log(f"pipeline up: {pids}")
        self.notifier.ready(f"running: {pids}")
        return True

    def _serve_metrics(self) -> None:
        if not self.cfg.metrics.listen:
            return
        from .exporter import serve

        host, port = self.cfg.metrics.address()
        try:
            self.metrics_server, bound = serve(self.view, host, port)
        except OSError as e:
            # trading does not depend on it: say so loudly and go on
            self.log.warning(f"WARNING: cannot serve metrics on {self.cfg.metrics.listen} "
                             f"({e.strerror}); /metrics is off for this run")
            return
        self.log(f"metrics on http://{host}:{bound}/metrics")

    # --- control ------------------------------------------------------------------------
    def _command(self, req: control_mod.Request) -> control_mod.Reply:
        cmd = req.cmd
        if cmd == "ping":
            state = "stopping" if self.stopping else "running"
            return control_mod.Reply(True, f"{state}; trading {'paused' if self.paused else 'on'}")
        if cmd == "stop":
            if self.stopping:
                return control_mod.Reply(True, "already stopping: draining the pipeline")
            self.stop_requested = True
            return control_mod.Reply(True, "stopping: draining the pipeline")
        if cmd == "reload":
            if self.stopping:
                return control_mod.Reply(False, "reload refused: the instance is stopping")
            return self._reload()
        if cmd == "conditions":
            return self._agent_command(cmd, dict(req.args))
        assert cmd in ("pause", "resume"), cmd
        self.paused = cmd == "pause"
        n = self._broadcast(ControlKind.PAUSE if self.paused else ControlKind.RESUME)
        said = self.log.warning if self.paused else self.log.info  # no trading: a warning
        said(f"trading {'paused (kill switch on)' if self.paused else 'resumed'} by request")
        return control_mod.Reply(True, f"{cmd} sent to {n} agents")

    def _agent_command(self, name: str, args: dict):
        """Hand command `name` to one strategy (`args["strategy"]`, or the only one) and
        answer once it has (hftd.commands); the loop never waits for it."""
        running = {a.name.split(".", 1)[1]: a for a in self.agents
                   if a.spec.role == "strategy" and not a.out}
        target = args.pop("strategy", None)
        if target is None:
            if len(running) != 1:
                return control_mod.Reply(False, f"name the strategy (--strategy): one of "
                                                f"{', '.join(sorted(running)) or 'none running'}")
            target = next(iter(running))
        a = running.get(target)
        if a is None:
            return control_mod.Reply(False, f"no running strategy {str(target)[:40]!r}; running: "
                                            f"{', '.join(sorted(running)) or 'none'}")
        now = time.monotonic()
        if a.command_seq > a.block.get("command_done") and now - a.command_sent < \
                control_mod.PENDING_S:
            return control_mod.Reply(False, f"strategy {target} is still applying the previous "
                                            f"command; try again")
        self.command_seq += 1
        seq = a.command_seq = self.command_seq
        a.command_sent = now
        try:
            commands.write_command(self.runtime_dir, self.instance, a.name,
                                   commands.Command(seq, name, args))
        except OSError as e:
            return control_mod.Reply(False, f"cannot hand the command to {a.name}: {e.strerror}")
        self._send(a.name, ControlKind.COMMAND, seq)

        def answer():
            if a.block.get("command_done") < seq:
                return None
            try:
                rep = commands.read_reply(self.runtime_dir, self.instance, a.name)
            except (OSError, identity.IdentityError, msgspec.DecodeError,
                    msgspec.ValidationError) as e:
                return control_mod.Reply(False, f"{a.name} answered unreadably: {e}")
            if rep.seq != seq:
                return control_mod.Reply(False, f"{a.name} answered command {rep.seq}, not {seq}")
            return control_mod.Reply(rep.ok, rep.detail)

        return control_mod.Pending(answer, control_mod.Reply(
            False, f"{a.name} did not answer within {control_mod.PENDING_S:g} s (restarting?); "
                   f"the command may still be applied: look with `hftd {name} list`"))

    def _reload(self) -> control_mod.Reply:
        """Re-read the config file; apply it if only live keys changed, else change nothing."""
        try:
            new = config_mod.load(self.config_path, self.overrides)
        except config_mod.ConfigError as e:
            return self._refuse_reload(f"config error: {e}")
        if new.producer.feed == "pfcf" or new.executor.venue == "pfcf":
            from .pfcf import pin_expiries

            new = pin_expiries(new, time.time(), running=self.cfg)  # the run's contracts
        changed = changed_keys(config_mod.to_dict(self.cfg), config_mod.to_dict(new))
        if not changed:
            self.log("reload: nothing changed")
            return control_mod.Reply(True, "reload: nothing changed")
        fixed = [k for k in changed if not _LIVE.fullmatch(k)]
        if fixed:
            return self._refuse_reload(
                f"{', '.join(fixed)} cannot change while running (restart the instance for "
                f"that); live keys: executor.risk.*, idle.*, supervisor.status_interval_s, "
                f"strategies[NAME].params")
        try:
            self._write_spec(new)  # first: agents read it, and nothing changes if it fails
        except OSError as e:
            return self._refuse_reload(f"cannot write the agents' config spec in "
                                       f"{self.runtime_dir}: {e.strerror}")
        self.cfg = new
        self.view.cfg = new
        n = self._broadcast(ControlKind.RELOAD, roles=None)
        self.log(f"reloaded {', '.join(changed)} (sent to {n} agents)")
        return control_mod.Reply(True, f"reloaded: {', '.join(changed)}")

    def _refuse_reload(self, why: str) -> control_mod.Reply:
        self.log.warning(f"reload refused, nothing changed: {why}")
        return control_mod.Reply(False, f"reload refused, nothing changed: {why}")

    def _send(self, agent: str, kind: int, arg: int = 0) -> bool:
        """A control event to one agent; one that does not fit now is sent later, in order."""
        if not self.control_backlog and offer_control(self.control[agent], kind, arg):
            return True
        self.control_backlog.append((agent, kind, arg))
        return False

    def _flush_control(self) -> None:
        while self.control_backlog:
            agent, kind, arg = self.control_backlog[0]
            if not offer_control(self.control[agent], kind, arg):
                return
            self.control_backlog.pop(0)

    def _broadcast(self, kind: int, roles=("strategy", "executor")) -> int:
        """A control event to every agent of `roles` (None: all) still in the pipeline."""
        sent = 0
        for a in self.agents:
            if a.out or (roles is not None and a.spec.role not in roles):
                continue
            self._send(a.name, kind)
            sent += 1
        return sent

    def _check_alarms(self) -> None:
        total = sum(a.block.get("alarms") for a in self.agents
                    if a.spec.role in ("producer", "strategy", "executor"))
        if total > self.alarms_seen:
            self.alarms_seen = total
            if not self.paused:
                self.paused = True
                self.log.critical("ALARM raised by an agent: kill switch on everywhere (hftd "
                                  "resume to trade again)")
                self._broadcast(ControlKind.PAUSE)

    def _check_agents(self) -> None:
        now = time.monotonic()
        now_ns = time.monotonic_ns()
        hb_limit = int(self.cfg.supervisor.heartbeat_timeout_s * 1e9)
        for a in self.agents:
            if a.out:
                continue
            if a.restart_at is not None:
                if now >= a.restart_at:
                    a.restarts += 1
                    a.block.q_header[stats.H_RESTARTS] = a.restarts
                    self._spawn(a)
                continue
            rc = a.proc.poll()
            if rc is not None:
                if rc == 0 and a.block.state == stats.STOPPED:
                    a.finished = True
                    continue
                self._crashed(a, describe_exit(rc, a.block.state))
            elif a.block.state == stats.RUNNING and not a.block.fresh(now_ns, hb_limit):
                self.log.error(f"agent {a.name} (pid {a.proc.pid}) silent for "
                               f"{(now_ns - a.block.heartbeat_ns) / 1e9:.1f} s: killing it")
                a.proc.kill()
                a.proc.wait()
                self._crashed(a, "hung")

    def _crashed(self, a: _Agent, why: str) -> None:
        """Restart policy: a delay doubling with each crash in the window, then give up."""
        sc = self.cfg.supervisor
        now = time.monotonic()
        a.crashes = [t for t in a.crashes if now - t < sc.restart_window_s] + [now]
        n = len(a.crashes)
        if n > sc.restart_burst:
            what = (f"agent {a.name} {why}; {n} crashes within {sc.restart_window_s:g} s "
                    f"(restart_burst {sc.restart_burst})")
            if a.spec.role == "strategy":
                self._quarantine(a, what)
                return
            raise SupervisorError(f"{what}: giving up")
        delay = min(sc.restart_delay_max_s, sc.restart_delay_s * 2 ** (n - 1))
        a.restart_at = now + delay
        self.log.warning(f"agent {a.name} {why}: restarting it in {delay:.2f} s (crash {n} of at "
                         f"most {sc.restart_burst} within {sc.restart_window_s:g} s); it resumes "
                         f"at its rings' cursors")

    def _quarantine(self, a: _Agent, why: str) -> None:
        a.quarantined = True
        a.restart_at = None
        a.block.set_state(stats.QUARANTINED)
        self._send("dispatcher", ControlKind.QUARANTINE, a.index)
        self._send("executor", ControlKind.QUARANTINE, a.index)
        self.log.critical(f"ALARM: {why}: strategy quarantined: kill switch on for it, its "
                          f"resting orders canceled, its ticks no longer fed (counted); the other "
                          f"strategies keep trading")
        if all(q.quarantined for q in self.agents if q.spec.role == "strategy"):
            raise SupervisorError("every strategy is quarantined: nothing left to trade")

    def _start_producer(self) -> None:
        """START to the producer once it runs (again): it takes no tick before the whole
        pipeline is up, so no tick waits for an agent that is still starting."""
        p = self.agents[0]
        if p.told_to_start or p.restart_at is not None or p.block.state != stats.RUNNING:
            return
        if offer_control(self.control[p.name], ControlKind.START):
            p.told_to_start = True

    def _healthy(self) -> bool:
        """Every agent out of the pipeline for good, or running with a fresh heartbeat."""
        now = time.monotonic_ns()
        limit = int(self.cfg.supervisor.heartbeat_timeout_s * 1e9)
        return all(a.out or (self._alive(a) and a.block.fresh(now, limit))
                   for a in self.agents)

    @staticmethod
    def _alive(a: _Agent) -> bool:
        """Its process runs (it is not dead, nor waiting for its restart)."""
        return a.restart_at is None and a.proc.poll() is None

    def _monitor(self) -> int:
        started = time.monotonic()
        next_status = started
        watchdog = self.notifier.watchdog_interval_s
        next_watchdog = started
        last = self.view.sample()
        while True:
            if self.ignored_signal:
                self.log.warning(f"{signal.Signals(self.ignored_signal).name} ignored "
                                 f"(SIGINT/SIGTERM stop, SIGHUP reloads)")
                self.ignored_signal = 0
            if self.reload_requested:
                self.reload_requested = False
                try:
                    self._reload()
                except Exception as e:  # a reload must never take the instance down
                    self.log.error(f"reload failed, nothing changed: {e!r}")
            if self.stop_requested:
                self.log("stopping: draining the pipeline front to back")
                return 0
            if self.duration is not None and time.monotonic() - started >= self.duration:
                self.log(f"duration of {self.duration:g} s reached: draining")
                return 0
            self._check_agents()
            self._flush_control()
            self._start_producer()
            self._check_alarms()
            if all(a.out for a in self.agents):
                self.log("every agent finished its stream")
                return 0
            now = time.monotonic()
            if watchdog and now >= next_watchdog and self._healthy():
                self.notifier.watchdog()
                next_watchdog = now + watchdog
            # reload may change it; under systemd STATUS= is kept current even with no line
            interval = self.cfg.supervisor.status_interval(systemd=self.notifier.enabled)
            every = interval or (STATUS_S if self.notifier.enabled else 0)
            if every > 0 and now >= next_status + every:
                cur = self.view.sample()
                line = self._status_line(last, cur)
                if interval > 0:
                    self.log(line)
                self.notifier.status(line)
                last = cur
                next_status = now
            self.server.poll(0.05)

    def _status_line(self, last, cur) -> str:
        rate = InstanceView.rates(last, cur)["ticks_delivered"]
        counts = cur[1]
        occ = " ".join(
            f"{n}={r.occupancy() * 100 / r.capacity:.0f}%"
            for n, r in self.rings.items() if n.startswith("ticks.")
        )
        return (f"ticks/s {rate:,.0f}  ticks {counts['ticks_delivered']}  orders "
                f"{counts['orders']}  fills {counts['fills']}  occupancy {occ}")

    def _stop_all(self) -> None:
        """Front to back: ask the producer to end its stream, then wait for each agent in
        pipeline order; the end-of-stream marker drains each ring behind it. The control
        socket is served meanwhile, and crashed agents are restarted by the usual policy.
        An agent that does not finish within `stop_timeout_s` of the one before it (or a
        second signal) abandons the drain: every agent still running is terminated, then
        killed, and what is left in the rings is reported."""
        if not any(a.proc is not None for a in self.agents):
            return
        timeout = self.cfg.supervisor.stop_timeout_s
        waiting_for = 0
        deadline = time.monotonic() + timeout
        # systemd's TimeoutStopSec would cut a long drain short: ask for each agent's turn
        self.notifier.extend_timeout(timeout + STOP_SLACK_S)
        drained = False
        while not (self.force or self.failed):
            producer = self.agents[0]
            if not producer.told_to_stop and producer.proc is not None and self._alive(producer):
                producer.told_to_stop = offer_control(self.control[producer.name],
                                                      ControlKind.SHUTDOWN)
            try:
                self._check_agents()
            except SupervisorError as e:
                self.log.error(f"while stopping: {e}")
                break
            self._flush_control()
            was_waiting_for = waiting_for
            while waiting_for < len(self.agents) and self.agents[waiting_for].out:
                waiting_for += 1
                deadline = time.monotonic() + timeout
            if waiting_for == len(self.agents):
                drained = True
                break
            if waiting_for != was_waiting_for:
                self.notifier.extend_timeout(timeout + STOP_SLACK_S)
            if time.monotonic() > deadline:
                self.log.error(f"agent {self.agents[waiting_for].name} did not finish within "
                               f"{timeout:g} s: abandoning the drain")
                break
            if self.server is not None:
                self.server.poll(0.02)
            else:
                time.sleep(0.02)
        if self.force:
            self.log.warning("second signal: stopping now, without waiting for the rings to drain")
        self._terminate_all(0.4 if self.force else 2.0)
        if not drained:
            self.abandoned = self._left_in_rings()

    def _terminate_all(self, grace_s: float) -> None:
        alive = [a for a in self.agents if a.proc is not None and a.proc.poll() is None]
        for a in alive:
            a.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for a in alive:
            try:
                a.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning(f"agent {a.name} did not exit on SIGTERM: killing it")
                a.proc.kill()
                a.proc.wait()

    def _left_in_rings(self) -> dict[str, int]:
        """Events still in the data rings, and held by agents, after an abandoned drain
        (the rings of quarantined strategies are reported apart)."""
        shut = {a.name.split(".", 1)[1] for a in self.agents if a.quarantined}
        left = {}
        for name, r in self.rings.items():
            kind, _, owner = name.partition(".")
            if kind == "control" or owner in shut:
                continue
            n = r.published - r.consumed
            if n:
                left[f"ring {name}"] = n
        for a in self.agents:
            for key in ("orders_waiting", "reports_waiting", "conflation_pending"):
                if key in a.block.index and a.block.get(key):
                    left[f"{a.name} {key}"] = a.block.get(key)
        return left

    def _final_report(self, wall_time_s: float) -> dict:
        rep = self.view.report(wall_time_s)
        rep["instance"] = self.instance
        rep["pids"] = {a.name: a.proc.pid for a in self.agents if a.proc is not None}
        rep["quarantined"] = [a.name for a in self.agents if a.quarantined]
        rep["abandoned"] = dict(self.abandoned)
        self.lost = {a.name: int(a.block.q_header[stats.H_LOST]) for a in self.agents
                     if a.block.q_header[stats.H_LOST]}
        rep["lost_on_exit"] = dict(self.lost)
        rep["invariants"] = report_mod.invariants(rep)
        return rep
