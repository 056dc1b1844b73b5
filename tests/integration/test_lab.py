"""The namespace lab itself: topology, reachability, the kernel baseline, and teardown."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter

import pytest
from pyroute2 import netns

import lb.lab.topology as lab_module
from lb.lab.net import pid_alive
from lb.lab.topology import STATE_DIR, Lab, new_prefix
from lb.lab.servers import pattern_sha256

pytestmark = pytest.mark.integration

COUNT = 6


@pytest.fixture
def kernel_lb(lab):
    lab.enable_kernel_lb()
    try:
        yield lab
    finally:
        lab.disable_kernel_lb()


def _sysctl(lab, role, key):
    return lab.run(role, ["cat", f"/proc/sys/{key.replace('.', '/')}"], timeout=5).stdout.strip()


def test_topology(lab):
    assert lab.namespaces() == sorted(lab.ns(r) for r in lab.roles)
    status = lab.status()
    for address in [lab.addr["client"], lab.addr["router_lan"], lab.addr["vip"], *lab.addr["rs"]]:
        assert address in status
    assert _sysctl(lab, "router", "net.ipv4.ip_forward") == "1"
    assert _sysctl(lab, "director", "net.ipv4.ip_forward") == "0"
    routes = lab.run("rs1", ["ip", "route", "show", "default"], timeout=5).stdout
    assert f"via {lab.addr['director']}" in routes  # NAT: replies go back through the director


def test_offloads_stay_as_veths_come_by_default(lab):
    report = lab.offload_report()
    assert len(report) == len(lab.roles)
    for ns, ifaces in report.items():
        for ifname, left in ifaces.items():
            assert "tx-checksum-ip-generic" in left and "tx-tcp-segmentation" in left, (ns, ifname, left)


def test_offloads_off_turns_every_one_off():
    with Lab(n_rs=1, offloads="off") as off:
        report = off.offload_report()
        assert len(report) == len(off.roles)
        assert all(not left for ifaces in report.values() for left in ifaces.values()), report
    assert off.namespaces() == []


def test_reachability(lab):
    assert lab.ping("client", lab.addr["router"])
    assert lab.ping("client", lab.addr["router_lan"])
    assert lab.ping("client", lab.addr["director"])
    for rip in lab.addr["rs"]:
        assert lab.ping("director", rip)


def test_servers_answer_directly(lab):
    for name, rip in zip(lab.rs_names, lab.addr["rs"]):
        r = lab.http_get("director", f"http://{rip}/")
        assert r.stdout.startswith(f"{name} client={lab.addr['director']}:") and r.stdout.endswith("\n")
        reply = lab.udp_query("director", rip, Lab.UDP_PORT, b"hello")
        assert reply.startswith(f"{name} client={lab.addr['director']}:".encode())
        assert reply.endswith(b" hello")


def _answers(lines):
    """['rs1 client=198.18.1.2:4321', ...] -> [('rs1', '198.18.1.2'), ...]"""
    out = []
    for line in lines:
        name, client = line.split()[:2]
        out.append((name, client.removeprefix("client=").rsplit(":", 1)[0]))
    return out


def _assert_round_robin(lab, answers):
    assert [ip for _, ip in answers] == [lab.addr["client"]] * COUNT  # NAT keeps the client address
    assert Counter(name for name, _ in answers) == {name: COUNT // lab.n_rs for name in lab.rs_names}


def test_kernel_baseline_http(kernel_lb):
    lab = kernel_lb
    results = [lab.http_get("client", f"http://{lab.addr['vip']}/") for _ in range(COUNT)]
    assert [r.returncode for r in results] == [0] * COUNT, [r.stderr for r in results]
    _assert_round_robin(lab, _answers(r.stdout for r in results))


def test_kernel_baseline_udp(kernel_lb):
    lab = kernel_lb
    replies = [lab.udp_query("client", lab.addr["vip"], Lab.UDP_PORT, f"n{i}".encode()) for i in range(COUNT)]
    assert None not in replies
    _assert_round_robin(lab, _answers(r.decode() for r in replies))


def test_kernel_baseline_10mb(kernel_lb):
    lab, n = kernel_lb, 10 * 1024 * 1024
    r = lab.run("client", ["curl", "-sS", "--max-time", "30", f"http://{lab.addr['vip']}/bytes/{n}"],
                timeout=40, text=False)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) == n
    assert hashlib.sha256(r.stdout).hexdigest() == pattern_sha256(n)


def _lb(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "lb", *args], capture_output=True, text=True,
                          timeout=timeout, env=Lab().env())


def test_lab_down_from_another_process():
    prefix = new_prefix()
    try:
        up = _lb("lab", "up", "--prefix", prefix, "--servers")
        assert up.returncode == 0, up.stderr
        state = json.loads((STATE_DIR / f"{prefix}.json").read_text())
        pids = [int(p) for p in state["processes"]]
        assert len(pids) == 3 and all(pid_alive(p) for p in pids)
        assert len(Lab(prefix=prefix).namespaces()) == 6
        down = _lb("lab", "down", "--prefix", prefix)
        assert down.returncode == 0, down.stderr
        assert Lab(prefix=prefix).namespaces() == []
        assert not (STATE_DIR / f"{prefix}.json").exists()
        assert not any(pid_alive(p) for p in pids)
    finally:
        Lab(prefix=prefix).down()


@pytest.mark.parametrize("exc", [RuntimeError, KeyboardInterrupt])
def test_exception_inside_context_removes_lab(exc):
    lab = Lab()
    with pytest.raises(exc):
        with lab:
            pids = [p.pid for p in lab.start_servers().values()]
            assert len(lab.namespaces()) == len(lab.roles)
            raise exc("boom")
    assert lab.namespaces() == []
    assert not lab.state_file.exists()
    assert not any(pid_alive(p) for p in pids)
    lab.down()  # idempotent


def test_down_all_removes_recorded_labs_and_their_leftovers(tmp_path, monkeypatch):
    # A private state directory: `--all` must not touch labs other runs have recorded.
    monkeypatch.setattr(lab_module, "STATE_DIR", tmp_path)
    lab = Lab().up()
    try:
        netns.create(f"{lab.prefix}-leftover")  # not in the state file, but has the prefix
        assert lab_module.list_labs() == [lab.prefix]
        assert lab_module.down_all() == [lab.prefix]
        assert lab.namespaces() == []
        assert lab_module.list_labs() == []
    finally:
        lab.down()
