"""The NAT fast path (lb._forward.Forwarder.process): the vectors of tests/vectors/nat.py one
by one, then what is no single frame: the partial-checksum path, the TCP state machine and the
destination counters, expiry on a controlled clock, deleted destinations, and the reasons a new
flow is dropped on a director configured otherwise.
"""
import ipaddress
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from lb._forward import REASON_NAMES
from tests.vectors import fixtures as fx
from tests.vectors import nat as V

NOW = V.NOW


def ip_int(a):
    return int(ipaddress.IPv4Address(a))


def make(scheduler=None, **changes):
    """A Forwarder with nat.DIRECTOR, `changes` made to it (dataclasses.replace)."""
    return fx.provision(replace(V.DIRECTOR, **changes), scheduler)


def counting(pick):
    """The vectors' scheduler, answering `pick` for every flow."""
    return fx.TurnScheduler(V.DIRECTOR, pick=pick)


def reasons(f):
    c = f.counters()
    return {name: c[name] for name in REASON_NAMES[1:]}


def sent(pin, exp, description):
    """A vector for a frame sent on its own, outside the list."""
    return fx.forwarded(description, (pin, exp))


# --- the vectors ------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", V.VECTORS, ids=fx.description)
def test_vector(vector):
    """The vector, after replaying the ones before it (it may rely on their connections)."""
    fx.check_vector(V.DIRECTOR, V.VECTORS, vector)


def test_nat_rewrites_frames_in_place():
    """NAT changes no frame's length: every expected frame is as long as its input."""
    for v in V.VECTORS:
        if v["expected"] is not None:
            assert len(bytes(v["expected"])) == len(bytes(v["input"])), v["description"]


def test_the_checksum_edge_vectors_are_edge_cases():
    zero = [v for v in V.VECTORS
            if "computes to zero" in v["description"] or "is 0x0000" in v["description"]]
    assert len(zero) == 2
    for v in zero:
        exp = Ether(bytes(v["expected"]))
        assert (exp[UDP].chksum == 0xFFFF) if UDP in exp else (exp[TCP].chksum == 0)
    padded = [v for v in V.VECTORS if Padding in Ether(bytes(v["input"]))]
    assert len(padded) >= 4
    (t,) = [v for v in V.VECTORS if "past the UDP length" in v["description"]]
    got = Ether(bytes(t["input"]))
    assert got[IP].len - 20 == got[UDP].len + 3


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
    fx.check(f.process(frame, now=NOW, partial=True), sent(pin, exp, name))
    # The same frame without the partial flag has a wrong checksum and opens nothing.
    g = make()
    assert g.process(frame, now=NOW)[:2] == ("drop", "bad_l4_checksum")


def test_partial_checksum_established_both_directions():
    f = make()
    assert f.process(bytes(V.tcp_in(40000, "S", seq=1)[0]), now=NOW)[0] == "forward"
    for pin, exp in (V.tcp_out(40000, "SA", seq=9, ack=2),
                     V.tcp_in(40000, "PA", b"hello, partial", seq=2, ack=10),
                     V.tcp_out(40000, "PA", b"odd", seq=10, ack=16)):
        fx.check(f.process(bytes(pseudo_only(pin)), now=NOW, partial=True),
                 sent(pin, exp, "partial, established"))
    assert f.process(bytes(V.udp_in(6000, b"q")[0]), now=NOW)[0] == "forward"
    pin, exp = V.udp_out(6000, b"partial udp reply")
    fx.check(f.process(bytes(pseudo_only(pin)), now=NOW, partial=True),
             sent(pin, exp, "partial, established UDP out"))


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
    f = make()
    sched = f.scheduler_cb
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
    verdict, reason, out = f.process(frame, now=NOW)
    # A zero timeout is a timeout like any other: the first frame is forwarded and counted on
    # its destination (a TCP SYN moves on to SYN_RECV's own timeout; a UDP entry expires at once).
    assert (verdict, reason, len(out)) == ("forward", None, 1)
    assert not any(reasons(f).values())
    dests = [f.dest_counters(slot) for slot in (0, 1)]
    assert sorted((d["conns"], d["inpkts"]) for d in dests) == [(0, 0), (1, 1)]


# --- deleted destinations, and why a new flow is dropped -----------------------------------------
def test_established_connections_survive_clear_dest():
    f = make()
    sched = f.scheduler_cb
    for frame in (syn(40000), seg_out(40000, "SA"), seg_in(40000, "A")):
        assert f.process(frame, now=NOW)[0] == "forward"
    f.clear_dest(V.TCP_DEST)
    pin, exp = V.tcp_in(40000, "PA", b"still here", seq=101, ack=501)
    fx.check(f.process(bytes(pin), now=NOW + 1), sent(pin, exp, "in, after clear_dest"))
    pin, exp = V.tcp_out(40000, "PA", b"me too", seq=501, ack=111)
    fx.check(f.process(bytes(pin), now=NOW + 1), sent(pin, exp, "out, after clear_dest"))
    assert act(f) == (1, 0)
    # A new flow: the scheduler (stale) still returns the deleted slot.
    assert f.process(syn(40001), now=NOW + 1)[:3] == ("drop", "no_dest", [])
    assert reasons(f)["no_dest"] == 1
    assert len(f.conns(NOW + 1)) == 1
    assert sched.nflows == 2


@pytest.mark.parametrize("pick", [-1, None, 4095])
def test_scheduler_without_a_destination_drops_no_dest(pick):
    # -1/None: no server available; 4095: a slot in range that holds no destination.
    f = make(counting(pick))
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_dest", [])
    assert f.conns(NOW) == [] and f.counters()["conns"] == 0


@pytest.mark.parametrize("pick", [99999, -7, "rs1"])
def test_scheduler_naming_no_slot_drops_sched_error(pick):
    # Not a destination slot at all: the scheduler is broken, not merely out of servers.
    f = make(counting(pick))
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "sched_error", [])
    assert f.conns(NOW) == [] and f.counters()["sched_error"] == 1


def test_table_full():
    """A table full of connections that are not embryonic (UDP, ESTABLISHED TCP) refuses new
    flows; embryonic ones give way instead (tests/unit/test_flood_defence.py)."""
    f = make(max_conns=16)
    for port in range(8):
        assert f.process(syn(41000 + port), now=NOW)[:2] == ("forward", None)
        assert f.process(seg_in(41000 + port, "A"), now=NOW)[0] == "forward"
    for port in range(8):
        assert f.process(bytes(V.udp_in(41100 + port, b"x")[0]), now=NOW)[:2] == ("forward", None)
    assert f.process(syn(42000), now=NOW)[:3] == ("drop", "table_full", [])
    assert f.process(bytes(V.udp_in(42001, b"x")[0]), now=NOW)[:2] == ("drop", "table_full")
    assert reasons(f)["table_full"] == 2
    assert f.counters()["conns"] == 16
    # established flows still go through; freed slots are reused
    assert f.process(seg_in(41000, "A"), now=NOW)[0] == "forward"
    f.expire(NOW + 300)                                   # the UDP ones go, the ESTABLISHED stay
    assert f.counters()["conns"] == 8
    assert f.process(syn(42000), now=NOW + 300)[:2] == ("forward", None)


def test_no_neighbour_then_resolved():
    f = make(neighbours=((V.ROUTER_IP, V.ROUTER_MAC),))
    sched = f.scheduler_cb
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_neighbour", [])
    assert (V.RIP, V.IFSLOT, None) in f.neighbours()           # the control plane is told
    f.set_neighbour(V.RIP, V.IFSLOT, V.mac(V.RS_MAC))
    pin, exp = V.tcp_in(40000, "S", seq=100)
    fx.check(f.process(bytes(pin), now=NOW + 1), sent(pin, exp, "the SYN retransmitted"))
    assert sched.nflows == 1


def test_no_neighbour_toward_the_client():
    f = make(neighbours=((V.RIP, V.RS_MAC),))
    assert f.process(syn(40000), now=NOW)[0] == "forward"
    assert f.process(seg_out(40000, "SA"), now=NOW)[:3] == ("drop", "no_neighbour", [])


def test_no_route():
    f = make(routes=())
    assert f.process(syn(40000), now=NOW)[:3] == ("drop", "no_route", [])
    assert f.process(bytes(V.udp_in(5000, b"x")[0]), now=NOW)[:2] == ("drop", "no_route")
    assert f.conns(NOW) == [] and act(f) == (0, 0)
    assert reasons(f)["no_route"] == 2


def test_no_route_to_the_client_only():
    f = make(routes=(("198.18.0.0", 24, None, V.IFSLOT),))     # no default route
    assert f.process(syn(40000), now=NOW)[:2] == ("drop", "no_route")
    assert f.process(syn(40000, src=V.LOCAL_CLIENT), now=NOW)[:2] == ("forward", None)


def test_scheduler_called_once_per_new_flow():
    f = make()
    sched = f.scheduler_cb
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
    f = make(boom)
    assert f.process(syn(40000), now=NOW)[:2] == ("drop", "sched_error")
    assert "scheduler bug" in capsys.readouterr().err
