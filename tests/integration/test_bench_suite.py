"""bench/suite.py --quick: a complete, parseable report with every reference, and nothing left on Ctrl-C.

The numbers of a quick run mean nothing (tiny counts on a shared machine); what is checked is
that the suite still runs end to end, so that it cannot rot: every section present, every
reference measured or marked unavailable with a reason, the markdown and the plots written.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "bench" / "suite.py"
REFERENCES = {"pps64_napi": ("kernel", "nftdnat", "ring"), "e2e_http_short": ("kernel", "nftdnat", "haproxy")}


def ours_left(pid: int) -> dict:
    """Namespaces and processes of the suite run with this PID that still exist."""
    tag = f"benchsuite{pid}x"
    names = [n for n in os.listdir("/var/run/netns")] if os.path.isdir("/var/run/netns") else []
    procs = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                cmd = Path(f"/proc/{e}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if tag in cmd:
                procs.append((int(e), cmd[:200]))
    return {"netns": [n for n in names if n.startswith(tag)], "procs": procs}


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT))


def test_quick_report_is_complete(tmp_path):
    out = tmp_path / "quick"
    p = subprocess.Popen([sys.executable, str(SUITE), "--quick", "--no-progress", "--out", str(out)],
                         cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True)
    try:
        text, _ = p.communicate(timeout=420)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGINT)
        text, _ = p.communicate(timeout=60)
        raise AssertionError(f"suite --quick did not finish in 420 s: {text[-2000:]}")
    assert p.returncode == 0, text[-3000:]
    assert ours_left(p.pid) == {"netns": [], "procs": []}
    report = json.loads((out / "report.json").read_text())
    sys.path.insert(0, str(ROOT / "bench"))
    from harness.plan import sections
    want = [s.id for s in sections(quick=True)]
    assert list(report["sections"]) == want
    for sid, sec in report["sections"].items():
        assert "error" not in sec, (sid, sec.get("error"))
        if sec["kind"] != "memory":
            assert [r["mode"] for r in sec["rows"]] == sec["modes"], sid
            for r in sec["rows"]:
                # measured, or unavailable/failed with the reason
                assert r.get("value") is not None or r["status"].split(":")[0] in ("unavailable", "failed"), (sid, r)
    for sid, refs in REFERENCES.items():
        rows = {r["mode"]: r for r in report["sections"][sid]["rows"]}
        for m in refs:
            assert rows[m].get("value") is not None or len(rows[m]["status"]) > len("unavailable: "), (sid, m)
    assert report["sections"]["pps64_napi"]["rows"][0]["value"] > 0          # kernel forwarding moved frames
    assert report["memory"]["conns"] > 0 and report["memory"]["bytes_per_conn"] > 0
    assert len(report["targets"]) > 10 and report["folklore"]
    md = (out / "report.md").read_text()
    assert md.startswith("# lvs-py benchmark suite") and "## Targets" in md and "DR > TUN > NAT > FULLNAT" in md
    for f in report["plots"]:
        assert (out / f).stat().st_size > 1000


def test_ctrl_c_leaves_nothing_behind(tmp_path):
    out = tmp_path / "interrupted"
    p = subprocess.Popen([sys.executable, str(SUITE), "--quick", "--no-progress", "--out", str(out),
                          "--only", "pps64_napi,e2e_http_short"], cwd=ROOT, env=_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # wait until a forwarder of the run is up (lbd or the ring forwarder), then Ctrl-C
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and p.poll() is None:
            left = ours_left(p.pid)
            if left["netns"] and any(("lb.director.daemon" in c or "ringfwd" in c) for _, c in left["procs"]):
                break
            time.sleep(0.1)
        assert p.poll() is None, "the suite ended before it could be interrupted"
        os.kill(p.pid, signal.SIGINT)      # Ctrl-C goes to the main process
        text, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert p.returncode == 130, text[-2000:]
    deadline = time.monotonic() + 5        # a killed process may take a moment to be reaped
    while (left := ours_left(p.pid)) != {"netns": [], "procs": []} and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == {"netns": [], "procs": []}, left
    report = json.loads((out / "report.json").read_text())
    assert report["interrupted"] is True
