"""lb.realserver.enat_agent: learning from TOA SYNs, rewriting replies (checksums checked by scapy), the
connection table's life cycle, and any bytes in -> a verdict out."""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from lb import inet
from lb.realserver import enat_agent as ea
from lb.realserver import enat_packets as ep
from lb.realserver.enat_agent import bpf_program, parse_port_map
from lb.realserver.enat_flows import Entry, FlowTable
from lb.realserver.enat_packets import (BAD_IP_HEADER, BAD_L4_HEADER, FRAGMENT, IN_FIN, IN_MALFORMED,
                                        IN_NO_CONN, IN_NOT_FROM_VIP, IN_OTHER, IN_RST, LEARNED, NOT_IPV4,
                                        NOT_TCP_UDP, REWRITTEN, SYN_WITHOUT_TOA, TABLE_FULL, TOA_NOT_IPV4,
                                        TRUNCATED, UNKNOWN_FLOW, learn, rewrite_reply)

VIP, RIP, CIP = "198.18.0.104", "198.18.2.11", "198.18.1.2"
LPORT, CPORT = 30001, 40000
PVIP = socket.inet_aton(VIP)
VIPS = frozenset({PVIP})
NOW = 1000.0


def toa(ip=CIP, port=CPORT) -> bytes:
    return struct.pack("!H", port) + socket.inet_aton(ip)


def syn(flags="S", toa_opt=True, src=VIP, lport=LPORT, dport=80, options=(("MSS", 1460),), **kw) -> bytes:
    opts = ([(254, toa())] if toa_opt else []) + list(options)
    return bytes(IP(src=src, dst=RIP, **kw) / TCP(sport=lport, dport=dport, flags=flags, options=opts))


def reply(flags="SA", payload=b"", sport=80, dport=LPORT, dst=VIP, **kw) -> bytes:
    pkt = IP(src=RIP, dst=dst, **kw) / TCP(sport=sport, dport=dport, flags=flags, seq=7, ack=8,
                                            options=[("MSS", 1460)])
    return bytes(pkt / Raw(payload) if payload else pkt)


def udp_reply(payload=b"pong", sport=5353, dport=LPORT, chksum=None) -> bytes:
    u = UDP(sport=sport, dport=dport) if chksum is None else UDP(sport=sport, dport=dport, chksum=chksum)
    return bytes(IP(src=RIP, dst=VIP) / u / Raw(payload))


def key(proto=6, lport=LPORT, rport=80):
    return (proto, PVIP, lport, socket.inet_aton(RIP), rport)


def table_with(*entries, **kw) -> FlowTable:
    t = FlowTable([VIP], **kw)
    for k, vport in entries:
        assert t.add(k, socket.inet_aton(CIP), CPORT, vport, NOW)
    return t


def checksums_ok(data: bytes) -> IP:
    """scapy recomputes both checksums; they must equal what we wrote. A TCP checksum may be
    the other zero of ones' complement (0 for 0xFFFF: both verify); a UDP one may not be 0,
    which means "no checksum" (RFC 768: a computed 0 is sent as 0xFFFF, as scapy does)."""
    pkt = IP(data)
    again = pkt.copy()
    del again.chksum
    del again.payload.chksum
    again = IP(bytes(again))
    assert again.chksum == pkt.chksum
    mine, right = pkt.payload.chksum, again.payload.chksum
    if UDP in pkt:
        assert mine != 0 and mine == right, (hex(mine), hex(right))
    else:
        assert mine == right or {mine, right} == {0, 0xFFFF}, (hex(mine), hex(right))
    return pkt


# -- learn -------------------------------------------------------------------------------------

def test_learn_a_toa_syn():
    seen, reason = learn(syn(), VIPS)
    assert reason == LEARNED
    assert seen.key == key() and seen.client == (socket.inet_aton(CIP), CPORT) and seen.vport == 80


@pytest.mark.parametrize("options", [(), (("NOP", None), ("NOP", None), ("SAckOK", b"")),
                                     (("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None),
                                      ("WScale", 7))])
def test_learn_with_any_options_after_the_toa(options):
    assert learn(syn(options=options), VIPS)[1] == LEARNED


def test_learn_port_map():
    seen, _ = learn(syn(dport=8080), VIPS, {8080: 80})
    assert seen.key == key(rport=8080) and seen.vport == 80


@pytest.mark.parametrize("packet, reason", [
    (syn(toa_opt=False), SYN_WITHOUT_TOA),
    (syn(src="198.18.1.9"), IN_NOT_FROM_VIP),
    (syn(flags="F", toa_opt=False), IN_FIN),
    (syn(flags="FA", toa_opt=False), IN_FIN),
    (syn(flags="R", toa_opt=False), IN_RST),
    (syn(flags="A", toa_opt=False), IN_OTHER),
    (bytes(IP(src=VIP, dst=RIP) / UDP(sport=1, dport=2)), IN_OTHER),
    (syn()[:30], IN_MALFORMED),
    (b"", IN_MALFORMED),
    (bytes(IP(src=VIP, dst=RIP, frag=3, proto=6) / Raw(b"x" * 40)), IN_MALFORMED),
])
def test_learn_verdicts(packet, reason):
    assert learn(packet, VIPS)[1] == reason


def test_learn_ipv6_toa_is_refused():
    opt = (254, struct.pack("!H", 443) + socket.inet_pton(socket.AF_INET6, "2001:db8::1"))
    pkt = bytes(IP(src=VIP, dst=RIP) / TCP(flags="S", options=[opt]))
    assert learn(pkt, VIPS) == (None, TOA_NOT_IPV4)


def test_learn_from_a_capture_cut_after_the_headers():
    pkt = bytes(IP(src=VIP, dst=RIP) / TCP(sport=LPORT, dport=80, flags="S", options=[(254, toa())]) / Raw(b"x" * 500))
    assert learn(pkt[:ea.SNAPLEN], VIPS)[1] == LEARNED


def test_bad_ip_checksum_is_malformed():
    pkt = bytearray(syn())
    pkt[10] ^= 0xFF
    assert learn(bytes(pkt), VIPS)[1] == IN_MALFORMED


# -- rewrite_reply -------------------------------------------------------------------------------

def test_tcp_syn_ack_rewritten_with_right_checksums():
    t = table_with((key(), 80))
    out, reason = rewrite_reply(reply(), t)
    assert reason == REWRITTEN
    pkt = checksums_ok(out)
    assert (pkt.src, pkt.dst, pkt[TCP].sport, pkt[TCP].dport) == (VIP, CIP, 80, CPORT)
    assert (pkt[TCP].flags, pkt[TCP].seq, pkt[TCP].ack, pkt[TCP].options) == ("SA", 7, 8, [("MSS", 1460)])
    assert pkt.ttl == IP(reply()).ttl and len(out) == len(reply())


def test_tcp_data_and_port_map_rewritten():
    t = table_with((key(rport=8080), 80))
    out, reason = rewrite_reply(reply(flags="PA", payload=b"HTTP/1.0 200 OK\r\n" * 50, sport=8080), t)
    pkt = checksums_ok(out)
    assert reason == REWRITTEN and pkt[TCP].sport == 80 and pkt[Raw].load.startswith(b"HTTP/1.0 200")


def test_udp_reply_rewritten_with_right_checksum():
    t = table_with((key(proto=17, rport=5353), 5353))
    out, reason = rewrite_reply(udp_reply(), t)
    pkt = checksums_ok(out)
    assert reason == REWRITTEN
    assert (pkt.src, pkt.dst, pkt[UDP].sport, pkt[UDP].dport, pkt[UDP].load) == (VIP, CIP, 5353, CPORT, b"pong")


def test_udp_without_checksum_keeps_none():
    t = table_with((key(proto=17, rport=5353), 5353))
    out, _ = rewrite_reply(udp_reply(chksum=0), t)
    assert IP(out)[UDP].chksum == 0 and IP(out).dst == CIP


def test_udp_reply_whose_checksum_computes_to_zero_is_sent_as_ffff():
    # The payload word that makes the rewritten datagram's sum 0xFFFF: its checksum computes
    # to 0, which UDP must send as 0xFFFF (RFC 768), never as 0 ("no checksum").
    def rewritten(payload):
        return IP(bytes(IP(src=VIP, dst=CIP) / UDP(sport=5353, dport=CPORT) / Raw(payload)))
    word = struct.pack("!H", rewritten(b"\0\0")[UDP].chksum)
    assert rewritten(word)[UDP].chksum == 0xFFFF          # the edge, as scapy computes it
    t = table_with((key(proto=17, rport=5353), 5353))
    out, reason = rewrite_reply(udp_reply(payload=word), t)
    assert reason == REWRITTEN and IP(out)[UDP].chksum == 0xFFFF
    assert checksums_ok(out)[UDP].load == word


def test_ip_options_and_trailing_bytes():
    t = table_with((key(), 80))
    pkt = reply(options=[b"\x01\x01\x01\x00"])
    out, reason = rewrite_reply(pkt + b"\0" * 6, t)
    assert reason == REWRITTEN and len(out) == len(pkt)
    assert checksums_ok(out)[TCP].dport == CPORT


def test_unknown_flows_dropped():
    t = table_with((key(), 80))
    for pkt in (reply(dport=LPORT + 1), reply(sport=81), udp_reply(sport=80), reply(dst="198.18.0.105")):
        assert rewrite_reply(pkt, t) == (None, UNKNOWN_FLOW)


@pytest.mark.parametrize("packet, reason", [
    (b"", TRUNCATED),
    (reply()[:19], TRUNCATED),
    (reply()[:30], TRUNCATED),                       # shorter than its total length
    (b"\x60" + reply()[1:], NOT_IPV4),
    (b"\x44" + reply()[1:], BAD_IP_HEADER),          # IHL below 5
    (bytes(IP(src=RIP, dst=VIP, frag=2, proto=6) / Raw(b"x" * 40)), FRAGMENT),
    (bytes(IP(src=RIP, dst=VIP, flags="MF", proto=6) / Raw(b"x" * 40)), FRAGMENT),
    (bytes(IP(src=RIP, dst=VIP) / ICMP()), NOT_TCP_UDP),
    (bytes(IP(src=RIP, dst=VIP, proto=6) / Raw(b"x" * 10)), BAD_L4_HEADER),
    (bytes(IP(src=RIP, dst=VIP, proto=17) / Raw(b"\0\x35\x75\x31\0\x04\0\0")), BAD_L4_HEADER),  # UDP len 4
    (bytes(IP(src=RIP, dst=VIP, proto=17) / Raw(b"\0\x35\x75\x31\0\x40\0\0")), BAD_L4_HEADER),  # past the end
])
def test_malformed_replies(packet, reason):
    assert rewrite_reply(packet, table_with((key(), 80))) == (None, reason)


def test_bad_ip_checksum_and_bad_tcp_offset():
    bad = bytearray(reply())
    bad[10] ^= 1
    assert rewrite_reply(bytes(bad), table_with((key(), 80)))[1] == BAD_IP_HEADER
    bad = bytearray(reply())
    bad[20 + 12] = 0x30                     # data offset 3
    bad[10:12] = b"\0\0"
    bad[10:12] = struct.pack("!H", inet.checksum(bytes(bad[:20])))
    assert rewrite_reply(bytes(bad), table_with((key(), 80)))[1] == BAD_L4_HEADER


def test_plain_dict_is_a_table():
    table = {key(): Entry(socket.inet_aton(CIP), CPORT, 80, "syn", NOW + 60)}
    out, reason = rewrite_reply(reply(), table)
    assert reason == REWRITTEN and IP(out).dst == CIP


# -- the table's life cycle -------------------------------------------------------------------------

def test_syn_then_reply_then_fin_then_expiry():
    t = FlowTable([VIP])
    assert t.inbound(syn(), NOW) == LEARNED and len(t) == 1
    assert t.entries[key()].state == "syn"
    out, reason = t.outbound(reply(), NOW + 1)
    assert reason == REWRITTEN and t.entries[key()].state == "established"
    assert t.outbound(reply(flags="A"), NOW + 2)[1] == REWRITTEN
    assert t.inbound(syn(flags="FA", toa_opt=False), NOW + 3) == IN_FIN
    assert t.entries[key()].state == "fin"
    assert t.outbound(reply(flags="A"), NOW + 4)[1] == REWRITTEN          # the last ACK still passes
    assert t.entries[key()].state == "fin"
    assert t.expire(NOW + 4 + 119) == 0
    assert t.expire(NOW + 4 + 120) == 1 and len(t) == 0
    assert t.outbound(reply(flags="A"), NOW + 200) == (None, UNKNOWN_FLOW)
    assert t.counters["expired"] == 1 and t.counters[REWRITTEN] == 3


def test_rst_either_way_closes_soon():
    t = FlowTable([VIP])
    t.inbound(syn(), NOW)
    t.outbound(reply(flags="R"), NOW)
    assert t.entries[key()].state == "close"
    t.outbound(reply(flags="A"), NOW + 1)                          # close stays close
    assert t.entries[key()].state == "close"
    assert t.expire(NOW + 11) == 1
    t.inbound(syn(), NOW + 20)
    assert t.inbound(syn(flags="R", toa_opt=False), NOW + 20) == IN_RST
    assert t.entries[key()].state == "close"
    assert t.inbound(syn(flags="R", toa_opt=False, lport=9), NOW + 20) == IN_NO_CONN


def test_idle_established_expires_and_lazy_lookup_drops_it():
    t = FlowTable([VIP])
    t.inbound(syn(), NOW)
    t.outbound(reply(), NOW)
    assert t.outbound(reply(flags="A"), NOW + 899)[1] == REWRITTEN         # refreshed
    assert t.outbound(reply(flags="A"), NOW + 899 + 900) == (None, UNKNOWN_FLOW)
    assert t.counters["expired"] == 1 and len(t) == 0
    assert t.expire(NOW + 5000) == 0                                        # heap item discarded


def test_unanswered_syn_expires_after_60s():
    t = FlowTable([VIP])
    t.inbound(syn(), NOW)
    assert t.expire(NOW + 59) == 0 and t.expire(NOW + 60) == 1


def test_new_syn_replaces_an_entry_and_retransmitted_toa_keeps_it():
    t = FlowTable([VIP])
    t.inbound(syn(), NOW)
    t.outbound(reply(), NOW)
    t.inbound(syn(flags="A"), NOW + 1)                     # TOA on the ACK too (DPVS): same client
    assert t.entries[key()].state == "established"
    other = bytes(IP(src=VIP, dst=RIP) / TCP(sport=LPORT, dport=80, flags="S",
                                               options=[(254, toa("198.18.1.7", 5555))]))
    t.inbound(other, NOW + 2)                              # lport reused by the director
    out, _ = t.outbound(reply(), NOW + 2)
    assert (IP(out).dst, IP(out)[TCP].dport) == ("198.18.1.7", 5555)
    assert t.expire(NOW + 901) == 0 and t.expire(NOW + 902) == 1 and len(t) == 0   # old item skipped


def test_table_full_is_counted_and_expiry_makes_room():
    t = FlowTable([VIP], max_conns=2)
    assert t.inbound(syn(lport=1), NOW) == LEARNED
    assert t.inbound(syn(lport=2), NOW + 30) == LEARNED
    assert t.inbound(syn(lport=3), NOW + 31) == TABLE_FULL
    assert t.counters[TABLE_FULL] == 1 and t.counters[LEARNED] == 2
    assert t.inbound(syn(lport=3), NOW + 61) == LEARNED     # lport 1's SYN timed out


def test_port_map_through_the_table():
    t = FlowTable([VIP], port_map={8080: 80})
    t.inbound(syn(dport=8080), NOW)
    out, _ = t.outbound(reply(sport=8080), NOW)
    assert IP(out)[TCP].sport == 80


def test_parse_port_map():
    assert parse_port_map(["8080:80", "5354:5353"]) == {8080: 80, 5354: 5353}
    for bad in (["8080"], ["a:b"], ["0:80"], ["80:70000"]):
        with pytest.raises(ValueError):
            parse_port_map(bad)


def test_bpf_program_shape():
    for n in (1, 2, ea.MAX_VIPS):
        prog = bpf_program([bytes([198, 18, 0, i]) for i in range(n)])
        assert len(prog) == 20 + n and prog[-1] == (0x06, 0, 0, 0) and prog[-2] == (0x06, 0, 0, ea.SNAPLEN)
        for i, (code, jt, jf, _) in enumerate(prog):
            if code & 0x07 == 0x05:                       # a jump: both targets inside the program
                assert i + 1 + jt < len(prog) and i + 1 + jf < len(prog)
    with pytest.raises(ValueError):
        bpf_program([])


def test_bpf_filter_attaches_to_a_packet_socket():
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0)
    except PermissionError:
        pytest.skip("packet sockets need CAP_NET_RAW")
    with s:
        ea.attach_filter(s, bpf_program([PVIP]))          # the kernel's checker accepts it


# -- any input ---------------------------------------------------------------------------------------

@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_verdict(data):
    t = table_with((key(), 80), (key(proto=17, rport=5353), 5353))
    out, reason = t.outbound(data, NOW)
    assert reason in ep.OUT_REASONS and (out is None) == (reason != REWRITTEN)
    assert t.inbound(data, NOW) in ep.IN_REASONS


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["syn_ack", "data", "udp"]),
       st.lists(st.tuples(st.integers(0, 80), st.integers(0, 255)), max_size=4), st.integers(0, 120))
def test_mutated_replies_give_a_verdict(kind, flips, cut):
    base = {"syn_ack": reply(), "data": reply(flags="PA", payload=b"x" * 40), "udp": udp_reply()}[kind]
    pkt = bytearray(base)
    for pos, value in flips:
        pkt[pos % len(pkt)] = value
    t = table_with((key(), 80), (key(proto=17, rport=5353), 5353))
    out, reason = t.outbound(bytes(pkt[:cut] if cut < len(pkt) else pkt), NOW)
    if out is not None:
        checksums_ok(out) if not flips else IP(out)
    assert t.inbound(bytes(pkt), NOW) in ep.IN_REASONS


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=1400), st.integers(1, 65535), st.integers(1, 65535))
def test_checksums_right_for_any_payload_and_ports(payload, cport, lport):
    t = FlowTable([VIP])
    t.add((6, PVIP, lport, socket.inet_aton(RIP), 80), socket.inet_aton(CIP), cport, 80, NOW)
    t.add((17, PVIP, lport, socket.inet_aton(RIP), 5353), socket.inet_aton(CIP), cport, 5353, NOW)
    for pkt in (reply(flags="PA", payload=payload, dport=lport), udp_reply(payload=payload, dport=lport)):
        out, reason = t.outbound(pkt, NOW)
        assert reason == REWRITTEN
        assert checksums_ok(out).dst == CIP


# -- the server's own ICMP errors: translated for the client, as the director does for NAT ---------
def server_error(quoted: bytes, type_=3, code=3, dst=VIP) -> bytes:
    return bytes(IP(src=RIP, dst=dst) / ICMP(type=type_, code=code) / Raw(quoted))


def test_the_servers_port_unreachable_goes_to_the_client_translated():
    t = table_with((key(ep.UDP, rport=5353), 53))
    quoted = bytes(IP(src=VIP, dst=RIP) / UDP(sport=LPORT, dport=5353) / Raw(b"query"))
    out, reason = t.outbound(server_error(quoted), NOW)
    assert reason == ep.ICMP_REWRITTEN and t.counters[ep.ICMP_REWRITTEN] == 1
    got = IP(out)
    assert (got.src, got.dst, got[ICMP].type, got[ICMP].code) == (VIP, CIP, 3, 3)
    q = IP(bytes(got[ICMP].payload))
    assert (q.src, q.dst, q[UDP].sport, q[UDP].dport) == (CIP, VIP, CPORT, 53)
    assert q[UDP].chksum == IP(quoted)[UDP].chksum          # the quoted L4 checksum as it was
    for data in (out[:20], out[20:], bytes(got[ICMP].payload)[:20]):
        assert inet.checksum_ok(data)                         # outer IP, ICMP, the quote's IP
    assert t.get(key(ep.UDP, rport=5353)).state == "udp"       # an error moves no state


def test_icmp_the_agent_leaves_alone():
    t = table_with((key(), 80))
    tcp = bytes(IP(src=VIP, dst=RIP) / TCP(sport=LPORT, dport=80, flags="A"))
    assert t.outbound(server_error(tcp, 3, 4), NOW)[1] == ep.ICMP_REWRITTEN
    assert t.outbound(server_error(bytes(IP(src=VIP, dst=RIP) / TCP(sport=LPORT + 1, dport=80))), NOW)[1] == UNKNOWN_FLOW
    assert t.outbound(server_error(tcp[:24]), NOW)[1] == BAD_L4_HEADER        # no ports quoted
    nested = bytes(IP(src=VIP, dst=RIP) / ICMP(type=3) / Raw(tcp[:28]))
    assert t.outbound(server_error(nested), NOW)[1] == NOT_TCP_UDP
    assert t.outbound(bytes(IP(src=RIP, dst=VIP) / ICMP(type=0)), NOW)[1] == NOT_TCP_UDP
