"""lbd at its table limits: a command the fast path cannot take is refused, naming the limit,
and the running configuration is exactly what it was (not listed; later commands work)."""
from __future__ import annotations

import time

from lb._forward import LIMITS
from lb.director import cli
from tests.integration.helpers import listing, ok

BASE = 0xC6120000 + 10 * 256      # 198.18.10.0: VIPs of their own, never routed to


def vip(i: int) -> str:
    n = BASE + i
    return f"{n >> 24}.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def send(director, *argv) -> dict:
    # In-process, over lbd's socket: the same request lbadm sends, without a Python start each.
    return cli.request(director.socket, cli.parse(list(argv)))


def test_service_table_full_then_free_one(director):
    n = LIMITS["services"]
    start = time.monotonic()
    for i in range(n):
        reply = send(director, "-A", "-t", f"{vip(i)}:80", "-s", "rr")
        assert reply["rc"] == 0, reply
    elapsed = time.monotonic() - start
    print(f"{n} services added one by one through lbd in {elapsed:.2f} s")
    before = listing(director)
    reply = send(director, "-A", "-t", f"{vip(n)}:80", "-s", "rr")
    assert reply["rc"] == 1
    assert reply["err"] == f"lbadm: the fast path's service table is full ({n} services)\n"
    assert listing(director) == before and f"{vip(n)}:80" not in before
    ok(director.lbadm("-D", "-t", f"{vip(7)}:80"))
    ok(director.lbadm("-A", "-t", f"{vip(n)}:80", "-s", "wlc"))
    after = listing(director)
    assert f"{vip(n)}:80 wlc" in after and f"{vip(7)}:80 " not in after
    ok(director.lbadm("-a", "-t", f"{vip(n)}:80", "-r", "198.18.0.11:80", "-m"))
    ok(director.lbadm("-C"))
    assert ok(director.lbadm("-L", "-n")).stdout.count("\n") == 3     # header and titles only
