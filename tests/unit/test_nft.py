"""The ingress table's text (lb.director.nft): fixed rules over sets, changes as set deltas."""
import os
import shutil
import subprocess

import pytest

from lb.director import nft


def test_table_has_a_chain_per_interface_reading_every_set():
    text = nft.render_table("lbd_eth0", ["eth0", "eth1"], ["198.18.0.2"])
    assert text.startswith("table netdev lbd_eth0 {}\ndelete table netdev lbd_eth0\n")
    assert "set local { type ipv4_addr; elements = { 198.18.0.2 }; }" in text
    assert text.count("hook ingress") == 2 and 'device "eth1"' in text
    for rule in ("ip daddr . tcp dport @svc_tcp drop",
                 "ip daddr != @local ip saddr . udp sport @masq_udp drop",
                 "ip saddr . ip daddr . tcp sport @fullnat_tcp drop"):
        assert text.count(rule) == 2


def test_delta_deletes_then_adds_grouped_by_set():
    add = {("svc_tcp", ("198.18.0.100", 80)), ("svc_tcp", ("198.18.0.101", 80)),
           ("fullnat_udp", ("198.18.2.11", "198.18.0.3", 53))}
    remove = {("masq_tcp", ("198.18.0.11", 8080))}
    assert nft.render_delta("T", add, remove).splitlines() == [
        "delete element netdev T masq_tcp { 198.18.0.11 . 8080 }",
        "add element netdev T fullnat_udp { 198.18.2.11 . 198.18.0.3 . 53 }",
        "add element netdev T svc_tcp { 198.18.0.100 . 80, 198.18.0.101 . 80 }"]
    assert nft.render_delta("T", set(), set()) == ""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("nft"), reason="needs root and nft")
def test_nft_accepts_the_table_and_a_delta():
    # nft -c: parse and check against the kernel without committing anything.
    script = nft.render_table("lbd_check", ["lo"], []) + nft.render_delta(
        "lbd_check", {("svc_udp", ("198.18.0.100", 53)), ("masq_tcp", ("198.18.0.11", 80))}, ())
    r = subprocess.run(["nft", "-c", "-f", "-"], input=script, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
