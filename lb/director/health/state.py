"""The health state machines, pure (no I/O, the clock passed in), as keepalived's ipwrapper.c
runs them:

- a checker is up until it fails more than `retry` times in a row (the retries spaced by
  delay_before_retry), then down until one check passes; with `alpha` it starts down;
- a real server is alive while every one of its checkers is up;
- a virtual server loses its quorum when the weight of its alive servers falls below
  quorum - hysteresis, and gains it back at quorum + hysteresis; it starts with it;
- while the quorum is lost and a sorry server is configured, the sorry server is in the
  table and the alive servers are out of it (keepalived's perform_quorum_state);
- notify_up / notify_down run when a server changes, quorum_up / quorum_down when the quorum
  does.

`HealthState.record` returns the scripts to run; `lb.director.health.overlay` turns the state
into the table's servers and weights.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from lb.director.health.spec import HealthConfig, Server, VirtualServer


@dataclass
class CheckState:
    up: bool
    failures: int = 0           # in a row
    passed: int = 0             # totals, for listings and metrics
    failed: int = 0
    detail: str = "not checked yet"
    weight: int | None = None   # misc_dynamic's
    since: float = 0.0          # of the last change of `up`

    def record(self, ok: bool, detail: str, weight, retry: int, now: float) -> bool:
        """The result of one check; True when `up` changed."""
        self.detail = detail
        if ok:
            self.passed += 1
            self.failures = 0
            self.weight = weight
            changed = not self.up
            self.up = True
        else:
            self.failed += 1
            self.failures += 1
            changed = self.up and self.failures > retry
            if changed:
                self.up = False
        if changed:
            self.since = now
        return changed

    def retrying(self, retry: int) -> bool:
        """Failed, but not yet `retry` times: the next check comes after delay_before_retry."""
        return self.up and 0 < self.failures <= retry


@dataclass
class ServerState:
    spec: Server
    base_weight: int            # the configured weight: the file's, or the operator's -e -w
    checks: list = field(default_factory=list)

    @classmethod
    def new(cls, spec: Server, now: float) -> ServerState:
        return cls(spec, spec.weight,
                   [CheckState(up=not spec.alpha, since=now) for _ in spec.checks])

    @property
    def alive(self) -> bool:
        return all(c.up for c in self.checks)

    @property
    def weight(self) -> int:
        """The weight it carries while alive: misc_dynamic's if a script set one."""
        dynamic = [c.weight for c in self.checks if c.weight is not None]
        return dynamic[-1] if dynamic else self.base_weight


@dataclass
class ServiceState:
    spec: VirtualServer
    servers: dict               # (addr, port) -> ServerState
    quorum_up: bool = True

    def alive_weight(self) -> int:
        return sum(s.weight for s in self.servers.values() if s.alive)

    def update_quorum(self) -> bool | None:
        """keepalived update_quorum_state: True gained, False lost, None unchanged."""
        weight, vs = self.alive_weight(), self.spec
        if not self.quorum_up and weight >= vs.quorum + vs.hysteresis:
            self.quorum_up = True
            return True
        if self.quorum_up and weight < vs.quorum - vs.hysteresis:
            self.quorum_up = False
            return False
        return None

    @property
    def sorry_active(self) -> bool:
        return not self.quorum_up and self.spec.sorry_server is not None


class HealthState:
    """The state of every check of every configured virtual server."""

    def __init__(self, config: HealthConfig | None = None, now: float = 0.0,
                 previous: HealthState | None = None):
        self.config = config or HealthConfig()
        self.services: dict = {}
        self.pending: list = []     # scripts of the transitions at creation (alpha, quorum)
        for key, vs in self.config.services.items():
            self.services[key] = self._service(vs, now, previous)

    def _service(self, vs: VirtualServer, now: float, previous) -> ServiceState:
        # A reload keeps the state of a server whose checks did not change (keepalived's
        # rs_exist: alive, weight); a new or changed one starts afresh.
        old = previous.services.get(vs.key) if previous else None
        servers = {}
        for spec in vs.servers:
            before = old.servers.get(spec.key) if old else None
            if before is not None and before.spec.checks == spec.checks \
                    and before.spec.alpha == spec.alpha:
                servers[spec.key] = ServerState(spec, spec.weight, before.checks)
            else:
                servers[spec.key] = ServerState.new(spec, now)
        state = ServiceState(vs, servers, old.quorum_up if old else True)
        change = state.update_quorum()
        if change is not None:
            self.pending.append(vs.quorum_up if change else vs.quorum_down)
        return state

    def take_pending(self) -> list:
        scripts, self.pending = [s for s in self.pending if s], []
        return scripts

    def record(self, svc_key, server_key, index: int, result, now: float) -> tuple[bool, list]:
        """One check's result: (the table must change, [argv of the scripts to run])."""
        svc = self.services.get(svc_key)
        server = svc.servers.get(server_key) if svc else None
        if server is None or index >= len(server.checks):
            return False, []        # a result for a configuration replaced meanwhile
        check = server.checks[index]
        alive, weight = server.alive, server.weight
        check.record(result.ok, result.detail, result.weight,
                     server.spec.checks[index].retry, now)
        scripts = []
        if server.alive != alive:
            scripts.append(server.spec.notify_up if server.alive else server.spec.notify_down)
        change = svc.update_quorum()
        if change is not None:
            scripts.append(svc.spec.quorum_up if change else svc.spec.quorum_down)
        changed = server.alive != alive or server.weight != weight or change is not None
        return changed, [s for s in scripts if s]

    def set_base_weight(self, svc_key, server_key, weight: int) -> list:
        """The operator's -e -w on a checked server: the configuration owns the weight."""
        svc = self.services.get(svc_key)
        server = svc.servers.get(server_key) if svc else None
        if server is None:
            return []
        server.base_weight = weight
        change = svc.update_quorum()
        if change is None:
            return []
        return [s for s in [svc.spec.quorum_up if change else svc.spec.quorum_down] if s]

    def omega_scripts(self) -> list:
        """On stop, with `omega`: the down notifiers of what is still up (keepalived's
        clear_service_rs / clear_service_vs in omega mode)."""
        scripts = []
        for svc in self.services.values():
            if not svc.spec.omega:
                continue
            scripts += [s.spec.notify_down for s in svc.servers.values()
                        if s.alive and s.spec.notify_down]
            if svc.quorum_up and svc.spec.quorum_down:
                scripts.append(svc.spec.quorum_down)
        return scripts
