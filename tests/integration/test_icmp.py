"""ICMP through lbd end to end, per mode (fastpath/icmp.pxi):

- port unreachable: UDP to a port no real server listens on; the client's connected socket must
  get ECONNREFUSED. NAT/FULLNAT: the server's ICMP error comes back through the director,
  which translates it (outer and quoted header); DR/TUN: the server answers from the VIP itself.
- fragmentation needed: the router's link to the client gets a lower MTU than everything else, so
  the real server's full-sized DF segments of a download cannot reach the client; the router's
  ICMP goes to the VIP, i.e. to the director, which must relay it to the server that sent the
  segments (ip_vs_in_icmp()). The download completes only if it does, and the server's
  route cache then holds the path MTU.
"""
from __future__ import annotations

import sys

import pytest

from lb.lab.servers import pattern_sha256
from lb.lab.topology import VIPS
from tests.integration.helpers import CLIENT, figures, ok, wait_until

CLOSED = 5999                     # no server listens here
LOW_MTU = 1280
FLAGS = {"nat": "-m", "dr": "-g", "tun": "-i", "fullnat": "-b", "enat": "--enat"}

# Runs in the client namespace: one datagram on a connected socket, then what recv() says.
REFUSED = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"""


def relayed(d) -> int:
    return figures(d)["forwarded_anyway"]["icmp_relayed"]


def service(lab, d, mode, proto, port):
    vip = VIPS[mode]
    ok(d.lbadm("-A", proto, f"{vip}:{port}", "-s", "rr"))
    if mode == "fullnat":
        for lip in lab.addr["lips"]:
            ok(d.lbadm("--add-laddr", proto, f"{vip}:{port}", "-z", lip))
    for rip in lab.addr["rs"]:
        ok(d.lbadm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", FLAGS[mode]))
    return vip


@pytest.fixture
def routed_director(rlab):
    from lb.lab.lbd import LabDirector
    with LabDirector(rlab) as d:
        yield d


def with_realservers(lab, mode):
    if mode in ("dr", "tun", "enat"):
        lab.setup_realservers(mode)


def refused(lab, vip):
    r = lab.run("client", [sys.executable, "-c", REFUSED, vip, str(CLOSED)], timeout=30,
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def check_port_unreachable(lab, d, mode):
    vip = service(lab, d, mode, "-u", CLOSED)
    before = relayed(d)
    assert refused(lab, vip) == "refused"
    # NAT/FULLNAT: the server's error came through us; DR/TUN: it went straight to the client
    assert relayed(d) - before == (1 if mode in ("nat", "fullnat") else 0)


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_port_unreachable_reaches_the_client(lab, director, realservers, mode):
    if mode != "nat":
        realservers(mode)
    check_port_unreachable(lab, director, mode)


def test_port_unreachable_reaches_the_client_through_fullnat(rlab, routed_director):
    check_port_unreachable(rlab, routed_director, "fullnat")


# --- fragmentation needed from the client's path, relayed to the server -------------------------
def pmtu_seen(lab, dsts, src=None) -> list:
    """The real servers whose route cache holds LOW_MTU toward one of `dsts` (from `src`: DR
    and TUN servers answer from the VIP, which a policy rule may route by)."""
    out = []
    for name in lab.rs_names:
        for dst in dsts:
            r = lab.run(name, ["ip", "route", "get", dst, *(["from", src] if src else [])],
                        timeout=10, capture_output=True, text=True)
            if f"mtu {LOW_MTU}" in r.stdout:
                out.append(name)
    return out


def check_frag_needed_round_trip(lab, d, mode):
    vip = service(lab, d, mode, "-t", 80)
    # what the server's packets are addressed to: the client, FULLNAT's LIPs, ENAT's VIP
    dsts = {"fullnat": lab.addr["lips"], "enat": [vip]}.get(mode, [CLIENT])
    n = 3_000_000
    before = relayed(d)
    ok(lab.run("router", ["ip", "link", "set", "to-client", "mtu", str(LOW_MTU)], timeout=10,
               capture_output=True, text=True))
    try:
        r = lab.run("client", ["bash", "-c", f"curl -sS --max-time 60 http://{vip}/bytes/{n} | sha256sum"],
                    timeout=90, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == pattern_sha256(n)
        assert relayed(d) > before                 # the router's error went on
        src = vip if mode in ("dr", "tun") else None
        assert pmtu_seen(lab, dsts, src), "no real server learned the path MTU"
    finally:
        lab.run("router", ["ip", "link", "set", "to-client", "mtu", "1500"], timeout=10)
        for name in lab.rs_names:
            lab.run(name, ["ip", "route", "flush", "cache"], timeout=10)


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_frag_needed_from_the_client_path_reaches_the_server(lab, director, realservers, mode):
    if mode != "nat":
        realservers(mode)
    check_frag_needed_round_trip(lab, director, mode)


@pytest.mark.parametrize("mode", ["fullnat", "enat"])
def test_frag_needed_reaches_the_server_through_the_router(rlab, routed_director, mode):
    with_realservers(rlab, mode)
    try:
        check_frag_needed_round_trip(rlab, routed_director, mode)
    finally:
        if mode == "enat":
            rlab.teardown_realservers("enat")


def test_icmp_echo_to_a_vip_is_the_kernels(lab, director):
    service(lab, director, "nat", "-t", 80)
    before = figures(director)["passes"]["icmp_not_error"]
    assert lab.ping("client", VIPS["nat"])                   # the director's kernel answers
    wait_until(lambda: figures(director)["passes"]["icmp_not_error"] > before, 5, "echo counted")
