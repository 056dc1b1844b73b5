"""NAT (ipvsadm -m, "Masq"): in, the destination VIP:vport becomes RIP:rport; out, the source
RIP:rport becomes VIP:vport again. Replies must come back through the director (the real
server's gateway), so both directions are the fast path's. Port mapping is allowed."""
from __future__ import annotations

from lb._forward import FWD_CODES
from lb.modes.base import ForwardingMode, reply_ports


class Masquerade(ForwardingMode):
    name = "masq"
    listing = "Masq"
    short = "nat"
    lbadm_flags = ("-m", "--masquerading")
    fwd_code = FWD_CODES["masq"]

    same_segment = True         # the server's gateway is the director, so it is on its link
    rs_needs = ("gateway_director", "client_off_subnet")
    rewrites_in = {"ip.dst": "rip", "l4.dport": "rport", "ip.ttl": "ttl-1"}
    rewrites_out = {"ip.src": "vip", "l4.sport": "vport", "ip.ttl": "ttl-1"}

    def ingress_drops(self, service, dest):
        # Replies from the real server are rewritten by the fast path; the director's own
        # conversations with that server (addressed to a local address) stay the kernel's:
        # the rule reading this set skips them.
        return [(f"masq_{proto}", (dest.addr, port)) for proto, port in reply_ports(service, dest)]
