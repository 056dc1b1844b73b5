# Shortest expected delay (ip_vs_sed.c): the server with the least (active + 1) / weight,
# cross-multiplied, the earlier one on ties; inactive connections do not count. An idle server
# of the highest weight cannot be beaten (1 / max weight is the floor), so the walk stops there.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


class ShortestExpectedDelay(LoadScheduler):
    name = "sed"

    def update_service(self, service) -> None:
        super().update_service(service)
        self.max_weight = max((w for _, w, _ in self.cands), default=0)

    def pick(self, service, flow, active, inactive):
        least, loh, lw, top = None, 1, 0, self.max_weight
        for dest, w, flags in self.cands:   # lw = 0: the first available one wins
            doh = active[dest.slot] + 1
            if loh * w > doh * lw and not (flags and OVERLOAD in flags):
                least, loh, lw = dest, doh, w
                if doh == 1 and w == top:
                    break
        return least
