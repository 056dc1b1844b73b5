"""ENAT (Alibaba's "triangle" mode; `lbadm ... --enat`, listed as "ENat"): in, CIP:cport ->
VIP:vport becomes VIP:lport -> RIP:rport with CIP:cport in TOA (UDP: in UOA, an IP option on
the first three datagrams, fastpath/uoa.pxi), lport lent from the VIP's own port pool so two
clients with the same source port never collide on the real server. The real server's agent
(`lb realserver setup --mode enat`) learns CIP:cport from the TOA (or UOA) and turns the
replies into VIP:vport -> CIP:cport, which go straight to the client: the director carries only
the request direction. Same port only (the agent restores the virtual port)."""
from __future__ import annotations

from lb._forward import FWD_CODES
from lb.modes.base import ForwardingMode


class EnhancedNat(ForwardingMode):
    name = "enat"
    listing = "ENat"
    short = "enat"
    lbadm_flags = (None, "--enat")
    fwd_code = FWD_CODES["enat"]

    replies_via_director = False
    port_mapping = False        # the agent restores the virtual port from the server's own
    rs_sees = "vip"
    toa = True
    rs_needs = ("enat_agent", "rp_filter_loose", "toa_reader", "same_port")
    director_needs = ("vip_port_pool",)
    rewrites_in = {"ip.src": "vip", "l4.sport": "lport", "ip.dst": "rip", "l4.dport": "rport",
                   "ip.ttl": "ttl-1", "tcp.toa": "cip:cport", "ip.uoa": "cip:cport"}
    rewrites_out = {"ip.src": "vip", "l4.sport": "vport", "ip.dst": "cip", "l4.dport": "cport"}
    out_by = "agent"
