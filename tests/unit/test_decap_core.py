"""lb._decap (the decapsulator's C loop) against lb.realserver.decap.decapsulate() on the same
packets, and its userspace GRO: scapy-built IPIP segments in, TUN frames (virtio_net_hdr + IPv4)
out, dissected; aggregates cut back at gso_size must give the segments' bytes in order."""
from __future__ import annotations

import os
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from lb._decap import REASONS as C_REASONS, DecapCore
from lb.inet import checksum
from lb.realserver.decap import FORWARDED, REASONS, WRITE_FAILED, decapsulate, packed_vips
from tests.unit.test_decap import GOOD, outer, patched

VIP = "198.18.0.102"
VIPS = packed_vips([VIP, "198.18.0.103"])
CIP = "198.18.1.2"
TS = [("NOP", None), ("NOP", None), ("Timestamp", (7, 9))]
NO_HDR = bytes(10)


def segment(seq, data, flags="A", ipid=100, sport=40000, ack=1, window=512, tos=0, ttl=63,
            options=TS, ipflags="DF", **ip) -> bytes:
    return bytes(IP(src=CIP, dst=VIP, id=ipid, flags=ipflags, tos=tos, ttl=ttl, **ip)
                 / TCP(sport=sport, dport=80, seq=seq, ack=ack, flags=flags, window=window, options=options)
                 / data)


def stream(n, mss=1448, seq=1000, ipid=100, psh_last=True, **kw) -> list[bytes]:
    """n segments of one aggregate as the director cuts it (xmit_tun_gso): IDs +1, PSH on the last."""
    out = []
    for i in range(n):
        data = bytes([(seq + i) & 0xFF]) * mss
        flags = "PA" if psh_last and i == n - 1 else "A"
        out.append(segment(seq + i * mss, data, flags=flags, ipid=ipid + i, **kw))
    return out


def run(inners, wrap=True):
    core = DecapCore(VIPS)
    frames = core.process([outer(p) if wrap else p for p in inners])
    return frames, core.take_counts()


def vnet(frame):
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = struct.unpack("<BBHHHH", frame[:10])
    return dict(flags=flags, gso_type=gso_type, hdr_len=hdr_len, gso_size=gso_size,
                csum_start=csum_start, csum_offset=csum_offset)


def cut(frame) -> list[bytes]:
    """What a receiver gets from one TUN frame: the packet itself, or an aggregate's TCP payload
    cut at gso_size (tcp_gso_segment()), each piece as (seq, payload)."""
    h, pkt = vnet(frame), IP(frame[10:])
    if h["gso_type"] == 0:
        return [(pkt[TCP].seq, bytes(pkt[TCP].payload))] if TCP in pkt else [(None, bytes(pkt))]
    data = bytes(pkt[TCP].payload)
    mss = h["gso_size"]
    return [(pkt[TCP].seq + i, data[i:i + mss]) for i in range(0, len(data), mss)]


def pieces(inners):
    return [(IP(p)[TCP].seq, bytes(IP(p)[TCP].payload)) for p in inners]


# -- the same verdicts as decapsulate() ---------------------------------------------------------

def same_as_reference(data: bytes):
    inner, reason = decapsulate(data, VIPS)
    frames, (counts, nframes) = run([data], wrap=False)
    assert {k: v for k, v in counts.items() if v} == {reason: 1}
    assert frames == ([NO_HDR + inner] if inner is not None else [])   # one packet goes as it came
    assert nframes == len(frames)


def test_reasons_are_the_daemons():
    assert C_REASONS == (*REASONS, WRITE_FAILED)


@pytest.mark.parametrize("inner", [
    bytes(IP(src=CIP, dst=VIP) / UDP(sport=1, dport=2) / b"ping"),
    segment(1, b"x" * 100),
    segment(1, b"", flags="S"),
    bytes(IP(src=CIP, dst=VIP, flags="MF", proto=6) / (b"f" * 40)),          # an inner fragment
    bytes(IP(src=CIP, dst="198.18.0.103") / TCP(flags="A") / b"second vip"),
])
def test_valid_packets_match_the_reference(inner):
    same_as_reference(outer(inner))


def test_malformed_packets_match_the_reference():
    from tests.unit.test_decap import test_malformed
    cases = test_malformed.pytestmark[0].args[1]
    for data, _ in cases:
        same_as_reference(data)
    short = bytes(IP(src=CIP, dst=VIP, proto=17))
    same_as_reference(outer(b"\x46" + short[1:]))                    # inner IHL beyond what is left


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_match_the_reference(data):
    same_as_reference(data)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 119), st.integers(0, 255)), max_size=6), st.integers(0, 60),
       st.booleans())
def test_mutated_packets_match_the_reference(flips, cut_off, tcp):
    raw = bytearray(outer(segment(5, b"m" * 60)) if tcp else GOOD)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    same_as_reference(bytes(raw[:len(raw) - cut_off]))


# -- GRO -------------------------------------------------------------------------------------------

def test_one_aggregate_from_a_cut_aggregate():
    segs = stream(5)
    frames, (counts, nframes) = run(segs)
    assert counts[FORWARDED] == 5 and nframes == 1 and len(frames) == 1
    h = vnet(frames[0])
    assert h == dict(flags=1, gso_type=1, hdr_len=20 + 32, gso_size=1448, csum_start=20, csum_offset=16)
    pkt = IP(frames[0][10:])
    assert pkt.len == len(frames[0]) - 10 == 20 + 32 + 5 * 1448
    assert checksum(frames[0][10:30]) == 0                          # the IP header's is whole
    first = IP(segs[0])
    assert (pkt.id, pkt[TCP].seq, pkt[TCP].ack, pkt[TCP].window) == (first.id, first[TCP].seq, 1, 512)
    assert pkt[TCP].flags == "PA" and pkt[TCP].options == first[TCP].options
    tcp = bytearray(frames[0][30:])
    pseudo = socket.inet_aton(CIP) + socket.inet_aton(VIP) + struct.pack("!BBH", 0, 6, len(tcp))
    assert pkt[TCP].chksum == 0xFFFF - checksum(pseudo)             # the pseudo-header sum, folded
    tcp[16:18] = b"\0\0"                                            # NEEDS_CSUM completed as the kernel would
    tcp[16:18] = struct.pack("!H", checksum(pseudo + bytes(tcp)))
    assert checksum(pseudo + bytes(tcp)) == 0
    assert cut(frames[0]) == pieces(segs)


@pytest.mark.parametrize("n", [2, 44, 45, 64, 70])
def test_sizes_up_to_64_kb_and_64_segments(n):
    segs = stream(n, mss=1000, options=[])
    frames, (counts, _) = run(segs)
    assert counts[FORWARDED] == n
    assert [p for f in frames for p in cut(f)] == pieces(segs)
    assert all(len(f) - 10 <= 65535 for f in frames)
    assert all(vnet(f)["gso_type"] == 0 or len(cut(f)) <= 64 for f in frames)
    assert len(frames) == -(-n // min(64, (65535 - 40) // 1000))


def short_last():
    segs = stream(3, psh_last=False)
    return segs + [segment(1000 + 3 * 1448, b"s" * 100, ipid=103), segment(1000 + 3 * 1448 + 100, b"t" * 10, ipid=104)]


# each case: segments of which the ones after `split` must not join the aggregate before them
BREAKS = {
    "other port": (stream(2) + [segment(1000 + 2 * 1448, b"p" * 1448, ipid=102, sport=40001)], 2),
    "out of order": (stream(2, psh_last=False) + [segment(1000 + 3 * 1448, b"o" * 1448, ipid=102)], 2),
    "other ack": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"a" * 1448, ipid=102, ack=2)], 2),
    "other window": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"w" * 1448, ipid=102, window=9)], 2),
    "other tos": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"c" * 1448, ipid=102, tos=3)], 2),
    "other ttl": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"t" * 1448, ipid=102, ttl=9)], 2),
    "other options": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"o" * 1448, ipid=102,
                                                           options=[("NOP", None)] * 2 + [("Timestamp", (8, 9))])], 2),
    "ip id jumps": (stream(2, psh_last=False, ipflags=0) + [segment(1000 + 2 * 1448, b"i" * 1448, ipid=110, ipflags=0)], 2),
    "fin": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"f" * 1448, flags="FA", ipid=102)], 2),
    "cwr": (stream(2, psh_last=False) + [segment(1000 + 2 * 1448, b"e" * 1448, flags="CA", ipid=102)], 2),
    "after psh": (stream(2) + [segment(1000 + 2 * 1448, b"n" * 1448, ipid=102)], 2),
    "after a short one": (short_last(), 4),
}


@pytest.mark.parametrize("case", BREAKS)
def test_what_does_not_join(case):
    segs, split = BREAKS[case]
    frames, (counts, _) = run(segs)
    assert counts[FORWARDED] == len(segs)
    got = [p for f in frames for p in cut(f)]
    assert got == pieces(segs)                                     # nothing lost, nothing reordered
    first = [f for f in frames if vnet(f)["gso_type"]][0]
    assert len(cut(first)) == split                                # the aggregate stopped there


def test_a_bad_tcp_checksum_goes_alone_and_unchanged():
    segs = stream(3, psh_last=False)
    bad = patched(segs[1], 36, b"\xbe\xef", fix_checksum=False)    # the TCP checksum field
    frames, (counts, _) = run([segs[0], bad, segs[2]])
    assert counts[FORWARDED] == 3
    assert frames == [NO_HDR + segs[0], NO_HDR + bad, NO_HDR + segs[2]]   # the kernel drops the bad one


def test_an_aggregate_with_its_checksum_left_partial_goes_with_needs_csum():
    # A director's TUN aggregate that a veth handed over whole: the TCP checksum field holds
    # the pseudo-header sum (CHECKSUM_PARTIAL); the decapsulator cannot merge or check it and
    # must not hand it over as complete (the kernel would drop it), but with NEEDS_CSUM.
    whole = bytearray(segment(1000, bytes(range(256)) * 200))
    tcp_len = len(whole) - 20
    pseudo = socket.inet_aton(CIP) + socket.inet_aton(VIP) + struct.pack("!BBH", 0, 6, tcp_len)
    whole[36:38] = struct.pack("!H", 0xFFFF - checksum(pseudo))
    frames, (counts, nframes) = run([bytes(whole)])
    assert counts[FORWARDED] == 1 and frames == [frames[0]] and frames[0][10:] == bytes(whole)
    assert vnet(frames[0]) == dict(flags=1, gso_type=0, hdr_len=0, gso_size=0, csum_start=20, csum_offset=16)
    tcp = bytearray(whole[20:])
    tcp[16:18] = struct.pack("!H", checksum(pseudo + bytes(tcp[:16]) + b"\0\0" + bytes(tcp[18:])))
    assert checksum(pseudo + bytes(tcp)) == 0                       # completed, it is right
    # one whose field is neither right nor the pseudo-header sum goes as it came, for the
    # kernel to drop; so does a complete one that happens to be the pseudo sum's neighbour
    whole[36:38] = struct.pack("!H", (0xFFFF - checksum(pseudo)) ^ 1)
    assert run([bytes(whole)])[0] == [NO_HDR + bytes(whole)]


def test_drops_between_segments_do_not_break_an_aggregate():
    segs = stream(3)
    core = DecapCore(VIPS)
    frames = core.process([outer(segs[0]), b"junk", outer(segs[1]), outer(segs[2])])
    counts, _ = core.take_counts()
    assert (counts[FORWARDED], counts["truncated"], len(frames)) == (3, 1, 1)


def test_ip_options_and_udp_go_alone():
    opt = bytes(IP(src=CIP, dst=VIP, options=[b"\x01\x01\x01\x00"]) / TCP(seq=1, flags="A") / (b"o" * 100))
    udp = bytes(IP(src=CIP, dst=VIP) / UDP() / b"u")
    frames, _ = run([opt, opt, udp, udp])
    assert frames == [NO_HDR + opt, NO_HDR + opt, NO_HDR + udp, NO_HDR + udp]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(1, 1448), st.sampled_from(["A", "A", "A", "PA", "FA"]),
                          st.booleans()), min_size=1, max_size=90))
def test_two_interleaved_flows_arrive_whole_and_in_order(steps):
    seq, ipid, segs = [5000, 9000], [1, 1], []
    for flow, size, flags, gap in steps:
        if gap:
            seq[flow] += 7                                          # a hole: the next is out of order
        segs.append(segment(seq[flow], os.urandom(size), flags=flags, ipid=ipid[flow], sport=40000 + flow))
        seq[flow] += size
        ipid[flow] += 1
    frames, (counts, nframes) = run(segs)
    assert counts[FORWARDED] == len(segs) and nframes == len(frames) <= len(segs)
    assert [p for f in frames for p in cut(f)] == pieces(segs)
    for f in frames:
        assert checksum(f[10:30]) == 0 and IP(f[10:]).len == len(f) - 10


# -- the I/O shell, on sockets anyone may open ---------------------------------------------------

def test_drain_reads_batches_and_writes_frames():
    rx_in, rx = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)   # stands in for the raw socket
    tun, tun_out = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # and for the TUN device
    segs = stream(70, mss=900)
    with rx_in, rx, tun, tun_out:
        for s in [b"junk", *map(outer, segs), outer(bytes(IP(src=CIP, dst=VIP) / UDP() / b"u"))]:
            rx_in.send(s)
        core = DecapCore(VIPS)
        assert core.drain(rx.fileno(), tun.fileno(), 1000) == 72
        assert core.drain(rx.fileno(), tun.fileno(), 1000) == 0            # EAGAIN: nothing more
        tun_out.setblocking(False)
        frames = []
        while True:
            try:
                frames.append(tun_out.recv(70000))
            except BlockingIOError:
                break
        counts, nframes = core.take_counts()
        assert (counts[FORWARDED], counts["truncated"], nframes) == (71, 1, len(frames))
        # 64 a batch: the first aggregate ends with the batch (junk + 63), the rest is the next
        assert [len(cut(f)) for f in frames if vnet(f)["gso_type"]] == [63, 7]
        assert [p for f in frames[:-1] for p in cut(f)] == pieces(segs)
        tun_out.close()
        rx_in.send(outer(segs[0]))
        assert core.drain(rx.fileno(), tun.fileno(), 1000) == 1
        assert core.take_counts()[0][WRITE_FAILED] == 1                    # the peer went: counted, not raised


def test_the_python_shell_writes_a_vnet_header_once_the_device_takes_one():
    from lb.realserver.decap import Decapsulator
    r, w = os.pipe()
    d = Decapsulator([VIP])
    d.tun_fd, d.vnet = w, True                  # what open() sets: the device has IFF_VNET_HDR
    try:
        assert d.handle(GOOD) == FORWARDED
        assert os.read(r, 4096) == NO_HDR + decapsulate(GOOD, VIPS)[0]
        assert d.stats()["tun_frames"] == 1
    finally:
        os.close(r)
        os.close(w)
