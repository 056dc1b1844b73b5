"""The table lblc and lblcr share: destination IP -> entry, and the kernel's periodic expiry.

The kernel runs ip_vs_lblc(r)_check_expire from a timer every 60 s. Here there is no timer:
`expire(now)` is called at the start of every decision and runs, in order, every check that
would have fired by `now` (so tests drive it with a fake clock, without sleeping). That is
the same table the kernel would have at that moment: between two decisions nothing touches
the entries but the checks. Runs of checks that cannot change anything are skipped in one
step, so a service idle for days does not pay for every minute of it.

Each check: every 30th is a full check that drops entries unused for `expiration` (24 h,
the lblc(r)_expiration sysctl); the others only count, unless the table holds more than
max_size entries: then entries unused for 6 min are dropped, bucket by bucket from where the
last such pass stopped (the rover), until (entries - max_size) * 4/3 are gone.
"""
from __future__ import annotations

import time

from lb.schedulers.base import LoadScheduler, hash_32, ipv4_int

CHECK_INTERVAL = 60          # CHECK_EXPIRE_INTERVAL
ENTRY_TIMEOUT = 6 * 60       # idle time after which a full table sheds an entry
FULL_EVERY = 30              # COUNT_FOR_FULL_EXPIRATION
DEFAULT_EXPIRATION = 24 * 60 * 60
TAB_BITS = 10                # CONFIG_IP_VS_LBLC_TAB_BITS / CONFIG_IP_VS_LBLCR_TAB_BITS
TAB_SIZE = 1 << TAB_BITS
MAX_SIZE = TAB_SIZE * 16     # tbl->max_size


class LocalityTable:
    """entries: destination address (dotted string) -> an object with a `lastuse` time."""

    def __init__(self, expiration: float = DEFAULT_EXPIRATION) -> None:
        self.entries: dict = {}
        self.expiration = expiration
        self.max_size = MAX_SIZE
        self.rover = 0
        self.counter = 1
        self.next_check = None   # the first check is due a minute after the first decision

    def full(self) -> bool:
        """More entries than max_size: the periodic check drops idle ones (check_expire)."""
        return len(self.entries) > self.max_size

    def expire(self, now: float) -> None:
        if self.next_check is None:
            self.next_check = now + CHECK_INTERVAL
        while self.next_check <= now:
            t = self.next_check
            if self.counter % FULL_EVERY == 0:
                if not self.full():  # until now only counting checks follow, and full
                    # checks every 30: the last of those drops all the earlier ones would.
                    t += (now - t) // (CHECK_INTERVAL * FULL_EVERY) * CHECK_INTERVAL * FULL_EVERY
                self._drop(t, self.expiration)
                self.counter = 1
            elif not self.full():
                # counting checks, up to the next full one or to now, in one step
                steps = min(FULL_EVERY - self.counter % FULL_EVERY,
                            int((now - t) // CHECK_INTERVAL) + 1)
                self.counter += steps
                self.next_check = t + steps * CHECK_INTERVAL
                continue
            else:
                self._shed(t)
            self.next_check = t + CHECK_INTERVAL

    def _drop(self, now: float, idle: float) -> None:
        """ip_vs_lblc(r)_full_check: drop every entry unused for `idle` (now >= lastuse + idle)."""
        stale = [k for k, en in self.entries.items() if now >= en.lastuse + idle]
        for key in stale:
            del self.entries[key]

    def _shed(self, now: float) -> None:
        """The over-full branch of ip_vs_lblc(r)_check_expire."""
        goal = min((len(self.entries) - self.max_size) * 4 // 3, self.max_size // 2)
        buckets: dict[int, list] = {}
        for key, en in self.entries.items():
            if now >= en.lastuse + ENTRY_TIMEOUT:
                buckets.setdefault(hash_32(ipv4_int(key), TAB_BITS), []).append(key)
        j = self.rover
        for _ in range(TAB_SIZE):
            j = (j + 1) & (TAB_SIZE - 1)
            for key in buckets.get(j, ()):
                del self.entries[key]
                goal -= 1
            if goal <= 0:
                break
        self.rover = j


class LocalityScheduler(LoadScheduler):
    """What lblc and lblcr share: `clock` (seconds; a test may put a fake clock here), the
    `table`, and `members`, the servers now in the service (the kernel's
    IP_VS_DEST_CF_AVAILABLE): an entry may still name one that was removed."""

    def __init__(self, service) -> None:
        self.clock = time.monotonic
        self.table = LocalityTable()
        super().__init__(service)

    def update_service(self, service) -> None:
        super().update_service(service)
        self.members = set(service.dests)

    def c_program(self, service) -> None:
        # Not in C (yet): the table is keyed by the flow's destination address, which for an
        # ordinary VIP service is the VIP itself, and its entries must outlive their servers
        # (lblcr's sets keep removed members). These decide in Python, once per batch.
        return None

    def lookup(self, flow):
        """(now, the entry for the flow's destination address or None), once the expiry checks
        due by now have run."""
        now = self.clock()
        self.table.expire(now)
        return now, self.table.entries.get(flow.vaddr)


def is_overloaded(dest, service, active) -> bool:
    """lblc/lblcr is_overloaded: more active connections than weight while some server of the
    service has fewer than half its weight (no OVERLOAD, weight-0 or self exception)."""
    if active[dest.slot] > dest.weight:
        for d in service.dests:
            if active[d.slot] * 2 < d.weight:
                return True
    return False
