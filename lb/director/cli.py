"""lbadm: ipvsadm-compatible front end that sends one command to lbd over its unix socket.

`parse(argv)` turns ipvsadm arguments into the JSON-able command dict of docs/internals.md;
`main()` sends it as {"cmd": ...} and prints the reply. Like ipvsadm (popt), options may come
in any order, short options bundle (-Ln) and take their argument attached or separate
(-w3, -w 3), long ones as --weight=3 or --weight 3.
"""
from __future__ import annotations

import ipaddress
import json
import re
import socket
import sys
from typing import NamedTuple

from lb import modes, schedulers
from lb.director import rules
from lb.director.model import DEFAULT_SCHEDULER, THRESHOLD_MAX

DEFAULT_SOCKET = "/run/lbd/lbd.sock"
DEFAULT_FWD = "route"      # ipvsadm's default forwarding method is -g (direct routing)
REPLY_TIMEOUT = 30.0

USAGE = """\
Usage:
  lbadm -A|-E -t|-u VIP:port [-s scheduler] [-b flags] [-p [timeout]] [-M netmask] [-o]
  lbadm -D -t|-u VIP:port
  lbadm -C
  lbadm -a|-e -t|-u VIP:port -r RIP[:port] [-g|-i|-m|-b|--enat] [-w weight] [-x upper] [-y lower]
  lbadm --add-laddr|--del-laddr -t|-u VIP:port -z LIP;  lbadm --get-laddr [-t|-u VIP:port]
  lbadm -d -t|-u VIP:port -r RIP[:port]
  lbadm -L|-l [-n] [-t|-u VIP:port|-f mark] [-c] [--stats [--exact]] [--timeout]
  lbadm -Z [-t|-u VIP:port|-f mark]
  lbadm --set tcp tcpfin udp
  lbadm -S [-n]                the table as ipvsadm rules;  lbadm -R < FILE  applies rules, all or none
  lbadm --reload               lbd re-reads its --config file and applies the difference
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
  --ipip         -i            tunnelling
  --masquerading -m            NAT
  --fullnat      -b            FULLNAT (with -a/-e): source NAT to a local address too, TOA
  --enat                       ENAT: from the VIP, replies by the real server's agent
  --weight       -w weight     0..65535, default 1
  --u-threshold  -x conns      OVERLOAD the server at this many connections (0: no limit)
  --l-threshold  -y conns      ... until below this many (0: below 3/4 of -x)
  --numeric      -n            numeric output (lbadm never resolves names)
  --socket PATH                lbd's socket (default %s)
""" % (" ".join(schedulers.names()), DEFAULT_SOCKET)


class UsageError(ValueError):
    """Bad command line; the message is one line naming the problem."""


class Unreachable(Exception):
    """lbd could not be asked, or its answer could not be read."""


class _Opt(NamedTuple):
    key: str            # "op" for commands, else the option it sets
    value: object       # the command name, or the constant a flag stands for
    takes_arg: object = False   # True, OPTIONAL (-p [timeout]) or a count of arguments (--set)


OPTIONAL = "optional"


_TABLE = [  # (short, long, spec)
    ("-A", "--add-service", _Opt("op", "add_service")),
    ("-E", "--edit-service", _Opt("op", "edit_service")),
    ("-D", "--delete-service", _Opt("op", "del_service")),
    ("-a", "--add-server", _Opt("op", "add_server")),
    ("-e", "--edit-server", _Opt("op", "edit_server")),
    ("-d", "--delete-server", _Opt("op", "del_server")),
    ("-C", "--clear", _Opt("op", "clear")),
    ("-Z", "--zero", _Opt("op", "zero")),
    (None, "--set", _Opt("op", "set", 3)),
    ("-L", "--list", _Opt("op", "list")),
    ("-S", "--save", _Opt("op", "save")),
    ("-R", "--restore", _Opt("op", "restore")),
    (None, "--reload", _Opt("op", "reload")),
    (None, "--tun-type", _Opt("tun_type", None, True)),
    ("-l", None, _Opt("op", "list")),
    ("-h", "--help", _Opt("op", "help")),
    ("-t", "--tcp-service", _Opt("service", "tcp", True)),
    ("-u", "--udp-service", _Opt("service", "udp", True)),
    ("-f", "--fwmark-service", _Opt("service", "fwm", True)),
    (None, "--match", _Opt("match", None, True)),
    ("-p", "--persistent", _Opt("persistent", None, OPTIONAL)),
    ("-M", "--netmask", _Opt("netmask", None, True)),
    ("-o", "--ops", _Opt("onepacket", True)),
    ("-s", "--scheduler", _Opt("scheduler", None, True)),
    ("-r", "--real-server", _Opt("server", None, True)),
    # -m -g -i --fullnat --enat: each mode's own flags (--fullnat is also -b with -a/-e)
    *((*modes.get(name).lbadm_flags, _Opt("fwd", name)) for name in modes.names()),
    (None, "--add-laddr", _Opt("op", "add_laddr")),
    (None, "--del-laddr", _Opt("op", "del_laddr")),
    (None, "--get-laddr", _Opt("op", "get_laddr")),
    ("-z", "--laddr", _Opt("laddr", None, True)),
    ("-w", "--weight", _Opt("weight", None, True)),
    ("-x", "--u-threshold", _Opt("u_threshold", None, True)),
    ("-y", "--l-threshold", _Opt("l_threshold", None, True)),
    ("-b", "--sched-flags", _Opt("sched_flags", None, True)),
    ("-n", "--numeric", _Opt("numeric", True)),
    ("-c", "--connection", _Opt("connections", True)),
    (None, "--stats", _Opt("stats", True)),
    (None, "--exact", _Opt("exact", True)),
    (None, "--timeout", _Opt("timeout", True)),
    (None, "--socket", _Opt("socket", None, True)),
]
_SHORT = {short: spec for short, _, spec in _TABLE if short}
_LONG = {long: spec for _, long, spec in _TABLE if long}

# op -> (options it needs, options it may take); anything else is refused.
_SERVICE_OPTS = {"scheduler", "sched_flags", "persistent", "netmask", "onepacket", "match"}
_ALLOWED = {
    "add_service": ({"service"}, _SERVICE_OPTS),
    "edit_service": ({"service"}, _SERVICE_OPTS),
    "del_service": ({"service"}, set()),
    "add_server": ({"service", "server"}, {"fwd", "weight", "u_threshold", "l_threshold",
                                           "tun_type"}),
    "edit_server": ({"service", "server"}, {"fwd", "weight", "u_threshold", "l_threshold",
                                            "tun_type"}),
    "del_server": ({"service", "server"}, set()),
    "clear": (set(), set()),
    "zero": (set(), {"service"}),
    "set": (set(), set()),
    "list": (set(), {"service", "numeric", "connections", "stats", "exact", "timeout"}),
    "add_laddr": ({"service", "laddr"}, set()),
    "del_laddr": ({"service", "laddr"}, set()),
    "get_laddr": (set(), {"service", "numeric"}),
    "save": (set(), {"numeric"}),
    "restore": (set(), set()),
    "reload": (set(), set()),
}
_NEEDS = {"service": "a virtual service: -t|-u VIP:port", "server": "a real server: -r RIP[:port]",
          "laddr": "a local address: -z LIP"}
# -b is --sched-flags for services (ipvsadm) and --fullnat for real servers (DPVS).
_SERVER_OPS = {"-a", "-e", "--add-server", "--edit-server"}
_FULLNAT_B = _Opt("fwd", "fullnat")
_SCHED_NAME = re.compile(r"[a-z][a-z0-9_]{0,14}\Z")  # kernel IP_VS_SCHEDNAME_MAXLEN is 16


# --- scanning argv ----------------------------------------------------------------------

def _scan(argv):
    """Yield (flag as typed, spec, argument or None) for every option in argv."""
    args = list(argv)
    server_cmd = any(a in _SERVER_OPS or (a[:1] == "-" and a[1:2] in ("a", "e")) for a in args)
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.startswith("--"):
            name, eq, arg = tok.partition("=")
            spec = _LONG.get(name)
            if spec is None:
                raise UsageError(f"unknown option '{name}'")
            if eq and not spec.takes_arg:
                raise UsageError(f"option {name} takes no argument")
            if not eq:
                arg, i = _take(spec, args, i, name)
            yield name, spec, (arg if spec.takes_arg else None)
        elif tok.startswith("-") and len(tok) > 1:
            for j in range(1, len(tok)):
                flag = "-" + tok[j]
                spec = _FULLNAT_B if (flag == "-b" and server_cmd) else _SHORT.get(flag)
                if spec is None:
                    raise UsageError(f"unknown option '{flag}'")
                if spec.takes_arg:
                    arg = tok[j + 1:]
                    if not arg:
                        arg, i = _take(spec, args, i, flag)
                    yield flag, spec, arg
                    break
                yield flag, spec, None
        else:
            raise UsageError(f"unexpected argument '{tok}'")


def _take(spec, args, i, flag):
    """The argument(s) of an option given apart from it (-w 3, --set 900 120 300, -p [600])."""
    if spec.takes_arg == OPTIONAL:
        if i < len(args) and args[i].isdigit():
            return args[i], i + 1
        return None, i
    if spec.takes_arg is True:
        return _next_arg(args, i, flag)
    if i + spec.takes_arg > len(args):
        raise UsageError(f"option {flag} needs {spec.takes_arg} arguments")
    return args[i:i + spec.takes_arg], i + spec.takes_arg


def _next_arg(args, i, flag):
    if i >= len(args):
        raise UsageError(f"option {flag} needs an argument")
    return args[i], i + 1


def _collect(argv):
    """Split argv into (op, the flag that gave it, {key: (flag, const, arg)})."""
    op = op_flag = None
    opts = {}
    for flag, spec, arg in _scan(argv):
        if spec.key == "op":
            if op is not None:
                raise UsageError(f"two commands given: {op_flag} and {flag} (give one)")
            op, op_flag = spec.value, flag
            if arg is not None:
                opts["op_args"] = (flag, None, arg)
        elif spec.key in opts:
            first = opts[spec.key][0]
            if first == flag:
                raise UsageError(f"option {flag} given twice (give one)")
            raise UsageError(f"{first} and {flag} both given (give one)")
        else:
            opts[spec.key] = (flag, spec.value, arg)
    return op, op_flag, opts


def _check_allowed(op, op_flag, opts):
    needed, optional = _ALLOWED[op]
    optional = optional | {"op_args"}
    for key in sorted(needed - opts.keys()):
        raise UsageError(f"{op_flag} needs {_NEEDS[key]}")
    for key, (flag, _, _) in opts.items():
        if key not in needed | optional:
            raise UsageError(f"option {flag} cannot be used with {op_flag}")


# --- values -------------------------------------------------------------------------------

def _addr(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise UsageError(f"bad address '{text}': must be a dotted IPv4 address") from None


ZERO_SERVICE_PORT = ("a service on every port of a VIP is not supported (the fast path finds "
                     "services by protocol, VIP and port): use -f MARK --match tcp:VIP:port,...")
ZERO_SERVER_PORT = "port 0 (the packet's own port) is only for servers of a firewall-mark service"


def _port(text: str, where: str, zero: str | None = ZERO_SERVICE_PORT) -> int:
    """A port 1..65535; 0 only where `zero` is None, else refused with `zero` as the reason."""
    if not (text.isascii() and text.isdigit()) or not 0 <= int(text) <= 65535:
        raise UsageError(f"bad port '{text}' in '{where}': must be a number 1..65535")
    if int(text) == 0 and zero is not None:
        raise UsageError(f"bad port '0' in '{where}': {zero}")
    return int(text)


def _service(flag: str, proto: str, text: str) -> dict:
    if proto == "fwm":
        if not re.fullmatch(r"[0-9]+", text) or not 1 <= int(text) <= 2**32 - 1:
            raise UsageError(f"bad firewall mark '{text}': must be an integer 1..4294967295")
        return {"fwmark": int(text)}
    addr, colon, port = text.partition(":")
    if not colon:
        raise UsageError(f"bad service address '{text}' for {flag}: needs a port (VIP:port)")
    return {"proto": proto, "vip": _addr(addr), "port": _port(port, text)}


def _server(text: str, vport: int, fwd: str | None) -> dict:
    """-r RIP[:port]; fwd is None for -d, which must name the server exactly as added."""
    addr, colon, port = text.partition(":")
    # In a fwmark service (vport 0), port 0 is "the port the packet was sent to".
    rport = _port(port, text, None if vport == 0 else ZERO_SERVER_PORT) if colon else vport
    if fwd in ("route", "tunnel", "enat") and rport != vport:
        # ipvsadm silently forces the virtual port here; a changed port is refused instead, so
        # that a typo cannot send traffic to a port the real server does not serve.
        raise UsageError(f"forwarding method {fwd!r} cannot map ports: real server port {rport} "
                         f"must equal the virtual port {vport}")
    return {"rip": _addr(addr), "rport": rport}


def _weight(text: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text) or not 0 <= int(text) <= 65535:
        raise UsageError(f"bad weight '{text}': must be an integer 0..65535")
    return int(text)


def _threshold(text: str, name: str) -> int:
    if not re.fullmatch(r"-?[0-9]+", text) or not 0 <= int(text) <= THRESHOLD_MAX:
        raise UsageError(f"bad {name} '{text}': must be an integer 0..{THRESHOLD_MAX}")
    return int(text)


def _sched_flags(text: str, scheduler: str) -> list:
    """-b flag[,flag]: ipvsadm refuses unknown flags and flags of another scheduler."""
    given = [flag for flag in text.split(",") if flag]  # empty items skipped, as strtok does
    if not given:
        raise UsageError(f"bad scheduler flags '{text}': expected e.g. sh-fallback,sh-port")
    known = [flag for names in schedulers.SCHED_FLAGS.values() for flag in names]
    mine = schedulers.SCHED_FLAGS.get(scheduler, ())
    for flag in given:
        if flag not in known:
            raise UsageError(f"unknown scheduler flag '{flag}' (known: {', '.join(known)})")
        if flag not in mine:
            raise UsageError(f"scheduler flag '{flag}' needs -s {flag.split('-')[0]} "
                             f"(the scheduler is {scheduler})")
    return [flag for flag in mine if flag in given]


def _seconds(text: str, what: str, low: int = 0) -> int:
    if not re.fullmatch(r"[0-9]+", text) or not low <= int(text) <= 2**31 - 1:
        raise UsageError(f"bad {what} '{text}': must be a number of seconds {low}..{2**31 - 1}")
    return int(text)


def _netmask(text: str) -> str:
    try:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{text}").netmask)
    except ValueError:
        raise UsageError(f"bad netmask '{text}': must be a contiguous netmask such as 255.255.255.0") from None


def _match(text: str) -> list:
    """--match proto:VIP:port[,...]: the keys a fwmark service answers on (lbd has no
    netfilter marks to read: it is told which traffic carries the mark)."""
    out = []
    for item in text.split(","):
        proto, _, rest = item.partition(":")
        if proto not in ("tcp", "udp"):
            raise UsageError(f"bad match '{item}': expected tcp:VIP:port or udp:VIP:port")
        svc = _service("--match", proto, rest)
        out.append([svc["proto"], svc["vip"], svc["port"]])
    return out


def _scheduler(text: str) -> str:
    if not _SCHED_NAME.match(text):
        raise UsageError(f"bad scheduler name '{text}': expected a short name such as rr or wrr")
    return text


def _tun_type(text: str, fwd: str) -> None:
    # ipvsadm 1.31 -S writes "--tun-type ipip" for every tunnel server: IPIP is ours; GRE and
    # GUE tunnels would need a decapsulator for them on the real servers, which lbd has not.
    if fwd != "tunnel":
        raise UsageError("--tun-type only applies to a tunnel (-i) server")
    if text != "ipip":
        raise UsageError(f"tunnel type '{text}' is not supported: lbd tunnels are IPIP only")


def _build(op: str, opts: dict) -> dict:
    if op == "save":                # ipvsadm -S: the table as rules, always numeric here
        return {"op": "list", "save": True}
    cmd = {"op": op}
    if "service" in opts:
        cmd.update(_service(*opts["service"]))
    if op in ("add_service", "edit_service"):
        given = opts.get("scheduler")
        cmd["scheduler"] = _scheduler(given[2]) if given else DEFAULT_SCHEDULER
        if "sched_flags" in opts:
            cmd["sched_flags"] = _sched_flags(opts["sched_flags"][2], cmd["scheduler"])
    vport = cmd.get("port", 0)     # a fwmark service has none: servers default to port 0
    if op == "del_server":
        cmd.update(_server(opts["server"][2], vport, None))
    elif "server" in opts:
        fwd = opts["fwd"][1] if "fwd" in opts else DEFAULT_FWD
        cmd.update(_server(opts["server"][2], vport, fwd))
        cmd["fwd"] = fwd
        if "tun_type" in opts:
            _tun_type(opts["tun_type"][2], fwd)
        cmd["weight"] = _weight(opts["weight"][2]) if "weight" in opts else 1
        for key, name in (("u_threshold", "u-threshold"), ("l_threshold", "l-threshold")):
            if key in opts:
                cmd[key] = _threshold(opts[key][2], name)
    if op in ("add_service", "edit_service"):
        if "persistent" in opts:
            given = opts["persistent"][2]
            cmd["persistent"] = _seconds(given, "persistence timeout", 1) if given else 300
        if "netmask" in opts:
            cmd["netmask"] = _netmask(opts["netmask"][2])
        if "onepacket" in opts:
            cmd["onepacket"] = True
        if "match" in opts:
            cmd["match"] = _match(opts["match"][2])
    if op == "set":
        tcp, tcpfin, udp = opts["op_args"][2]
        cmd.update(tcp=_seconds(tcp, "tcp timeout"), tcpfin=_seconds(tcpfin, "tcpfin timeout"),
                   udp=_seconds(udp, "udp timeout"))
    if op in ("add_laddr", "del_laddr"):
        cmd["laddr"] = _addr(opts["laddr"][2])
    if op == "list":
        cmd["numeric"] = "numeric" in opts
        for key in ("connections", "stats", "exact", "timeout"):
            if key in opts:
                cmd[key] = True
    return cmd


def parse_with_socket(argv) -> tuple[dict, str]:
    """Like parse(), also returning the socket path chosen with --socket."""
    op, op_flag, opts = _collect(argv)
    path = opts.pop("socket", (None, None, DEFAULT_SOCKET))[2]
    if op == "help":
        return {"op": "help"}, path
    if op is None:
        if opts.keys() - {"numeric"}:
            raise UsageError("no command given: use one of -A -E -D -a -e -d -C -L")
        op, op_flag = "list", "-L"  # a bare `ipvsadm` lists the table
    _check_allowed(op, op_flag, opts)
    return _build(op, opts), path


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cmd, path = parse_with_socket(argv)
    except UsageError as exc:
        print(f"lbadm: {exc}", file=sys.stderr)
        return 2
    if cmd["op"] == "help":
        sys.stdout.write(USAGE)
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
