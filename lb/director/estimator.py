"""The kernel's rate estimator (net/netfilter/ipvs/ip_vs_est.c), for `--rate`, the metrics and
`lbadm top`, computed by lbd from the fast path's cumulative counters.

Every 2 seconds, per service and per server, for each of conns, inpkts, outpkts, inbytes and
outbytes: the change since the last sample, as a per-second rate in fixed point, is folded into
an exponentially weighted moving average of weight 1/4:

    rate = delta << 9              (delta / 2 s, scaled by 2^10: CPS, InPPS, OutPPS)
    rate = delta << 4              (delta / 2 s, scaled by 2^5: InBPS, OutBPS)
    avg += (rate - avg) >> 2       (an arithmetic shift, as on the kernel's s64)

and read back rounded: (avg + 0x1FF) >> 10 for the packet and connection rates, (avg + 0xF)
>> 5 for the byte rates (ip_vs_read_estimator). Zeroing the counters (-Z) zeroes the rates and
takes the counters as they are then as the new starting point (ip_vs_zero_estimator); lbd sees
a zeroing as counters that went down.

A service's figures in the kernel are counters of its own. Here the fast path counts per server
only, so a service's counters are the sum, over the samples, of what its servers gained: a
server deleted takes nothing away from the service, one added brings what it has counted.
"""
from __future__ import annotations

import threading
import time

COLUMNS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATES = ("cps", "inpps", "outpps", "inbps", "outbps")
INTERVAL = 2.0                     # seconds between samples: the kernel's 2*HZ timer
_SHIFT_IN = (9, 9, 9, 4, 4)        # delta per 2 s -> per-second rate in fixed point
_SHIFT_OUT = (10, 10, 10, 5, 5)    # fixed point -> the figure ipvsadm prints
_ROUND = (0x1FF, 0x1FF, 0x1FF, 0xF, 0xF)


class Estimate:
    """One service's or server's estimator: the last counters seen and the five averages."""

    __slots__ = ("last", "avg")

    def __init__(self, counters):
        self.last = tuple(counters)
        self.avg = [0] * len(COLUMNS)

    def sample(self, counters) -> None:
        now = tuple(counters)
        if any(n < last for n, last in zip(now, self.last)):
            self.zero(now)                     # -Z, or a slot reset under us
            return
        for i, (n, last) in enumerate(zip(now, self.last)):
            self.avg[i] += (((n - last) << _SHIFT_IN[i]) - self.avg[i]) >> 2
        self.last = now

    def zero(self, counters) -> None:
        self.last = tuple(counters)
        self.avg = [0] * len(COLUMNS)

    def rates(self) -> dict:
        return {name: (a + r) >> s for name, a, r, s in zip(RATES, self.avg, _ROUND, _SHIFT_OUT)}


ZERO = dict.fromkeys(RATES, 0)


class Estimator:
    """Every service's and server's estimate, sampled from a configuration's servers.

    Keys are a service's key (("tcp", VIP, port) or ("fwm", mark)) and (service key, RIP,
    port) for a server, as lb.director.listings.dest_key makes them. `rates(key)` is safe to
    call from any thread; `sample()` runs in one (lbd's estimator thread)."""

    def __init__(self):
        self.est: dict[tuple, Estimate] = {}
        self.service_totals: dict[tuple, list] = {}   # the service's own cumulative counters
        self.seen: dict[tuple, tuple] = {}            # per server: (slot, counters last sampled)
        self.lock = threading.Lock()

    def rates(self, key) -> dict:
        with self.lock:
            est = self.est.get(key)
            return est.rates() if est is not None else dict(ZERO)

    def sample(self, services) -> None:
        """One 2-second tick over `services` (lb.director.model.Service, servers bound to
        their fast-path slots). Keys no longer configured are forgotten."""
        with self.lock:
            live = set()
            for svc in services:
                live.add(svc.key)
                self._sample_service(svc, live)
            for key in [k for k in self.est if k not in live]:
                del self.est[key]
                self.service_totals.pop(key, None)
                self.seen.pop(key, None)

    def _sample_service(self, svc, live: set) -> None:
        total = self.service_totals.get(svc.key)
        fresh = total is None
        total = total or [0] * len(COLUMNS)
        zeroed = False
        for dest in svc.dests:
            if dest.slot is None:
                continue
            key = (svc.key, dest.addr, dest.port)
            live.add(key)
            c = dest.counters()
            now = tuple(c[name] for name in COLUMNS)
            slot, before = self.seen.get(key, (dest.slot, (0,) * len(COLUMNS)))
            if slot != dest.slot or any(n < b for n, b in zip(now, before)):
                zeroed, before = True, (0,) * len(COLUMNS)   # -Z, or a slot given anew
                self.est.pop(key, None)
            for i, (n, b) in enumerate(zip(now, before)):
                total[i] += n - b
            self.seen[key] = (dest.slot, now)
            self._feed(key, now)
        if zeroed and not fresh:
            total = [sum(self.seen[(svc.key, d.addr, d.port)][1][i] for d in svc.dests
                         if (svc.key, d.addr, d.port) in self.seen) for i in range(len(COLUMNS))]
            self.est[svc.key] = Estimate(total)
        self.service_totals[svc.key] = total
        self._feed(svc.key, total)

    def _feed(self, key, counters) -> None:
        est = self.est.get(key)
        if est is None:
            self.est[key] = Estimate(counters)  # first sight: a starting point, no rate yet
        else:
            est.sample(counters)


class Sampler:
    """A thread that samples `services()` into `estimator` every INTERVAL seconds, on a fixed
    schedule (a late tick does not delay the next), until `stopping` is set."""

    def __init__(self, estimator: Estimator, services, stopping: threading.Event,
                 interval: float = INTERVAL, clock=time.monotonic):
        self.estimator, self.services, self.stopping = estimator, services, stopping
        self.interval, self.clock = interval, clock

    def run(self) -> None:
        self.estimator.sample(self.services())
        due = self.clock() + self.interval
        while not self.stopping.wait(max(0.0, due - self.clock())):
            self.estimator.sample(self.services())
            due += self.interval
            if due < self.clock():                 # fell behind (suspended): catch up once
                due = self.clock() + self.interval
