"""Configuration: TOML read with `tomllib` into msgspec Structs.

The Structs are the schema: their defaults are the embedded default config (what `hftd run`
uses with no file: synthetic feed -> sample strategy -> simulated venue), an unknown key is an
error, and every error names the key it is about (``config error: rings.ticks.capacity: ...``).
`configs/hftd.toml` documents every key with its default; a test keeps the two in step.
"""

from __future__ import annotations

import os
import re
import tomllib
from typing import Any, Literal

import msgspec

from . import ring as ring_mod
from . import shm


class ConfigError(ValueError):
    """A config problem; the message names the key."""


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def _check_cpus(cpus: list[int]) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    for c in cpus:
        if c not in allowed:
            raise ValueError(f"cpus: CPU {c} does not exist on this machine (usable CPUs: {allowed})")


class Instrument(_Base):
    symbol: str
    tick_size: str = "1"  # one price unit, as a decimal string (prices travel as integer ticks)


Policy = Literal["block", "conflate", "drop"]


class RingConfig(_Base):
    capacity: int
    slot_size: int
    policy: Policy = "block"  # what the writer does when the ring is backpressured
    high_watermark: float = 0.8  # occupancy ratio that marks the ring backpressured ...
    low_watermark: float = 0.5  # ... and the one that clears it
    block_deadline_ms: float = 0.0  # a block longer than this raises an alarm; 0 = never

    def __post_init__(self):
        ring_mod.check_geometry(self.capacity, self.slot_size)
        if not 0 <= self.low_watermark < self.high_watermark <= 1:
            raise ValueError(
                f"watermarks must satisfy 0 <= low_watermark < high_watermark <= 1, got "
                f"low {self.low_watermark} and high {self.high_watermark}")
        if self.block_deadline_ms < 0:
            raise ValueError(f"block_deadline_ms must be >= 0, got {self.block_deadline_ms}")


def _ring(capacity, slot_size, **kw):
    return msgspec.field(
        default_factory=lambda: RingConfig(capacity=capacity, slot_size=slot_size, **kw))


class RingsConfig(_Base):
    ticks: RingConfig = _ring(65536, 64)
    orders: RingConfig = _ring(4096, 128, block_deadline_ms=1000.0)
    reports: RingConfig = _ring(4096, 128, block_deadline_ms=1000.0)
    control: RingConfig = _ring(64, 64, block_deadline_ms=1000.0)

    def __post_init__(self):
        for key in ("orders", "reports", "control"):
            if getattr(self, key).policy != "block":
                raise ValueError(f"{key}.policy: orders, reports and control are never dropped "
                                 f"or conflated; the policy must be 'block', got "
                                 f"{getattr(self, key).policy!r}")


IdleName = Literal["busy-spin", "yield", "backoff", "blocking"]


class IdleConfig(_Base):
    strategy: IdleName = "backoff"
    spins: int = 10  # backoff: empty polls that only spin
    yields: int = 5  # backoff: then empty polls followed by sched_yield()
    park_us: int = 1000  # then park (semaphore) at most this long before polling again

    def __post_init__(self):
        for key in ("spins", "yields"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.park_us <= 0:
            raise ValueError(f"park_us must be > 0, got {self.park_us}")


class SyntheticFeedConfig(_Base):
    rate: float = 10000.0  # ticks per second; 0 = as fast as the pipeline takes them
    ticks: int = 0  # stop after this many ticks; 0 = run until stopped
    seed: int = 1
    start_price: int = 20000  # in ticks
    max_qty: int = 10

    def __post_init__(self):
        if not (self.rate >= 0 and self.rate != float("inf")):
            raise ValueError(f"rate must be a finite number >= 0, got {self.rate}")
        if self.ticks < 0:
            raise ValueError(f"ticks must be >= 0, got {self.ticks}")
        if self.start_price <= 0:
            raise ValueError(f"start_price must be > 0, got {self.start_price}")
        if self.max_qty <= 0:
            raise ValueError(f"max_qty must be > 0, got {self.max_qty}")


def _batch_ok(batch: int) -> None:
    if not 1 <= batch <= 1 << 20:
        raise ValueError(f"batch must be between 1 and {1 << 20}, got {batch}")


class ProducerConfig(_Base):
    cpus: list[int] = []
    feed: Literal["synthetic"] = "synthetic"
    batch: int = 512  # most ticks taken from the feed per publish
    synthetic: SyntheticFeedConfig = msgspec.field(default_factory=SyntheticFeedConfig)

    def __post_init__(self):
        _check_cpus(self.cpus)
        _batch_ok(self.batch)


def _batches_ok(lo: int, hi: int) -> None:
    _batch_ok(lo)
    _batch_ok(hi)
    if lo > hi:
        raise ValueError(f"batch_min ({lo}) must not exceed batch ({hi})")


class DispatcherConfig(_Base):
    cpus: list[int] = []
    batch_min: int = 16  # ticks per pass when its input ring is empty-ish ...
    batch: int = 1024  # ... growing with the ring's occupancy up to this

    def __post_init__(self):
        _check_cpus(self.cpus)
        _batches_ok(self.batch_min, self.batch)


_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,30}$")


class StrategyConfig(_Base):
    name: str = "sample"
    class_: str = msgspec.field(name="class", default="hftd.strategies.momentum:Momentum")
    instruments: list[str] = []  # symbols routed to this strategy; empty = all
    params: dict[str, Any] = {}
    cpus: list[int] = []
    policy: Literal["", "block", "conflate", "drop"] = ""  # its ticks ring; "" = rings.ticks.policy
    batch_min: int = 16
    batch: int = 256

    def __post_init__(self):
        if not _NAME_RE.match(self.name):
            raise ValueError(
                f"name {self.name!r} is invalid: a letter, then up to 30 letters, digits or '_'"
            )
        if ":" not in self.class_:
            raise ValueError(f"class {self.class_!r} must look like 'package.module:ClassName'")
        _check_cpus(self.cpus)
        _batches_ok(self.batch_min, self.batch)


class RiskConfig(_Base):
    max_order_qty: int = 10
    max_position: int = 50  # absolute net position per instrument and strategy

    def __post_init__(self):
        if self.max_order_qty <= 0 or self.max_position <= 0:
            raise ValueError("max_order_qty and max_position must be > 0")


class SimVenueConfig(_Base):
    latency_us: float = 0.0  # ack and fill this long after the order reaches the venue

    def __post_init__(self):
        if not (0 <= self.latency_us < 60e6):
            raise ValueError(f"latency_us must be between 0 and 60e6, got {self.latency_us}")


class ExecutorConfig(_Base):
    cpus: list[int] = []
    venue: Literal["sim"] = "sim"
    sim: SimVenueConfig = msgspec.field(default_factory=SimVenueConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)

    def __post_init__(self):
        _check_cpus(self.cpus)


class SupervisorConfig(_Base):
    cpus: list[int] = []
    start_timeout_s: float = 20.0  # every agent must be up within this
    stop_timeout_s: float = 10.0  # per agent, while draining front to back
    heartbeat_timeout_s: float = 5.0  # an agent silent this long is considered hung
    status_interval_s: float = 1.0  # one status line this often; 0 = none
    # restart policy, like systemd's RestartSec/StartLimitBurst/StartLimitIntervalSec: a
    # crashed agent is restarted after restart_delay_s, doubling per crash up to
    # restart_delay_max_s; more than restart_burst crashes within restart_window_s and it is
    # given up: a strategy is quarantined (the rest keep trading), any other agent ends the run
    restart_delay_s: float = 0.1
    restart_delay_max_s: float = 5.0
    restart_burst: int = 5
    restart_window_s: float = 60.0

    def __post_init__(self):
        _check_cpus(self.cpus)
        for key in ("start_timeout_s", "stop_timeout_s", "heartbeat_timeout_s",
                    "restart_window_s"):
            if not 0 < getattr(self, key) < 1e6:
                raise ValueError(f"{key} must be > 0 and < 1e6, got {getattr(self, key)}")
        for key in ("restart_delay_s", "restart_delay_max_s"):
            if not 0 <= getattr(self, key) <= 3600:
                raise ValueError(f"{key} must be between 0 and 3600, got {getattr(self, key)}")
        if self.restart_delay_s > self.restart_delay_max_s:
            raise ValueError(f"restart_delay_s ({self.restart_delay_s}) must not exceed "
                             f"restart_delay_max_s ({self.restart_delay_max_s})")
        if not 0 <= self.restart_burst <= 1000:
            raise ValueError(f"restart_burst must be between 0 and 1000, got {self.restart_burst}")


class MetricsConfig(_Base):
    listen: str = "127.0.0.1:9464"  # /metrics (Prometheus) address; "" = off; port 0 = any
    record_latency: bool = True  # per-stage histograms (tick-to-trade always); off only to measure their cost

    def __post_init__(self):
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not sep or not host or not port.isdigit() or int(port) > 65535:
                raise ValueError(f"listen must look like HOST:PORT, got {self.listen!r}")

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


def _default_instruments() -> list[Instrument]:
    return [Instrument(symbol="TXF"), Instrument(symbol="MXF"), Instrument(symbol="TMF"),
            Instrument(symbol="TE", tick_size="0.05"), Instrument(symbol="TF", tick_size="0.2")]


class Config(_Base):
    instance: str = "default"
    runtime_dir: str = ""  # lock file and agent spec; "" = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/hftd or /tmp/hftd-UID
    instruments: list[Instrument] = msgspec.field(default_factory=_default_instruments)
    rings: RingsConfig = msgspec.field(default_factory=RingsConfig)
    idle: IdleConfig = msgspec.field(default_factory=IdleConfig)
    producer: ProducerConfig = msgspec.field(default_factory=ProducerConfig)
    dispatcher: DispatcherConfig = msgspec.field(default_factory=DispatcherConfig)
    strategies: list[StrategyConfig] = msgspec.field(default_factory=lambda: [StrategyConfig()])
    executor: ExecutorConfig = msgspec.field(default_factory=ExecutorConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)

    def __post_init__(self):
        shm.check_instance_name(self.instance)
        symbols = [i.symbol for i in self.instruments]
        if not symbols:
            raise ValueError("instruments: at least one instrument is needed")
        dup = {s for s in symbols if symbols.count(s) > 1}
        if dup:
            raise ValueError(f"instruments: symbol {sorted(dup)[0]!r} is listed twice")
        names = [s.name for s in self.strategies]
        if not names:
            raise ValueError("strategies: at least one strategy is needed")
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"strategies: name {sorted(dup)[0]!r} is used twice")
        for s in self.strategies:
            for sym in s.instruments:
                if sym not in symbols:
                    raise ValueError(
                        f"strategies[{s.name}].instruments: unknown instrument {sym!r} "
                        f"(known: {symbols})"
                    )

    # --- derived -----------------------------------------------------------------------
    def symbols(self) -> list[str]:
        return [i.symbol for i in self.instruments]

    def ticks_policy(self, strategy: StrategyConfig | None = None) -> str:
        """Policy of `strategy`'s ticks ring, or of ticks.in when None."""
        return (strategy and strategy.policy) or self.rings.ticks.policy

    def routes(self, strategy: StrategyConfig) -> list[int]:
        """Instrument ids routed to `strategy`."""
        syms = self.symbols()
        wanted = strategy.instruments or syms
        return [syms.index(s) for s in wanted]

    def resolved_runtime_dir(self) -> str:
        if self.runtime_dir:
            return self.runtime_dir
        if os.environ.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
            return os.environ["RUNTIME_DIRECTORY"].split(":")[0]
        if os.environ.get("XDG_RUNTIME_DIR"):
            return os.path.join(os.environ["XDG_RUNTIME_DIR"], "hftd")
        return f"/tmp/hftd-{os.getuid()}"


def _where(err: msgspec.ValidationError) -> str:
    msg = str(err)
    m = re.search(r" - at `\$(.*)`$", msg)
    if not m:
        return msg
    path = m.group(1).lstrip(".")
    path = re.sub(r"\.strategies\[(\d+)\]", r"strategies[\1]", "." + path).lstrip(".")
    return f"{path}: {msg[: m.start()]}"


def from_dict(data: dict, source: str = "config") -> Config:
    """Validate a complete config dict (see `load` for partial ones)."""
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_where(e)}") from None


def load(path: str | None = None, overrides: dict | None = None) -> Config:
    """Read `path` (TOML) or the embedded default, apply `overrides` (nested dict), validate."""
    data: dict = {}
    source = "embedded default config"
    if path:
        source = path
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
    if overrides:
        _merge(data, overrides)
    # start from the defaults so a partial table (say [rings.ticks] with only capacity)
    # keeps the other keys' defaults; unknown keys still fail in from_dict
    merged = to_dict(Config())
    _merge(merged, data)
    return from_dict(merged, source)


def _merge(base: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def to_dict(cfg: Config) -> dict:
    return msgspec.to_builtins(cfg)
