"""DR (ipvsadm -g, "Route", the ipvsadm default): the fast path rewrites only the destination MAC
to the real server's; the real server holds the VIP on lo with arp_ignore=1/arp_announce=2
(`lb realserver setup --mode dr`) and answers the client directly. The director sees only the
client -> server direction, so only the service's own traffic needs the ingress drop."""
from __future__ import annotations

from lb.modes.base import ForwardingMode


class DirectRouting(ForwardingMode):
    name = "route"
    listing = "Route"
    short = "dr"
    lbadm_flags = ("-g", "--gatewaying")
    fwd_code = 1
