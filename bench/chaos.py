"""Chaos: SIGKILL hftd's agents at random moments of a trading run, then prove from sources
counted independently of each other that trading was crash-only.

    python -m bench.chaos --kills N --rate R --seed S [--out result.json]     (make chaos)
                          [--roles strategy,executor] [--ticks CAP] [--work DIR]

One `hftd run` (synthetic feed at `rate` ticks/s, a 200 us simulated venue, risk limits that
bind now and then, the `bench.chaos_strategy:Churn` strategy trading every 50th tick) gets
`kills` SIGKILLs: a seeded shuffle of the four roles (as many kills of each), each after a
seeded random delay counted from the moment every agent runs again (from 0: a kill may land
while the last replacement is still catching up). Time to resume is from the kill until the
replacement's stats block says RUNNING. After the last kill the run is stopped with SIGINT
(`--ticks` is only a cap). The restart policy is opened up (`[supervisor]` below): the test
is of crash-only trading, not of when the supervisor gives up.

Then, from the run report, the strategy's tick-count file (`bench.chaos_strategy`) and the
simulated venue's log (`hftd.venues.sim`), each invariant of `check` (a-f) holds or is a
finding, with the log lines and the kill it followed. `run` returns the result dict that
`--out` writes: `failures` (invariant -> evidence lines) and `figures`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict, deque

import numpy as np
import psutil

from hftd import config as config_mod
from hftd import shm, stats
from hftd.events import ReportKind

from .chaos_strategy import TickCounts
from .common import kill_instance_processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROLES = ("producer", "dispatcher", "strategy", "executor")
STRATEGY = "churn"
AGENT = {"producer": "producer", "dispatcher": "dispatcher",
         "strategy": f"strategy.{STRATEGY}", "executor": "executor"}
INVARIANTS = {
    "a": "every tick delivered to the strategy exactly once",
    "b": "no client order id reaches the venue twice",
    "c": "positions agree: strategy, executor, venue",
    "d": "no risk limit exceeded at any time",
    "e": "every order ended in exactly one terminal state",
    "f": "the run exited 0, the report's invariants hold, /dev/shm clean",
}
MAX_POSITION = 5
MAX_ORDER_QTY = 3
LATENCY_US = 200.0
EVERY = 50  # the strategy acts on every 50th tick: ~1,000 actions/s at 50k ticks/s
MAX_DELAY_S = 1.5  # a kill lands up to this long after every agent runs again
SHOWN = 12  # evidence lines per finding kind

_FILL, _REJECT = int(ReportKind.FILL), int(ReportKind.REJECT)
_CANCELED, _EXPIRED = int(ReportKind.CANCELED), int(ReportKind.EXPIRED)
_REPLACED = int(ReportKind.REPLACED)
_ENDS = (_REJECT, _CANCELED, _EXPIRED)
# a log line: type -> number of integers after the type letter
_FIELDS = {"N": 8, "R": 10, "C": 2, "P": 4, "E": 6}


def config_toml(instance: str, work: str, rate: float, seed: int, counts: str) -> str:
    return f"""
instance = "{instance}"
runtime_dir = "{work}/run"
state_dir = "{work}/state"
[metrics]
listen = ""
[producer.synthetic]
rate = {float(rate)}
seed = {seed}
[executor.sim]
latency_us = {LATENCY_US}
[executor.risk]
max_position = {MAX_POSITION}
max_order_qty = {MAX_ORDER_QTY}
[supervisor]
restart_delay_s = 0.1
restart_delay_max_s = 0.1
restart_burst = 1000
[[strategies]]
name = "{STRATEGY}"
class = "bench.chaos_strategy:Churn"
params = {{ counts = "{counts}", every = {EVERY}, seed = {seed}, \
max_order_qty = {MAX_ORDER_QTY}, soft_cap = {MAX_POSITION + 2} }}
"""


def venue_log_path(cfg) -> str:
    """`<state dir of the instance>/venue.log` (hftd.venues.sim.log_path of that directory)."""
    from hftd.stages.executor import state_path

    inst_dir = os.path.dirname(state_path(cfg))
    try:
        from hftd.venues.sim import log_path
    except ImportError:
        return os.path.join(inst_dir, "venue.log")
    return log_path(inst_dir)


class _LogTail:
    """The venue log's last sequence number so far, read incrementally (at each kill)."""

    def __init__(self, path: str):
        self.path, self.offset, self.last_seq, self.partial = path, 0, 0, b""
        try:
            from hftd.venues.sim import RECORD_WORDS
        except ImportError:  # a text log
            RECORD_WORDS = 0
        self.words = RECORD_WORDS

    def seq(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return self.last_seq
        if self.words:  # fixed records, the sequence number first, 0 where none is yet
            rec = np.frombuffer(data[: len(data) // (8 * self.words) * 8 * self.words],
                                dtype=np.int64).reshape(-1, self.words)
            empty = np.flatnonzero(rec[:, 0] == 0)
            used = int(empty[0]) if empty.size else len(rec)
            if used:
                self.last_seq = int(rec[used - 1, 0])
                self.offset += used * 8 * self.words
            return self.last_seq
        self.offset += len(data)
        data = self.partial + data
        cut = data.rfind(b"\n")
        if cut >= 0:
            line = data[:cut].rsplit(b"\n", 1)[-1]
            try:
                self.last_seq = int(line.split(None, 1)[0])
            except (ValueError, IndexError):
                pass
        self.partial = data[cut + 1:]
        return self.last_seq


class _Agents:
    """The instance's agents as their stats blocks show them (attached once)."""

    def __init__(self, instance: str):
        self.instance = instance
        self.blocks: dict[str, stats.StatsBlock] = {}

    def block(self, role: str) -> stats.StatsBlock:
        b = self.blocks.get(role)
        if b is None:
            b = self.blocks[role] = stats.StatsBlock.attach(
                shm.object_name(self.instance, f"stats.{AGENT[role]}"))
        return b

    def running(self, role: str) -> int:
        """The pid of the agent if it runs, else 0."""
        try:
            b = self.block(role)
        except (FileNotFoundError, RuntimeError):
            return 0
        return b.pid if b.state == stats.RUNNING else 0

    def wait_all(self, proc: subprocess.Popen, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            if all(self.running(r) for r in ROLES):
                return True
            time.sleep(0.005)
        raise RuntimeError(f"the agents did not all run within {timeout} s")

    def close(self) -> None:
        for b in self.blocks.values():
            b.close()
        self.blocks.clear()


def _kill_one(proc, agents: _Agents, role: str, timeout: float,
              at_death=None) -> tuple[float, int, int, dict]:
    """SIGKILL the running agent `role`; returns (ms until its replacement runs, its pid,
    the replacement's pid, what `at_death()` said once it was dead) or raises."""
    deadline = time.monotonic() + timeout
    while not (pid := agents.running(role)):  # it crashed by itself meanwhile (a finding: f)
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{role} not running to be killed")
        time.sleep(0.001)
    victim = psutil.Process(pid)
    if victim.ppid() != proc.pid:
        raise RuntimeError(f"pid {pid} of {role} is not a child of the supervisor")
    t0 = time.monotonic()
    victim.kill()
    victim.wait(10)
    seen = at_death() if at_death else {}
    b = agents.block(role)
    deadline = t0 + timeout
    while not (b.state == stats.RUNNING and b.pid not in (pid, 0)):
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended while {role} was restarting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{role} not running again within {timeout} s of its kill")
        time.sleep(0.001)
    return (time.monotonic() - t0) * 1e3, pid, b.pid, seen


def run(kills: int, rate: float, seed: int, work: str | None = None,
        instance: str | None = None, ticks: int | None = None, out: str | None = None,
        quiet: bool = False, roles: tuple[str, ...] = ROLES) -> dict:
    """One chaos run in `work` (a new temporary directory if None, kept); see the module
    docstring; `roles`: the roles to kill (all four by default). Returns the result (also
    written to `out`). Whatever happens, the run's processes and shared memory are gone
    when it returns."""
    work = work or tempfile.mkdtemp(prefix="hftd-chaos-")
    instance = instance or "chaos" + uuid.uuid4().hex[:10]
    os.makedirs(work, exist_ok=True)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    if not ticks:  # a cap only: the run is stopped after the last kill
        ticks = int(rate * (kills * 3 + 60)) if rate else 10**8
    # on tmpfs (see bench.chaos_strategy), outside the instance's names; removed at the end
    counts_path = f"/dev/shm/chaos-counts.{os.getuid()}.{instance}"
    cfg_path = os.path.join(work, "hftd.toml")
    with open(cfg_path, "w") as f:
        f.write(config_toml(instance, work, rate, seed, counts_path))
    cfg = config_mod.load(cfg_path)
    log_path = venue_log_path(cfg)
    report = os.path.join(work, "report.json")
    err_path = os.path.join(work, "hftd.err")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    say(f"chaos: instance {instance} in {work}: {kills} kills at {rate:g} ticks/s, seed {seed}")
    TickCounts.create(counts_path, ticks)
    try:
        with open(os.path.join(work, "hftd.out"), "w") as out_f, open(err_path, "w") as err_f:
            t_start = time.monotonic()
            proc = subprocess.Popen([sys.executable, "-m", "hftd", "run", "--config", cfg_path,
                                     "--ticks", str(ticks), "--report", report],
                                    cwd=ROOT, env=env, stdout=out_f, stderr=err_f)
            try:
                kill_log, problems = _chaos(proc, instance, kills, roles, seed, log_path,
                                             counts_path, t_start, say)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                wall = time.monotonic() - t_start
                leftovers = shm.leftovers(instance)
                kill_instance_processes(instance)
                shm.remove_leftovers(instance)
        counts = np.fromfile(counts_path, dtype=np.int32)
    finally:
        os.unlink(counts_path)
    with open(err_path) as f:
        stderr = f.read()
    rep = None
    if os.path.exists(report) and os.path.getsize(report):
        with open(report) as f:
            rep = json.load(f)
    log = parse_log(log_path)
    result = {"instance": instance, "work": work, "kills_planned": kills, "rate": rate,
              "seed": seed, "ticks_cap": ticks, "returncode": proc.returncode,
              "wall_s": round(wall, 1), "kills": kill_log, "run_problems": problems,
              "stderr_tail": stderr[-3000:],
              "failures": check(rep, log, counts, cfg, kill_log, proc.returncode, leftovers,
                                problems),
              "figures": figures(rep, log, kill_log, wall)}
    if out:
        with open(out, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _chaos(proc, instance: str, kills: int, roles, seed: int, log_path: str,
           counts_path: str, t_start: float, say) -> tuple[list[dict], list[str]]:
    """The kills, then SIGINT; returns the kills done and what went wrong in the run."""
    rng = random.Random(seed)
    plan = [roles[k % len(roles)] for k in range(kills)]
    rng.shuffle(plan)
    kill_log: list[dict] = []
    problems: list[str] = []
    agents = _Agents(instance)
    tail = _LogTail(log_path)
    counts = np.memmap(counts_path, dtype=np.int32, mode="r")

    def strategy_died() -> dict:
        """Evidence for a: the last tick the dead strategy process marked begun (the stage's
        `tick_started`, a ring position + 1; position = seq while the ring holds each tick
        once) and how many times its on_tick counted it."""
        p = agents.block("strategy").get("tick_started") - 1
        return {"began": p, "began_counted": int(counts[p]) if 0 <= p < len(counts) else None}
    try:
        agents.wait_all(proc, 60)
        for k, role in enumerate(plan):
            if not agents.wait_all(proc, 60):
                problems.append(f"the run ended after {k} of {kills} kills")
                break
            # a quarter of the kills land within 50 ms of the last replacement running (it
            # is still catching up), the rest anywhere in the next MAX_DELAY_S
            delay = rng.uniform(0, 0.05) if rng.random() < 0.25 else rng.uniform(0, MAX_DELAY_S)
            time.sleep(delay)
            at_seq = agents.block("strategy").get("last_seq")
            ms, pid, new_pid, seen = _kill_one(
                proc, agents, role, 60, strategy_died if role == "strategy" else None)
            kill_log.append({"n": k + 1, "role": role, "delay_s": round(delay, 3),
                             "t_s": round(time.monotonic() - t_start, 3), "pid": pid,
                             "new_pid": new_pid, "resume_ms": round(ms, 1),
                             "strategy_last_seq": at_seq, "log_seq": tail.seq(), **seen})
            say(f"  kill {k + 1:>3}/{kills} {role:<10} after {delay:5.3f} s: running again in "
                f"{ms:6.0f} ms (strategy at tick {at_seq}, venue log at {kill_log[-1]['log_seq']})")
        if proc.poll() is None:
            agents.wait_all(proc, 60)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
        proc.wait(timeout=180)
    except Exception as e:  # a finding of the run itself; the checks still run
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        agents.close()
    return kill_log, problems


# --- the venue log ----------------------------------------------------------------------
class VenueLog:
    """The log's complete lines as (seq, type, ints), and what is wrong with its form."""

    def __init__(self, path: str):
        self.path = path
        self.lines: list[tuple[int, str, list[int]]] = []
        self.problems: list[str] = []
        self.partial_tail = b""
        self.missing = False


def log_text(path: str) -> bytes | None:
    """The venue log in its text form (hftd.venues.sim's docstring), None if there is none:
    the file itself if it is text; if the venue keeps fixed binary records, the lines
    `python -m hftd.venues.sim FILE` prints."""
    if not os.path.exists(path):
        return None
    try:
        from hftd.venues.sim import records
    except ImportError:
        with open(path, "rb") as f:
            return f.read()
    return "".join(" ".join(map(str, r)) + "\n" for r in records(path)).encode()


def parse_log(path: str) -> VenueLog:
    log = VenueLog(path)
    data = log_text(path)
    if data is None:
        log.missing = True
        return log
    raw_lines = data.split(b"\n")
    log.partial_tail = raw_lines.pop()  # after the last newline: a write cut short, ignored
    prev = None
    for no, raw in enumerate(raw_lines, 1):
        parts = raw.decode(errors="replace").split()
        try:
            seq, t, vals = int(parts[0]), parts[1], [int(x) for x in parts[2:]]
            if _FIELDS.get(t) != len(vals):
                raise ValueError
        except (IndexError, ValueError):
            log.problems.append(f"line {no} is malformed: {raw[:120]!r}")
            continue
        if prev is not None and seq != prev + 1:
            log.problems.append(f"line {no}: seq {seq} after {prev} (not +1)")
        prev = seq
        log.lines.append((seq, t, vals))
    return log


# --- the invariants ---------------------------------------------------------------------
def _after_kill(kill_log: list[dict], log_seq: int) -> str:
    """The last kill before venue log line `log_seq` was written."""
    before = [k for k in kill_log if k["log_seq"] < log_seq]
    if not before:
        return "before any kill"
    k = before[-1]
    return f"last kill before it: #{k['n']}, {k['role']}, venue log at {k['log_seq']}"


def _near_tick(kill_log: list[dict], seq: int) -> str:
    if not kill_log:
        return "no kill"
    k = min(kill_log, key=lambda k: abs(k["strategy_last_seq"] - seq))
    return f"nearest kill #{k['n']} ({k['role']}, strategy at tick {k['strategy_last_seq']})"


def _line(seq: int, t: str, vals: list[int]) -> str:
    return f"{seq} {t} " + " ".join(map(str, vals))


def _at(kill_log: list[dict], seq: int, t: str, vals: list[int]) -> str:
    """A log line as evidence: the line and the kill it followed."""
    return f"line `{_line(seq, t, vals)}` ({_after_kill(kill_log, seq)})"


def check(rep: dict | None, log: VenueLog, counts: np.ndarray, cfg, kill_log: list[dict],
          returncode: int | None, leftovers: list[str], problems: list[str]) -> dict:
    """Each invariant (a-f, see INVARIANTS) -> the evidence that it failed ([] if it held)."""
    fail: dict[str, list[str]] = {k: [] for k in INVARIANTS}

    # f. the run itself, and the report's own invariants
    f = fail["f"]
    f += [f"run: {p}" for p in problems]
    if returncode != 0:
        f.append(f"hftd run exited {returncode}")
    if leftovers:
        f.append(f"/dev/shm not clean after the run: {leftovers[:8]}")
    if rep is None:
        f.append("no report written")
    else:
        f += report_invariants(rep)
        for role in ROLES:  # restarted more often than killed: it crashed by itself
            killed = sum(k["role"] == role for k in kill_log)
            restarts = rep["stages"][AGENT[role]]["restarts"]
            if restarts != killed:
                f.append(f"{AGENT[role]} restarted {restarts} times, killed {killed} times")
        fail["a"] += _ticks_once(counts, rep["ticks"]["published"], kill_log)
    fail["b"], fail["d"], fail["e"], pos = _venue_log(log, cfg, kill_log)
    if log.missing:
        fail["c"].append(f"no venue log at {log.path}")
    if rep is None or log.missing:
        return fail
    if rep["orders"]["working"]:
        fail["e"].append(f"the executor's report says working {rep['orders']['working']}")

    # c. positions: the strategy's own view, the executor's, the venue's
    syms = cfg.symbols()
    ex = rep["stages"]["executor"]["values"]
    for si, sc in enumerate(cfg.strategies):
        sv = rep["stages"][f"strategy.{sc.name}"]["values"]
        for i in cfg.routes(sc):
            sym = syms[i]
            mine, execs, venue = sv.get(f"pos.{sym}"), ex.get(f"pos.{sc.name}.{sym}"), pos[(si, i)]
            if not mine == execs == venue:
                fail["c"].append(f"{sc.name}/{sym}: strategy {mine}, executor {execs}, venue "
                                 f"log {venue}")
    return fail


def _ticks_once(counts: np.ndarray, n: int, kill_log: list[dict]) -> list[str]:
    """a: counts[0:n] == 1 (each of the n ticks published began on_tick once), 0 past it;
    except that a tick a killed strategy process had marked begun (`tick_started`) may be at
    0: the stage hands it to no later process (at most once where a process died: it may
    have sent that tick's orders), and the kill can land between the stage's mark and the
    first statement of on_tick (see `begun_not_handled` in the figures)."""
    a = []
    body, rest = counts[:n], counts[n:]
    begun = {k["began"] for k in kill_log if k.get("role") == "strategy" and "began" in k}
    zeros = np.array([s for s in np.flatnonzero(body == 0).tolist() if s not in begun],
                     dtype=np.int64)
    multi = np.flatnonzero(body > 1)
    extra = np.flatnonzero(rest) + n
    if len(zeros):
        a.append(f"{len(zeros)} of {n} ticks never began on_tick, e.g. seq " + ", ".join(
            f"{s} (counts of seq-1..seq+1: {counts[max(s - 1, 0):s + 2].tolist()}; "
            f"{_near_tick(kill_log, s)})" for s in zeros[:SHOWN]))
        for k in kill_log:
            if k.get("began") in set(zeros[:SHOWN].tolist()):
                a.append(f"kill #{k['n']} (strategy): the dead process had marked tick "
                         f"{k['began']} begun (tick_started) but its on_tick had not counted "
                         f"it ({k['began_counted']}): the kill landed between the stage's "
                         f"mark and the strategy's first statement")
    if len(multi):
        a.append(f"{len(multi)} ticks began on_tick more than once, e.g. " + ", ".join(
            f"seq {s} x{body[s]} ({_near_tick(kill_log, s)})" for s in multi[:SHOWN]))
    if len(extra):
        a.append(f"{len(extra)} counts past the {n} ticks published, e.g. index "
                 + ", ".join(map(str, extra[:SHOWN])))
    return a


def _venue_log(log: VenueLog, cfg, kill_log: list[dict]):
    """The venue log replayed in order: the evidence against b, d and e, and the venue's
    position per (owner, instrument) from its fills (for c)."""
    b, d, e = [], [], []
    pos: dict[tuple[int, int], int] = defaultdict(int)
    if log.missing:
        return [f"no venue log at {log.path}"], [], [], pos
    syms = cfg.symbols()
    names = [s.name for s in cfg.strategies]
    risk = cfg.executor.risk
    e += [f"venue log: {p}" for p in log.problems[:SHOWN]]
    at = functools.partial(_at, kill_log)
    orders: dict[int, dict] = {}
    worst: dict[tuple[int, int], int] = defaultdict(int)
    recent: dict[tuple[int, int], deque] = defaultdict(lambda: deque(maxlen=10))
    for seq, t, v in log.lines:
        o = orders.get(v[1])
        if o is not None or t in "NR":
            recent[(v[0], o["inst"] if o else v[2])].append(_line(seq, t, v))
        if t == "N":
            owner, cid, inst, side, qty = v[:5]
            if cid in orders:
                first = orders[cid]["line"]
                b.append(f"client id {cid} reached the venue twice: `{first}`, then "
                         f"{at(seq, t, v)}")
                continue
            if qty > risk.max_order_qty:
                d.append(f"order qty {qty} > max_order_qty {risk.max_order_qty}: {at(seq, t, v)}")
            orders[cid] = {"owner": owner, "inst": inst, "side": side, "qty": qty, "filled": 0,
                           "ends": 0, "line": _line(seq, t, v)}
        elif t == "R":
            owner, cid, inst, side, qty, filled = v[:6]
            o = orders.get(cid)
            if o is None:
                orders[cid] = {"owner": owner, "inst": inst, "side": side, "qty": qty,
                               "filled": filled, "ends": 0, "line": _line(seq, t, v)}
                continue
            was = (o["owner"], o["inst"], o["side"], o["qty"], o["filled"])
            if o["ends"]:
                e.append(f"client id {cid} re-attached after it had ended: {at(seq, t, v)}")
            elif was != (owner, inst, side, qty, filled):
                e.append(f"client id {cid} re-attached as (owner, inst, side, qty, filled) "
                         f"{(owner, inst, side, qty, filled)} but the log says {was}: "
                         f"{at(seq, t, v)}")
        elif t == "P":
            if v[2] > risk.max_order_qty:
                d.append(f"replace to qty {v[2]} > max_order_qty {risk.max_order_qty}: "
                         f"{at(seq, t, v)}")
        elif t == "E":
            owner, cid, kind, qty = v[:4]
            o = orders.get(cid)
            if o is None:
                if kind != int(ReportKind.CANCEL_REJECTED):
                    e.append(f"an answer for client id {cid}, never sent to the venue: "
                             f"{at(seq, t, v)}")
                continue
            if kind == _FILL:
                if o["ends"]:
                    e.append(f"a fill of client id {cid} after it had ended: {at(seq, t, v)}")
                o["filled"] += qty
                key = (o["owner"], o["inst"])
                pos[key] += o["side"] * qty
                if abs(pos[key]) > risk.max_position and abs(pos[key]) > worst[key]:
                    worst[key] = abs(pos[key])
                    d.append(f"position {pos[key]} of {names[key[0]]}/{syms[key[1]]} > "
                             f"max_position {risk.max_position}: {at(seq, t, v)}; its last lines: "
                             + " | ".join(recent[key]))
                if o["filled"] == o["qty"]:
                    o["ends"] += 1
                elif o["filled"] > o["qty"]:
                    e.append(f"client id {cid} filled {o['filled']} of {o['qty']}: {at(seq, t, v)}")
            elif kind in _ENDS:
                o["ends"] += 1
                if o["ends"] > 1:
                    e.append(f"client id {cid} ended a second time: {at(seq, t, v)}")
                elif kind != _REJECT and qty != o["qty"] - o["filled"]:
                    e.append(f"client id {cid} ended with leaves {qty}, the log says "
                             f"{o['qty'] - o['filled']}: {at(seq, t, v)}")
            elif kind == _REPLACED:
                o["qty"] = qty
    open_ = [(cid, o) for cid, o in orders.items() if o["ends"] == 0]
    if open_:
        e.append(f"{len(open_)} orders have no terminal event, e.g. " + "; ".join(
            f"{cid} (`{o['line']}`, filled {o['filled']} of {o['qty']})"
            for cid, o in open_[:SHOWN]))
    return b, d, e, pos


def report_invariants(rep: dict) -> list[str]:
    """The invariants the supervisor checked at the end of the run (`rep["invariants"]`,
    hftd.report.invariants: feed and routing accounting, drained tick rings, no gap on a
    lossless ring, nothing working, positions agreeing, no illegal transition or mismatch),
    and what this run's shape adds: every ring drained, the orders and reports rings too;
    every tick delivered to the one strategy and the venue; the strategy's own book empty.
    The order counters' identities are not among them: a counter is a store apart from the
    event it counts, so a kill between the two leaves it one off (hftd.report's docstring);
    their drift is a figure (`counter_drift`), the orders themselves are checked from the
    venue's log (b, d, e)."""
    out = [f"report: invariant failed: {why}" for why in rep.get("invariants", ())]

    def need(ok: bool, what: str) -> None:
        if not ok:
            out.append(f"report: {what}")

    t = rep["ticks"]
    for name, r in rep["rings"].items():
        need(r["in_flight"] == 0, f"ring {name}: {r['in_flight']} events left")
    for name, r in rep["flow"]["rings"].items():
        if "routed" in r:
            # every ring gets every tick here (the strategy trades every instrument; block)
            need(r["delivered"] == t["published"] and r["published"] == t["published"] + 1,
                 f"{name}: delivered {r['delivered']}, ring published {r['published']}, "
                 f"producer published {t['published']} (+ the end)")
    for name, s in rep["stages"].items():
        if s["role"] == "strategy":
            v = s["values"]
            need(v["ticks_in"] == t["published"],
                 f"{name} ticks_in {v['ticks_in']}, published {t['published']}")
            need(v["working_orders"] == 0, f"{name}: working {v['working_orders']}")
    return out


# --- figures ----------------------------------------------------------------------------
def figures(rep: dict | None, log: VenueLog, kill_log: list[dict], wall: float) -> dict:
    by_role = {r: [k["resume_ms"] for k in kill_log if k["role"] == r] for r in ROLES}
    kinds = Counter(v[2] for _, t, v in log.lines if t == "E")
    types = Counter(t for _, t, _ in log.lines)
    sent = set()
    unseen = 0  # orders the venue first got as R lines: their N never made it to the log
    for _, t, v in log.lines:
        if t == "N":
            sent.add(v[1])
        elif t == "R" and v[1] not in sent:
            unseen += 1
            sent.add(v[1])
    fig = {
        "wall_s": round(wall, 1),
        "kills": {r: len(by_role[r]) for r in ROLES},
        "resume_ms": {r: {"median": round(statistics.median(ms), 1) if ms else None,
                          "max": round(max(ms), 1) if ms else None} for r, ms in by_role.items()},
        "venue": {"orders": types["N"], "reattached": types["R"],
                  "reattached_without_n": unseen, "cancels": types["C"],
                  "replaces": types["P"], "fills": kinds[_FILL], "rejects": kinds[_REJECT],
                  "canceled": kinds[_CANCELED], "expired": kinds[_EXPIRED],
                  "replaced": kinds[_REPLACED],
                  "cancel_rejects": kinds[int(ReportKind.CANCEL_REJECTED)]},
    }
    if rep is None:
        return fig
    st = rep["stages"]
    sv, dv = st[AGENT["strategy"]]["values"], st["dispatcher"]["values"]
    ev = st["executor"]["values"]
    o = rep["orders"]
    fig.update({
        "ticks": rep["ticks"]["published"],
        "throughput_ticks_per_s": rep["throughput_ticks_per_s"],
        "restarts": {r: st[AGENT[r]]["restarts"] for r in ROLES},
        "orders": {k: o[k] for k in ("sent", "received", "acks", "rejects", "fills", "canceled",
                                     "expired", "replaced", "cancel_rejects")},
        "rejects_by_reason": o["rejects_by_reason"],
        "duplicates_refused": ev.get("risk_reject.DUPLICATE_ORDER_ID", 0),
        # ticks a killed strategy process had marked begun and had not counted: handed to no
        # later process (at most once where a process died); see _ticks_once
        "begun_not_handled": sum(1 for k in kill_log if k.get("role") == "strategy"
                                 and k.get("began_counted") == 0),
        # the order counters' identities, which a kill between an event and its counter
        # leaves one off (hftd.report): how far off they ended, a figure, not an invariant
        "counter_drift": {
            "sent - received - signals_lost": o["sent"] - o["received"] - sv["signals_lost"],
            "received + restored_pending - acks - rejects":
                o["received"] + o["restored_pending"] - o["acks"] - o["rejects"],
            "acks + restored_acked - filled - canceled - expired - working":
                o["acks"] + o["restored_acked"] - o["filled"] - o["canceled"] - o["expired"]
                - o["working"],
        },
        "recovery": rep.get("recovery"),
        "replays_suppressed": {
            "strategy.replays_suppressed": sv["replays_suppressed"],
            "strategy.restart_skipped": sv["restart_skipped"],
            "strategy.reports_skipped": sv["reports_skipped"],
            "strategy.signals_lost": sv["signals_lost"],
            "strategy.reconciled": sv["reconciled"],
            **{f"dispatcher.{k}": n for k, n in dv.items() if k.startswith("replays_skipped.")},
            "executor.md_replays": ev["md_replays"],
            "executor.md_restart_skipped": ev["md_restart_skipped"],
            "executor.journal_replays": ev["journal_replays"],
            "executor.restored_orders": ev["restored_orders"],
        },
    })
    return fig


def table(result: dict) -> str:
    fig = result["figures"]
    lines = [f"{'role':<11}{'kills':>6}{'restarts':>9}{'resume p50 ms':>15}{'max ms':>9}"]
    for r in ROLES:
        rm = fig["resume_ms"][r]
        p50 = "-" if rm["median"] is None else f"{rm['median']:.0f}"
        mx = "-" if rm["max"] is None else f"{rm['max']:.0f}"
        lines.append(f"{r:<11}{fig['kills'][r]:>6}{fig.get('restarts', {}).get(r, '-'):>9}"
                     f"{p50:>15}{mx:>9}")
    if "ticks" in fig:
        lines.append(f"ticks {fig['ticks']:,} ({fig['throughput_ticks_per_s']:,.0f}/s); wall "
                     f"{fig['wall_s']} s")
        lines.append("orders " + " ".join(f"{k} {n}" for k, n in fig["orders"].items()))
        lines.append("refused " + " ".join(f"{k} {n}" for k, n in
                                           sorted(fig["rejects_by_reason"].items())))
        lines.append(f"duplicates refused {fig['duplicates_refused']}")
        lines.append("replays " + " ".join(f"{k} {n}" for k, n in
                                           fig["replays_suppressed"].items()))
    lines.append("venue log " + " ".join(f"{k} {n}" for k, n in fig["venue"].items()))
    for k, what in INVARIANTS.items():
        ev = result["failures"][k]
        lines.append(f"{k}. {what}: {'ok' if not ev else 'FAILED'}")
        lines += [f"     {x}" for x in ev[:SHOWN]]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--kills", type=int, default=200)
    ap.add_argument("--rate", type=float, default=50_000.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ticks", type=int, default=None, help="cap on the feed (default: ample)")
    ap.add_argument("--roles", default=",".join(ROLES),
                    help="the roles to kill, comma-separated (default: all four)")
    ap.add_argument("--work", default=None, help="directory for the run (default: a new one)")
    ap.add_argument("--out", default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    roles = tuple(args.roles.split(","))
    if not roles or set(roles) - set(ROLES):
        ap.error(f"--roles: a comma-separated list of {', '.join(ROLES)}")
    res = run(args.kills, args.rate, args.seed, work=args.work, ticks=args.ticks, out=args.out,
              roles=roles)
    print(table(res))
    if res["returncode"] != 0:
        print(res["stderr_tail"], file=sys.stderr)
    return 1 if any(res["failures"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
