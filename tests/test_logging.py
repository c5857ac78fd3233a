"""Logging (hftd.log): every line says who wrote it and how grave it is; under journald
(stderr is $JOURNAL_STREAM) by a `<N>` syslog priority and no timestamp, anywhere else by the
local time and the level. The end-of-run summary goes to stdout, nothing but log records to
stderr. The status line is off by default under systemd (STATUS= carries it), on when set."""

from __future__ import annotations

import datetime
import logging
import os
import re
import socket
import subprocess
import threading

import pytest

from hftd import config, shm
from hftd import log as hftd_log
from conftest import HFTD, LOG_LINE, hftd, log_records

QUIET = '[metrics]\nlisten = ""\n'
# a strategy that raises once, on tick 500: its process logs the traceback and exits 1, the
# supervisor restarts it (a warning), and the run goes on to a clean end
POISON = (QUIET + '[supervisor]\nrestart_delay_s = 0.05\n[[strategies]]\nname = "sample"\n'
          'class = "tests.strategies:Poison"\nparams = { raise_at = 500 }\n')
STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def _config(tmp_path, instance, toml: str) -> str:
    cfg = tmp_path / "hftd.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{tmp_path}/run"\n' + toml)
    return str(cfg)


def _run(cfg: str, *args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(HFTD + ["run", "--config", cfg, *args], text=True, timeout=180, **kw)


# --- in-process: the pieces ------------------------------------------------------------------
def test_syslog_priorities_of_the_levels():
    assert [hftd_log.priority(getattr(logging, n.upper())) for n in hftd_log.LEVELS] == \
        [7, 6, 4, 3, 2]


def test_stderr_is_the_journal_only_when_journal_stream_names_its_device_and_inode(tmp_path):
    with open(tmp_path / "f", "w") as f:
        st = os.fstat(f.fileno())
        ours = f"{st.st_dev}:{st.st_ino}"
        assert hftd_log.journald({"JOURNAL_STREAM": ours}, f.fileno())
        assert not hftd_log.journald({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"},
                                     f.fileno())  # stderr redirected elsewhere: not journald's
        assert not hftd_log.journald({}, f.fileno())
        for bad in ("", "12", "a:b", ":", f"{ours}:1"):
            assert not hftd_log.journald({"JOURNAL_STREAM": bad}, f.fileno()), bad


def test_the_journal_form_puts_the_priority_on_every_line_of_a_record():
    rec = logging.LogRecord("hftd", logging.ERROR, __file__, 1, "two\nlines", None, None)
    rec.who = "hftd[x] executor"
    assert hftd_log.Formatter("journal").format(rec) == "<3>hftd[x] executor: two\n<3>lines"
    stamped = hftd_log.Formatter("stamped").format(rec)
    m = LOG_LINE.fullmatch(stamped.split("\n")[0])
    assert m and m.group(2, 3) == ("ERROR", "hftd[x] executor: two"), stamped
    assert hftd_log.Formatter("plain").format(rec) == "hftd[x] executor: two\nlines"


def test_the_status_interval_auto_is_off_under_systemd_and_a_value_set_is_kept():
    sc = config.SupervisorConfig()
    assert sc.status_interval_s == "auto"
    assert (sc.status_interval(systemd=False), sc.status_interval(systemd=True)) == (1.0, 0.0)
    sc = config.SupervisorConfig(status_interval_s=2.5)
    assert (sc.status_interval(systemd=False), sc.status_interval(systemd=True)) == (2.5, 2.5)


@pytest.mark.parametrize("toml, named", [
    ('[supervisor]\nlog_level = "loud"\n', "supervisor.log_level: Invalid enum value 'loud'"),
    ('[supervisor]\nstatus_interval_s = "often"\n', "supervisor.status_interval_s: "),
    ('[supervisor]\nstatus_interval_s = -1.0\n', "supervisor: status_interval_s must be"),
])
def test_bad_logging_keys_are_config_errors_naming_the_key(tmp_path, toml, named):
    p = tmp_path / "c.toml"
    p.write_text(toml)
    res = hftd("check-config", str(p))
    assert res.returncode == 2 and named in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


# --- hftd run ----------------------------------------------------------------------------------
def test_under_journald_every_line_starts_with_its_priority_and_has_no_timestamp(instance,
                                                                                  tmp_path):
    cfg = _config(tmp_path, instance, POISON)
    err_path = tmp_path / "stderr"
    with open(err_path, "a") as err:
        st = os.fstat(err.fileno())
        env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        res = _run(cfg, "--ticks", "2000", "--rate", "4000", stdout=subprocess.PIPE,
                   stderr=err, env=env)
    text = err_path.read_text()
    assert res.returncode == 0, text
    lines = text.splitlines()
    assert lines and all(re.match(r"<[2-7]>", line) for line in lines), text
    assert not any(STAMP.search(line) for line in lines), text
    assert f"<6>hftd[{instance}]: pipeline up: producer=" in text
    assert (f"<4>hftd[{instance}]: agent strategy.sample exited with code 1: restarting it"
            in text), text
    # the strategy process's own record, its traceback included, each line at <2> (critical)
    at = lines.index(f"<2>hftd[{instance}] strategy.sample: error: uncaught exception")
    end = lines.index("<2>RuntimeError: poison tick 500", at)
    assert lines[at + 1] == "<2>Traceback (most recent call last):"
    assert all(line.startswith("<2>") for line in lines[at:end + 1])
    # the summary is not a log record: on stdout, as it is
    assert "throughput:" in res.stdout and "throughput:" not in text
    assert not re.search(r"^<\d>", res.stdout, re.M)
    assert shm.leftovers(instance) == []


def _read_pty(master: int, into: list) -> None:
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every process holding the terminal has closed it
            return
        if not data:
            return
        into.append(data)


@pytest.mark.parametrize("where", ["pipe", "terminal"])
def test_in_a_terminal_or_a_pipe_each_record_starts_with_the_time_and_its_level(instance,
                                                                               tmp_path, where):
    cfg = _config(tmp_path, instance, POISON)
    t0 = datetime.datetime.now().replace(microsecond=0)
    if where == "pipe":
        res = _run(cfg, "--ticks", "2000", "--rate", "4000", capture_output=True)
        rc, text = res.returncode, res.stderr
    else:
        master, slave = os.openpty()
        chunks: list[bytes] = []
        try:
            proc = subprocess.Popen(HFTD + ["run", "--config", cfg, "--ticks", "2000", "--rate",
                                            "4000"], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=slave)
            os.close(slave)
            reader = threading.Thread(target=_read_pty, args=(master, chunks), daemon=True)
            reader.start()
            rc = proc.wait(180)
            reader.join(30)
        finally:
            os.close(master)
        text = b"".join(chunks).decode()
    t1 = datetime.datetime.now()
    assert rc == 0, text
    lines = text.splitlines()
    records = log_records(text)
    assert records, text
    for line in lines:
        m = LOG_LINE.fullmatch(line)
        if m:
            when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f")
            assert t0 <= when <= t1, (line, t0, t1)  # local time, when it was written
    assert any(lvl == "INFO" and t.startswith(f"hftd[{instance}]: pipeline up: ")
               for lvl, t in records), records
    assert any(lvl == "WARNING" and t.startswith(f"hftd[{instance}]: agent strategy.sample "
                                                 f"exited with code 1: restarting it")
               for lvl, t in records), records
    assert ("CRITICAL", f"hftd[{instance}] strategy.sample: error: uncaught exception") in records
    # a line that is not a record's first is the traceback that follows that record
    at = lines.index(next(line for line in lines if line.endswith("uncaught exception")))
    end = lines.index("RuntimeError: poison tick 500")
    assert lines[at + 1] == "Traceback (most recent call last):"
    assert [line for line in lines if not LOG_LINE.fullmatch(line)] == lines[at + 1:end + 1]
    assert shm.leftovers(instance) == []


def test_hftd_run_into_a_file_puts_the_summary_there_and_only_log_records_on_stderr(instance,
                                                                                   tmp_path):
    """`hftd run --ticks N > out`."""
    cfg = _config(tmp_path, instance, QUIET)
    out = tmp_path / "out"
    with open(out, "w") as f:
        res = _run(cfg, "--ticks", "5000", stdout=f, stderr=subprocess.PIPE)
    assert res.returncode == 0, res.stderr
    summary = out.read_text()
    for part in ("ticks: received 5000 published 5000", "throughput:", "tick-to-trade:",
                 "accounting: feed received 5000", "invariants: all hold"):
        assert part in summary, (part, summary)
    assert log_records(summary) == [] and "pipeline up" not in summary, summary
    lines = res.stderr.splitlines()
    assert lines and all(LOG_LINE.fullmatch(line) for line in lines), res.stderr
    assert "pipeline up" in res.stderr
    assert not any(part in res.stderr for part in ("throughput:", "tick-to-trade:",
                                                   "accounting:", "invariants:")), res.stderr
    assert shm.leftovers(instance) == []


def _notified_run(cfg: str, tmp_path, *args) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`hftd run` as systemd starts it (NOTIFY_SOCKET set); returns it and the lines it sent."""
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    got = []
    try:
        proc = subprocess.Popen(HFTD + ["run", "--config", cfg, *args],
                                env=dict(os.environ, NOTIFY_SOCKET=path),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            while proc.poll() is None:  # (what it writes meanwhile fits in the pipes)
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    pass
            while True:
                try:
                    got.append(sock.recv(4096).decode())
                except socket.timeout:
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
            out, err = proc.communicate(timeout=60)
    finally:
        sock.close()
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return res, [line for m in got for line in m.split("\n")]


@pytest.mark.parametrize("toml, logged", [
    ("", False),  # "auto"
    ("[supervisor]\nstatus_interval_s = 0.5\n", True),
])
def test_under_systemd_the_status_line_is_off_unless_set_and_status_carries_it(
        instance, tmp_path, toml, logged):
    cfg = _config(tmp_path, instance, QUIET + toml)
    res, notified = _notified_run(cfg, tmp_path, "--ticks", "30000", "--rate", "10000")
    assert res.returncode == 0, res.stderr
    assert sum(line.startswith("STATUS=ticks/s ") for line in notified) >= 2, notified
    status_lines = [t for lvl, t in log_records(res.stderr)
                    if t.startswith(f"hftd[{instance}]: ticks/s ")]
    if logged:
        assert len(status_lines) >= 2 and all(
            lvl == "INFO" for lvl, t in log_records(res.stderr) if t in status_lines), res.stderr
    else:
        assert status_lines == [], res.stderr
    assert shm.leftovers(instance) == []


@pytest.mark.parametrize("level", ["info", "error"])
def test_every_process_logs_at_the_level_asked(instance, tmp_path, level):
    """`--log-level` reaches the agents: a strategy whose saves fail says so (a warning, at
    most once a second, from its own process) at `info`, and not at `error`."""
    cfg = _config(tmp_path, instance, QUIET + '[[strategies]]\nname = "sample"\n'
                  'class = "tests.strategies:Counter"\nparams = { fail_save = true }\n')
    res = _run(cfg, "--ticks", "2000", "--rate", "4000", "--log-level", level,
               capture_output=True)
    assert res.returncode == 0, res.stderr
    records = log_records(res.stderr)
    unsaved = [(lvl, t) for lvl, t in records
               if t.startswith(f"hftd[{instance}] strategy.sample: state not saved to ")]
    if level == "info":
        assert unsaved and all(lvl == "WARNING" for lvl, _ in unsaved), res.stderr
        assert any(t.startswith(f"hftd[{instance}]: pipeline up") for _, t in records)
    else:
        assert records == [] and res.stderr == "", res.stderr
    assert "throughput:" in res.stdout  # the summary is not a log record: always there
    assert shm.leftovers(instance) == []


@pytest.mark.parametrize("stdout", ["/dev/full", "closed pipe"])
def test_a_summary_stdout_cannot_take_loses_neither_the_report_nor_the_log(instance, tmp_path,
                                                                          stdout):
    """`hftd run --report r.json > /dev/full`, or `| true` (the reader gone: EPIPE): the
    summary cannot be written, which is logged as an error naming why and exits 1; the
    report is still written, shm removed, and no traceback."""
    cfg = _config(tmp_path, instance, QUIET)
    report = tmp_path / "r.json"
    args = ["--ticks", "2000", "--report", str(report)]
    if stdout == "/dev/full":
        with open("/dev/full", "w") as f:
            res = _run(cfg, *args, stdout=f, stderr=subprocess.PIPE)
    else:
        r, w = os.pipe()
        os.close(r)  # nobody reads: the first write gets EPIPE
        try:
            res = _run(cfg, *args, stdout=w, stderr=subprocess.PIPE)
        finally:
            os.close(w)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    errors = [text for level, text in log_records(res.stderr) if level == "ERROR"]
    assert any("summary" in text and "stdout" in text for text in errors), res.stderr
    assert report.exists(), res.stderr
    assert "report written to" in res.stderr
    assert shm.leftovers(instance) == []


def test_a_strategy_that_prints_keeps_trading_when_nobody_reads_the_log(instance, tmp_path):
    """`hftd run 2>&1 | less`, and less is quit (or `| head`, or a `tee` that died): the
    log's pipe has no reader. The log records are dropped by `logging`; a strategy's own
    `print` (its stdout is the log's stream) must not raise BrokenPipeError into on_tick
    either (found: the strategy crashed on every print, was restarted and quarantined, and
    the run failed)."""
    cfg = _config(tmp_path, instance, QUIET + '[supervisor]\nrestart_delay_s = 0.05\n'
                  '[[strategies]]\nname = "sample"\nclass = "tests.strategies:Chatty"\n'
                  'params = { every = 100 }\n')
    report = tmp_path / "r.json"
    out = tmp_path / "out"
    r, w = os.pipe()
    os.close(r)  # nobody reads the log
    try:
        with open(out, "w") as f:
            res = _run(cfg, "--ticks", "5000", "--report", str(report), stdout=f, stderr=w)
    finally:
        os.close(w)
    summary = out.read_text()
    assert res.returncode == 0, summary
    import json

    rep = json.loads(report.read_text())
    assert rep["quarantined"] == [], rep["quarantined"]
    assert "invariants: all hold" in summary, summary
    assert shm.leftovers(instance) == []
