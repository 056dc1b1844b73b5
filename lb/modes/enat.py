"""ENAT (Alibaba's "triangle" mode; `lbadm ... --enat`, listed as "ENat"): in, CIP:cport ->
VIP:vport becomes VIP:lport -> RIP:rport with CIP:cport in TOA, lport lent from the VIP's own
port pool so two clients with the same source port never collide on the real server. The real
server's agent (`lb realserver setup --mode enat`) learns CIP:cport from the TOA and turns the
replies into VIP:vport -> CIP:cport, which go straight to the client: the director carries only
the request direction. Same port only (the agent restores the virtual port)."""
from __future__ import annotations

from lb.modes.base import ForwardingMode


class EnhancedNat(ForwardingMode):
    name = "enat"
    listing = "ENat"
    short = "enat"
    lbadm_flags = (None, "--enat")
    fwd_code = 4
