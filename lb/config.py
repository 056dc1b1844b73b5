"""The configuration the daemon holds: apply one lbadm command at a time, all or nothing.

Every command is validated against the current state before anything changes, so a
ConfigError always leaves `services` exactly as it was. Pure: no sockets, no root.
"""
from __future__ import annotations

import ipaddress

from lb import listing, schedulers
from lb.model import FWD_METHODS, MASQ, OVERLOAD, PROTOCOLS, ROUTE, TUNNEL, RealServer, Service

SUPPORTED_FWD = (MASQ, ROUTE, TUNNEL)
DEFAULT_SCHEDULER = "wlc"  # ipvsadm's DEF_SCHED
THRESHOLD_MAX = 2**31 - 1  # ipvsadm -x/-y: string_to_number(optarg, 0, INT_MAX)


class ConfigError(Exception):
    """A command that cannot be applied; the message is one line for the user."""


# --- field checks: the daemon gets these dicts over a socket, so trust nothing ----------

def _ipv4(cmd: dict, key: str) -> str:
    value = cmd.get(key)
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise ConfigError(f"bad {key} {value!r}: must be a dotted IPv4 address") from None


def _int(cmd: dict, key: str, low: int, high: int) -> int:
    value = cmd.get(key)
    if type(value) is not int or not low <= value <= high:
        raise ConfigError(f"bad {key} {value!r}: must be an integer {low}..{high}")
    return value


def _service_key(cmd: dict) -> tuple:
    proto = cmd.get("proto")
    if proto not in PROTOCOLS:
        raise ConfigError(f"bad proto {proto!r}: must be one of {', '.join(PROTOCOLS)}")
    return proto, _ipv4(cmd, "vip"), _int(cmd, "port", 1, 65535)


def _server_key(cmd: dict, vport: int) -> tuple:
    rport = _int(cmd, "rport", 1, 65535) if "rport" in cmd else vport
    return _ipv4(cmd, "rip"), rport


def _scheduler(cmd: dict) -> str:
    name = cmd.get("scheduler") or DEFAULT_SCHEDULER
    try:
        schedulers.get(name)
    except (KeyError, TypeError):
        raise ConfigError(f"unknown scheduler {name!r} "
                          f"(available: {', '.join(schedulers.names())})") from None
    return name


def _fwd(cmd: dict) -> str:
    fwd = cmd.get("fwd", MASQ)
    if fwd not in FWD_METHODS:
        raise ConfigError(f"unknown forwarding method {fwd!r}")
    if fwd not in SUPPORTED_FWD:
        raise ConfigError(f"forwarding method {fwd!r} is not supported yet")
    return fwd


def _same_port(svc, rport: int, fwd: str) -> None:
    # DR and TUN deliver the client's packet as it is: the real server must listen on the
    # virtual port, so these methods cannot map ports (only NAT rewrites them).
    if fwd in (ROUTE, TUNNEL) and rport != svc.port:
        raise ConfigError(f"forwarding method {fwd!r} cannot map ports: real server port {rport} "
                          f"must equal the virtual port {svc.port}")


def _weight(cmd: dict) -> int:
    return _int(cmd, "weight", 0, 65535) if "weight" in cmd else 1


def _thresholds(cmd: dict) -> tuple:
    """(-x, -y); absent is 0, as ipvsadm sends them (so -e without -x clears the limit)."""
    return tuple(_int(cmd, key, 0, THRESHOLD_MAX) if key in cmd else 0
                 for key in ("u_threshold", "l_threshold"))


def _sched_flags(cmd: dict, scheduler: str) -> frozenset:
    """ipvsadm -b: only the flags of the scheduler chosen; absent means none (-E clears them)."""
    flags = cmd.get("sched_flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise ConfigError(f"bad sched_flags {flags!r}: must be a list of flag names")
    known = [f for names in schedulers.SCHED_FLAGS.values() for f in names]
    for flag in flags:
        if flag not in known:
            raise ConfigError(f"unknown scheduler flag {flag!r} (known: {', '.join(known)})")
        if flag not in schedulers.SCHED_FLAGS.get(scheduler, ()):
            raise ConfigError(f"scheduler flag {flag!r} is not for scheduler {scheduler!r}")
    return frozenset(flags)


def _name(proto: str, vip: str, port: int) -> str:
    return f"{proto.upper()} {vip}:{port}"


class Config:
    def __init__(self, stats=None):
        self.stats = stats  # fast-path counters, attached to every RealServer added
        self.services: list[Service] = []

    def find_service(self, proto: str, vip: str, port: int) -> Service | None:
        for svc in self.services:
            if svc.key == (proto, vip, port):
                return svc
        return None

    def apply(self, cmd: dict) -> str:
        """Apply one command dict (see lb.cli.parse); return the text to show the user."""
        if not isinstance(cmd, dict):
            raise ConfigError("bad command: expected a JSON object")
        handler = self._HANDLERS.get(cmd.get("op"))
        if handler is None:
            raise ConfigError(f"unknown command {cmd.get('op')!r}")
        return handler(self, cmd)

    # --- lookups that raise -------------------------------------------------------------

    def _existing_service(self, cmd: dict) -> Service:
        key = _service_key(cmd)
        svc = self.find_service(*key)
        if svc is None:
            raise ConfigError(f"no such service {_name(*key)}")
        return svc

    def _existing_dest(self, svc: Service, cmd: dict) -> RealServer:
        rip, rport = _server_key(cmd, svc.port)
        dest = svc.find_dest(rip, rport)
        if dest is None:
            raise ConfigError(f"no such real server {rip}:{rport} in service {svc}")
        return dest

    # --- services -----------------------------------------------------------------------

    def _add_service(self, cmd: dict) -> str:
        key = _service_key(cmd)
        if self.find_service(*key) is not None:
            raise ConfigError(f"service {_name(*key)} already exists")
        name = _scheduler(cmd)
        self.services.append(Service(*key, scheduler=name, sched_flags=_sched_flags(cmd, name)))
        return ""

    def _edit_service(self, cmd: dict) -> str:
        svc = self._existing_service(cmd)
        name = _scheduler(cmd)
        flags = _sched_flags(cmd, name)
        if name != svc.scheduler:  # the kernel keeps the scheduler state if unchanged
            svc.set_scheduler(name)
        svc.sched_flags = flags    # schedulers read them per decision: no rebuild needed
        return ""

    def _del_service(self, cmd: dict) -> str:
        self.services.remove(self._existing_service(cmd))
        return ""

    def _clear(self, cmd: dict) -> str:
        self.services = []
        return ""

    # --- real servers -------------------------------------------------------------------

    def _add_server(self, cmd: dict) -> str:
        svc = self._existing_service(cmd)
        rip, rport = _server_key(cmd, svc.port)
        if svc.find_dest(rip, rport) is not None:
            raise ConfigError(f"real server {rip}:{rport} already exists in service {svc}")
        fwd = _fwd(cmd)
        _same_port(svc, rport, fwd)
        weight, (upper, lower) = _weight(cmd), _thresholds(cmd)
        dest = RealServer(rip, rport, weight=weight, fwd=fwd, stats=self.stats,
                          u_threshold=upper, l_threshold=lower)
        svc.dests.append(dest)
        svc.dests_changed()
        return ""

    def _edit_server(self, cmd: dict) -> str:
        svc = self._existing_service(cmd)
        dest = self._existing_dest(svc, cmd)
        weight, fwd, (upper, lower) = _weight(cmd), _fwd(cmd), _thresholds(cmd)
        _same_port(svc, dest.port, fwd)
        if weight:                 # the kernel's last_weight: the latest non-zero weight
            dest.last_weight = weight
        dest.weight, dest.fwd = weight, fwd
        # __ip_vs_update_dest: a limit removed or raised lifts OVERLOAD at once; one lowered
        # takes effect at the next decision.
        if upper == 0 or upper > dest.u_threshold:
            dest.flags.discard(OVERLOAD)
        dest.u_threshold, dest.l_threshold = upper, lower
        svc.dests_changed()
        return ""

    def _del_server(self, cmd: dict) -> str:
        svc = self._existing_service(cmd)
        svc.dests.remove(self._existing_dest(svc, cmd))
        svc.dests_changed()
        return ""

    # --- listing ------------------------------------------------------------------------

    def _list(self, cmd: dict) -> str:
        numeric = bool(cmd.get("numeric", True))
        if cmd.get("proto") is not None:
            return listing.format_one(self._existing_service(cmd), numeric)
        return listing.format_list(self.services, numeric)

    _HANDLERS = {
        "add_service": _add_service, "edit_service": _edit_service,
        "del_service": _del_service, "clear": _clear,
        "add_server": _add_server, "edit_server": _edit_server,
        "del_server": _del_server, "list": _list,
    }
