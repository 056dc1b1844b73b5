"""twos (ip_vs_twos.c): two weighted random draws in 0..total weight inclusive, each taking the
first server whose running weight sum reaches it; the second wins only with a lower
((active << 8) + inactive) / weight. The RNG is injected: a scripted one, or a seeded Random."""
import random
from collections import Counter

from lb.director.model import OVERLOAD

from tests.unit.schedfakes import FLOW, load, make, picks


class Script:
    """randrange() returning the numbers given, checking the bound the kernel would use."""

    def __init__(self, bound, draws):
        self.bound, self.draws = bound, list(draws)

    def randrange(self, n):
        assert n == self.bound
        return self.draws.pop(0)


def twos(weights, bound, draws):
    svc = make("twos", weights)
    svc.sched.rng = Script(bound, draws)
    return svc


def test_draws_map_to_running_weight_sums():
    # Weights 1, 2, 3: sums 1, 3, 6; draws in 0..6. 0, 1 -> A; 2, 3 -> B; 4, 5, 6 -> C.
    # All idle, so the first draw's server is kept: A gets 2/7 of the draws (it also takes 0).
    svc = twos([1, 2, 3], 7, [r for r in range(7) for _ in range(2)])
    assert picks(svc, 7) == "AABBCCC"


def test_second_choice_only_when_strictly_less_loaded():
    svc = twos([1, 2, 3], 7, [0, 6, 0, 6, 0, 6])
    load(svc, (2, 0), (0, 0), (2, 0))      # A 512/1 vs C 512/3: 3 * 512 > 1 * 512 -> C
    assert picks(svc, 1) == "C"
    load(svc, (1, 0), (0, 0), (3, 0))      # 256/1 vs 768/3: equal -> A (the first draw)
    assert picks(svc, 1) == "A"
    load(svc, (0, 0), (0, 0), (0, 1))      # A idle -> A
    assert picks(svc, 1) == "A"


def test_unavailable_servers_leave_the_draw():
    svc = twos([1, 0, 2, 3], 4, [3, 1, 0, 0])   # D OVERLOADed, B weight 0: A, C; 0..3
    svc.dests[3].flags.add(OVERLOAD)
    assert picks(svc, 2) == "CA"                # 3 -> C (sums 1, 3); 0 -> A


def test_none_available_draws_nothing():
    svc = twos([0, 1], 0, [])
    svc.dests[1].flags.add(OVERLOAD)
    assert svc.schedule(FLOW) is None           # Script would fail on any draw
    assert make("twos", []).schedule(FLOW) is None


class Recorder:
    """A seeded Random whose every randrange(n) is kept, with its bound, for the replay."""

    def __init__(self, seed):
        self.rng, self.draws = random.Random(seed), []

    def randrange(self, n):
        r = self.rng.randrange(n)
        self.draws.append((n, r))
        return r


def test_every_seeded_decision_follows_the_kernel_rule():
    # Weights A=1, B=3 (sums 1, 4): draws in 0..4, 0 and 1 -> A, 2..4 -> B. Each pick adds an
    # inactive connection, so the overhead is the count of picks so far. The second draw wins
    # only when w2 * oh1 > w1 * oh2 (ip_vs_twos_schedule). Replayed from the draws made.
    svc = make("twos", [1, 3])
    svc.sched.rng = rec = Recorder(42)
    got = picks(svc, 4000, bind="inactive")
    assert len(rec.draws) == 8000 and {n for n, _ in rec.draws} == {5}
    weight, count, want = {"A": 1, "B": 3}, {"A": 0, "B": 0}, []
    for i in range(4000):
        d1, d2 = ("A" if r <= 1 else "B" for _, r in rec.draws[2 * i:2 * i + 2])
        pick = d2 if weight[d2] * count[d1] > weight[d1] * count[d2] else d1
        count[pick] += 1
        want.append(pick)
    assert got == "".join(want)
    counts = Counter(got)
    # The load comparison evens the split out towards the weights (1:3); the draws alone
    # would give A (1+1)/5, B 3/5.
    assert 850 < counts["A"] < 1150 and counts["A"] + counts["B"] == 4000


def test_default_rng_needs_no_setup():
    svc = make("twos", [1, 1])
    assert set(picks(svc, 50)) <= {"A", "B"}
