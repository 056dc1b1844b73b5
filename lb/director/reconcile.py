"""Reconcile: take the fast path from what it holds to what the configuration says.

Rules (Seesaw's engine/vserver.go works the same way):
- The configuration is the desired state. `desired(config)` expands it into maps keyed by value
  (services by their key, servers by (service key, RIP, port)) of exactly what the fast path
  and the ingress table are given: no object identity, nothing written onto the model.
- `Applied` is what the fast path holds: the same specs, each with the slot it sits in.
- `plan(applied, desired, limits, ...)` is pure. It returns the operations that take the fast
  path from `applied` to `desired`, the `Applied` that results, and for every operation the
  ones that undo it. Only what differs becomes an operation, so adding one service costs that
  service's operations and one nftables delta. Slots are handed out lowest free first. Every
  fast-path limit is checked here, before anything is pushed: a plan that does not fit raises
  LimitError, and neither the fast path nor the configuration changes.
- `execute(plan, fastpath, ingress)` pushes it. If the fast path or nftables refuses part-way,
  what was pushed is undone, so the fast path is again exactly `applied`.
- A deleted server's slot is retired, not freed, while connections still hold it (their
  counters live there); a port pool no longer named stays while it has ports lent. `release()`
  frees both once idle, read through the two callables the caller gives (`holds`, `lent`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from lb import modes
from lb.director.config import TIMEOUT_STATES
from lb.director.model import ENAT, PROTO_NUMBERS
from lb.schedulers import program


class LimitError(Exception):
    """The plan does not fit one of the fast path's tables; one line naming the limit."""


@dataclass(frozen=True)
class ServiceSpec:
    proto: int
    vip: str
    port: int
    persistent: int
    netmask: str
    onepacket: bool
    fwmark: int
    keys: tuple         # ((proto number, VIP, port), ...) the fast path finds it by
    laddrs: tuple       # FULLNAT local addresses, each a port pool
    enat: bool          # an ENAT server lends ports from the VIP's own pool

    @property
    def pools(self) -> tuple:
        return self.laddrs + ((self.vip,) if self.enat else ())


@dataclass(frozen=True)
class DestSpec:
    addr: str
    port: int
    fwd: int            # the fast path's forwarding code (lb.modes)


@dataclass(frozen=True)
class SchedSpec:
    """What a service's scheduler program is made from (lb.schedulers.program.build)."""
    name: str
    flags: frozenset
    servers: tuple      # program.ServerSpec per server, in the service's list order


@dataclass(frozen=True)
class Desired:
    services: dict      # service key -> ServiceSpec
    dests: dict         # (service key, RIP, port) -> DestSpec
    timeouts: dict      # fast-path state name -> seconds
    drops: frozenset    # nftables drop-set elements (lb.director.nft)
    scheds: dict = field(default_factory=dict)     # service key -> SchedSpec
    parts: dict = field(default_factory=dict, compare=False)   # key -> (Service, expand())

    @property
    def pools(self) -> frozenset:
        return frozenset(a for s in self.services.values() for a in s.pools)


@dataclass(frozen=True)
class Applied:
    services: dict = field(default_factory=dict)   # key -> (slot, ServiceSpec)
    dests: dict = field(default_factory=dict)      # key -> (slot, DestSpec)
    retired: frozenset = frozenset()               # dest slots whose connections still run
    pools: dict = field(default_factory=dict)      # address -> pool slot
    timeouts: dict = field(default_factory=dict)
    drops: frozenset = frozenset()
    scheds: dict = field(default_factory=dict)     # key -> (SchedSpec, its servers' slots)

    def service_slot(self, key) -> int | None:
        entry = self.services.get(key)
        return entry[0] if entry else None

    def dest_slot(self, key) -> int | None:
        entry = self.dests.get(key)
        return entry[0] if entry else None


@dataclass(frozen=True)
class Plan:
    ops: list           # fast-path operations, in order: (method name, *args)
    undo: list          # undo[i]: the operations that reverse ops[i]
    drops_add: frozenset
    drops_remove: frozenset
    after: Applied
    fresh_dests: list   # addresses of servers new to the fast path (their next hop to resolve)


def expand(svc) -> tuple:
    """One service as the fast path and the ingress table take it:
    (spec, dests, drops, sched)."""
    enat = any(d.fwd == ENAT for d in svc.dests)
    keys = tuple((PROTO_NUMBERS[p], vip, port) for p, vip, port in modes.service_keys(svc))
    spec = ServiceSpec(PROTO_NUMBERS[svc.proto], svc.vip, svc.port, svc.persistent, svc.netmask,
                       svc.onepacket, svc.fwmark, keys, tuple(svc.laddrs), enat)
    dests, drops = {}, set(modes.service_drops(svc))
    for d in svc.dests:
        mode = modes.get(d.fwd)
        dests[(svc.key, d.addr, d.port)] = DestSpec(d.addr, d.port, mode.fwd_code)
        drops.update(mode.ingress_drops(svc, d))
    sched = SchedSpec(svc.scheduler, frozenset(svc.sched_flags),
                      tuple(program.spec_of(d) for d in svc.dests))
    return spec, dests, drops, sched


def desired(config, known: dict | None = None) -> Desired:
    """`known`: the `parts` of an earlier Desired. A service object found there is the same
    one, unchanged (Config.copy shares only what a command did not touch), and is not
    expanded again: a command costs its own service, not the whole configuration."""
    known = known or {}
    services, dests, drops, scheds, parts = {}, {}, set(), {}, {}
    for svc in config.services:
        seen = known.get(svc.key)
        part = seen[1] if seen is not None and seen[0] is svc else expand(svc)
        parts[svc.key] = (svc, part)
        services[svc.key] = part[0]
        dests.update(part[1])
        drops.update(part[2])
        scheds[svc.key] = part[3]
    timeouts = {TIMEOUT_STATES[k]: v for k, v in config.timeouts.items()}
    return Desired(services, dests, timeouts, frozenset(drops), scheds, parts)


def release(applied: Applied, holds, lent) -> Applied:
    """Free retired server slots no connection holds, and pools neither named nor lent."""
    named = {a for _, spec in applied.services.values() for a in spec.pools}
    retired = frozenset(s for s in applied.retired if holds(s))
    pools = {a: s for a, s in applied.pools.items() if a in named or lent(s)}
    if retired == applied.retired and pools == applied.pools:
        return applied
    return replace(applied, retired=retired, pools=pools)


def _lowest_free(used, size: int):
    taken = set(used)
    return (s for s in range(size) if s not in taken)


def _check_limits(want: Desired, pools: dict, dest_slots_needed: int, limits: dict) -> None:
    if len(want.services) > limits["services"]:
        raise LimitError(f"the fast path's service table is full ({limits['services']} services)")
    nkeys = sum(len(s.keys) for s in want.services.values())
    if nkeys > limits["service_keys"]:
        raise LimitError(f"the fast path's service key table is full "
                         f"({limits['service_keys']} (protocol, VIP, port) keys)")
    if dest_slots_needed > limits["dests"]:
        raise LimitError(f"the fast path's real server table is full ({limits['dests']} "
                         "servers, counting deleted ones whose connections still run)")
    if len(pools) > limits["laddrs"]:
        raise LimitError(f"the fast path's local address table is full ({limits['laddrs']} "
                         "port pools: FULLNAT local addresses and ENAT VIPs, counting ones "
                         "still lending ports)")


def plan(applied: Applied, want: Desired, limits: dict, holds=lambda s: False,
         lent=lambda s: 0) -> Plan:
    applied = release(applied, holds, lent)
    ops, undo = [], []

    def push(op, *reverse):
        ops.append(op)
        undo.append(list(reverse))

    # Everything the result needs is counted first: plan() pushes nothing, but a plan that
    # does not fit must not even be half-built.
    pools = dict(applied.pools)
    new_pools = sorted(want.pools - pools.keys())
    kept = [k for k in applied.dests if k in want.dests]
    new_dests = len(want.dests) - len(kept)
    _check_limits(want, {**pools, **dict.fromkeys(new_pools)},
                  len(applied.dests) + len(applied.retired) + new_dests, limits)
    # Port pools: the ones named keep their slot; a new one takes the lowest free.
    for addr, slot in zip(new_pools, _lowest_free(pools.values(), limits["laddrs"])):
        pools[addr] = slot
        push(("set_laddr", slot, addr))       # an unused pool needs no undo
    # Servers that go: their slot is retired (connections keep flowing and counting there).
    dests, retired = dict(applied.dests), set(applied.retired)
    for key in [k for k in dests if k not in want.dests]:
        slot, spec = dests.pop(key)
        retired.add(slot)
        push(("clear_dest", slot), ("set_dest", slot, applied.services[key[0]][0], spec, False))
    services = dict(applied.services)
    for key in [k for k in services if k not in want.services]:
        slot, spec = services.pop(key)
        old_sched = [("set_scheduler", slot, *applied.scheds[key])] if key in applied.scheds else []
        push(("clear_service", slot), ("set_service", slot, spec, _pool_slots(spec, pools)),
             *old_sched)
    # Services that come or change.
    free = _lowest_free([s for s, _ in services.values()], limits["services"])
    for key, spec in want.services.items():
        old = services.get(key)
        if old and old[1] == spec:
            continue
        slot = old[0] if old else next(free)
        services[key] = (slot, spec)
        reverse = ("set_service", slot, old[1], _pool_slots(old[1], pools)) if old \
            else ("clear_service", slot)
        push(("set_service", slot, spec, _pool_slots(spec, pools)), reverse)
    # Servers that come or change: a new one starts with zeroed counters (reset).
    free = _lowest_free([s for s, _ in dests.values()] + list(retired), limits["dests"])
    fresh = []
    for key, spec in want.dests.items():
        old = dests.get(key)
        if old and old[1] == spec:
            continue
        slot = old[0] if old else next(free)
        dests[key] = (slot, spec)
        svc_slot = services[key[0]][0]
        if old:
            push(("set_dest", slot, svc_slot, spec, False), ("set_dest", slot, svc_slot, old[1], False))
        else:
            fresh.append(spec.addr)
            push(("set_dest", slot, svc_slot, spec, True), ("clear_dest", slot))
    # Scheduler programs: remade when the servers, their weights, thresholds or slots, the
    # scheduler or its flags change; the fast path carries the decisions' state over.
    scheds = {}
    for key, sspec in want.scheds.items():
        entry = (sspec, tuple(dests[(key, s.addr, s.port)][0] for s in sspec.servers))
        scheds[key] = entry
        old = applied.scheds.get(key)
        if old != entry:
            slot = services[key][0]
            push(("set_scheduler", slot, *entry), *([("set_scheduler", slot, *old)] if old else []))
    for state, seconds in want.timeouts.items():
        if applied.timeouts.get(state) != seconds:
            old = applied.timeouts.get(state)
            push(("set_timeout", state, seconds), *([("set_timeout", state, old)] if old else []))
    after = release(Applied(services, dests, frozenset(retired), pools, dict(want.timeouts),
                            want.drops, scheds), holds, lent)
    return Plan(ops, undo, want.drops - applied.drops, applied.drops - want.drops, after, fresh)


def _pool_slots(spec: ServiceSpec, pools: dict) -> tuple:
    """(FULLNAT pool slots, ENAT pool slot or -1) for set_service."""
    return tuple(pools[a] for a in spec.laddrs), pools[spec.vip] if spec.enat else -1


def push_op(fastpath, op, lport_range=(1025, 65535)) -> None:
    """One operation of a plan, through the FastPath interface (lb.director.fastpath)."""
    name, *args = op
    if name == "set_laddr":
        slot, addr = args
        fastpath.set_laddr(slot, addr, *lport_range)
    elif name == "set_service":
        slot, spec, (laddrs, enat_laddr) = args
        fastpath.set_service(slot, spec.proto, spec.vip, spec.port, persistent=spec.persistent,
                             netmask=spec.netmask, onepacket=spec.onepacket, fwmark=spec.fwmark,
                             keys=list(spec.keys), laddrs=list(laddrs), enat_laddr=enat_laddr)
    elif name == "set_dest":
        slot, svc_slot, spec, reset = args
        fastpath.set_dest(slot, svc_slot, spec.addr, spec.port, spec.fwd, reset=reset)
    elif name == "set_scheduler":
        slot, sspec, slots = args
        fastpath.set_scheduler(slot, program.build(sspec.name, sspec.flags, sspec.servers, slots))
    else:                                       # clear_service, clear_dest, set_timeout
        getattr(fastpath, name)(*args)


def execute(p: Plan, fastpath, ingress, lport_range=(1025, 65535)) -> None:
    """Push `p`; on any refusal undo what was pushed, in reverse, and raise it again."""
    done = 0
    try:
        for op in p.ops:
            push_op(fastpath, op, lport_range)
            done += 1
        ingress.update(p.drops_add, p.drops_remove)
    except Exception:
        for reverse in reversed(p.undo[:done]):
            for op in reverse:
                push_op(fastpath, op, lport_range)
        raise
