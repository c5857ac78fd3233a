"""Observability of a running instance: hftd status / top, /metrics (checked by promtool),
the Grafana dashboard's metric names, and a real Prometheus server scraping hftd."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from hftd import shm
from conftest import HFTD, _kill_instance_processes, hftd

ROOT = os.path.dirname(os.path.dirname(__file__))


class Running:
    """An hftd instance started for a test, with its stderr collected in the background."""

    def __init__(self, tmp, toml=""):
        self.instance = "t" + uuid.uuid4().hex[:12]
        self.cfg = os.path.join(tmp, "hftd.toml")
        with open(self.cfg, "w") as f:
            f.write(f'instance = "{self.instance}"\nruntime_dir = "{tmp}/run"\n'
                    f'[metrics]\nlisten = "127.0.0.1:0"\n' + toml)
        self.proc = subprocess.Popen(HFTD + ["run", "--config", self.cfg], stderr=subprocess.PIPE,
                                     stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.metrics_url = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (self.metrics_url and self.up):
            for line in list(self.lines):
                m = re.search(r"metrics on (http://\S+)", line)
                if m:
                    self.metrics_url = m.group(1)
            time.sleep(0.05)
        assert self.metrics_url and self.up, "".join(self.lines)

    @property
    def up(self) -> bool:
        return any("pipeline up" in line for line in self.lines)

    def _drain(self):
        for line in self.proc.stderr:
            self.lines.append(line)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            assert r.status == 200
            return r.read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(2)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        _kill_instance_processes(self.instance)
        shm.remove_leftovers(self.instance)


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    r = Running(str(tmp_path_factory.mktemp("obs")),
                toml="[producer.synthetic]\nrate = 5000.0\n")
    time.sleep(1.0)  # some traffic in every histogram
    yield r
    r.stop()
    assert r.proc.returncode == 0, "".join(r.lines)


def test_status_of_an_instance_that_does_not_run_exits_3(tmp_path):
    res = hftd("status", "--instance", "nosuch" + uuid.uuid4().hex[:6], timeout=30)
    assert res.returncode == 3
    assert "is not running" in res.stderr
    assert hftd("status", "--json", "--instance", "nosuch", timeout=30).returncode == 3


def test_status_reads_the_instance_and_json_is_complete(running):
    res = hftd("status", "--config", running.cfg, timeout=30)
    assert res.returncode == 0, res.stderr
    assert "agents:" in res.stdout and "tick-to-trade" in res.stdout
    text = res.stdout
    res = hftd("status", "--json", "--config", running.cfg, timeout=30)
    assert res.returncode == 0, res.stderr
    st = json.loads(res.stdout)
    for key in ("instance", "agents", "rings", "stages", "tick_to_trade_us", "ticks", "orders",
                "positions", "flow", "rates_per_s", "trading_paused"):
        assert key in st, key
    assert "positions and P&L (TWD" in text or "positions: none" in text
    p = st["positions"]
    assert p["currency"] == "TWD" and set(p["total"]) >= {"realized", "unrealized", "fees",
                                                          "tax", "pnl", "volume"}
    for row in p["rows"]:
        assert row["strategy"] == "sample" and row["strategy_view"]["qty"] is not None
    assert set(st["agents"]) == {"producer", "dispatcher", "strategy.sample", "executor"}
    assert all(a["up"] and a["pid"] > 0 for a in st["agents"].values())
    assert st["rates_per_s"]["ticks_received"] > 0
    assert st["tick_to_trade_us"]["count"] > 0 and st["tick_to_trade_us"]["p99"] > 0
    for stage in st["stages"].values():
        assert {"p50", "p90", "p99", "p99.9", "max", "count"} <= set(stage["latency_us"])


def test_top_refreshes_and_stops(running):
    res = subprocess.run(HFTD + ["top", "--config", running.cfg, "--interval", "0.2",
                                 "--iterations", "3"], capture_output=True, text=True, timeout=60,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("agents:") == 3
    # rates over the last refresh, from the second refresh on
    assert re.search(r"^  last 0\.\d s +[\d,]+ +[\d,]+ +[\d,]+ +[\d,]+$", res.stdout, re.M)


def _promtool():
    path = shutil.which("promtool")
    if not path:
        pytest.skip("promtool not found: install Debian's 'prometheus' package (.ci/run does)")
    return path


def test_metrics_pass_promtool_check(running):
    text = running.metrics()
    res = subprocess.run([_promtool(), "check", "metrics"], input=text, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("hftd_stage_latency_seconds_bucket", "hftd_tick_to_trade_seconds_bucket",
                 "hftd_ticks_received_total", "hftd_ring_ticks_total",
                 "hftd_strategy_ticks_total", "hftd_order_requests_total",
                 "hftd_orders_ended_total", "hftd_order_reports_total",
                 "hftd_dispatcher_full_polls_total", "hftd_ring_occupancy_ratio",
                 "hftd_ring_backpressure_episodes_total", "hftd_ticks_rejected_total",
                 "hftd_agent_up", "hftd_agent_heartbeat_age_seconds",
                 "hftd_agent_cpu_seconds_total", "hftd_agent_resident_memory_bytes",
                 "hftd_position", "hftd_pnl", "hftd_traded_lots_total",
                 "hftd_position_avg_price_ticks", "hftd_order_rejects_total",
                 "hftd_cancel_rejects_total", "hftd_last_tick_timestamp_seconds"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    inst = f'instance="{running.instance}"'
    assert re.search(rf'^hftd_pnl\{{component="net",{inst},instrument="TXF",strategy="sample"\}}',
                     text, re.M)
    assert re.search(rf'^hftd_order_rejects_total\{{{inst},reason="MAX_POSITION"\}}', text, re.M)
    # every series names its instance; no heartbeat age is negative
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert samples and all(inst in line for line in samples)
    ages = re.findall(r"^hftd_agent_heartbeat_age_seconds\{.*\} (\S+)$", text, re.M)
    assert len(ages) == 4 and all(float(a) >= 0 for a in ages)


def test_metrics_text_is_prometheus_clients_byte_for_byte(running):
    """hftd.exporter writes the text format itself (prometheus_client's imports cost the
    supervisor ~8 MiB): the same families rendered by prometheus_client are the same bytes."""
    from prometheus_client import CollectorRegistry, generate_latest

    from hftd.exporter import HftdCollector, render
    from hftd.monitor import InstanceView

    view = InstanceView.attach(running.instance, os.path.join(os.path.dirname(running.cfg),
                                                              "run"))
    try:
        families = list(HftdCollector(view).collect())  # one snapshot for both
    finally:
        view.close()

    class Snapshot:
        def collect(self):
            return iter(families)

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Snapshot())
    ours = render(Snapshot())
    assert f'hftd_tick_to_trade_seconds_bucket{{instance="{running.instance}",le='.encode() in ours
    assert ours == generate_latest(reg)


def test_the_metrics_endpoint_answers_head_and_refuses_other_requests(running):
    url = urllib.parse.urlparse(running.metrics_url)

    def ask(raw: bytes) -> bytes:
        with socket.create_connection((url.hostname, url.port), timeout=10) as s:
            s.sendall(raw)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        return out

    head = ask(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n" in head
    assert ask(b"POST /metrics HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.0 405 ")
    assert ask(b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.0 400 ")
    with socket.create_connection((url.hostname, url.port), timeout=10):
        pass  # a client that says nothing and leaves
    assert running.metrics().startswith("# HELP hftd_info ")


def test_every_metric_of_the_grafana_dashboard_and_the_alert_rules_exists(running):
    dash = json.load(open(os.path.join(ROOT, "configs", "grafana", "hftd.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert any("histogram_quantile" in e and "$__rate_interval" in e for e in exprs)
    exprs.append(open(os.path.join(ROOT, "configs", "prometheus", "hftd-rules.yml")).read())
    used = set(re.findall(r"hftd_[a-z0-9_]+", " ".join(exprs)))
    used -= {"hftd_pfcf_feed_silent_seconds"}  # a PFCF feed's only (tests/test_alert_rules.py)
    exposed = set(re.findall(r"^(hftd_[a-z0-9_]+)", running.metrics(), re.M))
    assert used and used <= exposed, used - exposed


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prom_query(base: str, q: str):
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


class Scraped:
    """An hftd instance trading at 5k ticks/s and a real Prometheus server scraping it each
    second, as configs/prometheus/prometheus.yml does (honor_labels: the `instance` label
    is hftd's instance name)."""

    def __init__(self, tmp_path):
        prom = shutil.which("prometheus")
        if not prom:
            pytest.skip("prometheus not found: install Debian's 'prometheus' package (.ci/run "
                        "does)")
        self.hftd = Running(str(tmp_path), toml="[producer.synthetic]\nrate = 5000.0\n")
        self.proc = None
        try:
            target = urllib.parse.urlparse(self.hftd.metrics_url).netloc
            port = _free_port()
            (tmp_path / "prom.yml").write_text(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hftd\n"
                "    honor_labels: true\n"
                f"    static_configs:\n      - targets: ['{target}']\n")
            self.proc = subprocess.Popen([prom, f"--config.file={tmp_path}/prom.yml",
                                          f"--storage.tsdb.path={tmp_path}/tsdb",
                                          f"--web.listen-address=127.0.0.1:{port}"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.base = f"http://127.0.0.1:{port}"
        except BaseException:
            self.stop()
            raise

    def query(self, q: str):
        return _prom_query(self.base, q)

    def wait_for(self, q: str, timeout: float = 30.0):
        """The result of `q` once it is not empty (Prometheus starting, scrapes to come)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.query(q)
                if result:
                    return result
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"Prometheus never answered {q!r} with a series")
            time.sleep(0.5)

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
        self.hftd.stop()


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    s = Scraped(tmp_path_factory.mktemp("prom"))
    yield s
    s.stop()
    assert s.hftd.proc.returncode == 0, "".join(s.hftd.lines)


def test_every_dashboard_and_rule_expression_runs_on_prometheus_scraping_hftd(scraped):
    """Each target of the Grafana dashboard, with its variables given values (the live
    instance, a rate interval, a range), is a query Prometheus accepts and that returns a
    series for the live instance (a "> 0" filter's series before the filter). Each alert
    rule's expression is accepted too (they are meant to return nothing here)."""
    scraped.wait_for("hftd_info")
    time.sleep(4)  # a few scrapes, so that rate() has two samples in its window
    inst = re.escape(scraped.hftd.instance)
    dash = json.load(open(os.path.join(ROOT, "configs", "grafana", "hftd.json")))
    checked = 0
    for panel in dash["panels"]:
        for t in panel["targets"]:
            q = (t["expr"].replace("$instance", inst).replace("$__rate_interval", "1m")
                 .replace("$__range", "5m"))
            filtered = re.sub(r"\s*>\s*0$", "", q)
            result = scraped.query(filtered)
            assert result, (panel["title"], q)
            assert all(r["metric"].get("instance") == scraped.hftd.instance for r in result
                       if "instance" in r["metric"]), (panel["title"], result)
            scraped.query(q)  # the filter too
            checked += 1
    assert checked >= 20
    from test_alert_rules import _rule_exprs

    for alert, expr in _rule_exprs().items():
        scraped.query(expr)  # raises on a query Prometheus does not accept
    print(f"\n{checked} dashboard expressions returned series from a live hftd")


def test_prometheus_p99_is_within_10_percent_of_hftds_own(scraped):
    r = scraped.hftd
    scraped.wait_for("hftd_tick_to_trade_seconds_count")
    time.sleep(3)  # trade for a while
    assert hftd("pause", "--config", r.cfg, timeout=30).returncode == 0  # freeze t2t
    time.sleep(0.5)
    st = json.loads(hftd("status", "--json", "--config", r.cfg, timeout=30).stdout)
    ours = st["tick_to_trade_us"]
    assert ours["count"] > 0
    deadline = time.monotonic() + 30
    result = []
    while time.monotonic() < deadline:  # until Prometheus has scraped the frozen state
        count = scraped.query("hftd_tick_to_trade_seconds_count")
        if count and int(float(count[0]["value"][1])) == ours["count"]:
            result = scraped.query("histogram_quantile(0.99, sum by (instance, le) "
                                   "(hftd_tick_to_trade_seconds_bucket))")
            break
        time.sleep(0.5)
    assert result, "Prometheus never scraped the frozen histogram"
    theirs_us = float(result[0]["value"][1]) * 1e6
    from hftd.exporter import LATENCY_BUCKETS_S

    bounds = [0.0] + [b * 1e6 for b in LATENCY_BUCKETS_S]
    hi = next(b for b in bounds if b >= ours["p99"])
    lo = bounds[bounds.index(hi) - 1]
    print(f"\nPrometheus histogram_quantile(0.99) {theirs_us:.1f} us, hftd's own p99 "
          f"{ours['p99']:.1f} us ({(theirs_us / ours['p99'] - 1) * 100:+.1f} %; "
          f"{ours['count']} orders), Prometheus bucket ({lo:g}, {hi:g}] us")
    assert abs(theirs_us - ours["p99"]) <= 0.10 * ours["p99"], (theirs_us, ours["p99"], lo, hi)


def _counters(text: str) -> dict[str, float]:
    """Every counter sample of a /metrics text (histogram buckets, sums and counts too),
    by its name and labels."""
    kinds = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    out = {}
    for m in re.finditer(r"^((hftd_[a-z0-9_]+?)(_total|_bucket|_sum|_count)?(\{.*\})?) (\S+)$",
                         text, re.M):
        family = m[2] + (m[3] if m[3] == "_total" else "")
        if kinds.get(family) in ("counter", "histogram"):
            out[m[1]] = float(m[5])
    return out


def test_no_counter_goes_backwards_when_each_agent_is_killed(instance, tmp_path):
    """kill -9 of each agent in turn, /metrics scraped before and after each restart: no
    counter series is lower after (a restarted producer and dispatcher re-derive their
    counters, and a new process starts its CPU time at 0)."""
    from conftest import hftd_running, kill_agent, wait_running

    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    return r.read().decode()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    toml = f'[producer.synthetic]\nrate = 5000.0\n[metrics]\nlisten = "127.0.0.1:{port}"\n'
    with hftd_running(instance, tmp_path, toml=toml) as proc:
        wait_running(instance)
        time.sleep(1.0)
        before = _counters(scrape())
        assert len(before) > 100 and "hftd_agent_cpu_seconds_total" in " ".join(before)
        for role in ("producer", "dispatcher", "strategy", "executor"):
            kill_agent(proc, instance, role, after_s=0.5)
            wait_running(instance)
            time.sleep(0.3)
            after = _counters(scrape())
            went_back = {k: (v, after.get(k)) for k, v in before.items()
                         if k in after and after[k] < v}
            assert not went_back, (role, went_back)
            assert set(before) <= set(after), (role, set(before) - set(after))
            restarts = re.search(rf'^hftd_agent_restarts_total\{{instance="{instance}",'
                                 rf'stage="{role}[^"]*"\}} (\S+)$', scrape(), re.M)
            assert restarts and float(restarts[1]) == 1, role
            before = after
