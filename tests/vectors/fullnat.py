"""FULLNAT (DPVS -b) vectors: in, CIP:cport -> VIP:80 becomes LIP:lport -> RIP:8080; out, the
reverse. The real server learns the client from TOA: kind 254, length 8, client port then client
address, right after the fixed TCP header of the SYN (data offset + 2, IP length + 8, the other
options kept after it); with no room for it (60-byte TCP header, or the egress MTU) the segment
goes without, and toa_no_room counts it.

Local ports are lent per (local address, real server), from the low end of that pair's pool, in
order (1025, 1026, ...), and the expected frames say which: the UDP service's real server is a
server of its own, so its first datagram gets 1025 again. ``director()`` declares the director; ``DIRECTOR`` runs
``VECTORS`` and ``TOA_ON_ACK`` runs ``TOA_ON_ACK_VECTORS`` (TOA on the first ACK instead, as
DPVS may), each in order through one Forwarder (tests/vectors/fixtures.py).
"""
import socket

from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, LocalAddress, VirtualService
from tests.vectors.topology import (CLIENT, INTERFACE, MTU, NEIGHBOURS, RIP, ROUTER_MAC, ROUTES,
                                    RS_MAC, VIP, built, eth_in, eth_to)

LIP1, LIP2 = "198.18.0.3", "198.18.0.4"
RPORT = 8080
ENAT_POOL = 10                        # the local-address slot of the VIP's own ports (ENAT)


def director(mode="fullnat", lips=(LIP1,), ports=(1025, 65535), toa=(True, False)):
    """TCP and UDP VIP:80 -> RIP:8080 in `mode`, with local addresses `lips` (slots 0, 1, ...)
    lending `ports`, and the VIP's own pool for ENAT."""
    laddrs = tuple(LocalAddress(i, lip, *ports) for i, lip in enumerate(lips))
    slots = tuple(range(len(lips)))
    return DirectorSetup(
        interfaces=(INTERFACE,), routes=ROUTES, neighbours=NEIGHBOURS,
        laddrs=laddrs + (LocalAddress(ENAT_POOL, VIP, *ports),),
        services=(VirtualService(0, 6, VIP, 80, laddrs=slots, enat_laddr=ENAT_POOL),
                  VirtualService(1, 17, VIP, 80, laddrs=slots, enat_laddr=ENAT_POOL)),
        dests=(Destination(0, 0, RIP, RPORT, mode), Destination(1, 1, RIP, RPORT, mode)),
        toa=toa)


DIRECTOR = director()
TOA_ON_ACK = director(toa=(False, True))


def toa(cport, caddr=CLIENT):
    return (254, cport.to_bytes(2, "big") + socket.inet_aton(caddr))


def tcp_in(cport, lport, flags, options=(), payload=b"", with_toa=False, laddr=LIP1, **tcp_kw):
    """(input, expected): CLIENT:cport -> VIP:80 becomes laddr:lport -> RIP:8080, TTL 50 -> 49,
    with the client's TOA first among the options when `with_toa`."""
    tcp_kw.setdefault("seq", 100)
    out_opts = ([toa(cport)] if with_toa else []) + list(options)
    pin = (eth_in() / IP(src=CLIENT, dst=VIP, ttl=50)
           / TCP(sport=cport, dport=80, flags=flags, options=list(options), **tcp_kw))
    exp = (eth_to(RS_MAC) / IP(src=laddr, dst=RIP, ttl=49)
           / TCP(sport=lport, dport=RPORT, flags=flags, options=out_opts, **tcp_kw))
    if payload:
        pin, exp = pin / Raw(payload), exp / Raw(payload)
    return built(pin), exp


def tcp_out(cport, lport, flags, payload=b"", laddr=LIP1, **tcp_kw):
    """(input, expected): RIP:8080 -> laddr:lport becomes VIP:80 -> CLIENT:cport."""
    pin = (eth_in(RS_MAC) / IP(src=RIP, dst=laddr)
           / TCP(sport=RPORT, dport=lport, flags=flags, **tcp_kw))
    exp = (eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, ttl=63)
           / TCP(sport=80, dport=cport, flags=flags, **tcp_kw))
    if payload:
        pin, exp = pin / Raw(payload), exp / Raw(payload)
    return pin, exp


def udp_in(cport, lport, payload, laddr=LIP1):
    return (eth_in() / IP(src=CLIENT, dst=VIP) / UDP(sport=cport, dport=80) / Raw(payload),
            eth_to(RS_MAC) / IP(src=laddr, dst=RIP, ttl=63) / UDP(sport=lport, dport=RPORT)
            / Raw(payload))


def udp_out(cport, lport, payload, laddr=LIP1):
    return (eth_in(RS_MAC) / IP(src=RIP, dst=laddr) / UDP(sport=RPORT, dport=lport) / Raw(payload),
            eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, ttl=63) / UDP(sport=80, dport=cport)
            / Raw(payload))


MSS = (("MSS", 1460),)
SYN_OPTIONS = [
    ("no options", ()),
    ("MSS", MSS),
    ("MSS, SACK-permitted, timestamps, window scale",
     MSS + (("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7))),
    ("NOP, NOP, timestamps", (("NOP", None), ("NOP", None), ("Timestamp", (99, 0)))),
]
# 40 bytes of options: a TCP header of 60 bytes, the most there is
FULL_OPTIONS = MSS + (("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7),
                      ("SAck", (1, 2, 3, 4)), ("NOP", None), ("NOP", None))
A = 40000

SYNS = [
    fx.forwarded(f"FULLNAT SYN in ({name}): LIP:lport -> RIP:8080, TOA right after the fixed "
                 "TCP header, the options kept after it",
                 tcp_in(A + k, 1025 + k, "S", options, with_toa=True))
    for k, (name, options) in enumerate(SYN_OPTIONS)
]
NO_ROOM = [
    fx.forwarded("FULLNAT SYN in with a 60-byte TCP header: no room for TOA, sent without",
                 tcp_in(40010, 1029, "S", FULL_OPTIONS)),
    fx.forwarded("FULLNAT SYN in of exactly the egress MTU (data on the SYN): no room for TOA, "
                 "sent without",
                 tcp_in(40011, 1030, "S", MSS, b"x" * (MTU - 20 - 24))),
]
VECTORS = SYNS + [
    REPLY := fx.forwarded("FULLNAT SYN-ACK out: VIP:80 -> CLIENT:cport, to the router",
                          tcp_out(A, 1025, "SA", seq=5, ack=101)),
    ESTABLISHED := fx.forwarded("FULLNAT ACK in with data: no TOA after the SYN",
                                tcp_in(A, 1025, "A", payload=b"GET /", seq=101, ack=6)),
    *NO_ROOM,
    fx.forwarded("FULLNAT UDP in: LIP:lport -> RIP:8080, no TOA", udp_in(5, 1025, b"q")),
    fx.forwarded("FULLNAT UDP out: VIP:80 -> CLIENT", udp_out(5, 1025, b"a")),
]
# Reason counters the list bumps on frames it forwards (fixtures.expected_counts).
SIDE_COUNTS = {"toa_no_room": len(NO_ROOM)}

TOA_ON_ACK_VECTORS = [
    fx.forwarded("FULLNAT, TOA on the first ACK: the SYN goes without",
                 tcp_in(A, 1025, "S", MSS)),
    fx.forwarded("FULLNAT, TOA on the first ACK: the ACK completing the handshake carries it",
                 tcp_in(A, 1025, "A", with_toa=True, seq=101, ack=6)),
    fx.forwarded("FULLNAT, TOA on the first ACK: later ACKs go without",
                 tcp_in(A, 1025, "A", seq=101, ack=6)),
]
