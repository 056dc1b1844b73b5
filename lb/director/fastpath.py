"""The fast path as the Director sees it: a small interface, the real one (lb._forward.Forwarder)
and a fake (Seesaw's ncc/client/dummy.go plays the same part) that keeps the same tables in
Python, refuses what the real one refuses, and records every operation, so the Director and
the reconcile step are tested without root, rings or the extension's packet loop."""
from __future__ import annotations

from typing import Protocol

from lb._forward import LIMITS

_ZERO = {"active": 0, "inactive": 0, "conns": 0,
         "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0}


class FastPath(Protocol):
    """What reconcile pushes and the control plane reads; lb._forward.Forwarder has all of it."""

    active: object          # ActiveConn per destination slot (a flat view)
    inactive: object        # InActConn per destination slot

    def set_service(self, slot, proto, vip, vport, *, persistent, netmask, onepacket, fwmark,
                    keys, laddrs, enat_laddr) -> None: ...
    def clear_service(self, slot) -> None: ...
    def set_dest(self, slot, svc, rip, rport, fwd, reset=False) -> None: ...
    def clear_dest(self, slot) -> None: ...
    def set_scheduler(self, slot, program) -> None: ...
    def set_laddr(self, slot, addr, low, high) -> None: ...
    def laddr_used(self, slot) -> int: ...
    def set_timeout(self, state, seconds) -> None: ...
    def set_toa(self, syn=True, ack=False) -> None: ...
    def dest_counters(self, slot) -> dict: ...
    def zero_dest(self, slot) -> None: ...
    def conns(self) -> list: ...
    def want_neighbour(self, addr): ...
    def set_neighbour(self, addr, ifslot, mac, pin=True) -> None: ...


def _check(slot, limit, what) -> None:
    if not 0 <= slot < limit:
        raise ValueError(f"{what} slot {slot} out of range 0..{limit - 1}")


class FakeFastPath:
    """The fast path's tables in Python. `ops` lists every call that changed them; `fail_at`
    makes the n-th such call (counting from 0) raise, as a refusing fast path would."""

    def __init__(self, limits: dict | None = None):
        self.limits = dict(limits or LIMITS)
        self.services: dict[int, dict] = {}
        self.dests: dict[int, dict] = {}
        self.pools: dict[int, dict] = {}
        self.scheds: dict[int, object] = {}     # service slot -> lb.schedulers.program.Program
        self.timeouts: dict[str, float] = {}
        self.active = [0] * self.limits["dests"]
        self.inactive = [0] * self.limits["dests"]
        self.counts = {}            # dest slot -> cumulative counters
        self.toa = (True, False)
        self.neighbours_wanted: list[str] = []
        self.ops: list[tuple] = []
        self.fail_at: int | None = None
        self.scheduler_cb = None

    def _record(self, *op) -> None:
        if self.fail_at is not None and len(self.ops) == self.fail_at:
            self.fail_at = None
            raise ValueError(f"fake fast path refuses {op[0]}")
        self.ops.append(op)

    def set_service(self, slot, proto, vip, vport, *, persistent=0, netmask="255.255.255.255",
                    onepacket=False, fwmark=0, keys=None, laddrs=(), enat_laddr=-1):
        _check(slot, self.limits["services"], "service")
        keys = list(keys) if fwmark else [(proto, vip, vport)]
        taken = sum(len(s["keys"]) for n, s in self.services.items() if n != slot)
        if taken + len(keys) > self.limits["service_keys"]:
            raise ValueError(f"more than {self.limits['service_keys']} service keys")
        for pool in list(laddrs) + ([enat_laddr] if enat_laddr >= 0 else []):
            _check(pool, self.limits["laddrs"], "local address")
        self._record("set_service", slot)
        self.services[slot] = dict(proto=proto, vip=vip, vport=vport, persistent=persistent,
                                   netmask=netmask, onepacket=onepacket, fwmark=fwmark,
                                   keys=keys, laddrs=list(laddrs), enat_laddr=enat_laddr)

    def clear_service(self, slot):
        _check(slot, self.limits["services"], "service")
        self._record("clear_service", slot)
        self.services.pop(slot, None)
        self.scheds.pop(slot, None)

    def set_scheduler(self, slot, program):
        # What the real one checks before it swaps a program in (fastpath/_forward.pyx).
        _check(slot, self.limits["services"], "service")
        n = len(program.slots)
        for dest in program.slots:
            _check(dest, self.limits["dests"], "destination")
        if any(not 0 <= i < n for i in program.cand) or any(not -1 <= i < n for i in program.table):
            raise ValueError("a scheduler program names a server it does not have")
        self._record("set_scheduler", slot)
        self.scheds[slot] = program

    def set_dest(self, slot, svc, rip, rport, fwd=0, reset=False):
        _check(slot, self.limits["dests"], "destination")
        self._record("set_dest", slot)
        if reset:
            self.active[slot] = self.inactive[slot] = 0
            self.counts[slot] = dict(_ZERO)
        self.dests[slot] = dict(svc=svc, rip=rip, rport=rport, fwd=fwd)

    def clear_dest(self, slot):
        _check(slot, self.limits["dests"], "destination")
        self._record("clear_dest", slot)
        self.dests.pop(slot, None)

    def set_laddr(self, slot, addr, low=1025, high=65535):
        _check(slot, self.limits["laddrs"], "local address")
        self._record("set_laddr", slot)
        used = self.pools[slot]["used"] if self.pools.get(slot, {}).get("addr") == addr else 0
        self.pools[slot] = dict(addr=addr, low=low, high=high, used=used)

    def laddr_used(self, slot):
        return self.pools.get(slot, {}).get("used", 0)

    def set_timeout(self, state, seconds):
        self._record("set_timeout", state)
        self.timeouts[state] = seconds

    def set_toa(self, syn=True, ack=False):
        self.toa = (syn, ack)

    def dest_counters(self, slot):
        return {**self.counts.get(slot, _ZERO), "active": self.active[slot],
                "inactive": self.inactive[slot]}

    def zero_dest(self, slot):
        self.counts[slot] = {**self.counts.get(slot, _ZERO), **{k: 0 for k in _ZERO}}

    def load_counters(self, slot, active, inactive):
        self.active[slot], self.inactive[slot] = active, inactive

    def conns(self, now=None):
        return []

    def want_neighbour(self, addr):
        self.neighbours_wanted.append(addr)
        return None

    def set_neighbour(self, addr, ifslot, mac, pin=True):
        pass


class FakeIngress:
    """The nftables table of lb.director.nft.Ingress as a set; `fail` makes update() raise."""

    def __init__(self):
        self.drops: set = set()
        self.updates = 0
        self.fail: Exception | None = None

    def install(self, local_addrs) -> None:
        self.drops = set()

    def update(self, add, remove) -> None:
        if not add and not remove:
            return                          # as Ingress: an empty delta runs no nft
        if self.fail is not None:
            raise self.fail
        missing = set(remove) - self.drops
        if missing:
            raise AssertionError(f"deleting elements that are not there: {sorted(missing)}")
        self.drops = (self.drops - set(remove)) | set(add)
        self.updates += 1

    def remove(self) -> None:
        self.drops = set()
