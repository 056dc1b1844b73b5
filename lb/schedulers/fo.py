# Weighted fail over (ip_vs_fo.c): every new connection goes to the available server with the
# highest weight, the earlier one in list order on ties. The servers are kept sorted by weight
# (stable) at update time, so a decision walks only past OVERLOADed ones.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


class FailOver(LoadScheduler):
    name = "fo"

    def order(self, cands: list) -> list:
        return sorted(cands, key=lambda c: -c[1])  # sorted() is stable: list order on ties

    def pick(self, service, flow, active, inactive):
        for dest, _, flags in self.cands:
            if not (flags and OVERLOAD in flags):
                return dest
        return None
