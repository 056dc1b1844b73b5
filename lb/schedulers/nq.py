# Never queue (ip_vs_nq.c): the first server (list order) with no active connection; if every
# server is busy, shortest expected delay: least (active + 1) / weight, cross-multiplied, the
# earlier one on ties. Weight 0 and OVERLOAD skipped; inactive connections do not count.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


class NeverQueue(LoadScheduler):
    name = "nq"

    def pick(self, service, flow, active, inactive):
        least, loh, lw = None, 1, 0          # lw = 0: the first available one wins
        for dest, w, flags in self.cands:
            doh = active[dest.slot] + 1
            if (doh == 1 or loh * w > doh * lw) and not (flags and OVERLOAD in flags):
                if doh == 1:
                    return dest
                least, loh, lw = dest, doh, w
        return least
