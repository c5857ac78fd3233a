"""Baseline: four processes joined by ZeroMQ over ipc:// (pyzmq, msgpack payloads).

Ticks go producer -PUB/SUB-> dispatcher -PUB/SUB-> strategy, orders strategy -PUSH/PULL->
executor, reports executor -PUSH/PULL-> strategy. Default high-water marks (1,000): a PUB
drops silently when its subscriber is behind, and libzmq counts nothing, so the strategy
counts the ticks it never got (`dropped`) from their sequence numbers: each jump past the
next one expected, and at the end of the stream those after the last one received, up to the
stream's length. Each PUB hears its subscriber through a PUSH/PULL control channel: at the
start (warm-ups until the subscriber has them, so no measured tick meets a slow joiner) and
at the end (end of stream repeated until acknowledged); the strategy also bounces a warm-up
order off the executor before it says it is ready.
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
    raise SystemExit("zmq_pipeline needs pyzmq: pip install -e '.[bench]'") from None

from bench.common import (N_INSTRUMENTS, StrategyHost, TickSource, cli, encode, fill_for,
                          order_decoder, report_decoder, tick_decoder)

FEED_BATCH = 100  # most ticks taken from the feed per poll (each is sent on its own)
RECV_BATCH = 100  # most ticks the strategy takes per poll before it looks at reports again
IDLE_S = 30.0  # a stage that hears nothing for this long ends as if at end of stream
RESEND_MS = 5  # warm-up / end-of-stream repeat interval while waiting for the answer
LINGER_MS = 1000
# Control messages (a msgpack Tick is longer and starts with 0x96, so they cannot clash).
WARMUP, EOS, READY, EOS_ACK = b"warmup", b"eos", b"ready", b"eos-ack"


def endpoint(d: str, name: str) -> str:
    return f"ipc://{os.path.join(d, name)}"


def context() -> zmq.Context:
    ctx = zmq.Context()
    ctx.setsockopt(zmq.LINGER, LINGER_MS)
    ctx.setsockopt(zmq.RCVTIMEO, int(IDLE_S * 1000))  # recv raises zmq.Again after that,
    ctx.setsockopt(zmq.SNDTIMEO, int(IDLE_S * 1000))  # and a PUSH with no peer left
    return ctx


def subscriber(ctx: zmq.Context, addr: str) -> zmq.Socket:
    s = ctx.socket(zmq.SUB)
    s.linger = 0  # it sends nothing that matters (else it lingers on a gone publisher)
    s.setsockopt(zmq.SUBSCRIBE, b"")
    s.connect(addr)
    return s


def until_answered(pub: zmq.Socket, msg: bytes, ctl: zmq.Socket, answer: bytes) -> bool:
    """Publish `msg` every RESEND_MS until `answer` arrives on `ctl` (False after IDLE_S)."""
    deadline = time.monotonic() + IDLE_S
    while time.monotonic() < deadline:
        pub.send(msg)
        if ctl.poll(RESEND_MS) and ctl.recv() == answer:
            return True
    return False


def wait_for(sub: zmq.Socket, msg: bytes) -> bool:
    try:
        while sub.recv() != msg:
            pass
        return True
    except zmq.Again:
        return False


def path_is_up(orders: zmq.Socket, reports: zmq.Socket) -> bool:
    """Strategy side: a warm-up order comes back from the executor as a warm-up report (so
    no measured order waits for a connect to be retried)."""
    orders.send(WARMUP)
    try:
        return reports.recv() == WARMUP
    except zmq.Again:
        return False


def producer(d: str, rate: float, n: int, results) -> None:
    ctx = context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint(d, "ticks.in"))
    ctl = ctx.socket(zmq.PULL)
    ctl.bind(endpoint(d, "ctl.producer"))
    sent = t_first = 0
    # Slow joiner: measured ticks start once the dispatcher, and the strategy behind it,
    # receive our warm-ups.
    if until_answered(pub, WARMUP, ctl, READY):
        source = TickSource(n, rate)
        while not source.exhausted:
            ticks = source.poll(FEED_BATCH)
            if not ticks:
                time.sleep(source.next_due_s())
                continue
            if not sent:
                t_first = ticks[0].t_ingest
            sent += len(ticks)
            for t in ticks:
                pub.send(encode(t))
    until_answered(pub, EOS, ctl, EOS_ACK)  # a slow subscriber may drop it: repeat
    results.put(("producer", {"sent": sent, "t_first": t_first}))
    ctx.destroy()


def dispatcher(d: str, results) -> None:
    ctx = context()
    sub = subscriber(ctx, endpoint(d, "ticks.in"))
    pub = ctx.socket(zmq.PUB)
    pub.bind(endpoint(d, "ticks.out"))
    ctl_in = ctx.socket(zmq.PULL)
    ctl_in.bind(endpoint(d, "ctl.dispatcher"))
    ctl_out = ctx.socket(zmq.PUSH)
    ctl_out.connect(endpoint(d, "ctl.producer"))
    if wait_for(sub, WARMUP) and until_answered(pub, WARMUP, ctl_in, READY):
        ctl_out.send(READY)
        routes = [pub] * N_INSTRUMENTS
        while True:
            try:
                raw = sub.recv()
            except zmq.Again:
                break
            if raw == EOS:
                ctl_out.send(EOS_ACK)
                break
            if raw != WARMUP:
                routes[tick_decoder.decode(raw).instrument].send(raw)
    until_answered(pub, EOS, ctl_in, EOS_ACK)
    results.put(("dispatcher", {}))
    ctx.destroy()


def strategy(d: str, n: int, results) -> None:
    ctx = context()
    sub = subscriber(ctx, endpoint(d, "ticks.out"))
    reports = ctx.socket(zmq.PULL)
    reports.bind(endpoint(d, "reports"))
    orders = ctx.socket(zmq.PUSH)
    orders.connect(endpoint(d, "orders"))
    ctl = ctx.socket(zmq.PUSH)
    ctl.connect(endpoint(d, "ctl.dispatcher"))
    poller = zmq.Poller()
    poller.register(sub, zmq.POLLIN)
    poller.register(reports, zmq.POLLIN)
    host = StrategyHost()
    delivered = n_orders = n_reports = t_last = 0
    missed = expect = 0  # ticks missing from the sequence; the next seq expected
    ready = ended = False
    reports_open = True

    def on_report(raw: bytes) -> bool:
        """Handle a report; False at the executor's end of stream."""
        nonlocal n_reports
        if raw == EOS:
            return False
        host.on_report(report_decoder.decode(raw))
        n_reports += 1
        return True

    try:
        while not ended:
            ready_socks = dict(poller.poll(int(IDLE_S * 1000)))
            if not ready_socks:
                break
            if reports in ready_socks:
                while reports_open:
                    try:
                        reports_open = on_report(reports.recv(zmq.NOBLOCK))
                    except zmq.Again:
                        break
            if sub not in ready_socks:
                continue
            for _ in range(RECV_BATCH):
                try:
                    raw = sub.recv(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if raw == WARMUP:
                    if not ready and path_is_up(orders, reports):
                        ctl.send(READY)
                        ready = True
                elif raw == EOS:
                    ctl.send(EOS_ACK)
                    ended = True
                    break
                else:
                    delivered += 1
                    t_last = time.monotonic_ns()
                    tick = tick_decoder.decode(raw)
                    if tick.seq >= expect:  # the ones in between were dropped on the way
                        missed += tick.seq - expect
                        expect = tick.seq + 1
                    for o in host.on_tick(tick):
                        orders.send(encode(o))
                        n_orders += 1
        orders.send(EOS)
        while reports_open:  # the executor ends the reports after the last one
            reports_open = on_report(reports.recv())
    except zmq.Again:  # a peer has been silent for IDLE_S
        pass
    missed += max(n - expect, 0)  # dropped after the last one received
    results.put(("strategy", {"delivered": delivered, "t_last": t_last, "orders": n_orders,
                              "reports": n_reports, "dropped": missed}))
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
    except zmq.Again:  # nothing for IDLE_S: end as if at end of stream
        pass
    try:
        reports.send(EOS)
    except zmq.Again:  # the strategy is gone
        pass
    results.put(("executor", {"t2t": t2t}))
    ctx.destroy()


def run(rate: float, ticks: int) -> dict:
    mp_ctx = mp.get_context("fork")  # each child makes its own zmq context after the fork
    results = mp_ctx.Queue()
    d = tempfile.mkdtemp(prefix="hftd-bench-zmq-")
    procs = [mp_ctx.Process(target=producer, args=(d, rate, ticks, results), name="producer"),
             mp_ctx.Process(target=dispatcher, args=(d, results), name="dispatcher"),
             mp_ctx.Process(target=strategy, args=(d, ticks, results), name="strategy"),
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
    cli(run, __doc__, True, argv)  # PUB/SUB drops silently: counted by the strategy as missing


if __name__ == "__main__":
    main()
