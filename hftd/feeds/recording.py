"""Session recording (`[producer] record = "DIR"`) and its replay (`feed = "recording"`).

The recorder: the producer appends every tick it publishes to a file under DIR, one write(2)
per published batch, *before* the batch's publish (the ring cursor store). A file is

    header: magic b"HFTDREC\\0", u32 version, u32 header length (a multiple of 8), then JSON
            {"instruments": [symbols, in the config's order = the recorded ids], "instance",
            "run", "record": the record layout}, padded with spaces
    records: RECORD (numpy structured dtype, 56 bytes, little-endian): seq (the producer's
            sequence), t_ingest (CLOCK_MONOTONIC ns, as the pipeline saw it), t_wall (the
            receive time on the wall clock, ns since the epoch), t_exchange, price (ticks),
            qty, instrument (int32), 4 bytes of padding

Files are named `ticks-YYYYMMDD-<run>.rec`: one per trading day and daemon run. The day is
the Taipei (+08:00) *trading* day of the receive time, which starts at 15:00 Taipei, when the
night session opens (the day session closed at 13:45): a night session and the day session
after it are one file, and a rotation never falls inside a session, as in TAIFEX's own daily
files (a Friday night session is labelled Saturday's date). `<run>` is the wall time (ns) of
the run's first producer start, so names sort in time order and a restarted producer (which
keeps the run from its stats block) writes to the same files and never to another run's.

Crash-only: the batch is written before its publish, so what was published is in the file.
A producer killed between the write and the publish has written a batch the ring does not
hold; its successor publishes those sequence numbers again (the checkpoint resumes the feed
at the batch's start), so at start it cuts the run's last file back to the records whose seq
is below the ring's write cursor (and to whole records, should a write have been cut short).
So each published tick is in the recording exactly once, in order.

The replay (`RecordingFeed`): path is a .rec file, a directory of them or a glob, in name
order; each file's instruments must be configured (checked by `check-config`, refused in one
line); a recorded id is mapped to the configured instrument of the same symbol. A file that
cannot be read, or whose header is not sound, is skipped with one line naming it; a file
whose end holds part of a record replays its whole records, with one line saying so.
`position` / `advance(n)` as in the taifex feed: a killed producer continues where it was.
"""

from __future__ import annotations

import datetime
from decimal import Decimal
import json
import os
import re
import struct

import numpy as np

from . import files_named
from ..log import get as get_log
from .replay import FileReplay

MAGIC = b"HFTDREC\0"
VERSION = 1
RECORD = np.dtype([("seq", "<i8"), ("t_ingest", "<i8"), ("t_wall", "<i8"), ("t_exchange", "<i8"),
                   ("price", "<i8"), ("qty", "<i8"), ("instrument", "<i4"), ("_pad", "<i4")])
_PRELUDE = struct.Struct("<8sII")
TAIPEI_OFFSET_NS = 8 * 3600 * 10**9
TRADING_DAY_SHIFT_NS = 9 * 3600 * 10**9  # 15:00 Taipei + 9 h = the next day's midnight
DAY_NS = 86400 * 10**9
_NAME_RE = re.compile(r"^ticks-(\d{8})-(\d+)\.rec$")
# the replay's counters (producer values `feed.<name>`), and where it is (gauges)
COUNTS = ("ticks", "unreadable_files", "truncated_files")
PROGRESS = ("file", "files", "file_ticks", "file_position", "progress_ppm", "last_exchange_ns",
            "pending")


class RecordingError(ValueError):
    """A path that names no recording, or a file that is not a sound recording."""


def trading_day(t_wall_ns: int) -> int:
    """The Taipei trading day (days since the epoch) of a wall-clock time: it starts at 15:00."""
    return (t_wall_ns + TAIPEI_OFFSET_NS + TRADING_DAY_SHIFT_NS) // DAY_NS


def file_name(day: int, run: int) -> str:
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    return f"ticks-{d:%Y%m%d}-{run}.rec"


def header_bytes(symbols, instance: str, run: int, tick_sizes=None) -> bytes:
    """`tick_sizes`: each instrument's tick size (a price is recorded in ticks: a replay under
    another grid would change every price; found by a hostile review)."""
    fields = {"instruments": list(symbols), "instance": instance, "run": run,
              "record": [[n, RECORD.fields[n][0].str] for n in RECORD.names]}
    if tick_sizes is not None:
        fields["tick_sizes"] = [str(t) for t in tick_sizes]
    body = json.dumps(fields).encode()
    length = -(-(_PRELUDE.size + len(body)) // 8) * 8
    return _PRELUDE.pack(MAGIC, VERSION, length) + body.ljust(length - _PRELUDE.size)


def read_header(path: str) -> tuple[dict, int, int]:
    """(header JSON, header length, file size) of the recording at `path`; RecordingError
    naming the file if it is not one."""
    try:
        with open(path, "rb") as f:
            pre = f.read(_PRELUDE.size)
            size = os.fstat(f.fileno()).st_size
            if len(pre) < _PRELUDE.size or pre[:8] != MAGIC:
                raise RecordingError(f"{path}: not an hftd recording (bad magic)")
            _, version, length = _PRELUDE.unpack(pre)
            if version != VERSION:
                raise RecordingError(f"{path}: recording version {version}, this hftd reads "
                                     f"{VERSION}")
            if length < _PRELUDE.size or length % 8 or length > 1 << 24 or length > size:
                raise RecordingError(f"{path}: bad header length {length}")
            head = json.loads(f.read(length - _PRELUDE.size))
            syms = head["instruments"]
            if not isinstance(syms, list) or not all(isinstance(s, str) for s in syms):
                raise ValueError("instruments")
            if [tuple(x) for x in head["record"]] != [(n, RECORD.fields[n][0].str)
                                                       for n in RECORD.names]:
                raise RecordingError(f"{path}: the record layout differs from this hftd's")
    except OSError as e:
        raise RecordingError(f"{path}: cannot read: {e.strerror or e}") from None
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, RecordingError):
            raise
        raise RecordingError(f"{path}: corrupt header ({type(e).__name__}: {e})") from None
    return head, length, size


def expand(path: str) -> list[str]:
    """The recordings `path` names, in name (= time) order: a file, a directory (its
    ticks-*.rec) or a glob."""
    found = files_named(path, _NAME_RE.match, "ticks-YYYYMMDD-RUN.rec file", RecordingError)
    return sorted(found, key=lambda f: (os.path.basename(f), f))


def check_instruments(path: str, symbols, tick_sizes=None) -> None:
    """RecordingError (one line) if a readable recording of `path` has an instrument the
    config does not, or records one on another tick size; unreadable files are left to the
    replay (skipped, with a message)."""
    known = set(symbols)
    for f in expand(path):
        try:
            head = read_header(f)[0]
        except RecordingError:
            continue
        missing = [s for s in head["instruments"] if s not in known]
        if missing:
            raise RecordingError(f"{f} records instruments {head['instruments']}; the config "
                                 f"has no {', '.join(map(repr, missing))} (configured: "
                                 f"{list(symbols)})")
        if tick_sizes is not None:
            check_tick_sizes(f, head, dict(zip(symbols, tick_sizes)))


def check_tick_sizes(path: str, head: dict, tick_size: dict) -> None:
    """RecordingError naming the file if it recorded an instrument on another tick size than
    `tick_size` (symbol -> the config's) says: its prices are in ticks of the recording's."""
    recorded = head.get("tick_sizes")
    if recorded is None:
        return  # (recorded without them: nothing to compare)
    for sym, t in zip(head["instruments"], recorded):
        if sym in tick_size and Decimal(str(tick_size[sym])) != Decimal(t):
            raise RecordingError(f"{path} recorded {sym} on a tick size of {t}; the config "
                                 f"has {tick_size[sym]}: its prices would be read on another "
                                 f"grid")


# --- recording -------------------------------------------------------------------------
class Recorder:
    """Appends published ticks to DIR/ticks-<day>-<run>.rec (see the module docstring)."""

    def __init__(self, directory: str, symbols, instance: str, run: int, next_seq: int,
                 resumed: bool, tick_sizes=None):
        self.dir = directory
        os.makedirs(directory, mode=0o750, exist_ok=True)
        self.symbols = list(symbols)
        self.instance = instance
        self.run = run
        self.header = header_bytes(self.symbols, instance, run, tick_sizes)
        self.fd = -1
        self.day = -1
        self.files = 0  # files this process opened
        self.cut = 0  # records cut at a resume (written, never published)
        if resumed:
            self._cut_back(next_seq)

    def _run_files(self) -> list[str]:
        tail = f"-{self.run}.rec"
        return sorted(f for f in os.listdir(self.dir) if _NAME_RE.match(f) and f.endswith(tail))

    def _cut_back(self, next_seq: int) -> None:
        """Drop what the killed predecessor wrote and did not publish: records of the run's
        last file with seq >= the ring's write cursor, and a partial record."""
        files = self._run_files()
        if not files:
            return
        path = os.path.join(self.dir, files[-1])
        with open(path, "rb") as f:
            start = f.read(len(self.header) + 1)
        if len(start) <= len(self.header) and self.header.startswith(start):
            os.truncate(path, 0)  # killed while writing the header: _open writes it again
            return
        _, hlen, size = read_header(path)
        n = (size - hlen) // RECORD.itemsize
        keep = n
        if n:
            seqs = np.memmap(path, dtype=RECORD, mode="r", offset=hlen, shape=(n,))["seq"]
            keep = int(np.searchsorted(np.asarray(seqs), next_seq))  # seqs rise in a run
            del seqs
        self.cut = n - keep
        end = hlen + keep * RECORD.itemsize
        if end != size:
            os.truncate(path, end)

    def _open(self, day: int) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        path = os.path.join(self.dir, file_name(day, self.run))
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        if os.fstat(fd).st_size == 0:
            os.write(fd, self.header)
        self.fd, self.day = fd, day
        self.files += 1

    def write(self, seq0: int, inst, price, qty, t_exchange, t_ingest: int, t_wall: int) -> None:
        """The batch of ticks seq0, seq0 + 1, ... (columns: arrays or lists), one write."""
        n = len(inst)
        if not n:
            return
        day = (t_wall + TAIPEI_OFFSET_NS + TRADING_DAY_SHIFT_NS) // DAY_NS
        if day != self.day:
            self._open(day)
        r = np.empty(n, dtype=RECORD)
        r["seq"] = np.arange(seq0, seq0 + n)
        r["t_ingest"] = t_ingest
        r["t_wall"] = t_wall
        r["t_exchange"] = t_exchange
        r["price"] = price
        r["qty"] = qty
        r["instrument"] = inst
        r["_pad"] = 0
        buf = memoryview(r).cast("B")
        while buf:  # (a regular file takes it in one write)
            buf = buf[os.write(self.fd, buf):]

    def write_rows(self, rows, t_wall: int) -> None:
        """Ticks as (seq, t_ingest, instrument, price, qty, t_exchange) tuples, one write."""
        if not rows:
            return
        a = np.array(rows, dtype=np.int64)
        day = (t_wall + TAIPEI_OFFSET_NS + TRADING_DAY_SHIFT_NS) // DAY_NS
        if day != self.day:
            self._open(day)
        r = np.zeros(len(rows), dtype=RECORD)
        for k, name in enumerate(("seq", "t_ingest", "instrument", "price", "qty", "t_exchange")):
            r[name] = a[:, k]
        r["t_wall"] = t_wall
        buf = memoryview(r).cast("B")
        while buf:
            buf = buf[os.write(self.fd, buf):]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def load(path: str):
    """(records, header, message) of one recording: its whole records (a partial one at the
    end is left out, and `message` says so; "" otherwise). RecordingError if unreadable."""
    head, hlen, size = read_header(path)
    n, extra = divmod(size - hlen, RECORD.itemsize)
    with open(path, "rb") as f:
        f.seek(hlen)
        raw = f.read(n * RECORD.itemsize)
    n = len(raw) // RECORD.itemsize  # (the file may have shrunk meanwhile)
    rec = np.frombuffer(raw[: n * RECORD.itemsize], dtype=RECORD)
    msg = ""
    if extra:
        msg = (f"{path}: truncated: the last {extra} bytes are part of a record and are "
               f"ignored; its {n:,} whole records replay")
    return rec, head, msg


def _stderr(msg: str) -> None:
    """Where a feed made without `log` (a tool, a test) says what went wrong."""
    get_log("hftd").warning(msg)


def _nothing() -> None:
    pass


# --- replaying --------------------------------------------------------------------------
class RecordingFeed(FileReplay):
    """The feed over the recordings of `cfg.path` for the configured `instruments`: a unit of
    the replay is one recording, paced by its receive time (hftd.feeds.replay)."""

    def __init__(self, cfg, instruments, log=_stderr, beat=_nothing, skip_run: int = 0):
        # (skip_run: the run this daemon is recording, if it records: never its own files)
        files = [f for f in expand(cfg.path)
                 if not (skip_run and os.path.basename(f).endswith(f"-{skip_run}.rec"))]
        if not files:
            raise RecordingError(f"{cfg.path}: no recording other than this run's own")
        super().__init__(files, cfg.speed)
        self.symbols = [i.symbol for i in instruments]
        self.tick_size = {i.symbol: i.tick_size for i in instruments}
        self.log = log
        self.beat = beat
        self.counts = dict.fromkeys(COUNTS, 0)

    def _next_unit(self) -> bool:
        self._end_unit()
        while self.file_index + 1 < len(self.files):
            self.file_index += 1
            path = self.files[self.file_index]
            try:
                rec, head, msg = load(path)
                ids = {s: k for k, s in enumerate(self.symbols)}
                check_tick_sizes(path, head, self.tick_size)
                missing = [s for s in head["instruments"] if s not in ids]
                if missing:
                    raise RecordingError(f"{path}: records instruments {head['instruments']}; "
                                         f"the config has no {', '.join(map(repr, missing))}")
                recorded = rec["instrument"]
                if len(recorded) and (recorded.min() < 0
                                      or recorded.max() >= len(head["instruments"])):
                    raise RecordingError(f"{path}: corrupt records (an instrument id outside "
                                         f"the header's {len(head['instruments'])})")
            except RecordingError as e:
                self.counts["unreadable_files"] += 1
                self.log(f"recording feed: {e}; the file is skipped")
                continue
            self.beat()
            if msg:
                self.counts["truncated_files"] += 1
                self.log(f"recording feed: {msg}")
            remap = np.array([ids[s] for s in head["instruments"]] or [0], dtype=np.int32)
            self._begin((remap[rec["instrument"]], rec["price"].copy(), rec["qty"].copy(),
                         rec["t_exchange"].copy()), rec["t_wall"].copy())
            self.counts["ticks"] += self.n
            return True
        return False

    def instrument_figures(self) -> dict:
        return {}
