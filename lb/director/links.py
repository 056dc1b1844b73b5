"""What lbd watches about the world it runs in, as pure logic fed by netlink (testable without
root): its interfaces' links going down, coming back, or being deleted, and its network
namespace being deleted under it (lb.netwatch, shared with the real-server daemons); and the
flood-defence settings it gives the fast path.

A link that goes down makes the fast path's socket report an error; the fast path clears it
and keeps the socket, and the kernel hooks the socket up again when the link returns
(af_packet.c packet_notifier(): NETDEV_DOWN / NETDEV_UP), so lbd only says so. A deleted
interface never comes back (a new one has another ifindex): lbd stops serving it; with none
left it stops. `ip netns delete` removes the name (/run/netns/NAME) but not the namespace,
which lives while lbd is in it; an lbd left in such an orphan namespace would hold its control
socket's path for nothing, so when the name that was its namespace goes, lbd stops.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FloodDefence:
    """lbd's --flood-pressure, --embryo-timeout, --secure-tcp (Forwarder.set_flood_defence)."""
    pressure: float = 0.5
    embryo_timeout: float = 3.0
    secure_tcp: int = 1

    def __post_init__(self):
        if not 0 <= self.pressure <= 1:
            raise ValueError(f"bad --flood-pressure {self.pressure:g}: a fraction within 0..1")
        if not 0 < self.embryo_timeout <= 3600:
            raise ValueError(f"bad --embryo-timeout {self.embryo_timeout:g}: seconds within "
                             "0..3600, more than 0")
        if self.secure_tcp not in (0, 1, 2):
            raise ValueError(f"bad --secure-tcp {self.secure_tcp}: 0, 1 or 2")
