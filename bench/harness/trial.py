"""One trial of one mode: wait for a quiet CPU, a paced warm-up checked at the sink, the flood.

measure() returns the trial's record (the JSON report's "trials" entries): sink and offered
rates from the veth counters, per-CPU busy/softirq/steal from /proc/stat, the share of the
work CPU taken by other processes (fwd_cpu_foreign), and the frame check of the warm-up.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

from harness.frames import parse_frame
from harness.proc import kill_own, proc_jiffies


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


def sample(lab):
    t = time.monotonic()
    st = {ifn: lab.stats(ifn) for ifn in ("s0", "g0", "f0", "f1")}
    t2 = time.monotonic()
    return (t + t2) / 2, st, softnet(), cpu_times()


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
    wc = work_cpu(lab, mode, args)
    idle_busy = wait_quiet(args, wc)
    warm = warm_up(lab, gen, mode, args, tag)
    win = flood(lab, gen, mode, args, tag, wc)
    if mode.userspace and getattr(mode, "proc", None) is not None and mode.proc.poll() is not None:
        raise RuntimeError(f"lb.director.daemon died during the trial: {mode.log_tail()}")
    res = {"mode": mode.name, **window_record(win, wc, args), "fwd_cpu_busy_before": round(idle_busy, 3)}
    res.update(rates_record(win, gen, mode))
    res.update({"cpu": win["cpu"], "loadavg": open("/proc/loadavg").read().split()[:3], **warm,
                "generator": gen.result()})
    res.update({"extra": mode.extra_counters()})
    return res


def warm_up(lab, gen, mode, args, tag):
    """Paced warm-up pass: every flow a few times, so that the measurement is of established flows
    (cps.py: a separate set of new flows, which only checks the mode works)."""
    a = args
    warm_n = gen.warm_count()
    rate = a.warmup_pps
    for attempt in range(2):
        before = lab.stats("s0")["rx_packets"]
        warm_timeout = 5 + 2 * warm_n / rate
        # Capture some of the warm-up frames at the sink: are they what the mode should send?
        cap = SinkCapture(lab, min(warm_n, a.check_frames), warm_timeout + 1, tag) if a.check_frames else None
        gen.burst(mode.target, warm_n, timeout=warm_timeout, rate=rate)
        time.sleep(0.2)
        warm_delivered = lab.stats("s0")["rx_packets"] - before
        check = check_frames(mode, cap.frames(timeout=2), gen.sent_clients(mode.target)) if cap else None
        if warm_delivered >= getattr(a, "warmup_min", 0.9) * warm_n:
            break
        # A busy machine can starve the forwarder CPU for a moment even at a paced rate (seen
        # with 100 k frames/s and other jobs running): once more at half the pace before judging.
        rate /= 2
    else:
        # Paced warm-up frames all arrive when the forwarder works at all.  A forwarder that
        # forwards nothing would otherwise report 0 pps as a measurement (seen with a half-built
        # fast path in the working tree).
        raise RuntimeError(f"warm-up: only {warm_delivered} of {warm_n} paced frames reached the sink "
                           f"(twice, the second time at {2 * rate:.0f}/s); {mode.name} is not forwarding")
    return {"warmup_frames": warm_n, "warmup_delivered": warm_delivered, "frame_check": check,
            "warmup_attempts": attempt + 1}


def flood(lab, gen, mode, args, tag, wc):
    """The flood at full speed: skip --ramp, then sample counters and CPU times around --seconds."""
    a = args
    budget = a.ramp + a.seconds + 2.0
    count = gen.flood_count(budget)
    p = gen.start(mode.target, count, budget + 3.0, tag)
    try:
        wait_sending(lab, gen, p)
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
    cpu = []
    for x, y in zip(c0, c1):
        tot = max(y[0] - x[0], 1)
        cpu.append({"busy": round(1 - (y[1] - x[1]) / tot, 3), "softirq": round((y[2] - x[2]) / tot, 3),
                    "steal": round((y[3] - x[3]) / tot, 3)})
    return {"dt": t1 - t0, "stats": (s0, s1), "softnet": (n0, n1), "cpu_times": (c0, c1), "cpu": cpu,
            "own_jiffies": j1 - j0, "gen_jiffies": g1j - g0j}


def wait_sending(lab, gen, p):
    """Wait (at most 5 s) until the generator's first frames leave g0."""
    g0 = lab.stats("g0")["tx_packets"]
    start_deadline = time.monotonic() + 5
    while lab.stats("g0")["tx_packets"] == g0:
        if p.poll() is not None:
            raise RuntimeError(f"generator exited early ({p.returncode}): {gen.output()[-300:]}")
        if time.monotonic() > start_deadline:
            raise RuntimeError("generator did not start sending within 5s")
        time.sleep(0.01)


def window_record(win, wc, args):
    """Where the window's CPU time went: the foreign shares of the work CPU and the generator's."""
    cpu, (c0, c1) = win["cpu"], win["cpu_times"]
    tot = max(c1[wc][0] - c0[wc][0], 1)
    # Whatever ran on the work CPU that is neither softirq nor our own process (forwarder and
    # NAPI kthread, or generator): other users of the VM.  Above a few % the trial is disturbed.
    foreign = cpu[wc]["busy"] - cpu[wc]["softirq"] - win["own_jiffies"] / tot
    gc = args.gen_cpu
    return {
        "window_s": round(win["dt"], 4),
        "work_cpu": wc,
        # (key kept for older JSON readers: it is the foreign share of work_cpu)
        "fwd_cpu_foreign": round(max(foreign, 0.0), 3),
        # The same for the generator's CPU (recorded, not judged: with --rx-path none it also
        # carries the forwarder's receive work for lb.director.daemon)
        "gen_cpu_foreign": round(max(cpu[gc]["busy"] - cpu[gc]["softirq"]
                                     - win["gen_jiffies"] / max(c1[gc][0] - c0[gc][0], 1), 0.0), 3),
    }


def rates_record(win, gen, mode):
    """Per-second rates of the veth counters over the window, frame length and softnet deltas."""
    dt, (s0, s1), (n0, n1) = win["dt"], win["stats"], win["softnet"]

    def d(ifn, key):
        return s1[ifn][key] - s0[ifn][key]

    return {
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
    }
