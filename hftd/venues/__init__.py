"""Venue adapters: turn OrderRequests into orders at a venue and its answers into reports.

A venue has ``submit(order, owner, now_ns) -> (kind, reason)`` (accept = ACK, or REJECT with
a reason), ``poll(now_ns) -> [(owner, order, fill_qty, fill_price)]`` for fills now due,
``next_due_ns() -> int | None`` (so the executor parks no longer than that),
``pending(owner) -> int`` and ``cancel_all(owner) -> [order]`` for the end of a stream.
"""


def make(cfg):
    if cfg.executor.venue == "sim":
        from .sim import SimVenue

        return SimVenue(int(cfg.executor.sim.latency_us * 1000))
    raise ValueError(f"executor.venue: unknown venue {cfg.executor.venue!r}")
