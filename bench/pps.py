#!/usr/bin/env python3
"""Packet-rate harness: 64-byte UDP frames of many flows through a forwarder namespace.

    python bench/pps.py [--modes kernel,nftdnat,nat,dr,tun,fullnat,enat] [--seconds 3] [--trials 5]
                        [--flows 256] [--json out.json]

Topology (built with pyroute2, one prefix per run, always torn down)::

    <p>-gen  g0 198.18.10.2/24 --veth-- f0 198.18.10.1/24  <p>-fwd  f1 198.18.11.1/24 --veth-- s0 198.18.11.2/24  <p>-sink

A generator (bench/pktgen.c, built with gcc at run time; pinned to --gen-cpu) sends
precomputed 60-byte Ethernet/IPv4/UDP frames (64 bytes on the wire with FCS), one per
flow, round robin, with sendmmsg() and PACKET_QDISC_BYPASS; the sink drops them in
an nftables netdev ingress hook.  The rate is the delta of the sink's rx_packets
over a steady window.  Every mode is reported as a ratio to plain kernel IPv4
forwarding measured in the same run; absolute numbers on this VM are noise.

Needs root, gcc, nft, iproute2, util-linux (taskset) and pyroute2.  See bench/README.md.
bench/cps.py reuses the lab, the modes and the generator for new TCP connections per second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import select
import shlex
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from pyroute2 import NetNS, netns

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)   # where lb.director.daemon is imported from; --lb-root changes it

GEN_IP, FWD_GEN_IP = "198.18.10.2", "198.18.10.1"
FWD_SINK_IP, SINK_IP = "198.18.11.1", "198.18.11.2"
VIP, PORT = "198.18.10.100", 9
LIP = "198.18.11.3"        # fullnat: the local address (a /32 on f1) the sink sees as the client
LPORT_RANGE = (1025, 65535)  # lbd's default --lport-range
SPORT_BASE = 10000
FRAME_LEN = 60  # + 4 bytes FCS = 64 on the wire

ALL_MODES = ("kernel", "nftdnat", "nat", "dr", "tun", "fullnat", "enat")
NS_PREFIX = "ppsbench"  # namespaces "<NS_PREFIX><pid>x<rand>-{gen,fwd,sink}"; not "lb*", which other harnesses sweep

# Offloads turned off on every veth (kernel feature names, as `ethtool -k` lists them).
OFFLOAD_FEATURES = (
    "tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
    "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-udp-segmentation", "tx-generic-segmentation",
    "tx-gso-list", "rx-gro", "rx-gro-list", "rx-udp-gro-forwarding",
)


class Unavailable(Exception):
    """A mode cannot run here (e.g. lb.director.daemon missing); the others still run."""


class _Terminate(BaseException):
    pass


MAIN_PID = os.getpid()


def _on_signal(signum, frame):
    if os.getpid() != MAIN_PID:
        # A forked copy of this process (pyroute2's NetNS helper lives in a namespace, forked
        # from us) must die as it would by default, not unwind our stack and tear down the lab.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise _Terminate(f"signal {signum}")


# --------------------------------------------------------------------------- helpers

def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def nsexec(ns, *cmd, check=True, **kw):
    return run(["ip", "netns", "exec", ns, *cmd], check=check, **kw)


def sysctl(ns, **kv):
    args = [f"{k.replace('__', '.')}={v}" for k, v in kv.items()]
    nsexec(ns, "sysctl", "-qw", *args)


def ip_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def aton(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def mac_bytes(m: str) -> bytes:
    return bytes(int(x, 16) for x in m.split(":"))


def build_frames(dst_mac, src_mac, src_ip, dst_ip, dport, flows):
    """One 60-byte frame per flow (source port SPORT_BASE+i), correct IP and UDP checksums."""
    payload = b"lvs-py-bench-pps!!"  # 18 bytes -> 14+20+8+18 = 60
    frames = []
    for i in range(flows):
        sport = SPORT_BASE + i
        udp_len = 8 + len(payload)
        ip_len = 20 + udp_len
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0x4000, 64, 17, 0,
                          aton(src_ip), aton(dst_ip))
        iph = iph[:10] + struct.pack("!H", ip_checksum(iph)) + iph[12:]
        pseudo = aton(src_ip) + aton(dst_ip) + struct.pack("!BBH", 0, 17, udp_len)
        udph = struct.pack("!HHHH", sport, dport, udp_len, 0)
        csum = ip_checksum(pseudo + udph + payload) or 0xFFFF
        udph = udph[:6] + struct.pack("!H", csum)
        frame = mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00" + iph + udph + payload
        assert len(frame) == FRAME_LEN, len(frame)
        frames.append(frame)
    return frames


def trafgen_config(frames) -> str:
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }" for f in frames) + "\n"


def softnet() -> list[tuple[int, int, int]]:
    """Per-CPU (processed, dropped, time_squeeze) from /proc/net/softnet_stat (host-wide)."""
    out = []
    with open("/proc/net/softnet_stat") as f:
        for line in f:
            c = line.split()
            out.append((int(c[0], 16), int(c[1], 16), int(c[2], 16)))
    return out


def cpu_times() -> list[tuple[int, int, int]]:
    """Per-CPU (total, idle+iowait, softirq, steal) jiffies from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                out.append((sum(v[:8]), v[3] + v[4], v[6], v[7]))
    return out


def napi_threads(ifname):
    """PIDs of kernel threads named napi/<ifname>-<id>."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/comm") as f:
                    if f.read().strip().startswith(f"napi/{ifname}-"):
                        out.append(int(e))
            except OSError:
                pass
    return out


def proc_jiffies(pid):
    """utime + stime of a process (all threads), 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12])
    except (OSError, IndexError, ValueError):
        return 0


def kill_own(proc: subprocess.Popen | None, sig=signal.SIGINT, wait=3.0):
    """Stop a process this harness started (its own session: pgid == its PID)."""
    if proc is None or proc.poll() is not None:
        return
    for s in (sig, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


# --------------------------------------------------------------------------- topology

@dataclass
class Lab:
    prefix: str
    workdir: str
    gen: str = ""
    fwd: str = ""
    sink: str = ""
    handles: dict = field(default_factory=dict)
    idx: dict = field(default_factory=dict)
    mac: dict = field(default_factory=dict)
    created: list = field(default_factory=list)

    def __post_init__(self):
        self.gen, self.fwd, self.sink = (f"{self.prefix}-{r}" for r in ("gen", "fwd", "sink"))

    # -- build / teardown
    def build(self, rx_path, fwd_cpu, sink_napi=True):
        for ns in (self.gen, self.fwd, self.sink):
            netns.create(ns)
            self.created.append(ns)
            self.handles[ns] = NetNS(ns)
        g, f, s = (self.handles[n] for n in (self.gen, self.fwd, self.sink))
        g.link("add", ifname="g0", kind="veth", peer={"ifname": "f0", "net_ns_fd": self.fwd})
        f.link("add", ifname="f1", kind="veth", peer={"ifname": "s0", "net_ns_fd": self.sink})
        for ns, ifn in ((self.gen, "g0"), (self.fwd, "f0"), (self.fwd, "f1"), (self.sink, "s0")):
            h = self.handles[ns]
            i = h.link_lookup(ifname=ifn)[0]
            self.idx[ifn] = (ns, i)
            self.mac[ifn] = h.link("get", index=i)[0].get("IFLA_ADDRESS")
        for ns in (self.gen, self.fwd, self.sink):
            sysctl(ns, net__ipv6__conf__all__disable_ipv6=1, net__ipv6__conf__default__disable_ipv6=1,
                   net__ipv4__ip_forward=0)
        self.set_offloads(sink_napi)
        addrs = (("g0", GEN_IP), ("f0", FWD_GEN_IP), ("f1", FWD_SINK_IP), ("s0", SINK_IP))
        for ifn, a in addrs:
            ns, i = self.idx[ifn]
            h = self.handles[ns]
            h.addr("add", index=i, address=a, prefixlen=24)
            h.link("set", index=i, state="up")
        for ns in (self.gen, self.fwd, self.sink):
            lo = self.handles[ns].link_lookup(ifname="lo")[0]
            self.handles[ns].link("set", index=lo, state="up")
        # Static neighbours: no ARP in the measurement.
        neighs = (("g0", FWD_GEN_IP, "f0"), ("g0", VIP, "f0"), ("f0", GEN_IP, "g0"),
                  ("f1", SINK_IP, "s0"), ("s0", FWD_SINK_IP, "f1"))
        for ifn, dst, peer in neighs:
            ns, i = self.idx[ifn]
            self.handles[ns].neigh("replace", dst=dst, lladdr=self.mac[peer], ifindex=i, state="permanent")
        g.route("add", dst="198.18.11.0/24", gateway=FWD_GEN_IP)
        s.route("add", dst="198.18.10.0/24", gateway=FWD_SINK_IP)
        # Where the forwarder's receive work runs.  veth has no IRQ: its xmit hands the frame to
        # the peer on the *sender's* CPU (netif_rx into that CPU's backlog), so by default the
        # forwarder's softirq work would share the generator's CPU.  Move it to the forwarder CPU:
        #  napi: rx-gro on f0 puts the veth in NAPI mode (its own 256-frame ring), NAPI is made
        #        threaded and its kthread pinned to fwd_cpu.  The generator's per-frame cost is
        #        lowest this way (measured ~2.2 Mpps offered vs ~1.9 with rps), so it leaves the
        #        most headroom above kernel forwarding.  UDP GRO merges nothing here (no socket
        #        asks for it and rx-udp-gro-forwarding stays off); out_frame_len checks it.
        #  rps:  RPS on f0 to fwd_cpu (the generator pays for hashing and an IPI per frame).
        #  none: leave it on the generator's CPU (only sensible for the trafgen generator).
        self.rx_path, self.napi_pids = rx_path, []
        if rx_path == "rps":
            nsexec(self.fwd, "sh", "-c", f"echo {1 << fwd_cpu:x} > /sys/class/net/f0/queues/rx-0/rps_cpus")
        elif rx_path == "napi":
            before = set(napi_threads("f0"))
            self.set_features("f0", on=("rx-gro",))
            nsexec(self.fwd, "sh", "-c", "echo 1 > /sys/class/net/f0/threaded")
            deadline = time.monotonic() + 3
            while not (new := set(napi_threads("f0")) - before):
                if time.monotonic() > deadline:
                    raise RuntimeError("no napi/f0-* kernel thread appeared after enabling threaded NAPI")
                time.sleep(0.05)
            self.napi_pids = sorted(new)
            for pid in self.napi_pids:
                run(["taskset", "-p", f"{1 << fwd_cpu:x}", str(pid)])
            self.features_on["f0"] = self.get_features_on("f0")
        # Cheap sink: drop IPv4 in netdev ingress (rx_packets is counted before it).  ARP passes,
        # so that a forwarder that resolves the real server's MAC itself (lb.director.daemon) gets answers.
        self.nft(self.sink, f"""
table netdev lbbench_sink {{
  chain in {{ type filter hook ingress device "s0" priority 0; policy accept;
    ether type ip counter drop
  }}
}}""")

    _FEATURES_PROG = (
        "import sys\n"
        "from pyroute2.ethtool import Ethtool\n"
        "on = [x for x in sys.argv[3].split(',') if x]\n"
        "off = [x for x in sys.argv[2].split(',') if x not in on]\n"
        "e = Ethtool()\n"
        "f = e.get_features(sys.argv[1])\n"
        "if sys.argv[4] == 'set':\n"
        "    for n in off + on:\n"
        "        if n in f.features and f.features[n].available:\n"
        "            f.features[n].enable = n in on\n"
        "    e.set_features(sys.argv[1], f)\n"
        "    f = e.get_features(sys.argv[1])\n"
        "print(','.join(sorted(n for n in set(off + on) if n in f.features and f.features[n].enable)))\n"
    )

    def set_features(self, ifn, off=(), on=()):
        """ethtool -K for one veth (pyroute2.ethtool, run inside its namespace); returns what is on."""
        ns, _ = self.idx[ifn]
        r = nsexec(ns, sys.executable, "-c", self._FEATURES_PROG, ifn, ",".join(off), ",".join(on), "set")
        return r.stdout.strip()

    def get_features_on(self, ifn):
        ns, _ = self.idx[ifn]
        r = nsexec(ns, sys.executable, "-c", self._FEATURES_PROG, ifn, ",".join(OFFLOAD_FEATURES), "", "get")
        return r.stdout.strip()

    def set_offloads(self, sink_napi):
        """Turn OFFLOAD_FEATURES off on every veth; JSON meta.features_on says what is on after.

        sink_napi: turn rx-gro back *on* for s0 only.  That puts veth f1->s0 in NAPI mode, so the
        sink receives through its own ring instead of the per-CPU backlog of the forwarder CPU,
        which the flood keeps full (there, 5-25 % of the forwarded frames were dropped at the sink
        enqueue, by an amount that differed between modes).  UDP GRO merges nothing here (no
        socket asks for it) and the sink drops every frame individually in netdev ingress.
        """
        self.features_on = {}
        for ifn in self.idx:
            on = ("rx-gro",) if (sink_napi and ifn == "s0") else ()
            self.features_on[ifn] = self.set_features(ifn, off=OFFLOAD_FEATURES, on=on)
        self.offloads_left_on = {i: v for i, v in self.features_on.items()
                                 if v and not (sink_napi and i == "s0" and v == "rx-gro")}

    def napi_jiffies(self):
        """CPU time of the forwarder's NAPI kthread(s) (rx_path napi): forwarder work, not foreign."""
        return sum(proc_jiffies(p) for p in self.napi_pids)

    def nft(self, ns, ruleset):
        nsexec(ns, "nft", "-f", "-", input=ruleset)

    def teardown(self):
        if os.getpid() != MAIN_PID:
            return  # a forked helper unwinding: not its lab
        for h in self.handles.values():
            try:
                h.close()
            except Exception:
                pass
        self.handles.clear()
        for ns in reversed(self.created):
            try:
                netns.remove(ns)
            except Exception as e:  # keep going: remove the others
                print(f"warning: could not remove netns {ns}: {e}", file=sys.stderr)
        self.created.clear()

    # -- counters
    def stats(self, ifn):
        ns, i = self.idx[ifn]
        return self.handles[ns].link("get", index=i)[0].get("IFLA_STATS64")


def sample(lab):
    t = time.monotonic()
    st = {ifn: lab.stats(ifn) for ifn in ("s0", "g0", "f0", "f1")}
    t2 = time.monotonic()
    return (t + t2) / 2, st, softnet(), cpu_times()


# --------------------------------------------------------------------------- modes

PROTO_NUM = {"udp": 17, "tcp": 6}
UDP_PAYLOAD = b"lvs-py-bench-pps!!"


def parse_frame(f: bytes) -> dict:
    """The fields check_frame() looks at, from one Ethernet/IPv4 frame (IPIP: "inner" too)."""
    p = {"len": len(f), "dmac": ":".join(f"{b:02x}" for b in f[0:6]),
         "smac": ":".join(f"{b:02x}" for b in f[6:12]), "etype": int.from_bytes(f[12:14], "big")}
    p.update(_parse_ip(f[14:]))
    return p


def _parse_ip(ip: bytes) -> dict:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return {"proto": None}
    ihl, tot = (ip[0] & 15) * 4, int.from_bytes(ip[2:4], "big")
    saddr, daddr = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    p = {"ihl": ihl, "tot": tot, "ttl": ip[8], "proto": ip[9], "saddr": saddr, "daddr": daddr,
         "ip_csum_ok": ip_checksum(ip[:ihl]) == 0}
    l4 = ip[ihl:tot]
    if ip[9] == 4:
        p["inner"] = _parse_ip(l4)
        return p
    if ip[9] not in (6, 17) or len(l4) < 8:
        return p
    p["sport"], p["dport"] = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
    pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
    csum = int.from_bytes(l4[6:8] if ip[9] == 17 else l4[16:18], "big")
    p["l4_csum_ok"] = (ip[9] == 17 and csum == 0) or ip_checksum(pseudo + l4) == 0
    if ip[9] == 17:
        p["payload"] = l4[8:]
    else:
        p["flags"], doff = l4[13], (l4[12] >> 4) * 4
        opts, i, p["toa"] = l4[20:doff], 0, None
        while i < len(opts):
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2:
                p["bad_options"] = True
                break
            if kind == 254 and opts[i + 1] == 8:
                p["toa"] = (".".join(map(str, opts[i + 4:i + 8])), int.from_bytes(opts[i + 2:i + 4], "big"))
            i += opts[i + 1]
    return p


# Run in the sink namespace: capture up to N IPv4 frames arriving on s0 (AF_PACKET sees them
# before the netdev ingress drop), bounded by time; one hex frame per line.
CAPTURE_PROG = r"""
import select, socket, sys, time
ifn, n, secs, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind((ifn, 0))
print("ready", flush=True)
got, deadline = [], time.monotonic() + secs
while len(got) < n:
    left = deadline - time.monotonic()
    if left <= 0 or not select.select([s], [], [], left)[0]:
        break
    f, addr = s.recvfrom(4096)
    if addr[2] != socket.PACKET_OUTGOING and f[12:14] == b"\x08\x00":
        got.append(f.hex())
with open(out, "w") as fh:
    fh.write("\n".join(got))
"""


class SinkCapture:
    """A bounded capture on s0 while the paced warm-up runs: frames to check against the mode."""

    def __init__(self, lab, n, seconds, tag):
        self.out = os.path.join(lab.workdir, f"capture-{tag}.hex")
        self.p = subprocess.Popen(["ip", "netns", "exec", lab.sink, sys.executable, "-c", CAPTURE_PROG,
                                   "s0", str(n), f"{seconds:.2f}", self.out],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        ready = select.select([self.p.stdout], [], [], 10)[0]
        if not ready or self.p.stdout.readline().strip() != "ready":
            kill_own(self.p)
            raise RuntimeError(f"sink capture did not start: {self.p.stderr.read()[-300:]}")

    def frames(self, timeout):
        try:
            self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            kill_own(self.p)
        try:
            with open(self.out) as f:
                return [bytes.fromhex(x) for x in f.read().split()]
        except OSError:
            return []


class Mode:
    name = ""
    target = SINK_IP
    # Bytes the forwarder adds to each frame (tun: the outer IPv4 header).  out_frame_len is
    # expected to be FRAME_LEN - 14 + grows; more than that means frames were merged (GRO).
    grows = 0
    # True when the mode's forwarder is a process of its own on --fwd-cpu (lb.director.daemon); False
    # for the kernel modes, whose forwarding runs wherever the receive work does (work_cpu()).
    userspace = False
    # What the sink should see (check_frame): the client's own source address and port (False:
    # a local address or the VIP, and a port from lbd's pool); the VIP as destination (DR, TUN);
    # the TTL the forwarder leaves; TOA on TCP SYNs (FULLNAT, ENAT).
    keeps_client = True
    to_vip = False
    ttl = 63
    toa = False

    def __init__(self, lab, args):
        self.lab, self.args = lab, args
        self.proto = getattr(args, "proto", "udp")
        self.vips = list(getattr(args, "vips", None) or [VIP])

    def setup(self):
        pass

    def teardown(self):
        pass

    def extra_counters(self):
        return {}

    def final_counters(self):
        """Counters only known once the mode is torn down (lbd's exit line)."""
        return {}

    def own_jiffies(self):
        """CPU time (jiffies) of this mode's own userspace forwarder, 0 for kernel modes."""
        return 0

    # -- what should arrive at the sink
    def source_for(self, vip):
        """(address, port range) the sink should see as the source, for a flow to `vip`;
        None when it is the client's own."""
        return None

    def check_frame(self, p, sent):
        """Problems with one frame captured on s0, [] if it is what this mode should send.
        sent: {(client address, client port): vip} of the frames the generator sent."""
        errs = []
        if p["dmac"] != self.lab.mac["s0"] or p["smac"] != self.lab.mac["f1"]:
            errs.append("ethernet addresses")
        if p.get("proto") is None or not p["ip_csum_ok"]:
            return errs + ["ip header or checksum"]
        q = p
        if self.grows:      # tun: IPIP from f1's address to the sink, the packet inside unchanged
            if (p["proto"], p["saddr"], p["daddr"]) != (4, FWD_SINK_IP, SINK_IP):
                return errs + ["outer header"]
            q = p["inner"]
            if q.get("proto") is None or not q["ip_csum_ok"]:
                return errs + ["inner ip header or checksum"]
        if q["proto"] != PROTO_NUM[self.proto] or "sport" not in q:
            return errs + ["protocol"]
        if not q["l4_csum_ok"]:
            errs.append("l4 checksum")
        if q["ttl"] != self.ttl:
            errs.append(f"ttl {q['ttl']}")
        # which sent flow is this?
        orig = None
        if self.keeps_client:
            vip = sent.get((q["saddr"], q["sport"]))
            orig = (q["saddr"], q["sport"], vip) if vip else None
        elif self.proto == "tcp" and q.get("toa"):
            vip = sent.get(q["toa"])
            orig = (*q["toa"], vip) if vip else None
        elif len(set(sent.values())) == 1:   # UDP through FULLNAT/ENAT: only the VIP is known
            orig = (None, None, next(iter(sent.values())))
        if orig is None:
            return errs + ["not a flow the generator sent"]
        want_dst = (orig[2] if self.to_vip else SINK_IP, PORT)
        if (q["daddr"], q["dport"]) != want_dst:
            errs.append("destination")
        src = self.source_for(orig[2])
        if src is not None:
            addr, (lo, hi) = src
            if q["saddr"] != addr or not lo <= q["sport"] <= hi:
                errs.append("source (local address/port)")
        if self.proto == "udp" and q["payload"] != UDP_PAYLOAD:
            errs.append("payload")
        if self.proto == "tcp":
            if q["flags"] != 0x02:
                errs.append(f"tcp flags {q['flags']:#x}")
            if self.toa and q["toa"] != (orig[0], orig[1]):
                errs.append("TOA missing or wrong")
            if not self.toa and q["toa"]:
                errs.append("unexpected TOA")
        return errs


class KernelMode(Mode):
    name = "kernel"

    def setup(self):
        sysctl(self.lab.fwd, net__ipv4__ip_forward=1)

    def teardown(self):
        sysctl(self.lab.fwd, net__ipv4__ip_forward=0)


def conntrack_stats(ns):
    """Sums over CPUs of the fwd namespace's /proc/net/stat/nf_conntrack columns, and the count."""
    r = nsexec(ns, "sh", "-c", "cat /proc/net/stat/nf_conntrack; echo count "
               "$(cat /proc/sys/net/netfilter/nf_conntrack_count)", check=False)
    lines = r.stdout.split("\n")
    out = {}
    if lines and lines[0].startswith("entries"):
        names = lines[0].split()
        for line in lines[1:]:
            v = line.split()
            if len(v) == len(names):
                for n, x in zip(names, v):
                    out[n] = out.get(n, 0) + int(x, 16)
    for line in lines:
        if line.startswith("count "):
            out["count"] = int(line.split()[1] or 0)
    return out


class NftDnatMode(Mode):
    name = "nftdnat"
    target = VIP

    def setup(self):
        sysctl(self.lab.fwd, net__ipv4__ip_forward=1)
        vips = ", ".join(self.vips)
        self.lab.nft(self.lab.fwd, f"""
table ip lbbench_dnat {{
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    ip daddr {{ {vips} }} {self.proto} dport {PORT} counter dnat to {SINK_IP}:{PORT}
  }}
}}""")
        self.ct0 = conntrack_stats(self.lab.fwd)

    def teardown(self):
        nsexec(self.lab.fwd, "nft", "delete", "table", "ip", "lbbench_dnat", check=False)
        # conntrack entries outlive the table until their timeout (120 s for a SYN); flush so that
        # every trial starts from an empty table (warm-up re-establishes them).  No conntrack(8)
        # here: pyroute2's netlink client, inside the namespace.
        nsexec(self.lab.fwd, sys.executable, "-c",
               "from pyroute2 import Conntrack\nc = Conntrack()\nc.flush()\nc.close()", check=False,
               timeout=60)
        sysctl(self.lab.fwd, net__ipv4__ip_forward=0)

    def extra_counters(self):
        ct = conntrack_stats(self.lab.fwd)
        out = {k: ct[k] - self.ct0.get(k, 0) for k in ("insert_failed", "drop",
                                                         "early_drop", "invalid") if k in ct}
        out["nf_conntrack_count"] = ct.get("count")
        out["nf_conntrack_count_at_setup"] = self.ct0.get("count")
        return out


# lbadm for a list of commands in one Python process (a service per VIP is tens of commands).
CLI_BATCH_PROG = r"""
import json, sys
from lb.director import cli
for a in json.loads(sys.argv[2]):
    rc = cli.main(["--socket", sys.argv[1], *a])
    if rc:
        sys.exit(f"lbadm {' '.join(a)}: exit {rc}")
"""


class NatMode(Mode):
    """lb.director.daemon in NAT (masq) mode: VIP on f0, ip_forward=0, fast path busy thread on --fwd-cpu.

    DrMode and TunMode are the same setup with another forwarding method for the real server
    (fwd_args).  The sink needs no VIP for either: it drops all IPv4 in netdev ingress, before
    any address or protocol check, and rx_packets counts the frame before that.  FullnatMode and
    EnatMode add local addresses (extra_commands) and rewrite the source too."""
    name = "nat"
    target = VIP
    fwd_args = ("-m", "-w", "1")
    userspace = True

    def __init__(self, lab, args):
        super().__init__(lab, args)
        self.proc = None
        os.makedirs("/run/lbd", mode=0o700, exist_ok=True)
        self.sock = f"/run/lbd/bench-{lab.prefix}.sock"
        self.log_path = os.path.join(lab.workdir, "lbd.log")
        self.env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.lport_range = LPORT_RANGE
        for a in args.daemon_arg:
            if a.startswith("--lport-range="):
                lo, _, hi = a.split("=", 1)[1].partition("-")
                self.lport_range = (int(lo), int(hi))

    def cli(self, *a, check=True, timeout=10):
        return run([sys.executable, "-m", "lb.director.cli", "--socket", self.sock, *a],
                   check=check, env=self.env, cwd=REPO, timeout=timeout)

    def cli_batch(self, cmds, timeout=60):
        return run([sys.executable, "-c", CLI_BATCH_PROG, self.sock, json.dumps(cmds)],
                   env=self.env, cwd=REPO, timeout=timeout)

    def log_tail(self, n=15):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:]).strip()
        except OSError:
            return ""

    def flag(self):
        return "-t" if self.proto == "tcp" else "-u"

    def extra_commands(self, i, vip):
        """lbadm commands between -A and -a for the i-th VIP's service (fullnat: --add-laddr)."""
        return []

    def pre_daemon(self):
        """Addresses the daemon must see when it starts (fullnat: the local addresses on f1)."""

    def setup(self):
        ns, i = self.lab.idx["f0"]
        h = self.lab.handles[ns]
        for vip in self.vips:
            if not h.get_addr(index=i, address=vip):
                h.addr("add", index=i, address=vip, prefixlen=32)
        self.pre_daemon()
        sysctl(self.lab.fwd, net__ipv4__ip_forward=0)
        cmd = ["ip", "netns", "exec", self.lab.fwd, "taskset", "-c", str(self.args.fwd_cpu),
               sys.executable, "-m", "lb.director.daemon", "--interface", "f0", "--interface", "f1",
               "--socket", self.sock, *self.args.daemon_arg]
        self.cmd = shlex.join(cmd)
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                     env=self.env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.args.daemon_timeout
        last = ""
        while True:
            if self.proc.poll() is not None:
                raise Unavailable(f"lb.director.daemon exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                r = self.cli("-L", "-n", check=False, timeout=5)
                if r.returncode == 0:
                    break
                last = (r.stderr or r.stdout).strip()
            except subprocess.TimeoutExpired:
                last = "lb.director.cli -L -n timed out"
            if time.monotonic() > deadline:
                raise Unavailable(f"lb.director.daemon not answering on {self.sock} after "
                                  f"{self.args.daemon_timeout}s: {last} | {self.log_tail()}")
            time.sleep(0.2)
        f = self.flag()
        cmds = []
        for k, vip in enumerate(self.vips):
            cmds.append(["-A", f, f"{vip}:{PORT}", "-s", "rr"])
            cmds += self.extra_commands(k, vip)
            cmds.append(["-a", f, f"{vip}:{PORT}", "-r", f"{SINK_IP}:{PORT}", *self.fwd_args])
        try:
            self.cli_batch(cmds)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            raise Unavailable(f"configuring lb.director.daemon failed: {e}")
        self.log_mark = os.path.getsize(self.log_path)

    def own_jiffies(self):
        return proc_jiffies(self.proc.pid) if self.proc else 0

    def extra_counters(self):
        out = {}
        # -L -n shows the forwarding method and the connection counts; --stats adds per-server
        # packet counters, but only lbadm from a8a09d1 on knows it (older trees: "unknown option").
        for args in (("-L", "-n"), ("-L", "-n", "--stats")):
            try:
                r = self.cli(*args, check=False, timeout=5)
                out[" ".join(args)] = (r.stdout or r.stderr).strip()
            except Exception as e:
                out[" ".join(args)] = f"error: {e}"
        return out

    def final_counters(self):
        # lbd's exit line: "stopped; counters: rx_frames=... new_conns=... table_full=..."
        try:
            with open(self.log_path) as f:
                f.seek(getattr(self, "log_mark", 0))
                lines = [x for x in f if "stopped; counters:" in x]
        except OSError:
            return {}
        if not lines:
            return {}
        kv = lines[-1].split("counters:", 1)[1].split()
        return {"lbd": {k: int(v) for k, _, v in (x.partition("=") for x in kv) if v.lstrip("-").isdigit()}}

    def teardown(self):
        kill_own(self.proc, signal.SIGTERM)
        self.proc = None
        # lb.director.daemon's per-interface lock files for our namespace (named by its inode); nobody
        # holds them once the daemon is gone, and the inode number may be reused later.
        try:
            ino = os.stat(f"/var/run/netns/{self.lab.fwd}").st_ino
            for ifn in ("f0", "f1"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/run/lbd/netns-{ino}-{ifn}.lock")
        except OSError:
            pass
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass


class DrMode(NatMode):
    """lb.director.daemon in DR (-g): only the destination MAC is rewritten to s0's; dst IP stays the VIP.
    s0 is on f1's segment, as DR requires."""
    name = "dr"
    fwd_args = ("-g", "-w", "1")
    to_vip = True
    ttl = 64


class TunMode(NatMode):
    """lb.director.daemon in TUN (-i): IPIP, outer header f1's address -> 198.18.11.2, 20 bytes more."""
    name = "tun"
    fwd_args = ("-i", "-w", "1")
    grows = 20
    to_vip = True
    ttl = 64


class FullnatMode(NatMode):
    """lb.director.daemon in FULLNAT (-b): CIP:cport -> VIP:9 becomes LIP:lport -> 198.18.11.2:9.  The
    i-th VIP's service has local address 198.18.11.(3+i), a /32 on f1 (pps: one, 198.18.11.3),
    each with its own port pool (--lport-range)."""
    name = "fullnat"
    fwd_args = ("-b", "-w", "1")
    keeps_client = False
    toa = True

    def lip(self, i):
        return f"198.18.11.{3 + i}"

    def pre_daemon(self):
        ns, i = self.lab.idx["f1"]
        h = self.lab.handles[ns]
        for k in range(len(self.vips)):
            if not h.get_addr(index=i, address=self.lip(k)):
                h.addr("add", index=i, address=self.lip(k), prefixlen=32)

    def extra_commands(self, i, vip):
        return [["--add-laddr", self.flag(), f"{vip}:{PORT}", "-z", self.lip(i)]]

    def source_for(self, vip):
        return self.lip(self.vips.index(vip)), self.lport_range

    def teardown(self):
        super().teardown()
        ns, i = self.lab.idx["f1"]
        h = self.lab.handles[ns]
        for k in range(len(self.vips)):
            with contextlib.suppress(Exception):
                h.addr("del", index=i, address=self.lip(k), prefixlen=32)


class EnatMode(NatMode):
    """lb.director.daemon in ENAT (--enat): CIP:cport -> VIP:9 becomes VIP:lport -> 198.18.11.2:9 (the
    VIP's own port pool), TOA on TCP SYNs; the sink would answer the client directly."""
    name = "enat"
    fwd_args = ("--enat", "-w", "1")
    keeps_client = False
    toa = True

    def source_for(self, vip):
        return vip, self.lport_range


MODES = {"kernel": KernelMode, "nftdnat": NftDnatMode, "nat": NatMode, "dr": DrMode, "tun": TunMode,
         "fullnat": FullnatMode, "enat": EnatMode}


# --------------------------------------------------------------------------- generator

class Generator:
    """Sends the per-flow frames from the gen namespace, pinned to --gen-cpu, bounded in count and time.

    'c' (default): bench/pktgen.c, compiled here with gcc, sendmmsg + PACKET_QDISC_BYPASS.
    'trafgen': netsniff-ng trafgen; only usable with --rx-path none (see pktgen.c for why).
    """

    def __init__(self, lab, args):
        self.lab, self.args = lab, args
        self.files = {}
        self.cmd = ""
        if args.generator == "c":
            src = os.path.join(BENCH, "pktgen.c")
            self.binary = os.path.join(lab.workdir, "pktgen")
            run(["gcc", "-O2", "-Wall", "-o", self.binary, src])

    def frames_for(self, target, kind="flood"):
        """Path (without .bin/.cfg) of the frames to `target`; pps sends the same frames in the
        warm-up and the flood (cps.py: two sets of distinct new flows)."""
        if target not in self.files:
            frames = build_frames(self.lab.mac["f0"], self.lab.mac["g0"], GEN_IP, target, PORT,
                                  self.args.flows)
            base = os.path.join(self.lab.workdir, f"frames-{target}")
            with open(base + ".bin", "wb") as f:
                f.write(b"".join(frames))
            with open(base + ".cfg", "w") as f:
                f.write(trafgen_config(frames))
            self.files[target] = base
        return self.files[target]

    def sent_clients(self, target):
        """{(client address, client port): destination} of the warm-up frames."""
        return {(GEN_IP, SPORT_BASE + i): target for i in range(self.args.flows)}

    def warm_count(self):
        return self.args.flows * self.args.warmup_rounds

    def flood_count(self, budget):
        return int(self.args.max_pps * budget)

    def expected_out_len(self, mode):
        # veth counts bytes after the Ethernet header; 60-byte frames carry no padding here
        return FRAME_LEN - 14 + mode.grows

    def start(self, target, count, seconds, tag, rate=0, kind="flood"):
        base = self.frames_for(target, kind)
        pin = ["ip", "netns", "exec", self.lab.gen, "taskset", "-c", str(self.args.gen_cpu)]
        if self.args.generator == "c":
            cmd = pin + [self.binary, "g0", base + ".bin", str(FRAME_LEN), str(count),
                         f"{seconds:.3f}", str(min(self.args.batch, 8) if rate else self.args.batch),
                         str(int(rate))]
        else:
            if rate:
                cmd_rate = ["-b", f"{int(rate)}pps"]
            cmd = pin + ["timeout", "-s", "INT", f"{seconds:.3f}", "trafgen", "-o", "g0",
                         "-i", base + ".cfg", "-n", str(count), "-P", "1", "-Q", "--no-sock-mem", "-C"] + (cmd_rate if rate else [])
        self.log = os.path.join(self.lab.workdir, f"gen-{tag}.log")
        with open(self.log, "w") as log:
            p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.cmd = shlex.join(cmd)
        return p

    def output(self):
        try:
            with open(self.log) as f:
                return f.read().strip()
        except OSError:
            return ""

    def result(self):
        """The C generator's JSON summary line, if any."""
        for line in reversed(self.output().splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    pass
        return None

    def burst(self, target, count, timeout, rate):
        """Send exactly `count` frames at `rate` pps (warm-up); bounded by timeout."""
        p = self.start(target, count, timeout, "warmup", rate=rate, kind="warm")
        try:
            p.wait(timeout=timeout + 3)
        except subprocess.TimeoutExpired:
            pass
        finally:
            kill_own(p)
        if p.returncode != 0:
            raise RuntimeError(f"generator failed ({p.returncode}): {self.output()[-300:]}")


def work_cpu(lab, mode, args):
    """The CPU that does the mode's forwarding, and so must be undisturbed during the window.

    With --rx-path none a kernel mode forwards in the generator's softirq/syscall context on
    --gen-cpu, and --fwd-cpu stays idle: checking that one marked every kernel trial disturbed
    (idle) or undisturbed whatever ran next to the generator.  lb.director.daemon always runs on --fwd-cpu."""
    return args.gen_cpu if lab.rx_path == "none" and not mode.userspace else args.fwd_cpu


def wait_quiet(args, cpu):
    """Wait (at most --quiet-wait s) until `cpu` is idle enough to measure on."""
    deadline = time.monotonic() + args.quiet_wait
    while True:
        c0 = cpu_times()
        time.sleep(0.3)
        c1 = cpu_times()
        x, y = c0[cpu], c1[cpu]
        busy = 1 - (y[1] - x[1]) / max(y[0] - x[0], 1)
        if busy <= args.max_foreign or time.monotonic() > deadline:
            return busy
        time.sleep(0.7)


def check_frames(mode, frames, sent):
    """Check frames captured at the sink against what `mode` should send (Mode.check_frame)."""
    problems, bad, first = {}, 0, None
    for f in frames:
        errs = mode.check_frame(parse_frame(f), sent)
        for e in errs:
            problems[e] = problems.get(e, 0) + 1
        if errs:
            bad += 1
            first = first or f.hex()
    return {"captured": len(frames), "bad": bad, "problems": problems, "first_bad_frame": first}


def measure(lab, gen, mode, args, tag):
    """One trial: warm-up (establish every flow), then a steady window. Returns a dict."""
    a = args
    wc = work_cpu(lab, mode, a)
    idle_busy = wait_quiet(a, wc)
    # Warm-up pass: every flow a few times, so that the measurement is of established flows
    # (cps.py: a separate set of new flows, which only checks the mode works).
    before = lab.stats("s0")["rx_packets"]
    warm_n = gen.warm_count()
    warm_timeout = 5 + 2 * warm_n / a.warmup_pps
    # Capture some of the warm-up frames at the sink: are they what the mode should send?
    cap = SinkCapture(lab, min(warm_n, a.check_frames), warm_timeout + 1, tag) if a.check_frames else None
    gen.burst(mode.target, warm_n, timeout=warm_timeout, rate=a.warmup_pps)
    time.sleep(0.2)
    warm_delivered = lab.stats("s0")["rx_packets"] - before
    check = check_frames(mode, cap.frames(timeout=2), gen.sent_clients(mode.target)) if cap else None
    if warm_delivered < 0.9 * warm_n:
        # Paced warm-up frames all arrive when the forwarder works at all.  A forwarder that
        # forwards nothing would otherwise report 0 pps as a measurement (seen with a half-built
        # fast path in the working tree).
        raise RuntimeError(f"warm-up: only {warm_delivered} of {warm_n} paced frames reached the sink; "
                           f"{mode.name} is not forwarding")

    budget = a.ramp + a.seconds + 2.0
    count = gen.flood_count(budget)
    p = gen.start(mode.target, count, budget + 3.0, tag)
    try:
        # wait for the generator to start sending
        g0 = lab.stats("g0")["tx_packets"]
        start_deadline = time.monotonic() + 5
        while lab.stats("g0")["tx_packets"] == g0:
            if p.poll() is not None:
                raise RuntimeError(f"generator exited early ({p.returncode}): {gen.output()[-300:]}")
            if time.monotonic() > start_deadline:
                raise RuntimeError("generator did not start sending within 5s")
            time.sleep(0.01)
        time.sleep(a.ramp)
        t0, s0, n0, c0 = sample(lab)
        # Our own work on the work CPU: the forwarder process and NAPI kthread, or (kernel modes
        # with --rx-path none) the generator, in whose syscalls the forwarding then runs.
        own = ((lambda: proc_jiffies(p.pid)) if wc == a.gen_cpu and wc != a.fwd_cpu
               else (lambda: mode.own_jiffies() + lab.napi_jiffies()))
        j0, g0j = own(), proc_jiffies(p.pid)
        time.sleep(a.seconds)
        t1, s1, n1, c1 = sample(lab)
        j1, g1j = own(), proc_jiffies(p.pid)
        finished_early = p.poll() is not None
    finally:
        kill_own(p)
    if finished_early:
        raise RuntimeError(f"generator stopped before the window ended ({gen.output()[-300:]}); "
                           f"raise --max-pps?")
    if mode.userspace and getattr(mode, "proc", None) is not None and mode.proc.poll() is not None:
        raise RuntimeError(f"lb.director.daemon died during the trial: {mode.log_tail()}")
    dt = t1 - t0

    def d(ifn, key):
        return s1[ifn][key] - s0[ifn][key]

    cpu = []
    for x, y in zip(c0, c1):
        tot = max(y[0] - x[0], 1)
        cpu.append({"busy": round(1 - (y[1] - x[1]) / tot, 3), "softirq": round((y[2] - x[2]) / tot, 3),
                    "steal": round((y[3] - x[3]) / tot, 3)})
    tot = max(c1[wc][0] - c0[wc][0], 1)
    # Whatever ran on the work CPU that is neither softirq nor our own process (forwarder and
    # NAPI kthread, or generator): other users of the VM.  Above a few % the trial is disturbed.
    foreign = cpu[wc]["busy"] - cpu[wc]["softirq"] - (j1 - j0) / tot
    res = {
        "mode": mode.name,
        "window_s": round(dt, 4),
        "work_cpu": wc,
        # (key kept for older JSON readers: it is the foreign share of work_cpu)
        "fwd_cpu_foreign": round(max(foreign, 0.0), 3),
        # The same for the generator's CPU (recorded, not judged: with --rx-path none it also
        # carries the forwarder's receive work for lb.director.daemon)
        "gen_cpu_foreign": round(max(cpu[a.gen_cpu]["busy"] - cpu[a.gen_cpu]["softirq"]
                                     - (g1j - g0j) / max(c1[a.gen_cpu][0] - c0[a.gen_cpu][0], 1), 0.0), 3),
        "fwd_cpu_busy_before": round(idle_busy, 3),
        "sink_rx_pps": d("s0", "rx_packets") / dt,
        # offered = what the generator put on g0: accepted by f0's backlog + dropped there
        "offered_pps": (d("g0", "tx_packets") + d("g0", "tx_dropped")) / dt,
        "fwd_in_rx_pps": d("f0", "rx_packets") / dt,         # accepted into the forwarder
        "fwd_in_dropped_pps": d("f0", "rx_dropped") / dt,    # backlog full: forwarder too slow
        "fwd_out_tx_pps": d("f1", "tx_packets") / dt,
        "fwd_out_dropped_pps": d("f1", "tx_dropped") / dt,   # sink's queue full
        # veth counts bytes after the Ethernet header: FRAME_LEN - 14 = 46 (66 for tun, which adds
        # an outer IPv4 header) unless frames were merged; summarize() warns when it is not that
        "out_frame_len": round(d("f1", "tx_bytes") / max(d("f1", "tx_packets"), 1), 2),
        "out_frame_len_expected": gen.expected_out_len(mode),
        "softnet_dropped": [b[1] - a_[1] for a_, b in zip(n0, n1)],
        "softnet_squeezed": [b[2] - a_[2] for a_, b in zip(n0, n1)],
        "cpu": cpu,
        "loadavg": open("/proc/loadavg").read().split()[:3],
        "warmup_frames": warm_n,
        "warmup_delivered": warm_delivered,
        "frame_check": check,
        "generator": gen.result(),
    }
    res.update({"extra": mode.extra_counters()})
    return res


# --------------------------------------------------------------------------- main

def make_parser(doc=__doc__):
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="kernel,nftdnat,nat",
                    help="comma list of %s; 'kernel' (the reference) is always run" % ",".join(ALL_MODES))
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement window per trial")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--flows", type=int, default=256, help="distinct UDP source ports")
    ap.add_argument("--json", metavar="PATH", help="also write all per-trial data here")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds skipped after the generator starts")
    ap.add_argument("--warmup-rounds", type=int, default=4, help="packets per flow sent before each trial")
    ap.add_argument("--warmup-pps", type=float, default=20000,
                    help="pace of the warm-up pass, so that new flows are not lost to a flood")
    ap.add_argument("--max-pps", type=float, default=8e6,
                    help="frame-count bound for the generator (count = max_pps * (ramp+seconds+2))")
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1, help="CPU of the forwarder (daemon busy thread)")
    ap.add_argument("--rx-path", choices=("napi", "rps", "none"), default="napi",
                    help="how the forwarder's receive work gets onto --fwd-cpu: threaded NAPI kthread "
                         "pinned there (default), RPS, or not at all (see Lab.build)")
    ap.add_argument("--generator", choices=("c", "trafgen"), default="c",
                    help="c: bench/pktgen.c built with gcc (default); trafgen: needs --rx-path none")
    ap.add_argument("--batch", type=int, default=64, help="frames per sendmmsg() call (c generator)")
    ap.add_argument("--no-sink-napi", action="store_true",
                    help="keep rx-gro off on the sink veth too (sink then shares the forwarder CPU's "
                         "backlog with the flood; see Lab.set_offloads)")
    ap.add_argument("--daemon-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for lb.director.daemon (repeat), e.g. --daemon-arg=--cpu=1")
    ap.add_argument("--min-fwd-busy", type=float, default=0.97,
                    help="a trial during which the forwarder CPU was less busy than this is marked "
                         "disturbed too (seen when other load ran on the VM)")
    ap.add_argument("--max-foreign", type=float, default=0.05,
                    help="a trial during which other processes took more than this fraction of the "
                         "forwarder CPU is marked disturbed and retried (up to --retries times)")
    ap.add_argument("--retries", type=int, default=2)
    ap.add_argument("--quiet-wait", type=float, default=20.0,
                    help="before each trial, wait up to this long for the forwarder CPU to be idle")
    ap.add_argument("--daemon-timeout", type=float, default=20.0)
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the temporary directory (generator and lb.director.daemon logs, frames)")
    ap.add_argument("--keep-going", action="store_true", help="record a failed trial and go on")
    ap.add_argument("--check-frames", type=int, default=64,
                    help="capture up to this many warm-up frames at the sink and check that they are "
                         "what the mode should send (addresses, ports, TTL, checksums, TOA); 0: off")
    ap.add_argument("--lb-root", metavar="DIR",
                    help="run lb.director.daemon from this tree (e.g. a `git archive` export with the fast path "
                         "built in place) instead of the one holding bench/")
    return ap


def parse_args(argv=None):
    ap = make_parser()
    a = ap.parse_args(argv)
    check_args(ap, a)
    if not 1 <= a.flows <= 50000:
        ap.error("--flows must be in 1..50000 (source ports 10000..59999)")
    return a


def check_args(ap, a):
    global REPO
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    bad = [m for m in a.modes if m not in MODES]
    if bad:
        ap.error(f"unknown mode(s) {bad}; choose from {list(MODES)}")
    if "kernel" in a.modes:
        a.modes.remove("kernel")
    a.modes.insert(0, "kernel")
    if a.generator == "trafgen" and a.rx_path != "none":
        ap.error("trafgen aborts on EAGAIN once the receive work runs on another CPU; use --rx-path none")
    if a.lb_root:
        if not os.path.isfile(os.path.join(a.lb_root, "lb", "daemon.py")):
            ap.error(f"--lb-root {a.lb_root}: no lb/daemon.py there")
        REPO = os.path.abspath(a.lb_root)


def preflight():
    if os.geteuid() != 0:
        sys.exit(f"bench/{os.path.basename(sys.argv[0])} needs root (network namespaces, AF_PACKET)")
    for tool in ("gcc", "nft", "ip", "taskset"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            sys.exit(f"{tool} not found (apt-get install -y gcc nftables iproute2 util-linux)")


def summarize(results, modes):
    def usable(m):
        ok = [r for r in results if r["mode"] == m and "error" not in r]
        clean = [r for r in ok if not r.get("disturbed")]
        return (clean or ok), len(ok) - len(clean)

    by = {m: usable(m) for m in modes}
    kern = by["kernel"][0]
    kmed = statistics.median(r["sink_rx_pps"] for r in kern) if kern else None
    rows = []
    for m in modes:
        rs, n_disturbed = by[m]
        row = {"mode": m, "trials": len(rs), "disturbed_trials": n_disturbed,
               "used_disturbed": bool(rs) and all(r.get("disturbed") for r in rs)}
        errs = [r["error"] for r in results if r["mode"] == m and "error" in r]
        if errs:
            row["errors"] = errs
        if rs:
            row["median_pps"] = statistics.median(r["sink_rx_pps"] for r in rs)
            row["median_offered_pps"] = statistics.median(r["offered_pps"] for r in rs)
            row["ratio_to_kernel"] = row["median_pps"] / kmed if kmed else None
            # paired ratios: each trial against the kernel trial of the same round
            paired = []
            for r in rs:
                k = [x for x in kern if x["trial"] == r["trial"]]
                if k:
                    paired.append(r["sink_rx_pps"] / k[-1]["sink_rx_pps"])
            if paired:
                row["paired_ratio_min"], row["paired_ratio_max"] = min(paired), max(paired)
                row["paired_ratio_median"] = statistics.median(paired)
            row["delivered_of_offered"] = statistics.median(
                r["sink_rx_pps"] / r["offered_pps"] for r in rs if r["offered_pps"])
            row["median_out_frame_len"] = statistics.median(r["out_frame_len"] for r in rs)
            row["out_frame_len_expected"] = rs[0]["out_frame_len_expected"]
            row["median_cpu_busy"] = [statistics.median(r["cpu"][i]["busy"] for r in rs)
                                      for i in range(len(rs[0]["cpu"]))]
        checks = [r["frame_check"] for r in results
                  if r["mode"] == m and "error" not in r and r.get("frame_check")]
        if checks:
            fc = {"captured": sum(c["captured"] for c in checks), "bad": sum(c["bad"] for c in checks),
                  "problems": {}}
            for c in checks:
                for k, v in c["problems"].items():
                    fc["problems"][k] = fc["problems"].get(k, 0) + v
            row["frame_check"] = fc
        rows.append(row)
    return rows


def print_table(rows, cmdline, unavailable, unit="pps"):
    """unit: what the sink counts, for the header (cps.py: "syn/s"; offered is always frames/s)."""
    print()
    print(f"command: {cmdline}")
    print(f"{'mode':<9} {'median_' + unit:>11} {'ratio_to_kernel':>15} {'trials':>6}   "
          f"{'ratio_range':>13} {'offered_pps':>11} {'delivered':>9}  cpu_busy")
    for r in rows:
        if r["mode"] in unavailable and not r.get("median_pps"):
            print(f"{r['mode']:<9} {'-':>11} {'unavailable':>15} {0:>6}   {unavailable[r['mode']][:200]}")
            continue
        if "median_pps" not in r:
            print(f"{r['mode']:<9} {'-':>11} {'failed':>15} {0:>6}   {r.get('errors', [''])[0][:200]}")
            continue
        rng = (f"{r['paired_ratio_min']:.2f}-{r['paired_ratio_max']:.2f}"
               if "paired_ratio_min" in r else "")
        print(f"{r['mode']:<9} {r['median_pps']:>11.0f} {r['ratio_to_kernel']:>15.2f} {r['trials']:>6}   "
              f"{rng:>13} {r['median_offered_pps']:>11.0f} {r['delivered_of_offered']:>9.2f}  "
              + "/".join(f"{b:.2f}" for b in r["median_cpu_busy"]))
    print("ratio_to_kernel = median sink pps of the mode / median sink pps of kernel forwarding in this run;"
          "\nratio_range = min-max of per-trial ratios to the kernel trial run just before it;"
          "\ndelivered = sink rx / offered (well below 1: the forwarder, not the generator, is the limit);"
          "\ncpu_busy = busy fraction of each CPU during the window (whole VM, other users included).")
    for r in rows:
        if r.get("median_pps") and r["delivered_of_offered"] > 0.95:
            print(f"WARNING: {r['mode']} delivered >95% of what was offered: the generator, not the "
                  f"forwarder, may be the limit" + (" (every ratio is then compressed towards 1)"
                                                   if r["mode"] == "kernel" else
                                                   f" ({r['mode']}'s ratio is a lower bound)"))
        if r.get("median_pps") and abs(r["median_out_frame_len"] - r["out_frame_len_expected"]) > 0.5:
            print(f"WARNING: {r['mode']} sent {r['median_out_frame_len']:.1f} bytes per frame at f1, expected "
                  f"{r['out_frame_len_expected']}: frames were merged (GRO) or not forwarded as this mode "
                  f"should, so its pps is not comparable")
        if r.get("used_disturbed"):
            print(f"WARNING: every {r['mode']} trial was disturbed by other load on the forwarder CPU")
        fc = r.get("frame_check")
        if fc and (fc["bad"] or not fc["captured"]):
            print(f"WARNING: {r['mode']}: {fc['bad']} of {fc['captured']} frames captured at the sink are not "
                  f"what the mode should send: {fc['problems']}")
    checked = [f"{r['mode']} {r['frame_check']['captured'] - r['frame_check']['bad']}/"
               f"{r['frame_check']['captured']}" for r in rows if r.get("frame_check")]
    if checked:
        print("frames checked at the sink (good/captured): " + ", ".join(checked))


def main(argv=None):
    return bench_main(parse_args(argv), argv)


def bench_main(args, argv, gen_class=None, ns_prefix=NS_PREFIX, prepare=None, report=None):
    """Build the lab, run every trial of every mode, tear down, print and save the summary.
    cps.py passes its own generator class, namespace prefix, prepare(lab, args) step (after the
    lab is built) and report(rows, results, args) (after the table)."""
    gen_class = gen_class or Generator
    gen = None
    preflight()
    cmdline = shlex.join([os.path.basename(sys.executable), *sys.argv]) if argv is None else shlex.join(argv)
    prefix = f"{ns_prefix}{os.getpid()}x{secrets.token_hex(2)}"
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    workdir = tempfile.mkdtemp(prefix=f"{prefix}-")
    lab = Lab(prefix, workdir)
    results, unavailable = [], {}
    active = None
    meta = {}
    try:
        lab.build(args.rx_path, args.fwd_cpu, sink_napi=not args.no_sink_napi)
        if prepare:
            prepare(lab, args)
        gen = gen_class(lab, args)
        meta = {"prefix": prefix, "workdir": workdir, "features_on": lab.features_on,
                "nproc": os.cpu_count(), "kernel": os.uname().release}
        if lab.offloads_left_on:
            print(f"note: offloads that could not be turned off: {lab.offloads_left_on}", file=sys.stderr)
        # Interleave modes within each trial so that slow drift of the VM hits all modes alike.
        for t in range(args.trials):
            for m in args.modes:
                if m in unavailable:
                    continue
                for attempt in range(args.retries + 1):
                    if m in unavailable:
                        break
                    mode = MODES[m](lab, args)
                    active = mode
                    r = None
                    try:
                        mode.setup()
                        r = measure(lab, gen, mode, args, f"{m}-{t}")
                        r["trial"] = t
                        # Under a flood the work CPU is 100 % busy; idle time or time taken
                        # by other processes there means the trial did not measure the forwarder.
                        fwd_busy = r["cpu"][r["work_cpu"]]["busy"]
                        r["disturbed"] = (r["fwd_cpu_foreign"] > args.max_foreign
                                          or fwd_busy < args.min_fwd_busy)
                        results.append(r)
                        print(f"trial {t} {m:<8} sink {r['sink_rx_pps']:>9.0f} pps  offered {r['offered_pps']:>9.0f}"
                              f"  fwd-in dropped {r['fwd_in_dropped_pps']:>9.0f}/s"
                              f"  cpu busy " + "/".join(f"{c['busy']:.2f}" for c in r["cpu"])
                              + f"  foreign on cpu {r['work_cpu']} {r['fwd_cpu_foreign']:.2f}"
                              + ("  DISTURBED" + (", retrying" if attempt < args.retries else "")
                                 if r["disturbed"] else ""),
                              file=sys.stderr, flush=True)
                        if not r["disturbed"]:
                            break
                    except Unavailable as e:
                        unavailable[m] = str(e)
                        print(f"mode {m} unavailable: {e}", file=sys.stderr)
                        break
                    except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                        if m == "kernel" or not args.keep_going:
                            raise
                        results.append({"mode": m, "trial": t, "error": str(e)})
                        print(f"trial {t} {m} failed: {e}", file=sys.stderr)
                        break
                    finally:
                        active = None
                        if os.getpid() == MAIN_PID:
                            mode.teardown()
                            if r is not None:
                                r["extra"].update(mode.final_counters())
    except (KeyboardInterrupt, _Terminate) as e:
        print(f"\ninterrupted ({str(e) or 'Ctrl-C'}); tearing down", file=sys.stderr)
        raise SystemExit(130)
    finally:
        if os.getpid() != MAIN_PID:
            os._exit(1)  # forked helper: leave the lab and processes to the main process
        if active is not None:
            try:
                active.teardown()
            except Exception:
                pass
        lab.teardown()
        for s, h in old.items():
            signal.signal(s, h)
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)  # kept (and named in errors) when a run fails
    rows = summarize(results, args.modes)
    print_table(rows, cmdline, unavailable, getattr(args, "unit", "pps"))
    if report:
        report(rows, results, args)
    if gen is not None and gen.__dict__.get("cmd"):
        print(f"generator: {gen.cmd}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmdline, "args": {k: v for k, v in vars(args).items()},
                       "meta": meta, "summary": rows, "unavailable": unavailable, "trials": results},
                      f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
