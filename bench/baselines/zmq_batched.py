"""Baseline: ZeroMQ at its strongest in the same shape: four processes over ipc:// (pyzmq),
PUSH/PULL on every hop, ticks in batches, a dispatcher that never decodes a tick.

producer -PUSH/PULL-> dispatcher -PUSH/PULL-> strategy -PUSH/PULL-> executor, and reports
executor -PUSH/PULL-> strategy. A PUSH whose peer's queue is full (high-water mark) blocks
the sender: nothing is lost, the stream slows down instead.

Ticks travel as two-frame messages: the ticks' instrument ids (one byte each, from the feed's
column), then up to 256 ticks as one msgpack array (one msgspec call to encode). The producer
sends what the feed has due, never waiting to fill a batch: unpaced a batch is 256 ticks, at
10k ticks/s mostly one. The dispatcher routes on the first frame alone and forwards the
frames as they came: a batch goes to every strategy that trades one of its instruments (here
the one strategy trades them all); a strategy decodes a batch with one msgspec call and skips
ticks of instruments not its own (it looks at them only when the first frame names one).
Orders and reports are one message each, as in the per-tick ZeroMQ design. Before the stream
starts, a warm-up goes the whole way (and an order to the executor and back), so no measured
tick waits for a connect; the strategy's READY then tells the producer to start.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import shutil
import tempfile
import time

try:
    import zmq
except ImportError:  # pragma: no cover
    raise SystemExit("zmq_batched needs pyzmq: pip install -e '.[bench]'") from None

from bench.common import (BATCH, N_INSTRUMENTS, StrategyHost, TickSource, batch_decoder,
                          batch_encode, cli, encode, fill_for, order_decoder, report_decoder)

IDLE_S = 30.0  # a stage that hears nothing for this long ends as if at end of stream
LINGER_MS = 1000
# Control messages travel as one frame; tick batches as two.
WARMUP, EOS, READY = b"warmup", b"eos", b"ready"


def endpoint(d: str, name: str) -> str:
    return f"ipc://{os.path.join(d, name)}"


def context() -> zmq.Context:
    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, LINGER_MS)
    ctx.setsockopt(zmq.RCVTIMEO, int(IDLE_S * 1000))  # recv raises zmq.Again after that,
    ctx.setsockopt(zmq.SNDTIMEO, int(IDLE_S * 1000))  # and a send whose peer is gone
    return ctx


def producer(d: str, rate: float, n: int, results) -> None:
    ctx = context()
    out = ctx.socket(zmq.PUSH)
    out.connect(endpoint(d, "ticks.in"))
    ctl = ctx.socket(zmq.PULL)
    ctl.bind(endpoint(d, "ctl.producer"))
    sent = t_first = 0
    try:
        out.send(WARMUP)
        if ctl.recv() == READY:  # the whole path is up: the measured stream starts
            source = TickSource(n, rate)
            while not source.exhausted:
                ticks, keys = source.poll_keyed(BATCH)
                if not ticks:
                    time.sleep(source.next_due_s())
                    continue
                if not sent:
                    t_first = ticks[0].t_ingest
                sent += len(ticks)
                out.send_multipart((keys, batch_encode(ticks)))
        out.send(EOS)
    except zmq.Again:  # a peer has been silent for IDLE_S
        pass
    results.put(("producer", {"sent": sent, "t_first": t_first}))
    ctx.destroy()


def dispatcher(d: str, results, subscriptions=None) -> None:
    """`subscriptions`: each strategy's instruments (default: one strategy, all of them)."""
    ctx = context()
    inp = ctx.socket(zmq.PULL)
    inp.bind(endpoint(d, "ticks.in"))
    subscriptions = subscriptions or [range(N_INSTRUMENTS)]
    routes = []
    for k, instruments in enumerate(subscriptions):
        s = ctx.socket(zmq.PUSH)
        s.connect(endpoint(d, f"ticks.s{k}"))
        routes.append((s, frozenset(instruments)))
    try:
        while True:
            frames = inp.recv_multipart(copy=False)
            if len(frames) == 1:  # control: to every strategy
                for s, _ in routes:
                    s.send(frames[0], copy=False)
                if frames[0].bytes == EOS:
                    break
                continue
            keys = frames[0].bytes
            for s, instruments in routes:
                if not instruments.isdisjoint(keys):
                    s.send_multipart(frames, copy=False)
    except zmq.Again:
        pass
    results.put(("dispatcher", {}))
    ctx.destroy()


def strategy(d: str, results, k: int = 0, instruments=range(N_INSTRUMENTS)) -> None:
    ctx = context()
    ticks = ctx.socket(zmq.PULL)
    ticks.bind(endpoint(d, f"ticks.s{k}"))
    reports = ctx.socket(zmq.PULL)
    reports.bind(endpoint(d, "reports"))
    orders = ctx.socket(zmq.PUSH)
    orders.connect(endpoint(d, "orders"))
    ctl = ctx.socket(zmq.PUSH)
    ctl.connect(endpoint(d, "ctl.producer"))
    poller = zmq.Poller()
    poller.register(ticks, zmq.POLLIN)
    poller.register(reports, zmq.POLLIN)
    mine = frozenset(instruments)
    host = StrategyHost()
    on_tick = host.on_tick
    delivered = n_orders = n_reports = t_last = 0
    ended = False
    reports_open = True

    def on_report(raw: bytes) -> bool:
        """Handle a report; False at the executor's end of stream."""
        nonlocal n_reports
        if raw == EOS:
            return False
        if raw != WARMUP:
            host.on_report(report_decoder.decode(raw))
            n_reports += 1
        return True

    try:
        while not ended:
            ready = dict(poller.poll(int(IDLE_S * 1000)))
            if not ready:
                break
            if reports in ready:
                while reports_open:
                    try:
                        reports_open = on_report(reports.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if ticks not in ready:
                continue
            frames = ticks.recv_multipart()
            if len(frames) == 1:
                if frames[0] == WARMUP:  # an order to the executor and back, then READY
                    orders.send(WARMUP)
                    if reports.recv() == WARMUP:
                        ctl.send(READY)
                elif frames[0] == EOS:
                    ended = True
                continue
            batch = batch_decoder.decode(frames[1])  # the whole batch, one call
            if not mine.issuperset(frames[0]):  # a tick of someone else's: skip those
                batch = [t for t in batch if t.instrument in mine]
            for tick in batch:
                for o in on_tick(tick):
                    orders.send(encode(o))
                    n_orders += 1
            delivered += len(batch)
            t_last = time.monotonic_ns()
        orders.send(EOS)
        while reports_open:  # the executor ends the reports after the last one
            reports_open = on_report(reports.recv())
    except zmq.Again:  # a peer has been silent for IDLE_S
        pass
    results.put(("strategy", {"delivered": delivered, "t_last": t_last, "orders": n_orders,
                              "reports": n_reports}))
    ctx.destroy()


def executor(d: str, results) -> None:
    ctx = context()
    orders = ctx.socket(zmq.PULL)
    orders.bind(endpoint(d, "orders"))
    reports = ctx.socket(zmq.PUSH)
    reports.connect(endpoint(d, "reports"))
    t2t = []
    try:
        while (raw := orders.recv()) != EOS:
            if raw == WARMUP:
                reports.send(WARMUP)
                continue
            o = order_decoder.decode(raw)
            t2t.append(time.monotonic_ns() - o.t_ingest)
            reports.send(encode(fill_for(o)))
        reports.send(EOS)
    except zmq.Again:  # nothing for IDLE_S, or the strategy is gone
        pass
    results.put(("executor", {"t2t": t2t}))
    ctx.destroy()


def run(rate: float, ticks: int) -> dict:
    mp_ctx = mp.get_context("fork")  # each child makes its own zmq context after the fork
    results = mp_ctx.Queue()
    d = tempfile.mkdtemp(prefix="hftd-bench-zmqb-")
    procs = [mp_ctx.Process(target=producer, args=(d, rate, ticks, results), name="producer"),
             mp_ctx.Process(target=dispatcher, args=(d, results), name="dispatcher"),
             mp_ctx.Process(target=strategy, args=(d, results), name="strategy"),
             mp_ctx.Process(target=executor, args=(d, results), name="executor")]
    try:
        for p in procs:
            p.start()
        res, heard = {}, set()
        while len(heard) < len(procs):  # read the results before joining
            try:
                name, r = results.get(timeout=3 * IDLE_S)
            except queue.Empty:
                break
            heard.add(name)
            res.update(r)
        for p in procs:
            p.join(5)
            if p.is_alive():
                p.terminate()
                p.join()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return res


def main(argv=None) -> None:
    cli(run, __doc__, True, argv)  # PUSH/PULL blocks, never drops: dropped = 0


if __name__ == "__main__":
    main()
