"""NAT (ipvsadm -m, "Masq"): in, the destination VIP:vport becomes RIP:rport; out, the source
RIP:rport becomes VIP:vport again. Replies must come back through the director (the real
server's gateway), so both directions are the fast path's. Port mapping is allowed."""
from __future__ import annotations

from lb.modes.base import ForwardingMode


class Masquerade(ForwardingMode):
    name = "masq"
    listing = "Masq"
    fwd_code = 0

    def ingress_drops(self, service, dest, local_addrs):
        # Replies from the real server are rewritten by the fast path; the director's own
        # conversations with that server (addressed to a local address) stay the kernel's.
        not_local = ""
        if local_addrs:
            not_local = "ip daddr != { " + ", ".join(sorted(local_addrs)) + " } "
        return [f"ip saddr {dest.addr} {not_local}{service.proto} sport {dest.port} drop"]
