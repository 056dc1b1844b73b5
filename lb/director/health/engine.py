"""The health-check engine: one asyncio task per checker of every real server, in lbd's event
loop (the one that answers lbadm), so checks leave from lbd's own network namespace.

Every probe is bounded twice: by its own timeouts (connect_timeout, misc_timeout) and by a
hard deadline here, so a hostile server or a hanging script is a failure, never a stuck task.
Results go to the Director (Director.health_report) through an executor of their own, one
thread: a configuration change holding the Director's lock delays the checks' reports, never
lbadm's commands, which use the loop's default executor.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import random

from lb.director.health import dns, http, misc, tcp, udp
from lb.director.health.probe import Result
from lb.director.health.spec import NOTIFY_TIMEOUT

log = logging.getLogger("lbd")
PROBES = {"TCP_CHECK": tcp.probe, "HTTP_GET": http.probe, "SSL_GET": http.probe,
          "UDP_CHECK": udp.probe, "DNS_CHECK": dns.probe}


def hard_deadline(check, delay_loop: float) -> float:
    """The longest a probe may take before the engine counts it failed."""
    if check.kind == "MISC_CHECK":
        return (check.misc_timeout or delay_loop) + 2.0
    return 2 * check.connect_timeout * max(1, len(check.urls)) + 1.0


async def run_probe(check, addr: str, port: int, delay_loop: float) -> Result:
    try:
        if check.kind == "MISC_CHECK":
            coro = misc.probe(check, addr, port, delay_loop)
        else:
            coro = PROBES[check.kind](check, addr, port)
        return await asyncio.wait_for(coro, hard_deadline(check, delay_loop))
    except asyncio.TimeoutError:
        return Result(False, "check timed out")
    except Exception as e:          # noqa: BLE001 -- a checker's bug is that server's failure
        log.warning("%s of %s:%d: %s: %s", check.kind, addr, port, type(e).__name__, e)
        return Result(False, f"check error: {type(e).__name__}")


class Engine:
    def __init__(self, director):
        self.director = director
        self.loop: asyncio.AbstractEventLoop | None = None
        self.tasks: list[asyncio.Task] = []
        self.scripts: set[asyncio.Task] = set()
        self.reports = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="health")

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start checking what the Director holds; follow its reloads from now on."""
        self.loop = loop
        self.director.on_health = lambda state, gen: loop.call_soon_threadsafe(
            self.restart, state, gen)
        self.director.notify = lambda scripts: loop.call_soon_threadsafe(self.run_scripts,
                                                                           scripts)
        state, gen, pending = self.director.health_snapshot()
        self.restart(state, gen)
        self.run_scripts(pending)

    def restart(self, state, gen: int) -> None:
        for task in self.tasks:
            task.cancel()
        self.tasks = []
        for svc_key, svc in state.services.items():
            for server_key, server in svc.servers.items():
                for index, check in enumerate(server.spec.checks):
                    delay = check.delay_loop or svc.spec.delay_loop
                    self.tasks.append(self.loop.create_task(
                        self._run(gen, svc_key, server_key, index, check, delay)))
        if self.tasks:
            log.info("health checks: %d checkers on %d virtual servers", len(self.tasks),
                     len(state.services))

    async def _run(self, gen, svc_key, server_key, index, check, delay_loop) -> None:
        if check.warmup:
            await asyncio.sleep(random.uniform(0, check.warmup))
        addr, port = server_key
        while True:
            result = await run_probe(check, addr, port, delay_loop)
            retrying = await self.loop.run_in_executor(
                self.reports, self.director.health_report, gen, svc_key, server_key, index,
                result)
            await asyncio.sleep(check.delay_before_retry if retrying else delay_loop)

    def run_scripts(self, scripts) -> None:
        for argv in scripts:
            task = self.loop.create_task(self._script(argv))
            self.scripts.add(task)
            task.add_done_callback(self.scripts.discard)

    @staticmethod
    async def _script(argv) -> None:
        try:
            rc = await misc.run(argv, NOTIFY_TIMEOUT)
        except OSError as e:
            log.warning("notify script %s: %s", argv[0], e.strerror or e)
            return
        if rc is None:
            log.warning("notify script %s still running after %g s: killed", argv[0],
                        NOTIFY_TIMEOUT)
        elif rc:
            log.warning("notify script %s exited %d", argv[0], rc)

    async def close(self) -> None:
        """Stop checking; with omega, run the down notifiers (bounded), then wait for every
        script still running (each bounded by NOTIFY_TIMEOUT)."""
        for task in self.tasks:
            task.cancel()
        self.run_scripts(self.director.health_omega())
        if self.scripts:
            await asyncio.wait(list(self.scripts), timeout=NOTIFY_TIMEOUT + 2)
        self.reports.shutdown(wait=False, cancel_futures=True)
