"""ENAT reply agent for real servers: replies go straight to the client, not through the director.

    python -m lb.realserver.enat_agent --vip VIP [--vip VIP2 ...] [--map-port RPORT:VPORT ...]
                            [--ifname lbenat0] [--stats-file PATH] [--max-conns N]

An ENAT director turns CIP:cport -> VIP:vport into VIP:lport -> RIP:rport and puts CIP:cport
in the SYN's TOA (kind 254, see :mod:`lb.realserver.toa`), or for UDP in an IP option of the
first three datagrams (UOA, type 31, see :mod:`lb.realserver.uoa`). The server here accepts a
connection (or a datagram) from VIP:lport and answers it; this agent turns each answer
RIP:rport -> VIP:lport into VIP:vport -> CIP:cport, which routing takes to the client
directly (the "triangle"). The server's own ICMP errors about a connection (port
unreachable, fragmentation needed: to VIP:lport, so into our device too, and the director
never sees them) are translated the same way, as the director translates a NAT server's
(:func:`lb.realserver.enat_packets.rewrite_icmp_error`).

Mechanism, and why:

- **Learning** -- an AF_PACKET socket (SOCK_DGRAM, ETH_P_IP, every interface, outgoing
  frames ignored) with a classic BPF filter that passes only TCP from a VIP with SYN, FIN or
  RST set, or a TOA right after the fixed header, and UDP from a VIP whose first IP option is
  of UOA's type (other datagrams cost no copy). The kernel copies each such packet to us
  *before* its own IP stack sees it (packet taps run first in __netif_receive_skb), so by the
  time the server's SYN-ACK comes out, the SYN that told us the client is already queued:
  the loop always drains this socket before reading replies, and once more on a miss. No
  netfilter, no kernel module, and the server's packets are not delayed.
- **Catching replies** -- a TUN device (IFF_TUN, no packet info) owned by the agent and a
  route ``VIP/32 dev lbenat0``: everything the server sends to a VIP lands in our file
  descriptor instead of leaving for the director. The device is not persistent, so the
  device and its route go away with the process, even on SIGKILL.
- **Sending** -- a raw socket (IPPROTO_RAW, i.e. IP_HDRINCL) with the rewritten packet;
  its route lookup is made with the VIP as source (IP_PKTINFO ``ipi_spec_dst``, allowed
  for header-including sockets), so a ``from VIP`` policy rule (``lb realserver setup
  --reply-gateway``) steers replies as it does for DR and TUN; without one the main table
  (the default gateway) is used.
- **Reverse-path filter** -- the SYN comes in on eth0 from the VIP, and the best route back
  to the VIP is now the TUN device: strict ``rp_filter`` (1) would drop every SYN. Loose
  (2) or off (0) is needed; ``lb realserver setup --mode enat`` turns strict into loose.

The connection table (:mod:`lb.realserver.enat_flows`: (proto, VIP, lport, RIP, rport) ->
(CIP, cport, vport)) follows the part of a TCP conversation the agent sees: SYN -> ``syn``
(60 s), a reply -> ``established`` (900 s idle), a FIN either way -> ``fin`` (120 s, the
server's last ACK must still pass), an RST either way -> ``close`` (10 s). vport is rport
unless ``--map-port`` says otherwise (a director may map VIP:80 to RIP:8080).

UDP: a datagram with a UOA makes (or, with another client, replaces) the entry of its
(VIP, lport, RIP, rport); it lives 300 s (``udp``), restarted by every reply the agent
rewrites and by every datagram with a UOA (the director sends it on the first three of each
of its connections only, so on a busy flow the replies keep it alive). A UOA of the wrong
length, or IP options that do not parse, teach nothing and are counted ``uoa_malformed``.
After 300 s without a reply the entry is gone: a later reply of that flow is dropped and
counted ``unknown_flow`` until the director's connection ends too (its UDP timeout, 300 s
by default, after the client's last datagram) and the client's next datagram opens a new
one, whose first datagrams carry the UOA again. So a UDP service whose server stays silent for more
than 300 s and then speaks first loses that reply; request/response (DNS, QUIC, games) does
not. If the director's first three datagrams of a connection are all lost, or none had room
for the option (uoa_no_room on the director), the agent never learns that flow either.

Every packet is counted under one reason (:mod:`lb.realserver.enat_packets`); bad
input is dropped and counted, never raised. ``ready`` on stdout once the device and route
are up; counters as JSON in ``--stats-file`` (every 0.2 s while they change, and at exit);
SIGTERM/SIGINT stop it cleanly with ``lb.realserver.enat_agent: stopped; counters: ...`` on stderr;
its device or its network namespace deleted under it, it says so and exits 3 (``EXIT_GONE``).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ipaddress
import os
import socket
import struct
import sys
import time

from lb.realserver import enat_tc
from lb.realserver.daemon import FLUSH_INTERVAL, Daemon, disable_ipv6, open_tun, rp_filter, serve
from lb.realserver.enat_flows import FlowTable
from lb.realserver.enat_packets import FIN, REWRITTEN, RST, SEND_FAILED, SYN, TCP, UDP, UNKNOWN_FLOW
from lb.realserver.uoa import UOA_TYPE

DEFAULT_IFNAME = "lbenat0"
REPLY_PATHS = ("auto", "tc", "userspace")
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
IP_PKTINFO = 8
RCVBUF = 4 << 20
BATCH = 256
EXPIRE_INTERVAL = 1.0
MAX_VIPS = 64
SNAPLEN = 256              # IP + TCP headers are all learning needs


# -- the kernel side: BPF filter, TUN device, sockets ---------------------------------------------------

# classic BPF opcodes (linux/filter.h): BPF_LD|BPF_B|BPF_ABS and the rest, by what they do
LDB, LDH, LDW, LDXB_MSH, LDB_IND, AND_K = 0x30, 0x28, 0x20, 0xB1, 0x50, 0x54
JEQ_K, JGT_K, JSET_K, RET_K = 0x15, 0x25, 0x45, 0x06


def bpf_program(vips) -> list:
    """Classic BPF (code, jt, jf, k) passing, from a VIP and unfragmented, TCP with SYN/FIN/RST
    or a TOA first, and UDP whose IP header has options, the first of them of UOA's type.

    Offsets are from the IP header (SOCK_DGRAM packet sockets see no link header). Only a
    pre-filter: :func:`learn` checks everything again (a UOA of the wrong length passes here
    so that learn() counts it).
    """
    vips = list(vips)
    if not 1 <= len(vips) <= MAX_VIPS:
        raise ValueError(f"1..{MAX_VIPS} VIPs")
    n = len(vips)
    hdr = 6 + n                        # where the VIP test lands: the protocol again
    tcp, udp = hdr + 2, hdr + 7
    accept, drop = hdr + 12, hdr + 13
    prog = [(LDB, 0, 0, 9), (JEQ_K, 1, 0, TCP), (JEQ_K, 0, drop - 3, UDP),
            (LDH, 0, 0, 6), (JSET_K, drop - 5, 0, 0x3FFF), (LDW, 0, 0, 12)]
    for i, vip in enumerate(vips):
        at = 6 + i
        prog.append((JEQ_K, hdr - at - 1, (drop - at - 1) if i == n - 1 else 0, int.from_bytes(vip, "big")))
    prog += [(LDB, 0, 0, 9), (JEQ_K, 0, udp - (hdr + 1) - 1, TCP),
             # TCP: flags, or the first option's kind
             (LDXB_MSH, 0, 0, 0), (LDB_IND, 0, 0, 13), (JSET_K, accept - (tcp + 2) - 1, 0, SYN | FIN | RST),
             (LDB_IND, 0, 0, 20), (JEQ_K, accept - (tcp + 4) - 1, drop - (tcp + 4) - 1, 254),
             # UDP: IHL > 5, and the first option's type at offset 20
             (LDB, 0, 0, 0), (AND_K, 0, 0, 0x0F), (JGT_K, 0, drop - (udp + 2) - 1, 5),
             (LDB, 0, 0, 20), (JEQ_K, 0, drop - (udp + 4) - 1, UOA_TYPE),
             (RET_K, 0, 0, SNAPLEN), (RET_K, 0, 0, 0)]
    assert len(prog) == drop + 1
    return prog


def attach_filter(sock: socket.socket, prog) -> None:
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_learn_socket(vips) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        attach_filter(s, bpf_program(vips))
        # the filter was attached after the socket started queueing: drop what came before it
        s.setblocking(False)
        _drain_socket(s)
        with contextlib.suppress(OSError):      # Linux >= 4.20; the pkttype check covers older ones
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)   # our own sends (src VIP) too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except BaseException:
        s.close()
        raise
    return s


def _drain_socket(s) -> None:
    try:
        while True:
            s.recv(1)
    except (BlockingIOError, InterruptedError):
        pass


def configure_tun(ifname: str, vips, mtu: int) -> None:
    """Up, no IPv6, and ``VIP/32 dev IFNAME`` for each VIP (they go with the device)."""
    from pyroute2 import IPRoute
    disable_ipv6(ifname)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, mtu=mtu, state="up")
        for vip in vips:
            ipr.route("add", dst=vip, dst_len=32, oif=index, scope=253)


def strict_rp_filter(ifnames) -> list:
    """Interfaces where the effective rp_filter (max of all and the device) is strict (1)."""
    return [dev for dev in ifnames if max(rp_filter("all"), rp_filter(dev)) == 1]


class Agent(Daemon):
    """The shell around :class:`FlowTable`: packet socket and TUN in, raw socket out."""

    name = "lb.realserver.enat_agent"

    def __init__(self, vips, port_map=None, ifname: str = DEFAULT_IFNAME, stats_file: str | None = None,
                 max_conns: int = 1 << 18, mtu: int = 1500, reply_path: str = "auto"):
        super().__init__(list(dict.fromkeys(str(ipaddress.IPv4Address(v)) for v in vips)), ifname, stats_file)
        if len(self.vips) > MAX_VIPS:
            raise ValueError(f"at most {MAX_VIPS} VIPs")
        if reply_path not in REPLY_PATHS:
            raise ValueError(f"--reply-path is one of {', '.join(REPLY_PATHS)}")
        self.table = FlowTable(self.vips, port_map, max_conns)
        self.mtu, self.reply_path = mtu, reply_path
        self.tun_fd = self.learn_sock = self.raw = self.fast = None
        self._expired = self._polled = 0.0
        self._kernel_counts = None

    def open(self) -> None:
        from lb.realserver._enat_reply import ReplyPath     # built by setup.py next to lb._forward
        self.tun_fd = open_tun(self.ifname, nonblock=True)
        configure_tun(self.ifname, self.vips, self.mtu)
        if self.reply_path != "userspace":
            try:
                self.table.offload = enat_tc.ReplyOffload(self.ifname, self.table.max_conns)
                self.reply_path = "tc"
            except Exception as e:  # OSError, NetlinkError: no eBPF here; every reply comes to us
                if self.reply_path == "tc":
                    raise
                print(f"{self.name}: replies rewritten here, not in the kernel ({e})", file=sys.stderr)
                self.reply_path = "userspace"
        self.ready_note = f"reply={self.reply_path}"
        self.learn_sock = open_learn_socket(self.table.vips)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
        self.fast = ReplyPath(self.table, self.tun_fd, self.raw.fileno(), self.reply)

    def close(self) -> None:
        self.fast = None
        if self.table.offload is not None:
            self._poll_kernel()                # for the stop line, said after close()
            self.table.offload.close()         # the program and its filter go with the device
            self.table.offload = None
        for s in (self.learn_sock, self.raw):
            if s is not None:
                s.close()
        self.learn_sock = self.raw = None
        if self.tun_fd is not None:
            os.close(self.tun_fd)          # not persistent: device and VIP routes go away
            self.tun_fd = None

    def drain_learn(self) -> None:
        for _ in range(BATCH):
            try:
                data, addr = self.learn_sock.recvfrom(SNAPLEN)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] != PACKET_OUTGOING:
                self.table.inbound(data, time.monotonic())
                self._dirty = True

    def drain_tun(self) -> None:
        """Up to BATCH server packets through the C reply path (:mod:`lb.realserver._enat_reply`,
        the same work as :meth:`FlowTable.outbound` and :meth:`send`); what it leaves to Python
        (ICMP, a connection not learned yet) comes to :meth:`reply`, in order."""
        count, failed = self.fast.drain(BATCH)
        if failed:                 # EBADFD: the device was deleted (tun_chr_read_iter)
            self.recheck = True
        if count:
            self._dirty = True

    def reply(self, packet: bytes) -> str:
        out, reason = self.table.outbound(packet, time.monotonic())
        if reason == UNKNOWN_FLOW:
            # Its SYN may still wait in the packet socket (queued there before the server
            # saw it): learn what is waiting and look once more; the packet counts once.
            self.table.counters[UNKNOWN_FLOW] -= 1
            self.drain_learn()
            out, reason = self.table.outbound(packet, time.monotonic())
        if out is not None:
            reason = self.send(out)
        self._dirty = True
        return reason

    def send(self, out: bytes) -> str:
        info = struct.pack("I4s4s", 0, out[12:16], b"\0\0\0\0")   # route as if from the VIP
        try:
            self.raw.sendmsg([out], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (socket.inet_ntoa(out[16:20]), 0))
            return REWRITTEN
        except OSError:
            self.table.counters[REWRITTEN] -= 1
            self.table.counters[SEND_FAILED] += 1
            return SEND_FAILED

    def sources(self) -> list:
        return [self.learn_sock, self.tun_fd]

    def step(self, ready: set) -> None:
        self.drain_learn()              # always first: SYNs before their replies
        if self.tun_fd in ready:
            self.drain_tun()
        self.housekeeping()

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._expired >= EXPIRE_INTERVAL:
            if self.table.expire(now):
                self._dirty = True
            self._expired = now
        if now - self._polled >= FLUSH_INTERVAL:
            self._poll_kernel()
            self._polled = now
        self.flush()

    def _poll_kernel(self) -> None:
        """The tc program's counters (the kernel's work: nothing here sees it happen)."""
        if self.table.offload is not None:
            counts = self.table.offload.counts()
            if counts != self._kernel_counts:
                self._kernel_counts, self._dirty = counts, True

    def flush(self, force: bool = False) -> None:
        if force:
            self._poll_kernel()               # the last word (at exit) is exact
        super().flush(force)

    def stats(self) -> dict:
        return {"pid": os.getpid(), "ifname": self.ifname, "vips": self.vips, "conns": len(self.table),
                "reply_path": self.reply_path, "counters": self.counters()}

    def counters(self) -> dict:
        """The table's counters, and the kernel program's as last polled (rewritten_tc and the rest)."""
        return {**self.table.counters, **(self._kernel_counts or {})}

    def status_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counters().items() if v) or "nothing seen"

    def warning(self) -> str | None:
        strict = strict_rp_filter(d for d in os.listdir("/proc/sys/net/ipv4/conf")
                                  if d not in ("all", "default", "lo", self.ifname))
        if strict:
            return (f"strict rp_filter on {', '.join(strict)}: SYNs from the VIP will be "
                    "dropped (lb realserver setup --mode enat makes it loose)")
        return None


def parse_port_map(items) -> dict:
    out = {}
    for item in items or ():
        try:
            rport, vport = (int(x) for x in item.split(":"))
        except ValueError:
            raise ValueError(f"bad --map-port {item!r} (want RPORT:VPORT)") from None
        if not (0 < rport < 65536 and 0 < vport < 65536):
            raise ValueError(f"bad --map-port {item!r}: ports are 1..65535")
        out[rport] = vport
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.realserver.enat_agent", description=__doc__.split("\n")[0])
    p.add_argument("--vip", action="append", required=True, help="a VIP (repeat for several)")
    p.add_argument("--map-port", action="append", metavar="RPORT:VPORT",
                   help="replies from local port RPORT leave as VPORT (default: the same port)")
    p.add_argument("--ifname", default=DEFAULT_IFNAME, help=f"TUN device to create (default {DEFAULT_IFNAME})")
    p.add_argument("--stats-file", help="write the counters here as JSON")
    p.add_argument("--max-conns", type=int, default=1 << 18)
    p.add_argument("--mtu", type=int, default=1500, help="the TUN device's MTU (as the server's uplink)")
    p.add_argument("--reply-path", choices=REPLY_PATHS, default="auto",
                   help="where replies of learned connections are rewritten: tc (a tc program on the "
                        "device, lb.realserver.enat_tc), userspace (this process, each one), auto (tc "
                        "where the kernel takes it; default)")
    a = p.parse_args(argv)
    try:
        agent = Agent(a.vip, parse_port_map(a.map_port), a.ifname, a.stats_file, a.max_conns, a.mtu,
                      a.reply_path)
    except ValueError as e:
        p.error(str(e))
    return serve(agent)


if __name__ == "__main__":
    sys.exit(main())
