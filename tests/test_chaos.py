"""Crash-only trading: SIGKILL every role of a trading run at random moments and check, from
sources counted independently of each other (the strategy's own tick-count file, the
simulated venue's log, the run report), that no tick was handled twice or lost (but the one
a killed strategy process had begun, which no later process is handed: at most once where a
process died), no order reached the venue twice, every order ended once, no risk limit was
exceeded and the three books of positions agree. `bench/chaos.py` is the runner; `make chaos` is the long version."""

from __future__ import annotations

import pytest

from bench import chaos

KILLS = 32  # 8 of each role, in a seeded random order: about a minute on a 2-core machine
RATE = 50_000.0
SEED = 7


def test_kills_of_every_role_leave_no_tick_order_or_position_wrong(instance, tmp_path):
    res = chaos.run(KILLS, RATE, SEED, work=str(tmp_path / "chaos"), instance=instance,
                    out=str(tmp_path / "chaos.json"), quiet=True)
    report = chaos.table(res)
    print(report)
    fig = res["figures"]
    # the run was the chaos it is meant to be: every role killed, orders of every kind
    assert fig["kills"] == {r: KILLS // len(chaos.ROLES) for r in chaos.ROLES}, report
    venue = fig["venue"]
    for k in ("orders", "fills", "cancels", "replaces", "canceled", "expired", "replaced"):
        assert venue[k] > 0, (k, report)
    refused = fig.get("rejects_by_reason", {})
    assert refused.get("MAX_POSITION") and refused.get("MAX_ORDER_QTY"), report  # limits bound
    # and every invariant held (the table names each failure with its evidence)
    assert not any(res["failures"].values()), report
