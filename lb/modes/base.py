"""What a forwarding mode is: data plus two sides (see docs/internals.md).

A mode tells the director what the fast path does to a frame (its `fwd_code`, read by the
core), how ipvsadm lists it (`listing`) and which frames the kernel must not see
(`ingress_drops`, elements of nftables drop sets). What a mode refuses (DR/TUN/ENAT port mapping, FULLNAT
without a local address) is checked with the rest of the command in lb/config.py."""
from __future__ import annotations


class ForwardingMode:
    name = ""           # as in the config: "masq", "route", ...
    listing = ""        # as in ipvsadm -L: "Masq", "Route", ...
    short = ""          # what people (and the lab, lb demo) call it: "nat", "dr", ...
    lbadm_flags = (None, None)   # (short, long) option of lbadm -a/-e: ("-m", "--masquerading")
    fwd_code = -1       # the fast path's action code

    # What the mode asks of the network and of the real servers, as data: `lb explain` words
    # it (lb/lab/explain.py) and `lb trace` checks captured frames against it (lb/lab/trace.py).
    same_segment = False        # the director must reach the real servers on one L2 segment
    replies_via_director = True  # the replies come back through the director
    port_mapping = True         # a real server's port may differ from the virtual port
    rs_sees = "cip"             # the peer the server's socket sees: "cip", "lip" or "vip"
    toa = False                 # the client's address travels in the SYN's TOA option
    rs_needs = ()               # what a real server must be given (lb.lab.explain.NEEDS codes)
    director_needs = ()         # what the director must be given (lb.lab.explain.NEEDS codes)
    # The fields the director writes, client -> server ("in") and server -> client ("out"),
    # as {field: what it becomes}: "cip"/"cport" (the client), "vip"/"vport" (the virtual
    # service), "rip"/"rport" (the chosen server), "lip"/"lport" (a local address and a port
    # lent from its pool), "dip" (the director's own address), "rs_mac" (the server's MAC),
    # "ttl-1" (decremented). Any other field the frame carries stays as it was, apart from
    # what follows from these: MACs of the next hop, checksums, and the IP length and TCP
    # header length when a TOA is added (kind 254, on the SYN). An outer header ("outer.*")
    # is added whole. out_by says who rewrites the replies: "director", "agent" (the real
    # server's agent), or None (the server answers as the VIP itself).
    rewrites_in: dict = {}
    rewrites_out: dict = {}
    out_by = "director"

    def ingress_drops(self, service, dest) -> list[tuple]:
        """Traffic of `dest` the fast path owns, which the kernel must not see: elements of the
        director's nftables drop sets, (set name, values) (see lb/director/nft.py)."""
        return []


def service_keys(service) -> list[tuple]:
    """(proto, VIP, port) the service answers on: its own, or every key of a fwmark service."""
    return service.match if service.fwmark else [(service.proto, service.vip, service.port)]


def reply_ports(service, dest) -> list[tuple]:
    """(proto, port) the server's replies come from: its port, or for a fwmark server of port
    0 ("the port the packet was sent to") each key's port."""
    return sorted({(proto, dest.port or port) for proto, _, port in service_keys(service)})


def service_drops(service) -> list[tuple]:
    # Traffic to the virtual service itself is always the fast path's.
    return [(f"svc_{proto}", (vip, port)) for proto, vip, port in service_keys(service)]
