"""Baseline: four processes (multiprocessing, fork) joined by multiprocessing.Queue.

producer -> dispatcher -> strategy -> executor, and executor -> strategy for reports. One
msgspec-encoded event per put; the tick queues hold 1,000 events (a full one blocks the
sender: no loss), orders and reports are unbounded. A None item is the end of stream.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time

from bench.common import (N_INSTRUMENTS, StrategyHost, TickSource, cli, encode, fill_for,
                          order_decoder, report_decoder, tick_decoder)

QUEUE_CAP = 1000
FEED_BATCH = 100  # most ticks taken from the feed per poll (each is put on its own)
IDLE_S = 30.0  # a stage that hears nothing for this long ends as if at end of stream
EOS = None


def get(q, timeout: float = IDLE_S):
    """q's next item, or EOS after `timeout` of silence."""
    try:
        return q.get(timeout=timeout)
    except queue.Empty:
        return EOS


def producer(rate: float, n: int, out, results) -> None:
    source = TickSource(n, rate)
    sent = t_first = 0
    try:
        while not source.exhausted:
            ticks = source.poll(FEED_BATCH)
            if not ticks:
                time.sleep(source.next_due_s())
                continue
            if not sent:
                t_first = ticks[0].t_ingest
            sent += len(ticks)
            for t in ticks:
                out.put(encode(t), timeout=IDLE_S)
        out.put(EOS, timeout=IDLE_S)
    except queue.Full:  # nobody has read for IDLE_S: the dispatcher is gone
        out.cancel_join_thread()
    results.put(("producer", {"sent": sent, "t_first": t_first}))


def dispatcher(inp, routes: list, results) -> None:
    try:
        while (raw := get(inp)) is not EOS:
            routes[tick_decoder.decode(raw).instrument].put(raw, timeout=IDLE_S)
        for q in set(routes):
            q.put(EOS, timeout=IDLE_S)
    except queue.Full:  # nobody has read for IDLE_S: the strategy is gone
        for q in set(routes):
            q.cancel_join_thread()
    results.put(("dispatcher", {}))


def strategy(ticks, orders, reports, results) -> None:
    host = StrategyHost()
    delivered = n_orders = n_reports = t_last = 0
    reports_open = True

    def on_report(raw) -> bool:
        """Handle a report; False at the executor's end of stream."""
        nonlocal n_reports
        if raw is EOS:
            return False
        host.on_report(report_decoder.decode(raw))
        n_reports += 1
        return True

    while (raw := get(ticks)) is not EOS:
        while reports_open:  # the reports that are in, before the next tick
            try:
                reports_open = on_report(reports.get_nowait())
            except queue.Empty:
                break
        delivered += 1
        t_last = time.monotonic_ns()
        for o in host.on_tick(tick_decoder.decode(raw)):
            orders.put(encode(o))
            n_orders += 1
    orders.put(EOS)
    while reports_open:  # the executor ends the reports after the last one
        reports_open = on_report(get(reports))
    results.put(("strategy", {"delivered": delivered, "t_last": t_last, "orders": n_orders,
                              "reports": n_reports}))


def executor(orders, reports, results) -> None:
    t2t = []
    while (raw := get(orders)) is not EOS:
        o = order_decoder.decode(raw)
        t2t.append(time.monotonic_ns() - o.t_ingest)
        reports.put(encode(fill_for(o)))
    reports.put(EOS)
    results.put(("executor", {"t2t": t2t}))


def run(rate: float, ticks: int) -> dict:
    ctx = mp.get_context("fork")
    q_in, q_routed = ctx.Queue(QUEUE_CAP), ctx.Queue(QUEUE_CAP)
    q_orders, q_reports, results = ctx.Queue(), ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=producer, args=(rate, ticks, q_in, results), name="producer"),
             ctx.Process(target=dispatcher, args=(q_in, [q_routed] * N_INSTRUMENTS, results),
                         name="dispatcher"),
             ctx.Process(target=strategy, args=(q_routed, q_orders, q_reports, results),
                         name="strategy"),
             ctx.Process(target=executor, args=(q_orders, q_reports, results), name="executor")]
    for p in procs:
        p.start()
    res, heard = {}, set()
    while len(heard) < len(procs):  # read the results before joining: a child exits once read
        try:
            name, r = results.get(timeout=2 * IDLE_S)
        except queue.Empty:
            break
        heard.add(name)
        res.update(r)
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.terminate()
            p.join()
    return res


def main(argv=None) -> None:
    cli(run, __doc__, True, argv)  # lossless by design: dropped = 0


if __name__ == "__main__":
    main()
