"""TUN (ipvsadm -i, "Tunnel"): the fast path wraps the client's packet in an outer IPv4 header
from the director to the real server (IPIP, protocol 4); the real server decapsulates it (the
kernel's ipip device, or `lb realserver setup --mode tun`'s userspace decapsulator) and answers
the client directly from the VIP. Real servers may be anywhere the director can route to."""
from __future__ import annotations

from lb._forward import FWD_CODES
from lb.modes.base import ForwardingMode


class Tunnel(ForwardingMode):
    name = "tunnel"
    listing = "Tunnel"
    short = "tun"
    lbadm_flags = ("-i", "--ipip")
    fwd_code = FWD_CODES["tunnel"]

    replies_via_director = False
    port_mapping = False        # the inner packet is the client's, unchanged: same port
    rs_needs = ("ipip_decap", "vip_on_lo", "arp_rules", "rp_filter_off", "own_gateway", "same_port")
    director_needs = ("mtu_room",)
    rewrites_in = {"outer.src": "dip", "outer.dst": "rip", "ip.ttl": "ttl-1"}  # inner, then copied
    out_by = None
