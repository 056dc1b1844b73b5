"""The Director: the configuration, what the fast path holds of it, and the scheduler callback.

A command is tried on a copy of the configuration first; the reconcile step plans the fast
path's operations from that copy and checks them against every limit; only then are they
pushed, and only once the fast path and nftables have taken them is the command applied to the
configuration itself. So a command refused at any step (bad input, a table full, the fast path
or nft refusing) leaves the configuration, the fast path and the ingress table as they were.

Works on any FastPath (lb.director.fastpath): the Forwarder in lbd, a fake in the unit tests.
"""
from __future__ import annotations

import logging
import threading
import time

from lb.director import reconcile
from lb.director.config import Config, ConfigError
from lb.director.fastpath import LIMITS
from lb.director.model import Flow
from lb.director.nft import NftError
from lb.director.rules import RulesError

log = logging.getLogger("lbd")
# Commands that change nothing the fast path or nftables hold (-Z writes the counters itself).
READ_ONLY = {"list", "get_laddr", "zero", "help"}
SCHED_FAILED = -2   # fastpath/newflow.pxi: the scheduler failed (counted sched_error)


class Director:
    def __init__(self, fastpath, ingress, lport_range=(1025, 65535), limits=None, resolve=None,
                 reload_source=None):
        self.fastpath = fastpath
        self.ingress = ingress
        self.lport_range = lport_range
        self.limits = dict(limits or LIMITS)
        self.resolve = resolve or (lambda hops: None)   # next hops to resolve now (lbd: netlink)
        self.reload_source = reload_source   # -> the batch that `lbadm --reload` applies
        self.config = Config(stats=fastpath)
        self.config.laddr_used = self._laddr_used
        self.applied = reconcile.Applied()
        self.expanded: dict = {}             # Desired.parts of what is applied (reuse)
        self.svc_by_slot: dict = {}          # read by the packet thread: replaced, never edited
        self.lock = threading.Lock()         # one configuration change at a time
        self.sched_errors = 0                # Python schedulers that raised or named no server
        self._sched_logged = float("-inf")

    # --- commands ------------------------------------------------------------------------
    def apply(self, cmd: dict) -> dict:
        with self.lock:
            try:
                out = self._apply(cmd)
            except ConfigError as e:
                if e.ipvsadm:        # the kernel would refuse it too: as ipvsadm says it
                    return {"rc": e.rc, "out": "", "err": f"{e.ipvsadm}\n"}
                return {"rc": 1, "out": "", "err": f"lbadm: {e}\n"}
            except (reconcile.LimitError, RulesError) as e:
                return {"rc": 1, "out": "", "err": f"lbadm: {e}\n"}
            except NftError as e:
                return {"rc": 1, "out": "", "err": f"lbd: {e}\n"}
            except (ValueError, OSError) as e:      # the fast path refused (all undone)
                return {"rc": 1, "out": "", "err": f"lbd: the fast path refused the change: {e}\n"}
        return {"rc": 0, "out": out, "err": ""}

    def _apply(self, cmd: dict) -> str:
        if not isinstance(cmd, dict) or cmd.get("op") in READ_ONLY:
            return self.config.apply(cmd)
        if cmd.get("op") == "reload":
            if self.reload_source is None:
                raise ConfigError("lbd was started without --config: there is nothing to reload")
            cmd = self.reload_source()                        # RulesError: nothing changed
        commands = _batch(cmd) if cmd.get("op") == "batch" else [(cmd, None)]
        trial = self.config.copy()
        for one, line in commands:                            # ConfigError: nothing changed
            try:
                trial.apply(one)
            except ConfigError as e:
                if line is None:
                    raise
                where = f"{cmd['source']}: line {line}" if cmd.get("source") else f"line {line}"
                raise ConfigError(f"{where}: {e}") from None
        want = reconcile.desired(trial, self.expanded)
        plan = reconcile.plan(self.applied, want, self.limits,
                              holds=self._holds, lent=self.fastpath.laddr_used)
        reconcile.execute(plan, self.fastpath, self.ingress, self.lport_range)
        before = {svc.key: svc for svc in self.config.services}
        out = "".join(self.config.apply(one) for one, _ in commands)   # as on the copy
        if cmd.get("replace"):
            self._keep_unchanged(before)
        self.applied, self.expanded = plan.after, want.parts
        self._bind()
        self.resolve([hop for hop in map(self.fastpath.want_neighbour, plan.fresh_dests) if hop])
        return out

    def _keep_unchanged(self, before: dict) -> None:
        # A reload rebuilds the configuration from its file; a service the file did not change
        # keeps its object, and so its scheduler's state (rr's position, lblc's table), as if
        # the reload had not touched it.
        services = self.config.services
        for i, svc in enumerate(services):
            old = before.get(svc.key)
            if old is not None and old.same_as(svc):
                services[i] = old

    def reconcile(self) -> None:
        """Push the whole configuration once (at start: the timeouts of an empty one)."""
        with self.lock:
            plan = reconcile.plan(self.applied, reconcile.desired(self.config), self.limits,
                                  holds=self._holds, lent=self.fastpath.laddr_used)
            reconcile.execute(plan, self.fastpath, self.ingress, self.lport_range)
            self.applied = plan.after
            self._bind()

    def release_idle(self) -> None:
        """Free the slots of deleted servers and unnamed pools once nothing holds them."""
        with self.lock:
            self.applied = reconcile.release(self.applied, self._holds, self.fastpath.laddr_used)

    def _holds(self, slot: int) -> bool:
        c = self.fastpath.dest_counters(slot)
        return c["active"] + c["inactive"] > 0

    def _laddr_used(self, addr: str) -> int:
        slot = self.applied.pools.get(addr)
        return 0 if slot is None else self.fastpath.laddr_used(slot)

    def _bind(self) -> None:
        # The model reads its live counters through RealServer.slot (schedulers index the
        # fast path's counter views with it); the slots themselves belong to `applied`.
        by_slot = {}
        for svc in self.config.services:
            by_slot[self.applied.service_slot(svc.key)] = svc
            for dest in svc.dests:
                dest.slot = self.applied.dest_slot((svc.key, dest.addr, dest.port))
        self.svc_by_slot = by_slot

    # --- called by the packet thread, once per batch of new flows -----------------------
    # Only for services whose scheduler has no C decision (an operator's own, lblc, lblcr):
    # the built-in ones decide in the fast path (lb/schedulers/program.py).
    def schedule(self, flows) -> list:
        # Never take self.lock here: the packet thread holds the fast path's mutex, which a
        # configuration change may be waiting for. A scheduler that raises, or names something
        # that is not one of the service's servers, gets SCHED_FAILED: the fast path drops the
        # flow and counts it (sched_error); the error is logged at most once a second.
        by_slot = self.svc_by_slot
        picks = []
        for svc_slot, proto, caddr, cport, vaddr, vport in flows:
            svc = by_slot.get(svc_slot)
            if svc is None:
                picks.append(-1)
                continue
            try:
                rs = svc.schedule(Flow(svc.proto, caddr, cport, vaddr, vport))
                if rs is not None and not any(rs is d for d in svc.dests):
                    raise TypeError(f"returned {rs!r}, which is not a server of {svc}")
            except Exception as e:          # an operator's code: never the packet thread's end
                self._sched_failed(svc, e)
                picks.append(SCHED_FAILED)
                continue
            picks.append(rs.slot if rs is not None and rs.slot is not None else -1)
        return picks

    def _sched_failed(self, svc, error) -> None:
        now = time.monotonic()
        self.sched_errors += 1
        if now - self._sched_logged >= 1.0:
            self._sched_logged = now
            log.error("scheduler %s of %s failed (%d failures so far; flow dropped): %s: %s",
                      svc.scheduler, svc, self.sched_errors, type(error).__name__, error)


def _batch(cmd: dict) -> list:
    """[(command, its line in the file)] of a batch (lbadm -R, lbd --config); a replacing
    batch starts from an empty table."""
    commands, lines = cmd.get("commands"), cmd.get("lines")
    if not isinstance(commands, list) or not all(isinstance(c, dict) for c in commands):
        raise ConfigError("bad batch: expected a list of commands")
    if any(c.get("op") in ("batch", "reload") for c in commands):
        raise ConfigError("bad batch: a batch cannot hold another batch")
    if not isinstance(lines, list) or len(lines) != len(commands):
        lines = list(range(1, len(commands) + 1))
    clear = [({"op": "clear"}, None)] if cmd.get("replace") else []
    return clear + list(zip(commands, lines))
