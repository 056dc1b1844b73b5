"""ipvsadm 1.31's listings, byte for byte, so scripts that parse ipvsadm output keep working.

Every layout follows a printf format of ipvsadm.c (quoted beside the code that renders it):
print_title() for the two title lines, print_service_entry() for a service and its servers,
print_largenum() for --stats/--rate figures, print_conn() for -c, list_timeout() for --timeout.
Which layout wins when several are asked for is ipvsadm's too: --stats, then --rate, then
--thresholds, then --persistent-conn, then --tun-info, then the plain one.

Services are sorted by (fwmark, protocol number, VIP, port) and servers by (RIP, port), as
libipvs's ipvs_cmp_services / ipvs_cmp_dests do, unless --nosort (then they come in lbd's own
order: services as added, servers in the order the scheduler walks them). libipvs compares
addresses by a signed int subtraction, which misorders addresses more than 2^31 apart; we sort
numerically. Names are never resolved: `-L` without -n prints the same numeric text.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Callable

from lb import modes
from lb.director.model import PROTO_NUMBERS
from lb.schedulers import SCHED_FLAGS

HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"
TITLE = ("Prot LocalAddress:Port Scheduler Flags\n"
         "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")
TUN_TITLE = ("Prot LocalAddress:Port Scheduler Flags\n"
             "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
# print_title: "%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n" and its siblings
STATS_TITLE = (f"{'Prot LocalAddress:Port':<33}" + "".join(f" {c:>8}" for c in
               ("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")) + "\n  -> RemoteAddress:Port\n")
RATE_TITLE = (f"{'Prot LocalAddress:Port':<33}" + "".join(f" {c:>8}" for c in
              ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")) + "\n  -> RemoteAddress:Port\n")
THRESHOLDS_TITLE = (f"{'Prot LocalAddress:Port':<33}" + "".join(f" {c:<10}" for c in
                    ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn"))
                    + "\n  -> RemoteAddress:Port\n")
PERSIST_TITLE = (f"{'Prot LocalAddress:Port':<33} {'Weight':<9} {'PersistConn':<11} "
                 f"{'ActiveConn':<10} {'InActConn':<10}\n  -> RemoteAddress:Port\n")

STATS_COLUMNS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")
RATE_COLUMNS = ("cps", "inpps", "outpps", "inbps", "outbps")
ZERO_RATES = dict.fromkeys(RATE_COLUMNS, 0)

FWD_NAMES = {name: modes.get(name).listing for name in modes.names()}   # "masq" -> "Masq"


@dataclass(frozen=True)
class Format:
    """ipvsadm's FMT_* flags that change a listing (-n changes nothing: names never resolve)."""
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    persistent_conn: bool = False
    tun_info: bool = False
    exact: bool = False
    nosort: bool = False

    @classmethod
    def of(cls, cmd: dict) -> Format:
        return cls(**{k: bool(cmd.get(k)) for k in cls.__dataclass_fields__})


@dataclass
class Live:
    """Figures that are not counters of a destination: the rate estimator's (keyed by a
    service's key, or (service key, RIP, port) for a server) and PersistConn per server."""
    rates: Callable[[tuple], dict] = lambda key: ZERO_RATES
    persist: Callable[[object], int] = lambda dest: 0


def _addr_key(addr: str, port: int) -> tuple:
    return (int(ipaddress.IPv4Address(addr)), port)


def _service_key(svc) -> tuple:
    # libipvs: fwmark first (so port services, mark 0, come first), then protocol, VIP, port
    return (svc.fwmark, PROTO_NUMBERS.get(svc.proto, 255)) + _addr_key(svc.vip, svc.port)


def _services(services, fmt: Format) -> list:
    return list(services) if fmt.nosort else sorted(services, key=_service_key)


def _dests(svc, fmt: Format) -> list:
    return list(svc.dests) if fmt.nosort else sorted(svc.dests, key=lambda d: _addr_key(d.addr, d.port))


def dest_key(svc, dest) -> tuple:
    return (svc.key, dest.addr, dest.port)


def service_name(svc) -> str:
    """svc_name of print_service_entry: "%-4s %s" of protocol and VIP:port cut to 33
    characters, or "FWM  %d"."""
    if svc.fwmark:
        return f"FWM  {svc.fwmark}"
    return f"{svc.proto.upper():<4} {svc.vip}:{svc.port}"[:33]


def _flags(svc) -> str:
    # print_sched_flags: the scheduler's flags in bit order, comma-separated
    return ",".join(f for f in SCHED_FLAGS.get(svc.scheduler, ()) if f in svc.sched_flags)


def service_line(svc) -> str:
    # "%s %s" of name and scheduler, " (%s)" of -b flags, " persistent %u", " mask %s" unless
    # /32, then " ops" for one-packet scheduling
    flags = _flags(svc)
    line = f"{service_name(svc)} {svc.scheduler}" + (f" ({flags})" if flags else "")
    if svc.persistent:
        line += f" persistent {svc.persistent}"
        if svc.netmask != "255.255.255.255":
            line += f" mask {svc.netmask}"
    if svc.onepacket:
        line += " ops"
    return line + "\n"


def largenum(n: int, exact: bool = False) -> str:
    """print_largenum(): "%9llu", or a scaled "%8llu" and K/M/G/T; --exact: "%*llu" at 9
    columns, or one more than the digits when they are more than 8."""
    if exact:
        text = str(n)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    for limit, div, unit in ((10**8, 1, ""), (10**9, 10**3, "K"), (10**11, 10**6, "M"),
                             (10**14, 10**9, "G")):
        if n < limit:
            return f"{n // div:9d}" if not unit else f"{n // div:8d}{unit}"
    return f"{n // 10**12:8d}T"


def _numbers(figures: dict, columns, exact: bool) -> str:
    return "".join(largenum(figures[c], exact) for c in columns)


def _title(fmt: Format) -> str:
    if fmt.stats:
        return STATS_TITLE
    if fmt.rate:
        return RATE_TITLE
    if fmt.thresholds:
        return THRESHOLDS_TITLE
    if fmt.persistent_conn:
        return PERSIST_TITLE
    return TUN_TITLE if fmt.tun_info else TITLE


def _service_entry(svc, fmt: Format, live: Live) -> str:
    dests = _dests(svc, fmt)
    if fmt.stats:
        # A service's figures are the sum of its servers' (servers deleted since are not counted).
        per = [d.counters() for d in dests]
        total = {c: sum(x[c] for x in per) for c in STATS_COLUMNS}
        head = f"{service_name(svc):<33}" + _numbers(total, STATS_COLUMNS, fmt.exact) + "\n"
    elif fmt.rate:
        head = f"{service_name(svc):<33}" + _numbers(live.rates(svc.key), RATE_COLUMNS, fmt.exact) + "\n"
    else:
        head = service_line(svc)
    return head + "".join(_server_line(svc, d, fmt, live) for d in dests)


def _server_line(svc, dest, fmt: Format, live: Live) -> str:
    name = f"{dest.addr}:{dest.port}"[:28]      # dname[28] = '\0'
    if fmt.stats:
        # "  -> %-28s" then print_largenum() of each counter
        return f"  -> {name:<28}" + _numbers(dest.counters(), STATS_COLUMNS, fmt.exact) + "\n"
    if fmt.rate:
        # "  -> %-28s %8llu %8llu %8llu" of CPS InPPS OutPPS, print_largenum() of the two BPS
        r = live.rates(dest_key(svc, dest))
        return (f"  -> {name:<28} {r['cps']:8d} {r['inpps']:8d} {r['outpps']:8d}"
                + _numbers(r, ("inbps", "outbps"), fmt.exact) + "\n")
    active, inactive = dest.active_conns, dest.inactive_conns
    if fmt.thresholds:
        # "  -> %-28s %-10u %-10u %-10u %-10u\n"
        return (f"  -> {name:<28} {dest.u_threshold:<10d} {dest.l_threshold:<10d} "
                f"{active:<10d} {inactive:<10d}\n")
    if fmt.persistent_conn:
        # "  -> %-28s %-9u %-11u %-10u %-10u\n"
        return (f"  -> {name:<28} {dest.weight:<9d} {live.persist(dest):<11d} "
                f"{active:<10d} {inactive:<10d}\n")
    fwd = FWD_NAMES.get(dest.fwd, dest.fwd)
    if fmt.tun_info:
        # "  -> %-28s %-7s %-13s %-6d %-10u %-10u\n"; lbd tunnels are IPIP, others "n/a"
        info = "ipip" if dest.fwd == "tunnel" else "n/a"
        return (f"  -> {name:<28} {fwd:<7} {info:<13} {dest.weight:<6d} "
                f"{active:<10d} {inactive:<10d}\n")
    # "  -> %-28s %-7s %-6d %-10u %-10u\n": every server line ends in padding after InActConn
    return f"  -> {name:<28} {fwd:<7} {dest.weight:<6d} {active:<10d} {inactive:<10d}\n"


def format_list(services, fmt: Format = Format(), live: Live | None = None) -> str:
    """list_all(): the version line, the title, every service."""
    live = live or Live()
    return HEADER + _title(fmt) + "".join(_service_entry(s, fmt, live) for s in _services(services, fmt))


def format_one(service, fmt: Format = Format(), live: Live | None = None) -> str:
    """list_service() (`-L -t VIP:port`): the title and the service, no version line."""
    return _title(fmt) + _service_entry(service, fmt, live or Live())


# --- ipvsadm -S: the table as rules ------------------------------------------------------
# ipvsadm.c print_service_entry with FMT_RULE: "-A %s -s %s", " -p %u", " -M %s" unless /32,
# " -o", " -b " flags; per server "-a %s -r %s %s -w %d", tunnel servers with " --tun-type
# ipip". Where lbd holds more than ipvsadm prints, the line goes on with lbadm's own options,
# so that -S then -R gives the same table: a fwmark service's --match keys, FULLNAT local
# addresses (--add-laddr lines before the servers that need them), --fullnat/--enat servers,
# and -x/-y thresholds (which ipvsadm 1.31 does not save).

def _rule_service(svc) -> str:
    if svc.fwmark:
        return f"-f {svc.fwmark}"
    return f"{'-t' if svc.proto == 'tcp' else '-u'} {svc.vip}:{svc.port}"


def _rule_server(name: str, dest) -> str:
    mode = modes.get(dest.fwd)
    flag = mode.lbadm_flags[0] or mode.lbadm_flags[1]
    line = f"-a {name} -r {dest.addr}:{dest.port} {flag} -w {dest.weight}"
    if dest.fwd == "tunnel":
        line += " --tun-type ipip"
    if dest.u_threshold:
        line += f" -x {dest.u_threshold}"
    if dest.l_threshold:
        line += f" -y {dest.l_threshold}"
    return line + "\n"


def format_rules(services) -> str:
    out = []
    for svc in _services(services, Format()):
        name = _rule_service(svc)
        line = f"-A {name} -s {svc.scheduler}"
        if svc.persistent:
            line += f" -p {svc.persistent}"
            if svc.netmask != "255.255.255.255":
                line += f" -M {svc.netmask}"
        if svc.onepacket:
            line += " -o"
        if _flags(svc):
            line += f" -b {_flags(svc)}"
        if svc.fwmark:
            line += " --match " + ",".join(f"{p}:{vip}:{port}" for p, vip, port in svc.match)
        out.append(line + "\n")
        out += [f"--add-laddr {name} -z {lip}\n" for lip in svc.laddrs]
        out += [_rule_server(name, d) for d in _dests(svc, Format())]
    return "".join(out)


# --- -c, --timeout, --daemon, --get-laddr ---------------------------------------------------

CONN_TITLE = "IPVS connection entries\npro expire state       source             virtual            destination\n"
# list_conn with --persistent-conn: "pro expire %-11s %-18s %-18s %-18s %-16s %s\n"
CONN_PE_TITLE = ("IPVS connection entries\n"
                 f"pro expire {'state':<11} {'source':<18} {'virtual':<18} {'destination':<18} "
                 f"{'pe name':<16} pe_data\n")


def conn_line(c: dict) -> str:
    """print_conn(): "%-3s %-6s %-11s %-18s %-18s %s\n", the expiry as "%02d:%02d" of
    minutes and seconds (so 100 minutes and more take the sixth column, not a seventh).
    No persistence engine is ever set, so --persistent-conn rows are the same."""
    secs = int(c["expires_in"])
    expire = f"{secs // 60:02d}:{secs % 60:02d}"
    src, vip, dst = ("%s:%d" % tuple(c[k]) for k in ("client", "virtual", "dest"))
    # proto: "IP" for a fwmark service's template (protocol 0), as the kernel names it
    return f"{c['proto']:<3} {expire:<6} {c['state']:<11} {src:<18} {vip:<18} {dst}\n"


def format_conns(conns, persistent_conn: bool = False) -> str:
    """`ipvsadm -L -n -c`: connections and persistence templates, as Forwarder.conns() gives
    them (sorted, where the kernel's /proc/net/ip_vs_conn is in hash order)."""
    rows = sorted(conns, key=lambda c: (c["template"], tuple(c["client"]), tuple(c["virtual"])))
    return (CONN_PE_TITLE if persistent_conn else CONN_TITLE) + "".join(map(conn_line, rows))


def format_timeout(tcp: int, tcpfin: int, udp: int) -> str:
    return f"Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n"


def format_daemon() -> str:
    """list_daemon(): a line per running sync daemon; lbd has none (connection sync is not
    implemented), so nothing, as ipvsadm prints when no daemon runs."""
    return ""


LADDR_TITLE = "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS\n"


def format_laddrs(services, used=None) -> str:
    """`--get-laddr`, in the layout of DPVS's ipvsadm: per service its local addresses and
    how many of each one's ports are lent to connections now (CONFLICTS: always 0 here,
    as a port is never lent twice)."""
    out = [LADDR_TITLE]
    for svc in sorted(services, key=_service_key):
        if not svc.laddrs and len(services) > 1:
            continue
        out.append(f"{svc.vip + ':' + str(svc.port):<20} {len(svc.laddrs):<8}\n")
        for lip in svc.laddrs:
            conns = used(lip) if used else 0
            out.append(f"{'':<29} {lip:<20} {0:<10} {conns}\n")
    return "".join(out)
