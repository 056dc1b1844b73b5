"""The topology of the kernel's own IPVS selftest (tools/testing/selftests/net/netfilter/ipvs.sh),
on 198.18.0.0/15 and with lbd as the director, veths left with their default offloads
(tx checksumming, TSO/GSO, GRO as they come):

    client ns: br0 198.18.20.2/24 (veth01, veth02)
        veth01 ── veth10  director ns: 198.18.20.1/24 (gip), veth12 198.18.21.1/24 (dip)
        veth02 ── veth20  rs ns:       198.18.20.3/24 (sip, the server's leg on the client's LAN)
                  veth12 ── veth21     rs ns: 198.18.21.2/24 (rip)

The client routes the VIP via the director; DR and TUN replies leave the real server on
veth20, straight to the client; for NAT veth20 is removed and the server's default route is
the director, as in ipvs.sh. Built with iproute2, as the selftest is; always removed.
"""
from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys

from lb.lab.net import pid_alive

VIP, PORT = "198.18.22.110", 8080
CIP, GIP, SIP, DIP, RIP = "198.18.20.2", "198.18.20.1", "198.18.20.3", "198.18.21.1", "198.18.21.2"


def ip(*args) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class SelftestTopology:
    def __init__(self, mode: str):
        self.mode = mode
        prefix = "lbst" + secrets.token_hex(3)
        self.ns = {role: f"{prefix}-{role}" for role in ("client", "director", "rs")}
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc):
        self.down()
        return False

    def exec(self, role: str, *argv) -> list:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def sh(self, role: str, *argv, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(self.exec(role, *argv), capture_output=True, text=True,
                              timeout=timeout)

    def build(self) -> None:
        c, d, r = self.ns["client"], self.ns["director"], self.ns["rs"]
        for ns in (c, d, r):
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
        ip("link", "add", "veth01", "netns", c, "type", "veth", "peer", "name", "veth10", "netns", d)
        ip("link", "add", "veth02", "netns", c, "type", "veth", "peer", "name", "veth20", "netns", r)
        ip("link", "add", "veth12", "netns", d, "type", "veth", "peer", "name", "veth21", "netns", r)
        ip("-n", c, "link", "add", "br0", "type", "bridge")
        for dev in ("veth01", "veth02", "br0"):
            if dev != "br0":
                ip("-n", c, "link", "set", dev, "master", "br0")
            ip("-n", c, "link", "set", dev, "up")
        ip("-n", c, "addr", "add", f"{CIP}/24", "dev", "br0")
        ip("-n", c, "route", "add", VIP, "via", GIP, "dev", "br0")
        ip("-n", d, "addr", "add", f"{GIP}/24", "dev", "veth10")
        ip("-n", d, "addr", "add", f"{DIP}/24", "dev", "veth12")
        ip("-n", r, "addr", "add", f"{RIP}/24", "dev", "veth21")
        ip("-n", r, "addr", "add", f"{SIP}/24", "dev", "veth20")
        for ns, dev in ((d, "veth10"), (d, "veth12"), (r, "veth21"), (r, "veth20")):
            ip("-n", ns, "link", "set", dev, "up")
        if self.mode == "nat":                      # ipvs.sh test_nat
            ip("-n", r, "link", "del", "veth20")
            ip("-n", r, "route", "add", "default", "via", DIP, "dev", "veth21")

    def start(self, role: str, argv, **kw) -> subprocess.Popen:
        proc = subprocess.Popen(self.exec(role, *argv), **kw)
        self.procs.append(proc)
        return proc

    def down(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in self.ns.values():
            if self.mode in ("dr", "tun") and ns == self.ns["rs"]:
                with contextlib.suppress(Exception):
                    self.sh("rs", sys.executable, "-m", "lb", "realserver", "teardown")
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        assert not any(pid_alive(p.pid) for p in self.procs)
