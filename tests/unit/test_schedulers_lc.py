"""lc, wlc, sed, nq, fo and ovf against loads and sequences worked out by hand from the kernel's
ip_vs_{lc,wlc,sed,nq,fo,ovf}.c. Load figure: lc/wlc (active << 8) + inactive; sed/nq active + 1.

Every built-in scheduler decides in C in production (the program lb.schedulers.program builds,
Forwarder.pick): the tests taking `mk` run twice, once through the Python class and once
through the real extension's C decision on its own counters (tests.unit.schedfakes.InC), which
must then have been asked. Tests that set OVERLOAD by hand stay on the Python path: in
production only a threshold sets it, and the C side keeps its own from the thresholds."""
import pytest

from lb.director.model import OVERLOAD, RealServer, Service

from tests.unit.schedfakes import FLOW, CounterViews, ForwarderCounters, InC, load, make, picks, stats_of


@pytest.fixture(params=["python", "c"])
def mk(request):
    """make() deciding through the Python class, or in C on the real fast path's counters."""
    made = []

    def build(sched, weights, **kw):
        if request.param == "python":
            return make(sched, weights, **kw)
        counters = ForwarderCounters()
        svc = InC(make(sched, weights, stats=counters, **kw), counters)
        made.append(svc)
        return svc
    yield build
    assert all(svc.decisions > 0 for svc in made), "the C path was not taken"


# --- lc -----------------------------------------------------------------------------------

def test_lc_least_overhead(mk):
    svc = mk("lc", [1, 1, 1])
    load(svc, (2, 0), (1, 5), (1, 3))       # 512, 261, 259
    assert picks(svc, 1) == "C"


def test_lc_one_active_weighs_256_inactive(mk):
    svc = mk("lc", [1, 1])
    load(svc, (1, 0), (0, 255))             # 256 > 255
    assert picks(svc, 1) == "B"
    load(svc, (1, 0), (0, 256))             # 256 = 256: the earlier one
    assert picks(svc, 1) == "A"


def test_lc_ignores_weights_except_zero(mk):
    svc = mk("lc", [5, 1, 0])
    load(svc, (1, 0), (0, 10), (0, 0))      # C is idle but quiesced (weight 0)
    assert picks(svc, 1) == "B"


def test_lc_skips_overloaded():
    svc = make("lc", [1, 1])
    load(svc, (0, 0), (3, 0))
    svc.dests[0].flags.add(OVERLOAD)
    assert picks(svc, 1) == "B"


def test_lc_sequence_with_connections_bound(mk):
    # Each pick adds an inactive connection (a SYN) to the server picked: A B C, all at 1, A ...
    assert picks(mk("lc", [1, 2, 3]), 7, bind="inactive") == "ABCABCA"


def test_lc_none_available():
    svc = make("lc", [0, 1])
    svc.dests[1].flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None
    assert make("lc", []).schedule(FLOW) is None


# --- wlc ----------------------------------------------------------------------------------

def test_wlc_cross_multiplied(mk):
    svc = mk("wlc", [1, 2])
    load(svc, (1, 0), (1, 200))             # 256/1 vs 456/2: 256*2 = 512 > 456*1 -> B
    assert picks(svc, 1) == "B"
    load(svc, (0, 200), (1, 144))           # 200/1 vs 400/2: equal -> the earlier one
    assert picks(svc, 1) == "A"


def test_wlc_exact_where_float_division_ties(mk):
    # X = (65534 * 2^38 + 1) / 65534, Y = 65535 * 2^38 / 65535 = 2^38. In floats both are
    # 2^38 (the 1/65534 is under half an ulp), so a division would keep X; exactly Y < X.
    svc = mk("wlc", [65534, 65535], names="XY")
    ox, oy = 65534 * 2**38 + 1, 65535 * 2**38
    load(svc, (ox >> 8, ox & 255), (oy >> 8, oy & 255))
    assert ox / 65534 == oy / 65535
    assert picks(svc, 1) == "Y"


def test_wlc_sequence_3_to_1(mk):
    # Weights A=3, B=1, each pick adds an inactive connection to the pick (overhead = count):
    # A(0) | B(0, A=1) | A: 1/3 < 1/1 | A: 2/3 < 1 | A: 3/3 = 1/1 tie -> A | 4/3 > 1 -> B |
    # A: 4/3 < 2 | A: 5/3 < 2 | A: 6/3 = 2 tie -> A | 7/3 > 2 -> B
    assert picks(mk("wlc", [3, 1]), 10, bind="inactive") == "ABAAABAAAB"


def test_wlc_skips_weight_zero_and_overloaded():
    svc = make("wlc", [0, 1, 1])
    load(svc, (0, 0), (0, 5), (2, 0))
    assert picks(svc, 1) == "B"
    svc.dests[1].flags.add(OVERLOAD)
    assert picks(svc, 1) == "C"
    svc.dests[2].flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None


def test_wlc_overloaded_server_that_would_win_is_skipped():
    svc = make("wlc", [1, 1, 1])
    load(svc, (5, 0), (0, 0), (1, 0))
    svc.dests[1].flags.add("drain")          # a flag that is not OVERLOAD changes nothing
    assert picks(svc, 1) == "B"
    svc.dests[1].flags.add(OVERLOAD)
    assert picks(svc, 1) == "C"


def test_wlc_weight_change_needs_update(mk):
    svc = mk("wlc", [1, 1])
    load(svc, (1, 0), (1, 0))
    assert picks(svc, 1) == "A"
    svc.dests[1].weight = 2                  # 256/1 vs 256/2: B, once the config has told us
    svc.dests_changed()
    assert picks(svc, 1) == "B"


def test_is_the_default_scheduler():
    assert Service("tcp", "198.18.0.100", 80).sched.name == "wlc"


def test_counters_of_a_server_without_slot_read_zero():
    # The config adds a server before the daemon gives it a fast-path slot: it counts as idle.
    stats = CounterViews()
    svc = Service("tcp", "198.18.0.100", 80, "wlc")
    svc.dests = [RealServer("A", 80, 1, slot=0, stats=stats), RealServer("B", 80, 1, stats=stats)]
    svc.dests_changed()
    stats.active[0] = 3
    assert picks(svc, 1) == "B"


def test_servers_without_stats_are_idle():
    svc = Service("tcp", "198.18.0.100", 80, "wlc")
    svc.dests = [RealServer("A", 80, 1), RealServer("B", 80, 2)]
    svc.dests_changed()
    assert picks(svc, 2) == "AA"


# --- sed ----------------------------------------------------------------------------------

def test_sed_counts_the_new_connection_and_ignores_inactive(mk):
    svc = mk("sed", [1, 3])
    load(svc, (0, 900), (2, 0))             # (0+1)/1 vs (2+1)/3: tie -> A
    assert picks(svc, 1) == "A"
    load(svc, (0, 0), (1, 0))               # 1/1 vs 2/3 -> B
    assert picks(svc, 1) == "B"


def test_sed_sequence(mk):
    # Weights 1, 3; each pick adds an active connection. (a+1)/w:
    # 1 vs 1/3 -> B | 1 vs 2/3 -> B | 1 vs 3/3 tie -> A | 2 vs 3/3 -> B | 2 vs 4/3 -> B |
    # 2 vs 5/3 -> B | 2 vs 6/3 tie -> A
    assert picks(mk("sed", [1, 3]), 7, bind="active") == "BBABBBA"


def test_sed_skips_overloaded_and_weight_zero():
    svc = make("sed", [0, 1, 2])
    svc.dests[2].flags.add(OVERLOAD)
    assert picks(svc, 1) == "B"


# --- nq -----------------------------------------------------------------------------------

def test_nq_first_idle_server_even_if_slower(mk):
    svc = mk("nq", [1, 10])
    assert picks(svc, 1) == "A"             # sed would take B (1/10 < 1/1)
    load(svc, (1, 0), (0, 0))
    assert picks(svc, 1) == "B"


def test_nq_idle_means_no_active_connection(mk):
    svc = mk("nq", [1, 1])
    load(svc, (0, 500), (0, 0))
    assert picks(svc, 1) == "A"


def test_nq_sequence(mk):
    # Weights 1, 3; each pick adds an active connection:
    # A idle -> A | B idle -> B | 2/1 vs 2/3 -> B | 2 vs 3/3 -> B | 2 vs 4/3 -> B |
    # 2 vs 5/3 -> B | 2 vs 6/3 tie -> A
    assert picks(mk("nq", [1, 3]), 7, bind="active") == "ABBBBBA"


def test_nq_skips_overloaded_idle_server():
    svc = make("nq", [1, 1, 1])
    load(svc, (0, 0), (2, 0), (1, 0))
    svc.dests[0].flags.add(OVERLOAD)
    assert picks(svc, 1) == "C"             # 3/1 vs 2/1


# --- fo -----------------------------------------------------------------------------------

def test_fo_highest_weight_first_on_ties_whatever_the_load():
    svc = make("fo", [2, 5, 5, 1])
    load(svc, (0, 0), (900, 900), (0, 0), (0, 0))
    assert picks(svc, 3) == "BBB"


def test_fo_fails_over_in_weight_order():
    svc = make("fo", [2, 5, 5, 1])
    svc.dests[1].flags.add(OVERLOAD)
    assert picks(svc, 1) == "C"
    svc.dests[2].flags.add(OVERLOAD)
    assert picks(svc, 1) == "A"
    svc.dests[1].flags.discard(OVERLOAD)
    assert picks(svc, 1) == "B"


def test_fo_weight_zero_is_never_picked():
    assert make("fo", [0, 0]).schedule(FLOW) is None
    svc = make("fo", [3, 1])
    svc.dests[0].weight = 0
    svc.dests_changed()
    assert picks(svc, 1) == "B"


# --- ovf ----------------------------------------------------------------------------------

def test_ovf_highest_weight_until_active_exceeds_weight():
    svc = make("ovf", [2, 5, 5, 1])
    load(svc, (0, 0), (5, 99), (0, 0), (0, 0))
    assert picks(svc, 1) == "B"             # 5 active = weight 5 still qualifies (kernel: >)
    load(svc, (0, 0), (6, 0), (0, 0), (0, 0))
    assert picks(svc, 1) == "C"
    load(svc, (2, 0), (6, 0), (6, 0), (0, 0))
    assert picks(svc, 1) == "A"
    load(svc, (3, 0), (6, 0), (6, 0), (2, 0))
    assert svc.schedule(FLOW) is None


def test_ovf_sequence():
    # Weights 2, 1; each pick adds an active connection: A while A's active <= 2 (3 picks),
    # then B while B's active <= 1 (2 picks), then none.
    assert picks(make("ovf", [2, 1]), 6, bind="active") == "AAABB-"


def test_ovf_skips_overloaded_and_weight_zero():
    svc = make("ovf", [0, 3, 1])
    svc.dests[1].flags.add(OVERLOAD)
    assert picks(svc, 1) == "C"


@pytest.mark.parametrize("sched", ["lc", "wlc", "sed", "nq", "fo", "ovf"])
def test_counters_read_per_decision(sched, mk):
    # No update between load changes: the views are live (in C too: it reads them per call).
    svc = mk(sched, [1, 1])
    stats = stats_of(svc)
    stats.active[0] = 5
    first = picks(svc, 1)
    stats.active[0], stats.active[1] = 0, 5
    assert (first, picks(svc, 1)) == (("A", "A") if sched == "fo" else ("B", "A"))


def test_a_server_not_yet_given_a_slot_counts_as_idle():
    # The Director binds slots after a reconcile; a server added since has none and no
    # connection either, so it reads 0 (base._SlotOrZero) - lc then prefers it to a loaded one
    # and, both idle, keeps list order.
    svc = make("lc", [1, 1])
    svc.dests[1].slot = None
    load(svc, (0, 1))                       # A: 1 inactive; B: no slot
    assert picks(svc, 1) == "B"
    svc.dests[0].stats.inactive[0] = 0
    assert picks(svc, 1) == "A"
