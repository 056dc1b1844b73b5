"""What bench/suite.py runs: the sections of a run, full or --quick.  Pure data, no I/O.

A section is one lab with one workload and one parameter point, run as interleaved trials of
its modes.  kind "pps" and "cps" are bench/pps.py and bench/cps.py (their own argument
parsers, from `argv`); kind "e2e" is a connection workload on E2ELab; kind "memory" is lbd
filled with connections.  `curve` groups the points of a cost curve (x = `x`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

LBD_MODES = ("nat", "dr", "tun", "fullnat", "enat")
PPS_MODES = ("kernel", "nftdnat", "ring") + LBD_MODES
E2E_MODES = ("kernel", "nftdnat", "haproxy") + LBD_MODES
FOLKLORE_ORDER = ("dr", "tun", "nat", "fullnat")      # the primer: "DR > TUN > NAT > FULLNAT"


@dataclass
class Section:
    id: str
    title: str
    kind: str                       # pps | cps | e2e | memory
    modes: tuple
    argv: list = field(default_factory=list)
    unit: str = "pps"
    curve: str = ""                 # flows | real_servers | table_fill
    x: float | None = None
    workload: str = ""              # e2e: tcp_bulk | http_short | http_100k | udp_rr
    note: str = ""


@dataclass
class Timing:
    trials: int
    seconds: float
    ramp: float
    cps_seconds: float
    e2e_trials: int
    e2e_seconds: float
    curve_trials: int
    quiet_wait: float
    retries: int
    memory_conns: int
    fill_max_conns: int
    big_flows: int


FULL = Timing(trials=3, seconds=2.0, ramp=0.5, cps_seconds=0.4, e2e_trials=3, e2e_seconds=4,
              curve_trials=2, quiet_wait=10, retries=2, memory_conns=1_000_000, fill_max_conns=1_000_000,
              big_flows=1_000_000)
QUICK = Timing(trials=1, seconds=0.3, ramp=0.2, cps_seconds=0.15, e2e_trials=1, e2e_seconds=1,
               curve_trials=1, quiet_wait=0, retries=0, memory_conns=50_000, fill_max_conns=100_000,
               big_flows=20_000)
# --quick keeps every reference and every lbd mode where the report's conclusions need them all
# (the headline pps section, short HTTP: the targets and the folklore); elsewhere lbd NAT stands
# for lbd, and the cost curves run kernel and NAT only.  A minute or two instead of half an hour.
QUICK_LBD = ("nat",)


def common(t: Timing, trials=None):
    return ["--trials", str(trials or t.trials), "--quiet-wait", str(t.quiet_wait), "--retries",
            str(t.retries), "--keep-going"]


def pps_argv(t, modes, trials=None, **kw):
    a = ["--modes", ",".join(modes), "--seconds", str(t.seconds), "--ramp", str(t.ramp), *common(t, trials)]
    for k, v in kw.items():
        a.append(f"--{k.replace('_', '-')}={v}")     # "=": a value may start with "--"
    return a


def sections(quick: bool, trials: int | None = None, retries: int | None = None) -> list[Section]:
    """trials/retries: override the timing's (every section; the curves take the smaller count)."""
    t = timing(quick, trials, retries)
    lbd = QUICK_LBD if quick else LBD_MODES
    some = ("kernel", "nftdnat", "ring") + lbd
    head = ("kernel", "nftdnat", "ring", "nat", "dr") if quick else PPS_MODES
    cps_modes = ("kernel", "nftdnat", "ring") + lbd
    # cps frames are precomputed, max_pps x (ramp + window + tail) of them: fewer with --quick
    cps_extra = ["--max-pps", "1.5e6", "--tail", "0.3"] if quick else []
    out = [
        Section("pps64_napi", "64-byte UDP, established flows (napi: all forwarding on one CPU; headline)",
                "pps", head, pps_argv(t, head)),
        Section("pps64_none", "64-byte UDP, established flows (none: receive work on the sender's CPU; "
                "flatters every userspace forwarder)", "pps", some, pps_argv(t, some, rx_path="none")),
        Section("pps1500_napi", "1500-byte frames, established flows (napi)", "pps", some,
                pps_argv(t, some, frame_len=1500), unit="Gbit/s"),
        Section("cps_napi", "New flows: TCP SYNs from distinct sources in 198.18.64.0/18 (napi)", "cps",
                cps_modes, ["--modes", ",".join(cps_modes), "--seconds", str(t.cps_seconds),
                            "--ramp", "0.1", *cps_extra, *common(t)], unit="SYN/s"),
    ]
    # cost curves
    big = t.big_flows
    curve_modes = ("kernel", "nat") if quick else ("kernel", "nftdnat", "ring", "nat")
    for flows in ((1, big) if quick else (1, 1000, 100_000, big)):
        # every flow's first frame is a new flow: warm up at a pace lbd keeps (its new-flow rate)
        extra = {"flows": flows, "warmup_rounds": 1 if flows > 10_000 else 4,
                 "warmup_pps": 100_000 if flows > 10_000 else 20_000,
                 "daemon_arg": f"--max-conns={max(2 * flows, 1 << 20)}"}
        if flows > 200_000:
            extra["warmup_min"] = 0.5
        note = ("nftables' conntrack holds at most nf_conntrack_max entries (read-only in a namespace): "
                "beyond it, it evicts" if flows > 200_000 else "")
        out.append(Section(f"flows_{flows}", f"64-byte UDP with {flows:,} concurrent flows (napi)", "pps",
                           curve_modes, pps_argv(t, curve_modes, trials=t.curve_trials, **extra),
                           curve="flows", x=flows, note=note))
    rs_modes = ("kernel", "nat") if quick else ("kernel", "nftdnat", "nat")
    for n in ((3, 32) if quick else (3, 32, 256)):
        out.append(Section(f"rs_{n}", f"64-byte UDP, 1000 flows over {n} real servers, rr (napi)", "pps",
                           rs_modes, pps_argv(t, rs_modes, trials=t.curve_trials, flows=1000,
                                    real_servers=n, check_frames=0), curve="real_servers", x=n))
    m = t.fill_max_conns
    for pct in ((0, 90) if quick else (0, 50, 90)):
        fill = m * pct // 100
        out.append(Section(f"fill_{pct}", f"New flows with lbd's table {pct} % full (--max-conns {m:,}; "
                           f"{fill:,} SYN_RECV connections made before the flood)", "cps", ("kernel", "nat"),
                           ["--modes", "kernel,nat", "--seconds", str(t.cps_seconds), "--ramp", "0.1",
                            "--vips", "1", "--check-syns", str(max(fill, 2000)), "--warmup-pps", "50000", *cps_extra,
                            f"--daemon-arg=--max-conns={m}", *common(t, t.curve_trials)],
                           unit="SYN/s", curve="table_fill", x=pct))
    for w in ("tcp_bulk", "http_short", "http_100k"):
        title = {"tcp_bulk": "Bulk TCP, iperf3 upload, default offloads (Gbit/s)",
                 "http_short": "HTTP through the director: wrk, 64-byte responses, `Connection: close`",
                 "http_100k": "HTTP through the director: wrk, 100 KB responses, `Connection: close`"}[w]
        modes = (E2E_MODES if not quick else ("kernel", "nftdnat", "haproxy", "nat", "dr", "tun", "fullnat")
                 if w == "http_short" else ("kernel", "nftdnat", "haproxy") + lbd)
        out.append(Section(f"e2e_{w}", title, "e2e", modes, workload=w,
                           unit="Gbit/s" if w == "tcp_bulk" else "conn/s"))
    rr_modes = ("kernel", "nftdnat") + (("nat", "dr") if quick else LBD_MODES)
    out.append(Section("e2e_udp_rr", "Light-load latency: sequential UDP request/response, one every 2 ms "
                       "(round trip, median and p99)", "e2e", rr_modes, workload="udp_rr", unit="µs"))
    out.append(Section("memory", f"lbd's memory with {t.memory_conns:,} connections (--max-conns 1,000,000)",
                       "memory", ("nat",), x=t.memory_conns))
    return out


def timing(quick: bool, trials: int | None = None, retries: int | None = None) -> Timing:
    from dataclasses import replace
    t = QUICK if quick else FULL
    if trials:
        t = replace(t, trials=trials, e2e_trials=trials, curve_trials=min(trials, t.curve_trials))
    if retries is not None:
        t = replace(t, retries=retries)
    return t
