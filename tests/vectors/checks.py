"""Checking a frame the fast path sent: scapy recomputes every checksum it carries (the first IP
header, and its TCP, UDP or ICMP), and the frame must be byte for byte what scapy builds."""
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.l2 import Ether


def recomputed(frame):
    """`frame` with scapy's own IP and L4 checksums (chksum deleted, packet rebuilt)."""
    p = Ether(frame)
    del p[IP].chksum
    for layer in (TCP, UDP, ICMP):
        if layer in p:
            if layer is UDP and p[UDP].chksum == 0:
                continue                  # no checksum: nothing to recompute (RFC 768)
            del p[layer].chksum
    p = Ether(bytes(p))
    if UDP in p and p[UDP].chksum:
        ip = p[UDP].underlayer            # the inner header of a tunnelled packet
        if ip.len - ip.ihl * 4 > p[UDP].len:
            p[UDP].chksum = _udp_checksum(ip, p[UDP])
            p = Ether(bytes(p))
    return p


def _udp_checksum(ip, udp_layer):
    # RFC 768: the pseudo-header holds the UDP length, and the sum covers that many bytes;
    # scapy takes both from the IP total length, which differs when bytes follow the datagram.
    ip, udp = ip.copy(), bytes(udp_layer)[:udp_layer.len]
    ip.len = ip.ihl * 4 + udp_layer.len
    ck = in4_chksum(17, ip, udp[:6] + b"\0\0" + udp[8:])
    return ck or 0xFFFF


def assert_checksums(frame):
    got, want = Ether(frame), recomputed(frame)
    assert got[IP].chksum == want[IP].chksum, \
        f"IP checksum {got[IP].chksum:#06x}, scapy computes {want[IP].chksum:#06x}"
    for layer in (TCP, UDP, ICMP):
        if layer in got:
            assert got[layer].chksum == want[layer].chksum, \
                f"{layer.__name__} checksum {got[layer].chksum:#06x}, scapy computes {want[layer].chksum:#06x}"
    assert bytes(want) == frame, "scapy, recomputing the checksums, builds other bytes"


def assert_same_fields(frame, expected):
    """Layer by layer, every field of `expected` (dissected from its bytes) equals the one in
    `frame` (bytes): a readable first difference before the byte comparison."""
    g, e = Ether(frame), Ether(bytes(expected))
    while e:                              # NoPayload ends the chain and is false
        if type(g) is not type(e):
            raise AssertionError(f"layer {type(g).__name__} where {type(e).__name__} is "
                                 f"expected: {Ether(frame).summary()}")
        for fd in e.fields_desc:
            a, b = getattr(g, fd.name), getattr(e, fd.name)
            if a != b:
                raise AssertionError(f"{type(e).__name__}.{fd.name}: got {a!r}, expected {b!r}")
        g, e = g.payload, e.payload


def _sum16(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def icmp_parts(frame):
    """(outer IP header, ICMP message, quoted IP header) of an Ethernet frame carrying ICMP,
    whether bare or inside IPIP: the raw bytes, cut by their own length fields."""
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[9] == 4:                                   # TUN: the ICMP packet is inside IPIP
        ip = ip[ihl:]
        ihl = (ip[0] & 0x0F) * 4
    assert ip[9] == 1, f"not ICMP: protocol {ip[9]}"
    tot = int.from_bytes(ip[2:4], "big")
    icmp = ip[ihl:tot]
    quote = icmp[8:]
    return ip[:ihl], icmp, quote[:(quote[0] & 0x0F) * 4]


def assert_icmp_checksums(frame):
    """Every checksum an ICMP error carries that a receiver checks: the outer IP header's (and
    the IPIP header's), the ICMP message's over its whole length, and the quoted IP header's
    (the quoted L4 checksum covers bytes the quote may not hold: it is not checked)."""
    if frame[14 + 9] == 4:
        outer = frame[14:14 + (frame[14] & 0x0F) * 4]
        assert _sum16(outer) == 0xFFFF, "IPIP header checksum wrong"
    ip, icmp, qip = icmp_parts(frame)
    assert _sum16(ip) == 0xFFFF, "outer IP checksum wrong"
    assert _sum16(icmp) == 0xFFFF, "ICMP checksum wrong"
    assert len(qip) >= 20 and _sum16(qip) == 0xFFFF, "quoted IP header checksum wrong"
