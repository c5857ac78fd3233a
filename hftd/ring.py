"""Lock-free single-producer/single-consumer ring buffer in one POSIX shared-memory segment.

Layout (all offsets fixed by the header, little-endian int64 unless noted)::

    line 0   magic, layout version, capacity, slot size           (written once)
    line 1   write cursor                                          (writer only)
    line 2   read cursor                                           (reader only)
    line 3   reader-asleep flag: 0, or how many events wake it     (reader only)
    line 4   writer-side flow-control state and counters           (writer only)
    line 5   writer-waiting-for-room flag                          (writer only)
    columns  seq[cap] int64, t_ingest[cap] int64, key[cap] int32, length[cap] int32
    data     cap * slot_size bytes: the msgspec-encoded payloads

Each cursor sits on its own 128-byte line so the two processes never write the same cache
line. A slot is ``sequence & mask``. The writer fills slots and then publishes them with one
aligned 8-byte store of the new write cursor; the reader loads the write cursor, processes
what is there, then stores its read cursor once. On x86-64 (TSO) stores become visible in
program order, and CPython performs each store through an opaque C call, so "payload stores,
then cursor store" is enough: no lock and no system call per event. Other architectures are
refused at import (see `require_supported_platform`).

Why a slot has an *envelope* (seq, t_ingest, key, length) beside the msgspec payload: a
stage that only routes or measures (the dispatcher, every stage's latency histogram) reads
those columns as numpy arrays for a whole batch and copies slots between rings with one
fancy-index assignment, never decoding a payload. Decoding and re-encoding a tick costs
~200 ns in CPython (measured with `bench/micro_primitives.py`); the vectorised forward costs
a few ns per tick. `seq` is the event's per-ring sequence (equal to its position, checked by
readers to catch a lapped slot); `key` is the routing key (instrument id for ticks,
`CONTROL_KEY` for control events).

The hot path uses ``memoryview.cast`` views for scalar loads and stores (~18 ns against
~60 ns for ``int(ndarray[i])``) and numpy views for batch work.
"""

from __future__ import annotations

import mmap
import platform

import numpy as np

from . import shm
from .fence import full_fence

MAGIC = 0x4846_5444_5249_4E47  # "HFTDRING"
LAYOUT_VERSION = 1
LINE = 128
HEADER_BYTES = 8 * LINE
# int64 indexes into the header
H_MAGIC, H_VERSION, H_CAPACITY, H_SLOT_SIZE = 0, 1, 2, 3
H_WRITE = LINE // 8
H_READ = 2 * LINE // 8
H_ASLEEP = 3 * LINE // 8
H_FLOW = 4 * LINE // 8  # writer-owned flow-control words (see FLOW_* below)
H_WAITING = 5 * LINE // 8  # the writer is parked until the reader frees half the ring
FLOW_BACKPRESSURED, FLOW_EPISODES = 0, 1

CONTROL_KEY = -1  # envelope key of control events travelling in-band


class RingError(Exception):
    pass


class PayloadTooLarge(RingError):
    pass


def require_supported_platform(machine: str | None = None) -> None:
    machine = machine or platform.machine()
    if machine not in ("x86_64", "AMD64"):
        raise RuntimeError(
            f"hftd's shared-memory rings rely on x86-64 store ordering (TSO); this machine is "
            f"{machine!r}, where payload and cursor stores may be reordered. Refusing to run."
        )


def _align(n: int, to: int = LINE) -> int:
    return (n + to - 1) // to * to


def _layout(capacity: int, slot_size: int) -> dict[str, int]:
    off = HEADER_BYTES
    lay = {}
    for name, width in (("seq", 8), ("t_ingest", 8), ("key", 4), ("length", 4)):
        lay[name] = off
        off = _align(off + capacity * width)
    lay["data"] = off
    lay["size"] = _align(off + capacity * slot_size, mmap.PAGESIZE)
    return lay


def check_geometry(capacity: int, slot_size: int) -> None:
    if capacity < 2 or capacity & (capacity - 1):
        raise ValueError(f"ring capacity {capacity} is not a power of two >= 2")
    if slot_size < 8 or slot_size % 8:
        raise ValueError(f"ring slot size {slot_size} is not a positive multiple of 8")


class Ring:
    """One ring segment mapped into this process. Use `RingWriter`/`RingReader` to move data."""

    def __init__(self, name: str, mm: mmap.mmap):
        self.name = name
        self._mm = mm
        head = np.ndarray((HEADER_BYTES // 8,), dtype=np.int64, buffer=mm, offset=0)
        if int(head[H_MAGIC]) != MAGIC:
            raise RingError(f"{name} is not an hftd ring (bad magic)")
        if int(head[H_VERSION]) != LAYOUT_VERSION:
            raise RingError(
                f"{name} has layout version {int(head[H_VERSION])}, expected {LAYOUT_VERSION}"
            )
        self.capacity = cap = int(head[H_CAPACITY])
        self.slot_size = ss = int(head[H_SLOT_SIZE])
        self.mask = cap - 1
        lay = _layout(cap, ss)
        self.header = head
        self.seq = np.ndarray((cap,), np.int64, mm, lay["seq"])
        self.t_ingest = np.ndarray((cap,), np.int64, mm, lay["t_ingest"])
        self.key = np.ndarray((cap,), np.int32, mm, lay["key"])
        self.length = np.ndarray((cap,), np.int32, mm, lay["length"])
        self.slots = np.ndarray((cap, ss), np.uint8, mm, lay["data"])
        mv = memoryview(mm)
        self._mv = mv
        self.q_header = mv[0:HEADER_BYTES].cast("q")
        self.q_seq = mv[lay["seq"] : lay["seq"] + 8 * cap].cast("q")
        self.q_t_ingest = mv[lay["t_ingest"] : lay["t_ingest"] + 8 * cap].cast("q")
        self.i_key = mv[lay["key"] : lay["key"] + 4 * cap].cast("i")
        self.i_length = mv[lay["length"] : lay["length"] + 4 * cap].cast("i")
        self.data = mv[lay["data"] : lay["data"] + cap * ss]

    @classmethod
    def create(cls, name: str, capacity: int, slot_size: int) -> "Ring":
        check_geometry(capacity, slot_size)
        lay = _layout(capacity, slot_size)
        mm = shm.create_segment(name, lay["size"])
        head = np.ndarray((HEADER_BYTES // 8,), dtype=np.int64, buffer=mm, offset=0)
        head[H_VERSION] = LAYOUT_VERSION
        head[H_CAPACITY] = capacity
        head[H_SLOT_SIZE] = slot_size
        head[H_MAGIC] = MAGIC
        del head
        return cls(name, mm)

    @classmethod
    def attach(cls, name: str) -> "Ring":
        return cls(name, shm.attach_segment(name))

    # --- state, readable from any process -------------------------------------------------
    @property
    def published(self) -> int:
        """Events ever published (the write cursor)."""
        return self.q_header[H_WRITE]

    @property
    def consumed(self) -> int:
        """Events ever consumed (the read cursor)."""
        return self.q_header[H_READ]

    def occupancy(self) -> int:
        return self.q_header[H_WRITE] - self.q_header[H_READ]

    def span(self, first: int, n: int):
        """Index of the `n` slots of positions `first`.. `first + n - 1`: a slice where they
        do not wrap past the ring's end (copies at memcpy speed), else an index array."""
        start = first & self.mask
        if start + n <= self.capacity:
            return slice(start, start + n)
        return np.arange(first, first + n, dtype=np.int64) & self.mask

    def payload(self, position: int) -> memoryview:
        """The payload of the event at `position` (valid while the slot is not reused)."""
        i = position & self.mask
        o = i * self.slot_size
        return self.data[o : o + self.i_length[i]]

    @property
    def backpressured(self) -> int:
        return self.q_header[H_FLOW + FLOW_BACKPRESSURED]

    @property
    def backpressure_episodes(self) -> int:
        return self.q_header[H_FLOW + FLOW_EPISODES]

    def close(self) -> None:
        """Drop this process's mapping. Views handed out elsewhere keep it alive until freed."""
        for attr in ("q_header", "q_seq", "q_t_ingest", "i_key", "i_length", "data", "_mv"):
            view = self.__dict__.pop(attr, None)
            if view is not None:
                view.release()
        for attr in ("header", "seq", "t_ingest", "key", "length", "slots"):
            self.__dict__.pop(attr, None)
        try:
            self._mm.close()
        except BufferError:
            pass  # a numpy view is still referenced; the mapping goes with the process

    def unlink(self) -> None:
        shm.unlink_segment(self.name)


class RingWriter:
    """The single writer of a ring. Resumes at the ring's write cursor."""

    def __init__(self, ring: Ring, doorbell=None):
        self.ring = ring
        self._h = ring.q_header
        self.capacity = ring.capacity
        self.position = ring.q_header[H_WRITE]  # next sequence to write
        self.published = self.position
        self._cached_read = ring.q_header[H_READ]
        self._doorbell = doorbell
        self.half = ring.capacity // 2
        self.starved = False  # the last claim got fewer slots than it wanted
        # the waiting flag is the writer's: one killed while parked for room left it up, and
        # the reader would ring this one, which waits for nothing, at every commit
        ring.q_header[H_WAITING] = 0

    def _too_large(self, n: int) -> PayloadTooLarge:
        r = self.ring
        return PayloadTooLarge(
            f"payload of {n} bytes does not fit ring {r.name}'s {r.slot_size}-byte slots")

    def free(self) -> int:
        """Free slots, refreshing the cached read cursor (one shared load)."""
        self._cached_read = cached = self._h[H_READ]
        return self.capacity - (self.position - cached)

    def claim(self, wanted: int) -> int:
        """How many of `wanted` slots can be written now; reads the shared cursor only if
        the cached copy says there is not room for all of them."""
        free = self.capacity - (self.position - self._cached_read)
        if free < wanted:
            free = self.free()
            if free < wanted:
                self.starved = True
                return free
        self.starved = False
        return wanted

    def must_wait(self) -> bool:
        """Starved, and the reader has not yet freed half the ring: what a parked writer
        waits for (`set_waiting`; the reader rings once it has). Refreshes the read cursor;
        a writer that finds half the ring free again is no longer starved."""
        if not self.starved:
            return False
        if self.free() < self.half:
            return True
        self.starved = False
        return False

    def set_waiting(self, on: bool) -> None:
        """Flag this writer parked until the reader frees half the ring (hftd.idle)."""
        self._h[H_WAITING] = 1 if on else 0

    def occupancy(self) -> int:
        return self.position - self._h[H_READ]

    def put(self, key: int, t_ingest: int, payload) -> None:
        """Write one event at `position` (claimed beforehand); visible after `publish()`."""
        r = self.ring
        n = len(payload)
        if n > r.slot_size:
            raise self._too_large(n)
        p = self.position
        i = p & r.mask
        o = i * r.slot_size
        r.data[o : o + n] = payload
        r.i_length[i] = n
        r.i_key[i] = key
        r.q_t_ingest[i] = t_ingest
        r.q_seq[i] = p
        self.position = p + 1

    def put_many(self, keys, t_ingest, payloads) -> None:
        """Write len(payloads) claimed events. `keys`/`t_ingest`: arrays or scalars."""
        r = self.ring
        n = len(payloads)
        if n == 0:
            return
        p = self.position
        idx = np.arange(p, p + n, dtype=np.int64)
        slots = idx & r.mask
        r.seq[slots] = idx
        r.t_ingest[slots] = t_ingest
        r.key[slots] = keys
        ss = r.slot_size
        data = r.data
        lengths = r.i_length
        mask = r.mask
        for payload in payloads:
            m = len(payload)
            if m > ss:
                raise self._too_large(m)
            i = p & mask
            o = i * ss
            data[o : o + m] = payload
            lengths[i] = m
            p += 1
        self.position = p

    def put_rows(self, keys, t_ingest, rows: np.ndarray) -> None:
        """Write len(rows) claimed events whose payloads have one length: `rows` is an
        (n, length) uint8 array (hftd.events.encode_ticks), written with one assignment."""
        r = self.ring
        n, m = rows.shape
        if n == 0:
            return
        if m > r.slot_size:
            raise self._too_large(m)
        p = self.position
        slots = r.span(p, n)
        r.slots[slots, :m] = rows
        r.length[slots] = m
        r.key[slots] = keys
        r.t_ingest[slots] = t_ingest
        r.seq[slots] = np.arange(p, p + n, dtype=np.int64)
        self.position = p + n

    def forward(self, src: Ring, positions: np.ndarray) -> None:
        """Copy the events at `positions` of ring `src` (same slot size) into claimed slots,
        without decoding them: one copy per column (`Ring.span`: slices where the run does
        not wrap, fancy indexes where it does or the positions are scattered)."""
        r = self.ring
        n = len(positions)
        if n == 0:
            return
        if src.slot_size != r.slot_size:
            raise RingError(
                f"cannot forward from {src.name} ({src.slot_size}-byte slots) to "
                f"{r.name} ({r.slot_size}-byte slots)"
            )
        p = self.position
        first = int(positions[0])
        # a run of consecutive events (all of them routed here, the common case) is a span
        # of the source; scattered positions are fancy indexes
        s = src.span(first, n) if int(positions[-1]) - first == n - 1 else positions & src.mask
        d = r.span(p, n)
        r.slots[d] = src.slots[s]
        r.length[d] = src.length[s]
        r.key[d] = src.key[s]
        r.t_ingest[d] = src.t_ingest[s]
        r.seq[d] = np.arange(p, p + n, dtype=np.int64)
        self.position = p + n

    def copy_one(self, src: Ring, position: int) -> None:
        """Copy the event at `position` of ring `src` into the claimed slot at `position`:
        the scalar twin of `forward`, cheaper for one event than numpy's fixed costs."""
        r = self.ring
        i = position & src.mask
        n = src.i_length[i]
        if n > r.slot_size:
            raise self._too_large(n)
        o = i * src.slot_size
        p = self.position
        j = p & r.mask
        oo = j * r.slot_size
        r.data[oo : oo + n] = src.data[o : o + n]
        r.i_length[j] = n
        r.i_key[j] = src.i_key[i]
        r.q_t_ingest[j] = src.q_t_ingest[i]
        r.q_seq[j] = p
        self.position = p + 1

    def publish(self) -> int:
        """Make everything put since the last publish visible; wake the reader if it sleeps.
        Returns how many events this published."""
        p = self.position
        n = p - self.published
        if n:
            h = self._h
            h[H_WRITE] = p
            self.published = p
            if self._doorbell is not None:
                full_fence()  # the cursor store before the flag's load (hftd.fence)
                asleep = h[H_ASLEEP]  # 0, or how many waiting events wake the reader
                if asleep and (asleep == 1 or p - h[H_READ] >= asleep):
                    self._doorbell.release()
        return n

    def offer(self, key: int, t_ingest: int, payload) -> bool:
        """Write and publish one event if there is room."""
        if not self.claim(1):
            return False
        self.put(key, t_ingest, payload)
        self.publish()
        return True

    # writer-owned flow-control words, read by the supervisor and `hftd status`
    def set_backpressured(self, on: bool) -> None:
        h = self._h
        if on and not h[H_FLOW + FLOW_BACKPRESSURED]:
            h[H_FLOW + FLOW_EPISODES] = h[H_FLOW + FLOW_EPISODES] + 1
        h[H_FLOW + FLOW_BACKPRESSURED] = 1 if on else 0


class RingReader:
    """The single reader of a ring. Resumes at the ring's read cursor, so a restarted reader
    continues with the first event its predecessor had not committed."""

    def __init__(self, ring: Ring, writer_bell=None):
        self.ring = ring
        self._h = ring.q_header
        self.position = ring.q_header[H_READ]  # next sequence to read
        self._writer_bell = writer_bell  # rung when the writer waits and half the ring is free
        # how many waiting events should wake this reader when it parks (hftd.idle): 1, or
        # more for a ring its agent reads lazily (the executor's market data)
        self.wake_at = 1
        self._half = ring.capacity // 2

    def available(self) -> int:
        return self._h[H_WRITE] - self.position

    def payload(self, position: int) -> memoryview:
        return self.ring.payload(position)

    def read(self, decode, limit: int) -> list:
        """Decode up to `limit` available events from `position` on. Does not commit."""
        pos = self.position
        n = self._h[H_WRITE] - pos
        if n > limit:
            n = limit
        if n <= 0:
            return []
        r = self.ring
        data, lengths, mask, ss = r.data, r.i_length, r.mask, r.slot_size
        out = []
        append = out.append
        for p in range(pos, pos + n):
            i = p & mask
            o = i * ss
            append(decode(data[o : o + lengths[i]]))
        return out

    def record_ages(self, histogram, now_ns: int, n: int) -> None:
        """Record now - t_ingest of the `n` events from `position` on into `histogram`.

        Ticks come in runs that share one t_ingest (the producer stamps a feed batch once),
        so a batch is recorded run by run: a couple of numpy calls and one `record_n` per
        run, instead of bucketing every event; a few events take a scalar loop."""
        r = self.ring
        pos = self.position
        if n < 16:
            t, mask, record = r.q_t_ingest, r.mask, histogram.record
            for p in range(pos, pos + n):
                record(now_ns - t[p & mask])
            return
        t = r.t_ingest[r.span(pos, n)]
        edges = np.flatnonzero(t[1:] != t[:-1])
        if len(edges) > 32:
            histogram.record_many(now_ns - t)
            return
        first = 0
        for e in edges.tolist():
            histogram.record_n(now_ns - int(t[first]), e + 1 - first)
            first = e + 1
        histogram.record_n(now_ns - int(t[first]), n - first)

    def commit(self, n: int) -> None:
        """Release `n` events (one store of the read cursor)."""
        if n:
            h = self._h
            pos = self.position = self.position + n
            h[H_READ] = pos
            if self._writer_bell is not None:
                full_fence()  # the cursor store before the flag's load (hftd.fence)
                if h[H_WAITING] and h[H_WRITE] - pos <= self._half:
                    self._writer_bell.release()

    def set_asleep(self, on: bool | int) -> None:
        """Flag this reader parked: the writer rings its doorbell when it publishes (`on`
        True) or once `on` (an int > 1) events are waiting; False: awake."""
        self._h[H_ASLEEP] = int(on)
