"""Base class for schedulers: the kernel's ip_vs_scheduler ops (init, update, schedule).

Also the small pieces several schedulers share: the kernel's hash_32, dotted-quad to host-order
integer, and `LoadScheduler`, which reads the live per-destination connection counters.
"""
from __future__ import annotations

import socket

# lb.model.OVERLOAD; lb.director.model imports this package, so the constant cannot come from there.
OVERLOAD = "overload"


class Scheduler:
    """One instance per service; keeps whatever state the algorithm needs between picks.

    The config calls `update_service` after every destination add, edit or delete (the
    kernel's add_dest/upd_dest/del_dest hooks); `schedule` runs once per new connection.
    """

    name = ""

    def __init__(self, service) -> None:
        self.update_service(service)

    def update_service(self, service) -> None:
        """Destinations changed; rebuild derived state. Default: nothing to do."""

    def schedule(self, service, flow):
        """Return the RealServer for a new connection, or None when none is available."""
        raise NotImplementedError

    def c_program(self, service) -> dict | None:
        """What the fast path needs to make this decision in C (lb/schedulers/program.py):
        {"kind": name, ...the tables built by update_service, servers as objects}. None (the
        default, e.g. for an operator's own scheduler): Python decides."""
        return None


def hash_32(value: int, bits: int) -> int:
    """include/linux/hash.h hash_32: multiply by GOLDEN_RATIO_32, keep the top `bits` bits."""
    return ((value * 0x61C88647) & 0xFFFFFFFF) >> (32 - bits)


def ipv4_int(addr) -> int:
    """Dotted quad (or an integer already) -> host-order integer (the kernel's ntohl(addr))."""
    if type(addr) is int:
        return addr
    return int.from_bytes(socket.inet_aton(addr), "big")


class _Idle:
    """Counters of servers that no fast path counts for: every slot reads 0."""

    def __getitem__(self, slot) -> int:
        return 0


IDLE = _Idle()


class _SlotOrZero:
    """A counter view that reads 0 for a server not yet given a fast-path slot (slot None)."""

    __slots__ = ("view",)

    def __init__(self, view) -> None:
        self.view = view

    def __getitem__(self, slot) -> int:
        return 0 if slot is None else self.view[slot]


class LoadScheduler(Scheduler):
    """A scheduler that reads ActiveConn/InActConn for every decision.

    The counters are read straight from the views RealServer.active_conns reads
    (`stats.active[slot]`, `stats.inactive[slot]`), without the property call per server:
    the views are looked up once per update, the slot per decision (the daemon hands out
    slots after the config has told us about a server). All servers of a service share one
    stats object (Config attaches its own); a server without a slot counts as idle.

    `cands` is (server, weight, flags) for every server with weight > 0, in list order (or
    the order `order` gives); weights change only through update_service. OVERLOAD can be set
    at any time, so picks check it per server they look at: `if flags and OVERLOAD in flags`
    (flags being the server's own set, changed in place), which costs little while no flag
    is set, and lets a walk that stops early stay short.

    In lbd these classes are the definition; the decision itself is made in C from
    `c_program()` (the candidates in walk order), with OVERLOAD kept in C.
    """

    def update_service(self, service) -> None:
        dests = service.dests
        stats = next((d.stats for d in dests if d.stats is not None), None)
        self.views = (IDLE, IDLE) if stats is None else (stats.active, stats.inactive)
        self.cands = self.order([(d, d.weight, d.flags) for d in dests if d.weight > 0])

    def order(self, cands: list) -> list:
        """The order `pick` walks the candidates in; list order unless overridden."""
        return cands

    def c_program(self, service) -> dict | None:
        return {"kind": self.name, "cand": [d for d, _, _ in self.cands]}

    def schedule(self, service, flow):
        active, inactive = self.views
        try:
            return self.pick(service, flow, active, inactive)
        except TypeError:  # some server has no fast-path slot yet (view[None]): it is idle
            return self.pick(service, flow, _SlotOrZero(active), _SlotOrZero(inactive))

    def pick(self, service, flow, active, inactive):
        """The decision, given the counter views (indexed by RealServer.slot)."""
        raise NotImplementedError
