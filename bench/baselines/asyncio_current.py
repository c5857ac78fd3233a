"""Baseline: the seed's current design. One process, asyncio, four coroutine stages.

producer -> FIFO (deque of 1,000 events; a tick that finds it full is dropped and counted)
-> dispatcher (polls the FIFO, sleeping 10 ms when it is empty, drains it on each wake-up)
-> strategy inbox (asyncio.Queue: ticks, and the executor's reports) -> executor (asyncio.Queue).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from hftd.events import Tick

from bench.common import N_INSTRUMENTS, StrategyHost, TickSource, cli, fill_for

FIFO_CAP = 1000
POLL_S = 0.01  # dispatcher's sleep when the FIFO is empty
FEED_BATCH = 100  # most ticks taken from the feed per poll
IDLE_S = 30.0  # a stage that hears nothing for this long ends as if at end of stream
EOS = None  # end-of-stream marker, passed from stage to stage


class Stats:
    sent = dropped = delivered = orders = reports = 0
    t_first = t_last = 0

    def __init__(self):
        self.t2t: list[int] = []

    def result(self) -> dict:
        return {k: getattr(self, k) for k in ("sent", "dropped", "delivered", "orders", "reports",
                                              "t_first", "t_last", "t2t")}


async def recv(q: asyncio.Queue):
    """q's next item, or EOS after IDLE_S of silence."""
    try:
        return q.get_nowait()
    except asyncio.QueueEmpty:
        try:
            async with asyncio.timeout(IDLE_S):
                return await q.get()
        except TimeoutError:
            return EOS


async def producer(source: TickSource, fifo: deque, st: Stats) -> None:
    while not source.exhausted:
        ticks = source.poll(FEED_BATCH)
        if not ticks:
            await asyncio.sleep(source.next_due_s())
            continue
        if not st.sent:
            st.t_first = ticks[0].t_ingest
        st.sent += len(ticks)
        for t in ticks:
            if len(fifo) < FIFO_CAP:
                fifo.append(t)
            else:
                st.dropped += 1
        await asyncio.sleep(0)  # let the other stages run
    fifo.append(EOS)  # control is never dropped


async def dispatcher(fifo: deque, routes: list[asyncio.Queue]) -> None:
    idle_since = time.monotonic()
    ended = False
    while not ended:
        if not fifo:
            if time.monotonic() - idle_since > IDLE_S:
                break
            await asyncio.sleep(POLL_S)
            continue
        while fifo:  # drain everything present
            t = fifo.popleft()
            if t is EOS:
                ended = True
                break
            routes[t.instrument].put_nowait(t)
        idle_since = time.monotonic()
    for q in set(routes):
        q.put_nowait(EOS)


async def strategy(inbox: asyncio.Queue, orders: asyncio.Queue, st: Stats) -> None:
    host = StrategyHost()
    ticks_ended = False
    while True:
        ev = await recv(inbox)
        if ev is EOS:
            if ticks_ended:  # the executor's: every report is in
                break
            ticks_ended = True  # the dispatcher's: pass it on to the executor
            orders.put_nowait(EOS)
        elif ev.__class__ is Tick:
            st.delivered += 1
            st.t_last = time.monotonic_ns()
            for o in host.on_tick(ev):
                orders.put_nowait(o)
                st.orders += 1
        else:
            host.on_report(ev)
            st.reports += 1


async def executor(orders: asyncio.Queue, inbox: asyncio.Queue, st: Stats) -> None:
    while (o := await recv(orders)) is not EOS:
        st.t2t.append(time.monotonic_ns() - o.t_ingest)
        inbox.put_nowait(fill_for(o))
    inbox.put_nowait(EOS)


async def run(rate: float, ticks: int) -> Stats:
    st = Stats()
    fifo: deque = deque()
    inbox: asyncio.Queue = asyncio.Queue()
    orders: asyncio.Queue = asyncio.Queue()
    await asyncio.gather(producer(TickSource(ticks, rate), fifo, st),
                         dispatcher(fifo, [inbox] * N_INSTRUMENTS),
                         strategy(inbox, orders, st), executor(orders, inbox, st))
    return st


def main(argv=None) -> None:
    cli(lambda rate, ticks: asyncio.run(run(rate, ticks)).result(), __doc__, True, argv)


if __name__ == "__main__":
    main()
