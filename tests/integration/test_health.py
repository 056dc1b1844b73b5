"""Health checks in the lab: lbd --keepalived-conf with HTTP_GET / TCP_CHECK on the three real
servers, real traffic from the client.

- a real server's HTTP server killed: out of the table within 3 s, no new connection to it;
  restarted: back;
- checks blocked (the RS drops what comes from the director's own address) while clients'
  connections to it are open: they go on, as IPVS keeps a deleted server's connections;
- every server down: the sorry server takes the traffic, quorum_down runs; back: quorum_up.
"""
from __future__ import annotations

import sys
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.net import pid_alive
from lb.lab.topology import Lab
from tests.integration.helpers import VIP, many_gets, ok

RS = {"rs1": "198.18.0.11", "rs2": "198.18.0.12", "rs3": "198.18.0.13"}
DIRECTOR = "198.18.0.2"


@pytest.fixture(scope="module")
def hlab():
    lab = Lab()
    try:
        lab.up()
        lab.start_servers()
        yield lab
    finally:
        lab.down()
    assert lab.namespaces() == [], f"namespaces left behind: {lab.namespaces()}"


def conf(servers, checker="HTTP_GET { url { path / } }", extra=""):
    blocks = "".join(f"    real_server {RS[name]} 80 {{\n        weight 1\n        {checker}\n"
                     "    }\n" for name in servers)
    return f"virtual_server {VIP} 80 {{\n    lvs_sched rr\n    lvs_method NAT\n{extra}{blocks}}}\n"


def director(lab, tmp_path, text):
    path = tmp_path / "keepalived.conf"
    path.write_text(text)
    return LabDirector(lab, extra_args=["--keepalived-conf", str(path)])


def in_table(d) -> set:
    text = ok(d.lbadm("-L", "-n")).stdout
    return {name for name, addr in RS.items() if f"{addr}:80 " in text}


def wait_for(what, deadline_s: float, step: float = 0.05):
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(step)
    return what()


def block_checks(lab, name, on: bool):
    """In RS `name`: drop (or stop dropping) TCP from the director's own address, which is
    where the checks come from; the client's NAT traffic (from 198.18.1.2) still passes."""
    if on:
        script = ("table ip lbhc {\n chain in {\n  type filter hook input priority 0;\n"
                  f"  ip saddr {DIRECTOR} tcp dport 80 drop\n }}\n}}\n")
        r = lab.run(name, ["nft", "-f", "-"], timeout=10, input=script)
    else:
        r = lab.run(name, ["nft", "delete", "table", "ip", "lbhc"], timeout=10)
    assert r.returncode == 0, r.stderr


def test_a_killed_server_is_out_within_3s_and_back_when_restarted(hlab, tmp_path):
    with director(hlab, tmp_path, conf(RS)) as d:
        assert wait_for(lambda: in_table(d) == set(RS), 5)
        assert set(many_gets(hlab, 6)["seen"]) == set(RS)
        pids = hlab.server_pids("rs3")
        assert pids
        killed = time.monotonic()
        for pid in pids:
            hlab.stop_process(pid)
        assert wait_for(lambda: "rs3" not in in_table(d), 3.0)
        took = time.monotonic() - killed
        print(f"rs3 out of the table {took:.2f} s after its server was killed")
        assert took < 3.0, took
        seen = many_gets(hlab, 12)["seen"]
        assert "rs3" not in seen and set(seen) == {"rs1", "rs2"}, seen
        checks = ok(d.lbadm("--list-checks")).stdout
        assert "198.18.0.13:80" in checks and "DOWN" in checks, checks
        hlab.start_servers(names=["rs3"])
        assert wait_for(lambda: "rs3" in in_table(d), 5)
        assert set(many_gets(hlab, 6)["seen"]) == set(RS)
    assert not pid_alive(d.pid)


# Runs in the client: open n connections to VIP:80 and say "up"; on a line from stdin, send a
# GET on each and print who answered (the connections were made before the line came).
HOLD = r"""
import socket, sys
vip, n = sys.argv[1], int(sys.argv[2])
conns = [socket.create_connection((vip, 80), timeout=10) for _ in range(n)]
print("up", flush=True)
sys.stdin.readline()
out = []
for c in conns:
    c.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        data += chunk
    out.append(data.split(b"\r\n\r\n", 1)[-1].split()[0].decode())
print(" ".join(out), flush=True)
"""


def test_connections_to_a_failed_server_go_on_and_new_ones_go_elsewhere(hlab, tmp_path):
    with director(hlab, tmp_path, conf(RS, checker="TCP_CHECK { connect_timeout 0.5 }")) as d:
        assert wait_for(lambda: in_table(d) == set(RS), 5)
        hold = hlab.popen("client", [sys.executable, "-c", HOLD, VIP, "3"], stdin=-1, stdout=-1,
                          text=True)
        try:
            assert hold.stdout.readline().strip() == "up"
            block_checks(hlab, "rs2", True)
            try:
                assert wait_for(lambda: "rs2" not in in_table(d), 3.0)
                seen = many_gets(hlab, 9)["seen"]
                assert "rs2" not in seen, seen
                hold.stdin.write("go\n")
                hold.stdin.flush()
                answered = hold.stdout.readline().split()
                assert sorted(answered) == ["rs1", "rs2", "rs3"], answered
            finally:
                block_checks(hlab, "rs2", False)
            assert wait_for(lambda: "rs2" in in_table(d), 5)
        finally:
            hold.kill()
            hold.wait()


def test_sorry_server_and_quorum_scripts(hlab, tmp_path):
    log = tmp_path / "quorum.log"
    extra = (f'    sorry_server {RS["rs3"]} 80\n'
             f'    quorum_up "/bin/sh -c \'echo up >> {log}\'"\n'
             f'    quorum_down "/bin/sh -c \'echo down >> {log}\'"\n')
    text = conf(["rs1", "rs2"], checker="TCP_CHECK { connect_timeout 0.5 }", extra=extra)
    with director(hlab, tmp_path, text) as d:
        assert wait_for(lambda: in_table(d) == {"rs1", "rs2"}, 5)
        for name in ("rs1", "rs2"):
            block_checks(hlab, name, True)
        try:
            assert wait_for(lambda: in_table(d) == {"rs3"}, 3.0)
            assert set(many_gets(hlab, 6)["seen"]) == {"rs3"}
            assert wait_for(lambda: log.exists() and log.read_text() == "down\n", 3)
        finally:
            for name in ("rs1", "rs2"):
                block_checks(hlab, name, False)
        assert wait_for(lambda: in_table(d) == {"rs1", "rs2"}, 5)
        assert set(many_gets(hlab, 6)["seen"]) == {"rs1", "rs2"}
        assert wait_for(lambda: log.read_text() == "down\nup\n", 3)


def test_a_refused_configuration_starts_nothing(hlab, tmp_path):
    bad = conf(RS).replace("lvs_method NAT", "lvs_method NAT\n    lvs_sync_daemon_interface eth0")
    d = director(hlab, tmp_path, bad)
    with pytest.raises(Exception) as e:
        d.start(timeout=10)
    assert "line 4" in str(e.value) and "lvs_sync_daemon_interface" in str(e.value)


# Runs in an RS: listens on a port and never accepts nor answers (the kernel completes the
# handshakes from its backlog): a half-open HTTP server.
MUTE = r"""
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
print("ready", flush=True)
time.sleep(120)
"""


def test_a_hanging_script_and_a_mute_server_hold_neither_the_checks_nor_lbadm(hlab, tmp_path):
    checkers = {
        "rs1": 'MISC_CHECK { misc_path "/bin/sleep 60"\n misc_timeout 2 }',
        "rs2": "HTTP_GET { url { path / }\n connect_port 8081\n connect_timeout 0.5 }",
        "rs3": "TCP_CHECK { }",
    }
    blocks = "".join(f"    real_server {RS[n]} 80 {{\n        {c}\n    }}\n" for n, c in checkers.items())
    text = f"virtual_server {VIP} 80 {{\n    lvs_sched rr\n    lvs_method NAT\n{blocks}}}\n"
    mute = hlab.popen("rs2", [sys.executable, "-c", MUTE, "8081"], stdout=-1, text=True)
    try:
        assert mute.stdout.readline().strip() == "ready"
        with director(hlab, tmp_path, text) as d:
            slowest = 0.0
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:        # lbadm answers while the checks hang
                start = time.monotonic()
                ok(d.lbadm("-L", "-n"))
                slowest = max(slowest, time.monotonic() - start)
            print(f"slowest lbadm -L while a script hung: {slowest:.2f} s")
            assert slowest < 1.5, slowest
            assert wait_for(lambda: in_table(d) == {"rs3"}, 3)
            checks = ok(d.lbadm("--list-checks")).stdout
            assert "killed" in checks and "no complete answer" in checks, checks
            assert set(many_gets(hlab, 4)["seen"]) == {"rs3"}
    finally:
        hlab.stop_process(mute.pid)
