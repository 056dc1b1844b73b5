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
from lb.schedulers import SCHED_FLAGS

HEADER = "IP Virtual Server version 1.2.1 (size=4096)\n"
TITLE = ("Prot LocalAddress:Port Scheduler Flags\n"
         "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")

FWD_NAMES = {name: modes.get(name).listing for name in modes.names()}   # "masq" -> "Masq"
_PROTO_NUMBERS = {"tcp": 6, "udp": 17}


def _addr_key(addr: str, port: int) -> tuple:
    return (int(ipaddress.IPv4Address(addr)), port)


def _service_key(svc) -> tuple:
    # libipvs: fwmark first (so port services, mark 0, come first), then protocol, VIP, port
    return (svc.fwmark, _PROTO_NUMBERS.get(svc.proto, 255)) + _addr_key(svc.vip, svc.port)


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


def format_one(service, numeric: bool = True) -> str:
    """`ipvsadm -L -n -t VIP:port`: ipvsadm prints the title but no version header here."""
    return TITLE + format_service(service)
