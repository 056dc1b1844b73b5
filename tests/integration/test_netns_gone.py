"""An lbd whose network namespace is deleted under it (`ip netns delete`: the name goes, the
namespace lives on while lbd is in it) notices, stops, and frees its control socket's path, so
that a new lbd on the same path starts and lbadm talks to it, not to an orphan."""
from __future__ import annotations

import os
import subprocess
import time

from lb.lab.lbd import LabDirector
from lb.lab.net import pid_alive
from lb.lab.topology import Lab


def test_lbd_stops_when_its_namespace_is_deleted():
    lab = Lab(n_rs=1)
    try:
        lab.up()
        d = LabDirector(lab).start()
        pid, sock = d.pid, d.socket
        subprocess.run(["ip", "netns", "delete", lab.ns("director")], check=True, timeout=10)
        end = time.monotonic() + 10
        while d.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert d.proc.poll() is not None, "lbd kept running in its deleted namespace"
        assert not os.path.exists(sock)
        assert "was deleted: stopping" in d.log_tail()
        assert not pid_alive(pid)
        d.stop()
    finally:
        lab.down()
    assert lab.namespaces() == []


def test_lbd_stops_serving_a_deleted_interface():
    """Its only interface deleted: lbd says so, and with nothing left to serve it stops and
    frees its socket path; nothing of it is left (its nftables table goes with the stop)."""
    lab = Lab(n_rs=1)
    try:
        lab.up()
        d = LabDirector(lab).start()
        sock = d.socket
        subprocess.run(["ip", "-n", lab.ns("director"), "link", "del", "eth0"], check=True,
                       timeout=10)
        end = time.monotonic() + 10
        while d.proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert d.proc.poll() is not None, "lbd kept running without an interface"
        log = d.log_tail()
        assert "interface eth0 was deleted" in log and "every interface lbd served" in log
        assert not os.path.exists(sock)
        tables = subprocess.run(["ip", "netns", "exec", lab.ns("director"), "nft", "list",
                                 "tables"], capture_output=True, text=True, timeout=10).stdout
        assert "lbd" not in tables, tables
        d.stop()
    finally:
        lab.down()
    assert lab.namespaces() == []
