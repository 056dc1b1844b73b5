"""What the integration tests share: driving lbadm, counting who answered, reading listings."""
from __future__ import annotations

import json
import subprocess
import sys
import time

from lb.director import cli

VIP = "198.18.0.100"          # the lab's NAT VIP
CLIENT = "198.18.1.2"         # the lab's client


# Runs inside the client namespace: n fresh TCP connections, one GET each; prints the tally.
MANY_GETS = r"""
import collections, http.client, json, sys
n = int(sys.argv[1]); seen = collections.Counter(); clients = set()
for _ in range(n):
    c = http.client.HTTPConnection(sys.argv[2], 80, timeout=5)
    c.request("GET", "/")
    name, client = c.getresponse().read().decode().split()[:2]
    c.close()
    seen[name] += 1
    clients.add(client.split("=", 1)[1].rsplit(":", 1)[0])
print(json.dumps({"seen": seen, "clients": sorted(clients)}))
"""


def many_gets(lab, n: int, vip: str = VIP) -> dict:
    r = lab.run("client", [sys.executable, "-c", MANY_GETS, str(n), vip], timeout=120,
                capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def nat_service(director, proto="-t", port=80, sched="rr", weights=(1, 1, 1), rport=None):
    ok(director.lbadm("-A", proto, f"{VIP}:{port}", "-s", sched))
    for i, w in enumerate(weights, start=11):
        ok(director.lbadm("-a", proto, f"{VIP}:{port}", "-r", f"198.18.0.{i}:{rport or port}",
                          "-m", "-w", w))


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"rc={r.returncode} out={r.stdout!r} err={r.stderr!r}"
    return r


def listing(director) -> str:
    return ok(director.lbadm("-L", "-n")).stdout


def dest_rows(director, vip, port):
    """(InPkts, OutPkts) per real server of VIP:port from `lbadm -L -n --stats`."""
    text = ok(director.lbadm("-L", "-n", "--stats")).stdout
    rows, inside = [], False
    for line in text.splitlines():
        if not line.startswith("  ->"):
            inside = f" {vip}:{port} " in f"{line} "
        elif inside:
            cols = line.split()
            rows.append((int(cols[3]), int(cols[4])))
    return rows


def wait_until(condition, timeout: float, what: str, interval: float = 0.05):
    """Poll `condition()` until it returns something true (returned) or `timeout` seconds pass
    (AssertionError naming `what` and the last value). The integration tests' one way to wait:
    on the condition itself, with a deadline, never on a sleep that guesses how long it takes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not within {timeout:g}s (last: {value!r})")
        time.sleep(interval)


def figures(director) -> dict:
    """lbd's live figures ({"op": "figures"}, what `lbadm top` reads): "drops" by reason,
    "passes", "fastpath" totals (rx_frames, conns, expired_conns, ...), "services"."""
    reply = cli.request(director.socket, {"op": "figures"}, timeout=5.0)
    assert reply["rc"] == 0, reply
    return json.loads(reply["out"])


def drops(director) -> dict:
    """Frames lbd's fast path dropped so far, by reason (lb._forward.REASON_NAMES)."""
    return figures(director)["drops"]


def connection_count(director) -> int:
    """Entries in lbd's connection table now (the fast path's `conns` total)."""
    return figures(director)["fastpath"].get("conns", 0)
