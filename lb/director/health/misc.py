"""MISC_CHECK (keepalived check_misc.c): the operator's script; exit 0 passes, anything else
fails. With misc_dynamic, exit 1 fails and 2..255 passes with the weight set to exit-2
(exit 0 passes with the configured weight). A script that runs past misc_timeout (default:
the delay loop) is killed, with its process group, and counts as a failure."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from lb.director.health.probe import Result


def verdict(rc: int, dynamic: bool) -> Result:
    if rc == 0:
        return Result(True, "exit 0")
    if dynamic and 2 <= rc <= 255:
        return Result(True, f"exit {rc}: weight {rc - 2}", weight=rc - 2)
    return Result(False, f"exit {rc}" if rc > 0 else f"killed by signal {-rc}")


async def run(argv, timeout: float) -> int | None:
    """Run argv (no shell), its output discarded; its exit status, or None on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)     # its own session: the script and children
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 1.0)
        if asyncio.current_task().cancelling():
            raise
        return None


async def probe(check, addr: str, port: int, delay_loop: float = 1.0) -> Result:
    timeout = check.misc_timeout or delay_loop
    try:
        rc = await run(check.misc_path, timeout)
    except OSError as e:
        return Result(False, f"cannot run {check.misc_path[0]}: {e.strerror or e}")
    if rc is None:
        return Result(False, f"still running after {timeout:g} s: killed")
    return verdict(rc, check.misc_dynamic)
