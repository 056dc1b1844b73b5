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


# Runs inside the client namespace: GET /bytes/N read at RATE bytes/s; prints "sha256 bytes".
# The receive buffer is fixed small before connect (SO_RCVBUF turns autotuning off): with the
# veths' offloads on, an autotuned buffer takes megabytes in a blink and the server is done
# long before the reader, so the connection would not stay open for the rate's duration.
# A stall of STALL seconds ends it with exit 1 (what curl's --speed-time did).
RATE_LIMITED_GET = r"""
import hashlib, socket, sys, time
vip, n, rate, stall = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
s.settimeout(stall); s.connect((vip, 80))
s.sendall(f"GET /bytes/{n} HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
head, h, got, t0 = b"", hashlib.sha256(), 0, time.monotonic()
try:
    while True:
        b = s.recv(8192)
        if not b:
            break
        if head is not None:
            head += b
            if b"\r\n\r\n" not in head:
                continue
            head, b = None, head.split(b"\r\n\r\n", 1)[1]
        h.update(b); got += len(b)
        ahead = got / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
except OSError as e:
    print(h.hexdigest(), got); print(f"stalled: {e}", file=sys.stderr); sys.exit(1)
print(h.hexdigest(), got)
"""


def rate_limited_download(lab, n: int, rate: float, vip: str = VIP, stall: float = 3.0):
    """A GET of n bytes that the client reads at `rate` bytes/s, so its connection stays open
    about n / rate seconds whatever the offloads (a Popen; stdout "sha256 bytes")."""
    return lab.popen("client", [sys.executable, "-c", RATE_LIMITED_GET, vip, str(n), str(rate), str(stall)],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
