"""Venue adapters: turn the executor's orders into orders at a venue, and the venue's answers
into (owner, client_id, ReportKind, qty, price, reason) events.

A venue has the interface of `hftd.trading.fillmodel.SimVenue`: requests `submit`, `cancel`,
`replace`, `cancel_all(owner, now_ns)` that take effect after the venue's latency; market
data `on_trade(instrument, price, qty, now_ns)`; `poll(now_ns)` for what fell due by now;
`next_due_ns()` (the executor parks no longer than that). Every call returns the events that
happened, in order. Today there is the simulated venue; a live one (the PFCF broker) will be
an adapter with the same shape.
"""


def make(cfg):
    if cfg.executor.venue == "sim":
        from .sim import SimVenue

        sim = cfg.executor.sim
        return SimVenue(round(sim.latency_us * 1000), round(sim.ioc_window_us * 1000))
    raise ValueError(f"executor.venue: unknown venue {cfg.executor.venue!r}")
