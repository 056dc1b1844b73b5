"""lblc and lblcr with a test-driven clock: locality, overload remap, set growth and shrink,
and the table's expiry (ip_vs_lblc.c / ip_vs_lblcr.c). Times are seconds from the first
decision, which starts the once-a-minute check: checks at 60, 120, ...; every 30th (1800,
3600, ...) is a full check dropping entries unused for 24 h (86400 s)."""
import pytest

from lb.director.model import OVERLOAD, Flow

from tests.unit.schedfakes import load, make

DAY = 86400


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def make_loc(sched, weights):
    svc = make(sched, weights)
    svc.sched.clock = clock = Clock()
    return svc, clock


def to(svc, dst="10.1.0.1"):
    dest = svc.schedule(Flow("tcp", "203.0.113.7", 40000, dst, 80))
    return dest.addr if dest else "-"


@pytest.fixture(params=["lblc", "lblcr"])
def sched(request):
    return request.param


# --- both -----------------------------------------------------------------------------------

def test_sticks_to_the_server_of_a_destination(sched):
    svc, _ = make_loc(sched, [1, 1])
    assert to(svc) == "A"                  # wlc: both idle -> A, remembered for 10.1.0.1
    load(svc, (1, 5), (0, 0))              # B is now the wlc choice...
    assert to(svc) == "A"                  # ... but 10.1.0.1 stays with A (1 active <= weight)
    assert to(svc, "10.1.0.2") == "B"      # another destination: wlc


def test_overloaded_server_is_left_for_the_wlc_pick(sched):
    # is_overloaded: active > weight while some server has active * 2 < weight.
    svc, _ = make_loc(sched, [1, 4])
    assert to(svc) == "A"
    load(svc, (2, 0), (2, 0))              # A 2 > 1, but B: 2 * 2 = 4 is not < 4
    assert to(svc) == "A"
    load(svc, (2, 0), (1, 0))              # B: 1 * 2 < 4 -> remap: wlc 512/1 vs 256/4 -> B
    assert to(svc) == "B"
    load(svc, (0, 0), (1, 0))
    expected = "B" if sched == "lblc" else "A"  # lblc remapped; lblcr has {B, A}: least -> A
    assert to(svc) == expected


def test_weight_zero_or_removed_server_is_replaced(sched):
    svc, _ = make_loc(sched, [1, 1])
    assert to(svc) == "A"
    svc.dests[0].weight = 0
    svc.dests_changed()
    assert to(svc) == "B"
    svc.dests[0].weight = 1
    del svc.dests[1]
    svc.dests_changed()
    assert to(svc) == "A"


def test_entry_expires_after_a_day_unused(sched):
    svc, clock = make_loc(sched, [1, 1])
    assert to(svc) == "A"                  # entry for 10.1.0.1, last used at 0
    load(svc, (1, 0), (0, 0))
    clock.now = DAY - 1                    # a decision for another address runs the checks:
    assert to(svc, "10.1.0.9") == "B"      # the full check at 84600 keeps the entry (idle < 1 d)
    assert "10.1.0.1" in svc.sched.table.entries
    clock.now = DAY                        # full check at 86400 = 48 * 1800: unused for 1 d
    to(svc, "10.1.0.9")
    assert "10.1.0.1" not in svc.sched.table.entries
    assert to(svc) == "B"                  # a fresh wlc pick


def test_use_keeps_the_entry(sched):
    svc, clock = make_loc(sched, [1, 1])
    assert to(svc) == "A"
    clock.now = 1000
    assert to(svc) == "A"                  # last used at 1000: kept until the first full check
    load(svc, (1, 0), (0, 0))              # at or after 87400, i.e. 88200 = 49 * 1800
    clock.now = 88199
    to(svc, "10.1.0.9")
    assert "10.1.0.1" in svc.sched.table.entries
    clock.now = 88200
    to(svc, "10.1.0.9")
    assert "10.1.0.1" not in svc.sched.table.entries


def test_long_idle_catches_up_in_a_few_steps(sched):
    svc, clock = make_loc(sched, [1, 1])
    to(svc)
    clock.now = 365 * DAY + 30
    to(svc, "10.1.0.9")
    table = svc.sched.table
    assert list(table.entries) == ["10.1.0.9"]
    # the last full check was at 365 days (a multiple of 1800); the next check a minute later
    assert (table.counter, table.next_check) == (1, 365 * DAY + 60)


def test_an_over_full_table_still_takes_entries_and_sheds_idle_ones(sched):
    # max_size 4: entries are still made above it (ip_vs_lblc(r)_new has no limit; max_size
    # only drives the check). Each minute's check then sheds min((entries - 4) * 4/3, 4/2)
    # entries unused for 6 min, bucket by bucket from the rover (0) up: hash_32(v, 10) of
    # 0.0.0.1 .. 0.0.0.6 is 391, 782, 149, 540, 931, 298, so at the check at 360 s bucket 149
    # (0.0.0.3) and then 298 (0.0.0.6) go.
    svc, clock = make_loc(sched, [1, 1])
    table = svc.sched.table
    table.max_size = 4
    for v in range(1, 7):
        assert to(svc, f"0.0.0.{v}") == "A"
    assert sorted(table.entries) == [f"0.0.0.{v}" for v in range(1, 7)]
    clock.now = 300
    to(svc, "0.0.0.1")                     # checks at 60..300: nothing idle for 6 min yet
    assert len(table.entries) == 6 and table.counter == 1   # over-full checks do not count
    clock.now = 360
    to(svc, "0.0.0.1")
    assert sorted(table.entries) == ["0.0.0.1", "0.0.0.2", "0.0.0.4", "0.0.0.5"]
    assert table.rover == 298


# --- lblc -----------------------------------------------------------------------------------

def test_lblc_keeps_an_overload_flagged_server():
    # The kernel's lblc checks the cached server's weight and its is_overloaded(), not the
    # OVERLOAD flag (thresholds); the wlc fallback does skip flagged servers.
    svc, _ = make_loc("lblc", [1, 1])
    assert to(svc) == "A"
    svc.dests[0].flags.add(OVERLOAD)
    assert to(svc) == "A"
    assert to(svc, "10.1.0.2") == "B"


def test_lblc_remap_replaces_the_entry():
    svc, _ = make_loc("lblc", [1, 1])
    assert to(svc) == "A"
    svc.dests[0].weight = 0
    svc.dests_changed()
    assert to(svc) == "B"
    assert svc.sched.table.entries["10.1.0.1"].dest is svc.dests[1]


def test_lblc_no_server():
    svc, _ = make_loc("lblc", [0, 0])
    assert to(svc) == "-"
    assert svc.sched.table.entries == {}


# --- lblcr ----------------------------------------------------------------------------------

def members(svc, dst="10.1.0.1"):
    return "".join(d.addr for d in svc.sched.table.entries[dst].members)


def test_lblcr_set_grows_newest_first_and_uses_its_least_loaded():
    svc, clock = make_loc("lblcr", [1, 4, 1])
    assert to(svc) == "A" and members(svc) == "A"
    load(svc, (2, 0), (1, 0), (3, 0))      # A overloaded (2 > 1, B: 2 < 4): wlc -> B
    clock.now = 10
    assert to(svc) == "B" and members(svc) == "BA"
    assert svc.sched.table.entries["10.1.0.1"].lastmod == 10
    load(svc, (0, 0), (0, 0), (0, 0))      # both idle: the newest member first -> B
    assert to(svc) == "B"
    load(svc, (0, 0), (1, 0), (0, 0))      # 0/1 vs 256/4 -> A
    assert to(svc) == "A"


def test_lblcr_skips_flagged_and_removed_members():
    svc, _ = make_loc("lblcr", [1, 4, 1])
    to(svc)
    load(svc, (2, 0), (1, 0), (0, 0))
    assert to(svc) == "C"                  # wlc: C is idle
    assert members(svc) == "CA"
    svc.dests[2].flags.add(OVERLOAD)       # the set's least loaded skips C: A, overloaded
    assert to(svc) == "B"                  # (2 > 1, C: 0 < 1/2) -> wlc without C: 64 < 512
    assert members(svc) == "BCA"
    svc.dests[2].flags.discard(OVERLOAD)
    removed = svc.dests.pop(2)
    svc.dests_changed()
    load(svc, (0, 0), (3, 0))
    assert to(svc) == "A"                  # C is out of the service: least of B, A -> A
    assert removed in svc.sched.table.entries["10.1.0.1"].members


def test_lblcr_sheds_its_most_loaded_member_after_a_quiet_day():
    svc, clock = make_loc("lblcr", [1, 4])
    to(svc)
    load(svc, (2, 0), (1, 0))
    assert to(svc) == "B" and members(svc) == "BA"   # set changed at 0
    load(svc, (0, 7), (0, 0))
    clock.now = DAY / 2
    assert to(svc) == "B"                  # used (so the entry lives on), set unchanged
    clock.now = DAY                        # not yet: the kernel wants now > lastmod + 1 day
    assert to(svc) == "B" and members(svc) == "BA"
    clock.now = DAY + 1                    # most loaded (A: 7/1 vs 0/4) is dropped; the pick
    assert to(svc) == "B" and members(svc) == "B"    # was made before, from the whole set
    entry = svc.sched.table.entries["10.1.0.1"]
    assert entry.lastmod == DAY + 1
    clock.now = 2 * DAY + 2
    assert to(svc) == "B" and members(svc) == "B"    # a last member is never dropped
