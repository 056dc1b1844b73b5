"""The generator: per-flow frames sent from the gen namespace, pinned to --gen-cpu.

bench/pktgen.c is compiled with gcc into the run's directory; it sends a file of
precomputed frames round robin with sendmmsg() and PACKET_QDISC_BYPASS, bounded by a frame
count and by its own deadline.  cps.py subclasses Generator for its distinct-flow SYNs.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shlex
import subprocess

from harness.flows import CLIENT_BASE, MAX_PORT_FLOWS, N_CLIENTS, build_udp_frames, client_of
from harness.frames import FRAME_LEN, trafgen_config
from harness.proc import kill_own, run
from harness.topology import GEN_IP, PORT

BENCH = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # bench/, where pktgen.c is


class Generator:
    """Sends the per-flow frames from the gen namespace, pinned to --gen-cpu, bounded in count and time.

    'c' (default): bench/pktgen.c, compiled here with gcc, sendmmsg + PACKET_QDISC_BYPASS.
    'trafgen': netsniff-ng trafgen; only usable with --rx-path none (see pktgen.c for why).
    """

    def __init__(self, lab, args):
        self.lab, self.args = lab, args
        self.files = {}
        # --frame-len (bench/suite.py's 1500-byte workload); cps.py's SYNs are always 60 bytes
        self.frame_len = getattr(args, "frame_len", FRAME_LEN)
        self.cmd = ""
        if args.generator == "c":
            src = os.path.join(BENCH, "pktgen.c")
            self.binary = os.path.join(lab.workdir, "pktgen")
            run(["gcc", "-O2", "-Wall", "-o", self.binary, src])

    def frames_for(self, target, kind="flood"):
        """Path (without .bin/.cfg) of the frames to `target`; pps sends the same frames in the
        warm-up and the flood (cps.py: two sets of distinct new flows)."""
        if target not in self.files:
            frames = build_udp_frames(self.lab.mac["f0"], self.lab.mac["g0"], GEN_IP, target, PORT,
                                      self.args.flows, self.frame_len)
            base = os.path.join(self.lab.workdir, f"frames-{target}")
            frames.tofile(base + ".bin")
            if self.args.generator == "trafgen":
                with open(base + ".cfg", "w") as f:
                    f.write(trafgen_config(bytes(r) for r in frames))
            self.files[target] = base
        return self.files[target]

    def sent_clients(self, target):
        """{(client address, client port): destination} of the warm-up frames (computed on
        lookup: a million flows need no million-entry dict)."""
        return FlowMap(self.args.flows, target)

    def warm_count(self):
        return self.args.flows * self.args.warmup_rounds

    def flood_count(self, budget):
        return int(self.args.max_pps * budget)

    def expected_out_len(self, mode):
        # veth counts bytes after the Ethernet header; 60-byte frames carry no padding here
        return self.frame_len - 14 + mode.grows

    def start(self, target, count, seconds, tag, rate=0, kind="flood"):
        base = self.frames_for(target, kind)
        pin = ["ip", "netns", "exec", self.lab.gen, "taskset", "-c", str(self.args.gen_cpu)]
        if self.args.generator == "c":
            cmd = pin + [self.binary, "g0", base + ".bin", str(self.frame_len), str(count),
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


class FlowMap:
    """The generator's flows as a read-only mapping (client address, port) -> destination."""

    def __init__(self, flows, target):
        self.flows, self.target = flows, target
        self._first = client_of(0, flows, GEN_IP)

    def get(self, key, default=None):
        addr, port = key
        if self.flows <= MAX_PORT_FLOWS:
            ok = addr == GEN_IP and 0 <= port - self._first[1] < self.flows
        else:
            try:
                a = int(ipaddress.IPv4Address(addr)) - CLIENT_BASE
            except ValueError:
                return default
            i = (port - self._first[1]) * N_CLIENTS + a
            ok = 0 <= a < N_CLIENTS and 0 <= i < self.flows
        return self.target if ok else default

    def values(self):
        return [self.target]
