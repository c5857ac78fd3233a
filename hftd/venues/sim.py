"""The simulated venue: `hftd.trading.fillmodel.SimVenue`, driven by the executor's market
data (the `ticks.executor` ring). Orders fill against the market's own later trades after
the configured latency (`executor.sim.latency_us`): market orders at the next trade, limit
orders rest and fill when a trade reaches their price (partially when its quantity is
smaller), IOC/FOK against their first trade (or expire after `executor.sim.ioc_window_us`).
Known optimism: no queue position and no depth (see the fill model's docstring).

The venue's log (`executor.sim.log`, on by default): the simulated venue lives in the
executor's process, so a kill -9 of the executor would take the venue's memory with it. A
remote venue keeps its orders and its executions whatever happens to us; so that the
simulation behaves like one, `LoggedSimVenue` records every request it receives and every
answer it gives in `<state dir>/venue.log` before the executor sees the answer. A restarted
executor reads it back (`read_log`): answers it had not applied are applied (the venue's
"resend"), answers whose reports had not reached the strategy are reported, and cancels and
replaces the dead venue had received but not yet carried out are carried out. It is also the
venue's audit trail: `python -m hftd.venues.sim <file>` prints it, one line a record:

    <seq> N <owner> <cid> <inst> <side> <qty> <ord_type> <tif> <price>       a new order
    <seq> R <owner> <cid> <inst> <side> <qty> <filled> <ord_type> <tif> <price> <acked>
                                       an order taken back after a restart (not a new one)
    <seq> C <owner> <cid>                                                    a cancel
    <seq> P <owner> <cid> <qty> <price>                                      a replace
    <seq> E <owner> <cid> <kind> <qty> <price> <reason>                      an answer

(owner: the strategy's index; side +1 buy, -1 sell; kind: `ReportKind`; qty and price of an
answer as in the fill model). `seq` is the record's number, 1, 2, 3, ..., across restarts of
the executor and of the daemon: the log goes with the state store beside it, and both are
checked together at start (`check_log`: ours, 0600, whole records numbered in order, and at
least as long as the store says answers were applied; else one line naming it, exit 2). A
start reads only what it needs of it (`read_log(since=...)`): the records after the ones
every strategy was told of, and the earlier records of the orders those name or that still
work; a long log costs a scan of two of its columns.

Why a mapped file of fixed records and not text lines: a record is a few memory stores into a
MAP_SHARED mapping (in the page cache the instant it is made, so a SIGKILL loses nothing
written), ~0.5 us, where a `write` per line cost ~5 us on this machine's ext4 (measured): the
N record is on the order's path. A record is RECORD_WORDS int64 words, its sequence number
written last (0: the record is not there: a kill mid-record leaves it unwritten). Only the
chunk being written is mapped (CHUNK records, 128 KiB), so a long run's log costs no memory
(with 1 MiB chunks, the soak saw the executor's PSS climb by up to 1 MiB as each one filled).
"""

from __future__ import annotations

import errno
import mmap
import os
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..events import ReportKind
from ..trading.fillmodel import SimVenue
from ..trading.store import StateError, check_private_file

__all__ = ["SimVenue", "LoggedSimVenue", "read_log", "records", "check_log", "log_path",
           "VenueLog"]

LOG_NAME = "venue.log"
_E_KINDS = frozenset(int(k) for k in ReportKind)


def log_path(state_dir: str) -> str:
    """The venue log of the instance whose (private) state directory is `state_dir`."""
    return os.path.join(state_dir, LOG_NAME)


@dataclass
class LoggedOrder:
    """An order as the venue log tells it."""

    owner: int
    cid: int
    inst: int
    side: int
    qty: int
    ord_type: int
    tif: int
    price: int
    filled: int = 0
    ended: bool = False
    requests: list = field(default_factory=list)  # C/P lines not answered yet: (type, qty, price)
    last_request_seq: int = 0  # the seq of its last C or P line


@dataclass
class VenueLog:
    """What `read_log` found: the last sequence number, the answers in order as
    (seq, owner, cid, kind, qty, price, reason, inst, side, filled, leaves) (the last four:
    the order's instrument and side, -1 and 0 if the log does not have the order, and its
    filled and working quantity after the answer), and the orders by client id."""

    last_seq: int = 0
    events: list = field(default_factory=list)
    orders: dict = field(default_factory=dict)
    new_orders: int = 0  # N records


N, R, C, P, E = 1, 2, 3, 4, 5  # record types
_LETTER = {N: "N", R: "R", C: "C", P: "P", E: "E"}
_FIELDS = {N: 8, R: 10, C: 2, P: 4, E: 6}  # values after the type (owner, cid, ...)
RECORD_WORDS = 16
RECORD_BYTES = RECORD_WORDS * 8
CHUNK = 1024  # records mapped at a time (128 KiB: the resident part of the log, at most)


def _open(path: str):
    """The log's used records, checked (see `check_log`), as an int64 array of shape
    (n, RECORD_WORDS) over a read-only mapping, and the mapping; (None, None) if missing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    except OSError as e:
        why = "is a symlink" if e.errno == errno.ELOOP else e.strerror
        raise StateError(f"venue log {path} {why}; move it away") from None
    try:
        st = check_private_file(fd, "venue log", path)
        if st.st_size % RECORD_BYTES:
            raise StateError(f"venue log {path} is {st.st_size} bytes, not a whole number of "
                             f"{RECORD_BYTES}-byte records: cut short or not a venue log; move "
                             f"it away (with the state store beside it, to start over)")
        if not st.st_size:
            return np.zeros((0, RECORD_WORDS), np.int64), None
        mm = mmap.mmap(fd, st.st_size, mmap.MAP_SHARED, mmap.PROT_READ)
    finally:
        os.close(fd)
    rec = np.frombuffer(mm, dtype=np.int64).reshape(-1, RECORD_WORDS)
    n = _used(rec)
    # the venue extends its log with zeros: anything else is not its own, but the record a
    # kill cut short (its sequence number is written last): not written, and written over
    if rec[n:].any() and not _cut_short(rec, n):
        k = n + int(np.flatnonzero(rec[n:].any(axis=1))[0])
        del rec
        mm.close()
        raise StateError(f"venue log {path}: record {k + 1}, after the log's end (record {n}), "
                         f"is not empty: corrupt, or not a venue log; move it away (with the "
                         f"state store beside it, to start over)")
    rec = rec[:n]
    bad = np.flatnonzero((rec[:, 0] != np.arange(1, n + 1)) | (rec[:, 1] < N) | (rec[:, 1] > E))
    if bad.size:
        k = int(bad[0])
        raise StateError(f"venue log {path}: record {k + 1} has sequence {int(rec[k, 0])} and "
                         f"type {int(rec[k, 1])}: corrupt, or not a venue log; move it away "
                         f"(with the state store beside it, to start over)")
    return rec, mm


def check_log(path: str, applied: int = 0) -> int:
    """Check the venue log at `path` as the state store's companion: a regular file of ours
    (not a symlink), mode 0600, whole records numbered 1, 2, 3, ..., and at least as long as
    the store says answers were applied (`applied`: else it is not the log the store was kept
    with). Its last sequence number (0: missing or empty); StateError naming the file else."""
    rec, mm = _open(path)
    n = 0 if rec is None else len(rec)
    del rec  # (no view of the mapping may outlive it)
    if mm is not None:
        mm.close()
    if applied > n:
        raise StateError(f"venue log {path} ends at record {n}, but the state store beside it "
                         f"has applied the venue's answers up to {applied}: it is not the log "
                         f"the store was kept with (cut short or replaced); move both away to "
                         f"start over")
    return n


def records(path: str):
    """The log's records in order, as tuples (seq, letter, values...) as in the module
    docstring; a missing file has none. StateError if it is not a sound log."""
    rec, mm = _open(path)
    if rec is None:
        return
    rows = rec.tolist()
    del rec  # (no view of the mapping may outlive it)
    if mm is not None:
        mm.close()
    for row in rows:
        t = row[1]
        yield (row[0], _LETTER[t], *row[2:2 + _FIELDS[t]])


def _cut_short(rec, n: int) -> bool:
    """Whether record n (the first with no sequence number) is one a kill cut short: a
    known type, only its own fields, and nothing after it."""
    if n >= len(rec) or rec[n + 1:].any():
        return False
    t = int(rec[n, 1])
    return N <= t <= E and not rec[n, 2 + _FIELDS[t]:].any()


def _used(rec) -> int:
    """Records written: those before the first with no sequence number."""
    empty = np.flatnonzero(rec[:, 0] == 0)
    return int(empty[0]) if empty.size else len(rec)


def read_log(path: str, since: int | None = None, cids=()) -> VenueLog:
    """Parse the venue log at `path` (missing: empty). With `since`, only what a start-up
    needs is parsed (a long run's log is millions of records): everything after record
    `since`, and before it only the records of the orders named there or in `cids`."""
    out = VenueLog()
    rec, mm = _open(path)
    if rec is None:
        return out
    out.last_seq = len(rec)
    rows = _rows(rec, since, cids)
    del rec  # (no view of the mapping may outlive it)
    if mm is not None:
        mm.close()
    _parse(rows, out)
    return out


def _rows(rec, since: int | None, cids) -> list:
    if since is None or since <= 0:
        return rec.tolist()
    late = rec[since:]
    wanted = np.union1d(late[:, 3], np.fromiter(cids, np.int64))
    early = rec[:since]
    return early[np.isin(early[:, 3], wanted)].tolist() + late.tolist()


def _parse(rows: list, out: VenueLog) -> None:
    orders = out.orders
    for row in rows:
        seq, t = row[0], row[1]
        vals = row[2:2 + _FIELDS[t]]
        if t == N:
            owner, cid, inst, side, qty, ord_type, tif, price = vals
            orders[cid] = LoggedOrder(owner, cid, inst, side, qty, ord_type, tif, price)
            out.new_orders += 1
        elif t == R:
            owner, cid, inst, side, qty, filled, ord_type, tif, price, _acked = vals
            orders[cid] = LoggedOrder(owner, cid, inst, side, qty, ord_type, tif, price, filled)
        elif t == C or t == P:
            o = orders.get(vals[1])
            if o is not None:
                o.requests.append(("P", vals[2], vals[3]) if t == P else ("C", 0, 0))
                o.last_request_seq = seq
        else:
            owner, cid, kind, qty, price, reason = vals
            o = orders.get(cid)
            if o is None or kind not in _E_KINDS:  # (inst -1: not reported again)
                out.events.append((seq, owner, cid, kind, qty, price, reason, -1, 0, 0, 0))
                continue
            if kind == ReportKind.FILL:
                o.filled += qty
                o.ended = o.filled >= o.qty
            elif kind in (ReportKind.REJECT, ReportKind.CANCELED, ReportKind.EXPIRED):
                o.ended = True
            if kind == ReportKind.REPLACED:
                o.qty, o.price = qty, price
            if kind in (ReportKind.CANCELED, ReportKind.REPLACED,
                        ReportKind.CANCEL_REJECTED) and o.requests:
                o.requests.pop(0)  # a venue answers a cid's requests in the order they came
            out.events.append((seq, owner, cid, kind, qty, price, reason, o.inst, o.side,
                               o.filled, 0 if o.ended else o.qty - o.filled))


class LoggedSimVenue(SimVenue):
    """The simulated venue with its log (see the module docstring). `take_seq()` gives, in
    order, the log sequence of each answer the venue has returned (the executor records the
    last one it applied, with its effect)."""

    __slots__ = ("_fd", "_next", "_answers", "_mm", "_q", "_chunk", "_slot")

    def __init__(self, path: str, latency_ns: int = 0, ioc_window_ns: int = 0,
                 last_seq: int = 0):
        """`last_seq`: the log's last record (check_log): this one appends after it."""
        super().__init__(latency_ns, ioc_window_ns)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        self._mm = self._q = None
        self._map(last_seq // CHUNK)
        self._slot = last_seq % CHUNK
        self._next = last_seq + 1
        b = self._slot * RECORD_WORDS  # a record a kill cut short there: gone (see _open)
        self._q[b: b + RECORD_WORDS] = memoryview(bytes(RECORD_BYTES)).cast("q")
        self._answers: deque = deque()

    def _map(self, chunk: int) -> None:
        if self._mm is not None:
            self._q.release()
            self._mm.close()
        end = (chunk + 1) * CHUNK * RECORD_BYTES
        if os.fstat(self._fd).st_size < end:
            os.ftruncate(self._fd, end)
        self._mm = mmap.mmap(self._fd, CHUNK * RECORD_BYTES, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE, offset=chunk * CHUNK * RECORD_BYTES)
        self._q = memoryview(self._mm).cast("q")
        self._chunk = chunk
        self._slot = 0

    @property
    def last_seq(self) -> int:
        return self._next - 1

    def close(self) -> None:
        if self._mm is not None:
            self._q.release()
            self._mm.close()
            self._mm = self._q = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _record(self, t: int, *vals) -> int:
        if self._slot == CHUNK:
            self._map(self._chunk + 1)
        q, b = self._q, self._slot * RECORD_WORDS
        q[b + 1] = t
        for i, v in enumerate(vals, b + 2):
            q[i] = v
        seq = self._next
        q[b] = seq  # last: the record exists from here on
        self._next = seq + 1
        self._slot += 1
        return seq

    def take_seq(self) -> int:
        return self._answers.popleft()

    # -- requests ---------------------------------------------------------------------------
    def submit(self, owner, client_id, instrument, side, qty, ord_type, tif, price, now_ns):
        super().submit(owner, client_id, instrument, side, qty, ord_type, tif, price, now_ns)
        self._record(N, owner, client_id, instrument, side, qty, ord_type, tif, price)

    def cancel(self, owner, client_id, now_ns, log: bool = True):
        super().cancel(owner, client_id, now_ns)
        if log:
            self._record(C, owner, client_id)

    def replace(self, owner, client_id, new_qty, new_price, now_ns, log: bool = True):
        super().replace(owner, client_id, new_qty, new_price, now_ns)
        if log:
            self._record(P, owner, client_id, new_qty, new_price)

    def cancel_all(self, owner, now_ns):
        going = [cid for cid, o in self._owners.get(owner, {}).items() if not o.cancel_sent]
        n = super().cancel_all(owner, now_ns)
        for cid in going:
            self._record(C, owner, cid)
        return n

    def restore(self, owner, client_id, instrument, side, qty, filled, ord_type, tif, price,
                acked, now_ns):
        super().restore(owner, client_id, instrument, side, qty, filled, ord_type, tif, price,
                        acked, now_ns)
        self._record(R, owner, client_id, instrument, side, qty, filled, ord_type, tif, price,
                     int(acked))

    # -- answers: recorded before they are returned ------------------------------------------
    def _logged(self, evs):
        if evs:
            record, answers = self._record, self._answers
            for o, c, kind, q, p, r in evs:
                answers.append(record(E, o, c, kind, q, p, r))
        return evs

    def poll(self, now_ns):
        return self._logged(super().poll(now_ns))

    def on_trade(self, instrument, price, qty, now_ns):
        return self._logged(super().on_trade(instrument, price, qty, now_ns))


def main(argv=None) -> int:
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m hftd.venues.sim <venue.log>", file=sys.stderr)
        return 2
    try:
        for rec in records(args[0]):
            print(" ".join(str(x) for x in rec))
    except StateError as e:
        print(f"hftd: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
