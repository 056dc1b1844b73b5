"""FULLNAT and ENAT end to end through lbd, with the real servers on a network the director
reaches only through the router: the RS learns the real client from TOA; FULLNAT clients get
distinct (LIP, port) pairs; a tiny port pool runs out cleanly and recovers; under ENAT the
director sees no reply packet."""
from __future__ import annotations

import json
import re
import sys

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.topology import VIPS
from lb.lab.servers import pattern_sha256
from tests.integration.helpers import connection_count, dest_rows, drops, ok, wait_until

CLIENT = "198.18.1.2"

# Runs in the client namespace: n concurrent GETs (threads), each on its own connection;
# prints every answer line.
CONCURRENT = r"""
import http.client, json, sys, threading
vip, n = sys.argv[1], int(sys.argv[2])
out, lock = [], threading.Lock()
def get():
    c = http.client.HTTPConnection(vip, 80, timeout=10)
    c.request("GET", "/")
    line = c.getresponse().read().decode().strip()
    with lock:
        out.append(line)
ts = [threading.Thread(target=get) for _ in range(n)]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(out))
"""


@pytest.fixture
def rdirector(rlab, request):
    with LabDirector(rlab, extra_args=getattr(request, "param", [])) as d:
        yield d


def parse(line: str) -> dict:
    """'rs1 client=A:P toa=C:Q' -> {'rs': 'rs1', 'client': (A, P), 'toa': (C, Q)}"""
    words = line.split()
    out = {"rs": words[0]}
    for w in words[1:]:
        key, _, addr = w.partition("=")
        host, _, port = addr.rpartition(":")
        out[key] = (host, int(port))
    return out


def gets(lab, vip, n):
    r = lab.run("client", [sys.executable, "-c", CONCURRENT, vip, str(n)], timeout=60,
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return [parse(line) for line in json.loads(r.stdout)]


def fullnat_service(lab, d, lips=None, proto="-t", port=80, rips=None):
    vip = VIPS["fullnat"]
    ok(d.lbadm("-A", proto, f"{vip}:{port}", "-s", "rr"))
    for lip in lips or lab.addr["lips"]:
        ok(d.lbadm("--add-laddr", proto, f"{vip}:{port}", "-z", lip))
    for rip in rips or lab.addr["rs"]:
        ok(d.lbadm("-a", proto, f"{vip}:{port}", "-r", f"{rip}:{port}", "-b"))
    return vip


def test_fullnat_rs_learns_the_client_from_toa(rlab, rdirector):
    vip = fullnat_service(rlab, rdirector)
    answers = gets(rlab, vip, 12)
    assert sorted({a["rs"] for a in answers}) == ["rs1", "rs2", "rs3"]
    for a in answers:
        assert a["client"][0] in rlab.addr["lips"]          # the peer is a local address
        assert a["toa"][0] == CLIENT                          # TOA says who the client is
    # Ports are lent per (LIP, real server): each server sees distinct (LIP, port) pairs.
    pairs = [(a["rs"], *a["client"]) for a in answers]
    assert len(set(pairs)) == len(pairs)
    assert {p[1] for p in pairs} == set(rlab.addr["lips"])   # both LIPs in turn
    text = ok(rdirector.lbadm("--get-laddr")).stdout
    assert "198.18.0.3" in text and "198.18.0.4" in text


def test_fullnat_long_transfer(rlab, rdirector):
    vip = fullnat_service(rlab, rdirector)
    n = 10_000_000
    r = rlab.run("client", ["bash", "-c", f"curl -sS --max-time 60 http://{vip}/bytes/{n} | sha256sum"],
                 timeout=90, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split()[0] == pattern_sha256(n), r.stderr


@pytest.mark.parametrize("rdirector", [["--lport-range", "2000-2003", "--max-conns", "4096"]],
                         indirect=True)
def test_a_tiny_port_pool_runs_out_cleanly_and_recovers(rlab, rdirector):
    # One LIP, two real servers, 4 ports: lent per (LIP, real server), so 4 flows to each;
    # rr then names a server whose pool is empty, and that flow is refused (IPVS does not
    # fall back to another server either).
    d = rdirector
    ok(d.lbadm("--set", "0", "0", "2"))                      # UDP entries live 2 s
    vip = fullnat_service(rlab, d, lips=rlab.addr["lips"][:1], proto="-u", port=5353,
                          rips=rlab.addr["rs"][:2])
    answers = [rlab.udp_query("client", vip, 5353, b"q%d" % i, timeout=1.0) for i in range(10)]
    assert [a is not None for a in answers] == [True] * 8 + [False] * 2
    assert [i for i, _ in dest_rows(d, vip, 5353)] == [4, 4]          # InPkts: 4 flows each
    assert drops(d)["lport_exhausted"] == 2                  # the two refusals were lbd's
    # The flows expire (2 s, then a sweep of the table) and give their ports back.
    wait_until(lambda: connection_count(d) == 0, 15, "the eight UDP entries expire")
    assert rlab.udp_query("client", vip, 5353, b"again", timeout=2.0) is not None
    d.stop()
    assert d.proc.returncode == 0, d.log_tail()              # SIGTERM: a clean exit
    assert re.search(r"lport_exhausted=2\b", d.log_tail()), d.log_tail()


def test_enat_replies_bypass_the_director(rlab, rdirector):
    rlab.setup_realservers("enat")
    try:
        vip = VIPS["enat"]
        ok(rdirector.lbadm("-A", "-t", f"{vip}:80", "-s", "rr"))
        for rip in rlab.addr["rs"]:
            ok(rdirector.lbadm("-a", "-t", f"{vip}:80", "-r", f"{rip}:80", "--enat"))
        answers = gets(rlab, vip, 9)
        assert sorted({a["rs"] for a in answers}) == ["rs1", "rs2", "rs3"]
        for a in answers:
            assert a["client"][0] == vip and a["toa"][0] == CLIENT
        pairs = [(a["rs"], *a["client"]) for a in answers]
        assert len(set(pairs)) == len(pairs)                 # distinct ports toward each RS
        rows = dest_rows(rdirector, vip, 80)
        assert len(rows) == 3 and all(i > 0 for i, _ in rows)
        assert all(o == 0 for _, o in rows), rows            # no reply went through lbd
    finally:
        rlab.teardown_realservers("enat")
