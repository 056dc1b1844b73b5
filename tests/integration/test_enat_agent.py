"""The ENAT real-server side in a routed lab, without any director: the test plays the director.

From the director namespace it sends what an ENAT director would (VIP:lport -> RIP:80 with the
client in the TOA); the agent on rs1 must turn the server's answers into VIP:80 -> CIP:cport,
which arrive in the client namespace without passing the director. Bad packets are counted,
the agent stops cleanly, and setup + teardown leave rs1 as it was.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest
from scapy.layers.inet import IP, TCP
from scapy.packet import Raw

from lb.lab.net import NETNS_DIR, pid_alive
from lb.lab.topology import VIPS
from lb.realserver.undo import STATE_DIR

VIP = VIPS["enat"]
ETH_P_IP = 0x0800
DEADLINE = 5.0


SNAPSHOT = r"""
ip -d addr; echo; ip -d link; echo; ip rule; echo; ip route show table all; echo
for f in /proc/sys/net/ipv4/conf/*/rp_filter /proc/sys/net/ipv4/conf/*/arp_ignore; do echo "$f $(cat $f)"; done
"""


def snapshot(lab, role) -> str:
    r = lab.run(role, ["sh", "-c", SNAPSHOT], timeout=10)
    assert r.returncode == 0, r.stderr
    return r.stdout


def realserver(lab, role, *args):
    r = lab.run(role, [sys.executable, "-m", "lb", "realserver", *map(str, args)], timeout=30)
    assert r.returncode == 0, f"rc={r.returncode} out={r.stdout!r} err={r.stderr!r}"
    return r.stdout


def state(lab, role) -> dict:
    path = STATE_DIR / f"netns-{os.stat(NETNS_DIR / lab.ns(role)).st_ino}.json"
    return json.loads(path.read_text())


def agent_counters(lab, role, want=None) -> dict:
    """The agent's counters from its stats file; with `want`, wait until they reach it."""
    item = next(c for c in state(lab, role)["changes"] if c["kind"] == "process")
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            counters = json.loads(open(item["stats"]).read())["counters"]
        except (OSError, ValueError):
            counters = {}
        if not want or all(counters.get(k, 0) >= v for k, v in want.items()) or time.monotonic() > deadline:
            return counters
        time.sleep(0.1)


@pytest.fixture
def enat_rs1(rlab):
    """rs1 set up for ENAT; torn down afterwards, and exactly as before."""
    before = snapshot(rlab, "rs1")
    out = realserver(rlab, "rs1", "setup", "--mode", "enat", "--vip", VIP)
    yield out
    out = realserver(rlab, "rs1", "teardown")
    assert "lb.realserver.enat_agent: stopped; counters:" in out
    assert snapshot(rlab, "rs1") == before


class RawSender:
    """The test's stand-in for an ENAT director: raw IP out of the director namespace."""

    def __init__(self, lab):
        self.sock = lab.socket("director", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)

    def send(self, pkt) -> None:
        self.sock.sendto(bytes(pkt), (pkt[IP].dst, 0))

    def close(self):
        self.sock.close()


def capture(lab, role) -> socket.socket:
    """Every IPv4 packet arriving in the role's namespace (AF_PACKET, outgoing ones left out)."""
    s = lab.socket(role, socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    s.settimeout(0.2)
    return s


def wait_for(sock, match, deadline=DEADLINE):
    """The first captured packet for which match(IP) is true, or None after `deadline` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        try:
            data, addr = sock.recvfrom(65535)
        except socket.timeout:
            continue
        if addr[2] == socket.PACKET_OUTGOING:
            continue
        pkt = IP(data)
        if match(pkt):
            return pkt
    return None


def checksums_ok(pkt: IP) -> bool:
    again = pkt.copy()
    del again.chksum
    del again.payload.chksum
    again = IP(bytes(again))
    return again.chksum == pkt.chksum and again.payload.chksum == pkt.payload.chksum


def toa(ip, port) -> tuple:
    return (254, struct.pack("!H", port) + socket.inet_aton(ip))


def test_routed_lab_topology(rlab):
    assert rlab.addr["rs"] == ["198.18.2.11", "198.18.2.12", "198.18.2.13"]
    assert rlab.addr["lips"] == ["198.18.0.3", "198.18.0.4"]
    assert rlab.ping("director", "198.18.2.11") and rlab.ping("rs2", rlab.addr["client"])
    assert rlab.ping("client", "198.18.0.3")                    # the LIPs answer from the director
    routes = rlab.run("director", ["ip", "route"], timeout=5).stdout
    assert "198.18.2.0/24 via 198.18.0.1" in routes
    assert "default via 198.18.2.1" in rlab.run("rs1", ["ip", "route"], timeout=5).stdout
    r = rlab.http_get("client", "http://198.18.2.12/")
    assert r.stdout.startswith(f"rs2 client={rlab.addr['client']}:")
    assert "rs_net=routed" in rlab.status()


def test_syn_ack_and_answer_go_straight_to_the_client(rlab, enat_rs1):
    assert "changed: process enat_agent pid" in enat_rs1
    rip, cip, cport, lport = rlab.rs_addr("rs1"), rlab.addr["client"], 40123, 31001
    client_cap, director_cap = capture(rlab, "client"), capture(rlab, "director")
    director = RawSender(rlab)
    try:
        base = IP(src=VIP, dst=rip) / TCP(sport=lport, dport=80)
        director.send(IP(src=VIP, dst=rip) / TCP(sport=lport, dport=80, flags="S", seq=1000,
                                                  options=[toa(cip, cport), ("MSS", 1400)]))
        synack = wait_for(client_cap, lambda p: TCP in p and p[TCP].dport == cport)
        assert synack is not None, f"no SYN-ACK at the client; agent: {agent_counters(rlab, 'rs1')}"
        assert (synack.src, synack.dst, synack[TCP].sport, synack[TCP].flags) == (VIP, cip, 80, "SA")
        assert synack[TCP].ack == 1001 and checksums_ok(synack)
        # The handshake's end and a request, as the director would pass them on.
        seq = synack[TCP].seq + 1
        base[TCP].flags, base[TCP].seq, base[TCP].ack = "A", 1001, seq
        director.send(base)
        director.send(IP(src=VIP, dst=rip) / TCP(sport=lport, dport=80, flags="PA", seq=1001, ack=seq)
                      / Raw(b"GET / HTTP/1.0\r\n\r\n"))
        data = wait_for(client_cap, lambda p: TCP in p and p[TCP].dport == cport and Raw in p
                        and b"client=" in p[Raw].load)
        assert data is not None, f"no answer at the client; agent: {agent_counters(rlab, 'rs1')}"
        assert checksums_ok(data) and (data.src, data[TCP].sport) == (VIP, 80)
        assert f"rs1 client={VIP}:{lport} toa={cip}:{cport}".encode() in data[Raw].load
        director.send(IP(src=VIP, dst=rip) / TCP(sport=lport, dport=80, flags="R", seq=1001 + 18))
        # Nothing the server sent came back through the director.
        assert wait_for(director_cap, lambda p: p.src == rip, deadline=0.5) is None
        got = agent_counters(rlab, "rs1", {"learned": 1, "rewritten": 2, "in_rst": 1})
        assert got["learned"] == 1 and got["rewritten"] >= 2 and got["in_rst"] == 1, got
    finally:
        director.close()
        client_cap.close()
        director_cap.close()


def test_bad_and_unknown_packets_are_counted(rlab, enat_rs1):
    rip = rlab.rs_addr("rs1")
    director = RawSender(rlab)
    try:
        # A SYN without TOA: the kernel answers, the agent cannot place the answer.
        director.send(IP(src=VIP, dst=rip) / TCP(sport=31002, dport=80, flags="S", seq=5))
        # A TCP header whose data offset is 3 (the filter passes it on its SYN flag).
        bad = bytearray(bytes(IP(src=VIP, dst=rip) / TCP(sport=31003, dport=80, flags="S")))
        bad[32] = 0x30
        director.send(IP(bytes(bad)))
    finally:
        director.close()
    # The server itself sends to the VIP: ICMP and UDP into the agent's device.
    assert not rlab.ping("rs1", VIP, tries=1, interval=0.3)
    with rlab.socket("rs1") as s:
        s.sendto(b"x", (VIP, 9))
    got = agent_counters(rlab, "rs1", {"syn_without_toa": 1, "in_malformed": 1, "unknown_flow": 2,
                                       "not_tcp_udp": 1})
    assert got["syn_without_toa"] == 1 and got["in_malformed"] == 1, got
    assert got["not_tcp_udp"] >= 1 and got["unknown_flow"] >= 2 and got["rewritten"] == 0, got
    status = realserver(rlab, "rs1", "status")
    assert "enat: vips 198.18.0.104" in status and "running; " in status


def test_setup_state_and_clean_stop(rlab):
    before = snapshot(rlab, "rs2")
    realserver(rlab, "rs2", "setup", "--mode", "enat", "--vip", VIP, "--map-port", "8080:80")
    try:
        item = next(c for c in state(rlab, "rs2")["changes"] if c["kind"] == "process")
        assert item["name"] == "enat_agent" and pid_alive(item["pid"]) and "--map-port=8080:80" in item["argv"]
        routes = rlab.run("rs2", ["ip", "route"], timeout=5).stdout
        assert f"{VIP} dev lbenat0" in routes
        # a second setup of the same mode is refused, and so is a VIP the server holds
        r = rlab.run("rs2", [sys.executable, "-m", "lb", "realserver", "setup", "--mode", "enat", "--vip", VIP],
                     timeout=30)
        assert r.returncode == 1 and "already set up" in r.stderr
    finally:
        out = realserver(rlab, "rs2", "teardown", "--mode", "enat")
    assert "lb.realserver.enat_agent: stopped; counters:" in out and not pid_alive(item["pid"])
    assert "lbenat0" not in rlab.run("rs2", ["ip", "link"], timeout=5).stdout
    assert snapshot(rlab, "rs2") == before


def test_strict_rp_filter_made_loose_and_restored(rlab):
    write = lambda v: rlab.run("rs3", ["sh", "-c", f"echo {v} > /proc/sys/net/ipv4/conf/eth0/rp_filter"], timeout=5)
    read = lambda: rlab.run("rs3", ["cat", "/proc/sys/net/ipv4/conf/eth0/rp_filter"], timeout=5).stdout.strip()
    write(1)
    try:
        before = snapshot(rlab, "rs3")
        out = realserver(rlab, "rs3", "setup", "--mode", "enat", "--vip", VIP)
        assert "sysctl net.ipv4.conf.eth0.rp_filter 1 -> 2" in out and read() == "2"
        realserver(rlab, "rs3", "teardown")
        assert read() == "1" and snapshot(rlab, "rs3") == before
    finally:
        write(0)


def test_fullnat_needs_nothing(rlab):
    before = snapshot(rlab, "rs3")
    assert "nothing to set up" in realserver(rlab, "rs3", "setup", "--mode", "fullnat", "--vip", VIP)
    assert "nothing" in realserver(rlab, "rs3", "teardown", "--mode", "fullnat")
    assert snapshot(rlab, "rs3") == before


def test_agent_stops_on_sigterm_and_removes_its_device(rlab):
    proc = rlab.popen("rs3", [sys.executable, "-m", "lb.realserver.enat_agent", "--vip", VIP, "--ifname", "lbenattest"],
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line.startswith(b"ready"), proc.stderr.read()
    assert f"{VIP} dev lbenattest" in rlab.run("rs3", ["ip", "route"], timeout=5).stdout
    rlab.stop_process(proc.pid)
    assert proc.returncode == 0
    assert b"lb.realserver.enat_agent: stopped; counters:" in proc.stderr.read()
    assert "lbenattest" not in rlab.run("rs3", ["ip", "link"], timeout=5).stdout
    assert VIP not in rlab.run("rs3", ["ip", "route"], timeout=5).stdout



def test_reply_gateway_steers_the_agents_replies(rlab):
    """The agent routes as if from the VIP, so ``from VIP`` rules (--reply-gateway) apply:
    a gateway nobody answers for swallows the replies."""
    realserver(rlab, "rs1", "setup", "--mode", "enat", "--vip", VIP, "--reply-gateway", "198.18.2.99")
    cap, director = capture(rlab, "client"), RawSender(rlab)
    try:
        director.send(IP(src=VIP, dst=rlab.rs_addr("rs1")) / TCP(sport=31009, dport=80, flags="S",
                                                                  options=[toa(rlab.addr["client"], 40009)]))
        assert wait_for(cap, lambda p: TCP in p and p[TCP].dport == 40009, deadline=1.5) is None
        assert "198.18.2.99" in rlab.run("rs1", ["ip", "neigh"], timeout=5).stdout
        assert agent_counters(rlab, "rs1", {"rewritten": 1})["rewritten"] >= 1
        director.send(IP(src=VIP, dst=rlab.rs_addr("rs1")) / TCP(sport=31009, dport=80, flags="R", seq=1))
    finally:
        cap.close()
        director.close()
        realserver(rlab, "rs1", "teardown")


class MiniDirector:
    """Just enough ENAT director for a real client: in the director namespace, client packets
    for VIP:80 (read with AF_PACKET, kept from the local stack by nftables) go on to one real
    server as VIP:lport -> RIP:80, the client in the TOA of the SYN. Bounded in time."""

    def __init__(self, lab, rip, lport=32000):
        self.lab, self.rip, self.lport = lab, rip, lport
        self.ports, self.stop, self.forwarded = {}, False, 0
        rules = (f"table ip enattest {{\n  chain input {{\n    type filter hook input priority 0;\n"
                 f"    ip daddr {VIP} tcp dport 80 drop\n  }}\n}}\n")
        r = lab.run("director", ["nft", "-f", "-"], timeout=10, input=rules)
        assert r.returncode == 0, r.stderr
        self.cap, self.out = capture(lab, "director"), RawSender(lab)

    def run(self, seconds):
        import threading
        end = time.monotonic() + seconds

        def loop():
            while not self.stop and time.monotonic() < end:
                pkt = wait_for(self.cap, lambda p: TCP in p and p.dst == VIP and p[TCP].dport == 80, deadline=0.2)
                if pkt is not None:
                    self.forward(pkt)
        self.thread = threading.Thread(target=loop, daemon=True)
        self.thread.start()
        return self

    def forward(self, pkt):
        tcp = pkt[TCP]
        lport = self.ports.setdefault((pkt.src, tcp.sport), self.lport + len(self.ports))
        options = [toa(pkt.src, tcp.sport), *tcp.options] if tcp.flags.S else tcp.options
        self.out.send(IP(src=VIP, dst=self.rip) / TCP(sport=lport, dport=80, flags=tcp.flags, seq=tcp.seq,
                                                       ack=tcp.ack, window=tcp.window, options=options)
                      / bytes(tcp.payload))
        self.forwarded += 1

    def close(self):
        self.stop = True
        self.thread.join(timeout=5)
        self.cap.close()
        self.out.close()
        self.lab.run("director", ["nft", "delete", "table", "ip", "enattest"], timeout=10)


def test_curl_through_an_enat_triangle(rlab):
    """A real client (curl) through a stand-in director and the agent: the answer names the
    client from the TOA, and only the client's packets cross the director."""
    director = None
    try:
        rlab.setup_realservers("enat")
        director = MiniDirector(rlab, rlab.rs_addr("rs2")).run(seconds=20)
        for _ in range(2):
            r = rlab.http_get("client", f"http://{VIP}/", timeout=5)
            assert r.returncode == 0, (r.stderr, agent_counters(rlab, "rs2"))
            assert r.stdout.startswith(f"rs2 client={VIP}:") and f" toa={rlab.addr['client']}:" in r.stdout
        counters = agent_counters(rlab, "rs2", {"learned": 2, "rewritten": 6})
        # two connections, each learned from its SYN (a SYN the client retransmits, as under
        # load when the stand-in director is slow, is learned again: the same flow)
        assert counters["learned"] >= 2 and counters["rewritten"] >= 6 and counters["unknown_flow"] == 0, counters
        assert director.forwarded >= 8
    finally:
        if director:
            director.close()
        rlab.teardown_realservers("enat")
