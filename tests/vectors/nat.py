"""NAT (masquerading) vectors: client <-> VIP:80 on the director <-> RIP:8080.

``VECTORS`` (see tests/vectors/fixtures.py for the shape) run IN ORDER through ONE Forwarder
provisioned from ``DIRECTOR``: a later vector may rely on a connection an earlier one opened (the
SYN-ACK needs the SYN). The topology is tests/vectors/topology.py's; services:
TCP and UDP VIP:80, each with one destination RIP:8080.
"""
from dataclasses import replace

from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, VirtualService
from tests.vectors.topology import (  # noqa: F401  (the names tests use as V.*)
    CLIENT, DIRECTOR_MAC, IFINDEX, IFSLOT, INTERFACE, LOCAL_CLIENT, LOCAL_CLIENT_MAC, MTU,
    NEIGHBOURS, NOW, RIP, ROUTER_IP, ROUTER_MAC, ROUTES, RS_MAC, VIP, eth_in, eth_to, mac,
    padded)

VPORT, RPORT = 80, 8080
TCP_SVC, UDP_SVC = 0, 1                      # service slots
TCP_DEST, UDP_DEST = 0, 1                    # destination slots

DIRECTOR = DirectorSetup(
    interfaces=(INTERFACE,), routes=ROUTES, neighbours=NEIGHBOURS,
    services=(VirtualService(TCP_SVC, 6, VIP, VPORT), VirtualService(UDP_SVC, 17, VIP, VPORT)),
    dests=(Destination(TCP_DEST, TCP_SVC, RIP, RPORT), Destination(UDP_DEST, UDP_SVC, RIP, RPORT)))


def configure(fwd, neighbours=True, routes=True):
    """Install DIRECTOR into an existing Forwarder (optionally without its neighbours or
    routes); tests that make their own use fx.provision(DIRECTOR)."""
    return fx.install(fwd, replace(DIRECTOR, neighbours=NEIGHBOURS if neighbours else (),
                                   routes=ROUTES if routes else ()))


def scheduler(flows):
    """The scheduler the vectors assume (fx.Scheduler; each service has one destination)."""
    return fx.TurnScheduler(DIRECTOR)(flows)


# --- frame builders ----------------------------------------------------------------------------
def _word_for_zero_sum(pkt, layer):
    """The 16-bit value that, put in the first two bytes of `pkt`'s L4 payload, makes the L4
    one's-complement sum 0xFFFF, i.e. a computed checksum of zero."""
    probe = pkt.copy()
    probe[Raw].load = b"\x00\x00" + probe[Raw].load[2:]
    c = Ether(bytes(probe))[layer].chksum
    s = (~c) & 0xFFFF                        # the sum without the word
    if layer is UDP and c == 0xFFFF:         # scapy already turned a zero result into 0xFFFF
        return 0
    return 0xFFFF - s


def _with_zero_checksum(make, layer):
    """Build make(word) with the word that gives the *expected* output a zero checksum."""
    word = _word_for_zero_sum(make(0)[1], layer)
    return make(word)


def tcp_in(sport, flags, payload=b"", src=CLIENT, ttl=64, src_mac=ROUTER_MAC, ip_kw=None,
           **tcp_kw):
    """(input, expected) for a client -> VIP:80 TCP segment: DNAT to RIP:8080."""
    ip_kw = ip_kw or {}
    tail = [Raw(payload)] if payload else []
    pin = eth_in(src_mac) / IP(src=src, dst=VIP, ttl=ttl, **ip_kw) / TCP(sport=sport, dport=VPORT, flags=flags, **tcp_kw)
    exp = eth_to(RS_MAC) / IP(src=src, dst=RIP, ttl=ttl - 1, **ip_kw) / TCP(sport=sport, dport=RPORT, flags=flags, **tcp_kw)
    for t in tail:
        pin, exp = pin / t, exp / Raw(t.load)
    return pin, exp


def tcp_out(dport, flags, payload=b"", dst=CLIENT, ttl=64, dst_mac=ROUTER_MAC, ip_kw=None,
            **tcp_kw):
    """(input, expected) for a RIP:8080 -> client TCP segment: SNAT to VIP:80."""
    ip_kw = ip_kw or {}
    pin = eth_in(RS_MAC) / IP(src=RIP, dst=dst, ttl=ttl, **ip_kw) / TCP(sport=RPORT, dport=dport, flags=flags, **tcp_kw)
    exp = eth_to(dst_mac) / IP(src=VIP, dst=dst, ttl=ttl - 1, **ip_kw) / TCP(sport=VPORT, dport=dport, flags=flags, **tcp_kw)
    if payload:
        pin, exp = pin / Raw(payload), exp / Raw(payload)
    return pin, exp


def udp_in(sport, payload, chksum=None, src=CLIENT, ttl=64):
    pin = eth_in() / IP(src=src, dst=VIP, ttl=ttl) / UDP(sport=sport, dport=VPORT, chksum=chksum) / Raw(payload)
    exp = eth_to(RS_MAC) / IP(src=src, dst=RIP, ttl=ttl - 1) / UDP(sport=sport, dport=RPORT, chksum=chksum) / Raw(payload)
    return pin, exp


def udp_out(dport, payload, chksum=None, dst=CLIENT, ttl=64):
    pin = eth_in(RS_MAC) / IP(src=RIP, dst=dst, ttl=ttl) / UDP(sport=RPORT, dport=dport, chksum=chksum) / Raw(payload)
    exp = eth_to(ROUTER_MAC) / IP(src=VIP, dst=dst, ttl=ttl - 1) / UDP(sport=VPORT, dport=dport, chksum=chksum) / Raw(payload)
    return pin, exp


def fwd_padded(description, pair, fill=b"\x00"):
    """A short frame as it comes off the wire, padded to 60 bytes; the padding must go out
    unchanged and must not count in the IP length or the L4 checksum."""
    pin, exp = pair
    return fx.forwarded(description, (padded(pin, fill=fill), padded(exp, fill=fill)))


def with_ip_trailer(pkt, trailer):
    """`pkt` with `trailer` inside the IP packet but past the UDP length (as some stacks pad):
    the IP length and checksum grow over it, the UDP header and checksum do not."""
    p = Ether(bytes(pkt) + trailer)
    p[IP].len += len(trailer)
    del p[IP].chksum
    return Ether(bytes(p))


SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None),
            ("WScale", 7)]
HTTP_GET = b"GET / HTTP/1.1\r\nHost: lb.example\r\n\r\n"

# Flow A: CLIENT:40000 -> VIP:80 (TCP), a whole connection.
A = 40000
# Flow B, C: TCP with IP options.  Flow D, E: UDP.  Flow F: an on-link client.
# Flow G: the MTU.  Flow U: UDP with bytes past the UDP length.
B, C, D, E, F, G, U = 40001, 40002, 5353, 5354, 40003, 40004, 7100

VECTORS = [
    # --- TCP, flow A: handshake, data, close ---------------------------------------------------
    fx.forwarded("TCP SYN in: DNAT VIP:80 -> RIP:8080, TTL 64 -> 63, MACs director -> real server; "
        "DF, ToS, IP id and TCP options kept",
        tcp_in(A, "S", seq=1000, window=64240, options=SYN_OPTS,
               ip_kw=dict(id=0x1234, flags="DF", tos=0x10))),
    fx.forwarded("TCP SYN-ACK out: SNAT RIP:8080 -> VIP:80, sent to the router's MAC (off-link client)",
        tcp_out(A, "SA", seq=5000, ack=1001, window=65160, options=SYN_OPTS[:3],
                ip_kw=dict(id=0, flags="DF"))),
    fx.forwarded("TCP ACK in: completes the handshake",
        tcp_in(A, "A", seq=1001, ack=5001, ip_kw=dict(id=0x1235, flags="DF"))),
    ESTABLISHED := fx.forwarded(
        "TCP PSH/ACK in with payload",
        tcp_in(A, "PA", HTTP_GET, seq=1001, ack=5001, ip_kw=dict(id=0x1236, flags="DF"))),
    fx.forwarded("TCP PSH/ACK out with an odd-length payload (checksum's odd tail)",
        tcp_out(A, "PA", b"HTTP/1.1 200 OK\r\n\r\nhello", seq=5001, ack=1001 + len(HTTP_GET),
                ip_kw=dict(id=1, flags="DF"))),
    fwd_padded("TCP ACK in, short 54-byte frame with 6 bytes of zero Ethernet padding",
               tcp_in(A, "A", seq=1001 + len(HTTP_GET), ack=5024, ip_kw=dict(id=0x1237))),
    fwd_padded("TCP ACK out, short frame with non-zero Ethernet padding (not checksummed, kept)",
               tcp_out(A, "A", seq=5024, ack=1001 + len(HTTP_GET), ip_kw=dict(id=2)), fill=b"\xa5"),
    # The incremental update must land on 0x0000 when a full computation gives 0x0000 (TCP has
    # no "no checksum" value; RFC 1624 eqn. 3 never yields 0xFFFF here).
    fx.forwarded("TCP ACK out whose new checksum is 0x0000",
        _with_zero_checksum(lambda w: tcp_out(A, "PA", w.to_bytes(2, "big") + b"zero-sum",
                                              seq=5024, ack=1001 + len(HTTP_GET),
                                              ip_kw=dict(id=3)), TCP)),
    fx.forwarded("TCP FIN/ACK in", tcp_in(A, "FA", seq=1001 + len(HTTP_GET), ack=5034, ip_kw=dict(id=0x1238))),
    fx.forwarded("TCP FIN/ACK out", tcp_out(A, "FA", seq=5034, ack=1002 + len(HTTP_GET), ip_kw=dict(id=4))),
    fx.forwarded("TCP last ACK in", tcp_in(A, "A", seq=1002 + len(HTTP_GET), ack=5035, ip_kw=dict(id=0x1239))),

    # --- TCP with IP options (ihl > 5): the L4 header starts at ihl*4 ---------------------------
    fx.forwarded("TCP SYN in with IP options, ihl=6 (4 x NOP)",
        tcp_in(B, "S", seq=7, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fx.forwarded("TCP SYN-ACK out with IP options, ihl=6",
        tcp_out(B, "SA", seq=70, ack=8, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fx.forwarded("TCP RST in (flow with IP options)",
        tcp_in(B, "R", seq=8, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fx.forwarded("TCP SYN in with the largest IP header, ihl=15 (Record Route, 9 slots)",
        tcp_in(C, "S", seq=9, options=[("MSS", 1400)],
               ip_kw=dict(options=[IPOption_RR(routers=["10.9.9.%d" % i for i in range(1, 10)])]))),
    fx.forwarded("TCP RST/ACK out from the real server, ihl=15",
        tcp_out(C, "RA", seq=0, ack=10,
                ip_kw=dict(options=[IPOption_RR(routers=["10.8.8.%d" % i for i in range(1, 10)])]))),

    # --- UDP ---------------------------------------------------------------------------------------
    UDP_IN := fx.forwarded("UDP in: DNAT VIP:80 -> RIP:8080, checksum updated (a 60-byte frame)",
                           udp_in(D, b"query-0123456789ab")),
    UDP_OUT := fx.forwarded("UDP out: SNAT RIP:8080 -> VIP:80 (a 60-byte frame)",
                            udp_out(D, b"answer-abcdefghijk")),
    fx.forwarded("UDP in whose new checksum computes to zero: sent as 0xFFFF, never 0 (RFC 768)",
        _with_zero_checksum(lambda w: udp_in(D, w.to_bytes(2, "big") + b"zero-sum-udp"), UDP)),
    fwd_padded("UDP in with checksum 0 (none), short frame padded to 60: checksum stays 0",
               udp_in(E, b"nock", chksum=0)),
    fx.forwarded("UDP out with checksum 0 (none): stays 0", udp_out(E, b"no checksum here", chksum=0)),
    # RFC 768: the UDP length rules; bytes past it inside the IP packet are not checksummed,
    # and go out unchanged.
    fx.forwarded("UDP in with 3 bytes inside the IP packet past the UDP length: checksummed over "
                 "the UDP length, the bytes kept",
                 [with_ip_trailer(p, b"\xaa\xbb\xcc") for p in udp_in(U, b"hello")]),

    # --- on-link client: the reply goes to the client's own MAC --------------------------------
    fx.forwarded("TCP SYN in from an on-link client (arrives from its own MAC)",
        tcp_in(F, "S", src=LOCAL_CLIENT, src_mac=LOCAL_CLIENT_MAC, seq=42)),
    fx.forwarded("TCP SYN-ACK out to an on-link client: dst MAC is the client's",
        tcp_out(F, "SA", dst=LOCAL_CLIENT, dst_mac=LOCAL_CLIENT_MAC, seq=420, ack=43)),

    # --- the egress MTU (1500), flow G ------------------------------------------------------------
    fx.forwarded("TCP SYN in, flow G", tcp_in(G, "S", seq=100)),
    fx.forwarded("TCP SYN-ACK out, flow G", tcp_out(G, "SA", seq=500, ack=101)),
    fx.forwarded("TCP ACK in, flow G", tcp_in(G, "A", seq=101, ack=501)),
    fx.not_forwarded("TCP segment in with IP length 1501, over the egress MTU: dropped",
                     tcp_in(G, "PA", b"x" * 1461, seq=101, ack=501)[0], "drop", "too_big"),
    fx.forwarded("TCP segment in with IP length 1500, the egress MTU: forwarded",
                 tcp_in(G, "PA", b"x" * 1460, seq=101, ack=501)),
    fx.not_forwarded("TCP SYN of a new flow with IP length 1501 (data on the SYN): dropped",
                     tcp_in(G + 1, "S", b"y" * 1461, seq=1)[0], "drop", "too_big"),

    # --- not forwarded -------------------------------------------------------------------------
    fx.not_forwarded("TCP ACK in with no connection: dropped",
          tcp_in(41000, "A", seq=1, ack=1)[0], "drop", "tcp_no_conn"),
    fx.not_forwarded("TCP SYN to the VIP on a port without a service: passed to the kernel",
          eth_in() / IP(src=CLIENT, dst=VIP) / TCP(sport=41001, dport=443, flags="S"),
          "pass", "not_ours"),
    fx.not_forwarded("TCP SYN to an address that is no VIP: passed to the kernel",
          eth_in() / IP(src=CLIENT, dst="198.18.0.2") / TCP(sport=41002, dport=80, flags="S"),
          "pass", "not_ours"),
    fx.not_forwarded("TCP segment from the real server that matches no connection: passed",
          tcp_out(41003, "A", seq=1, ack=1)[0], "pass", "not_ours"),
]
