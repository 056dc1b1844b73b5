"""Scheduler programs: what a service's scheduler gives the fast path so that it decides in C.

The kernel splits a scheduler in two: tables rebuilt when servers change (ip_vs_sh_reassign,
ip_vs_mh_populate, ip_vs_wrr_dest_changed) and a decision per connection that only reads them.
Here the Python class is the definition of both. `build()` runs its `update_service` on the
servers (by value, as the reconcile step holds them) and asks it for `c_program()`: its kind and
the tables it built, with servers replaced by their index in the service's list. The fast path
(fastpath/sched*.pxi) then decides exactly as the class's `schedule()` would; the differential
tests in tests/unit/test_schedulers_c_differential.py hold the two to the same picks.

A scheduler whose class has no `c_program` (one loaded from an operator's module) gets the kind
"py": the fast path asks Python for each of its new flows, once per batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from lb import schedulers

SF_FALLBACK = 1     # fastpath/sched.pxi SF_*: sh-fallback / mh-fallback
SF_PORT = 2         # sh-port / mh-port


@dataclass(frozen=True)
class Program:
    kind: int                   # SCHED_KINDS[name] (fastpath/names.py)
    flags: int = 0
    slots: tuple = ()           # per server, in the service's list order
    weights: tuple = ()
    uthr: tuple = ()
    lthr: tuple = ()
    cand: tuple = ()            # server indexes a walk looks at, in its order
    table: tuple = ()           # sh/dh/mh: server index per bucket, -1 for none
    pos: int = -1               # rr/wrr: the last pick (-1: the head)
    last_slot: int = -1
    cw: int = 0                 # wrr
    mw: int = 0
    di: int = 1
    rng: int = 0                # twos: splitmix64 state


@dataclass(frozen=True)
class ServerSpec:
    """One server as its scheduler sees it: the reconcile step's value, no live object."""
    addr: str
    port: int
    weight: int
    last_weight: int
    u_threshold: int
    l_threshold: int


def spec_of(dest) -> ServerSpec:
    return ServerSpec(dest.addr, dest.port, dest.weight, dest.last_weight, dest.u_threshold,
                      dest.l_threshold)


def kinds() -> dict:
    # The compiled fast path's numbering (generated from fastpath/names.py).
    from lb._forward import SCHED_KINDS
    return SCHED_KINDS


def build(name: str, sched_flags, servers, slots) -> Program:
    """The program of scheduler `name` over `servers` (ServerSpec, list order) sitting in the
    fast path's destination `slots`."""
    from lb.director.model import RealServer      # the model imports this package
    dests = [RealServer(s.addr, s.port, s.weight, slot=slot, u_threshold=s.u_threshold,
                        l_threshold=s.l_threshold, last_weight=s.last_weight)
             for s, slot in zip(servers, slots)]
    service = SimpleNamespace(dests=dests, sched_flags=frozenset(sched_flags), limited=[])
    made = schedulers.get(name)(service)
    spec = made.c_program(service) if hasattr(made, "c_program") else None
    if spec is None:
        return Program(kinds()["py"])
    index = {id(d): i for i, d in enumerate(dests)}
    flags = sum(bit for bit, suffix in ((SF_FALLBACK, "-fallback"), (SF_PORT, "-port"))
                if any(f.endswith(suffix) for f in sched_flags))
    return Program(
        kind=kinds()[spec.pop("kind")], flags=flags,
        slots=tuple(slots), weights=tuple(d.weight for d in dests),
        uthr=tuple(d.u_threshold for d in dests), lthr=tuple(d.l_threshold for d in dests),
        cand=tuple(index[id(d)] for d in spec.pop("cand", ())),
        table=tuple(-1 if d is None else index[id(d)] for d in spec.pop("table", ())),
        **spec)
