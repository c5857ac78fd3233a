"""The executor's state, kept where the next process finds it: client order id counters,
positions and their money, and the working orders, in one fixed-layout file of the instance's
state directory (`<state_dir>/<instance>/executor.state`), memory-mapped (MAP_SHARED).

Why a mapped file: a store into it is a memory store (no system call on the order path), it
is in the kernel's page cache the instant it is made, so a process killed with SIGKILL loses
nothing it wrote, and a new process maps the same pages: a restart is a re-attach, not a
rebuild. Unlike /dev/shm it also outlives the daemon and the machine (the pages reach the disk
with the kernel's write-back, and at a clean stop `flush`), which client order ids need:
they are unique for the instance's whole life, restarts included.

One writer per word: the executor writes everything but the id counters; strategy `i` writes
only its own counter `ids[i]` (the last client id it issued; ids are `(i << 40) | n`, so a
counter per strategy index keeps them unique even if strategies are renamed or reordered).

Layout (int64 words in native order; a float field is a float64 in its word):

    header   HEADER_WORDS: magic, version, the three table sizes, the trading day of the
             daily-loss bases, the venue log sequence of the last venue answer applied
             (hftd.venues.sim: a restarted executor applies the answers after it), and
             the journal (below)
    ids      ID_SLOTS: last id issued, per strategy index (written by that strategy)
    seen     ID_SLOTS: last id the executor accepted, per strategy index
    pos      POS_SLOTS x POS_WORDS: one position per (strategy, instrument), keyed by a hash
             of each name (records of pairs no longer configured are kept, untouched)
    orders   ORDER_SLOTS x ORDER_WORDS: one working order per used slot (client id 0: free)

Atomicity under SIGKILL. A change that is one word (an acknowledgement, an order's end) is
atomic. A new order's record is written with its client id last: killed before that, the slot
is still free (and the order had not been handed to the venue: the executor records it
first). A change of several words (a fill: the order and its position; a replace) goes
through a one-entry redo journal: the after-images are written to the journal, the journal
is marked live, the records are written, the mark is cleared. A process that finds the mark
set at start-up (`open`) copies the after-images again (idempotent), so the two records are
always both before or both after a fill, never in between. The journal entry also carries
the venue answer's log sequence, so a fill or replace and "applied up to here" move together;
a one-word change (an acknowledgement, an order's end) is written before the sequence, so a
restart may find it applied and the sequence not yet moved: the executor then sees the answer
already in effect and skips it.

Plain Python over a memoryview: no rings, no processes (the executor and strategy stages
host it).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import stat
import sys
from dataclasses import dataclass

from . import OrdState
from .orders import Order

_FILLED = int(OrdState.FILLED)  # states below it are working

MAGIC = int.from_bytes(b"HFTDSTAT", "little")
VERSION = 3
FILENAME = "executor.state"

ID_SLOTS = 256
POS_SLOTS = 1024
ORDER_SLOTS = 4096

# header words
H_MAGIC, H_VERSION, H_ID_SLOTS, H_POS_SLOTS, H_ORDER_SLOTS, H_DAY, H_VENUE_SEQ = range(7)
H_JOURNAL = 8  # 0, or a live journal entry's sequence number
H_J_ORDER = 9  # the order slot it writes (-1: none)
H_J_POS = 10  # the position slot it writes (-1: none)
H_J_VENUE_SEQ = 11  # the venue answer's log sequence it applies (0: none)
H_J_IMAGES = 16  # the order's after-image (ORDER_WORDS), then the position's (POS_WORDS)

# order record words
O_ID, O_STRATEGY, O_INST_KEY, O_SIDE, O_QTY, O_PRICE, O_TYPE, O_TIF, O_STATE, O_FILLED, \
    O_FILL_VALUE, O_CREATED, O_STRATEGY_KEY = range(13)
ORDER_WORDS = 13

# position record words (P_AVG .. P_TAX and P_DAY_BASE are float64)
P_USED, P_STRATEGY_KEY, P_INST_KEY, P_QTY, P_AVG, P_REALIZED, P_FEES, P_TAX, P_VOLUME, \
    P_DAY_BASE = range(10)
P_NAMES = 10  # 8 words: the strategy's name (32 bytes) and the symbol (32 bytes, cut)
POS_WORDS = 20

HEADER_WORDS = 64
assert H_J_IMAGES + ORDER_WORDS + POS_WORDS <= HEADER_WORDS
IDS = HEADER_WORDS
SEEN = IDS + ID_SLOTS
POS = SEEN + ID_SLOTS
ORDERS = POS + POS_SLOTS * POS_WORDS
WORDS = ORDERS + ORDER_SLOTS * ORDER_WORDS
SIZE = WORDS * 8


class StateError(RuntimeError):
    """The state file cannot be used as it is (the message names the file and why)."""


def check_private_file(fd: int, what: str, path: str) -> os.stat_result:
    """The stat of the file open at `fd` if it is a regular file of ours that nobody else may
    read or write (a state file: the store, the venue's log); StateError naming it else."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise StateError(f"{what} {path} is not a regular file; move it away")
    if st.st_uid != os.geteuid():
        raise StateError(f"{what} {path} belongs to uid {st.st_uid}, not to you; move it away "
                         f"or use another state_dir")
    if st.st_mode & 0o077:
        raise StateError(f"{what} {path} has mode {st.st_mode & 0o777:o}: others may read or "
                         f"write it; chmod 600 {path}")
    return st


def key(name: str) -> int:
    """A name's 63-bit key (never 0: 0 marks an unused record)."""
    h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    return (h >> 1) or 1


def path_for(state_dir: str) -> str:
    return os.path.join(state_dir, FILENAME)


def _name_bytes(name: str) -> bytes:
    """A name as it is kept in a record: UTF-8, cut to 32 bytes, NUL-padded."""
    return name.encode()[:32].ljust(32, b"\0")


def _bytes_name(b: bytes) -> str:
    return b.rstrip(b"\0").decode(errors="replace")


@dataclass
class SavedPosition:
    strategy: str
    symbol: str
    qty: int
    avg_price: float
    realized: float
    fees: float
    tax: float
    volume: int
    day_base: float


@dataclass
class SavedOrder:
    slot: int
    client_id: int
    strategy: int
    instrument_key: int
    side: int
    qty: int
    price: int
    ord_type: int
    tif: int
    state: int
    filled: int
    fill_value: int
    t_created_ns: int
    strategy_key: int


class TradingState:
    """One instance's state file, mapped. `open` creates it (mode 0600) when missing."""

    def __init__(self, path: str, mm: mmap.mmap):
        self.path = path
        self._mm = mm
        self.q = memoryview(mm).cast("q")
        self.d = memoryview(mm).cast("d")
        self._free: list[int] = []  # free order slots, lowest last (pop() takes it)
        self._slot: dict[int, int] = {}  # client id -> its order slot
        self._pos: dict[tuple[int, int], int] = {}  # (strategy key, instrument key) -> slot
        self._journal_seq = 0
        self.replayed_journal = False  # a live journal entry was found and applied at open
        self._scan()

    # --- opening --------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str, create: bool = True) -> "TradingState":
        flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if not create:
                raise StateError(f"state file {path} does not exist") from None
            fd = cls._create(path)
        except OSError as e:
            raise StateError(f"state file {path}: {e.strerror}") from None
        try:
            st = check_private_file(fd, "state file", path)
            if st.st_size != SIZE:
                raise StateError(f"state file {path} is {st.st_size} bytes, expected {SIZE} "
                                 f"(layout version {VERSION}); it is not an hftd state file of "
                                 f"this version: move it away to start from a clean state")
            mm = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        q = memoryview(mm).cast("q")
        head = (q[H_MAGIC], q[H_VERSION], q[H_ID_SLOTS], q[H_POS_SLOTS], q[H_ORDER_SLOTS])
        q.release()
        if head != (MAGIC, VERSION, ID_SLOTS, POS_SLOTS, ORDER_SLOTS):
            mm.close()
            raise StateError(f"state file {path} has an unknown header {head}: not an hftd "
                             f"state file of layout version {VERSION}; move it away to start "
                             f"from a clean state")
        return cls(path, mm)

    @staticmethod
    def _create(path: str) -> int:
        """A new file, initialised in full under a temporary name and then linked into
        place (never over a file that appeared meanwhile), so nobody maps a half-made one."""
        tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        try:
            os.ftruncate(fd, SIZE)
            head = [MAGIC, VERSION, ID_SLOTS, POS_SLOTS, ORDER_SLOTS]
            os.pwrite(fd, b"".join(w.to_bytes(8, sys.byteorder) for w in head), 0)
            os.fsync(fd)
            try:
                os.link(tmp, path)  # fails if one appeared meanwhile: use that one
            except FileExistsError:
                os.close(fd)
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        finally:
            os.unlink(tmp)
        return fd

    def _scan(self) -> None:
        q = self.q
        if q[H_JOURNAL]:
            self._replay()
            self.replayed_journal = True
        for s in range(ORDER_SLOTS - 1, -1, -1):
            b = ORDERS + s * ORDER_WORDS
            cid = q[b + O_ID]
            if cid:
                self._slot[cid] = s
            else:
                self._free.append(s)
        for s in range(POS_SLOTS):
            b = POS + s * POS_WORDS
            if q[b + P_USED]:
                self._pos[(q[b + P_STRATEGY_KEY], q[b + P_INST_KEY])] = s

    def flush(self) -> None:
        self._mm.flush()

    def close(self) -> None:
        for v in (self.q, self.d):
            v.release()
        self._mm.close()

    # --- id counters --------------------------------------------------------------------
    def id_slot(self, index: int) -> int:
        """The word of strategy `index`'s id counter, for an `IdSource(state.q, slot)`."""
        if not 0 <= index < ID_SLOTS:
            raise StateError(f"strategy index {index} has no id counter (at most {ID_SLOTS})")
        return IDS + index

    def last_issued(self, index: int) -> int:
        return self.q[self.id_slot(index)]

    def last_seen(self, index: int) -> int:
        return self.q[SEEN + index]

    def set_seen(self, index: int, client_id: int) -> None:
        self.q[SEEN + index] = client_id

    # --- the trading day ----------------------------------------------------------------
    @property
    def day(self) -> int:
        """The trading day of the daily-loss bases (hftd.trading.risk.trading_day: days since
        1970-01-01 of the local date it started; 0: none yet)."""
        return self.q[H_DAY]

    @day.setter
    def day(self, day: int) -> None:
        self.q[H_DAY] = day

    # --- the venue log -----------------------------------------------------------------
    @property
    def venue_seq(self) -> int:
        """The venue log sequence of the last venue answer applied (0: none)."""
        return self.q[H_VENUE_SEQ]

    def set_venue_seq(self, seq: int) -> None:
        """An answer whose effect is one word (or none) is applied: after that word."""
        if seq > self.q[H_VENUE_SEQ]:
            self.q[H_VENUE_SEQ] = seq

    # --- positions ----------------------------------------------------------------------
    def position_slot(self, strategy: str, symbol: str) -> int:
        """The record of (strategy, symbol), made on first use."""
        k = (key(strategy), key(symbol))
        s = self._pos.get(k)
        if s is not None:
            return s
        used = set(self._pos.values())
        s = next((i for i in range(POS_SLOTS) if i not in used), None)
        if s is None:
            raise StateError(f"state file {self.path}: all {POS_SLOTS} position records are "
                             f"used; move the file away to start from a clean state")
        b = POS + s * POS_WORDS
        q = self.q
        for i in range(POS_WORDS):
            q[b + i] = 0
        self._mm[(b + P_NAMES) * 8:(b + P_NAMES + 8) * 8] = \
            _name_bytes(strategy) + _name_bytes(symbol)
        q[b + P_STRATEGY_KEY], q[b + P_INST_KEY] = k
        q[b + P_USED] = 1  # last: a record killed half-made is not used
        self._pos[k] = s
        return s

    def find_position(self, strategy: str, symbol: str) -> int | None:
        """The record of (strategy, symbol), or None (read-only: for the strategies)."""
        return self._pos.get((key(strategy), key(symbol)))

    def position_values(self, slot: int) -> tuple:
        """A position record as `Position.values()`: (qty, avg, realized, fees, tax, volume)."""
        q, d, b = self.q, self.d, POS + slot * POS_WORDS
        return (q[b + P_QTY], d[b + P_AVG], d[b + P_REALIZED], d[b + P_FEES], d[b + P_TAX],
                q[b + P_VOLUME])

    def load_position(self, slot: int, p) -> None:
        """Fill Position `p` from its record."""
        p.restore(*self.position_values(slot))

    def day_base(self, slot: int) -> float:
        return self.d[POS + slot * POS_WORDS + P_DAY_BASE]

    def set_day_base(self, slot: int, value: float) -> None:
        self.d[POS + slot * POS_WORDS + P_DAY_BASE] = value

    def positions(self) -> list[SavedPosition]:
        """Every position record (configured or not), for start-up checks and tests."""
        out = []
        d = self.d
        for s in sorted(self._pos.values()):
            b = POS + s * POS_WORDS
            names = (b + P_NAMES) * 8
            out.append(SavedPosition(
                _bytes_name(self._mm[names:names + 32]),
                _bytes_name(self._mm[names + 32:names + 64]), *self.position_values(s),
                d[b + P_DAY_BASE]))
        return out

    # --- orders -------------------------------------------------------------------------
    def has_room(self) -> bool:
        return bool(self._free)

    def add_order(self, o: Order, instrument_key: int, strategy_key: int = 0) -> None:
        """Record a new order (before it is handed to the venue), with the keys of its
        instrument's symbol and its strategy's name. The caller checked `has_room`."""
        s = self._free.pop()
        q, b = self.q, ORDERS + s * ORDER_WORDS
        q[b + O_STRATEGY] = o.strategy
        q[b + O_STRATEGY_KEY] = strategy_key
        q[b + O_INST_KEY] = instrument_key
        q[b + O_SIDE] = o.side
        q[b + O_QTY] = o.qty
        q[b + O_PRICE] = o.price
        q[b + O_TYPE] = o.ord_type
        q[b + O_TIF] = o.tif
        q[b + O_STATE] = o.state
        q[b + O_FILLED] = o.filled
        q[b + O_FILL_VALUE] = o.fill_value
        q[b + O_CREATED] = o.t_created_ns
        q[b + O_ID] = o.client_id  # last: the record exists from here on
        self._slot[o.client_id] = s

    def set_state(self, o: Order) -> None:
        """A one-word change: the order's state (an acknowledgement)."""
        s = self._slot.get(o.client_id)
        if s is not None:
            self.q[ORDERS + s * ORDER_WORDS + O_STATE] = o.state

    def end_order(self, client_id: int) -> None:
        """The order ended: its slot is free (one word)."""
        s = self._slot.pop(client_id, None)
        if s is not None:
            self.q[ORDERS + s * ORDER_WORDS + O_ID] = 0
            self._free.append(s)

    def update(self, o: Order | None, pos_slot: int = -1, p=None, venue_seq: int = 0) -> None:
        """Write order `o`'s changed fields (qty, price, state, filled) and position `p`
        (record `pos_slot`) together, through the journal, with the log sequence of the venue
        answer they apply (0: none). An ended order's slot is freed in the same step. Either
        may be None / -1."""
        q, d = self.q, self.d
        oslot = self._slot.get(o.client_id, -1) if o is not None else -1
        ended = o is not None and o.state >= _FILLED
        j = H_J_IMAGES
        if oslot >= 0:
            b = ORDERS + oslot * ORDER_WORDS
            q[j:j + ORDER_WORDS] = q[b:b + ORDER_WORDS]
            q[j + O_ID] = 0 if ended else o.client_id
            q[j + O_QTY] = o.qty
            q[j + O_PRICE] = o.price
            q[j + O_STATE] = o.state
            q[j + O_FILLED] = o.filled
            q[j + O_FILL_VALUE] = o.fill_value
        if pos_slot >= 0:
            pj = j + ORDER_WORDS
            b = POS + pos_slot * POS_WORDS
            q[pj:pj + POS_WORDS] = q[b:b + POS_WORDS]
            q[pj + P_QTY] = p.qty
            d[pj + P_AVG] = p.avg_price
            d[pj + P_REALIZED] = p.realized
            d[pj + P_FEES] = p.fees
            d[pj + P_TAX] = p.tax
            q[pj + P_VOLUME] = p.volume
        q[H_J_ORDER] = oslot
        q[H_J_POS] = pos_slot
        q[H_J_VENUE_SEQ] = venue_seq
        self._journal_seq += 1
        q[H_JOURNAL] = self._journal_seq  # live: from here a restart redoes it
        self._replay()
        if ended and oslot >= 0:
            del self._slot[o.client_id]
            self._free.append(oslot)

    def _replay(self) -> None:
        """Copy the live journal entry's after-images into their records, and clear it."""
        q = self.q
        oslot, pslot = q[H_J_ORDER], q[H_J_POS]
        j = H_J_IMAGES
        if 0 <= oslot < ORDER_SLOTS:
            b = ORDERS + oslot * ORDER_WORDS
            q[b:b + ORDER_WORDS] = q[j:j + ORDER_WORDS]
        if 0 <= pslot < POS_SLOTS:
            b = POS + pslot * POS_WORDS
            q[b:b + POS_WORDS] = q[j + ORDER_WORDS:j + ORDER_WORDS + POS_WORDS]
        if q[H_J_VENUE_SEQ] > q[H_VENUE_SEQ]:
            q[H_VENUE_SEQ] = q[H_J_VENUE_SEQ]
        q[H_JOURNAL] = 0

    def orders(self) -> list[SavedOrder]:
        """The working orders on record, oldest client id first per strategy."""
        q = self.q
        out = []
        for cid, s in self._slot.items():
            b = ORDERS + s * ORDER_WORDS
            out.append(SavedOrder(s, cid, *(q[b + i] for i in range(1, ORDER_WORDS))))
        out.sort(key=lambda o: (o.strategy, o.client_id))
        return out
