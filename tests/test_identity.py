"""One identity per (user, instance), a runtime directory and /dev/shm nobody else can
hijack, and exit codes and messages a script can rely on."""

from __future__ import annotations

import json
import os
import subprocess
import time

import psutil
import pytest

from hftd import identity, shm
from conftest import HFTD, hftd


def _wait_for(pred, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR")}
    env.update({k: str(v) for k, v in kw.items()})
    return env


def _config(tmp_path, instance, runtime_dir=None):
    p = tmp_path / "hftd.toml"
    rd = f'runtime_dir = "{runtime_dir}"\n' if runtime_dir else ""
    p.write_text(f'instance = "{instance}"\n{rd}[metrics]\nlisten = ""\n'
                 f'[producer.synthetic]\nrate = 2000.0\n')
    return str(p)


def test_an_instance_started_under_systemd_is_driven_from_a_shell(instance, tmp_path):
    """The supervisor runs with systemd's RUNTIME_DIRECTORY; a shell without it finds it
    through the instance lock: status, pause, a refused second run, then stop, which
    returns once the instance has exited, so `hftd stop; hftd run` works."""
    sysrun = tmp_path / "sysrun"
    sysrun.mkdir(mode=0o700)
    shell_xdg = tmp_path / "xdg"
    shell_xdg.mkdir(mode=0o700)
    cfg = _config(tmp_path, instance)
    report = tmp_path / "r.json"
    proc = subprocess.Popen(HFTD + ["run", "--config", cfg, "--report", str(report)],
                            env=_env(RUNTIME_DIRECTORY=sysrun), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    shell = _env(XDG_RUNTIME_DIR=shell_xdg)
    try:
        _wait_for(lambda: (sysrun / f"{instance}.sock").exists(), what="the control socket")
        _wait_for(lambda: hftd("status", "--instance", instance, env=shell).returncode == 0,
                  what="status to answer")
        st = hftd("status", "--instance", instance, "--json", env=shell)
        assert st.returncode == 0, st.stderr
        assert json.loads(st.stdout)["running"] is True
        res = hftd("pause", "--instance", instance, env=shell)
        assert res.returncode == 0 and "pause sent" in res.stdout, res.stderr

        before = shm.leftovers(instance)
        second = hftd("run", "--instance", instance, "--ticks", "10", env=shell)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert f"already running: supervisor pid {proc.pid}, runtime dir {sysrun}" in lines[0]
        assert shm.leftovers(instance) == before  # the refused run removed nothing

        res = hftd("stop", "--instance", instance, env=shell)
        assert res.returncode == 0, res.stderr
        assert proc.poll() is not None, "hftd stop returned before the instance exited"
        assert proc.returncode == 0, proc.stderr.read()
        assert json.loads(report.read_text())["ticks"]["seq_gaps"] == 0
        again = hftd("run", "--instance", instance, "--ticks", "100", env=shell)
        assert again.returncode == 0, again.stderr
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert shm.leftovers(instance) == []


def test_stop_and_status_of_a_stopped_instance(instance):
    res = hftd("stop", "--instance", instance)
    assert res.returncode == 0 and "not running" in res.stdout
    res = hftd("status", "--instance", instance)
    assert res.returncode == 3 and f"instance {instance!r} is not running" in res.stderr
    res = hftd("status", "--instance", instance, "--json")
    assert res.returncode == 3
    assert json.loads(res.stdout) == {"instance": instance, "running": False}
    for verb in ("pause", "resume", "reload"):
        res = hftd(verb, "--instance", instance)
        assert res.returncode == 3, (verb, res.stderr)
        assert "Traceback" not in res.stderr


@pytest.mark.parametrize("where", ["missing dir", "proc"])
def test_an_unwritable_report_path_is_refused_before_the_run(instance, tmp_path, where):
    """Really opened, not os.access: root may "access" /proc, yet cannot create a file there."""
    path = {"missing dir": str(tmp_path / "no" / "such" / "dir" / "r.json"),
            "proc": f"/proc/{instance}.json"}[where]
    cfg = _config(tmp_path, instance, tmp_path / "run")
    res = hftd("run", "--config", cfg, "--ticks", "10", "--report", path)
    assert res.returncode == 2, res.stderr
    assert f"--report {path}: cannot be written" in res.stderr
    assert "Traceback" not in res.stderr and "pipeline up" not in res.stderr
    assert shm.leftovers(instance) == []


def test_the_report_is_written_into_what_the_path_names(instance, tmp_path):
    """Like a shell's `>`: a symlink's target gets the report and stays a symlink; a
    character device (a private /dev/null) stays a device."""
    target = tmp_path / "target.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    null = tmp_path / "null"
    os.mknod(null, 0o666 | 0o020000, os.makedev(1, 3))
    cfg = _config(tmp_path, instance, tmp_path / "run")
    for path in (link, null):
        res = hftd("run", "--config", cfg, "--ticks", "100", "--report", str(path))
        assert res.returncode == 0, res.stderr
    assert link.is_symlink() and json.loads(target.read_text())["ticks"]["received"] == 100
    assert os.stat(null).st_rdev == os.makedev(1, 3) and not null.is_file()


@pytest.mark.parametrize("problem", ["mode", "symlink", "file"])
def test_a_runtime_dir_others_could_tamper_with_is_refused(instance, tmp_path, problem):
    target = tmp_path / "rt"
    if problem == "mode":
        target.mkdir()
        os.chmod(target, 0o777)
    elif problem == "symlink":
        real = tmp_path / "real"
        real.mkdir(mode=0o700)
        target.symlink_to(real)
    else:
        target.write_text("")
    cfg = _config(tmp_path, instance, target)
    res = hftd("run", "--config", cfg, "--ticks", "10")
    assert res.returncode == 2, res.stderr
    assert str(target) in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert shm.leftovers(instance) == []


def test_a_runtime_dir_of_another_user_is_refused(instance, tmp_path, other_user):
    """The /tmp/hftd-<uid> hijack: another user created the directory first."""
    target = tmp_path / "theirs"
    target.mkdir(mode=0o700)
    os.chown(target, *other_user)
    res = hftd("run", "--instance", instance, "--ticks", "10",
               env=_env(RUNTIME_DIRECTORY=target))
    assert res.returncode == 2
    assert f"runtime directory {target} belongs to hftdtest" in res.stderr
    assert "chmod 700" in res.stderr
    assert shm.leftovers(instance) == []


def test_a_planted_lock_symlink_is_not_followed(instance, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    os.symlink(victim, identity.lock_path(instance))
    try:
        res = hftd("run", "--instance", instance, "--ticks", "10",
                   env=_env(XDG_RUNTIME_DIR=tmp_path))
        assert res.returncode == 1
        assert "is a symlink: refusing to follow it" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert victim.read_text() == "precious\n"
    finally:
        os.unlink(identity.lock_path(instance))


@pytest.mark.parametrize("what", ["ticks.in", "lock", "sem"])
def test_a_squatted_shm_name_is_refused_naming_its_owner(instance, tmp_path, other_user, what):
    """Names are predictable: another user may create one of ours first. The run is refused
    in one line naming the object and its owner; nothing of theirs is removed."""
    name = {"ticks.in": shm.prefix(instance) + "ticks.in", "lock": shm.prefix(instance) + "lock",
            "sem": "sem." + shm.prefix(instance) + "bell.producer"}[what]
    path = os.path.join(shm.SHM_DIR, name)
    with open(path, "w"):
        pass
    os.chown(path, *other_user)
    try:
        res = hftd("run", "--instance", instance, "--ticks", "10",
                   env=_env(XDG_RUNTIME_DIR=tmp_path))
        assert res.returncode == 1, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        assert path in lines[0] and "hftdtest" in lines[0]
        assert os.path.exists(path)
        assert [p for p in shm.leftovers(instance) if not shm.path_of(p).endswith(name)] == []
    finally:
        os.unlink(path)


def _cli_as(uid: int, gid: int, args: list[str]) -> tuple[int, str]:
    """Run the hftd CLI in a forked child that became user `uid` (the other user cannot
    execute this virtualenv's interpreter, which lives under /root). (exit code, output)"""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code, out = 99, ""
        try:
            os.close(r)
            # everything the CLI imports lazily, while still root: the other user cannot read
            # this interpreter's standard library under /root
            import click.testing  # noqa: F401

            import hftd.cli  # noqa: F401
            import hftd.console  # noqa: F401
            import hftd.control  # noqa: F401
            import hftd.identity  # noqa: F401
            import hftd.monitor  # noqa: F401
            import hftd.supervisor  # noqa: F401
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            from click.testing import CliRunner

            from hftd.cli import main

            res = CliRunner().invoke(main, args)
            code = res.exit_code
            out = res.output + (repr(res.exception) if res.exception and code not in (0, 1, 2, 3)
                                else "")
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            out = repr(e)
        finally:
            os.write(w, json.dumps([code, out]).encode())
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        data = f.read()
    os.waitpid(pid, 0)
    code, out = json.loads(data)
    return code, out


def test_another_users_cli_cannot_reach_the_instance(instance, tmp_path, other_user):
    """Another user's `hftd stop`/`pause` address their own instance of that name: not
    running, no traceback, and ours keeps running."""
    rd = tmp_path / "run"
    cfg = _config(tmp_path, instance, rd)
    proc = subprocess.Popen(HFTD + ["run", "--config", cfg], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: hftd("status", "--instance", instance).returncode == 0,
                  what="status to answer")
        for verb, code in (("stop", 0), ("pause", 3), ("status", 3)):
            got, out = _cli_as(*other_user, [verb, "--instance", instance])
            assert "Traceback" not in out, out
            assert (got, "not running" in out) == (code, True), (verb, got, out)
        assert proc.poll() is None
        assert hftd("status", "--instance", instance).returncode == 0
    finally:
        res = hftd("stop", "--instance", instance)
        proc.communicate(timeout=60)
    assert res.returncode == 0
    assert proc.returncode == 0
    assert not any(p.info["cmdline"] and instance in " ".join(p.info["cmdline"])
                   for p in psutil.process_iter(["cmdline"]))
