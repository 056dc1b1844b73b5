"""Upper/lower connection thresholds (ipvsadm -x/-y): OVERLOAD set when active + inactive
reaches -x (ip_vs_bind_dest), cleared below -y, or below 3/4 of -x when -y is 0
(ip_vs_unbind_dest); Service.schedule keeps the flag right around each decision."""

from lb.director.config import Config
from lb.director.model import OVERLOAD

import pytest

from tests.unit.schedfakes import (FLOW, VIP, CounterViews, ForwarderCounters, InC, make, picks,
                                  stats_of)


def limited(sched, weights, upper, lower=0, which=0):
    svc = make(sched, weights)
    svc.dests[which].u_threshold, svc.dests[which].l_threshold = upper, lower
    svc.dests_changed()
    return svc


def total(svc, i, n):
    stats_of(svc).active[svc.dests[i].slot], stats_of(svc).inactive[svc.dests[i].slot] = 0, n


def test_upper_threshold_in_a_round_robin():
    # A has -x 2; each pick adds a connection. A (A=1) | B | A: A reaches 2 -> OVERLOAD |
    # B | B (A skipped while at 2)
    svc = limited("rr", [1, 1], upper=2)
    assert picks(svc, 5, bind="inactive") == "ABABB"
    assert OVERLOAD in svc.dests[0].flags
    total(svc, 0, 1)                 # one of A's connections closed: 1 * 4 < 2 * 3, cleared
    assert picks(svc, 1) == "A"


def test_flag_set_for_the_connection_about_to_be_bound():
    # -x 1: the pick itself brings A to 1, so A is OVERLOADed as the kernel's bind would do.
    svc = limited("wlc", [5, 1], upper=1)
    assert picks(svc, 1) == "A"
    assert OVERLOAD in svc.dests[0].flags


def test_three_quarters_rule_without_lower_threshold():
    svc = limited("rr", [1, 1], upper=4)
    a = svc.dests[0]
    for count, overloaded in [(4, True), (3, True), (2, False), (3, False), (4, True)]:
        total(svc, 0, count)         # 3 * 4 = 12 is not < 4 * 3; 2 * 4 = 8 is
        svc.schedule(FLOW)
        assert (OVERLOAD in a.flags) == overloaded, count


def test_lower_threshold():
    svc = limited("rr", [1, 1], upper=4, lower=3)
    a = svc.dests[0]
    for count, overloaded in [(4, True), (3, True), (2, False), (3, False)]:
        total(svc, 0, count)
        svc.schedule(FLOW)
        assert (OVERLOAD in a.flags) == overloaded, count


@pytest.mark.parametrize("path", ["python", "c"])
def test_lower_threshold_well_below_three_quarters(path):
    # -x 4 -y 1: cleared only once the total is below 1; the 3/4-of-x rule would clear it at 2.
    # In C the -y reaches the decision through the program (lb.schedulers.program.build).
    counters = ForwarderCounters() if path == "c" else None
    svc = make("rr", [1, 1], stats=counters)
    svc.dests[0].u_threshold, svc.dests[0].l_threshold = 4, 1
    svc = InC(svc, counters) if path == "c" else svc
    svc.dests_changed()
    got = []
    for count in (4, 2, 1, 0):
        total(svc, 0, count)
        got.append(picks(svc, 1))
    assert "".join(got) == "BBBA"    # A OVERLOADed at 4, still at 2 and 1, free at 0
    assert path == "python" or svc.decisions == 4


def test_active_and_inactive_both_count():
    svc = limited("wlc", [1, 1], upper=3)
    stats = stats_of(svc)
    stats.active[0], stats.inactive[0] = 1, 2
    assert picks(svc, 1) == "B"


def test_servers_without_threshold_are_left_alone():
    svc = limited("rr", [1, 1, 1], upper=5, which=0)
    svc.dests[1].flags.add(OVERLOAD)      # set by hand: not a threshold's to clear
    assert svc.limited == [svc.dests[0]]
    assert picks(svc, 4) == "ACAC"
    assert OVERLOAD in svc.dests[1].flags


def test_every_scheduler_skips_a_server_over_its_threshold():
    for sched in ("rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "lblc", "lblcr"):
        svc = limited(sched, [9, 1], upper=2)
        total(svc, 0, 2)
        assert picks(svc, 1) == "B", sched


def test_through_the_config():
    cfg = Config(stats=CounterViews())
    cfg.apply({"op": "add_service", "proto": "tcp", "vip": VIP, "port": 80, "scheduler": "rr"})
    for rip, extra in (("198.18.0.11", {"u_threshold": 1}), ("198.18.0.12", {})):
        cfg.apply({"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80, "rip": rip,
                   "fwd": "masq", **extra})
    svc = cfg.services[0]
    for slot, dest in enumerate(svc.dests):
        dest.slot = slot                 # as the daemon does after the config change
    # .11 takes one connection and is then full; .12 takes the rest
    assert picks(svc, 3, bind="inactive") == "198.18.0.11" + "198.18.0.12" * 2
    cfg.apply({"op": "edit_server", "proto": "tcp", "vip": VIP, "port": 80,
               "rip": "198.18.0.11", "fwd": "masq", "u_threshold": 5})   # raised: lifted
    assert svc.schedule(FLOW).addr == "198.18.0.11"
