"""Feed adapters: turn an outside source into columns of ticks inside the producer.

A feed has one method, ``poll(max_n, now_ns) -> FeedBatch | None`` (None: nothing due now),
and one property, ``exhausted`` (the source has ended: the producer then ends its stream).
A feed a restarted producer can continue also has ``position`` (ticks taken so far) and
``advance(n)`` (skip the first n): `synthetic` (a random walk) and `taifex` (TAIFEX's daily
tick files, hftd.feeds.taifex) both do.
Columns rather than objects, so the producer can validate a batch with numpy; a poll of a
few ticks may return Python lists instead of arrays (numpy's per-call cost would dominate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class FeedBatch:
    instrument: np.ndarray  # int32 instrument ids (index into config's instruments); or lists
    price: np.ndarray  # int64 price in ticks
    qty: np.ndarray  # int64
    t_exchange: np.ndarray  # int64 ns since the epoch (0 = unknown)

    def __len__(self) -> int:
        return len(self.instrument)

    def select(self, which) -> "FeedBatch":
        """The ticks at `which` (a mask, an index array or a slice)."""
        return FeedBatch(self.instrument[which], self.price[which], self.qty[which],
                         self.t_exchange[which])


def make(cfg, **kw):
    if cfg.producer.feed == "synthetic":
        from .synthetic import SyntheticFeed

        return SyntheticFeed(cfg.producer.synthetic, len(cfg.instruments))
    if cfg.producer.feed == "taifex":
        from .taifex import TaifexFeed

        return TaifexFeed(cfg.producer.taifex, cfg.instruments, **kw)
    raise ValueError(f"producer.feed: unknown feed {cfg.producer.feed!r}")


def column(x) -> list:
    """A FeedBatch column as a list of Python ints, whichever form it has."""
    return x.tolist() if isinstance(x, np.ndarray) else x
