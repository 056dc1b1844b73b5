"""The live figures of a running lbd, as one JSON-able snapshot: what the Prometheus metrics
(lb.director.metrics) expose and what `lbadm top` (lb.director.top) shows, both read from here.

Per service and per server: ActiveConn / InActConn now, the cumulative counters of `--stats`
(a service's are the sum of its servers', as in `lbadm -L --stats`), the rates of `--rate`
(lb.director.estimator); every health check's state; for the fast path: frames dropped and passed to the kernel by reason,
and its totals (frames in and out, connections made and expired, ring drops, ...).
"""
from __future__ import annotations

import time

from lb._forward import REASON_NAMES
from lb.director.estimator import ZERO
from lb.director.listings import FWD_NAMES, dest_key, service_name

COUNTERS = ("active", "inactive", "conns", "inpkts", "outpkts", "inbytes", "outbytes")
# Reasons the fast path leaves a frame to the kernel: not IPv4, nothing of lbd's, or a frame
# the ring saw that is for another host (promiscuous) or our own outgoing one, ICMP that is no
# error about a connection of ours (fastpath/icmp.pxi).
PASSES = ("not_ipv4", "not_ours", "not_for_us", "icmp_not_error", "icmp_bad_quote",
          "icmp_about_icmp", "icmp_no_conn")
# Counted under a reason but forwarded all the same (FULLNAT/ENAT without room for the TOA, ENAT
# UDP without room for the UOA; an ICMP error about a connection, translated and sent on).
FORWARDED_ANYWAY = ("toa_no_room", "uoa_no_room", "icmp_relayed")
DROPS = tuple(r for r in REASON_NAMES[1:] if r not in PASSES + FORWARDED_ANYWAY)


def _server(svc, dest, rates) -> dict:
    c = dest.counters()
    return {"server": f"{dest.addr}:{dest.port}", "addr": dest.addr, "port": dest.port,
            "fwd": FWD_NAMES.get(dest.fwd, dest.fwd), "weight": dest.weight,
            "overloaded": dest.overloaded, **{k: c[k] for k in COUNTERS},
            "rates": rates(dest_key(svc, dest)) if dest.slot is not None else dict(ZERO)}


def _service(svc, rates) -> dict:
    servers = [_server(svc, d, rates) for d in svc.dests]
    return {"service": " ".join(service_name(svc).split()), "proto": svc.proto, "vip": svc.vip,
            "port": svc.port, "fwmark": svc.fwmark, "scheduler": svc.scheduler,
            **{k: sum(s[k] for s in servers) for k in COUNTERS},
            "rates": rates(svc.key), "servers": servers}


def snapshot(services, fastpath, rates=lambda key: dict(ZERO), checks=()) -> dict:
    """Every figure, now. `services`: lb.director.model.Service objects bound to the fast path;
    `fastpath`: the Forwarder (counters()); `rates`: the estimator's rates(key); `checks`: the
    health checks' rows (lb.director.health.listing.figures)."""
    counters = fastpath.counters()
    reasons = set(REASON_NAMES[1:])
    return {
        "time": time.time(),
        "services": [_service(s, rates) for s in services],
        "drops": {r: counters.get(r, 0) for r in DROPS},
        "passes": {r: counters.get(r, 0) for r in PASSES},
        "forwarded_anyway": {r: counters.get(r, 0) for r in FORWARDED_ANYWAY},
        "fastpath": {k: v for k, v in counters.items() if k not in reasons},
        "checks": list(checks),
    }
