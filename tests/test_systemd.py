"""sd_notify: READY once every agent is up, STATUS lines, WATCHDOG while healthy, STOPPING."""

from __future__ import annotations

import os
import socket
import subprocess

import psutil

from conftest import HFTD, agents_of, start_hftd, stop, wait_running


def test_the_supervisor_speaks_the_notify_protocol(instance, tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n'
                   '[metrics]\nlisten = ""\n[supervisor]\nstatus_interval_s = 0.5\n')
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="400000")
    proc = subprocess.Popen(HFTD + ["run", "--config", str(cfg), "--ticks", "20000"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    msgs = []
    try:
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
        err = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, err
    lines = [line for m in msgs for line in m.split("\n")]
    ready = lines.index("READY=1")
    assert any(line.startswith("STATUS=running: producer=") for line in lines)
    assert any(line.startswith("STATUS=ticks/s") for line in lines)
    assert "WATCHDOG=1" in lines[ready:]
    assert lines[-1] == "STOPPING=1"


def test_agents_and_the_fork_server_do_not_have_the_notify_variables(instance, tmp_path,
                                                                     monkeypatch):
    """The notify protocol is the supervisor's alone: its forked processes drop systemd's
    variables from their environment, and from the block /proc/PID/environ shows."""
    private = {"NOTIFY_SOCKET": str(tmp_path / "nobody.sock"), "WATCHDOG_USEC": "60000000",
               "WATCHDOG_PID": "1", "LISTEN_FDS": "0", "LISTEN_PID": "1"}
    for k, v in private.items():
        monkeypatch.setenv(k, v)
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
