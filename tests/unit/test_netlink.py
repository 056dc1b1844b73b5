"""lb.director.netlink against a real kernel: a network namespace of the test's own (root only),
holding a veth pair with addresses, routes of every kind and neighbour entries set by hand, read
back through Netlink as lbd reads its interface. The namespace is always deleted."""
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                reason="needs root and iproute2 (a network namespace)")

NS = f"lbt-netlink-{os.getpid()}"
SETUP = [
    "link add nl0 type veth peer name nl1",
    "link set nl0 address 02:00:00:00:77:01 mtu 1400",
    "addr add 198.18.77.100/32 dev nl0",            # a VIP-like /32 first: not the source
    "addr add 198.18.77.1/24 dev nl0",
    "link set nl0 up", "link set nl1 up", "link set lo up",
    "route add 198.18.78.0/24 via 198.18.77.254 dev nl0",
    "route add blackhole 198.18.79.0/24",
    "neigh add 198.18.77.9 lladdr 02:00:00:00:77:09 nud permanent dev nl0",
    "neigh add 198.18.77.10 lladdr 02:00:00:00:77:10 nud failed dev nl0",
]

# Runs inside the namespace: what Netlink reads there, as JSON.
READ = r"""
import json
from lb.director.netlink import Netlink
nl = Netlink()
try:
    i = nl.interface("nl0")
    try:
        nl.interface("nosuch0")
        missing = None
    except LookupError as e:
        missing = str(e)
    nl.resolve("198.18.77.20", i.index)
    print(json.dumps({"name": i.name, "index": i.index, "mac": i.mac.hex(), "mtu": i.mtu,
                      "addrs": i.addrs, "source": i.source, "missing": missing,
                      "routes": nl.routes({i.index: 3}),
                      "neighbours": [[ip, ix, mac.hex()] for (ip, ix), mac in nl.neighbours().items()]}))
finally:
    nl.close()
"""


def ip(*args, check=True):
    return subprocess.run(["ip", "-n", NS, *args], capture_output=True, text=True, timeout=10,
                          check=check)


@pytest.fixture(scope="module")
def seen():
    subprocess.run(["ip", "netns", "add", NS], check=True, timeout=10)
    try:
        for line in SETUP:
            r = ip(*line.split(), check=False)
            assert r.returncode == 0, f"ip {line}: {r.stderr}"
        r = subprocess.run(["ip", "netns", "exec", NS, sys.executable, "-c", READ], capture_output=True,
                           text=True, timeout=30, env=dict(os.environ))
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        out["neigh_show"] = ip("neigh", "show", "dev", "nl0").stdout
        out["ifindex"] = int(ip("-o", "link", "show", "nl0").stdout.split(":")[0])
        yield out
    finally:
        subprocess.run(["ip", "netns", "del", NS], timeout=10)
    assert NS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_interface_facts(seen):
    assert (seen["name"], seen["index"], seen["mac"], seen["mtu"]) == \
        ("nl0", seen["ifindex"], "020000007701", 1400)
    assert seen["addrs"] == ["198.18.77.100", "198.18.77.1"]
    assert seen["source"] == "198.18.77.1"                 # the /24, not the /32 VIP


def test_a_missing_interface_is_a_lookup_error_naming_it(seen):
    assert seen["missing"] == "no interface named 'nosuch0' in this network namespace"


def test_routes_are_unicast_ones_through_our_interfaces(seen):
    routes = sorted(map(tuple, seen["routes"]), key=str)
    # The connected /24 and the gatewayed /24, on slot 3; the blackhole and lo's routes left out.
    assert routes == [("198.18.77.0", 24, None, 3), ("198.18.78.0", 24, "198.18.77.254", 3)]


def test_neighbours_are_the_usable_entries_only(seen):
    got = {(ip_, ix): mac for ip_, ix, mac in seen["neighbours"]}
    assert got[("198.18.77.9", seen["ifindex"])] == "020000007709"     # permanent
    assert ("198.18.77.10", seen["ifindex"]) not in got                 # failed: not usable


def test_resolve_makes_the_kernel_start_resolving(seen):
    # NTF_USE with no state: an entry appears (incomplete, as a packet would leave it).
    assert "198.18.77.20 " in seen["neigh_show"]
