"""What the file feeds share (`taifex`, `recording`): the ticks of one unit at a time (a CSV's
trading day, a recording) as columns; the position in them and `advance`, which a restarted
producer continues from (hftd.stages.producer); pacing at `speed` by a clock column (exchange
time, receive time); and progress by the files' bytes.

A feed subclasses `FileReplay`, opens its next unit in `_next_unit` (calling `_begin` with the
unit's columns, or returning False when there is none) and, if it holds units of an opened
file back, says so in `_more_units` and `pending`.
"""

from __future__ import annotations

import os

import numpy as np

from . import FeedBatch


class FileReplay:
    def __init__(self, files: list[str], speed: float):
        self.files = files
        self.sizes = [max(os.path.getsize(f), 1) for f in files]
        self.total_size = sum(self.sizes)
        self.speed = float(speed)
        self.file_index = -1  # index of the file being replayed
        self.cols = None  # (inst, price, qty, t_exchange) of the unit being replayed
        self.clock = None  # its pacing clock (ns), tick by tick
        self.n = 0  # its ticks
        self.at = 0  # its next tick
        self.emitted = 0
        self.t0 = 0  # pacing: wall clock (monotonic ns) at which ...
        self.x0 = 0  # ... this clock value is replayed

    # --- what a subclass provides ----------------------------------------------------------
    def _next_unit(self) -> bool:
        raise NotImplementedError

    def _more_units(self) -> bool:
        """Units left after the current one."""
        return self.file_index < len(self.files) - 1

    def _begin(self, cols, clock) -> None:
        self.cols, self.clock, self.n, self.at, self.t0 = cols, clock, len(clock), 0, 0

    def _end_unit(self) -> None:
        self.cols = self.clock = None
        self.n = self.at = self.t0 = 0

    # --- the feed interface -----------------------------------------------------------
    @property
    def position(self) -> int:
        """Ticks emitted so far: where a restarted producer continues (`advance`)."""
        return self.emitted

    def advance(self, n: int) -> None:
        """Skip the first `n` ticks (the files are read again up to there)."""
        while n > 0:
            if self.cols is None or self.at >= self.n:
                if not self._next_unit():
                    break
                continue
            k = min(n, self.n - self.at)
            self.at += k
            self.emitted += k
            n -= k
        self.t0 = 0

    @property
    def exhausted(self) -> bool:
        return (not self._more_units()
                and (self.cols is None and self.file_index >= 0
                     or self.cols is not None and self.at >= self.n))

    def poll(self, max_n: int, now_ns: int) -> FeedBatch | None:
        while self.cols is None or self.at >= self.n:
            if not self._next_unit():
                return None
        a = self.at
        n = min(max_n, self.n - a)
        if self.speed > 0:
            clock = self.clock
            if not self.t0:
                self.t0, self.x0 = now_ns, int(clock[a])
            due = int(np.searchsorted(clock, self.x0 + int((now_ns - self.t0) * self.speed),
                                      side="right")) - a
            n = min(n, due)
            if n <= 0:
                return None
        b = a + n
        self.at = b
        self.emitted += n
        inst, price, qty, tx = self.cols
        return FeedBatch(inst[a:b], price[a:b], qty[a:b], tx[a:b])

    def next_due_s(self, now_ns: int) -> float:
        if self.speed <= 0 or self.cols is None or self.at >= self.n or not self.t0:
            return 0.0
        wait = (int(self.clock[self.at]) - self.x0) / self.speed - (now_ns - self.t0)
        return wait / 1e9 if wait > 0 else 0.0

    # --- what the producer shows --------------------------------------------------------
    def pending(self) -> int:
        """Ticks of what was opened so far not emitted yet."""
        return self.n - self.at

    def progress(self) -> dict:
        """File (1-based index), position in its unit, and the share of all files' bytes
        done."""
        done = sum(self.sizes[: max(self.file_index, 0)])
        if self.file_index >= 0:
            frac = 1.0 if self.exhausted or not self.n else self.at / self.n
            done += self.sizes[self.file_index] * frac
        last_t = int(self.cols[3][self.at - 1]) if self.cols is not None and self.at else 0
        return {"file": self.file_index + 1, "files": len(self.files), "file_ticks": self.n,
                "file_position": self.at,
                "progress_ppm": int(done * 1_000_000 // self.total_size),
                "last_exchange_ns": last_t, "pending": self.pending()}
