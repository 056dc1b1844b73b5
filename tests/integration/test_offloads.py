"""Real traffic with the veths' default offloads: the client's and the server's TSO/GSO
aggregates and CHECKSUM_PARTIAL frames reach the fast path as they come, and 10 MB must arrive
intact both ways -- through NAT, DR and TUN on the kernel selftest's topology, and through
FULLNAT and ENAT on the routed lab (real servers on a network of their own behind the router,
Lab(rs_net="routed")), where the TOA must also reach the real server."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.servers import pattern_sha256
from lb.lab.topology import Lab
from tests.integration.helpers import ok, wait_until
from tests.integration.selftest_topology import PORT, RIP, VIP, SelftestTopology

SIZE = 10 * 1000 * 1000
DECAP_STATS = ("from lb.realserver.undo import netns_inode, side_file; "
               "print(side_file(netns_inode(), 'decap.json').read_text())")
FLAG = {"nat": "-m", "dr": "-g", "tun": "-i", "fullnat": "-b", "enat": "--enat"}

# The real server: "PUT n" then n bytes -> the sha256 of what arrived and the TOA of the
# connection's SYN ("toa=IP:PORT", or "toa=None"); "GET n" -> n bytes of
# lb.lab.servers.pattern. One connection at a time, bounded in time.
SERVER = r"""
import hashlib, socket, sys
from lb.lab.servers import pattern
from lb.realserver import toa
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); toa.enable_saved_syn(s); s.listen(8); s.settimeout(60)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.settimeout(30)
    t = toa.parse_toa(toa.saved_syn(c) or b"")
    f = c.makefile("rb")
    verb, n = f.readline().split(); n = int(n)
    if verb == b"PUT":
        h, left = hashlib.sha256(), n
        while left:
            b = f.read(min(left, 1 << 16))
            if not b: break
            h.update(b); left -= len(b)
        c.sendall(f"{h.hexdigest()} toa={t[0] + ':' + str(t[1]) if t else None}".encode())
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
    print(c.makefile("rb").read().decode(), c.getsockname()[1])
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


def start_director(t, sock, ring="split", *extra):
    proc = t.start("director", [sys.executable, "-m", "lb.director.daemon", "-i", "veth10",
                                "-i", "veth12", "--socket", sock, "--rx-ring", ring, *extra],
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = t.sh("director", sys.executable, "-m", "lb.director.cli", "--socket", sock, "-L", "-n")
        if r.returncode == 0:
            return proc
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.2)
    raise AssertionError("lbd did not answer")


def nstat(t, role, counter) -> int:
    out = t.sh(role, "nstat", "-asz", counter).stdout.split()
    return int(out[out.index(counter) + 1])


def offloads(t, role, dev):
    return t.sh(role, "ethtool", "-k", dev).stdout


# Every receive ring lbd offers: split (the default; its 75-slot ring of big slots is all a
# bulk DR transfer uses, which once made a visit go round it), v2 and v3.
# TUN with each decapsulator this kernel can have, the XDP program (auto's choice) and userspace,
# and with lbd cutting the aggregates itself (--tun-segment lbd: the decapsulator's GRO).
@pytest.mark.parametrize("mode,ring,decap", [("nat", "split", None), ("dr", "split", None),
                                             ("tun", "split", "xdp"), ("tun", "split", "userspace"),
                                             ("tun", "split", "userspace/lbd-cuts"),
                                             ("nat", "v2", None), ("dr", "v2", None), ("dr", "v3", None)])
def test_ten_megabytes_both_ways_with_default_offloads(mode, ring, decap, tmp_path):
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
                     "--vip", VIP, *(["--decap", decap.split("/")[0]] if decap else []))
            assert r.returncode == 0, r.stderr
            if decap == "xdp":
                assert "changed: XDP decapsulator" in r.stdout and "on veth21" in r.stdout, r.stdout
        if mode == "dr":
            assert t.sh("rs", "sysctl", "-n", "net.ipv4.conf.veth21.rp_filter").stdout.strip() == "2"
        server = t.start("rs", [sys.executable, "-c", SERVER, str(PORT)],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        sock = str(tmp_path / "lbd.sock")
        lbd = start_director(t, sock, ring, *(["--tun-segment", "lbd"] if decap == "userspace/lbd-cuts" else []))
        lbadm(t, sock, "-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
        lbadm(t, sock, "-a", "-t", f"{VIP}:{PORT}", "-r", f"{RIP}:{PORT}", FLAG[mode])
        up = t.sh("client", sys.executable, "-c", CLIENT, VIP, str(PORT), "PUT", str(SIZE),
                  timeout=60)
        assert up.stdout.split()[0] == pattern_sha256(SIZE), \
            (up.stdout, up.stderr, lbadm(t, sock, "-L", "-n", "--stats"))
        if mode == "tun":
            # lbd sent the aggregates whole (its tc program marked them IPIP) and the veth
            # handed them over so: the XDP program and the decapsulator (whose raw socket
            # cannot tell it) both leave the inner checksum partial, and nothing was rejected
            assert nstat(t, "rs", "TcpInCsumErrors") == 0
        if decap and decap.startswith("userspace"):
            cut = decap.endswith("lbd-cuts")  # segments, merged again by the decapsulator's GRO
            def decap_stats():        # written every 0.2 s while it changes: wait for the upload's
                got = json.loads(t.sh("rs", sys.executable, "-c", DECAP_STATS).stdout)
                return got if got["counters"]["forwarded"] >= SIZE // (1500 if cut else 65536) else None
            got = wait_until(decap_stats, 10, "the decapsulator's stats file counts the upload")
            assert got["tun_frames"] < got["counters"]["forwarded"] // 4 if cut else \
                got["tun_frames"] <= got["counters"]["forwarded"], got
        down = t.sh("client", sys.executable, "-c", CLIENT, VIP, str(PORT), "GET", str(SIZE),
                    timeout=60)
        assert down.stdout.split() == [pattern_sha256(SIZE), str(SIZE)], (down.stdout, down.stderr)
        egress = t.sh("director", "tc", "filter", "show", "dev", "veth12", "egress").stdout
        assert ("lb_tun_encap" in egress) == (decap != "userspace/lbd-cuts"), egress
        lbd.terminate()
        lbd.wait(timeout=10)
        assert "clsact" not in t.sh("director", "tc", "qdisc", "show", "dev", "veth12").stdout
        if mode == "dr":
            r = t.sh("rs", sys.executable, "-m", "lb", "realserver", "teardown")
            assert r.returncode == 0, r.stderr
            assert t.sh("rs", "sysctl", "-n", "net.ipv4.conf.veth21.rp_filter").stdout.strip() == "1"


def transfers(run, vip):
    """10 MB up (the server's sha256 and the TOA it read, the client's port) and 10 MB down."""
    up = run(sys.executable, "-c", CLIENT, vip, str(PORT), "PUT", str(SIZE))
    down = run(sys.executable, "-c", CLIENT, vip, str(PORT), "GET", str(SIZE))
    return up, down


@pytest.mark.parametrize("mode,enat_reply", [("fullnat", None), ("enat", "userspace"), ("enat", "tc")])
def test_ten_megabytes_both_ways_routed_with_default_offloads(mode, enat_reply):
    """The routed lab (client - router - director on the LAN; the real server on a network of
    its own behind the router), every veth as it comes: the client's TSO aggregates and the
    server's partial checksums pass FULLNAT's and ENAT's rewrites (and the TOA the director
    adds) whole; ENAT's replies leave through the agent (`userspace`) or its tc program (`tc`,
    the server's GSO aggregates rewritten whole), FULLNAT's through the director."""
    lab = Lab(n_rs=1, rs_net="routed", offloads="on")
    try:
        lab.up()
        for role in ("client", "rs1"):
            features = lab.run(role, ["ethtool", "-k", "eth0"], timeout=10).stdout
            assert "tcp-segmentation-offload: on" in features and "tx-checksumming: on" in features
        # Between two veths a partial checksum is never completed: the receiving stack trusts
        # CHECKSUM_PARTIAL, so a wrong pseudo-header sum from the director would pass unseen.
        # The router's ports towards the client and the RS complete it in software, as a NIC
        # without checksum offload makes the kernel do (skb_checksum_help, seeded with what the
        # director left there): the endpoints then verify what the director wrote.
        for dev in ("to-client", "p-rs1"):
            ok(lab.run("router", ["ethtool", "-K", dev, "tx", "off"], timeout=10))
        if enat_reply:
            gw = lab.addr.get("router_rs", lab.addr["router_lan"])
            ok(lab.run("rs1", [sys.executable, "-m", "lb", "realserver", "setup", "--mode", "enat", "--vip",
                               lab.addr["vips"]["enat"], "--reply-gateway", gw, "--enat-reply", enat_reply],
                       timeout=30))
            assert f"agent {enat_reply}" in lab.run("rs1", [sys.executable, "-m", "lb", "realserver", "status"],
                                                    timeout=30).stdout
        server = lab.popen("rs1", [sys.executable, "-c", SERVER, str(PORT)], stdout=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "ready"
        vip, rip = lab.addr["vips"][mode], lab.addr["rs"][0]
        with LabDirector(lab) as d:
            ok(d.lbadm("-A", "-t", f"{vip}:{PORT}", "-s", "rr"))
            if mode == "fullnat":
                ok(d.lbadm("--add-laddr", "-t", f"{vip}:{PORT}", "-z", lab.addr["lips"][0]))
            ok(d.lbadm("-a", "-t", f"{vip}:{PORT}", "-r", f"{rip}:{PORT}", FLAG[mode]))
            up, down = transfers(lambda *argv: lab.run("client", argv, timeout=60), vip)
            stats = d.lbadm("-L", "-n", "--stats").stdout
        digest, toa, cport = (up.stdout.split() + ["", "", ""])[:3]
        assert digest == pattern_sha256(SIZE), (up.stdout, up.stderr, stats)
        assert toa == f"toa={lab.addr['client']}:{cport}", up.stdout
        assert down.stdout.split() == [pattern_sha256(SIZE), str(SIZE)], (down.stdout, down.stderr, stats)
        if enat_reply:
            time.sleep(0.5)                       # (the agent writes its counters every 0.2 s)
            got = agent_counters(lab.run("rs1", [sys.executable, "-m", "lb", "realserver", "status"],
                                         timeout=30).stdout)
            tc, agent = got.get("rewritten_tc", 0), got.get("rewritten", 0)
            # tc: the program takes all but each connection's SYN-ACK and FIN, and the replies
            # the server sent before the agent had learned the SYN (they wait in its device; a
            # few dozen on a busy CPU); 10 MB down are aggregates, not 7000 segments
            assert (agent < 300 and agent < tc < 4000) if enat_reply == "tc" else (tc == 0 and agent > 7000), got
            assert got.get("failed_tc", 0) == 0 and got.get("send_failed", 0) == 0, got
    finally:
        lab.down()
    assert lab.namespaces() == []


def agent_counters(status: str) -> dict:
    """The ENAT agent's counters from `lb realserver status` (its "running; k=v ..." line)."""
    line = next(x for x in status.splitlines() if "process enat_agent" in x)
    return {k: int(v) for k, v in (w.split("=", 1) for w in line.split("running;")[1].split() if "=" in w)}
