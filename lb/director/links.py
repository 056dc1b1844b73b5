"""What lbd watches about the world it runs in, as pure logic fed by netlink (testable without
root): its interfaces' links going down, coming back, or being deleted, and its network
namespace being deleted under it; and the flood-defence settings it gives the fast path.

A link that goes down makes the fast path's socket report an error; the fast path clears it
and keeps the socket, and the kernel hooks the socket up again when the link returns
(af_packet.c packet_notifier(): NETDEV_DOWN / NETDEV_UP), so lbd only says so. A deleted
interface never comes back (a new one has another ifindex): lbd stops serving it; with none
left it stops. `ip netns delete` removes the name (/run/netns/NAME) but not the namespace,
which lives while lbd is in it; an lbd left in such an orphan namespace would hold its control
socket's path for nothing, so when the name that was its namespace goes, lbd stops.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

NETNS_DIR = "/run/netns"


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


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def own_netns(netns_dir: str = NETNS_DIR, self_ns: str = "/proc/self/ns/net") -> tuple | None:
    """(name, (dev, inode)) of the named network namespace lbd runs in, or None (the initial
    namespace, or one without a name under /run/netns)."""
    me = _ns_id(self_ns)
    try:
        names = sorted(os.listdir(netns_dir))
    except OSError:
        return None
    for name in names:
        if me is not None and _ns_id(os.path.join(netns_dir, name)) == me:
            return name, me
    return None


@dataclass
class LinkWatch:
    """The served interfaces' state between two checks. `check(link_state)` takes
    Netlink.link_state (name -> (ifindex, up) or None) and returns the changes, [(event,
    name)] with event "down", "up" or "gone"; `fatal()` says why lbd must stop, or None."""
    ifnames: list
    indexes: list
    netns: tuple | None = None
    netns_dir: str = NETNS_DIR
    up: dict = field(default_factory=dict)
    gone: set = field(default_factory=set)
    netns_gone: bool = False

    def check(self, link_state) -> list:
        changes = []
        for name, index in zip(self.ifnames, self.indexes):
            if name in self.gone:
                continue
            state = link_state(name)
            if state is None or state[0] != index:      # deleted (or another one by its name)
                self.gone.add(name)
                changes.append(("gone", name))
                continue
            was = self.up.get(name, True)
            if state[1] != was:
                changes.append(("up" if state[1] else "down", name))
            self.up[name] = state[1]
        if self.netns is not None:
            name, ident = self.netns
            if _ns_id(os.path.join(self.netns_dir, name)) != ident:
                self.netns_gone = True
        return changes

    def fatal(self) -> str | None:
        if self.netns_gone:
            return f"the network namespace {self.netns[0]} lbd runs in was deleted"
        if self.ifnames and len(self.gone) == len(self.ifnames):
            return "every interface lbd served was deleted"
        return None
