"""The end-of-run invariants (hftd.report.invariants): a real run's report passes them and the
summary says so; each invariant, broken on a copy of that report, is named — and only the
invariants that depend on what was changed."""

from __future__ import annotations

import copy
import json

import pytest

from hftd import report


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """One run of the sample strategy (it trades) on the embedded defaults."""
    import os
    import uuid

    from conftest import hftd

    tmp = tmp_path_factory.mktemp("inv")
    inst = "inv" + uuid.uuid4().hex[:8]
    cfg = tmp / "hftd.toml"
    cfg.write_text(f'instance = "{inst}"\nruntime_dir = "{tmp}/run"\n[metrics]\nlisten = ""\n'
                   f'[executor.sim]\nlatency_us = 100.0\n')
    res = hftd("run", "--config", str(cfg), "--ticks", "20000", "--rate", "20000",
               "--report", str(tmp / "r.json"),
               env=dict(os.environ, XDG_STATE_HOME=str(tmp / "state")))
    assert res.returncode == 0, res.stderr
    return json.loads((tmp / "r.json").read_text()), res.stdout  # (the summary)


def test_a_clean_run_holds_every_invariant_and_says_so(real_report):
    rep, summary = real_report
    assert rep["invariants"] == []
    assert "invariants: all hold" in summary
    assert rep["orders"]["sent"] > 0 and rep["positions"]["rows"]  # it traded: orders checked


def _broken(rep, path, value):
    r = copy.deepcopy(rep)
    *keys, last = path
    d = r
    for k in keys:
        d = d[k]
    d[last] = value(d[last]) if callable(value) else value
    return report.invariants(r)


@pytest.mark.parametrize("path, value, named", [
    (("flow", "feed", "published"), lambda n: n - 1, "feed: received"),
    (("flow", "rings", "ticks.sample", "in_flight"), 3, "ticks.sample: 3 events left"),
    (("flow", "rings", "ticks.sample", "delivered"), lambda n: n - 1, "ticks.sample: routed"),
    (("stages", "strategy.sample", "values", "seq_gaps"), 2, "2 sequence gaps"),
    (("orders", "working"), 1, "1 still working"),  # (and acks != filled + ... + working)
    (("orders", "illegal_transitions"), 1, "could not apply"),
    (("orders", "by_strategy", "sample", "report_mismatches"), 1, "disagreed with its book"),
    (("positions", "rows", 0, "strategy_view", "qty"), lambda n: n + 1, "position sample"),
    (("orders", "sent"), lambda n: n + 1, "orders: sent"),
])
def test_each_broken_invariant_is_named(real_report, path, value, named):
    bad = _broken(real_report[0], path, value)
    assert any(named in b for b in bad), bad
    assert len(bad) == (2 if path == ("orders", "working") else 1), bad


def test_order_counter_identities_are_not_checked_in_a_run_with_restarts(real_report):
    """A kill -9 between an event and the counter that counts it leaves the counter one off,
    so those identities are checked only when no agent restarted (the state-based invariants
    are checked always)."""
    rep = copy.deepcopy(real_report[0])
    rep["recovery"]["restarts"]["executor"] = 1
    rep["orders"]["sent"] += 1
    assert report.invariants(rep) == []
    rep["orders"]["working"] = 1
    assert len(report.invariants(rep)) == 1


def test_a_stop_that_gave_up_is_not_also_reported_as_rings_left_full(real_report):
    """A run that ended by giving up (every strategy quarantined, a stop that abandoned
    events) is reported as that; the rings it left are not a second failure."""
    rep = copy.deepcopy(real_report[0])
    rep["flow"]["rings"]["ticks.sample"]["in_flight"] = 178
    rep["abandoned"] = {"ring ticks.sample": 178}
    assert report.invariants(rep) == []
