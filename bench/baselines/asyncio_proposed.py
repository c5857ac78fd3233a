"""Baseline: the seed's proposed design. One process, asyncio, four coroutine stages.

producer -> FIFO (deque of 1,000 events; the producer waits while it is 80 % full: no loss)
-> dispatcher (polls every 1 ms when empty, moves batches of up to 100) -> strategy inbox
(asyncio.PriorityQueue: end of stream, then the executor's reports, then ticks) -> executor.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque

from hftd.events import Tick

from bench.common import N_INSTRUMENTS, StrategyHost, TickSource, cli, fill_for

FIFO_CAP = 1000
HIGH_WATER = FIFO_CAP * 8 // 10  # the producer waits while the FIFO holds this many
BACKOFF_S = 0.001  # producer's wait under backpressure
POLL_S = 0.001  # dispatcher's sleep when the FIFO is empty
BATCH = 100  # most ticks the dispatcher moves per wake-up; most taken from the feed per poll
IDLE_S = 30.0  # a stage that hears nothing for this long ends as if at end of stream
EOS = None  # end-of-stream marker, passed from stage to stage
PRIO_CONTROL, PRIO_REPORT, PRIO_TICK = 0, 1, 2
_order = itertools.count()  # FIFO within a priority (and items are never compared)


class Stats:
    sent = dropped = delivered = orders = reports = 0
    t_first = t_last = 0

    def __init__(self):
        self.t2t: list[int] = []

    def result(self) -> dict:
        return {k: getattr(self, k) for k in ("sent", "dropped", "delivered", "orders", "reports",
                                              "t_first", "t_last", "t2t")}


async def recv(q: asyncio.Queue, on_timeout=EOS):
    """q's next item, or `on_timeout` after IDLE_S of silence."""
    try:
        return q.get_nowait()
    except asyncio.QueueEmpty:
        try:
            async with asyncio.timeout(IDLE_S):
                return await q.get()
        except TimeoutError:
            return on_timeout


def put(q: asyncio.PriorityQueue, prio: int, item) -> None:
    q.put_nowait((prio, next(_order), item))


async def producer(source: TickSource, fifo: deque, st: Stats) -> None:
    while not source.exhausted:
        while len(fifo) >= HIGH_WATER:  # backpressure instead of loss
            await asyncio.sleep(BACKOFF_S)
        ticks = source.poll(min(BATCH, FIFO_CAP - len(fifo)))
        if not ticks:
            await asyncio.sleep(source.next_due_s())
            continue
        if not st.sent:
            st.t_first = ticks[0].t_ingest
        st.sent += len(ticks)
        fifo.extend(ticks)
        await asyncio.sleep(0)  # let the other stages run
    fifo.append(EOS)


async def dispatcher(fifo: deque, routes: list[asyncio.PriorityQueue]) -> None:
    idle_since = time.monotonic()
    ended = False
    while not ended:
        if not fifo:
            if time.monotonic() - idle_since > IDLE_S:
                break
            await asyncio.sleep(POLL_S)
            continue
        for _ in range(min(BATCH, len(fifo))):
            t = fifo.popleft()
            if t is EOS:
                ended = True
                break
            put(routes[t.instrument], PRIO_TICK, t)
        idle_since = time.monotonic()
        await asyncio.sleep(0)  # one batch per turn of the loop
    for q in set(routes):
        put(q, PRIO_CONTROL, EOS)


async def strategy(inbox: asyncio.PriorityQueue, orders: asyncio.Queue, st: Stats) -> None:
    host = StrategyHost()

    def handle(ev) -> None:
        if ev.__class__ is Tick:
            st.delivered += 1
            st.t_last = time.monotonic_ns()
            for o in host.on_tick(ev):
                orders.put_nowait(o)
                st.orders += 1
        else:
            host.on_report(ev)
            st.reports += 1

    ended = 0  # 1: the dispatcher's end of stream seen, 2: the executor's too
    while ended < 2:
        ev = (await recv(inbox, (PRIO_CONTROL, -1, EOS)))[2]
        if ev is not EOS:
            handle(ev)
            continue
        # Control outranks what was queued before it: drain, then act on it.
        while not inbox.empty():
            ev = inbox.get_nowait()[2]
            if ev is not EOS:
                handle(ev)
        ended += 1
        if ended == 1:
            orders.put_nowait(EOS)


async def executor(orders: asyncio.Queue, inbox: asyncio.PriorityQueue, st: Stats) -> None:
    while (o := await recv(orders)) is not EOS:
        st.t2t.append(time.monotonic_ns() - o.t_ingest)
        put(inbox, PRIO_REPORT, fill_for(o))
    put(inbox, PRIO_CONTROL, EOS)


async def run(rate: float, ticks: int) -> Stats:
    st = Stats()
    fifo: deque = deque()
    inbox: asyncio.PriorityQueue = asyncio.PriorityQueue()
    orders: asyncio.Queue = asyncio.Queue()
    await asyncio.gather(producer(TickSource(ticks, rate), fifo, st),
                         dispatcher(fifo, [inbox] * N_INSTRUMENTS),
                         strategy(inbox, orders, st), executor(orders, inbox, st))
    return st


def main(argv=None) -> None:
    cli(lambda rate, ticks: asyncio.run(run(rate, ticks)).result(), __doc__, True, argv)


if __name__ == "__main__":
    main()
