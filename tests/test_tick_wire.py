"""Ticks in the fixed-width wire form (hftd.events): any msgspec decoder reads them as the
Tick they are; runs of them are viewed as numpy columns without decoding; the ring writes
them with one assignment and forwards runs with slice copies, wrapping or not."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from hftd.events import (TICK_BYTES, Codec, Control, ControlKind, Tick, TickStream,
                         encode_tick, encode_ticks, tick_columns)
from hftd.ring import CONTROL_KEY, RingReader, RingWriter

decode = Codec(TickStream).decode
minimal = Codec(TickStream).encode  # msgspec's own encoding: the smallest integers
I64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(I64, I64, I64, I64, I64, I64), min_size=1, max_size=20))
def test_the_wire_form_decodes_as_the_tick_it_encodes(rows):
    cols = list(zip(*rows))
    seq0 = rows[0][0] if rows[0][0] < 2**63 - 64 else 0
    block = encode_ticks(seq0, np.array(cols[1], np.int64), np.array(cols[2], np.int64),
                         np.array(cols[3], np.int64), np.array(cols[4], np.int64),
                         np.array(cols[5], np.int64))
    assert block.shape == (len(rows), TICK_BYTES)
    for k, r in enumerate(rows):
        want = Tick(seq0 + k, *r[1:])
        assert decode(block[k].tobytes()) == want
        assert encode_tick(seq0 + k, *r[1:]) == block[k].tobytes()
    assert msgspec.msgpack.Decoder(list[TickStream]).decode(
        bytes([0xDC]) + len(rows).to_bytes(2, "big") + block.tobytes()) == [
        Tick(seq0 + k, *r[1:]) for k, r in enumerate(rows)]


@pytest.fixture
def ring(make_ring):
    return make_ring(16, 64)


def _write(w: RingWriter, ticks: list[tuple]) -> None:
    """Wire-form ticks (seq, t_ingest, instrument, price, qty, t_exchange), seq = position."""
    cols = list(zip(*ticks))
    w.put_rows(np.array(cols[2], np.int32), np.array(cols[1], np.int64),
               encode_ticks(w.position, *(np.array(c, np.int64) for c in cols[1:])))


def test_columns_stop_at_what_is_not_in_the_wire_form_and_across_the_wrap(ring):
    w = RingWriter(ring)
    r = RingReader(ring)
    _write(w, [(0, 100 + k, k % 3, 20_000 + k, 1 + k, 7) for k in range(10)])
    w.put(CONTROL_KEY, 5, Codec(Control).encode(Control(w.position, 5, ControlKind.PAUSE)))
    w.put(1, 6, minimal(Tick(w.position, 6, 1, 19_999, 2)))  # msgspec's own form
    w.publish()
    k, cols = tick_columns(ring, 0, r.available())
    assert k == 10 and cols.seq.tolist() == list(range(10))
    assert cols.price.tolist() == [20_000 + k for k in range(10)]
    assert cols.ticks() == [decode(ring.payload(p)) for p in range(10)]
    r.commit(10)
    assert tick_columns(ring, 10, r.available()) == (2, None)  # the control and the other tick
    r.commit(2)
    # 12 written: 6 more wrap past the end of the 16-slot ring
    _write(w, [(0, 200 + k, 2, 30_000 + k, 1, 0) for k in range(6)])
    w.publish()
    k, cols = tick_columns(ring, 12, r.available())
    assert k == 4 and cols.seq.tolist() == [12, 13, 14, 15]  # up to the ring's end ...
    r.commit(4)
    k, cols = tick_columns(ring, 16, r.available())
    assert k == 2 and cols.seq.tolist() == [16, 17]  # ... and the rest from its start
    assert cols.ticks() == [decode(ring.payload(p)) for p in (16, 17)]


def test_forward_copies_runs_and_scattered_positions_alike(make_ring):
    src, dst = make_ring(16, 64), make_ring(16, 64)
    w, out, rd = RingWriter(src), RingWriter(dst), RingReader(dst)
    for lap in range(5):  # both rings' cursors wrap at different places
        n = 11 if lap % 2 else 7
        _write(w, [(0, lap, k % 4, 1000 * lap + k, 1, 0) for k in range(n)])
        w.publish()
        first = w.position - n
        runs = [np.arange(first, first + n)]  # a run, then every other one
        runs.append(runs[0][::2])
        for pos in runs:
            if rd.available() + len(pos) > 16:
                rd.commit(rd.available())
            out.forward(src, pos)
            out.publish()
            for q, p in zip(range(out.position - len(pos), out.position), pos.tolist()):
                got, want = decode(dst.payload(q)), decode(src.payload(p))
                assert got == want and dst.i_key[q & 15] == src.i_key[p & 15]
                assert dst.q_seq[q & 15] == q
