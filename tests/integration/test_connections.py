"""Connection semantics end to end (issue 6): least-connection scheduling reads the live
counters, persistence pins a client, --set timeouts expire entries, -L -c lists them."""
from __future__ import annotations

import re
import subprocess
import sys

from tests.integration.helpers import VIP, figures, many_gets, nat_service, ok, wait_until

# Runs in the client namespace: hold n TCP connections to VIP:80 open (ESTABLISHED at the
# director, no request sent) for `secs` seconds, printing "up" once they are.
HOLD = r"""
import socket, sys, time
conns = [socket.create_connection((sys.argv[1], 80), timeout=5) for _ in range(int(sys.argv[2]))]
print("up", flush=True)
time.sleep(float(sys.argv[3]))
"""


def rows(director):
    """{rip: (active, inactive)} from lbadm -L -n."""
    text = ok(director.lbadm("-L", "-n")).stdout
    return {m[1]: (int(m[2]), int(m[3])) for m in
            re.finditer(r"-> ([\d.]+):\d+\s+\w+\s+\d+\s+(\d+)\s+(\d+)", text)}


def test_wlc_sends_new_connections_away_from_a_busy_server(lab, director):
    ok(director.lbadm("-A", "-t", f"{VIP}:80", "-s", "wlc"))
    ok(director.lbadm("-a", "-t", f"{VIP}:80", "-r", "198.18.0.11:80", "-m"))
    hold = lab.popen("client", [sys.executable, "-c", HOLD, VIP, "6", "30"],
                     stdout=subprocess.PIPE, text=True)
    try:
        assert hold.stdout.readline().strip() == "up"
        # six ESTABLISHED: ActiveConn 6
        wait_until(lambda: rows(director).get("198.18.0.11", (0, 0))[0] == 6, 10, "rs1's ActiveConn reads 6")
        for rip in ("198.18.0.12", "198.18.0.13"):
            ok(director.lbadm("-a", "-t", f"{VIP}:80", "-r", f"{rip}:80", "-m"))
        got = many_gets(lab, 10)
        assert "rs1" not in got["seen"] and sum(got["seen"].values()) == 10
    finally:
        hold.kill()
        hold.wait()


def test_persistence_keeps_a_client_on_one_server(lab, director):
    ok(director.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr", "-p", "120"))
    for i in (11, 12, 13):
        ok(director.lbadm("-a", "-t", f"{VIP}:80", "-r", f"198.18.0.{i}:80", "-m"))
    got = many_gets(lab, 20)
    assert len(got["seen"]) == 1 and sum(got["seen"].values()) == 20
    text = ok(director.lbadm("-L", "-n")).stdout
    assert "TCP  198.18.0.100:80 rr persistent 120\n" in text
    conns = ok(director.lbadm("-L", "-n", "-c")).stdout
    assert conns.startswith("IPVS connection entries\npro expire state       source")
    assert re.search(r"^TCP \d\d:\d\d  NONE\s+198\.18\.1\.2:0\s+198\.18\.0\.100:80\s+198\.18\.0\.1\d:80$",
                     conns, re.M), conns


def test_set_timeouts_expire_connections(lab, lab_director_small):
    d = lab_director_small
    ok(d.lbadm("--set", "0", "0", "2"))
    assert ok(d.lbadm("-L", "--timeout")).stdout == "Timeout (tcp tcpfin udp): 900 120 2\n"
    nat_service(d, "-u", 5353)
    assert lab.udp_query("client", VIP, 5353, b"x")
    assert sum(i for _, i in rows(d).values()) == 1
    assert "UDP" in ok(d.lbadm("-L", "-n", "-c")).stdout
    # 2 s timeout + a sweep of the table: waited for, on the InActConn column itself.
    wait_until(lambda: sum(i for _, i in rows(d).values()) == 0, 15, "the UDP entry expires")
    assert figures(d)["fastpath"]["expired_conns"] >= 1
    assert ok(d.lbadm("-L", "-n", "-c")).stdout.count("\n") == 2   # the two title lines only


def test_bad_persistence_and_timeouts_are_refused(lab, director):
    nat_service(director)
    before = ok(director.lbadm("-L", "-n")).stdout
    for args in (["-E", "-t", f"{VIP}:80", "-s", "rr", "-M", "255.255.255.0"],   # -M without -p
                 ["-A", "-t", f"{VIP}:81", "-s", "rr", "-o"],                    # -o on TCP
                 ["-A", "-u", f"{VIP}:53", "-s", "rr", "-o", "-p"],              # -o with -p
                 ["-A", "-t", f"{VIP}:82", "-s", "rr", "-p", "0"],
                 ["-E", "-t", f"{VIP}:80", "-s", "nosuch"]):
        r = director.lbadm(*args)
        assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert ok(director.lbadm("-L", "-n")).stdout == before
