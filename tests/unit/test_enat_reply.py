"""lb.realserver._enat_reply (the ENAT agent's reply path in C) against the sans-IO reference,
FlowTable.outbound: the same frames (well-formed, mutated, cut, random, ICMP, unknown flows, at
times that cross every timeout) into two identical tables must give identical bytes, reasons,
counters, entries and expiry heaps. And the batch shell, ReplyPath, over socket pairs: order,
what it leaves to Python, what it counts when a send fails."""
from __future__ import annotations

import socket
import struct
import time

from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.packet import Raw

from lb.realserver import enat_packets as ep
from lb.realserver._enat_reply import ReplyPath, outbound
from lb.realserver.enat_flows import FlowTable

VIP, RIP = "198.18.0.104", "198.18.2.11"
PVIP, PRIP = socket.inet_aton(VIP), socket.inet_aton(RIP)
NOW = 1000.0

flows = st.lists(st.tuples(st.sampled_from([6, 17]), st.integers(1, 65535), st.integers(1, 65535),
                           st.integers(1, 254), st.integers(1, 65535), st.integers(1, 65535),
                           st.sampled_from(["syn", "established", "fin", "close"])),
                 min_size=1, max_size=4)
packets = st.lists(st.tuples(
    st.integers(0, 5),                                   # which flow (past the list: an unknown one)
    st.sampled_from(["", "S", "SA", "A", "PA", "FA", "R", "RA", "F"]),
    st.binary(max_size=64),                              # payload
    st.sampled_from([None, 0, 0xFFFF]),                  # UDP checksum: computed, none, or a fixed one
    st.lists(st.tuples(st.integers(0, 120), st.integers(1, 255)), max_size=3),   # byte flips
    st.one_of(st.none(), st.integers(0, 120)),           # cut
    st.sampled_from([0.0, 0.5, 11.0, 130.0, 301.0, 1000.0]),   # time since the previous packet
    st.booleans(),                                       # an ICMP port unreachable quoting it instead
    st.sampled_from([(0, 0), ("DF", 0), ("MF", 0), (0, 8)]),    # IP flags and fragment offset
), max_size=12)


def tables(spec):
    made = []
    for _ in range(2):
        t = FlowTable([VIP])
        for proto, lport, rport, c, cport, vport, state in spec:
            key = (proto, PVIP, lport, PRIP, rport)
            t.add(key, bytes([198, 18, 1, c]), cport, vport, NOW, state if proto == 6 else None)
        made.append(t)
    return made


def frame(spec, which, flags, payload, uchk, icmp, frag=(0, 0)):
    proto, lport, rport = spec[which][:3] if which < len(spec) else (6, 7, 9)
    if proto == 6:
        l4 = TCP(sport=rport, dport=lport, flags=flags, seq=1, ack=2) / Raw(payload)
    else:
        l4 = UDP(sport=rport, dport=lport, **({} if uchk is None else {"chksum": uchk})) / Raw(payload)
    pkt = IP(src=RIP, dst=VIP, flags=frag[0], frag=frag[1]) / l4
    if icmp:
        pkt = IP(src=RIP, dst=VIP) / ICMP(type=3, code=3) / bytes(pkt)[:28]
    return bytes(pkt)


def state_of(t: FlowTable):
    entries = {k: (e.cip, e.cport, e.vport, e.state, e.expires, e.due) for k, e in t.entries.items()}
    heap = [(due, seq, key, (e.state, e.expires)) for due, seq, key, e in t._heap]
    return entries, heap, dict(t.counters), t.now


@settings(max_examples=400, deadline=None)
@given(flows, packets)
def test_c_path_equals_flowtable_outbound(spec, seq):
    ref, c = tables(spec)
    now = NOW
    for which, flags, payload, uchk, flips, cut, dt, icmp, frag in seq:
        now += dt
        p = bytearray(frame(spec, which, flags, payload, uchk, icmp, frag))
        for at, x in flips:
            if at < len(p):
                p[at] ^= x
        p = bytes(p if cut is None else p[:cut])
        want = ref.outbound(p, now)
        got = outbound(c, p, now)
        assert got == want
        assert state_of(c) == state_of(ref)
        if now - NOW > 1500:
            assert ref.expire(now) == c.expire(now)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_same_verdict(data):
    ref, c = tables([(6, 30001, 80, 2, 40000, 80, "established")])
    assert outbound(c, data, NOW) == ref.outbound(data, NOW)
    assert state_of(c) == state_of(ref)


def test_a_reply_is_rewritten_and_moves_the_entry():
    """Not only equal to the reference: the reference's answer itself, spelled out."""
    ref, c = tables([(6, 30001, 80, 2, 40000, 8080, "syn")])
    out, reason = outbound(c, bytes(IP(src=RIP, dst=VIP) / TCP(sport=80, dport=30001, flags="SA")), NOW + 1)
    assert reason == ep.REWRITTEN
    pkt = IP(out)
    assert (pkt.src, pkt.dst, pkt[TCP].sport, pkt[TCP].dport) == (VIP, "198.18.1.2", 8080, 40000)
    again = IP(bytes(pkt.copy()))
    del again.chksum, again[TCP].chksum
    again = IP(bytes(again))
    assert (again.chksum, again[TCP].chksum) == (pkt.chksum, pkt[TCP].chksum)
    entry = c.entries[(6, PVIP, 30001, PRIP, 80)]
    assert (entry.state, entry.expires) == ("established", NOW + 1 + 900)
    assert c.counters[ep.REWRITTEN] == 1


def test_udp_checksum_that_computes_to_zero_leaves_as_ffff_as_in_the_reference():
    # the payload word that makes the rewritten datagram sum to 0xFFFF (RFC 768: sent as 0xFFFF)
    spec = [(17, 30001, 5353, 2, 40000, 53, "syn")]
    def rewritten(payload):
        return IP(bytes(IP(src=VIP, dst="198.18.1.2") / UDP(sport=53, dport=40000) / Raw(payload)))
    word = struct.pack("!H", rewritten(b"\0\0")[UDP].chksum)
    p = frame(spec, 0, "", word, None, False)
    ref, c = tables(spec)
    want = ref.outbound(p, NOW)
    assert IP(want[0])[UDP].chksum == 0xFFFF
    assert outbound(c, p, NOW) == want and state_of(c) == state_of(ref)


# -- the batch shell -------------------------------------------------------------------------------

def test_reply_path_batches_in_order_and_leaves_the_rest_to_python():
    """The TUN fd is a SOCK_SEQPACKET pair (a read is one packet, as on a TUN device); the
    "raw socket" is a UNIX datagram socket, which refuses an AF_INET destination: every
    rewritten packet then counts as send_failed, as Agent.send counts a failed sendmsg."""
    t = FlowTable([VIP])
    t.add((6, PVIP, 30001, PRIP, 80), bytes([198, 18, 1, 2]), 40000, 80, time.monotonic())  # its clock
    tun, feed = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    raw, _peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    tun.setblocking(False)
    known = bytes(IP(src=RIP, dst=VIP) / TCP(sport=80, dport=30001, flags="A"))
    unknown = bytes(IP(src=RIP, dst=VIP) / TCP(sport=80, dport=30002, flags="A"))
    icmp = bytes(IP(src=RIP, dst=VIP) / ICMP(type=3, code=3) / known[:28])
    bad = known[:19]
    sent = [known, unknown, bad, icmp] + [known] * 70      # more than one slot batch
    for p in sent:
        feed.send(p)
    slow = []
    path = ReplyPath(t, tun.fileno(), raw.fileno(), slow.append)
    assert path.drain(3) == (3, False)                     # the budget is kept
    assert slow == [unknown]
    assert path.drain(256) == (len(sent) - 3, False)       # then EAGAIN: not a failure
    assert slow == [unknown, icmp]
    assert t.counters[ep.SEND_FAILED] == 71 and t.counters[ep.REWRITTEN] == 0
    assert t.counters[ep.TRUNCATED] == 1
    assert t.entries[(6, PVIP, 30001, PRIP, 80)].state == "established"
    feed.close()
    assert path.drain(8) == (0, False)                     # end of file: a read of 0 is no packet
    for s in (tun, raw, _peer):
        s.close()


def test_reply_path_says_when_a_read_fails():
    t = FlowTable([VIP])
    r, w = socket.socketpair()
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    bad_fd = r.detach()
    socket.close(bad_fd)                                   # EBADF, as a deleted TUN device's EBADFD
    assert ReplyPath(t, bad_fd, raw.fileno(), lambda p: None).drain(8) == (0, True)
    w.close()
    raw.close()
