"""Userspace IPIP decapsulator for real servers in TUN mode, for kernels without ``ipip``.

    python -m lb.decap --vip VIP [--vip VIP2 ...] [--ifname lbtun0] [--stats-file PATH]

The director wraps each client packet in an outer IPv4 header DIP -> RIP, protocol 4
(ipvsadm -i). Here a raw socket (AF_INET, SOCK_RAW, IPPROTO_IPIP) receives those packets
with their outer header; because a raw socket took them, the kernel sends no ICMP
"protocol unreachable". :func:`decapsulate` checks both headers and the inner
destination, and the inner packet is written to a TUN device (IFF_TUN | IFF_NO_PI) that
holds the VIPs (/32, scope host) and has ``rp_filter`` 0: to the kernel it is a packet
from the client arriving on that device, for a local address. Replies leave by normal
routing with the VIP as source (``lb realserver setup --reply-gateway`` steers them).

Every packet is counted under one reason (:data:`REASONS`); write errors to the TUN device
are counted as ``write_failed``. ``ready`` is printed on stdout once the device is up
(a pipe on stdout is then detached, so an undrained pipe never blocks us); the counters are
written as JSON to ``--stats-file`` at most every 0.2 s while they change and at exit.
SIGTERM/SIGINT stop it cleanly: the TUN device (not persistent) goes away with its file
descriptor, and ``stopped; counters: ...`` is printed on stderr.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import ipaddress
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

IPPROTO_IPIP = 4
TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
DEFAULT_IFNAME = "lbtun0"
RT_SCOPE_HOST = 254
RCVBUF = 4 << 20
BATCH = 256                # packets handled per wake-up before the loop looks at signals again
FLUSH_INTERVAL = 0.2       # seconds between stats-file writes while counters change

NOT_IPIP, TRUNCATED, BAD_OUTER, BAD_INNER, NOT_A_VIP, FORWARDED = (
    "not_ipip", "truncated", "bad_outer", "bad_inner", "not_a_vip", "forwarded")
REASONS = (NOT_IPIP, TRUNCATED, BAD_OUTER, BAD_INNER, NOT_A_VIP, FORWARDED)
WRITE_FAILED = "write_failed"


# -- the per-packet logic (pure) ---------------------------------------------------------------

def _checksum_ok(header) -> bool:
    """RFC 1071: the one's-complement sum of a header including its checksum is 0xFFFF."""
    s = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


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
    if not _checksum_ok(packet[:ihl]):
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

def open_tun(ifname: str) -> int:
    """Create the TUN device `ifname` in this network namespace; returns its fd."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def configure_tun(ifname: str, vips) -> None:
    """VIPs /32 scope host (never picked as a source for other traffic), rp_filter 0, up."""
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        for vip in vips:
            ipr.addr("add", index=index, address=vip, prefixlen=32, scope=RT_SCOPE_HOST)
        Path(f"/proc/sys/net/ipv4/conf/{ifname}/rp_filter").write_text("0\n")
        v6 = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
        if v6.exists():   # no link-local address, router solicitations or MLD into a fd nobody reads
            v6.write_text("1\n")
        ipr.link("set", index=index, state="up")


def tun_exists(ifname: str) -> bool:
    return Path(f"/sys/class/net/{ifname}").exists() or Path(f"/proc/sys/net/ipv4/conf/{ifname}").exists()


def _rp_filter_all() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/conf/all/rp_filter").read_text())
    except (OSError, ValueError):
        return 0


class Decapsulator:
    def __init__(self, vips, ifname: str = DEFAULT_IFNAME, stats_file: str | None = None):
        self.vips = [str(ipaddress.IPv4Address(v)) for v in vips]
        self.packed = packed_vips(self.vips)
        self.ifname = ifname
        self.stats_file = Path(stats_file) if stats_file else None
        self.counters = dict.fromkeys((*REASONS, WRITE_FAILED), 0)
        self.stopping = False
        self.tun_fd = None
        self.raw = None
        self._dirty, self._flushed = True, 0.0
        self._buf = bytearray(65536)

    def open(self) -> None:
        self.tun_fd = open_tun(self.ifname)
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
        inner, reason = decapsulate(packet, self.packed)
        if inner is not None:
            try:
                os.write(self.tun_fd, inner)
            except OSError:
                reason = WRITE_FAILED
        self.counters[reason] += 1
        self._dirty = True
        return reason

    def drain(self) -> None:
        """Handle up to BATCH waiting packets; EAGAIN ends the batch, EINTR is retried."""
        view = memoryview(self._buf)
        for _ in range(BATCH):
            try:
                n = self.raw.recv_into(self._buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EINTR):
                    return
                raise
            self.handle(view[:n])

    def run(self) -> None:
        """Loop until stop() (a signal handler); signals wake the select through a pipe."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.raw, selectors.EVENT_READ)
                sel.register(rfd, selectors.EVENT_READ)
                while not self.stopping:
                    for key, _ in sel.select(FLUSH_INTERVAL):
                        if key.fileobj is self.raw:
                            self.drain()
                        else:
                            _drain_pipe(rfd)
                    self.flush()
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)
            self.flush(force=True)

    def stop(self, *_):
        self.stopping = True

    def stats(self) -> dict:
        return {"pid": os.getpid(), "ifname": self.ifname, "vips": self.vips,
                "counters": dict(self.counters)}

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.stats_file is None or not (force or (self._dirty and now - self._flushed >= FLUSH_INTERVAL)):
            return
        tmp = self.stats_file.with_name(self.stats_file.name + ".tmp")
        tmp.write_text(json.dumps(self.stats()) + "\n")
        tmp.replace(self.stats_file)
        self._dirty, self._flushed = False, now

    def status_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counters.items())


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _announce_ready(d: Decapsulator) -> None:
    print(f"ready ifname={d.ifname} vips={','.join(d.vips)}", flush=True)
    if stat.S_ISFIFO(os.fstat(1).st_mode):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.decap", description=__doc__.split("\n")[0])
    p.add_argument("--vip", action="append", required=True, help="a VIP (repeat for several)")
    p.add_argument("--ifname", default=DEFAULT_IFNAME, help=f"TUN device to create (default {DEFAULT_IFNAME})")
    p.add_argument("--stats-file", help="write the counters here as JSON")
    a = p.parse_args(argv)
    try:
        d = Decapsulator(a.vip, a.ifname, a.stats_file)
    except ValueError as e:
        p.error(str(e))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, d.stop)
    try:
        d.open()
    except Exception as e:  # OSError, or pyroute2's NetlinkError (not an OSError)
        d.close()
        print(f"lb.decap: cannot set up {a.ifname}: {e}", file=sys.stderr)
        return 1
    if _rp_filter_all():
        print("lb.decap: warning: net.ipv4.conf.all.rp_filter is not 0; the kernel will drop decapsulated "
              "packets (lb realserver setup --mode tun sets it to 0)", file=sys.stderr)
    try:
        _announce_ready(d)
        d.run()
    finally:
        d.close()
        left = " (device still present!)" if tun_exists(a.ifname) else ""
        print(f"lb.decap: stopped; counters: {d.status_line()}{left}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
