"""The `ring` mode: bench/ringfwd.c, the minimal C AF_PACKET forwarder, as the userspace ceiling.

It forwards f0 -> f1 (to s0's MAC) and f1 -> f0 (to g0's MAC) from TPACKET_V3 rings with
sendmmsg, rewriting MACs, TTL and the IP checksum only.  Like lbd it owns the frames it
forwards: an nftables netdev ingress rule on f0/f1 drops them for the kernel (the AF_PACKET tap
runs before netdev ingress, see architecture.md), so the kernel spends on them what it spends on
lbd's, and ip_forward stays 0.  Addressing is kernel forwarding's: the generator sends to the sink.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess

from harness.modes import Mode, Unavailable
from harness.proc import kill_own, nsexec, proc_jiffies, run, sysctl

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_ringfwd(workdir):
    """gcc bench/ringfwd.c into workdir (once per run); returns the binary's path."""
    binary = os.path.join(workdir, "ringfwd")
    if not os.path.exists(binary):
        try:
            run(["gcc", "-O2", "-Wall", "-o", binary, os.path.join(BENCH, "ringfwd.c")])
        except (RuntimeError, OSError) as e:
            raise Unavailable(f"building bench/ringfwd.c failed: {e}")
    return binary


class RingMode(Mode):
    name = "ring"
    userspace = True

    def __init__(self, lab, args):
        super().__init__(lab, args)
        self.proc = None

    def setup(self):
        binary = build_ringfwd(self.lab.workdir)
        sysctl(self.lab.fwd, net__ipv4__ip_forward=0)
        # The kernel must not also handle what the forwarder owns (it would forward nothing with
        # ip_forward=0, but answer or count it): drop IPv4 through the fwd namespace at ingress,
        # except frames to its own addresses (none in the benchmarks' flows).
        self.lab.nft(self.lab.fwd, """
table netdev lbbench_ring {
  chain in0 { type filter hook ingress device "f0" priority 0; policy accept;
    ether type ip ip daddr != 198.18.10.1 drop
  }
  chain in1 { type filter hook ingress device "f1" priority 0; policy accept;
    ether type ip ip daddr != 198.18.11.1 drop
  }
}""")
        cmd = ["ip", "netns", "exec", self.lab.fwd, "taskset", "-c", str(self.args.fwd_cpu), binary,
               "3600", "f0", "f1", self.lab.mac["s0"], "f1", "f0", self.lab.mac["g0"]]
        self.log_path = os.path.join(self.lab.workdir, "ringfwd.log")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        ready = select.select([self.proc.stdout], [], [], 10)[0]
        line = self.proc.stdout.readline().strip() if ready else ""
        if line != "ready":
            rest = self.proc.stdout.read() if self.proc.poll() is not None else ""
            kill_own(self.proc)
            raise Unavailable(f"ringfwd did not start: {line} {rest}".strip())

    def own_jiffies(self):
        return proc_jiffies(self.proc.pid) if self.proc else 0

    def final_counters(self):
        return {"ringfwd": getattr(self, "counters", None)}

    def teardown(self):
        if self.proc is not None:
            kill_own(self.proc, signal.SIGTERM)
            try:
                import json
                out = self.proc.stdout.read().strip().splitlines()
                self.counters = json.loads(out[-1]) if out else None
            except (ValueError, OSError):
                self.counters = None
            self.proc = None
        nsexec(self.lab.fwd, "nft", "delete", "table", "netdev", "lbbench_ring", check=False)
