"""Everything the director asks the kernel over netlink, through pyroute2 and nothing else:
interface facts, the routing table, and neighbour (ARP) entries for the fast path's next hops."""
from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

NTF_USE = 0x01              # ndm_flags: "use this entry" -> the kernel starts resolving it
NUD_USABLE = 0x02 | 0x04 | 0x08 | 0x10 | 0x80   # REACHABLE STALE DELAY PROBE PERMANENT
MAIN_TABLE = 254


@dataclass
class Interface:
    name: str
    index: int
    mac: bytes
    mtu: int
    addrs: list[str]
    source: str | None      # the address we speak from here (TUN outer headers): not a /32 VIP


class Netlink:
    def __init__(self):
        self.ipr = IPRoute()

    def close(self) -> None:
        self.ipr.close()

    def interface(self, name: str) -> Interface:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise LookupError(f"no interface named {name!r} in this network namespace")
        link = self.ipr.get_links(found[0])[0]
        mac = link.get_attr("IFLA_ADDRESS") or "00:00:00:00:00:00"
        rows = [(a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                for a in self.ipr.get_addr(family=2, index=found[0])]
        addrs = [a for a, _ in rows]
        source = next((a for a, plen in rows if plen < 32), addrs[0] if addrs else None)
        return Interface(name, found[0], bytes.fromhex(mac.replace(":", "")),
                         link.get_attr("IFLA_MTU") or 1500, addrs, source)

    def link_state(self, name: str) -> tuple[int, bool] | None:
        """(ifindex, carrier up) of the interface called `name`, or None when there is none
        (deleted). Up is IFLA_OPERSTATE UP (or UNKNOWN, what drivers without carrier say)."""
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            return None
        link = self.ipr.get_links(found[0])[0]
        return found[0], link.get_attr("IFLA_OPERSTATE") in ("UP", "UNKNOWN")

    def routes(self, ifslots: dict[int, int]) -> list[tuple]:
        """IPv4 routes of the main table that leave through one of our interfaces, as the fast
        path wants them: (prefix, prefixlen, gateway or None, ifslot)."""
        out = []
        for r in self.ipr.get_routes(family=2, table=MAIN_TABLE):
            if r["type"] != 1:                      # unicast only (no blackhole, unreachable...)
                continue
            oif = r.get_attr("RTA_OIF")
            if oif not in ifslots:
                continue
            out.append((r.get_attr("RTA_DST") or "0.0.0.0", r["dst_len"],
                        r.get_attr("RTA_GATEWAY"), ifslots[oif]))
        return out

    def neighbours(self) -> dict[tuple[str, int], bytes]:
        """Usable IPv4 neighbour entries: (ip, ifindex) -> MAC."""
        out = {}
        for n in self.ipr.get_neighbours(family=2):
            mac = n.get_attr("NDA_LLADDR")
            if mac and n["state"] & NUD_USABLE:
                out[(n.get_attr("NDA_DST"), n["ifindex"])] = bytes.fromhex(mac.replace(":", ""))
        return out

    def resolve(self, ip: str, ifindex: int) -> None:
        """Ask the kernel to resolve `ip` on `ifindex` (like a packet would), without sending one."""
        self.ipr.neigh("replace", dst=ip, ifindex=ifindex, flags=NTF_USE, state=0)
