#!/usr/bin/env python3
"""The benchmark suite: every lbd mode against kernel forwarding, nftables DNAT, a C ring forwarder
and HAProxy, on the bench's own namespaces, in one command.

    sudo python3 bench/suite.py [--quick] [--out DIR] [--only ID,...] [--lb-root DIR]

Writes DIR (default bench/results/<date>/, with --quick bench/results/<date>-quick/):
report.json (every trial of every section), report.md (headline, targets, the primer's folklore
checked, one table per section, the cost curves) and PNG plots; suite.log holds what the
sections printed.  --quick runs every section and reference with tiny counts (a minute or two):
a complete, parseable report whose numbers mean nothing.  The sections are in
bench/harness/plan.py; bench/README.md explains them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shlex
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench/, for `harness`, from any cwd
from harness import plan  # noqa: E402
from harness.plots import write_plots  # noqa: E402
from harness.proc import Terminate, on_signal  # noqa: E402
from harness.report_md import render  # noqa: E402
from harness.suite_run import Suite  # noqa: E402

BENCH = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny counts: a complete report in a minute or two")
    ap.add_argument("--out", metavar="DIR", help="where to write the report (default bench/results/<date>[-quick])")
    ap.add_argument("--only", metavar="ID,...", help="run only these sections (ids as in report.json)")
    ap.add_argument("--lb-root", metavar="DIR", help="run lbd from this tree (see bench/README.md)")
    ap.add_argument("--no-progress", action="store_true", help="plain lines instead of rich's progress bar")
    ap.add_argument("--update", action="store_true",
                    help="keep the other sections of DIR's report.json and replace only those run now (with "
                         "--only: re-run a section that other load disturbed); the report records both commands")
    ap.add_argument("--trials", type=int, help="trials per mode (default: 3; curves 2)")
    ap.add_argument("--retries", type=int, help="retries of a disturbed trial (default 2)")
    ap.add_argument("--modes", metavar="MODE,...",
                    help="end-to-end sections (e2e_*) only: run just these of their modes, e.g. "
                         "nftdnat,tun to re-measure one mode beside its reference")
    a = ap.parse_args(argv)
    if a.trials is not None and a.trials < 1 or a.retries is not None and a.retries < 0:
        ap.error("--trials must be >= 1 and --retries >= 0")
    secs = plan.sections(a.quick, a.trials, a.retries)
    ids = [s.id for s in secs]
    if a.only:
        want = [x.strip() for x in a.only.split(",") if x.strip()]
        bad = [x for x in want if x not in ids]
        if bad:
            ap.error(f"unknown section(s) {bad}; choose from {ids}")
        secs = [s for s in secs if s.id in want]
    if a.modes:
        keep = [m.strip() for m in a.modes.split(",") if m.strip()]
        known = set().union(*(s.modes for s in secs if s.kind == "e2e"))
        if not keep or set(keep) - known:
            ap.error(f"--modes {a.modes}: choose from {sorted(known)}")
        secs = [dataclasses.replace(s, modes=tuple(m for m in s.modes if m in keep)) if s.kind == "e2e" else s
                for s in secs]
    a.sections = secs
    if a.lb_root and not os.path.isfile(os.path.join(a.lb_root, "lb", "director", "daemon.py")):
        ap.error(f"--lb-root {a.lb_root}: no lb/director/daemon.py there")
    return a


def count_trials(report):
    n = d = 0
    for s in report["sections"].values():
        for t in s.get("trials", []):
            if "error" not in t:
                n += 1
                d += bool(t.get("disturbed"))
    return n, d


def finish(report, outdir, t0):
    report["duration_s"] = round(time.monotonic() - t0 + report.get("duration_prev_s", 0), 1)
    report["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    report["total_trials"], report["disturbed_trials"] = count_trials(report)
    from harness.analysis import folklore, targets
    report["targets"] = targets(report)
    report["folklore"] = folklore(report)
    files, why = write_plots(report, outdir)
    report["plots"] = files
    if why:
        report["plots_unavailable"] = why
    with open(os.path.join(outdir, "report.json.tmp"), "w") as f:
        json.dump(report, f, indent=1, default=str)
    os.replace(os.path.join(outdir, "report.json.tmp"), os.path.join(outdir, "report.json"))
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(render(report))


def main(argv=None):
    a = parse_args(argv)
    if os.geteuid() != 0:
        sys.exit("bench/suite.py needs root (network namespaces, AF_PACKET)")
    for tool in ("ip", "taskset", "gcc", "nft"):
        if os.system(f"command -v {tool} >/dev/null 2>&1"):
            sys.exit(f"{tool} not found (apt-get install -y iproute2 util-linux gcc nftables)")
    day = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    outdir = a.out or os.path.join(BENCH, "results", day + ("-quick" if a.quick else ""))
    os.makedirs(outdir, exist_ok=True)
    cmdline = shlex.join(["python3", *sys.argv] if argv is None else ["python3", "bench/suite.py", *argv])
    report = {"command": cmdline, "quick": a.quick,
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                          "loadavg_start": open("/proc/loadavg").read().split()[:3]},
              "sections": {}}
    prev = os.path.join(outdir, "report.json")
    if a.update and os.path.exists(prev):
        with open(prev) as f:
            kept = json.load(f)
        report["sections"] = kept.get("sections", {})
        report["updates"] = kept.get("updates", []) + [{"command": cmdline, "started": report["started"],
                                                       "sections": [s.id for s in a.sections]}]
        report["command"], report["machine"]["loadavg_start"] = kept["command"], kept["machine"]["loadavg_start"]
        report["started"] = kept["started"]
        report["duration_prev_s"] = kept.get("duration_s", 0)
        if "memory" in kept and not any(s.kind == "memory" for s in a.sections):
            report["memory"] = kept["memory"]
    t0 = time.monotonic()
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGHUP)}

    def save(r):
        with open(os.path.join(outdir, "report.json.tmp"), "w") as f:
            json.dump(r, f, indent=1, default=str)
        os.replace(os.path.join(outdir, "report.json.tmp"), os.path.join(outdir, "report.json"))

    log = open(os.path.join(outdir, "suite.log"), "a" if a.update else "w", buffering=1)
    rc = 0
    try:
        if a.no_progress:
            Suite(a, progress=None, log=log).run(a.sections, report, save)
        else:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            console = Console(file=sys.__stderr__)
            with Progress(TextColumn("{task.description:<70}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console, transient=False) as progress:
                Suite(a, progress=progress, log=log).run(a.sections, report, save)
    except (KeyboardInterrupt, Terminate) as e:
        print(f"\ninterrupted ({str(e) or 'Ctrl-C'}): every lab torn down; partial report in {outdir}",
              file=sys.stderr)
        report["interrupted"] = True
        rc = 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        log.close()
    finish(report, outdir, t0)
    print(f"wrote {outdir}/report.json, report.md and {len(report['plots'])} plots", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
