"""A block of frames through the core as the ring loop runs it (Forwarder.process_batch): new
flows are scheduled one after the other, each connection installed (and counted) before the
next decision, so least-connection schedulers and thresholds see the batch's own picks, as the
kernel's bind-after-each-decision does."""
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lb._forward import Forwarder
from lb.director.model import Flow, RealServer, Service
from tests.vectors import nat as V

RIP2, RS2_MAC = "198.18.0.12", "02:00:00:00:00:12"


def director(sched, weights, upper=0):
    fwd = Forwarder(max_conns=256)
    fwd.set_interface(0, 5, V.mac(V.DIRECTOR_MAC), 1500)
    fwd.set_routes(V.ROUTES)
    for ip, m in V.NEIGHBOURS + [(RIP2, RS2_MAC)]:
        fwd.set_neighbour(ip, 0, V.mac(m))
    svc = Service("tcp", V.VIP, 80, sched)
    for slot, (rip, w) in enumerate(zip((V.RIP, RIP2), weights)):
        svc.dests.append(RealServer(rip, 80, weight=w, slot=slot, stats=fwd))
        fwd.set_dest(slot, 0, rip, 80)
    svc.dests[0].u_threshold = upper
    svc.dests_changed()
    fwd.set_service(0, 6, V.VIP, 80)
    calls = []

    def schedule(flows):
        calls.append(len(flows))
        return [svc.schedule(Flow("tcp", "x", cport, V.VIP, vport)).slot
                for _, _, _, cport, _, vport in flows]
    fwd.scheduler_cb = schedule
    return fwd, calls


def syns(n):
    return [bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP)
                  / TCP(sport=3000 + i, dport=80, flags="S")) for i in range(n)]


def dests(out):
    return "".join("A" if Ether(f)[IP].dst == V.RIP else "B" for _, f in out)


def test_threshold_holds_within_one_batch():
    fwd, _ = director("wlc", [5, 1], upper=1)
    assert dests(fwd.process_batch(syns(2), now=V.NOW)) == "AB"


def test_wlc_spreads_a_batch_by_weight():
    # wlc, weights 2:1, all idle: A, then B (A 1/2 > B 0/1), then A (1/2 < 1/1) ...
    fwd, calls = director("wlc", [2, 1])
    assert dests(fwd.process_batch(syns(6), now=V.NOW)) == "ABAABA"
    assert sum(calls) == 6


def test_established_frames_of_a_batch_go_first_and_duplicates_share_a_decision():
    fwd, calls = director("rr", [1, 1])
    first = syns(1)
    fwd.process_batch(first, now=V.NOW)
    ack = bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP)
                / TCP(sport=3000, dport=80, flags="A"))
    new = syns(3)[1:]
    out = fwd.process_batch([new[0], ack, new[0], new[1]], now=V.NOW)
    assert [Ether(f)[TCP].sport for _, f in out] == [3000, 3001, 3001, 3002]
    assert sum(calls) == 3                    # the retransmitted SYN 3001 was not rescheduled
