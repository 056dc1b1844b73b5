# Locality-based least connection with replication (ip_vs_lblcr.c): a destination address maps
# to a set of servers; use the set's least loaded member (wlc figure) unless overloaded, else add
# the wlc pick to the set. A set unchanged for lblcr_expiration sheds its most loaded member.
from __future__ import annotations

from lb.schedulers.base import OVERLOAD
from lb.schedulers.locality import LocalityScheduler, is_overloaded
from lb.schedulers.wlc import least_loaded


class _ServerSet:
    """members: newest first, as the kernel's list_add_rcu puts them."""
    __slots__ = ("members", "lastmod", "lastuse")

    def __init__(self, dest, now: float) -> None:
        self.members, self.lastmod, self.lastuse = [dest], now, now

    def insert(self, dest, now: float) -> None:
        if dest not in self.members:
            self.members.insert(0, dest)
            self.lastmod = now

    def erase(self, dest, now: float) -> None:
        self.members.remove(dest)
        self.lastmod = now


def _overhead(dest, active, inactive) -> int:
    return (active[dest.slot] << 8) + inactive[dest.slot]


class LocalityReplicated(LocalityScheduler):
    """`clock` may be replaced by a test's fake clock; `table.expiration` is lblcr_expiration.
    Members no longer in the service are skipped by the set's least-loaded pick but can still be
    the one shed as most loaded, as in the kernel (whose removed servers wait in its trash)."""

    name = "lblcr"

    def _set_min(self, en, active, inactive):
        """ip_vs_dest_set_min: least (overhead / weight) member, skipping OVERLOAD and servers
        gone from the service; the first in the set (newest) on ties."""
        least = None
        for dest in en.members:
            if OVERLOAD in dest.flags or dest not in self.members:
                continue
            w = dest.weight
            if least is None:
                if w > 0:
                    least, loh, lw = dest, _overhead(dest, active, inactive), w
                continue
            doh = _overhead(dest, active, inactive)
            if loh * w > doh * lw:
                least, loh, lw = dest, doh, w
        return least

    @staticmethod
    def _set_max(en, active, inactive):
        """ip_vs_dest_set_max: most (overhead / weight) member with weight > 0."""
        most = None
        for dest in en.members:
            w = dest.weight
            if w <= 0:
                continue
            doh = _overhead(dest, active, inactive)
            if most is None or moh * w < doh * mw:
                most, moh, mw = dest, doh, w
        return most

    def pick(self, service, flow, active, inactive):
        now, en = self.lookup(flow)
        if en is None:
            dest = least_loaded(self.cands, active, inactive)
            if dest is not None:        # ip_vs_lblcr_new has no size limit either
                self.table.entries[flow.vaddr] = _ServerSet(dest, now)
            return dest
        en.lastuse = now
        dest = self._set_min(en, active, inactive)
        if len(en.members) > 1 and now > en.lastmod + self.table.expiration:
            most = self._set_max(en, active, inactive)
            if most is not None:
                en.erase(most, now)
        if dest is not None and not is_overloaded(dest, service, active):
            return dest
        dest = least_loaded(self.cands, active, inactive)
        if dest is not None:
            en.insert(dest, now)
        return dest
