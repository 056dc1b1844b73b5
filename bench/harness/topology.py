"""The lab: three namespaces joined by two veth pairs, and the addresses the benchmarks use.

    <p>-gen  g0 198.18.10.2/24 --veth-- f0 198.18.10.1/24  <p>-fwd  f1 198.18.11.1/24 --veth-- s0 198.18.11.2/24  <p>-sink

BenchTopology builds it with pyroute2 (static neighbours, offloads off, the forwarder's receive
work moved to its CPU, an nftables drop at the sink), reads its veth counters, and removes every
namespace it made.  (lb.lab.topology.Lab is the product's own lab; this one is the benchmark's.)
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from pyroute2 import NetNS, netns

from harness.proc import MAIN_PID, napi_threads, nsexec, proc_jiffies, run, sysctl

GEN_IP, FWD_GEN_IP = "198.18.10.2", "198.18.10.1"
FWD_SINK_IP, SINK_IP = "198.18.11.1", "198.18.11.2"
VIP, PORT = "198.18.10.100", 9
LIP = "198.18.11.3"        # fullnat: the local address (a /32 on f1) the sink sees as the client

# Offloads turned off on every veth (kernel feature names, as `ethtool -k` lists them).
OFFLOAD_FEATURES = (
    "tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
    "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-udp-segmentation", "tx-generic-segmentation",
    "tx-gso-list", "rx-gro", "rx-gro-list", "rx-udp-gro-forwarding",
)


@dataclass
class BenchTopology:
    """The gen/fwd/sink namespaces of one run, named "<prefix>-gen" etc.; build() makes them,
    teardown() removes every one it made (never anything else)."""

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
        self.nft(self.sink, """
table netdev lbbench_sink {
  chain in { type filter hook ingress device "s0" priority 0; policy accept;
    ether type ip counter drop
  }
}""")

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



def add_real_servers(lab, rips):
    """More real servers on the sink: each address of `rips` after the first (198.18.11.2) as a
    /32 on s0, reached from fwd over an on-link route on f1 and a static neighbour (s0's MAC),
    so that neither ARP nor a gateway enters the measurement."""
    sns, si = lab.idx["s0"]
    fns, fi = lab.idx["f1"]
    extra = rips[1:]
    if not extra:
        return
    for a in extra:
        lab.handles[sns].addr("add", index=si, address=a, prefixlen=32)
        lab.handles[fns].neigh("replace", dst=a, lladdr=lab.mac["s0"], ifindex=fi, state="permanent")
    lab.handles[fns].route("add", dst="198.18.14.0/24", oif=fi, scope=253)


def route_clients(lab, client_net):
    """Clients beyond the generator's own address (more than 50 000 flows) live behind g0."""
    lab.handles[lab.fwd].route("add", dst=client_net, gateway=GEN_IP)


def set_mtu(lab, mtu, ifnames=("f1", "s0")):
    """Headroom for TUN's 20 outer bytes around 1500-byte frames (a tunnel needs it anyway)."""
    for ifn in ifnames:
        ns, i = lab.idx[ifn]
        lab.handles[ns].link("set", index=i, mtu=mtu)
