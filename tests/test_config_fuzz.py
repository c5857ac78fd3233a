"""Config fuzzing: every config `hftd check-config` rejects exits 2 with one line naming the
key (never a traceback), `hftd run` rejects exactly the same configs with the same message,
and what check-config accepts runs.

Variants are derived from the embedded default config (seeded, so every run sees the same
ones): one key (a leaf or a whole table or array) is replaced by a hostile value, deleted,
or joined by an unknown key, and the result is written as TOML; plus byte-level variants
(non-UTF-8, truncated, binary, nested too deep). Both commands run in-process through
click's CliRunner; `run` gets a stand-in Supervisor, so no variant ever starts a pipeline
in-process. A few accepted non-default variants are then run for real, as subprocesses.
"""

from __future__ import annotations

import copy
import math
import os
import random

import pytest
from click.testing import CliRunner

from hftd import cli, config

SEED = 20240607
N_KEY_VARIANTS = 1200
N_BYTE_VARIANTS = 160
WOULD_RUN = 97  # exit status of the stand-in Supervisor: run accepted the config


# --- a small TOML writer (every value inline: `"key" = value` lines) -------------------------
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_str(s: str) -> str:
    out = []
    for c in s:
        if c in _ESCAPES:
            out.append(_ESCAPES[c])
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def toml_doc(d: dict) -> str:
    return "".join(f"{toml_str(k)} = {toml_value(v)}\n" for k, v in d.items())


def test_the_toml_writer_round_trips():
    import tomllib

    d = config.to_dict(config.Config())
    d["odd"] = {"a\n\"b\\": ["\x00\x1f\x7f", 1.5e300, -0.0, 2**64, "ü日本"], "": {}}
    assert tomllib.loads(toml_doc(d)) == d


# --- the hostile pool ---------------------------------------------------------------------
def _nested_list(depth: int):
    v: list = []
    for _ in range(depth - 1):
        v = [v]
    return v


def _nested_dict(depth: int):
    v: dict = {"a": 1}
    for _ in range(depth - 1):
        v = {"a": v}
    return v


NAN, INF = float("nan"), float("inf")
HOSTILE = [
    True, False,
    0, 1, -1, 7, 8, 64, 1000, 1024, 2**31, 2**53, 2**63 - 1, -2**63, 2**64, 10**30,
    0.0, -0.0, 0.5, 1.5, -1.5, 1e-300, 1e300, -1e300, INF, -INF, NAN,
    "", "x", "abc", "0", "-1", "nan", "inf", "1e3", "0.05", " 1", "x" * 300, "ü日本語",
    "\x00", "a\nb", "\x01\x7f", "a/b", "../../x", "/etc/passwd", "/" + "d" * 200,
    "hftd.strategies.momentum:Momentum", ".x:Y", "os:path", "a.b:C", "1a:B", "x:",
    "127.0.0.1:99999", "[::1]:0", "localhost:0", "host:²", "block", "conflate", "TXF",
    [], [0], [1, 2], [-1], [4096], [2**63 - 1], ["TXF"], ["TXF", "TXF"], ["a", 1], [[]],
    [{}], [NAN], _nested_list(200),
    {}, {"a": 1}, {"x": {"y": [1, 2]}}, {"n": NAN}, {"big": 2**64}, {"": ""},
    {"capacity": 1024}, {"symbol": "ZZ"}, _nested_dict(40),
]
EXTRA_KEYS = ["bogus", "Capacity", "class_", "x y", "ünï", "a.b", "\t", "max_restarts"]


def tree_paths(v, path=()):
    """Every key path in `v` below the root: tables, arrays and leaves."""
    if isinstance(v, dict):
        items = v.items()
    elif isinstance(v, list):
        items = enumerate(v)
    else:
        return
    for k, x in items:
        yield path + (k,)
        yield from tree_paths(x, path + (k,))


def get(d, path):
    for k in path:
        d = d[k]
    return d


def render(path) -> str:
    out = ""
    for k in path:
        out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else k)
    return out


def spellings(path) -> list[tuple]:
    """How an error may name `path`: a strategy by its index or by its name."""
    forms = [path]
    if path[:2] == ("strategies", 0):
        forms.append(("strategies[sample]",) + path[2:])
    return forms


def names(message: str, path) -> bool:
    """`message` names `path`: the whole dotted path, or `HEAD: ...TAIL` where the error
    sits at a table HEAD and its text names the rest (`rings.ticks: ring capacity ...`)."""
    shown = config._one_line  # how a message shows a key with a control character in it
    for form in spellings(path):
        if shown(render(form)) in message:
            return True
        for k in range(1, len(form)):
            head, tail = shown(render(form[:k])), shown(render(form[k:]))
            at = message.find(head + ": ")
            if at >= 0 and tail in message[at + len(head) + 2:]:
                return True
    return False


def key_variants(rng: random.Random, n: int, runtime_dir: str):
    """(description, path named by the error, config dict) for n single-key mutations of the
    default config (with a private runtime_dir, so the environment's cannot matter)."""
    base = config.to_dict(config.Config())
    base["runtime_dir"] = runtime_dir
    paths = list(tree_paths(base))
    tables = [()] + [p for p in paths if isinstance(get(base, p), dict)]
    for _ in range(n):
        d = copy.deepcopy(base)
        roll = rng.random()
        if roll < 0.08:  # an unknown key in some table
            table = rng.choice(tables)
            key = rng.choice(EXTRA_KEYS)
            get(d, table)[key] = rng.choice(HOSTILE)
            yield f"extra key {render(table + (key,))}", table + (key,), d
        elif roll < 0.13:  # a key left out (the default applies, or it is required)
            path = rng.choice(paths)
            parent = get(d, path[:-1])
            if isinstance(parent, list):
                del parent[path[-1]]
                path = path[:-1]
            else:
                del parent[path[-1]]
            yield f"delete {render(path)}", path, d
        else:
            path = rng.choice(paths)
            value = rng.choice(HOSTILE)
            get(d, path[:-1])[path[-1]] = copy.deepcopy(value)
            yield f"{render(path)} = {toml_value(value)[:60]}", path, d


def byte_variants(rng: random.Random, n: int):
    """(description, bytes) for n damaged or hostile files."""
    good = toml_doc(config.to_dict(config.Config())).encode()
    documented = open(os.path.join(os.path.dirname(__file__), "..", "configs", "hftd.toml"),
                      "rb").read()
    fixed = [
        ("empty", b""),
        ("BOM", b"\xef\xbb\xbf" + documented),
        ("CRLF", documented.replace(b"\n", b"\r\n")),
        ("lone CR", b"instance = \"x\"\r"),
        ("latin-1", "instance = \"café\"\n".encode("latin-1")),
        ("NUL", b"instance = \"a\x00\"\n"),
        ("5000-deep array", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n"),
        ("2000-deep table", b"x = " + b"{a = " * 2000 + b"1" + b"}" * 2000 + b"\n"),
        ("40-deep cpus", b"[producer]\ncpus = " + b"[" * 40 + b"]" * 40 + b"\n"),
        ("200-deep params", b"[[strategies]]\nparams = {x = " + b"[" * 200 + b"]" * 200
         + b"}\n"),
        ("5000-deep dotted key", b".".join([b"a"] * 5000) + b" = 1\n"),
        ("5000-digit seed", b"[producer.synthetic]\nseed = " + b"9" * 5000 + b"\n"),
        ("20000-bit hex seed", b"[producer.synthetic]\nseed = 0x" + b"f" * 5000 + b"\n"),
        ("date", b"instance = 1979-05-27T07:32:00Z\n"),
        ("date param", b"[[strategies]]\nparams = {t = 1979-05-27, u = 07:32:00}\n"),
    ]
    yield from fixed
    for i in range(n - len(fixed)):
        kind = i % 4
        src = rng.choice([good, documented])
        if kind == 0:
            at = rng.randrange(len(src))
            yield f"byte 0x{0x80 + i % 0x80:02x} at {at}", src[:at] + bytes([0x80 + i % 0x80]) \
                + src[at + 1:]
        elif kind == 1:
            at = rng.randrange(len(src))
            yield f"truncated at {at}", src[:at]
        elif kind == 2:
            yield "binary", bytes(rng.randrange(256) for _ in range(rng.randrange(1, 400)))
        else:
            at = rng.randrange(len(src))
            junk = rng.choice([b"\x00", b"\xff\xfe", b"[", b"]]", b"=", b'"', b"\\u", b"\n[x]\n"])
            yield f"{junk!r} at {at}", src[:at] + junk + src[at:]


# --- running both commands in-process ------------------------------------------------------
class _StandInSupervisor:
    """Replaces the Supervisor while fuzzing: `run` gets as far as starting, no further."""

    def __init__(self, *args, **kwargs):
        pass

    def run(self):
        return WOULD_RUN


@pytest.fixture
def invoke(monkeypatch):
    import hftd.supervisor

    monkeypatch.setattr(hftd.supervisor, "Supervisor", _StandInSupervisor)
    runner = CliRunner()

    def _invoke(*args):
        res = runner.invoke(cli.main, list(args))
        assert res.exception is None or isinstance(res.exception, SystemExit), (
            f"hftd {' '.join(args)} raised {res.exception!r}")
        assert "Traceback" not in res.output
        return res

    return _invoke


def check_variant(invoke, path: str, what: str):
    """Both commands on the file at `path`; returns the error message or None (accepted)."""
    chk = invoke("check-config", path)
    run = invoke("run", "--config", path, "--ticks", "10")
    if chk.exit_code == 0:
        assert run.exit_code == WOULD_RUN, f"{what}: check-config accepts, run says " \
                                           f"{run.exit_code}: {run.stderr}"
        return None
    assert chk.exit_code == 2, f"{what}: check-config exited {chk.exit_code}: {chk.output}"
    lines = chk.stderr.splitlines()
    assert len(lines) == 1, f"{what}: {chk.stderr!r}"
    assert lines[0].startswith(f"hftd: config error: {path}: "), f"{what}: {lines[0]}"
    assert run.exit_code == 2 and run.stderr == chk.stderr, (
        f"{what}: check-config says {chk.stderr!r}, run {run.exit_code} {run.stderr!r}")
    return lines[0][len(f"hftd: config error: {path}: "):]


@pytest.fixture
def short_dir():
    """A directory with a short path (a runtime_dir in it leaves room in a socket path)."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="hftd-fuzz-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_fuzzed_configs_exit_2_naming_the_key(invoke, tmp_path, short_dir):
    rng = random.Random(SEED)
    path = str(tmp_path / "fuzz.toml")
    counts = {"variants": 0, "accepted": 0, "rejected": 0}
    unnamed = []
    for what, key, d in key_variants(rng, N_KEY_VARIANTS, os.path.join(short_dir, "run")):
        with open(path, "w", encoding="utf-8") as f:
            f.write(toml_doc(d))
        msg = check_variant(invoke, path, what)
        counts["variants"] += 1
        if msg is None:
            counts["accepted"] += 1
            continue
        counts["rejected"] += 1
        if not names(msg, key):
            unnamed.append(f"{what}  ->  {msg}")
    for what, data in byte_variants(rng, N_BYTE_VARIANTS):
        with open(path, "wb") as f:
            f.write(data)
        msg = check_variant(invoke, path, what)
        counts["variants"] += 1
        counts["accepted" if msg is None else "rejected"] += 1
    print(f"\nconfig fuzz: {counts['variants']} variants ({N_KEY_VARIANTS} key mutations, "
          f"{N_BYTE_VARIANTS} byte-level), {counts['accepted']} accepted, "
          f"{counts['rejected']} rejected (all with exit status 2, one line, no traceback)")
    assert not unnamed, "errors that do not name the mutated key:\n" + "\n".join(unnamed)
    assert counts["variants"] >= 1000
    assert counts["rejected"] >= 700 and counts["accepted"] >= 50, counts


# --- the problems measured on the old code, one by one ----------------------------------------
@pytest.mark.parametrize("toml, named", [
    ("[rings.orders]\nblock_deadline_ms = inf\n", "rings.orders: block_deadline_ms must be"),
    ("[rings.ticks]\nblock_deadline_ms = nan\n", "rings.ticks: block_deadline_ms must be"),
    ("[producer.synthetic]\nrate = inf\n", "producer.synthetic: rate must be"),
    ("[supervisor]\nstatus_interval_s = -1.0\n", "supervisor: status_interval_s must be"),
    ("[supervisor]\nheartbeat_timeout_s = inf\n", "supervisor: heartbeat_timeout_s must be"),
    ("[executor.sim]\nlatency_us = nan\n", "executor.sim: latency_us must be"),
    ("[rings.ticks]\nhigh_watermark = nan\n", "rings.ticks: watermarks must satisfy"),
    ("[producer.synthetic]\nseed = -1\n", "producer.synthetic: seed must be between 0"),
    ("[producer.synthetic]\nseed = 18446744073709551616\n", "producer.synthetic: seed must be"),
    ("[producer.synthetic]\nstart_price = 9223372036854775808\n",
     "producer.synthetic: start_price must be between 1 and 9007199254740991"),
    ("[producer.synthetic]\nmax_qty = 9223372036854775807\n", "producer.synthetic: max_qty"),
    ("[rings.orders]\nslot_size = 8\n",
     "rings: orders.slot_size 8 is too small: the orders ring carries events of up to 101 bytes"),
    ("[rings.reports]\nslot_size = 80\n", "rings: reports.slot_size 80 is too small"),
    ("[rings.ticks]\nslot_size = 48\n", "rings: ticks.slot_size 48 is too small"),
    ("[rings.ticks]\ncapacity = 1099511627776\n", "rings.ticks: ring capacity 1099511627776"),
    ("[rings.ticks]\nslot_size = 7\n", "rings.ticks: slot_size 7 must be a multiple of 8"),
    ('runtime_dir = "/' + "d" * 100 + '"\n', "runtime_dir: the control socket"),
    ('runtime_dir = "/etc/passwd"\n', "runtime_dir: runtime directory /etc/passwd is not a "
                                      "directory"),
    ('runtime_dir = "/etc/passwd/x"\n', "runtime_dir: runtime directory /etc/passwd/x cannot "
                                        "be used: Not a directory"),
    ('runtime_dir = "/nonexistent/a/b"\n', "its parent /nonexistent/a is not a directory"),
    ('runtime_dir = "a\\u0000b"\n', "runtime_dir: 'a\\x00b' contains a NUL character"),
    ('[[strategies]]\nclass = ".x:Y"\n', "strategies[sample]: class '.x:Y' must look like"),
    ('[[strategies]]\nclass = "x.:Y"\n', "strategies[sample]: class 'x.:Y' must look like"),
    ('[[strategies]]\nclass = "os:path"\n',
     "strategies[sample].class: strategy class 'os:path' is not a subclass"),
    ('[[strategies]]\nname = "a\\n"\n', "strategies[0]: name 'a\\n' is invalid"),
    ('[[strategies]]\ninstruments = ["TXF", "TXF"]\n',
     "strategies[sample]: instruments: 'TXF' is listed twice"),
    ("[[strategies]]\nparams = {x = nan}\n", "strategies[sample]: params.x: nan is not a finite"),
    ("[[strategies]]\nbatch_min = 0\n", "strategies[sample]: batch_min must be between 1"),
    ("[dispatcher]\nbatch_min = 0\n", "dispatcher: batch_min must be between 1"),
    ('instance = "a\\n"\n', "instance name 'a\\n' is invalid"),
    ('[metrics]\nlisten = "host:\u00b2"\n', "metrics: listen must look like HOST:PORT"),
    ('[metrics]\nlisten = "b\u00fccher:80"\n', "metrics: listen must look like HOST:PORT"),
    ("[idle]\npark_us = 500001\n[supervisor]\nheartbeat_timeout_s = 2.0\n",
     "idle.park_us 500001 is too long for supervisor.heartbeat_timeout_s 2"),
    ("[idle]\nspin_us = -2\n", "idle: spin_us must be between -1 and 1000000"),
    ("[idle]\nspins = 9223372036854775807\n", "idle: spins must be between 0 and 1000000"),
    ("[executor.risk]\nmax_position = 0\n", "executor.risk: max_position must be between 1"),
    ("[producer]\ncpus = [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"
     "]]]]]]]\n", "producer.cpus[0][0][...]: arrays and tables nested more than 32 levels deep"),
    ("x = " + "[" * 3000 + "]" * 3000 + "\n", "not valid TOML: arrays or tables nested too "
                                               "deeply"),
] + [(f'[[instruments]]\nsymbol = "A"\ntick_size = "{t}"\n',
      f"instruments[0]: tick_size '{t}' must be a positive decimal number")
     for t in ("abc", "0", "-1", "nan", "inf", "0.000", "1e3", " 1", "")])
def test_what_run_cannot_run_is_rejected(invoke, tmp_path, toml, named):
    p = str(tmp_path / "bad.toml")
    with open(p, "w", encoding="utf-8") as f:
        f.write(toml)
    msg = check_variant(invoke, p, toml)
    assert msg is not None and named in msg, msg


def test_file_problems_are_config_errors(invoke, tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'# ok\ninstance = "caf\xe9"\n')
    assert check_variant(invoke, str(p), "latin-1") == (
        "not valid TOML: not UTF-8 at line 2, column 16 (byte 0xe9)")
    # what click's dir_okay=False does not stop reaches load() as a ConfigError too
    with pytest.raises(config.ConfigError, match="is a directory"):
        config.load(str(tmp_path))
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text("")
    unreadable.chmod(0)
    if not os.access(unreadable, os.R_OK):  # root reads it anyway
        with pytest.raises(config.ConfigError, match="permission denied"):
            config.load(str(unreadable))


def test_the_socket_path_rule_matches_the_control_socket(tmp_path):
    from hftd import control

    name = "x" * 40
    room = config.SOCKET_PATH_MAX - len(f"/{name}.sock")
    ok = "/" + "d" * (room - 1)
    assert len(control.socket_path(ok, name)) == config.SOCKET_PATH_MAX
    config.check_runnable(config.load(overrides={"runtime_dir": ok, "instance": name}))
    with pytest.raises(config.ConfigError, match="over the 107 bytes"):
        config.check_runnable(config.load(overrides={"runtime_dir": ok + "d", "instance": name}))


def test_the_environment_cannot_make_the_defaults_invalid(monkeypatch):
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/" + "x" * 200)
    config.Config()
    with pytest.raises(config.ConfigError, match=r"runtime_dir \(empty: \$XDG_RUNTIME_DIR/hftd "
                                                 r"is used\): the control socket"):
        config.check_runnable(config.load())


def test_an_override_does_not_hide_a_bad_table(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[producer]\nsynthetic = 5\n")
    with pytest.raises(config.ConfigError, match="producer.synthetic: Expected `object`"):
        config.load(str(p), {"producer": {"synthetic": {"ticks": 10}}})


def test_the_slot_minimums_follow_the_events():
    """The slot-size floor comes from hftd/events.py: an event at the int64 extremes."""
    import msgspec

    from hftd import events

    for key, types in config.RING_EVENTS.items():
        need, _ = config._largest_encoding(*types)
        for t in types:
            ev = t(**{f.name: -2**63 for f in msgspec.structs.fields(t)})
            assert len(msgspec.msgpack.encode(ev)) <= need
    assert config.RING_EVENTS["orders"][0] is events.OrderRequest


# --- accepted non-default variants run for real ----------------------------------------------
ACCEPTED = {
    # every ring at the smallest slot its largest event fits in
    "smallest-slots": "[rings.ticks]\nslot_size = 56\n[rings.orders]\nslot_size = 104\n"
                      "[rings.reports]\nslot_size = 112\n[rings.control]\nslot_size = 40\n",
    # the extremes of the synthetic feed and of the risk limits
    "feed-extremes": "[producer.synthetic]\nseed = 9223372036854775807\n"
                     "start_price = 9007199254740991\nmax_qty = 1000000000\nrate = 0.0\n"
                     "[executor.risk]\nmax_order_qty = 1000000000\n"
                     "max_position = 1000000000000\n",
    # two strategies on instrument subsets, conflating, odd tick sizes, a day-long deadline
    "two-strategies": "[[instruments]]\nsymbol = \"A.1\"\ntick_size = \"0.0001\"\n"
                      "[[instruments]]\nsymbol = \"B/2\"\ntick_size = \"25\"\n"
                      "[[strategies]]\nname = \"a\"\ninstruments = [\"A.1\"]\npolicy = \"conflate\"\n"
                      "params = {lookback = 5, threshold = 1, when = 1979-05-27}\n"
                      "[[strategies]]\nname = \"b\"\ninstruments = [\"B/2\"]\n"
                      "[rings.orders]\nblock_deadline_ms = 86400000.0\n[idle]\nstrategy = \"yield\"\n",
    # the longest park the heartbeat allows, blocking idle
    "longest-park": "[idle]\nstrategy = \"blocking\"\npark_us = 500000\n"
                    "[supervisor]\nstatus_interval_s = 0.0\nheartbeat_timeout_s = 2.0\n",
}


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_accepted_variants_run(run_hftd, tmp_path, name):
    toml = '[metrics]\nlisten = "127.0.0.1:0"\n' + ACCEPTED[name]
    check = tmp_path / "check.toml"
    check.write_text(toml)
    chk = CliRunner().invoke(cli.main, ["check-config", str(check)])
    assert chk.exit_code == 0, chk.output
    res = run_hftd("--ticks", "200", toml=toml, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
