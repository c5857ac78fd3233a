"""Prometheus exporter: a custom collector over an `InstanceView`, served on /metrics.

Every scrape reads the stats blocks and ring headers directly (no locks; nothing kept but
the highest value served of each counter, see `HftdCollector`), so /metrics is as fresh as
`hftd status`. Names follow Prometheus conventions: `hftd_` prefix, seconds (Unix time for a
point in time: no CLOCK_MONOTONIC value leaves hftd), `_total` for counters. Each family
means one thing (`FAMILIES`; `classify` says where each stats value goes), and every series
carries the instance's name as `instance`. Latency histograms are re-bucketed from hftd's
log-linear buckets onto bounds that are edges of those buckets, dense where latency budgets
live (`LATENCY_BUCKETS_S`).

The metric families and the text format (0.0.4) are prometheus-client's, byte for byte (a
test renders the same collector with both), written here because importing prometheus_client
costs the supervisor ~8 MiB of memory of its own (urllib.request, http.server, email, ssl:
its push gateway and WSGI code), an eighth of the instance's memory target (issue 12). The
HTTP side is the few lines a scrape needs: GET or HEAD of any path, one response, close.
"""

from __future__ import annotations

import math
import re
import socket
import socketserver
import threading
import time
from typing import NamedTuple

import numpy as np

from . import __version__
from .log import get as get_log
from .monitor import InstanceView
from .topology import MARKET_DATA


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


def _latency_bounds_ns() -> tuple[int, ...]:
    """The exported histograms' bucket bounds, in ns: 8 per power of two from 1.024 us to
    0.98 s, a power of two apart below and above.

    Each bound is an edge of hftd's own log-linear buckets (`m << e`, hftd.histogram), so
    each cumulative count is exact, not an estimate. With 8 bounds per power of two (m =
    128 * 2^(j/8), rounded) neighbours are at most 9.4 % apart, so a quantile Prometheus
    interpolates inside a bucket is within that of the true one (the 1-2-5 steps before
    were up to 150 % apart). Dense well past the 1 us - 10 ms where latency budgets live:
    tick-to-trade p99 was seen at 26 ms on this 2-vCPU VM busy with other work, and an
    alert on a budget needs the figure right when it is over. 166 bounds + "+Inf": 169
    series per histogram with _sum and _count.
    """
    fine = (128, 140, 152, 166, 181, 197, 215, 235)
    return ((256, 512) + tuple(m << e for e in range(3, 23) for m in fine)
            + tuple(128 << e for e in range(23, 27)))


_BOUNDS_NS = np.array(_latency_bounds_ns(), dtype=np.int64)
LATENCY_BUCKETS_S = tuple(int(b) / 1e9 for b in _BOUNDS_NS)
_LE = tuple(_float(b) for b in LATENCY_BUCKETS_S)


def _histogram(fam: HistogramMetricFamily, labels: list[str], snap) -> None:
    cum = snap.cumulative_at(_BOUNDS_NS).tolist()
    buckets = [(le, float(c)) for le, c in zip(_LE, cum)]
    buckets.append(("+Inf", float(snap.count)))
    fam.add_metric(labels, buckets, snap.sum / 1e9)


# --- the families -------------------------------------------------------------------------
# Each family counts one kind of thing, so a sum over any of its labels means something:
# ticks, orders, reports, polls and recovery steps are families of their own, never values
# of one catch-all label. `stage` is the agent as `hftd status` names it (producer,
# dispatcher, strategy.<name>, executor) wherever a series belongs to an agent; `strategy`
# is a strategy's name where a series belongs to one; and every series carries `instance`
# (the instance's name), added last by `HftdCollector.collect`.
C, G = "counter", "gauge"
FAMILIES = {  # key: (type, name, help, label names)
    "ticks_received": (C, "hftd_ticks_received", "Ticks the producer took from the feed", ()),
    "ticks_rejected": (C, "hftd_ticks_rejected", "Bad ticks the producer rejected, by reason "
                       "(never passed on)", ("reason",)),
    "ring_ticks": (C, "hftd_ring_ticks", "Ticks the writer of a ticks ring had for it, by "
                   "outcome: published, conflated (replaced by a newer tick of the instrument "
                   "while the ring was backpressured), dropped, quarantined (for a strategy "
                   "given up); their sum is what was routed to the ring less what waits "
                   "conflated", ("ring", "outcome")),
    "ring_pending": (G, "hftd_ring_conflated_pending_ticks", "Conflated ticks waiting for "
                     "room in the ring", ("ring",)),
    "last_tick": (G, "hftd_last_tick_timestamp_seconds", "When the producer last took a "
                  "tick from the feed (Unix time)", ()),
    "replays_skipped": (C, "hftd_dispatcher_replays_skipped", "Ticks a restarted dispatcher "
                        "did not route again to a ring that already held them", ("ring",)),
    "full_polls": (C, "hftd_dispatcher_full_polls", "Passes in which the dispatcher found "
                   "a blocking ring without room for its batch (it then parks until the "
                   "ring's reader has freed half of it)", ()),
    "strategy_ticks": (C, "hftd_strategy_ticks", "Ticks handed to the strategy", ("strategy",)),
    "seq_gaps": (C, "hftd_tick_sequence_gaps", "Gaps in the tick sequence a strategy that "
                 "takes every instrument saw: expected where its ticks ring (policy) conflates "
                 "or drops, a loss where it blocks", ("strategy", "policy")),
    "strategy_orders": (C, "hftd_strategy_orders", "Order requests the strategy sent, by "
                        "action (new, cancel, replace)", ("strategy", "action")),
    "orders_refused": (C, "hftd_strategy_orders_refused", "New orders and replaces the "
                       "strategy's API refused while the kill switch was on (never sent)",
                       ("strategy",)),
    "strategy_orders_waiting": (G, "hftd_strategy_orders_waiting", "Order requests waiting "
                                "for room in the strategy's orders ring", ("strategy",)),
    "strategy_working": (G, "hftd_strategy_working_orders", "Working orders, in the "
                         "strategy's own book", ("strategy",)),
    "strategy_reports": (C, "hftd_strategy_reports", "Order reports the strategy handled",
                         ("strategy",)),
    "report_mismatches": (C, "hftd_strategy_report_mismatches", "Reports whose filled or "
                          "leaves quantity disagreed with the strategy's own book",
                          ("strategy",)),
    "state_saves": (C, "hftd_strategy_state_saves", "Saves of the strategy's own state",
                    ("strategy",)),
    "state_save_errors": (C, "hftd_strategy_state_save_errors", "Saves of the strategy's own "
                          "state that failed (trading went on)", ("strategy",)),
    "state_loads": (C, "hftd_strategy_state_loads", "Loads of the strategy's saved state "
                    "(at a start)", ("strategy",)),
    "order_requests": (C, "hftd_order_requests", "Order requests the executor took, by "
                       "action (new, cancel, replace)", ("action",)),
    "orders_ended": (C, "hftd_orders_ended", "New orders that ended, by outcome: filled, "
                     "rejected (by risk or the venue), canceled, expired (an IOC/FOK rest)",
                     ("outcome",)),
    "order_rejects": (C, "hftd_order_rejects", "New orders rejected (REJECT), by reason",
                      ("reason",)),
    "cancel_rejects": (C, "hftd_cancel_rejects", "Cancels and replaces refused "
                       "(CANCEL_REJECTED), by reason", ("reason",)),
    "order_reports": (C, "hftd_order_reports", "Reports the executor made, by kind: ack, "
                      "reject, fill, canceled, expired, replaced, cancel_rejected", ("kind",)),
    "reports_discarded": (C, "hftd_order_reports_discarded", "Reports not sent because "
                          "their strategy was quarantined", ()),
    "reports_waiting": (G, "hftd_order_reports_waiting", "Reports waiting for room in a "
                        "strategy's reports ring", ()),
    "working_orders": (G, "hftd_working_orders", "Orders working at the venue (the "
                       "executor's book)", ()),
    "orphan_orders": (G, "hftd_orphan_orders", "Orders on record that the executor could "
                      "not take back at its start (kept, untouched)", ()),
    "md_ticks": (C, "hftd_market_data_ticks", "Market-data ticks the executor took", ()),
    "venue_trades": (C, "hftd_venue_trades_fed", "Trades fed to the simulated venue's fill "
                     "model (of instruments with orders there)", ()),
    "illegal": (C, "hftd_illegal_transitions", "Order reports that were not a legal "
                "transition of the order (never applied)", ("stage",)),
    "paused": (G, "hftd_trading_paused", "1 while the kill switch is on", ()),
    "loss_trips": (C, "hftd_daily_loss_trips", "Times the daily loss limit tripped the kill "
                   "switch", ()),
    "quarantined": (C, "hftd_strategies_quarantined", "Strategies the supervisor gave up "
                    "on (quarantined)", ()),
    "alarms": (C, "hftd_alarms", "Alarms raised (each trips the kill switch): a block past "
               "its deadline, a silent or disconnected live feed or venue", ("stage",)),
    "control": (C, "hftd_control_events", "Control events (pause, resume, reload, ...) the "
                "agent took", ("stage",)),
    "recovery": (C, "hftd_recovery_events", "What restarted agents did to resume exactly "
                 "(see README, Crash-only), by stage and event", ("stage", "event")),
}

# Values deliberately not exported, by role: the sum of exported values, an internal
# position or sequence, a CLOCK_MONOTONIC time, or values of families of their own (feed.,
# venue., positions). A value in no table is an oversight: tests/test_metrics.py fails.
_SKIP = {
    "producer": re.compile(r"rejected|first_ingest_ns|resumed_at|ck[01]?\..*|feed\..*|"
                           r"record\.(run|day)"),
    "dispatcher": re.compile(r"ticks_in|ticks_out|routed\..*"),
    "strategy": re.compile(r"orders_out|acks|fills|filled|rejects|canceled|expired|replaced|"
                           r"cancel_rejects|first_seq|last_seq|paused|command_done|"
                           r"first_tick_ns|last_tick_ns|tick_started|report_started|"
                           r"(pos|realized|fees|tax)\..*"),
    "executor": re.compile(r"orders_in|reports_out|day_pnl|md_fed|venue_log_start|rate_level|"
                           r"rate_t|risk_reject\..*|(last_id|taking|taking_vseq|rate_level|"
                           r"rate_t)\..*|(pos|avg|realized|unrealized|fees|tax|volume)\..*|"
                           r"venue\..*"),
}
_RECOVERY = {
    "producer": {"record.cut"},
    "strategy": {"reports_after_restart", "stale_answers", "replays_suppressed",
                 "restart_skipped", "reports_skipped", "reconciled", "signals_lost"},
    "executor": {"restored_orders", "restored_pending", "restored_acked", "reconciles",
                 "md_replays", "md_restart_skipped", "journal_replays", "answers_replayed",
                 "answers_in_effect", "reports_resent", "requests_skipped", "requests_redone",
                 "requests_resent"},
}
_SAME = {  # value -> family, the same in every role that has it (labelled by stage)
    "alarms": "alarms", "control_in": "control", "illegal_transitions": "illegal",
}
_BY_ROLE = {  # role -> value -> (family, label values)
    "producer": {"received": ("ticks_received", ()),
                 "published": ("ring_ticks", ("ticks.in", "published")),
                 "conflated": ("ring_ticks", ("ticks.in", "conflated")),
                 "dropped": ("ring_ticks", ("ticks.in", "dropped")),
                 "conflation_pending": ("ring_pending", ("ticks.in",)),
                 "last_ingest_ns": ("last_tick", ())},
    "dispatcher": {"full_polls": ("full_polls", ())},
    "strategy": {"ticks_in": ("strategy_ticks", ()),
                 "new_orders": ("strategy_orders", ("new",)),
                 "cancels_sent": ("strategy_orders", ("cancel",)),
                 "replaces_sent": ("strategy_orders", ("replace",)),
                 "orders_refused": ("orders_refused", ()),
                 "orders_waiting": ("strategy_orders_waiting", ()),
                 "working_orders": ("strategy_working", ()),
                 "reports_in": ("strategy_reports", ()),
                 "report_mismatches": ("report_mismatches", ()),
                 "seq_gaps": ("seq_gaps", ()),
                 "saves": ("state_saves", ()), "save_errors": ("state_save_errors", ()),
                 "loads": ("state_loads", ())},
    "executor": {"new_in": ("order_requests", ("new",)),
                 "cancels_in": ("order_requests", ("cancel",)),
                 "replaces_in": ("order_requests", ("replace",)),
                 "acks": ("order_reports", ("ack",)),
                 "rejects": ("order_reports", ("reject",)),
                 "fills": ("order_reports", ("fill",)),
                 "canceled": ("order_reports", ("canceled",)),
                 "expired": ("order_reports", ("expired",)),
                 "replaced": ("order_reports", ("replaced",)),
                 "cancel_rejects": ("order_reports", ("cancel_rejected",)),
                 "filled": ("orders_ended", ("filled",)),
                 "reports_discarded": ("reports_discarded", ()),
                 "reports_waiting": ("reports_waiting", ()),
                 "working_orders": ("working_orders", ()),
                 "orphan_orders": ("orphan_orders", ()),
                 "md_ticks": ("md_ticks", ()), "md_trades": ("venue_trades", ()),
                 "paused": ("paused", ()), "loss_trips": ("loss_trips", ()),
                 "quarantined": ("quarantined", ())},
}
# the executor's reports that end an order are also its outcome
_ENDS = {"rejects": "rejected", "canceled": "canceled", "expired": "expired"}
_PER_RING = re.compile(r"(delivered|conflated|dropped|quarantined|conflation_pending|"
                       r"replays_skipped)\.(.+)")
_OUTCOME = {"delivered": "published", "conflated": "conflated", "dropped": "dropped",
            "quarantined": "quarantined"}


def classify(agent: str, role: str, name: str, cfg) -> list[tuple[str, tuple]] | None:
    """Where stats value `name` of agent `agent` (of `role`) is exported: a list of (family
    key, label values but `instance`), empty if it is deliberately not exported (`_SKIP`),
    None if nothing says (an oversight: the coverage test fails)."""
    strategy = agent.split(".", 1)[1] if role == "strategy" else ""
    if name in _SAME:
        return [(_SAME[name], (agent,))]
    if name in _RECOVERY.get(role, ()):
        return [("recovery", (agent, name.replace(".", "_")))]
    hit = _BY_ROLE.get(role, {}).get(name)
    if hit is not None:
        key, labels = hit
        if role == "strategy":
            labels = (strategy,) + labels
            if key == "seq_gaps":
                labels += (cfg.ticks_policy(_strategy_cfg(cfg, strategy)),)
        out = [(key, labels)]
        if role == "executor" and name in _ENDS:
            out.append(("orders_ended", (_ENDS[name],)))
        return out
    if role == "producer" and name.startswith("rejected_"):
        return [("ticks_rejected", (name[len("rejected_"):],))]
    if role == "executor" and name.startswith(("reject.", "cancel_reject.")):
        what, reason = name.split(".", 1)
        return [("order_rejects" if what == "reject" else "cancel_rejects", (reason,))]
    if role == "dispatcher":
        m = _PER_RING.fullmatch(name)
        if m:
            what, out = m.groups()
            ring = MARKET_DATA if out == "executor" else f"ticks.{out}"
            if what == "conflation_pending":
                return [("ring_pending", (ring,))]
            if what == "replays_skipped":
                return [("replays_skipped", (ring,))]
            return [("ring_ticks", (ring, _OUTCOME[what]))]
    skip = _SKIP.get(role)
    if skip is not None and skip.fullmatch(name):
        return []
    return None


def _strategy_cfg(cfg, name: str):
    return next(s for s in cfg.strategies if s.name == name)


class HftdCollector:
    """The families of one instance, read fresh at each `collect()`.

    Counters never go backwards, whatever happens to the agents: a restarted agent
    re-derives some of its counters from the rings (hftd/stages/producer.py,
    dispatcher.py: the truth, which may be below what the dead process had counted
    just before it died and had not yet published), and a new process starts its CPU time
    at 0. Prometheus would read either as a counter reset and count everything again
    (rate() jumps). So each counter series is exported as the highest value this collector
    has exported for it (the events counted again after a rollback were counted once
    already), and an agent's CPU time adds up its processes'.
    """

    def __init__(self, view: InstanceView):
        self.view = view
        self._floor: dict[tuple, float] = {}
        self._cpu: dict[str, list] = {}  # agent -> [pid, last CPU seconds, of earlier pids]
        self._classified: dict[tuple, list | None] = {}
        self._lock = threading.Lock()  # collect(): one scrape at a time

    def describe(self):
        return []  # collected fresh on every scrape (prometheus_client's registry asks)

    def collect(self):
        # One scrape at a time, from reading the blocks to updating what was exported: each
        # scrape runs in a thread of its own (two Prometheus servers scrape at once), and a
        # scrape that read an agent's old process after another read its restarted one made
        # `_cpu_total` count a process's CPU time twice, and could store a lower floor over
        # a higher one (a counter then going backwards). A scrape takes milliseconds.
        with self._lock:
            return list(self._collect())

    def _collect(self):
        inst = self.view.cfg.instance
        for fam in self._families():
            for i, s in enumerate(fam.samples):
                labels = dict(s.labels)
                labels["instance"] = inst
                value = s.value
                if fam.type == "counter":
                    key = (s.name, tuple(sorted(labels.items())))
                    value = max(value, self._floor.get(key, value))
                    self._floor[key] = value
                fam.samples[i] = s._replace(labels=labels, value=value)
            yield fam

    def _families(self):
        v = self.view
        cfg = v.cfg
        info = GaugeMetricFamily("hftd_info", "hftd build", labels=["version"])
        info.add_metric([__version__], 1)
        yield info

        stage_lat = HistogramMetricFamily(
            "hftd_stage_latency_seconds",
            "Time from a tick's ingest (t_ingest) to the end of its processing in each stage",
            labels=["stage"])
        t2t = HistogramMetricFamily(
            "hftd_tick_to_trade_seconds",
            "Order handed to the venue minus t_ingest of the tick that caused it")
        fams = {k: (CounterMetricFamily if t == C else GaugeMetricFamily)(n, h, labels=list(ls))
                for k, (t, n, h, ls) in FAMILIES.items()}
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
        # CLOCK_MONOTONIC ns -> Unix time, for the few times that are exported
        wall_minus_mono = time.time() - time.monotonic()
        for a in v.agents:
            block = v.blocks[a.name]
            snap = block.snapshot()
            vals = snap["values"]
            if a.role == "executor":
                _positions(vals, position, pnl, avg, lots)
                day_pnl.add_metric([], vals["day_pnl"] / 100)
            for name, _ in block.schema.values:
                ck = (a.name, name)
                where = self._classified.get(ck, False)
                if where is False:
                    where = self._classified[ck] = classify(a.name, a.role, name, cfg)
                value = vals[name]
                for key, labels in where or ():
                    if key == "last_tick":
                        if not value:
                            continue  # no tick yet: no time
                        value = value / 1e9 + wall_minus_mono
                    fams[key].add_metric(list(labels), value)
            hists = snap["histograms"]
            if "stage" in hists:
                _histogram(stage_lat, [a.name], hists["stage"])
            if "tick_to_trade" in hists:
                _histogram(t2t, [], hists["tick_to_trade"])
        yield from (stage_lat, t2t)
        yield from fams.values()
        yield from (position, pnl, avg, lots, day_pnl)
        feed_vals = v.blocks["producer"].snapshot()["values"]
        yield from _feed_metrics(feed_vals)
        yield from _pfcf_metrics(feed_vals, v.blocks["executor"].snapshot()["values"])

        occ = GaugeMetricFamily("hftd_ring_occupancy_ratio", "Ring occupancy (write - read cursor) "
                                "over capacity", labels=["ring"])
        bp = GaugeMetricFamily("hftd_ring_backpressured", "1 while the ring is above its high "
                               "watermark (until it falls to the low one)", labels=["ring"])
        episodes = CounterMetricFamily("hftd_ring_backpressure_episodes", "Times the ring "
                                       "crossed its high watermark", labels=["ring"])
        published = CounterMetricFamily("hftd_ring_published", "Events published into the "
                                        "ring (end-of-stream markers and control events "
                                        "included)", labels=["ring"])
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
                               labels=["stage"])
        age = GaugeMetricFamily("hftd_agent_heartbeat_age_seconds", "Seconds since the agent's "
                                "last heartbeat (none before its first)", labels=["stage"])
        restarts = CounterMetricFamily("hftd_agent_restarts", "Times the supervisor restarted "
                                       "the agent", labels=["stage"])
        cpu = CounterMetricFamily("hftd_agent_cpu_seconds", "CPU time of the agent's "
                                  "processes (user + system), its restarted ones' added up",
                                  labels=["stage"])
        rss = GaugeMetricFamily("hftd_agent_resident_memory_bytes", "Resident memory of the "
                                "agent's process", labels=["stage"])
        for name, h in v.agent_health().items():
            up.add_metric([name], 1 if h["up"] else 0)
            if h["heartbeat_age_s"] is not None:
                age.add_metric([name], h["heartbeat_age_s"])
            restarts.add_metric([name], h["restarts"])
            if h["cpu_seconds"] is not None:
                cpu.add_metric([name], self._cpu_total(name, h["pid"], h["cpu_seconds"]))
                rss.add_metric([name], h["rss_bytes"])
        yield from (up, age, restarts, cpu, rss)

    def _cpu_total(self, agent: str, pid: int, seconds: float) -> float:
        """CPU seconds of the agent's current process plus those its earlier processes had
        when last seen (a restart starts a process at 0)."""
        seen = self._cpu.setdefault(agent, [pid, 0.0, 0.0])
        if seen[0] != pid:
            seen[2] += seen[1]
            seen[0] = pid
        seen[1] = seconds
        return seen[2] + seconds


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
                               "outcome (their sum is the rows read)", labels=["outcome"])
    for k in ("ticks", "spread_skipped", "unconfigured_skipped", "rejected"):
        rows.add_metric([k], vals[f"feed.{k}"])
    auction = CounterMetricFamily("hftd_feed_auction_ticks", "Ticks of the TAIFEX files "
                                  "opened so far that were opening-auction trades")
    auction.add_metric([], vals["feed.auction_ticks"])
    unreadable = CounterMetricFamily("hftd_feed_unreadable_files", "TAIFEX files skipped as "
                                     "unreadable")
    unreadable.add_metric([], vals["feed.unreadable_files"])
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
    yield from (rows, auction, unreadable, rejected, fed, lots, last)
    yield from _replay_progress(vals, "TAIFEX files")


def _recording_metrics(vals: dict):
    # (the ticks still to replay are hftd_feed_pending_ticks: a level, not a count)
    ticks = CounterMetricFamily("hftd_feed_recording_ticks", "Ticks of the recordings fed")
    ticks.add_metric([], vals["feed.ticks"] - vals["feed.pending"])
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
