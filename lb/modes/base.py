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
