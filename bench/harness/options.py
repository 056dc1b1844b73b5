"""The command-line options every benchmark shares (bench/pps.py's, which cps.py extends).

make_parser(doc) takes the description from the calling script's docstring (its first
paragraph); check_args() normalizes --modes (kernel first) and applies --lb-root.
"""

from __future__ import annotations

import argparse
import os

from harness import modes
from harness.modes import ALL_MODES, MODES


def make_parser(doc):
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="kernel,nftdnat,nat",
                    help="comma list of %s; 'kernel' (the reference) is always run" % ",".join(ALL_MODES))
    ap.add_argument("--seconds", type=float, default=3.0, help="measurement window per trial")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--flows", type=int, default=256,
                    help="distinct UDP flows (up to 50 000: source ports of one address; beyond, "
                         "client addresses in 198.18.64.0/18 too, up to 1 000 000)")
    ap.add_argument("--frame-len", type=int, default=60,
                    help="bytes per frame without the FCS (60: 64-byte frames; 1500: MTU-sized)")
    ap.add_argument("--real-servers", type=int, default=1,
                    help="real servers (sink addresses) behind the service, round robin (1..256)")
    ap.add_argument("--json", metavar="PATH", help="also write all per-trial data here")
    ap.add_argument("--ramp", type=float, default=1.0, help="seconds skipped after the generator starts")
    ap.add_argument("--warmup-rounds", type=int, default=4, help="packets per flow sent before each trial")
    ap.add_argument("--warmup-min", type=float, default=0.9,
                    help="share of the paced warm-up frames that must reach the sink, or the trial fails "
                         "(the mode is not forwarding); bench/suite.py lowers it for a million flows, where "
                         "conntrack evicts (nf_conntrack_max)")
    ap.add_argument("--warmup-pps", type=float, default=20000,
                    help="pace of the warm-up pass, so that new flows are not lost to a flood")
    ap.add_argument("--max-pps", type=float, default=8e6,
                    help="frame-count bound for the generator (count = max_pps * (ramp+seconds+2))")
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--fwd-cpu", type=int, default=1, help="CPU of the forwarder (daemon busy thread)")
    ap.add_argument("--rx-path", choices=("napi", "rps", "none"), default="napi",
                    help="how the forwarder's receive work gets onto --fwd-cpu: threaded NAPI kthread "
                         "pinned there (default), RPS, or not at all (see BenchTopology.build)")
    ap.add_argument("--generator", choices=("c", "trafgen"), default="c",
                    help="c: bench/pktgen.c built with gcc (default); trafgen: needs --rx-path none")
    ap.add_argument("--batch", type=int, default=64, help="frames per sendmmsg() call (c generator)")
    ap.add_argument("--no-sink-napi", action="store_true",
                    help="keep rx-gro off on the sink veth too (sink then shares the forwarder CPU's "
                         "backlog with the flood; see BenchTopology.set_offloads)")
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


def check_args(ap, a):
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
        # the daemon runs as `python3 -m lb.director.daemon` from that tree
        if not os.path.isfile(os.path.join(a.lb_root, "lb", "director", "daemon.py")):
            ap.error(f"--lb-root {a.lb_root}: no lb/director/daemon.py there")
        modes.set_lb_root(a.lb_root)
