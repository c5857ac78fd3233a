"""Shared fixtures. Every test that creates shared memory or processes gets a unique instance
name and cleans up after itself even when it fails, so one failure never poisons the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import psutil
import pytest

from hftd import shm


def _kill_instance_processes(instance: str) -> None:
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "--instance" in cmd and instance in cmd:
            try:
                p.kill()
            except psutil.Error:
                pass


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


def start_hftd(instance, tmp_path, *args, toml: str = "") -> subprocess.Popen:
    cfg = tmp_path / "hftd.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n' + toml)
    return subprocess.Popen(HFTD + ["run", "--config", str(cfg), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def stop(proc: subprocess.Popen, sig=signal.SIGINT, timeout=60):
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err
