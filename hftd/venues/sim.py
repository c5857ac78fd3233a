"""The simulated venue: `hftd.trading.fillmodel.SimVenue`, driven by the executor's market
data (the `ticks.executor` ring). Orders fill against the market's own later trades after
the configured latency (`executor.sim.latency_us`): market orders at the next trade, limit
orders rest and fill when a trade reaches their price (partially when its quantity is
smaller), IOC/FOK against their first trade (or expire after `executor.sim.ioc_window_us`).
Known optimism: no queue position and no depth (see the fill model's docstring)."""

from ..trading.fillmodel import SimVenue

__all__ = ["SimVenue"]
