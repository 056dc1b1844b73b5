"""The director's nftables table: a `netdev` ingress chain per interface that drops what the fast
path owns, so that the kernel neither answers it (RST to a SYN for the VIP) nor forwards a second
copy. AF_PACKET taps see every frame before netdev ingress, so the fast path still gets them.
The table is replaced whole in one `nft -f` transaction, and deleted when the daemon stops."""
from __future__ import annotations

import re
import subprocess


class NftError(RuntimeError):
    pass


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


def render(table: str, ifnames: list[str], rules: list[str]) -> str:
    lines = [f"table netdev {table} {{}}", f"delete table netdev {table}", f"table netdev {table} {{"]
    for name in ifnames:
        chain = "in_" + re.sub(r"[^A-Za-z0-9]", "_", name)
        lines.append(f"  chain {chain} {{")
        lines.append(f'    type filter hook ingress device "{name}" priority -500; policy accept;')
        lines += [f"    {rule}" for rule in rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def install(table: str, ifnames: list[str], rules: list[str]) -> None:
    """Create or replace the table atomically (the first two lines make 'delete' always valid)."""
    _nft(render(table, ifnames, rules))


def remove(table: str) -> None:
    _nft(f"table netdev {table} {{}}\ndelete table netdev {table}\n")
