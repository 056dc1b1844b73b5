"""The XDP decapsulator (lb.realserver.xdp_decap) on a veth, fed frames from the other end.

Two namespaces: `tx` sends Ethernet frames with a packet socket, `rs` has the VIP on lo, the
program on its veth and a UDP socket on the VIP. What the program decapsulates must arrive as
the inner datagram; what it must not touch (other traffic, IPIP for an address that is no VIP,
fragments, outer options) reaches the kernel as it was, which answers IPIP it has no handler for
with protocol-unreachable; a tunnelled packet whose outer checksum is wrong is dropped.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from scapy.layers.inet import IP, UDP
from scapy.layers.l2 import Ether

from lb.realserver import xdp_decap

TX_IP, RS_IP, VIP, OTHER, CLIENT = "198.18.50.1", "198.18.50.2", "198.18.60.1", "198.18.60.9", "198.18.70.5"
PORT = 9999

# In rs: load and attach, then print each datagram the VIP's socket gets, for `seconds`.
RS = r"""
import socket, sys
from pyroute2 import IPRoute
from lb.realserver import xdp_decap as x
fd = x.load(x.program(sys.argv[1].split(",")))
with IPRoute() as ipr:
    print(*x.attach(ipr, ipr.link_lookup(ifname="vb")[0], fd), flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[2], int(sys.argv[3])))
s.settimeout(float(sys.argv[4]))
try:
    while True:
        print(s.recv(2048).decode(), flush=True)
except socket.timeout:
    pass
"""


def sh(*argv, check=True):
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@pytest.fixture
def pair():
    tx, rs = f"xdptx{os.getpid()}", f"xdprs{os.getpid()}"
    made = []
    try:
        for ns in (tx, rs):
            sh("ip", "netns", "add", ns)
            made.append(ns)
        sh("ip", "link", "add", "va", "netns", tx, "type", "veth", "peer", "vb", "netns", rs)
        for ns, dev, addr in ((tx, "va", TX_IP), (rs, "vb", RS_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", rs, "addr", "add", f"{VIP}/32", "dev", "lo")
        sh("ip", "-n", rs, "route", "add", "default", "via", TX_IP)
        sh("ip", "netns", "exec", rs, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
           "net.ipv4.conf.vb.rp_filter=0")
        yield tx, rs
    finally:
        for ns in made:
            sh("ip", "netns", "del", ns, check=False)


def frames(rs_mac: str) -> dict:
    def tunnelled(payload, inner_dst=VIP, **outer):
        inner = IP(src=CLIENT, dst=inner_dst) / UDP(sport=1234, dport=PORT) / payload
        return Ether(dst=rs_mac) / IP(src=TX_IP, dst=RS_IP, proto=4, **outer) / inner

    bad_sum = tunnelled(b"bad-outer-checksum")
    bad_sum[IP].chksum = 0x1234
    return {
        "decapsulated": [bytes(tunnelled(b"good")), bytes(tunnelled(b"good-df", flags="DF"))],
        "dropped": [bytes(bad_sum)],
        "left to the kernel": [bytes(tunnelled(b"not-a-vip", inner_dst=OTHER)),
                               bytes(tunnelled(b"outer-fragment", flags="MF")),
                               bytes(tunnelled(b"outer-options", options=b"\x01\x01\x01\x00")),
                               bytes(tunnelled(b"short"))[:14 + 20 + 10],
                               bytes(Ether(dst=rs_mac) / IP(src=TX_IP, dst=VIP) / UDP(sport=1, dport=PORT)
                                     / b"plain-udp")],
    }


def test_decapsulates_ours_drops_bad_outer_checksums_and_leaves_the_rest(pair):
    tx, rs = pair
    rs_mac = sh("ip", "netns", "exec", rs, "cat", "/sys/class/net/vb/address").stdout.strip()
    proc = subprocess.Popen(["ip", "netns", "exec", rs, sys.executable, "-c", RS, VIP, VIP, str(PORT), "3"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        prog_id, mode = proc.stdout.readline().split()
        assert mode == "generic"                        # a veth: see attach()
        fr = frames(rs_mac)
        send = ("import socket, sys\n"
                "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('va', 0))\n"
                "icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)\n"
                "icmp.settimeout(1)\n"
                "for h in sys.stdin.read().split(): s.send(bytes.fromhex(h))\n"
                "n = 0\n"
                "try:\n"
                "    while True: d = icmp.recv(2048); n += d[20:22] == bytes([3, 2])\n"
                "except socket.timeout: pass\n"
                "print(n)\n")
        every = [f for group in fr.values() for f in group]
        r = subprocess.run(["ip", "netns", "exec", tx, sys.executable, "-c", send],
                           input=" ".join(f.hex() for f in every), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        got, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # only the two good ones (the plain datagram to the VIP is routed to it too: not IPIP)
    assert sorted(got.split()) == ["good", "good-df", "plain-udp"], (got, err)
    # the kernel has no ipip: what the program left alone and is for this host (not a VIP
    # inside, a fragment, outer options, too short) comes back as protocol unreachable;
    # the bad checksum never reached IP
    assert int(r.stdout) == 2, r.stdout      # not a VIP, outer options (a fragment waits, short is cut)


def test_program_refuses_what_it_cannot_hold():
    with pytest.raises(ValueError):
        xdp_decap.program([])
    with pytest.raises(ValueError):
        xdp_decap.program([f"198.18.1.{i}" for i in range(xdp_decap.MAX_VIPS + 1)])
    assert len(xdp_decap.program([VIP])) % 8 == 0
