"""DR and TUN in the core (Forwarder.process): the vectors of tests/vectors/dr.py and tun.py one
by one, then what no single frame shows: DR's input-only connection state and counters, TUN
without a neighbour, and on-link clients against the neighbour table."""
import functools
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.vectors import dr as D
from tests.vectors import fixtures as fx
from tests.vectors import tun as T
from tests.vectors.patch import with_sources
from tests.vectors.topology import DIRECTOR_MAC, NOW, RIP, RS_MAC, VIP


@pytest.mark.parametrize("vector", D.VECTORS, ids=fx.description)
def test_dr_vector(vector):
    fx.check_vector(D.DIRECTOR, D.VECTORS, vector)


@pytest.mark.parametrize("vector", T.VECTORS, ids=fx.description)
def test_tun_vector(vector):
    fx.check_vector(T.DIRECTOR, T.VECTORS, vector)


def test_dr_connection_counts_only_the_input_direction():
    f = fx.provision(D.DIRECTOR)
    fx.run(f, D.HANDSHAKE)
    (conn,) = f.conns(now=NOW)
    assert conn["state"] == "ESTABLISHED"                 # input-only table: SYN, then ACK
    c = f.dest_counters(0)
    assert (c["active"], c["inpkts"], c["outpkts"]) == (1, 3, 0)
    fx.run(f, D.CLOSE, start=len(D.HANDSHAKE))            # the reply passed, the client's FIN
    assert f.dest_counters(0)["outpkts"] == 0
    assert f.conns(now=NOW)[0]["state"] == "FIN_WAIT"    # input-only: ES + FIN -> FIN_WAIT


def test_tun_without_neighbour_is_counted():
    f = fx.provision(replace(T.DIRECTOR, neighbours=()))
    assert f.process(bytes(T.VECTORS[0]["input"]), now=NOW)[:2] == ("drop", "no_neighbour")


def on_link(mode):
    """One service VIP:80 -> RIP:80 in `mode`, every client on link (198.18.0.0/16)."""
    return replace(D.DIRECTOR, routes=(("198.18.0.0", 16, None, 0),), neighbours=((RIP, RS_MAC),),
                   services=D.DIRECTOR.services[:1],
                   dests=(fx.Destination(0, 0, RIP, 80, mode),), max_conns=8192)


def client_addr(i):
    return f"198.18.{100 + i // 250}.{1 + i % 250}"


def client_syn(i):
    """Client i's SYN as scapy builds it (the reference for client_syns)."""
    return bytes(Ether(src="02:00:00:00:01:01", dst=DIRECTOR_MAC) / IP(src=client_addr(i), dst=VIP)
                 / TCP(sport=1000 + i % 50000, dport=80, flags="S"))


@functools.cache
def client_syns(n: int) -> tuple:
    """client_syn(0..n-1), patched from one scapy template (tests/vectors/patch.py)."""
    return tuple(with_sources(client_syn(0), ((client_addr(i), 1000 + i % 50000) for i in range(n))))


def test_the_patched_syns_are_the_ones_scapy_builds():
    syns = client_syns(5000)
    for i in (0, 1, 249, 250, 777, 4999):
        assert syns[i] == client_syn(i), i


def test_on_link_clients_do_not_exhaust_the_neighbour_table():
    # NAT needs the client's MAC (replies), so each on-link client has a neighbour entry; it
    # goes with the client's last connection, so 5000 clients over time fit a 4096 table.
    f = fx.provision(on_link("masq"))
    for i, syn in enumerate(client_syns(5000)):
        assert f.process(syn, now=NOW)[0] == "forward", i
        if i % 1000 == 999:
            f.expire(NOW + 61)                              # their SYN_RECV entries expire
    assert f.counters()["no_route"] == 0


def test_dr_keeps_no_neighbour_entry_per_client():
    f = fx.provision(on_link("route"))
    for i, syn in enumerate(client_syns(5000)):             # all at once, none expired
        assert f.process(syn, now=NOW)[0] == "forward", i
    assert [n[0] for n in f.neighbours()] == [RIP]
