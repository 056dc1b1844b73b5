"""lbadm's options as ipvsadm 1.31 (popt) reads them, and ipvsadm's checks of what goes with what.

`scan(argv)` finds the command and the options, refusing what popt refuses (an unknown option,
a missing argument: exit 255) and what ipvsadm's set_command / set_option refuse (two commands,
an option twice: exit 2). `check(...)` then applies ipvsadm.c's commands_v_options table:
'+' compulsory, 'x' illegal, '1' at most one of them, ' ' optional, with ipvsadm's messages.

Options may come in any order (ipvsadm wants the command first; lbadm takes it anywhere), short
ones bundle (-Ln), arguments attach or not (-w3, -w 3, --weight=3), -p takes the next word as
its timeout unless it starts with '-', and words that are no option's argument are left over:
--set takes its three timeouts from them, and any other is "unexpected argument".
"""
from __future__ import annotations

from typing import NamedTuple

from lb import modes


class UsageError(ValueError):
    """A command line lbadm refuses. str() is one line naming the problem (what a rule file
    reports with its line number); `ipvsadm` is what ipvsadm 1.31 prints for the same mistake,
    when it has a message for it, and `rc` the exit status (2 for ipvsadm's fail(2, ...), 255
    for popt's errors and the kernel's refusals)."""

    def __init__(self, message: str, ipvsadm: str | None = None, rc: int = 2):
        super().__init__(message)
        self.ipvsadm = ipvsadm
        self.rc = rc


def ipvsadm_error(message: str, rc: int = 2) -> UsageError:
    """A refusal worded as ipvsadm words it, for a single command and in a rule file alike."""
    return UsageError(message, message, rc)


# ipvsadm.c's commands (cmdnames[]) and options (optnames[]), in its order: the table's rows
# and columns.
CMDNAMES = ("add-service", "edit-service", "delete-service", "flush", "list", "add-server",
            "delete-server", "edit-server", "set", "start-daemon", "stop-daemon", "restore",
            "save", "zero")
OPTNAMES = ("numeric", "connection", "service-address", "scheduler", "persistent", "netmask",
            "real-server", "forwarding-method", "weight", "u-threshold", "l-threshold",
            "mcast-interface", "timeout", "daemon", "stats", "rate", "thresholds",
            "persistent-conn", "nosort", "syncid", "exact", "ops", "pe", "sched-flags",
            "mcast-group", "mcast-port", "mcast-ttl", "sync-maxlen", "tun-info", "tun-type",
            "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
# commands_v_options: one row per command, one column per option above.
#            -n -c svc -s -p -M -r fwd -w -x -y mc tot dmn st rt thr pc srt sid ex ops pe -b grp port ttl size tinf type tprt nocs csum remc
TABLE = (
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",   # add-service
    "xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",   # edit-service
    "xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # delete-service
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # flush
    " 11xxxxxxxxx11       xxxxxxx xxxxx",   # list
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",   # add-server
    "xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",   # delete-server
    "xx+xxx+    xxxxxxxxxxxxxxxxxx     ",   # edit-server
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # set
    "xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",   # start-daemon
    "xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",   # stop-daemon
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # restore
    " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # save
    "xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",   # zero
)
# lbadm's op -> ipvsadm's command; ops not here are lbd's own (--add-laddr, --reload, ...)
IPVSADM_CMD = {"add_service": "add-service", "edit_service": "edit-service",
               "del_service": "delete-service", "clear": "flush", "list": "list",
               "add_server": "add-server", "del_server": "delete-server",
               "edit_server": "edit-server", "set": "set", "start_daemon": "start-daemon",
               "stop_daemon": "stop-daemon", "restore": "restore", "save": "save", "zero": "zero"}
TUN_OPTS = ("tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
# tunnel_types_v_options, for the one type lbd has (gue and gre are refused before it matters)
IPIP_TUN_OPTS = "xxxx"


class Opt(NamedTuple):
    key: str            # "op" for a command, else the option's name (an OPTNAMES entry or lbd's)
    value: object       # the command, or the constant the flag stands for
    takes_arg: object = False   # True, or OPTIONAL (-p [timeout])


OPTIONAL = "optional"
_ARG = True

_TABLE = [  # (short, long, spec)
    ("-A", "--add-service", Opt("op", "add_service")),
    ("-E", "--edit-service", Opt("op", "edit_service")),
    ("-D", "--delete-service", Opt("op", "del_service")),
    ("-a", "--add-server", Opt("op", "add_server")),
    ("-e", "--edit-server", Opt("op", "edit_server")),
    ("-d", "--delete-server", Opt("op", "del_server")),
    ("-C", "--clear", Opt("op", "clear")),
    ("-Z", "--zero", Opt("op", "zero")),
    (None, "--set", Opt("op", "set")),
    ("-L", "--list", Opt("op", "list")),
    ("-l", None, Opt("op", "list")),
    ("-S", "--save", Opt("op", "save")),
    ("-R", "--restore", Opt("op", "restore")),
    (None, "--start-daemon", Opt("op", "start_daemon", _ARG)),
    (None, "--stop-daemon", Opt("op", "stop_daemon", _ARG)),
    ("-h", "--help", Opt("op", "help")),
    ("-v", "--version", Opt("op", "version")),
    ("-t", "--tcp-service", Opt("service-address", "tcp", _ARG)),
    ("-u", "--udp-service", Opt("service-address", "udp", _ARG)),
    (None, "--sctp-service", Opt("service-address", "sctp", _ARG)),
    ("-f", "--fwmark-service", Opt("service-address", "fwm", _ARG)),
    ("-s", "--scheduler", Opt("scheduler", None, _ARG)),
    ("-p", "--persistent", Opt("persistent", None, OPTIONAL)),
    ("-M", "--netmask", Opt("netmask", None, _ARG)),
    ("-r", "--real-server", Opt("real-server", None, _ARG)),
    # -m -g -i --fullnat --enat: each mode's own flags (--fullnat is also -b with -a/-e)
    *((*modes.get(name).lbadm_flags, Opt("forwarding-method", name)) for name in modes.names()),
    ("-w", "--weight", Opt("weight", None, _ARG)),
    ("-x", "--u-threshold", Opt("u-threshold", None, _ARG)),
    ("-y", "--l-threshold", Opt("l-threshold", None, _ARG)),
    ("-n", "--numeric", Opt("numeric", True)),
    ("-c", "--connection", Opt("connection", True)),
    (None, "--mcast-interface", Opt("mcast-interface", None, _ARG)),
    (None, "--syncid", Opt("syncid", None, _ARG)),
    (None, "--timeout", Opt("timeout", True)),
    (None, "--daemon", Opt("daemon", True)),
    (None, "--stats", Opt("stats", True)),
    (None, "--rate", Opt("rate", True)),
    (None, "--thresholds", Opt("thresholds", True)),
    (None, "--persistent-conn", Opt("persistent-conn", True)),
    (None, "--nosort", Opt("nosort", True)),
    (None, "--sort", Opt("sort", True)),     # ipvsadm: "does nothing, for backwards compatibility"
    ("-X", "--exact", Opt("exact", True)),
    ("-6", "--ipv6", Opt("ipv6", True)),
    ("-o", "--ops", Opt("ops", True)),
    (None, "--pe", Opt("pe", None, _ARG)),
    ("-b", "--sched-flags", Opt("sched-flags", None, _ARG)),
    (None, "--mcast-group", Opt("mcast-group", None, _ARG)),
    (None, "--mcast-port", Opt("mcast-port", None, _ARG)),
    (None, "--mcast-ttl", Opt("mcast-ttl", None, _ARG)),
    (None, "--sync-maxlen", Opt("sync-maxlen", None, _ARG)),
    (None, "--tun-info", Opt("tun-info", True)),
    (None, "--tun-type", Opt("tun-type", None, _ARG)),
    (None, "--tun-port", Opt("tun-port", None, _ARG)),
    (None, "--tun-nocsum", Opt("tun-nocsum", True)),
    (None, "--tun-csum", Opt("tun-csum", True)),
    (None, "--tun-remcsum", Opt("tun-remcsum", True)),
    # lbd's own
    (None, "--reload", Opt("op", "reload")),
    (None, "--list-checks", Opt("op", "list_checks")),
    (None, "--add-laddr", Opt("op", "add_laddr")),
    (None, "--del-laddr", Opt("op", "del_laddr")),
    (None, "--get-laddr", Opt("op", "get_laddr")),
    ("-z", "--laddr", Opt("laddr", None, _ARG)),
    (None, "--match", Opt("match", None, _ARG)),
    (None, "--socket", Opt("socket", None, _ARG)),
]
SHORT = {short: spec for short, _, spec in _TABLE if short}
LONG = {long: spec for _, long, spec in _TABLE if long}
# -b is --sched-flags for services (ipvsadm) and --fullnat for real servers (DPVS).
_SERVER_OPS = {"-a", "-e", "--add-server", "--edit-server"}
FULLNAT_B = Opt("forwarding-method", "fullnat")

# lbd's own commands: (options they need, options they may take), anything else refused; and
# lbd's own options: the ipvsadm commands they may go with.
LBD_OPS = {
    "add_laddr": ({"service-address", "laddr"}, set()),
    "del_laddr": ({"service-address", "laddr"}, set()),
    "get_laddr": (set(), {"service-address", "numeric"}),
    "reload": (set(), set()),
    "list_checks": (set(), {"numeric"}),
    "help": (set(), set()),
    "version": (set(), set()),
}
LBD_OPTIONS = {"match": {"add_service", "edit_service"}, "laddr": set(), "socket": None}
NEEDS = {"service-address": "a virtual service: -t|-u VIP:port", "laddr": "a local address: -z LIP"}


class Scanned(NamedTuple):
    op: str | None
    op_flag: str | None
    op_arg: str | None
    opts: dict          # key -> (flag as typed, the spec's value, argument or None), argv order
    rest: list          # words no option took


def scan(argv) -> Scanned:
    args = list(argv)
    server_cmd = any(a in _SERVER_OPS or (a[:1] == "-" and a[1:2] in ("a", "e")) for a in args)
    op = op_flag = op_arg = None
    opts, rest = {}, []
    for flag, spec, arg in _options(args, server_cmd, rest):
        if spec.key == "op":
            if op is not None:
                raise ipvsadm_error("multiple commands specified")
            op, op_flag, op_arg = spec.value, flag, arg
        elif spec.key in opts and spec.key != "sort":
            if spec.key in LBD_OPTIONS:
                raise UsageError(f"option {flag} given twice (give one)")
            raise ipvsadm_error(f"multiple '{spec.key}' options specified")
        else:
            opts[spec.key] = (flag, spec.value, arg)
    opts.pop("sort", None)
    return Scanned(op, op_flag, op_arg, opts, rest)


def _popt_error(token: str, what: str) -> UsageError:
    # popt's "%s: %s\n" of poptBadOption() (the word as typed) and poptStrerror(); ipvsadm
    # returns -1 for it
    return UsageError(f"{token}: {what}", f"{token}: {what}", 255)


def _options(args, server_cmd, rest):
    """Yield (flag, spec, argument or None) for every option; other words go to `rest`."""
    i = 0
    while i < len(args):
        tok = args[i]
        i += 1
        if tok.startswith("--") and len(tok) > 2:
            name, eq, arg = tok.partition("=")
            spec = LONG.get(name)
            if spec is None:
                raise _popt_error(tok, "unknown option")
            if eq and not spec.takes_arg:
                raise _popt_error(tok, "option does not take an argument")
            if spec.takes_arg and not eq:
                arg, i = _argument(spec, args, i, tok)
            yield name, spec, (arg if spec.takes_arg else None)
        elif tok.startswith("-") and len(tok) > 1 and tok != "--":
            for j in range(1, len(tok)):
                flag = "-" + tok[j]
                spec = FULLNAT_B if (flag == "-b" and server_cmd) else SHORT.get(flag)
                if spec is None:
                    raise _popt_error(tok, "unknown option")
                if spec.takes_arg:
                    arg = tok[j + 1:] or None
                    if arg is None:
                        arg, i = _argument(spec, args, i, tok)
                    yield flag, spec, arg
                    break
                yield flag, spec, None
        else:
            rest.append(tok)


def _argument(spec, args, i, tok):
    """The argument given apart from its option (-w 3); -p takes one only if it is no option."""
    nxt = args[i] if i < len(args) else None
    if spec.takes_arg == OPTIONAL:
        if nxt is not None and not (nxt.startswith("-") and len(nxt) > 1):
            return nxt, i + 1
        return None, i
    if nxt is None:
        raise _popt_error(tok, "missing argument")
    return nxt, i + 1


# --- what goes with what ----------------------------------------------------------------------

def check(op: str, op_flag: str, opts: dict) -> None:
    """Refuse options the command cannot take: ipvsadm's generic_opt_check() for its commands,
    lbd's own rules for lbd's commands and options."""
    for key, (flag, _, _) in opts.items():
        if key in LBD_OPTIONS and LBD_OPTIONS[key] is not None and op not in LBD_OPTIONS[key] \
                and op not in LBD_OPS:
            raise UsageError(f"option {flag} cannot be used with {op_flag}")
    if op in LBD_OPS:
        _check_lbd_op(op, op_flag, opts)
    else:
        generic_opt_check(IPVSADM_CMD[op], {k for k in opts if k in OPTNAMES})


def _check_lbd_op(op, op_flag, opts) -> None:
    needed, optional = LBD_OPS[op]
    for key in sorted(needed - opts.keys()):
        raise UsageError(f"{op_flag} needs {NEEDS[key]}")
    for key, (flag, _, _) in opts.items():
        if key not in needed | optional | {"socket"}:
            raise UsageError(f"option {flag} cannot be used with {op_flag}")


def generic_opt_check(command: str, given: set) -> None:
    """ipvsadm.c generic_opt_check(): columns in order, the first violation refuses."""
    row = TABLE[CMDNAMES.index(command)]
    first = None
    for name, rule in zip(OPTNAMES, row):
        if name not in given:
            if rule == "+":
                raise ipvsadm_error(f"You need to supply the '{name}' option for the "
                                    f"'{command}' command")
        elif rule == "x":
            raise ipvsadm_error(f"Illegal '{name}' option with the '{command}' command")
        elif rule == "1":
            if first is not None:
                raise ipvsadm_error(f"The option '{name}' conflicts with the '{first}' option "
                                    f"in the '{command}' command")
            first = name


def list_conflicts(given: set) -> None:
    """process_options(), CMD_LIST: -c/--timeout/--daemon with a figures layout, or
    --timeout/--daemon with --persistent-conn."""
    if (given & {"connection", "timeout", "daemon"} and given & {"stats", "rate", "thresholds"}) \
            or (given & {"timeout", "daemon"} and "persistent-conn" in given):
        raise ipvsadm_error("options conflicts in the list command")


def tunnel_fwd_check(given: set, fwd: str) -> None:
    """process_options(): tunnel options only for a tunnel (-i) server."""
    if given & {"tun-type", *TUN_OPTS} and fwd != "tunnel":
        raise ipvsadm_error("Tunnel options conflict with forward method")


def tunnel_opt_check(given: set) -> None:
    """ipvsadm.c tunnel_opt_check() for IPIP, the one type lbd has: it takes none of them."""
    for name, rule in zip(TUN_OPTS, IPIP_TUN_OPTS):
        if name in given and rule == "x":
            raise ipvsadm_error(f"Illegal '{name}' option with the 'ipip' tunnel type")
