"""What a forwarding mode is: data plus two sides (see docs/internals.md).

A mode tells the director what the fast path does to a frame (its `fwd_code`, read by the
core), how ipvsadm lists it (`listing`) and which frames the kernel must not see
(`ingress_drops`, nftables rules). What a mode refuses (DR/TUN/ENAT port mapping, FULLNAT
without a local address) is checked with the rest of the command in lb/config.py."""
from __future__ import annotations


class ForwardingMode:
    name = ""           # as in the config: "masq", "route", ...
    listing = ""        # as in ipvsadm -L: "Masq", "Route", ...
    fwd_code = -1       # the fast path's action code

    def ingress_drops(self, service, dest, local_addrs: list[str]) -> list[str]:
        """nftables rules (netdev ingress) for traffic of `dest` the fast path owns."""
        return []


def service_drops(service) -> list[str]:
    # Traffic to the virtual service itself is always the fast path's: its one (proto, VIP,
    # port), or every key of a firewall-mark service.
    keys = service.match if service.fwmark else [(service.proto, service.vip, service.port)]
    return [f"ip daddr {vip} {proto} dport {port} drop" for proto, vip, port in keys]
