"""Running the suite: every section of harness/plan.py in its own lab, progress shown with rich.

pps and cps sections are bench/pps.py and bench/cps.py run through run.run_lab (their own
argument parsers, lab, interleaved trials, retries of disturbed trials, sink checks); e2e
sections run the connection workloads of harness/e2e.py on an E2ELab; the memory section fills
lbd with connections.  A section that fails as a whole is recorded with its error and the next
one runs; a mode that cannot run is recorded as unavailable with the reason.  Ctrl-C, SIGTERM
and SIGHUP unwind through every lab's teardown (namespaces, processes), then the partial
report is written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

from harness import e2e, plan
from harness.analysis import e2e_rows, pps_rows
from harness.e2e_lab import E2ELab
from harness.memory import measure_memory
from harness.modes import REPO, Unavailable
from harness.proc import MAIN_PID, Terminate
from harness.run import run_lab
from harness.topology import BenchTopology

NS_PREFIX = "benchsuite"     # not "lb*", which other harnesses sweep

REFERENCE_TOOLS = {"haproxy": "haproxy", "nginx": "nginx", "wrk": "wrk", "iperf3": "iperf3", "gcc": "gcc",
                   "nft": "nftables", "curl": "curl"}


def missing_tools():
    return {t: pkg for t, pkg in REFERENCE_TOOLS.items()
            if subprocess.run(["sh", "-c", f"command -v {t}"], capture_output=True).returncode}


class Suite:
    def __init__(self, opts, progress=None, log=None):
        self.opts, self.progress, self.log = opts, progress, log
        self.task = None
        self.bench_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    # -- progress
    def advance(self, what=""):
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=1, description=what[:70])

    def describe(self, what):
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, description=what[:70])

    def planned_trials(self, secs):
        t = plan.timing(self.opts.quick, self.opts.trials, self.opts.retries)
        n = 0
        for s in secs:
            if s.kind == "e2e":
                n += len(s.modes) * t.e2e_trials
            elif s.kind == "memory":
                n += 1
            else:
                n += len(s.modes) * (t.curve_trials if s.curve else t.trials)
        return n

    # -- the sections
    def extra_argv(self):
        a = []
        if self.opts.lb_root:
            a += ["--lb-root", self.opts.lb_root]
        return a

    def parse(self, kind, argv):
        sys.path.insert(0, self.bench_dir) if self.bench_dir not in sys.path else None
        import cps
        import pps
        mod = pps if kind == "pps" else cps
        return mod, mod.parse_args(argv + self.extra_argv())

    def run_section(self, sec, missing):
        d = {"id": sec.id, "title": sec.title, "kind": sec.kind, "unit": sec.unit, "curve": sec.curve,
             "x": sec.x, "workload": sec.workload, "note": sec.note, "modes": list(sec.modes),
             "argv": sec.argv, "unavailable": {}, "trials": [], "rows": []}
        t0 = time.monotonic()
        self.describe(f"{sec.id}: setting up")
        try:
            if sec.kind in ("pps", "cps"):
                self.run_lab_section(sec, d)
            elif sec.kind == "e2e":
                self.run_e2e_section(sec, d, missing)
            elif sec.kind == "memory":
                self.run_memory_section(sec, d)
        except (KeyboardInterrupt, Terminate):
            d["error"] = "interrupted"
            raise
        except SystemExit as e:           # an argument parser refusing (a bug in the plan)
            d["error"] = f"refused: exit {e.code}"
        except Exception as e:            # noqa: BLE001 - the section fails, the run goes on
            d["error"] = f"{type(e).__name__}: {e}"
            print(traceback.format_exc(), file=sys.stderr)
        finally:
            d["seconds"] = round(time.monotonic() - t0, 1)
        return d

    def on_trial(self, sec):
        def cb(r):
            tag = "DISTURBED " if r.get("disturbed") else ""
            if "error" in r:
                tag = "failed "
            elif "unavailable" in r:
                tag = "unavailable "
            self.advance(f"{sec.id}: {r.get('mode')} {tag}trial {r.get('trial')}")
        return cb

    def run_lab_section(self, sec, d):
        mod, args = self.parse(sec.kind, sec.argv)
        args.json = None
        gen_class = getattr(mod, "SynGenerator", None)
        st = run_lab(args, ns_prefix=NS_PREFIX, gen_class=gen_class, prepare=getattr(mod, "prepare", None),
                     on_trial=self.on_trial(sec))
        d["trials"], d["unavailable"], d["meta"] = st.results, st.unavailable, st.meta
        d["rows"] = pps_rows(d, st.results, st.unavailable, frame_len=getattr(args, "frame_len", 60))

    def e2e_args(self, sec):
        t = plan.timing(self.opts.quick, self.opts.trials, self.opts.retries)
        _, a = self.parse("pps", ["--trials", str(t.e2e_trials), "--seconds", str(t.e2e_seconds),
                                  "--quiet-wait", str(t.quiet_wait), "--retries", str(t.retries),
                                  "--max-foreign", "0.10"])
        a.proto = "udp" if sec.workload == "udp_rr" else "tcp"
        a.port = {"tcp_bulk": e2e.IPERF_PORT, "udp_rr": e2e.RR_PORT}.get(sec.workload, e2e.HTTP_PORT)
        a.connections = 16
        return a

    def run_e2e_section(self, sec, d, missing):
        args = self.e2e_args(sec)
        need = {"tcp_bulk": ("iperf3",), "udp_rr": (), "http_short": ("nginx", "wrk", "curl"),
                "http_100k": ("nginx", "wrk", "curl")}[sec.workload]
        lacking = [f"{t} (apt-get install {missing[t]})" for t in need if t in missing]
        if lacking:
            d["unavailable"] = {m: "not installed: " + ", ".join(lacking) for m in sec.modes}
            d["rows"] = e2e_rows(d, [], d["unavailable"])
            for _ in range(len(sec.modes) * args.trials):
                self.advance(f"{sec.id}: unavailable")
            return
        prefix = f"{NS_PREFIX}{os.getpid()}x{secrets.token_hex(2)}"
        workdir = tempfile.mkdtemp(prefix=f"{prefix}-")
        lab = E2ELab(prefix, workdir)
        servers = None
        try:
            lab.build(fwd_cpu=args.fwd_cpu, host_cpu=args.gen_cpu)
            servers = e2e.Servers(lab, args.gen_cpu)
            servers.start([sec.workload])
            for t in range(args.trials):
                for m in sec.modes:
                    if m not in d["unavailable"]:
                        self.e2e_trial(lab, args, sec, d, m, t)
        finally:
            if os.getpid() != MAIN_PID:
                os._exit(1)
            if servers is not None:
                servers.stop()
            lab.teardown()
            shutil.rmtree(workdir, ignore_errors=True)
        d["rows"] = e2e_rows(d, d["trials"], d["unavailable"])

    def e2e_trial(self, lab, args, sec, d, m, t):
        cb = self.on_trial(sec)
        for attempt in range(args.retries + 1):
            mode = e2e.E2E_MODES[m](lab, args)
            env = getattr(mode, "env", None) or dict(os.environ, PYTHONPATH=REPO)
            rs = e2e.RealServer(lab, m, env, REPO, cpu=args.gen_cpu)
            try:
                mode.setup()
                rs.setup()
                r = e2e.measure_e2e(lab, mode, sec.workload, args)
                r["trial"], r["attempt"] = t, attempt
                d["trials"].append(r)
                cb(r)
                if not r["disturbed"]:
                    return
            except Unavailable as e:
                d["unavailable"][m] = str(e)
                cb({"mode": m, "trial": t, "unavailable": str(e)})
                return
            except (RuntimeError, subprocess.SubprocessError, OSError) as e:
                d["trials"].append({"mode": m, "trial": t, "error": str(e)})
                cb({"mode": m, "trial": t, "error": str(e)})
                return
            finally:
                if os.getpid() == MAIN_PID:
                    rs.teardown()
                    mode.teardown()

    def run_memory_section(self, sec, d):
        n = int(sec.x)
        mod, args = self.parse("cps", ["--modes", "nat", "--vips", "1", "--trials", "1", "--check-syns", str(n),
                                       "--warmup-pps", "100000", "--daemon-arg=--max-conns=1000000"])
        prefix = f"{NS_PREFIX}{os.getpid()}x{secrets.token_hex(2)}"
        workdir = tempfile.mkdtemp(prefix=f"{prefix}-")
        lab = BenchTopology(prefix, workdir)
        try:
            lab.build(args.rx_path, args.fwd_cpu)
            mod.prepare(lab, args)
            gen = mod.SynGenerator(lab, args)
            try:
                d["memory"] = measure_memory(lab, gen, args, n)
            except Unavailable as e:
                d["unavailable"]["nat"] = str(e)
        finally:
            if os.getpid() != MAIN_PID:
                os._exit(1)
            lab.teardown()
            shutil.rmtree(workdir, ignore_errors=True)
        self.advance("memory")

    def run(self, secs, report, save):
        missing = missing_tools()
        report["missing_tools"] = missing
        if self.progress is not None:
            self.task = self.progress.add_task("starting", total=self.planned_trials(secs))
        for sec in secs:
            log_ctx = (contextlib.redirect_stdout(self.log), contextlib.redirect_stderr(self.log)) \
                if self.log else (contextlib.nullcontext(), contextlib.nullcontext())
            with log_ctx[0], log_ctx[1]:
                print(f"=== section {sec.id}: {sec.title}", flush=True)
                try:
                    d = self.run_section(sec, missing)
                except (KeyboardInterrupt, Terminate):
                    report["interrupted"] = True
                    save(report)
                    raise
            report["sections"][sec.id] = d
            if sec.kind == "memory":
                report["memory"] = d.get("memory")
            save(report)
        return report
