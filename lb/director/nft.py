"""The director's nftables table: a `netdev` ingress chain per interface that drops what the fast
path owns, so that the kernel neither answers it (RST to a SYN for the VIP) nor forwards a second
copy. AF_PACKET taps see every frame before netdev ingress, so the fast path still gets them.

The rules are fixed when the daemon starts; what they match is held in named sets, so a change
of configuration is a delta of set elements in one `nft -f` transaction (one service added =
one element added), not a rewrite of the table. The sets, by what the fast path owns:

  svc_{tcp,udp}      VIP . port          traffic to a virtual service (or a fwmark service's key)
  masq_{tcp,udp}     RIP . rport         NAT replies from a real server, unless addressed to one
                                         of the director's own addresses (its own conversations)
  fullnat_{tcp,udp}  RIP . LIP . rport   FULLNAT replies to a local address (else the kernel RSTs)

An element is a `(set_name, values)` pair (`Drop`); lb/modes/*.py say which a server needs.
The table is deleted when the daemon stops."""
from __future__ import annotations

import re
import subprocess
from typing import NamedTuple

# set name prefix -> nftables type and the rule that reads it, per protocol
_SETS = {
    "svc": ("ipv4_addr . inet_service", "ip daddr . {proto} dport @{set} drop"),
    "masq": ("ipv4_addr . inet_service", "ip daddr != @local ip saddr . {proto} sport @{set} drop"),
    "fullnat": ("ipv4_addr . ipv4_addr . inet_service", "ip saddr . ip daddr . {proto} sport @{set} drop"),
}
PROTOS = ("tcp", "udp")


class NftError(RuntimeError):
    pass


class Drop(NamedTuple):
    """One element of one of the sets above: ("svc_tcp", ("198.18.0.100", 80))."""
    set: str
    values: tuple

    def render(self) -> str:
        return " . ".join(str(v) for v in self.values)


def table_name(ifnames: list[str]) -> str:
    return "lbd_" + "_".join(re.sub(r"[^A-Za-z0-9]", "_", n) for n in ifnames)


def _nft(script: str) -> None:
    try:
        r = subprocess.run(["nft", "-f", "-"], input=script, text=True, capture_output=True,
                           timeout=30)
    except FileNotFoundError:
        raise NftError("nft not found: install nftables") from None
    if r.returncode != 0:
        raise NftError(f"nft failed: {r.stderr.strip()}")


def render_table(table: str, ifnames: list[str], local_addrs: list[str]) -> str:
    """The whole table, empty sets; the first two lines make 'delete' valid on a fresh host and
    replace a table a daemon that died left behind."""
    lines = [f"table netdev {table} {{}}", f"delete table netdev {table}", f"table netdev {table} {{"]
    local = f" elements = {{ {', '.join(local_addrs)} }};" if local_addrs else ""
    lines.append(f"  set local {{ type ipv4_addr;{local} }}")
    rules = []
    for prefix, (kind, rule) in _SETS.items():
        for proto in PROTOS:
            lines.append(f"  set {prefix}_{proto} {{ type {kind}; }}")
            rules.append(rule.format(proto=proto, set=f"{prefix}_{proto}"))
    for name in ifnames:
        chain = "in_" + re.sub(r"[^A-Za-z0-9]", "_", name)
        lines.append(f"  chain {chain} {{")
        lines.append(f'    type filter hook ingress device "{name}" priority -500; policy accept;')
        lines += [f"    {rule}" for rule in rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_delta(table: str, add, remove) -> str:
    """Element deletions then additions, grouped by set, as one transaction."""
    lines = []
    for verb, drops in (("delete", remove), ("add", add)):
        by_set: dict[str, list[str]] = {}
        for drop in sorted(Drop(*d) for d in drops):
            by_set.setdefault(drop.set, []).append(drop.render())
        lines += [f"{verb} element netdev {table} {name} {{ {', '.join(elems)} }}"
                  for name, elems in by_set.items()]
    return "\n".join(lines) + "\n" if lines else ""


def exists(table: str) -> bool:
    try:
        return subprocess.run(["nft", "list", "table", "netdev", table], capture_output=True,
                              timeout=30).returncode == 0
    except FileNotFoundError:
        return False


class Ingress:
    """The table of one daemon: created by install(), changed by update(), gone after remove()."""

    def __init__(self, ifnames: list[str]):
        self.ifnames = list(ifnames)
        self.table = table_name(ifnames)

    def install(self, local_addrs: list[str]) -> None:
        _nft(render_table(self.table, self.ifnames, sorted(local_addrs)))

    def update(self, add, remove) -> None:
        script = render_delta(self.table, add, remove)
        if script:
            _nft(script)

    def remove(self) -> None:
        _nft(f"table netdev {self.table} {{}}\ndelete table netdev {self.table}\n")
