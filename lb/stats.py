"""The other ipvsadm listings, byte for byte: `--stats`, `-c` (connections) and `--timeout`.

Widths follow ipvsadm.c: `--stats` prints the service or server name as "%-33s" then five
numbers "%9llu" each, large ones scaled by print_largenum() (K, M, G, T) unless --exact;
`-c` prints "%-3s %02d:%02d  %-11s %-18s %-18s %s" per connection.
"""
from __future__ import annotations

from lb.listing import HEADER, _addr_key, _service_key, service_name

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
