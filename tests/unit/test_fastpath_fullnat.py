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


def ports_lent(f, n, at, first=40000):
    return [sent_from(f.process(syn(first + i), now=at))[1] for i in range(n)]


def sweeping(seconds=60.0, ports=(2000, 2599)):
    f = fx.provision(F.director(ports=ports))
    f.set_lport_sweep(seconds)
    return f


def test_a_restarted_director_goes_on_where_the_last_one_lent_ports():
    # 600 ports swept in 60 s: the line moves 10 ports a second. A director that lends 5 at
    # NOW and a new one (empty pools) that lends 5 a second later share no port.
    first = ports_lent(sweeping(), 5, NOW)
    assert first == list(range(first[0], first[0] + 5))
    assert first[0] == 2000 + int(NOW * 10) % 600             # the line, not the low end
    second = ports_lent(sweeping(), 5, NOW + 1, first=41000)
    assert second[0] == first[0] + 10 and not set(first) & set(second)
    assert ports_lent(sweeping(), 1, NOW + 60)[0] == first[0]   # one sweep later: the same place


def test_the_line_never_pulls_the_cursor_back():
    f = sweeping()
    burst = ports_lent(f, 30, NOW)                            # faster than the line
    after = ports_lent(f, 3, NOW + 1, first=41000)            # the line is 10 on: still behind
    assert after == [burst[-1] + 1, burst[-1] + 2, burst[-1] + 3]
    later = ports_lent(f, 1, NOW + 10, first=42000)           # 100 on: ahead, the cursor jumps
    assert later == [burst[0] + 100]


def test_the_line_wraps_at_the_end_of_the_range_and_skips_lent_ports():
    f = sweeping(ports=(2000, 2009), seconds=10.0)            # one port a second
    at_end = 1009.0                                           # the line at 2009 (1009 % 10)
    assert ports_lent(f, 3, at_end) == [2009, 2000, 2001]
    assert ports_lent(f, 2, at_end + 2, first=41000) == [2002, 2003]


def test_without_a_sweep_pools_start_at_the_low_end():
    f = fx.provision(F.director(ports=(2000, 2599)))
    assert ports_lent(f, 2, NOW) == [2000, 2001]
    with pytest.raises(ValueError, match="sweep"):
        f.set_lport_sweep(-1)


def test_enat_replies_bypass_the_director_and_ports_come_from_the_vip():
    f = fx.provision(E.DIRECTOR)
    fx.run(f, E.VECTORS)
    assert f.dest_counters(0)["outpkts"] == 0
    assert f.laddr_used(F.ENAT_POOL) == 1
