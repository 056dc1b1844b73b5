"""Bad input to the fast path: every malformed or foreign frame of tests/vectors/malformed.py
is dropped or passed to the kernel with the right reason counted (exactly one count per frame),
nothing is sent, no connection is made, the scheduler is not asked, and nothing raises. Then
hypothesis throws arbitrary bytes and mutated SYNs at Forwarder.process.
"""
import struct

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from lb._forward import REASON_NAMES
from lb.inet import checksum
from tests.vectors import fixtures as fx
from tests.vectors import malformed as M
from tests.vectors.checks import assert_icmp_checksums
from tests.vectors import nat as V
from tests.vectors.malformed import eth, l4_patch, rebuilt, syn, truncated_l4, vip_tcp, with_ip_byte

NOW = V.NOW
REASONS = REASON_NAMES[1:]


def make():
    f = fx.provision(M.DIRECTOR)
    return f, f.scheduler_cb


def reason_counts(f):
    c = f.counters()
    return {name: c[name] for name in REASONS}


def established(f):
    """Open CLIENT:40000 -> VIP:80 (TCP) and CLIENT:5000 -> VIP:80 (UDP)."""
    fx.run(f, M.ESTABLISHED, frames=False)


@pytest.mark.parametrize("vector", M.BAD, ids=fx.description)
def test_bad_input_is_counted_once_and_sends_nothing(vector):
    f, sched = make()
    established(f)
    before, conns, nflows = reason_counts(f), f.counters()["conns"], sched.nflows
    fx.run(f, [vector], start=len(M.ESTABLISHED))      # its verdict and reason, nothing sent
    after = reason_counts(f)
    reason = vector["reason"]
    assert {k: after[k] - before[k] for k in REASONS if after[k] != before[k]} == {reason: 1}
    assert f.counters()["conns"] == conns, "a bad frame made a connection"
    assert sched.nflows == nflows, "a bad frame reached the scheduler"
    # the director goes on forwarding the established flows
    assert f.process(bytes(V.tcp_in(40000, "A", seq=101, ack=501)[0]), now=NOW + 2)[0] == "forward"
    assert f.process(bytes(V.udp_out(5000, b"a")[0]), now=NOW + 2)[0] == "forward"


@pytest.mark.parametrize("frame", [
    bytes(syn()),
    with_ip_byte(syn(), 8, 64),                          # same bytes, IP checksum recomputed
    rebuilt(syn(), flags="DF", chksum=None),             # DF is no fragment
    l4_patch(syn(), 12, 0x50),                           # same bytes, TCP checksum recomputed
    truncated_l4(syn(), 20),
    l4_patch(V.udp_in(5001, b"abcd")[0], 5, 12),         # UDP length == IP payload
    bytes(V.udp_in(5001, b"abcd", chksum=0)[0]),
], ids=["syn", "ip-csum-helper", "DF", "l4-csum-helper", "truncate-helper", "udp-len-helper", "udp-no-csum"])
def test_controls_the_defects_are_made_from_are_forwarded(frame):
    """The helpers that make the bad frames change only what they are asked to."""
    f, _ = make()
    assert f.process(frame, now=NOW)[:2] == ("forward", None)


def test_syn_ack_schedules_like_the_kernel():
    """ip_vs_proto_tcp.c tcp_conn_schedule(): "No !th->ack check to allow scheduling on SYN+ACK
    for Active FTP" -- any SYN without RST opens a connection."""
    f, sched = make()
    assert f.process(bytes(vip_tcp("SA")), now=NOW)[:2] == ("forward", None)
    assert f.process(bytes(vip_tcp("SF", sport=41001)), now=NOW)[:2] == ("forward", None)
    assert sched.nflows == 2


def test_wrong_checksum_on_an_established_flow_stays_wrong():
    """Established flows get incremental checksum updates (no verification, like the kernel's
    IPVS): a corrupt segment must leave still corrupt, by the same amount, not be laundered."""
    f, _ = make()
    established(f)
    pin = Ether(bytes(V.tcp_in(40000, "PA", b"payload", seq=101, ack=501)[0]))
    good = pin[TCP].chksum
    pin[TCP].chksum = good ^ 0x0101
    verdict, reason, out = f.process(bytes(pin), now=NOW)
    assert verdict == "forward"
    o = Ether(out[0][1])
    right = Ether(bytes(V.tcp_in(40000, "PA", b"payload", seq=101, ack=501)[1]))[TCP].chksum
    assert o[TCP].chksum != right
    # one's-complement sums: the error (difference of the complemented fields) is carried over
    inv = lambda c: (~c) & 0xFFFF
    assert (inv(o[TCP].chksum) - inv(right)) % 0xFFFF == (inv(good ^ 0x0101) - inv(good)) % 0xFFFF


def test_frame_types_other_than_bytes():
    f, _ = make()
    frame = bytes(syn())
    assert f.process(bytearray(frame), now=NOW)[0] == "forward"
    assert f.process(memoryview(bytes(syn(40001))), now=NOW)[0] == "forward"
    with pytest.raises(TypeError):
        f.process(None)


# --- properties ---------------------------------------------------------------------------------
VERDICTS = {"forward", "pass", "drop"}


def checked_process(f, frame, partial=False):
    """process() once; the invariants that hold for any input."""
    before = reason_counts(f)
    verdict, reason, out = f.process(frame, now=NOW + 1, partial=partial)
    event(f"{verdict} {reason}")
    after = reason_counts(f)
    grew = {k: after[k] - before[k] for k in REASONS if after[k] != before[k]}
    assert verdict in VERDICTS
    if verdict == "forward" and reason is not None:
        # an ICMP error in its place (time exceeded, fragmentation needed) or an ICMP error
        # relayed: counted beside the frame; every checksum of the ICMP frame right
        assert reason in ("ttl_exceeded", "frag_needed", "icmp_relayed") and grew == {reason: 1}
        assert len(out) == 1
        assert_icmp_checksums(out[0][1])
    elif verdict == "forward":
        assert reason is None and grew == {}
        assert len(out) == 1 and len(out[0][1]) == len(frame)
    else:
        assert reason in REASONS and grew == {reason: 1} and out == []
    return verdict, out


def raw_checksums_ok(frame):
    ihl = (frame[14] & 0x0F) * 4
    tot = struct.unpack("!H", frame[16:18])[0]
    if checksum(frame[14:14 + ihl]) != 0:
        return False
    proto, l4 = frame[23], frame[14 + ihl:14 + tot]
    if proto == 17 and l4[6:8] == b"\0\0":
        return True
    return checksum(frame[26:34] + struct.pack("!BBH", 0, proto, len(l4)) + l4) == 0


FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BASES = [bytes(syn()), bytes(syn(ip_kw=dict(options=[V.IPOption_NOP()] * 4))),
         bytes(V.udp_in(5001, b"abcdefgh")[0]), bytes(V.padded(syn()))]
IPV4_ETH = eth()


ANY_BYTES = st.one_of(st.binary(max_size=20), st.binary(min_size=14, max_size=200))


@FUZZ
@given(ANY_BYTES)
def test_any_bytes(frame):
    f, _ = make()
    checked_process(f, frame)


@st.composite
def ipv4_frames(draw):
    """Structured IPv4 frames: plausible headers with a few fields off, L4 bytes that start with
    ports the director knows, checksums mostly right -- to reach past the header checks."""
    # mostly right, sometimes wrong: each field picks its usual value most of the time
    def usually(value, *others):
        return draw(st.sampled_from([value] * (3 * len(others)) + list(others)))
    ihl = usually(5, 6, 15, 4, 0)
    opts = draw(st.binary(min_size=max(0, ihl * 4 - 20), max_size=max(0, ihl * 4 - 20)))
    proto, src, sport, dst, dport = draw(st.sampled_from([
        (6, V.CLIENT, 41000, V.VIP, 80), (6, V.CLIENT, 40000, V.VIP, 80),
        (6, V.RIP, 8080, V.CLIENT, 40000), (17, V.CLIENT, 5001, V.VIP, 80),
        (17, V.CLIENT, 5000, V.VIP, 80), (17, V.RIP, 8080, V.CLIENT, 5000),
        (6, V.CLIENT, 41000, V.VIP, 443), (6, V.CLIENT, 41000, "198.18.0.2", 80),
        (1, V.CLIENT, 0, V.VIP, 0), (47, V.CLIENT, 0, V.VIP, 0)]))
    payload = draw(st.binary(max_size=40))
    if proto == 6:
        doff = usually(5, 4, 6, 15)
        flags = draw(st.sampled_from([0x02, 0x02, 0x10, 0x12, 0x01, 0x04, 0x18, 0x00, 0x06, 0x11]))
        l4 = struct.pack("!HHIIBBHHH", sport, dport, 1, 2, doff << 4, flags, 512, 0, 0) + payload
    elif proto == 17:
        ulen = 8 + len(payload) + usually(0, 1, -1, -8)
        l4 = struct.pack("!HHHH", sport, dport, max(0, ulen), 0) + payload
    else:
        l4 = struct.pack("!HH", sport, dport) + payload
    l4 = l4[:usually(len(l4), 4, 12)]
    frag = usually(0, 0x4000, 0x2000, 0x0001)
    ttl = usually(64, 1, 0, 255)
    tot = 20 + len(opts) + len(l4) + usually(0, -1, 1, -30)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, max(0, tot), 1, frag, ttl, proto, 0,
                      bytes(int(x) for x in src.split(".")), bytes(int(x) for x in dst.split("."))) + opts
    if draw(st.integers(0, 9)):
        hdr = hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]
    if proto in (6, 17) and len(l4) >= (18 if proto == 6 else 8) and draw(st.integers(0, 9)):
        off = 16 if proto == 6 else 6
        l4 = l4[:off] + b"\0\0" + l4[off + 2:]
        pseudo = hdr[12:20] + struct.pack("!BBH", 0, proto, len(l4))
        l4 = l4[:off] + struct.pack("!H", checksum(pseudo + l4)) + l4[off + 2:]
    return IPV4_ETH + hdr + l4 + draw(st.binary(max_size=8))


@FUZZ
@given(ANY_BYTES)
def test_any_bytes_with_an_established_director(frame):
    f, _ = make()
    established(f)
    checked_process(f, frame)


@FUZZ
@given(ipv4_frames(), st.booleans())
def test_structured_ipv4_frames(frame, partial):
    f, _ = make()
    established(f)
    checked_process(f, frame, partial)
    assert f.process(ESTABLISHED_FRAMES[0], now=NOW + 2)[0] == "forward"


mutation = st.tuples(
    st.sampled_from(range(len(BASES))),
    st.lists(st.tuples(st.integers(0, 79), st.integers(0, 255)), min_size=1, max_size=6),
    st.integers(-80, 40),
)


def mutate(base, edits, resize):
    b = bytearray(base)
    for i, v in edits:
        if i < len(b):
            b[i] = v
    if resize < 0:
        del b[max(0, len(b) + resize):]
    else:
        b += bytes(range(resize))
    return bytes(b)


@FUZZ
@given(mutation, st.booleans())
def test_mutated_new_flow_frames(m, partial):
    """A fresh director: whatever it forwards opened a new flow, which it accepts only with a
    correct IP checksum and (unless partial) a correct L4 checksum, so the frame it sends must
    have correct checksums too, and one TTL less."""
    k, edits, resize = m
    frame = mutate(BASES[k], edits, resize)
    f, _ = make()
    verdict, out = checked_process(f, frame, partial)
    if verdict == "forward":
        sent = out[0][1]
        assert sent[14 + 8] == frame[14 + 8] - 1
        assert sent[:12] == V.mac(V.RS_MAC) + V.mac(V.DIRECTOR_MAC)
        if not partial:
            assert raw_checksums_ok(sent)
        else:
            assert checksum(sent[14:14 + (sent[14] & 0x0F) * 4]) == 0


ESTABLISHED_FRAMES = [bytes(V.tcp_in(40000, "PA", b"data", seq=101, ack=501)[0]),
               bytes(V.tcp_out(40000, "A", seq=501, ack=105)[0]),
               bytes(V.udp_in(5000, b"query")[0]), bytes(V.udp_out(5000, b"answer")[0])]


@FUZZ
@given(st.sampled_from(range(len(ESTABLISHED_FRAMES))),
       st.lists(st.tuples(st.integers(0, 69), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(-70, 10), st.booleans())
def test_mutated_established_flow_frames(k, edits, resize, partial):
    f, _ = make()
    established(f)
    checked_process(f, mutate(ESTABLISHED_FRAMES[k], edits, resize), partial)
    # the table is still consistent: the flows still go through
    assert f.process(ESTABLISHED_FRAMES[0], now=NOW + 2)[0] == "forward"
    assert f.process(ESTABLISHED_FRAMES[3], now=NOW + 2)[0] == "forward"


# --- bad configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("ifslot", [8, 50])
def test_set_routes_rejects_an_interface_slot_out_of_range(ifslot):
    f, _ = make()
    with pytest.raises(ValueError):
        f.set_routes([("0.0.0.0", 0, V.ROUTER_IP, ifslot)])


def test_set_neighbour_rejects_an_interface_slot_out_of_range():
    f, _ = make()
    with pytest.raises(ValueError):
        f.set_neighbour(V.ROUTER_IP, 8, V.mac(V.ROUTER_MAC))


def test_the_director_answers_arp_for_a_vip_only():
    from scapy.layers.l2 import ARP
    f, _ = make()
    ask = Ether(src="02:00:00:00:00:77", dst="ff:ff:ff:ff:ff:ff") / ARP(
        op=1, hwsrc="02:00:00:00:00:77", psrc="198.18.0.77", pdst=V.VIP)
    verdict, reason, out = f.process(bytes(ask), now=V.NOW)
    assert verdict == "forward" and out[0][0] == V.IFSLOT
    got = Ether(out[0][1])
    assert (got.dst, got.src) == ("02:00:00:00:00:77", V.DIRECTOR_MAC)
    assert (got[ARP].op, got[ARP].hwsrc, got[ARP].psrc) == (2, V.DIRECTOR_MAC, V.VIP)
    assert (got[ARP].hwdst, got[ARP].pdst) == ("02:00:00:00:00:77", "198.18.0.77")
    assert f.counters()["arp_replies"] == 1
    other = ask.copy()
    other[ARP].pdst = "198.18.0.99"                     # not a VIP: the kernel's business
    assert f.process(bytes(other), now=V.NOW)[:2] == ("pass", "not_ipv4")
    reply = ask.copy()
    reply[ARP].op = 2                                   # not a request
    assert f.process(bytes(reply), now=V.NOW)[:2] == ("pass", "not_ipv4")
    assert f.process(bytes(ask)[:30], now=V.NOW)[:2] == ("pass", "not_ipv4")   # truncated
