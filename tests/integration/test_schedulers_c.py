"""Schedulers through a real lbd: the C decisions send clients where their Python classes say,
and a scheduler of one's own (lbd --scheduler-module) runs end to end.

10 000 SYNs from random sources in 198.19.0.0/16 (inside 198.18.0.0/15) and random ports, to
16 VIPs of one fwmark service, are sent from the router's namespace with a raw socket; each
opens a connection in lbd's table, which `lbadm -L -c -n` lists with its real server. The
expected server of every flow comes from the scheduler's Python class over the same servers.
"""
from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest

from lb.director.model import Flow, RealServer, Service
from lb.lab.lbd import LabDirector
from lb.lab.net import LabError
from tests.integration.helpers import VIP, many_gets, nat_service, ok

N_FLOWS = 10_000
VIPS = [f"198.18.0.{150 + k}" for k in range(16)]
RIPS = ["198.18.0.11", "198.18.0.12", "198.18.0.13"]
WEIGHTS = [3, 1, 2]
PLUGIN = Path(__file__).with_name("plugin_scheduler.py")

# Runs in the router namespace: one SYN per (source, sport, VIP) read from stdin, as raw IP.
SEND_SYNS = r"""
import json, socket, sys, time
from lb.lab.flood import ipv4_tcp
flows = json.load(sys.stdin)
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for k, (src, sport, dst) in enumerate(flows):
    if k % 200 == 199:
        time.sleep(0.002)               # a client's pace, not a flood: the ring keeps up
    s.sendto(ipv4_tcp(src, dst, sport, 80, 0x02, 1), (dst, 0))
print(len(flows))
"""


def random_flows(seed: int) -> list:
    rng = random.Random(seed)
    flows = set()
    while len(flows) < N_FLOWS:
        src = f"198.19.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        flows.add((src, rng.randrange(1024, 65536), rng.choice(VIPS)))
    return sorted(flows)


def listed_conns(d) -> dict:
    """(client, cport, VIP) -> RIP for every connection `lbadm -L -c -n` shows."""
    out = {}
    for line in ok(d.lbadm("-L", "-c", "-n")).stdout.splitlines():
        cols = line.split()
        if len(cols) == 6 and cols[0] == "TCP":
            (caddr, cport), (vaddr, _), (raddr, _) = (c.rsplit(":", 1) for c in cols[3:6])
            out[(caddr, int(cport), vaddr)] = raddr
    return out


@pytest.mark.parametrize("sched,flags", [("sh", ""), ("sh", "sh-port"), ("dh", ""),
                                         ("mh", ""), ("mh", "mh-port")])
def test_hashing_schedulers_send_clients_where_python_says(lab, lab_director_big, sched, flags):
    d = lab_director_big
    mark = ",".join(f"tcp:{v}:80" for v in VIPS)
    ok(d.lbadm("-A", "-f", "1", "--match", mark, "-s", sched, *(["-b", flags] if flags else [])))
    for rip, w in zip(RIPS, WEIGHTS):
        ok(d.lbadm("-a", "-f", "1", "-r", rip, "-m", "-w", w))
    flows = random_flows(seed=sum(map(ord, sched + flags)))
    # The reference: the scheduler's Python class, the same servers in the same order.
    svc = Service("fwm", "0.0.0.0", 0, sched, sched_flags={flags} - {""}, fwmark=1)
    svc.dests = [RealServer(rip, 0, w) for rip, w in zip(RIPS, WEIGHTS)]
    svc.dests_changed()
    want = {(c, p, v): svc.schedule(Flow("tcp", c, p, v, 80)).addr for c, p, v in flows}
    # As clients do, a SYN that got no connection (a full receive ring) is sent again.
    missing, got = flows, {}
    for _ in range(5):
        r = lab.run("router", [sys.executable, "-c", SEND_SYNS], timeout=120,
                    input=json.dumps(missing), capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.strip() == str(len(missing)), r.stderr
        time.sleep(0.3)
        got = listed_conns(d)
        missing = [f for f in flows if tuple(f) not in got]
        if not missing:
            break
    assert got == want
    assert len(set(want.values())) == 3                 # every server had its share


def test_wrr_in_c_keeps_the_kernel_sequence(lab, director):
    # wrr 3:2:1 decided in C: 600 connections split exactly 300/200/100.
    nat_service(director, sched="wrr", weights=(3, 2, 1))
    seen = many_gets(lab, 600)["seen"]
    assert seen == {"rs1": 300, "rs2": 200, "rs3": 100}


def test_a_python_scheduler_of_ones_own_runs_end_to_end(lab):
    # plugin_scheduler.py: "last" picks the last server; "broken" raises on every decision.
    with LabDirector(lab, extra_args=["--scheduler-module", str(PLUGIN)]) as d:
        nat_service(d, sched="last")
        assert many_gets(lab, 20)["seen"] == {"rs3": 20}
        nat_service(d, proto="-u", port=5353, sched="broken")
        answers = [lab.udp_query("client", VIP, 5353, b"q%d" % k, timeout=0.3) for k in range(3)]
        assert answers == [None] * 3                         # dropped, and lbd still answers:
        assert "-A -u 198.18.0.100:5353 -s broken" in ok(d.lbadm("-S", "-n")).stdout
        assert many_gets(lab, 3)["seen"] == {"rs3": 3}
        d.stop()
        log = d.log_tail(20000)
    assert "sched_error=3" in log, log
    failures = [line for line in log.splitlines() if "scheduler broken of UDP" in line]
    assert 1 <= len(failures) < 3, failures                 # at most one line a second


def test_an_unloadable_scheduler_module_stops_lbd_naming_it(lab, tmp_path):
    bad = tmp_path / "bad_sched.py"
    bad.write_text("import no_such_module_here\n")
    with pytest.raises(LabError, match="exited with 2") as e:
        LabDirector(lab, extra_args=["--scheduler-module", str(bad)]).start()
    assert f"scheduler module {bad}: ModuleNotFoundError" in str(e.value)


@pytest.fixture
def lab_director_big(lab):
    with LabDirector(lab, extra_args=["--max-conns", str(1 << 16)]) as d:
        yield d

