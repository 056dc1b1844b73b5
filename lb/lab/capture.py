"""Capture frames in the lab's namespaces with AF_PACKET sockets: no tcpdump needed.

Where a capture is taken decides what it can see. lbd sends with ``PACKET_QDISC_BYPASS``,
which skips the taps that would show its frames to other AF_PACKET sockets on the
director, so a frame is taken at the *receiving* end of each link:

- ``wire`` points are the router's side of a link (``to-client``, ``p-director``,
  ``p-rs1``...): they receive exactly what the node at the other end put on the wire;
- ``host`` points are a node's own interface (``eth0``): what reached it, minus the copies a
  bridge floods to every port while it does not yet know a MAC (PACKET_OTHERHOST);
- ``decap`` points are a real server's TUN device of the userspace decapsulator (what the
  decapsulator handed the kernel), ``agent`` points the ENAT agent's device (what the
  server's kernel handed the agent): raw IP, no Ethernet header.

:class:`Capture` opens one socket per point, all read by one thread until ``stop()``
(bounded in frames and seconds); each :class:`Frame` carries the kernel's receive time
(SO_TIMESTAMPNS), so frames from different namespaces line up on one clock, and whether its
L4 checksum was still to be filled in (``partial``): with tx checksum offload on, a veth hands
on CHECKSUM_PARTIAL frames whose checksum field holds only the pseudo-header sum, and the
kernel says so in PACKET_AUXDATA (TP_STATUS_CSUMNOTREADY, af_packet.c packet_rcv()). GSO
aggregates (up to 64 KB) are taken whole.
"""
from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
SOL_PACKET, PACKET_AUXDATA = 263, 8
TP_STATUS_CSUMNOTREADY = 0x8   # tpacket_auxdata.tp_status: the checksum is left to the receiver
AUXDATA_LEN = 20               # struct tpacket_auxdata
MAX_FRAME = 14 + 65535         # an Ethernet header and the largest IP packet (a GSO aggregate)
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
LINKTYPE_ETHERNET, LINKTYPE_RAW = 1, 101
PCAP_MAGIC_NS = 0xA1B23C4D     # pcap with nanosecond timestamps
KINDS = ("wire", "host", "decap", "agent")


@dataclass(frozen=True)
class Point:
    """One capture point: interface `ifname` in the namespace of `role`.

    `node` is the lab node whose frames (wire) or whose received frames (host) it shows;
    `kind` one of KINDS."""
    role: str
    ifname: str
    kind: str
    node: str

    @property
    def name(self) -> str:
        return f"{self.role}:{self.ifname}"

    @property
    def linktype(self) -> int:
        return LINKTYPE_RAW if self.kind in ("decap", "agent") else LINKTYPE_ETHERNET

    def keeps(self, pkttype: int) -> bool:
        if self.kind == "agent":
            return pkttype == PACKET_OUTGOING     # the kernel sends into the agent's device
        if pkttype == PACKET_OUTGOING:
            return False
        return not (self.kind == "host" and pkttype == PACKET_OTHERHOST)


@dataclass(frozen=True)
class Frame:
    point: Point
    ts: float          # kernel receive time, seconds since the epoch
    data: bytes
    partial: bool = False   # CHECKSUM_PARTIAL: the L4 checksum holds the pseudo-header sum only


def lab_points(lab, tun_devices: dict | None = None, agent_devices: dict | None = None) -> list:
    """Every capture point of `lab` (a lb.lab.topology.Lab): both ends of every link, and the
    TUN devices named in `tun_devices` / `agent_devices` ({rs name: ifname}) if given."""
    nodes = ["director", *lab.rs_names]
    points = [Point("client", "eth0", "host", "client"), Point("router", "to-client", "wire", "client")]
    points += [Point("router", f"p-{n}", "wire", n) for n in nodes]
    points += [Point(n, "eth0", "host", n) for n in nodes]
    points += [Point(n, dev, "decap", n) for n, dev in (tun_devices or {}).items()]
    points += [Point(n, dev, "agent", n) for n, dev in (agent_devices or {}).items()]
    return points


class Capture:
    """``with Capture(lab, points) as cap: ...traffic...`` then ``cap.frames``.

    The sockets are bound before the block runs and closed when it ends (also on error);
    at most `max_frames` frames are kept, and the reader stops after `max_seconds`."""

    def __init__(self, lab, points, max_frames: int = 20000, max_seconds: float = 60.0, settle: float = 0.3):
        self.lab, self.points = lab, list(points)
        self.max_frames, self.max_seconds, self.settle = max_frames, max_seconds, settle
        self.frames: list[Frame] = []
        self.truncated = False
        self._socks: list = []
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self) -> "Capture":
        return self.start()

    def __exit__(self, *exc) -> bool:
        self.stop(settle=self.settle if exc[0] is None else 0)
        return False

    def start(self) -> "Capture":
        try:
            for point in self.points:
                self._socks.append((self._open(point), point))
        except BaseException:
            self._close()
            raise
        self._thread = threading.Thread(target=self._read, name="lb-capture", daemon=True)
        self._thread.start()
        return self

    def _open(self, point: Point) -> socket.socket:
        # Protocol 0 receives nothing until bind() names the interface and ETH_P_ALL: no frame
        # of another interface slips in between.
        s = self.lab.socket(point.role, socket.AF_PACKET, socket.SOCK_RAW, 0)
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((point.ifname, ETH_P_ALL))
            s.setblocking(False)
        except OSError as e:
            s.close()
            raise OSError(e.errno, f"cannot capture on {point.name}: {e.strerror}") from None
        return s

    def _read(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with selectors.DefaultSelector() as sel:
            for s, point in self._socks:
                sel.register(s, selectors.EVENT_READ, point)
            while not self._stop.is_set() and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=0.05):
                    self._drain(key.fileobj, key.data)

    def _drain(self, s: socket.socket, point: Point) -> None:
        while True:
            try:
                data, anc, _, addr = s.recvmsg(MAX_FRAME, socket.CMSG_SPACE(16) + socket.CMSG_SPACE(AUXDATA_LEN))
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return           # closed under us at stop()
            if not point.keeps(addr[2]):
                continue
            if len(self.frames) >= self.max_frames:
                self.truncated = True
                return
            self.frames.append(Frame(point, _timestamp(anc), data, _partial(anc)))

    def stop(self, settle: float = 0.0) -> list:
        """Wait `settle` seconds for frames still in flight, stop reading, close the sockets."""
        if self._thread is not None:
            time.sleep(settle)
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None
            for s, point in self._socks:       # what arrived while the reader was stopping
                self._drain(s, point)
        self._close()
        return self.frames

    def _close(self) -> None:
        for s, _ in self._socks:
            s.close()
        self._socks = []


def _timestamp(ancillary) -> float:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return sec + nsec / 1e9
    return time.time()


def _partial(ancillary) -> bool:
    for level, kind, data in ancillary:
        if level == SOL_PACKET and kind == PACKET_AUXDATA and len(data) >= 4:
            return bool(struct.unpack("I", data[:4])[0] & TP_STATUS_CSUMNOTREADY)
    return False


def write_pcap(path, frames) -> None:
    """`frames` (all of one point, so one link type) as a pcap file (nanosecond timestamps)
    that Wireshark, tcpdump and scapy open. Written by hand: the format is 40 bytes of headers."""
    frames = list(frames)
    linktype = frames[0].point.linktype if frames else LINKTYPE_ETHERNET
    with open(path, "wb") as out:
        out.write(struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, MAX_FRAME, linktype))
        for f in frames:
            sec = int(f.ts)
            out.write(struct.pack("<IIII", sec, int((f.ts - sec) * 1e9), len(f.data), len(f.data)))
            out.write(f.data)
