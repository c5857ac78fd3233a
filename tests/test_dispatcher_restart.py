"""A dispatcher that dies after publishing a batch to some or all of its output rings but
before committing its input: its successor routes no tick twice and loses none, and its
counters are exact (re-derived from the rings' cursors). In-process and deterministic: the
death is an exception raised at the chosen point, the restart a new Dispatcher on the same
shared memory with the restart count set, as the supervisor does."""

from __future__ import annotations

import pytest

from hftd import stats
from hftd.events import Codec, Tick, TickStream
from hftd.ring import RingReader, RingWriter
from hftd.stages import Dispatcher
from test_flow import _write_eos, _write_ticks

enc = Codec(TickStream)


class Died(Exception):
    pass


def _die(*_a, **_k):
    raise Died


def _run_to_end(disp, w, readers):
    got = {name: [] for name in readers}
    eos = False
    for _ in range(10_000):
        eos = eos or _write_eos(w)
        disp.do_work()
        for name, r in readers.items():
            evs = r.read(enc.decode, 4096)
            r.commit(len(evs))
            got[name] += [t.seq for t in evs if isinstance(t, Tick)]
        if disp.done:
            return got
    raise AssertionError("the dispatcher never ended")


@pytest.mark.parametrize("n", [5, 300])  # the scalar path and the column-wise path
@pytest.mark.parametrize("dies", ["before_commit", "between_rings"])
def test_a_restarted_dispatcher_routes_no_tick_twice_and_counts_exactly(plant, n, dies):
    p = plant({"rings": {"ticks": {"capacity": 1024}}, "dispatcher": {"batch": 512}})
    first = Dispatcher(p.context("dispatcher"))
    w = RingWriter(p.ring("ticks.in"))
    assert _write_ticks(w, [(k % 5, 1000 + k) for k in range(n)]) == n
    if dies == "before_commit":
        first.inp.commit = _die  # every output ring was published, the input not committed
    else:
        first.outs[-1].writer.publish = _die  # the strategy's ring got it, the executor's not
    with pytest.raises(Died):
        first.do_work()
    strategy_had = p.ring("ticks.sample").published
    executor_had = p.ring("ticks.executor").published
    # (the batch limit grows with the input's occupancy: the first pass may take part of it)
    assert 0 < strategy_had <= n
    assert executor_had == (strategy_had if dies == "before_commit" else 0)
    assert p.ring("ticks.in").consumed == 0

    ctx = p.context("dispatcher")
    ctx.stats.q_header[stats.H_RESTARTS] = 1
    second = Dispatcher(ctx)
    readers = {"sample": RingReader(p.ring("ticks.sample")),
               "executor": RingReader(p.ring("ticks.executor"))}
    assert _write_ticks(w, [(k % 5, 2000 + k) for k in range(n)]) == n
    got = _run_to_end(second, w, readers)
    for name in readers:
        assert got[name] == list(range(2 * n)), name  # each tick once, in order
        assert p.ring(f"ticks.{name}").published == 2 * n + 1  # + the end-of-stream marker
    st = ctx.stats
    assert st.get("ticks_in") == 2 * n
    assert st.get("replays_skipped.sample") == strategy_had
    assert st.get("replays_skipped.executor") == executor_had
    for name in readers:
        assert st.get(f"delivered.{name}") == st.get(f"routed.{name}") == 2 * n, name
    assert st.get("ticks_out") == 4 * n


def test_a_restarted_dispatcher_does_not_repeat_the_end_of_stream(plant):
    """Killed after passing on the end-of-stream marker to the strategy's ring only: the
    successor passes it to the executor's ring and ends; the strategy gets one marker."""
    p = plant({"rings": {"ticks": {"capacity": 1024}}})
    first = Dispatcher(p.context("dispatcher"))
    w = RingWriter(p.ring("ticks.in"))
    _write_ticks(w, [(0, 1000)])
    first.do_work()
    _write_eos(w)
    real = first.outs[-1].writer.offer
    first.outs[-1].writer.offer = _die
    with pytest.raises(Died):
        first.do_work()
    first.outs[-1].writer.offer = real
    assert p.ring("ticks.sample").published == 2 and p.ring("ticks.executor").published == 1
    ctx = p.context("dispatcher")
    ctx.stats.q_header[stats.H_RESTARTS] = 1
    second = Dispatcher(ctx)
    for _ in range(10):
        second.do_work()
        if second.done:
            break
    assert second.done
    assert p.ring("ticks.sample").published == 2  # one tick, one marker
    assert p.ring("ticks.executor").published == 2
    assert ctx.stats.get("delivered.sample") == ctx.stats.get("delivered.executor") == 1
