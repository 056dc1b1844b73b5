"""The real-server daemons (the userspace decapsulator and the ENAT agent) stop on their own when
what they serve goes: their TUN device deleted (`ip link del`), or the name of their network
namespace (`ip netns delete`, which leaves the namespace alive while a process is in it). They
exit with EXIT_GONE and say why on stderr; the other daemon in the namespace is not disturbed
by the first one's device going."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lb.lab.net import pid_alive
from lb.lab.topology import Lab
from lb.realserver.daemon import EXIT_GONE
from tests.integration.helpers import wait_until

VIP = "198.18.0.104"
DEADLINE = 10.0            # seconds; the daemons look every WATCH_INTERVAL (0.5 s)
DAEMONS = {"decap": ("lb.realserver.decap", "lbgone0"), "enat": ("lb.realserver.enat_agent", "lbgone1")}


@pytest.fixture
def lab():
    lab = Lab(n_rs=1)
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
    assert lab.namespaces() == []


def start(lab, which: str) -> subprocess.Popen:
    module, ifname = DAEMONS[which]
    proc = lab.popen("rs1", [sys.executable, "-m", module, "--vip", VIP, "--ifname", ifname],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    line = proc.stdout.readline()
    assert line.startswith(f"ready ifname={ifname}".encode()), proc.stderr.read()
    return proc


def exited(proc: subprocess.Popen) -> str:
    """Wait (with a deadline) for it to exit; its stderr."""
    wait_until(lambda: proc.poll() is not None, DEADLINE, f"pid {proc.pid} exits")
    return proc.stderr.read().decode()


def test_each_daemon_stops_when_its_device_is_deleted(lab):
    procs = {which: start(lab, which) for which in DAEMONS}
    for which, (module, ifname) in DAEMONS.items():
        lab.run("rs1", ["ip", "link", "del", ifname], timeout=10, check=True)
        err = exited(procs[which])
        assert procs[which].returncode == EXIT_GONE, err
        assert f"{module}: device {ifname} was deleted" in err, err
        assert f"{module}: every interface {module} served was deleted: stopping" in err, err
        assert f"{module}: stopped; counters:" in err, err
        assert not pid_alive(procs[which].pid)
        if which == "decap":                     # the agent, on its own device, serves on
            assert procs["enat"].poll() is None
            assert f"{VIP} dev lbgone1" in lab.run("rs1", ["ip", "route"], timeout=5).stdout


def test_both_daemons_stop_when_their_namespace_is_deleted(lab):
    procs = {which: start(lab, which) for which in DAEMONS}
    name = lab.ns("rs1")
    subprocess.run(["ip", "netns", "delete", name], check=True, timeout=10)
    for which, (module, _) in DAEMONS.items():
        err = exited(procs[which])
        assert procs[which].returncode == EXIT_GONE, err
        assert f"{module}: the network namespace {name} {module} runs in was deleted: stopping" in err, err
        assert f"{module}: stopped; counters:" in err, err
