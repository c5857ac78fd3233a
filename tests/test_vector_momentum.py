"""The vectorised sample strategy against a tick-by-tick reference of its rule, and the
strategy API's per-side working counts against the working orders themselves."""

from __future__ import annotations

import random
from collections import deque

import numpy as np
import pytest

from hftd import config
from hftd.events import OrderReport, ReportKind, TickColumns
from hftd.strategies.base import StrategyApi
from hftd.strategies.momentum import VectorMomentum


def _host(params):
    cfg = config.load()
    sent = []
    api = StrategyApi(cfg.symbols(), cfg.contracts(), sent.append)
    s = VectorMomentum(api, params)
    s.on_start()
    return s, api, sent, len(cfg.symbols())


def _reference(runs, n_instr, lookback, threshold):
    """Per run, {instrument: side of its newest move at or past threshold}, computed one tick
    at a time with a deque per instrument (Momentum's own bookkeeping)."""
    hist = [deque(maxlen=lookback) for _ in range(n_instr)]
    out = []
    for insts, prices in runs:
        newest = {}
        for i, p in zip(insts, prices):
            h = hist[i]
            if len(h) == lookback:
                move = p - h[0]
                if move >= threshold or move <= -threshold:
                    newest[i] = 1 if move > 0 else -1
            h.append(p)
        out.append(newest)
    return out


@pytest.mark.parametrize("seed", range(6))
def test_vector_momentum_acts_on_each_instruments_newest_move_of_a_run(seed):
    rng = random.Random(seed)
    lookback, threshold = rng.choice([(3, 1), (5, 2), (20, 4)])
    s, api, sent, n_instr = _host({"lookback": lookback, "threshold": threshold,
                                   "max_position": 10**9})
    price = [20_000] * n_instr
    runs = []
    seq = 0
    for _ in range(40):
        k = rng.choice([1, 2, 7, 30, 200])
        insts = [rng.randrange(n_instr) if rng.random() < 0.8 else 0 for _ in range(k)]
        prices = []
        for i in insts:
            price[i] += rng.choice([-2, -1, 0, 1, 2])
            prices.append(price[i])
        runs.append((insts, prices))
        cols = TickColumns(np.arange(seq, seq + k), np.zeros(k, np.int64),
                           np.array(insts, np.int64), np.array(prices, np.int64),
                           np.ones(k, np.int64), np.zeros(k, np.int64))
        seq += k
        before = len(sent)
        s.on_ticks(cols)
        got = {r.instrument: r.side for r in sent[before:]}
        assert len(sent) - before == len(got)  # at most one order an instrument and run
        runs[-1] = (insts, prices, got)
    want = _reference([(a, b) for a, b, _ in runs], n_instr, lookback, threshold)
    assert [g for _, _, g in runs] == want


def test_working_on_counts_the_working_orders_leaves_by_side():
    s, api, sent, n_instr = _host({})
    rng = random.Random(7)
    live = []
    for _ in range(300):
        if live and rng.random() < 0.4:
            r = live[rng.randrange(len(live))]
            o = api.book.get(r.order_id)
            part = rng.randint(1, o.leaves)
            kind = ReportKind.FILL if rng.random() < 0.7 else ReportKind.CANCELED
            filled = o.filled + (part if kind == ReportKind.FILL else 0)
            leaves = o.leaves - part if kind == ReportKind.FILL else 0
            q = part if kind == ReportKind.FILL else o.leaves
            if o.state == 0:
                api.apply_report(OrderReport(0, 0, o.client_id, ReportKind.ACK, o.instrument,
                                             o.side, o.qty, o.price, 0, 0, o.qty))
            api.apply_report(OrderReport(0, 0, o.client_id, kind, o.instrument, o.side, q,
                                         o.price, 0, filled, leaves))
            if not leaves:
                live.remove(r)
        else:
            i = rng.randrange(n_instr)
            (s.buy if rng.random() < 0.5 else s.sell)(i, rng.randint(1, 5), 20_000)
            live.append(sent[-1])
        for i in range(n_instr):
            for side in (1, -1):
                want = sum(o.leaves for o in s.working_orders(i) if o.side == side)
                assert s.working_on(i, side) == want
