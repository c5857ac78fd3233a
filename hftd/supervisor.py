"""The supervisor: `hftd run`. Creates the instance's shared memory, starts and watches the
agents, and on SIGINT/SIGTERM (or at the end of `--duration`/`--ticks`) stops the pipeline
front to back so every ring drains, then removes everything it created.

Crash-only start-up: an instance is one lock file (flock) in the runtime directory. Holding
it proves no other supervisor of this instance and user is alive, so whatever of the
instance is still in /dev/shm is debris of a crashed run: it is removed, and nothing else.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time

import msgspec

from . import agent as agent_mod
from . import config as config_mod
from . import report as report_mod
from . import control as control_mod
from . import shm, stats, topology
from .events import ControlKind
from .monitor import InstanceView
from .ring import Ring, RingWriter, require_supported_platform
from .stages import ROLES
from .stages.common import offer_control
from .systemd import Notifier


class SupervisorError(RuntimeError):
    pass


class _Agent:
    def __init__(self, spec: topology.AgentSpec):
        self.spec = spec
        self.name = spec.name
        self.proc: subprocess.Popen | None = None
        self.block: stats.StatsBlock | None = None
        self.restarts = 0
        self.finished = False  # exited 0 after passing on its end of stream
        self.told_to_start = False  # (producer) START sent since it was last spawned


class Supervisor:
    def __init__(self, cfg: config_mod.Config, duration: float | None = None,
                 report_path: str | None = None, out=sys.stderr):
        self.cfg = cfg
        self.instance = cfg.instance
        self.duration = duration
        self.report_path = report_path
        self.out = out
        self.runtime_dir = cfg.resolved_runtime_dir()
        self.agents = [_Agent(s) for s in topology.agents(cfg)]
        self.rings: dict[str, Ring] = {}
        self.control: dict[str, RingWriter] = {}
        self.bells: dict[str, object] = {}
        self.created: list[tuple[str, str]] = []  # (kind, name) for clean-up
        self.stop_requested = False
        self.stopping = False
        self.notifier = Notifier()
        self._lock_fd = None
        self.report: dict | None = None
        self.server: control_mod.Server | None = None
        self.view: InstanceView | None = None
        self.metrics_server = None
        self.alarms_seen = 0
        self.paused = False

    def log(self, msg: str) -> None:
        print(f"hftd[{self.instance}]: {msg}", file=self.out, flush=True)

    def obj(self, what: str) -> str:
        return shm.object_name(self.instance, what)

    # --- lifecycle ------------------------------------------------------------------------
    def preflight(self) -> None:
        """Fail before touching anything on what the config names but cannot be had."""
        from .stages.strategy import load_strategy_class

        for s in self.cfg.strategies:
            try:
                load_strategy_class(s.class_)
            except ValueError as e:
                raise config_mod.ConfigError(f"strategies[{s.name}].class: {e}") from None

    def run(self) -> int:
        require_supported_platform()
        agent_mod.pin(self.cfg.supervisor.cpus)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        self._lock()
        t0 = time.monotonic()
        rc = 1
        try:
            self._create()
            self.server = control_mod.Server(
                control_mod.socket_path(self.runtime_dir, self.instance), self._command)
            self._serve_metrics()
            rc = self._monitor() if self._start_all() else 0
        except SupervisorError as e:
            self.log(f"error: {e}")
            rc = 1
        finally:
            self.notifier.stopping()
            self._stop_all()
            try:
                self.report = self._final_report(time.monotonic() - t0)
            except Exception as e:  # the report must never keep shm from being removed
                self.log(f"could not build the report: {e!r}")
            if self.server is not None:
                self.server.close()
            if self.metrics_server is not None:
                self.metrics_server.shutdown()
                self.metrics_server.server_close()
            self._destroy()
            self._unlock()
        if self.report is not None:
            print(report_mod.summary_text(self.report), file=self.out, flush=True)
            if self.report_path:
                with open(self.report_path, "w") as f:
                    json.dump(self.report, f, indent=2)
                self.log(f"report written to {self.report_path}")
        return rc

    def _on_signal(self, signum, frame) -> None:
        if self.stop_requested:
            self.log("second signal: stopping without waiting for the rings to drain")
            self.stopping = True
        self.stop_requested = True

    def _lock(self) -> None:
        os.makedirs(self.runtime_dir, mode=0o700, exist_ok=True)
        path = os.path.join(self.runtime_dir, f"{self.instance}.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SupervisorError(
                f"instance {self.instance!r} is already running (lock {path} is held)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        stale = shm.remove_leftovers(self.instance)
        if stale:
            self.log(f"removed {len(stale)} stale shared-memory objects of a crashed earlier "
                     f"run: {' '.join(stale)}")

    def _unlock(self) -> None:
        try:
            os.unlink(agent_mod.spec_path(self.runtime_dir, self.instance))
        except FileNotFoundError:
            pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # the lock file stays: unlinking it would race a new run
            self._lock_fd = None

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
        spec = agent_mod.spec_path(self.runtime_dir, self.instance)
        fd = os.open(spec, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(msgspec.json.encode(self.cfg))

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
    def _spawn(self, a: _Agent) -> None:
        role = a.spec.role
        cmd = [sys.executable, "-m", "hftd", "agent", role]
        if role == "strategy":
            cmd += ["--name", a.name.split(".", 1)[1]]
        cmd += ["--instance", self.instance, "--runtime-dir", self.runtime_dir]
        a.block.set_state(0)
        # own process group: a terminal's Ctrl-C reaches only the supervisor, which then
        # drains the pipeline in order instead of every agent stopping at once
        a.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, process_group=0)
        a.finished = False
        a.told_to_start = False

    def _start_all(self) -> bool:
        """Start every agent and wait until all run; False if asked to stop meanwhile."""
        for a in self.agents:
            self._spawn(a)
        deadline = time.monotonic() + self.cfg.supervisor.start_timeout_s
        while True:
            states = {a.name: a.block.state for a in self.agents}
            if all(s >= stats.RUNNING for s in states.values()):
                break
            for a in self.agents:
                rc = a.proc.poll()
                if rc is not None and a.block.state < stats.RUNNING:
                    raise SupervisorError(f"agent {a.name} exited with code {rc} while starting")
            if time.monotonic() > deadline:
                slow = [n for n, s in states.items() if s < stats.RUNNING]
                raise SupervisorError(
                    f"agents {slow} not up within {self.cfg.supervisor.start_timeout_s} s")
            if self.stop_requested:
                self.log("stop requested while starting")
                return False
            time.sleep(0.01)
        self._start_producer()
        pids = " ".join(f"{a.name}={a.proc.pid}" for a in self.agents)
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
            self.log(f"WARNING: cannot serve metrics on {self.cfg.metrics.listen} ({e.strerror}); "
                     f"/metrics is off for this run")
            return
        self.log(f"metrics on http://{host}:{bound}/metrics")

    # --- control ------------------------------------------------------------------------
    def _command(self, cmd: str) -> control_mod.Reply:
        if cmd == "ping":
            return control_mod.Reply(True, f"running; trading {'paused' if self.paused else 'on'}")
        if cmd == "stop":
            self.stop_requested = True
            return control_mod.Reply(True, "stopping: draining the pipeline")
        n = self._broadcast(ControlKind.PAUSE if cmd == "pause" else ControlKind.RESUME)
        self.paused = cmd == "pause"
        self.log(f"trading {'paused (kill switch on)' if self.paused else 'resumed'} by request")
        return control_mod.Reply(True, f"{cmd} sent to {n} agents")

    def _broadcast(self, kind: int) -> int:
        """A control event to every agent that trades: the strategies and the executor."""
        sent = 0
        for a in self.agents:
            if a.spec.role not in ("strategy", "executor"):
                continue
            if offer_control(self.control[a.name], kind):
                sent += 1
            else:
                self.log(f"control ring of {a.name} is full: {ControlKind(kind).name} not sent")
        return sent

    def _check_alarms(self) -> None:
        total = sum(a.block.get("alarms") for a in self.agents
                    if a.spec.role in ("strategy", "executor"))
        if total > self.alarms_seen:
            self.alarms_seen = total
            if not self.paused:
                self.paused = True
                self.log("ALARM raised by an agent: kill switch on everywhere (hftd resume to "
                         "trade again)")
                self._broadcast(ControlKind.PAUSE)

    def _check_agents(self) -> None:
        now = time.monotonic_ns()
        hb_limit = int(self.cfg.supervisor.heartbeat_timeout_s * 1e9)
        for a in self.agents:
            if a.finished:
                continue
            rc = a.proc.poll()
            if rc is not None:
                if rc == 0 and a.block.state == stats.STOPPED:
                    a.finished = True
                    continue
                self._restart(a, f"exited with code {rc}")
            elif a.block.state == stats.RUNNING and not a.block.fresh(now, hb_limit):
                self.log(f"agent {a.name} (pid {a.proc.pid}) silent for "
                         f"{(now - a.block.heartbeat_ns) / 1e9:.1f} s: killing it")
                a.proc.kill()
                a.proc.wait()
                self._restart(a, "hung")

    def _start_producer(self) -> None:
        """START to the producer once it runs (again): it takes no tick before the whole
        pipeline is up, so no tick waits for an agent that is still starting."""
        p = self.agents[0]
        if p.told_to_start or p.block.state != stats.RUNNING:
            return
        if offer_control(self.control[p.name], ControlKind.START):
            p.told_to_start = True

    def _healthy(self) -> bool:
        """Every agent finished its stream, or runs with a fresh heartbeat."""
        now = time.monotonic_ns()
        limit = int(self.cfg.supervisor.heartbeat_timeout_s * 1e9)
        return all(a.finished or (a.proc.poll() is None and a.block.fresh(now, limit))
                   for a in self.agents)

    def _restart(self, a: _Agent, why: str) -> None:
        if a.restarts >= self.cfg.supervisor.max_restarts:
            raise SupervisorError(f"agent {a.name} {why}; restarted {a.restarts} times already, "
                                  f"giving up")
        a.restarts += 1
        a.block.q_header[stats.H_RESTARTS] = a.restarts
        self.log(f"agent {a.name} {why}: restarting it ({a.restarts}/"
                 f"{self.cfg.supervisor.max_restarts}); it resumes at its rings' cursors")
        self._spawn(a)

    def _monitor(self) -> int:
        interval = self.cfg.supervisor.status_interval_s
        started = time.monotonic()
        next_status = started + interval if interval > 0 else float("inf")
        watchdog = self.notifier.watchdog_interval_s
        next_watchdog = started
        last = self.view.sample()
        while True:
            if self.stop_requested:
                self.log("stopping: draining the pipeline front to back")
                return 0
            if self.duration is not None and time.monotonic() - started >= self.duration:
                self.log(f"duration of {self.duration:g} s reached: draining")
                return 0
            self._check_agents()
            self._start_producer()
            self._check_alarms()
            if all(a.finished for a in self.agents):
                self.log("every agent finished its stream")
                return 0
            now = time.monotonic()
            if watchdog and now >= next_watchdog and self._healthy():
                self.notifier.watchdog()
                next_watchdog = now + watchdog
            if now >= next_status:
                cur = self.view.sample()
                line = self._status_line(last, cur)
                print(line, file=self.out, flush=True)
                self.notifier.status(line)
                last = cur
                next_status = now + interval
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
        pipeline order; the end-of-stream marker drains each ring behind it. An agent that
        does not finish in time is terminated, then killed."""
        timeout = self.cfg.supervisor.stop_timeout_s
        if self.stopping:
            timeout = 0.5
        producer = self.agents[0]
        if producer.proc is not None and producer.proc.poll() is None:
            if not offer_control(self.control[producer.name], ControlKind.SHUTDOWN):
                producer.proc.send_signal(signal.SIGTERM)
        drained = True
        for a in self.agents:
            if a.proc is None:
                continue
            if not drained and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)  # nothing will reach it: stop it now
            try:
                a.proc.wait(timeout)
                continue
            except subprocess.TimeoutExpired:
                pass
            drained = False
            self.log(f"agent {a.name} did not finish within {timeout:g} s: terminating it")
            a.proc.send_signal(signal.SIGTERM)
            try:
                a.proc.wait(2.0)
            except subprocess.TimeoutExpired:
                self.log(f"agent {a.name} ignored SIGTERM: killing it")
                a.proc.kill()
                a.proc.wait()

    def _final_report(self, wall_time_s: float) -> dict:
        rep = self.view.report(wall_time_s)
        rep["instance"] = self.instance
        rep["pids"] = {a.name: a.proc.pid for a in self.agents if a.proc is not None}
        return rep
