"""The reconcile planner (lb.director.reconcile): pure, so tested on configurations alone."""
import pytest

from lb.director import reconcile
from lb.director.config import Config
from lb.director.fastpath import FakeFastPath, FakeIngress
from lb.director.reconcile import Applied, LimitError

LIMITS = {"services": 4, "dests": 6, "laddrs": 2, "ifaces": 8, "service_keys": 6}
VIP = "198.18.0.100"


def svc(port, proto="tcp", **kw):
    return {"op": "add_service", "proto": proto, "vip": VIP, "port": port, **kw}


def server(port, rip, proto="tcp", fwd="masq", **kw):
    return {"op": "add_server", "proto": proto, "vip": VIP, "port": port, "rip": rip,
            "fwd": fwd, **kw}


def config(*cmds) -> Config:
    c = Config()
    for cmd in cmds:
        c.apply(cmd)
    return c


def step(applied, *cmds, cfg=None, **kw):
    cfg = cfg or config(*cmds)
    return reconcile.plan(applied, reconcile.desired(cfg), LIMITS, **kw)


def names(plan):
    return [op[0] for op in plan.ops]


def test_first_plan_pushes_each_service_server_and_timeout_once():
    p = step(Applied(), svc(80), server(80, "198.18.0.11"), server(80, "198.18.0.12"))
    assert names(p) == ["set_service", "set_dest", "set_dest", "set_scheduler", "set_timeout",
                        "set_timeout", "set_timeout"]
    assert [op[1] for op in p.ops[:3]] == [0, 0, 1]          # lowest slots first
    assert all(op[-1] is True for op in p.ops[1:3])          # new servers: counters reset
    assert p.fresh_dests == ["198.18.0.11", "198.18.0.12"]
    assert p.drops_add == {("svc_tcp", (VIP, 80)), ("masq_tcp", ("198.18.0.11", 80)),
                           ("masq_tcp", ("198.18.0.12", 80))}
    assert p.after.service_slot(("tcp", VIP, 80)) == 0
    sched_op = p.ops[3]                                      # after the servers it names
    assert sched_op[1] == 0 and sched_op[2].name == "wlc" and sched_op[3] == (0, 1)
    assert p.undo[3] == []                                   # a new service: its clear undoes it


def test_adding_one_service_plans_only_that_service():
    cmds = [svc(80), server(80, "198.18.0.11")]
    before = step(Applied(), *cmds).after
    p = step(before, *cmds, svc(81), server(81, "198.18.0.11"))
    assert names(p) == ["set_service", "set_dest", "set_scheduler"]
    assert p.ops[0][1] == 1 and p.ops[1][1] == 1 and p.ops[2][1] == 1
    assert p.drops_add == {("svc_tcp", (VIP, 81)), ("masq_tcp", ("198.18.0.11", 81))}
    assert p.drops_remove == frozenset()


def test_nothing_changed_plans_nothing_and_order_does_not_matter():
    a = step(Applied(), svc(80), svc(81), server(81, "198.18.0.11")).after
    p = step(a, svc(81), svc(80), server(81, "198.18.0.11"))
    assert p.ops == [] and not p.drops_add and not p.drops_remove
    assert p.after.services == a.services


def test_edit_keeps_the_slot_and_does_not_reset_counters():
    a = step(Applied(), svc(80), server(80, "198.18.0.11")).after
    cfg = config(svc(80), server(80, "198.18.0.11"))
    cfg.apply({**server(80, "198.18.0.11"), "op": "edit_server", "weight": 5})
    p = step(a, cfg=cfg)                                     # weight is the scheduler's only
    assert names(p) == ["set_scheduler"] and p.ops[0][2].servers[0].weight == 5
    assert p.undo[0][0][2].servers[0].weight == 1            # undo: the old program
    a = p.after
    cfg.apply({**svc(80), "op": "edit_service", "persistent": 300})
    p = step(a, cfg=cfg)
    assert names(p) == ["set_service"] and p.ops[0][1] == 0
    assert p.ops[0][2].persistent == 300
    assert p.undo[0][0][2].persistent == 0                   # undo restores the old spec


def test_deleted_server_is_retired_until_its_connections_end():
    a = step(Applied(), svc(80), server(80, "198.18.0.11"), server(80, "198.18.0.12")).after
    p = step(a, svc(80), server(80, "198.18.0.12"), holds=lambda s: True)
    assert names(p) == ["clear_dest", "set_scheduler"] and p.ops[0] == ("clear_dest", 0)
    assert p.ops[1][3] == (1,) and p.after.retired == {0}   # the program no longer names it
    assert p.drops_remove == {("masq_tcp", ("198.18.0.11", 80))}
    # A new server may not take the retired slot while it is held...
    p2 = step(p.after, svc(80), server(80, "198.18.0.12"), server(80, "198.18.0.13"),
              holds=lambda s: True)
    assert p2.ops[0][:2] == ("set_dest", 2)
    # ...and takes it once nothing holds it.
    p3 = step(p.after, svc(80), server(80, "198.18.0.12"), server(80, "198.18.0.13"))
    assert p3.ops[0][:2] == ("set_dest", 0) and p3.after.retired == frozenset()


def test_deleting_a_service_clears_it_and_its_servers():
    a = step(Applied(), svc(80), server(80, "198.18.0.11"), svc(81)).after
    p = step(a, svc(81))
    assert sorted(names(p)) == ["clear_dest", "clear_service"]
    assert p.after.service_slot(("tcp", VIP, 80)) is None
    assert p.after.service_slot(("tcp", VIP, 81)) == 1       # the other keeps its slot


@pytest.mark.parametrize("extra, limit", [
    ([svc(p) for p in range(80, 85)], "service table is full (4 services)"),
    ([svc(80)] + [server(80, f"198.18.0.{i}") for i in range(10, 17)], "real server table is full"),
])
def test_a_plan_over_a_limit_is_refused_whole(extra, limit):
    with pytest.raises(LimitError, match=limit.replace("(", r"\(").replace(")", r"\)")):
        step(Applied(), *extra)


def test_a_plan_that_fills_every_table_exactly_fits():
    # each limit is a count the table holds: reaching it is allowed, only passing it refused
    mark = {"op": "add_service", "fwmark": 1, "match": [["tcp", VIP, p] for p in range(1, 4)]}
    cmds = [mark, svc(80), svc(81), svc(82)] + [server(80, f"198.18.0.{i}") for i in range(10, 16)]
    p = step(Applied(), *cmds)                       # 4 services, 6 keys, 6 servers
    assert names(p).count("set_service") == 4 and names(p).count("set_dest") == 6


@pytest.mark.parametrize("cmds, refusal", [
    ([{"op": "add_service", "fwmark": 1, "match": [["tcp", VIP, p] for p in range(1, 8)]}],
     "the fast path's service key table is full (6 (protocol, VIP, port) keys)"),
    ([svc(80)] + [server(80, f"198.18.0.{i}") for i in range(10, 17)],
     "the fast path's real server table is full (6 servers, counting deleted ones whose "
     "connections still run)"),
    ([svc(80, vip=f"198.18.0.{104 + k}") for k in range(3)]
     + [server(80, "198.18.2.11", fwd="enat", vip=f"198.18.0.{104 + k}") for k in range(3)],
     "the fast path's local address table is full (2 port pools: FULLNAT local addresses and "
     "ENAT VIPs, counting ones still lending ports)"),
])
def test_a_refusal_says_which_table_and_what_counts_in_it(cmds, refusal):
    with pytest.raises(LimitError) as e:
        step(Applied(), *cmds)
    assert str(e.value) == refusal


def test_retired_slots_count_against_the_server_limit():
    six = [svc(80)] + [server(80, f"198.18.0.{i}") for i in range(10, 16)]
    a = step(Applied(), *six).after
    a = step(a, svc(80), holds=lambda s: True).after         # all six retired, still held
    with pytest.raises(LimitError, match="counting deleted ones"):
        step(a, svc(80), server(80, "198.18.0.20"), holds=lambda s: True)
    assert names(step(a, svc(80), server(80, "198.18.0.20"))) == ["set_dest", "set_scheduler"]


def test_fwmark_keys_count_against_the_key_limit():
    mark = {"op": "add_service", "fwmark": 1,
            "match": [["tcp", VIP, p] for p in range(1, 8)]}
    with pytest.raises(LimitError, match="service key table is full"):
        step(Applied(), mark)


def test_port_pools_shared_kept_while_lent_and_limited():
    laddr = {"op": "add_laddr", "proto": "tcp", "vip": VIP, "port": 80, "laddr": "198.18.0.3"}
    cmds = [svc(80), laddr, server(80, "198.18.2.11", fwd="fullnat")]
    p = step(Applied(), *cmds)
    assert p.ops[0] == ("set_laddr", 0, "198.18.0.3")
    assert p.ops[1][3] == ((0,), -1)                         # the service's pool slots
    assert ("fullnat_tcp", ("198.18.2.11", "198.18.0.3", 80)) in p.drops_add
    gone = step(p.after, svc(80), lent=lambda s: 3)
    assert gone.after.pools == {"198.18.0.3": 0}             # ports still lent: kept
    assert step(p.after, svc(80)).after.pools == {}
    enat_vip = "198.18.0.104"
    enat = [{**svc(80), "vip": enat_vip}, {**server(80, "198.18.2.11", fwd="enat"), "vip": enat_vip}]
    laddr4 = {**laddr, "laddr": "198.18.0.4"}
    with pytest.raises(LimitError, match="local address table is full"):
        step(gone.after, svc(80), laddr4, *enat, lent=lambda s: 3)   # .3 lent, .4, the VIP
    both = step(gone.after, svc(80), laddr4, *enat)                   # .3 back: it fits
    assert both.after.pools == {enat_vip: 0, "198.18.0.4": 1}      # lowest free slots
def test_execute_undoes_what_it_pushed_when_the_fast_path_refuses():
    fp, ingress = FakeFastPath(LIMITS), FakeIngress()
    first = step(Applied(), svc(80), server(80, "198.18.0.11"))
    reconcile.execute(first, fp, ingress)
    snapshot = (dict(fp.services), dict(fp.dests), dict(fp.timeouts), set(ingress.drops))
    p = step(first.after, svc(80), server(80, "198.18.0.12"), svc(81), server(81, "198.18.0.13"))
    fp.fail_at = len(fp.ops) + 2                             # the third operation refuses
    with pytest.raises(ValueError):
        reconcile.execute(p, fp, ingress)
    assert (fp.services, fp.dests, fp.timeouts, ingress.drops) == snapshot


def test_a_deleted_fullnat_service_is_undone_with_its_pool_slots():
    laddr = {"op": "add_laddr", "proto": "tcp", "vip": VIP, "port": 80, "laddr": "198.18.0.3"}
    a = step(Applied(), svc(80), laddr, server(80, "198.18.2.11", fwd="fullnat")).after
    p = step(a)                                              # everything goes
    clear = names(p).index("clear_service")
    assert p.undo[clear][0][:2] == ("set_service", 0) and p.undo[clear][0][3] == ((0,), -1)


def test_a_first_timeout_has_nothing_to_restore_and_a_changed_one_its_old_value():
    p = step(Applied(), svc(80))
    timeouts = [i for i, n in enumerate(names(p)) if n == "set_timeout"]
    assert timeouts and all(p.undo[i] == [] for i in timeouts)
    first = {p.ops[i][1]: p.ops[i][2] for i in timeouts}
    changed = step(p.after, {"op": "set", "tcp": 100, "tcpfin": 0, "udp": 0}, svc(80))
    (op,), (undo,) = changed.ops, changed.undo
    state = op[1]
    assert op == ("set_timeout", state, 100) and first[state] != 100
    assert undo == [("set_timeout", state, first[state])]


def test_a_fwmark_service_reaches_the_fast_path_with_its_mark_and_keys():
    fp, ingress = FakeFastPath(LIMITS), FakeIngress()
    mark = {"op": "add_service", "fwmark": 7, "match": [["tcp", VIP, 80], ["udp", VIP, 53]]}
    reconcile.execute(step(Applied(), mark), fp, ingress)
    assert fp.services[0]["fwmark"] == 7
    assert sorted(fp.services[0]["keys"]) == [(6, VIP, 80), (17, VIP, 53)]   # IPPROTO_TCP, _UDP


def test_execute_undoes_the_fast_path_when_nftables_refuses():
    fp, ingress = FakeFastPath(LIMITS), FakeIngress()
    reconcile.execute(first := step(Applied(), svc(80)), fp, ingress)
    snapshot = (dict(fp.services), dict(fp.dests), set(ingress.drops))
    ingress.fail = OSError("nft: no")
    with pytest.raises(OSError):
        reconcile.execute(step(first.after, svc(80), svc(81), server(81, "198.18.0.1")), fp, ingress)
    assert (fp.services, fp.dests, ingress.drops) == snapshot
