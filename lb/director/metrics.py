"""Prometheus exposition of lbd's live figures (`lbd --metrics ADDR:PORT`, off by default).

A custom collector reads lb.director.figures.snapshot() at scrape time, so every scrape sees the
fast path's counters as they are then (no copies kept up to date in between). Names:

  lbd_service_* / lbd_server_*   {service="TCP 198.18.0.100:80"[, server="198.18.0.11:80"]}
    active_connections, inactive_connections      gauges: ActiveConn, InActConn
    connections_total                             the Conns of --stats
    packets_total, bytes_total {direction="in"|"out"}   InPkts/OutPkts, InBytes/OutBytes
    connections_per_second, packets_per_second, bytes_per_second   the estimator's --rate
  lbd_server_weight, lbd_server_overloaded
  lbd_check_up {service, server, checker}         1 while that health checker passes
  lbd_check_server_in_table {service, server, checker}   1 while the server is in the table
  lbd_check_passes_total, lbd_check_failures_total {service, server, checker}
  lbd_service_quorum_up {service}                 1 while the virtual server has its quorum
  lbd_frames_dropped_total {reason}, lbd_frames_passed_total {reason} (left to the kernel),
  lbd_frames_forwarded_without_toa_total, and the fast path's totals: lbd_rx_frames_total,
  lbd_tx_frames_total, lbd_connections_created_total, lbd_connections_expired_total,
  lbd_arp_replies_total, lbd_ring_drops_total, lbd_connections, lbd_persistence_templates.

The fast path keeps no per-batch or per-loop figures (Forwarder.counters() has none), so there
are no batch-size or loop-time metrics.
"""
from __future__ import annotations

import logging

from prometheus_client import start_http_server
from prometheus_client.core import (CollectorRegistry, CounterMetricFamily, GaugeMetricFamily)

log = logging.getLogger("lbd")

_TOTALS = {"rx_frames": ("lbd_rx_frames", "frames the fast path received"),
           "tx_frames": ("lbd_tx_frames", "frames the fast path sent"),
           "new_conns": ("lbd_connections_created", "connections the fast path made"),
           "expired_conns": ("lbd_connections_expired", "connections that expired"),
           "arp_replies": ("lbd_arp_replies", "ARP replies for VIPs"),
           "ring_drops": ("lbd_ring_drops", "frames the kernel dropped for a full receive ring")}
_GAUGES = {"conns": ("lbd_connections", "connections in the table now"),
           "templates": ("lbd_persistence_templates", "persistence templates in the table now")}


def _families(kind: str, labels: list) -> dict:
    what = "service" if kind == "service" else "real server"
    g, c = GaugeMetricFamily, CounterMetricFamily
    pre = f"lbd_{kind}_"
    fams = {
        "active": g(pre + "active_connections", f"ActiveConn of the {what}", labels=labels),
        "inactive": g(pre + "inactive_connections", f"InActConn of the {what}", labels=labels),
        "conns": c(pre + "connections", f"connections scheduled to the {what}", labels=labels),
        "pkts": c(pre + "packets", f"packets of the {what}'s connections", labels=labels + ["direction"]),
        "bytes": c(pre + "bytes", f"bytes (IP) of the {what}'s connections", labels=labels + ["direction"]),
        "cps": g(pre + "connections_per_second", f"connection rate of the {what} (2 s EWMA)", labels=labels),
        "pps": g(pre + "packets_per_second", f"packet rate of the {what} (2 s EWMA)",
                 labels=labels + ["direction"]),
        "bps": g(pre + "bytes_per_second", f"byte rate of the {what} (2 s EWMA)",
                 labels=labels + ["direction"]),
    }
    if kind == "server":
        fams["weight"] = g("lbd_server_weight", "weight of the real server", labels=labels)
        fams["overloaded"] = g("lbd_server_overloaded", "1 while the server is OVERLOADed (-x)",
                               labels=labels)
    return fams


def _add(fams: dict, labels: list, row: dict) -> None:
    fams["active"].add_metric(labels, row["active"])
    fams["inactive"].add_metric(labels, row["inactive"])
    fams["conns"].add_metric(labels, row["conns"])
    r = row["rates"]
    fams["cps"].add_metric(labels, r["cps"])
    for direction in ("in", "out"):
        fams["pkts"].add_metric(labels + [direction], row[f"{direction}pkts"])
        fams["bytes"].add_metric(labels + [direction], row[f"{direction}bytes"])
        fams["pps"].add_metric(labels + [direction], r[f"{direction}pps"])
        fams["bps"].add_metric(labels + [direction], r[f"{direction}bps"])
    if "weight" in fams:
        fams["weight"].add_metric(labels, row["weight"])
        fams["overloaded"].add_metric(labels, int(row["overloaded"]))


class FiguresCollector:
    """Collects from `source()` (a lb.director.figures.snapshot) at every scrape."""

    def __init__(self, source):
        self.source = source

    def describe(self):
        return []           # figures come and go with the configuration: no fixed list

    def collect(self):
        fig = self.source()
        yield from self._services(fig["services"])
        yield from self._checks(fig.get("checks", []))
        yield from self._fastpath(fig)

    def _services(self, services):
        svc_f = _families("service", ["service"])
        srv_f = _families("server", ["service", "server", "forward"])
        for svc in services:
            _add(svc_f, [svc["service"]], svc)
            for srv in svc["servers"]:
                _add(srv_f, [svc["service"], srv["server"], srv["fwd"]], srv)
        yield from svc_f.values()
        yield from srv_f.values()

    @staticmethod
    def _checks(rows):
        labels = ["service", "server", "checker"]
        up = GaugeMetricFamily("lbd_check_up", "1 while the health checker passes", labels=labels)
        table = GaugeMetricFamily("lbd_check_server_in_table",
                                  "1 while the checked server is in the table", labels=labels)
        passes = CounterMetricFamily("lbd_check_passes", "checks passed", labels=labels)
        fails = CounterMetricFamily("lbd_check_failures", "checks failed", labels=labels)
        quorum = GaugeMetricFamily("lbd_service_quorum_up",
                                   "1 while the virtual server has its quorum", labels=["service"])
        seen = set()
        for row in rows:
            values = [row["service"], row["server"], row["checker"]]
            up.add_metric(values, int(row["up"]))
            table.add_metric(values, int(row["in_table"]))
            passes.add_metric(values, row["passed"])
            fails.add_metric(values, row["failed"])
            if row["service"] not in seen:
                seen.add(row["service"])
                quorum.add_metric([row["service"]], int(row["quorum_up"]))
        yield from (up, table, passes, fails, quorum)

    def _fastpath(self, fig):
        for name, help_, rows in (("lbd_frames_dropped", "frames dropped, by reason", fig["drops"]),
                                  ("lbd_frames_passed", "frames left to the kernel, by reason",
                                   fig["passes"])):
            fam = CounterMetricFamily(name, help_, labels=["reason"])
            for reason, n in rows.items():
                fam.add_metric([reason], n)
            yield fam
        yield CounterMetricFamily("lbd_frames_forwarded_without_toa",
                                  "FULLNAT/ENAT frames sent without the TOA option (no room)",
                                  value=sum(fig["forwarded_anyway"].values()))
        totals = fig["fastpath"]
        for key, (name, help_) in _TOTALS.items():
            if key in totals:
                yield CounterMetricFamily(name, help_, value=totals[key])
        for key, (name, help_) in _GAUGES.items():
            if key in totals:
                yield GaugeMetricFamily(name, help_, value=totals[key])


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (an IPv6 host in brackets); ValueError naming the problem."""
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad --metrics address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:9400")
    return host.strip("[]") or "0.0.0.0", int(port)


class MetricsServer:
    """The HTTP endpoint (prometheus_client's), serving only lbd's figures, until close()."""

    def __init__(self, address: str, source):
        host, port = parse_address(address)
        self.registry = CollectorRegistry()
        self.registry.register(FiguresCollector(source))
        self.httpd, self.thread = start_http_server(port, addr=host, registry=self.registry)
        log.info("metrics on http://%s:%d/metrics", host if ":" not in host else f"[{host}]", port)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
