# Round robin (ip_vs_rr.c): walk on from the destination picked last, wrapping round the list
# once, and take the first one that is available (weight > 0, not OVERLOADed); the last pick is
# tried last. Removing the last pick moves the position back to its predecessor.
from __future__ import annotations

from lb.schedulers.base import Scheduler


class RoundRobin(Scheduler):
    name = "rr"

    def __init__(self, service) -> None:
        self.last = None  # the RealServer picked last; None = before the first (list head)
        self.pos = -1     # its index, to find the predecessor once it has been removed
        super().__init__(service)

    def update_service(self, service) -> None:
        dests = service.dests
        if self.last is None:
            return
        for i, dest in enumerate(dests):
            if dest is self.last:
                self.pos = i
                return
        # Kernel ip_vs_rr_del_dest: continue from the entry before the removed one.
        self.pos = min(self.pos, len(dests)) - 1
        self.last = dests[self.pos] if self.pos >= 0 else None

    def schedule(self, service, flow):
        dests = service.dests
        n = len(dests)
        start = self.pos + 1
        for k in range(n):              # O(1) when the next one is available, as in the kernel
            i = (start + k) % n
            if dests[i].available:
                self.pos, self.last = i, dests[i]
                return dests[i]
        return None

    def c_program(self, service) -> dict:
        # A fresh program starts at the head; an update keeps the C walk's own position
        # (fastpath/sched.pxi sched_carry, the rule update_service applies above).
        return {"kind": "rr"}
