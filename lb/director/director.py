"""The Director: the configuration, what the fast path holds of it, and the scheduler callback.

A command is tried on a copy of the configuration first; the reconcile step plans the fast
path's operations from that copy and checks them against every limit; only then are they
pushed, and only once the fast path and nftables have taken them is the command applied to the
configuration itself. So a command refused at any step (bad input, a table full, the fast path
or nft refusing) leaves the configuration, the fast path and the ingress table as they were.

Works on any FastPath (lb.director.fastpath): the Forwarder in lbd, a fake in the unit tests.
"""
from __future__ import annotations

import copy
import logging
import threading
import time

from lb.director import reconcile, vips
from lb.director.config import Config, ConfigError
from lb.director.fastpath import LIMITS
from lb.director.health import overlay
from lb.director.health.state import HealthState
from lb.director.model import FWM, Flow
from lb.director.nft import NftError
from lb.director.rules import RulesError

log = logging.getLogger("lbd")
# Commands that change nothing the fast path or nftables hold (-Z writes the counters itself).
READ_ONLY = {"list", "get_laddr", "zero", "help"}
SCHED_FAILED = -2   # fastpath/newflow.pxi: the scheduler failed (counted sched_error)
SERVER_OPS = {"add_server", "del_server"}


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
        # Health checks (lb.director.health): their state, a generation that a reload of
        # their configuration bumps (results of older checkers are dropped), and the hooks
        # the engine sets: restart the checkers, run notify scripts.
        self.health = HealthState()
        self.health_gen = 0
        self.on_health = lambda state, gen: None
        self.notify = lambda scripts: self._pending_scripts.extend(scripts)  # until attached
        self._pending_scripts: list = []
        # VIP ownership (lb.director.vips): None serves every VIP (lbd --vip-ownership always);
        # else the addresses this director holds, and only their services are pushed.
        self.owned: frozenset | None = None

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
        if isinstance(cmd, dict) and cmd.get("op") == "list_checks":
            from lb.director.health.listing import format_checks
            return self._ownership_line() + format_checks(self.health, self.config)
        if not isinstance(cmd, dict) or cmd.get("op") in READ_ONLY:
            return self.config.apply(cmd)
        reload = cmd.get("op") == "reload"
        if reload:
            if self.reload_source is None:
                raise ConfigError("lbd was started without --config: there is nothing to reload")
            cmd = self.reload_source()                        # RulesError: nothing changed
        commands = _batch(cmd) if cmd.get("op") == "batch" else [(cmd, None)]
        health = self.health
        if reload:        # the file's checks, keeping the state of the unchanged ones
            health = HealthState(cmd.get("health"), time.monotonic(), previous=self.health)
        else:
            self._refuse_managed(commands, health)
        trial = self.config.copy()
        for one, line in commands:                            # ConfigError: nothing changed
            try:
                trial.apply(one)
            except ConfigError as e:
                if line is None:
                    raise
                where = f"{cmd['source']}: line {line}" if cmd.get("source") else f"line {line}"
                raise ConfigError(f"{where}: {e}") from None
        weights = self._operator_weights(commands, health)
        try:
            out = self._commit(cmd, commands, trial, health)
        except BaseException:
            for (svc_key, server_key), (_, old) in weights.items():
                health.services[svc_key].servers[server_key].base_weight = old
            raise
        if health is not self.health:
            self.health, self.health_gen = health, self.health_gen + 1
            self.on_health(health, self.health_gen)
            self._pending_scripts += health.take_pending()
        for (svc_key, server_key), (new, _) in weights.items():
            self._pending_scripts += health.set_base_weight(svc_key, server_key, new)
        scripts, self._pending_scripts = self._pending_scripts, []
        if scripts:
            self.notify(scripts)
        return out

    def _commit(self, cmd, commands, trial, health) -> str:
        # The checks' verdicts, on top of whatever the command did (health.overlay).
        extra = overlay.commands(trial, health)
        for one in extra:
            trial.apply(one)
        commands = list(commands) + [(one, None) for one in extra]
        want = reconcile.desired(self._served(trial), self.expanded)
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

    @staticmethod
    def _refuse_managed(commands, health) -> None:
        """The checker owns the presence of the servers it checks (keepalived's rule): an
        operator's -a or -d of one would be undone at its next change, so it is refused."""
        for one, _ in commands:
            if one.get("op") not in SERVER_OPS:
                continue
            key = _svc_key(one)
            addr = one.get("rip")
            for svc_key, svc in health.services.items():
                if svc_key != key:
                    continue
                ports = {k[1] for k in svc.servers if k[0] == addr}
                sorry = svc.spec.sorry_server
                if sorry is not None and sorry.addr == addr:
                    ports.add(sorry.port)
                port = one.get("rport", key[2] if len(key) == 3 else 0)
                if port in ports:
                    raise ConfigError(
                        f"real server {addr}:{port} of service {_key_name(key)} is managed by "
                        "its health check: change it in the configuration file and reload")

    @staticmethod
    def _operator_weights(commands, health) -> dict:
        """-e -w on checked servers: {(svc, server): (new base weight, old)}, set now so that
        the overlay keeps the operator's weight (the configuration owns the weight)."""
        out = {}
        for one, _ in commands:
            if one.get("op") != "edit_server":
                continue
            key = _svc_key(one)
            svc = health.services.get(key)
            port = one.get("rport", key[2] if len(key) == 3 else 0)
            server = svc.servers.get((one.get("rip"), port)) if svc else None
            if server is not None:
                old = out.get((key, server.spec.key), (None, server.base_weight))[1]
                out[(key, server.spec.key)] = (one.get("weight", 1), old)
                server.base_weight = one.get("weight", 1)
        return out

    # --- VIP ownership (lb.director.vips) -------------------------------------------------
    def _served(self, config):
        """What the fast path gets of `config`: the services of the VIPs this director holds."""
        if self.owned is None:
            return config
        view = copy.copy(config)
        view.services = [svc for svc in config.services if vips.serves(svc, self.owned)]
        return view

    def _ownership_line(self) -> str:
        if self.owned is None:
            return ""
        every = vips.served_vips(self.config.services, None)
        held = sorted(every & self.owned)
        withheld = sorted(every - self.owned)
        return (f"VIPs held by this director: {' '.join(held) or '-'}; not held (services "
                f"withheld): {' '.join(withheld) or '-'}\n")

    def set_owned(self, owned) -> list:
        """The addresses this director holds now (None: every VIP); pushes the difference and
        returns the VIPs whose services it starts serving (to announce with gratuitous ARP)."""
        with self.lock:
            owned = None if owned is None else frozenset(owned)
            before = vips.served_vips(self._served(self.config).services, self.owned)
            old, self.owned = self.owned, owned
            try:
                self._commit({"op": "batch"}, [], self.config.copy(), self.health)
            except Exception as e:      # noqa: BLE001 -- keep the old view; the next event retries
                self.owned = old
                log.error("VIP ownership: pushing the change failed: %s", e)
                return []
            after = vips.served_vips(self._served(self.config).services, self.owned)
            taken, dropped = sorted(after - before), sorted(before - after)
            for vip in taken:
                log.info("VIP %s held: serving its services", vip)
            for vip in dropped:
                log.info("VIP %s no longer held: its services are withheld", vip)
            return taken

    # --- health checks (lb.director.health.engine calls these) ---------------------------
    def health_snapshot(self):
        with self.lock:
            scripts, self._pending_scripts = self._pending_scripts, []
            return self.health, self.health_gen, scripts

    def health_report(self, gen: int, svc_key, server_key, index: int, result) -> bool:
        """One check's result; True while that checker is retrying (its next check comes
        after delay_before_retry). A change of the verdicts goes through the same trial,
        plan and push as a command; if that fails it is logged and tried again."""
        with self.lock:
            if gen != self.health_gen:
                return False
            changed, scripts = self.health.record(svc_key, server_key, index, result,
                                                  time.monotonic())
            svc = self.health.services.get(svc_key)
            server = svc.servers.get(server_key) if svc else None
            if changed or self._health_dirty:
                if changed:
                    log.info("health: %s %s:%d is %s (%s)", _key_name(svc_key), *server_key,
                             "up" if server.alive else "down", result.detail)
                try:
                    self._commit({"op": "batch"}, [], self.config.copy(), self.health)
                    self._health_dirty = False
                except Exception as e:      # noqa: BLE001 -- keep the verdict, retry later
                    self._health_dirty = True
                    log.error("health: applying the checks' verdict failed: %s", e)
            if scripts:
                self.notify(scripts)
            if server is None:
                return False
            return server.checks[index].retrying(server.spec.checks[index].retry)

    def health_omega(self) -> list:
        with self.lock:
            return self.health.omega_scripts()

    _health_dirty = False

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
            plan = reconcile.plan(self.applied, reconcile.desired(self._served(self.config)),
                                  self.limits,
                                  holds=self._holds, lent=self.fastpath.laddr_used)
            reconcile.execute(plan, self.fastpath, self.ingress, self.lport_range)
            self.applied = plan.after
            self._bind()

    def release_idle(self) -> None:
        """Free the slots of deleted servers and unnamed pools once nothing holds them."""
        with self.lock:
            self.applied = reconcile.release(self.applied, self._holds, self.fastpath.laddr_used)

    def _holds(self, slot: int) -> bool:
        # Connections and persistence templates both name the slot: it is reused only when
        # neither does (a template names its server's generation too: see fastpath/persist.pxi).
        c = self.fastpath.dest_counters(slot)
        return c["active"] + c["inactive"] + c.get("templates", 0) > 0

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


def _svc_key(cmd: dict) -> tuple:
    if "fwmark" in cmd:
        return (FWM, cmd.get("fwmark"))
    return (cmd.get("proto"), cmd.get("vip"), cmd.get("port"))


def _key_name(key: tuple) -> str:
    return f"FWM {key[1]}" if key[0] == FWM else f"{str(key[0]).upper()} {key[1]}:{key[2]}"


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
