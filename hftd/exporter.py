"""Prometheus exporter: a custom collector over an `InstanceView`, served on /metrics.

Every scrape reads the stats blocks and ring headers directly (no locks, nothing cached), so
/metrics is as fresh as `hftd status`. Names follow Prometheus conventions: `hftd_` prefix,
seconds, `_total` for counters. Latency histograms are re-bucketed from hftd's log-linear
buckets onto fixed bounds chosen for microsecond latencies (`LATENCY_BUCKETS_S`).

The metric families and the text format (0.0.4) are prometheus-client's, byte for byte (a
test renders the same collector with both), written here because importing prometheus_client
costs the supervisor ~8 MiB of memory of its own (urllib.request, http.server, email, ssl:
its push gateway and WSGI code), an eighth of the instance's memory target (issue 12). The
HTTP side is the few lines a scrape needs: GET or HEAD of any path, one response, close.
"""

from __future__ import annotations

import math
import socket
import socketserver
import threading
from typing import NamedTuple

import numpy as np

from . import __version__
from .log import get as get_log
from .monitor import InstanceView
from .stats import COUNTER


class Sample(NamedTuple):
    """One line of a family (prometheus_client.samples.Sample's fields)."""

    name: str
    labels: dict
    value: float
    timestamp: float | None = None
    exemplar: object = None
    native_histogram: object = None


class _Family:
    """A metric family and its samples (prometheus_client.Metric's interface)."""

    type = ""

    def __init__(self, name: str, documentation: str, labels=None):
        self.name = name
        self.documentation = documentation
        self.unit = ""
        self._labelnames = tuple(labels or ())
        self.samples: list[Sample] = []


class GaugeMetricFamily(_Family):
    type = "gauge"

    def add_metric(self, labels, value) -> None:
        self.samples.append(Sample(self.name, dict(zip(self._labelnames, labels)), value))


class CounterMetricFamily(_Family):
    type = "counter"

    def __init__(self, name: str, documentation: str, labels=None):
        super().__init__(name[:-6] if name.endswith("_total") else name, documentation, labels)

    def add_metric(self, labels, value) -> None:
        self.samples.append(Sample(self.name + "_total", dict(zip(self._labelnames, labels)),
                                   value))


class HistogramMetricFamily(_Family):
    type = "histogram"

    def add_metric(self, labels, buckets, sum_value) -> None:
        """`buckets`: (upper bound as text, cumulative count), sorted, "+Inf" last."""
        base = list(zip(self._labelnames, labels))
        for bound, count in buckets:
            self.samples.append(Sample(self.name + "_bucket", dict(base + [("le", bound)]),
                                       count))
        if float(buckets[0][0]) >= 0 and sum_value is not None:
            self.samples.append(Sample(self.name + "_count", dict(base), buckets[-1][1]))
            self.samples.append(Sample(self.name + "_sum", dict(base), sum_value))


def _float(d) -> str:
    """A value as Go (and prometheus_client's floatToGoString) writes it."""
    d = float(d)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if math.isnan(d):
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _line(s: Sample) -> str:
    labels = ""
    if s.labels:
        labels = "{" + ",".join(
            '{}="{}"'.format(k, str(v).replace("\\", r"\\").replace("\n", r"\n")
                             .replace('"', r'\"'))
            for k, v in sorted(s.labels.items())) + "}"
    return f"{s.name}{labels} {_float(s.value)}\n"


def render(collector) -> bytes:
    """The text exposition format 0.0.4 of what `collector.collect()` yields."""
    out = []
    for m in collector.collect():
        name = m.name + "_total" if m.type == "counter" else m.name
        doc = m.documentation.replace("\\", r"\\").replace("\n", r"\n")
        out.append(f"# HELP {name} {doc}\n# TYPE {name} {m.type}\n")
        out.extend(_line(s) for s in m.samples)
    return "".join(out).encode()


LATENCY_BUCKETS_S = (1e-6, 2e-6, 5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3,
                     5e-3, 10e-3, 20e-3, 50e-3, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_BOUNDS_NS = np.array([round(b * 1e9) for b in LATENCY_BUCKETS_S], dtype=np.int64)

# counters that have a metric of their own, not hftd_events_total
_OWN = {"conflated", "dropped", "rejected", "alarms"}
# the executor's per (strategy, instrument) values (hftd.stages.executor.POSITION_VALUES):
# exported as hftd_position / hftd_pnl / hftd_traded_lots_total, not as stage levels
_POSITION = {"pos", "avg", "realized", "unrealized", "fees", "tax", "volume"}


def _histogram(fam: HistogramMetricFamily, labels: list[str], snap) -> None:
    cum = snap.cumulative_at(_BOUNDS_NS)
    buckets = [(repr(b) if b < 1 else f"{b:.1f}", float(c)) for b, c in zip(LATENCY_BUCKETS_S, cum)]
    buckets.append(("+Inf", float(snap.count)))
    fam.add_metric(labels, buckets, snap.sum / 1e9)


class HftdCollector:
    def __init__(self, view: InstanceView):
        self.view = view

    def describe(self):
        return []  # collected fresh on every scrape (prometheus_client's registry asks)

    def collect(self):
        v = self.view
        inst = v.cfg.instance
        info = GaugeMetricFamily("hftd_info", "hftd build and instance",
                                 labels=["version", "hftd_instance"])
        info.add_metric([__version__, inst], 1)
        yield info

        stage_lat = HistogramMetricFamily(
            "hftd_stage_latency_seconds",
            "Time from a tick's ingest (t_ingest) to the end of its processing in each stage",
            labels=["stage"])
        t2t = HistogramMetricFamily(
            "hftd_tick_to_trade_seconds",
            "Order handed to the venue minus t_ingest of the tick that caused it")
        events = CounterMetricFamily("hftd_events", "Events counted by each stage, by outcome",
                                     labels=["stage", "outcome"])
        gauges = GaugeMetricFamily("hftd_stage_level", "Levels held by each stage (gauges)",
                                   labels=["stage", "name"])
        conflated = CounterMetricFamily("hftd_conflated", "Ticks replaced by a newer tick of the "
                                        "same instrument while a ring was backpressured",
                                        labels=["ring"])
        dropped = CounterMetricFamily("hftd_dropped", "Ticks dropped", labels=["ring", "reason"])
        rejected = CounterMetricFamily("hftd_rejected", "Bad ticks rejected by the producer",
                                       labels=["reason"])
        alarms = CounterMetricFamily("hftd_alarms", "Blocks past their deadline (each trips the "
                                     "kill switch)", labels=["stage"])
        order_rejects = CounterMetricFamily(
            "hftd_order_rejects", "Orders refused by the executor (NEW: REJECT; cancel/replace: "
            "CANCEL_REJECTED), by reason", labels=["reason"])
        position = GaugeMetricFamily("hftd_position", "Net position in lots (long > 0), the "
                                     "executor's book", labels=["strategy", "instrument"])
        pnl = GaugeMetricFamily("hftd_pnl", "P&L in the instruments' currency: realized, "
                                "unrealized (at the last trade), fees, tax, and net = realized + "
                                "unrealized - fees - tax", labels=["strategy", "instrument",
                                                                   "component"])
        avg = GaugeMetricFamily("hftd_position_avg_price_ticks", "Average open price of the "
                                "position, in ticks (0 when flat)",
                                labels=["strategy", "instrument"])
        lots = CounterMetricFamily("hftd_traded_lots", "Lots traded, both sides",
                                   labels=["strategy", "instrument"])
        day_pnl = GaugeMetricFamily("hftd_daily_pnl", "Net P&L of the instance since the trading "
                                    "day started (executor.day_starts_at): what the daily loss "
                                    "limit is checked against")
        for a in v.agents:
            block = v.blocks[a.name]
            snap = block.snapshot()
            vals = snap["values"]
            if a.role == "executor":
                _positions(vals, position, pnl, avg, lots)
                day_pnl.add_metric([], vals["day_pnl"] / 100)
            for name, kind in block.schema.values:
                value = vals[name]
                if a.role == "producer" and name.startswith("feed."):
                    continue  # the feed's own metrics (_feed_metrics, _pfcf_metrics)
                if a.role == "executor" and name.startswith("venue."):
                    continue  # a live venue's (_pfcf_metrics)
                if a.role == "executor" and (name.split(".", 1)[0] in _POSITION
                                             or name == "day_pnl"):
                    continue
                if a.role == "executor" and name.startswith("risk_reject."):
                    order_rejects.add_metric([name.split(".", 1)[1]], value)
                elif kind != COUNTER:
                    gauges.add_metric([a.name, name], value)
                elif name == "alarms":
                    alarms.add_metric([a.name], value)
                elif a.role == "producer" and name == "conflated":
                    conflated.add_metric(["ticks.in"], value)
                elif a.role == "producer" and name == "dropped":
                    dropped.add_metric(["ticks.in", "backpressure"], value)
                elif a.role == "producer" and name.startswith("rejected_"):
                    rejected.add_metric([name[len("rejected_"):]], value)
                elif a.role == "dispatcher" and name.split(".")[0] in ("conflated", "dropped"):
                    what, strategy = name.split(".", 1)
                    if what == "conflated":
                        conflated.add_metric([f"ticks.{strategy}"], value)
                    else:
                        dropped.add_metric([f"ticks.{strategy}", "backpressure"], value)
                elif name not in _OWN:
                    events.add_metric([a.name, name], value)
            hists = snap["histograms"]
            if "stage" in hists:
                _histogram(stage_lat, [a.name], hists["stage"])
            if "tick_to_trade" in hists:
                _histogram(t2t, [], hists["tick_to_trade"])
        yield from (stage_lat, t2t, events, gauges, conflated, dropped, rejected, alarms,
                    order_rejects, position, pnl, avg, lots, day_pnl)
        feed_vals = v.blocks["producer"].snapshot()["values"]
        yield from _feed_metrics(feed_vals)
        yield from _pfcf_metrics(feed_vals, v.blocks["executor"].snapshot()["values"])

        occ = GaugeMetricFamily("hftd_ring_occupancy_ratio", "Ring occupancy (write - read cursor) "
                                "over capacity", labels=["ring"])
        bp = GaugeMetricFamily("hftd_ring_backpressured", "1 while the ring is above its high "
                               "watermark (until it falls to the low one)", labels=["ring"])
        episodes = CounterMetricFamily("hftd_backpressure_episodes", "Times the ring crossed its "
                                       "high watermark", labels=["ring"])
        published = CounterMetricFamily("hftd_ring_published", "Events published into the ring",
                                        labels=["ring"])
        consumed = CounterMetricFamily("hftd_ring_consumed", "Events consumed from the ring",
                                       labels=["ring"])
        for name, r in v.ring_states().items():
            occ.add_metric([name], r["occupancy_ratio"])
            bp.add_metric([name], r["backpressured"])
            episodes.add_metric([name], r["backpressure_episodes"])
            published.add_metric([name], r["published"])
            consumed.add_metric([name], r["consumed"])
        yield from (occ, bp, episodes, published, consumed)

        up = GaugeMetricFamily("hftd_agent_up", "1 while the agent runs with a fresh heartbeat",
                               labels=["agent"])
        age = GaugeMetricFamily("hftd_agent_heartbeat_age_seconds", "Seconds since the agent's "
                                "last heartbeat", labels=["agent"])
        restarts = CounterMetricFamily("hftd_agent_restarts", "Times the supervisor restarted "
                                       "the agent", labels=["agent"])
        cpu = CounterMetricFamily("hftd_agent_cpu_seconds", "CPU time of the agent's process "
                                  "(user + system)", labels=["agent"])
        rss = GaugeMetricFamily("hftd_agent_resident_memory_bytes", "Resident memory of the "
                                "agent's process", labels=["agent"])
        for name, h in v.agent_health().items():
            up.add_metric([name], 1 if h["up"] else 0)
            age.add_metric([name], h["heartbeat_age_s"] if h["heartbeat_age_s"] is not None
                           else float("nan"))
            restarts.add_metric([name], h["restarts"])
            if h["cpu_seconds"] is not None:
                cpu.add_metric([name], h["cpu_seconds"])
                rss.add_metric([name], h["rss_bytes"])
        paused = GaugeMetricFamily("hftd_trading_paused", "1 while the kill switch is on")
        paused.add_metric([], v.blocks["executor"].get("paused"))
        yield from (up, age, restarts, cpu, rss, paused)


def _pfcf_metrics(feed: dict, venue: dict):
    """PFCF (hftd.feeds.pfcf, hftd.venues.pfcf): each path's connection, its connection
    events, the feed's messages by outcome and its silence, the venue's counts."""
    if "feed.disconnects" not in feed and "venue.connected" not in venue:
        return
    up = GaugeMetricFamily("hftd_pfcf_connected", "1 while PFCF's quote (feed) or order "
                           "(venue) connection is up", labels=["path"])
    conn = CounterMetricFamily("hftd_pfcf_connection_events", "PFCF connection events by path "
                               "(quote, order) and event (connects, disconnects, errors)",
                               labels=["path", "event"])
    for path, vals, p in (("quote", feed, "feed."), ("order", venue, "venue.")):
        if f"{p}connected" not in vals:
            continue
        up.add_metric([path], vals[f"{p}connected"])
        for e in ("connects", "disconnects", "errors"):
            conn.add_metric([path, e], vals[f"{p}{e}"])
    yield from (up, conn)
    if "feed.disconnects" in feed:
        from .feeds.pfcf import COUNTS

        msgs = _counts("hftd_pfcf_feed", "The PFCF feed's counts: messages, ticks, lots, "
                       "duplicates, gap_lots (missed), bad_price, unknown, sessions, overflow",
                       COUNTS, feed, "feed.")
        silent = GaugeMetricFamily("hftd_pfcf_feed_silent_seconds", "Seconds without a PFCF "
                                   "trade while TAIFEX is open")
        silent.add_metric([], feed["feed.silent_s"])
        yield from (msgs, silent)
    if "venue.connected" in venue:
        from .venues.pfcf import COUNTERS

        yield _counts("hftd_pfcf_venue", "The PFCF venue's counts: refused, foreign (other "
                      "programs' replies), unmatched, and what the start-up reconciliation "
                      "applied", COUNTERS, venue, "venue.")


def _counts(name: str, doc: str, keys, vals: dict, prefix: str):
    """A counter family of `keys` (labelled `what`) but the connection events."""
    fam = CounterMetricFamily(name, doc, labels=["what"])
    for k in keys:
        if k not in ("connects", "disconnects", "errors"):
            fam.add_metric([k], vals[prefix + k])
    return fam


def _feed_metrics(vals: dict):
    """feed = "taifex": its rows by outcome, rejected rows by reason, progress and the
    per-instrument figures (the producer's `feed.*` values); feed = "recording": its
    ticks and files, and the same progress gauges."""
    if "feed.truncated_files" in vals:
        yield from _recording_metrics(vals)
        return
    if "feed.rows_read" not in vals:
        return
    rows = CounterMetricFamily("hftd_feed_rows", "Rows of the TAIFEX files opened so far, by "
                               "outcome (read = ticks + spread + unconfigured + rejected)",
                               labels=["outcome"])
    for k in ("rows_read", "ticks", "spread_skipped", "unconfigured_skipped", "rejected",
              "auction_ticks"):
        rows.add_metric([k.replace("rows_", "")], vals[f"feed.{k}"])
    rejected = CounterMetricFamily("hftd_feed_rejected_rows", "Rows of the TAIFEX files "
                                   "rejected, by reason", labels=["reason"])
    fed = CounterMetricFamily("hftd_feed_instrument_ticks", "Ticks the TAIFEX replay fed, per "
                              "instrument", labels=["instrument"])
    lots = CounterMetricFamily("hftd_feed_instrument_lots", "Lots of the ticks the TAIFEX "
                               "replay fed, per instrument", labels=["instrument"])
    last = GaugeMetricFamily("hftd_feed_last_price_ticks", "Last price the TAIFEX replay fed, "
                             "per instrument, in ticks", labels=["instrument"])
    for k, v in vals.items():
        if k.startswith("feed.rejected."):
            rejected.add_metric([k[len("feed.rejected."):]], v)
        elif k.startswith("feed.ticks."):
            fed.add_metric([k[len("feed.ticks."):]], v)
        elif k.startswith("feed.lots."):
            lots.add_metric([k[len("feed.lots."):]], v)
        elif k.startswith("feed.last."):
            last.add_metric([k[len("feed.last."):]], v)
    yield from (rows, rejected, fed, lots, last)
    yield from _replay_progress(vals, "TAIFEX files")


def _recording_metrics(vals: dict):
    ticks = CounterMetricFamily("hftd_feed_recording_ticks", "Ticks of the recordings opened "
                                "so far, by outcome (fed, to_replay)", labels=["outcome"])
    ticks.add_metric(["fed"], vals["feed.ticks"] - vals["feed.pending"])
    ticks.add_metric(["to_replay"], vals["feed.pending"])
    bad = CounterMetricFamily("hftd_feed_recording_bad_files", "Recordings skipped (unreadable) "
                              "or replayed up to a partial record (truncated)", labels=["what"])
    bad.add_metric(["unreadable"], vals["feed.unreadable_files"])
    bad.add_metric(["truncated"], vals["feed.truncated_files"])
    yield from (ticks, bad)
    yield from _replay_progress(vals, "recordings")


def _replay_progress(vals: dict, what: str):
    """Where a file feed's replay is (hftd.feeds.replay's progress values)."""
    progress = GaugeMetricFamily("hftd_feed_progress_ratio", f"Share of the {what}' bytes "
                                 f"replayed")
    progress.add_metric([], vals["feed.progress_ppm"] / 1e6)
    files = GaugeMetricFamily("hftd_feed_file", f"The one of the {what} being replayed "
                              f"(1-based) and how many there are", labels=["what"])
    files.add_metric(["current"], vals["feed.file"])
    files.add_metric(["total"], vals["feed.files"])
    pending = GaugeMetricFamily("hftd_feed_pending_ticks", f"Ticks of the opened {what} not "
                                f"fed yet")
    pending.add_metric([], vals["feed.pending"])
    t = GaugeMetricFamily("hftd_feed_exchange_time_seconds", "Exchange time of the last tick "
                          "the replay fed (since the epoch)")
    t.add_metric([], vals["feed.last_exchange_ns"] / 1e9)
    yield from (progress, files, pending, t)


def _positions(vals: dict, position, pnl, avg, lots) -> None:
    """The executor's `pos.<strategy>.<symbol>` and its siblings (money in hundredths)."""
    for key, qty in vals.items():
        if not key.startswith("pos."):
            continue
        _, strategy, symbol = key.split(".", 2)
        sfx = f"{strategy}.{symbol}"
        labels = [strategy, symbol]
        money = {k: vals[f"{k}.{sfx}"] / 100 for k in ("realized", "unrealized", "fees", "tax")}
        money["net"] = money["realized"] + money["unrealized"] - money["fees"] - money["tax"]
        position.add_metric(labels, qty)
        avg.add_metric(labels, vals[f"avg.{sfx}"] / 1e6)
        lots.add_metric(labels, vals[f"volume.{sfx}"])
        for component, x in money.items():
            pnl.add_metric(labels + [component], x)


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REQUEST_TIMEOUT_S = 10.0  # a client that has not sent its request by then is hung up on


class _Handler(socketserver.StreamRequestHandler):
    timeout = REQUEST_TIMEOUT_S

    def handle(self) -> None:
        try:
            request = self.rfile.readline(8192).split()
            for _ in range(100):  # the headers: nothing in them changes the answer
                if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                    break
            if len(request) != 3 or not request[2].startswith(b"HTTP/"):
                return self._reply(400, b"bad request\n")
            if request[0] not in (b"GET", b"HEAD"):
                return self._reply(405, b"only GET and HEAD\n")
            try:
                body = render(self.server.collector)
            except Exception as e:  # a scrape must never take the supervisor down
                get_log("hftd").error(f"/metrics failed: {e!r}")
                return self._reply(500, b"collecting the metrics failed\n")
            self._reply(200, body, head=request[0] == b"HEAD")
        except OSError:  # the client went away, or was too slow
            pass

    def _reply(self, status: int, body: bytes, head: bool = False) -> None:
        reason = {200: "OK", 400: "Bad Request", 405: "Method Not Allowed",
                  500: "Internal Server Error"}[status]
        ctype = CONTENT_TYPE if status == 200 else "text/plain; charset=utf-8"
        self.wfile.write(f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                         + (b"" if head else body))


class MetricsServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, host: str, port: int, collector):
        try:  # bytes: a str host is IDNA-encoded, which imports unicodedata (~1 MiB)
            name = host.encode("ascii") if host else None
        except UnicodeEncodeError:
            name = host
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        self.address_family = infos[0][0]
        self.collector = collector
        super().__init__(infos[0][4][:2], _Handler)


def serve(view: InstanceView, host: str, port: int):
    """Serve /metrics on host:port in a background thread; returns (server, bound port)."""
    server = MetricsServer(host, port, HftdCollector(view))
    threading.Thread(target=server.serve_forever, name="hftd-metrics", daemon=True).start()
    return server, server.server_address[1]
