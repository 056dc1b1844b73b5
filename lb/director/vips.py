"""VIP ownership, for an active/backup pair of directors (keepalived VRRP, or any tool that
moves addresses): with `lbd --vip-ownership address`, lbd serves a VIP only while it is an
address on one of this namespace's interfaces.

The Director withholds the services of a VIP it does not hold from the fast path (the
reconcile step simply does not push them), so the fast path neither answers ARP for it nor
forwards to it, and a frame for it goes to the kernel, which does not have the address either.
When the address arrives, the services are pushed again, and lbd sends gratuitous ARPs
(RFC 5227 2.4's ARP announcement: sender and target address both the VIP) so that the segment's
caches move to this director at once, as keepalived's VRRP does on becoming master
(garp_master_repeat, several spaced ones in case the first is lost).

The addresses are watched through netlink: lbd joins RTMGRP_IPV4_IFADDR and re-reads the
addresses at every event (and every second as a backstop: an event lost to a full socket
buffer must not leave a VIP unserved).
"""
from __future__ import annotations

import logging
import select
import socket
import struct
import threading
import time

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import RTMGRP_IPV4_IFADDR

log = logging.getLogger("lbd")
MODES = ("always", "address")
GARP_REPEAT = 5             # keepalived's garp_master_repeat default
GARP_INTERVAL = 0.2         # seconds between two of them
RESYNC_SECONDS = 1.0


def serves(svc, owned) -> bool:
    """Whether `svc` is pushed to the fast path: always when `owned` is None; a fwmark
    service while one of its keys' VIPs is held."""
    if owned is None:
        return True
    if svc.fwmark:
        return any(vip in owned for _, vip, _ in svc.match)
    return svc.vip in owned


def service_vips(svc) -> set:
    return {vip for _, vip, _ in svc.match} if svc.fwmark else {svc.vip}


def served_vips(services, owned) -> set:
    """The VIPs the fast path answers for: of the services served, the held ones."""
    out = set()
    for svc in services:
        out |= service_vips(svc)
    return out if owned is None else out & owned


def garp_frame(mac: bytes, ip: str) -> bytes:
    """A broadcast ARP request announcing `ip` at `mac` (RFC 5227 2.4, RFC 826's layout)."""
    addr = socket.inet_aton(ip)
    eth = b"\xff" * 6 + mac + struct.pack("!H", 0x0806)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + addr + b"\x00" * 6 + addr
    return eth + arp + b"\x00" * 18          # padded to the 60-byte minimum frame


def send_garps(ifname: str, mac: bytes, ip: str, repeat: int = GARP_REPEAT,
               interval: float = GARP_INTERVAL, stopping: threading.Event | None = None) -> int:
    """Send `repeat` announcements of `ip` on `ifname`, `interval` apart; how many went out."""
    frame = garp_frame(mac, ip)
    sent = 0
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
        s.bind((ifname, 0))
        for i in range(repeat):
            if i and (stopping.wait(interval) if stopping else time.sleep(interval)):
                break
            try:
                s.send(frame)
                sent += 1
            except OSError as e:
                log.warning("gratuitous ARP for %s on %s: %s", ip, ifname, e.strerror or e)
    return sent


def addresses(ipr: IPRoute) -> dict:
    """Every IPv4 address of this namespace -> the index of the interface that has it."""
    return {a.get_attr("IFA_ADDRESS"): a["index"] for a in ipr.get_addr(family=socket.AF_INET)}


class AddressWatch:
    """Calls `on_change(addresses)` with {address: ifindex} now and whenever they change."""

    def __init__(self, on_change):
        self.on_change = on_change

    def run(self, stopping: threading.Event) -> None:
        with IPRoute() as events, IPRoute() as dump:
            events.bind(groups=RTMGRP_IPV4_IFADDR)
            last = None
            while not stopping.is_set():
                now = addresses(dump)
                if now != last:
                    self.on_change(now)
                    last = now
                ready, _, _ = select.select([events.fileno()], [], [], RESYNC_SECONDS)
                if ready:
                    events.get()          # drained; what changed is read again above
