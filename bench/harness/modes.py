"""The forwarders a benchmark measures, one class per mode, behind one small interface.

    setup() / teardown()      start and stop the forwarder in the fwd namespace
    target                    where the generator sends (the sink itself, or the VIP)
    check_frame(parsed, sent) what a frame captured at the sink should look like
    extra_counters() / final_counters() / own_jiffies()   for the trial's record

kernel and nftdnat are the kernel's forwarding (nftdnat: an nftables DNAT rule, conntrack).
nat, dr, tun, fullnat and enat run lb.director.daemon as a subprocess (python3 -m, from the
tree set_lb_root() names, the one holding bench/ by default) and configure it with
lb.director.cli, also in subprocesses: this module never imports lb.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from harness.flows import payload
from harness.frames import FRAME_LEN, PROTO_NUM
from harness.proc import kill_own, nsexec, proc_jiffies, run, sysctl
from harness.topology import FWD_SINK_IP, PORT, SINK_IP, VIP

# where lb.director.daemon is imported from (the tree holding bench/); --lb-root changes it
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LPORT_RANGE = (1025, 65535)  # lbd's default --lport-range

ALL_MODES = ("kernel", "nftdnat", "ring", "nat", "dr", "tun", "fullnat", "enat")


def set_lb_root(path):
    """Run lb.director.daemon and lb.director.cli from the tree at `path` (--lb-root)."""
    global REPO
    REPO = os.path.abspath(path)


def real_server_ips(n):
    """The sink's addresses as n real servers: 198.18.11.2, then 198.18.14.1.. (topology.add_real_servers)."""
    if not 1 <= n <= 256:
        raise ValueError("--real-servers must be in 1..256")
    return [SINK_IP] + [f"198.18.14.{i}" for i in range(1, n)]


class Unavailable(Exception):
    """A mode cannot run here (e.g. lb.director.daemon missing); the others still run."""


class Mode:
    """A forwarder in the fwd namespace.  The defaults describe plain kernel forwarding to the sink."""
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
        self.rips = real_server_ips(getattr(args, "real_servers", 1))
        self.port = getattr(args, "port", PORT)      # the service port (bench/suite.py: 80, 5201)

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
            if p["proto"] != 4 or p["saddr"] != FWD_SINK_IP or p["daddr"] not in self.rips:
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
        if q["dport"] != PORT or q["daddr"] != (orig[2] if self.to_vip else q["daddr"]) \
                or (not self.to_vip and q["daddr"] not in self.rips):
            errs.append("destination")
        src = self.source_for(orig[2])
        if src is not None:
            addr, (lo, hi) = src
            if q["saddr"] != addr or not lo <= q["sport"] <= hi:
                errs.append("source (local address/port)")
        if self.proto == "udp" and q["payload"] != payload(getattr(self.args, "frame_len", FRAME_LEN)):
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
        # several real servers: round robin over them, as lbd's rr does (nft numgen)
        to = (f"{SINK_IP}:{self.port}" if len(self.rips) == 1 else "numgen inc mod %d map { %s }" % (
            len(self.rips), ", ".join(f"{i} : {a}" for i, a in enumerate(self.rips))))
        self.lab.nft(self.lab.fwd, f"""
table ip lbbench_dnat {{
  chain pre {{ type nat hook prerouting priority dstnat; policy accept;
    ip daddr {{ {vips} }} {self.proto} dport {self.port} counter dnat to {to}
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
            cmds.append(["-A", f, f"{vip}:{self.port}", "-s", "rr"])
            cmds += self.extra_commands(k, vip)
            for rip in self.rips:
                cmds.append(["-a", f, f"{vip}:{self.port}", "-r", f"{rip}:{self.port}", *self.fwd_args])
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
    to_vip = True               # TTL 63 as every mode: __ip_vs_get_out_rt() decrements it for DR too


class TunMode(NatMode):
    """lb.director.daemon in TUN (-i): IPIP, outer header f1's address -> 198.18.11.2, 20 bytes more."""
    name = "tun"
    fwd_args = ("-i", "-w", "1")
    grows = 20
    to_vip = True               # the inner TTL decremented, as ip_vs_tunnel_xmit() leaves it


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
        return [["--add-laddr", self.flag(), f"{vip}:{self.port}", "-z", self.lip(i)]]

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


from harness.ringfwd import RingMode  # noqa: E402  (it imports Mode from this module)

MODES = {"kernel": KernelMode, "nftdnat": NftDnatMode, "ring": RingMode, "nat": NatMode, "dr": DrMode,
         "tun": TunMode, "fullnat": FullnatMode, "enat": EnatMode}
