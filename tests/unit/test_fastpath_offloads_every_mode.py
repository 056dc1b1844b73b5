"""Every mode (NAT, DR, TUN, FULLNAT, ENAT) fed what an offloading peer hands over with
PACKET_VNET_HDR: a TCP SYN and a TCP data segment with a partial checksum (NEEDS_CSUM: the field
holds the pseudo-header sum), a partial UDP datagram, and a TCPv4 GSO aggregate.

What leaves is taken as the receiving side takes it: a NEEDS_CSUM frame completed from
csum_start (as the NIC or the peer's stack does), an aggregate cut the way tcp_gso_segment()
cuts it, each segment's checksum grown from the seed the aggregate carries (its length
swapped for the segment's), never recomputed from scratch, so a wrong seed shows. Then scapy
dissects every packet, innermost header included (TUN), and recomputes every IP, TCP and UDP
checksum: they must be the ones that arrived, and the rewrite must be the mode's.
"""
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lb.inet import checksum
from tests.unit.test_fastpath_offloads import complete, partial, unpack, vnet
from tests.vectors import dr, enat, fullnat, nat, tun
from tests.vectors import fixtures as fx
from tests.vectors.topology import CLIENT, DIRECTOR_MAC, RIP, ROUTER_MAC, RS_MAC, VIP

NOW = fx.NOW
GSO_SIZE = 1400                      # fits every mode's frame, TUN's 20 bytes of IPIP included
PAYLOAD = bytes((i * 13 + 5) & 0xFF for i in range(9 * GSO_SIZE + 321))   # 10 segments

# mode: (director, the innermost packet's (src, dst, dport) at the real server, tunnelled)
MODES = {
    "nat": (nat.DIRECTOR, (CLIENT, RIP, nat.RPORT), False),
    "dr": (dr.DIRECTOR, (CLIENT, VIP, 80), False),
    "tun": (tun.DIRECTOR, (CLIENT, VIP, 80), True),
    "fullnat": (fullnat.DIRECTOR, (fullnat.LIP1, RIP, fullnat.RPORT), False),
    "enat": (enat.DIRECTOR, (VIP, RIP, fullnat.RPORT), False),
}
UDP_MODES = ["nat", "dr", "tun", "fullnat", "enat"]  # ENAT UDP: the client rides in UOA (uoa.pxi)


def fold(x: int) -> int:
    while x >> 16:
        x = (x & 0xFFFF) + (x >> 16)
    return x


def gso_segments(frame: bytes, head: bytes) -> list:
    """tcp_gso_segment(): cut the payload at gso_size; each segment keeps the headers, seq and
    IP id advance, and its TCP checksum field is the aggregate's seed with the aggregate's L4
    length replaced by the segment's (the kernel's `delta`), then completed from csum_start."""
    h = unpack(head)
    assert h["flags"] & 1 and h["gso_type"] == 1, h         # NEEDS_CSUM, TCPV4
    ip_at = 14
    ihl = (frame[ip_at] & 0x0F) * 4
    tcp_at = ip_at + ihl
    thl = (frame[tcp_at + 12] >> 4) * 4
    assert h["csum_start"] == tcp_at and h["csum_offset"] == 16 and h["hdr_len"] == tcp_at + thl
    seed = struct.unpack("!H", frame[tcp_at + 16:tcp_at + 18])[0]
    data = frame[tcp_at + thl:]
    old_len = thl + len(data)
    seq = struct.unpack("!I", frame[tcp_at + 4:tcp_at + 8])[0]
    ip_id = struct.unpack("!H", frame[ip_at + 4:ip_at + 6])[0]
    out = []
    for i, off in enumerate(range(0, len(data), h["gso_size"])):
        chunk = data[off:off + h["gso_size"]]
        seg = bytearray(frame[:tcp_at + thl] + chunk)
        struct.pack_into("!H", seg, ip_at + 2, ihl + thl + len(chunk))
        struct.pack_into("!H", seg, ip_at + 4, (ip_id + i) & 0xFFFF)
        struct.pack_into("!H", seg, ip_at + 10, 0)
        struct.pack_into("!H", seg, ip_at + 10, checksum(bytes(seg[ip_at:tcp_at])))
        struct.pack_into("!I", seg, tcp_at + 4, (seq + off) & 0xFFFFFFFF)
        new_seed = fold(seed + (0xFFFF ^ old_len) + thl + len(chunk))
        struct.pack_into("!H", seg, tcp_at + 16, new_seed)
        out.append(complete(bytes(seg), vnet(1, 0, 0, 0, tcp_at, 16)))
    return out


def received(out) -> list:
    """The Ethernet frames the real server's side ends up with, from (ifslot, vnet + frame)."""
    frames = []
    for _, sent in out:
        head, frame = sent[:10], sent[10:]
        h = unpack(head)
        if h["gso_type"]:
            frames += gso_segments(frame, head)
        else:
            assert h["gso_type"] == 0 and h["gso_size"] == 0
            frames.append(complete(frame, head))
    return frames


def checked(frame: bytes, tunnelled: bool) -> IP:
    """Every IP/TCP/UDP checksum in the frame is what scapy computes; the innermost IP packet."""
    p = Ether(frame)
    assert (p.src, p.dst) == (DIRECTOR_MAC, RS_MAC)
    again = p.copy()
    for layer in again.iterpayloads():
        if isinstance(layer, (IP, TCP, UDP)):
            del layer.chksum
    again = Ether(bytes(again))
    for mine, right in zip(p.iterpayloads(), again.iterpayloads()):
        if isinstance(mine, (IP, TCP, UDP)):
            assert mine.chksum == right.chksum, f"{type(mine).__name__} checksum {mine.chksum:#06x}" \
                                                f" != {right.chksum:#06x}"
    outer = p[IP]
    assert (outer.proto == 4) == tunnelled
    if tunnelled:
        assert outer.dst == RIP and len(outer) <= 1500
        inner = outer.payload
        assert isinstance(inner, IP)
        return inner
    assert len(outer) <= 1500
    return outer


def rewritten_as(ip: IP, mode: str, l4=TCP):
    _, (src, dst, dport), _ = MODES[mode]
    assert (ip.src, ip.dst, ip[l4].dport) == (src, dst, dport), ip.summary()


def forwarder(mode):
    return fx.provision(MODES[mode][0])


def inbound(l4, sport, **kw):
    return Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=VIP, flags="DF") / l4(
        sport=sport, dport=80, **kw)


def partial_vnet(pkt, l4_offset):
    raw, off, start = partial(pkt)
    assert off == l4_offset
    return raw, vnet(1, 0, 0, 0, start, off)


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_syn_arrives_with_valid_checksums(mode):
    fwd = forwarder(mode)
    raw, head = partial_vnet(inbound(TCP, 41000, flags="S", seq=7, options=[("MSS", 1460)]), 16)
    verdict, reason, out = fwd.process(raw, now=NOW, vnet=head)
    assert (verdict, reason, len(out)) == ("forward", None, 1)
    (frame,) = received(out)
    ip = checked(frame, MODES[mode][2])
    rewritten_as(ip, mode)
    assert ip[TCP].flags == "S" and ip[TCP].seq == 7
    if mode in ("fullnat", "enat"):                   # the TOA went in, the length with it
        assert ip[TCP].options[0] == fullnat.toa(41000)


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_data_segment_arrives_with_valid_checksums(mode):
    fwd = forwarder(mode)
    assert fwd.process(bytes(inbound(TCP, 41001, flags="S", seq=99)), now=NOW)[0] == "forward"
    data = b"GET / HTTP/1.1\r\nHost: lb.example\r\n\r\n" * 9
    raw, head = partial_vnet(inbound(TCP, 41001, flags="PA", seq=100, ack=1) / Raw(data), 16)
    verdict, reason, out = fwd.process(raw, now=NOW + 0.01, vnet=head)
    assert (verdict, reason, len(out)) == ("forward", None, 1)
    (frame,) = received(out)
    ip = checked(frame, MODES[mode][2])
    rewritten_as(ip, mode)
    assert bytes(ip[TCP].payload) == data


@pytest.mark.parametrize("mode", UDP_MODES)
def test_a_partial_udp_datagram_arrives_with_valid_checksums(mode):
    fwd = forwarder(mode)
    data = bytes(range(256)) * 3
    raw, head = partial_vnet(inbound(UDP, 7100) / Raw(data), 6)
    verdict, reason, out = fwd.process(raw, now=NOW, vnet=head)
    assert (verdict, reason, len(out)) == ("forward", None, 1)
    (frame,) = received(out)
    ip = checked(frame, MODES[mode][2])
    rewritten_as(ip, mode, UDP)
    assert bytes(ip[UDP].payload) == data and ip[UDP].chksum != 0
    if mode == "enat":                                # the UOA went in before the UDP header
        assert [(o.option, bytes(o.value)) for o in ip.options] == [(31, fullnat.toa(7100)[1])]


@pytest.mark.parametrize("mode", MODES)
def test_a_gso_aggregate_arrives_as_valid_segments_carrying_the_whole_payload(mode):
    fwd = forwarder(mode)
    assert fwd.process(bytes(inbound(TCP, 42000, flags="S", seq=1000)), now=NOW)[0] == "forward"
    raw, off, start = partial(inbound(TCP, 42000, flags="A", seq=1001, ack=1) / PAYLOAD)
    head = vnet(1, 1, start + 20, GSO_SIZE, start, off)
    verdict, reason, out = fwd.process(raw, now=NOW + 0.01, vnet=head)
    assert (verdict, reason) == ("forward", None)
    frames = received(out)
    assert len(frames) == -(-len(PAYLOAD) // GSO_SIZE)
    got, seqs = b"", []
    for frame in frames:
        ip = checked(frame, MODES[mode][2])
        rewritten_as(ip, mode)
        seqs.append(ip[TCP].seq)
        got += bytes(ip[TCP].payload)
    assert got == PAYLOAD
    assert seqs == [1001 + i * GSO_SIZE for i in range(len(frames))]


def test_the_receiving_side_trusts_the_seed_it_is_given():
    # The segmentation above grows each checksum from the aggregate's seed: an aggregate whose
    # seed is one off must come out with wrong checksums, or the tests above could not fail.
    eth = Ether(src=DIRECTOR_MAC, dst=RS_MAC)
    raw, off, start = partial(eth / IP(src=CLIENT, dst=RIP) / TCP(sport=1, dport=2, flags="A") / PAYLOAD)
    head = vnet(1, 1, start + 20, GSO_SIZE, start, off)
    assert all(checked(f, False) for f in gso_segments(raw, head))
    bad = bytearray(raw)
    struct.pack_into("!H", bad, start + off, fold(struct.unpack_from("!H", raw, start + off)[0] + 1))
    with pytest.raises(AssertionError, match="TCP checksum"):
        checked(gso_segments(bytes(bad), head)[0], False)
