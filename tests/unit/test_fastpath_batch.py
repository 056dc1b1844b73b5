"""A block of frames through the core as the ring loop runs it (Forwarder.process_batch): new
flows are scheduled one after the other, each connection installed (and counted) before the
next decision, so least-connection schedulers and thresholds see the batch's own picks, as the
kernel's bind-after-each-decision does."""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lb.director.model import Flow, RealServer, Service
from tests.vectors import fixtures as fx
from tests.vectors import topology as T

# TCP VIP:80 over RIP (destination slot 0) and RIP2 (slot 1), NAT.
DIRECTOR = fx.DirectorSetup(
    interfaces=(T.INTERFACE,), routes=T.ROUTES, neighbours=T.BOTH_SERVERS,
    services=(fx.VirtualService(0, 6, T.VIP, 80),),
    dests=(fx.Destination(0, 0, T.RIP, 80), fx.Destination(1, 0, T.RIP2, 80)), max_conns=256)


def director(sched, weights, upper=0):
    """DIRECTOR scheduled by the control plane's `sched` over the two servers' `weights`."""
    fwd = fx.provision(DIRECTOR)
    svc = Service("tcp", T.VIP, 80, sched)
    for d, w in zip(DIRECTOR.dests, weights):
        svc.dests.append(RealServer(d.rip, d.port, weight=w, slot=d.slot, stats=fwd))
    svc.dests[0].u_threshold = upper
    svc.dests_changed()
    calls = []

    def schedule(flows):
        calls.append(len(flows))
        return [svc.schedule(Flow("tcp", "x", cport, T.VIP, vport)).slot
                for _, _, _, cport, _, vport in flows]
    fwd.scheduler_cb = schedule
    return fwd, calls


def syns(n):
    return [bytes(Ether(src=T.ROUTER_MAC, dst=T.DIRECTOR_MAC) / IP(src=T.CLIENT, dst=T.VIP)
                  / TCP(sport=3000 + i, dport=80, flags="S")) for i in range(n)]


def dests(out):
    return "".join("A" if Ether(f)[IP].dst == T.RIP else "B" for _, f in out)


def test_threshold_holds_within_one_batch():
    fwd, _ = director("wlc", [5, 1], upper=1)
    assert dests(fwd.process_batch(syns(2), now=T.NOW)) == "AB"


def test_wlc_spreads_a_batch_by_weight():
    # wlc, weights 2:1, all idle: A, then B (A 1/2 > B 0/1), then A (1/2 < 1/1) ...
    fwd, calls = director("wlc", [2, 1])
    assert dests(fwd.process_batch(syns(6), now=T.NOW)) == "ABAABA"
    assert sum(calls) == 6


def test_established_frames_of_a_batch_go_first_and_duplicates_share_a_decision():
    fwd, calls = director("rr", [1, 1])
    first = syns(1)
    fwd.process_batch(first, now=T.NOW)
    ack = bytes(Ether(src=T.ROUTER_MAC, dst=T.DIRECTOR_MAC) / IP(src=T.CLIENT, dst=T.VIP)
                / TCP(sport=3000, dport=80, flags="A"))
    new = syns(3)[1:]
    out = fwd.process_batch([new[0], ack, new[0], new[1]], now=T.NOW)
    assert [Ether(f)[TCP].sport for _, f in out] == [3000, 3001, 3001, 3002]
    assert sum(calls) == 3                    # the retransmitted SYN 3001 was not rescheduled
