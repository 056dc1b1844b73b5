"""The Director on the fake fast path: what a command does to the configuration, the fast path
and the ingress table, and that a refused command does nothing to any of them."""
import pytest

from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress
from lb.director.nft import NftError

VIP = "198.18.0.100"
LIMITS = {"services": 3, "dests": 4, "laddrs": 2, "ifaces": 8, "service_keys": 8}


@pytest.fixture
def d():
    director = Director(FakeFastPath(LIMITS), FakeIngress(), limits=LIMITS)
    director.reconcile()
    return director


def ok(director, **cmd):
    reply = director.apply(cmd)
    assert reply["rc"] == 0, reply["err"]
    return reply["out"]


def add_svc(d, port, **kw):
    return ok(d, op="add_service", proto="tcp", vip=VIP, port=port, scheduler="rr", **kw)


def add_rs(d, port, rip):
    return ok(d, op="add_server", proto="tcp", vip=VIP, port=port, rip=rip, fwd="masq")


def state(d):
    fp = d.fastpath
    return (ok(d, op="list"), dict(fp.services), dict(fp.dests), set(d.ingress.drops), d.applied)


def test_a_command_pushes_only_its_own_change(d):
    add_svc(d, 80)
    add_rs(d, 80, "198.18.0.11")
    before = len(d.fastpath.ops)
    add_svc(d, 81)
    assert d.fastpath.ops[before:] == [("set_service", 1), ("set_scheduler", 1)]
    ok(d, op="list")
    ok(d, op="zero")
    assert len(d.fastpath.ops) == before + 2 and d.ingress.updates == 3


def test_the_table_full_refusal_leaves_everything_as_it_was(d):
    for port in (80, 81, 82):
        add_svc(d, port)
    before = state(d)
    reply = d.apply({"op": "add_service", "proto": "tcp", "vip": VIP, "port": 83})
    assert reply["rc"] == 1
    assert reply["err"] == "lbadm: the fast path's service table is full (3 services)\n"
    assert state(d) == before and "83" not in ok(d, op="list")
    ok(d, op="del_service", proto="tcp", vip=VIP, port=81)  # later commands work
    add_svc(d, 84)
    assert d.applied.service_slot(("tcp", VIP, 84)) == 1    # the freed slot


def test_a_fast_path_refusal_is_undone_and_reported(d):
    add_svc(d, 80)
    before = state(d)
    d.fastpath.fail_at = len(d.fastpath.ops)                # the first push refuses
    reply = d.apply({"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80,
                     "rip": "198.18.0.11", "fwd": "masq"})
    assert reply == {"rc": 1, "out": "", "err": "lbd: the fast path refused the change: "
                     "fake fast path refuses set_dest\n"}
    assert state(d) == before


def test_an_nft_refusal_is_undone_and_reported(d):
    add_svc(d, 80)
    before = state(d)
    d.ingress.fail = NftError("nft failed: no such table")
    reply = d.apply({"op": "add_service", "proto": "udp", "vip": VIP, "port": 53})
    assert (reply["rc"], reply["err"]) == (1, "lbd: nft failed: no such table\n")
    assert state(d) == before


def test_a_bad_command_changes_nothing(d):
    add_svc(d, 80)
    before = state(d)
    reply = d.apply({"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80,
                     "rip": "198.18.0.11", "fwd": "route", "rport": 8080})
    assert reply["rc"] == 1 and "cannot map ports" in reply["err"]
    assert state(d) == before


def test_servers_are_bound_to_their_slots_and_scheduled_by_slot(d):
    add_svc(d, 80)
    add_rs(d, 80, "198.18.0.11")
    add_rs(d, 80, "198.18.0.12")
    svc = d.config.services[0]
    assert [rs.slot for rs in svc.dests] == [0, 1]
    flows = [(0, 6, 1, 1000 + i, 2, 80) for i in range(4)]
    assert d.schedule(flows) == [0, 1, 0, 1]                # rr over the two slots
    assert d.schedule([(2, 6, 1, 1, 2, 80)]) == [-1]        # no service in that slot
    assert d.fastpath.neighbours_wanted == ["198.18.0.11", "198.18.0.12"]


def test_a_refused_command_leaves_the_scheduler_where_it_was(d):
    add_svc(d, 80)
    for rip in ("198.18.0.11", "198.18.0.12", "198.18.0.13", "198.18.0.14"):
        add_rs(d, 80, rip)
    assert d.schedule([(0, 6, 1, 1, 2, 80)]) == [0]
    reply = d.apply({"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80,
                     "rip": "198.18.0.15", "fwd": "masq"})
    assert reply["rc"] == 1 and "real server table is full" in reply["err"]
    assert d.schedule([(0, 6, 1, 1, 2, 80)]) == [1]         # rr goes on from where it was


def test_a_deleted_servers_slot_waits_for_its_connections(d):
    add_svc(d, 80)
    add_rs(d, 80, "198.18.0.11")
    d.fastpath.load_counters(0, 2, 1)                       # three connections hold it
    ok(d, op="del_server", proto="tcp", vip=VIP, port=80, rip="198.18.0.11")
    add_rs(d, 80, "198.18.0.12")
    assert d.applied.dest_slot(((("tcp", VIP, 80)), "198.18.0.12", 80)) == 1
    d.fastpath.load_counters(0, 0, 0)
    d.release_idle()
    assert d.applied.retired == frozenset()
    add_rs(d, 80, "198.18.0.13")
    assert d.applied.dest_slot(((("tcp", VIP, 80)), "198.18.0.13", 80)) == 0


def test_get_laddr_reads_the_pools_the_plan_handed_out(d):
    add_svc(d, 80)
    ok(d, op="add_laddr", proto="tcp", vip=VIP, port=80, laddr="198.18.0.3")
    ok(d, op="add_server", proto="tcp", vip=VIP, port=80, rip="198.18.2.11", fwd="fullnat")
    d.fastpath.pools[0]["used"] = 7
    assert "198.18.0.3" in ok(d, op="get_laddr") and " 7" in ok(d, op="get_laddr")
    assert d.fastpath.services[0]["laddrs"] == [0]
    assert ("fullnat_tcp", ("198.18.2.11", "198.18.0.3", 80)) in d.ingress.drops


def test_timeouts_are_pushed_only_when_they_change(d):
    before = len(d.fastpath.ops)
    ok(d, op="set", tcp=0, tcpfin=0, udp=30)
    assert d.fastpath.ops[before:] == [("set_timeout", "UDP")]
    assert d.fastpath.timeouts["UDP"] == 30
