"""Connection workloads on E2ELab: iperf3 bulk TCP, wrk against nginx (short and 100 KB responses),
and light-load latency (udp_rr: sequential UDP exchanges 2 ms apart, harness/udp_rr.py).

One trial (measure_e2e): the mode is set up (for DR/TUN/ENAT the real server too, with
`lb realserver setup`, replies through the return path), one request checks that the service
answers what it should, then the client runs for --seconds while the director's CPU (--fwd-cpu,
where only the director's work runs, see e2e_lab) and every veth's bytes are sampled around it.

    director_cpu_s        softirq on --fwd-cpu (the RPS backlog of f0/f1: kernel forwarding, nftables,
                          the AF_PACKET taps) + the director's own process (lbd or HAProxy), from
                          /proc/stat and /proc/<pid>/stat
    cpu_per_1000_conns    director_cpu_s per 1 000 completed connections (wrk: one per request,
                          `Connection: close`)
    director_byte_share   bytes received by the director (f0 + f1) / bytes received by the end
                          hosts (g0, gr, s0, sr): 1 when it carries both directions, the request
                          share when replies go around it (DR, TUN, ENAT)
The kernel reference (plain forwarding) has wrk talk to the real server's own address.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time

from harness.modes import MODES, Mode, Unavailable
from harness.proc import kill_own, nsexec, proc_jiffies, run, sysctl
from harness.topology import SINK_IP, VIP
from harness.trial import cpu_times, wait_quiet
from harness.e2e_lab import GEN_RET_IP

HTTP_PORT, IPERF_PORT, RR_PORT = 80, 5201, 9000
RR_GAP_MS = 2.0                  # udp_rr: one exchange every 2 ms (the light load)
UDP_RR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "udp_rr.py")
SMALL_BODY = 64                  # bytes of /s: a short request's response
LARGE_BODY = 100 * 1024          # bytes of /l
USER_HZ = os.sysconf("SC_CLK_TCK")

NGINX_CONF = """
daemon off;
master_process off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
events {{ worker_connections 65536; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-tmp;
  proxy_temp_path {dir}/nginx-tmp;
  fastcgi_temp_path {dir}/nginx-tmp;
  uwsgi_temp_path {dir}/nginx-tmp;
  scgi_temp_path {dir}/nginx-tmp;
  sendfile on;
  keepalive_timeout 30;
  server {{
    listen 0.0.0.0:{port} backlog=65535 reuseport;
    root {dir}/www;
  }}
}}
"""

HAPROXY_CONF = """
global
  maxconn 8000
  nbthread 1
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend bench
  bind {vip}:{port}
  maxconn 8000
  default_backend rs
backend rs
  server rs1 {rip}:{port}
"""


def _start(cmd, log, ready_check, what, timeout=10.0):
    """Popen in a session of its own (kill_own stops it with its children); wait for ready_check()."""
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not ready_check():
        if p.poll() is not None:
            raise Unavailable(f"{what} exited with {p.returncode}: {_tail(log)}")
        if time.monotonic() > deadline:
            kill_own(p)
            raise Unavailable(f"{what} not ready after {timeout}s: {_tail(log)}")
        time.sleep(0.05)
    return p


def _tail(path, n=600):
    try:
        with open(path) as f:
            return f.read()[-n:].strip()
    except OSError:
        return ""


def listening(ns, port, proto="tcp"):
    r = nsexec(ns, "ss", "-Hltn" if proto == "tcp" else "-Hlun", f"sport = :{port}", check=False)
    return bool(r.stdout.strip())


class Servers:
    """nginx and iperf3 -s in the sink namespace, pinned to --gen-cpu, for the whole run."""

    def __init__(self, lab, cpu):
        self.lab, self.cpu, self.procs = lab, cpu, []
        d = lab.workdir
        os.makedirs(f"{d}/www", exist_ok=True)
        os.makedirs(f"{d}/nginx-tmp", exist_ok=True)
        with open(f"{d}/www/s", "wb") as f:
            f.write(b"s" * SMALL_BODY)
        with open(f"{d}/www/l", "wb") as f:
            f.write(bytes(range(256)) * (LARGE_BODY // 256))

    def start(self, workloads):
        pin = ["ip", "netns", "exec", self.lab.sink, "taskset", "-c", str(self.cpu)]
        d = self.lab.workdir
        if any(w.startswith("http") for w in workloads):
            with open(f"{d}/nginx.conf", "w") as f:
                f.write(NGINX_CONF.format(dir=d, port=HTTP_PORT))
            self.procs.append(_start(pin + ["nginx", "-c", f"{d}/nginx.conf"], f"{d}/nginx.log",
                                     lambda: listening(self.lab.sink, HTTP_PORT), "nginx"))
        if "tcp_bulk" in workloads:
            # --logfile: iperf3's output, and the run's directory in its command line (tests look for it)
            self.procs.append(_start(pin + ["iperf3", "-s", "-p", str(IPERF_PORT), "--logfile", f"{d}/iperf3-s.out"],
                                     f"{d}/iperf3-s.log",
                                     lambda: listening(self.lab.sink, IPERF_PORT), "iperf3 -s"))
        if "udp_rr" in workloads:
            self.procs.append(_start(pin + [sys.executable, UDP_RR, "serve", str(RR_PORT)], f"{d}/udp_rr-s.log",
                                     lambda: listening(self.lab.sink, RR_PORT, "udp"), "udp_rr serve"))

    def stop(self):
        for p in self.procs:
            kill_own(p, signal.SIGTERM)
        self.procs = []


class HaproxyMode(Mode):
    """HAProxy `mode tcp` on the director (VIP on f0, one thread on --fwd-cpu): the userspace L4
    peer.  It terminates both TCP connections, so the real server sees the director's address."""
    name = "haproxy"
    target = VIP
    userspace = True

    def __init__(self, lab, args):
        super().__init__(lab, args)
        self.proc = None

    def setup(self):
        if subprocess.run(["sh", "-c", "command -v haproxy"], capture_output=True).returncode:
            raise Unavailable("haproxy not installed (apt-get install haproxy)")
        ns, i = self.lab.idx["f0"]
        h = self.lab.handles[ns]
        if not h.get_addr(index=i, address=VIP):
            h.addr("add", index=i, address=VIP, prefixlen=32)
        sysctl(self.lab.fwd, net__ipv4__ip_local_port_range="1024 65535")
        cfg = os.path.join(self.lab.workdir, f"haproxy-{self.port}.cfg")
        with open(cfg, "w") as f:
            f.write(HAPROXY_CONF.format(vip=VIP, rip=SINK_IP, port=self.port))
        cmd = ["ip", "netns", "exec", self.lab.fwd, "taskset", "-c", str(self.args.fwd_cpu),
               "haproxy", "-db", "-f", cfg]
        self.proc = _start(cmd, os.path.join(self.lab.workdir, "haproxy.log"),
                           lambda: listening(self.lab.fwd, self.port), "haproxy")

    def own_jiffies(self):
        # haproxy -db stays one process; its threads are in its stat line
        return proc_jiffies(self.proc.pid) if self.proc else 0

    def teardown(self):
        kill_own(self.proc, signal.SIGTERM)
        self.proc = None


E2E_MODES = dict(MODES, haproxy=HaproxyMode)
REALSERVER_MODE = {"dr": "dr", "tun": "tun", "enat": "enat"}   # lb realserver setup --mode


class RealServer:
    """`lb realserver setup/teardown` in the sink namespace (VIP on lo or behind the decapsulator,
    ARP sysctls, ENAT's reply agent; replies leave through the return path)."""

    def __init__(self, lab, mode_name, env, cwd, cpu):
        self.lab, self.mode, self.env, self.cwd, self.done = lab, REALSERVER_MODE.get(mode_name), env, cwd, False
        self.cpu = cpu

    def setup(self):
        if not self.mode:
            return
        # pinned to the end hosts' CPU: the decapsulator and the ENAT agent it starts inherit it,
        # so that the real server's work is not counted as the director's
        r = nsexec(self.lab.sink, "taskset", "-c", str(self.cpu), sys.executable, "-m", "lb", "realserver",
                   "setup", "--mode", self.mode,
                   "--vip", VIP, "--reply-gateway", GEN_RET_IP, check=False, env=self.env, cwd=self.cwd,
                   timeout=60)
        self.done = True
        if r.returncode:
            raise Unavailable(f"lb realserver setup --mode {self.mode} failed: "
                              f"{(r.stderr or r.stdout).strip()[-300:]}")

    def teardown(self):
        if self.mode and self.done:
            nsexec(self.lab.sink, sys.executable, "-m", "lb", "realserver", "teardown", "--mode", self.mode,
                   check=False, env=self.env, cwd=self.cwd, timeout=60)
            self.done = False


def target_of(mode):
    return SINK_IP if mode.name == "kernel" else VIP


def check_service(lab, mode, workload, args):
    """One request before the window: the service answers, with the right body (or iperf3 runs)."""
    host = target_of(mode)
    if workload == "udp_rr":
        # a few exchanges until every one is answered (the first may wait for ARP)
        deadline, r = time.monotonic() + 5, {}
        while time.monotonic() < deadline:
            r = rr_ping(lab, host, 5, 0, timeout=10)
            if r.get("lost") == 0:
                return {"udp_rr_check": "ok"}
            time.sleep(0.2)
        raise RuntimeError(f"udp_rr through {mode.name}: {r}")
    if workload == "tcp_bulk":
        # -n: a byte count (iperf3's -t takes whole seconds, and 0 means forever)
        r = nsexec(lab.gen, "iperf3", "-c", host, "-p", str(IPERF_PORT), "-n", "4M", "-J", check=False,
                   timeout=20)
        if r.returncode:
            raise RuntimeError(f"iperf3 check through {mode.name} failed: {r.stdout[-300:]} {r.stderr[-300:]}")
        return {"iperf3_check": "ok"}
    path, size = ("/s", SMALL_BODY) if workload == "http_short" else ("/l", LARGE_BODY)
    want = f"200 {size}"
    got = ""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = nsexec(lab.gen, "curl", "-s", "-o", "/dev/null", "-m", "2", "-w", "%{http_code} %{size_download}",
                   f"http://{host}:{HTTP_PORT}{path}", check=False, timeout=10)
        got = r.stdout.strip()
        if got == want:
            return {"http_check": got}
        time.sleep(0.2)
    raise RuntimeError(f"GET {path} through {mode.name}: got '{got}', want '{want}'")


def rr_ping(lab, host, count, gap_ms, cpu=None, timeout=None):
    """udp_rr.py ping in the client namespace: its summary (rtt_median_us, rtt_p99_us, lost, ...)."""
    pin = ["ip", "netns", "exec", lab.gen] + (["taskset", "-c", str(cpu)] if cpu is not None else [])
    r = run(pin + [sys.executable, UDP_RR, "ping", host, str(RR_PORT), str(count), str(gap_ms)], check=False,
            timeout=timeout or count * (gap_ms / 1000 + 1) + 10)
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise RuntimeError(f"udp_rr ping failed ({r.returncode}): {r.stdout[-300:]} {r.stderr[-300:]}")


def run_client(lab, workload, host, args):
    """The load for --seconds, pinned to --gen-cpu: (completed connections or None, Gbit/s or None, raw)."""
    pin = ["ip", "netns", "exec", lab.gen, "taskset", "-c", str(args.gen_cpu)]
    secs = max(1, round(args.seconds))
    if workload == "udp_rr":
        r = rr_ping(lab, host, int(args.seconds * 1000 / RR_GAP_MS), RR_GAP_MS, cpu=args.gen_cpu)
        if not r["exchanges"]:
            raise RuntimeError(f"udp_rr: no exchange answered ({r['lost']} lost)")
        return None, None, r
    if workload == "tcp_bulk":
        r = run(pin + ["iperf3", "-c", host, "-p", str(IPERF_PORT), "-t", str(secs), "-J"], check=False,
                timeout=secs + 30)
        try:
            j = json.loads(r.stdout)
            bps = j["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError):
            raise RuntimeError(f"iperf3 failed: {r.stdout[-300:]} {r.stderr[-300:]}")
        return None, bps / 1e9, {"retransmits": j["end"].get("sum_sent", {}).get("retransmits")}
    path = "/s" if workload == "http_short" else "/l"
    r = run(pin + ["wrk", "-t1", f"-c{args.connections}", f"-d{secs}s", "-H", "Connection: close",
                   f"http://{host}:{HTTP_PORT}{path}"], check=False, timeout=secs + 30)
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", r.stdout)
    if r.returncode or not m:
        raise RuntimeError(f"wrk failed ({r.returncode}): {r.stdout[-300:]} {r.stderr[-300:]}")
    err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", r.stdout)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", r.stdout)
    raw = {"socket_errors": [int(x) for x in err.groups()] if err else [0, 0, 0, 0],
           "non_2xx": int(non2xx.group(1)) if non2xx else 0}
    return int(m.group(1)), None, raw


def measure_e2e(lab, mode, workload, args):
    """One trial of one connection workload through `mode` (already set up). Returns the record."""
    wc = args.fwd_cpu
    idle = wait_quiet(args, wc)
    rec = {"mode": mode.name, "workload": workload, "work_cpu": wc, "fwd_cpu_busy_before": round(idle, 3)}
    rec.update(check_service(lab, mode, workload, args))
    own = lambda: mode.own_jiffies() + sum(proc_jiffies(p) for p in lab.napi_pids)  # noqa: E731
    c0, b0, j0, t0 = cpu_times(), lab.byte_counts(), own(), time.monotonic()
    conns, gbps, raw = run_client(lab, workload, target_of(mode), args)
    c1, b1, j1, t1 = cpu_times(), lab.byte_counts(), own(), time.monotonic()
    x, y = c0[wc], c1[wc]
    total = max(y[0] - x[0], 1)
    busy, softirq, mine = total - (y[1] - x[1]), y[2] - x[2], j1 - j0
    director = min(busy, softirq + mine)
    foreign = max(busy - director, 0) / total
    db = {k: b1[k] - b0[k] for k in b0}
    director_bytes, host_bytes = db["f0"] + db["f1"], db["g0"] + db["gr"] + db["s0"] + db["sr"]
    rec.update({
        "seconds": round(t1 - t0, 3), "conns": conns, "gbps": gbps, **raw,
        "conns_per_s": conns / (t1 - t0) if conns is not None else None,
        "director_cpu_s": director / USER_HZ,
        "director_cpu_share": round(director / total, 3),
        "cpu_per_1000_conns": (director / USER_HZ) / conns * 1000 if conns else None,
        "fwd_cpu_foreign": round(foreign, 3),
        "director_byte_share": director_bytes / host_bytes if host_bytes else None,
        "bytes": db, "loadavg": open("/proc/loadavg").read().split()[:3],
        "disturbed": foreign > args.max_foreign,
        "extra": mode.extra_counters() if mode.name not in ("kernel", "nftdnat") else {},
    })
    return rec
