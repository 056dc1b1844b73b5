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
The lab, the modes, the generator, the trial and the report are the package bench/harness/;
bench/cps.py uses them too, for new TCP connections per second.  Neither imports lb.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for `harness`, from any cwd
from harness.flows import CLIENT_NET, MAX_PORT_FLOWS  # noqa: E402
from harness.modes import real_server_ips  # noqa: E402
from harness.options import check_args, make_parser  # noqa: E402
from harness.topology import add_real_servers, route_clients, set_mtu  # noqa: E402
from harness.run import bench_main  # noqa: E402

NS_PREFIX = "ppsbench"  # namespaces "<NS_PREFIX><pid>x<rand>-{gen,fwd,sink}"; not "lb*", which other harnesses sweep


def parse_args(argv=None):
    ap = make_parser(__doc__)
    a = ap.parse_args(argv)
    check_args(ap, a)
    if not 1 <= a.flows <= 1_000_000:
        ap.error("--flows must be in 1..1000000")
    if not 60 <= a.frame_len <= 1514:
        ap.error("--frame-len must be in 60..1514")
    if not 1 <= a.real_servers <= 256:
        ap.error("--real-servers must be in 1..256")
    return a


def prepare(lab, args):
    """Clients behind g0 (many flows), extra real servers, MTU headroom for TUN's big frames."""
    if args.flows > MAX_PORT_FLOWS:
        route_clients(lab, CLIENT_NET)
    add_real_servers(lab, real_server_ips(args.real_servers))
    if args.frame_len > 1400:
        set_mtu(lab, 1600)


def main(argv=None):
    return bench_main(parse_args(argv), argv, ns_prefix=NS_PREFIX, prepare=prepare)


if __name__ == "__main__":
    sys.exit(main())
