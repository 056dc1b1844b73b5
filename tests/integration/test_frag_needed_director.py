"""The director's own "fragmentation needed" (RFC 1191), end to end on the kernel selftest's
topology with default offloads: the director's link to the real server (veth12) gets MTU 1280
while every other link keeps 1500, so the MSS both ends announce (1460) does not help and the
client's full-sized DF segments -- GSO aggregates with gso_size 1448 -- cannot leave towards
the server. The director must answer each with ICMP 3/4 carrying the egress MTU (TUN: 20 less
for the IPIP header), as __ip_vs_get_out_rt / ensure_mtu_is_adequate do; the upload completes
only if the client's TCP learns it, and the client's route cache then holds it. NAT also in
the other direction: with MTU 1280 towards the client, the server's segments get the error."""
from __future__ import annotations

import subprocess
import sys
import types

import pytest

from lb.lab.servers import pattern_sha256
from tests.integration.helpers import figures
from tests.integration.selftest_topology import CIP, PORT, RIP, VIP, SelftestTopology
from tests.integration.test_offloads import CLIENT, FLAG, SERVER, lbadm, start_director

SIZE = 3 * 1000 * 1000
LOW_MTU = 1280


def frag_needed_sent(sock) -> int:
    f = figures(types.SimpleNamespace(socket=sock))
    return sum(d.get("frag_needed", 0) for d in f.values() if isinstance(d, dict))


def route_mtu(t, role, dst, *src) -> str:
    return t.sh(role, "ip", "route", "get", dst, *src).stdout


@pytest.mark.parametrize("mode,direction", [("nat", "up"), ("dr", "up"), ("tun", "up"),
                                            ("nat", "down")])
def test_director_answers_too_big_with_frag_needed(mode, direction, tmp_path):
    with SelftestTopology(mode) as t:
        if mode in ("dr", "tun"):
            r = t.sh("rs", sys.executable, "-m", "lb", "realserver", "setup", "--mode", mode, "--vip", VIP)
            assert r.returncode == 0, r.stderr
        # one end of a veth pair only: the other end still takes 1500-byte frames
        dev = "veth12" if direction == "up" else "veth10"
        assert t.sh("director", "ip", "link", "set", dev, "mtu", str(LOW_MTU)).returncode == 0
        server = t.start("rs", [sys.executable, "-c", SERVER, str(PORT)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        sock = str(tmp_path / "lbd.sock")
        start_director(t, sock)
        lbadm(t, sock, "-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
        lbadm(t, sock, "-a", "-t", f"{VIP}:{PORT}", "-r", f"{RIP}:{PORT}", FLAG[mode])
        assert frag_needed_sent(sock) == 0
        verb = "PUT" if direction == "up" else "GET"
        r = t.sh("client", sys.executable, "-c", CLIENT, VIP, str(PORT), verb, str(SIZE), timeout=60)
        want = pattern_sha256(SIZE)
        assert r.returncode == 0 and r.stdout.split()[0] == want, (r.stdout, r.stderr,
                                                                   lbadm(t, sock, "-L", "-n", "--stats"))
        assert frag_needed_sent(sock) > 0
        if direction == "up":          # the client learned the path MTU towards the VIP
            mtu = LOW_MTU - 20 if mode == "tun" else LOW_MTU
            assert f"mtu {mtu}" in route_mtu(t, "client", VIP), route_mtu(t, "client", VIP)
        else:                          # the server learned it towards the client
            assert f"mtu {LOW_MTU}" in route_mtu(t, "rs", CIP), route_mtu(t, "rs", CIP)
