"""sd_notify: READY once every agent is up, STATUS lines, WATCHDOG while healthy, STOPPING,
then EXTEND_TIMEOUT_USEC while draining; systemd's variables kept from the agents."""

from __future__ import annotations

import os
import signal
import socket
import subprocess

import psutil
import pytest

from conftest import HFTD, agents_of, start_hftd, stop, wait_running
from hftd.supervisor import STOP_SLACK_S
from hftd.systemd import PRIVATE_ENV


def _notify_run(instance, tmp_path, args, toml="", stop_after_running=False):
    """Run `hftd run ARGS` with a notify socket of the test's; (exit status, stderr, every
    line it sent). With `stop_after_running`, SIGTERM once its agents run (as systemctl stop)."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n'
                   '[metrics]\nlisten = ""\n' + toml)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    proc = subprocess.Popen(HFTD + ["run", "--config", str(cfg), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    msgs = []
    try:
        if stop_after_running:
            wait_running(instance)
            proc.send_signal(signal.SIGTERM)
        while proc.poll() is None:
            try:
                msgs.append(sock.recv(4096).decode())
            except socket.timeout:
                pass
        while True:
            try:
                msgs.append(sock.recv(4096).decode())
            except socket.timeout:
                break
    finally:
        sock.close()
        if proc.poll() is None:
            proc.kill()
        err = proc.communicate(timeout=30)[1]
    return proc.returncode, err, [line for m in msgs for line in m.split("\n")]


def test_the_supervisor_speaks_the_notify_protocol(instance, tmp_path):
    """READY, STATUS and WATCHDOG while it runs; STOPPING=1 once, after which it sends only
    requests for more time to stop (EXTEND_TIMEOUT_USEC: the default stop_timeout_s of 10 s
    for an agent's drain, plus the slack for what follows the drain)."""
    rc, err, lines = _notify_run(instance, tmp_path, ["--ticks", "20000"],
                                 "[supervisor]\nstatus_interval_s = 0.5\n")
    assert rc == 0, err
    ready = lines.index("READY=1")
    assert any(line.startswith("STATUS=running: producer=") for line in lines)
    assert any(line.startswith("STATUS=ticks/s") for line in lines)
    assert "WATCHDOG=1" in lines[ready:]
    assert lines.count("STOPPING=1") == 1
    stopping = lines.index("STOPPING=1")
    extend = f"EXTEND_TIMEOUT_USEC={round((10.0 + STOP_SLACK_S) * 1e6)}"
    assert lines[stopping + 1:] and set(lines[stopping + 1:]) == {extend}, lines[stopping:]
    assert not any(line.startswith("EXTEND_TIMEOUT_USEC=") for line in lines[:stopping])


def test_a_stop_asks_systemd_for_the_configured_stop_timeout_per_agent_drained(instance,
                                                                                tmp_path):
    """Stopped by SIGTERM while it runs (systemctl stop): after STOPPING=1 it asks for
    stop_timeout_s (here 42.5 s) + the slack, when the drain starts and again as each agent
    is done, never more often than once per agent of the pipeline."""
    rc, err, lines = _notify_run(instance, tmp_path, [],
                                 "[supervisor]\nstop_timeout_s = 42.5\n",
                                 stop_after_running=True)
    assert rc == 0, err
    stopping = lines.index("STOPPING=1")
    extends = lines[stopping + 1:]
    assert 1 <= len(extends) <= 4, lines[stopping:]
    assert set(extends) == {f"EXTEND_TIMEOUT_USEC={round((42.5 + STOP_SLACK_S) * 1e6)}"}


@pytest.mark.parametrize("start", ["forked", "new interpreters"])
def test_agents_and_the_fork_server_do_not_have_the_notify_variables(instance, tmp_path,
                                                                     monkeypatch, start):
    """The notify protocol is the supervisor's alone: its forked processes drop systemd's
    variables from their environment, and from the block /proc/PID/environ shows; so do
    agents started as new interpreters (OPENBLAS_NUM_THREADS=2: the supervisor runs threads,
    so it does not fork)."""
    private = {"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"), "WATCHDOG_USEC": "60000000",
               "WATCHDOG_PID": "1", "LISTEN_FDS": "0", "LISTEN_PID": "1",
               "LISTEN_FDNAMES": "nobody"}
    assert set(private) == set(PRIVATE_ENV)
    for k, v in private.items():
        monkeypatch.setenv(k, v)
    if start == "new interpreters":
        monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    proc = start_hftd(instance, tmp_path, toml='[metrics]\nlisten = ""\n')
    try:
        wait_running(instance)
        sup = psutil.Process(proc.pid)
        kids = sup.children()
        assert len(agents_of(sup)) == 4 and len(kids) >= 4
        assert set(private) <= set(sup.environ())
        for k in kids:
            env = k.environ()
            assert not set(private) & set(env), (k.cmdline(), env)
            assert env.get("PATH") == os.environ["PATH"]  # the rest is intact
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err
    assert ("agents start as new interpreters" in err) == (start == "new interpreters"), err
