#!/usr/bin/env python3
"""New TCP connections per second: SYNs of distinct new flows through a forwarder namespace.

    python bench/cps.py [--modes kernel,nftdnat,nat,fullnat,enat] [--seconds 0.4] [--trials 5]
                        [--vips 16] [--json out.json]

The lab, the modes, the generator (bench/pktgen.c) and the way a trial is judged are those of
bench/pps.py; what differs is the traffic.  Every frame is a TCP SYN (60 bytes: Ethernet, IPv4,
TCP with an MSS option, 2 bytes of padding; correct checksums) of a flow that has not been seen
before: client addresses 198.18.64.0/18 (routed to the fwd namespace through g0's address) times
source ports, so the forwarder creates a connection for every frame (conntrack entry, lbd
connection, FULLNAT/ENAT local port).  The frames are precomputed with numpy, one file per
destination set, each sent once: the frame count bounds the run (and must outlast the window).
The rate is SYNs/s arriving at the sink, as a ratio to kernel forwarding in the same run.

Before the flood, a paced set of other new flows (--check-syns, at --warmup-pps) checks that
the mode works at all and that the SYNs reaching the sink are what it should send (destination,
source, TTL, checksums, TOA for fullnat/enat).  Services: one per VIP (--vips, 198.18.10.100
upwards), so that ENAT, whose port pool belongs to the VIP, has --vips x the pool's ports to
lend; fullnat gets one local address per service (198.18.11.3 upwards).

Needs root, gcc, nft, iproute2, util-linux (taskset), pyroute2 and numpy.  See bench/README.md.
What it shares with pps.py (lab, modes, generator, trial, report) is the package bench/harness/.
"""

from __future__ import annotations

import ipaddress
import math
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for `harness`, from any cwd
from harness.frames import FRAME_LEN, mac_bytes  # noqa: E402
from harness.generator import Generator  # noqa: E402
from harness.options import check_args, make_parser  # noqa: E402
from harness.run import bench_main  # noqa: E402
from harness.topology import GEN_IP, PORT, SINK_IP  # noqa: E402

NS_PREFIX = "cpsbench"
CLIENT_NET = "198.18.64.0/18"          # routed via g0; 16384 addresses
N_CLIENTS = 1 << 14
CLIENT_BASE = int(ipaddress.IPv4Address("198.18.64.0"))
CPORT_BASE = 1024
SYN_TOT = 44                            # IPv4 20 + TCP 20 + MSS option 4; frame 58 + 2 padding


def _ip(a):
    return int(ipaddress.IPv4Address(a))


def _fold(s):
    s = (s & 0xFFFF) + (s >> 16)
    s = (s & 0xFFFF) + (s >> 16)
    return s


def build_syns(dst_mac: str, src_mac: str, idx: np.ndarray, dsts: list[str]) -> np.ndarray:
    """One 60-byte SYN per index: client CLIENT_BASE + idx % N_CLIENTS, port CPORT_BASE + idx //
    N_CLIENTS (distinct for every index), to dsts[idx % len(dsts)]:PORT; IP and TCP checksums."""
    n = len(idx)
    idx = idx.astype(np.int64)
    caddr = CLIENT_BASE + idx % N_CLIENTS
    cport = CPORT_BASE + idx // N_CLIENTS
    if n and cport.max() > 65535:
        raise ValueError("too many distinct flows for the client range")
    daddr = np.array([_ip(d) for d in dsts], dtype=np.int64)[idx % len(dsts)]
    seq = (idx * 2654435761 + 12345) & 0xFFFFFFFF
    ipid = idx & 0xFFFF
    window = 64240
    t = np.zeros(FRAME_LEN, np.uint8)
    t[0:6] = list(mac_bytes(dst_mac))
    t[6:12] = list(mac_bytes(src_mac))
    t[12:14] = (0x08, 0x00)
    t[14:16] = (0x45, 0x00)
    t[16:18] = (0, SYN_TOT)
    t[20:22] = (0x40, 0x00)                # DF
    t[22], t[23] = 64, 6                    # TTL, TCP
    t[36:38] = (0, PORT)
    t[46], t[47] = 0x60, 0x02               # data offset 6 words, SYN
    t[48:50] = (window >> 8, window & 0xFF)
    t[54:58] = (2, 4, 0x05, 0xB4)           # MSS 1460
    f = np.tile(t, (n, 1))

    def put16(col, v):
        f[:, col] = (v >> 8) & 0xFF
        f[:, col + 1] = v & 0xFF

    def put32(col, v):
        put16(col, v >> 16)
        put16(col + 2, v & 0xFFFF)

    put16(18, ipid)
    put32(26, caddr)
    put32(30, daddr)
    put16(34, cport)
    put32(38, seq)
    words = lambda v: (v >> 16) + (v & 0xFFFF)  # noqa: E731
    ip_sum = 0x4500 + SYN_TOT + ipid + 0x4000 + 0x4006 + words(caddr) + words(daddr)
    put16(24, ~_fold(ip_sum) & 0xFFFF)
    tcp_sum = (words(caddr) + words(daddr) + 6 + (SYN_TOT - 20)            # pseudo-header
               + cport + PORT + words(seq) + 0x6002 + window + 0x0204 + 0x05B4)
    put16(50, ~_fold(tcp_sum) & 0xFFFF)
    return f


class SynGenerator(Generator):
    """Generator with distinct-flow SYN frames: 'warm' = the paced check set (indices after
    the flood's), 'flood' = the flood, each sent once (count = number of frames)."""

    def __init__(self, lab, args):
        super().__init__(lab, args)
        self.n_flood = int(math.ceil(args.max_pps * (args.ramp + args.seconds + args.tail)))
        if self.n_flood + args.check_syns > N_CLIENTS * (65536 - CPORT_BASE):
            raise SystemExit("too many distinct flows; lower --max-pps or the window")

    def dsts(self, target):
        return [SINK_IP] if target == SINK_IP else list(self.args.vips)

    def indices(self, kind):
        if kind == "warm":
            return np.arange(self.n_flood, self.n_flood + self.args.check_syns)
        return np.arange(self.n_flood)

    def frames_for(self, target, kind="flood"):
        key = (target, kind)
        if key not in self.files:
            base = os.path.join(self.lab.workdir, f"syns-{kind}-{target}")
            f = build_syns(self.lab.mac["f0"], self.lab.mac["g0"], self.indices(kind), self.dsts(target))
            f.tofile(base + ".bin")
            self.files[key] = base
        return self.files[key]

    def sent_clients(self, target):
        idx = self.indices("warm")
        d = self.dsts(target)
        return {(str(ipaddress.IPv4Address(CLIENT_BASE + int(i) % N_CLIENTS)), CPORT_BASE + int(i) // N_CLIENTS):
                d[int(i) % len(d)] for i in idx}

    def warm_count(self):
        return self.args.check_syns

    def flood_count(self, budget):
        return self.n_flood

    def expected_out_len(self, mode):
        # veth counts bytes after the Ethernet header.  The kernel trims a frame to the IP total
        # length (44); lbd sends NAT/DR frames as received (46, padding included) and rebuilds a
        # SYN that gets TOA (14 + 44 + 8 -> 52); TUN adds 20 to what it received.
        if not mode.userspace:
            return SYN_TOT
        if mode.toa:
            return SYN_TOT + 8
        return FRAME_LEN - 14 + mode.grows


def prepare(lab, args):
    """The client network is behind g0: a route in fwd (kernel forwarding and lbd both need a
    way back to a client, and lbd's next hop for it is then g0's static neighbour entry)."""
    lab.handles[lab.fwd].route("add", dst=CLIENT_NET, gateway=GEN_IP)


def report(rows, results, args):
    """cps-specific lines: did a table or a port pool fill, and what lbd counted."""
    for m in args.modes:
        rs = [r for r in results if r["mode"] == m and "error" not in r and not r.get("disturbed")]
        rs = rs or [r for r in results if r["mode"] == m and "error" not in r]
        if not rs:
            continue
        ex = [r.get("extra", {}) for r in rs]
        if m == "nftdnat":
            keys = ("early_drop", "drop", "insert_failed", "nf_conntrack_count")
            med = {k: statistics.median(e.get(k) or 0 for e in ex) for k in keys}
            print(f"{m}: conntrack per trial (median) " + " ".join(f"{k}={v:.0f}" for k, v in med.items()))
            if med["early_drop"] or med["drop"]:
                print(f"WARNING: {m}: conntrack's table filled (nf_conntrack_max) and it evicted/dropped "
                      f"entries; shorten --seconds/--ramp")
        lbd = [e.get("lbd") for e in ex if e.get("lbd")]
        if lbd:
            keys = ("rx_frames", "tx_frames", "new_conns", "ring_drops", "table_full", "lport_exhausted",
                    "no_route", "no_neighbour", "tx_error")
            med = {k: statistics.median(d.get(k, 0) for d in lbd) for k in keys}
            print(f"{m}: lbd per trial (median) " + " ".join(f"{k}={v:.0f}" for k, v in med.items()))
            if med["table_full"] or med["lport_exhausted"]:
                print(f"WARNING: {m}: lbd's connection table or port pools filled; raise --max-conns / "
                      f"--vips / --lport-range, or shorten the window")


def parse_args(argv=None):
    ap = make_parser(__doc__)
    # A short window: conntrack's table (nf_conntrack_max, 262144 here, read-only inside a
    # namespace) must not fill during a trial, or nftdnat measures eviction (early_drop) instead
    # of insertion.  At ~450k SYN/s, ramp + window + the check set stay below ~250k entries.
    ap.set_defaults(modes="kernel,nftdnat,nat,fullnat,enat", seconds=0.4, ramp=0.1, trials=5,
                    max_pps=2.6e6, warmup_pps=20000, check_frames=200)
    ap.add_argument("--vips", type=int, default=16,
                    help="services (VIPs 198.18.10.100 upwards); ENAT lends ports per VIP")
    ap.add_argument("--check-syns", type=int, default=2000,
                    help="paced new flows before the flood (mode works; frames checked at the sink)")
    ap.add_argument("--tail", type=float, default=0.5,
                    help="seconds of frames beyond ramp+window (flood frames = --max-pps x "
                         "(ramp + seconds + tail); the generator must not run out inside the window)")
    a = ap.parse_args(argv)
    a.proto = "tcp"
    a.unit = "syn/s"
    check_args(ap, a)
    if not 1 <= a.vips <= 100:
        ap.error("--vips must be in 1..100 (198.18.10.100-199)")
    a.vips = [f"198.18.10.{100 + i}" for i in range(a.vips)]
    if a.generator != "c":
        ap.error("cps.py needs the C generator (each frame is sent once)")
    return a


def main(argv=None):
    args = parse_args(argv)
    return bench_main(args, argv, ns_prefix=NS_PREFIX, gen_class=SynGenerator, prepare=prepare,
                      report=report)


if __name__ == "__main__":
    sys.exit(main())
