# Weighted least connection (ip_vs_wlc.c): the server with the least ((active << 8) + inactive)
# / weight, compared cross-multiplied (D beats B when oh(B) * w(D) > oh(D) * w(B)), the earlier
# one on ties; weight 0 and OVERLOAD skipped. lblc and lblcr fall back to this same pick.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD, LoadScheduler


def least_loaded(cands, active, inactive):
    """wlc over (server, weight, flags), in the kernel's two stages: the first available
    server, then every later one that beats it. OVERLOAD is only looked at for a server that
    would win (skipping one that would not changes nothing), and an idle server cannot be
    beaten, so the walk stops there."""
    walk = iter(cands)
    for least, lw, flags in walk:
        if not (flags and OVERLOAD in flags):
            slot = least.slot
            loh = (active[slot] << 8) + inactive[slot]
            break
    else:
        return None
    if loh:
        for dest, w, flags in walk:
            slot = dest.slot
            doh = (active[slot] << 8) + inactive[slot]
            if loh * w > doh * lw and not (flags and OVERLOAD in flags):
                least, loh, lw = dest, doh, w
                if not doh:
                    break
    return least


class WeightedLeastConnection(LoadScheduler):
    name = "wlc"

    def pick(self, service, flow, active, inactive):
        return least_loaded(self.cands, active, inactive)
