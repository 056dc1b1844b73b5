"""TUN (IPIP, ipvsadm -i) vectors: the packet, untouched, inside an outer IPv4 header DIP -> RIP,
protocol 4, with TOS, DF and TTL copied from the inner header (the kernel's
ip_vs_tunnel_xmit()), whose TTL is one less (decrement_ttl() runs before it). A packet that no longer fits the egress MTU with the 20 bytes of the outer
header: with DF, ICMP 3/4 "fragmentation needed" back to the client from the VIP, next-hop MTU
= MTU - 20, quoting as much of the packet as fits a 576-byte datagram (RFC 1191, RFC 1812
4.3.2.3); without DF, dropped (too_big).

The core numbers its outer headers' IP ids from 0, one per header it builds (the tunnels and the
ICMP errors), so the expected ids follow the list's order. Services TCP and UDP VIP:80, each with
one destination RIP:80 in mode "tunnel"; one Forwarder provisioned from ``DIRECTOR`` runs the
vectors in order (tests/vectors/fixtures.py).
"""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, VirtualService
from tests.vectors.topology import (CLIENT, DIP, INTERFACE, MTU, NEIGHBOURS, RIP, ROUTER_MAC,
                                    ROUTES, RS_MAC, VIP, built, eth_in, eth_to, padded)

DIRECTOR = DirectorSetup(
    interfaces=(INTERFACE,), routes=ROUTES, neighbours=NEIGHBOURS,
    services=(VirtualService(0, 6, VIP, 80), VirtualService(1, 17, VIP, 80)),
    dests=(Destination(0, 0, RIP, 80, "tunnel"), Destination(1, 1, RIP, 80, "tunnel")))

IPIP_OVERHEAD = 20
ICMP_QUOTE_MAX = 576 - 20 - 8


def tunnelled(pin, ip_id):
    """(input, expected): the IP packet (without any Ethernet padding) wrapped DIP -> RIP."""
    pin = built(pin)
    inner = IP(bytes(pin[IP])[:pin[IP].len])
    inner.ttl -= 1
    del inner.chksum
    inner = IP(bytes(inner))
    outer = IP(src=DIP, dst=RIP, proto=4, id=ip_id, tos=inner.tos, ttl=inner.ttl,
               flags=inner.flags & "DF")
    return pin, eth_to(RS_MAC) / outer / inner


def frag_needed(pin, ip_id, mtu=MTU):
    """(input, expected): ICMP 3/4 from the VIP to the client in place of `pin`."""
    pin = built(pin)
    quote = bytes(pin[IP])[:ICMP_QUOTE_MAX]
    icmp = ICMP(type=3, code=4, nexthopmtu=mtu - IPIP_OVERHEAD) / Raw(quote)
    return pin, eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, tos=0xC0, ttl=64, id=ip_id) / icmp


def tcp_in(sport, flags, payload=b"", df=True, **tcp_kw):
    pkt = (eth_in() / IP(src=CLIENT, dst=VIP, ttl=61, tos=0x10, flags="DF" if df else 0)
           / TCP(sport=sport, dport=80, flags=flags, **tcp_kw))
    return pkt / Raw(payload) if payload else pkt


DF, NO_DF = 40000, 40001
TOO_BIG = b"z" * (MTU - 40)          # an IP packet of exactly the MTU: 20 more do not fit

VECTORS = [
    fx.forwarded("TUN SYN in with DF: IPIP DIP -> RIP, TOS, TTL and DF copied, the inner packet "
                 "untouched",
                 tunnelled(tcp_in(DF, "S", b"hello", seq=7, options=[("MSS", 1460)]), 0)),
    fx.forwarded("TUN SYN in without DF: the outer header has no DF either",
                 tunnelled(tcp_in(NO_DF, "S", b"hello", df=False, seq=7,
                                  options=[("MSS", 1460)]), 1)),
    ESTABLISHED := fx.forwarded("TUN ACK in, established flow",
                                tunnelled(tcp_in(DF, "A", seq=13, ack=501), 2)),
    fx.forwarded("TUN UDP in, short frame padded to 60: the padding is not tunnelled",
                 tunnelled(padded(eth_in() / IP(src=CLIENT, dst=VIP) / UDP(sport=5000, dport=80)
                                  / Raw(b"q")), 3)),
    fx.forwarded("TUN segment of MTU bytes with DF: ICMP fragmentation needed to the client "
                 "(next-hop MTU 1480), quoting 548 bytes",
                 frag_needed(tcp_in(DF, "PA", TOO_BIG, seq=13, ack=501), 4),
                 reason="frag_needed"),
    fx.not_forwarded("TUN segment of MTU bytes without DF: dropped",
                     tcp_in(NO_DF, "PA", TOO_BIG, df=False, seq=13, ack=501), "drop", "too_big"),
]
