"""Routes, neighbours and links kept current for the fast path, read again only when the kernel
says they changed.

lbd used to dump links, routes and neighbours five times a second. Each pass cost 6-17 ms of
Python (pyroute2 building and parsing messages) on the CPU the packet thread shares, and the
frames that arrived meanwhile waited: a light-load round trip through lbd had a p99 of 1.6-2.8 ms
against nftables DNAT's 0.25 ms. Now a netlink socket joined to the rtnetlink multicast groups
RTMGRP_LINK, RTMGRP_NEIGH and RTMGRP_IPV4_ROUTE (rtnetlink(7)) says when something changed, and
only what changed for the interfaces lbd serves is read again. A full re-read every
RESYNC_SECONDS covers an announcement lost anyway (the socket's buffer overflowed: ENOBUFS, which
also triggers one at once) and the routes the kernel flushes without a word (IPv4 sends no
RTM_DELROUTE for the routes of a link that goes down: a link event re-reads routes too).

What no announcement covers is polled every TICK_SECONDS, cheaply (no netlink dump): next hops
the fast path wants but has no MAC for, and the network namespace's name (lb.netwatch)."""
from __future__ import annotations

import errno
import logging
import select
import socket
import time

from pyroute2.netlink.rtnl import RTMGRP_IPV4_ROUTE, RTMGRP_LINK, RTMGRP_NEIGH
from pyroute2.netlink.rtnl.marshal import MarshalRtnl

from lb.director.netlink import MAIN_TABLE

log = logging.getLogger("lbd")
RESYNC_SECONDS = 10.0
TICK_SECONDS = 0.2
ASK_AGAIN_SECONDS = 1.0      # a next hop the kernel has no entry for: ask it to resolve again
RELEASE_SECONDS = 1.0        # retired server slots and pools freed once nothing holds them
EVERYTHING = frozenset({"links", "routes", "neighbours"})
AF_INET = 2


def relevant(events, ifindexes) -> set[str]:
    """What to read again after `events`, [(event, family, table, ifindex)] as netlink
    announced them (ifindex None when the message names none, e.g. a multipath route): a
    subset of EVERYTHING. Only our interfaces' links and neighbours and the main table's IPv4
    routes matter; a change to one of our links may have flushed routes and neighbours."""
    out: set[str] = set()
    for event, family, table, ifindex in events:
        if event in ("RTM_NEWLINK", "RTM_DELLINK"):
            if ifindex in ifindexes:
                return set(EVERYTHING)
        elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
            if family == AF_INET and table == MAIN_TABLE and (ifindex is None or ifindex in ifindexes):
                out.add("routes")
        elif event in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
            if family == AF_INET and ifindex in ifindexes:
                out.add("neighbours")
    return out


class Changes:
    """The rtnetlink announcements of this network namespace. Its own socket, decoded by
    pyroute2's marshal: pyroute2's IPRoute reads ahead into its own queue, so select() on its
    descriptor can miss what it already holds."""

    def __init__(self, rcvbuf: int = 1 << 20):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE))
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.marshal = MarshalRtnl()

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def read(self) -> list[tuple] | None:
        """Every announcement waiting, as relevant() takes them; None when some were lost."""
        events = []
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return events
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    return None
                raise
            for msg in self.marshal.parse(data):
                event = msg.get("event")
                if event in ("RTM_NEWLINK", "RTM_DELLINK"):
                    events.append((event, None, None, msg.get("index")))
                elif event in ("RTM_NEWROUTE", "RTM_DELROUTE"):
                    table = msg.get_attr("RTA_TABLE") or msg.get("table")
                    events.append((event, msg.get("family"), table, msg.get_attr("RTA_OIF")))
                elif event in ("RTM_NEWNEIGH", "RTM_DELNEIGH"):
                    events.append((event, msg.get("family"), None, msg.get("ifindex")))


class Refresher:
    """The refresh thread's work for `lbd` (lb.director.daemon.Lbd: its fwd, ifaces, ifslots,
    links, director, stopping). `nl` answers dumps (lb.director.netlink.Netlink), `changes`
    is a Changes or anything with fileno() and read(); `clock` and `wait` are replaceable so
    that the unit tests run the loop on a fake clock."""

    def __init__(self, lbd, nl, changes, clock=time.monotonic, wait=None):
        self.lbd, self.nl, self.changes, self.clock = lbd, nl, changes, clock
        self.wait = wait or self._select
        self.asked: dict[tuple, float] = {}
        self.last_routes = None
        self.stale: set[str] = set(EVERYTHING)
        self.reads = {k: 0 for k in EVERYTHING}     # how often each was dumped (tests, debug)
        self.failing = None

    def _select(self, timeout: float) -> bool:
        return bool(select.select([self.changes], [], [], timeout)[0])

    def run(self) -> None:
        resync = release = tick = self.clock()
        retry = None
        while not self.lbd.stopping.is_set():
            now = self.clock()
            if now >= resync:
                self.stale |= EVERYTHING
                resync = now + RESYNC_SECONDS
            if retry is not None and now >= retry:
                self.stale.add("neighbours")
                retry = None
            if now >= tick:
                if not self._tick():
                    return
                tick = now + TICK_SECONDS
            if now >= release:
                self.lbd.director.release_idle()
                release = now + RELEASE_SECONDS
            if self.stale:
                stale, self.stale = self.stale, set()
                try:
                    unresolved = self.reread(stale)
                    self.failing = None
                except Exception as e:      # noqa: BLE001 -- netlink hiccups: try again
                    if repr(e) != self.failing:
                        log.warning("refreshing routes and neighbours: %s", e)
                    self.failing = repr(e)
                    self.stale |= stale
                    unresolved = False
                if unresolved is None:
                    return
                if unresolved and retry is None:
                    retry = self.clock() + ASK_AGAIN_SECONDS
            due = min(tick, resync, release, retry if retry is not None else resync)
            if self.wait(max(0.0, due - self.clock())):
                events = self.changes.read()
                ifindexes = {i.index for i in self.lbd.ifaces}
                self.stale |= EVERYTHING if events is None else relevant(events, ifindexes)

    def _tick(self) -> bool:
        """Between announcements: the namespace's name, and next hops wanted without a MAC.
        False: lbd is stopping."""
        if self.lbd.links.check_netns() and not self._stop_if_fatal():
            return False
        now = self.clock()
        for ip, ifslot, mac in self.lbd.fwd.neighbours():
            key = (ip, self.lbd.ifaces[ifslot].index)
            if mac is None and now - self.asked.get(key, -ASK_AGAIN_SECONDS) >= ASK_AGAIN_SECONDS:
                self.stale.add("neighbours")
                break
        return True

    def reread(self, what) -> bool | None:
        """Read `what` (names from EVERYTHING) again and hand the fast path what changed.
        True: a next hop the kernel does not know yet (read again soon); None: stopping."""
        if "links" in what:
            self.reads["links"] += 1
            if not self._watch_links():
                return None
        if "routes" in what:
            self.reads["routes"] += 1
            routes = self.nl.routes(self.lbd.ifslots)
            if routes != self.last_routes:
                self.lbd.fwd.set_routes(routes)
                for _, _, gw, _ in routes:
                    if gw:
                        self.lbd.fwd.want_neighbour(gw)
                self.last_routes = routes
                what = set(what) | {"neighbours"}       # gateways new to the fast path
        if "neighbours" in what:
            self.reads["neighbours"] += 1
            return self._neighbours()
        return False

    def _neighbours(self) -> bool:
        kernel = self.nl.neighbours()
        now = self.clock()
        unresolved = False
        for ip, ifslot, mac in self.lbd.fwd.neighbours():
            ifindex = self.lbd.ifaces[ifslot].index
            known = kernel.get((ip, ifindex))
            if known and known != mac:
                self.lbd.fwd.set_neighbour(ip, ifslot, known, pin=False)   # keep it as it was
            elif not known:
                unresolved = True
                if now - self.asked.get((ip, ifindex), -ASK_AGAIN_SECONDS) >= ASK_AGAIN_SECONDS:
                    self.asked[(ip, ifindex)] = now
                    try:
                        self.nl.resolve(ip, ifindex)
                    except Exception as e:  # an address the kernel will not resolve: keep trying
                        log.debug("resolve %s: %s", ip, e)
        return unresolved

    def _watch_links(self) -> bool:
        """Links that went down or up are logged (the fast path clears their socket errors and
        serves them again when they return); a deleted interface is no longer served; with no
        interface left, or the network namespace deleted, lbd stops. False: stopping."""
        lbd = self.lbd
        for event, name in lbd.links.check(self.nl.link_state):
            slot = lbd.ifnames.index(name)
            if event == "down":
                log.warning("link %s is down: its traffic waits for it to come back", name)
            elif event == "up":
                log.info("link %s is up again: serving it", name)
            elif event == "gone":
                log.error("interface %s was deleted: lbd no longer serves it", name)
                lbd.fwd.iface_gone(slot)
                lbd.ifslots = {i: s for i, s in lbd.ifslots.items() if s != slot}
        return self._stop_if_fatal()

    def _stop_if_fatal(self) -> bool:
        reason = self.lbd.links.fatal()
        if reason and not self.lbd.stopping.is_set():
            log.critical("%s: stopping", reason)
            self.lbd.failed = self.lbd.failed or "links"
            self.lbd.on_failure()
            return False
        return not reason
