"""The shipped alert rules and dashboard, without a running daemon: the rules pass `promtool
check rules` and their unit tests (`promtool test rules`), the example scrape config passes
`promtool check config`, every metric they use is one hftd exports, and the dashboard has
panel ids, an instance variable, per-instance series, one unit per panel and stat panels
for the kill switch, agents down, backpressure and restarts. (The expressions are run on a
real Prometheus scraping hftd in tests/test_observability.py.)"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

from hftd.exporter import HftdCollector, render

ROOT = os.path.dirname(os.path.dirname(__file__))
PROM = os.path.join(ROOT, "configs", "prometheus")
DASHBOARD = os.path.join(ROOT, "configs", "grafana", "hftd.json")


def _promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not found: install Debian's 'prometheus' package (.ci/run does)")
    return path


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([_promtool(), *args], capture_output=True, text=True, timeout=120,
                          cwd=PROM)


def test_the_rules_pass_promtool_check_rules():
    res = _run("check", "rules", "hftd-rules.yml")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 9 rules found" in res.stdout


def test_the_rules_pass_their_unit_tests():
    res = _run("test", "rules", "hftd-rules.test.yml")
    print(res.stdout)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_the_example_scrape_config_passes_promtool_check_config():
    res = _run("check", "config", "prometheus.yml")
    assert res.returncode == 0, res.stdout + res.stderr


def _rule_exprs() -> dict[str, str]:
    """alert name -> expression, read from the file without a YAML library: each rule is
    `- alert: NAME` then `expr:` on one line or as a `|` block."""
    text = open(os.path.join(PROM, "hftd-rules.yml")).read()
    out = {}
    for m in re.finditer(r"- alert: (\w+)\n\s+expr: (\|\n((?:\s{10,}.*\n)+)|.*\n)", text):
        out[m[1]] = (m[3] or m[2]).strip()
    return out


def test_the_rules_cover_what_the_issue_asks_for():
    alerts = set(_rule_exprs())
    assert alerts == {"HftdKillSwitchOn", "HftdDown", "HftdAgentDown", "HftdAgentRestarting",
                      "HftdBackpressureSustained", "HftdOrderRejectsRising",
                      "HftdTickToTradeP99OverBudget", "HftdFeedSilent",
                      "HftdTickSequenceGaps"}


def _exported_names(plant) -> set[str]:
    """Metric names hftd exports: an instance's /metrics rendered from planted stats
    blocks, and the PFCF families (only a PFCF run has them)."""
    from hftd.exporter import _pfcf_metrics
    from hftd.feeds.pfcf import COUNTS, GAUGES
    from hftd.venues.pfcf import COUNTERS

    text = render(HftdCollector(plant().sup.view)).decode()
    feed = {f"feed.{k}": 0 for k in (*COUNTS, *GAUGES)}
    venue = {f"venue.{k}": 0 for k in (*COUNTERS, "connected")}

    class Pfcf:
        def collect(self):
            return _pfcf_metrics(feed, venue)

    text += render(Pfcf()).decode()
    # by the TYPE lines: a planted instance has no process, so no CPU or heartbeat samples
    names = set()
    for name, kind in re.findall(r"^# TYPE (hftd_[a-z0-9_]+) (\w+)$", text, re.M):
        names |= {name + s for s in ("_bucket", "_sum", "_count")} if kind == "histogram" \
            else {name}
    return names


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(hftd_[a-z0-9_]+)", expr))


def test_every_metric_of_the_rules_and_the_dashboard_is_one_hftd_exports(plant):
    exported = _exported_names(plant)
    for alert, expr in _rule_exprs().items():
        used = _metric_names(expr)
        assert used or alert == "HftdDown", alert
        assert used <= exported, (alert, used - exported)
    dash = json.load(open(DASHBOARD))
    for p in dash["panels"]:
        for t in p["targets"]:
            assert _metric_names(t["expr"]) <= exported, (p["title"], t["expr"])


def test_the_dashboard_has_ids_an_instance_variable_and_one_unit_per_panel():
    dash = json.load(open(DASHBOARD))
    panels = dash["panels"]
    ids = [p.get("id") for p in panels]
    assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids), ids
    var = {v["name"]: v for v in dash["templating"]["list"]}["instance"]
    assert var["type"] == "query" and "label_values(hftd_info, instance)" in json.dumps(var)
    assert var["multi"] and var["includeAll"]
    for p in panels:
        unit = p["fieldConfig"]["defaults"].get("unit")
        assert unit, p["title"]
        for o in p["fieldConfig"].get("overrides", []):  # no second unit on the same axis
            assert not any(prop.get("id") == "unit" for prop in o.get("properties", [])), \
                p["title"]
        for t in p["targets"]:
            e = t["expr"]
            assert 'instance=~"$instance"' in e, (p["title"], e)
            # per-instance series: every aggregation keeps the instance
            for by in re.findall(r"\b(?:sum|max|min|avg|count)\b\s*(by\s*\([^)]*\))?\s*\(", e):
                assert "instance" in by, (p["title"], e)
            assert "{{instance}}" in t["legendFormat"], (p["title"], t["legendFormat"])
    restarts = [p for p in panels if "restart" in p["title"].lower()]
    assert restarts and all(p["fieldConfig"]["defaults"]["unit"] == "none" for p in restarts)


def test_the_dashboard_shows_kill_switch_agents_down_backpressure_and_restarts_at_a_glance():
    dash = json.load(open(DASHBOARD))
    stats = {p["title"]: p["targets"][0]["expr"] for p in dash["panels"] if p["type"] == "stat"}
    assert "hftd_trading_paused" in stats["Kill switch"]
    assert "hftd_agent_up" in stats["Agents down"]
    assert "hftd_ring_backpressured" in stats["Rings backpressured"]
    assert "hftd_agent_restarts_total" in stats["Agent restarts"]
