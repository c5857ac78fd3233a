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
    # contracts
    ("[[instruments]]\nsymbol = \"X\"\nmultiplier = 0.0\n",
     "instruments[0]: multiplier must be a finite number > 0"),
    ("[[instruments]]\nsymbol = \"X\"\ncurrency = \"twd\"\n",
     "instruments[0]: currency 'twd' must be a 3-letter ISO 4217 code"),
    ("[[instruments]]\nsymbol = \"X\"\ntax_rate = 0.5\n", "instruments[0]: tax_rate must be"),
    ("[[instruments]]\nsymbol = \"X\"\nfee_per_lot = -1.0\n",
     "instruments[0]: fee_per_lot must be"),
    ("[[instruments]]\nsymbol = \"X\"\n[[instruments]]\nsymbol = \"Y\"\ncurrency = \"USD\"\n",
     "instruments[1].currency: 'USD' differs from instruments[0].currency 'TWD'"),
    # pre-trade risk and the venue
    ("[executor.risk]\norder_rate = 10.0\norder_burst = 0\n",
     "executor.risk: order_burst must be >= 1 when order_rate is set"),
    ("[executor.risk]\nprice_band_pct = -1.0\n", "executor.risk: price_band_pct must be"),
    ("[executor.risk]\ndaily_loss_limit = nan\n", "executor.risk: daily_loss_limit must be"),
    ("[executor.risk]\nmax_working_orders = 0\n", "executor.risk: max_working_orders must be"),
    ("[executor.sim]\nioc_window_us = -1.0\n", "executor.sim: ioc_window_us must be"),
    ("[executor]\nmarket_data_policy = \"drop\"\n",
     "executor.market_data_policy: Invalid enum value 'drop'"),
    ("[executor]\nday_starts_at = \"25:00\"\n",
     "executor: day_starts_at must be a local time HH:MM (00:00-23:59), got '25:00'"),
    ("[executor]\nutc_offset = \"+15:00\"\n",
     "executor: utc_offset must be +HH:MM or -HH:MM within 14 hours of UTC, got '+15:00'"),
    ("[[strategies]]\nname = \"executor\"\n",
     "strategies[executor]: name 'executor' is reserved: ticks.executor is the executor's"),
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


def test_default_instruments_are_taifex_contracts():
    from hftd.trading.instruments import TAIFEX_DEFAULTS

    cfg = config.Config()
    by_symbol = {c.symbol: c for c in cfg.contracts()}
    for symbol, product in (("TXF", "TX"), ("MXF", "MTX"), ("TMF", "TMF"), ("TE", "TE"),
                            ("TF", "TF")):
        c, d = by_symbol[symbol], TAIFEX_DEFAULTS[product]
        assert (c.multiplier, str(c.tick_size), c.currency) == (d["multiplier"], d["tick_size"],
                                                                d["currency"])
        assert c.tax_rate == 0.00002 and c.fee_per_lot == 0.0
    limits = cfg.executor.risk.limits()  # the config's risk table is the engine's limits
    assert (limits.max_order_qty, limits.order_rate) == (10, 2000.0)


def test_a_config_whose_positions_do_not_fit_the_stats_block_is_refused(tmp_path):
    """The executor names each position's values per strategy and routed instrument."""
    p = tmp_path / "big.toml"
    p.write_text(f'runtime_dir = "{tmp_path}/run"\n'
                 + "".join(f'[[instruments]]\nsymbol = "S{k}"\n' for k in range(2000)))
    res = hftd("check-config", str(p), timeout=60)
    assert res.returncode == 2, res.stderr
    assert "strategies, instruments: the executor agent would keep 14" in res.stderr
    assert "route fewer instruments to each strategy" in res.stderr


def test_the_example_configs_are_valid():
    for name in ("hftd.toml", "conditions.toml"):
        res = hftd("check-config", os.path.join(ROOT, "configs", name), timeout=60)
        assert res.returncode == 0, (name, res.stderr)
