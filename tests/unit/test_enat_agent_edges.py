"""lb.realserver.enat_agent at its edges (the survivors of a mutation run): the learning socket's
BPF pre-filter run on packets, the bounds of the server's ICMP errors it translates, and
--map-port's refusals."""
from __future__ import annotations

import json
import os
import socket
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from lb import inet
from lb.realserver import enat_agent as ea
from lb.realserver import enat_flows as ef
from lb.realserver import enat_packets as ep
from tests.vectors.cbpf import run_bpf
from tests.unit.test_enat_agent import (CIP, CPORT, LPORT, NOW, PVIP, RIP, VIP, VIPS, checksums_ok, key,
                                        reply, server_error, syn, table_with)


# -- the BPF pre-filter, run as the kernel runs a socket filter ---------------------------------------

OTHER_VIPS = ["198.18.0.105", "198.18.0.106"]
TOA = struct.pack("!H", CPORT) + socket.inet_aton(CIP)


@pytest.mark.parametrize("packet, passes", [
    (syn(), True),                                          # SYN with the TOA
    (syn(toa_opt=False), True),                             # SYN, FIN, RST without one
    (syn(flags="F", toa_opt=False), True),
    (syn(flags="R", toa_opt=False), True),
    (syn(flags="RA", toa_opt=False), True),
    (syn(flags="A"), True),                                 # a TOA first on an ACK (DPVS)
    (syn(flags="PA", options=(("NOP", None),)), True),
    (syn(flags="A", toa_opt=False), False),                 # ACK, MSS first
    (syn(flags="A", toa_opt=False, options=()), False),     # ACK, no options: the load fails
    (syn(src="198.18.1.9"), False),                         # not from a VIP
    (bytes(IP(src=VIP, dst=RIP) / UDP(sport=LPORT, dport=53)), False),
    (bytes(IP(src=VIP, dst=RIP, frag=3, proto=6) / Raw(b"\x02" * 40)), False),     # offset 3 * 8
    (bytes(IP(src=VIP, dst=RIP, frag=0x100, proto=6) / Raw(b"\x02" * 40)), False),
    (bytes(IP(src=VIP, dst=RIP, options=[b"\x01\x01\x01\x00"]) /
           TCP(sport=LPORT, dport=80, flags="A", options=[(254, TOA)])), True),
    (bytes(IP(src=VIP, dst=RIP, options=[b"\x01\x01\x01\x00"]) / TCP(flags="A")), False),
])
def test_bpf_filter_passes_what_learning_needs(packet, passes):
    # IP options in the last two: the TCP header is found through X = 4 * IHL
    for vips in ([VIP], [VIP, *OTHER_VIPS], [*OTHER_VIPS, VIP]):
        prog = ea.bpf_program([socket.inet_aton(v) for v in vips])
        assert run_bpf(prog, packet) == (ea.SNAPLEN if passes else 0), vips


def test_bpf_filter_takes_every_vip_and_only_them():
    vips = ["198.18.0.104", "198.18.0.105", "198.18.0.106"]
    for n in (1, 2, 3):
        prog = ea.bpf_program([socket.inet_aton(v) for v in vips[:n]])
        got = [run_bpf(prog, syn(src=v)) for v in vips + ["198.18.0.107"]]
        assert got == [ea.SNAPLEN] * n + [0] * (4 - n), n


def test_bpf_program_refuses_no_vip_or_too_many():
    for vips in ([], [PVIP] * (ea.MAX_VIPS + 1)):
        with pytest.raises(ValueError, match=f"^1..{ea.MAX_VIPS} VIPs$"):
            ea.bpf_program(vips)


# -- the server's ICMP errors: what is translated and what is counted -----------------------------

def quote(**ip) -> bytes:
    return bytes(IP(src=VIP, dst=RIP, **ip) / UDP(sport=LPORT, dport=5353) / Raw(b"query"))


@pytest.mark.parametrize("quoted, reason", [
    (quote()[:28], ep.ICMP_REWRITTEN),        # RFC 792: the IP header and 64 bits of data
    (quote(flags="MF"), ep.ICMP_REWRITTEN),   # a first fragment carries the ports
    (quote(flags="DF"), ep.ICMP_REWRITTEN),
    (quote()[:27], ep.BAD_L4_HEADER),         # one byte short of the ports and length
    (quote()[:20], ep.BAD_L4_HEADER),         # the header alone
    (quote(frag=5), ep.BAD_L4_HEADER),        # a later fragment: no ports in it
    (quote(frag=0x100), ep.BAD_L4_HEADER),
    (quote(frag=0x1000), ep.BAD_L4_HEADER),
    (b"\x65" + quote()[1:], ep.BAD_L4_HEADER),   # not IPv4 inside
    (b"\x44" + quote()[1:], ep.BAD_L4_HEADER),   # IHL 4
    (quote()[:19], ep.NOT_TCP_UDP),           # shorter than an IP header: not an error to use
    (quote()[:4], ep.NOT_TCP_UDP),
    (b"", ep.NOT_TCP_UDP),
])
def test_server_error_bounds(quoted, reason):
    t = table_with((key(ep.UDP, rport=5353), 53))
    out, got = t.outbound(server_error(quoted), NOW)
    assert got == reason and (out is not None) == (reason == ep.ICMP_REWRITTEN)
    if out is not None:
        q = IP(bytes(IP(out)[ICMP].payload))
        assert (q.src, q.dst, q.sport, q.dport) == (CIP, VIP, CPORT, 53)


def test_an_echo_reply_is_never_taken_for_an_error():
    # its data may look like a quoted packet of a known connection: still not an error
    t = table_with((key(ep.UDP, rport=5353), 53))
    pkt = bytes(IP(src=RIP, dst=VIP) / ICMP(type=0) / Raw(quote()))
    assert t.outbound(pkt, NOW) == (None, ep.NOT_TCP_UDP)


# -- --map-port ----------------------------------------------------------------------------------

def test_port_map_ends_and_messages():
    assert ea.parse_port_map(["1:65535", "65535:1"]) == {1: 65535, 65535: 1}
    with pytest.raises(ValueError, match=r"^bad --map-port '8080' \(want RPORT:VPORT\)$"):
        ea.parse_port_map(["8080"])
    for bad in ("0:80", "65536:80", "80:0", "80:65536"):
        with pytest.raises(ValueError, match=f"^bad --map-port '{bad}': ports are 1..65535$"):
            ea.parse_port_map([bad])


# -- learn: the TCP header's bounds, and what a FIN or RST tells ------------------------------------

def with_offset(packet: bytes, doff: int) -> bytes:
    """`packet` (IP 20 + TCP) with the TCP data offset set to `doff` words, IP checksum redone."""
    out = bytearray(packet)
    out[20 + 12] = doff << 4 | (out[20 + 12] & 0x0F)
    return bytes(out)


def test_learn_tcp_header_bounds():
    assert ep.learn(syn(flags="F", toa_opt=False, options=()), VIPS)[1] == ep.IN_FIN     # bare 20 bytes
    assert ep.learn(with_offset(syn(options=()), 3), VIPS)[1] == ep.IN_MALFORMED         # offset < 5
    # the capture ends inside the options the offset announces (TOA whole, MSS cut): malformed
    full = syn()
    assert ep.learn(full[:20 + 28], VIPS)[1] == ep.IN_MALFORMED and ep.learn(full, VIPS)[1] == ep.LEARNED


def test_learn_reads_the_toa_only_inside_the_options():
    # the payload starts with what would be a TOA; the options (16 bytes) hold none
    fake = struct.pack("!BBH4s", 254, 8, 5555, socket.inet_aton("198.18.1.7"))
    opts = (("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)))
    pkt = bytes(IP(src=VIP, dst=RIP) / TCP(sport=LPORT, dport=80, flags="S", options=list(opts)) / Raw(fake))
    assert ep.learn(pkt, VIPS) == (None, ep.SYN_WITHOUT_TOA)


@pytest.mark.parametrize("flags, reason", [("F", ep.IN_FIN), ("FA", ep.IN_FIN), ("R", ep.IN_RST),
                                           ("RA", ep.IN_RST)])
def test_learn_fin_and_rst_tell_key_vport_and_flags(flags, reason):
    seen, got = ep.learn(syn(flags=flags, toa_opt=False, dport=8080), VIPS, {8080: 80})
    assert got == reason
    assert seen == ep.Seen(key(rport=8080), None, 80, int(TCP(flags=flags).flags))


@pytest.mark.parametrize("flags", ["", "P", "U", "SA"])
def test_learn_other_segments_without_a_toa(flags):
    # only a bare SYN (no ACK) without a TOA is counted as one: PSH alone, no flags, a SYN-ACK
    assert ep.learn(syn(flags=flags, toa_opt=False), VIPS)[1] == ep.IN_OTHER


# -- the table: the TOA on a later segment, restarts, and timers rescheduled sooner ----------------

def established(t: ef.FlowTable) -> None:
    assert t.inbound(syn(), NOW) == ep.LEARNED
    assert t.outbound(reply(), NOW)[1] == ep.REWRITTEN
    assert t.entries[key()].state == "established"


def test_a_toa_first_seen_on_an_ack_makes_the_entry():
    t = ef.FlowTable([VIP])
    assert t.inbound(syn(flags="A"), NOW) == ep.LEARNED     # DPVS: the TOA on the first ACK
    assert t.entries[key()].state == "syn" and t.outbound(reply(flags="A"), NOW)[1] == ep.REWRITTEN


def test_a_new_syn_starts_the_entry_afresh():
    t = ef.FlowTable([VIP])
    established(t)
    assert t.inbound(syn(), NOW + 5) == ep.LEARNED          # same client, lport reused
    assert t.entries[key()].state == "syn"
    assert t.expire(NOW + 5 + 60) == 1


@pytest.mark.parametrize("flags, state, timeout", [("FA", "fin", 120), ("RA", "close", 10)])
def test_fin_or_rst_sooner_than_established_is_expired_on_time(flags, state, timeout):
    for toa_opt in (True, False):            # with a TOA on it (the learning path) or without
        t = ef.FlowTable([VIP])
        established(t)
        t.inbound(syn(flags=flags, toa_opt=toa_opt), NOW + 1)
        assert t.entries[key()].state == state
        assert t.expire(NOW + 1 + timeout - 1) == 0 and t.expire(NOW + 1 + timeout) == 1, toa_opt


def test_expire_skips_stale_heap_items_and_counts_every_entry():
    t = ef.FlowTable([VIP])
    t.inbound(syn(lport=1), NOW)                 # its heap item goes stale: replaced at NOW + 1
    t.inbound(syn(lport=2), NOW + 0.5)
    t.inbound(syn(lport=1), NOW + 1)
    t.inbound(syn(lport=3), NOW)
    t.inbound(syn(lport=4), NOW)
    assert t.get(key(lport=3)) is not None
    t.now = NOW + 60
    assert t.get(key(lport=3)) is None and t.get(key(lport=4)) is None   # lookups drop them: counted
    assert t.expire(NOW + 61) == 2 and len(t) == 0
    assert t.counters[ef.EXPIRED] == 4


# -- the agent's own state (no device opened) -------------------------------------------------------

def test_agent_keeps_what_it_was_given(tmp_path):
    agent = ea.Agent(["198.18.0.104", "198.18.0.104", "198.18.0.105"], {8080: 80}, ifname="lbenat7",
                     stats_file=str(tmp_path / "s.json"), max_conns=5)
    assert (agent.vips, agent.ifname, agent.stats_file, agent.mtu) == \
        (["198.18.0.104", "198.18.0.105"], "lbenat7", tmp_path / "s.json", 1500)
    assert (agent.table.port_map, agent.table.max_conns) == ({8080: 80}, 5)
    assert ea.Agent(["198.18.0.104"]).table.max_conns == 1 << 18
    agent.housekeeping()                         # the first one expires and writes the counters
    assert agent.stats_file.exists()
    agent.close()                                # nothing was opened: nothing to close
    assert (agent.tun_fd, agent.learn_sock, agent.raw) == (None, None, None)


def test_agent_takes_at_most_max_vips():
    vips = [f"198.18.3.{i}" for i in range(1, ea.MAX_VIPS + 2)]
    assert len(ea.Agent(vips[:-1]).vips) == ea.MAX_VIPS
    with pytest.raises(ValueError, match=f"^at most {ea.MAX_VIPS} VIPs$"):
        ea.Agent(vips)


def test_agent_stats_file_holds_its_state(tmp_path):
    agent = ea.Agent([VIP], ifname="lbenat7", stats_file=str(tmp_path / "s.json"))
    agent.table.inbound(syn(), NOW)
    agent.flush(force=True)
    got = json.loads(agent.stats_file.read_text())
    assert got == {"pid": os.getpid(), "ifname": "lbenat7", "vips": [VIP], "conns": 1,
                   "reply_path": "auto", "counters": dict(agent.table.counters)}   # (not opened)
    assert got["counters"][ep.LEARNED] == 1


def test_agent_expires_once_a_second_and_says_so(tmp_path, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(ea.time, "monotonic", lambda: clock[0])      # the agent's and the daemon's clock
    agent = ea.Agent([VIP], stats_file=str(tmp_path / "s.json"))
    agent.housekeeping()                                 # the first one expires (nothing yet) and writes
    agent.table.add(key(), socket.inet_aton(CIP), CPORT, 80, 100.0, state="close")    # due at 110
    clock[0] = 110.5
    agent.housekeeping()                                 # due, and a second since: expired, counters written
    assert len(agent.table) == 0
    assert json.loads(agent.stats_file.read_text())["counters"][ef.EXPIRED] == 1
    agent.table.add(key(), socket.inet_aton(CIP), CPORT, 80, 101.0, state="close")    # due at 111
    clock[0] = 111.25
    agent.housekeeping()                                 # due, but 0.75 s since the last expiry: kept
    assert len(agent.table) == 1
    clock[0] = 111.5
    agent.housekeeping()                                 # exactly EXPIRE_INTERVAL since: expired
    assert len(agent.table) == 0
    assert json.loads(agent.stats_file.read_text())["counters"][ef.EXPIRED] == 2


def test_agent_close_closes_what_it_opened():
    agent = ea.Agent([VIP])
    rfd, wfd = os.pipe()
    learn_sock, raw = socket.socketpair()
    agent.tun_fd, agent.learn_sock, agent.raw, agent.fast = rfd, learn_sock, raw, object()
    try:
        agent.close()
        assert (agent.tun_fd, agent.learn_sock, agent.raw, agent.fast) == (None, None, None, None)
        assert learn_sock.fileno() == -1 and raw.fileno() == -1
        with pytest.raises(OSError):
            os.fstat(rfd)
    finally:
        os.close(wfd)
        learn_sock.close()
        raw.close()


def test_icmp_checksum_of_any_value_is_written():
    # quoted payload words that move the ICMP checksum around its whole range; above 0x7FFF
    # it must still be packed (unsigned) and right
    t = table_with((key(ep.UDP, rport=5353), 53))
    sums = []
    for word in range(0, 0x10000, 0x2000):
        quoted = bytes(IP(src=VIP, dst=RIP) / UDP(sport=LPORT, dport=5353, chksum=0) /
                       Raw(struct.pack("!H", word)))    # no UDP checksum to even the sum out
        out, reason = t.outbound(server_error(quoted), NOW)
        assert reason == ep.ICMP_REWRITTEN and inet.checksum_ok(out[20:])
        sums.append(IP(out)[ICMP].chksum)
    assert min(sums) < 0x8000 < max(sums)


# -- replies: the L4 header's bounds, and the server's FIN ------------------------------------------

def _tcp_csum(packet: bytes) -> int:
    return struct.unpack_from("!H", packet, (packet[0] & 0x0F) * 4 + 16)[0]


def test_a_tcp_reply_whose_checksum_field_is_zero_is_still_updated():
    # 0 is a valid TCP checksum (a sum of 0xFFFF): only UDP's 0 means "none"
    pkt = reply(flags="PA", payload=struct.pack("!H", _tcp_csum(reply(flags="PA", payload=b"\0\0"))))
    assert _tcp_csum(pkt) == 0
    out, reason = table_with((key(), 80)).outbound(pkt, NOW)
    assert reason == ep.REWRITTEN and _tcp_csum(out) != 0
    checksums_ok(out)


def test_a_tcp_checksum_that_computes_to_zero_leaves_as_zero():
    # RFC 1624 eqn. 3 gives 0 (~0xFFFF); TCP keeps it (0xFFFF is UDP's rule), as the C path does
    first, _ = table_with((key(), 80)).outbound(reply(flags="PA", payload=b"\0\0"), NOW)
    pkt = reply(flags="PA", payload=struct.pack("!H", _tcp_csum(first)))   # the word that sums it to 0xFFFF
    out, reason = table_with((key(), 80)).outbound(pkt, NOW)
    assert reason == ep.REWRITTEN and _tcp_csum(out) == 0
    checksums_ok(out)


def test_add_expires_only_when_the_table_is_full():
    t = ef.FlowTable([VIP], max_conns=2)
    cip = socket.inet_aton(CIP)
    assert t.add(key(lport=1), cip, CPORT, 80, NOW, state="close")            # due at NOW + 10
    assert t.add(key(lport=2), cip, CPORT, 80, NOW + 20)                      # room: nothing expired
    assert len(t) == 2 and t.counters[ef.EXPIRED] == 0
    assert t.add(key(lport=3), cip, CPORT, 80, NOW + 20)                      # full: lport 1 makes room
    assert len(t) == 2 and t.counters[ef.EXPIRED] == 1
    assert not t.add(key(lport=4), cip, CPORT, 80, NOW + 21)
    assert not t.add(key(lport=5), cip, CPORT, 80, NOW + 22)
    assert t.counters[ep.TABLE_FULL] == 2                                     # each refusal counted


@pytest.mark.parametrize("proto, reason", [(6, ep.BAD_L4_HEADER), (17, ep.BAD_L4_HEADER), (1, ep.NOT_TCP_UDP)])
def test_a_header_only_packet_is_a_sound_ip_header_with_no_l4_header(proto, reason):
    pkt = bytes(IP(src=RIP, dst=VIP, proto=proto))          # total length 20 = IHL: nothing after it
    assert len(pkt) == 20
    assert ep._ip_header(memoryview(pkt)) == (20, 20, None)
    assert table_with((key(), 80)).outbound(pkt, NOW) == (None, reason)


def test_a_bare_tcp_header_reply_is_rewritten():
    t = table_with((key(), 80))
    out, reason = t.outbound(bytes(IP(src=RIP, dst=VIP) / TCP(sport=80, dport=LPORT, flags="A")), NOW)
    assert reason == ep.REWRITTEN and IP(out).dst == CIP


def test_a_tcp_reply_shorter_than_its_data_offset_is_refused():
    pkt = bytearray(bytes(IP(src=RIP, dst=VIP) / TCP(sport=80, dport=LPORT, flags="A")))
    pkt[20 + 12] = 6 << 4                        # 24 bytes announced, 20 there
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", inet.checksum(bytes(pkt[:20])))
    assert table_with((key(), 80)).outbound(bytes(pkt), NOW) == (None, ep.BAD_L4_HEADER)


def udp_with_length(ulen: int, payload: bytes) -> bytes:
    return bytes(IP(src=RIP, dst=VIP, proto=17) / Raw(struct.pack("!HHHH", 5353, LPORT, ulen, 0) + payload))


@pytest.mark.parametrize("packet, reason", [
    (bytes(IP(src=RIP, dst=VIP, proto=17) / Raw(b"\x14\xe9\x75\x31")), ep.BAD_L4_HEADER),  # 4 bytes of header
    (udp_with_length(0x108, b"x" * 0x100), ep.REWRITTEN),       # a length above 255, exact
    (udp_with_length(0x210, b"x" * 0x100), ep.BAD_L4_HEADER),   # 528 claimed, 264 there
])
def test_udp_length_bounds(packet, reason):
    t = table_with((key(ep.UDP, rport=5353), 5353))
    assert t.outbound(packet, NOW)[1] == reason


def test_the_servers_fin_moves_the_entry_to_fin():
    t = ef.FlowTable([VIP])
    established(t)
    assert t.outbound(reply(flags="FA"), NOW + 1)[1] == ep.REWRITTEN
    assert t.entries[key()].state == "fin"
    assert t.expire(NOW + 1 + 119) == 0 and t.expire(NOW + 1 + 120) == 1
