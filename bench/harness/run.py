"""A whole benchmark run: build the lab, run every trial of every mode, tear down, report.

Within each trial round the modes are interleaved (kernel, nftdnat, nat, kernel, ...) so that
slow drift of the VM hits them alike; a disturbed trial is retried (--retries).  The lab and
the mode in progress are torn down on every way out, Ctrl-C, SIGTERM and SIGHUP included.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

from harness.generator import Generator
from harness.modes import MODES, Unavailable
from harness.proc import MAIN_PID, Terminate, on_signal
from harness.report import print_table, summarize, write_json
from harness.topology import BenchTopology
from harness.trial import measure


def preflight():
    if os.geteuid() != 0:
        sys.exit(f"bench/{os.path.basename(sys.argv[0])} needs root (network namespaces, AF_PACKET)")
    for tool in ("gcc", "nft", "ip", "taskset"):
        if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
            sys.exit(f"{tool} not found (apt-get install -y gcc nftables iproute2 util-linux)")


@dataclass
class RunState:
    """What a run has so far: the trials' records, the modes found unavailable, the mode whose
    setup/teardown is in progress (torn down if the run is interrupted)."""
    gen: Generator | None = None
    results: list = field(default_factory=list)
    unavailable: dict = field(default_factory=dict)
    active: object = None
    meta: dict = field(default_factory=dict)


def bench_main(args, argv, *, ns_prefix, gen_class=None, prepare=None, report=None):
    """Build the lab, run every trial of every mode, tear down, print and save the summary.
    Namespaces are "<ns_prefix><pid>x<rand>-{gen,fwd,sink}" (not "lb*", which other harnesses
    sweep).  cps.py passes its own generator class, prepare(lab, args) step (after the lab is
    built) and report(rows, results, args) (after the table)."""
    preflight()
    cmdline = shlex.join([os.path.basename(sys.executable), *sys.argv]) if argv is None else shlex.join(argv)
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        st = run_lab(args, ns_prefix=ns_prefix, gen_class=gen_class, prepare=prepare)
    except (KeyboardInterrupt, Terminate) as e:
        print(f"\ninterrupted ({str(e) or 'Ctrl-C'}); torn down", file=sys.stderr)
        raise SystemExit(130)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    finish(st, args, cmdline, report)
    return 0


def run_lab(args, *, ns_prefix, gen_class=None, prepare=None, on_trial=None, lab_class=BenchTopology):
    """One lab's life: build it, every trial of every mode interleaved, always tear it down.
    Returns the RunState; KeyboardInterrupt/Terminate propagate after the teardown.  on_trial(record)
    is called after each trial (bench/suite.py's progress display)."""
    gen_class = gen_class or Generator
    prefix = f"{ns_prefix}{os.getpid()}x{secrets.token_hex(2)}"
    workdir = tempfile.mkdtemp(prefix=f"{prefix}-")
    lab = lab_class(prefix, workdir)
    st = RunState()
    try:
        lab.build(args.rx_path, args.fwd_cpu, sink_napi=not args.no_sink_napi)
        if prepare:
            prepare(lab, args)
        st.gen = gen_class(lab, args)
        st.meta = {"prefix": prefix, "workdir": workdir, "features_on": lab.features_on,
                   "nproc": os.cpu_count(), "kernel": os.uname().release}
        if lab.offloads_left_on:
            print(f"note: offloads that could not be turned off: {lab.offloads_left_on}", file=sys.stderr)
        # Interleave modes within each trial so that slow drift of the VM hits all modes alike.
        for t in range(args.trials):
            for m in args.modes:
                if m not in st.unavailable:
                    run_mode(lab, st, args, m, t, on_trial)
    finally:
        if os.getpid() != MAIN_PID:
            os._exit(1)  # forked helper: leave the lab and processes to the main process
        if st.active is not None:
            try:
                st.active.teardown()
            except Exception:
                pass
        lab.teardown()
    if not args.keep_logs:
        shutil.rmtree(workdir, ignore_errors=True)  # kept (and named in errors) when a run fails
    return st


def run_mode(lab, st, args, m, t, on_trial=None):
    """Trial `t` of mode `m`, retried while it is disturbed (up to --retries more times)."""
    for attempt in range(args.retries + 1):
        if m in st.unavailable:
            break
        mode = MODES[m](lab, args)
        st.active = mode
        r = None
        try:
            mode.setup()
            r = measure(lab, st.gen, mode, args, f"{m}-{t}")
            r["trial"], r["attempt"] = t, attempt
            # Under a flood the work CPU is 100 % busy; idle time or time taken
            # by other processes there means the trial did not measure the forwarder.
            fwd_busy = r["cpu"][r["work_cpu"]]["busy"]
            r["disturbed"] = (r["fwd_cpu_foreign"] > args.max_foreign
                              or fwd_busy < args.min_fwd_busy)
            st.results.append(r)
            print_trial(r, t, m, retrying=attempt < args.retries)
            if on_trial:
                on_trial(r)
            if not r["disturbed"]:
                break
        except Unavailable as e:
            st.unavailable[m] = str(e)
            print(f"mode {m} unavailable: {e}", file=sys.stderr)
            if on_trial:
                on_trial({"mode": m, "trial": t, "unavailable": str(e)})
            break
        except (RuntimeError, subprocess.SubprocessError, OSError) as e:
            if m == "kernel" or not args.keep_going:
                raise
            st.results.append({"mode": m, "trial": t, "error": str(e)})
            print(f"trial {t} {m} failed: {e}", file=sys.stderr)
            if on_trial:
                on_trial({"mode": m, "trial": t, "error": str(e)})
            break
        finally:
            st.active = None
            if os.getpid() == MAIN_PID:
                mode.teardown()
                if r is not None:
                    r["extra"].update(mode.final_counters())


def print_trial(r, t, m, retrying):
    print(f"trial {t} {m:<8} sink {r['sink_rx_pps']:>9.0f} pps  offered {r['offered_pps']:>9.0f}"
          f"  fwd-in dropped {r['fwd_in_dropped_pps']:>9.0f}/s"
          f"  cpu busy " + "/".join(f"{c['busy']:.2f}" for c in r["cpu"])
          + f"  foreign on cpu {r['work_cpu']} {r['fwd_cpu_foreign']:.2f}"
          + ("  DISTURBED" + (", retrying" if retrying else "")
             if r["disturbed"] else ""),
          file=sys.stderr, flush=True)


def finish(st, args, cmdline, report):
    """The table, the benchmark's own lines (report), the generator's command, the JSON file."""
    rows = summarize(st.results, args.modes)
    print_table(rows, cmdline, st.unavailable, getattr(args, "unit", "pps"))
    if report:
        report(rows, st.results, args)
    if st.gen is not None and st.gen.__dict__.get("cmd"):
        print(f"generator: {st.gen.cmd}")
    if args.json:
        write_json(args.json, cmdline, args, st.meta, rows, st.unavailable, st.results)
