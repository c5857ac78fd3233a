"""Per-agent statistics block in shared memory, written only by its agent.

Like Aeron's counters file: the agent's hot path pays one store per update, and anyone
(the supervisor, `hftd status`) maps the block and reads it without a lock. The block
describes itself: a JSON directory of its value names and kinds and its histogram names
is written once when the supervisor creates it.

Layout: header (`HEADER_WORDS` int64), JSON directory (`META_BYTES`), values (int64 each:
counters only ever grow, gauges hold a level), histograms (`histogram.WORDS` int64 each).
"""

from __future__ import annotations

import mmap

import msgspec
import numpy as np

from . import histogram, shm

MAGIC = 0x4846_5444_5354_4154  # "HFTDSTAT"
LAYOUT_VERSION = 2
HEADER_WORDS = 32
# The executor names a position's values per strategy and instrument (~210 bytes a pair):
# room for ~1,200 pairs. Pages past the directory's end are never touched (tmpfs: no memory).
META_BYTES = 256 * 1024
# header words
H_MAGIC, H_VERSION, H_PID, H_STATE, H_HEARTBEAT, H_STARTED, H_N_VALUES, H_N_HISTS = range(8)
H_META_LEN, H_RESTARTS, H_EXIT = 8, 9, 10
H_LOST = 11  # events an agent held and could not pass on when a signal made it leave

# agent states
# STOPPED: it ended its stream (told to); EXITED: it left on a signal without that (to the
# supervisor, a crash); QUARANTINED: set by the supervisor for a strategy it gave up on
STARTING, RUNNING, DRAINING, STOPPED, EXITED, QUARANTINED = 1, 2, 3, 4, 5, 6
STATE_NAMES = {0: "absent", STARTING: "starting", RUNNING: "running", DRAINING: "draining",
               STOPPED: "stopped", EXITED: "exited", QUARANTINED: "quarantined"}

COUNTER, GAUGE = "counter", "gauge"


class Schema(msgspec.Struct, frozen=True):
    """Names of an agent's values and histograms. `values` holds (name, kind) pairs."""

    values: tuple[tuple[str, str], ...]
    histograms: tuple[str, ...] = ()


def _size(n_values: int, n_hists: int) -> int:
    raw = 8 * HEADER_WORDS + META_BYTES + 8 * n_values + 8 * histogram.WORDS * n_hists
    return (raw + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE


class Value:
    """One counter or gauge; `add`/`set` are single stores into shared memory."""

    __slots__ = ("_q", "_i")

    def __init__(self, q, i):
        self._q = q
        self._i = i

    def add(self, n: int = 1) -> None:
        self._q[self._i] += n

    def set(self, v: int) -> None:
        self._q[self._i] = v

    @property
    def value(self) -> int:
        return self._q[self._i]


class StatsBlock:
    def __init__(self, name: str, mm: mmap.mmap):
        self.name = name
        self._mm = mm
        head = np.ndarray((HEADER_WORDS,), np.int64, mm, 0)
        if int(head[H_MAGIC]) != MAGIC or int(head[H_VERSION]) != LAYOUT_VERSION:
            raise RuntimeError(f"{name} is not an hftd stats block of layout {LAYOUT_VERSION}")
        meta_len = int(head[H_META_LEN])
        self.schema = msgspec.json.decode(bytes(mm[8 * HEADER_WORDS : 8 * HEADER_WORDS + meta_len]),
                                          type=Schema)
        nv, nh = len(self.schema.values), len(self.schema.histograms)
        off = 8 * HEADER_WORDS + META_BYTES
        self.header = head
        self.values = np.ndarray((nv,), np.int64, mm, off)
        hist_off = off + 8 * nv
        self.hist_words = np.ndarray((nh, histogram.WORDS), np.int64, mm, hist_off)
        mv = memoryview(mm)
        self._mv = mv
        self.q_header = mv[0 : 8 * HEADER_WORDS].cast("q")
        self.q_values = mv[off : off + 8 * nv].cast("q") if nv else None
        self._q_hists = mv[hist_off : hist_off + 8 * histogram.WORDS * nh].cast("q") if nh else None
        self.index = {name: i for i, (name, _) in enumerate(self.schema.values)}
        self.kinds = dict(self.schema.values)

    @classmethod
    def create(cls, name: str, schema: Schema) -> "StatsBlock":
        meta = msgspec.json.encode(schema)
        if len(meta) > META_BYTES:
            raise ValueError(f"stats schema of {name} is {len(meta)} bytes, more than {META_BYTES}")
        mm = shm.create_segment(name, _size(len(schema.values), len(schema.histograms)))
        mm[8 * HEADER_WORDS : 8 * HEADER_WORDS + len(meta)] = meta
        head = np.ndarray((HEADER_WORDS,), np.int64, mm, 0)
        head[H_VERSION] = LAYOUT_VERSION
        head[H_META_LEN] = len(meta)
        head[H_N_VALUES] = len(schema.values)
        head[H_N_HISTS] = len(schema.histograms)
        head[H_MAGIC] = MAGIC
        del head
        return cls(name, mm)

    @classmethod
    def attach(cls, name: str) -> "StatsBlock":
        return cls(name, shm.attach_segment(name))

    # --- writer side (the agent) --------------------------------------------------------
    def value(self, name: str) -> Value:
        try:
            return Value(self.q_values, self.index[name])
        except KeyError:
            raise KeyError(f"stats block {self.name} has no value {name!r}") from None

    def histogram(self, name: str) -> histogram.Histogram:
        i = self.schema.histograms.index(name)
        return histogram.Histogram(self.hist_words[i], self._q_hists, i * histogram.WORDS)

    def heartbeat(self, now_ns: int) -> None:
        self.q_header[H_HEARTBEAT] = now_ns

    def set_state(self, state: int) -> None:
        self.q_header[H_STATE] = state

    # --- reader side ------------------------------------------------------------------
    @property
    def state(self) -> int:
        return self.q_header[H_STATE]

    @property
    def pid(self) -> int:
        return self.q_header[H_PID]

    @property
    def heartbeat_ns(self) -> int:
        return self.q_header[H_HEARTBEAT]

    def fresh(self, now_ns: int, limit_ns: int) -> bool:
        """Running, with a heartbeat younger than `limit_ns`."""
        return self.q_header[H_STATE] == RUNNING and now_ns - self.q_header[H_HEARTBEAT] < limit_ns

    def get(self, name: str) -> int:
        return self.q_values[self.index[name]]

    def snapshot(self) -> dict:
        return {
            "state": STATE_NAMES.get(int(self.header[H_STATE]), "unknown"),
            "pid": int(self.header[H_PID]),
            "heartbeat_ns": int(self.header[H_HEARTBEAT]),
            "restarts": int(self.header[H_RESTARTS]),
            "lost_on_exit": int(self.header[H_LOST]),
            "values": {name: int(v) for (name, _), v in zip(self.schema.values, self.values)},
            "histograms": {
                name: histogram.HistogramSnapshot(self.hist_words[i].copy())
                for i, name in enumerate(self.schema.histograms)
            },
        }

    def close(self) -> None:
        for attr in ("q_header", "q_values", "_q_hists", "_mv"):
            v = self.__dict__.pop(attr, None)
            if v is not None:
                v.release()
        for attr in ("header", "values", "hist_words"):
            self.__dict__.pop(attr, None)
        try:
            self._mm.close()
        except BufferError:
            pass

    def unlink(self) -> None:
        shm.unlink_segment(self.name)
