"""TAIFEX daily tick files (`feed = "taifex"`): replay the exchange's published trades.

TAIFEX publishes every futures trade of a trading day as `Daily_YYYY_MM_DD.zip` (one CSV
inside) on its "previous 30 trading days" download page. The CSV, as published: cp950 (Big5)
text, CRLF line ends, the header row

    成交日期,商品代號,到期月份(週別),成交時間,成交價格,成交數量(B+S),近月價格,遠月價格,開盤集合競價

and one row per trade: date YYYYMMDD, product code and expiry padded with spaces (`TX     `,
`202612     `), time HHMMSS (a leading zero may be missing), price (an integer, or a decimal
for TE and TF), volume counting both sides (lots = volume / 2), the near/far month prices
(`-` except on a spread row, whose expiry reads `202612/202701`), and `*` in the last column
for a trade of the opening auction. A file holds one trading day: the night session
(15:00-05:00, its rows after midnight carry the next calendar date) and the day session.

How a file is read (once, when the replay reaches it; the hot path then only slices arrays):
the bytes are decoded once, split into lines and fields, and each row is classified, in this
order: not 8 or 9 fields -> rejected `bad_row`; a product no instrument trades -> `unconfigured`;
a spread (`/` in the expiry) -> `spread`; another expiry than the instrument's ->
`unconfigured`; then the configured rows' columns are converted with numpy (a row that does not
convert is found element by element only when a column has one) and checked: `bad_date`,
`bad_time`, `bad_price` (not a number, not finite, <= 0), `off_grid` (not a multiple of the
instrument's tick_size), `bad_volume` (not a positive even integer). What remains becomes ticks,
sorted by exchange time (stable: rows of one second keep the file's order), so `t_exchange`
(ns since the epoch; the file's times are Taipei time, +08:00) never goes back, across midnight
included. A file with rejected rows gets one message naming the file, the first bad line and
its field; its other rows replay.

An instrument's expiry "" means the file's front month: the earliest plain YYYYMM month of its
product among the file's rows (not a spread, not a weekly `YYYYMMWn`), chosen per file, so a
replay of several days rolls with the market.

`position` is the number of ticks emitted; `advance(n)` re-reads the files up to tick `n`, so
a restarted producer continues where the last published batch left it, and every count below
is a function of the position (the files opened so far and the position in the current one).
"""

from __future__ import annotations

import datetime
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from . import files_named
from ..log import get as get_log
from .replay import FileReplay

HEADER = "成交日期,商品代號,到期月份(週別),成交時間,成交價格,成交數量(B+S),近月價格,遠月價格,開盤集合競價"
FIELD_NAMES = ("成交日期 (date)", "商品代號 (product)", "到期月份(週別) (expiry)",
               "成交時間 (time)", "成交價格 (price)", "成交數量(B+S) (volume)",
               "近月價格 (near month price)", "遠月價格 (far month price)",
               "開盤集合競價 (opening auction)")
REJECT_REASONS = ("bad_row", "bad_date", "bad_time", "bad_price", "off_grid", "bad_volume")
_WHY = {"bad_row": "the row does not have 8 or 9 fields", "bad_date": "is not a date YYYYMMDD",
        "bad_time": "is not a time HHMMSS", "bad_price": "is not a positive price",
        "off_grid": "is not on the instrument's tick grid",
        "bad_volume": "is not a positive even volume (both sides)"}
_FIELD_OF = {"bad_row": None, "bad_date": 0, "bad_time": 3, "bad_price": 4, "off_grid": 4,
             "bad_volume": 5}
TAIPEI_OFFSET_S = 8 * 3600
_DAY_RE = re.compile(r"Daily_(\d{4})_(\d{2})_(\d{2})", re.I)
_MONTH_RE = re.compile(r"[0-9]{6}")
# the counters of the files opened so far, in this order (producer values `feed.<name>`)
COUNTS = ("rows_read", "ticks", "spread_skipped", "unconfigured_skipped", "rejected",
          *(f"rejected.{r}" for r in REJECT_REASONS), "auction_ticks", "unreadable_files")
# where the replay is (producer gauges `feed.<name>`, from `progress()`)
PROGRESS = ("file", "files", "file_ticks", "file_position", "progress_ppm", "last_exchange_ns",
            "pending")
# per instrument (producer values `feed.<name>.<symbol>`, from `instrument_figures()`)
PER_INSTRUMENT = ("ticks", "lots", "first", "last")


class TaifexError(ValueError):
    """A path that names no file, or a file that cannot be read at all (not a zip, ...)."""


def _date_key(path: str):
    m = _DAY_RE.search(os.path.basename(path))
    return (m.group(1), m.group(2), m.group(3)) if m else None


def expand(path: str) -> list[str]:
    """The files `path` names, in date order: a file (.csv or .zip), a directory (its
    Daily_*.csv / Daily_*.zip files) or a glob. Files are ordered by the Daily_YYYY_MM_DD date
    in their names (then by name); two files of one day (a zip and its unzipped csv) are an
    error, since that day would replay twice."""
    found = files_named(path, lambda f: f.lower().endswith((".csv", ".zip")) and _date_key(f),
                        "Daily_YYYY_MM_DD.csv or .zip file", TaifexError)
    found.sort(key=lambda f: (_date_key(f) or ("9999",), os.path.basename(f)))
    seen: dict = {}
    for f in found:
        k = _date_key(f)
        if k is not None and k in seen:
            raise TaifexError(f"{seen[k]} and {f} are the same day: keep one of them")
        seen[k] = f
    return found


def read_csvs(path: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each CSV in the file `path` (a zip's .csv members in name order,
    named `path:member`)."""
    try:
        if path.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                names = sorted(n for n in z.namelist() if n.lower().endswith(".csv"))
                if not names:
                    raise TaifexError(f"{path}: the zip holds no .csv file")
                return [(f"{path}:{n}", z.read(n)) for n in names]
        with open(path, "rb") as f:
            return [(path, f.read())]
    except zipfile.BadZipFile as e:
        raise TaifexError(f"{path}: not a zip file ({e})") from None
    except OSError as e:
        raise TaifexError(f"{path}: cannot read: {e.strerror or e}") from None
    except (zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
        # a damaged zip member, an unsupported compression, an encrypted member (found by
        # a hostile review: each crashed the producer for ever)
        raise TaifexError(f"{path}: a damaged or unreadable zip ({type(e).__name__}: {e})") \
            from None


@dataclass
class Contract:
    """How the rows of one instrument are recognised and priced."""

    inst: int
    product: str
    expiry: str  # "" = the file's front month
    scale: int  # 10**decimals of the tick size
    units: int  # the tick size in 1/scale


def contracts(instruments) -> list[Contract]:
    out = []
    for i, ins in enumerate(instruments):
        code = getattr(ins, "taifex", "")
        if not code:
            continue
        tick = Decimal(ins.tick_size)
        decimals = max(0, -tick.as_tuple().exponent)
        scale = 10 ** decimals
        out.append(Contract(i, code, getattr(ins, "expiry", ""), scale, int(tick * scale)))
    return out


@dataclass
class Day:
    """One CSV, parsed: its ticks sorted by exchange time, and what its rows were."""

    name: str
    inst: np.ndarray
    price: np.ndarray
    qty: np.ndarray
    t: np.ndarray
    counts: dict
    message: str = ""
    months: dict = field(default_factory=dict)  # product -> the expiry replayed ("" rows: front)
    _by_inst: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t)

    def per_instrument(self, i: int):
        """(positions of instrument i's ticks, their cumulative lots), made once."""
        v = self._by_inst.get(i)
        if v is None:
            idx = np.flatnonzero(self.inst == i)
            v = self._by_inst[i] = (idx, np.cumsum(self.qty[idx]))
        return v


def _windows(a: np.ndarray, s: np.ndarray, e: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(bytes of each field [s, e) in a (n, w) uint8 array, padded with spaces; fields longer
    than w)."""
    win = np.empty((len(s), w), dtype=np.uint8)
    top = len(a) - 1
    for j in range(w):
        at = s + j
        win[:, j] = np.where(at < e, a[np.minimum(at, top)], 32)
    return win, (e - s) > w


def _numbers(a: np.ndarray, s: np.ndarray, e: np.ndarray, w: int):
    """Unsigned decimal numbers in the fields [s, e), exactly, one column of bytes at a time:
    (all their digits as an int, digits after the point, ok). Spaces may pad either end;
    in between only digits and at most one point; at most `w` bytes."""
    n = len(s)
    value = np.zeros(n, dtype=np.int64)
    decimals = np.zeros(n, dtype=np.int64)
    ok = (e - s <= w) & (e > s)
    phase = np.zeros(n, dtype=np.int8)  # 0 leading spaces, 1 the number, 2 trailing spaces
    dots = np.zeros(n, dtype=np.int8)
    digits = np.zeros(n, dtype=np.int8)
    top = len(a) - 1
    for j in range(w):
        at = s + j
        ch = np.where(at < e, a[np.minimum(at, top)], 32)
        digit = (ch >= 48) & (ch <= 57)
        dot = ch == 46
        space = ch == 32
        ok &= digit | dot | space
        ok &= ~((phase == 2) & ~space)
        phase = np.where(space, np.where(phase == 1, 2, phase), 1).astype(np.int8)
        dots += dot
        decimals += digit & (dots > 0)
        digits += digit
        value = np.where(digit, value * 10 + (ch.astype(np.int64) - 48), value)
    ok &= (dots <= 1) & (digits > 0) & (digits <= 18)
    return value, decimals, ok


def _day_seconds(dates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seconds since the epoch of each YYYYMMDD date's midnight in Taipei, ok mask)."""
    uniq, inv = np.unique(dates, return_inverse=True)
    secs = np.zeros(len(uniq), dtype=np.int64)
    good = np.zeros(len(uniq), dtype=bool)
    for k, d in enumerate(uniq.tolist()):
        try:
            day = datetime.date(d // 10000, d // 100 % 100, d % 100)
        except ValueError:
            continue
        if day.year < 1990:
            continue
        secs[k] = (day - datetime.date(1970, 1, 1)).days * 86400 - TAIPEI_OFFSET_S
        good[k] = True
    return secs[inv], good[inv]


def _nothing() -> None:
    pass


def parse(name: str, raw: bytes, cons: list[Contract], beat=_nothing) -> Day:
    """Parse one day's CSV bytes for the contracts `cons` (see the module docstring).

    Column-wise with numpy on the bytes: cp950 is ASCII for the rows' digits, commas and
    line ends (a Big5 trail byte is >= 0x40), so only the header line is decoded."""
    nl = raw.find(b"\n")
    head = raw[: nl if nl >= 0 else len(raw)].decode("cp950", errors="replace")
    first_line = 1
    if head.lstrip("\ufeff").startswith("成交日期"):
        body_at = nl + 1 if nl >= 0 else len(raw)
        first_line = 2
    else:
        body_at = 0
    a = np.frombuffer(raw, dtype=np.uint8)[body_at:]
    ends = np.flatnonzero(a == 10)
    if len(a) and (not len(ends) or ends[-1] != len(a) - 1):
        ends = np.append(ends, len(a))  # a last line without its line end
    n_lines = len(ends)
    starts = np.empty(n_lines, dtype=np.int64)
    if n_lines:
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
    has_cr = np.zeros(n_lines, dtype=bool)
    inner = ends > starts
    has_cr[inner] = a[ends[inner] - 1] == 13
    e_line = ends - has_cr
    commas = np.flatnonzero(a == 44)
    ncomma = np.bincount(np.searchsorted(ends, commas), minlength=n_lines)[:n_lines] \
        if len(commas) else np.zeros(n_lines, dtype=np.int64)
    counts = dict.fromkeys(COUNTS, 0)
    counts["rows_read"] = n_lines
    shaped = (ncomma == 7) | (ncomma == 8)
    rejected_at: list[tuple[int, str, str]] = []
    bad_shape = np.flatnonzero(~shaped)
    counts["rejected.bad_row"] = len(bad_shape)
    if len(bad_shape):
        k = int(bad_shape[0])
        rejected_at.append((k + first_line, "bad_row", ""))
    rows = np.flatnonzero(shaped)
    fc = np.searchsorted(commas, starts[rows]) if len(commas) else np.zeros(0, np.int64)
    top = max(len(commas) - 1, 0)
    c = [commas[np.minimum(fc + j, top)] if len(commas) else fc for j in range(8)]
    s_of = [starts[rows]] + [c[j] + 1 for j in range(8)]
    e_last = e_line[rows]
    e_of = c[:7] + [np.where(ncomma[rows] == 8, c[7], e_last), e_last]
    s_of[8] = np.where(ncomma[rows] == 8, s_of[8], e_last)
    beat()
    # products and expiries of every well-shaped row
    pw, _ = _windows(a, s_of[1], e_of[1], 8)
    prod = np.strings.strip(pw.view("S8").ravel())
    ew, _ = _windows(a, s_of[2], e_of[2], 16)
    expiry = np.strings.strip(ew.view("S16").ravel())
    wanted = {c.product.encode() for c in cons}
    configured = np.isin(prod, np.array(sorted(wanted), dtype="S8"))
    spread = configured & (np.strings.find(expiry, b"/") >= 0)
    counts["spread_skipped"] = int(spread.sum())
    cand = configured & ~spread
    # which expiry each configured contract replays in this file: months as ints (a weekly
    # or otherwise odd expiry is -1: never a front month, and no instrument's)
    ci = np.flatnonzero(cand)
    mv, mdec, mok = _numbers(a, s_of[2][ci], e_of[2][ci], 16)
    month = np.full(len(rows), -1, dtype=np.int64)
    month[ci] = np.where(mok & (mdec == 0) & (mv >= 100001) & (mv <= 999912)
                         & (mv % 100 >= 1) & (mv % 100 <= 12), mv, -1)
    codes = sorted({con.product for con in cons})
    pcode = np.full(len(rows), -1, dtype=np.int64)
    for k, p in enumerate(codes):
        pcode[ci[prod[ci] == p.encode()]] = k
    key = np.where(month >= 0, pcode * 1_000_000 + month, -1)
    present = np.unique(key[ci]) if len(ci) else np.zeros(0, np.int64)
    chosen: dict[str, str] = {}
    route: dict[int, Contract] = {}
    for con in cons:  # an explicit expiry wins over a front month that is the same contract
        if con.expiry:
            route[codes.index(con.product) * 1_000_000 + int(con.expiry)] = con
    for con in cons:
        k = codes.index(con.product)
        ms = present[(present >= 0) & (present // 1_000_000 == k)]
        if not con.expiry and len(ms):
            route.setdefault(int(ms[0]), con)
            chosen[con.product] = str(int(ms[0]) % 1_000_000)
    inst_of = np.full(len(rows), -1, dtype=np.int32)
    slot = np.zeros(len(rows), dtype=np.int64)
    for k, (kk, con) in enumerate(route.items()):
        m = key == kk
        inst_of[m] = con.inst
        slot[m] = k
    take = inst_of >= 0
    counts["unconfigured_skipped"] = int(len(rows) - spread.sum() - take.sum())
    sel = np.flatnonzero(take)
    line_no = rows[sel] + first_line
    inst = inst_of[sel]
    cons_r = list(route.values())
    scale = np.array([x.scale for x in cons_r] or [1], dtype=np.int64)[slot[sel]]
    units = np.array([x.units for x in cons_r] or [1], dtype=np.int64)[slot[sel]]

    def number(j: int, w: int):
        beat()
        return _numbers(a, s_of[j][sel], e_of[j][sel], w)

    date, dd, ok_date = number(0, 10)
    ok_date &= dd == 0
    hms, td, ok_time = number(3, 8)
    price, pdec, ok_price = number(4, 16)
    vol, vd, ok_vol = number(5, 12)
    aw, _ = _windows(a, s_of[8][sel], e_of[8][sel], 4)
    auction = (aw == 42).any(1)
    day_s, ok_day = _day_seconds(np.where(ok_date, date, 0))
    ok_date &= ok_day
    hh, mm, ss = hms // 10000, hms // 100 % 100, hms % 100
    ok_time &= (td == 0) & (hh <= 23) & (mm <= 59) & (ss <= 59)
    ok_price &= price > 0
    # the price in 1/scale of a point, exactly; on the grid if a whole multiple of the tick
    dec_of_scale = np.round(np.log10(scale)).astype(np.int64)
    extra = pdec - dec_of_scale  # > 0: more decimals than the tick has
    up = 10 ** np.clip(-extra, 0, 18)
    down = 10 ** np.clip(extra, 0, 18)
    scaled = np.where(extra > 0, price // down, price * up)
    on_grid = ((extra <= 0) | (price % down == 0)) & (scaled % units == 0)
    ok_vol &= (vd == 0) & (vol > 0) & (vol % 2 == 0)
    fields = {"bad_date": 0, "bad_time": 3, "bad_price": 4, "off_grid": 4, "bad_volume": 5}
    bad = {"bad_date": ~ok_date, "bad_time": ok_date & ~ok_time,
           "bad_price": ok_date & ok_time & ~ok_price}
    bad["off_grid"] = ok_date & ok_time & ok_price & ~on_grid
    bad["bad_volume"] = ok_date & ok_time & ok_price & on_grid & ~ok_vol
    good = ok_date & ok_time & ok_price & on_grid & ok_vol
    for reason, mask in bad.items():
        m = int(mask.sum())
        counts[f"rejected.{reason}"] = m
        if m:
            k = int(np.flatnonzero(mask)[0])
            j = fields[reason]
            r = sel[k]
            text = bytes(a[s_of[j][r]: e_of[j][r]]).decode("cp950", "replace")
            rejected_at.append((int(line_no[k]), reason, text))
    counts["rejected"] = sum(counts[f"rejected.{r}"] for r in REJECT_REASONS)
    t = (day_s + hh * 3600 + mm * 60 + ss)[good] * 1_000_000_000
    order = np.argsort(t, kind="stable")
    day = Day(name, inst[good][order], (scaled // units)[good][order], (vol // 2)[good][order],
              t[order], counts, months=chosen)
    counts["ticks"] = len(day)
    counts["auction_ticks"] = int(auction[good].sum())
    if rejected_at:
        ln, reason, value = min(rejected_at)
        fld = _FIELD_OF[reason]
        where = f"line {ln}" + (f", field {fld + 1} {FIELD_NAMES[fld]}" if fld is not None else "")
        what = _WHY[reason] if fld is None else f"{value.strip()!r} {_WHY[reason]}"
        detail = ", ".join(f"{r} {counts['rejected.' + r]}" for r in REJECT_REASONS
                           if counts["rejected." + r])
        day.message = (f"{name}: {where}: {what}; {counts['rejected']} rows of this file "
                       f"rejected ({detail}), the rest replays")
    return day


def _stderr(msg: str) -> None:
    """Where a feed made without `log` (a tool, a test) says what went wrong."""
    get_log("hftd").warning(msg)


class TaifexFeed(FileReplay):
    """The feed over the files of `cfg.path` for `instruments` (those with a `taifex` code):
    a unit of the replay is one CSV's trading day (hftd.feeds.replay)."""

    def __init__(self, cfg, instruments, log=_stderr, beat=_nothing):
        super().__init__(expand(cfg.path), cfg.speed)
        self.cons = contracts(instruments)
        if not self.cons:
            raise TaifexError("no instrument has a taifex product code")
        self.log = log
        self.beat = beat  # called while a file is read (a long parse is not a hung agent)
        self.n_instruments = len(instruments)
        self.ids = [c.inst for c in self.cons]
        self._queue: list[Day] = []  # days of the current file not begun yet
        self.cur: Day | None = None  # the day being replayed
        self.counts = dict.fromkeys(COUNTS, 0)  # of the CSVs opened so far
        n = self.n_instruments
        # per-instrument totals of the CSVs finished, and the first price ever (ticks)
        self.done_ticks = np.zeros(n, dtype=np.int64)
        self.done_lots = np.zeros(n, dtype=np.int64)
        self.first = np.zeros(n, dtype=np.int64)
        self.last = np.zeros(n, dtype=np.int64)

    # --- opening files ----------------------------------------------------------------
    def _next_unit(self) -> bool:
        """Finish the current CSV and begin the next one (opening the next file when the
        current one has no CSV left). False when there is none."""
        if self.cur is not None:
            self._fold(self.cur, len(self.cur))
        self.cur = None
        self._end_unit()
        while not self._queue:
            if self.file_index + 1 >= len(self.files):
                return False
            self.file_index += 1
            try:
                csvs = read_csvs(self.files[self.file_index])
            except TaifexError as e:  # (it was there when the run started)
                self.counts["unreadable_files"] += 1
                self.log(f"taifex feed: {e}; the file is skipped")
                continue
            for name, raw in csvs:
                self._queue.append(parse(name, raw, self.cons, self.beat))
                self.beat()
        day = self._queue.pop(0)
        for k in COUNTS:
            self.counts[k] += day.counts[k]
        if day.message:
            self.log(f"taifex feed: {day.message}")
        self.cur = day
        self._begin((day.inst, day.price, day.qty, day.t), day.t)  # paced by exchange time
        return True

    def _more_units(self) -> bool:
        return bool(self._queue) or super()._more_units()

    def _fold(self, day: Day, upto: int) -> None:
        """Add the per-instrument figures of `day`'s first `upto` ticks to the totals."""
        for i in self.ids:
            idx, cum = day.per_instrument(i)
            c = int(np.searchsorted(idx, upto))
            if c:
                if not self.done_ticks[i] and not self.first[i]:
                    self.first[i] = day.price[idx[0]]
                self.done_ticks[i] += c
                self.done_lots[i] += int(cum[c - 1])
                self.last[i] = day.price[idx[c - 1]]

    # --- what the producer shows --------------------------------------------------------
    def instrument_figures(self) -> dict[int, tuple[int, int, int, int]]:
        """instrument id -> (ticks, lots, first price, last price) of what was emitted."""
        out = {}
        cur, at = self.cur, self.at
        for i in self.ids:
            ticks, lots = int(self.done_ticks[i]), int(self.done_lots[i])
            first, last = int(self.first[i]), int(self.last[i])
            if cur is not None and at:
                idx, cum = cur.per_instrument(i)
                c = int(np.searchsorted(idx, at))
                if c:
                    if not ticks:
                        first = int(cur.price[idx[0]])
                    ticks += c
                    lots += int(cum[c - 1])
                    last = int(cur.price[idx[c - 1]])
            out[i] = (ticks, lots, first, last)
        return out

    def pending(self) -> int:
        """Ticks of the CSVs opened so far not emitted yet."""
        return super().pending() + sum(len(d) for d in self._queue)
