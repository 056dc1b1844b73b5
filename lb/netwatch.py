"""What a long-running process of the project watches about the world it runs in: its
interfaces going down, coming back, or being deleted, and its network namespace being deleted
under it. Pure logic fed by a `link_state` function (testable without root); used by lbd
(lb.director.daemon, with netlink) and by the real-server daemons (lb.realserver.daemon: the
decapsulator and the ENAT agent, with :func:`link_state` here).

A deleted interface never comes back (a new one by the same name has another ifindex).
`ip netns delete` removes the name (/run/netns/NAME) but not the namespace, which lives while a
process is in it: a daemon left in such an orphan namespace would serve nobody forever (and
hold what it holds: lbd its control socket's path, a decapsulator its TUN device), so when the
name that was its namespace goes, it must stop.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct
from dataclasses import dataclass, field

NETNS_DIR = "/run/netns"
SIOCGIFFLAGS = 0x8913
IFF_UP, IFF_RUNNING = 0x1, 0x40


def _ns_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def own_netns(netns_dir: str = NETNS_DIR, self_ns: str = "/proc/self/ns/net") -> tuple | None:
    """(name, (dev, inode)) of the named network namespace this process runs in, or None (the
    initial namespace, or one without a name under /run/netns)."""
    me = _ns_id(self_ns)
    try:
        names = sorted(os.listdir(netns_dir))
    except OSError:
        return None
    for name in names:
        if me is not None and _ns_id(os.path.join(netns_dir, name)) == me:
            return name, me
    return None


def link_state(name: str) -> tuple[int, bool] | None:
    """(ifindex, up and running) of interface `name` in this process's network namespace, or
    None when there is none. Asked of the kernel by ioctl on a socket (SIOCGIFINDEX,
    SIOCGIFFLAGS), which always answers for the socket's namespace -- /sys/class/net would
    answer for whichever namespace sysfs was mounted in."""
    try:
        index = socket.if_nametoindex(name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            req = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("16sh14x", name.encode(), 0))
    except OSError:
        return None
    flags = struct.unpack("16sh14x", req)[1]
    return index, flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING


@dataclass
class LinkWatch:
    """The watched interfaces' state between two checks. `check(link_state)` takes a function
    name -> (ifindex, up) or None and returns the changes, [(event, name)] with event "down",
    "up" or "gone"; `fatal()` says why the process (`who`) must stop, or None."""
    ifnames: list
    indexes: list
    netns: tuple | None = None
    netns_dir: str = NETNS_DIR
    who: str = "lbd"
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
        self.check_netns()
        return changes

    def check_netns(self) -> bool:
        """Whether the named namespace this process runs in is gone (one stat: no netlink
        announces it, so a watcher looks often)."""
        if self.netns is not None and not self.netns_gone:
            name, ident = self.netns
            if _ns_id(os.path.join(self.netns_dir, name)) != ident:
                self.netns_gone = True
        return self.netns_gone

    def fatal(self) -> str | None:
        if self.netns_gone:
            return f"the network namespace {self.netns[0]} {self.who} runs in was deleted"
        if self.ifnames and len(self.gone) == len(self.ifnames):
            return f"every interface {self.who} served was deleted"
        return None
