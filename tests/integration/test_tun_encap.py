"""lbd's tc egress program (lb.director.tun_encap): attached, replaced when one an lbd killed
left behind, removed with exactly what was added; someone else's clsact and filters stay.
(What it does to the frames: tests/integration/test_offloads.py, TUN with default offloads.)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = r"""
import subprocess, sys
from pyroute2 import IPRoute
from lb.director import tun_encap as t

def tc(*a):
    return subprocess.run(["tc", *a], capture_output=True, text=True, check=True).stdout

subprocess.run(["ip", "link", "add", "d0", "type", "veth", "peer", "d1"], check=True)
with IPRoute() as ipr:
    i = ipr.link_lookup(ifname="d0")[0]
    if sys.argv[1] == "theirs":     # a clsact and a filter of someone else's, there before lbd
        tc("qdisc", "add", "dev", "d0", "clsact")
        tc("filter", "add", "dev", "d0", "egress", "prio", "7", "bpf", "bytecode", "1,6 0 0 0,", "classid", "1")
    first = t.attach_all(ipr, [("d0", i)])
    again = t.attach_all(ipr, [("d0", i)])          # as after an lbd killed with SIGKILL
    print(first["d0"]["made_qdisc"], again["d0"]["made_qdisc"])
    print(tc("filter", "show", "dev", "d0", "egress").count("lb_tun_encap direct-action"))
    t.detach(ipr, again["d0"])
    t.detach(ipr, first["d0"])
    print(repr(tc("qdisc", "show", "dev", "d0", "clsact")), repr(tc("filter", "show", "dev", "d0", "egress")))
"""


@pytest.mark.parametrize("before", ["nothing", "theirs"])
def test_attach_replaces_a_stale_filter_and_detach_removes_only_ours(before):
    ns = f"lbtcenc{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CODE, before],
                           capture_output=True, text=True, timeout=60)
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    assert r.returncode == 0, r.stderr
    made, count, left = r.stdout.splitlines()
    assert count == "1"                             # replaced, not added twice
    if before == "nothing":
        assert made == "True False" and left == "'' ''"
    else:
        assert made == "False False"
        assert "clsact" in left and "pref 7 bpf" in left and "lb_tun_encap" not in left
