"""Persistence templates (-p, -M), one-packet scheduling (-o), firewall-mark services and port
reuse in the core: the vectors of tests/vectors/persist.py one by one, then, on a clock the test
controls, what they leave behind: how often the scheduler was asked, the templates and the
counters; a template outlives its last connection by the persistence timeout."""
import pytest
from scapy.layers.inet import IP
from scapy.layers.l2 import Ether

from tests.vectors import fixtures as fx
from tests.vectors import persist as P
from tests.vectors.topology import CLIENT, NOW, RIP, RIP2


@pytest.mark.parametrize("vector", P.VECTORS, ids=fx.description)
def test_persist_vector(vector):
    fx.check_vector(P.DIRECTOR, P.VECTORS, vector)


def after(group):
    """A fresh director that has run the vectors of `group` (checked)."""
    f = fx.provision(P.DIRECTOR)
    fx.run(f, group)
    return f, f.scheduler_cb


def dest_ip(result):
    return Ether(result[2][0][1])[IP].dst


def syn(sport, port):
    return bytes(P.syn(sport, port, RIP)[0])


def test_without_persistence_each_connection_is_scheduled():
    _, sched = after(P.NOT_PERSISTENT)
    assert sched.nflows == 3


def test_persistence_pins_the_client_without_asking_the_scheduler():
    f, sched = after(P.PINNED_CLIENT)
    assert sched.nflows == 2                             # the first client, the other client
    templates = [c for c in f.conns(now=NOW) if c["template"]]
    assert {(t["client"], t["dest"][0], t["controls"]) for t in templates} == {
        ((CLIENT, 0), RIP, 10), ((P.OTHER_CLIENT, 0), RIP2, 1)}
    assert f.counters()["templates"] == 2 and f.counters()["conns"] == 11
    assert f.dest_counters(2 * P.PINNED)["inactive"] == 10   # templates are not counted as conns


def test_netmask_groups_clients():
    _, sched = after(P.GROUPED_CLIENTS)
    assert sched.nflows == 2


def test_template_outlives_its_connections_by_the_timeout():
    f = fx.provision(P.DIRECTOR)                         # SHORT_PERSIST: -p 100, VIP:84
    sched = f.scheduler_cb
    f.process(syn(1, 84), now=NOW)                       # SYN_RECV, 60 s
    f.expire(NOW + 61)                                   # the connection is gone ...
    assert [c["template"] for c in f.conns(now=NOW + 61)] == [True]
    assert dest_ip(f.process(syn(2, 84), now=NOW + 90)) == RIP and sched.nflows == 1  # ... pinned
    f.expire(NOW + 90 + 61)                              # connection 2 gone at 151
    f.expire(NOW + 90 + 99)                              # template re-armed at 90: lives to 190
    assert len(f.conns(now=NOW + 189)) == 1
    f.expire(NOW + 191)
    assert f.conns(now=NOW + 191) == []
    assert dest_ip(f.process(syn(3, 84), now=NOW + 200)) == RIP2 and sched.nflows == 2  # afresh


def test_template_with_live_connections_does_not_expire():
    f = fx.provision(P.DIRECTOR)                         # LONG_CONN: -p 10, VIP:85
    f.process(syn(1, 85), now=NOW)
    f.expire(NOW + 30)                       # the template's timeout passed, the conn's (60 s) not
    assert sorted(c["template"] for c in f.conns(now=NOW + 30)) == [False, True]


def test_deleted_server_releases_its_clients():
    f = fx.provision(P.DIRECTOR)                         # PINNED: -p 300, VIP:81
    f.process(syn(1, 81), now=NOW)
    f.clear_dest(2 * P.PINNED)
    assert dest_ip(f.process(syn(2, 81), now=NOW)) == RIP2   # the stale template is not used
    assert f.scheduler_cb.nflows == 2


def test_one_packet_scheduling_keeps_no_connection():
    f, sched = after(P.ONE_PACKET)
    assert sched.nflows == 4                              # same flow, scheduled each time
    assert f.conns(now=NOW) == []
    c0, c1 = f.dest_counters(2 * P.ONEPACKET), f.dest_counters(2 * P.ONEPACKET + 1)
    assert (c0["conns"], c0["inactive"], c0["inpkts"]) == (2, 0, 2)
    assert (c1["conns"], c1["inactive"]) == (2, 0)


def test_fwmark_service_persists_across_its_keys_and_goes_with_the_service():
    f, sched = after(P.FWMARK_PORTS)
    assert sched.nflows == 1
    (t,) = [x for x in f.conns(now=NOW) if x["template"]]
    assert t["virtual"] == ("0.0.0.7", 0) and t["controls"] == 3   # (proto 0, mark, port 0)
    f.clear_service(P.FWMARK)
    again = P.syn(9, 443, RIP, vip=P.VIP2)[0]
    assert f.process(bytes(again), now=NOW)[:2] == ("pass", "not_ours")


def test_a_syn_reusing_a_finished_connections_ports_is_scheduled_afresh():
    f = fx.provision(P.DIRECTOR)
    fx.run(f, P.PORT_REUSE[:3])
    assert f.conns(now=NOW)[0]["state"] == "CLOSE"
    fx.run(f, P.PORT_REUSE[3:], start=3)
    assert f.scheduler_cb.nflows == 2
    assert [c["state"] for c in f.conns(now=NOW)] == ["SYN_RECV"]
