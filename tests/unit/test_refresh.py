"""lbd's refresh thread (lb.director.refresh) on a fake clock: with nothing announced it reads
nothing but the slow resync; what netlink announces for our interfaces is read again at once,
and only that; wanted next hops are resolved, and asked again while the kernel has no entry."""
import threading
from types import SimpleNamespace

from lb.director import refresh
from lb.director.refresh import EVERYTHING, Refresher, relevant
from lb.netwatch import LinkWatch

MAC_A, MAC_B = b"\x02\0\0\0\0\x0a", b"\x02\0\0\0\0\x0b"


class FakeNetlink:
    def __init__(self):
        self.route_table = [("0.0.0.0", 0, "198.18.0.1", 0)]
        self.kernel_neighbours = {("198.18.0.1", 7): MAC_A}
        self.states = {"eth0": (7, True)}
        self.resolved = []

    def routes(self, ifslots):
        return list(self.route_table)

    def neighbours(self):
        return dict(self.kernel_neighbours)

    def link_state(self, name):
        return self.states.get(name)

    def resolve(self, ip, ifindex):
        self.resolved.append((ip, ifindex))


class FakeForwarder:
    def __init__(self):
        self.neigh = {}            # ip -> mac or None
        self.routes_set = []
        self.gone = []

    def set_routes(self, routes):
        self.routes_set.append(routes)

    def want_neighbour(self, ip):
        self.neigh.setdefault(ip, None)

    def neighbours(self):
        return [(ip, 0, mac) for ip, mac in self.neigh.items()]

    def set_neighbour(self, ip, slot, mac, pin=True):
        self.neigh[ip] = mac

    def iface_gone(self, slot):
        self.gone.append(slot)


class Clock:
    """The loop's time and its wait: events [(when, [(event, family, table, ifindex)] or None)]
    arrive at their time; the run ends at `end`."""

    def __init__(self, lbd, events=(), end=30.0):
        self.t, self.lbd, self.events, self.end = 0.0, lbd, sorted(events, key=lambda e: e[0]), end
        self.pending = None

    def __call__(self):
        return self.t

    def wait(self, timeout):
        if self.events and self.events[0][0] <= self.t + timeout:
            when, self.pending = self.events.pop(0)
            self.t = max(self.t, when)
            return True
        self.t += timeout
        if self.t >= self.end:
            self.lbd.stopping.set()
        return False

    def read(self):
        return self.pending


def make(events=(), end=30.0):
    lbd = SimpleNamespace(stopping=threading.Event(), fwd=FakeForwarder(), ifnames=["eth0"],
                          ifaces=[SimpleNamespace(index=7)], ifslots={7: 0}, failed=None,
                          links=LinkWatch(ifnames=["eth0"], indexes=[7]))
    lbd.released = 0
    lbd.director = SimpleNamespace(release_idle=lambda: setattr(lbd, "released", lbd.released + 1))
    lbd.stops = 0
    lbd.on_failure = lambda: setattr(lbd, "stops", lbd.stops + 1)
    clock = Clock(lbd, events, end)
    nl = FakeNetlink()
    r = Refresher(lbd, nl, clock, clock=clock, wait=clock.wait)
    return r, lbd, nl, clock


def test_relevant_takes_our_interfaces_and_the_main_table_only():
    ours = {7}
    assert relevant([("RTM_NEWNEIGH", 2, None, 7)], ours) == {"neighbours"}
    assert relevant([("RTM_NEWNEIGH", 2, None, 8)], ours) == set()
    assert relevant([("RTM_NEWNEIGH", 10, None, 7)], ours) == set()        # IPv6
    assert relevant([("RTM_DELROUTE", 2, 254, 7)], ours) == {"routes"}
    assert relevant([("RTM_NEWROUTE", 2, 254, None)], ours) == {"routes"}  # multipath
    assert relevant([("RTM_NEWROUTE", 2, 255, 7)], ours) == set()          # local table
    assert relevant([("RTM_NEWROUTE", 2, 254, 9)], ours) == set()
    assert relevant([("RTM_NEWLINK", None, None, 9)], ours) == set()
    assert relevant([("RTM_DELLINK", None, None, 7)], ours) == EVERYTHING
    assert relevant([("RTM_NEWNEIGH", 2, None, 7), ("RTM_NEWROUTE", 2, 254, 7)],
                    ours) == {"neighbours", "routes"}


def test_quiet_kernel_means_one_read_and_the_resync_only():
    r, lbd, nl, clock = make(end=25.0)
    r.run()
    # t = 0, 10, 20: the first read and two resyncs; nothing else was dumped
    assert r.reads == {"links": 3, "routes": 3, "neighbours": 3}
    assert lbd.fwd.routes_set == [nl.route_table]           # handed over once: it never changed
    assert lbd.fwd.neigh == {"198.18.0.1": MAC_A}
    assert 24 <= lbd.released <= 26                          # once a second


def test_an_announcement_rereads_only_what_it_names():
    r, lbd, nl, clock = make([(3.0, [("RTM_NEWNEIGH", 2, None, 7)]),
                              (4.0, [("RTM_NEWNEIGH", 2, None, 8)]),     # not ours
                              (5.0, [("RTM_NEWROUTE", 2, 255, 7)])], end=6.0)
    nl.kernel_neighbours[("198.18.0.1", 7)] = MAC_B         # the gateway's MAC changed at t=3
    r.run()
    assert r.reads == {"links": 1, "routes": 1, "neighbours": 2}
    assert lbd.fwd.neigh["198.18.0.1"] == MAC_B


def test_a_route_change_hands_over_the_routes_and_wants_the_new_gateway():
    r, lbd, nl, clock = make([(2.0, [("RTM_NEWROUTE", 2, 254, 7)])], end=2.5)
    orig = nl.routes

    def routes(ifslots):
        return orig(ifslots) + ([("198.19.0.0", 16, "198.18.0.2", 0)] if clock.t >= 2 else [])
    nl.routes = routes
    r.run()
    assert len(lbd.fwd.routes_set) == 2 and lbd.fwd.routes_set[1][-1][2] == "198.18.0.2"
    assert ("198.18.0.2", 7) in nl.resolved                 # resolved as soon as it is a next hop


def test_a_lost_announcement_or_our_link_rereads_everything():
    r, lbd, nl, clock = make([(2.0, None), (3.0, [("RTM_NEWLINK", None, None, 7)])], end=4.0)
    r.run()
    assert r.reads == {"links": 3, "routes": 3, "neighbours": 3}


def test_a_link_going_down_is_logged_and_a_deleted_one_stops_lbd(caplog):
    r, lbd, nl, clock = make([(2.0, [("RTM_NEWLINK", None, None, 7)]),
                              (3.0, [("RTM_DELLINK", None, None, 7)])], end=10.0)
    orig = nl.link_state

    def link_state(name):
        if clock.t >= 3:
            return None
        return (7, False) if clock.t >= 2 else orig(name)
    nl.link_state = link_state
    r.run()
    assert "link eth0 is down" in caplog.text
    assert "interface eth0 was deleted" in caplog.text
    assert lbd.fwd.gone == [0] and lbd.ifslots == {}
    assert (lbd.failed, lbd.stops) == ("links", 1)
    assert clock.t == 3.0                                    # the loop ended there


def test_a_wanted_next_hop_is_resolved_within_a_tick_and_asked_again_until_known():
    r, lbd, nl, clock = make([(4.3, [("RTM_NEWNEIGH", 2, None, 7)])], end=5.0)
    lbd.fwd.neigh["198.18.0.9"] = None        # the fast path wants it (at t=0, unknown)
    r.run()
    asks = [a for a in nl.resolved if a[0] == "198.18.0.9"]
    assert len(asks) >= 4                     # t = 0, 1, 2, 3, 4: about once a second
    assert lbd.fwd.neigh["198.18.0.9"] is None

    r, lbd, nl, clock = make(end=3.0)
    clock.events = [(1.5, [("RTM_NEWNEIGH", 2, None, 7)])]

    def wanted_late():
        if clock.t >= 1.0:
            lbd.fwd.neigh.setdefault("198.18.0.9", None)
        if clock.t >= 1.5:
            nl.kernel_neighbours[("198.18.0.9", 7)] = MAC_B
        return FakeForwarder.neighbours(lbd.fwd)
    lbd.fwd.neighbours = wanted_late
    r.run()
    assert [a for a in nl.resolved if a[0] == "198.18.0.9"] == [("198.18.0.9", 7)]
    assert lbd.fwd.neigh["198.18.0.9"] == MAC_B


def test_a_failing_dump_is_logged_once_and_tried_again(caplog):
    r, lbd, nl, clock = make(end=1.0)
    calls = []

    def flaky(ifslots):
        calls.append(clock.t)
        if len(calls) < 4:
            raise OSError("netlink hiccup")
        return [("0.0.0.0", 0, None, 0)]
    nl.routes = flaky
    r.run()
    assert caplog.text.count("netlink hiccup") == 1
    assert len(calls) == 4 and lbd.fwd.routes_set == [[("0.0.0.0", 0, None, 0)]]


def test_changes_opens_and_reads_the_real_socket():
    """Joining the groups needs no root; what waits (anything the host announces meanwhile)
    comes as relevant() takes it. tests/integration/test_refresh_live.py drives it for real."""
    ch = refresh.Changes()
    try:
        events = ch.read()
        assert events is not None and all(len(e) == 4 for e in events)
    finally:
        ch.close()
