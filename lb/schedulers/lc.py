# Least connection (ip_vs_lc.c): the server with the least (active << 8) + inactive connections,
# the earlier one in list order on ties. Weights only count as 0 = quiesced; OVERLOADed servers
# are skipped. An idle server cannot be beaten, so the walk stops at the first one.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


class LeastConnection(LoadScheduler):
    name = "lc"

    def pick(self, service, flow, active, inactive):
        least, loh = None, -1
        for dest, _, flags in self.cands:
            slot = dest.slot
            doh = (active[slot] << 8) + inactive[slot]
            # (loh < 0: none yet.) OVERLOAD only matters for a server that would win.
            if (doh < loh or loh < 0) and not (flags and OVERLOAD in flags):
                least, loh = dest, doh
                if not doh:
                    break
        return least
