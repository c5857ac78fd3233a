"""Shared fixtures. Every test that creates shared memory or processes gets a unique instance
name and cleans up after itself even when it fails, so one failure never poisons the next."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest

from bench.common import kill_instance_processes as _kill_instance_processes
from hftd import shm


@pytest.fixture(autouse=True)
def _private_state(tmp_path_factory, monkeypatch):
    """Every test (and every process it starts) keeps its state store and conditions under a
    directory of its own, never in the user's ~/.local/state."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)


@pytest.fixture
def instance():
    """A unique instance name; its processes and /dev/shm objects are removed afterwards."""
    name = "t" + uuid.uuid4().hex[:12]
    yield name
    _kill_instance_processes(name)
    shm.remove_leftovers(name)


@pytest.fixture
def shm_name(instance):
    """Factory of shared-memory object names inside the test's instance."""
    return lambda what: shm.object_name(instance, what)


@pytest.fixture
def make_ring(shm_name):
    """Factory: make_ring(capacity, slot_size, what) -> a Ring of this test's instance;
    removed afterwards."""
    from hftd.ring import Ring

    made = []

    def _make(capacity=8, slot_size=32, what=None):
        r = Ring.create(shm_name(what or f"ring{len(made)}"), capacity, slot_size)
        made.append(r)
        return r

    yield _make
    for r in made:
        r.unlink()
        r.close()


HFTD = [sys.executable, "-m", "hftd"]


def hftd(*args, timeout=120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(HFTD + list(args), capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture
def run_hftd(instance, tmp_path):
    """Run `hftd run` for this test's instance with a private runtime dir; returns the
    CompletedProcess. Extra TOML goes in `toml`."""

    def _run(*args, toml: str = "", timeout=180):
        cfg = tmp_path / "hftd.toml"
        cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n' + toml)
        return hftd("run", "--config", str(cfg), *args, timeout=timeout)

    return _run


# a line hftd logs anywhere but to journald (hftd.log): local time to the ms, level, text
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) "
                      r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)")


def log_records(text: str) -> list[tuple[str, str]]:
    """(level, text) of each record in `text`, hftd's stderr read from a pipe or a file; a
    line that is not a record's first (a traceback's) is left out."""
    return [(m.group(2), m.group(3)) for line in text.splitlines()
            if (m := LOG_LINE.fullmatch(line))]


def start_hftd(instance, tmp_path, *args, toml: str = "") -> subprocess.Popen:
    cfg = tmp_path / "hftd.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n' + toml)
    return subprocess.Popen(HFTD + ["run", "--config", str(cfg), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_running(instance: str, agents=("producer", "dispatcher", "strategy.sample", "executor"),
                 timeout: float = 60.0) -> None:
    """Until every named agent of `instance` reports RUNNING in its stats block (a process
    that exists may still be importing)."""
    import time

    from hftd import stats

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            states = []
            for a in agents:
                blk = stats.StatsBlock.attach(shm.object_name(instance, f"stats.{a}"))
                states.append(blk.state)
                blk.close()
            if all(s == stats.RUNNING for s in states):
                return
        # (ValueError: a segment the supervisor has made but not sized yet, "cannot mmap an
        # empty file": found failing kill_agent under load)
        except (FileNotFoundError, RuntimeError, ValueError):
            pass
        time.sleep(0.02)
    raise AssertionError(f"agents {agents} of {instance} not running within {timeout} s")


@contextlib.contextmanager
def hftd_running(instance, tmp_path, *args, toml: str = ""):
    """`start_hftd` for a `with` block: whatever happens in it, the supervisor does not
    outlive it (killed and reaped; the `instance` fixture then removes its agents)."""
    proc = start_hftd(instance, tmp_path, *args, toml=toml)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def agents_of(sup: psutil.Process) -> list[psutil.Process]:
    """The supervisor `sup`'s children that are agents (not its fork server; hftd.forkserver),
    as their command lines say."""
    out = []
    for k in sup.children():
        try:
            if "agent" in k.cmdline():
                out.append(k)
        except psutil.Error:  # exited meanwhile
            pass
    return out


def agent(proc: subprocess.Popen, role: str, not_pids=(), timeout: float = 30.0) -> psutil.Process:
    """The supervisor `proc`'s live agent whose command line names `role` ("producer",
    "dispatcher", "strategy", "executor"), other than `not_pids`; waits until there is one."""
    sup = psutil.Process(proc.pid)
    deadline = time.monotonic() + timeout
    while True:
        for k in sup.children():
            try:
                cmd = k.cmdline()
            except psutil.Error:  # exited meanwhile (a zombie until reaped)
                continue
            if k.pid not in not_pids and "agent" in cmd and role in cmd:
                return k
        if time.monotonic() > deadline:
            raise AssertionError(f"no {role} agent of pid {proc.pid} within {timeout} s")
        time.sleep(0.02)


def kill_agent(proc: subprocess.Popen, instance: str, role: str, after_s: float) -> None:
    """Once every agent of `instance` runs, let it work `after_s`, then SIGKILL agent `role`
    and return when the supervisor has spawned its replacement (whose stats block no longer
    says RUNNING until it is up again, so a following `wait_running` really waits). The
    spawn is seen in the stats block (its restart count), not by finding the new process: a
    forked agent that refuses to start is gone within milliseconds."""
    from hftd import stats

    wait_running(instance)
    time.sleep(after_s)
    victim = agent(proc, role)
    cmd = victim.cmdline()
    name = f"strategy.{cmd[cmd.index('--name') + 1]}" if role == "strategy" else role
    blk = stats.StatsBlock.attach(shm.object_name(instance, f"stats.{name}"))
    try:
        before = int(blk.q_header[stats.H_RESTARTS])
        victim.kill()
        victim.wait(10)
        deadline = time.monotonic() + 30
        while int(blk.q_header[stats.H_RESTARTS]) == before or (
                blk.state == stats.RUNNING and blk.pid == victim.pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} of {instance} not restarted within 30 s")
            time.sleep(0.002)
    finally:
        blk.close()


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout=60):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


class Plant:
    """An instance's shared memory, created as the supervisor would, with no processes:
    tests build stage objects in-process on it and drive `do_work` by hand."""

    def __init__(self, cfg):
        from hftd.supervisor import Supervisor

        self.cfg = cfg
        self.sup = Supervisor(cfg)
        self.sup._create()
        self.contexts = []
        self.reconciles = 0

    def context(self, agent: str):
        from hftd.agent import AgentContext

        ctx = AgentContext(self.cfg, agent, self.cfg.runtime_dir)
        self.contexts.append(ctx)
        return ctx

    def answer_reconcile(self, stage, orders_reader=None, reports_writer=None,
                         positions: dict | None = None, orders=()) -> None:
        """Stand in for the executor at a strategy stage's start: take its RECONCILE from
        the orders ring (with `orders_reader` if the test has one) and answer as the executor
        does, a snapshot (`positions`: symbol -> Position.values(); `orders`: working orders
        as the executor lists them) and RECONCILED on the reports ring (`reports_writer`)."""
        from hftd.events import Codec, Control, ControlKind, OrderStream
        from hftd.ring import RingReader, RingWriter
        from hftd.stages.common import offer_control
        from hftd.stages.executor import write_snapshot

        name = stage.name
        r = orders_reader or RingReader(self.ring(f"orders.{name}"))
        for _ in range(1000):
            stage.do_work()
            if r.available():
                break
        ev = r.read(Codec(OrderStream).decode, 1)[0]
        assert isinstance(ev, Control) and ev.kind == ControlKind.RECONCILE, ev
        r.commit(1)
        self.reconciles += 1
        write_snapshot(stage.ctx.runtime_dir, self.cfg.instance, name, self.reconciles,
                       positions or {}, list(orders))
        w = reports_writer or RingWriter(self.ring(f"reports.{name}"))
        assert offer_control(w, ControlKind.RECONCILED, self.reconciles)
        for _ in range(1000):
            if not stage.reconciling:
                return
            stage.do_work()
        raise AssertionError("the strategy stage did not take the snapshot")

    def ring(self, name: str):
        return self.sup.rings[name]

    def close(self):
        """Close and remove it all (once: a test may stop its daemon early)."""
        if self.contexts is None:
            return
        for c in self.contexts:
            c.close()
        self.contexts = None
        self.sup._destroy()


@pytest.fixture
def plant(instance, tmp_path):
    """Factory: plant(overrides: dict) -> Plant for this test's instance; removed afterwards."""
    from hftd import config

    made = []

    def _make(overrides: dict | None = None) -> Plant:
        o = {"instance": instance, "runtime_dir": str(tmp_path / "run")}
        config._merge(o, overrides or {})
        import os as _os

        _os.makedirs(o["runtime_dir"], exist_ok=True)
        p = Plant(config.load(overrides=o))
        made.append(p)
        return p

    yield _make
    for p in made:
        p.close()


OTHER_USER = "hftdtest"


@pytest.fixture(scope="session")
def other_user():
    """(uid, gid) of a second local user, created with useradd when the tests run as root;
    the test is skipped, saying why, otherwise."""
    import pwd
    import shutil

    if os.geteuid() != 0:
        pytest.skip("needs root to create a second local user (useradd)")
    try:
        pw = pwd.getpwnam(OTHER_USER)
    except KeyError:
        if not shutil.which("useradd"):
            pytest.skip("useradd is not available to create a second local user")
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                        OTHER_USER], check=True, capture_output=True)
        pw = pwd.getpwnam(OTHER_USER)
    return pw.pw_uid, pw.pw_gid
