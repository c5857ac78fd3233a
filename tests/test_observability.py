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
                 "hftd_events_total", "hftd_ring_occupancy_ratio",
                 "hftd_backpressure_episodes_total", "hftd_conflated_total", "hftd_dropped_total",
                 "hftd_rejected_total", "hftd_agent_up", "hftd_agent_heartbeat_age_seconds",
                 "hftd_agent_cpu_seconds_total", "hftd_agent_resident_memory_bytes",
                 "hftd_position", "hftd_pnl", "hftd_traded_lots_total",
                 "hftd_position_avg_price_ticks", "hftd_order_rejects_total"):
        assert re.search(rf"^{name}[{{ ]", text, re.M), name
    assert re.search(r'^hftd_pnl\{.*component="net".*instrument="TXF".*strategy="sample"', text,
                     re.M) or re.search(r'^hftd_pnl\{[^}]*component="net"', text, re.M)
    assert re.search(r'^hftd_order_rejects_total\{reason="MAX_POSITION"\}', text, re.M)


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
    assert b"hftd_tick_to_trade_seconds_bucket{le=" in ours
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


def test_every_metric_of_the_grafana_dashboard_exists(running):
    dash = json.load(open(os.path.join(ROOT, "configs", "grafana", "hftd.json")))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert any("histogram_quantile" in e and "$__rate_interval" in e for e in exprs)
    used = set(re.findall(r"hftd_[a-z0-9_]+", " ".join(exprs)))
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


def test_prometheus_scrapes_hftd_and_agrees_with_its_report(tmp_path):
    prom = shutil.which("prometheus")
    if not prom:
        pytest.skip("prometheus not found: install Debian's 'prometheus' package (.ci/run does)")
    r = Running(str(tmp_path), toml="[producer.synthetic]\nrate = 5000.0\n")
    pp = None
    try:
        target = urllib.parse.urlparse(r.metrics_url).netloc
        port = _free_port()
        (tmp_path / "prom.yml").write_text(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: hftd\n"
            f"    static_configs:\n      - targets: ['{target}']\n")
        pp = subprocess.Popen([prom, f"--config.file={tmp_path}/prom.yml",
                               f"--storage.tsdb.path={tmp_path}/tsdb",
                               f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        time.sleep(3)  # trade for a while
        assert hftd("pause", "--config", r.cfg, timeout=30).returncode == 0  # freeze t2t
        time.sleep(0.5)
        st = json.loads(hftd("status", "--json", "--config", r.cfg, timeout=30).stdout)
        ours = st["tick_to_trade_us"]
        deadline = time.monotonic() + 30
        result = []
        while time.monotonic() < deadline:  # until Prometheus has scraped the frozen state
            try:
                count = _prom_query(base, "hftd_tick_to_trade_seconds_count")
                if count and int(float(count[0]["value"][1])) == ours["count"]:
                    result = _prom_query(
                        base, "histogram_quantile(0.99, sum by (le) "
                              "(hftd_tick_to_trade_seconds_bucket))")
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert result, "Prometheus never scraped the frozen histogram"
        theirs_us = float(result[0]["value"][1]) * 1e6
        from hftd.exporter import LATENCY_BUCKETS_S

        bounds = [0.0] + [b * 1e6 for b in LATENCY_BUCKETS_S]
        hi = next(b for b in bounds if b >= ours["p99"])
        lo = bounds[bounds.index(hi) - 1]
        print(f"\nPrometheus histogram_quantile(0.99) {theirs_us:.1f} us, hftd's own p99 "
              f"{ours['p99']:.1f} us, Prometheus bucket ({lo:g}, {hi:g}] us")
        assert abs(theirs_us - ours["p99"]) <= hi - lo, (theirs_us, ours["p99"], lo, hi)
    finally:
        if pp is not None:
            pp.terminate()
            pp.wait(30)
        r.stop()
    assert r.proc.returncode == 0
