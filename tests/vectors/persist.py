"""Persistence (-p, -M), one-packet scheduling (-o), firewall-mark services (-f) and port reuse,
as vectors: NAT services over two real servers, RIP (dest slots even) and RIP2 (odd), each
scheduled in turn by fixtures.TurnScheduler, so the server a frame goes to shows whether the
scheduler was asked: a pinned client stays on RIP while a fresh decision would give RIP2.

Every group of vectors has a service of its own, so a group gives the same results alone (as
tests/unit/test_fastpath_persist.py runs them, to look at templates and counters after) as in
``VECTORS``, which one Forwarder provisioned from ``DIRECTOR`` runs in order.
"""
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, VirtualService
from tests.vectors.topology import (BOTH_SERVERS, CLIENT, INTERFACE, RIP, RIP2, ROUTES, RS2_MAC,
                                    RS_MAC, VIP, eth_in, eth_to)

OTHER_CLIENT = "203.0.113.8"
VIP2 = "198.18.0.101"                # the firewall-mark service's
MARK = 7
# Service slots; service s has the destination slots 2s (RIP) and 2s + 1 (RIP2).
PLAIN, PINNED, GROUPED, ONEPACKET, FWMARK, REUSE, SHORT_PERSIST, LONG_CONN = range(8)
SERVICES = (
    VirtualService(PLAIN, 6, VIP, 80),
    VirtualService(PINNED, 6, VIP, 81, persistent=300),
    VirtualService(GROUPED, 6, VIP, 82, persistent=300, netmask="255.255.255.0"),
    VirtualService(ONEPACKET, 17, VIP, 53, onepacket=True),
    VirtualService(FWMARK, 0, None, 0, fwmark=MARK, persistent=300,
                   keys=((6, VIP2, 80), (6, VIP2, 443), (17, VIP2, 53))),
    VirtualService(REUSE, 6, VIP, 83),
    VirtualService(SHORT_PERSIST, 6, VIP, 84, persistent=100),   # used by code tests only
    VirtualService(LONG_CONN, 6, VIP, 85, persistent=10),        # used by code tests only
)


def servers(svc):
    """The two destinations of service `svc`: RIP then RIP2 (port 0 for the mark's: the
    packet's own)."""
    port = 0 if svc.fwmark else svc.port
    return (Destination(2 * svc.slot, svc.slot, RIP, port),
            Destination(2 * svc.slot + 1, svc.slot, RIP2, port))


DIRECTOR = DirectorSetup(interfaces=(INTERFACE,), routes=ROUTES, neighbours=BOTH_SERVERS,
                    services=SERVICES, dests=sum((servers(s) for s in SERVICES), ()),
                    timeouts=(("SYN_RECV", 60),), max_conns=256)
MAC_OF = {RIP: RS_MAC, RIP2: RS2_MAC}


def nat_in(l4, rip, src=CLIENT, vip=VIP):
    """(input, expected): `l4` from `src` to `vip`, DNAT to `rip` (the port kept: every server
    here listens on the service's port)."""
    return (eth_in() / IP(src=src, dst=vip) / l4,
            eth_to(MAC_OF[rip]) / IP(src=src, dst=rip, ttl=63) / l4.copy())


def syn(sport, port, rip, src=CLIENT, vip=VIP, flags="S"):
    return nat_in(TCP(sport=sport, dport=port, flags=flags), rip, src, vip)


def dgram(sport, port, rip, vip=VIP):
    return nat_in(UDP(sport=sport, dport=port) / Raw(b"x"), rip, vip=vip)


NOT_PERSISTENT = [
    fx.forwarded(f"no persistence: connection {k + 1} of one client is scheduled ({which})",
                 syn(1000 + k, 80, rip))
    for k, (which, rip) in enumerate([("RIP", RIP), ("RIP2", RIP2), ("RIP again", RIP)])
]
PINNED_CLIENT = [
    fx.forwarded(f"persistent 300 s: connection {k + 1} of the client stays on RIP",
                 syn(2000 + k, 81, RIP))
    for k in range(10)
] + [
    fx.forwarded("persistent 300 s: another client is scheduled: RIP2",
                 syn(3000, 81, RIP2, src=OTHER_CLIENT)),
]
GROUPED_CLIENTS = [
    fx.forwarded("persistent with netmask /24: 203.0.113.7 scheduled: RIP",
                 syn(1, 82, RIP, src="203.0.113.7")),
    fx.forwarded("persistent with netmask /24: 203.0.113.99, same /24: RIP, not scheduled",
                 syn(2, 82, RIP, src="203.0.113.99")),
    fx.forwarded("persistent with netmask /24: 203.0.114.1, another /24: scheduled, RIP2",
                 syn(3, 82, RIP2, src="203.0.114.1")),
]
ONE_PACKET = [
    fx.forwarded(f"one-packet scheduling: datagram {k + 1} of one flow is scheduled on its own "
                 f"({'RIP' if rip == RIP else 'RIP2'})", dgram(5000, 53, rip))
    for k, rip in enumerate([RIP, RIP2, RIP, RIP2])
]
FWMARK_PORTS = [
    fx.forwarded("fwmark service, persistent: TCP to VIP2:80 scheduled: RIP",
                 syn(1, 80, RIP, vip=VIP2)),
    fx.forwarded("fwmark service, persistent: TCP to VIP2:443, another key, pinned to RIP; "
                 "destination port 0 keeps the packet's 443",
                 syn(2, 443, RIP, vip=VIP2)),
    fx.forwarded("fwmark service, persistent: UDP to VIP2:53, a third key, pinned to RIP",
                 dgram(3, 53, RIP, vip=VIP2)),
    fx.not_forwarded("fwmark service: TCP to VIP2:8080, not one of its keys: passed",
                     syn(4, 8080, RIP, vip=VIP2)[0], "pass", "not_ours"),
]
# conn_reuse_mode: a SYN matching a TIME_WAIT/CLOSE connection starts a new one, scheduled.
PORT_REUSE = [
    fx.forwarded("port reuse: SYN scheduled: RIP", syn(4444, 83, RIP)),
    fx.forwarded("port reuse: ACK", syn(4444, 83, RIP, flags="A")),
    fx.forwarded("port reuse: RST closes the connection", syn(4444, 83, RIP, flags="R")),
    fx.forwarded("port reuse: a SYN on the closed connection's ports is scheduled afresh: RIP2",
                 syn(4444, 83, RIP2)),
]

VECTORS = NOT_PERSISTENT + PINNED_CLIENT + GROUPED_CLIENTS + ONE_PACKET + FWMARK_PORTS + PORT_REUSE
