"""DR and TUN end to end: lbd forwards only the client -> server direction; the real servers
(set up with `lb realserver setup`) answer the client straight from the VIP through the router.
The RS sees the real client address; the director never sees a reply."""
from __future__ import annotations

import sys

import pytest

from lb.lab.servers import pattern_sha256
from tests.integration.helpers import CLIENT, dest_rows, drops, many_gets, ok

FLAGS = {"dr": "-g", "tun": "-i"}


def mode_service(lab, director, mode, proto="-t", port=80):
    vip = lab.addr["vips"][mode]
    ok(director.lbadm("-A", proto, f"{vip}:{port}", "-s", "rr"))
    for rip in lab.addr["rs"]:
        ok(director.lbadm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", FLAGS[mode], "-w", 1))
    return vip


@pytest.mark.parametrize("mode", ["dr", "tun"])
def test_http_and_udp_through_the_mode(lab, director, realservers, mode):
    realservers(mode)
    vip = mode_service(lab, director, mode)
    mode_service(lab, director, mode, "-u", 5353)
    got = many_gets(lab, 6, vip)
    assert got["seen"] == {"rs1": 2, "rs2": 2, "rs3": 2}
    assert got["clients"] == [CLIENT]                      # the RS sees the real client
    answers = [lab.udp_query("client", vip, 5353, b"hi-%d" % i) for i in range(3)]
    assert all(answers), answers
    assert sorted(a.split()[0].decode() for a in answers) == ["rs1", "rs2", "rs3"]
    assert all(a.split()[1].decode().startswith(f"client={CLIENT}:") for a in answers)
    rows = dest_rows(director, vip, 80)
    assert len(rows) == 3 and all(i > 0 for i, _ in rows)
    assert all(o == 0 for _, o in rows), rows              # replies bypass the director


def test_long_download_through_tun(lab, director, realservers):
    realservers("tun")
    vip = mode_service(lab, director, "tun")
    n = 12_000_000
    r = lab.run("client", ["bash", "-c", f"curl -sS --max-time 60 http://{vip}/bytes/{n} | sha256sum"],
                timeout=90, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == pattern_sha256(n)


# Runs in the client namespace: one DF datagram too big for the tunnel, then the path MTU the
# client's kernel learned from the ICMP "fragmentation needed" the director sent back.
PMTU_PROBE = r"""
import socket, sys, time
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14     # <linux/in.h>
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.connect((sys.argv[1], 5353))
before = s.getsockopt(socket.IPPROTO_IP, IP_MTU)
s.send(b"x" * (1500 - 28))
deadline = time.monotonic() + 5                          # until the ICMP has been taken in
while s.getsockopt(socket.IPPROTO_IP, IP_MTU) == before and time.monotonic() < deadline:
    time.sleep(0.01)
print(before, s.getsockopt(socket.IPPROTO_IP, IP_MTU))
"""


def test_df_packet_too_big_for_the_tunnel_gets_icmp_frag_needed(lab, director, realservers):
    realservers("tun")
    vip = mode_service(lab, director, "tun", "-u", 5353)
    refused = drops(director)["frag_needed"]
    r = lab.run("client", [sys.executable, "-c", PMTU_PROBE, vip], timeout=30,
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    before, after = map(int, r.stdout.split())
    assert (before, after) == (1500, 1480)                 # MTU - 20, learned from the director
    assert drops(director)["frag_needed"] == refused + 1   # the director refused it, once
