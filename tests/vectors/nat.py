"""NAT (masquerading) vectors: client <-> VIP:80 on the director <-> RIP:8080.

``VECTORS`` is a list of dicts::

    {"description": str,
     "input":    scapy Ether packet, as it arrives at the director,
     "expected": scapy Ether packet the director sends, or None when nothing is sent,
     "verdict":  "forward" | "pass" | "drop",
     "reason":   None for "forward", else a reason name (lb._forward.REASON_NAMES)}

The vectors run IN ORDER through ONE Forwarder set up with ``configure()`` and ``scheduler``:
a later vector may rely on a connection an earlier one opened (the SYN-ACK needs the SYN).
Expected packets leave ``len``/``chksum`` unset: scapy computes them from scratch, so a vector
also checks the fast path's incremental checksum updates.

Topology (one interface, slot 0)::

    client 203.0.113.7 --- router 198.18.0.1 --- director 198.18.0.2 (VIP 198.18.0.100)
                                                  |--- real server 198.18.0.11 (on link)
                                                  |--- client 198.18.0.50 (on link)
"""
from scapy.layers.inet import IP, TCP, UDP, IPOption_NOP, IPOption_RR
from scapy.layers.l2 import Ether
from scapy.packet import Raw

IFSLOT, IFINDEX, MTU = 0, 5, 1500
DIRECTOR_MAC = "02:00:00:00:00:02"
ROUTER_IP, ROUTER_MAC = "198.18.0.1", "02:00:00:00:00:01"
RIP, RS_MAC = "198.18.0.11", "02:00:00:00:00:11"
LOCAL_CLIENT, LOCAL_CLIENT_MAC = "198.18.0.50", "02:00:00:00:00:50"
CLIENT = "203.0.113.7"                       # off link: reached through the router
VIP, VPORT, RPORT = "198.18.0.100", 80, 8080
TCP_SVC, UDP_SVC = 0, 1                      # service slots
TCP_DEST, UDP_DEST = 0, 1                    # destination slots
ROUTES = [("198.18.0.0", 24, None, IFSLOT), ("0.0.0.0", 0, ROUTER_IP, IFSLOT)]
NEIGHBOURS = [(ROUTER_IP, ROUTER_MAC), (RIP, RS_MAC), (LOCAL_CLIENT, LOCAL_CLIENT_MAC)]
NOW = 1000.0                                 # the clock the vectors run at (seconds)


def mac(s):
    return bytes.fromhex(s.replace(":", ""))


def configure(fwd, neighbours=True, routes=True):
    """Install this module's interface, routes, neighbours, services and destinations."""
    fwd.set_interface(IFSLOT, IFINDEX, mac(DIRECTOR_MAC), MTU)
    if routes:
        fwd.set_routes(ROUTES)
    if neighbours:
        for ip, m in NEIGHBOURS:
            fwd.set_neighbour(ip, IFSLOT, mac(m))
    fwd.set_service(TCP_SVC, 6, VIP, VPORT)
    fwd.set_service(UDP_SVC, 17, VIP, VPORT)
    fwd.set_dest(TCP_DEST, TCP_SVC, RIP, RPORT)
    fwd.set_dest(UDP_DEST, UDP_SVC, RIP, RPORT)
    return fwd


def scheduler(flows):
    """The scheduler the vectors assume: each service has one destination."""
    return [TCP_DEST if svc == TCP_SVC else UDP_DEST for svc, *_ in flows]


# --- frame builders ----------------------------------------------------------------------------
def _eth_in(src_mac=ROUTER_MAC):
    return Ether(src=src_mac, dst=DIRECTOR_MAC)


def _eth_to(dst_mac):
    return Ether(src=DIRECTOR_MAC, dst=dst_mac)


def padded(pkt, size=60, fill=b"\x00"):
    """The frame as it comes off the wire: short frames padded to 60 bytes (no FCS)."""
    raw = bytes(pkt)
    return Ether(raw + fill * (size - len(raw)))


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
    pin = _eth_in(src_mac) / IP(src=src, dst=VIP, ttl=ttl, **ip_kw) / TCP(sport=sport, dport=VPORT, flags=flags, **tcp_kw)
    exp = _eth_to(RS_MAC) / IP(src=src, dst=RIP, ttl=ttl - 1, **ip_kw) / TCP(sport=sport, dport=RPORT, flags=flags, **tcp_kw)
    for t in tail:
        pin, exp = pin / t, exp / Raw(t.load)
    return pin, exp


def tcp_out(dport, flags, payload=b"", dst=CLIENT, ttl=64, dst_mac=ROUTER_MAC, ip_kw=None,
            **tcp_kw):
    """(input, expected) for a RIP:8080 -> client TCP segment: SNAT to VIP:80."""
    ip_kw = ip_kw or {}
    pin = _eth_in(RS_MAC) / IP(src=RIP, dst=dst, ttl=ttl, **ip_kw) / TCP(sport=RPORT, dport=dport, flags=flags, **tcp_kw)
    exp = _eth_to(dst_mac) / IP(src=VIP, dst=dst, ttl=ttl - 1, **ip_kw) / TCP(sport=VPORT, dport=dport, flags=flags, **tcp_kw)
    if payload:
        pin, exp = pin / Raw(payload), exp / Raw(payload)
    return pin, exp


def udp_in(sport, payload, chksum=None, src=CLIENT, ttl=64):
    pin = _eth_in() / IP(src=src, dst=VIP, ttl=ttl) / UDP(sport=sport, dport=VPORT, chksum=chksum) / Raw(payload)
    exp = _eth_to(RS_MAC) / IP(src=src, dst=RIP, ttl=ttl - 1) / UDP(sport=sport, dport=RPORT, chksum=chksum) / Raw(payload)
    return pin, exp


def udp_out(dport, payload, chksum=None, dst=CLIENT, ttl=64):
    pin = _eth_in(RS_MAC) / IP(src=RIP, dst=dst, ttl=ttl) / UDP(sport=RPORT, dport=dport, chksum=chksum) / Raw(payload)
    exp = _eth_to(ROUTER_MAC) / IP(src=VIP, dst=dst, ttl=ttl - 1) / UDP(sport=VPORT, dport=dport, chksum=chksum) / Raw(payload)
    return pin, exp


def fwd(description, pair):
    pin, exp = pair
    return {"description": description, "input": pin, "expected": exp,
            "verdict": "forward", "reason": None}


def fwd_padded(description, pair, fill=b"\x00"):
    """A short frame as it comes off the wire, padded to 60 bytes; the padding must go out
    unchanged and must not count in the IP length or the L4 checksum."""
    pin, exp = pair
    return fwd(description, (padded(pin, fill=fill), padded(exp, fill=fill)))


def nofwd(description, pin, verdict, reason):
    return {"description": description, "input": pin, "expected": None,
            "verdict": verdict, "reason": reason}


SYN_OPTS = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None),
            ("WScale", 7)]
HTTP_GET = b"GET / HTTP/1.1\r\nHost: lb.example\r\n\r\n"

# Flow A: CLIENT:40000 -> VIP:80 (TCP), a whole connection.
A = 40000
# Flow B, C: TCP with IP options.  Flow D, E: UDP.  Flow F: an on-link client.
B, C, D, E, F = 40001, 40002, 5353, 5354, 40003

VECTORS = [
    # --- TCP, flow A: handshake, data, close ---------------------------------------------------
    fwd("TCP SYN in: DNAT VIP:80 -> RIP:8080, TTL 64 -> 63, MACs director -> real server; "
        "DF, ToS, IP id and TCP options kept",
        tcp_in(A, "S", seq=1000, window=64240, options=SYN_OPTS,
               ip_kw=dict(id=0x1234, flags="DF", tos=0x10))),
    fwd("TCP SYN-ACK out: SNAT RIP:8080 -> VIP:80, sent to the router's MAC (off-link client)",
        tcp_out(A, "SA", seq=5000, ack=1001, window=65160, options=SYN_OPTS[:3],
                ip_kw=dict(id=0, flags="DF"))),
    fwd("TCP ACK in: completes the handshake",
        tcp_in(A, "A", seq=1001, ack=5001, ip_kw=dict(id=0x1235, flags="DF"))),
    fwd("TCP PSH/ACK in with payload",
        tcp_in(A, "PA", HTTP_GET, seq=1001, ack=5001, ip_kw=dict(id=0x1236, flags="DF"))),
    fwd("TCP PSH/ACK out with an odd-length payload (checksum's odd tail)",
        tcp_out(A, "PA", b"HTTP/1.1 200 OK\r\n\r\nhello", seq=5001, ack=1001 + len(HTTP_GET),
                ip_kw=dict(id=1, flags="DF"))),
    fwd_padded("TCP ACK in, short 54-byte frame with 6 bytes of zero Ethernet padding",
               tcp_in(A, "A", seq=1001 + len(HTTP_GET), ack=5024, ip_kw=dict(id=0x1237))),
    fwd_padded("TCP ACK out, short frame with non-zero Ethernet padding (not checksummed, kept)",
               tcp_out(A, "A", seq=5024, ack=1001 + len(HTTP_GET), ip_kw=dict(id=2)), fill=b"\xa5"),
    # The incremental update must land on 0x0000 when a full computation gives 0x0000 (TCP has
    # no "no checksum" value; RFC 1624 eqn. 3 never yields 0xFFFF here).
    fwd("TCP ACK out whose new checksum is 0x0000",
        _with_zero_checksum(lambda w: tcp_out(A, "PA", w.to_bytes(2, "big") + b"zero-sum",
                                              seq=5024, ack=1001 + len(HTTP_GET),
                                              ip_kw=dict(id=3)), TCP)),
    fwd("TCP FIN/ACK in", tcp_in(A, "FA", seq=1001 + len(HTTP_GET), ack=5034, ip_kw=dict(id=0x1238))),
    fwd("TCP FIN/ACK out", tcp_out(A, "FA", seq=5034, ack=1002 + len(HTTP_GET), ip_kw=dict(id=4))),
    fwd("TCP last ACK in", tcp_in(A, "A", seq=1002 + len(HTTP_GET), ack=5035, ip_kw=dict(id=0x1239))),

    # --- TCP with IP options (ihl > 5): the L4 header starts at ihl*4 ---------------------------
    fwd("TCP SYN in with IP options, ihl=6 (4 x NOP)",
        tcp_in(B, "S", seq=7, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fwd("TCP SYN-ACK out with IP options, ihl=6",
        tcp_out(B, "SA", seq=70, ack=8, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fwd("TCP RST in (flow with IP options)",
        tcp_in(B, "R", seq=8, ip_kw=dict(options=[IPOption_NOP()] * 4))),
    fwd("TCP SYN in with the largest IP header, ihl=15 (Record Route, 9 slots)",
        tcp_in(C, "S", seq=9, options=[("MSS", 1400)],
               ip_kw=dict(options=[IPOption_RR(routers=["10.9.9.%d" % i for i in range(1, 10)])]))),
    fwd("TCP RST/ACK out from the real server, ihl=15",
        tcp_out(C, "RA", seq=0, ack=10,
                ip_kw=dict(options=[IPOption_RR(routers=["10.8.8.%d" % i for i in range(1, 10)])]))),

    # --- UDP ---------------------------------------------------------------------------------------
    fwd("UDP in: DNAT VIP:80 -> RIP:8080, checksum updated", udp_in(D, b"query-0123456789")),
    fwd("UDP out: SNAT RIP:8080 -> VIP:80", udp_out(D, b"answer-abcdefghijk")),
    fwd("UDP in whose new checksum computes to zero: sent as 0xFFFF, never 0 (RFC 768)",
        _with_zero_checksum(lambda w: udp_in(D, w.to_bytes(2, "big") + b"zero-sum-udp"), UDP)),
    fwd_padded("UDP in with checksum 0 (none), short frame padded to 60: checksum stays 0",
               udp_in(E, b"nock", chksum=0)),
    fwd("UDP out with checksum 0 (none): stays 0", udp_out(E, b"no checksum here", chksum=0)),

    # --- on-link client: the reply goes to the client's own MAC --------------------------------
    fwd("TCP SYN in from an on-link client (arrives from its own MAC)",
        tcp_in(F, "S", src=LOCAL_CLIENT, src_mac=LOCAL_CLIENT_MAC, seq=42)),
    fwd("TCP SYN-ACK out to an on-link client: dst MAC is the client's",
        tcp_out(F, "SA", dst=LOCAL_CLIENT, dst_mac=LOCAL_CLIENT_MAC, seq=420, ack=43)),

    # --- not forwarded -------------------------------------------------------------------------
    nofwd("TCP ACK in with no connection: dropped",
          tcp_in(41000, "A", seq=1, ack=1)[0], "drop", "tcp_no_conn"),
    nofwd("TCP SYN to the VIP on a port without a service: passed to the kernel",
          _eth_in() / IP(src=CLIENT, dst=VIP) / TCP(sport=41001, dport=443, flags="S"),
          "pass", "not_ours"),
    nofwd("TCP SYN to an address that is no VIP: passed to the kernel",
          _eth_in() / IP(src=CLIENT, dst="198.18.0.2") / TCP(sport=41002, dport=80, flags="S"),
          "pass", "not_ours"),
    nofwd("TCP segment from the real server that matches no connection: passed",
          tcp_out(41003, "A", seq=1, ack=1)[0], "pass", "not_ours"),
]
