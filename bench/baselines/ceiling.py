"""The ceiling: the strategy's own limit. The same Momentum code (through the same
StrategyHost) fed the same ticks in one process, with no IPC: the ticks are taken from the
feed and encoded beforehand, in batches of 256 (one msgpack array each, as the batched
designs send them); the timed loop decodes each batch with one msgspec call and hands its
ticks to the strategy, and every order is filled at once (`fill_for`, applied to the
strategy's book and callbacks as a report). Producing and encoding the ticks, and the
executor's work, are outside the timed loop: what is timed is what a strategy stage cannot
avoid doing. No tick-to-trade (there is no trade path to time); unpaced only.
"""

from __future__ import annotations

import sys
import time

from bench.common import BATCH, StrategyHost, TickSource, batch_decoder, batch_encode, cli, fill_for


def run(rate: float, ticks: int) -> dict:
    if rate:
        sys.exit("the ceiling runs unpaced only (--rate 0)")
    source = TickSource(ticks, 0)
    batches = []
    while not source.exhausted:
        b = source.poll(BATCH)
        if b:
            batches.append(batch_encode(b))
    host = StrategyHost()
    on_tick, on_report, decode = host.on_tick, host.on_report, batch_decoder.decode
    delivered = n_orders = 0
    t_first = time.monotonic_ns()
    for raw in batches:
        batch = decode(raw)
        for tick in batch:
            for o in on_tick(tick):
                on_report(fill_for(o))
                n_orders += 1
        delivered += len(batch)
    t_last = time.monotonic_ns()
    return {"sent": source.seq, "delivered": delivered, "t_first": t_first, "t_last": t_last,
            "orders": n_orders, "reports": n_orders, "t2t": []}


def main(argv=None) -> None:
    cli(run, __doc__, True, argv)


if __name__ == "__main__":
    main()
