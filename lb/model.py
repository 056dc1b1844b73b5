"""Control-plane model: virtual services, their real servers, and the flow a scheduler sees.

Pure data plus two small behaviours (`Service.schedule`, `Service.find_dest`); no sockets.
See docs/internals.md for how the daemon and the fast path use these objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lb import schedulers

# Forwarding methods (ipvsadm -m / -g / -i, DPVS fullnat). Only MASQ is implemented so far.
MASQ = "masq"
ROUTE = "route"
TUNNEL = "tunnel"
FULLNAT = "fullnat"
FWD_METHODS = (MASQ, ROUTE, TUNNEL, FULLNAT)

PROTOCOLS = ("tcp", "udp")
OVERLOAD = "overload"

_ZERO_COUNTERS = {"active": 0, "inactive": 0, "conns": 0,
                  "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0}


@dataclass(eq=False)  # identity equality: schedulers remember *which* server they picked
class RealServer:
    addr: str
    port: int
    weight: int = 1
    fwd: str = MASQ
    slot: int | None = None
    flags: set = field(default_factory=set)
    stats: object = field(default=None, repr=False)   # the Forwarder (or a stand-in in tests)

    def counters(self) -> dict:
        """Live per-destination counters from the fast path; zeros while not attached."""
        if self.stats is None or self.slot is None:
            return dict(_ZERO_COUNTERS)
        return self.stats.dest_counters(self.slot)

    @property
    def active_conns(self) -> int:
        # stats.active / stats.inactive: flat views over the fast path's counters, read per
        # scheduling decision by the least-connection family, so no dict is built here.
        if self.stats is None or self.slot is None:
            return 0
        return self.stats.active[self.slot]

    @property
    def inactive_conns(self) -> int:
        if self.stats is None or self.slot is None:
            return 0
        return self.stats.inactive[self.slot]

    @property
    def overloaded(self) -> bool:
        return OVERLOAD in self.flags

    @property
    def available(self) -> bool:
        # ipvs: a destination is unavailable when its weight is 0 or it carries OVERLOAD.
        return self.weight > 0 and not self.overloaded

    def __str__(self) -> str:
        return f"{self.addr}:{self.port}"


class Service:
    """A virtual service (proto, VIP, port) and its destinations in insertion order."""

    def __init__(self, proto: str, vip: str, port: int, scheduler: str = "wlc"):
        self.proto = proto
        self.vip = vip
        self.port = port
        self.dests: list[RealServer] = []
        self.slot: int | None = None
        self.scheduler = scheduler
        self.sched = schedulers.get(scheduler)(self)  # KeyError on an unknown name

    def set_scheduler(self, name: str) -> None:
        """Switch scheduler; a fresh instance starts from the current destinations."""
        self.sched = schedulers.get(name)(self)
        self.scheduler = name

    def schedule(self, flow: Flow) -> RealServer | None:
        return self.sched.schedule(self, flow)

    def find_dest(self, addr: str, port: int) -> RealServer | None:
        for dest in self.dests:
            if dest.addr == addr and dest.port == port:
                return dest
        return None

    @property
    def key(self) -> tuple:
        return (self.proto, self.vip, self.port)

    def __str__(self) -> str:
        return f"{self.proto.upper()} {self.vip}:{self.port}"

    def __repr__(self) -> str:
        return f"<Service {self} {self.scheduler} dests={self.dests!r}>"


@dataclass(frozen=True)
class Flow:
    """What a scheduler may look at when it picks a destination for a new connection."""
    proto: str
    caddr: str
    cport: int
    vaddr: str
    vport: int
