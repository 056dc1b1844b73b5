"""DR (direct routing, ipvsadm -g) vectors: the IP packet is untouched but for its TTL (one less,
as the kernel's decrement_ttl() makes it for every method) and so its IP checksum; the Ethernet
header changes, to the real server's MAC (the real server holds the VIP on lo). Replies go from
the real server straight to the client: the director sees only the input direction.

Services TCP and UDP VIP:80, each with one destination RIP:80 in mode "route". The vectors run
in order through one Forwarder provisioned from ``DIRECTOR`` (tests/vectors/fixtures.py).
"""
from scapy.layers.inet import IP, TCP, UDP
from scapy.packet import Raw

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, VirtualService
from tests.vectors.topology import (CLIENT, INTERFACE, NEIGHBOURS, ROUTES, RIP, RS_MAC, VIP,
                                    built, eth_in, eth_to, padded)

DIRECTOR = DirectorSetup(
    interfaces=(INTERFACE,), routes=ROUTES, neighbours=NEIGHBOURS,
    services=(VirtualService(0, 6, VIP, 80), VirtualService(1, 17, VIP, 80)),
    dests=(Destination(0, 0, RIP, 80, "route"), Destination(1, 1, RIP, 80, "route")))


def routed(pin):
    """(input, expected): the same IP packet, TTL - 1, in a frame to the real server."""
    pin = built(pin)
    out = pin[IP].copy()
    out.ttl -= 1
    del out.chksum
    return pin, eth_to(RS_MAC) / out


def tcp_in(sport, flags, payload=b"", **tcp_kw):
    pkt = (eth_in() / IP(src=CLIENT, dst=VIP, ttl=61, tos=0x10, flags="DF")
           / TCP(sport=sport, dport=80, flags=flags, **tcp_kw))
    return routed(pkt / Raw(payload) if payload else pkt)


A = 40000

# The client's handshake and first data: an input-only connection, SYN then ACK: ESTABLISHED.
HANDSHAKE = [
    fx.forwarded("DR SYN in: the MACs change (to the real server's) and the TTL; the rest of the "
                 "IP packet, DF, ToS and options included, is untouched",
                 tcp_in(A, "S", seq=7, options=[("MSS", 1460)])),
    fx.forwarded("DR ACK in", tcp_in(A, "A", seq=8, ack=501)),
    ESTABLISHED := fx.forwarded("DR PSH/ACK in with data", tcp_in(A, "PA", b"x", seq=8, ack=501)),
]
# The real server's reply is not the director's business; the client's FIN still is.
CLOSE = [
    fx.not_forwarded("DR reply from the real server (VIP -> client) arriving at the director: "
                     "passed to the kernel",
                     eth_in(RS_MAC) / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=A, flags="SA"),
                     "pass", "not_ours"),
    fx.forwarded("DR FIN in", tcp_in(A, "FA", seq=9, ack=501)),
]
UDP_FLOW = [
    fx.forwarded("DR UDP in, short frame padded to 60: the padding goes out too",
                 routed(padded(eth_in() / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=80)
                               / Raw(b"q")))),
]

VECTORS = HANDSHAKE + CLOSE + UDP_FLOW
