"""FULLNAT and ENAT in the core, with TOA: the vectors of tests/vectors/fullnat.py and enat.py
one by one, then what no single frame shows: the connection's local address and state, port
pools over two local addresses, a pool that runs out cleanly and recovers, and ENAT's counters."""
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.vectors import enat as E
from tests.vectors import fixtures as fx
from tests.vectors import fullnat as F
from tests.vectors.topology import NOW


@pytest.mark.parametrize("vector", F.VECTORS, ids=fx.description)
def test_fullnat_vector(vector):
    fx.check_vector(F.DIRECTOR, F.VECTORS, vector)


@pytest.mark.parametrize("vector", F.TOA_ON_ACK_VECTORS, ids=fx.description)
def test_fullnat_toa_on_ack_vector(vector):
    fx.check_vector(F.TOA_ON_ACK, F.TOA_ON_ACK_VECTORS, vector)


@pytest.mark.parametrize("vector", E.VECTORS, ids=fx.description)
def test_enat_vector(vector):
    fx.check_vector(E.DIRECTOR, E.VECTORS, vector)


def test_fullnat_connections_hold_their_local_address_and_track_the_handshake():
    f = fx.provision(F.DIRECTOR)
    fx.run(f, F.SYNS)
    conns = f.conns(now=NOW)
    assert {c["local"] for c in conns} == {(F.LIP1, 1025 + k) for k in range(len(F.SYNS))}
    assert {c["state"] for c in conns} == {"SYN_RECV"}
    fx.run(f, [F.REPLY, F.ESTABLISHED], start=len(F.SYNS))
    (conn,) = [c for c in f.conns(now=NOW) if c["client"][1] == F.A]
    assert conn["state"] == "ESTABLISHED"


def test_the_no_room_vectors_leave_no_room_for_toa():
    options_full, mtu_full = (Ether(bytes(v["input"])) for v in F.NO_ROOM)
    assert options_full[TCP].dataofs * 4 + 8 > 60
    assert mtu_full[IP].len == F.MTU


def syn(sport):
    return bytes(F.tcp_in(sport, 0, "S", F.MSS)[0])


def sent_from(result):
    got = Ether(result[2][0][1])
    return got[IP].src, got[TCP].sport


def test_many_clients_get_distinct_local_ports_over_two_lips():
    f = fx.provision(F.director(lips=(F.LIP1, F.LIP2)))
    seen = {sent_from(f.process(syn(20000 + i), now=NOW)) for i in range(20)}
    assert len(seen) == 20 and {s for s, _ in seen} == {F.LIP1, F.LIP2}


def test_a_tiny_port_pool_runs_out_cleanly_and_recovers():
    f = fx.provision(F.director(ports=(2000, 2002)))
    outs = [f.process(syn(30000 + i), now=NOW) for i in range(5)]
    assert [o[0] for o in outs] == ["forward"] * 3 + ["drop"] * 2
    assert outs[3][1] == "lport_exhausted" and f.counters()["lport_exhausted"] == 2
    assert f.laddr_used(0) == 3
    f.expire(NOW + 61)                                           # SYN_RECV: 60 s
    assert f.laddr_used(0) == 0
    assert f.process(syn(30009), now=NOW + 62)[0] == "forward"


def test_enat_replies_bypass_the_director_and_ports_come_from_the_vip():
    f = fx.provision(E.DIRECTOR)
    fx.run(f, E.VECTORS)
    assert f.dest_counters(0)["outpkts"] == 0
    assert f.laddr_used(F.ENAT_POOL) == 1
