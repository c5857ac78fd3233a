"""Pieces every stage shares: the control-ring drain and end-of-stream marker."""

from __future__ import annotations

import time

from ..events import Codec, Control, ControlKind
from ..ring import CONTROL_KEY, RingWriter

_control_codec = Codec(Control)


def end_of_stream(writer: RingWriter) -> bool:
    """Put the SHUTDOWN marker (end of stream) into `writer`'s ring if there is room."""
    if not writer.claim(1):
        return False
    now = time.monotonic_ns()
    writer.put(CONTROL_KEY, now, _control_codec.encode(Control(writer.position, now,
                                                               ControlKind.SHUTDOWN)))
    writer.publish()
    return True


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
