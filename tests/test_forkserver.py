"""Agents forked from the fork server (hftd.forkserver): what they are to the supervisor and
to `ps`, and the way back to fresh interpreters when forking is unsafe or the fork server is
gone. (Memory itself is measured by bench/memory.py, not here.)"""

from __future__ import annotations

import json
import os
import signal
import time

import psutil

from conftest import agent, agents_of, kill_agent, start_hftd, stop, wait_running

ROLES = ("producer", "dispatcher", "strategy", "executor")


def _fork_server(sup: psutil.Process) -> psutil.Process | None:
    for k in sup.children():
        try:
            if "fork-server" in k.cmdline():
                return k
        except psutil.Error:
            pass
    return None


def _sockets(p: psutil.Process) -> int:
    return sum(os.readlink(f"/proc/{p.pid}/fd/{fd}").startswith("socket:")
               for fd in os.listdir(f"/proc/{p.pid}/fd"))


def test_forked_agents_are_the_supervisors_children_and_say_what_they_are(instance, tmp_path):
    proc = start_hftd(instance, tmp_path, toml='[metrics]\nlisten = "127.0.0.1:0"\n')
    try:
        wait_running(instance)
        sup = psutil.Process(proc.pid)
        fs = _fork_server(sup)
        assert fs is not None and fs.name() == "hftd-forkserver"
        assert fs.cmdline()[:4] == ["hftd", "fork-server", "--instance", instance]
        for role in ROLES:
            a = agent(proc, role)
            cmd = [c for c in a.cmdline() if c]
            assert a.ppid() == proc.pid  # reparented to the supervisor, a subreaper
            assert cmd[cmd.index("agent") + 1] == role and instance in cmd, cmd
            assert a.name() == f"hftd-{role}"[:15]
            assert os.getpgid(a.pid) == a.pid  # its own process group, as Popen gave it
            assert _sockets(a) == 0, role  # no descriptor of the supervisor's but the lock
            assert os.stat(f"/proc/{a.pid}/fd/0").st_rdev == os.stat(os.devnull).st_rdev
        assert _sockets(sup) > 0  # (the supervisor does have its sockets)
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err
    assert "new interpreters" not in err


def test_without_a_safe_fork_agents_start_as_new_interpreters(instance, tmp_path, monkeypatch):
    """OpenBLAS allowed a second thread: the supervisor is not forked, says so, and runs its
    agents as before (python -m hftd agent ...)."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    rep = tmp_path / "r.json"
    proc = start_hftd(instance, tmp_path, "--ticks", "20000", "--rate", "20000", "--report",
                      str(rep), toml='[metrics]\nlisten = ""\n')
    try:
        wait_running(instance)
        sup = psutil.Process(proc.pid)
        assert _fork_server(sup) is None
        kids = agents_of(sup)
        assert all(k.cmdline()[1:4] == ["-m", "hftd", "agent"] for k in kids), kids
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "agents start as new interpreters (no fork server: the supervisor already runs" in err
    t = json.loads(rep.read_text())["ticks"]
    assert t["received"] == t["delivered_to_strategies"] == 20000


def test_a_dead_fork_server_leaves_the_agents_running_and_restarts_fall_back(instance, tmp_path):
    rep = tmp_path / "r.json"
    proc = start_hftd(instance, tmp_path, "--ticks", "60000", "--rate", "20000", "--report",
                      str(rep), toml='[metrics]\nlisten = ""\n')
    try:
        wait_running(instance)
        sup = psutil.Process(proc.pid)
        before = {a.pid for a in agents_of(sup)}
        fs = _fork_server(sup)
        os.kill(fs.pid, signal.SIGKILL)
        time.sleep(0.3)
        assert {a.pid for a in agents_of(sup)} == before  # they follow the supervisor only
        kill_agent(proc, instance, "dispatcher", after_s=0.0)
        wait_running(instance)
        new = agent(proc, "dispatcher", not_pids=before)
        assert new.cmdline()[1:5] == ["-m", "hftd", "agent", "dispatcher"]  # exec'd
    finally:
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "agents start as new interpreters from now on" in err
    r = json.loads(rep.read_text())
    assert r["ticks"]["received"] == r["ticks"]["delivered_to_strategies"] == 60000
    assert r["stages"]["dispatcher"]["restarts"] == 1
