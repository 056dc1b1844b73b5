"""rr and wrr against sequences worked out by hand from ip_vs_rr.c / ip_vs_wrr.c."""
from collections import Counter

import pytest

from lb import schedulers
from lb.director.model import OVERLOAD, Flow, RealServer, Service

from tests.unit import schedfakes

FLOW = Flow("tcp", "203.0.113.7", 40000, "198.18.0.100", 80)


def make(sched, weights, names="ABCDEF"):
    """A service whose destinations exist before the scheduler is created (init_svc on them)."""
    svc = Service("tcp", "198.18.0.100", 80, sched)
    svc.dests = [RealServer(n, 80, w) for n, w in zip(names, weights)]
    svc.set_scheduler(sched)
    return svc


def picks(svc, n):
    out = []
    for _ in range(n):
        dest = svc.schedule(FLOW)
        out.append(dest.addr if dest else None)
    return "".join(p or "-" for p in out)


def test_registry():
    assert schedulers.names() == ["dh", "fo", "lblc", "lblcr", "lc", "mh", "nq", "ovf", "rr",
                                  "sed", "sh", "twos", "wlc", "wrr"]
    for name in schedulers.names():
        assert schedulers.get(name).name == name
    with pytest.raises(KeyError):
        schedulers.get("foo")


# --- rr -----------------------------------------------------------------------------------

def test_rr_cycles_in_list_order_ignoring_weights():
    assert picks(make("rr", [4, 3, 2]), 7) == "ABCABCA"


def test_rr_skips_weight_zero_and_overloaded():
    svc = make("rr", [1, 0, 1, 1])
    svc.dests[3].flags.add(OVERLOAD)
    assert picks(svc, 4) == "ACAC"


def test_rr_continues_from_last_pick_after_it_becomes_unavailable():
    svc = make("rr", [1, 1, 1])
    assert picks(svc, 2) == "AB"
    svc.dests[1].weight = 0
    svc.sched.update_service(svc)
    assert picks(svc, 3) == "CAC"


def test_rr_delete_last_pick_continues_with_its_successor():
    svc = make("rr", [1, 1, 1])
    assert picks(svc, 2) == "AB"
    del svc.dests[1]            # kernel ip_vs_rr_del_dest: position moves back to A
    svc.sched.update_service(svc)
    assert picks(svc, 3) == "CAC"


def test_rr_two_deletes_in_a_row_each_step_back_to_the_predecessor():
    # ip_vs_rr_del_dest: deleting the position moves it to the entry before (p->next->prev).
    # Delete B (position B -> A), then A (position A -> the list head): next is C, not D.
    svc = make("rr", [1, 1, 1, 1])
    assert picks(svc, 2) == "AB"
    del svc.dests[1]
    svc.sched.update_service(svc)
    del svc.dests[0]
    svc.sched.update_service(svc)
    assert picks(svc, 3) == "CDC"


def test_rr_single_available_is_picked_again():
    svc = make("rr", [0, 5, 0])
    assert picks(svc, 3) == "BBB"


def test_rr_all_unavailable_gives_none():
    svc = make("rr", [0, 0])
    assert svc.schedule(FLOW) is None
    svc.dests[0].weight = 1
    svc.dests[0].flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None
    assert make("rr", []).schedule(FLOW) is None


# --- wrr ----------------------------------------------------------------------------------

def test_wrr_432_interleaves():
    # cw=4: A | cw=3: A B | cw=2: A B C | cw=1: A B C, then again from cw=4.
    assert picks(make("wrr", [4, 3, 2]), 18) == "AABABCABC" * 2


def test_wrr_servers_added_one_by_one_start_at_cw_1():
    # Service created empty (mw=cw=0). add A(4): di=4 mw=1 cw=0->1. add B(3), C(2): di=1 mw=4,
    # cw=1 kept. First walk is at cw=1 (A B C), then the normal cycle from cw=4.
    svc = Service("tcp", "198.18.0.100", 80, "wrr")
    for name, weight in zip("ABC", [4, 3, 2]):
        svc.dests.append(RealServer(name, 80, weight))
        svc.sched.update_service(svc)
    assert picks(svc, 12) == "ABC" + "AABABCABC"


def test_wrr_321_exact_shares():
    svc = make("wrr", [3, 2, 1])
    counts = Counter(svc.schedule(FLOW).addr for _ in range(600))
    assert counts == {"A": 300, "B": 200, "C": 100}


def test_wrr_gcd_step():
    # weights 4,2: di=2, mw=4-1=3; cw=3: A | cw=1: A B | cw=-1 -> 3: A ...
    svc = make("wrr", [4, 2])
    assert (svc.sched.di, svc.sched.mw, svc.sched.cw) == (2, 3, 3)
    assert picks(svc, 6) == "AABAAB"


def test_wrr_weight_change_mid_sequence():
    svc = make("wrr", [4, 3, 2])
    assert picks(svc, 4) == "AABA"          # the last pick is A, at cw=2
    assert svc.sched.cw == 2
    svc.dests[2].weight = 4                 # C: 2 -> 4; di=1, mw=4, cw 2 kept, back to head
    svc.sched.update_service(svc)
    # cw=2: A B C | cw=1: A B C | cw=4: A C | cw=3: A B C | ...
    assert picks(svc, 11) == "ABCABCACABC"


def test_wrr_update_with_gcd_rounds_cw():
    svc = make("wrr", [2, 1])               # di=1 mw=2
    assert picks(svc, 1) == "A"             # cw=2
    svc.dests[1].weight = 2                 # weights 2,2: di=2, mw=1, cw=2 > mw -> cw=mw=1
    svc.sched.update_service(svc)
    assert (svc.sched.di, svc.sched.mw, svc.sched.cw) == (2, 1, 1)
    assert picks(svc, 4) == "ABAB"


def test_wrr_update_cw_above_mw_is_clamped():
    svc = make("wrr", [8, 1])               # di=1 mw=8
    assert picks(svc, 3) == "AAA"           # cw 8, 7, 6
    svc.dests[1].weight = 4                 # weights 8,4: di=4 mw=5; cw=6 > mw -> cw=mw=5
    svc.sched.update_service(svc)
    assert (svc.sched.di, svc.sched.mw, svc.sched.cw) == (4, 5, 5)
    assert picks(svc, 3) == "AAB"           # cw 5: A | cw 1: A B


def test_wrr_update_cw_formula_when_di_above_one():
    # ip_vs_wrr_dest_changed: cw <= mw and di > 1 -> cw = (cw / di) * di + 1.
    svc = make("wrr", [8, 1])               # di=1 mw=8
    assert picks(svc, 5) == "AAAAA"         # cw 8, 7, 6, 5, 4
    svc.dests[1].weight = 4                 # weights 8,4: di=4 mw=5; cw=4 <= mw: (4//4)*4+1 = 5
    svc.sched.update_service(svc)
    assert (svc.sched.di, svc.sched.mw, svc.sched.cw) == (4, 5, 5)
    # cw 5: A | cw 1: A B | cw 5: A | cw 1: A B. Keeping cw=4 would give cw 4: A B | cw 5: A ...
    assert picks(svc, 6) == "AABAAB"


def test_wrr_skips_overloaded():
    svc = make("wrr", [4, 3, 2])
    svc.dests[0].flags.add(OVERLOAD)
    # cw=4: none | cw=3: B | cw=2: B C | cw=1: B C
    assert picks(svc, 5) == "BBCBC"


def test_wrr_all_weights_zero_gives_none():
    svc = make("wrr", [0, 0, 0])
    assert svc.sched.mw == 0
    assert svc.schedule(FLOW) is None
    assert make("wrr", []).schedule(FLOW) is None


def test_wrr_all_overloaded_gives_none_then_recovers():
    svc = make("wrr", [2, 1])
    for dest in svc.dests:
        dest.flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None
    assert svc.schedule(FLOW) is None
    svc.dests[1].flags.clear()
    assert picks(svc, 2) == "BB"


def test_wrr_overloaded_after_some_picks_stops_after_one_full_pass():
    svc = make("wrr", [1, 1, 1])
    assert picks(svc, 2) == "AB"
    for dest in svc.dests:
        dest.flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None
    svc.dests[0].flags.clear()
    assert picks(svc, 2) == "AA"


def test_wrr_weight_zero_server_never_picked():
    svc = make("wrr", [2, 0, 1])
    counts = Counter(svc.schedule(FLOW).addr for _ in range(30))
    assert counts == {"A": 20, "C": 10}


@pytest.mark.parametrize("path", ["python", "c"])
def test_wrr_update_cw_formula_with_gcd_two(path):
    # ip_vs_wrr_dest_changed applies (cw / di) * di + 1 for any di > 1, so di = 2 too: an even
    # cw is moved up to the next odd one. In C the rule is sched_carry's (fastpath/sched.pxi).
    if path == "python":
        svc = schedfakes.make("wrr", [4, 1])
    else:
        counters = schedfakes.ForwarderCounters()
        svc = schedfakes.InC(schedfakes.make("wrr", [4, 1], stats=counters), counters)
    assert schedfakes.picks(svc, 3) == "AAA"     # di=1 mw=4: cw 4, 3, 2
    svc.dests[1].weight = 2                 # weights 4,2: di=2 mw=3; cw=2 <= mw: (2//2)*2+1 = 3
    svc.dests_changed()
    # cw 3: A | cw 1: A B | cw 3: A. Keeping cw=2 would give cw 2: A B first.
    assert schedfakes.picks(svc, 4) == "AABA"
    assert path == "python" or svc.decisions == 7


def test_wrr_all_overloaded_mid_pass_keeps_its_place():
    # ip_vs_wrr_schedule's `stop`: having restarted at mw, the last pass (cw <= di) stops at the
    # starting server, and err_over leaves mark->cl there and cw at that pass's weight.
    svc = make("wrr", [2, 1, 1])            # di=1 mw=2
    assert picks(svc, 3) == "AAB"           # cw 2: A | cw 1: A B
    for dest in svc.dests:
        dest.flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None       # cw 1: C | cw 2: A B C | cw 1: A, stop at B
    assert (svc.sched.pos, svc.sched.cw) == (1, 1)
    svc.dests[0].flags.clear()
    svc.dests[2].flags.clear()
    # on from B at cw 1: C | cw 2: A | cw 1: A (B overloaded) C. From the head at cw 2, the
    # state a walk on past B would leave, it would be A first.
    assert picks(svc, 4) == "CAAC"
