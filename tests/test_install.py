"""`make install` / `make uninstall` (systemd/install.sh): the service's virtualenv, config,
user and unit; idempotent; a unit that `systemd-analyze verify` accepts and `systemd-analyze
security` scores at most 2.5.

The staged tests install under a DESTDIR and touch nothing else (no root needed). The real
layout (user hftd, /opt/hftd, /etc/hftd) is tested as root inside a private mount namespace
whose /etc, /opt and /usr/local/bin are copies, so the machine's own are never changed.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "systemd" / "install.sh"
ANALYZE = shutil.which("systemd-analyze")
SCORE = re.compile(r"Overall exposure level for hftd@\S+: (\d+\.\d+) ")


def _env(**extra) -> dict:
    """The caller's environment without PYTHONPATH (which points the tests' interpreter at a
    checkout; the installed hftd must run on its own)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MAKEFLAGS", "MFLAGS")}
    env.update(extra)
    return env


def make(*args, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "--no-print-directory", "-C", str(REPO), *args], env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def expected_config(instance: str) -> str:
    """configs/hftd.toml (the embedded defaults) with the instance named."""
    text = (REPO / "configs" / "hftd.toml").read_text()
    out = text.replace('\ninstance = "default" ', f'\ninstance = "{instance}" ', 1)
    assert out != text
    return out


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """One staged install (DESTDIR) of instance "paper" shared by the tests below, in order."""
    root = tmp_path_factory.mktemp("root")
    r = make("install", f"DESTDIR={root}", "INSTANCE=paper")
    assert r.returncode == 0, r.stdout + r.stderr
    return root, r


def test_a_staged_install_lays_out_the_venv_config_unit_and_link(staged, tmp_path):
    root, r = staged
    venv = root / "opt/hftd/.venv"
    conf = root / "etc/hftd/paper.toml"
    unit = root / "etc/systemd/system/hftd@.service"
    # the config: the embedded defaults' file, named for the instance, readable by its group
    assert conf.read_text() == expected_config("paper")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    # the unit: the repository's, with the default paths it already names
    assert unit.read_text() == (REPO / "systemd/hftd@.service").read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    link = root / "usr/local/bin/hftd"
    assert os.readlink(link) == "/opt/hftd/.venv/bin/hftd"
    # the venv's hftd is a copy (not the checkout) and accepts the config it was given
    run = subprocess.run([str(venv / "bin/python"), "-c", "import hftd; print(hftd.__file__)"],
                         env=_env(), capture_output=True, text=True, cwd="/")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(str(venv)), run.stdout
    rdir = tmp_path / "run"
    rdir.mkdir(mode=0o700)
    check = subprocess.run([str(venv / "bin/hftd"), "check-config", str(conf)], cwd="/",
                           env=_env(RUNTIME_DIRECTORY=str(rdir)), capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert '"instance": "paper"' in check.stdout
    assert "passes hftd check-config" in r.stdout
    # staged: the system was left alone, and the output says what was not done
    assert "the system user hftd is not created" in r.stdout


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_the_installed_unit_passes_systemd_analyze_verify(staged):
    """verify checks the unit's keys and that ExecStart/ExecReload name an executable, under
    the staged root; --recursive-errors=no: a staged root has no system units (sysinit.target,
    ...) for its dependencies to be checked against."""
    root, _ = staged
    r = subprocess.run([ANALYZE, "verify", "--recursive-errors=no", f"--root={root}",
                        str(root / "etc/systemd/system/hftd@.service")],
                       capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


@pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed (Debian: systemd)")
def test_the_installed_unit_scores_at_most_2_5_in_systemd_analyze_security(staged):
    root, _ = staged
    r = subprocess.run([ANALYZE, "security", "--offline=yes", f"--root={root}", "--threshold=25",
                        str(root / "etc/systemd/system/hftd@.service")],
                       capture_output=True, text=True)
    m = SCORE.search(r.stdout)
    assert m, r.stdout + r.stderr
    assert float(m.group(1)) <= 2.5, r.stdout
    assert r.returncode == 0, r.stdout + r.stderr  # --threshold=25: at most 2.5


def test_installing_again_keeps_an_existing_config_byte_for_byte(staged):
    root, _ = staged
    conf = root / "etc/hftd/paper.toml"
    mine = conf.read_text() + "# the operator's own line\n"
    conf.write_text(mine)
    conf.chmod(0o600)
    r = make("install", f"DESTDIR={root}", "INSTANCE=paper")
    assert r.returncode == 0, r.stdout + r.stderr
    assert conf.read_text() == mine
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert f"kept {conf} (an existing config is never overwritten)" in r.stdout
    assert os.access(root / "opt/hftd/.venv/bin/hftd", os.X_OK)


def test_uninstall_removes_the_program_and_keeps_configs_and_state(staged):
    root, _ = staged
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "hftd@paper.service").symlink_to("/etc/systemd/system/hftd@.service")
    (wants / "other.service").symlink_to("/etc/systemd/system/other.service")
    state = root / "var/lib/hftd/paper"
    state.mkdir(parents=True)
    (state / "executor.state").write_bytes(b"positions")
    r = make("uninstall", f"DESTDIR={root}")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (root / "etc/systemd/system/hftd@.service").exists()
    assert not os.path.lexists(wants / "hftd@paper.service")
    assert os.path.lexists(wants / "other.service")
    assert not (root / "opt/hftd").exists()
    assert not os.path.lexists(root / "usr/local/bin/hftd")
    assert (root / "etc/hftd/paper.toml").exists()
    assert (state / "executor.state").read_bytes() == b"positions"
    assert "kept the configs" in r.stdout and "userdel hftd" in r.stdout


@pytest.mark.parametrize("setting, value, named", [
    ("INSTANCE", "a b", "INSTANCE must be 1 to 40 letters"),
    ("INSTANCE", "x" * 41, "INSTANCE must be 1 to 40 letters"),
    ("PREFIX", "opt/hftd", "PREFIX must be an absolute path"),
    ("SYSCONFDIR", "/etc/hftd%i", "SYSCONFDIR must be an absolute path"),
    ("EXTRAS", "pfcf]", "EXTRAS must be a comma-separated list"),
])
def test_bad_settings_are_refused_naming_them_before_anything_is_made(tmp_path, setting, value,
                                                                      named):
    root = tmp_path / "root"
    root.mkdir()
    r = subprocess.run([str(INSTALL_SH), "install"], capture_output=True, text=True,
                       env=_env(DESTDIR=str(root), **{setting: value}))
    assert r.returncode == 2, r.stdout + r.stderr
    assert named in r.stderr and repr(value).strip("\"'") in r.stderr, r.stderr
    assert list(root.iterdir()) == []


def test_an_unknown_action_is_a_usage_error():
    r = subprocess.run([str(INSTALL_SH), "instal"], capture_output=True, text=True, env=_env())
    assert r.returncode == 2
    assert "install|uninstall (got 'instal')" in r.stderr


def _private_mounts_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _private_mounts_work(),
                    reason="needs root and a private mount namespace (unshare --mount)")
def test_as_root_it_creates_the_user_and_the_service_user_runs_the_installed_hftd(tmp_path,
                                                                                 instance):
    """The real layout, defaults only (/opt/hftd, /etc/hftd, the user hftd), in a private mount
    namespace over copies of /etc, /opt and /usr/local/bin. User hftd then reads its config
    and runs a short trading run with the installed virtualenv, with the runtime and state
    directories systemd would give it."""
    script = r"""
set -eu
T=$1 INSTANCE=$2 REPO=$3
cp -a /etc "$T/etc"
mkdir "$T/opt" "$T/bin" "$T/srv"
mount --bind "$T/etc" /etc
mount --bind "$T/opt" /opt
mount --bind "$T/bin" /usr/local/bin
mount --bind "$T/srv" /srv
! getent passwd hftd >/dev/null || { echo "a user hftd exists already"; exit 3; }
echo "== install 1"
make --no-print-directory -C "$REPO" install INSTANCE="$INSTANCE"
echo "== user: $(getent passwd hftd | cut -d: -f1,6,7)"
echo "== config: $(stat -c '%U %G %a' /etc/hftd/$INSTANCE.toml)"
if command -v systemd-analyze >/dev/null; then
  echo "== verify"
  rc=0
  systemd-analyze verify /etc/systemd/system/hftd@.service 2>&1 || rc=$?
  echo "== verify rc $rc"
fi
# another port than the default's, which something else on this machine may be using
sed -i 's/^listen = "127.0.0.1:9464"/listen = ""/' /etc/hftd/$INSTANCE.toml
echo "== install 2"
make --no-print-directory -C "$REPO" install INSTANCE="$INSTANCE"
echo "== kept edit: $(grep -c '^listen = ""' /etc/hftd/$INSTANCE.toml)"
# what systemd would give it: RuntimeDirectory=hftd/%i, StateDirectory=hftd (both 0700)
install -d -m 0700 -o hftd -g hftd /srv/run /srv/state
echo "== run"
rc=0
runuser -u hftd -- env -i PATH=/usr/local/bin:/usr/bin:/bin RUNTIME_DIRECTORY=/srv/run \
  STATE_DIRECTORY=/srv/state hftd run --config /etc/hftd/$INSTANCE.toml --instance "$INSTANCE" \
  --ticks 3000 >"$T/run.out" 2>&1 || rc=$?
echo "== run rc $rc"
echo "== state: $(ls /srv/state)"
echo "== uninstall"
make --no-print-directory -C "$REPO" uninstall
echo "== left in /opt: [$(ls -A /opt)] /usr/local/bin: [$(ls -A /usr/local/bin)] /etc/hftd: [$(ls /etc/hftd)]"
"""
    try:
        r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c",
                            script, "script", str(tmp_path), instance, str(REPO)],
                           env=_env(PATH="/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
                           capture_output=True, text=True, timeout=900)
    finally:
        # what user hftd left in /dev/shm if the run failed half-way (the instance fixture
        # removes this user's only)
        for path in glob.glob(f"/dev/shm/*.{instance}.*"):
            os.unlink(path)
    out = r.stdout + r.stderr
    run_out = (tmp_path / "run.out").read_text() if (tmp_path / "run.out").exists() else ""
    assert r.returncode == 0, out + run_out
    assert "created the system user hftd" in out
    assert "== user: hftd:/var/lib/hftd:/usr/sbin/nologin" in out
    assert "== config: root hftd 640" in out
    if ANALYZE:
        verify = out.split("== verify\n", 1)[1].split("== verify rc", 1)[0]
        assert verify.strip() == "" and "== verify rc 0" in out, out
    assert "user hftd exists" in out
    assert "== kept edit: 1" in out
    assert "== run rc 0" in out, run_out
    assert f"== state: {instance}" in out
    assert f"== left in /opt: [] /usr/local/bin: [] /etc/hftd: [{instance}.toml]" in out, out


@pytest.mark.parametrize("prints, named", [
    ("/root/.pyenv/versions/3.11.7", "which the service cannot see (ProtectHome=yes)"),
    ("/home/ann/py311", "which the service cannot see (ProtectHome=yes)"),
    ("old:3.9.2", "is Python 3.9.2; hftd needs >= 3.11"),
])
def test_a_python_the_service_could_not_run_is_refused(tmp_path, prints, named):
    """SERVICE_PYTHON must be a Python >= 3.11 that user hftd can read under ProtectHome=yes
    (here a stand-in that answers the script's one question, its sys.base_prefix)."""
    fake = tmp_path / "python3"
    fake.write_text(f"#!/bin/sh\necho '{prints}'\n")
    fake.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    r = subprocess.run([str(INSTALL_SH), "install"], capture_output=True, text=True,
                       env=_env(DESTDIR=str(root), SERVICE_PYTHON=str(fake)))
    assert r.returncode == 1, r.stdout + r.stderr
    assert named in r.stderr and str(fake) in r.stderr, r.stderr
    assert list(root.iterdir()) == []


def _unit_lines() -> dict[str, list[str]]:
    """KEY -> [values] of systemd/hftd@.service, comments left out."""
    out: dict[str, list[str]] = {}
    for line in (REPO / "systemd/hftd@.service").read_text().splitlines():
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_unit_runs_each_instance_as_hftd_in_a_directory_of_its_own():
    """What the design needs of the unit, read from the file (systemd-analyze need not be
    installed): a runtime directory per instance, the dedicated user, notify from the main
    process only, SIGTERM to the supervisor alone and no ExecStop, a synchronous reload, the
    config's directory as the working directory (relative paths in it read from there),
    realtime not restricted, no LimitMEMLOCK (nothing calls mlockall)."""
    u = _unit_lines()
    assert u["RuntimeDirectory"] == ["hftd/%i"] and u["RuntimeDirectoryMode"] == ["0700"]
    assert u["StateDirectory"] == ["hftd"]
    assert u["WorkingDirectory"] == ["/etc/hftd/"]  # relative paths in a config: from its dir
    assert u["User"] == ["hftd"] and u["Group"] == ["hftd"]
    assert u["Type"] == ["notify"] and u["NotifyAccess"] == ["main"]
    assert u["KillMode"] == ["mixed"] and u["KillSignal"] == ["SIGTERM"]
    assert "ExecStop" not in u
    assert u["ExecStart"] == ["/opt/hftd/.venv/bin/hftd run --config /etc/hftd/%i.toml "
                              "--instance %i"]
    assert u["ExecReload"] == ["/opt/hftd/.venv/bin/hftd reload --instance %i"]
    assert u["RestrictRealtime"] == ["no"]
    assert "PrivateUsers" not in u  # README, "Hardening": it hides the supervisor from reload
    assert "LimitMEMLOCK" not in u
    assert not any("resources" in f for f in u["SystemCallFilter"] if f.startswith("~"))


def test_a_second_instance_on_the_same_metrics_address_is_named_at_install(tmp_path):
    """`make install INSTANCE=paper` next to an existing default.toml writes the same
    [metrics] listen (127.0.0.1:9464): the instance started second would serve no /metrics.
    The install says so, naming both files; a config on another port is not named."""
    root = tmp_path / "root"
    conf = root / "etc" / "hftd"
    conf.mkdir(parents=True)
    (conf / "default.toml").write_text((REPO / "configs" / "hftd.toml").read_text())
    (conf / "other.toml").write_text('instance = "other"\n[metrics]\nlisten = "127.0.0.1:9465"\n')
    r = make("install", f"DESTDIR={root}", "INSTANCE=paper")
    assert r.returncode == 0, r.stdout + r.stderr
    warnings = [line for line in r.stdout.splitlines() if "/metrics on" in line]
    assert warnings == ["hftd install: warning: default.toml and paper.toml both serve /metrics "
                        "on 127.0.0.1:9464 ([metrics] listen): the instance started second "
                        "has none; give one of them another port"], r.stdout


def test_as_a_user_who_cannot_write_there_it_says_so_and_makes_nothing():
    """`make install` as a user other than root, without DESTDIR: it names the directory it
    cannot write and how to go on, before making anything (found: "could not create the
    virtualenv ... (Debian: apt-get install python3-venv)", the wrong cause). Run as user
    nobody: the machine's /opt, /etc and /usr/local/bin are not writable by it, so nothing
    of theirs changes whatever the script does."""
    import pwd

    if os.getuid() != 0 or not shutil.which("runuser"):
        pytest.skip("needs root (to run the script as user nobody) and runuser")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")
    import tempfile

    # (pytest's tmp_path is under a 0700 directory, which user nobody cannot enter)
    base = Path(tempfile.mkdtemp(prefix="hftd-install-"))
    try:
        _install_as_nobody(base)
    finally:
        shutil.rmtree(base)


def _install_as_nobody(tmp_path: Path) -> None:
    # a place user nobody may write, under a directory it may not: PREFIX is fine, UNITDIR not
    mine = tmp_path / "mine"
    mine.mkdir()
    mine.chmod(0o777)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o755)
    tmp_path.chmod(0o755)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(mine),
           "PREFIX": f"{mine}/opt", "SYSCONFDIR": f"{mine}/etc", "UNITDIR": f"{locked}/system",
           "BINDIR": ""}
    r = subprocess.run(["runuser", "-u", "nobody", "--", "env", *[f"{k}={v}" for k, v in
                                                                  env.items()],
                        "bash", str(INSTALL_SH), "install"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stdout + r.stderr
    assert (f"hftd install: error: {locked} is not writable by user nobody: run it as root "
            f"(sudo make install), or stage it with DESTDIR=/some/dir (nothing was changed)"
            in r.stderr), r.stderr
    assert "python3-venv" not in r.stderr
    assert os.listdir(mine) == [] and os.listdir(locked) == []  # nothing made
