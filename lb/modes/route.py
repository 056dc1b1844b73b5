"""DR (ipvsadm -g, "Route", the ipvsadm default): the fast path rewrites only the destination MAC
to the real server's; the real server holds the VIP on lo with arp_ignore=1/arp_announce=2
(`lb realserver setup --mode dr`) and answers the client directly. The director sees only the
client -> server direction, so only the service's own traffic needs the ingress drop."""
from __future__ import annotations

from lb._forward import FWD_CODES
from lb.modes.base import ForwardingMode


class DirectRouting(ForwardingMode):
    name = "route"
    listing = "Route"
    short = "dr"
    lbadm_flags = ("-g", "--gatewaying")
    fwd_code = FWD_CODES["route"]

    same_segment = True         # only the MAC changes, so the server must be on the link
    replies_via_director = False
    port_mapping = False        # the packet reaches the server as it was sent: same port
    rs_needs = ("arp_rules", "vip_on_lo", "own_gateway", "same_port")
    director_needs = ("same_segment",)
    rewrites_in = {"eth.dst": "rs_mac", "ip.ttl": "ttl-1"}     # decrement_ttl(): every method
    out_by = None
