"""lb realserver (DR and TUN real-server side) and the userspace decapsulator, in lab namespaces.

Setup then teardown must leave a namespace exactly as it was; the decapsulator must deliver
an IPIP packet to a server on the VIP, answer from the VIP, count and drop bad packets.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scapy.layers.inet import IP, UDP

from lb.lab.net import NETNS_DIR, pid_alive
from lb.lab.topology import VIPS, Lab
from lb.realserver.undo import STATE_DIR

CLIENT = "198.18.1.2"
GW = "198.18.0.1"
DR_VIP, TUN_VIP = VIPS["dr"], VIPS["tun"]
ECHO_PORT = 7777

SNAPSHOT = r"""
ip -d addr; echo; ip -d link; echo; ip rule; echo; ip route show table all; echo
for f in /proc/sys/net/ipv4/conf/*/arp_ignore /proc/sys/net/ipv4/conf/*/arp_announce \
         /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv6/conf/*/disable_ipv6; do
  echo "$f $(cat $f)"
done
"""


def snapshot(lab, role) -> str:
    r = lab.run(role, ["sh", "-c", SNAPSHOT], timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def realserver(lab, role, *args, timeout=30) -> subprocess.CompletedProcess:
    return lab.run(role, [sys.executable, "-m", "lb", "realserver", *map(str, args)], timeout=timeout)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"rc={r.returncode} out={r.stdout!r} err={r.stderr!r}"
    return r


def sysctl(lab, role, key) -> str:
    return lab.run(role, ["cat", f"/proc/sys/{key.replace('.', '/')}"], timeout=5).stdout.strip()


def write_sysctl(lab, role, key, value) -> None:
    ok(lab.run(role, ["sh", "-c", f"echo {value} > /proc/sys/{key.replace('.', '/')}"], timeout=5))


def state_file(lab, role) -> Path:
    return STATE_DIR / f"netns-{os.stat(NETNS_DIR / lab.ns(role)).st_ino}.json"


@pytest.fixture
def clean(lab):
    """Every RS torn down after the test, whatever happened; each must be as it was before."""
    before = {name: snapshot(lab, name) for name in lab.rs_names}
    yield before
    for name in lab.rs_names:
        realserver(lab, name, "teardown")
    for name in lab.rs_names:
        assert snapshot(lab, name) == before[name], f"{name} not restored"
        assert not state_file(lab, name).exists()


def test_dr_setup_then_teardown_restores_the_namespace(lab, clean):
    out = ok(realserver(lab, "rs3", "setup", "--mode", "dr", "--vip", DR_VIP, "--vip", "198.18.0.105",
                        "--reply-gateway", GW)).stdout
    assert "changed: address 198.18.0.101/32 on lo" in out
    lo = lab.run("rs3", ["ip", "-o", "addr", "show", "dev", "lo"], timeout=5).stdout
    assert f"inet {DR_VIP}/32 scope host lo" in lo and "inet 198.18.0.105/32 scope host lo" in lo
    for dev in ("all", "eth0"):
        assert sysctl(lab, "rs3", f"net.ipv4.conf.{dev}.arp_ignore") == "1"
        assert sysctl(lab, "rs3", f"net.ipv4.conf.{dev}.arp_announce") == "2"
    rules = lab.run("rs3", ["ip", "rule"], timeout=5).stdout
    table = re.search(rf"from {DR_VIP} lookup (\d+)", rules).group(1)
    assert "from 198.18.0.105 lookup " + table in rules
    routes = lab.run("rs3", ["ip", "route", "show", "table", table], timeout=5).stdout
    assert routes.startswith(f"default via {GW} dev eth0")
    status = ok(realserver(lab, "rs3", "status")).stdout
    assert "dr: vips 198.18.0.101, 198.18.0.105 replies via 198.18.0.1" in status
    assert json.loads(state_file(lab, "rs3").read_text())["modes"]["dr"]["vips"] == [DR_VIP, "198.18.0.105"]
    out = ok(realserver(lab, "rs3", "teardown")).stdout
    assert "undone: address 198.18.0.101/32 on lo" in out
    assert snapshot(lab, "rs3") == clean["rs3"]
    assert "nothing set up" in ok(realserver(lab, "rs3", "status")).stdout


def test_tun_setup_then_teardown_restores_the_namespace(lab, clean):
    out = ok(realserver(lab, "rs3", "setup", "--mode", "tun", "--vip", TUN_VIP, "--reply-gateway", GW,
                        "--decap", "userspace")).stdout
    assert "changed: process decap pid" in out
    state = json.loads(state_file(lab, "rs3").read_text())
    assert state["modes"]["tun"]["decap"] == "userspace"
    pid = next(c["pid"] for c in state["changes"] if c["kind"] == "process")
    assert pid_alive(pid)
    tun = lab.run("rs3", ["ip", "-o", "addr", "show", "dev", "lbtun0"], timeout=5).stdout
    assert f"inet {TUN_VIP}/32 scope host lbtun0" in tun
    assert sysctl(lab, "rs3", "net.ipv4.conf.lbtun0.rp_filter") == "0"
    assert sysctl(lab, "rs3", "net.ipv4.conf.all.arp_ignore") == "1"
    assert "running;" in ok(realserver(lab, "rs3", "status")).stdout
    out = ok(realserver(lab, "rs3", "teardown", "--mode", "tun")).stdout
    assert "lb.realserver.decap: stopped; counters:" in out
    assert not pid_alive(pid)
    assert snapshot(lab, "rs3") == clean["rs3"]


def test_tun_auto_is_the_xdp_decapsulator_and_teardown_removes_it(lab, clean):
    # this kernel has no ipip: auto takes the XDP program, on every interface but lo
    write_sysctl(lab, "rs3", "net.ipv4.conf.eth0.rp_filter", 1)
    try:
        before = snapshot(lab, "rs3")
        out = ok(realserver(lab, "rs3", "setup", "--mode", "tun", "--vip", TUN_VIP, "--reply-gateway", GW)).stdout
        assert re.search(r"changed: XDP decapsulator \(program \d+, generic\) on eth0", out), out
        assert json.loads(state_file(lab, "rs3").read_text())["modes"]["tun"]["decap"] == "xdp (eth0)"
        link = lab.run("rs3", ["ip", "-d", "link", "show", "eth0"], timeout=5).stdout
        assert "prog/xdp" in link and "lb_ipip_decap" in link, link
        assert f"inet {TUN_VIP}/32 scope host lo" in lab.run("rs3", ["ip", "-o", "addr", "show", "dev", "lo"],
                                                            timeout=5).stdout
        assert sysctl(lab, "rs3", "net.ipv4.conf.eth0.rp_filter") == "2"   # strict made loose
        assert "tun: vips 198.18.0.102 replies via 198.18.0.1 decap xdp (eth0)" in \
            ok(realserver(lab, "rs3", "status")).stdout
        out = ok(realserver(lab, "rs3", "teardown", "--mode", "tun")).stdout
        assert "undone: XDP decapsulator" in out
        assert snapshot(lab, "rs3") == before
    finally:
        write_sysctl(lab, "rs3", "net.ipv4.conf.eth0.rp_filter", 0)


def test_xdp_teardown_leaves_a_program_that_is_not_ours(lab, clean):
    ok(realserver(lab, "rs2", "setup", "--mode", "tun", "--vip", TUN_VIP, "--decap", "xdp"))
    code = ("from pyroute2 import IPRoute; from lb.realserver import xdp_decap as x\n"
            "with IPRoute() as ipr:\n"
            "    i = ipr.link_lookup(ifname='eth0')[0]; old = x.attached_id(ipr, i)\n"
            "    fd = x.load(x.program(['198.18.0.99']))\n"
            "    ipr.link('set', index=i, xdp={'attrs': [('IFLA_XDP_FD', fd), ('IFLA_XDP_FLAGS', 2)]})\n"
            "    print(old, x.attached_id(ipr, i))")
    old, new = ok(lab.run("rs2", [sys.executable, "-c", code], timeout=10)).stdout.split()
    assert old != new
    r = realserver(lab, "rs2", "teardown")
    assert r.returncode == 1 and "has another XDP program now, not ours" in r.stdout + r.stderr, r
    assert f"prog/xdp id {new} " in lab.run("rs2", ["ip", "-d", "link", "show", "eth0"], timeout=5).stdout
    ok(lab.run("rs2", ["ip", "link", "set", "dev", "eth0", "xdpgeneric", "off"], timeout=5))
    ok(realserver(lab, "rs2", "teardown"))              # retried: now nothing is in the way
    assert snapshot(lab, "rs2") == clean["rs2"]


def test_old_values_come_back_and_higher_ones_are_kept(lab, clean):
    # rp_filter on (TUN turns it off), eth0's arp_ignore above what DR needs (kept as it is).
    write_sysctl(lab, "rs2", "net.ipv4.conf.all.rp_filter", 2)
    write_sysctl(lab, "rs2", "net.ipv4.conf.eth0.arp_ignore", 2)
    try:
        before = snapshot(lab, "rs2")
        ok(realserver(lab, "rs2", "setup", "--mode", "tun", "--vip", TUN_VIP))
        assert sysctl(lab, "rs2", "net.ipv4.conf.all.rp_filter") == "0"
        assert sysctl(lab, "rs2", "net.ipv4.conf.eth0.arp_ignore") == "2"
        ok(realserver(lab, "rs2", "teardown"))
        assert snapshot(lab, "rs2") == before
        assert sysctl(lab, "rs2", "net.ipv4.conf.all.rp_filter") == "2"
    finally:
        write_sysctl(lab, "rs2", "net.ipv4.conf.all.rp_filter", 0)
        write_sysctl(lab, "rs2", "net.ipv4.conf.eth0.arp_ignore", 0)


def test_dr_and_tun_side_by_side(lab, clean):
    ok(realserver(lab, "rs1", "setup", "--mode", "dr", "--vip", DR_VIP, "--reply-gateway", GW))
    out = ok(realserver(lab, "rs1", "setup", "--mode", "tun", "--vip", TUN_VIP, "--reply-gateway", GW)).stdout
    assert "shared: sysctl net.ipv4.conf.all.arp_ignore 0 -> 1" in out
    assert "shared: route default via 198.18.0.1" in out
    ok(realserver(lab, "rs1", "teardown", "--mode", "dr"))
    # TUN still needs the ARP settings and the reply route; DR's VIP is gone.
    assert sysctl(lab, "rs1", "net.ipv4.conf.all.arp_ignore") == "1"
    assert DR_VIP not in lab.run("rs1", ["ip", "-o", "addr"], timeout=5).stdout
    assert f"from {TUN_VIP} lookup" in lab.run("rs1", ["ip", "rule"], timeout=5).stdout
    assert f"from {DR_VIP} lookup" not in lab.run("rs1", ["ip", "rule"], timeout=5).stdout
    assert "tun: vips 198.18.0.102" in ok(realserver(lab, "rs1", "status")).stdout
    ok(realserver(lab, "rs1", "teardown"))
    assert snapshot(lab, "rs1") == clean["rs1"]


def test_refusals_change_nothing(lab, clean):
    ok(realserver(lab, "rs2", "setup", "--mode", "dr", "--vip", DR_VIP))
    middle = snapshot(lab, "rs2")
    for args, words in ((["setup", "--mode", "dr", "--vip", "198.18.0.106"], "already set up"),
                        (["setup", "--mode", "tun", "--vip", DR_VIP], "already used by dr"),
                        (["setup", "--mode", "tun", "--vip", "198.18.0.12"], "already an address on eth0"),
                        (["setup", "--mode", "tun", "--vip", "not-an-ip"], "bad VIP"),
                        (["setup", "--vip", TUN_VIP], "needs --mode"),
                        (["teardown", "--mode", "tun"], "tun is not set up here")):
        r = realserver(lab, "rs2", *args)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    assert snapshot(lab, "rs2") == middle


def test_failed_setup_is_rolled_back(lab, clean):
    # A gateway that is not on any attached network: the route is refused after the VIP,
    # the sysctls and the decapsulator are in place; all of it must be undone.
    r = realserver(lab, "rs2", "setup", "--mode", "tun", "--vip", TUN_VIP, "--reply-gateway", "198.19.99.1")
    assert r.returncode == 1 and "rolled back" in r.stderr, r.stderr
    assert snapshot(lab, "rs2") == clean["rs2"]
    assert not state_file(lab, "rs2").exists()


# -- the decapsulator --------------------------------------------------------------------------

def _udp_echo_on_vip(lab, role):
    proc = lab.popen(role, [sys.executable, "-m", "lb.lab.servers", "--udp-only", "--name", role,
                            "--host", TUN_VIP, "--udp-port", str(ECHO_PORT)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
    return proc


def _counters(lab, role) -> dict:
    state = json.loads(state_file(lab, role).read_text())
    stats = next(c["stats"] for c in state["changes"] if c["kind"] == "process")
    try:
        return json.loads(Path(stats).read_text())["counters"]
    except (OSError, ValueError):
        return {}


def _wait_counters(lab, role, want: dict, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = _counters(lab, role)
        if all(got.get(k) == v for k, v in want.items()):
            return got
        time.sleep(0.1)
    return _counters(lab, role)


class Client:
    """A UDP socket in the client namespace for the replies; in the router namespace (on the
    RS LAN, so an ICMP error from a RS comes straight back) a raw IPIP socket to send with
    (the kernel writes the outer header router -> RIP) and an ICMP socket to see complaints.
    The inner packets are the client's, as the director would tunnel them."""

    def __init__(self, lab):
        self.udp = lab.socket("client", socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((CLIENT, 0))
        self.port = self.udp.getsockname()[1]
        self.ipip = lab.socket("router", socket.AF_INET, socket.SOCK_RAW, 4)
        self.icmp = lab.socket("router", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        self.icmp.setblocking(False)

    def close(self):
        for s in (self.udp, self.ipip, self.icmp):
            s.close()

    def inner(self, payload=b"hello", dst=TUN_VIP) -> bytes:
        return bytes(IP(src=CLIENT, dst=dst) / UDP(sport=self.port, dport=ECHO_PORT) / payload)

    def send(self, rip, inner: bytes) -> None:
        self.ipip.sendto(inner, (rip, 0))

    def reply(self, timeout=3.0):
        self.udp.settimeout(timeout)
        try:
            return self.udp.recvfrom(2048)
        except socket.timeout:
            return None, None

    def protocol_unreachables(self, rip) -> int:
        n = 0
        while True:
            try:
                data, peer = self.icmp.recvfrom(2048)
            except BlockingIOError:
                return n
            icmp = data[(data[0] & 0x0F) * 4:]
            n += peer[0] == rip and icmp[:2] == b"\x03\x02"


def test_decapsulator_delivers_to_the_vip_and_survives_bad_packets(lab, clean):
    rip = lab.rs_addr("rs1")
    ok(realserver(lab, "rs1", "setup", "--mode", "tun", "--vip", TUN_VIP, "--reply-gateway", GW,
                  "--decap", "userspace"))
    echo = _udp_echo_on_vip(lab, "rs1")
    client = Client(lab)
    try:
        client.send(rip, client.inner(b"first"))
        data, peer = client.reply()
        assert peer == (TUN_VIP, ECHO_PORT)                      # the answer comes from the VIP
        assert data == f"rs1 client={CLIENT}:{client.port} first".encode()

        good = client.inner(b"x")
        bad = {
            "truncated": [b"\x45\x00", good[:19], good[:2] + (500).to_bytes(2, "big") + good[4:]],
            "bad_inner": [b"\x60" + good[1:], good[:10] + b"\x00\x01" + good[12:], b"\x43" + good[1:]],
            "not_a_vip": [client.inner(b"x", dst="198.18.0.150")],
        }
        for packets in bad.values():
            for pkt in packets:
                client.send(rip, pkt)
        want = {"forwarded": 1, "truncated": 3, "bad_inner": 3, "not_a_vip": 1}
        assert _wait_counters(lab, "rs1", want) == {"not_ipip": 0, "bad_outer": 0, "write_failed": 0, **want}
        assert client.reply(timeout=0.5) == (None, None)           # nothing bad got through
        assert client.protocol_unreachables(rip) == 0              # the raw socket took them all

        client.send(rip, client.inner(b"again"))                   # and it still works
        data, peer = client.reply()
        assert peer == (TUN_VIP, ECHO_PORT) and data.endswith(b" again")
    finally:
        client.close()
        lab.stop_process(echo.pid)
    out = ok(realserver(lab, "rs1", "teardown")).stdout
    assert "stopped; counters: not_ipip=0 truncated=3 bad_outer=0 bad_inner=3 not_a_vip=1 forwarded=2" in out


def test_without_the_decapsulator_the_kernel_refuses_ipip(lab):
    # The reference point for protocol_unreachables() above: same packet, no decapsulator.
    client = Client(lab)
    try:
        client.send(lab.rs_addr("rs2"), client.inner())
        deadline = time.monotonic() + 3
        while (n := client.protocol_unreachables(lab.rs_addr("rs2"))) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert n == 1
    finally:
        client.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_decapsulator_stops_cleanly(lab, sig, tmp_path):
    stats = tmp_path / "stats.json"
    before = snapshot(lab, "rs2")
    proc = lab.popen("rs2", [sys.executable, "-m", "lb.realserver.decap", "--vip", "198.18.0.150", "--ifname", "lbtest0",
                             "--stats-file", stats], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline().startswith(b"ready ifname=lbtest0 vips=198.18.0.150")
        assert "198.18.0.150/32" in lab.run("rs2", ["ip", "-o", "addr", "show", "dev", "lbtest0"], timeout=5).stdout
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=10) == 0
        assert b"lb.realserver.decap: stopped; counters: not_ipip=0" in proc.stderr.read()
        assert json.loads(stats.read_text())["counters"]["forwarded"] == 0
        assert snapshot(lab, "rs2") == before                       # the TUN device went with it
    finally:
        if proc.poll() is None:
            lab.stop_process(proc.pid)


def test_decapsulator_refuses_a_bad_vip(lab):
    r = lab.run("rs2", [sys.executable, "-m", "lb.realserver.decap", "--vip", "nope"], timeout=30)
    assert r.returncode == 2 and "nope" in r.stderr


# -- the lab's DR and TUN real servers, through the director -----------------------------------

def test_lab_setup_and_teardown_realservers(lab, clean):
    lab.setup_realservers("dr")
    lab.setup_realservers("tun")
    for name in lab.rs_names:
        status = ok(realserver(lab, name, "status")).stdout
        assert "dr: vips 198.18.0.101" in status and "tun: vips 198.18.0.102" in status
    lab.teardown_realservers("dr")
    assert "dr:" not in ok(realserver(lab, "rs1", "status")).stdout
    lab.teardown_realservers()
    # `clean` checks every RS is exactly as before


@pytest.mark.parametrize("mode, flag", [("dr", "-g"), ("tun", "-i")])
def test_through_the_director(lab, director, realservers, mode, flag):
    vip = lab.addr["vips"][mode]
    for proto, port in (("-t", 80), ("-u", 5353)):
        ok(director.lbadm("-A", proto, f"{vip}:{port}", "-s", "rr"))
        for rip in lab.addr["rs"]:
            ok(director.lbadm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", flag))
    realservers(mode)
    seen = []
    for _ in range(3):
        r = lab.http_get("client", f"http://{vip}/", timeout=5)
        assert r.returncode == 0, r.stderr
        seen.append(r.stdout.split()[:2])
    for i in range(3):
        reply = lab.udp_query("client", vip, 5353, b"u%d" % i)
        assert reply is not None
        seen.append(reply.decode().split()[:2])
    assert sorted(name for name, _ in seen) == ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"]
    assert {client.split("=")[1].rsplit(":", 1)[0] for _, client in seen} == {CLIENT}


def test_demo_shows_the_three_modes():
    r = subprocess.run([sys.executable, "-m", "lb", "demo", "--count", "3"], capture_output=True, text=True,
                       timeout=240, env=Lab().env())
    assert r.returncode == 0, r.stdout + r.stderr
    # As root every mode can be set up: "unavailable" would be a failure, not an excuse.
    assert "unavailable" not in r.stdout, r.stdout
    # 'nat (lbd) tcp 1 rs1 198.18.1.2:40000 -' -> mode, proto, n, rs, peer, toa
    rows = [(w[0], w[2], int(w[3]), w[4], w[5], w[6]) for w in map(str.split, r.stdout.splitlines())
            if len(w) == 7 and w[1] == "(lbd)"]
    protos = {"nat": ("tcp", "udp"), "dr": ("tcp", "udp"), "tun": ("tcp", "udp"),
              "fullnat": ("tcp", "udp"), "enat": ("tcp", "udp")}
    assert sorted((m, p, n) for m, p, n, *_ in rows) == \
        sorted((m, p, n) for m, ps in protos.items() for p in ps for n in (1, 2, 3)), r.stdout
    for mode, proto, n, rs, peer, toa in rows:
        assert rs in ("rs1", "rs2", "rs3"), (mode, proto, n, rs, peer)
        host = peer.rsplit(":", 1)[0]
        if mode in ("nat", "dr", "tun"):            # the RS sees the real client itself
            assert host == CLIENT and toa == "-", (mode, proto, peer, toa)
        elif mode == "fullnat":                     # a local address, the client in TOA (TCP only)
            assert host in ("198.18.0.3", "198.18.0.4"), (mode, proto, peer)
            assert toa.rsplit(":", 1)[0] == (CLIENT if proto == "tcp" else "-"), (mode, proto, toa)
        else:                                       # enat: the VIP lent as the peer, TOA the client
            assert host == VIPS["enat"], (mode, proto, peer)  # (UDP: UOA, which only the agent reads)
            assert toa.rsplit(":", 1)[0] == (CLIENT if proto == "tcp" else "-"), (mode, proto, toa)
    for mode in protos:                             # rr over three servers: each once per protocol
        assert sorted(rs for m, p, _, rs, _, _ in rows if m == mode and p == "tcp") == ["rs1", "rs2", "rs3"]
