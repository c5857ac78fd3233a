"""Configuration: TOML read with `tomllib` into msgspec Structs.

The Structs are the schema: their defaults are the embedded default config (what `hftd run`
uses with no file: synthetic feed -> sample strategy -> simulated venue), an unknown key is an
error, and every error names the key it is about (``config error: rings.ticks.capacity: ...``).
`configs/hftd.toml` documents every key with its default; a test keeps the two in step.
"""

from __future__ import annotations

import datetime
import ipaddress
import math
import os
import re
import tomllib
from decimal import Decimal
from typing import Any, Literal

import msgspec

from . import events
from . import ring as ring_mod
from . import shm


class ConfigError(ValueError):
    """A config problem; the message names the key. It is always one line: characters that
    are not printable (a newline or NUL in a value, say) are shown escaped."""

    def __init__(self, msg: str):
        super().__init__(_one_line(msg))


def _one_line(s: str) -> str:
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in s)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
DAY_S = 86400.0
MAX_QTY = 10**9  # a quantity (lots) beyond any real order
MAX_DEPTH = 32  # arrays and tables nested deeper than this in a config are refused
MAX_FILE_BYTES = 1 << 24
SOCKET_PATH_MAX = 107  # bytes of an AF_UNIX socket path (sun_path is 108, NUL included)


def _short(v) -> str:
    """`v` for an error message: its repr, cut short."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"a {v.bit_length()}-bit integer"
    r = repr(v)
    return r if len(r) <= 64 else f"{r[:56]}... ({len(r)} characters)"


def _int_in(key: str, v: int, lo: int, hi: int, why: str = "") -> None:
    if not lo <= v <= hi:
        raise ValueError(f"{key} must be between {lo} and {hi}{why}, got {_short(v)}")


def _float_in(key: str, v: float, lo: float, hi: float, *, above: bool = False,
              why: str = "") -> None:
    """`v` finite and lo <= v <= hi (lo < v with `above`)."""
    if not (math.isfinite(v) and (v > lo if above else v >= lo) and v <= hi):
        raise ValueError(f"{key} must be a finite number {'>' if above else '>='} {_num(lo)} and "
                         f"<= {_num(hi)}{why}, got {v!r}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e16 else f"{x:g}"


class _Base(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def _check_cpus(cpus: list[int]) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    for c in cpus:
        if c not in allowed:
            raise ValueError(f"cpus: CPU {c} does not exist on this machine (usable CPUs: {allowed})")


_DECIMAL_RE = re.compile(r"[0-9]{1,20}(\.[0-9]{1,20})?")


_CURRENCY_RE = re.compile(r"[A-Z]{3}")
_TAIFEX_CODE_RE = re.compile(r"[A-Z0-9]{1,8}")
_PFCF_CODE_RE = re.compile(r"[A-Z0-9]{3}")
_MONTH_RE = re.compile(r"(19|20)[0-9]{2}[01][0-9]")
_CLOCK_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_OFFSET_RE = re.compile(r"([+-])([01][0-9]):([0-5][0-9])")
MAX_MULTIPLIER = 1e9  # currency per price point: far beyond any contract
MAX_FEE = 1e9  # currency per lot


class Instrument(_Base):
    """A contract: what turns an integer price in ticks into money (hftd.trading.instruments).
    The defaults make a bare `symbol` a 1-unit contract with no costs; the embedded default
    instruments are TAIFEX's index futures."""

    symbol: str
    tick_size: str = "1"  # one price unit, as a decimal string (prices travel as integer ticks)
    multiplier: float = 1.0  # currency per price point (TX 200, MTX 50, TMF 10: NTD)
    currency: str = "TWD"  # ISO 4217 code; every instrument of an instance has the same one
    fee_per_lot: float = 0.0  # currency per lot and side (the broker's and exchange's fees)
    tax_rate: float = 0.0  # transaction tax, share of the notional per side (TAIFEX index futures: 0.00002)
    taifex: str = ""  # feed = "taifex": the product code in TAIFEX's files (TX, MTX, TE, ...); "" = none
    expiry: str = ""  # the contract month YYYYMM; "" = the front month (of each TAIFEX file; for PFCF, TAIFEX's at the run's start)
    pfcf: str = ""  # feed/venue = "pfcf": PFCF's product code (TXF, MXF, TMF, EXF, FXF ...); "" = none

    def __post_init__(self):
        if self.taifex and not _TAIFEX_CODE_RE.fullmatch(self.taifex):
            raise ValueError(f"taifex {_short(self.taifex)} must be a TAIFEX product code: 1-8 "
                             f"capital letters or digits, such as 'TX' or 'MTX'")
        if self.pfcf and not _PFCF_CODE_RE.fullmatch(self.pfcf):
            raise ValueError(f"pfcf {_short(self.pfcf)} must be a PFCF futures product code: "
                             f"3 capital letters or digits, such as 'TXF' or 'MXF'")
        if self.expiry:
            if not (self.taifex or self.pfcf):
                raise ValueError("expiry is set but neither taifex nor pfcf (a product code) is")
            if not (_MONTH_RE.fullmatch(self.expiry) and 1 <= int(self.expiry[4:]) <= 12):
                raise ValueError(f"expiry {_short(self.expiry)} must be a contract month "
                                 f"YYYYMM, such as '202612', or \"\" for the front month")
        s = self.symbol
        if not (1 <= len(s) <= 32 and s.isprintable() and not any(c.isspace() for c in s)):
            raise ValueError(f"symbol {_short(s)} is invalid: 1-32 printable characters, no "
                             f"spaces")
        if not (_DECIMAL_RE.fullmatch(self.tick_size) and Decimal(self.tick_size) > 0):
            raise ValueError(f"tick_size {_short(self.tick_size)} must be a positive decimal "
                             f"number written with digits and an optional '.', such as '1' or "
                             f"'0.05'")
        _float_in("multiplier", self.multiplier, 0, MAX_MULTIPLIER, above=True)
        if not _CURRENCY_RE.fullmatch(self.currency):
            raise ValueError(f"currency {_short(self.currency)} must be a 3-letter ISO 4217 "
                             f"code in capitals, such as 'TWD'")
        _float_in("fee_per_lot", self.fee_per_lot, 0, MAX_FEE)
        _float_in("tax_rate", self.tax_rate, 0, 0.1, why=" (a share of the notional)")

    def contract(self):
        """The hftd.trading Contract of this instrument."""
        from .trading.instruments import Contract

        return Contract(symbol=self.symbol, tick_size=self.tick_size, multiplier=self.multiplier,
                        currency=self.currency, fee_per_lot=self.fee_per_lot,
                        tax_rate=self.tax_rate)


Policy = Literal["block", "conflate", "drop"]
MAX_RING_CAPACITY = 1 << 24
MAX_SLOT_SIZE = 1 << 16
MAX_RING_DATA = 1 << 30


def _largest_encoding(*types) -> tuple[int, str]:
    """(bytes, struct name) of the longest msgpack encoding of any of `types` (every event
    field is an int: all of them at the int64 extremes)."""
    enc = msgspec.msgpack.Encoder()
    worst = (0, "")
    for t in types:
        fields = msgspec.structs.fields(t)
        for v in (INT64_MIN, INT64_MAX):
            ev = t(**{f.name: v for f in fields})
            worst = max(worst, (len(enc.encode(ev)), t.__name__))
    return worst


# What each ring carries (see hftd/events.py): its slot must hold the largest event.
RING_EVENTS = {
    "ticks": (events.Tick, events.Control),
    "orders": (events.OrderRequest, events.Control),
    "reports": (events.OrderReport, events.Control),
    "control": (events.Control,),
}


class RingConfig(_Base):
    capacity: int
    slot_size: int
    policy: Policy = "block"  # what the writer does when the ring is backpressured
    high_watermark: float = 0.8  # occupancy ratio that marks the ring backpressured ...
    low_watermark: float = 0.5  # ... and the one that clears it
    block_deadline_ms: float = 0.0  # a block longer than this raises an alarm; 0 = never

    def __post_init__(self):
        cap, slot = self.capacity, self.slot_size
        if not (2 <= cap <= MAX_RING_CAPACITY and cap & (cap - 1) == 0):
            raise ValueError(f"ring capacity {_short(cap)} is not a power of two between 2 and "
                             f"{MAX_RING_CAPACITY}")
        if not (8 <= slot <= MAX_SLOT_SIZE and slot % 8 == 0):
            raise ValueError(f"slot_size {_short(slot)} must be a multiple of 8 between 8 and "
                             f"{MAX_SLOT_SIZE}")
        if cap * slot > MAX_RING_DATA:
            raise ValueError(f"capacity {cap} * slot_size {slot} = {cap * slot} bytes: a ring "
                             f"holds at most {MAX_RING_DATA} bytes ({MAX_RING_DATA >> 20} MiB)")
        ring_mod.check_geometry(cap, slot)
        if not 0 <= self.low_watermark < self.high_watermark <= 1:
            raise ValueError(
                f"watermarks must satisfy 0 <= low_watermark < high_watermark <= 1, got "
                f"low {self.low_watermark} and high {self.high_watermark}")
        _float_in("block_deadline_ms", self.block_deadline_ms, 0, DAY_S * 1000, why=" (a day)")


def _ring(capacity, slot_size, **kw):
    return msgspec.field(
        default_factory=lambda: RingConfig(capacity=capacity, slot_size=slot_size, **kw))


class RingsConfig(_Base):
    ticks: RingConfig = _ring(8192, 64)
    orders: RingConfig = _ring(4096, 128, block_deadline_ms=1000.0)
    reports: RingConfig = _ring(4096, 128, block_deadline_ms=1000.0)
    control: RingConfig = _ring(64, 64, block_deadline_ms=1000.0)

    def __post_init__(self):
        for key in ("orders", "reports", "control"):
            if getattr(self, key).policy != "block":
                raise ValueError(f"{key}.policy: orders, reports and control are never dropped "
                                 f"or conflated; the policy must be 'block', got "
                                 f"{getattr(self, key).policy!r}")
        for key, types in RING_EVENTS.items():
            slot = getattr(self, key).slot_size
            need, name = _largest_encoding(*types)
            if slot < need:
                raise ValueError(
                    f"{key}.slot_size {slot} is too small: the {key} ring carries events of up "
                    f"to {need} bytes ({name} with every field at an int64 extreme); slot_size "
                    f"must be >= {(need + 7) // 8 * 8}")


IdleName = Literal["adaptive", "busy-spin", "yield", "backoff", "blocking"]


class IdleConfig(_Base):
    strategy: IdleName = "adaptive"
    # adaptive: spin while work comes at most this far apart, else park; -1: auto (20 us when
    # the machine has a CPU for each agent and the supervisor, else 0: on fewer cores a
    # spinning agent takes the CPU an agent with work needs)
    spin_us: int = -1
    spins: int = 10  # backoff: empty polls that only spin
    yields: int = 5  # backoff: then empty polls followed by sched_yield()
    park_us: int = 100_000  # a park lasts at most this long (a doorbell ends it sooner)

    def __post_init__(self):
        for key in ("spins", "yields"):
            _int_in(key, getattr(self, key), 0, 1_000_000)
        _int_in("spin_us", self.spin_us, -1, 1_000_000, " (1 s)")
        _int_in("park_us", self.park_us, 1, 1_000_000, " (1 s)")


class SyntheticFeedConfig(_Base):
    rate: float = 10000.0  # ticks per second; 0 = as fast as the pipeline takes them
    ticks: int = 0  # stop after this many ticks; 0 = run until stopped
    seed: int = 1
    start_price: int = 20000  # in ticks
    max_qty: int = 10

    def __post_init__(self):
        _float_in("rate", self.rate, 0, 1e9)
        _int_in("ticks", self.ticks, 0, 1 << 62)
        _int_in("seed", self.seed, 0, INT64_MAX, " (numpy's generator needs a seed >= 0)")
        _int_in("start_price", self.start_price, 1, (1 << 53) - 1,
                " (the random walk must stay inside int64)")
        _int_in("max_qty", self.max_qty, 1, MAX_QTY)


class TaifexFeedConfig(_Base):
    path: str = ""  # a Daily_YYYY_MM_DD.csv or .zip, a directory of them, or a glob
    speed: float = 0.0  # 0 = as fast as the pipeline takes them, 1 = as recorded, N = N times faster

    def __post_init__(self):
        if "\0" in self.path:
            raise ValueError("path contains a NUL character")
        _float_in("speed", self.speed, 0, 1e6)


class RecordingFeedConfig(_Base):
    path: str = ""  # a ticks-YYYYMMDD-RUN.rec file, a directory of them or a glob
    speed: float = 0.0  # 0 = as fast as the pipeline takes them, 1 = as recorded (receive time), N = N times faster

    def __post_init__(self):
        if "\0" in self.path:
            raise ValueError("path contains a NUL character")
        _float_in("speed", self.speed, 0, 1e6)


def _batch_ok(batch: int, key: str = "batch") -> None:
    _int_in(key, batch, 1, 1 << 20)


class ProducerConfig(_Base):
    cpus: list[int] = []
    feed: Literal["synthetic", "taifex", "recording", "pfcf"] = "synthetic"
    batch: int = 512  # most ticks taken from the feed per publish
    record: str = ""  # a directory: record every published tick there (hftd.feeds.recording); "" = off
    synthetic: SyntheticFeedConfig = msgspec.field(default_factory=SyntheticFeedConfig)
    taifex: TaifexFeedConfig = msgspec.field(default_factory=TaifexFeedConfig)
    recording: RecordingFeedConfig = msgspec.field(default_factory=RecordingFeedConfig)

    def __post_init__(self):
        _check_cpus(self.cpus)
        _batch_ok(self.batch)
        if self.feed == "taifex":
            from .feeds.taifex import TaifexError, expand

            try:
                expand(self.taifex.path)
            except TaifexError as e:
                raise ValueError(f"taifex.path: {e}") from None
        if "\0" in self.record:
            raise ValueError("record contains a NUL character")
        if self.record and os.path.exists(self.record) and not os.path.isdir(self.record):
            raise ValueError(f"record: {self.record} exists and is not a directory")
        if self.feed == "recording":
            from .feeds.recording import RecordingError, expand as expand_recording

            try:
                expand_recording(self.recording.path)
            except RecordingError as e:
                raise ValueError(f"recording.path: {e}") from None


def _batches_ok(lo: int, hi: int) -> None:
    _batch_ok(lo, "batch_min")
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


_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,30}")  # always fullmatch: `$` takes a "\n"
MAX_STRATEGIES = 64
# ring names a strategy's ticks ring (ticks.<name>) must not take
RESERVED_STRATEGY_NAMES = {"in": "producer's ring", "executor": "executor's market data ring"}
MAX_INSTRUMENTS = 65536


def _class_path_ok(path: str) -> bool:
    module, sep, name = path.partition(":")
    return bool(sep) and name.isidentifier() and all(p.isidentifier() for p in module.split("."))


def _params_problem(v, path: str) -> str | None:
    """Why the strategy parameter `v` (at `path`) cannot reach the strategy unchanged, or
    None. The supervisor hands the config to the agents as JSON, so a value must survive it:
    strings, booleans, int64 integers, finite floats, dates and times (as ISO strings),
    arrays and tables. (Depth is bounded by MAX_DEPTH before this runs.)"""
    if isinstance(v, (str, bool, datetime.date, datetime.time)):
        return None
    if isinstance(v, int):
        return None if INT64_MIN <= v <= INT64_MAX else f"{path}: {_short(v)} is outside int64"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{path}: {v!r} is not a finite number"
    if isinstance(v, list):
        for i, x in enumerate(v):
            why = _params_problem(x, f"{path}[{i}]")
            if why:
                return why
        return None
    if isinstance(v, dict):
        for k, x in v.items():
            if not isinstance(k, str):
                return f"{path}: key {_short(k)} is not a string"
            why = _params_problem(x, f"{path}.{k}")
            if why:
                return why
        return None
    return f"{path}: a {type(v).__name__} cannot be handed to a strategy"


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
        if not _NAME_RE.fullmatch(self.name):
            raise ValueError(
                f"name {_short(self.name)} is invalid: a letter, then up to 30 letters, digits "
                f"or '_'"
            )
        if self.name in RESERVED_STRATEGY_NAMES:
            raise ValueError(f"name {self.name!r} is reserved: ticks.{self.name} is the "
                             f"{RESERVED_STRATEGY_NAMES[self.name]}")
        if not _class_path_ok(self.class_):
            raise ValueError(f"class {_short(self.class_)} must look like "
                             f"'package.module:ClassName' (Python identifiers)")
        dup = sorted({s for s in self.instruments if self.instruments.count(s) > 1})
        if dup:
            raise ValueError(f"instruments: {_short(dup[0])} is listed twice")
        why = _params_problem(self.params, "params")
        if why:
            raise ValueError(f"{why} (strategy params travel as JSON: strings, booleans, int64 "
                             f"integers, finite floats, dates, arrays and tables)")
        _check_cpus(self.cpus)
        _batches_ok(self.batch_min, self.batch)


MAX_ORDER_RATE = 1e6  # orders per second


class RiskConfig(_Base):
    """Pre-trade risk limits of the executor (hftd.trading.risk); `hftd reload` may change
    them live. A rate, band or loss limit of 0 is off."""

    max_order_qty: int = 10
    max_position: int = 50  # absolute net position (filled + working) per instrument and strategy
    max_working_orders: int = 50  # working orders per strategy, all instruments
    order_rate: float = 2000.0  # orders/s per strategy (a token bucket; 0 = unlimited) ...
    order_burst: int = 200  # ... holding this many tokens
    instance_order_rate: float = 5000.0  # orders/s of the whole instance ...
    instance_order_burst: int = 500  # ... holding this many tokens
    price_band_ticks: int = 0  # a limit price more than this many ticks from the last trade is rejected
    price_band_pct: float = 3.0  # ... or more than this % of it away
    daily_loss_limit: float = 0.0  # net P&L (currency) at or below -limit trips the kill switch

    def __post_init__(self):
        _int_in("max_order_qty", self.max_order_qty, 1, MAX_QTY)
        _int_in("max_position", self.max_position, 1, 1000 * MAX_QTY)
        _int_in("max_working_orders", self.max_working_orders, 1, 1_000_000)
        for rate, burst in (("order_rate", "order_burst"),
                            ("instance_order_rate", "instance_order_burst")):
            _float_in(rate, getattr(self, rate), 0, MAX_ORDER_RATE)
            _int_in(burst, getattr(self, burst), 0, 1_000_000)
            if getattr(self, rate) > 0 and getattr(self, burst) < 1:
                raise ValueError(f"{burst} must be >= 1 when {rate} is set (a bucket of 0 "
                                 f"tokens refuses every order)")
        _int_in("price_band_ticks", self.price_band_ticks, 0, INT64_MAX)
        _float_in("price_band_pct", self.price_band_pct, 0, 1000)
        _float_in("daily_loss_limit", self.daily_loss_limit, 0, 1e18)

    def limits(self):
        """These limits as the hftd.trading RiskLimits the executor's RiskEngine takes."""
        from .trading.risk import RiskLimits

        return RiskLimits(**msgspec.structs.asdict(self))


class SimVenueConfig(_Base):
    latency_us: float = 0.0  # orders, cancels and replaces reach the venue this long after they are sent
    ioc_window_us: float = 0.0  # an IOC/FOK order that sees no trade within this expires; 0 = waits for the next trade
    # the venue's log (hftd.venues.sim): what it received and answered, so a restarted executor
    # finds the venue as a remote one would have kept it; off: a kill -9 of the executor loses
    # the simulated venue's answers it had not applied, and the cancels it had not carried out
    log: bool = True

    def __post_init__(self):
        for key in ("latency_us", "ioc_window_us"):
            if not (0 <= getattr(self, key) < 60e6):
                raise ValueError(f"{key} must be between 0 and 60e6, got {getattr(self, key)}")


class ExecutorConfig(_Base):
    cpus: list[int] = []
    venue: Literal["sim", "pfcf"] = "sim"
    # the flow policy of ticks.executor, the market data the dispatcher sends the venue
    market_data_policy: Literal["block", "conflate"] = "block"
    sim: SimVenueConfig = msgspec.field(default_factory=SimVenueConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    # the trading day starts at this local time (the daily loss limit counts from there):
    # TAIFEX's starts with the night session, 15:00 in Taipei (UTC+08:00, no daylight saving)
    day_starts_at: str = "15:00"
    utc_offset: str = "+08:00"

    def __post_init__(self):
        _check_cpus(self.cpus)
        if not _CLOCK_RE.fullmatch(self.day_starts_at):
            raise ValueError(f"day_starts_at must be a local time HH:MM (00:00-23:59), got "
                             f"{_short(self.day_starts_at)}")
        m = _OFFSET_RE.fullmatch(self.utc_offset)
        if not m or int(m[2]) * 60 + int(m[3]) > 14 * 60:
            raise ValueError(f"utc_offset must be +HH:MM or -HH:MM within 14 hours of UTC, got "
                             f"{_short(self.utc_offset)}")

    def day_start_s(self) -> int:
        """Seconds from local midnight to the start of the trading day."""
        h, m = self.day_starts_at.split(":")
        return int(h) * 3600 + int(m) * 60

    def utc_offset_s(self) -> int:
        m = _OFFSET_RE.fullmatch(self.utc_offset)
        return (1 if m[1] == "+" else -1) * (int(m[2]) * 3600 + int(m[3]) * 60)


class PfcfConfig(_Base):
    """PFCF (統一期貨) through unitrade (hftd.pfcf): feed = "pfcf" and venue = "pfcf"."""

    # a TOML file only its owner may read (url, userid, password, ca_path, ca_password and
    # optionally account); "" = the environment's HFTD_PFCF_* variables
    credentials: str = ""
    account: str = ""  # the trading account; "" = the credentials' account, or the login's only one
    subaccount: str = ""
    day_trade: bool = False  # orders carry the day-trade flag (當沖 'Y')
    # a quote feed silent longer than this during trading hours raises an alarm (kill switch)
    silence_s: float = 10.0
    hours: list[str] = msgspec.field(  # TAIFEX's sessions, Taipei time
        default_factory=lambda: ["08:45-13:45", "15:00-05:00"])
    days: list[int] = msgspec.field(  # ISO weekdays sessions open on (Monday 1 .. Sunday 7)
        default_factory=lambda: [1, 2, 3, 4, 5])
    holidays: list[str] = []  # dates (YYYY-MM-DD, Taipei) on which no session opens
    queue: int = 65536  # quotes waiting between unitrade's thread and the producer, at most

    def __post_init__(self):
        if "\0" in self.credentials:
            raise ValueError("credentials contains a NUL character")
        for key in ("account", "subaccount"):
            v = getattr(self, key)
            if v and not re.fullmatch(r"[0-9A-Za-z]{1,16}", v):
                raise ValueError(f"{key} must be 1-16 letters or digits")
        _float_in("silence_s", self.silence_s, 0, 86400, above=True)
        from .pfcf import HOURS_RE

        for k, h in enumerate(self.hours):
            m = HOURS_RE.fullmatch(h)
            if not m or m[1] == m[3]:
                raise ValueError(f"hours[{k}]: {_short(h)} must be HH:MM-HH:MM (Taipei time), "
                                 f"its end not its start")
        for k, d in enumerate(self.days):
            _int_in(f"days[{k}]", d, 1, 7, " (ISO weekday: Monday 1 .. Sunday 7)")
        import datetime

        for k, d in enumerate(self.holidays):
            try:
                ok = datetime.date.fromisoformat(d).isoformat() == d
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"holidays[{k}]: {_short(d)} must be a date YYYY-MM-DD")
        _int_in("queue", self.queue, 16, 1 << 22)


class SupervisorConfig(_Base):
    cpus: list[int] = []
    start_timeout_s: float = 20.0  # every agent must be up within this
    stop_timeout_s: float = 10.0  # per agent, while draining front to back
    heartbeat_timeout_s: float = 5.0  # an agent silent this long is considered hung
    # a status line in the log this often; 0 = none; "auto": 1.0, but none under systemd
    # (NOTIFY_SOCKET set), where STATUS= carries it and a line a second would fill the journal
    status_interval_s: float | Literal["auto"] = "auto"
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
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
        if self.status_interval_s != "auto":
            _float_in("status_interval_s", self.status_interval_s, 0, DAY_S, why=" (a day)")
        # below these no run can work: an agent process takes about a second to start
        # (Python, numpy), and the heartbeat check must outlast scheduling delays
        _float_in("start_timeout_s", self.start_timeout_s, 1.0, 1e6)
        _float_in("heartbeat_timeout_s", self.heartbeat_timeout_s, 0.1, 1e6)

    def status_interval(self, systemd: bool) -> float:
        """Seconds between status lines in the log (0: none): the value set, or for "auto"
        1.0, and none under systemd (`systemd`: NOTIFY_SOCKET set)."""
        if self.status_interval_s == "auto":
            return 0.0 if systemd else 1.0
        return self.status_interval_s


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")


def _host_ok(host: str) -> bool:
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        addr = ipaddress.ip_address(host[1:-1] if bracketed else host)
        return not bracketed or addr.version == 6
    except ValueError:
        return not bracketed and len(host) <= 253 and bool(_HOSTNAME_RE.fullmatch(host))


class MetricsConfig(_Base):
    listen: str = "127.0.0.1:9464"  # /metrics (Prometheus) address; "" = off; port 0 = any
    record_latency: bool = True  # per-stage histograms (tick-to-trade always); off only to measure their cost

    def __post_init__(self):
        if self.listen:
            host, sep, port = self.listen.rpartition(":")
            if not (sep and _host_ok(host) and re.fullmatch(r"[0-9]{1,5}", port)
                    and int(port) <= 65535):
                raise ValueError(f"listen must look like HOST:PORT (a host name or IP address, "
                                 f"a port from 0 to 65535), got {_short(self.listen)}")

    def address(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


_INSTANCE_RE = re.compile(r"[A-Za-z0-9_-]{1,40}")


def _second(items: list) -> int | None:
    """Index of the first item that repeats an earlier one."""
    seen = set()
    for i, x in enumerate(items):
        if x in seen:
            return i
        seen.add(x)
    return None


def _runtime_dir_origin(cfg) -> str:
    """Where the runtime directory comes from when the config leaves runtime_dir empty."""
    if cfg.runtime_dir:
        return ""
    if os.environ.get("RUNTIME_DIRECTORY"):
        return " (empty: $RUNTIME_DIRECTORY is used)"
    if os.environ.get("XDG_RUNTIME_DIR"):
        return " (empty: $XDG_RUNTIME_DIR/hftd is used)"
    return ""


def _default_instruments() -> list[Instrument]:
    """TAIFEX's index futures (hftd.trading.instruments.TAIFEX_DEFAULTS), by product code:
    TAIEX (TXF), mini (MXF), micro (TMF), electronics (TE), finance (TF)."""
    from .trading.instruments import TAIFEX_DEFAULTS as T

    def taifex(symbol: str, product: str, pfcf: str) -> Instrument:
        d = T[product]
        return Instrument(symbol=symbol, tick_size=d["tick_size"],
                          multiplier=float(d["multiplier"]), currency=d["currency"],
                          tax_rate=float(d["tax_rate"]), taifex=product, pfcf=pfcf)

    # (PFCF's codes: TE is EXF, TF is FXF)
    return [taifex("TXF", "TX", "TXF"), taifex("MXF", "MTX", "MXF"), taifex("TMF", "TMF", "TMF"),
            taifex("TE", "TE", "EXF"), taifex("TF", "TF", "FXF")]


class Config(_Base):
    instance: str = "default"
    runtime_dir: str = ""  # lock file and agent spec; "" = $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/hftd or /tmp/hftd-UID
    state_dir: str = ""  # what outlives a run (conditions); "" = $STATE_DIRECTORY, $XDG_STATE_HOME/hftd or ~/.local/state/hftd
    instruments: list[Instrument] = msgspec.field(default_factory=_default_instruments)
    rings: RingsConfig = msgspec.field(default_factory=RingsConfig)
    idle: IdleConfig = msgspec.field(default_factory=IdleConfig)
    producer: ProducerConfig = msgspec.field(default_factory=ProducerConfig)
    dispatcher: DispatcherConfig = msgspec.field(default_factory=DispatcherConfig)
    strategies: list[StrategyConfig] = msgspec.field(default_factory=lambda: [StrategyConfig()])
    executor: ExecutorConfig = msgspec.field(default_factory=ExecutorConfig)
    supervisor: SupervisorConfig = msgspec.field(default_factory=SupervisorConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    pfcf: PfcfConfig = msgspec.field(default_factory=PfcfConfig)

    def __post_init__(self):
        if not _INSTANCE_RE.fullmatch(self.instance):  # shm's check lets a final "\n" by
            raise ValueError(f"instance name {_short(self.instance)} is invalid: use 1-40 "
                             f"letters, digits, '_' or '-'")
        shm.check_instance_name(self.instance)
        symbols = [i.symbol for i in self.instruments]
        if not symbols:
            raise ValueError("instruments: at least one instrument is needed")
        if len(symbols) > MAX_INSTRUMENTS:
            raise ValueError(f"instruments: {len(symbols)} instruments, at most "
                             f"{MAX_INSTRUMENTS} are supported")
        if len(self.strategies) > MAX_STRATEGIES:
            raise ValueError(f"strategies: {len(self.strategies)} strategies, at most "
                             f"{MAX_STRATEGIES} are supported (one process each)")
        again = _second(symbols)
        if again is not None:
            raise ValueError(f"instruments[{again}].symbol: {_short(symbols[again])} is listed "
                             f"twice (also instruments[{symbols.index(symbols[again])}])")
        currencies = [i.currency for i in self.instruments]
        if len(set(currencies)) > 1:
            odd = next(k for k, c in enumerate(currencies) if c != currencies[0])
            raise ValueError(f"instruments[{odd}].currency: {currencies[odd]!r} differs from "
                             f"instruments[0].currency {currencies[0]!r}: an instance's P&L "
                             f"is summed in one currency")
        if self.producer.feed == "taifex":
            self._check_codes("taifex", "feed = 'taifex'", "TX")
        if self.producer.feed == "pfcf" or self.executor.venue == "pfcf":
            self._check_pfcf(symbols)
        if self.producer.feed == "recording":
            from .feeds.recording import RecordingError, check_instruments

            try:
                check_instruments(self.producer.recording.path, symbols,
                                  [i.tick_size for i in self.instruments])
            except RecordingError as e:
                raise ValueError(f"producer.recording.path: {e}") from None
        names = [s.name for s in self.strategies]
        if not names:
            raise ValueError("strategies: at least one strategy is needed")
        again = _second(names)
        if again is not None:
            raise ValueError(f"strategies[{again}].name: {names[again]!r} is used twice (also "
                             f"strategies[{names.index(names[again])}])")
        for s in self.strategies:
            for sym in s.instruments:
                if sym not in symbols:
                    raise ValueError(
                        f"strategies[{s.name}].instruments: unknown instrument {_short(sym)} "
                        f"(known: {_short(symbols)})"
                    )
        park_s = self.idle.park_us / 1e6
        heartbeat = self.supervisor.heartbeat_timeout_s
        if 4 * park_s > heartbeat:
            raise ValueError(
                f"idle.park_us {self.idle.park_us} is too long for "
                f"supervisor.heartbeat_timeout_s {heartbeat:g}: an idle agent beats its "
                f"heartbeat once a park ends, which must be at most a quarter of the timeout "
                f"or the supervisor may kill idle agents as hung")

    def _check_codes(self, attr: str, who: str, example: str) -> None:
        """Instruments with a product code `attr` (taifex, pfcf): some, and each (code,
        expiry) once."""
        coded = [(getattr(i, attr), i.expiry) for i in self.instruments if getattr(i, attr)]
        if not coded:
            raise ValueError(f"instruments: {who} needs at least one instrument with a {attr} "
                             f"product code ({attr} = \"{example}\", say)")
        again = _second(coded)
        if again is not None:
            k = [n for n, i in enumerate(self.instruments) if getattr(i, attr)][again]
            raise ValueError(f"instruments[{k}].{attr}: {coded[again][0]!r} with expiry "
                             f"{coded[again][1]!r} is already another instrument's")

    def _check_pfcf(self, symbols: list[str]) -> None:
        self._check_codes("pfcf", "PFCF", "TXF")
        import time

        from .pfcf import contract_code, front_month

        month = front_month(time.time())
        seen: dict[str, int] = {}
        for k, i in enumerate(self.instruments):  # 202612 and 203612 are both ...L6
            if i.pfcf:
                code = contract_code(i.pfcf, i.expiry or month)
                if code in seen:
                    raise ValueError(f"instruments[{k}]: PFCF contract {code} is already "
                                     f"instruments[{seen[code]}]'s")
                seen[code] = k
        if self.executor.venue == "pfcf":
            for s in self.strategies:
                for sym in s.instruments:  # (none listed: all; an order for one
                    ins = self.instruments[symbols.index(sym)]  # without a code is refused)
                    if not ins.pfcf:
                        raise ValueError(f"strategies[{s.name}].instruments: {sym!r} has no "
                                         f"PFCF product code (pfcf) to send orders with")
        from .pfcf import PfcfError, load_credentials

        try:
            load_credentials(self.pfcf.credentials)
        except PfcfError as e:
            raise ValueError(f"pfcf.credentials: {e}") from None

    # --- derived -----------------------------------------------------------------------
    def symbols(self) -> list[str]:
        return [i.symbol for i in self.instruments]

    def contracts(self) -> list:
        """The instruments as hftd.trading Contracts, by instrument id."""
        return [i.contract() for i in self.instruments]

    def ticks_policy(self, strategy: StrategyConfig | None = None) -> str:
        """Policy of `strategy`'s ticks ring, or of ticks.in when None."""
        return (strategy and strategy.policy) or self.rings.ticks.policy

    def routes(self, strategy: StrategyConfig) -> list[int]:
        """Instrument ids routed to `strategy`."""
        syms = self.symbols()
        wanted = strategy.instruments or syms
        return [syms.index(s) for s in wanted]

    def resolved_state_dir(self) -> str:
        """This instance's state directory (a directory per instance under the base)."""
        base = self.state_dir
        if not base and os.environ.get("STATE_DIRECTORY"):  # systemd StateDirectory=
            base = os.environ["STATE_DIRECTORY"].split(":")[0]
        if not base:
            xdg = os.environ.get("XDG_STATE_HOME") or os.path.join(
                os.path.expanduser("~"), ".local", "state")
            base = os.path.join(xdg, "hftd")
        return os.path.join(base, self.instance)

    def resolved_runtime_dir(self) -> str:
        if self.runtime_dir:
            return self.runtime_dir
        if os.environ.get("RUNTIME_DIRECTORY"):  # systemd RuntimeDirectory=
            return os.environ["RUNTIME_DIRECTORY"].split(":")[0]
        if os.environ.get("XDG_RUNTIME_DIR"):
            return os.path.join(os.environ["XDG_RUNTIME_DIR"], "hftd")
        return f"/tmp/hftd-{os.getuid()}"


def _strategy_name(data, i: int) -> str | None:
    """The name of strategy `i` in the raw config `data` when it is a valid, unique one."""
    entries = data.get("strategies") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not 0 <= i < len(entries):
        return None
    default = StrategyConfig().name
    names = [e.get("name", default) if isinstance(e, dict) else None for e in entries]
    name = names[i]
    if isinstance(name, str) and _NAME_RE.fullmatch(name) and names.count(name) == 1:
        return name
    return None


def _key_path(path: str, data=None) -> str:
    """`path` as errors show it: strategies[i] becomes strategies[NAME] when the entry has a
    valid unique name (as in the checks that name strategies themselves)."""
    m = re.match(r"strategies\[(\d+)\]", path)
    if m:
        name = _strategy_name(data, int(m.group(1)))
        if name:
            path = f"strategies[{name}]{path[m.end():]}"
    return path


def _where(err: msgspec.ValidationError, data=None) -> str:
    msg = str(err)
    m = re.search(r" - at `\$(.*)`$", msg)
    if not m:
        return msg
    path = _key_path(m.group(1).lstrip("."), data)
    return f"{path}: {msg[: m.start()]}" if path else msg[: m.start()]


def _too_deep(data, limit: int = MAX_DEPTH) -> str | None:
    """Key path of the first array or table nested deeper than `limit` in `data`, or None
    (without recursion: such a value must not crash the check for it)."""
    stack = [(data, "", 0)]
    while stack:
        v, path, depth = stack.pop()
        if isinstance(v, dict):
            children = [(x, f"{path}.{k}" if path else str(k)) for k, x in v.items()]
        elif isinstance(v, list):
            children = [(x, f"{path}[{i}]") for i, x in enumerate(v)]
        else:
            continue
        if depth >= limit:
            # a run of indices ([0][0][0]...) is shown as its first two
            return re.sub(r"((?:\[\d+\]){2})(?:\[\d+\])+", r"\1[...]", path) or "(top level)"
        stack.extend((x, p, depth + 1) for x, p in children)
    return None


def from_dict(data: dict, source: str = "config") -> Config:
    """Validate a complete config dict (see `load` for partial ones)."""
    deep = _too_deep(data)
    if deep is not None:
        raise ConfigError(f"{source}: {_key_path(deep, data)}: arrays and tables nested more "
                          f"than {MAX_DEPTH} levels deep")
    try:
        return msgspec.convert(data, Config)
    except msgspec.ValidationError as e:
        raise ConfigError(f"{source}: {_where(e, data)}") from None


def _read_toml(path: str) -> dict:
    """The TOML file `path` as a dict; any problem reading it is a ConfigError naming the
    file (and the line where known)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a config file") from None
    except PermissionError:
        raise ConfigError(f"{path}: cannot read the config file: permission denied") from None
    except (OSError, ValueError) as e:  # ValueError: a NUL in the path
        why = getattr(e, "strerror", None) or str(e)
        raise ConfigError(f"{path}: cannot read the config file: {why}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: over {MAX_FILE_BYTES >> 20} MiB, not a config file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - raw.rfind(b"\n", 0, e.start)
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 at line {line}, column {col} "
                          f"(byte 0x{raw[e.start]:02x})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply to "
                          f"read") from None
    except Exception as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"{path}: not valid TOML: {type(e).__name__}: {e}") from None


def load(path: str | None = None, overrides: dict | None = None) -> Config:
    """Read `path` (TOML) or the embedded default, apply `overrides` (nested dict), validate.

    The file is validated on its own first, so an override (`hftd run --ticks N`, say) never
    hides a bad value or table in it: `hftd check-config FILE` and `hftd run --config FILE`
    accept the same files."""
    data: dict = {}
    source = "embedded default config"
    if path:
        source = path
        data = _read_toml(path)
    # start from the defaults so a partial table (say [rings.ticks] with only capacity)
    # keeps the other keys' defaults; unknown keys still fail in from_dict
    merged = to_dict(Config())
    _merge(merged, data)
    cfg = from_dict(merged, source)
    if overrides:
        _merge(merged, overrides)
        cfg = from_dict(merged, f"{source} with the command-line options")
    return cfg


def check_runnable(cfg: Config, source: str | None = None) -> None:
    """What `hftd run` needs beyond a valid config, checked before it touches anything (and
    by `hftd check-config`, so that accepts exactly what `run` can run): every strategy class
    loads and is a Strategy, the runtime directory is (or can be made) a usable directory, and
    the instance's rings fit in /dev/shm. Raises ConfigError naming the key."""
    where = f"{source or 'embedded default config'}: "
    why = _runtime_dir_problem(cfg)
    if why:
        raise ConfigError(f"{where}runtime_dir{_runtime_dir_origin(cfg)}: {why}")
    why = _shm_problem(cfg)
    if why:
        raise ConfigError(f"{where}rings: {why}")
    why = _stats_problem(cfg)
    if why:
        raise ConfigError(f"{where}{why}")
    from .stages.strategy import load_strategy_class

    for s in cfg.strategies:
        key = f"strategies[{s.name}].class"
        try:
            load_strategy_class(s.class_)
        except ValueError as e:
            raise ConfigError(f"{where}{key}: {e}") from None
        except (Exception, SystemExit) as e:  # whatever importing user code raises
            raise ConfigError(f"{where}{key}: strategy class {_short(s.class_)} cannot be "
                              f"loaded: importing it raised {type(e).__name__}: {e}") from None


def _runtime_dir_problem(cfg: Config) -> str | None:
    """Why `hftd run` would refuse the runtime directory, or None: the supervisor's own rule
    (identity.check_runtime_dir: a directory of ours, no symlink, mode 0700, or a missing
    one whose parent exists), and that it can make the directory and its files there."""
    from . import identity

    rdir = cfg.resolved_runtime_dir()  # from the environment when runtime_dir is ""
    if "\0" in rdir:
        return f"{rdir!r} contains a NUL character"
    sock = os.path.join(rdir, f"{cfg.instance}.sock")  # control.socket_path
    n = len(os.fsencode(sock))
    if n > SOCKET_PATH_MAX:
        return (f"the control socket {sock} (runtime_dir/instance.sock) would be a {n}-byte "
                f"path, over the {SOCKET_PATH_MAX} bytes a Unix socket path may have (use a "
                f"shorter runtime_dir)")
    try:
        identity.check_runtime_dir(rdir, create=False)
    except identity.RuntimeDirError as e:
        return str(e)
    except OSError as e:
        return f"runtime directory {rdir} cannot be used: {e.strerror}"
    if not os.path.lexists(rdir):
        parent = os.path.dirname(os.path.abspath(rdir))
        if not os.access(parent, os.W_OK | os.X_OK):
            return (f"runtime directory {rdir} cannot be created: {parent} is not writable by "
                    f"this user")
        return None
    for suffix in (".json", ".sock"):  # the agent spec and the control socket
        f = os.path.join(rdir, cfg.instance + suffix)
        if os.path.isdir(f):
            return f"{f} (the instance's {suffix[1:]} file) is a directory"
    return None


def _shm_problem(cfg: Config) -> str | None:
    from . import topology

    try:
        st = os.statvfs(shm.SHM_DIR)
    except OSError:
        return None
    have = st.f_blocks * st.f_frsize
    specs = topology.rings(cfg)
    need = sum(ring_mod._layout(r.geometry.capacity, r.geometry.slot_size)["size"]
               for r in specs)
    if need > have:
        return (f"the instance's {len(specs)} rings need {need >> 20} MiB of shared memory, "
                f"more than the {have >> 20} MiB of {shm.SHM_DIR} (make rings.*.capacity or "
                f"slot_size smaller)")
    return None


def _stats_problem(cfg: Config) -> str | None:
    """Why an agent's stats block could not describe itself, or None: the executor keeps a
    position and its P&L per strategy and routed instrument, each a named value, and the
    names must fit the block's directory (stats.META_BYTES)."""
    from . import stats, topology
    from .stages import ROLES

    for a in topology.agents(cfg):
        schema = ROLES[a.role].schema(cfg)
        size = len(msgspec.json.encode(schema))
        if size > stats.META_BYTES:
            return (f"strategies, instruments: the {a.name} agent would keep "
                    f"{len(schema.values)} named values (per strategy and "
                    f"routed instrument), a {size}-byte directory, over the {stats.META_BYTES} "
                    f"bytes a stats block has: route fewer instruments to each strategy "
                    f"(strategies[NAME].instruments) or use fewer strategies")
    return None


def _merge(base: dict, extra: dict) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def to_dict(cfg: Config) -> dict:
    return msgspec.to_builtins(cfg)
