"""The configuration the daemon holds: apply one lbadm command at a time, all or nothing.

Every command is validated against the current state before anything changes, so a
ConfigError always leaves `services` exactly as it was. Pure: no sockets, no root.
"""
from __future__ import annotations

import ipaddress

from lb import schedulers
from lb.director import listings
from lb.director.ipvs_errors import (DEST_EXISTS, NO_SCHEDULER, NO_SUCH_DEST, NO_SUCH_SERVICE,
                                     OUT_OF_RANGE, SERVICE_EXISTS, SERVICE_NOT_DEFINED)
from lb._forward import DEFAULT_TIMEOUTS as STATE_TIMEOUTS
from lb.director.model import (DEFAULT_SCHEDULER, ENAT, FULLNAT, FWD_METHODS, FWM, MASQ, OVERLOAD,
                               PROTOCOLS, ROUTE, THRESHOLD_MAX, TUNNEL, RealServer, Service)

SUPPORTED_FWD = (MASQ, ROUTE, TUNNEL, FULLNAT, ENAT)
PERSISTENT_MAX = 2**31 - 1 # seconds
TIMEOUT_MAX = 2**31 // 1000  # the fast path keeps timeouts in milliseconds, in 32 bits
# lbadm --set tcp tcpfin udp, and the fast path's connection states they time
TIMEOUT_STATES = {"tcp": "ESTABLISHED", "tcpfin": "FIN_WAIT", "udp": "UDP"}
DEFAULT_TIMEOUTS = {name: STATE_TIMEOUTS[state] for name, state in TIMEOUT_STATES.items()}


class ConfigError(Exception):
    """A command that cannot be applied; the message is one line for the user. Where the
    kernel refuses the same command, `ipvsadm` is what ipvsadm 1.31 prints for it (libipvs's
    ipvs_strerror) and `rc` its exit status: a failed change returns -1 (255), a listing of a
    service that does not exist exits 1. lbadm prints those for a single command; a rule file
    (-R, --config) keeps the message, which names what is wrong, with its line number."""

    def __init__(self, message: str, ipvsadm: str | None = None, rc: int = 255):
        super().__init__(message)
        self.ipvsadm = ipvsadm
        self.rc = rc


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
    if "fwmark" in cmd:
        return (FWM, _int(cmd, "fwmark", 1, 2**32 - 1))
    proto = cmd.get("proto")
    if proto not in PROTOCOLS:
        raise ConfigError(f"bad proto {proto!r}: must be one of {', '.join(PROTOCOLS)}")
    return proto, _ipv4(cmd, "vip"), _int(cmd, "port", 1, 65535)


def _netmask(cmd: dict) -> str:
    value = cmd.get("netmask", "255.255.255.255")
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{value}").netmask)
    except (ValueError, TypeError):
        raise ConfigError(f"bad netmask {value!r}: must be a contiguous IPv4 netmask "
                          "such as 255.255.255.0") from None


def _match(cmd: dict, mark: int) -> list:
    """The keys of a fwmark service: [(proto, VIP, port)], at least one, none of them taken."""
    rows = cmd.get("match")
    if not isinstance(rows, list) or not rows:
        raise ConfigError(f"firewall-mark service {mark} needs the keys that carry the mark "
                          "(--match tcp:VIP:port[,...])")
    out = []
    for row in rows:
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            raise ConfigError(f"bad match {row!r}: expected [proto, VIP, port]")
        out.append(_service_key({"proto": row[0], "vip": row[1], "port": row[2]}))
    return list(dict.fromkeys(out))


def _persistence(cmd: dict, proto: str) -> tuple:
    """(-p seconds, -M netmask, -o): checked together, as they constrain each other."""
    persistent = _int(cmd, "persistent", 0, PERSISTENT_MAX) if "persistent" in cmd else 0
    netmask = _netmask(cmd)
    onepacket = bool(cmd.get("onepacket", False))
    if "netmask" in cmd and not persistent:
        raise ConfigError("a netmask (-M) only applies to a persistent service (-p)")
    if onepacket and proto not in ("udp", FWM):
        raise ConfigError("one-packet scheduling (-o) is only for UDP services")
    if onepacket and persistent:
        raise ConfigError("a one-packet (-o) service keeps no connections: it cannot be persistent (-p)")
    return persistent, netmask, onepacket


def _server_key(cmd: dict, vport: int) -> tuple:
    # port 0 only in a fwmark service (vport 0): "the port the packet was sent to"
    rport = _int(cmd, "rport", 0 if vport == 0 else 1, 65535) if "rport" in cmd else vport
    return _ipv4(cmd, "rip"), rport


def _scheduler(cmd: dict) -> str:
    name = cmd.get("scheduler") or DEFAULT_SCHEDULER
    try:
        schedulers.get(name)
    except (KeyError, TypeError):
        raise ConfigError(f"unknown scheduler {name!r} "
                          f"(available: {', '.join(schedulers.names())})", NO_SCHEDULER) from None
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
    # ENAT's agent restores the virtual port from what the real server answers on: same rule.
    if fwd in (ROUTE, TUNNEL, ENAT) and rport != svc.port:
        raise ConfigError(f"forwarding method {fwd!r} cannot map ports: real server port {rport} "
                          f"must equal the virtual port {svc.port}")


def _has_laddr(svc, fwd: str) -> None:
    if fwd == FULLNAT and not svc.laddrs:
        raise ConfigError(f"service {svc} has no local address for FULLNAT: "
                          "add one first with --add-laddr -z LIP")


def _weight(cmd: dict) -> int:
    return _int(cmd, "weight", 0, 65535) if "weight" in cmd else 1


def _thresholds(cmd: dict) -> tuple:
    """(-x, -y); absent is 0, as ipvsadm sends them (so -e without -x clears the limit). The
    kernel refuses a lower threshold above the upper one, even with no upper one (ERANGE)."""
    upper, lower = (_int(cmd, key, 0, THRESHOLD_MAX) if key in cmd else 0
                    for key in ("u_threshold", "l_threshold"))
    if lower > upper:
        raise ConfigError(f"the lower threshold (-y {lower}) is above the upper threshold "
                          f"(-x {upper})", OUT_OF_RANGE)
    return upper, lower


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


def _name(*key) -> str:
    return f"FWM {key[1]}" if key[0] == FWM else f"{key[0].upper()} {key[1]}:{key[2]}"


class Config:
    def __init__(self, stats=None):
        self.stats = stats  # fast-path counters, attached to every RealServer added
        self.services: list[Service] = []
        self.timeouts = dict(DEFAULT_TIMEOUTS)     # --set tcp tcpfin udp
        self.laddr_used = None    # the daemon's: local address -> its ports lent out now
        self.rates = None         # the daemon's estimator: key -> rates (lb.director.estimator)
        self.copy_on_write = False

    def copy(self) -> Config:
        """A copy to try a command on. Copy on write: it shares this one's services until a
        command names one, which it then replaces with a planning copy (Service.planning_copy)
        of its own, so whatever the command does, this configuration is untouched; a service
        still shared afterwards is one the command did not change."""
        twin = Config(stats=self.stats)
        twin.services = list(self.services)
        twin.timeouts = dict(self.timeouts)
        twin.laddr_used = self.laddr_used
        twin.rates = self.rates
        twin.copy_on_write = True
        return twin

    def find_service(self, *key) -> Service | None:
        """By (proto, VIP, port), or (FWM, mark) for a firewall-mark service."""
        for svc in self.services:
            if svc.key == key:
                return svc
        return None

    def _key_owner(self, key: tuple, other_than=None) -> Service | None:
        # A (proto, VIP, port) answers for one service only: a port service or a fwmark key.
        for svc in self.services:
            if svc is not other_than and (svc.key == key or key in svc.match):
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

    def _existing_service(self, cmd: dict, ipvsadm: str | None = NO_SUCH_SERVICE,
                          rc: int = 255) -> Service:
        key = _service_key(cmd)
        svc = self.find_service(*key)
        if svc is None:
            raise ConfigError(f"no such service {_name(*key)}", ipvsadm, rc)
        if self.copy_on_write:    # every handler that changes a service finds it here
            i = self.services.index(svc)
            svc = self.services[i] = svc.planning_copy()
        return svc

    def _existing_dest(self, svc: Service, cmd: dict) -> RealServer:
        rip, rport = _server_key(cmd, svc.port)
        dest = svc.find_dest(rip, rport)
        if dest is None:
            raise ConfigError(f"no such real server {rip}:{rport} in service {svc}", NO_SUCH_DEST)
        return dest

    # --- services -----------------------------------------------------------------------

    def _add_service(self, cmd: dict) -> str:
        key = _service_key(cmd)
        if self.find_service(*key) is not None:
            raise ConfigError(f"service {_name(*key)} already exists", SERVICE_EXISTS)
        name = _scheduler(cmd)
        flags = _sched_flags(cmd, name)
        persistent, netmask, onepacket = _persistence(cmd, key[0])
        match = self._checked_match(cmd, key)
        if key[0] == FWM:
            svc = Service(FWM, "0.0.0.0", 0, scheduler=name, sched_flags=flags, fwmark=key[1])
        else:
            svc = Service(*key, scheduler=name, sched_flags=flags)
        svc.match, svc.persistent, svc.netmask, svc.onepacket = match, persistent, netmask, onepacket
        self.services.append(svc)
        return ""

    def _checked_match(self, cmd: dict, key: tuple, svc=None) -> list:
        if key[0] != FWM:
            if "match" in cmd:
                raise ConfigError("--match only applies to a firewall-mark service (-f)")
            owner = self._key_owner(key)
            if owner is not None and owner is not svc:
                raise ConfigError(f"{_name(*key)} already belongs to service {owner}")
            return []
        match = _match(cmd, key[1])
        for k in match:
            owner = self._key_owner(k, other_than=svc)
            if owner is not None:
                raise ConfigError(f"{_name(*k)} already belongs to service {owner}")
        return match

    def _edit_service(self, cmd: dict) -> str:
        svc = self._existing_service(cmd)
        name = _scheduler(cmd)
        flags = _sched_flags(cmd, name)
        persistent, netmask, onepacket = _persistence(cmd, svc.proto)
        match = self._checked_match(cmd, svc.key, svc)   # refuses --match on a port service, as add
        if name != svc.scheduler:  # the kernel keeps the scheduler state if unchanged
            svc.set_scheduler(name)
        svc.sched_flags = flags    # schedulers read them per decision: no rebuild needed
        svc.match, svc.persistent, svc.netmask, svc.onepacket = match, persistent, netmask, onepacket
        return ""

    def _del_service(self, cmd: dict) -> str:
        self.services.remove(self._existing_service(cmd))
        return ""

    def _clear(self, cmd: dict) -> str:
        self.services = []
        return ""

    def _set_timeouts(self, cmd: dict) -> str:
        # ipvsadm --set tcp tcpfin udp: 0 leaves that one as it is.
        new = {k: _int(cmd, k, 0, TIMEOUT_MAX) for k in DEFAULT_TIMEOUTS}
        self.timeouts.update({k: v for k, v in new.items() if v})
        return ""

    def _named(self, cmd: dict, rc: int = 255) -> list:
        """The one service the command names (-t/-u/-f), or every service when it names none."""
        if "proto" in cmd or "fwmark" in cmd:
            return [self._existing_service(cmd, NO_SUCH_SERVICE, rc)]
        return self.services

    def _zero(self, cmd: dict) -> str:
        services = self._named(cmd)
        if self.stats is not None:
            for svc in services:
                for dest in svc.dests:
                    if dest.slot is not None:
                        self.stats.zero_dest(dest.slot)
        return ""

    # --- real servers -------------------------------------------------------------------

    def _add_server(self, cmd: dict) -> str:
        svc = self._existing_service(cmd, SERVICE_NOT_DEFINED)
        rip, rport = _server_key(cmd, svc.port)
        weight, (upper, lower) = _weight(cmd), _thresholds(cmd)   # ip_vs_add_dest's order
        if svc.find_dest(rip, rport) is not None:
            raise ConfigError(f"real server {rip}:{rport} already exists in service {svc}",
                              DEST_EXISTS)
        fwd = _fwd(cmd)
        _same_port(svc, rport, fwd)
        _has_laddr(svc, fwd)
        dest = RealServer(rip, rport, weight=weight, fwd=fwd, stats=self.stats,
                          u_threshold=upper, l_threshold=lower)
        svc.dests.append(dest)
        svc.dests_changed()
        return ""

    def _edit_server(self, cmd: dict) -> str:
        svc = self._existing_service(cmd, SERVICE_NOT_DEFINED)
        weight, (upper, lower) = _weight(cmd), _thresholds(cmd)   # ip_vs_edit_dest's order
        dest = self._existing_dest(svc, cmd)
        fwd = _fwd(cmd)
        _same_port(svc, dest.port, fwd)
        _has_laddr(svc, fwd)
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
        svc = self._existing_service(cmd, SERVICE_NOT_DEFINED)
        svc.dests.remove(self._existing_dest(svc, cmd))
        svc.dests_changed()
        return ""

    # --- listing ------------------------------------------------------------------------

    # --- FULLNAT local addresses (DPVS: --add-laddr / --del-laddr / --get-laddr) ----------

    def _add_laddr(self, cmd: dict) -> str:
        svc = self._existing_service(cmd, None)
        lip = _ipv4(cmd, "laddr")
        if lip in svc.laddrs:
            raise ConfigError(f"local address {lip} already exists in service {svc}")
        if any(lip == other.vip for other in self.services):
            raise ConfigError(f"local address {lip} is a virtual IP: it cannot be both")
        if len(svc.laddrs) >= 16:
            raise ConfigError(f"service {svc} has 16 local addresses already")
        svc.laddrs.append(lip)
        return ""

    def _del_laddr(self, cmd: dict) -> str:
        svc = self._existing_service(cmd, None)
        lip = _ipv4(cmd, "laddr")
        if lip not in svc.laddrs:
            raise ConfigError(f"no local address {lip} in service {svc}")
        if len(svc.laddrs) == 1 and any(d.fwd == FULLNAT for d in svc.dests):
            raise ConfigError(f"{lip} is the last local address of service {svc}, "
                              "which has FULLNAT servers")
        svc.laddrs.remove(lip)
        return ""

    def _get_laddr(self, cmd: dict) -> str:
        return listings.format_laddrs(self._named(cmd, 1), self.laddr_used)

    def _list(self, cmd: dict) -> str:
        """ipvsadm's CMD_LIST: -c, else the named service, else --timeout, else --daemon,
        else the whole table (lbadm has refused the combinations ipvsadm refuses)."""
        if cmd.get("connections"):
            conns = self.stats.conns() if self.stats is not None else []
            return listings.format_conns(conns, bool(cmd.get("persistent_conn")))
        if cmd.get("save"):
            return listings.format_rules(self.services)
        services = self._named(cmd, rc=1)          # list_service(): exit(1), not -1
        fmt = listings.Format.of(cmd)
        if services is self.services:
            if cmd.get("timeout"):
                return listings.format_timeout(*(self.timeouts[k] for k in DEFAULT_TIMEOUTS))
            if cmd.get("daemon"):
                return listings.format_daemon()
            return listings.format_list(services, fmt, self._live(fmt))
        return listings.format_one(services[0], fmt, self._live(fmt))

    def _live(self, fmt) -> listings.Live:
        live = listings.Live()
        if fmt.rate and self.rates is not None:
            live.rates = self.rates
        if fmt.persistent_conn and self.stats is not None:
            # PersistConn is the kernel's dest->persistconns: the persistence templates bound
            # to the server (ip_vs_bind_dest counts a template there, not in Active/InAct).
            held: dict = {}
            for c in self.stats.conns():
                if c["template"]:
                    held[c["dest_slot"]] = held.get(c["dest_slot"], 0) + 1
            live.persist = lambda dest: held.get(dest.slot, 0) if dest.slot is not None else 0
        return live

    _HANDLERS = {
        "add_service": _add_service, "edit_service": _edit_service,
        "del_service": _del_service, "clear": _clear,
        "add_server": _add_server, "edit_server": _edit_server,
        "del_server": _del_server, "list": _list, "set": _set_timeouts, "zero": _zero,
        "add_laddr": _add_laddr, "del_laddr": _del_laddr, "get_laddr": _get_laddr,
    }
