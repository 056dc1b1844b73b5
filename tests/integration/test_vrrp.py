"""An active/backup pair: lbd on two directors of the LAN, each with --vip-ownership address,
and Debian's keepalived (VRRP only, -P) moving the DR VIP between them. The client's traffic
goes through the master; when the master's keepalived stops, the backup takes the VIP and lbd
there starts serving it (and announces it with gratuitous ARPs): the client's connections
are answered again in under 3 s, through the backup.

Both lbd read the same keepalived.conf's virtual_server (with a TCP_CHECK); each keepalived
reads its vrrp_instance, lbd ignores it, keepalived -P ignores the rest.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.topology import Lab
from tests.integration.helpers import ok

VIP = "198.18.0.101"        # the lab's DR VIP
RS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")

pytestmark = pytest.mark.skipif(shutil.which("keepalived") is None and
                                not shutil.os.path.exists("/usr/sbin/keepalived"),
                                reason="keepalived is not installed (install.sh installs it)")


def conf(state: str, priority: int) -> str:
    servers = "".join(f"    real_server {rip} 80 {{\n        TCP_CHECK {{ connect_timeout 0.5 }}\n"
                      "    }\n" for rip in RS)
    return f"""\
global_defs {{
    vrrp_version 3
    script_user root
}}
vrrp_instance VI_LB {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 0.5
    virtual_ipaddress {{
        {VIP}/32 dev eth0
    }}
}}
virtual_server {VIP} 80 {{
    lvs_sched rr
    lvs_method DR
{servers}}}
"""


# Runs in the client: a fresh connection and GET to VIP:80 every 50 ms for `seconds`; prints
# [time, ok] per attempt as JSON at the end.
PROBE = r"""
import json, socket, sys, time
vip, seconds = sys.argv[1], float(sys.argv[2])
out, end = [], time.time() + seconds
while time.time() < end:
    t = time.time()
    try:
        with socket.create_connection((vip, 80), timeout=0.3) as c:
            c.settimeout(0.5)
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            ok = c.recv(64).startswith(b"HTTP/1.")
    except OSError:
        ok = False
    out.append([t, ok])
    time.sleep(max(0.0, 0.05 - (time.time() - t)))
print(json.dumps(out))
"""


def wait_for(what, seconds: float, step: float = 0.1):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if what():
            return True
        time.sleep(step)
    return bool(what())


def conns(d) -> int:
    text = ok(d.lbadm("-L", "-n", "--stats", "-t", f"{VIP}:80")).stdout
    return sum(int(line.split()[2]) for line in text.splitlines() if line.startswith("  -> 198."))


def holds(lab, role) -> bool:
    r = lab.run(role, ["ip", "-4", "-o", "addr", "show", "dev", "eth0"], timeout=5)
    return f" {VIP}/32 " in r.stdout


@pytest.fixture
def pair(tmp_path):
    lab = Lab(backup_director=True)
    try:
        lab.up()
        lab.start_servers()
        lab.setup_realservers("dr")
        # keepalived moves the DR VIP: it is not on the director by default then
        r = lab.run("director", ["ip", "addr", "del", f"{VIP}/32", "dev", "eth0"], timeout=5)
        assert r.returncode == 0, r.stderr
        yield lab
    finally:
        lab.down()
    assert lab.namespaces() == [], f"namespaces left behind: {lab.namespaces()}"


def start_keepalived(lab, role, path, tmp_path):
    run = tmp_path / role
    run.mkdir()
    argv = ["keepalived", "-n", "-l", "-D", "-P", "-f", str(path), "-p", str(run / "k.pid"),
            "-r", str(run / "v.pid"), "-c", str(run / "c.pid")]
    with open(lab.logfile(f"keepalived-{role}"), "wb") as log:
        return lab.popen(role, argv, stdout=log, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("failure", ["keepalived stops", "link down"])
def test_vrrp_failover_moves_the_traffic_to_the_backup_in_under_3s(pair, tmp_path, failure):
    """keepalived stops: it drops the VIP and says so (priority 0), the backup takes over at
    once. link down: the master is cut off; the backup takes over when its adverts stop
    (VRRPv3's Master_Down_Interval, 3 x advert_int + skew, about 1.6 s here)."""
    lab = pair
    directors, keepalived = {}, {}
    try:
        for role, state, prio in (("director", "MASTER", 150), ("director2", "BACKUP", 100)):
            path = tmp_path / f"{role}.conf"
            path.write_text(conf(state, prio))
            directors[role] = LabDirector(lab, role=role, extra_args=[
                "--keepalived-conf", str(path), "--vip-ownership", "address"]).start()
            keepalived[role] = start_keepalived(lab, role, path, tmp_path)
        assert wait_for(lambda: holds(lab, "director"), 10), lab.logfile("keepalived-director").read_text()
        assert not holds(lab, "director2")
        master, backup = directors["director"], directors["director2"]
        assert wait_for(lambda: lab.http_get("client", f"http://{VIP}/", timeout=2).returncode == 0, 5)
        assert conns(master) > 0 and conns(backup) == 0
        assert "not held (services withheld): 198.18.0.101" in ok(backup.lbadm("--list-checks")).stdout

        probe = lab.popen("client", [sys.executable, "-c", PROBE, VIP, "6"], stdout=subprocess.PIPE,
                          text=True)
        time.sleep(1.5)
        stopped = time.time()
        if failure == "keepalived stops":
            lab.stop_process(keepalived.pop("director").pid)
        else:
            r = lab.run("director", ["ip", "link", "set", "eth0", "down"], timeout=5)
            assert r.returncode == 0, r.stderr
        out, _ = probe.communicate(timeout=30)
        attempts = json.loads(out)
        before = [t for t, good in attempts if t < stopped and good]
        after = [t for t, good in attempts if t >= stopped and good]
        assert before and after, attempts
        failed = [t for t, good in attempts if t >= stopped and not good]
        outage = (max(failed) - stopped) if failed else 0.0
        back = min(t for t in after if not failed or t > max(failed)) - stopped
        print(f"VRRP failover ({failure}): {len(failed)} failed attempts, the last {outage:.2f} s "
              f"after the failure; answered again (through the backup) {back:.2f} s after it")
        assert holds(lab, "director2")
        assert wait_for(lambda: not holds(lab, "director"), 3)
        assert outage < 3.0, outage
        assert conns(backup) > 0
        assert "VIPs held by this director: 198.18.0.101" in ok(backup.lbadm("--list-checks")).stdout
        assert "not held (services withheld): 198.18.0.101" in ok(master.lbadm("--list-checks")).stdout
    finally:
        for proc in keepalived.values():
            lab.stop_process(proc.pid)
        for d in directors.values():
            d.stop()
