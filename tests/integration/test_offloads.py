"""Real traffic on the kernel selftest's topology with the veths' default offloads: the client's
and the server's TSO/GSO aggregates and CHECKSUM_PARTIAL frames reach the fast path as they
come, and 10 MB must arrive intact both ways through NAT, DR and TUN."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest

from lb.lab.servers import pattern_sha256
from tests.integration.selftest_topology import PORT, RIP, VIP, SelftestTopology

SIZE = 10 * 1000 * 1000
FLAG = {"nat": "-m", "dr": "-g", "tun": "-i"}

# The real server: "PUT n" then n bytes -> the sha256 of what arrived; "GET n" -> n bytes of
# lb.lab.servers.pattern. One connection at a time, bounded in time.
SERVER = r"""
import hashlib, socket, sys
from lb.lab.servers import pattern
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(8); s.settimeout(60)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(30)
    f = c.makefile("rb")
    verb, n = f.readline().split(); n = int(n)
    if verb == b"PUT":
        h, left = hashlib.sha256(), n
        while left:
            b = f.read(min(left, 1 << 16))
            if not b: break
            h.update(b); left -= len(b)
        c.sendall(h.hexdigest().encode())
    else:
        for off in range(0, n, 1 << 16):
            c.sendall(pattern(off, min(1 << 16, n - off)))
    f.close(); c.close()       # the file holds the socket open too
"""

CLIENT = r"""
import hashlib, socket, sys
from lb.lab.servers import pattern
verb, n = sys.argv[3], int(sys.argv[4])
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
c.sendall(f"{verb} {n}\n".encode())
if verb == "PUT":
    for off in range(0, n, 1 << 16):
        c.sendall(pattern(off, min(1 << 16, n - off)))
    print(c.recv(64).decode())
else:
    h, got = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b); got += len(b)
    print(h.hexdigest(), got)
"""


def lbadm(t, sock, *args):
    r = t.sh("director", sys.executable, "-m", "lb.director.cli", "--socket", sock, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def start_director(t, sock):
    proc = t.start("director", [sys.executable, "-m", "lb.director.daemon", "-i", "veth10",
                                "-i", "veth12", "--socket", sock],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = t.sh("director", sys.executable, "-m", "lb.director.cli", "--socket", sock, "-L", "-n")
        if r.returncode == 0:
            return proc
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("lbd did not answer")


def offloads(t, role, dev):
    return t.sh(role, "ethtool", "-k", dev).stdout


@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_ten_megabytes_both_ways_with_default_offloads(mode, tmp_path):
    with SelftestTopology(mode) as t:
        assert "tcp-segmentation-offload: on" in offloads(t, "client", "veth01")
        assert "tx-checksumming: on" in offloads(t, "rs", "veth21")
        if mode == "dr":
            # a strict rp_filter, as many distributions set it: the SYN arrives on veth21 and
            # the route back to the client leaves on veth20; setup must loosen it
            for dev in ("all", "veth21"):
                t.sh("rs", "sysctl", "-qw", f"net.ipv4.conf.{dev}.rp_filter=1")
        if mode in ("dr", "tun"):
            r = t.sh("rs", sys.executable, "-m", "lb", "realserver", "setup", "--mode", mode,
                     "--vip", VIP)
            assert r.returncode == 0, r.stderr
        if mode == "dr":
            assert t.sh("rs", "sysctl", "-n", "net.ipv4.conf.veth21.rp_filter").stdout.strip() == "2"
        server = t.start("rs", [sys.executable, "-c", SERVER, str(PORT)],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        sock = str(tmp_path / "lbd.sock")
        lbd = start_director(t, sock)
        lbadm(t, sock, "-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
        lbadm(t, sock, "-a", "-t", f"{VIP}:{PORT}", "-r", f"{RIP}:{PORT}", FLAG[mode])
        up = t.sh("client", sys.executable, "-c", CLIENT, VIP, str(PORT), "PUT", str(SIZE),
                  timeout=60)
        assert up.stdout.strip() == pattern_sha256(SIZE), \
            (up.stdout, up.stderr, lbadm(t, sock, "-L", "-n", "--stats"))
        down = t.sh("client", sys.executable, "-c", CLIENT, VIP, str(PORT), "GET", str(SIZE),
                    timeout=60)
        assert down.stdout.split() == [pattern_sha256(SIZE), str(SIZE)], (down.stdout, down.stderr)
        lbd.terminate()
        lbd.wait(timeout=10)
        if mode == "dr":
            r = t.sh("rs", sys.executable, "-m", "lb", "realserver", "teardown")
            assert r.returncode == 0, r.stderr
            assert t.sh("rs", "sysctl", "-n", "net.ipv4.conf.veth21.rp_filter").stdout.strip() == "1"
