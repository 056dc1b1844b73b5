"""Userspace IPIP decapsulator for real servers in TUN mode, for kernels without ``ipip``.

    python -m lb.realserver.decap --vip VIP [--vip VIP2 ...] [--ifname lbtun0] [--stats-file PATH]

The director wraps each client packet in an outer IPv4 header DIP -> RIP, protocol 4
(ipvsadm -i). Here a raw socket (AF_INET, SOCK_RAW, IPPROTO_IPIP) receives those packets
with their outer header; because a raw socket took them, the kernel sends no ICMP
"protocol unreachable". :func:`decapsulate` checks both headers and the inner
destination, and the inner packet is written to a TUN device (IFF_TUN | IFF_NO_PI) that
holds the VIPs (/32, scope host) and has ``rp_filter`` 0: to the kernel it is a packet
from the client arriving on that device, for a local address. Replies leave by normal
routing with the VIP as source (``lb realserver setup --reply-gateway`` steers them).

The loop is C (``lb._decap``, fastpath/_decap.pyx, held to :func:`decapsulate` by the tests):
recvmmsg batches, the same checks, and userspace GRO: in-order TCP segments of one flow in a
batch go to the TUN device (opened with IFF_VNET_HDR) as one TSO aggregate, what the kernel's
GRO makes, so the local TCP stack takes one skb per aggregate and not one per segment.

Every packet is counted under one reason (:data:`REASONS`); write errors to the TUN device
are counted as ``write_failed``; the stats file also says how many frames were written. ``ready`` is printed on stdout once the device is up
(a pipe on stdout is then detached, so an undrained pipe never blocks us); the counters are
written as JSON to ``--stats-file`` at most every 0.2 s while they change and at exit.
SIGTERM/SIGINT stop it cleanly: the TUN device (not persistent) goes away with its file
descriptor, and ``stopped; counters: ...`` is printed on stderr. When the device is deleted
under it, or the network namespace it runs in, it says so and exits 3
(:mod:`lb.realserver.daemon`, ``EXIT_GONE``).
"""
from __future__ import annotations

import argparse
import ipaddress
import os
import socket
import sys
from pathlib import Path

from lb._decap import DecapCore
from lb.inet import checksum_ok
from lb.realserver.daemon import Daemon, disable_ipv6, open_tun, rp_filter, serve

IPPROTO_IPIP = 4
DEFAULT_IFNAME = "lbtun0"
RT_SCOPE_HOST = 254
RCVBUF = 4 << 20
BATCH = 256                # packets handled per wake-up before the loop looks at signals again
NO_VNET_HDR = bytes(10)    # a virtio_net_hdr that asks for nothing: the packet goes as it is

NOT_IPIP, TRUNCATED, BAD_OUTER, BAD_INNER, NOT_A_VIP, FORWARDED = (
    "not_ipip", "truncated", "bad_outer", "bad_inner", "not_a_vip", "forwarded")
REASONS = (NOT_IPIP, TRUNCATED, BAD_OUTER, BAD_INNER, NOT_A_VIP, FORWARDED)
WRITE_FAILED = "write_failed"


# -- the per-packet logic (pure) ---------------------------------------------------------------

def _header(packet, short: str, bad: str):
    """(header length, total length, None) of an IPv4 header, or (0, 0, reason)."""
    if len(packet) < 20:
        return 0, 0, short
    if packet[0] >> 4 != 4 or (packet[0] & 0x0F) < 5:
        return 0, 0, bad
    ihl = (packet[0] & 0x0F) * 4
    if len(packet) < ihl:
        return 0, 0, short
    total = (packet[2] << 8) | packet[3]
    if total < ihl:
        return 0, 0, bad
    if total > len(packet):
        return 0, 0, short
    if not checksum_ok(packet[:ihl]):
        return 0, 0, bad
    return ihl, total, None


def decapsulate(packet, vips):
    """One received IPIP packet (outer header included) -> (inner packet or None, reason).

    `vips`: a collection of VIPs as dotted strings or 4-byte packed addresses. The inner
    packet is cut to its own total length. Outer fragments are refused (the kernel hands a
    raw socket reassembled packets); inner fragments pass (the local stack reassembles).
    Never raises on any bytes-like input.
    """
    packet = memoryview(packet).cast("B")
    ihl, total, why = _header(packet, TRUNCATED, BAD_OUTER)
    if why is not None:
        return None, why
    if packet[9] != IPPROTO_IPIP:
        return None, NOT_IPIP
    if (packet[6] << 8 | packet[7]) & 0x3FFF:      # MF or a fragment offset
        return None, BAD_OUTER
    inner = packet[ihl:total]
    iihl, itotal, why = _header(inner, TRUNCATED, BAD_INNER)
    if why is not None:
        return None, why
    dst = bytes(inner[16:20])
    if dst not in vips and socket.inet_ntoa(dst) not in vips:
        return None, NOT_A_VIP
    return bytes(inner[:itotal]), FORWARDED


def packed_vips(vips) -> frozenset:
    return frozenset(socket.inet_aton(str(ipaddress.IPv4Address(v))) for v in vips)


# -- the shell: raw socket in, TUN device out ----------------------------------------------------

def configure_tun(ifname: str, vips) -> None:
    """VIPs /32 scope host (never picked as a source for other traffic), rp_filter 0, up."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for vip in vips:
            ipr.addr("add", index=index, address=vip, prefixlen=32, scope=RT_SCOPE_HOST)
        Path(f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter").write_text("0\n")
        disable_ipv6(ifname)       # nobody reads IPv6 from the fd
        ipr.link("set", index=index, state="up")


class Decapsulator(Daemon):
    name = "lb.realserver.decap"

    def __init__(self, vips, ifname: str = DEFAULT_IFNAME, stats_file: str | None = None):
        super().__init__([str(ipaddress.IPv4Address(v)) for v in vips], ifname, stats_file)
        self.packed = packed_vips(self.vips)
        self.counters = dict.fromkeys((*REASONS, WRITE_FAILED), 0)
        self.core = DecapCore(self.packed)
        self.tun_frames = 0        # frames written: fewer than packets forwarded when GRO merged
        self.tun_fd = None
        self.vnet = False          # the TUN device takes a virtio_net_hdr before each packet
        self.raw = None

    def open(self) -> None:
        self.tun_fd = open_tun(self.ifname, vnet_hdr=True)
        self.vnet = True
        configure_tun(self.ifname, self.vips)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.raw.setblocking(False)

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
            self.raw = None
        if self.tun_fd is not None:
            os.close(self.tun_fd)      # not persistent: the device and its addresses go away
            self.tun_fd = None

    def handle(self, packet) -> str:
        """One packet the Python way (the reference shell; drain() runs the C core)."""
        inner, reason = decapsulate(packet, self.packed)
        if inner is not None:
            try:
                os.write(self.tun_fd, NO_VNET_HDR + inner if self.vnet else inner)
                self.tun_frames += 1
            except OSError:        # EBADFD once the device was deleted (tun_chr_write_iter)
                reason = WRITE_FAILED
                self.recheck = True
        self.counters[reason] += 1
        self._dirty = True
        return reason

    def drain(self) -> None:
        """Handle up to BATCH waiting packets in C; EAGAIN or EINTR ends the batch."""
        if not self.core.drain(self.raw.fileno(), self.tun_fd, BATCH):
            return
        counts, frames = self.core.take_counts()
        if counts[WRITE_FAILED]:
            self.recheck = True    # EBADFD once the device was deleted (tun_chr_write_iter)
        for reason, n in counts.items():
            self.counters[reason] += n
        self.tun_frames += frames
        self._dirty = True

    def sources(self) -> list:
        return [self.raw]

    def step(self, ready: set) -> None:
        if self.raw.fileno() in ready:
            self.drain()
        self.flush()

    def stats(self) -> dict:
        return {"pid": os.getpid(), "ifname": self.ifname, "vips": self.vips,
                "counters": dict(self.counters), "tun_frames": self.tun_frames}

    def status_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counters.items())

    def warning(self) -> str | None:
        if rp_filter("all"):
            return ("net.ipv4.conf.all.rp_filter is not 0; the kernel will drop decapsulated "
                    "packets (lb realserver setup --mode tun sets it to 0)")
        return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.realserver.decap", description=__doc__.split("\n")[0])
    p.add_argument("--vip", action="append", required=True, help="a VIP (repeat for several)")
    p.add_argument("--ifname", default=DEFAULT_IFNAME, help=f"TUN device to create (default {DEFAULT_IFNAME})")
    p.add_argument("--stats-file", help="write the counters here as JSON")
    a = p.parse_args(argv)
    try:
        d = Decapsulator(a.vip, a.ifname, a.stats_file)
    except ValueError as e:
        p.error(str(e))
    return serve(d)


if __name__ == "__main__":
    sys.exit(main())
