"""lb explain tells the mode classes' data (lb/modes/*.py); these tests hold that data to what
the rest of the code does: the fast path's vectors (tests/vectors) for the rewrites, the
configuration for port mapping, the ingress drops for who carries the replies. And every code a
mode names has its words, in both languages."""
from __future__ import annotations

import io

import pytest
from rich.console import Console

from lb import modes
from lb.director.config import Config, ConfigError
from lb.director.model import RealServer, Service
from lb.lab import explain
from lb.lab import trace as core
from lb.lab import words as W
from tests.vectors import dr, enat, fullnat, nat, topology, tun

SHORTS = ("nat", "dr", "tun", "fullnat", "enat")
VECTORS = {"nat": nat, "dr": dr, "tun": tun, "fullnat": fullnat, "enat": enat}


def all_modes():
    return [modes.by_short(s) for s in SHORTS]


def test_every_code_and_symbol_has_words_in_both_languages():
    for mode in all_modes():
        for code in (*mode.rs_needs, *mode.director_needs):
            assert set(W.NEEDS[code]) == {"en", "zh"} and all(len(W.NEEDS[code][lang]) == 2 for lang in W.LANGS)
        for sym in (*mode.rewrites_in.values(), *mode.rewrites_out.values()):
            assert set(W.SYMBOLS[sym]) == {"en", "zh"} and sym in explain.SHORT
        assert mode.rs_sees in W.SEES and set(W.TITLES[mode.short]) == {"en", "zh"}
    assert set(W.HOP["arp"]) == {"en", "zh"}


def test_replies_through_the_director_exactly_when_the_director_owns_replies():
    """NAT and FULLNAT claim replies in the ingress table (they rewrite them); the others do
    not see them at all."""
    for mode in all_modes():
        svc = Service("tcp", "198.18.0.100", 80)
        svc.laddrs = ["198.18.0.3"]
        dest = RealServer("198.18.0.11", 80, fwd=mode.name)
        assert bool(mode.ingress_drops(svc, dest)) == mode.replies_via_director, mode.short
        assert (mode.out_by is None) == (not mode.rewrites_out), mode.short
        assert (mode.out_by == "director") == mode.replies_via_director, mode.short


@pytest.mark.parametrize("short", SHORTS)
def test_port_mapping_is_what_lbadm_accepts(short):
    mode = modes.by_short(short)
    cfg = Config()
    cfg.apply({"op": "add_service", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "scheduler": "rr"})
    if mode.name == "fullnat":
        cfg.apply({"op": "add_laddr", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "laddr": "198.18.0.3"})
    add = {"op": "add_server", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "rip": "198.18.0.11",
           "rport": 8080, "fwd": mode.name}
    if mode.port_mapping:
        cfg.apply(add)
    else:
        with pytest.raises(ConfigError, match="cannot map ports"):
            cfg.apply(add)


def _fields(pkt) -> dict:
    return core.fields_of(core.dissect(bytes(pkt)))


def _vector_pairs(module):
    """(description, input fields, expected fields) of every vector forwarding one TCP/UDP frame."""
    for v in module.VECTORS:
        exp = v["expected"]
        if v["verdict"] != "forward" or isinstance(v["input"], bytes) or exp is None or isinstance(exp, (list, tuple)):
            continue
        before, after = _fields(v["input"]), _fields(exp)
        if any(f"{proto}.sport" in before and f"{proto}.sport" in after for proto in ("tcp", "udp")):
            yield v["description"], before, after


@pytest.mark.parametrize("short", SHORTS)
def test_the_rewrites_are_those_of_the_fast_path_vectors(short):
    """Every forwarded frame of the mode's fast-path vectors changes exactly the fields its
    class names, to the values they stand for (in the vectors' topology)."""
    mode, module = modes.by_short(short), VECTORS[short]
    checked = 0
    for description, before, after in _vector_pairs(module):
        direction = "in" if before["ip.dst"] == topology.VIP else "out"
        proto = "tcp" if "tcp.sport" in before else "udp"
        client = (before["ip.src"], before[f"{proto}.sport"]) if direction == "in" else \
            (after["ip.dst"], after[f"{proto}.dport"])
        values = {"cip": client[0], "cport": client[1], "vip": topology.VIP, "vport": 80,
                  "rip": {topology.RIP, topology.RIP2}, "rport": getattr(module, "RPORT", 80),
                  "lip": {fullnat.LIP1, fullnat.LIP2}, "lport": core.ANY, "dip": topology.DIP,
                  "rs_mac": {topology.RS_MAC, topology.RS2_MAC}}
        syn = proto == "tcp" and "S" in before["tcp.flags"] and "A" not in before["tcp.flags"]
        problems = core.check_rewrite(mode, direction, proto, syn, before, after, values)
        if "toa" in description.lower() and "no room" in description.lower():
            problems = [p for p in problems if not p.startswith("tcp.toa missing")]
        assert problems == [], description
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("lang", W.LANGS)
@pytest.mark.parametrize("topic", [*SHORTS, *explain.TOPICS])
def test_every_topic_renders(topic, lang):
    out = io.StringIO()
    explain.run(topic, lang, Console(file=out, width=100))
    text = out.getvalue()
    assert text.strip()
    if topic in SHORTS:
        mode = modes.by_short(topic)
        assert explain.flag_of(mode) in text and mode.listing in text
        for code in mode.rs_needs:
            assert W.say(W.NEEDS, code, lang)[0][:20] in text.replace("\n", " ")


def test_facts_follow_the_class_attributes():
    dr_facts = dict(explain.facts(modes.by_short("dr")))
    assert dr_facts[W.say(W.UI, "same_segment")] == "yes"
    assert dr_facts[W.say(W.UI, "port_mapping")] == "no"
    assert dr_facts[W.say(W.UI, "in")] == "eth.dst ← the server's MAC, ip.ttl ← one less"
    assert explain.facts(modes.by_short("enat"), "zh")[1][1] == W.say(W.UI, "replies_agent", "zh")


def test_schedulers_are_told_from_their_modules():
    assert "ip_vs_wlc.c" in explain.scheduler_text("wlc")
    assert explain.scheduler_text("sh", "zh") == W.SCHEDULERS_ZH["sh"]
