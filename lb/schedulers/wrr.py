# Interleaved weighted round robin (ip_vs_wrr.c): walk the list taking the first non-OVERLOADed
# destination with weight >= cw; at the end of the list cw -= di (gcd of the weights) and wrap,
# and when cw <= 0 it restarts at mw (max weight - (di - 1)). Weights 4,3,2 give A A B A B C A B C.
from __future__ import annotations

from math import gcd

from lb.schedulers.base import Scheduler

HEAD = -1  # position "before the first destination", the kernel's list head


class WeightedRoundRobin(Scheduler):
    name = "wrr"

    def __init__(self, service) -> None:
        self.cw = 0
        super().__init__(service)
        self.cw = self.mw  # ip_vs_wrr_init_svc

    def update_service(self, service) -> None:
        """ip_vs_wrr_dest_changed: back to the head, recompute di/mw, keep cw in step."""
        weights = [d.weight for d in service.dests if d.weight > 0]
        self.pos = HEAD
        self.di = gcd(*weights) if weights else 1
        self.mw = max([d.weight for d in service.dests], default=0) - (self.di - 1)
        if self.cw > self.mw or self.cw == 0:
            self.cw = self.mw
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1

    def _eligible(self, dest) -> bool:
        return not dest.overloaded and dest.weight >= self.cw

    def schedule(self, service, flow):
        if self.mw == 0:
            return None
        dests, last, stop = service.dests, self.pos, None
        last_pass = restarted = False
        i = last
        while True:
            for i in range(i + 1, len(dests)):
                if self._eligible(dests[i]):
                    self.pos = i
                    return dests[i]
                if i == stop:
                    self.pos = i
                    return None
            i = HEAD
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                # Every destination has been tried at weight >= 1 (kernel: err_over).
                if last_pass or last == HEAD:
                    self.pos = HEAD
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != HEAD:
                stop = last  # the first weight->=1 pass only covered dests after 'last'

    def c_program(self, service) -> dict:
        # cw as a fresh instance has it; an update carries the C walk's cw through the rule
        # update_service applies (fastpath/sched.pxi sched_carry).
        return {"kind": "wrr", "cw": self.cw, "mw": self.mw, "di": self.di}
