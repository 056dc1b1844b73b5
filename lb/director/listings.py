"""`ipvsadm -L -n` text, byte for byte, so scripts that parse ipvsadm output keep working.

Widths follow ipvsadm.c (print_title / print_service_entry, default format):
  service line  "%-4s %s" of protocol and VIP:port, cut to 33 characters, then " %s" scheduler
                and, when it has -b flags, " (%s)" of them comma-separated in bit order
                (print_sched_flags: sh-fallback,sh-port or mh-fallback,mh-port);
  server line   "  -> %-28s %-7s %-6d %-10u %-10u" (address cut to 28 characters), so every
                server line ends in padding spaces after InActConn, as ipvsadm's does.
Services are sorted by (protocol number, VIP, port) and servers by (RIP, port), as libipvs's
ipvs_cmp_services / ipvs_cmp_dests do unless --nosort. (libipvs compares addresses by a signed
int subtraction, which misorders addresses more than 2^31 apart; we sort numerically.)
Names are never resolved: `-L` without -n prints the same numeric text.
"""
from __future__ import annotations

import ipaddress

from lb import modes
from lb.director.model import PROTO_NUMBERS
from lb.schedulers import SCHED_FLAGS

HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"
TITLE = ("Prot LocalAddress:Port Scheduler Flags\n"
         "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")

FWD_NAMES = {name: modes.get(name).listing for name in modes.names()}   # "masq" -> "Masq"


def _addr_key(addr: str, port: int) -> tuple:
    return (int(ipaddress.IPv4Address(addr)), port)


def _service_key(svc) -> tuple:
    # libipvs: fwmark first (so port services, mark 0, come first), then protocol, VIP, port
    return (svc.fwmark, PROTO_NUMBERS.get(svc.proto, 255)) + _addr_key(svc.vip, svc.port)


def service_name(svc) -> str:
    if svc.fwmark:
        return f"FWM  {svc.fwmark}"
    return f"{svc.proto.upper():<4} {svc.vip}:{svc.port}"


def service_line(svc) -> str:
    name = service_name(svc)[:33]
    flags = ",".join(f for names in SCHED_FLAGS.values() for f in names if f in svc.sched_flags)
    line = f"{name} {svc.scheduler}" + (f" ({flags})" if flags else "")
    # ipvsadm: " persistent %u", " mask %s" unless /32, then " ops" for one-packet scheduling
    if svc.persistent:
        line += f" persistent {svc.persistent}"
        if svc.netmask != "255.255.255.255":
            line += f" mask {svc.netmask}"
    if svc.onepacket:
        line += " ops"
    return line + "\n"


def server_line(dest) -> str:
    name = f"{dest.addr}:{dest.port}"[:28]
    fwd = FWD_NAMES.get(dest.fwd, dest.fwd)
    return (f"  -> {name:<28} {fwd:<7} {dest.weight:<6d} "
            f"{dest.active_conns:<10d} {dest.inactive_conns:<10d}\n")


def format_service(svc) -> str:
    dests = sorted(svc.dests, key=lambda d: _addr_key(d.addr, d.port))
    return service_line(svc) + "".join(server_line(d) for d in dests)


def format_list(services, numeric: bool = True) -> str:
    """The whole table, as `ipvsadm -L -n` prints it (header, title, services)."""
    body = "".join(format_service(s) for s in sorted(services, key=_service_key))
    return HEADER + TITLE + body


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
    for svc in sorted(services, key=_service_key):
        name = _rule_service(svc)
        line = f"-A {name} -s {svc.scheduler}"
        if svc.persistent:
            line += f" -p {svc.persistent}"
            if svc.netmask != "255.255.255.255":
                line += f" -M {svc.netmask}"
        if svc.onepacket:
            line += " -o"
        flags = ",".join(f for names in SCHED_FLAGS.values() for f in names if f in svc.sched_flags)
        if flags:
            line += f" -b {flags}"
        if svc.fwmark:
            line += " --match " + ",".join(f"{p}:{vip}:{port}" for p, vip, port in svc.match)
        out.append(line + "\n")
        out += [f"--add-laddr {name} -z {lip}\n" for lip in svc.laddrs]
        out += [_rule_server(name, d) for d in sorted(svc.dests, key=lambda d: _addr_key(d.addr, d.port))]
    return "".join(out)


def format_one(service, numeric: bool = True) -> str:
    """`ipvsadm -L -n -t VIP:port`: ipvsadm prints the title but no version header here."""
    return TITLE + format_service(service)


# --- the other listings: --stats, -c, --timeout, --get-laddr -------------------------
# The other ipvsadm listings, byte for byte: `--stats`, `-c` (connections) and `--timeout`.
# 
# Widths follow ipvsadm.c: `--stats` prints the service or server name as "%-33s" then five
# numbers "%9llu" each, large ones scaled by print_largenum() (K, M, G, T) unless --exact;
# `-c` prints "%-3s %02d:%02d  %-11s %-18s %-18s %s" per connection.

STATS_TITLE = ("Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes\n"
               "  -> RemoteAddress:Port\n")
CONN_TITLE = "IPVS connection entries\npro expire state       source             virtual            destination\n"
COLUMNS = ("conns", "inpkts", "outpkts", "inbytes", "outbytes")


def largenum(n: int, exact: bool = False) -> str:
    """ipvsadm's print_largenum(): 9 columns, or a scaled figure with its unit."""
    if exact:
        text = str(n)
        return text.rjust(9 if len(text) <= 8 else len(text) + 1)
    for limit, div, unit in ((10**8, 1, ""), (10**9, 10**3, "K"), (10**11, 10**6, "M"),
                             (10**14, 10**9, "G")):
        if n < limit:
            return f"{n // div:9d}" if not unit else f"{n // div:8d}{unit}"
    return f"{n // 10**12:8d}T"


def _numbers(counters: dict, exact: bool) -> str:
    return "".join(largenum(counters[c], exact) for c in COLUMNS)


def format_stats(services, exact: bool = False) -> str:
    """`ipvsadm -L -n --stats`. A service's figures are the sum of its servers' (servers
    deleted since are no longer counted)."""
    out = [HEADER, STATS_TITLE]
    for svc in sorted(services, key=_service_key):
        dests = sorted(svc.dests, key=lambda d: _addr_key(d.addr, d.port))
        per = [(d, d.counters()) for d in dests]
        total = {c: sum(x[c] for _, x in per) for c in COLUMNS}
        out.append(service_name(svc)[:33].ljust(33) + _numbers(total, exact) + "\n")
        for d, counters in per:
            out.append(f"  -> {d.addr}:{d.port}"[:33].ljust(33) + _numbers(counters, exact) + "\n")
    return "".join(out)


def format_conns(conns) -> str:
    """`ipvsadm -L -n -c`: connections and persistence templates, as Forwarder.conns() gives them."""
    out = [CONN_TITLE]
    for c in sorted(conns, key=lambda c: (c["template"], c["client"], c["virtual"])):
        secs = int(c["expires_in"])
        proto = c["proto"]            # "IP" for a fwmark service's template (protocol 0)
        src, vip, dst = ("%s:%d" % c[k] for k in ("client", "virtual", "dest"))
        out.append(f"{proto:<3} {secs // 60:02d}:{secs % 60:02d}  {c['state']:<11} {src:<18} {vip:<18} {dst}\n")
    return "".join(out)


def format_timeout(tcp: int, tcpfin: int, udp: int) -> str:
    return f"Timeout (tcp tcpfin udp): {tcp} {tcpfin} {udp}\n"


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
