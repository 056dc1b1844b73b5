"""FULLNAT (DPVS -b, "FullNat"): in, CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport, where
LIP is one of the service's local addresses (--add-laddr -z LIP, addresses of the director the
real servers route back to) and lport is lent from that address's port pool; out, the reverse.
Real servers may sit on any network; they learn the client from the TOA option on the SYN
(lb.toa.peer_address on the real server). Port mapping is allowed."""
from __future__ import annotations

from lb._forward import FWD_CODES
from lb.modes.base import ForwardingMode, reply_ports


class FullNat(ForwardingMode):
    name = "fullnat"
    listing = "FullNat"
    short = "fullnat"
    lbadm_flags = (None, "--fullnat")
    fwd_code = FWD_CODES["fullnat"]

    rs_sees = "lip"
    toa = True
    rs_needs = ("toa_reader",)
    director_needs = ("laddrs",)
    rewrites_in = {"ip.src": "lip", "l4.sport": "lport", "ip.dst": "rip", "l4.dport": "rport",
                   "ip.ttl": "ttl-1", "tcp.toa": "cip:cport"}
    rewrites_out = {"ip.src": "vip", "l4.sport": "vport", "ip.dst": "cip", "l4.dport": "cport",
                    "ip.ttl": "ttl-1"}

    def ingress_drops(self, service, dest):
        # Replies to a local address are the fast path's; without this the director's kernel
        # would answer them (RST: no socket owns LIP:lport).
        return [(f"fullnat_{proto}", (dest.addr, lip, port))
                for proto, port in reply_ports(service, dest) for lip in service.laddrs]
