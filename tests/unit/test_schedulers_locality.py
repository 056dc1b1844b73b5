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


def test_lblcr_set_member_load_weighs_one_active_as_256_inactive():
    # ip_vs_dest_set_min() compares ip_vs_dest_conn_overhead(): (activeconns << 8) + inactconns
    svc, _ = make_loc("lblcr", [1, 1])
    to(svc)
    load(svc, (2, 0), (0, 0))              # A overloaded (2 > 1, B: 0 < 1/2): wlc -> B
    assert to(svc) == "B" and members(svc) == "BA"
    load(svc, (0, 300), (1, 0))            # B 256 < A 300: B, and B is not overloaded (1 = 1)
    assert to(svc) == "B"
    load(svc, (0, 255), (1, 0))            # A 255 < B 256: A
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


# --- the table's checks, on the table alone (ip_vs_lblc(r)_check_expire) ----------------------

class Entry:
    def __init__(self, lastuse):
        self.lastuse = lastuse


def table_of(n, max_size, lastuse=-1000.0):
    """n entries 0.0.0.1.. (each in a bucket of its own: hash_32 of 1..n, 10 bits), idle since
    `lastuse`, in a table whose checks start at 60 s."""
    from lb.schedulers.base import hash_32
    from lb.schedulers.locality import LocalityTable
    assert len({hash_32(v, 10) for v in range(1, n + 1)}) == n
    t = LocalityTable()
    t.max_size = max_size
    t.entries = {f"0.0.0.{v}": Entry(lastuse) for v in range(1, n + 1)}
    t.expire(0.0)
    return t


def test_a_table_holding_exactly_max_size_only_counts():
    # "if (atomic_read(&tbl->entries) <= tbl->max_size) { tbl->counter++; goto out; }"
    t = table_of(4, max_size=4)
    t.expire(60.0)
    assert len(t.entries) == 4 and t.counter == 2


@pytest.mark.parametrize("n, max_size, left", [
    (12, 10, 10),       # goal (12 - 10) * 4 / 3 = 2 in integers (2.67 would take a third)
    (9, 5, 7),          # goal min(5, 5 / 2) = 2 in integers (2.5 would take a third)
])
def test_one_over_full_check_sheds_the_kernels_goal(n, max_size, left):
    t = table_of(n, max_size)
    t.expire(60.0)
    assert len(t.entries) == left


def test_every_minutes_check_of_an_over_full_table_sheds():
    # 20 entries over max_size 2, idle long enough: the checks at 60, 120, ... 420 each shed
    # one bucket (goal min(24, 1)), also after a decision at 60 that ran only the first check.
    t = table_of(20, max_size=2)
    t.expire(60.0)
    assert len(t.entries) == 19
    t.expire(420.0)
    assert len(t.entries) == 13


def test_counting_checks_of_a_table_that_fills_later_are_not_skipped():
    # Not full at 60: a counting check. Full from then on: the checks at 120 .. 420 shed (the
    # counting steps done at 60 must end at 60, not run ahead).
    t = table_of(2, max_size=2)
    t.expire(60.0)
    assert t.counter == 2 and t.next_check == 120.0
    t.entries.update({f"0.0.0.{v}": Entry(-1000.0) for v in range(3, 21)})
    t.expire(420.0)
    assert len(t.entries) == 14


@pytest.mark.parametrize("n, max_size, until", [
    (3, 10, 5 * DAY + 90),          # never full: counting and full checks only
    (200, 2, 2 * 3600 + 30),        # over-full across full checks (1800, 3600)
    (40, 2, DAY + 1830),            # over-full, then a full check a day on drops the rest
])
def test_checks_skipped_in_one_step_end_as_every_minutes_check_would(n, max_size, until):
    # the kernel's timer: one check a minute; expire(now) runs all due by now, some in one step
    once, stepwise = table_of(n, max_size), table_of(n, max_size)
    once.expire(float(until))
    for minute in range(1, int(until // 60) + 1):
        stepwise.expire(minute * 60.0)
    stepwise.expire(float(until))
    assert sorted(once.entries) == sorted(stepwise.entries)
    assert (once.counter, once.next_check, once.rover) == \
        (stepwise.counter, stepwise.next_check, stepwise.rover)


def test_a_table_that_fills_just_before_a_full_check_sheds_after_it_minute_by_minute():
    # 29 counting checks (60 .. 1740) bring the counter to 30; then the table fills. The full
    # check at 1800 runs, and the over-full checks after it shed every minute: no run of checks
    # is skipped while the table is full.
    once, stepwise = table_of(2, max_size=2), table_of(2, max_size=2)
    for t in (once, stepwise):
        t.expire(1740.0)
        assert t.counter == 30
        t.entries.update({f"0.0.0.{v}": Entry(-1000.0) for v in range(3, 21)})
    once.expire(7230.0)
    for minute in range(30, 121):
        stepwise.expire(minute * 60.0)
    stepwise.expire(7230.0)
    assert len(once.entries) == 2
    assert sorted(once.entries) == sorted(stepwise.entries)
    assert (once.counter, once.next_check, once.rover) == \
        (stepwise.counter, stepwise.next_check, stepwise.rover)


def test_lblc_and_lblcr_decide_on_the_system_clock(sched):
    svc = make(sched, [1, 1])                  # no fake clock: time.monotonic
    assert to(svc) == "A" and to(svc, "10.1.0.2") == "A"


@pytest.mark.parametrize("b_active, overloaded", [(2, True), (3, False)])
def test_overloaded_needs_a_server_under_half_its_weight(sched, b_active, overloaded):
    # is_overloaded(): activeconns * 2 < weight for some server; B weight 5: 2 * 2 < 5, 3 * 2 not
    svc, _ = make_loc(sched, [1, 5])
    assert to(svc) == "A"
    load(svc, (2, 0), (b_active, 0))       # A over its weight (2 > 1)
    assert to(svc) == ("B" if overloaded else "A")


def test_a_server_without_a_slot_reads_idle_in_the_overload_check(sched):
    # The Director binds slots after a reconcile: B, added since, has none and reads 0 active,
    # so A over its weight is overloaded (B: 0 * 2 < 1) and the flow is remapped to B.
    svc, _ = make_loc(sched, [1, 1])
    assert to(svc) == "A"
    svc.dests[1].slot = None
    svc.dests[0].stats.active[0] = 2
    assert to(svc) == "B"


def test_the_first_over_full_pass_starts_at_bucket_1():
    # The kernel's table is zeroed (rover 0) and each pass steps j = (j + 1) & mask before it
    # looks: bucket 1 comes first, bucket 0 last. hash_32(v, 10) = (v * 0x61C88647 mod 2**32)
    # >> 22 (include/linux/hash.h, GOLDEN_RATIO_32): 221.192.0.0 = 0xDDC00000 lands in bucket
    # 1, 0.0.0.3 in 149, 0.0.0.1 in 391. Three over max_size 2: goal 1, so the one bucket-1
    # entry goes and the pass stops there.
    from lb.schedulers.locality import LocalityTable
    for v, bucket in [(0xDDC00000, 1), (3, 149), (1, 391)]:
        assert (v * 0x61C88647 % 2**32) >> 22 == bucket
    t = LocalityTable()
    t.max_size = 2
    t.entries = {dst: Entry(-1000.0) for dst in ("221.192.0.0", "0.0.0.3", "0.0.0.1")}
    t.expire(0.0)
    t.expire(60.0)
    assert sorted(t.entries) == ["0.0.0.1", "0.0.0.3"]
    assert t.rover == 1
