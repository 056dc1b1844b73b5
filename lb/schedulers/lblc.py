# Locality-based least connection (ip_vs_lblc.c): a table maps the packet's destination address
# to the server used last for it; keep using that server while it is in the service, has weight
# and is not overloaded (active > weight while some server has active < weight / 2), else wlc.
from __future__ import annotations

from lb.schedulers.locality import LocalityScheduler, is_overloaded
from lb.schedulers.wlc import least_loaded


class _Entry:
    __slots__ = ("dest", "lastuse")

    def __init__(self, dest, lastuse: float) -> None:
        self.dest, self.lastuse = dest, lastuse


class LocalityLeastConnection(LocalityScheduler):
    """`clock` (seconds) may be replaced, e.g. by a test's fake clock; `table.expiration` is
    the lblc_expiration sysctl. As in the kernel, the cached server is kept even when it
    carries OVERLOAD (only weight 0, removal or the is_overloaded test above drop it), while
    the wlc fallback skips OVERLOADed servers. The key is the flow's destination address:
    with an ordinary VIP service that is the VIP itself, so lblc is for fwmark/transparent
    cache setups, where destinations vary."""

    name = "lblc"

    def pick(self, service, flow, active, inactive):
        now, en = self.lookup(flow)
        if en is not None:
            en.lastuse = now
            dest = en.dest
            if dest in self.members and dest.weight > 0 \
                    and not is_overloaded(dest, service, active):
                return dest
        dest = least_loaded(self.cands, active, inactive)
        if dest is None:
            return None
        table = self.table
        if en is not None:              # ip_vs_lblc_new: replace the entry (kept if the same)
            if en.dest is dest:
                return dest
            del table.entries[flow.vaddr]
        table.entries[flow.vaddr] = _Entry(dest, now)   # no size limit: max_size drives expiry
        return dest
