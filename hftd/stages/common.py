"""Pieces the stages share: the control-ring drain, the end-of-stream marker, the outbox of
a ring that never drops (orders, reports), and fixed-point gauge values."""

from __future__ import annotations

import time
from collections import deque

from ..events import Codec, Control, ControlKind
from ..ring import CONTROL_KEY, RingWriter

_control_codec = Codec(Control)
_INT64 = (1 << 63) - 1


def fixed(x: float, scale: int) -> int:
    """`x` * scale as an int64 gauge value (rounded, clamped: a gauge never overflows).
    Money is kept in hundredths of the currency (scale 100)."""
    if x != x:  # NaN: never from the arithmetic, but a gauge must not raise
        return 0
    v = round(x * scale) if -9e18 < x * scale < 9e18 else (_INT64 if x > 0 else -_INT64)
    return _INT64 if v > _INT64 else -_INT64 if v < -_INT64 else v


def offer_control(writer: RingWriter, kind: int, arg: int = 0) -> bool:
    """Write and publish a control event of `kind` if the ring has room."""
    now = time.monotonic_ns()
    return writer.offer(CONTROL_KEY, now,
                        _control_codec.encode(Control(writer.position, now, kind, arg)))


def end_of_stream(writer: RingWriter) -> bool:
    """Put the SHUTDOWN marker (end of stream) into `writer`'s ring if there is room."""
    return offer_control(writer, ControlKind.SHUTDOWN)


def read_control(reader) -> list[Control]:
    """Everything waiting on an agent's control ring (committed at once: control is tiny)."""
    if reader.available() <= 0:
        return []
    events = reader.read(_control_codec.decode, 64)
    reader.commit(len(events))
    return events


def decode_control(reader, position: int) -> Control:
    """Decode the in-band control event at `position` of a data ring."""
    return _control_codec.decode(reader.payload(position))


class Outbox:
    """Events for a ring that never drops them (orders, reports): written at once when
    nothing waits and there is room, else kept here in order until `flush` finds room.
    Waiting longer than `deadline_ns` (0: never) without progress calls `overdue(n)` with
    the number waiting: the stage raises its alarm and trips the kill switch."""

    def __init__(self, writer: RingWriter, encode, deadline_ns: int, sent, overdue):
        self.writer = writer
        self.encode = encode
        self.deadline_ns = deadline_ns
        self.sent = sent  # stats Value counting events written
        self.overdue = overdue
        self.waiting: deque = deque()
        self.since = 0  # when the oldest waiting event last saw progress

    def __len__(self) -> int:
        return len(self.waiting)

    def send(self, ev) -> None:
        """Write and publish `ev` now if possible (an order never waits for its batch)."""
        w = self.writer
        if not self.waiting and w.claim(1):
            ev.seq = w.position
            w.put(0, ev.t_ingest, self.encode(ev))
            w.publish()
            self.sent.add()
        else:
            self.waiting.append(ev)

    def add(self, ev) -> None:
        """Queue `ev` for the next `flush` (one publish for many events)."""
        self.waiting.append(ev)

    def flush(self) -> int:
        w = self.writer
        waiting = self.waiting
        n = w.claim(len(waiting))
        for _ in range(n):
            ev = waiting.popleft()
            ev.seq = w.position
            w.put(0, ev.t_ingest, self.encode(ev))
        if n:
            w.publish()
            self.sent.add(n)
        if not waiting:
            self.since = 0
        elif n or not self.since:
            self.since = time.monotonic_ns()
        elif self.deadline_ns and time.monotonic_ns() - self.since > self.deadline_ns:
            self.overdue(len(waiting))
            self.since = time.monotonic_ns()
        return n
