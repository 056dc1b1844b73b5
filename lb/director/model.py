"""Control-plane model: virtual services, their real servers, and the flow a scheduler sees.

Pure data plus two small behaviours (`Service.schedule`, `Service.find_dest`); no sockets.
See docs/internals.md for how the daemon and the fast path use these objects.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import NamedTuple

from lb import schedulers

# Forwarding methods (ipvsadm -m / -g / -i; DPVS's fullnat and enat), by their config names.
MASQ = "masq"
ROUTE = "route"
TUNNEL = "tunnel"
FULLNAT = "fullnat"
ENAT = "enat"
FWD_METHODS = (MASQ, ROUTE, TUNNEL, FULLNAT, ENAT)

PROTOCOLS = ("tcp", "udp")
FWM = "fwm"     # the protocol of a firewall-mark service (ipvsadm -f)
PROTO_NUMBERS = {"tcp": 6, "udp": 17, FWM: 0}   # IPPROTO_*; a fwmark service has none
DEFAULT_SCHEDULER = "wlc"  # ipvsadm's DEF_SCHED
THRESHOLD_MAX = 2**31 - 1  # ipvsadm -x/-y: string_to_number(optarg, 0, INT_MAX)
OVERLOAD = "overload"

_ZERO_COUNTERS = {"active": 0, "inactive": 0, "conns": 0,
                  "inpkts": 0, "outpkts": 0, "inbytes": 0, "outbytes": 0}


@dataclass(eq=False)  # identity equality: schedulers remember *which* server they picked
class RealServer:
    addr: str
    port: int
    weight: int = 1
    fwd: str = MASQ
    slot: int | None = None   # its fast-path slot, bound by the Director after each reconcile
    flags: set = field(default_factory=set)
    stats: object = field(default=None, repr=False)   # the Forwarder (or a stand-in in tests)
    u_threshold: int = 0    # ipvsadm -x: OVERLOAD at this many connections (0 = no limit)
    l_threshold: int = 0    # ipvsadm -y: OVERLOAD cleared below this (0 = below 3/4 of -x)
    last_weight: int | None = None  # the last non-zero weight (kernel's; mh keeps its entries)

    def __post_init__(self) -> None:
        if self.last_weight is None:
            self.last_weight = self.weight

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

    def __init__(self, proto: str, vip: str, port: int, scheduler: str = DEFAULT_SCHEDULER,
                 sched_flags=(), fwmark: int = 0):
        self.proto = proto       # "tcp", "udp", or FWM for a firewall-mark service
        self.vip = vip
        self.port = port
        self.fwmark = fwmark     # -f: the mark; the service answers on every key in `match`
        self.match: list[tuple[str, str, int]] = []   # fwmark keys: (proto, VIP, port)
        self.persistent = 0      # -p: seconds a client stays on its server; 0 = not persistent
        self.netmask = "255.255.255.255"   # -M: clients sharing one persistence template
        self.onepacket = False   # -o: schedule every datagram, keep no connection
        self.laddrs: list[str] = []   # FULLNAT local addresses (--add-laddr -z LIP)
        self.dests: list[RealServer] = []
        self.sched_flags = frozenset(sched_flags)  # ipvsadm -b, e.g. {"sh-port"}
        self.limited: list[RealServer] = []        # dests with an upper threshold (-x)
        self.scheduler = scheduler
        self.sched = schedulers.get(scheduler)(self)  # KeyError on an unknown name

    def planning_copy(self) -> Service:
        """The same service as data, with servers of its own and a scheduler that is never
        asked: the Director tries a command on such copies before it commits it, and a
        refused command must leave the live schedulers' state untouched."""
        twin = object.__new__(Service)
        twin.__dict__.update(self.__dict__)
        twin.match, twin.laddrs = list(self.match), list(self.laddrs)
        twin.dests = [replace(d, flags=set(d.flags)) for d in self.dests]
        twin.limited = [d for d in twin.dests if d.u_threshold > 0]
        twin.sched = _NOT_ASKED
        return twin

    def same_as(self, other: Service) -> bool:
        """Configured alike: the same key, options and servers in the same order."""
        def servers(svc):
            return [(d.addr, d.port, d.weight, d.fwd, d.u_threshold, d.l_threshold) for d in svc.dests]
        return (self.key, self.scheduler, self.sched_flags, self.persistent, self.netmask,
                self.onepacket, self.match, self.laddrs, servers(self)) == \
            (other.key, other.scheduler, other.sched_flags, other.persistent, other.netmask,
             other.onepacket, other.match, other.laddrs, servers(other))

    def set_scheduler(self, name: str) -> None:
        """Switch scheduler; a fresh instance starts from the current destinations."""
        self.sched = schedulers.get(name)(self)
        self.scheduler = name

    def dests_changed(self) -> None:
        """A destination was added, edited or removed (the kernel's add/upd/del_dest hooks)."""
        self.limited = [d for d in self.dests if d.u_threshold > 0]
        self.sched.update_service(self)

    def schedule(self, flow: Flow) -> RealServer | None:
        # Thresholds. The kernel sets OVERLOAD when a connection is bound to a destination
        # (ip_vs_bind_dest: active + inactive >= -x) and clears it when one is unbound
        # (ip_vs_unbind_dest: below -y, or below 3/4 of -x when -y is 0). Only schedulers read
        # the flag, so it is enough to have it right whenever one runs: here, just before, from
        # the current counts, and just after, for the connection about to be bound to the pick.
        # Between two decisions the counts only fall, as new connections are scheduled here, so
        # "fell below -y at some unbind" is "is below -y now", and a count at or above -x now
        # was set at its bind and not cleared since (with -y <= -x, as ipvsadm users set them).
        # The exceptions: connections the fast path binds by itself (persistence templates) --
        # a burst of those that crosses -x and falls back between -y and -x before the next
        # decision leaves the kernel's flag set and ours not. (Within one batch of new flows the
        # fast path installs, and counts, each connection before it asks for the next.)
        for dest in self.limited:
            total = dest.active_conns + dest.inactive_conns
            low = dest.l_threshold
            if total >= dest.u_threshold:
                dest.flags.add(OVERLOAD)
            elif (total < low) if low else (total * 4 < dest.u_threshold * 3):
                dest.flags.discard(OVERLOAD)
        dest = self.sched.schedule(self, flow)
        if dest is not None and dest.u_threshold \
                and dest.active_conns + dest.inactive_conns + 1 >= dest.u_threshold:
            dest.flags.add(OVERLOAD)
        return dest

    def find_dest(self, addr: str, port: int) -> RealServer | None:
        for dest in self.dests:
            if dest.addr == addr and dest.port == port:
                return dest
        return None

    @property
    def key(self) -> tuple:
        return (FWM, self.fwmark) if self.fwmark else (self.proto, self.vip, self.port)

    def __str__(self) -> str:
        return f"FWM {self.fwmark}" if self.fwmark else f"{self.proto.upper()} {self.vip}:{self.port}"

    def __repr__(self) -> str:
        return f"<Service {self} {self.scheduler} dests={self.dests!r}>"


class _NotAsked:
    """The scheduler of a planning copy: told of changes, never asked for a pick."""

    def update_service(self, service) -> None:
        pass

    def schedule(self, service, flow):
        raise RuntimeError("a planning copy of a service does not schedule")


_NOT_ASKED = _NotAsked()


class Flow(NamedTuple):
    """What a scheduler may look at when it picks a destination for a new connection.
    Addresses are host-order integers as the fast path hands them over (no conversion per
    new flow), or dotted strings where a person writes them (tests); ipv4_int takes both."""
    proto: str
    caddr: int | str
    cport: int
    vaddr: int | str
    vport: int
