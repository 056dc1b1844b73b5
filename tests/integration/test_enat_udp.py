"""UDP through ENAT end to end: lbd puts the client in UOA on the first datagrams of each
connection (fastpath/uoa.pxi), the real servers' agents learn it and send the answers from
VIP:5353 straight to each client; the director carries only the requests."""
from __future__ import annotations

import socket

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.topology import VIPS
from tests.integration.helpers import dest_rows, figures, ok, wait_until
from tests.integration.test_enat_agent import agent_counters

PORT = 5353
CLIENTS = ["198.18.1.2", "198.18.1.3", "198.18.1.4"]     # the client namespace's own and two more
QUERIES = 5                                                # per flow: past the 3 that carry UOA


@pytest.fixture(params=["userspace", "tc"])
def enat_udp(rlab, request):
    """The real servers set up for ENAT (answers rewritten by the agent, or by its tc program),
    two more client addresses, lbd with an ENAT UDP service over the three servers; all undone
    afterwards."""
    added = []
    rlab.setup_realservers("enat", enat_reply=request.param)
    try:
        for addr in CLIENTS[1:]:
            r = rlab.run("client", ["ip", "addr", "add", f"{addr}/24", "dev", "eth0"], timeout=10)
            assert r.returncode == 0, r.stderr
            added.append(addr)
        with LabDirector(rlab) as d:
            vip = VIPS["enat"]
            ok(d.lbadm("-A", "-u", f"{vip}:{PORT}", "-s", "rr"))
            for rip in rlab.addr["rs"]:
                ok(d.lbadm("-a", "-u", f"{vip}:{PORT}", "-r", f"{rip}:{PORT}", "--enat"))
            yield d, vip, request.param
    finally:
        for addr in added:
            rlab.run("client", ["ip", "addr", "del", f"{addr}/24", "dev", "eth0"], timeout=10)
        rlab.teardown_realservers("enat")


def test_udp_answers_come_from_the_vip_to_each_client(rlab, enat_udp):
    d, vip, reply_path = enat_udp
    flows = []
    for addr in CLIENTS:
        for _ in range(2):                                  # two source ports each
            s = rlab.socket("client", socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((addr, 0))
            s.settimeout(3.0)
            flows.append(s)
    try:
        servers = {}
        for s in flows:
            for q in range(QUERIES):                         # request/response, one at a time
                s.sendto(b"q%d" % q, (vip, PORT))
                data, peer = s.recvfrom(65535)
                assert peer == (vip, PORT), peer             # from the VIP, not the RIP
                words = data.decode().split()
                assert words[-1] == f"q{q}" and words[1].startswith(f"client={vip}:")
                servers.setdefault(s.getsockname(), set()).add(words[0])
    finally:
        for s in flows:
            s.close()
    # each flow stays on one server (one director connection), and rr spread the six
    assert all(len(names) == 1 for names in servers.values()), servers
    assert set().union(*servers.values()) == {"rs1", "rs2", "rs3"}
    rows = dest_rows(d, vip, PORT)
    assert sum(i for i, _ in rows) == len(flows) * QUERIES
    assert all(o == 0 for _, o in rows), rows                # no answer went through lbd
    assert figures(d)["forwarded_anyway"]["uoa_no_room"] == 0

    def totals():                    # the agents' stats files, summed (written every 0.2 s)
        out = {}
        for rs in rlab.rs_names:
            for k, v in agent_counters(rlab, rs).items():
                out[k] = out.get(k, 0) + v
        return out

    def answers(t):                  # by the agent or by its tc program (lb.realserver.enat_tc)
        return t.get("rewritten", 0) + t.get("rewritten_tc", 0)

    def counted():
        t = totals()
        return t if t.get("learned", 0) >= len(flows) * 3 and answers(t) >= len(flows) * QUERIES else None

    got = wait_until(counted, 10, "the agents count what they learned and rewrote")
    # UOA on the first three of each flow; every answer rewritten once, by one of the two
    assert got["learned"] == len(flows) * 3 and answers(got) == len(flows) * QUERIES, got
    assert got.get("uoa_malformed", 0) == 0 and got.get("failed_tc", 0) == 0, got
    if reply_path == "tc":           # the agent at most a flow's first (its UOA not read yet)
        assert got.get("rewritten_tc", 0) >= len(flows) * (QUERIES - 1), got
    else:
        assert got.get("rewritten_tc", 0) == 0, got
