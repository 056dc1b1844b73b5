"""lb trace's sans-IO core (lb/lab/trace.py), its diagram and its pcap writer, on scapy-built
frames: no root, no lab. The frames are what the lab's capture points would see of one NAT
connection, one TUN SYN, a FULLNAT SYN with its TOA and a UDP exchange."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from scapy.layers.inet import IP, TCP, UDP, IPOption
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw
from scapy.utils import rdpcap

from lb import modes
from lb.lab import trace as core
from lb.lab.capture import LINKTYPE_RAW, Frame, Point, write_pcap
from lb.lab.diagram import sequence_svg

CIP, CPORT, VIP, RIP, DIP, LIP = "198.18.1.2", 40000, "198.18.0.100", "198.18.0.11", "198.18.0.2", "198.18.0.3"
MAC = {"client": "02:00:00:00:01:02", "router": "02:00:00:00:00:01", "director": "02:00:00:00:00:02",
       "rs1": "02:00:00:00:00:11"}
NAMES = core.Names({CIP: "CIP client", VIP: "VIP nat", RIP: "RIP rs1", DIP: "DIP director"},
                   {mac: node for node, mac in MAC.items()})
ISN, SISN = 1_000_000, 3_000_000_000

P = {"to-client": Point("router", "to-client", "wire", "client"), "c": Point("client", "eth0", "host", "client"),
     "d": Point("director", "eth0", "host", "director"), "pd": Point("router", "p-director", "wire", "director"),
     "prs1": Point("router", "p-rs1", "wire", "rs1"), "rs1": Point("rs1", "eth0", "host", "rs1"),
     "tun": Point("rs1", "lbtun0", "decap", "rs1")}
VALUES = {"cip": CIP, "cport": CPORT, "vip": VIP, "vport": 80, "rip": {RIP}, "rport": 80, "lip": {LIP},
          "lport": core.ANY, "dip": DIP, "rs_mac": {MAC["rs1"]}}


def eth(a, b):
    return Ether(src=MAC[a], dst=MAC[b])


def syn(src=CIP, sport=CPORT, dst=VIP, ttl=64, options=(("MSS", 1460),)):
    return IP(src=src, dst=dst, ttl=ttl, id=7) / TCP(sport=sport, dport=80, flags="S", seq=ISN, options=list(options))


def synack(src=RIP, dst=CIP, ttl=64):
    return IP(src=src, dst=dst, ttl=ttl, id=0) / TCP(sport=80, dport=CPORT, flags="SA", seq=SISN, ack=ISN + 1)


def fields(pkt) -> dict:
    return core.fields_of(core.dissect(bytes(pkt)))


def frames(*seen):
    """(point key, scapy frame) in path order -> Frames 10 µs apart."""
    return [Frame(P[key], 100.0 + i * 1e-5, bytes(pkt)) for i, (key, pkt) in enumerate(seen)]


def nat_connection():
    return frames(
        ("to-client", eth("client", "router") / syn()),
        ("d", eth("router", "director") / syn(ttl=63)),
        ("pd", eth("director", "rs1") / syn(dst=RIP, ttl=62)),
        ("rs1", eth("director", "rs1") / syn(dst=RIP, ttl=62)),
        ("prs1", eth("rs1", "director") / synack()),
        ("d", eth("rs1", "director") / synack()),
        ("pd", eth("director", "router") / synack(src=VIP, ttl=63)),
        ("c", eth("router", "client") / synack(src=VIP, ttl=62)),
        ("to-client", eth("client", "router") / IP(src=CIP, dst="198.18.9.9") / TCP(sport=1, dport=2, seq=5)))


def test_journeys_follow_the_handshake_hop_by_hop():
    js = core.journeys(nat_connection(), core.Traced("tcp", CIP, CPORT), NAMES)
    assert [(j.label, j.direction) for j in js] == [("TCP SYN", "in"), ("TCP SYN-ACK", "out")]
    syn_j, synack_j = js
    assert [(h.sender, h.receiver) for h in syn_j.hops] == [("client", "router"), ("router", "director"),
                                                            ("director", "rs1")]
    assert [p.name for p in syn_j.hops[2].points] == ["router:p-director", "rs1:eth0"]   # bridged: one hop
    assert set(syn_j.hops[1].changed) == {"eth.src", "eth.dst", "ip.ttl", "ip.chksum"}
    assert set(syn_j.hops[2].changed) == {"eth.src", "eth.dst", "ip.dst", "ip.ttl", "ip.chksum", "tcp.chksum"}
    assert syn_j.hops[2].changed["ip.dst"] == (VIP, RIP)
    assert synack_j.passes("director") and all(not h.bad_checksums for j in js for h in j.hops)


def test_the_nat_rewrites_are_what_the_mode_class_says():
    mode = modes.by_short("nat")
    for j in core.journeys(nat_connection(), core.Traced("tcp", CIP, CPORT), NAMES):
        before, after = core.director_rewrite(j)
        assert core.check_rewrite(mode, j.direction, "tcp", j.syn, before.fields, after.fields, VALUES) == []


def test_a_rewrite_the_mode_does_not_do_is_reported():
    mode = modes.by_short("dr")
    before = fields(eth("router", "director") / syn(ttl=63))
    after = fields(eth("director", "rs1") / syn(ttl=62, sport=CPORT + 1))   # DR keeps the port
    problems = core.check_rewrite(mode, "in", "tcp", True, before, after, VALUES)
    assert problems == [f"tcp.sport changed {CPORT} -> {CPORT + 1}, which dr does not rewrite"]
    wrong_mac = fields(Ether(src=MAC["director"], dst="02:00:00:00:00:99") / syn(ttl=63))
    assert "eth.dst is 02:00:00:00:00:99" in core.check_rewrite(mode, "in", "tcp", True, before, wrong_mac, VALUES)[0]


def test_tun_adds_an_outer_header_that_the_decapsulator_removes():
    inner = syn(ttl=62)                # decrement_ttl() before the tunnel, as in the kernel
    seen = frames(("d", eth("router", "director") / syn(ttl=63)),
                  ("pd", eth("director", "rs1") / IP(src=DIP, dst=RIP, ttl=62, proto=4) / inner),
                  ("tun", inner))
    seen[2] = Frame(P["tun"], seen[2].ts, bytes(inner))
    (j,) = core.journeys(seen, core.Traced("tcp", CIP, CPORT), NAMES)
    wrapped, unwrapped = j.hops[1], j.hops[2]
    assert {k for k, (b, _) in wrapped.changed.items() if b is None} == \
        {"outer.src", "outer.dst", "outer.ttl", "outer.id", "outer.len", "outer.chksum", "outer.proto"}
    assert unwrapped.linktype == LINKTYPE_RAW and (unwrapped.sender, unwrapped.receiver) == ("rs1 decap", "rs1")
    assert all(after is None for _, after in unwrapped.changed.values())     # only the outer header went
    assert core.check_rewrite(modes.by_short("tun"), "in", "tcp", True, j.hops[0].fields, wrapped.fields, VALUES) == []


def test_fullnat_toa_is_read_and_its_length_follows():
    toa = (254, bytes([0x9c, 0x40]) + bytes(map(int, CIP.split("."))))        # port 40000, CIP
    before = fields(eth("router", "director") / syn(ttl=63))
    after = fields(eth("director", "rs1") / syn(src=LIP, sport=1025, dst=RIP, ttl=62,
                                                          options=(toa, ("MSS", 1460))))
    assert after["tcp.toa"] == f"{CIP}:{CPORT}" and after["tcp.options"] == "MSS=1460"
    assert core.check_rewrite(modes.by_short("fullnat"), "in", "tcp", True, before, after, VALUES) == []
    no_toa = fields(eth("director", "rs1") / syn(src=LIP, sport=1025, dst=RIP, ttl=62))
    assert core.check_rewrite(modes.by_short("fullnat"), "in", "tcp", True, before, no_toa, VALUES) == \
        ["tcp.toa missing; fullnat writes cip:cport there"]


def test_enat_udp_uoa_is_read_and_its_length_follows():
    uoa = IPOption(bytes([31, 8, 0x9c, 0x40]) + bytes(map(int, CIP.split("."))))   # port 40000, CIP
    q = UDP(sport=CPORT, dport=80) / Raw(b"q")
    before = fields(eth("router", "director") / IP(src=CIP, dst=VIP, ttl=63) / q)
    q = UDP(sport=1025, dport=80) / Raw(b"q")
    after = fields(eth("director", "rs1") / IP(src=VIP, dst=RIP, ttl=62, options=[uoa]) / q)
    assert after["ip.uoa"] == f"{CIP}:{CPORT}" and after["ip.len"] == before["ip.len"] + 8
    enat = modes.by_short("enat")
    assert core.check_rewrite(enat, "in", "udp", False, before, after, VALUES) == []
    no_uoa = fields(eth("director", "rs1") / IP(src=VIP, dst=RIP, ttl=62) / q)
    assert core.check_rewrite(enat, "in", "udp", False, before, no_uoa, VALUES) == \
        ["ip.uoa missing; enat writes cip:cport there"]
    assert "ip.uoa" not in core.expected_rewrite(enat, "in", "tcp", True)


def test_udp_is_found_by_its_token_and_payload_stays_raw():
    token = b"lb-trace 0123"
    req = IP(src=CIP, dst=VIP) / UDP(sport=CPORT, dport=5353) / Raw(token)
    rep = IP(src=VIP, dst=CIP) / UDP(sport=5353, dport=CPORT) / Raw(b"rs1 client=x " + token)
    other = IP(src=CIP, dst=VIP) / UDP(sport=CPORT + 1, dport=5353) / Raw(b"something else")
    seen = frames(("to-client", eth("client", "router") / req), ("to-client", eth("client", "router") / other),
                  ("c", eth("router", "client") / rep))
    js = core.journeys(seen, core.Traced("udp", CIP, CPORT, token), NAMES)
    assert [j.label for j in js] == ["UDP request", "UDP reply"]
    assert len(core.flow_frames(seen, core.Traced("udp", CIP, CPORT, token))) == 2


def test_retransmissions_count_and_ties_go_wire_first():
    f = eth("client", "router") / syn()
    seen = [Frame(P["rs1"], 5.0, bytes(eth("director", "rs1") / syn(dst=RIP))),
            Frame(P["pd"], 5.0, bytes(eth("director", "rs1") / syn(dst=RIP))),
            Frame(P["to-client"], 1.0, bytes(f)), Frame(P["to-client"], 2.0, bytes(f))]
    (j,) = core.journeys(seen, core.Traced("tcp", CIP, CPORT), NAMES)
    assert j.hops[0].copies == 2
    assert [p.name for p in j.hops[1].points] == ["router:p-director", "rs1:eth0"]


def test_a_client_rst_to_a_reply_from_the_rip_is_part_of_the_flow():
    seen = nat_connection()[:4] + frames(
        ("c", eth("router", "client") / synack(src=RIP, ttl=63)),
        ("to-client", eth("client", "router") / IP(src=CIP, dst=RIP) / TCP(sport=CPORT, dport=80, flags="R", seq=ISN + 1)))
    labels = [j.label for j in core.journeys(seen, core.Traced("tcp", CIP, CPORT), NAMES)]
    assert labels == ["TCP SYN", "TCP SYN-ACK", "TCP RST"]
    (synack_j,) = [j for j in core.journeys(seen, core.Traced("tcp", CIP, CPORT), NAMES) if j.label == "TCP SYN-ACK"]
    assert not synack_j.passes("director")


def test_bad_checksums_are_named():
    good = eth("client", "router") / syn()
    raw = bytearray(bytes(good))
    raw[14 + 10] ^= 0xFF                                  # the IP checksum
    assert core.bad_checksums(core.dissect(bytes(raw))) == ["ip.chksum"]
    assert core.bad_checksums(core.dissect(bytes(good))) == []


def test_arp_frames_are_kept_by_address():
    who = Ether(src=MAC["router"], dst=core.BROADCAST) / ARP(op=1, psrc="198.18.0.1", pdst=VIP)
    seen = frames(("d", who), ("d", Ether() / ARP(op=1, psrc="198.18.0.1", pdst="198.18.0.50")))
    assert len(core.arp_frames(seen, {VIP})) == 1


def test_pcap_round_trip(tmp_path):
    seen = nat_connection()
    write_pcap(tmp_path / "a.pcap", seen)
    back = rdpcap(str(tmp_path / "a.pcap"))
    assert [bytes(p) for p in back] == [f.data for f in seen]
    assert abs(float(back[1].time) - seen[1].ts) < 1e-6
    raw = [Frame(P["tun"], 1.5, bytes(syn()))]
    write_pcap(tmp_path / "raw.pcap", raw)
    assert rdpcap(str(tmp_path / "raw.pcap"))[0][TCP].seq == ISN


class _Result:
    mode = modes.by_short("nat")


def test_the_diagram_has_one_arrow_per_hop():
    js = core.journeys(nat_connection(), core.Traced("tcp", CIP, CPORT), NAMES)
    root = ET.fromstring(sequence_svg(_Result(), journeys=js, title="t"))
    ns = "{http://www.w3.org/2000/svg}"
    hops = [e for e in root.iter(f"{ns}path") if e.get("class") == "hop"]
    lanes = [e.text for e in root.iter(f"{ns}text") if e.get("class") == "lane"]
    assert len(hops) == sum(len(j.hops) for j in js) == 6
    assert lanes == ["client", "router", "director", "rs1"]


def _partial(pkt):
    """`pkt` as a sender with tx checksum offload hands it on: the L4 checksum field holds the
    folded pseudo-header sum (computed here by hand, RFC 793's pseudo-header)."""
    raw = bytearray(bytes(pkt))
    ip = IP(raw[14:])
    l4len = ip.len - ip.ihl * 4
    words = [int.from_bytes(raw[26 + i:28 + i], "big") for i in range(0, 8, 2)] + [ip.proto, l4len]
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    at = 14 + ip.ihl * 4 + (16 if ip.proto == 6 else 6)
    raw[at:at + 2] = s.to_bytes(2, "big")
    return bytes(raw)


def test_a_partial_checksum_is_shown_as_such_when_its_pseudo_header_sum_is_right():
    for pkt in (eth("client", "router") / syn(),
                eth("rs1", "director") / IP(src=RIP, dst=CIP) / UDP(sport=5353, dport=40001) / Raw(b"x" * 33)):
        data = _partial(pkt)
        name = "tcp.chksum" if TCP in pkt else "udp.chksum"
        assert core.bad_checksums(core.dissect(data)) == [name]              # not a checksum yet
        assert core.bad_checksums(core.dissect(data), partial=True) == []
        assert core.partial_checksums(core.dissect(data), True) == [name]
        assert core.partial_checksums(core.dissect(data), False) == []
        wrong = bytearray(data)
        at = 14 + 20 + (16 if TCP in pkt else 6)
        wrong[at + 1] ^= 0x01                                              # a wrong seed for the receiver
        assert core.bad_checksums(core.dissect(bytes(wrong)), partial=True) == [name]
        assert core.partial_checksums(core.dissect(bytes(wrong)), True) == []
        # a complete checksum taken as partial is not the pseudo-header sum either
        assert core.bad_checksums(core.dissect(bytes(pkt)), partial=True) == [name]


def test_a_hop_carries_the_partial_flag_of_its_frame():
    data = _partial(eth("client", "router") / syn())
    (j,) = core.journeys([Frame(P["to-client"], 1.0, data, partial=True)], core.Traced("tcp", CIP, CPORT), NAMES)
    assert j.hops[0].bad_checksums == [] and j.hops[0].partial_checksums == ["tcp.chksum"]


def test_the_capture_reads_csum_not_ready_from_packet_auxdata():
    import struct
    from lb.lab import capture
    aux = struct.pack("IIIHHHH", capture.TP_STATUS_CSUMNOTREADY | 1, 60, 60, 0, 14, 0, 0)
    assert capture._partial([(capture.SOL_PACKET, capture.PACKET_AUXDATA, aux)])
    assert not capture._partial([(capture.SOL_PACKET, capture.PACKET_AUXDATA, struct.pack("IIIHHHH", 1, 60, 60, 0, 14, 0, 0))])
    assert not capture._partial([])
