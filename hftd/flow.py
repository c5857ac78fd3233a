"""Flow control of one ring, applied by its writer: watermarks, policy, conflation.

Occupancy (write cursor - read cursor) is the only signal. Reaching the high watermark
marks the ring backpressured (a 0/1 gauge and an episode counter in the ring header, so
any process can read them); falling to the low watermark clears it. While backpressured
the writer applies the ring's policy:

- ``block``    lossless: the writer takes from upstream only what fits (replay, bench, tests).
- ``conflate`` live market data: keep only the newest tick per instrument until the ring is
               back at the low watermark, then publish those. Each replaced tick is counted.
- ``drop``     drop new ticks, counted.

Orders, reports and control events always block; a block longer than the ring's deadline
raises an alarm and trips the kill switch (see the strategy and executor stages).
"""

from __future__ import annotations

from .ring import RingWriter

BLOCK, CONFLATE, DROP = "block", "conflate", "drop"


class Flow:
    def __init__(self, writer: RingWriter, policy: str, high: float, low: float):
        self.writer = writer
        self.policy = policy
        cap = writer.capacity
        self.high = max(1, min(cap, int(cap * high)))
        self.low = min(self.high - 1, int(cap * low))
        self.on = bool(writer.ring.backpressured)  # a restarted writer keeps the state
        self.pending = Conflator() if policy == CONFLATE else None

    def backpressured(self) -> bool:
        """Re-evaluate against the current occupancy (one shared load)."""
        occ = self.writer.occupancy()
        if self.on:
            if occ <= self.low:
                self.on = False
                self.writer.set_backpressured(False)
        elif occ >= self.high:
            self.on = True
            self.writer.set_backpressured(True)
        return self.on


class Conflator:
    """Newest item per key, in first-seen order. `add` returns 1 when it replaced one."""

    def __init__(self):
        self.items: dict[int, tuple] = {}

    def __len__(self) -> int:
        return len(self.items)

    def add(self, key: int, item: tuple) -> int:
        items = self.items
        replaced = key in items
        if replaced:
            del items[key]  # re-insert: the newest goes last
        items[key] = item
        return 1 if replaced else 0

    def flush(self, room: int, emit) -> int:
        """Hand up to `room` items to emit(key, item), oldest first; returns how many."""
        n = 0
        items = self.items
        while items and n < room:
            key = next(iter(items))
            emit(key, items.pop(key))
            n += 1
        return n
