"""Config: the embedded defaults, the documented file, and errors that name the key."""

from __future__ import annotations

import os

import msgspec
import pytest

from hftd import config
from conftest import hftd

ROOT = os.path.dirname(os.path.dirname(__file__))


def test_documented_config_file_is_the_embedded_default():
    documented = config.load(os.path.join(ROOT, "configs", "hftd.toml"))
    assert msgspec.to_builtins(documented) == msgspec.to_builtins(config.Config())


def test_a_partial_table_keeps_the_other_defaults(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[rings.ticks]\ncapacity = 1024\n")
    cfg = config.load(str(p))
    assert (cfg.rings.ticks.capacity, cfg.rings.ticks.slot_size) == (1024, 64)


@pytest.mark.parametrize("toml, named", [
    ("[rings.ticks]\nbogus = 1\n", "rings.ticks: Object contains unknown field `bogus`"),
    ("surprise = 1\n", "unknown field `surprise`"),
    ("[rings.ticks]\ncapacity = 1000\n", "rings.ticks: ring capacity 1000 is not a power of two"),
    ("[producer.synthetic]\nrate = -5.0\n", "producer.synthetic: rate must be"),
    ("[idle]\nstrategy = \"spin\"\n", "idle.strategy: Invalid enum value 'spin'"),
    ("[dispatcher]\nbatch = \"many\"\n", "dispatcher.batch: Expected `int`, got `str`"),
    ("[executor]\ncpus = [4096]\n", "executor: cpus: CPU 4096 does not exist on this machine"),
    ("[[strategies]]\nname = \"a\"\ninstruments = [\"NOPE\"]\n",
     "strategies[a].instruments: unknown instrument 'NOPE'"),
    ("instance = \"a/b\"\n", "instance name 'a/b' is invalid"),
    ("[[strategies]]\nclass = \"nowhere.mod:Nope\"\n",
     "strategies[sample].class: strategy class 'nowhere.mod:Nope' cannot be loaded"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path, toml, named):
    p = tmp_path / "bad.toml"
    p.write_text(toml)
    for args in (["run", "--config", str(p), "--ticks", "10"], ["check-config", str(p)]):
        res = hftd(*args, timeout=60)
        assert res.returncode == 2, (args, res.stderr)
        assert named in res.stderr, res.stderr
        assert "Traceback" not in res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hftd: config error: "), res.stderr


def test_missing_and_malformed_files_are_clear(tmp_path):
    res = hftd("run", "--config", str(tmp_path / "nope.toml"), timeout=60)
    assert res.returncode == 2 and "no such config file" in res.stderr
    p = tmp_path / "broken.toml"
    p.write_text("[rings\n")
    res = hftd("check-config", str(p), timeout=60)
    assert res.returncode == 2 and "not valid TOML" in res.stderr
    assert "Traceback" not in res.stderr
