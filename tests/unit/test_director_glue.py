"""The daemon's glue without root: the Director (lb.director.director) on the fake fast path
(lb.director.fastpath.FakeFastPath / FakeIngress) for what each mode asks of nftables and for
the port pools, and on the real extension's Forwarder, wired as lbd wires it
(`fwd.scheduler_cb = director.schedule`), for slots, retired slots, the scheduler callback and
the listing read from the real counters."""
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress
from tests.vectors import fixtures as fx
from tests.vectors.topology import (BOTH_SERVERS, CLIENT, DIRECTOR_MAC, INTERFACE, RIP, RIP2,
                                    ROUTER_MAC, ROUTES, RS2_MAC, RS_MAC, VIP)

LIMITS = {"services": 3, "dests": 4, "laddrs": 2, "ifaces": 8, "service_keys": 8}
LIP1, LIP2, LIP3 = "198.18.0.3", "198.18.0.4", "198.18.0.5"
NOW = fx.NOW


def ok(director, **cmd):
    reply = director.apply(cmd)
    assert reply["rc"] == 0, reply["err"]
    return reply["out"]


def refused(director, **cmd):
    reply = director.apply(cmd)
    assert reply["rc"] != 0, cmd
    return reply["err"]


@pytest.fixture
def fake():
    d = Director(FakeFastPath(LIMITS), FakeIngress(), limits=LIMITS)
    d.reconcile()
    return d


def svc(d, port=80, proto="tcp", vip=VIP, **kw):
    ok(d, op="add_service", proto=proto, vip=vip, port=port, scheduler="rr", **kw)


def server(d, rip, fwd, port=80, rport=None, proto="tcp", vip=VIP, **kw):
    ok(d, op="add_server", proto=proto, vip=vip, port=port, rip=rip, rport=rport or port, fwd=fwd, **kw)


# --- what each mode asks of the ingress table (lb/modes, lb/director/nft.py) -------------------

@pytest.mark.parametrize("fwd, extra", [
    ("masq", {("masq_tcp", (RIP, 8080))}),                    # the replies are the fast path's
    ("route", set()),                                           # they go straight to the client
    ("tunnel", set()),
])
def test_each_mode_drops_what_the_fast_path_owns(fake, fwd, extra):
    svc(fake)
    server(fake, RIP, fwd, rport=8080 if fwd == "masq" else 80)
    assert fake.ingress.drops == {("svc_tcp", (VIP, 80))} | extra


def test_fullnat_drops_the_replies_to_every_local_address(fake):
    svc(fake)
    for lip in (LIP1, LIP2):
        ok(fake, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=lip)
    server(fake, RIP, "fullnat", rport=8080)
    assert fake.ingress.drops == {("svc_tcp", (VIP, 80)), ("fullnat_tcp", (RIP, LIP1, 8080)),
                                  ("fullnat_tcp", (RIP, LIP2, 8080))}
    ok(fake, op="del_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP1)
    assert ("fullnat_tcp", (RIP, LIP1, 8080)) not in fake.ingress.drops
    assert ("fullnat_tcp", (RIP, LIP2, 8080)) in fake.ingress.drops


def test_an_element_two_services_share_goes_with_the_last_of_them(fake):
    svc(fake, 80)
    svc(fake, 81)
    server(fake, RIP, "masq", port=80, rport=8080)
    server(fake, RIP, "masq", port=81, rport=8080)             # the same RIP:rport replies
    ok(fake, op="del_service", proto="tcp", vip=VIP, port=80)
    assert ("masq_tcp", (RIP, 8080)) in fake.ingress.drops       # service 81 still needs it
    ok(fake, op="del_service", proto="tcp", vip=VIP, port=81)
    assert fake.ingress.drops == set()


def test_editing_a_server_to_another_mode_swaps_its_elements(fake):
    svc(fake)
    server(fake, RIP, "masq")
    assert ("masq_tcp", (RIP, 80)) in fake.ingress.drops
    ok(fake, op="edit_server", proto="tcp", vip=VIP, port=80, rip=RIP, rport=80, fwd="route")
    assert fake.ingress.drops == {("svc_tcp", (VIP, 80))}
    assert fake.fastpath.dests[0]["fwd"] == 1                   # same slot, DR's code


# --- port pools: FULLNAT local addresses and ENAT's VIP ------------------------------------------

def test_enat_lends_ports_from_the_vips_own_pool(fake):
    svc(fake)
    server(fake, RIP, "enat")
    slot = fake.applied.pools[VIP]
    assert fake.fastpath.pools[slot]["addr"] == VIP
    assert fake.fastpath.services[0]["enat_laddr"] == slot and fake.fastpath.services[0]["laddrs"] == []
    ok(fake, op="del_server", proto="tcp", vip=VIP, port=80, rip=RIP, rport=80)
    fake.release_idle()
    assert VIP not in fake.applied.pools and fake.fastpath.services[0]["enat_laddr"] == -1


def test_a_pool_still_lending_ports_keeps_its_slot_and_counts_against_the_limit(fake):
    svc(fake)
    ok(fake, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP1)
    ok(fake, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP2)
    server(fake, RIP, "fullnat")
    fake.fastpath.pools[fake.applied.pools[LIP1]]["used"] = 3   # three connections hold ports
    ok(fake, op="del_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP1)
    fake.release_idle()
    assert fake.applied.pools == {LIP1: 0, LIP2: 1}             # LIP1 still lends
    err = refused(fake, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP3)
    assert "local address table is full (2 port pools" in err and "still lending" in err
    assert fake.applied.pools == {LIP1: 0, LIP2: 1}
    fake.fastpath.pools[0]["used"] = 0                          # the last one ended
    fake.release_idle()
    assert fake.applied.pools == {LIP2: 1}
    ok(fake, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP3)
    assert fake.applied.pools == {LIP2: 1, LIP3: 0}             # the freed slot, lowest first
    assert fake.fastpath.pools[0]["addr"] == LIP3
    assert fake.fastpath.services[0]["laddrs"] == [1, 0]        # in the service's own order


# --- on the real fast path, wired as lbd wires it ------------------------------------------------

@pytest.fixture
def real():
    """lb._forward.Forwarder with the vectors' interface, routes and neighbours; the Director
    owns everything else, and is the Forwarder's scheduler callback."""
    from lb._forward import Forwarder
    fwd = fx.install(Forwarder(max_conns=64), fx.DirectorSetup(
        interfaces=(INTERFACE,), routes=ROUTES, neighbours=BOTH_SERVERS))
    d = Director(fwd, FakeIngress())
    fwd.scheduler_cb = d.schedule                     # lb/director/daemon.py does the same
    d.reconcile()
    return d


def syn(cport, flags="S", seq=1):
    return bytes(Ether(src=ROUTER_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=VIP)
                 / TCP(sport=cport, dport=80, flags=flags, seq=seq, ack=1 if "A" in flags else 0))


def sent_to(result):
    verdict, reason, out = result
    assert (verdict, reason, len(out)) == ("forward", None, 1), result
    p = Ether(out[0][1])
    return p.dst, p[IP].dst, p[TCP].dport


def rows(d):
    """{rip: (ActiveConn, InActConn)} from the Director's own -L -n."""
    out = {}
    for line in ok(d, op="list").splitlines():
        if line.startswith("  -> ") and line.split()[1][0].isdigit():     # not the title
            cols = line.split()
            out[cols[1].split(":")[0]] = (int(cols[4]), int(cols[5]))
    return out


def test_new_flows_are_scheduled_by_the_director_and_counted_by_slot(real):
    svc(real)
    server(real, RIP, "masq", rport=8080)
    server(real, RIP2, "masq", rport=8080)
    fwd = real.fastpath
    got = [sent_to(fwd.process(syn(40000 + i), now=NOW)) for i in range(4)]
    assert got == [(RS_MAC, RIP, 8080), (RS2_MAC, RIP2, 8080)] * 2   # rr, through the callback
    assert rows(real) == {RIP: (0, 2), RIP2: (0, 2)}             # SYN_RECV: inactive
    slots = [rs.slot for rs in real.config.services[0].dests]
    assert slots == [0, 1] and [fwd.dest_counters(s)["conns"] for s in slots] == [2, 2]


def test_a_service_the_director_cannot_schedule_drops_the_flow_as_no_dest(real):
    svc(real)
    server(real, RIP, "masq", weight=0)                          # quiesced: rr takes none
    verdict, reason, out = real.fastpath.process(syn(40100), now=NOW)
    assert (verdict, reason, out) == ("drop", "no_dest", [])
    assert real.fastpath.counters()["no_dest"] == 1


def test_a_deleted_server_keeps_its_flows_and_its_slot_until_they_end(real):
    svc(real)
    server(real, RIP, "masq")
    fwd = real.fastpath
    assert sent_to(fwd.process(syn(40200), now=NOW))[1] == RIP
    ok(real, op="del_server", proto="tcp", vip=VIP, port=80, rip=RIP, rport=80)
    assert real.applied.retired == frozenset({0})
    server(real, RIP2, "masq")
    assert real.config.services[0].dests[0].slot == 1            # slot 0 is still held
    # The established flow goes on to the deleted server; a new one goes to the new server.
    assert sent_to(fwd.process(syn(40200, "A", seq=2), now=NOW + 1))[1] == RIP
    assert sent_to(fwd.process(syn(40201), now=NOW + 1))[1] == RIP2
    fwd.expire(NOW + 1000)                                       # every entry times out
    real.release_idle()
    assert real.applied.retired == frozenset()
    server(real, RIP, "masq")                                    # back, in the freed slot,
    assert real.config.services[0].dests[1].slot == 0            # with zeroed counters
    assert fwd.dest_counters(0)["conns"] == 0


def test_a_reload_keeps_the_schedulers_place(real):
    svc(real)
    server(real, RIP, "masq")
    server(real, RIP2, "masq")
    fwd = real.fastpath
    assert sent_to(fwd.process(syn(40300), now=NOW))[1] == RIP
    batch = {"op": "batch", "replace": True, "commands": [
        {"op": "add_service", "proto": "tcp", "vip": VIP, "port": 80, "scheduler": "rr"},
        {"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80, "rip": RIP, "rport": 80, "fwd": "masq"},
        {"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80, "rip": RIP2, "rport": 80, "fwd": "masq"},
    ]}
    assert real.apply(batch)["rc"] == 0
    assert sent_to(fwd.process(syn(40301), now=NOW))[1] == RIP2  # rr goes on, not from the top


def test_the_callback_answers_minus_one_for_a_slot_without_service(real):
    svc(real)
    server(real, RIP, "masq")
    assert real.schedule([(0, 6, CLIENT, 1, VIP, 80), (2, 6, CLIENT, 2, VIP, 80)]) == [0, -1]
    ok(real, op="del_service", proto="tcp", vip=VIP, port=80)
    assert real.schedule([(0, 6, CLIENT, 1, VIP, 80)]) == [-1]


def test_the_fake_refuses_what_the_real_fast_path_refuses():
    # The fake stands in for the Forwarder in most Director tests: same limits, same refusals.
    from lb._forward import LIMITS as REAL, Forwarder
    fake, fwd = FakeFastPath(), Forwarder(max_conns=16)
    for target in (fake, fwd):
        with pytest.raises(ValueError):
            target.set_dest(REAL["dests"], 0, RIP, 80, 0)
        with pytest.raises(ValueError):
            target.set_laddr(REAL["laddrs"], LIP1, 1025, 65535)
        with pytest.raises(ValueError):
            target.set_service(REAL["services"], 6, VIP, 80)
    assert fake.limits == dict(REAL)


# --- every operation of a plan pushed whole and undone exactly ----------------------------------

def tables(d):
    # A pool a refused plan set up stays set, unnamed and unused (reconcile.plan: "an unused
    # pool needs no undo"); the next plan that needs that slot sets it again. Only the pools
    # the applied state names are compared.
    fp = d.fastpath
    named = set(d.applied.pools.values())
    return (dict(fp.services), dict(fp.dests),
            {k: dict(v) for k, v in fp.pools.items() if k in named},
            dict(fp.timeouts), dict(getattr(fp, "scheds", {})), set(d.ingress.drops),
            ok(d, op="list"), list(fp.active), list(fp.inactive),
            {k: dict(v) for k, v in fp.counts.items() if any(v.values())})   # absent = zero


def loaded(lport_range=(2000, 2999)):
    d = Director(FakeFastPath(LIMITS), FakeIngress(), lport_range=lport_range, limits=LIMITS)
    d.reconcile()
    svc(d, 80, persistent=300, netmask="255.255.255.0")
    ok(d, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr=LIP1)
    server(d, RIP, "fullnat")
    server(d, RIP2, "masq")
    svc(d, 53, proto="udp", onepacket=True)
    server(d, RIP, "masq", port=53, proto="udp")
    ok(d, op="set", tcp=0, tcpfin=0, udp=30)
    return d


def test_every_field_of_a_service_reaches_the_fast_path():
    d = loaded()
    tcp, udp = d.fastpath.services[0], d.fastpath.services[1]
    assert (tcp["persistent"], tcp["netmask"], tcp["onepacket"], tcp["fwmark"]) == \
        (300, "255.255.255.0", False, 0)
    assert (udp["persistent"], udp["onepacket"], udp["proto"], udp["vport"]) == (0, True, 17, 53)
    assert d.fastpath.pools[0] == {"addr": LIP1, "low": 2000, "high": 2999, "used": 0}  # --lport-range
    assert d.fastpath.dests[0]["fwd"] == 3 and d.fastpath.dests[1]["fwd"] == 0


# One command that deletes, edits and adds at once: a replacing batch.
CHANGE = {"op": "batch", "replace": True, "commands": [
    {"op": "add_service", "proto": "tcp", "vip": VIP, "port": 80, "scheduler": "wrr", "persistent": 60},
    {"op": "add_laddr", "proto": "tcp", "vip": VIP, "port": 80, "laddr": LIP2},
    {"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80, "rip": RIP, "rport": 80, "fwd": "masq",
     "weight": 3},                                 # same slot, another forwarding code: an edit
    {"op": "add_service", "proto": "tcp", "vip": VIP, "port": 81, "scheduler": "rr"},
    {"op": "add_server", "proto": "tcp", "vip": VIP, "port": 81, "rip": RIP2, "rport": 81, "fwd": "route"},
    {"op": "set", "tcp": 0, "tcpfin": 0, "udp": 45},   # a timeout changed: undone to 30
]}


def test_a_refusal_at_any_step_of_a_plan_leaves_the_fast_path_exactly_as_it_was():
    pushed = loaded()
    start = len(pushed.fastpath.ops)
    assert pushed.apply(CHANGE)["rc"] == 0
    n = len(pushed.fastpath.ops) - start
    assert n >= 6                                  # deletions, edits, additions, programs
    for k in range(n):
        d = loaded()
        for slot in (0, 1, 2):                     # live connections: an undo must not reset them
            d.fastpath.load_counters(slot, 1, 2)
        before = tables(d)
        d.fastpath.fail_at = len(d.fastpath.ops) + k
        reply = d.apply(CHANGE)
        assert reply["rc"] == 1 and "the fast path refused" in reply["err"], (k, reply)
        assert tables(d) == before, f"refused at operation {k} of {n}: not undone exactly"


def test_an_nft_refusal_after_the_whole_plan_undoes_every_operation():
    # nft comes last: every fast-path operation of the plan, timeouts included, is undone.
    from lb.director.nft import NftError
    d = loaded()
    for slot in (0, 1, 2):
        d.fastpath.load_counters(slot, 1, 2)
    before = tables(d)
    d.ingress.fail = NftError("nft failed: refused")
    assert d.apply(CHANGE) == {"rc": 1, "out": "", "err": "lbd: nft failed: refused\n"}
    assert tables(d) == before and d.fastpath.timeouts["UDP"] == 30
