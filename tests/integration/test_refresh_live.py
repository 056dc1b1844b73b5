"""lbd follows the kernel while it runs, told by netlink (lb.director.refresh): a real server's
neighbour entry changed by hand, and the route to the clients taken away and put back, reach the
fast path within a second or two -- well before the 10 s resync that would cover a lost
announcement -- so the change is seen through the announcement, not by polling."""
from __future__ import annotations

import re
import time

from tests.integration.helpers import VIP, drops, ok, wait_until

RS = "198.18.0.11"
WRONG_MAC = "02:00:5e:00:00:99"     # no interface has it: frames to it reach nobody


def one_server(director):
    ok(director.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr"))
    ok(director.lbadm("-a", "-t", f"{VIP}:80", "-r", f"{RS}:80", "-m"))


def answered(lab) -> bool:
    return lab.http_get("client", f"http://{VIP}/", timeout=0.5).returncode == 0


def ip(lab, *args) -> str:
    r = lab.run("director", ["ip", *args], timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_a_changed_neighbour_entry_reaches_the_fast_path(lab, director):
    one_server(director)
    assert answered(lab)
    shown = ip(lab, "neigh", "show", RS, "dev", "eth0")
    mac = re.search(r"lladdr (\S+)", shown).group(1)
    try:
        t0 = time.monotonic()
        ip(lab, "neigh", "replace", RS, "lladdr", WRONG_MAC, "dev", "eth0", "nud", "permanent")
        wait_until(lambda: not answered(lab), 3, "lbd to send to the MAC the kernel now holds")
        ip(lab, "neigh", "replace", RS, "lladdr", mac, "dev", "eth0", "nud", "permanent")
        wait_until(lambda: answered(lab), 3, "lbd to take the real server's MAC back")
        assert time.monotonic() - t0 < 8, "slower than announcements: was it the resync?"
    finally:
        ip(lab, "neigh", "replace", RS, "lladdr", mac, "dev", "eth0", "nud", "reachable")


def test_a_route_taken_away_and_put_back(lab, director):
    one_server(director)
    assert answered(lab)
    routes = [l.strip() for l in ip(lab, "-4", "route", "show").splitlines() if " via " in l]
    assert routes, "the lab's director reaches the client through the router"
    try:
        t0 = time.monotonic()
        for r in routes:
            ip(lab, "route", "del", *r.split())
        before = drops(director).get("no_route", 0)
        wait_until(lambda: not answered(lab), 3, "replies to have no route")
        assert drops(director).get("no_route", 0) > before     # the fast path saw it go
        for r in routes:
            ip(lab, "route", "add", *r.split())
        wait_until(lambda: answered(lab), 3, "lbd to route replies again")
        assert time.monotonic() - t0 < 8, "slower than announcements: was it the resync?"
    finally:
        for r in routes:
            lab.run("director", ["ip", "route", "replace", *r.split()], timeout=10)
