"""iperf3 through every forwarding mode, veths with their default offloads (TSO/GSO aggregates
and partial checksums reach lbd as they come): a short run bounded by a byte count, each way
(client -> RS, and -R for RS -> client), read from iperf3's JSON at both ends. No throughput
threshold: the machine is shared.

RS -> client (-R): every byte the server sent is counted by the client. Client -> RS: iperf3's
server stops counting when the client's TEST_END arrives on the control connection, which the
client sends once its last byte is *written to its socket* (esnet/iperf#382; seen here through
plain kernel forwarding too: 13-14.7 of 16 MiB counted). What is missing can only be what was
in the client's send buffer or the server's receive buffer then, so the buffers are fixed
(-w, no autotuning) and the server must count at least sent - (sndbuf + rcvbuf), the sizes
the two ends report. The payload is compared byte for byte by test_offloads.py (10 MB).

NAT, DR and TUN on the default lab (real servers on the director's LAN), FULLNAT and ENAT on the
routed lab (real servers behind the router), as ``lb demo`` runs them."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.topology import Lab
from tests.integration.helpers import ok, wait_until

PORT = 5201
BYTES = 16 << 20                 # iperf3 -n: sent in 128 KiB blocks, so exactly this many
WINDOW = "128K"                  # iperf3 -w: SO_SNDBUF / SO_RCVBUF on both ends
FLAG = {"nat": "-m", "dr": "-g", "tun": "-i", "fullnat": "-b", "enat": "--enat"}
NET = {"nat": "lan", "dr": "lan", "tun": "lan", "fullnat": "routed", "enat": "routed"}   # as lb demo

pytestmark = pytest.mark.skipif(shutil.which("iperf3") is None, reason="iperf3 not installed (install.sh)")


def _lab_with_services(net: str):
    """A lab (one RS, offloads on) with lbd and a service on PORT per mode of that lab."""
    lab = Lab(n_rs=1, rs_net=net, offloads="on")
    try:
        lab.up()
        with LabDirector(lab) as d:
            for mode in (m for m, n in NET.items() if n == net):
                vs = f"{lab.addr['vips'][mode]}:{PORT}"
                ok(d.lbadm("-A", "-t", vs, "-s", "rr"))
                if mode == "fullnat":
                    ok(d.lbadm("--add-laddr", "-t", vs, "-z", lab.addr["lips"][0]))
                ok(d.lbadm("-a", "-t", vs, "-r", f"{lab.addr['rs'][0]}:{PORT}", FLAG[mode]))
                if mode in ("dr", "tun", "enat"):
                    lab.setup_realservers(mode, udp_echo=False)
            yield lab, d
    finally:
        lab.down()
    assert lab.namespaces() == []


@pytest.fixture(scope="module")
def lan():
    yield from _lab_with_services("lan")


@pytest.fixture(scope="module")
def routed():
    yield from _lab_with_services("routed")


def listening(lab) -> bool:
    out = lab.run("rs1", ["ss", "-Hltn", f"sport = :{PORT}"], timeout=10).stdout
    return f":{PORT}" in out


def iperf3(lab, vip: str, reverse: bool) -> tuple[dict, dict]:
    """One bounded run; (the client's JSON, the server's JSON)."""
    server = lab.popen("rs1", ["iperf3", "-s", "-1", "-J", "-p", PORT], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: listening(lab), 10, "iperf3 -s listens")
        client = lab.run("client", ["iperf3", "-c", vip, "-p", PORT, "-n", BYTES, "-J", "-w", WINDOW,
                                    "--connect-timeout", "5000", *(["-R"] if reverse else [])],
                         timeout=60)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            lab.stop_process(server.pid)
    assert client.returncode == 0, client.stdout[-2000:]
    return json.loads(client.stdout), json.loads(out)


def check(lab, d, mode: str, reverse: bool) -> None:
    client, server = iperf3(lab, lab.addr["vips"][mode], reverse)
    sender, receiver = (server, client) if reverse else (client, server)
    sent = sender["end"]["sum_sent"]["bytes"]
    received = receiver["end"]["sum_received"]["bytes"]
    stats = d.lbadm("-L", "-n", "--stats").stdout
    assert sent == BYTES, (sent, stats)
    if reverse:
        assert received == sent, (sent, received, stats)
    else:
        buffered = sender["start"]["sndbuf_actual"] + receiver["start"]["rcvbuf_actual"]
        assert sent - buffered <= received <= sent, (sent, received, buffered, stats)


DIRECTIONS = pytest.mark.parametrize("reverse", [False, True], ids=["to_rs", "from_rs"])


@DIRECTIONS
@pytest.mark.parametrize("mode", ["nat", "dr", "tun"])
def test_iperf3_lan_modes_with_default_offloads(lan, mode, reverse):
    check(*lan, mode, reverse)


@DIRECTIONS
@pytest.mark.parametrize("mode", ["fullnat", "enat"])
def test_iperf3_routed_modes_with_default_offloads(routed, mode, reverse):
    check(*routed, mode, reverse)
