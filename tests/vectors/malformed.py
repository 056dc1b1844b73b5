"""Malformed and foreign frames: each one dropped, or passed to the kernel, under its reason,
and nothing sent. The director is nat.DIRECTOR with two flows open (``ESTABLISHED``: TCP
CLIENT:40000 and UDP CLIENT:5000); ``VECTORS`` = ESTABLISHED + ``BAD``, in order through one
Forwarder (tests/vectors/fixtures.py). Inputs are bytes: most of these frames scapy would not
build. Every builder changes only what it is asked to (test_fastpath_badinput checks that the
frames they start from are forwarded).
"""
import struct

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import ARP, Dot1Q, Ether
from scapy.packet import Raw

from lb.inet import checksum
from tests.vectors import fixtures as fx
from tests.vectors import nat as V

DIRECTOR = V.DIRECTOR

ESTABLISHED = [
    fx.forwarded("open TCP CLIENT:40000: SYN in", V.tcp_in(40000, "S", seq=100)),
    fx.forwarded("open TCP CLIENT:40000: SYN-ACK out", V.tcp_out(40000, "SA", seq=500, ack=101)),
    fx.forwarded("open TCP CLIENT:40000: ACK in", V.tcp_in(40000, "A", seq=101, ack=501)),
    fx.forwarded("open UDP CLIENT:5000", V.udp_in(5000, b"q")),
]


def eth(payload=b"", ethertype=0x0800, src=V.ROUTER_MAC):
    return V.mac(V.DIRECTOR_MAC) + V.mac(src) + struct.pack("!H", ethertype) + payload


def rebuilt(pkt, **ip_fields):
    """bytes(pkt) with IP header fields forced *after* scapy computed the checksums."""
    p = Ether(bytes(pkt))
    for k, v in ip_fields.items():
        setattr(p[IP], k, v)
    return bytes(p)


def with_ip_byte(pkt, offset, value, fix_ip_csum=True):
    """Set one byte of the IP header (offset from the IP header start) and, by default, fix the
    IP checksum so that only the intended defect is present."""
    b = bytearray(bytes(pkt))
    b[14 + offset] = value
    if fix_ip_csum:
        ihl = max((b[14] & 0x0F) * 4, 20)
        b[24:26] = b"\0\0"
        b[24:26] = struct.pack("!H", checksum(bytes(b[14:14 + ihl])))
    return bytes(b)


def syn(sport=40010, **kw):
    """A SYN of a new flow (40000 is the established one)."""
    return V.tcp_in(sport, "S", seq=100, **kw)[0]


def vip_tcp(tcp_flags, sport=41000, **ip_kw):
    return Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP, **ip_kw) / TCP(sport=sport, dport=80, flags=tcp_flags)


def other_tcp(**ip_kw):
    return Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst="198.18.0.2", **ip_kw) / TCP(sport=41000, dport=22, flags="S")


def bad_l4_csum(pkt, layer):
    p = Ether(bytes(pkt))
    p[layer].chksum ^= 0x5A5A
    return bytes(p)


def with_l4_csum(pkt, layer, value):
    p = Ether(bytes(pkt))
    assert p[layer].chksum != value
    p[layer].chksum = value
    return bytes(p)


def truncated_l4(pkt, keep):
    """The IP packet cut to ihl + `keep` bytes of L4, with a consistent IP length/checksum."""
    p = Ether(bytes(pkt))
    ihl = p[IP].ihl * 4
    raw = bytes(p)[:14 + ihl + keep]
    return with_ip_byte(with_ip_byte(raw, 2, (ihl + keep) >> 8, False), 3, (ihl + keep) & 0xFF)


def l4_patch(pkt, offset, value, fix_csum=True):
    """Set one L4 byte (offset from the L4 header) and recompute the L4 checksum over the
    IP payload, so that only the intended defect is present."""
    b = bytearray(bytes(pkt))
    ihl = (b[14] & 0x0F) * 4
    l4 = 14 + ihl
    b[l4 + offset] = value
    if fix_csum:
        proto = b[14 + 9]
        tot = struct.unpack("!H", b[16:18])[0]
        coff = l4 + (16 if proto == 6 else 6)
        b[coff:coff + 2] = b"\0\0"
        pseudo = bytes(b[26:34]) + struct.pack("!BBH", 0, proto, tot - ihl)
        b[coff:coff + 2] = struct.pack("!H", checksum(pseudo + bytes(b[l4:14 + tot])))
    return bytes(b)


# (description, frame, verdict, reason): the cases as a table, made vectors below.
CASES = [
    # Ethernet
    ("empty frame", b"", "drop", "short_frame"),
    ("1 byte", b"\x01", "drop", "short_frame"),
    ("13 bytes", eth()[:13], "drop", "short_frame"),
    ("ARP for another address", bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=V.ROUTER_MAC) / ARP(pdst="198.18.0.99", psrc=V.ROUTER_IP)), "pass", "not_ipv4"),
    ("IPv6", bytes(Ether(dst=V.DIRECTOR_MAC, src=V.ROUTER_MAC) / IPv6(dst="2001:db8::1") / TCP(dport=80, flags="S")), "pass", "not_ipv4"),
    ("802.1Q-tagged IPv4 (not untagged IPv4)", bytes(Ether(dst=V.DIRECTOR_MAC, src=V.ROUTER_MAC) / Dot1Q(vlan=5) / IP(src=V.CLIENT, dst=V.VIP) / TCP(dport=80, flags="S")), "pass", "not_ipv4"),
    # IP header
    ("ethertype IPv4, no IP header", eth(), "drop", "bad_ip_header"),
    ("truncated IP header (10 bytes)", bytes(syn())[:24], "drop", "bad_ip_header"),
    ("truncated IP header (19 bytes)", bytes(syn())[:33], "drop", "bad_ip_header"),
    ("IP version 6 in an IPv4 ethertype", with_ip_byte(syn(), 0, 0x65), "drop", "bad_ip_header"),
    ("IP version 0", with_ip_byte(syn(), 0, 0x05), "drop", "bad_ip_header"),
    ("ihl 4 (< 5)", with_ip_byte(syn(), 0, 0x44), "drop", "bad_ip_header"),
    ("ihl 0", with_ip_byte(syn(), 0, 0x40), "drop", "bad_ip_header"),
    ("ihl 15 past the total length", with_ip_byte(syn(), 0, 0x4F), "drop", "bad_ip_header"),
    ("total length > frame", rebuilt(syn(), len=41, chksum=None), "drop", "bad_ip_header"),
    ("total length > frame (65535)", rebuilt(syn(), len=65535, chksum=None), "drop", "bad_ip_header"),
    ("total length < ihl", rebuilt(syn(), len=19, chksum=None), "drop", "bad_ip_header"),
    ("total length 0", rebuilt(syn(), len=0, chksum=None), "drop", "bad_ip_header"),
    ("bad IP checksum, SYN to the VIP", rebuilt(syn(), chksum=0x1234), "drop", "bad_ip_checksum"),
    ("bad IP checksum, UDP to the VIP", rebuilt(V.udp_in(5001, b"x")[0], chksum=0x1234), "drop", "bad_ip_checksum"),
    ("bad IP checksum, established TCP", rebuilt(V.tcp_in(40000, "A", seq=101, ack=501)[0], chksum=0x1234), "drop", "bad_ip_checksum"),
    ("bad IP checksum, established UDP out", rebuilt(V.udp_out(5000, b"a")[0], chksum=0x1234), "drop", "bad_ip_checksum"),
    ("bad IP checksum, not for us", rebuilt(other_tcp(), chksum=0x1234), "pass", "not_ours"),
    # fragments
    ("first fragment (MF) to the VIP", bytes(vip_tcp("S", flags="MF")), "drop", "fragment"),
    ("later fragment (offset 1) to the VIP", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP, proto=6, frag=1) / Raw(b"x" * 16)), "drop", "fragment"),
    ("last fragment (offset, no MF) to the VIP, UDP", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP, proto=17, frag=185) / Raw(b"x" * 16)), "drop", "fragment"),
    ("fragment of an established flow", rebuilt(V.tcp_in(40000, "A", seq=101, ack=501)[0], flags="MF", chksum=None), "drop", "fragment"),
    ("fragment to the VIP on a port with no service", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP, flags="MF") / TCP(dport=443, flags="S")), "drop", "fragment"),
    ("first fragment (MF) elsewhere", bytes(other_tcp(flags="MF")), "pass", "not_ours"),
    ("later fragment elsewhere", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst="198.18.0.2", proto=17, frag=10) / Raw(b"y" * 16)), "pass", "not_ours"),
    # TCP header
    ("truncated TCP header (10 bytes) to the VIP", truncated_l4(syn(), 10), "drop", "bad_l4_header"),
    ("truncated TCP header (0 bytes) to the VIP", truncated_l4(syn(), 0), "drop", "bad_l4_header"),
    ("truncated TCP header, established flow", truncated_l4(V.tcp_in(40000, "A", seq=101, ack=501)[0], 19), "drop", "bad_l4_header"),
    ("truncated TCP header elsewhere", truncated_l4(other_tcp(), 10), "pass", "not_ours"),
    ("TCP data offset 4 (< 5)", l4_patch(syn(), 12, 0x40), "drop", "bad_l4_header"),
    ("TCP data offset 0", l4_patch(syn(), 12, 0x00), "drop", "bad_l4_header"),
    ("TCP data offset 6 past the packet", l4_patch(syn(), 12, 0x60), "drop", "bad_l4_header"),
    ("TCP data offset 15 past the packet", l4_patch(syn(), 12, 0xF0), "drop", "bad_l4_header"),
    ("TCP data offset past the packet, elsewhere", l4_patch(other_tcp(), 12, 0xF0), "pass", "not_ours"),
    # UDP header
    ("UDP length > IP payload", l4_patch(V.udp_in(5001, b"abcd")[0], 5, 13), "drop", "bad_l4_header"),
    ("UDP length 7 (< 8)", l4_patch(V.udp_in(5001, b"abcd")[0], 5, 7), "drop", "bad_l4_header"),
    ("UDP length 0", l4_patch(V.udp_in(5001, b"abcd")[0], 5, 0), "drop", "bad_l4_header"),
    ("UDP length > IP payload, established flow", l4_patch(V.udp_in(5000, b"abcd")[0], 5, 200), "drop", "bad_l4_header"),
    ("truncated UDP header (4 bytes)", truncated_l4(V.udp_in(5001, b"abcd")[0], 4), "drop", "bad_l4_header"),
    # L4 checksums of new flows
    ("wrong TCP checksum on a SYN", bad_l4_csum(syn(), TCP), "drop", "bad_l4_checksum"),
    ("wrong TCP checksum on a SYN with IP options", bad_l4_csum(syn(ip_kw=dict(options=[V.IPOption_NOP()] * 4)), TCP), "drop", "bad_l4_checksum"),
    ("wrong UDP checksum, new flow", bad_l4_csum(V.udp_in(5001, b"abcd")[0], UDP), "drop", "bad_l4_checksum"),
    ("SYN with TCP checksum 0 (TCP has no 'no checksum')", with_l4_csum(syn(), TCP, 0), "drop", "bad_l4_checksum"),
    # TCP without a connection
    ("ACK, no connection", bytes(vip_tcp("A")), "drop", "tcp_no_conn"),
    ("FIN, no connection", bytes(vip_tcp("F")), "drop", "tcp_no_conn"),
    ("RST, no connection", bytes(vip_tcp("R")), "drop", "tcp_no_conn"),
    ("PSH/ACK with data, no connection", bytes(vip_tcp("PA") / Raw(b"data")), "drop", "tcp_no_conn"),
    ("SYN/RST, no connection", bytes(vip_tcp("SR")), "drop", "tcp_no_conn"),
    ("no flags, no connection", bytes(vip_tcp("")), "drop", "tcp_no_conn"),
    # not ours
    ("TCP to the VIP, unknown port", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP) / TCP(dport=443, flags="S")), "pass", "not_ours"),
    ("UDP to the VIP, unknown port", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP) / UDP(dport=53)), "pass", "not_ours"),
    ("TCP to another address", bytes(other_tcp()), "pass", "not_ours"),
    ("ACK to another address", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst="192.0.2.9") / TCP(dport=80, flags="A")), "pass", "not_ours"),
    ("from the real server, unknown client port", bytes(V.tcp_out(40999, "A", seq=1, ack=1)[0]), "pass", "not_ours"),
    # (ICMP errors: tests/vectors/icmp.py; TTL 1: time exceeded, tests/unit/test_fastpath_icmp.py)
    ("ICMP echo to the VIP: the kernel's, as IPVS leaves it", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP) / ICMP()), "pass", "icmp_not_error"),
    ("ICMP elsewhere", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst="198.18.0.2") / ICMP()), "pass", "icmp_not_error"),
    ("GRE to the VIP", bytes(Ether(dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP, proto=47) / Raw(b"\0" * 8)), "pass", "not_ours"),
]

BAD = [fx.not_forwarded(description, frame, verdict, reason)
       for description, frame, verdict, reason in CASES]
VECTORS = ESTABLISHED + BAD
