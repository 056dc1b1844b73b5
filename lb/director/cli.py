"""lbadm: ipvsadm-compatible front end that sends one command to lbd over its unix socket.

`parse(argv)` turns ipvsadm arguments into the JSON-able command dict of docs/internals.md;
`main()` sends it as {"cmd": ...} and prints the reply. The options and ipvsadm's rules of what
goes with what are in lb.director.options; the values are read here, in ipvsadm's order. Where
ipvsadm 1.31 refuses something, lbadm prints ipvsadm's words and exits with its status; where
lbd refuses what ipvsadm would take, the message starts with "lbadm:" and says why.
`lbadm top` is the live view (lb.director.top).
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys

from lb import schedulers
from lb.director import options, rules
from lb.director.ipvs_errors import NO_SCHEDULER
from lb.director.model import DEFAULT_SCHEDULER, THRESHOLD_MAX
from lb.director.options import UsageError, ipvsadm_error

DEFAULT_SOCKET = "/run/lbd/lbd.sock"
DEFAULT_FWD = "route"      # ipvsadm's default forwarding method is -g (direct routing)
REPLY_TIMEOUT = 30.0
MAX_TIMEOUT = 86400 * 31   # ipvsadm.c MAX_TIMEOUT: -p and --set take at most 31 days
PERSISTENT_TIMEOUT = 300   # IPVS_SVC_PERSISTENT_TIMEOUT: -p without a timeout
VERSION = "lbadm (lvs-py 0.1.0), speaking ipvsadm v1.31 2019/12/24 to lbd (IPVS v1.2.1)\n"

USAGE = """\
Usage:
  lbadm -A|-E -t|-u VIP:port [-s scheduler] [-b flags] [-p [timeout]] [-M netmask] [-o]
  lbadm -D -t|-u VIP:port
  lbadm -C
  lbadm -a|-e -t|-u VIP:port -r RIP[:port] [-g|-i|-m|-b|--enat] [-w weight] [-x upper] [-y lower]
  lbadm --add-laddr|--del-laddr -t|-u VIP:port -z LIP;  lbadm --get-laddr [-t|-u VIP:port]
  lbadm -d -t|-u VIP:port -r RIP[:port]
  lbadm -L|-l [-n] [-t|-u VIP:port|-f mark] [-c] [--stats|--rate|--thresholds|--persistent-conn
              |--tun-info] [--exact] [--nosort] [--timeout] [--daemon]
  lbadm -Z [-t|-u VIP:port|-f mark]
  lbadm --set tcp tcpfin udp
  lbadm -S [-n]                the table as ipvsadm rules;  lbadm -R < FILE  applies rules, all or none
  lbadm --reload               lbd re-reads its --config file and applies the difference
  lbadm --list-checks          the health checks: each server's checkers, its state, the quorum
  lbadm top [--interval S] [--iterations N]   a live view of services, servers, rates, drops
  a service may also be -f mark --match tcp:VIP:port[,...] (the keys that carry the mark)
Options:
  --tcp-service  -t VIP:port   --udp-service -u VIP:port
  --scheduler    -s name       %s (default wlc)
  --persistent   -p [timeout]  pin a client to its server (default 300 s)
  --netmask      -M netmask    which clients share one persistence template
  --ops          -o            one-packet scheduling (UDP)
  --sched-flags  -b flags      sh-fallback,sh-port (with -s sh), mh-fallback,mh-port (-s mh)
  --real-server  -r RIP[:port] port defaults to the virtual port
  --gatewaying   -g            direct routing (ipvsadm's default)
  --ipip         -i            tunnelling (--tun-type ipip, the only type)
  --masquerading -m            NAT
  --fullnat      -b            FULLNAT (with -a/-e): source NAT to a local address too, TOA
  --enat                       ENAT: from the VIP, replies by the real server's agent
  --weight       -w weight     0..65535, default 1
  --u-threshold  -x conns      OVERLOAD the server at this many connections (0: no limit)
  --l-threshold  -y conns      ... until below this many (0: below 3/4 of -x)
  --numeric      -n            numeric output (lbadm never resolves names)
  --exact        -X            unscaled numbers in --stats and --rate
  --socket PATH                lbd's socket (default %s)
Not for a userspace director, refused with the reason: --start-daemon/--stop-daemon (connection
sync), --pe (persistence engines), -6 and IPv6 addresses, --sctp-service, --tun-type gre|gue.
""" % (" ".join(schedulers.names()), DEFAULT_SOCKET)

# lbd's refusals of what ipvsadm takes but a userspace IPv4 TCP/UDP director cannot do
NO_SYNC = ("connection sync (--start-daemon/--stop-daemon) is not supported: lbd has no sync "
           "daemon, so a backup director cannot take over established connections")
NO_PE = ("persistence engines (--pe) are not supported: the fast path does not parse SIP "
         "Call-IDs, the one engine the kernel has")
NO_IPV6 = "IPv6 is not supported: lbd's fast path and tables are IPv4 only"
NO_SCTP = "SCTP services are not supported: lbd's fast path forwards TCP and UDP only"
ZERO_SERVICE_PORT = ("a service on every port of a VIP is not supported (the fast path finds "
                     "services by protocol, VIP and port): use -f MARK --match tcp:VIP:port,...")
ZERO_SERVER_PORT = "port 0 (the packet's own port) is only for servers of a firewall-mark service"
_SCHED_NAME = re.compile(r"[a-z][a-z0-9_]{0,14}\Z")  # kernel IP_VS_SCHEDNAME_MAXLEN is 16
_NUMBER = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+\Z")  # what strtol(s, &end, 10) takes whole


class Unreachable(Exception):
    """lbd could not be asked, or its answer could not be read."""


# --- values, as ipvsadm reads them ---------------------------------------------------------

def _number(text: str | None, low: int, high: int):
    """string_to_number(): a whole decimal (strtol: leading blanks, a sign) within range."""
    if text is None or not _NUMBER.match(text) or not low <= int(text) <= high:
        return None
    return int(text)


def _looks_ipv6(text: str) -> bool:
    return text.startswith("[") or text.count(":") > 1


def _addr(text: str, ipvsadm: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UsageError(f"bad address '{text}': must be a dotted IPv4 address", ipvsadm) from None


def _port(text: str, where: str, proto: str, ipvsadm: str) -> int:
    """A port number 0..65535, or a service name from /etc/services (as parse_service)."""
    number = _number(text, 0, 65535)
    if number is not None:
        return number
    if proto in ("tcp", "udp", "sctp") and re.fullmatch(r"[A-Za-z][A-Za-z0-9._+-]*", text):
        try:
            return socket.getservbyname(text, proto)
        except OSError:
            pass
    raise UsageError(f"bad port '{text}' in '{where}': must be a number 1..65535", ipvsadm)


def _address_port(text: str, proto: str, ipvsadm: str) -> tuple:
    """parse_service(): (IPv4 address, port or None when none was given)."""
    if _looks_ipv6(text):
        raise UsageError(NO_IPV6)
    addr, colon, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not addr or addr.isdigit():
        raise UsageError(f"bad address '{addr or text}': must be a dotted IPv4 address", ipvsadm)
    return _addr(addr, ipvsadm), (_port(port, text, proto, ipvsadm) if colon else None)


def _service(proto: str, text: str) -> dict:
    if proto == "fwm":
        mark = _number(text, 1, 2**32 - 1)
        if mark is None:
            raise UsageError(f"bad firewall mark '{text}': must be an integer 1..4294967295",
                             f"invalid fwmark value `{text}' specified")
        return {"fwmark": mark}
    vip, port = _address_port(text, proto, "illegal virtual server address[:port] specified")
    return {"proto": proto, "vip": vip, "port": port, "_text": text}


def _timeout(text: str, what: str, low: int) -> int:
    value = _number(text, low, MAX_TIMEOUT)
    if value is None:
        raise UsageError(f"bad {what} '{text}': must be a number of seconds {low}..{MAX_TIMEOUT}",
                         f"invalid timeout value `{text}' specified")
    return value


def _netmask(text: str) -> str:
    try:
        packed = ipaddress.IPv4Address(text)
    except ValueError:
        raise UsageError(f"bad netmask '{text}': must be a netmask such as 255.255.255.0",
                         "illegal virtual server persistent mask specified") from None
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{packed}").netmask)
    except ValueError:      # ipvsadm takes any mask; lbd's templates need a prefix
        raise UsageError(f"bad netmask '{text}': must be a contiguous netmask such as "
                         "255.255.255.0") from None


def _bounded(text: str, name: str, high: int, ipvsadm: str) -> int:
    value = _number(text, 0, high)
    if value is None:
        raise UsageError(f"bad {name} '{text}': must be an integer 0..{high}", ipvsadm)
    return value


def _sched_flags(text: str, scheduler: str) -> list:
    """parse_sched_flags(): every flag known and the chosen scheduler's (default wlc)."""
    given = [flag for flag in text.split(",") if flag]  # empty items skipped, as strtok does
    if not given:
        raise UsageError(f"bad scheduler flags '{text}': expected e.g. sh-fallback,sh-port")
    known = [flag for names in schedulers.SCHED_FLAGS.values() for flag in names]
    mine = schedulers.SCHED_FLAGS.get(scheduler, ())
    for flag in given:
        if re.fullmatch(r"flag-[123]", flag):
            raise UsageError(f"scheduler flag '{flag}' is not supported: lbd's schedulers "
                             f"read only their named flags ({', '.join(known)})")
        if flag not in known:
            raise UsageError(f"unknown scheduler flag '{flag}' (known: {', '.join(known)})",
                             f"invalid scheduler flag `{flag}'")
        if flag not in mine:
            raise UsageError(f"scheduler flag '{flag}' needs -s {flag.split('-')[0]} "
                             f"(the scheduler is {scheduler})", f"incompatible scheduler flag `{flag}'")
    return [flag for flag in mine if flag in given]


def _match(text: str) -> list:
    """--match proto:VIP:port[,...]: the keys a fwmark service answers on (lbd has no
    netfilter marks to read: it is told which traffic carries the mark)."""
    out = []
    for item in text.split(","):
        proto, _, rest = item.partition(":")
        if proto not in ("tcp", "udp"):
            raise UsageError(f"bad match '{item}': expected tcp:VIP:port or udp:VIP:port")
        vip, port = _address_port(rest, proto, None)
        if not port:
            raise UsageError(f"bad match '{item}': needs a port 1..65535")
        out.append([proto, vip, port])
    return out


def _scheduler(text: str) -> str:
    if not _SCHED_NAME.match(text):
        # ipvsadm passes any name to the kernel, which has no such scheduler (ENOENT)
        raise UsageError(f"bad scheduler name '{text}': expected a short name such as rr or wrr",
                         NO_SCHEDULER, 255)
    return text


# --- reading the options, in ipvsadm's order -------------------------------------------------

# Values ipvsadm reads while it scans (parse_options): refused there, in the order given.
def _read_values(sc: options.Scanned) -> dict:
    values = {}
    for key, (flag, const, arg) in sc.opts.items():
        if key == "service-address":
            values["service"] = _service(const, arg)
        elif key == "ipv6":       # ipvsadm: -6 only after -f (an IPv6 fwmark service)
            if "fwmark" not in values.get("service", {}):
                raise UsageError("-6 used before -f", "-6 used before -f\n")
            raise UsageError(NO_IPV6)
        elif key == "persistent":
            values["persistent"] = _timeout(arg, "persistence timeout", 1) if arg is not None \
                else PERSISTENT_TIMEOUT
        elif key == "netmask":
            values["netmask"] = _netmask(arg)
        elif key == "real-server":
            proto = values.get("service", {}).get("proto", "tcp")
            values["server"] = _address_port(arg, proto, "illegal real server address[:port] specified")
        elif key in _BOUNDED:
            values[key] = _bounded(arg, *_BOUNDED[key])
        elif key in _DAEMON_VALUES:
            _DAEMON_VALUES[key](arg)
        elif key == "tun-type" and arg not in ("ipip", "gue", "gre"):
            raise UsageError(f"unknown tunnel type '{arg}' (ipvsadm knows ipip, gue, gre)",
                             "illegal tunnel type specified")
        elif key == "tun-port" and _number(arg, 1, 65535) is None:
            raise ipvsadm_error("illegal tunnel port specified")
    return values


_BOUNDED = {"weight": ("weight", 65535, "illegal weight specified"),
            "u-threshold": ("u-threshold", THRESHOLD_MAX, "illegal u_threshold specified"),
            "l-threshold": ("l-threshold", THRESHOLD_MAX, "illegal l_threshold specified")}


def _range_check(low, high, message):
    def check(arg):
        if _number(arg, low, high) is None:
            raise ipvsadm_error(message)
    return check


def _mcast_group(arg):
    try:
        group = ipaddress.ip_address(arg)
    except ValueError:
        group = None
    family = "IPv6" if ":" in arg else "IPv4"
    if group is None or not group.is_multicast:
        raise ipvsadm_error(f"invalid {family} mcast-group `{arg}'")


_DAEMON_VALUES = {"syncid": _range_check(0, 255, "illegal syncid specified"),
                  "mcast-port": _range_check(1, 65535, "illegal mcast-port specified"),
                  "mcast-ttl": _range_check(1, 255, "illegal mcast-ttl specified"),
                  "sync-maxlen": _range_check(1, 65535 - 20 - 8, "illegal sync-maxlen specified"),
                  "mcast-group": _mcast_group}


def _daemon_state(op: str, arg: str) -> None:
    if arg not in ("master", "backup"):
        raise ipvsadm_error("illegal start-daemon parameter specified" if op == "start_daemon"
                            else "illegal start_daemon specified")


def _leftovers(sc: options.Scanned) -> list:
    """--set's three timeouts from the words left over; any other word is refused."""
    rest = list(sc.rest)
    timeouts = []
    if sc.op == "set":
        if len(rest) < 3:
            raise UsageError("--set needs 3 timeouts: tcp tcpfin udp",
                             "--set option requires 3 timeout values")
        timeouts = [_timeout(t, f"{what} timeout", 0) for t, what in
                    zip(rest[:3], ("tcp", "tcpfin", "udp"))]
        rest = rest[3:]
    if rest:
        raise UsageError(f"unexpected argument '{rest[0]}'", f"unexpected argument {rest[0]}")
    return timeouts


# --- what lbd cannot do, and the checks after generic_opt_check --------------------------------

def _refuse_inapplicable(sc: options.Scanned, values: dict) -> None:
    if sc.op in ("start_daemon", "stop_daemon"):
        raise UsageError(NO_SYNC)
    if "pe" in sc.opts:
        raise UsageError(NO_PE)
    if values.get("service", {}).get("proto") == "sctp":
        raise UsageError(NO_SCTP)


def _check_service(op: str, values: dict) -> None:
    svc = values.get("service", {})
    if "fwmark" in svc or not svc:
        return
    if not svc["port"]:
        if op in ("add_service", "edit_service") and "persistent" not in values:
            raise ipvsadm_error("Zero port specified for non-persistent service")
        raise UsageError(f"bad port '0' in '{svc['_text']}': {ZERO_SERVICE_PORT}")


def _fwd(sc: options.Scanned) -> str:
    return sc.opts["forwarding-method"][1] if "forwarding-method" in sc.opts else DEFAULT_FWD


def _server(sc: options.Scanned, values: dict) -> dict:
    """The real server: port defaults to the virtual one; DR/TUN/ENAT cannot change it."""
    rip, rport = values["server"]
    svc = values["service"]
    vport = svc.get("port", 0)            # a fwmark service has none: servers default to 0
    if rport is None:
        rport = vport
    elif rport == 0 and vport != 0:
        raise UsageError(f"bad port '0' in '{sc.opts['real-server'][2]}': {ZERO_SERVER_PORT}")
    fwd = _fwd(sc) if sc.op != "del_server" else None
    if fwd in ("route", "tunnel", "enat") and rport != vport:
        # ipvsadm silently forces the virtual port here; a changed port is refused instead, so
        # that a typo cannot send traffic to a port the real server does not serve.
        raise UsageError(f"forwarding method {fwd!r} cannot map ports: real server port {rport} "
                         f"must equal the virtual port {vport}")
    return {"rip": rip, "rport": rport}


def _check_tunnel(sc: options.Scanned) -> None:
    given, fwd = set(sc.opts), _fwd(sc)
    options.tunnel_fwd_check(given, fwd)
    tun_type = sc.opts.get("tun-type", (None, None, "ipip"))[2]
    if tun_type != "ipip":
        # GRE and GUE tunnels would need a decapsulator for them on the real servers
        raise UsageError(f"tunnel type '{tun_type}' is not supported: lbd tunnels are IPIP only")
    options.tunnel_opt_check(given)


# --- the command dict ------------------------------------------------------------------------

_LIST_KEYS = {"connection": "connections", "stats": "stats", "rate": "rate", "exact": "exact",
              "timeout": "timeout", "daemon": "daemon", "thresholds": "thresholds",
              "persistent-conn": "persistent_conn", "nosort": "nosort", "tun-info": "tun_info"}


def _service_fields(values: dict) -> dict:
    return {k: v for k, v in values.get("service", {}).items() if not k.startswith("_")}


def _build(sc: options.Scanned, values: dict, timeouts: list, flags: list | None) -> dict:
    op, opts = sc.op, sc.opts
    if op == "save":                # ipvsadm -S: the table as rules, always numeric here
        return {"op": "list", "save": True}
    cmd = {"op": op, **_service_fields(values)}
    if op in ("add_service", "edit_service"):
        cmd["scheduler"] = values["scheduler"]
        if flags is not None:
            cmd["sched_flags"] = flags
        if "persistent" in values:
            cmd["persistent"] = values["persistent"]
        if "netmask" in values:
            cmd["netmask"] = values["netmask"]
        if "ops" in opts:
            cmd["onepacket"] = True
        if "match" in opts:
            cmd["match"] = _match(opts["match"][2])
    if "server" in values:
        cmd.update(_server(sc, values))
        if op != "del_server":
            cmd["fwd"] = _fwd(sc)
            cmd["weight"] = values.get("weight", 1)
            for key in ("u-threshold", "l-threshold"):
                if key in values:
                    cmd[key.replace("-", "_")] = values[key]
    if op == "set":
        cmd.update(zip(("tcp", "tcpfin", "udp"), timeouts))
    if op in ("add_laddr", "del_laddr"):
        cmd["laddr"] = _addr(opts["laddr"][2], None)
    if op == "list":
        cmd["numeric"] = "numeric" in opts
        cmd.update({key: True for name, key in _LIST_KEYS.items() if name in opts})
    return cmd


def parse_with_socket(argv) -> tuple[dict, str]:
    """Like parse(), also returning the socket path chosen with --socket."""
    sc = options.scan(argv)
    path = sc.opts.pop("socket", (None, None, DEFAULT_SOCKET))[2]
    if sc.op in ("help", "version"):
        return {"op": sc.op}, path
    if sc.op is None:
        if sc.opts.keys() - {"numeric"} or sc.rest:
            raise UsageError("no command given: use one of -A -E -D -a -e -d -C -L -S -R -Z",
                             "Try `lbadm -h' or 'lbadm --help' for more information.", 255)
        sc = sc._replace(op="list", op_flag="-L")   # a bare `ipvsadm` lists the table
    values = _read_values(sc)
    if sc.op in ("start_daemon", "stop_daemon"):
        _daemon_state(sc.op, sc.op_arg)
    timeouts = _leftovers(sc)
    if sc.op in ("add_service", "edit_service"):
        given = sc.opts.get("scheduler")
        values["scheduler"] = _scheduler(given[2]) if given else DEFAULT_SCHEDULER
    flags = None
    if "sched-flags" in sc.opts:    # ipvsadm checks them against the scheduler named, or wlc
        named = sc.opts.get("scheduler", (None, None, DEFAULT_SCHEDULER))[2]
        flags = _sched_flags(sc.opts["sched-flags"][2], named)
    options.check(sc.op, sc.op_flag, sc.opts)
    _refuse_inapplicable(sc, values)
    _check_service(sc.op, values)
    if sc.op in ("add_service", "edit_service") and "ops" in sc.opts \
            and values.get("service", {}).get("proto") == "tcp":
        raise ipvsadm_error("One-Packet Scheduling is only for UDP virtual services")
    if sc.op in ("add_server", "edit_server"):
        _check_tunnel(sc)
    if sc.op == "list":
        options.list_conflicts(set(sc.opts))
    return _build(sc, values, timeouts, flags), path


def parse(argv) -> dict:
    """ipvsadm-style argv -> command dict; raises UsageError naming the problem."""
    return parse_with_socket(argv)[0]


# --- talking to lbd -----------------------------------------------------------------------

def request(path: str, cmd: dict, timeout: float = REPLY_TIMEOUT) -> dict:
    """Send one command to lbd and return its reply {"rc", "out", "err"}."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
            line = sock.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError):
        raise Unreachable(f"cannot reach lbd at {path} (is lbd running?)") from None
    except PermissionError:
        raise Unreachable(f"permission denied on {path} (lbadm must run as root)") from None
    except socket.timeout:
        raise Unreachable(f"no reply from lbd at {path} within {timeout:g}s") from None
    except OSError as exc:
        raise Unreachable(f"cannot talk to lbd at {path}: {exc.strerror or exc}") from None
    return _reply(line, path)


def _reply(line: bytes, path: str) -> dict:
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or type(reply.get("rc")) is not int:
        raise Unreachable(f"bad reply from lbd at {path}")
    return reply


def _write(stream, text) -> None:
    if text:
        text = str(text)
        stream.write(text if text.endswith("\n") else text + "\n")


def _usage_error(exc: UsageError) -> int:
    if exc.ipvsadm is not None:
        sys.stderr.write(exc.ipvsadm + "\n")        # ipvsadm's fail(): the message, a newline
        return exc.rc
    print(f"lbadm: {exc}", file=sys.stderr)
    return exc.rc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["top"]:
        from lb.director import top             # rich is only needed for the live view
        return top.main(argv[1:])
    try:
        cmd, path = parse_with_socket(argv)
    except UsageError as exc:
        return _usage_error(exc)
    if cmd["op"] in ("help", "version"):
        sys.stdout.write(USAGE if cmd["op"] == "help" else VERSION)
        return 0
    if cmd["op"] == "restore":      # ipvsadm -R: rules on stdin, applied whole or not at all
        try:
            commands, lines = rules.parse(sys.stdin.read(), parse)
        except rules.RulesError as exc:
            print(f"lbadm: {exc}", file=sys.stderr)
            return 2
        cmd = {"op": "batch", "commands": commands, "lines": lines}
    try:
        reply = request(path, cmd)
    except Unreachable as exc:
        print(f"lbadm: {exc}", file=sys.stderr)
        return 1
    _write(sys.stdout, reply.get("out"))
    _write(sys.stderr, reply.get("err"))
    return reply["rc"]


if __name__ == "__main__":
    sys.exit(main())
