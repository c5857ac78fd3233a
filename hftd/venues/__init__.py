"""Venue adapters: turn the executor's orders into orders at a venue, and the venue's answers
into (owner, client_id, ReportKind, qty, price, reason) events.

A venue has the interface of `hftd.trading.fillmodel.SimVenue`: requests `submit`, `cancel`,
`replace`, `cancel_all(owner, now_ns)` that take effect after the venue's latency; market
data `on_trade(instrument, price, qty, now_ns)`; `poll(now_ns)` for what fell due by now;
`next_due_ns()` (the executor parks no longer than that). Every call returns the events that
happened, in order. Today there is the simulated venue; a live one (the PFCF broker) will be
an adapter with the same shape.
"""


def make(cfg, log: str | None = None, last_seq: int = 0):
    """The configured venue; `log`: the simulated venue's log file (hftd.venues.sim), whose
    last sequence number is `last_seq`, or None for none."""
    if cfg.executor.venue == "sim":
        from .sim import LoggedSimVenue, SimVenue

        sim = cfg.executor.sim
        latency, window = round(sim.latency_us * 1000), round(sim.ioc_window_us * 1000)
        if log:
            return LoggedSimVenue(log, latency, window, last_seq)
        return SimVenue(latency, window)
    raise ValueError(f"executor.venue: unknown venue {cfg.executor.venue!r}")
