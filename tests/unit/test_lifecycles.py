"""Lifecycles across deletes and adds (Forwarder.process): templates die with their server and
never bind a client to the server that reused the slot; expire_nodest_conn; a slot is held
while templates name it; pkttype; listings in slices."""
import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from tests.vectors import fixtures as fx
from tests.vectors.fixtures import Destination, DirectorSetup, VirtualService
from tests.vectors.topology import (BOTH_SERVERS, CLIENT, INTERFACE, RIP, RIP2, ROUTES, VIP,
                                    NOW, eth_in)

A_PORT, B_PORT = 81, 82
SETUP = DirectorSetup(interfaces=(INTERFACE,), routes=ROUTES, neighbours=BOTH_SERVERS,
                      services=(VirtualService(0, 6, VIP, A_PORT, persistent=300),
                                VirtualService(1, 6, VIP, B_PORT, persistent=300)),
                      dests=(Destination(0, 0, RIP, A_PORT),), max_conns=256)


class Recorder:
    def __init__(self, picks):
        self.picks, self.calls = picks, []

    def __call__(self, flows):
        self.calls += flows
        return [self.picks[svc] for svc, *_ in flows]


def syn(port, cport):
    return bytes(eth_in() / IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=port, flags="S"))


def seg(port, cport, flags="PA"):
    return bytes(eth_in() / IP(src=CLIENT, dst=VIP) / TCP(sport=cport, dport=port, flags=flags))


def dest_of(out):
    return Ether(out[0][1])[IP].dst


def test_a_template_never_binds_to_the_server_that_reused_its_slot():
    sched = Recorder({0: 0, 1: 0})
    f = fx.provision(SETUP, sched)
    assert dest_of(f.process(syn(A_PORT, 5000), now=NOW)[2]) == RIP       # template A -> slot 0
    assert f.dest_counters(0)["templates"] == 1
    f.expire(NOW + 61)                                # the connection goes, the template stays
    assert [c["template"] for c in f.conns(NOW + 61)] == [True]
    f.clear_dest(0)                                   # A's server deleted, its slot given to B
    f.set_dest(0, 1, RIP2, B_PORT, reset=True)
    sched.picks = {0: -1, 1: 0}
    before = len(sched.calls)
    verdict, reason, _ = f.process(syn(A_PORT, 5001), now=NOW + 62)
    assert (verdict, reason) == ("drop", "no_dest")   # the scheduler was asked: A has no server
    assert len(sched.calls) == before + 1
    assert f.conns(NOW + 62) == []                    # the dead template is gone
    assert f.dest_counters(0)["templates"] == 0


def test_a_deleted_servers_template_goes_once_its_connections_have():
    sched = Recorder({0: 0, 1: 0})
    f = fx.provision(SETUP, sched)
    f.process(syn(A_PORT, 5000), now=NOW)
    f.clear_dest(0)
    f.set_dest(1, 0, RIP2, A_PORT, reset=True)
    sched.picks = {0: 1}
    assert dest_of(f.process(syn(A_PORT, 5001), now=NOW + 1)[2]) == RIP2
    f.expire(NOW + 61)                                # both SYN_RECV connections gone
    f.expire(NOW + 400)
    assert f.conns(NOW + 400) == [] and f.counters()["templates"] == 0


@pytest.mark.parametrize("on", [False, True])
def test_expire_nodest_conn(on):
    sched = Recorder({0: 0, 1: 0})
    f = fx.provision(SETUP, sched)
    f.set_expire_nodest_conn(on)
    f.process(syn(A_PORT, 5000), now=NOW)
    f.clear_dest(0)
    verdict, reason, _ = f.process(seg(A_PORT, 5000), now=NOW + 1)
    if on:
        assert (verdict, reason) == ("drop", "dest_gone")
        assert not [c for c in f.conns(NOW + 1) if not c["template"]]
        assert f.dest_counters(0)["inactive"] == 0
    else:
        assert verdict == "forward"                   # IPVS's default: it keeps flowing
        assert len([c for c in f.conns(NOW + 1) if not c["template"]]) == 1


def test_expire_nodest_conn_also_when_the_slot_was_reused():
    sched = Recorder({0: 0, 1: 0})
    f = fx.provision(SETUP, sched)
    f.set_expire_nodest_conn(True)
    f.process(syn(A_PORT, 5000), now=NOW)
    f.clear_dest(0)
    f.set_dest(0, 1, RIP2, B_PORT, reset=True)
    assert f.process(seg(A_PORT, 5000), now=NOW + 1)[:2] == ("drop", "dest_gone")


def test_undo_of_a_delete_keeps_connections():
    """A refused change undoes clear_dest with set_dest of the same server (no reset): its
    connections are still its own."""
    f = fx.provision(SETUP, Recorder({0: 0}))
    f.set_expire_nodest_conn(True)
    f.process(syn(A_PORT, 5000), now=NOW)
    f.clear_dest(0)
    f.set_dest(0, 0, RIP, A_PORT)
    assert f.process(seg(A_PORT, 5000), now=NOW + 1)[0] == "forward"


@pytest.mark.parametrize("pkttype,verdict", [(0, "forward"), (1, "forward"), (3, "pass"), (4, "pass")])
def test_frames_for_another_host_or_our_own_are_ignored(pkttype, verdict):
    f = fx.provision(SETUP, Recorder({0: 0}))
    v, reason, out = f.process(syn(A_PORT, 5000), now=NOW, pkttype=pkttype)
    assert v == verdict
    if verdict == "pass":
        assert reason == "not_for_us" and out == [] and f.conns(NOW) == []


def test_listing_reads_the_whole_table_in_slices():
    """More connections than a slice (4096): all listed."""
    f = fx.provision(DirectorSetup(interfaces=(INTERFACE,), routes=ROUTES, neighbours=BOTH_SERVERS,
                                   services=(VirtualService(0, 6, VIP, 80),),
                                   dests=(Destination(0, 0, RIP, 80),), max_conns=10000),
                     Recorder({0: 0}))
    frames = [bytes(eth_in() / IP(src=f"198.18.{1 + i // 250}.{1 + i % 250}", dst=VIP)
                    / TCP(sport=1000 + i, dport=80, flags="S")) for i in range(5000)]
    for k in range(0, 5000, 250):
        f.process_batch(frames[k:k + 250], now=NOW)
    assert len(f.conns(NOW)) == 5000


def test_live_connections_follow_a_route_change():
    """A connection to RIP on link; then RIP is routed through a gateway (RIP2 here): the next
    packet of the live connection goes to the gateway's MAC, counted as rerouted."""
    from tests.vectors.topology import RS2_MAC, RS_MAC
    f = fx.provision(SETUP, Recorder({0: 0, 1: 0}))
    out = f.process(syn(A_PORT, 5000), now=NOW)[2]
    assert Ether(out[0][1]).dst == RS_MAC
    f.set_routes([(RIP, 32, RIP2, 0)] + list(ROUTES))
    out = f.process(seg(A_PORT, 5000), now=NOW + 1)[2]
    assert Ether(out[0][1]).dst == RS2_MAC and f.counters()["rerouted"] == 1
    out = f.process(seg(A_PORT, 5000), now=NOW + 2)[2]
    assert Ether(out[0][1]).dst == RS2_MAC and f.counters()["rerouted"] == 1
