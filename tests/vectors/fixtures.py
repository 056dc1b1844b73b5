"""A director declared as data, provisioned into a Forwarder, and vector lists run through it.

Katran's testing/fixtures + katran_tester are the model: the configuration is a value, the
packets are a list of ``{description, input, expected, verdict, reason}``, and one runner feeds
the list, in order, to the data plane, checking each result.

A vector::

    {"description": str,              # names the vector in ids and in failure messages
     "input":    scapy Ether packet as it arrives at the director (on interface slot 0), or
                 bytes for a frame scapy would not build,
     "expected": None (nothing sent), a packet, or a list of them; a packet may be given as
                 (ifslot, packet) when it leaves elsewhere than slot 0,
     "verdict":  "forward" | "pass" | "drop",
     "reason":   None, or a reason name (lb._forward.REASON_NAMES): why it was passed or
                 dropped, or "frag_needed" when what was sent is the ICMP error that replaced it}

Vector i runs at NOW + i * STEP seconds. Expected packets leave ``len``/``chksum`` unset where
they can: scapy computes them from scratch, so a vector also checks the core's incremental
checksum updates.
"""
from collections import Counter
from dataclasses import dataclass

from lb._forward import REASON_NAMES, Forwarder
from tests.vectors.checks import assert_checksums, assert_same_fields

NOW = 1000.0
STEP = 0.001
VECTOR_KEYS = {"description", "input", "expected", "verdict", "reason"}
VERDICTS = ("forward", "pass", "drop")

# The fast path's forwarding codes by the configuration's mode names (fastpath/names.py
# FORWARDS order); test_fastpath_vectors checks them against lb.modes.
FWD_CODES = {"masq": 0, "route": 1, "tunnel": 2, "fullnat": 3, "enat": 4}


# --- the director, declared -----------------------------------------------------------------
@dataclass(frozen=True)
class InterfaceSetup:
    slot: int
    ifindex: int
    mac: str
    mtu: int = 1500
    addr: str | None = None          # the director's address there (TUN's outer source)


@dataclass(frozen=True)
class VirtualService:
    slot: int
    proto: int                       # 6, 17; 0 for a firewall-mark service
    vip: str | None
    port: int
    persistent: float = 0            # -p seconds
    netmask: str = "255.255.255.255"  # -M
    onepacket: bool = False          # -o
    fwmark: int = 0                  # -f: then `keys` [(proto, vip, port)] select it
    keys: tuple = ()
    laddrs: tuple = ()               # FULLNAT: local-address slots, used in turn
    enat_laddr: int = -1             # ENAT: the local-address slot of the VIP's own port pool


@dataclass(frozen=True)
class Destination:
    slot: int
    service: int                     # its VirtualService's slot
    rip: str
    port: int                        # 0: the packet's own port
    mode: str = "masq"               # a FWD_CODES name


@dataclass(frozen=True)
class LocalAddress:
    slot: int
    addr: str
    low: int = 1025
    high: int = 65535


@dataclass(frozen=True)
class DirectorSetup:
    interfaces: tuple
    routes: tuple = ()               # (prefix, prefixlen, gateway or None, ifslot)
    neighbours: tuple = ()           # (ip, mac) on slot 0, or (ip, mac, ifslot)
    services: tuple = ()
    dests: tuple = ()
    laddrs: tuple = ()
    toa: tuple = (True, False)       # TOA on the SYN, on the first ACK (the core's default)
    timeouts: tuple = ()             # (ConnState name, seconds)
    max_conns: int = 1024


class TurnScheduler:
    """What the vectors assume of the control plane: a new flow gets its service's
    destinations in turn (in the order declared; with one, always that one), or `pick`
    when given. Records every call (`calls`, `nflows`)."""

    _UNSET = object()

    def __init__(self, director, pick=_UNSET):
        self.slots = {}
        for d in director.dests:
            self.slots.setdefault(d.service, []).append(d.slot)
        self.turn = Counter()
        self.pick = pick
        self.calls = []

    def __call__(self, flows):
        self.calls.append(list(flows))
        return [self._one(svc) for svc, *_ in flows]

    def _one(self, svc):
        if self.pick is not TurnScheduler._UNSET:
            return self.pick
        slots = self.slots.get(svc)
        if not slots:
            return -1
        self.turn[svc] += 1
        return slots[(self.turn[svc] - 1) % len(slots)]

    @property
    def nflows(self):
        return sum(len(c) for c in self.calls)


def mac_bytes(s):
    return bytes.fromhex(s.replace(":", ""))


def install(fwd, director):
    """Write `director` into a Forwarder (or anything with its configuration API)."""
    for i in director.interfaces:
        fwd.set_interface(i.slot, i.ifindex, mac_bytes(i.mac), i.mtu, addr=i.addr)
    if director.routes:
        fwd.set_routes(director.routes)
    for ip, mac, *slot in director.neighbours:
        fwd.set_neighbour(ip, slot[0] if slot else 0, mac_bytes(mac))
    for a in director.laddrs:
        fwd.set_laddr(a.slot, a.addr, a.low, a.high)
    for s in director.services:
        fwd.set_service(s.slot, s.proto, s.vip, s.port, persistent=s.persistent,
                        netmask=s.netmask, onepacket=s.onepacket, fwmark=s.fwmark,
                        keys=list(s.keys) or None, laddrs=s.laddrs, enat_laddr=s.enat_laddr)
    for d in director.dests:
        fwd.set_dest(d.slot, d.service, d.rip, d.port, FWD_CODES[d.mode])
    fwd.set_toa(*director.toa)
    for state, seconds in director.timeouts:
        fwd.set_timeout(state, seconds)
    return fwd


def provision(director, scheduler=None):
    """A fresh Forwarder holding `director`, scheduled by `scheduler` (a new Scheduler of the
    director by default; it stays reachable as fwd.scheduler_cb)."""
    fwd = Forwarder(max_conns=director.max_conns,
                    scheduler_cb=scheduler if scheduler is not None else TurnScheduler(director))
    return install(fwd, director)


# --- running vectors --------------------------------------------------------------------------
def at(i):
    """The clock vector i of a list runs at."""
    return NOW + i * STEP


def expected_frames(vector):
    """The vector's expected output as [(ifslot, packet)]."""
    exp = vector["expected"]
    if exp is None:
        return []
    frames = exp if isinstance(exp, list) else [exp]
    return [e if isinstance(e, tuple) else (0, e) for e in frames]


def check(result, vector, frames=True):
    """Raise AssertionError unless `result` (process()'s) is what `vector` expects; with
    frames=False only the verdict and the reason are compared."""
    verdict, reason, out = result
    want = (vector["verdict"], vector["reason"])
    if (verdict, reason) != want:
        raise AssertionError(f"verdict/reason {(verdict, reason)}, expected {want}")
    if not frames:
        return
    expected = expected_frames(vector)
    if len(out) != len(expected):
        raise AssertionError(f"{len(out)} frames sent, expected {len(expected)}")
    for k, ((slot, frame), (want_slot, pkt)) in enumerate(zip(out, expected)):
        try:
            if slot != want_slot:
                raise AssertionError(f"sent on interface slot {slot}, expected {want_slot}")
            assert_same_fields(frame, pkt)
            assert_checksums(frame)
            if frame != bytes(pkt):
                raise AssertionError(f"bytes differ:\n  got      {frame.hex()}\n"
                                     f"  expected {bytes(pkt).hex()}")
        except AssertionError as e:
            raise AssertionError(f"frame {k}: {e}") from None


def run(fwd, vectors, start=0, frames=True):
    """Run `vectors` in order through `fwd`, checking each; vector k runs at at(start + k).
    A failure names the vector. Returns the results."""
    results = []
    for k, v in enumerate(vectors):
        result = fwd.process(bytes(v["input"]), now=at(start + k))
        try:
            check(result, v, frames)
        except AssertionError as e:
            raise AssertionError(f"vector {start + k} {v['description']!r}: {e}") from None
        results.append(result)
    return results


def index_of(vectors, vector):
    return next(i for i, v in enumerate(vectors) if v is vector)


def named(vectors, description):
    """The vector of `vectors` with this description."""
    for v in vectors:
        if v["description"] == description:
            return v
    raise KeyError(f"no vector {description!r}")


def check_vector(director, vectors, vector, scheduler=None):
    """`vector`, on a fresh director, after the vectors before it in `vectors` (it may rely on
    the connections they opened); those are held to their verdicts and reasons only."""
    i = index_of(vectors, vector)
    fwd = provision(director, scheduler)
    run(fwd, vectors[:i], frames=False)
    run(fwd, [vector], start=i)
    return fwd


def reason_counts(fwd):
    c = fwd.counters()
    return {name: c[name] for name in REASON_NAMES[1:] if c[name]}


def expected_counts(vectors, side_counts=None):
    """The reason counters a fresh director holds after `vectors`: one per vector with a
    reason, plus `side_counts` (counters a forwarded frame bumps, such as toa_no_room)."""
    counts = Counter(v["reason"] for v in vectors if v["reason"])
    counts.update(side_counts or {})
    return dict(counts)


def description(vector):
    """pytest ids: the vector's description."""
    return vector["description"]


def well_formed(vectors):
    """Raise AssertionError naming the first malformed vector of the list."""
    seen = set()
    for v in vectors:
        d = v.get("description")
        problems = [
            set(v) != VECTOR_KEYS and f"keys {sorted(v)}",
            d in seen and "a duplicate description",
            v.get("verdict") not in VERDICTS and f"verdict {v.get('verdict')!r}",
            (v.get("expected") is None) != (v.get("verdict") != "forward")
            and "a frame is expected exactly when the verdict is forward",
            v.get("verdict") != "forward" and v.get("reason") is None and "no reason given",
            v.get("verdict") == "forward" and v.get("reason") not in (None, "frag_needed")
            and "a forwarded frame has no reason (but an ICMP error's frag_needed)",
            v.get("reason") is not None and v.get("reason") not in REASON_NAMES
            and f"unknown reason {v.get('reason')!r}",
        ]
        problems = [p for p in problems if p]
        if problems:
            raise AssertionError(f"vector {d!r}: {'; '.join(problems)}")
        seen.add(d)


# --- building vectors --------------------------------------------------------------------------
def forwarded(description, pair, reason=None):
    """A vector from an (input, expected) pair."""
    pin, exp = pair
    return {"description": description, "input": pin, "expected": exp,
            "verdict": "forward", "reason": reason}


def not_forwarded(description, pin, verdict, reason):
    return {"description": description, "input": pin, "expected": None,
            "verdict": verdict, "reason": reason}
