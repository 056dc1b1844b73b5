"""lb.realserver.enat_agent for UDP: learning the client from the UOA (lb.realserver.uoa) an ENAT
director puts in the first datagrams, malformed options counted and never learned, the UDP
entry's life (refreshed by replies and by UOA datagrams, gone after 300 s idle), replies from
VIP:vport to each client, and the learn filter run by a classic BPF interpreter (kept tight)."""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.packet import Raw

from lb.realserver import enat_agent as ea
from lb.realserver import enat_packets as ep
from lb.realserver.enat_agent import bpf_program
from lb.realserver.enat_flows import FlowTable
from lb.realserver.enat_packets import (IN_MALFORMED, IN_NOT_FROM_VIP, IN_OTHER, LEARNED, REWRITTEN,
                                        UNKNOWN_FLOW, UOA_MALFORMED, learn)
from lb.realserver.uoa import uoa_from_ip_options
from tests.vectors.cbpf import run_bpf
from tests.unit.test_enat_agent import CIP, NOW, PVIP, RIP, VIP, VIPS, checksums_ok, syn, udp_reply

LPORT, CPORT, RPORT = 30001, 40000, 5353
PCIP = socket.inet_aton(CIP)


def uoa(ip=CIP, port=CPORT, length=8) -> bytes:
    return bytes([31, length]) + struct.pack("!H", port) + socket.inet_aton(ip)


def datagram(options=(uoa(),), src=VIP, lport=LPORT, payload=b"query", **kw) -> bytes:
    return bytes(IP(src=src, dst=RIP, options=[IPOption(o) for o in options], **kw)
                 / UDP(sport=lport, dport=RPORT) / Raw(payload))


def ukey(lport=LPORT):
    return (17, PVIP, lport, socket.inet_aton(RIP), RPORT)


# -- the option ---------------------------------------------------------------------------------

@pytest.mark.parametrize("options, want", [
    (uoa(), ((PCIP, CPORT), False)),
    (b"\x01\x01" + uoa() + b"\x01\x01", ((PCIP, CPORT), False)),                 # NOPs around it
    (b"\x94\x04\x00\x00" + uoa(), ((PCIP, CPORT), False)),                       # after router alert
    (b"", (None, False)),
    (b"\x00" + uoa()[1:], (None, False)),                                        # EOL ends the list
    (b"\x94\x04\x00\x00", (None, False)),
    (uoa(length=10) + b"\0\0", (None, True)),                                    # a UOA not 8 long
    (uoa(length=6)[:6] + b"\0\0", (None, True)),
    (uoa()[:6], (None, True)),                                                   # cut short
    (b"\x94", (None, True)),                                                     # no length byte
    (b"\x94\x01\x00\x00", (None, True)),                                         # length < 2
    (b"\x01" + uoa(), ((PCIP, CPORT), False)),                                  # one NOP is one byte
    (b"\x01\x94\x04\x00\x00" + uoa(), ((PCIP, CPORT), False)),                   # the walk adds lengths
    (b"\x94\x02" + uoa(), ((PCIP, CPORT), False)),                               # length 2: no body, fine
    (b"\x94\x02", (None, False)),                                                # ... and at the very end
])
def test_uoa_from_ip_options(options, want):
    assert uoa_from_ip_options(options) == want


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_any_option_bytes_give_an_answer(data):
    client, malformed = uoa_from_ip_options(data)
    assert client is None or (len(client[0]) == 4 and 0 <= client[1] < 65536)
    assert not (client and malformed)


# -- learn ---------------------------------------------------------------------------------------

def test_learn_a_uoa_datagram():
    seen, reason = learn(datagram(), VIPS)
    assert reason == LEARNED
    assert seen.key == ukey() and seen.client == (PCIP, CPORT) and seen.vport == RPORT and seen.flags == 0


def test_learn_an_empty_datagram_and_one_cut_right_after_its_header():
    for packet in (datagram(payload=b""), datagram()[:20 + 8 + 8]):    # header, UOA, 8 bytes of UDP
        seen, reason = learn(packet, VIPS)
        assert reason == LEARNED and seen.key == ukey() and seen.client == (PCIP, CPORT)
    assert learn(datagram()[:20 + 8 + 7], VIPS) == (None, IN_MALFORMED)


def test_learn_port_map_and_a_capture_cut_after_the_headers():
    seen, reason = learn(datagram(payload=b"x" * 1000)[:ea.SNAPLEN], VIPS, {RPORT: 53})
    assert reason == LEARNED and seen.vport == 53


@pytest.mark.parametrize("packet, reason", [
    (datagram(options=()), IN_OTHER),                                   # the later datagrams
    (datagram(options=(b"\x94\x04\x00\x00",)), IN_OTHER),
    (datagram(src="198.18.1.9"), IN_NOT_FROM_VIP),
    (datagram(options=(uoa(length=10) + b"\0\0",)), UOA_MALFORMED),
    (datagram(options=(b"\x1f\x0c" + b"\0" * 10,)), UOA_MALFORMED),
    (datagram(options=(b"\x94\x09\0\0",)), UOA_MALFORMED),              # a length past the header
    (datagram()[:30], IN_MALFORMED),                                    # cut inside the header
    (datagram()[:28], IN_MALFORMED),                                    # no UDP header after it
])
def test_learn_verdicts(packet, reason):
    assert learn(packet, VIPS)[1] == reason


# -- the table ------------------------------------------------------------------------------------

def test_replies_go_from_the_vip_to_each_client():
    t = FlowTable([VIP])
    clients = [("198.18.1.2", 40000), ("198.18.1.3", 40000), ("198.18.1.2", 40001)]
    for i, (ip, port) in enumerate(clients):
        assert t.inbound(datagram(options=(uoa(ip, port),), lport=LPORT + i), NOW) == LEARNED
    for i, (ip, port) in enumerate(clients):
        out, reason = t.outbound(udp_reply(b"answer%d" % i, sport=RPORT, dport=LPORT + i), NOW)
        assert reason == REWRITTEN
        got = checksums_ok(out)
        assert (got.src, got[UDP].sport, got.dst, got[UDP].dport) == (VIP, RPORT, ip, port)
        assert bytes(got[UDP].payload) == b"answer%d" % i
    assert t.counters[LEARNED] == 3 and t.counters[REWRITTEN] == 3


def test_malformed_teaches_nothing_and_is_counted():
    t = FlowTable([VIP])
    assert t.inbound(datagram(options=(uoa(length=10) + b"\0\0",)), NOW) == UOA_MALFORMED
    assert len(t) == 0 and t.counters[UOA_MALFORMED] == 1
    assert t.outbound(udp_reply(sport=RPORT), NOW) == (None, UNKNOWN_FLOW)


def test_the_udp_entry_lives_on_replies_and_uoa_datagrams_then_expires():
    t = FlowTable([VIP])
    t.inbound(datagram(), NOW)
    assert t.entries[ukey()].state == "udp"
    assert t.outbound(udp_reply(sport=RPORT), NOW + 299)[1] == REWRITTEN          # refreshed: 299 + 300
    assert t.inbound(datagram(), NOW + 500) == LEARNED                             # a UOA: 500 + 300
    assert t.inbound(datagram(options=()), NOW + 700) == IN_OTHER                  # no option: no refresh
    assert t.expire(NOW + 799) == 0
    assert t.outbound(udp_reply(sport=RPORT), NOW + 800) == (None, UNKNOWN_FLOW)   # idle 300 s: gone
    assert t.counters["expired"] == 1 and len(t) == 0


def test_a_reused_lport_with_another_client_replaces_the_entry():
    t = FlowTable([VIP])
    t.inbound(datagram(), NOW)
    t.inbound(datagram(options=(uoa("198.18.1.7", 5555),)), NOW + 1)
    got = IP(t.outbound(udp_reply(sport=RPORT), NOW + 1)[0])
    assert (got.dst, got[UDP].dport) == ("198.18.1.7", 5555)
    assert t.expire(NOW + 301) == 1 and len(t) == 0


# -- the learn filter -------------------------------------------------------------------------------

@pytest.mark.parametrize("packet, passed", [
    (datagram(), True),
    (datagram(options=(uoa(length=10) + b"\0\0",)), True),              # learn() counts it
    (datagram(options=(uoa()[:2] + b"\0\0",)), True),                    # IHL 6: cut short, counted
    (datagram(options=()), False),                                       # the later datagrams: no copy
    (datagram(options=(b"\x94\x04\x00\x00", uoa()[:4] + b"\0\0\0\0")), False),
    (bytes(IP(src=VIP, dst=RIP) / UDP(sport=0x1F00, dport=RPORT)), False),  # byte 20 is 31, IHL 5
    (datagram(src="198.18.1.9"), False),
    (datagram(flags="MF"), False),
    (bytes(IP(src=VIP, dst=RIP, proto=1, options=[IPOption(uoa())]) / Raw(b"\0" * 8)), False),
    (syn(), True),
    (syn(flags="A", toa_opt=False), False),
    (syn(flags="F", toa_opt=False), True),
    (bytes(IP(src=VIP, dst=RIP) / TCP(flags="A", options=[(254, uoa()[2:])])), True),
])
def test_the_filter_passes_uoa_datagrams_and_the_tcp_it_did(packet, passed):
    prog = bpf_program([socket.inet_aton("198.18.0.5"), PVIP])
    assert (run_bpf(prog, packet) == ea.SNAPLEN) == passed
    if passed:
        assert learn(packet, VIPS)[1] in (LEARNED, UOA_MALFORMED, IN_MALFORMED, ep.IN_FIN)
