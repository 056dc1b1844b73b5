"""The lab for connection workloads (iperf3, wrk against nginx): the pps lab plus a return path.

    <p>-gen  g0 198.18.10.2 --veth-- f0 | <p>-fwd | f1 --veth-- s0 198.18.11.2  <p>-sink
             gr 198.18.12.1 --------------------------------- sr 198.18.12.2   (the router's way back)

Real TCP end to end: the sink serves (no ingress drop), offloads stay at veth's defaults
(checksum offload, TSO/GSO, GRO off).  The pps lab's napi receive path does not work here:
veth hands a frame to its peer's NAPI only when the sender has no TSO or the frame qualifies for
GRO forwarding (veth_skb_is_eligible_for_gro() in drivers/net/veth.c), so with TSO on every
frame goes through netif_rx() in the sender's context.  RPS moves that backlog work: the
director's veths (f0, f1) steer to --fwd-cpu, the end hosts' (g0, gr, s0, sr) to --gen-cpu,
where wrk, nginx and iperf3 run too.  So everything the director does, in the kernel or in
userspace, is on --fwd-cpu and nothing of the end hosts is (measure_e2e checks what else ran).  DR, TUN and ENAT real servers answer through sr -> gr, the way an
LVS real server answers through the router and not through the director: the director then
carries the requests only.
"""

from __future__ import annotations

from pyroute2 import NetNS, netns

from harness.proc import nsexec, sysctl
from harness.topology import FWD_GEN_IP, FWD_SINK_IP, GEN_IP, SINK_IP, VIP, BenchTopology

GEN_RET_IP, SINK_RET_IP = "198.18.12.1", "198.18.12.2"
TUNNEL_MTU = 1600   # f1/s0: room for TUN's 20 outer bytes around a full-sized segment


class E2ELab(BenchTopology):
    """BenchTopology's namespaces and veths for real TCP; teardown(), stats(), nft() inherited."""

    def build(self, rx_path="rps", fwd_cpu=1, sink_napi=True, host_cpu=0):
        if rx_path != "rps":
            raise ValueError("connection workloads steer receive work with RPS only (see the module)")
        self.rx_path, self.napi_pids, self.features_on, self.offloads_left_on = "rps", [], {}, {}
        for ns in (self.gen, self.fwd, self.sink):
            netns.create(ns)
            self.created.append(ns)
            self.handles[ns] = NetNS(ns)
        g, f, s = (self.handles[n] for n in (self.gen, self.fwd, self.sink))
        g.link("add", ifname="g0", kind="veth", peer={"ifname": "f0", "net_ns_fd": self.fwd})
        f.link("add", ifname="f1", kind="veth", peer={"ifname": "s0", "net_ns_fd": self.sink})
        g.link("add", ifname="gr", kind="veth", peer={"ifname": "sr", "net_ns_fd": self.sink})
        for ns, ifn in ((self.gen, "g0"), (self.fwd, "f0"), (self.fwd, "f1"), (self.sink, "s0"),
                        (self.gen, "gr"), (self.sink, "sr")):
            h = self.handles[ns]
            i = h.link_lookup(ifname=ifn)[0]
            self.idx[ifn] = (ns, i)
            self.mac[ifn] = h.link("get", index=i)[0].get("IFLA_ADDRESS")
        for ns in (self.gen, self.fwd, self.sink):
            sysctl(ns, net__ipv6__conf__all__disable_ipv6=1, net__ipv6__conf__default__disable_ipv6=1,
                   net__ipv4__ip_forward=0)
        # Replies of DR/TUN/ENAT come from the VIP on gr, which routing would send out g0.
        sysctl(self.gen, net__ipv4__conf__all__rp_filter=0, net__ipv4__conf__default__rp_filter=0,
               net__ipv4__ip_local_port_range="1024 65535")
        for ifn, a in (("g0", GEN_IP), ("f0", FWD_GEN_IP), ("f1", FWD_SINK_IP), ("s0", SINK_IP),
                       ("gr", GEN_RET_IP), ("sr", SINK_RET_IP)):
            ns, i = self.idx[ifn]
            h = self.handles[ns]
            h.addr("add", index=i, address=a, prefixlen=24)
            if ifn in ("f1", "s0"):
                h.link("set", index=i, mtu=TUNNEL_MTU)
            h.link("set", index=i, state="up")
        for ns in (self.gen, self.fwd, self.sink):
            lo = self.handles[ns].link_lookup(ifname="lo")[0]
            self.handles[ns].link("set", index=lo, state="up")
        neighs = (("g0", FWD_GEN_IP, "f0"), ("g0", VIP, "f0"), ("f0", GEN_IP, "g0"),
                  ("f1", SINK_IP, "s0"), ("s0", FWD_SINK_IP, "f1"), ("gr", SINK_RET_IP, "sr"),
                  ("sr", GEN_RET_IP, "gr"))
        for ifn, dst, peer in neighs:
            ns, i = self.idx[ifn]
            self.handles[ns].neigh("replace", dst=dst, lladdr=self.mac[peer], ifindex=i, state="permanent")
        g.route("add", dst="198.18.11.0/24", gateway=FWD_GEN_IP)
        s.route("add", dst="198.18.10.0/24", gateway=FWD_SINK_IP)
        for ifn in self.idx:
            cpu = fwd_cpu if ifn in ("f0", "f1") else host_cpu
            nsexec(self.idx[ifn][0], "sh", "-c", f"echo {1 << cpu:x} > /sys/class/net/{ifn}/queues/rx-0/rps_cpus")
            self.features_on[ifn] = self.get_features_on(ifn)

    def byte_counts(self):
        """rx_bytes of every veth: the director's (f0, f1) and the end hosts' (g0, gr, s0, sr)."""
        return {ifn: self.stats(ifn)["rx_bytes"] for ifn in self.idx}
