"""Frames as offloading peers deliver them (PACKET_VNET_HDR): partial checksums (NEEDS_CSUM) and
TCPv4 GSO aggregates, through every mode. What leaves is completed and segmented here as the
receiver (or its NIC) would, and every resulting packet must carry valid checksums and the
payload must come back whole."""
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from lb.inet import checksum
from tests.vectors import dr, fullnat, nat, tun
from tests.vectors import fixtures as fx
from tests.vectors.topology import CLIENT, DIRECTOR_MAC, RIP, ROUTER_MAC, VIP

NOW = fx.NOW
MSS = 1448
PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(20 * MSS + 100))   # 21 segments


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0):
    return struct.pack("<BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def unpack(head):
    return dict(zip(("flags", "gso_type", "hdr_len", "gso_size", "csum_start", "csum_offset"),
                    struct.unpack("<BBHHHH", head)))


def partial(pkt):
    """`pkt` as a CHECKSUM_PARTIAL sender hands it over: the L4 field holds the folded
    pseudo-header sum, not the checksum; and the vnet header that says so."""
    raw = bytearray(bytes(pkt))
    ip = IP(raw[14:])
    ihl, l4len = ip.ihl * 4, ip.len - ip.ihl * 4
    off = 14 + ihl + (16 if ip.proto == 6 else 6)
    pseudo = struct.pack("!4s4sBBH", bytes(map(int, ip.src.split("."))),
                         bytes(map(int, ip.dst.split("."))), 0, ip.proto, l4len)
    raw[off:off + 2] = struct.pack("!H", 0xFFFF ^ checksum(pseudo))
    return bytes(raw), off - 14 - ihl, 14 + ihl


def complete(frame, head):
    """What the receiver does with NEEDS_CSUM: sum from csum_start, store at csum_offset."""
    h = unpack(head)
    if not h["flags"] & 1:
        return frame
    raw = bytearray(frame)
    start, at = h["csum_start"], h["csum_start"] + h["csum_offset"]
    raw[at:at + 2] = struct.pack("!H", checksum(bytes(raw[start:])))
    return bytes(raw)


def cut(ip, size):
    """tcp_gso_segment() in small: an IP/TCP aggregate (scapy) cut at `size` bytes of payload,
    sequence numbers and IP IDs counting on, lengths and checksums computed afresh."""
    data = bytes(ip[TCP].payload)
    out = []
    for i, off in enumerate(range(0, len(data), size)):
        s = ip.copy()
        s[TCP].remove_payload()
        s[TCP].seq = ip[TCP].seq + off
        s.id = (ip.id + i) & 0xFFFF
        del s.len, s.chksum, s[TCP].chksum
        out.append(s / data[off:off + size])
    return out


def segments(frame, head):
    """The aggregate as the receiver gets it: cut at gso_size, checksums completed."""
    h = unpack(head)
    if not h["gso_type"]:
        return [complete(frame, head)]
    p = Ether(frame)
    return [bytes(Ether(src=p.src, dst=p.dst) / s) for s in cut(p[IP], h["gso_size"])]


def assert_valid(frame):
    """The first IP header and its TCP/UDP checksum are what scapy computes."""
    p = Ether(frame)
    q = p.copy()
    del q[IP].chksum
    for layer in (TCP, UDP):
        if layer in q:
            del q[layer].chksum
    want = Ether(bytes(q))
    assert p[IP].chksum == want[IP].chksum
    for layer in (TCP, UDP):
        if layer in p:
            assert p[layer].chksum == want[layer].chksum, f"{layer.__name__} checksum"


def syn_then(fwd, eth, ip, sport, dport=80, flags="S"):
    pkt = eth / ip / TCP(sport=sport, dport=dport, flags=flags, seq=1000)
    return fwd.process(bytes(pkt), now=NOW)


def aggregate(eth, ip, sport, dport=80):
    pkt = eth / ip / TCP(sport=sport, dport=dport, flags="A", seq=1001, ack=1) / PAYLOAD
    raw, _, start = partial(pkt)
    return raw, vnet(1, 1, start + 20, MSS, start, 16)


def test_nat_keeps_a_partial_checksum_partial():
    fwd = fx.provision(nat.DIRECTOR)
    eth, ip = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC), IP(src=CLIENT, dst=VIP)
    syn, off, start = partial(eth / ip / TCP(sport=41000, dport=80, flags="S", seq=7))
    verdict, _, out = fwd.process(syn, now=NOW, vnet=vnet(1, 0, 0, 0, start, 16))
    assert verdict == "forward" and len(out) == 1
    head, frame = out[0][1][:10], out[0][1][10:]
    assert unpack(head) == dict(flags=1, gso_type=0, hdr_len=0, gso_size=0, csum_start=34,
                                csum_offset=16)
    done = Ether(complete(frame, head))
    assert (done[IP].dst, done[TCP].dport) == (RIP, nat.RPORT)
    assert_valid(complete(frame, head))


@pytest.mark.parametrize("module, mode", [(nat, "masq"), (dr, "route"), (fullnat, "fullnat")])
def test_an_aggregate_leaves_whole_and_segments_into_valid_packets(module, mode):
    fwd = fx.provision(module.DIRECTOR)
    eth, ip = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC), IP(src=CLIENT, dst=VIP)
    assert syn_then(fwd, eth, ip, 42000)[0] == "forward"
    raw, head = aggregate(eth, ip, 42000)
    verdict, reason, out = fwd.process(raw, now=NOW, vnet=head)
    assert (verdict, reason, len(out)) == ("forward", None, 1)
    h, frame = out[0][1][:10], out[0][1][10:]
    assert unpack(h)["gso_type"] == 1 and unpack(h)["gso_size"] == MSS
    segs = segments(frame, h)
    assert len(segs) == 21
    got = b""
    for s in segs:
        assert_valid(s)
        assert len(Ether(s)[IP]) <= 1500
        got += bytes(Ether(s)[TCP].payload)
    assert got == PAYLOAD


def test_tun_cuts_an_aggregate_into_tunnelled_segments():
    fwd = fx.provision(tun.DIRECTOR)
    eth, ip = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC), IP(src=CLIENT, dst=VIP, flags="DF")
    assert syn_then(fwd, eth, ip, 43000)[0] == "forward"
    raw, head = aggregate(eth, ip, 43000)
    head = head[:4] + struct.pack("<H", 1400) + head[6:]        # fits the tunnel's MTU
    verdict, _, out = fwd.process(raw, now=NOW, vnet=head)
    assert verdict == "forward" and len(out) == -(-len(PAYLOAD) // 1400)
    got, seqs = b"", []
    for _, sent in out:
        h, frame = sent[:10], sent[10:]
        assert unpack(h)["flags"] == 0 and unpack(h)["gso_type"] == 0
        p = Ether(frame)
        assert p[IP].proto == 4 and p[IP].dst == RIP and len(p[IP]) <= 1500
        inner = IP(bytes(p[IP].payload))
        q = inner.copy()
        del q.chksum, q[TCP].chksum
        assert IP(bytes(q))[TCP].chksum == inner[TCP].chksum and IP(bytes(q)).chksum == inner.chksum
        seqs.append(inner[TCP].seq)
        got += bytes(inner[TCP].payload)
    assert got == PAYLOAD and seqs == [1001 + i * 1400 for i in range(len(out))]


def ipip_segments(frame, head):
    """What ipip_gso_segment() and tcp_gso_segment() make of a TUN aggregate once lbd's tc
    program has declared it IPIP: outer and inner headers per segment (lengths, IDs counting
    on, sequence numbers), the inner checksum completed."""
    h = unpack(head)
    p = Ether(frame)
    out = []
    for i, s in enumerate(cut(p[IP].payload, h["gso_size"])):
        o = p[IP].copy()
        o.remove_payload()
        o.id = (p[IP].id + i) & 0xFFFF
        del o.len, o.chksum
        out.append(bytes(Ether(src=p.src, dst=p.dst) / o / s))
    return out


def tun_encap_on(sport):
    """A TUN director whose interfaces all have lbd's tc program, and a connection from sport."""
    fwd = fx.provision(tun.DIRECTOR)
    for slot in range(4):
        fwd.set_tun_encap(slot, 0x4C421E1E)
    eth, ip = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC), IP(src=CLIENT, dst=VIP, flags="DF")
    assert syn_then(fwd, eth, ip, sport)[0] == "forward"
    return fwd, eth, ip


def test_tun_sends_an_aggregate_whole_for_the_kernel_to_cut_once_its_tc_program_is_on():
    fwd, eth, ip = tun_encap_on(43100)
    raw, head = aggregate(eth, ip, 43100)
    head = head[:4] + struct.pack("<H", 1400) + head[6:]        # fits the tunnel's MTU
    verdict, _, out = fwd.process(raw, now=NOW, vnet=head)
    assert verdict == "forward" and len(out) == 1
    h, frame = out[0][1][:10], out[0][1][10:]
    assert unpack(h) == dict(flags=1, gso_type=1, hdr_len=14 + 20 + 20 + 20, gso_size=1400,
                             csum_start=14 + 20 + 20, csum_offset=16)
    p = Ether(frame)
    assert (p[IP].proto, p[IP].dst, p[IP].len, p[IP].flags) == (4, RIP, len(frame) - 14, "DF")
    assert checksum(bytes(p[IP])[:20]) == 0
    got, seqs = b"", []
    for s in ipip_segments(frame, h):
        o = Ether(s)[IP]
        assert len(o) <= 1500 and o.proto == 4
        inner = IP(bytes(o.payload))
        assert_valid(bytes(Ether() / inner))
        seqs.append(inner[TCP].seq)
        got += bytes(inner[TCP].payload)
    assert got == PAYLOAD and seqs == [1001 + i * 1400 for i in range(len(seqs))]
    # the inner TCP checksum field is the pseudo-header sum of the whole inner packet
    whole = IP(bytes(p[IP].payload))
    pseudo = struct.pack("!4s4sBBH", bytes(map(int, whole.src.split("."))),
                         bytes(map(int, whole.dst.split("."))), 0, 6, whole.len - 20)
    assert whole[TCP].chksum == 0xFFFF ^ checksum(pseudo)


def test_tun_cuts_what_is_too_long_for_one_outer_header_even_with_its_tc_program():
    fwd, eth, ip = tun_encap_on(43200)
    big = bytes(65535 - 40)                                      # an inner packet of 65535 bytes
    pkt = eth / ip / TCP(sport=43200, dport=80, flags="A", seq=1001, ack=1) / big
    raw, _, start = partial(pkt)
    verdict, _, out = fwd.process(raw, now=NOW, vnet=vnet(1, 1, start + 20, 1400, start, 16))
    assert verdict == "forward" and len(out) == -(-len(big) // 1400)   # cut here: 20 more bytes would not fit
    assert all(unpack(sent[:10])["gso_type"] == 0 for _, sent in out)


def test_tun_and_dr_complete_a_partial_checksum_they_cannot_pass_on():
    for module in (tun, dr):
        fwd = fx.provision(module.DIRECTOR)
        pkt = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=VIP) / \
            TCP(sport=44000, dport=80, flags="S")
        raw, _, _ = partial(pkt)
        verdict, _, out = fwd.process(raw, now=NOW, partial=True)       # no vnet header
        frame = out[0][1]
        p = Ether(frame)
        inner = IP(bytes(p[IP].payload)) if p[IP].proto == 4 else p[IP]
        q = inner.copy()
        del q[TCP].chksum
        assert IP(bytes(q))[TCP].chksum == inner[TCP].chksum


@pytest.mark.parametrize("head, why", [
    (vnet(1, 0, 0, 0, 30, 16), "checksum not at the L4 header"),
    (vnet(1, 0, 0, 0, 34, 10), "checksum offset not TCP's"),
    (vnet(1, 1, 54, 0, 34, 16), "gso_size 0"),
    (vnet(1, 1, 54, 60000, 34, 16), "gso_size larger than the frame"),
    (vnet(1, 3, 54, 1400, 34, 16), "UFO"),
    (vnet(1, 5, 54, 1400, 34, 16), "UDP segmentation"),
    (vnet(0, 1, 54, 1400, 0, 0), "GSO without a partial checksum"),
    (vnet(4, 0, 0, 0, 0, 0), "an unknown flag"),
])
def test_a_lying_vnet_header_is_dropped_and_counted(head, why):
    fwd = fx.provision(nat.DIRECTOR)
    pkt = Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=VIP) / \
        TCP(sport=45000, dport=80, flags="S") / (b"x" * 100)
    verdict, reason, out = fwd.process(bytes(pkt), now=NOW, vnet=head)
    assert (verdict, reason, out) == ("drop", "bad_vnet_hdr", []), why
    assert fwd.counters()["bad_vnet_hdr"] == 1
