"""sd_notify: READY once every agent is up, STATUS lines, WATCHDOG while healthy, STOPPING."""

from __future__ import annotations

import os
import socket
import subprocess

from conftest import HFTD


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
