"""Persistence templates (-p, -M) and one-packet scheduling (-o) in the core, on a clock the
test controls: a client stays on its server across connections without asking the scheduler;
the template outlives its last connection by the persistence timeout; -o schedules every
datagram and keeps no connection."""
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lb._forward import Forwarder
from tests.vectors import nat as V

NOW = V.NOW
RIP2, RS2_MAC = "198.18.0.12", "02:00:00:00:00:12"


class Picks:
    """A scheduler that hands out destinations 0, 1, 0, 1, ... and counts its calls."""

    def __init__(self):
        self.n = 0

    def __call__(self, flows):
        out = []
        for _ in flows:
            out.append(self.n % 2)
            self.n += 1
        return out


def forwarder(sched):
    """A Forwarder on the director's interface with its routes and both servers' MACs; no service."""
    f = Forwarder(max_conns=256, scheduler_cb=sched)
    f.set_interface(0, 5, V.mac(V.DIRECTOR_MAC), 1500)
    f.set_routes(V.ROUTES)
    for ip, m in V.NEIGHBOURS + [(RIP2, RS2_MAC)]:
        f.set_neighbour(ip, 0, V.mac(m))
    return f


def make(persistent=0, netmask="255.255.255.255", onepacket=False, proto=6):
    """Service 0 (VIP:80) over V.RIP and RIP2, scheduled by a fresh Picks."""
    sched = Picks()
    f = forwarder(sched)
    f.set_service(0, proto, V.VIP, 80, persistent=persistent, netmask=netmask, onepacket=onepacket)
    f.set_dest(0, 0, V.RIP, 80)
    f.set_dest(1, 0, RIP2, 80)
    f.set_timeout("SYN_RECV", 60)
    return f, sched


def syn(sport, src=V.CLIENT):
    return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=src, dst=V.VIP)
                 / TCP(sport=sport, dport=80, flags="S"))


def dgram(sport, src=V.CLIENT):
    return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=src, dst=V.VIP)
                 / UDP(sport=sport, dport=80) / Raw(b"x"))


def dest_ip(result):
    return Ether(result[2][0][1])[IP].dst


def test_without_persistence_each_connection_is_scheduled():
    f, sched = make()
    assert [dest_ip(f.process(syn(p), now=NOW)) for p in (1000, 1001, 1002)] == [V.RIP, RIP2, V.RIP]
    assert sched.n == 3


def test_persistence_pins_the_client_without_asking_the_scheduler():
    f, sched = make(persistent=300)
    firsts = [dest_ip(f.process(syn(p), now=NOW)) for p in range(2000, 2010)]
    assert firsts == [V.RIP] * 10 and sched.n == 1
    other = dest_ip(f.process(syn(3000, src="203.0.113.8"), now=NOW))
    assert other == RIP2 and sched.n == 2               # another client: scheduled
    templates = [c for c in f.conns(now=NOW) if c["template"]]
    assert {(t["client"], t["dest"][0], t["controls"]) for t in templates} == {
        ((V.CLIENT, 0), V.RIP, 10), (("203.0.113.8", 0), RIP2, 1)}
    assert f.counters()["templates"] == 2 and f.counters()["conns"] == 11
    c = f.dest_counters(0)
    assert c["inactive"] == 10                           # templates are not counted as conns


def test_netmask_groups_clients():
    f, sched = make(persistent=300, netmask="255.255.255.0")
    a = dest_ip(f.process(syn(1, src="203.0.113.7"), now=NOW))
    b = dest_ip(f.process(syn(2, src="203.0.113.99"), now=NOW))
    c = dest_ip(f.process(syn(3, src="203.0.114.1"), now=NOW))
    assert a == b == V.RIP and c == RIP2 and sched.n == 2


def test_template_outlives_its_connections_by_the_timeout():
    f, sched = make(persistent=100)
    f.process(syn(1), now=NOW)                           # SYN_RECV, 60 s
    f.expire(NOW + 61)                                   # the connection is gone ...
    assert [c["template"] for c in f.conns(now=NOW + 61)] == [True]
    assert dest_ip(f.process(syn(2), now=NOW + 90)) == V.RIP and sched.n == 1   # ... still pinned
    f.expire(NOW + 90 + 61)                              # connection 2 gone at 151
    f.expire(NOW + 90 + 99)                              # template re-armed at 90: lives to 190
    assert len(f.conns(now=NOW + 189)) == 1
    f.expire(NOW + 191)
    assert f.conns(now=NOW + 191) == []
    assert dest_ip(f.process(syn(3), now=NOW + 200)) == RIP2 and sched.n == 2   # scheduled afresh


def test_template_with_live_connections_does_not_expire():
    f, _ = make(persistent=10)
    f.process(syn(1), now=NOW)
    f.expire(NOW + 30)                                   # template timeout passed, conn (60 s) lives
    assert sorted(c["template"] for c in f.conns(now=NOW + 30)) == [False, True]


def test_deleted_server_releases_its_clients():
    f, sched = make(persistent=300)
    f.process(syn(1), now=NOW)
    f.clear_dest(0)
    assert dest_ip(f.process(syn(2), now=NOW)) == RIP2   # the stale template is not used
    assert sched.n == 2


def test_one_packet_scheduling_keeps_no_connection():
    f, sched = make(onepacket=True, proto=17)
    got = [dest_ip(f.process(dgram(5000), now=NOW)) for _ in range(4)]
    assert got == [V.RIP, RIP2, V.RIP, RIP2] and sched.n == 4   # same flow, scheduled each time
    assert f.conns(now=NOW) == []
    c0, c1 = f.dest_counters(0), f.dest_counters(1)
    assert (c0["conns"], c0["inactive"], c0["inpkts"]) == (2, 0, 2)
    assert (c1["conns"], c1["inactive"]) == (2, 0)


def test_fwmark_service_groups_ports_and_persists_across_them():
    sched = Picks()
    f = forwarder(sched)
    f.set_service(3, 0, None, 0, fwmark=7, persistent=300,
                  keys=[(6, V.VIP, 80), (6, V.VIP, 443), (17, V.VIP, 53)])
    f.set_dest(0, 3, V.RIP, 0)        # port 0: the packet's own port (DR/TUN keep it anyway)
    f.set_dest(1, 3, RIP2, 0)
    web = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP)
    a = f.process(bytes(web / TCP(sport=1, dport=80, flags="S")), now=NOW)
    b = f.process(bytes(web / TCP(sport=2, dport=443, flags="S")), now=NOW)
    c = f.process(bytes(web / UDP(sport=3, dport=53) / Raw(b"q")), now=NOW)
    assert dest_ip(a) == dest_ip(b) == dest_ip(c) == V.RIP and sched.n == 1
    assert Ether(b[2][0][1])[TCP].dport == 443        # NAT to port 0 keeps the packet's port
    (t,) = [x for x in f.conns(now=NOW) if x["template"]]
    assert t["virtual"] == ("0.0.0.7", 0) and t["controls"] == 3   # (proto 0, mark, port 0)
    other = web / TCP(sport=4, dport=8080, flags="S")                # not one of its keys
    assert f.process(bytes(other), now=NOW)[:2] == ("pass", "not_ours")
    f.clear_service(3)
    assert f.process(bytes(web / TCP(sport=9, dport=443, flags="S")), now=NOW)[:2] == ("pass", "not_ours")


def test_a_syn_reusing_a_finished_connections_ports_is_scheduled_afresh():
    # conn_reuse_mode: a SYN matching a TIME_WAIT/CLOSE connection starts a new one.
    f, sched = make()
    seg = lambda flags: bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP)
                              / TCP(sport=4444, dport=80, flags=flags))
    assert dest_ip(f.process(seg("S"), now=NOW)) == V.RIP
    f.process(seg("A"), now=NOW)
    f.process(seg("R"), now=NOW)                          # -> CLOSE
    assert f.conns(now=NOW)[0]["state"] == "CLOSE"
    assert dest_ip(f.process(seg("S"), now=NOW)) == RIP2 and sched.n == 2
    assert [c["state"] for c in f.conns(now=NOW)] == ["SYN_RECV"]
