# Power of two choices (ip_vs_twos.c): draw two servers at random, weighted by weight (two
# numbers in 0..total weight inclusive, each taking the first server whose running weight sum
# reaches it), and take the second only if its ((active << 8) + inactive) / weight is lower.
from __future__ import annotations

import os
from bisect import bisect_left
from itertools import accumulate

from lb.schedulers.base import OVERLOAD, LoadScheduler


MASK64 = (1 << 64) - 1


class SplitMix64:
    """The generator the fast path's twos draws from (fastpath/sched_walk.pxi splitmix64):
    randrange(n) is the next 64-bit output modulo n, so a Python twos and its C program given
    the same state draw the same servers."""

    def __init__(self, state: int | None = None) -> None:
        self.state = int.from_bytes(os.urandom(8), "little") if state is None else state & MASK64

    def next(self) -> int:
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def randrange(self, n: int) -> int:
        return self.next() % n


class PowerOfTwoChoices(LoadScheduler):
    """`rng` (anything with randrange) may be replaced, e.g. by a seeded random.Random in tests;
    by default a SplitMix64, whose state the C program starts from.

    The draw is over 0..total inclusive, as the kernel's (total + 1) modulus: the first server
    also takes the draw 0, so its share is (w + 1) / (total + 1), the others' w / (total + 1).
    The running sums are kept from the last update and used while no server is OVERLOADed
    (one C-level pass over the flag sets tells), so a decision is a bisect, not a walk.
    """

    name = "twos"

    def __init__(self, service) -> None:
        self.rng = SplitMix64()
        super().__init__(service)

    def update_service(self, service) -> None:
        super().update_service(service)
        self.flagsets = [flags for _, _, flags in self.cands]
        self.sums = list(accumulate(w for _, w, _ in self.cands))

    def pick(self, service, flow, active, inactive):
        cands, sums = self.cands, self.sums
        if any(self.flagsets):
            cands = [c for c in cands if OVERLOAD not in c[2]]
            sums = list(accumulate(w for _, w, _ in cands))
        if not cands:
            return None
        randrange = self.rng.randrange
        d1, w1, _ = cands[bisect_left(sums, randrange(sums[-1] + 1))]
        d2, w2, _ = cands[bisect_left(sums, randrange(sums[-1] + 1))]
        oh1 = (active[d1.slot] << 8) + inactive[d1.slot]
        oh2 = (active[d2.slot] << 8) + inactive[d2.slot]
        return d2 if w2 * oh1 > w1 * oh2 else d1

    def c_program(self, service) -> dict:
        state = self.rng.state if isinstance(self.rng, SplitMix64) else SplitMix64().state
        return {"kind": "twos", "cand": [d for d, _, _ in self.cands], "rng": state}
