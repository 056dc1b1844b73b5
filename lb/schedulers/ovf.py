# Overflow (ip_vs_ovf.c): the highest-weight server whose active connections do not exceed its
# weight (active == weight still qualifies: the kernel skips only active > weight), the earlier
# one on ties; weight 0 and OVERLOAD skipped. Servers sorted by weight at update time.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


class Overflow(LoadScheduler):
    name = "ovf"

    def order(self, cands: list) -> list:
        return sorted(cands, key=lambda c: -c[1])  # stable: list order on ties

    def pick(self, service, flow, active, inactive):
        for dest, w, flags in self.cands:
            if not (flags and OVERLOAD in flags) and active[dest.slot] <= w:
                return dest
        return None
