"""The control socket (issue 8): no client can crash or stall the supervisor.

Every test runs a real instance (`hftd run`, four agent processes, a paced synthetic feed so
it trades meanwhile) and talks to its control socket the way a client would: one request per
connection, one newline-terminated msgspec-JSON line -> one reply line.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import msgspec
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from hftd import control, shm
from hftd.control import DEADLINE_S, MAX_REQUEST, Reply, Request, parse
from hftd.monitor import InstanceView, NotRunning
from conftest import HFTD, hftd, stop

# trading while the tests talk to it; no /metrics port (tests run in parallel with others)
LIVE = '[producer.synthetic]\nrate = 5000.0\n[metrics]\nlisten = ""\n'
PING = b'{"cmd":"ping"}\n'
REPLY_TIMEOUT_S = 5.0  # "within a few seconds": every socket operation of a client


# --- running an instance ---------------------------------------------------------------------
def _start(instance: str, tmp_path, *args, toml: str = LIVE, runtime_dir=None):
    """`hftd run` of this test's instance; returns (Popen, config path, runtime dir)."""
    runtime_dir = str(runtime_dir or tmp_path / "run")
    cfg = tmp_path / "hftd.toml"
    cfg.write_text(f'instance = "{instance}"\nruntime_dir = "{runtime_dir}"\n' + toml)
    proc = subprocess.Popen(HFTD + ["run", "--config", str(cfg), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    return proc, cfg, runtime_dir


def _health(instance: str, runtime_dir: str) -> dict:
    view = InstanceView.attach(instance, runtime_dir)
    try:
        return view.agent_health()
    finally:
        view.close()


def _wait_up(proc, instance: str, runtime_dir: str, timeout: float = 60.0,
             agents=None) -> None:
    """Until every agent (or those named) runs with a fresh heartbeat and the control socket
    answers."""
    path = control.socket_path(runtime_dir, instance)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"hftd run exited with {proc.returncode}: "
                                 f"{proc.communicate()[1][-3000:]}")
        try:
            health = _health(instance, runtime_dir)
            if all(a["up"] for name, a in health.items() if agents is None or name in agents) \
                    and control.request(path, "ping", timeout=2.0).ok:
                return
        except (NotRunning, FileNotFoundError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"instance {instance} not up within {timeout} s")


def _status(cfg) -> dict:
    res = hftd("status", "--json", "--config", str(cfg), timeout=60)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def _assert_healthy(cfg, path, restarts: dict | None = None) -> dict:
    st_ = _status(cfg)
    assert st_["running"] is True
    for name, a in st_["agents"].items():
        assert a["up"] and a["state"] == "running", (name, a)
        assert a["restarts"] == (restarts or {}).get(name, 0), (name, a)
    assert st_["trading_paused"] is False
    reply = control.request(path, "ping", timeout=REPLY_TIMEOUT_S)
    assert reply == Reply(True, "running; trading on")
    return st_


def _assert_exact_accounting(rep: dict, ticks: int | None = None) -> None:
    t = rep["ticks"]
    assert t["received"] == t["published"] == t["delivered_to_strategies"] > 0, t
    if ticks is not None:
        assert t["received"] == ticks, t
    assert t["seq_gaps"] == t["rejected"] == t["conflated"] == t["dropped"] == 0, t
    for name, r in rep["rings"].items():
        assert r["in_flight"] == 0, (name, r)
    assert rep["abandoned"] == {} and rep["quarantined"] == []


# --- 1. fuzz ---------------------------------------------------------------------------------
VALID = [b'{"cmd":"ping"}', b'{"cmd": "ping", "args": {}}', b'{"args": {"why": "fuzz"}, "cmd": "ping"}',
         b' \t{"cmd":"ping"}\r', b'{"cmd":"pause"}', b'{"cmd":"resume"}', b'{"cmd":"stop"}',
         b'{"cmd":"reload"}', b'{"cmd":"stop","args":{"now":true}}']
NASTY = [
    b'{"cmd":"\xe2"}\n',  # invalid UTF-8: used to kill the daemon
    b'{"cmd":"\xe2\x82"}\n', b'{"cmd":"\xff"}\n', b'\xff\xfe\xfd\n', b'\xef\xbb\xbf{"cmd":"ping"}\n',
    b'{"cmd":"\xed\xa0\x80"}\n', b'{"cmd":"\xc0\x80"}\n', b'{"cmd":"\xf4\x90\x80\x80"}\n',
    rb'{"cmd":"\ud800"}' + b"\n", rb'{"cmd":"\udc00"}' + b"\n", rb'{"cmd":"\ud800\udc00"}' + b"\n",
    rb'{"cmd":"ping","args":{"\ud800":1}}' + b"\n", rb'{"cmd":"pi\u0000ng"}' + b"\n",
    b"\x00\n", b"\x00" * 100 + b"\n", b'{"cmd":"ping"}\x00\n', b'{"cmd":"pi\x00ng"}\n',
    b"\n", b"\r\n", b" \n", b"{}\n", b"[]\n", b"null\n", b'""\n', b"0\n", b'{"cmd":null}\n',
    b'{"cmd":["ping"]}\n', b'{"cmd":{"cmd":"ping"}}\n', b'{"cmd":"ping","cmd":"stop"}\n',
    b'{"cmd":"ping","args":null}\n', b'{"cmd":"ping","args":[]}\n', b'{"cmd":"ping","extra":1}\n',
    b'{"cmd":"ping","args":{"n":1e999}}\n', b'{"cmd":"ping","args":{"n":-1e999}}\n',
    b'{"cmd":"ping","args":{"n":NaN}}\n', b'{"cmd":"ping","args":{"n":Infinity}}\n',
    b'{"cmd":"ping","args":{"n":18446744073709551616}}\n', b'{"cmd":"ping"',
    b'{"cmd":"ping"}\n{"cmd":"stop"}\n', b'{"cmd":"PING"}\n', b'{"cmd":"ping "}\n',
    b'{"cmd":"' + b"x" * 4000 + b'"}\n', b'{"cmd":"ping","' + b"k" * 4000 + b'":1}\n',
]
OPS = ("flip", "set", "insert", "delete", "truncate", "duplicate", "newline")


def _mutate(base: bytes, ops) -> bytes:
    b = bytearray(base)
    for op, pos, byte in ops:
        i = pos % (len(b) + 1)
        if op == "flip" and b:
            b[i % len(b)] ^= 1 << (byte % 8)
        elif op == "set" and b:
            b[i % len(b)] = byte
        elif op == "insert":
            b.insert(i, byte)
        elif op == "delete" and b:
            del b[i % len(b)]
        elif op == "truncate":
            del b[i:]
        elif op == "duplicate":
            b[i:i] = b[:i]
        elif op == "newline":
            b.insert(i, 10)
    return bytes(b)


def _json(value, how: str, ascii_only: bool, newline: bool) -> bytes:
    body = {"bare": value, "cmd": {"cmd": value}, "args": {"cmd": "ping", "args": value},
            "extra": {"cmd": "ping", "args": {}, "x": value}}[how]
    # non-ASCII text (lone surrogates included) goes out raw: invalid UTF-8 for surrogates
    data = json.dumps(body, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    return data + (b"\n" if newline else b"")


def _long(n: int, fill: str, newline: str, seed: int) -> bytes:
    if fill == "junk":
        body = random.Random(seed).randbytes(n).replace(b"\n", b"_")
    elif fill == "json":  # a valid ping, padded: exactly n bytes
        head, tail = b'{"cmd":"ping","args":{"pad":"', b'"}}'
        body = head + b"a" * max(0, n - len(head) - len(tail)) + tail
    else:
        body = b" " * n
    cut = {"end": len(body), "at_limit": MAX_REQUEST, "after_limit": MAX_REQUEST + 1}.get(newline)
    return body if cut is None else body[:cut] + b"\n" + body[cut:]


def _number(sign: bytes, digits: int, frac: bytes, where: str, newline: bool) -> bytes:
    n = sign + b"1" + b"0" * (digits - 1) + frac
    body = {"args": b'{"cmd":"ping","args":{"n":' + n + b"}}", "cmd": b'{"cmd":' + n + b"}",
            "bare": n}[where]
    return body + (b"\n" if newline else b"")


def _deep(depth: int, shape: str, newline: bool) -> bytes:
    body = {"arrays": b"[" * depth + b"]" * depth,
            "objects": b'{"a":' * depth + b"1" + b"}" * depth,
            "unclosed": b"[" * depth,
            "args": b'{"cmd":"ping","args":{"a":' + b"[" * depth + b"]" * depth + b"}}"}[shape]
    return body + (b"\n" if newline else b"")


def _with_nuls(base: bytes, positions, newline: bool) -> bytes:
    b = bytearray(base)
    for p in positions:
        b.insert(p % (len(b) + 1), 0)
    return bytes(b) + (b"\n" if newline else b"")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(-10**40, 10**40) | st.floats()
    | st.text(max_size=12) | st.sampled_from(["ping", "pause", "resume", "stop", "reload"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["cmd", "args"]) | st.text(max_size=6), inner, max_size=4),
    max_leaves=10)

payloads = st.one_of(
    # arbitrary binary
    st.builds(lambda b, nl: b + (b"\n" if nl else b""), st.binary(max_size=160), st.booleans()),
    # mutations of valid (and of nasty) requests
    st.builds(_mutate, st.sampled_from([v + b"\n" for v in VALID] + NASTY),
              st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, 1 << 16),
                                 st.integers(0, 255)), min_size=1, max_size=6)),
    # random JSON values and objects
    st.builds(_json, json_values, st.sampled_from(["bare", "cmd", "args", "extra"]),
              st.booleans(), st.booleans()),
    # over-long requests, with and without a newline (and one right at the limit)
    st.builds(_long, st.integers(MAX_REQUEST - 4, 3 * MAX_REQUEST)
              | st.sampled_from([MAX_REQUEST, MAX_REQUEST + 1, 64 * 1024, 400 * 1024]),
              st.sampled_from(["junk", "json", "spaces"]),
              st.sampled_from(["none", "end", "at_limit", "after_limit"]), st.integers(0, 2**32)),
    # several lines in one write
    st.builds(lambda lines, tail: b"\n".join(lines) + tail,
              st.lists(st.sampled_from(VALID + [n.rstrip(b"\n") for n in NASTY])
                       | st.binary(max_size=24), min_size=2, max_size=5),
              st.sampled_from([b"", b"\n"])),
    # NUL bytes
    st.builds(_with_nuls, st.sampled_from(VALID),
              st.lists(st.integers(0, 1000), min_size=1, max_size=5), st.booleans()),
    # huge numbers
    st.builds(_number, st.sampled_from([b"", b"-"]), st.integers(1, 6000),
              st.sampled_from([b"", b".5", b"e99999", b"e-99999", b".0e400"]),
              st.sampled_from(["args", "cmd", "bare"]), st.booleans()),
    # deeply nested arrays and objects
    st.builds(_deep, st.integers(1, 3000) | st.sampled_from([10**4, 10**5]),
              st.sampled_from(["arrays", "objects", "unclosed", "args"]), st.booleans()),
    st.sampled_from(NASTY),
)
# how the client ends its side: half-close (shutdown SHUT_WR, then read the answer), keep it
# open (read the answer: only for requests the server can answer without an end of input),
# or close at once without reading
modes = st.sampled_from(["half", "half", "half", "keep", "keep", "close"])


def _server_sees(payload: bytes, eof: bool) -> tuple[str, bytes | None]:
    """What the server makes of `payload` (its framing, modelled): ("line", the bytes it
    parses), ("too long", None), ("close", None) or ("deadline", None)."""
    end = payload.find(b"\n", 0, MAX_REQUEST + 1)
    if end >= 0:
        return "line", payload[:end]
    if len(payload) > MAX_REQUEST:
        return "too long", None
    if eof:
        return ("line", payload) if payload.strip() else ("close", None)
    return "deadline", None


def _parse(line: bytes):
    """`parse` whatever the caller's stack: hypothesis raises the recursion limit while it
    runs, and msgspec gives up on deep nesting by that limit, so a deeply nested line the
    supervisor refuses may decode here (and the other way round). Lines are <= 4097 bytes,
    so this limit bounds the depth well inside the C stack."""
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 10_000))
    try:
        return parse(line)
    finally:
        sys.setrecursionlimit(old)


def _harmless(payload: bytes, mode: str):
    """The request as sent: a valid command other than ping becomes a ping (the fuzz must
    not stop or pause the instance); a request the server could only time out on is
    half-closed. Returns (payload, mode, expected)."""
    kind, line = _server_sees(payload, eof=mode != "keep")
    if kind == "deadline":
        mode = "half"
        kind, line = _server_sees(payload, eof=True)
    if kind == "line":
        req = _parse(line)
        if isinstance(req, Request) and req.cmd != "ping":
            payload, kind, line = PING, "line", PING[:-1]
    return payload, mode, (kind, line)


def _exchange(path: str, payload: bytes, mode: str) -> tuple[bytes, bool, float]:
    """One connection: send, end as `mode` says, read to the end. Returns (what came back,
    whether the connection was reset, seconds). A stall raises socket.timeout."""
    t0 = time.monotonic()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(REPLY_TIMEOUT_S)
    try:
        s.connect(path)
        try:
            s.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before reading it all (over-long): read the answer
        if mode == "close":
            return b"", False, time.monotonic() - t0
        if mode == "half":
            try:
                s.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        data, reset = b"", False
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # closed with our unread bytes: after its reply
                reset = True
                break
            if not chunk:
                break
            data += chunk
        return data, reset, time.monotonic() - t0
    finally:
        s.close()


def test_fuzzed_requests_never_crash_or_stall_the_supervisor(instance, tmp_path):
    proc, cfg, runtime_dir = _start(instance, tmp_path, "--report", str(tmp_path / "r.json"))
    path = control.socket_path(runtime_dir, instance)
    n = {"sent": 0, "replies": 0, "ok_replies": 0, "closes": 0, "client_closes": 0,
         "resets": 0, "replaced": 0, "max_s": 0.0}
    t_start = time.monotonic()
    try:
        _wait_up(proc, instance, runtime_dir)

        def one(raw: bytes, raw_mode: str) -> None:
            payload, mode, (kind, line) = _harmless(raw, raw_mode)
            n["replaced"] += payload is not raw
            try:
                data, reset, secs = _exchange(path, payload, mode)
            except OSError as e:  # refused connection, timeout: the server is dead or stalled
                raise AssertionError(f"request {payload[:200]!r} ({len(payload)} bytes, "
                                     f"{mode}): {e!r}; hftd alive: {proc.poll() is None}")
            n["sent"] += 1
            n["resets"] += reset
            n["max_s"] = max(n["max_s"], secs)
            what = f"request {payload[:200]!r} ({len(payload)} bytes, {mode}) got {data[:300]!r}"
            if mode == "close":
                n["client_closes"] += 1
                return
            if kind == "close":
                assert data == b"", what
                n["closes"] += 1
                return
            # one well-formed reply line
            assert data.endswith(b"\n") and data.count(b"\n") == 1, what
            reply = msgspec.json.decode(data, type=Reply)
            n["replies"] += 1
            if kind == "too long":
                assert not reply.ok and f"longer than {MAX_REQUEST} bytes" in reply.detail, what
            elif reply.ok:
                assert isinstance(_parse(line), Request), what  # a ping
                assert reply == Reply(True, "running; trading on"), what
                n["ok_replies"] += 1
            elif "maximum recursion depth" not in reply.detail:  # (depth: see _parse)
                assert reply == _parse(line), what

        for raw in NASTY:  # the known killers first, each way of ending the request
            for mode in ("half", "keep", "close"):
                one(raw, mode)

        @settings(max_examples=280, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(st.lists(st.tuples(payloads, modes), min_size=40, max_size=50))
        def fuzz(requests):
            for raw, mode in requests:
                one(raw, mode)
            assert proc.poll() is None, "the supervisor died"

        fuzz()
        fuzz_s = time.monotonic() - t_start
        print(f"\ncontrol socket fuzz: {n['sent']} requests sent in {fuzz_s:.1f} s, "
              f"{n['replies']} replies ({n['ok_replies']} ok), {n['closes']} closed by the "
              f"server without a reply (blank requests), {n['client_closes']} closed by the "
              f"client unread, {n['resets']} resets after the reply, {n['replaced']} commands "
              f"replaced by a ping, slowest {n['max_s'] * 1000:.1f} ms, 0 crashes")
        assert n["sent"] >= 10_000
        assert proc.poll() is None
        _assert_healthy(cfg, path)
        res = hftd("stop", "--config", str(cfg), timeout=120)
        assert res.returncode == 0, res.stderr
        assert "stopped" in res.stdout
    finally:
        rc, _, err = stop(proc)
    assert rc == 0, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    _assert_exact_accounting(json.loads((tmp_path / "r.json").read_text()))
    assert shm.leftovers(instance) == []


# --- 2. slow clients -------------------------------------------------------------------------
def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(REPLY_TIMEOUT_S)
    s.connect(path)
    return s


def _drip(path: str, out: dict) -> None:
    """A client that sends one byte of a ping every 0.9 s, until the server closes it."""
    s = _connect(path)
    t0 = time.monotonic()
    sent, data = 0, None
    s.settimeout(0.9)
    try:
        while sent < len(PING):
            try:
                s.send(PING[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            try:
                data = s.recv(4096)
                break  # b"": closed by the server
            except socket.timeout:
                continue
            except ConnectionResetError:
                data = b""
                break
    finally:
        out.update(closed_after=time.monotonic() - t0, sent=sent, data=data)
        s.close()


class Harassment(threading.Thread):
    """Slow clients, kept connected: one that connects and sends nothing, one that sends one
    byte every 0.9 s, and a crowd of `crowd` connected at once that never send. Whatever the
    server closes (its deadline, or making room for a new client) connects again."""

    def __init__(self, path: str, crowd: int = 50):
        super().__init__(daemon=True)
        self.path = path
        self.kinds = ["idle", "drip"] + ["crowd"] * crowd
        self.halt = threading.Event()
        self.connects = 0
        self.closed_by_server = 0
        self.replies = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            self._run()
        except BaseException as e:  # reported by the test
            self.error = e

    def _open(self, sel, kind):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.path)
        s.setblocking(False)
        self.connects += 1
        sel.register(s, selectors.EVENT_READ, [kind, time.monotonic(), 0])

    def _run(self):
        sel = selectors.DefaultSelector()
        for kind in self.kinds:
            self._open(sel, kind)
        while not self.halt.is_set():
            now = time.monotonic()
            for key in list(sel.get_map().values()):
                kind, t0, sent = key.data
                if kind == "drip" and now - t0 >= 0.9 * sent and sent < len(PING) - 1:
                    try:
                        key.fileobj.send(PING[sent:sent + 1])
                        key.data[2] += 1
                    except OSError:
                        pass  # closed: seen below
            for key, _ in sel.select(0.05):
                try:
                    data = key.fileobj.recv(4096)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    data = b""
                if data:
                    self.replies += 1  # a slow client never completes a request
                sel.unregister(key.fileobj)
                key.fileobj.close()
                self.closed_by_server += 1
                if not self.halt.is_set():
                    time.sleep(0.001)
                    self._open(sel, key.data[0])
        for key in list(sel.get_map().values()):
            key.fileobj.close()
        sel.close()

    def stop(self):
        self.halt.set()
        self.join(10)


def test_slow_clients_cannot_stall_the_supervisor(instance, tmp_path):
    proc, cfg, runtime_dir = _start(instance, tmp_path)
    path = control.socket_path(runtime_dir, instance)
    harass = None
    try:
        _wait_up(proc, instance, runtime_dir)

        # (a) + (b) alone: each is closed by the server at its deadline, without a reply,
        # and the kill switch answers at once meanwhile
        idle = _connect(path)
        t_idle = time.monotonic()
        dripped: dict = {}
        dripper = threading.Thread(target=_drip, args=(path, dripped))
        dripper.start()
        time.sleep(0.1)
        for cmd in ("pause", "resume"):
            t0 = time.monotonic()
            reply = control.request(path, cmd, timeout=1.0)
            assert reply.ok and time.monotonic() - t0 < 1.0, reply
        assert idle.recv(4096) == b""  # closed by the server
        idle_closed = time.monotonic() - t_idle
        idle.close()
        dripper.join(10)
        assert DEADLINE_S - 0.05 <= idle_closed <= DEADLINE_S + 0.5, idle_closed
        assert dripped["data"] == b"", dripped  # no reply: the request never completed
        assert dripped["sent"] == 2, dripped  # bytes at 0 s and 0.9 s, closed at 1 s
        assert DEADLINE_S - 0.05 <= dripped["closed_after"] <= DEADLINE_S + 0.5, dripped

        # (a) + (b) + (c) 50 at once, all kept connected: pause/resume still answered at once
        harass = Harassment(path, crowd=50)
        harass.start()
        time.sleep(0.5)
        times = []
        for cmd in ("pause", "resume") * 5:
            t0 = time.monotonic()
            reply = control.request(path, cmd, timeout=1.0)
            times.append(time.monotonic() - t0)
            assert reply.ok and reply.detail == f"{cmd} sent to 2 agents", reply
        cli = {}
        for cmd in ("pause", "resume"):
            t0 = time.monotonic()
            res = hftd(cmd, "--config", str(cfg), timeout=60)
            cli[cmd] = time.monotonic() - t0
            assert res.returncode == 0 and f"{cmd} sent" in res.stdout, res.stderr

        # an agent killed meanwhile is restarted promptly
        before = _health(instance, runtime_dir)["strategy.sample"]
        os.kill(before["pid"], signal.SIGKILL)
        t_kill = time.monotonic()
        view = InstanceView.attach(instance, runtime_dir)
        try:
            while True:
                a = view.agent_health()["strategy.sample"]
                if a["pid"] != before["pid"] and a["state"] == "running" and a["up"]:
                    break
                assert time.monotonic() - t_kill < 30, a
                time.sleep(0.005)
        finally:
            view.close()
        restart_s = time.monotonic() - t_kill
        assert a["restarts"] == 1, a
        reply = control.request(path, "ping", timeout=1.0)
        assert reply.ok, reply
        assert harass.is_alive() and harass.error is None, harass.error
        assert harass.replies == 0
        closed_by_server = harass.closed_by_server
        print(f"\nslow clients: pause/resume answered in max {max(times) * 1000:.1f} ms "
              f"(median {sorted(times)[len(times) // 2] * 1000:.1f} ms) through "
              f"control.request; CLI pause {cli['pause']:.2f} s, resume {cli['resume']:.2f} s "
              f"(interpreter start-up included); strategy killed with SIGKILL running again "
              f"after {restart_s:.2f} s; {harass.connects} slow connections, {closed_by_server} "
              f"closed by the server; idle client closed after {idle_closed:.3f} s, dripper "
              f"after {dripped['closed_after']:.3f} s ({dripped['sent']} bytes sent)")
        assert max(times) < 1.0
        assert restart_s < 3.0
        assert closed_by_server > 50  # the crowd was closed (deadline or room) and came back
        harass.stop()
        assert not harass.is_alive()
        _assert_healthy(cfg, path, restarts={"strategy.sample": 1})
    finally:
        if harass is not None:
            harass.stop()
        rc, _, err = stop(proc)
    assert rc == 0, err[-3000:]
    assert "agent strategy.sample was killed by SIGKILL: restarting it" in err
    assert "Traceback" not in err, err[-3000:]
    assert shm.leftovers(instance) == []


# --- 3. the kill switch while stopping -------------------------------------------------------
def test_the_kill_switch_answers_while_the_pipeline_drains(instance, tmp_path):
    n = 5000  # ~1.1 ms a tick in the strategy: a backlog of some 5 s to drain
    rec = tmp_path / "rec.json"
    toml = f"""
[metrics]
listen = ""
[supervisor]
stop_timeout_s = 60.0
[[strategies]]
name = "sample"
class = "tests.strategies:Recorder"
params = {{ sleep_us = 1000, every = 50, out = "{rec}" }}
"""
    proc, cfg, runtime_dir = _start(instance, tmp_path, "--ticks", str(n), "--rate", "0",
                                    "--report", str(tmp_path / "r.json"), toml=toml)
    path = control.socket_path(runtime_dir, instance)
    err = None
    try:
        # (the producer finishes its --ticks at once: it is not waited for)
        _wait_up(proc, instance, runtime_dir, agents=("strategy.sample", "executor"))
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while not control.request(path, "ping", timeout=1.0).detail.startswith("stopping"):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        t0 = time.monotonic()
        res = hftd("pause", "--config", str(cfg), timeout=60)
        pause_s = time.monotonic() - t0
        assert res.returncode == 0, res.stderr
        assert "pause sent" in res.stdout
        assert proc.poll() is None  # still draining: the pause came during the drain
        assert control.request(path, "ping", timeout=1.0) == Reply(True, "stopping; trading paused")
        status = _status(cfg)
        assert status["trading_paused"] is True
        left = status["ticks"]["received"] - status["ticks"]["delivered_to_strategies"]
        t_drain = time.monotonic()
        _, err = proc.communicate(timeout=90)
        drain_s = time.monotonic() - t_drain
    finally:
        if err is None:
            _, _, err = stop(proc)
    rc = proc.returncode
    print(f"\nkill switch while stopping: `hftd pause` answered in {pause_s:.2f} s (CLI) with "
          f"{left} ticks still to drain; the run exited {drain_s:.1f} s later, drained")
    assert rc == 0, err[-3000:]
    assert left > 0
    assert "trading paused (kill switch on) by request" in err
    rep = json.loads((tmp_path / "r.json").read_text())
    _assert_exact_accounting(rep, ticks=n)
    assert rep["stages"]["strategy.sample"]["values"]["ticks_in"] == n
    seen = json.loads(rec.read_text())
    assert seen["n"] == n
    assert seen["paused_at"] is not None and 0 < seen["paused_at"] < n  # paused mid-drain
    assert shm.leftovers(instance) == []


# --- 4. a non-owner is refused ---------------------------------------------------------------
def _as_user(user: tuple[int, int], fn) -> dict:
    """Run `fn()` (-> JSON-able) in a forked child that has become `user` (uid, gid)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
            out = fn()
            os.write(w, json.dumps(out).encode())
            code = 0
        except BaseException as e:
            try:
                os.write(w, json.dumps({"child_error": repr(e)}).encode())
            except BaseException:
                pass
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def _raw_pause(path: str) -> dict:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(REPLY_TIMEOUT_S)
    try:
        s.connect(path)
    except OSError as e:
        return {"connect_error": type(e).__name__}
    try:
        s.sendall(b'{"cmd":"pause"}\n')
    except OSError:
        pass  # refused before it read our request: its reply is still there to read
    data = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    s.close()
    return {"reply": data.decode()}


def _library_request(path: str, cmd: str) -> dict:
    try:
        r = control.request(path, cmd, timeout=REPLY_TIMEOUT_S)
        return {"ok": r.ok, "detail": r.detail}
    except Exception as e:
        return {"error": type(e).__name__, "message": str(e)}


def test_a_user_other_than_the_owner_is_refused(instance, tmp_path, other_user):
    other = other_user
    # a runtime dir the other user could reach once we open it up (pytest's tmp_path is
    # inside a 0700 directory)
    base = tempfile.mkdtemp(prefix="hftd-ctl-", dir="/tmp")
    proc = None
    try:
        proc, cfg, runtime_dir = _start(instance, tmp_path, runtime_dir=os.path.join(base, "run"))
        path = control.socket_path(runtime_dir, instance)
        _wait_up(proc, instance, runtime_dir)

        # as made: the runtime dir is 0700 and the socket 0600, so the file mode refuses first
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert _as_user(other, lambda: _raw_pause(path)) == {"connect_error": "PermissionError"}
        # opened up (as a careless admin might): SO_PEERCRED still refuses, with a reply
        os.chmod(base, 0o711)
        os.chmod(runtime_dir, 0o711)
        os.chmod(path, 0o666)
        for cmd in ("pause", "stop"):
            got = _as_user(other, lambda: _library_request(path, cmd))
            assert got.get("ok") is False and "permission denied" in got.get("detail", ""), got
        raw = _as_user(other, lambda: _raw_pause(path))
        reply = msgspec.json.decode(raw["reply"].encode(), type=Reply)
        assert not reply.ok and "permission denied" in reply.detail, raw
        # the instance is unaffected: still trading, not paused, every agent up
        _assert_healthy(cfg, path)
        res = hftd("stop", "--config", str(cfg), timeout=120)
        assert res.returncode == 0, res.stderr
    finally:
        if proc is not None:
            rc, _, err = stop(proc)
        shutil.rmtree(base, ignore_errors=True)
    assert rc == 0, err[-3000:]
    assert "by request" not in err  # the refused commands never reached the supervisor's handler
    assert shm.leftovers(instance) == []
