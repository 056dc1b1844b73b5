# Power of two choices (ip_vs_twos.c): draw two servers at random, weighted by weight (two
# numbers in 0..total weight inclusive, each taking the first server whose running weight sum
# reaches it), and take the second only if its ((active << 8) + inactive) / weight is lower.
from __future__ import annotations

import random
from bisect import bisect_left
from itertools import accumulate

from lb.schedulers.base import OVERLOAD, LoadScheduler


class PowerOfTwoChoices(LoadScheduler):
    """`rng` (anything with randrange) may be replaced, e.g. by a seeded random.Random in tests.

    The draw is over 0..total inclusive, as the kernel's (total + 1) modulus: the first server
    also takes the draw 0, so its share is (w + 1) / (total + 1), the others' w / (total + 1).
    The running sums are kept from the last update and used while no server is OVERLOADed
    (one C-level pass over the flag sets tells), so a decision is a bisect, not a walk.
    """

    name = "twos"

    def __init__(self, service) -> None:
        self.rng = random.Random()
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
