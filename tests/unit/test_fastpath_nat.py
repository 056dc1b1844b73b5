"""The NAT fast path (lb._forward.Forwarder.process) against packet vectors and scapy.

Every forwarded frame is dissected with scapy and compared field by field with the vector's
expected packet; its IP and L4 checksums are recomputed by scapy (chksum deleted, packet
rebuilt) and must equal the ones the fast path wrote. Then: the partial-checksum path, the
TCP state machine and the destination counters, expiry on a controlled clock, deleted
destinations, and the reasons a new flow is dropped.
"""
import ipaddress

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from lb._forward import REASON_NAMES, Forwarder
from lb.inet import checksum
from tests.vectors import nat as V
from tests.vectors.checks import assert_checksums, recomputed

NOW = V.NOW


def ip_int(a):
    return int(ipaddress.IPv4Address(a))


_DEFAULT = object()


class CountingScheduler:
    """V.scheduler, counting calls and flows; `pick` overrides the destination it returns."""

    def __init__(self, pick=_DEFAULT):
        self.calls = []
        self.pick = pick

    def __call__(self, flows):
        self.calls.append(list(flows))
        if self.pick is not _DEFAULT:
            return [self.pick] * len(flows)
        return V.scheduler(flows)

    @property
    def nflows(self):
        return sum(len(c) for c in self.calls)


def make(max_conns=1024, sched=None, **cfg):
    f = Forwarder(max_conns=max_conns, scheduler_cb=sched if sched is not None else V.scheduler)
    return V.configure(f, **cfg)


def reasons(f):
    c = f.counters()
    return {name: c[name] for name in REASON_NAMES[1:]}


# --- checking an output frame -------------------------------------------------------------------


def assert_same_fields(got, expected):
    """Every field of every layer of `expected` (dissected from its bytes) equals `got`'s."""
    exp = Ether(bytes(expected))
    layers, layer = [], exp
    while layer:                          # NoPayload ends the chain and is false
        layers.append(type(layer))
        layer = layer.payload
    for cls in layers:
        assert cls in got, f"output lacks {cls.__name__}: {got.summary()}"
        for fd in cls.fields_desc:
            g, e = getattr(got[cls], fd.name), getattr(exp[cls], fd.name)
            assert g == e, f"{cls.__name__}.{fd.name}: got {g!r}, expected {e!r}"


def check_output(result, vector):
    verdict, reason, out = result
    assert (verdict, reason) == (vector["verdict"], vector["reason"]), vector["description"]
    if vector["expected"] is None:
        assert out == []
        return
    assert len(out) == 1
    ifslot, frame = out[0]
    assert ifslot == V.IFSLOT
    assert len(frame) == len(bytes(vector["input"])), "the frame changes in place: same length"
    got = Ether(frame)
    assert_same_fields(got, vector["expected"])
    assert_checksums(frame)
    assert frame == bytes(vector["expected"])


# --- the vectors ------------------------------------------------------------------------------
def run_vectors(f, vectors):
    return [f.process(bytes(v["input"]), now=NOW + i * 0.001) for i, v in enumerate(vectors)]


@pytest.mark.parametrize("i", range(len(V.VECTORS)), ids=[v["description"][:70] for v in V.VECTORS])
def test_vector(i):
    """Vector i, after replaying the ones before it (it may rely on their connections)."""
    f = make()
    for k, result in enumerate(run_vectors(f, V.VECTORS[:i])):
        assert result[:2] == (V.VECTORS[k]["verdict"], V.VECTORS[k]["reason"]), V.VECTORS[k]["description"]
    check_output(f.process(bytes(V.VECTORS[i]["input"]), now=NOW + i * 0.001), V.VECTORS[i])


def test_vectors_in_one_run_count_every_frame():
    f = make()
    results = run_vectors(f, V.VECTORS)
    for result, v in zip(results, V.VECTORS):
        check_output(result, v)
    not_fwd = [v["reason"] for v in V.VECTORS if v["verdict"] != "forward"]
    r = reasons(f)
    assert sum(r.values()) == len(not_fwd)
    for name in set(not_fwd):
        assert r[name] == not_fwd.count(name)


def test_vectors_are_well_formed():
    for v in V.VECTORS:
        assert set(v) == {"description", "input", "expected", "verdict", "reason"}
        assert v["verdict"] in ("forward", "pass", "drop")
        assert (v["expected"] is None) == (v["verdict"] != "forward")
        assert (v["reason"] is None) == (v["verdict"] == "forward")
        assert v["reason"] is None or v["reason"] in REASON_NAMES
    # the checksum edge vectors really are edge cases
    zero = [v for v in V.VECTORS if "computes to zero" in v["description"] or "is 0x0000" in v["description"]]
    assert len(zero) == 2
    for v in zero:
        exp = Ether(bytes(v["expected"]))
        assert (exp[UDP].chksum == 0xFFFF) if UDP in exp else (exp[TCP].chksum == 0)
    padded = [v for v in V.VECTORS if Padding in Ether(bytes(v["input"]))]
    assert len(padded) >= 3


# --- the partial-checksum path (TP_STATUS_CSUMNOTREADY) ----------------------------------------------
def pseudo_only(pkt):
    """`pkt` as the kernel hands over a CHECKSUM_PARTIAL frame: the L4 checksum field holds the
    folded pseudo-header sum (not complemented), the data is not summed."""
    p = Ether(bytes(pkt))
    ip = p[IP]
    l4 = p[TCP] if TCP in p else p[UDP]
    l4len = ip.len - ip.ihl * 4
    s = 0
    for a in (ip.src, ip.dst):
        v = ip_int(a)
        s += (v >> 16) + (v & 0xFFFF)
    s += ip.proto + l4len
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    l4.chksum = s
    return Ether(bytes(p))


@pytest.mark.parametrize("name,pair", [
    ("tcp syn in", V.tcp_in(40000, "S", seq=1, options=V.SYN_OPTS)),
    ("tcp syn in, odd payload, ip options", V.tcp_in(40000, "S", b"odd", seq=1, ip_kw=dict(options=[V.IPOption_NOP()] * 4))),
    ("udp in", V.udp_in(5000, b"partial checksum payload!")),
    ("tcp syn in, short frame with non-zero padding", V.tcp_in(40000, "S", seq=1)),
])
def test_partial_checksum_new_flow(name, pair):
    pin, exp = pair
    if "padding" in name:                 # the padding must stay out of the full computation
        pin, exp = V.padded(pin, fill=b"\xa5"), V.padded(exp, fill=b"\xa5")
    frame = bytes(pseudo_only(pin))
    assert Ether(frame)[IP].payload.chksum != Ether(bytes(pin))[IP].payload.chksum
    f = make()
    verdict, reason, out = f.process(frame, now=NOW, partial=True)
    assert (verdict, reason) == ("forward", None)
    assert_same_fields(Ether(out[0][1]), exp)
    assert_checksums(out[0][1])
    # The same frame without the partial flag has a wrong checksum and opens nothing.
    g = make()
    assert g.process(frame, now=NOW)[:2] == ("drop", "bad_l4_checksum")


def test_partial_checksum_established_both_directions():
    f = make()
    assert f.process(bytes(V.tcp_in(40000, "S", seq=1)[0]), now=NOW)[0] == "forward"
    for pin, exp in (V.tcp_out(40000, "SA", seq=9, ack=2),
                     V.tcp_in(40000, "PA", b"hello, partial", seq=2, ack=10),
                     V.tcp_out(40000, "PA", b"odd", seq=10, ack=16)):
        verdict, reason, out = f.process(bytes(pseudo_only(pin)), now=NOW, partial=True)
        assert verdict == "forward", reason
        assert_same_fields(Ether(out[0][1]), exp)
        assert_checksums(out[0][1])
    assert f.process(bytes(V.udp_in(6000, b"q")[0]), now=NOW)[0] == "forward"
    pin, exp = V.udp_out(6000, b"partial udp reply")
    verdict, reason, out = f.process(bytes(pseudo_only(pin)), now=NOW, partial=True)
    assert verdict == "forward"
    assert_same_fields(Ether(out[0][1]), exp)
    assert_checksums(out[0][1])


# --- TCP state, destination counters, expiry ---------------------------------------------------------
def syn(cport, **kw):
    return bytes(V.tcp_in(cport, "S", seq=100, **kw)[0])


def seg_in(cport, flags, **kw):
    return bytes(V.tcp_in(cport, flags, seq=101, ack=501, **kw)[0])


def seg_out(cport, flags, **kw):
    return bytes(V.tcp_out(cport, flags, seq=500, ack=101, **kw)[0])


def state(f, now=NOW):
    (c,) = f.conns(now)
    return c["state"]


def act(f, slot=V.TCP_DEST):
    d = f.dest_counters(slot)
    return d["active"], d["inactive"]


def test_tcp_states_and_active_inactive_counters():
    f = make()
    assert f.process(syn(40000), now=NOW)[0] == "forward"
    assert state(f) == "SYN_RECV" and act(f) == (0, 1)
    assert f.process(seg_out(40000, "SA"), now=NOW)[0] == "forward"
    assert state(f) == "SYN_RECV" and act(f) == (0, 1)
    assert f.process(seg_in(40000, "A"), now=NOW)[0] == "forward"
    assert state(f) == "ESTABLISHED" and act(f) == (1, 0)
    assert f.process(seg_in(40000, "PA"), now=NOW)[0] == "forward"
    assert act(f) == (1, 0)
    assert f.process(seg_in(40000, "FA"), now=NOW)[0] == "forward"
    assert state(f) == "CLOSE_WAIT" and act(f) == (0, 1)
    assert f.process(seg_out(40000, "FA"), now=NOW)[0] == "forward"
    assert state(f) == "TIME_WAIT" and act(f) == (0, 1)
    d = f.dest_counters(V.TCP_DEST)
    assert (d["conns"], d["inpkts"], d["outpkts"]) == (1, 4, 2)
    assert d["inbytes"] == sum(len(x) - 14 for x in (syn(40000), seg_in(40000, "A"), seg_in(40000, "PA"), seg_in(40000, "FA")))
    c = f.counters()
    assert (c["new_conns"], c["conns"]) == (1, 1)


def test_rst_makes_an_established_connection_inactive():
    f = make()
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        assert f.process(frame, now=NOW)[0] == "forward"
    assert act(f) == (1, 0)
    assert f.process(seg_in(40000, "R"), now=NOW)[0] == "forward"
    assert state(f) == "CLOSE" and act(f) == (0, 1)


def test_rst_from_the_server_makes_it_inactive():
    f = make()
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        f.process(frame, now=NOW)
    assert f.process(seg_out(40000, "R"), now=NOW)[0] == "forward"
    assert state(f) == "CLOSE" and act(f) == (0, 1)


def test_udp_is_always_inactive():
    f = make()
    for i in range(3):
        assert f.process(bytes(V.udp_in(7000, b"q%d" % i)[0]), now=NOW)[0] == "forward"
        assert f.process(bytes(V.udp_out(7000, b"a%d" % i)[0]), now=NOW)[0] == "forward"
    assert state(f) == "UDP"
    assert act(f, V.UDP_DEST) == (0, 1)
    d = f.dest_counters(V.UDP_DEST)
    assert (d["conns"], d["inpkts"], d["outpkts"]) == (1, 3, 3)


def test_expiry_with_a_controlled_clock_frees_the_connection_and_its_counters():
    f = make()
    f.process(syn(40000), now=NOW)                         # SYN_RECV: 60 s
    f.expire(NOW + 59.9)
    assert len(f.conns(NOW + 59.9)) == 1
    assert f.conns(NOW + 30)[0]["expires_in"] == pytest.approx(30.0)
    f.expire(NOW + 60)
    assert f.conns(NOW + 60) == []
    c = f.counters()
    assert (c["conns"], c["expired_conns"]) == (0, 1)
    assert act(f) == (0, 0)
    assert f.dest_counters(V.TCP_DEST)["conns"] == 1      # cumulative, like ipvsadm's Conns


def test_expiry_of_an_established_connection_and_set_timeout():
    f = make()
    f.set_timeout("ESTABLISHED", 5)
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        f.process(frame, now=NOW)
    assert act(f) == (1, 0)
    f.process(seg_in(40000, "PA"), now=NOW + 4)           # refreshes the timer
    f.expire(NOW + 8.9)
    assert act(f) == (1, 0)
    f.expire(NOW + 9)
    assert f.conns(NOW + 9) == [] and act(f) == (0, 0)
    # the slot is really free: the flow's next segment has no connection
    assert f.process(seg_in(40000, "A"), now=NOW + 9)[:2] == ("drop", "tcp_no_conn")
    assert f.process(seg_out(40000, "A"), now=NOW + 9)[:2] == ("pass", "not_ours")


def test_an_expired_connection_is_not_used_even_before_the_sweep():
    sched = CountingScheduler()
    f = make(sched=sched)
    f.process(syn(40000), now=NOW)
    assert f.process(seg_in(40000, "A"), now=NOW + 60)[:2] == ("drop", "tcp_no_conn")
    assert f.conns(NOW + 60) == [] and act(f) == (0, 0)
    assert f.process(syn(40000), now=NOW + 61)[0] == "forward"   # a new connection, scheduled
    assert sched.nflows == 2


def test_udp_expiry_default_300s():
    f = make()
    f.process(bytes(V.udp_in(7000, b"q")[0]), now=NOW)
    f.expire(NOW + 299)
    assert act(f, V.UDP_DEST) == (0, 1)
    f.expire(NOW + 300)
    assert act(f, V.UDP_DEST) == (0, 0) and f.counters()["conns"] == 0


@pytest.mark.parametrize("timeout_state,frame", [("NONE", syn(40000)),
                                                 ("UDP", bytes(V.udp_in(7000, b"q")[0]))])
def test_zero_timeout_still_accounts_for_the_frame(timeout_state, frame):
    f = make()
    f.set_timeout(timeout_state, 0)
    before = sum(reasons(f).values())
    verdict, reason, out = f.process(frame, now=NOW)
    assert verdict == "forward" or (reason in REASON_NAMES[1:] and sum(reasons(f).values()) == before + 1)


# --- deleted destinations, and why a new flow is dropped -----------------------------------------
def test_established_connections_survive_clear_dest():
    sched = CountingScheduler()
    f = make(sched=sched)
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        assert f.process(frame, now=NOW)[0] == "forward"
    f.clear_dest(V.TCP_DEST)
    pin, exp = V.tcp_in(40000, "PA", b"still here", seq=101, ack=501)
    verdict, reason, out = f.process(bytes(pin), now=NOW + 1)
    assert (verdict, reason) == ("forward", None)
    assert_same_fields(Ether(out[0][1]), exp)
    pin, exp = V.tcp_out(40000, "PA", b"me too", seq=501, ack=111)
    verdict, reason, out = f.process(bytes(pin), now=NOW + 1)
    assert (verdict, reason) == ("forward", None)
    assert_same_fields(Ether(out[0][1]), exp)
    assert act(f) == (1, 0)
    # A new flow: the scheduler (stale) still returns the deleted slot.
    assert f.process(syn(40001), now=NOW + 1)[:3] == ("drop", "no_dest", [])
    assert reasons(f)["no_dest"] == 1
    assert len(f.conns(NOW + 1)) == 1
    assert sched.nflows == 2


@pytest.mark.parametrize("pick", [-1, None, 4095, 99999])
def test_scheduler_without_a_destination_drops_no_dest(pick):
    f = make(sched=CountingScheduler(pick=pick))
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_dest", [])
    assert f.conns(NOW) == [] and f.counters()["conns"] == 0


def test_table_full():
    f = make(max_conns=16)
    for port in range(16):
        assert f.process(syn(41000 + port), now=NOW)[:2] == ("forward", None)
    assert f.process(syn(42000), now=NOW)[:3] == ("drop", "table_full", [])
    assert f.process(bytes(V.udp_in(42001, b"x")[0]), now=NOW)[:2] == ("drop", "table_full")
    assert reasons(f)["table_full"] == 2
    assert f.counters()["conns"] == 16
    # established flows still go through; freed slots are reused
    assert f.process(seg_in(41000, "A"), now=NOW)[0] == "forward"
    f.expire(NOW + 60)                                    # SYN_RECV ones go, the ESTABLISHED stays
    assert f.counters()["conns"] == 1
    assert f.process(syn(42000), now=NOW + 60)[:2] == ("forward", None)


def test_no_neighbour_then_resolved():
    sched = CountingScheduler()
    f = make(sched=sched, neighbours=False)
    f.set_neighbour(V.ROUTER_IP, V.IFSLOT, V.mac(V.ROUTER_MAC))
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_neighbour", [])
    assert (V.RIP, V.IFSLOT, None) in f.neighbours()           # the control plane is told
    f.set_neighbour(V.RIP, V.IFSLOT, V.mac(V.RS_MAC))
    pin, exp = V.tcp_in(40000, "S", seq=100)
    verdict, reason, out = f.process(bytes(pin), now=NOW + 1)  # the SYN retransmitted
    assert (verdict, reason) == ("forward", None)
    assert_same_fields(Ether(out[0][1]), exp)
    assert sched.nflows == 1


def test_no_neighbour_toward_the_client():
    f = make(neighbours=False)
    f.set_neighbour(V.RIP, V.IFSLOT, V.mac(V.RS_MAC))
    assert f.process(syn(40000), now=NOW)[0] == "forward"
    assert f.process(seg_out(40000, "SA"), now=NOW)[:3] == ("drop", "no_neighbour", [])


def test_no_route():
    f = make(routes=False)
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_route", [])
    assert f.process(bytes(V.udp_in(5000, b"x")[0]), now=NOW)[:2] == ("drop", "no_route")
    assert f.conns(NOW) == [] and act(f) == (0, 0)
    assert reasons(f)["no_route"] == 2


def test_no_route_to_the_client_only():
    f = make(routes=False)
    f.set_routes([("198.18.0.0", 24, None, V.IFSLOT)])         # no default route
    assert f.process(syn(40000), now=NOW)[:2] == ("drop", "no_route")
    assert f.process(syn(40000, src=V.LOCAL_CLIENT), now=NOW)[:2] == ("forward", None)


def test_too_big():
    f = make()
    f.set_interface(V.IFSLOT, V.IFINDEX, V.mac(V.DIRECTOR_MAC), 576)
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        assert f.process(frame, now=NOW)[0] == "forward"
    big = bytes(V.tcp_in(40000, "PA", b"x" * 537, seq=101, ack=501)[0])    # IP length 577
    assert f.process(big, now=NOW)[:3] == ("drop", "too_big", [])
    ok = bytes(V.tcp_in(40000, "PA", b"x" * 536, seq=101, ack=501)[0])     # IP length 576
    assert f.process(ok, now=NOW)[0] == "forward"
    assert f.process(syn(40001, options=[("MSS", 1460)]), now=NOW)[0] == "forward"
    assert f.process(bytes(V.tcp_in(40002, "S", b"y" * 600, seq=1)[0]), now=NOW)[:2] == ("drop", "too_big")
    assert reasons(f)["too_big"] == 2


def test_scheduler_called_once_per_new_flow():
    sched = CountingScheduler()
    f = make(sched=sched)
    f.process(syn(40000), now=NOW)
    assert sched.calls == [[(V.TCP_SVC, 6, ip_int(V.CLIENT), 40000, ip_int(V.VIP), V.VPORT)]]
    for frame in (seg_out(40000, "SA"), seg_in(40000, "A"), seg_in(40000, "PA"), syn(40000),
                  seg_out(40000, "PA"), seg_in(40000, "FA")):
        assert f.process(frame, now=NOW)[0] == "forward"
    assert len(sched.calls) == 1
    f.process(bytes(V.udp_in(5000, b"q")[0]), now=NOW)
    f.process(bytes(V.udp_in(5000, b"q")[0]), now=NOW)
    f.process(bytes(V.udp_out(5000, b"a")[0]), now=NOW)
    assert len(sched.calls) == 2
    assert sched.calls[1] == [(V.UDP_SVC, 17, ip_int(V.CLIENT), 5000, ip_int(V.VIP), V.VPORT)]
    f.process(syn(40001), now=NOW)
    assert len(sched.calls) == 3
    # dropped before a connection exists: no scheduling
    f.process(seg_in(40002, "A"), now=NOW)
    bad = Ether(syn(40003))
    bad[TCP].chksum ^= 0xFFFF
    f.process(bytes(bad), now=NOW)
    assert len(sched.calls) == 3


def test_scheduler_exception_drops_the_flow_without_raising(capsys):
    def boom(flows):
        raise RuntimeError("scheduler bug")
    f = make(sched=boom)
    assert f.process(syn(40000), now=NOW)[:2] == ("drop", "no_dest")
    assert "scheduler bug" in capsys.readouterr().err


def test_udp_shorter_than_its_ip_payload_is_checked_over_the_udp_length():
    # RFC 768: the UDP length rules; bytes past it (as some stacks pad) are not checksummed.
    pin, _ = V.udp_in(7100, b"hello")
    good = bytes(pin)                                 # UDP checksum correct over 13 bytes
    ip_at = 14
    ihl = (good[ip_at] & 0x0F) * 4
    frame = bytearray(good + b"\xAA\xBB\xCC")         # three bytes inside IP, outside UDP
    total = int.from_bytes(frame[ip_at + 2:ip_at + 4], "big") + 3
    frame[ip_at + 2:ip_at + 4] = total.to_bytes(2, "big")
    frame[ip_at + 10:ip_at + 12] = b"\0\0"
    frame[ip_at + 10:ip_at + 12] = checksum(frame[ip_at:ip_at + ihl]).to_bytes(2, "big")
    f = make()
    verdict, reason, out = f.process(bytes(frame), now=NOW)
    assert (verdict, reason) == ("forward", None)
    got = Ether(out[0][1])
    assert got[UDP].len == 13 and bytes(got[UDP].payload)[:5] == b"hello"

