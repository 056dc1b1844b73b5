"""lb trace, lb break and lb trace --scheduler in the namespace lab, checked with scapy.

One lab per rs_net for the whole module (a TraceSession: lab, test servers, lbd, every mode of
that lab configured): NAT, DR and TUN on the director's LAN, FULLNAT and ENAT routed. Each
mode is traced once (cached); the tests then read the capture: the director's rewrite changes
exactly the fields its mode class names, the replies take the path the class says, checksums
verify at every hop, the pcaps parse and the diagram has an arrow per hop. Each break-it
scenario must show its failure in the capture and work again once fixed.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from scapy.utils import rdpcap

from lb import modes
from lb.lab import breakit, schedwatch
from lb.lab import trace as core
from lb.lab.tracerun import LAB_OF, TraceSession, write_files

LAN_MODES, ROUTED_MODES = ("nat", "dr", "tun"), ("fullnat", "enat")


def _session(rs_net, names):
    session = TraceSession(rs_net, names).__enter__()
    try:
        yield session
    finally:
        session.close()
    assert session.lab.namespaces() == [], f"namespaces left behind: {session.lab.namespaces()}"


@pytest.fixture(scope="module")
def lan():
    yield from _session("lan", LAN_MODES)


@pytest.fixture(scope="module")
def routed():
    yield from _session("routed", ROUTED_MODES)


@pytest.fixture(scope="module")
def traces(lan, routed):
    """mode -> ModeTrace, each traced once (before any break-it scenario runs)."""
    sessions = {"lan": lan, "routed": routed}
    return {m: sessions[LAB_OF[m]].trace(m) for m in (*LAN_MODES, *ROUTED_MODES)}


ALL = (*LAN_MODES, *ROUTED_MODES)


@pytest.mark.parametrize("name", ALL)
def test_every_exchange_answers_and_every_rewrite_is_the_modes(traces, name):
    result = traces[name]
    assert result.exchanges and all(ex.ok for ex in result.exchanges), [ex.answer for ex in result.exchanges]
    for ex in result.exchanges:
        labels = [j.label for j in ex.shown]
        want = ["TCP SYN", "TCP SYN-ACK"] if ex.traced.proto == "tcp" else ["UDP request", "UDP reply"]
        assert labels == want
        assert ex.checks, "no rewrite was checked"
        for journey, who, problems in ex.checks:
            assert problems == [], f"{journey.label} by {who}: {problems}"
        for journey in ex.journeys:
            for hop in journey.hops:
                assert hop.bad_checksums == [], f"{journey.label} at {hop.point.name}"


@pytest.mark.parametrize("name", ALL)
def test_the_director_hop_changes_exactly_the_classes_fields(traces, name):
    """The SYN as the director received it and as it left: every field the class names has
    its value, nothing else changed but MACs, checksums and what a TOA lengthens."""
    mode, result = modes.by_short(name), traces[name]
    ex = result.exchanges[0]
    syn = ex.journey("TCP SYN")
    before, after = core.director_rewrite(syn)
    assert before.point.name == "director:eth0"                      # director in: its own receive side
    assert after.point.name == "router:p-director"                   # director out: the far end of its link
    semantic = {k for k in after.changed if k not in core.NOISE}
    values = dict(result.values, cip=ex.traced.cip, cport=ex.traced.cport, vip=ex.vip, vport=ex.vport, rport=ex.vport)
    expected = set()
    for key, symbol in core.expected_rewrite(mode, "in", "tcp", True).items():
        allowed = core.resolve(symbol, before.fields, values)     # what the class says it becomes
        if allowed is core.ANY or before.fields.get(key) not in allowed:
            expected.add(key)                                     # ... which differs from what came
    if mode.toa:
        expected |= core.TOA_FOLLOWS
    changed_outer = {k for k in semantic if k.startswith("outer.")}
    assert semantic - changed_outer == {k for k in expected - core.NOISE if not k.startswith("outer.")}
    if name == "tun":
        assert changed_outer | {"outer.chksum"} == {k for k in after.fields if k.startswith("outer.")}
        assert all(b is None for k, (b, _) in after.changed.items() if k.startswith("outer."))
    if name == "dr":           # the MACs, and TTL - 1 (decrement_ttl(), as for every method)
        assert after.fields["eth.dst"] in result.values["rs_mac"] and after.changed["eth.dst"]
        assert {k for k in after.changed if not k.startswith("eth.")} == {"ip.ttl", "ip.chksum"}
        assert after.fields["ip.ttl"] == before.fields["ip.ttl"] - 1
    if name in ("fullnat", "enat"):
        assert after.fields["tcp.toa"] == f"{ex.traced.cip}:{ex.traced.cport}"
        assert after.fields["ip.src"] == (ex.vip if name == "enat" else after.fields["ip.src"])
        assert after.fields["ip.src"] in ({ex.vip} if name == "enat" else set(result.values["lip"]))


@pytest.mark.parametrize("name", ALL)
def test_the_replies_take_the_modes_path(traces, name):
    mode, result = modes.by_short(name), traces[name]
    for ex in result.exchanges:
        reply = ex.shown[1]
        assert reply.direction == "out"
        assert reply.passes("director") == mode.replies_via_director
        last = reply.hops[-1]
        assert last.receiver == "client" and last.fields["ip.src"] == ex.vip
        first = reply.hops[0]
        assert first.sender.startswith("rs")
        if mode.out_by is None:            # DR, TUN: the server itself answers from the VIP
            assert first.fields["ip.src"] == ex.vip
        if mode.out_by == "agent":         # ENAT: the kernel answers RIP -> VIP:lport, the agent rewrites
            assert first.point.kind == "agent" and first.fields["ip.src"] in result.values["rip"]
        request = ex.shown[0]
        assert request.passes("director")
        if name == "tun":
            assert request.hops[-1].point.kind == "decap" and "outer.src" not in request.hops[-1].fields


@pytest.mark.parametrize("name", ALL)
def test_pcaps_parse_and_the_diagram_has_an_arrow_per_hop(traces, name, tmp_path):
    result = traces[name]
    files = write_files(result, tmp_path)
    pcaps = [f for f in files if f.suffix == ".pcap"]
    assert any("director-eth0" in f.name for f in pcaps) and any("p-director" in f.name for f in pcaps)
    seqs = set()
    for path in pcaps:
        packets = rdpcap(str(path))
        assert len(packets) >= 1
        seqs |= {p["TCP"].seq for p in packets if p.haslayer("TCP") and p["TCP"].flags.S and not p["TCP"].flags.A}
    assert len(seqs) == 1                    # the SYN is the same at every point: one ISN
    svg = ET.fromstring(next(f for f in files if f.suffix == ".svg").read_text())
    arrows = [e for e in svg.iter("{http://www.w3.org/2000/svg}path") if e.get("class") == "hop"]
    assert len(arrows) == sum(len(j.hops) for ex in result.exchanges for j in ex.shown)


@pytest.mark.parametrize("scenario", list(breakit.SCENARIOS))
def test_break_shows_the_failure_then_works_once_fixed(traces, lan, routed, scenario):
    cls = breakit.SCENARIOS[scenario]
    session = lan if cls.rs_net == "lan" else routed
    outcome = breakit.run_scenario(session, cls())
    assert outcome["symptom"], f"{scenario}: the failure did not show"
    assert outcome["healthy"], f"{scenario}: still failing after the fix: " + \
        "; ".join(ex.answer for ex in outcome["fixed"].exchanges)
    assert not all(ex.ok and "toa=" in ex.answer for ex in outcome["broken"].exchanges if ex.traced.proto == "tcp")


def test_scheduler_watch_agrees_with_lbd(lan, traces):
    """wlc, weights 3,2,1, on a service of its own (NAT VIP:8000 -> RIP:80)."""
    lab = lan.lab
    schedwatch.configure(lan.director, lab, "wlc", "nat", [3, 2, 1], vport=8000)
    picks = schedwatch.burst(lab, lan.director, "wlc", "nat", [3, 2, 1], 6, vport=8000)
    assert [p.actual for p in picks] == [p.shadow for p in picks]
    assert [p.actual for p in picks] == ["rs1", "rs2", "rs3", "rs1", "rs2", "rs1"]
    assert picks[1].loads[0] == (1, 0)      # the first connection is held open: active on rs1
