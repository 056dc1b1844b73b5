"""Processes for the harness: commands (in a namespace), sysctl, signals, our own processes.

Everything the harness starts runs in a session of its own, so that kill_own() can stop it
with its children and never touches a process the harness did not start.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess

# The benchmark's own process.  pyroute2's NetNS helpers are forked from it; they must neither
# unwind its stack on a signal nor tear down its lab.
MAIN_PID = os.getpid()


class Terminate(BaseException):
    """SIGTERM or SIGHUP in the main process: unwind and tear the lab down, like Ctrl-C."""


def on_signal(signum, frame):
    if os.getpid() != MAIN_PID:
        # A forked copy of this process (pyroute2's NetNS helper lives in a namespace, forked
        # from us) must die as it would by default, not unwind our stack and tear down the lab.
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    raise Terminate(f"signal {signum}")


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr.strip() or r.stdout.strip()}")
    return r


def nsexec(ns, *cmd, check=True, **kw):
    return run(["ip", "netns", "exec", ns, *cmd], check=check, **kw)


def sysctl(ns, **kv):
    args = [f"{k.replace('__', '.')}={v}" for k, v in kv.items()]
    nsexec(ns, "sysctl", "-qw", *args)


def napi_threads(ifname):
    """PIDs of kernel threads named napi/<ifname>-<id>."""
    out = []
    for e in os.listdir("/proc"):
        if e.isdigit():
            try:
                with open(f"/proc/{e}/comm") as f:
                    if f.read().strip().startswith(f"napi/{ifname}-"):
                        out.append(int(e))
            except OSError:
                pass
    return out


def proc_jiffies(pid):
    """utime + stime of a process (all threads), 0 if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[11]) + int(v[12])
    except (OSError, IndexError, ValueError):
        return 0


def kill_own(proc: subprocess.Popen | None, sig=signal.SIGINT, wait=3.0):
    """Stop a process this harness started (its own session: pgid == its PID)."""
    if proc is None or proc.poll() is not None:
        return
    for s in (sig, signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, s)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
