"""`hftd top`: what happened in the last seconds beside lifetime figures, 80 columns, drawn in
place on a terminal, and the instance's exit noticed and said."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

import numpy as np
import pytest

from conftest import HFTD, hftd, hftd_running, wait_running
from hftd import histogram
from hftd.console import instance_state, top_frame
from hftd.monitor import History, Reading, difference
from hftd.terminal import columns, fit, wrap

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# the window is the last 10 s and up to one refresh more: its length is what is shown (the
# rates row over it has figures once there is a window; "-" before)
TEN_S = re.compile(r"^  last 1[01] s +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+$", re.M)
TOML = "[producer.synthetic]\nrate = 5000.0\n"


def _hist() -> histogram.Histogram:
    return histogram.Histogram(np.zeros(histogram.WORDS, dtype=np.int64))


def _inverted_cdf(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="inverted_cdf"))


# --- the window: the difference of two snapshots ------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
def test_the_difference_of_two_snapshots_is_the_histogram_of_the_samples_between(seed):
    rng = np.random.default_rng(seed)
    before = rng.integers(1, 5_000_000, 20_000)  # up to 5 ms: a stall among them
    after = rng.lognormal(9, 1, 20_000).astype(np.int64) + 1  # ~8 µs typical
    h = _hist()
    h.record_many(before)
    first = h.snapshot()
    h.record_many(after)
    window = difference(h.snapshot(), first)
    alone = _hist()
    alone.record_many(after)
    assert np.array_equal(window.buckets, alone.buckets)
    assert window.count == len(after) and window.sum == int(after.sum())
    assert after.max() <= window.max <= h.snapshot().max
    for q in (50, 90, 99):
        want = _inverted_cdf(after, q)
        assert abs(window.percentile(q) - want) <= want * 0.004 + 1, q


def test_a_stall_leaves_the_window_p99_but_stays_in_the_lifetime_p99():
    h = _hist()
    h.record_many(np.full(2000, 50_000_000))  # 50 ms each: a stall, 1.8 % of all samples
    h.record_many(np.full(9000, 10_000))
    stalled = h.snapshot()
    h.record_many(np.full(100_000, 10_000))  # then 10 µs for a while
    now = h.snapshot()
    assert now.percentile(99) == pytest.approx(50e6, rel=0.004)
    assert difference(now, stalled).percentile(99) == pytest.approx(10e3, rel=0.004)


def test_a_bucket_that_shrank_counts_as_none_not_negative():
    """A histogram made anew between two snapshots (or a snapshot torn by its writer)."""
    h = _hist()
    h.record_many(np.full(100, 1000))
    old = h.snapshot()
    fresh = _hist()
    fresh.record_many(np.full(10, 2000))
    w = difference(fresh.snapshot(), old)
    assert w.buckets.min() == 0 and w.count == 10
    assert w.percentile(50) == pytest.approx(2000, rel=0.004)


def _reading(t: float, ticks: int, samples: np.ndarray) -> Reading:
    h = _hist()
    h.record_many(samples)
    return Reading(t, {"producer": h.snapshot()}, {"ticks_received": ticks})


def test_history_windows_are_the_last_10_s_once_there_are_10_s_and_say_their_length():
    hist = History(span_s=10.0)
    assert hist.window() is None and hist.interval() is None
    samples = np.empty(0, dtype=np.int64)
    for i in range(31):  # one refresh every 0.5 s, 1000 ticks/s, one more sample each
        samples = np.append(samples, 1000 + i)
        hist.add(_reading(i * 0.5, i * 500, samples))
        w, iv = hist.window(), hist.interval()
        if i == 0:
            assert w is None and iv is None
            continue
        assert iv["seconds"] == pytest.approx(0.5)
        assert iv["rates_per_s"]["ticks_received"] == pytest.approx(1000)
        assert w["seconds"] == pytest.approx(min(i * 0.5, 10.0))
        assert w["rates_per_s"]["ticks_received"] == pytest.approx(1000)
        assert w["latency_us"]["producer"]["count"] == round(w["seconds"] / 0.5)


def test_history_keeps_a_bounded_number_of_readings_however_fast_it_refreshes():
    hist = History(span_s=10.0)
    for i in range(600):  # 60 s at 0.1 s
        hist.add(_reading(i * 0.1, i, np.array([1000])))
    assert len(hist.kept) <= 22
    assert 10.0 <= hist.window()["seconds"] <= 10.0 + 0.5 + 1e-9


# --- fitting the terminal ---------------------------------------------------------------------


def test_wrap_keeps_every_character_and_counts_wide_ones_as_two_columns():
    line = "  accounting: " + " ".join(f"成交價格{i} value{i}" for i in range(40)) + " " + "x" * 200
    for width in (80, 40, 20):
        out = wrap(line, width)
        assert all(columns(piece) <= width for piece in out), width
        assert "".join(line.split()) == "".join("".join(out).split())
    assert wrap("short", 80) == ["short"]
    indented = wrap("  orders: " + "word " * 30, 40)
    assert indented[0].startswith("  orders: word") and indented[1].startswith("      word")


def test_the_frame_fits_80_columns_and_long_names_get_their_own_line(plant):
    p = plant({"strategies": [{"name": "sample"}, {"name": "a_strategy_with_a_long_name"}]})
    view = p.sup.view
    hist = History()
    p.sup.agents[0].block.histogram("stage").record_many(np.arange(1000, 90_000, 7))
    for _ in range(2):
        snaps = view.snapshots()
        hist.add(view.reading(snaps))
    st = view.status(rate_window_s=0, snaps=snaps)
    lately = {"interval": hist.interval(), "window": hist.window(), "uptime_s": 3725.0,
              "lifetime_rates_per_s": {k: 12345.6 for k in hist.newest.counts}}
    lines = top_frame(st, lately, state=instance_state(st["agents"]), now="00:00:00 UTC")
    for width in (80, 79):
        assert all(columns(line) <= width for line in fit(lines, width))
    # the tables are designed for 80: only a long name or a long sentence wraps
    assert max(len(line) for line in lines if line.startswith("  producer")) <= 79
    assert "  strategy.a_strategy_with_a_long_name" in lines
    assert "up 1:02:05" in lines[0]
    assert any(re.match(r"latency: +-+ last \d", line) for line in lines)
    assert any(line.startswith("  lifetime avg") and "12,346" in line for line in lines)


# --- against a running instance ---------------------------------------------------------------


def test_top_of_an_instance_that_never_ran_says_so_and_exits_3(instance):
    res = hftd("top", "--instance", instance, "--iterations", "1", timeout=30,
               stdin=subprocess.DEVNULL)
    assert res.returncode == 3
    assert f"instance {instance!r} is not running" in res.stderr


def _frames(text: str) -> list[str]:
    return [f for f in text.split("\n\n") if f.startswith("hftd top:")]


def test_top_shows_the_last_10_s_in_80_columns_and_says_when_the_instance_exited(
        instance, tmp_path):
    """Piped (no terminal), COLUMNS=80: every frame fits; once 10 s have gone by, the latency
    and rate columns are those of the last 10 s; a drained stop of the instance makes top
    draw its last figures, say it exited, and exit 3."""
    env = dict(os.environ, COLUMNS="80")
    env.pop("LINES", None)
    with hftd_running(instance, tmp_path, toml=TOML) as proc:
        wait_running(instance)
        top = subprocess.Popen(HFTD + ["top", "--instance", instance, "--interval", "0.5"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=env)
        try:
            got = b""
            deadline = time.monotonic() + 90
            while not TEN_S.search(got.decode()):
                assert time.monotonic() < deadline and top.poll() is None, got[-3000:]
                if select.select([top.stdout], [], [], 1.0)[0]:
                    got += os.read(top.stdout.fileno(), 65536)
            proc.send_signal(signal.SIGINT)
            rest, err = top.communicate(timeout=90)
            out, err = (got + rest).decode(), err.decode()
        finally:
            if top.poll() is None:
                top.kill()
                top.communicate()
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    assert top.returncode == 3, err
    lines = out.splitlines()
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    frames = _frames(out)
    assert len(frames) >= 20
    ten = next(f for f in frames if TEN_S.search(f))  # rates over the last 10 s
    assert re.search(r"^latency: +-+ last 1[01] s -+  -+ lifetime -+$", ten, re.M)
    row = re.search(r"^  tick-to-trade +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+) +(\S+)$",
                    ten, re.M)
    assert row and row.group(1) != "-" and row.group(3) != "0", ten  # p50, count of 10 s
    assert f"instance {instance!r} running;" in frames[0]
    assert f"instance {instance!r} EXITED;" in frames[-1]
    assert "q or Ctrl-C" not in out  # not a terminal: keys are not read
    said = " ".join(err.split())
    assert f"instance {instance!r} exited between" in said
    assert "(drained and stopped)" in said
    assert all(len(line) <= 80 for line in err.splitlines())


def _pty_top(instance: str, cols: int = 80, rows: int = 60):
    """`hftd top` on a pseudo-terminal of `cols` x `rows`: (process, master fd)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(HFTD + ["top", "--instance", instance, "--interval", "0.3"],
                            stdin=slave, stdout=slave, stderr=slave, env=env,
                            start_new_session=True)
    os.close(slave)
    return proc, master


def _read_until(master: int, proc, done, timeout: float = 60) -> str:
    """What the terminal got, until `done(text)` or the process has exited and said all."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not chunk:
                break
            data += chunk
        if done(data.decode(errors="replace")):
            break
        if proc.poll() is not None and not ready:
            break
    return data.decode(errors="replace")


def _screen_lines(raw: str) -> list[str]:
    """Every line drawn: frames start at cursor-home, lines end at newlines."""
    return [line for frame in raw.split("\x1b[H")
            for line in ANSI.sub("", frame).replace("\r", "").split("\n")]


def test_top_on_a_terminal_redraws_in_place_quits_on_q_and_notices_a_killed_instance(
        instance, tmp_path):
    with hftd_running(instance, tmp_path, toml=TOML) as proc:
        wait_running(instance)
        top, master = _pty_top(instance)
        try:
            raw = _read_until(master, top, lambda t: t.count("hftd top:") >= 4)
            os.write(master, b"q")
            raw += _read_until(master, top, lambda t: False, timeout=30)
            assert top.wait(30) == 0
        finally:
            if top.poll() is None:
                top.kill()
            os.close(master)
        frames = raw.split("\x1b[H")
        assert raw.count("\x1b[2J") == 1  # the screen is cleared once, never between frames
        # [hide cursor, clear screen, frame, ..., last frame + cursor shown]
        assert len(frames) >= 6 and all(f.endswith("\x1b[J") for f in frames[2:-1])
        assert frames[-1].startswith("hftd top:") and "\x1b[J\x1b[?25h" in frames[-1]
        assert raw.startswith("\x1b[?25l") and "\x1b[?25h" in raw  # cursor hidden, given back
        lines = _screen_lines(raw)
        assert all(len(line) <= 80 for line in lines), [ln for ln in lines if len(ln) > 80]
        assert any("(q or Ctrl-C to quit)" in line for line in lines)

        top, master = _pty_top(instance)
        try:
            raw = _read_until(master, top, lambda t: t.count("hftd top:") >= 2)
            proc.kill()  # SIGKILL: no drain, its shared memory left behind
            proc.communicate(timeout=30)
            raw += _read_until(master, top, lambda t: False)  # until it has exited
            assert top.wait(30) == 3
        finally:
            if top.poll() is None:
                top.kill()
            os.close(master)
    said = " ".join(ANSI.sub("", raw).split())
    assert f"instance {instance!r} exited between" in said
    assert f"supervisor pid {proc.pid} gone" in said
    assert all(len(line) <= 80 for line in _screen_lines(raw))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_top_stopped_by_a_signal_gives_the_terminal_back(instance, tmp_path, sig):
    """`timeout 60 hftd top` (SIGTERM), or its terminal window closed (SIGHUP; an ssh
    session's shell passes it on): top leaves as on q, with the terminal as it found it
    (echo, line editing) and the cursor shown, not a shell that echoes nothing. Found: the
    signal's default action ended top in cbreak mode with the cursor hidden."""
    with hftd_running(instance, tmp_path, toml=TOML):
        wait_running(instance)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 80, 0, 0))
        before = termios.tcgetattr(slave)
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        env["TERM"] = "xterm"
        top = subprocess.Popen(HFTD + ["top", "--instance", instance, "--interval", "0.3"],
                               stdin=slave, stdout=slave, stderr=slave, env=env,
                               start_new_session=True)
        try:
            raw = _read_until(master, top, lambda t: t.count("hftd top:") >= 2)
            top.send_signal(sig)
            raw += _read_until(master, top, lambda t: False, timeout=30)
            code = top.wait(30)
            after = termios.tcgetattr(slave)
        finally:
            if top.poll() is None:
                top.kill()
            os.close(master)
            os.close(slave)
    assert after[3] & (termios.ECHO | termios.ICANON) == termios.ECHO | termios.ICANON
    assert after == before
    assert raw.rindex("\x1b[?25h") > raw.rindex("\x1b[?25l"), raw[-200:]  # cursor shown
    assert code == 0, code  # as on q
