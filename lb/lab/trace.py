"""The sans-IO core of ``lb trace``: frames captured at every hop in, the path each packet
took and what changed on the way out. No sockets and no root: unit tests feed it scapy-built
frames (see tests/unit/test_trace_core.py); :mod:`lb.lab.tracerun` is the shell that
captures.

A traced exchange is one TCP connection or one UDP request/reply (:class:`Traced`). Its
frames are found at every capture point by what no forwarding mode rewrites: a TCP segment
by its sequence numbers (the client's initial sequence number, ISN, is in ``seq`` of every
client->server segment and in ``ack`` of every reply, whatever the addresses and ports have
become), a UDP datagram by a token in its payload. Frames of one packet (the SYN, the SYN-ACK,
...) make a :class:`Journey`; seen at several points in a row with identical bytes (a bridge
passes frames unchanged) they make one :class:`Hop`. Each hop lists its fields and those that
changed since the previous hop.

:func:`check_rewrite` compares a rewrite with what the forwarding mode's class says it does
(``rewrites_in``/``rewrites_out`` in lb/modes/*.py): the test of the data ``lb explain`` prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from socket import inet_aton, inet_ntoa

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from lb.inet import ones_sum
from lb.lab.capture import LINKTYPE_ETHERNET, Frame, Point
from lb.realserver.toa import toa_from_options
from lb.realserver.uoa import uoa_from_ip_options

WINDOW = 1 << 20           # sequence numbers within this much after an ISN are the flow's
BROADCAST = "ff:ff:ff:ff:ff:ff"
# Fields any forwarding hop may change: next-hop MACs and the checksums that follow an edit.
NOISE = frozenset({"eth.src", "eth.dst", "ip.chksum", "outer.chksum", "tcp.chksum", "udp.chksum"})
TOA_FOLLOWS = frozenset({"ip.len", "tcp.dataofs"})     # a TOA lengthens IP and TCP header
UOA_FOLLOWS = frozenset({"ip.len"})                    # a UOA (ENAT UDP) lengthens the IP header
RANK = {"wire": 0, "agent": 0, "host": 1, "decap": 2}   # order of points seen at the same instant
ANY = None


@dataclass(frozen=True)
class Traced:
    """What was traced: a TCP connection or UDP exchange from the client's CIP:cport."""
    proto: str                 # "tcp" or "udp"
    cip: str
    cport: int
    token: bytes = b""         # UDP: the request's payload, echoed in the reply


@dataclass(frozen=True)
class Names:
    """Who an address or a MAC is: {ip: label} (e.g. "VIP", "rs1") and {mac: node}."""
    ips: dict = field(default_factory=dict)
    macs: dict = field(default_factory=dict)

    def ip(self, addr) -> str:
        label = self.ips.get(addr)
        return f"{addr} ({label})" if label else str(addr)

    def node(self, mac) -> str:
        if mac == BROADCAST:
            return "broadcast"
        return self.macs.get(mac, mac)


@dataclass
class Hop:
    points: list               # the capture points that saw these bytes, in path order
    ts: float
    data: bytes
    linktype: int
    fields: dict
    changed: dict              # field -> (before, after); before None: added, after None: removed
    sender: str
    receiver: str
    bad_checksums: list
    partial_checksums: list = field(default_factory=list)   # right, left to the receiver to complete
    copies: int = 1            # retransmissions of the same packet seen at the first point

    @property
    def point(self) -> Point:
        return self.points[0]


@dataclass
class Journey:
    """One packet (the SYN, the SYN-ACK, a UDP request...) from hop to hop."""
    label: str
    direction: str             # "in" (client -> server) or "out" (server -> client)
    proto: str
    syn: bool
    hops: list

    def hop_sent_by(self, node: str):
        return next((h for h in self.hops if h.sender == node), None)

    def passes(self, node: str) -> bool:
        return any(node in (h.sender, h.receiver) for h in self.hops)


# -- dissection --------------------------------------------------------------------------------

def dissect(data: bytes, linktype: int = LINKTYPE_ETHERNET):
    """The frame as scapy layers; UDP payloads stay raw bytes (the lab's :5353 is no mDNS)."""
    pkt = Ether(data) if linktype == LINKTYPE_ETHERNET else IP(data)
    outer, ip, l4 = inner(pkt)
    if isinstance(l4, UDP) and not isinstance(l4.payload, Raw) and len(l4.payload):
        start = (14 if linktype == LINKTYPE_ETHERNET else 0) + ip.ihl * 4 + 8 \
            + (outer.ihl * 4 if outer is not None else 0)
        l4.remove_payload()
        l4.add_payload(Raw(data[start:start + max(0, l4.len - 8)]))
    return pkt


def inner(pkt):
    """(outer IP or None, the IP the transport belongs to, TCP/UDP layer or None)."""
    ip = pkt.getlayer(IP)
    if ip is None:
        return None, None, None
    outer = None
    if ip.proto == 4 and isinstance(ip.payload, IP):
        outer, ip = ip, ip.payload
    l4 = ip.payload if isinstance(ip.payload, (TCP, UDP)) else None
    return outer, ip, l4


def fields_of(pkt) -> dict:
    """The fields a learner compares, by name ("eth.dst", "outer.src", "ip.ttl", "tcp.toa"...)."""
    out = {}
    if isinstance(pkt, Ether):
        out["eth.src"], out["eth.dst"] = pkt.src, pkt.dst
    outer, ip, l4 = inner(pkt)
    if outer is not None:
        out.update(_ip_fields("outer", outer))
        out["outer.proto"] = outer.proto
    if ip is not None:
        out.update(_ip_fields("ip", ip))
        uoa, _ = uoa_from_ip_options(bytes(ip)[20:ip.ihl * 4]) if ip.ihl and ip.ihl > 5 else (None, False)
        if uoa:
            out["ip.uoa"] = f"{inet_ntoa(uoa[0])}:{uoa[1]}"
    if isinstance(l4, TCP):
        out.update({"tcp.sport": l4.sport, "tcp.dport": l4.dport, "tcp.flags": str(l4.flags),
                    "tcp.seq": l4.seq, "tcp.ack": l4.ack, "tcp.dataofs": l4.dataofs * 4})
        raw_opts = bytes(l4)[20:l4.dataofs * 4]
        out["tcp.options"] = _options_text(l4)
        toa = toa_from_options(raw_opts)
        if toa:
            out["tcp.toa"] = f"{toa[0]}:{toa[1]}"
        out["tcp.chksum"] = l4.chksum
    elif isinstance(l4, UDP):
        out.update({"udp.sport": l4.sport, "udp.dport": l4.dport, "udp.len": l4.len, "udp.chksum": l4.chksum})
    return out


def _ip_fields(prefix: str, ip) -> dict:
    return {f"{prefix}.src": ip.src, f"{prefix}.dst": ip.dst, f"{prefix}.ttl": ip.ttl,
            f"{prefix}.id": ip.id, f"{prefix}.len": ip.len, f"{prefix}.chksum": ip.chksum}


def _options_text(tcp) -> str:
    """The TCP options but the TOA (shown on its own), e.g. 'MSS=1460 SAckOK TS WScale=7'."""
    parts = []
    for opt in tcp.options:
        name, value = opt if isinstance(opt, tuple) else (opt, None)
        if name in (254, 253) or name == "NOP" or name == "EOL":
            continue
        if name in ("MSS", "WScale"):
            parts.append(f"{name}={value}")
        elif isinstance(name, str):
            parts.append(name)
        else:
            parts.append(f"kind{name}")
    return " ".join(parts)


def bad_checksums(pkt, partial: bool = False) -> list:
    """Names of the checksum fields that do not verify (recomputed by scapy from the bytes).

    `partial`: the frame was captured CHECKSUM_PARTIAL (Frame.partial): its L4 checksum is
    not a checksum yet but the pseudo-header sum the sender's stack left for the NIC (or the
    receiving stack, over veth) to complete; it is bad only when it is not that sum
    (:func:`partial_checksums` names it when it is)."""
    bad = []
    outer, ip, l4 = inner(pkt)
    for prefix, layer in (("outer", outer), ("ip", ip)):
        if layer is not None and _recomputed(layer, IP) != layer.chksum:
            bad.append(f"{prefix}.chksum")
    if l4 is not None and not (isinstance(l4, UDP) and l4.chksum == 0 and not partial):
        name = "tcp.chksum" if isinstance(l4, TCP) else "udp.chksum"
        if not (_partial_sum_ok(ip, l4) if partial else _recomputed(ip, type(l4)) == l4.chksum):
            bad.append(name)
    return bad


def partial_checksums(pkt, partial: bool) -> list:
    """The L4 checksum field's name when the frame is CHECKSUM_PARTIAL and the field holds the
    right pseudo-header sum ("partial (offloaded)" in the views), else []."""
    _, ip, l4 = inner(pkt)
    if not partial or l4 is None or not _partial_sum_ok(ip, l4):
        return []
    return ["tcp.chksum" if isinstance(l4, TCP) else "udp.chksum"]


def _partial_sum_ok(ip, l4) -> bool:
    """The field is the folded, not complemented, sum of the pseudo-header (RFC 793/768: source,
    destination, protocol, L4 length): what __tcp_v4_send_check() and udp4_hwcsum() leave,
    ~tcp_v4_check(len, saddr, daddr, 0), for csum_start/csum_offset to complete."""
    length = ip.len - ip.ihl * 4
    pseudo = inet_aton(ip.src) + inet_aton(ip.dst) + bytes([0, ip.proto]) + length.to_bytes(2, "big")
    return ones_sum(pseudo) == l4.chksum or ones_sum(pseudo) == 0xFFFF and l4.chksum == 0


def _recomputed(ip, layer_type) -> int:
    copy = IP(bytes(ip))
    del copy[layer_type].chksum
    return IP(bytes(copy))[layer_type].chksum


# -- which frames are the traced exchange's ---------------------------------------------------------

def _isns(parsed, traced: Traced):
    """(client ISN, server ISN) from the handshake as captured; None for what was not seen."""
    isn = server = None
    for _, pkt in parsed:
        _, ip, l4 = inner(pkt)
        if not isinstance(l4, TCP) or not l4.flags.S:
            continue
        if isn is None and not l4.flags.A and ip.src == traced.cip and l4.sport == traced.cport:
            isn = l4.seq
        elif isn is not None and server is None and l4.flags.A and l4.ack == (isn + 1) % (1 << 32):
            server = l4.seq
    return isn, server


def _near(value: int, base) -> bool:
    return base is not None and (value - base) % (1 << 32) < WINDOW


def classify(pkt, traced: Traced, isns):
    """(direction, key) of a frame of the traced exchange, or None. The key is what stays the
    same at every hop: sequence numbers, flags and length (TCP), the payload (UDP).

    A client -> server segment has its seq after the client's ISN and (if it acknowledges)
    its ack after the server's; a reply the other way round. Both ISNs are random, so a
    segment of another connection matches by chance once in 2**(32-20) * 2**(32-20)."""
    _, ip, l4 = inner(pkt)
    if traced.proto == "tcp" and isinstance(l4, TCP) and isns[0] is not None:
        isn, server = isns
        flags = l4.flags
        key = (l4.seq, l4.ack if flags.A else 0, int(flags), len(bytes(l4.payload)))
        if flags.S:
            if not flags.A and l4.seq == isn:
                return "in", key
            if flags.A and l4.ack == (isn + 1) % (1 << 32):
                return "out", key
            return None
        if _near(l4.seq, isn) and (not flags.A or _near(l4.ack, server)):
            return "in", key
        if _near(l4.seq, server) and (not flags.A or _near(l4.ack, isn)):
            return "out", key
    elif traced.proto == "udp" and isinstance(l4, UDP) and traced.token:
        payload = bytes(l4.payload)
        if payload == traced.token:
            return "in", payload
        if traced.token in payload:
            return "out", payload
    return None


def flow_frames(frames, traced: Traced) -> list:
    """The frames (of any point) that belong to the traced exchange, in time order."""
    parsed = _parsed(frames)
    isns = _isns(parsed, traced)
    return [f for f, pkt in parsed if classify(pkt, traced, isns)]


def arp_frames(frames, addresses=()) -> list:
    """ARP frames (about `addresses` if given), in time order."""
    out = []
    for f, pkt in _parsed(frames):
        arp = pkt.getlayer(ARP)
        if arp is not None and (not addresses or arp.pdst in addresses or arp.psrc in addresses):
            out.append(f)
    return out


def _parsed(frames) -> list:
    ordered = sorted(frames, key=lambda f: (f.ts, RANK.get(f.point.kind, 9)))
    return [(f, dissect(f.data, f.point.linktype)) for f in ordered]


# -- journeys and hops -----------------------------------------------------------------------------

def journeys(frames, traced: Traced, names: Names = Names(), order=None) -> list:
    """Every packet of the traced exchange with its hops, in the order the packets were sent.

    `order` ({point name: rank}) breaks ties between points that saw a frame at the same
    instant; by default a router-side (wire) point comes before the host behind it."""
    parsed = _parsed(frames)
    isns = _isns(parsed, traced)
    groups: dict = {}
    for f, pkt in parsed:
        c = classify(pkt, traced, isns)
        if c:
            groups.setdefault(c, []).append((f, pkt))
    out = [_journey(direction, obs, traced, names) for (direction, _), obs in groups.items()]
    return sorted(out, key=lambda j: j.hops[0].ts)


def _journey(direction: str, observations, traced: Traced, names: Names) -> Journey:
    hops, seen = [], {}
    for f, pkt in observations:
        if f.point.name in seen:          # the same packet again at a point: a retransmission
            seen[f.point.name].copies += 1
            continue
        if hops and hops[-1].data == f.data and hops[-1].linktype == f.point.linktype:
            hops[-1].points.append(f.point)   # passed on unchanged (a bridge)
            seen[f.point.name] = hops[-1]
            continue
        hop = _hop(f, pkt, hops[-1] if hops else None, names)
        hops.append(hop)
        seen[f.point.name] = hop
    _, _, l4 = inner(observations[0][1])
    syn = isinstance(l4, TCP) and bool(l4.flags.S)
    return Journey(_label(l4, direction), direction, traced.proto, syn, hops)


def _hop(f: Frame, pkt, prev, names: Names) -> Hop:
    flds = fields_of(pkt)
    sender, receiver = _ends(f.point, flds, names)
    return Hop(points=[f.point], ts=f.ts, data=f.data, linktype=f.point.linktype, fields=flds,
               changed=changes(prev.fields, flds) if prev else {}, sender=sender, receiver=receiver,
               bad_checksums=bad_checksums(pkt, f.partial),
               partial_checksums=partial_checksums(pkt, f.partial))


def _ends(point: Point, flds: dict, names: Names) -> tuple:
    if point.kind == "decap":
        return f"{point.node} decap", point.node
    if point.kind == "agent":
        return point.node, f"{point.node} agent"
    return names.node(flds.get("eth.src")), names.node(flds.get("eth.dst"))


def changes(before: dict, after: dict) -> dict:
    """{field: (before, after)} of what differs; MACs only when both frames have them."""
    out = {}
    both_eth = "eth.src" in before and "eth.src" in after
    for name in [*before, *(k for k in after if k not in before)]:
        if name.startswith("eth.") and not both_eth:
            continue
        if before.get(name) != after.get(name):
            out[name] = (before.get(name), after.get(name))
    return out


def _label(l4, direction: str) -> str:
    if isinstance(l4, UDP):
        return "UDP request" if direction == "in" else "UDP reply"
    flags = l4.flags
    if flags.R:
        return "TCP RST"
    if flags.S:
        return "TCP SYN-ACK" if flags.A else "TCP SYN"
    if flags.F:
        return "TCP FIN"
    return "TCP data" if len(bytes(l4.payload)) else "TCP ACK"


def highlights(all_journeys) -> list:
    """The journeys a learner reads: the handshake's SYN and SYN-ACK, any RST, the UDP
    request and reply (the rest are in the pcaps)."""
    keep, seen = [], set()
    for j in all_journeys:
        if j.label in ("TCP SYN", "TCP SYN-ACK", "UDP request", "UDP reply") and j.label not in seen:
            keep.append(j)
            seen.add(j.label)
        elif j.label == "TCP RST":
            keep.append(j)
    return keep


# -- checking a rewrite against the mode --------------------------------------------------------------

def expected_rewrite(mode, direction: str, proto: str, syn: bool) -> dict:
    """{field: symbol} the mode's class says the director (or agent) writes in this packet."""
    spec = mode.rewrites_in if direction == "in" else mode.rewrites_out
    out = {}
    for name, symbol in spec.items():
        if name.startswith("l4."):
            name = proto + name[2:]
        if name.startswith(("tcp.", "udp.")) and not name.startswith(proto + "."):
            continue
        if name == "tcp.toa" and not syn:
            continue          # lbd --toa syn (the default): only the SYN carries it
        if name == "ip.uoa" and proto != "udp":
            continue          # UDP's own (ENAT: fastpath/uoa.pxi)
        out[name] = symbol
    return out


def resolve(symbol: str, before: dict, values: dict):
    """The values a symbol allows: a set, or ANY. `values` maps symbols ("rip", "lip", ...)
    to a value or a set of values; "ttl-1" is the TTL the packet came with, less one."""
    if symbol == "ttl-1":
        return {before.get("ip.ttl", 0) - 1}
    if symbol == "cip:cport":
        return {f"{values['cip']}:{values['cport']}"}
    value = values.get(symbol, ANY)
    if value is ANY:
        return ANY
    return set(value) if isinstance(value, (set, frozenset, list, tuple)) else {value}


def check_rewrite(mode, direction: str, proto: str, syn: bool, before: dict, after: dict,
                  values: dict) -> list:
    """What in before -> after disagrees with the mode's class (empty: exactly as it says)."""
    want = expected_rewrite(mode, direction, proto, syn)
    changed = changes(before, after)
    problems = []
    for name, symbol in want.items():
        allowed = resolve(symbol, before, values)
        if name not in after:
            problems.append(f"{name} missing; {mode.short} writes {symbol} there")
        elif allowed is not ANY and after[name] not in allowed:
            problems.append(f"{name} is {after[name]}; {mode.short} writes {symbol} ({', '.join(map(str, sorted(allowed)))})")
    follows = set(NOISE)
    if "tcp.toa" in want:
        follows |= TOA_FOLLOWS
    if "ip.uoa" in want:
        follows |= UOA_FOLLOWS
    if any(n.startswith("outer.") for n in want):
        follows |= {n for n in after if n.startswith("outer.")}
    for name in changed:
        if name not in want and name not in follows:
            problems.append(f"{name} changed {changed[name][0]} -> {changed[name][1]}, "
                            f"which {mode.short} does not rewrite")
    return problems


def director_rewrite(journey: Journey):
    """(hop before, hop after) around the director's rewrite, or None if it never sent this."""
    for i, hop in enumerate(journey.hops):
        if hop.sender == "director" and i > 0 and journey.hops[i - 1].receiver == "director":
            return journey.hops[i - 1], hop
    return None


def agent_rewrite(journey: Journey):
    """(hop into the ENAT agent, the hop it sent) or None."""
    for i, hop in enumerate(journey.hops[:-1]):
        if hop.point.kind == "agent":
            return hop, journey.hops[i + 1]
    return None
