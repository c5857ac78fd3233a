"""The ring: geometry, header layout, payload limits, resume semantics, and a model-based
property test (wrap-around, full and empty, mixed batch sizes) against a plain deque."""

from __future__ import annotations

import os
import stat
from collections import deque

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hftd import ring as ring_mod
from hftd.ring import PayloadTooLarge, Ring, RingReader, RingWriter


def ident(b):
    return bytes(b)


def test_capacity_must_be_a_power_of_two(shm_name):
    with pytest.raises(ValueError, match="capacity 6 is not a power of two"):
        Ring.create(shm_name("bad"), 6, 32)


def test_segment_is_private_to_its_user(make_ring):
    r = make_ring()
    mode = os.stat("/dev/shm/" + r.name[1:]).st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_cursors_live_on_their_own_128_byte_lines():
    offsets = {ring_mod.H_WRITE * 8, ring_mod.H_READ * 8, ring_mod.H_ASLEEP * 8}
    assert {o // 128 for o in offsets} == {1, 2, 3}


def test_payload_larger_than_a_slot_names_both_sizes(make_ring):
    w = RingWriter(make_ring(slot_size=16))
    with pytest.raises(PayloadTooLarge, match=r"payload of 17 bytes .* 16-byte slots"):
        w.offer(0, 0, b"x" * 17)
    with pytest.raises(PayloadTooLarge, match="payload of 40 bytes"):
        w.put_many([0], 0, [b"y" * 40])


def test_full_ring_refuses_and_reports_occupancy(make_ring):
    r = make_ring(capacity=4)
    w = RingWriter(r)
    assert [w.offer(0, 0, bytes([i])) for i in range(5)] == [True] * 4 + [False]
    assert r.occupancy() == 4
    rd = RingReader(r)
    assert rd.read(ident, 10) == [b"\x00", b"\x01", b"\x02", b"\x03"]
    rd.commit(2)
    assert r.occupancy() == 2 and w.claim(5) == 2


def test_envelope_carries_seq_key_and_t_ingest(make_ring):
    r = make_ring()
    w = RingWriter(r)
    w.put_many(np.array([3, 4]), np.array([100, 200]), [b"a", b"b"])
    w.publish()
    assert list(r.seq[:2]) == [0, 1] and list(r.key[:2]) == [3, 4]
    assert list(r.t_ingest[:2]) == [100, 200]


def test_a_new_reader_resumes_at_the_first_uncommitted_event(make_ring):
    r = make_ring(capacity=8)
    w = RingWriter(r)
    for i in range(6):
        w.offer(0, 0, bytes([i]))
    first = RingReader(r)
    assert len(first.read(ident, 10)) == 6
    first.commit(3)  # processed 6, committed 3, then "died"
    second = RingReader(Ring.attach(r.name))
    assert second.read(ident, 10) == [b"\x03", b"\x04", b"\x05"]
    second.ring.close()


def test_a_restarted_writer_continues_the_sequence(make_ring):
    r = make_ring()
    w = RingWriter(r)
    w.offer(0, 0, b"a")
    w2 = RingWriter(Ring.attach(r.name))
    assert w2.position == 1
    w2.offer(0, 0, b"b")
    assert RingReader(r).read(ident, 10) == [b"a", b"b"]
    w2.ring.close()


def test_forward_copies_slots_between_rings_without_decoding(make_ring):
    a, b = make_ring(capacity=8), make_ring(capacity=4)
    wa = RingWriter(a)
    for i in range(8):
        wa.put(i, 1000 + i, bytes([i]) * (i + 1))
    wa.publish()
    wb = RingWriter(b)
    wb.forward(a, np.array([1, 5, 6], dtype=np.int64))
    wb.publish()
    rb = RingReader(b)
    assert rb.read(ident, 10) == [b"\x01" * 2, b"\x05" * 6, b"\x06" * 7]
    assert list(b.key[:3]) == [1, 5, 6] and list(b.t_ingest[:3]) == [1001, 1005, 1006]
    assert list(b.seq[:3]) == [0, 1, 2]


def test_other_architectures_are_refused():
    with pytest.raises(RuntimeError, match="aarch64"):
        ring_mod.require_supported_platform("aarch64")


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.lists(st.binary(min_size=0, max_size=24), max_size=12)),
        st.tuples(st.just("read"), st.integers(min_value=0, max_value=12),
                  st.integers(min_value=0, max_value=12)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # shm_name is stateless
@given(capacity_log2=st.integers(min_value=1, max_value=4), script=ops)
def test_ring_behaves_like_a_bounded_fifo(shm_name, capacity_log2, script):
    """Mixed batch writes and reads (through wrap-around, full and empty) deliver exactly what
    a bounded FIFO would: nothing lost, nothing repeated, nothing reordered."""
    cap = 1 << capacity_log2
    r = Ring.create(shm_name("prop"), cap, 24)
    try:
        _run_script(r, cap, script)
    finally:
        r.unlink()
        r.close()


def _run_script(r, cap, script):
    w, rd = RingWriter(r), RingReader(r)
    model: deque[bytes] = deque()
    for op in script:
        if op[0] == "write":
            payloads = op[1]
            room = w.claim(len(payloads))
            assert room == min(len(payloads), cap - len(model))
            w.put_many(np.zeros(room, np.int32), 7, payloads[:room])
            w.publish()
            model.extend(payloads[:room])
        else:
            _, limit, commit = op
            got = rd.read(ident, limit)
            assert got == list(model)[:limit]
            k = min(commit, len(got))
            rd.commit(k)
            for _ in range(k):
                model.popleft()
        assert r.occupancy() == len(model)
        assert r.published - r.consumed == len(model)


@pytest.mark.parametrize("stamps", [[5] * 40, [1] * 10 + [2] * 20 + [3] * 30, list(range(100)),
                                    [7] * 3])
def test_record_ages_counts_every_event_at_its_own_age(make_ring, stamps):
    from hftd import histogram

    r = make_ring(capacity=64)
    w = RingWriter(r)
    w.put_many(np.zeros(20, np.int32), 0, [b"x"] * 20)  # move the cursors so the batch wraps
    w.publish()
    rd = RingReader(r)
    rd.commit(20)
    n = min(len(stamps), 44)
    w.put_many(np.zeros(n, np.int32), np.array(stamps[:n]), [b"y"] * n)
    w.publish()
    h = histogram.Histogram(np.zeros(histogram.WORDS, np.int64))
    rd.record_ages(h, 1000, n)
    snap = h.snapshot()
    assert snap.count == n and snap.sum == sum(1000 - s for s in stamps[:n])
