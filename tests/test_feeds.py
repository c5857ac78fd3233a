"""Feeds: the synthetic stream depends on the seed only, never on how it is polled."""

from __future__ import annotations

import numpy as np
import pytest

from hftd.config import SyntheticFeedConfig
from hftd.feeds.synthetic import SyntheticFeed


def _stream(polls, total=20_000, seed=7):
    f = SyntheticFeed(SyntheticFeedConfig(rate=0, ticks=total, seed=seed), 5)
    out = []
    i = 0
    while not f.exhausted:
        b = f.poll(polls[i % len(polls)], 0)
        out.append(np.stack([b.instrument, b.price, b.qty]))
        i += 1
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("polls", [[1], [3, 8, 9], [5000], [7, 1000, 1, 64, 4095]])
def test_the_stream_does_not_depend_on_poll_sizes(polls):
    assert np.array_equal(_stream(polls), _stream([512]))


def test_prices_walk_by_at_most_one_tick_per_instrument_and_stay_positive():
    s = _stream([100])
    for i in range(5):
        p = s[1][s[0] == i]
        assert (np.abs(np.diff(p)) <= 1).all() and (p >= 1).all()
    assert ((s[2] >= 1) & (s[2] <= 10)).all()


def test_a_fixed_count_stops_exactly():
    f = SyntheticFeed(SyntheticFeedConfig(rate=0, ticks=1000, seed=1), 5)
    got = 0
    while not f.exhausted:
        got += len(f.poll(300, 0))
    assert got == 1000 and f.poll(300, 0) is None
