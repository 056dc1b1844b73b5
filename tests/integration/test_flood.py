"""Under attack and churn, end to end in the lab: a spoofed-SYN flood (sources in 198.19.0.0/16,
written by lb.lab.flood from the router straight to the director's MAC) against NAT and DR
while the client connects, and after it; a link down and up during a transfer; a deleted
server with and without --expire-nodest-conn. Each bounded in frames and seconds."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.net import pid_alive
from lb.lab.servers import pattern_sha256
from tests.integration.helpers import VIP, nat_service, ok, rate_limited_download

FLOOD_SECONDS = 3
TABLE = 2048            # lbd --max-conns: the flood overfills it many times

# In the client namespace: GETs one after the other for `seconds` (or `n` of them), each
# given `timeout`; prints {"ok", "failed"}.
GETS = r"""
import http.client, json, sys, time
vip, seconds, n, timeout = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
ok = failed = 0
end = time.monotonic() + seconds
while (ok + failed < n) and time.monotonic() < end:
    try:
        c = http.client.HTTPConnection(vip, 80, timeout=timeout)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
        ok += 1
    except OSError:
        failed += 1
print(json.dumps({"ok": ok, "failed": failed}))
"""


def mac_of(lab, role, ifname="eth0"):
    return lab.run(role, ["cat", f"/sys/class/net/{ifname}/address"], timeout=5).stdout.strip()


def flood(lab, vip, ack=False):
    argv = [sys.executable, "-m", "lb.lab.flood", "--ifname", "br0", "--dst-mac",
            mac_of(lab, "director"), "--vip", vip, "--port", 80, "--count", 2_000_000,
            "--seconds", FLOOD_SECONDS]
    return lab.popen("router", argv + (["--ack"] if ack else []), stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True)


def gets(lab, vip, seconds, n, timeout):
    return lab.popen("client", [sys.executable, "-c", GETS, vip, seconds, n, timeout],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def result(proc, timeout=30):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def under_flood(lab, director, vip, ack=False):
    during = gets(lab, vip, FLOOD_SECONDS, 10_000, 2.0)
    f = flood(lab, vip, ack)
    sent = result(f)
    got_during = result(during)
    t0 = time.monotonic()
    after = result(gets(lab, vip, 10, 20, 1.0))
    return sent, got_during, after, time.monotonic() - t0


@pytest.fixture
def small_director(lab):
    with LabDirector(lab, extra_args=["--max-conns", TABLE]) as d:
        yield d
    assert not pid_alive(d.pid)


def test_spoofed_syn_flood_against_nat(lab, small_director):
    nat_service(small_director)
    sent, during, after, took = under_flood(lab, small_director, VIP)
    print(f"NAT flood: sent {sent}, legitimate during {during}, after {after} in {took:.2f} s")
    assert sent["sent"] > 5 * TABLE                # the table overfilled
    assert during["ok"] >= 1
    assert after == {"ok": 20, "failed": 0}        # nothing left of the flood to wait out


def test_spoofed_syn_and_ack_flood_against_dr(lab, small_director, realservers):
    realservers("dr")
    vip = lab.addr["vips"]["dr"]
    ok(small_director.lbadm("-A", "-t", f"{vip}:80", "-s", "rr"))
    for rip in lab.addr["rs"]:
        ok(small_director.lbadm("-a", "-t", f"{vip}:80", "-r", f"{rip}:80", "-g"))
    sent, during, after, took = under_flood(lab, small_director, vip, ack=True)
    print(f"DR flood: sent {sent}, legitimate during {during}, after {after} in {took:.2f} s")
    assert sent["sent"] > 5 * TABLE
    assert during["ok"] >= 1
    assert after == {"ok": 20, "failed": 0}
    listing = ok(small_director.lbadm("-L", "-n", "-c")).stdout
    established = [l for l in listing.splitlines() if "ESTABLISHED" in l and "198.19." in l]
    assert len(established) <= TABLE // 2 + 1     # secure_tcp: past half the table, no bare
                                                   # spoofed ACK made one ESTABLISHED


def slow_download(lab, n=6_000_000, rate=1e6, vip=VIP):
    return rate_limited_download(lab, n, rate, vip)


def wait_active(director, rip, deadline=10.0):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        rows = [l for l in ok(director.lbadm("-L", "-n")).stdout.splitlines() if rip in l]
        if rows and rows[0].split()[4] == "1":
            return
        time.sleep(0.05)
    raise AssertionError(f"no active connection to {rip}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


def test_link_down_and_up_during_a_transfer(lab, director):
    ok(director.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr"))
    ok(director.lbadm("-a", "-t", f"{VIP}:80", "-r", "198.18.0.11:80", "-m"))
    n = 6_000_000
    dl = slow_download(lab, n)
    try:
        wait_active(director, "198.18.0.11")
        before = cpu_seconds(director.pid)
        lab.run("director", ["ip", "link", "set", "eth0", "down"], timeout=5, check=True)
        t0 = time.monotonic()
        end = t0 + 10
        while "link eth0 is down" not in director.log_tail() and time.monotonic() < end:
            time.sleep(0.05)
        assert "link eth0 is down" in director.log_tail()
        time.sleep(max(0.0, 1.0 - (time.monotonic() - t0)))   # a second down, measured
        spent = cpu_seconds(director.pid) - before
        lab.run("director", ["ip", "link", "set", "eth0", "up"], timeout=5, check=True)
        # a link brought down loses its routes; the administrator puts the gateway back
        lab.run("director", ["ip", "route", "replace", "default", "via", lab.addr["router_lan"]],
                timeout=5, check=True)
        out, err = dl.communicate(timeout=60)
    finally:
        if dl.poll() is None:
            lab.stop_process(dl.pid)
    assert spent < 0.6, f"lbd spent {spent:.2f} s of CPU in ~1 s with its link down"
    assert dl.returncode == 0 and out.split()[0] == pattern_sha256(n), err
    assert "link eth0 is up again" in director.log_tail()


@pytest.mark.parametrize("expire", [False, True])
def test_deleted_server_with_and_without_expire_nodest_conn(lab, expire):
    args = ["--expire-nodest-conn"] if expire else []
    with LabDirector(lab, extra_args=args) as d:
        ok(d.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr"))
        ok(d.lbadm("-a", "-t", f"{VIP}:80", "-r", "198.18.0.11:80", "-m"))
        n = 10_000_000                                  # 10 s at 1 MB/s
        dl = slow_download(lab, n)
        try:
            wait_active(d, "198.18.0.11")
            ok(d.lbadm("-d", "-t", f"{VIP}:80", "-r", "198.18.0.11:80"))
            assert dl.poll() is None, "the download ended before the server was deleted"
            out, err = dl.communicate(timeout=60)
        finally:
            if dl.poll() is None:
                lab.stop_process(dl.pid)
        digest = out.split()[0] if out.split() else ""
        if expire:
            assert digest != pattern_sha256(n)     # cut: its packets are dropped, it is gone
            conns = ok(d.lbadm("-L", "-n", "-c")).stdout
            assert "198.18.0.11" not in conns.split("\n", 2)[-1] or "ESTABLISHED" not in conns
        else:
            assert digest == pattern_sha256(n), err    # IPVS's default: it keeps flowing
    assert not pid_alive(d.pid)
