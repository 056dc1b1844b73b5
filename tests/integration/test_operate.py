"""Operating lbd as one operates LVS: --rate against traffic sent at a known rate, Prometheus
metrics scraped while traffic flows, `lbadm top` under a pseudo-terminal, and every way out of
lbd (SIGTERM, SIGHUP then SIGTERM, SIGTERM while starting, a failed start, a dead packet
thread) leaving no nftables table, socket or lock behind. Each test is bounded in time."""
from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time

import pytest

from lb.director import nft
from lb.lab.lbd import LabDirector
from lb.lab.net import LabError, pid_alive
from tests.integration.helpers import VIP, ok

UDP_PORT = 5353
METRICS = "127.0.0.1:9400"      # inside the director's namespace: its own loopback

# Runs in the client namespace: `n` datagrams of `size` bytes from one socket to VIP:port at
# `rate` per second, in bursts on a fixed schedule (so a late wake-up does not lower the rate);
# prints {"sent", "received", "seconds"} once the replies have had time to come back.
UDP_SENDER = r"""
import json, socket, sys, time
vip, port, n, rate, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setblocking(False)
payload, got, burst = b"x" * size, 0, max(1, int(rate // 100))
def drain():
    global got
    while True:
        try:
            s.recv(4096)
            got += 1
        except BlockingIOError:
            return
print("go", flush=True)
t0 = time.monotonic()
for i in range(0, n, burst):
    delay = t0 + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    for _ in range(min(burst, n - i)):
        s.sendto(payload, (vip, port))
    drain()
seconds = time.monotonic() - t0
end = time.monotonic() + 2
while got < n and time.monotonic() < end:
    drain()
    time.sleep(0.01)
print(json.dumps({"sent": n, "received": got, "seconds": seconds}), flush=True)
"""

# Runs in the client namespace: a new TCP connection (one GET) every 1/rate s for `secs` s.
TCP_OPENER = r"""
import http.client, sys, time
vip, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
t0, i = time.monotonic(), 0
while i < rate * secs:
    delay = t0 + i / rate - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    c = http.client.HTTPConnection(vip, 80, timeout=5)
    c.request("GET", "/")
    c.getresponse().read()
    c.close()
    i += 1
print(i, time.monotonic() - t0, flush=True)
"""


def udp_service(director, servers=(11, 12)):
    ok(director.lbadm("-A", "-u", f"{VIP}:{UDP_PORT}", "-s", "rr"))
    for i in servers:
        ok(director.lbadm("-a", "-u", f"{VIP}:{UDP_PORT}", "-r", f"198.18.0.{i}:{UDP_PORT}", "-m"))


def start_sender(lab, n, rate, size=100):
    proc = lab.popen("client", [sys.executable, "-c", UDP_SENDER, VIP, UDP_PORT, n, rate, size],
                     stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "go"
    return proc


def sender_result(proc, timeout):
    out, _ = proc.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def scrape(lab) -> dict:
    """{'name{labels}': value} of lbd's /metrics, fetched inside the director's namespace."""
    r = lab.run("director", ["curl", "-sS", "--max-time", "5", f"http://{METRICS}/metrics"],
                timeout=15)
    assert r.returncode == 0, r.stderr
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in r.stdout.splitlines() if line.startswith("lbd_"))}


def server_sample(samples, metric, direction, server):
    return samples[f'{metric}{{direction="{direction}",forward="Masq",server="{server}",'
                   f'service="UDP {VIP}:{UDP_PORT}"}}']


def tables(lab) -> str:
    return lab.run("director", ["nft", "list", "tables"], timeout=10).stdout


def lock_path(lab) -> str:
    ino = os.stat(f"/var/run/netns/{lab.ns('director')}").st_ino
    return f"/run/lbd/netns-{ino}-{lab.director_ifname}.lock"


def assert_clean(lab, d):
    assert nft.table_name([lab.director_ifname]) not in tables(lab), tables(lab)
    assert not os.path.exists(d.socket)
    assert not os.path.exists(lock_path(lab))


# --- metrics --------------------------------------------------------------------------------------

def test_metrics_scraped_while_traffic_flows_equal_the_traffic_sent(lab):
    n, size = 3000, 100
    with LabDirector(lab, extra_args=["--metrics", METRICS]) as d:
        udp_service(d)
        sender = start_sender(lab, n, 1000, size)
        during = []
        while sender.poll() is None and len(during) < 20:
            during.append(scrape(lab))
            time.sleep(0.2)
        result = sender_result(sender, timeout=30)
        assert result["received"] == n, result
        after = scrape(lab)
    # one client socket is one connection: all of it went to the first server picked
    ins = [sum(server_sample(s, "lbd_server_packets_total", "in", f"198.18.0.{i}:{UDP_PORT}")
               for i in (11, 12)) for s in during]
    assert any(0 < x < n for x in ins), ins                # seen while the traffic flowed
    assert ins == sorted(ins)
    svc = f'service="UDP {VIP}:{UDP_PORT}"'
    assert after[f'lbd_service_packets_total{{direction="in",{svc}}}'] == n
    assert after[f'lbd_service_packets_total{{direction="out",{svc}}}'] == n
    assert after[f'lbd_service_bytes_total{{direction="in",{svc}}}'] == n * (20 + 8 + size)
    assert after[f"lbd_service_connections_total{{{svc}}}"] == 1
    assert after[f"lbd_service_inactive_connections{{{svc}}}"] == 1     # UDP: never active
    assert after["lbd_rx_frames_total"] >= 2 * n and after["lbd_tx_frames_total"] >= 2 * n
    assert sum(v for k, v in after.items() if k.startswith("lbd_frames_dropped_total")) == 0


# --- --rate ---------------------------------------------------------------------------------------

def rate_row(director, proto, port) -> list:
    text = ok(director.lbadm("-L", "-n", "--rate", proto, f"{VIP}:{port}")).stdout
    line = next(line for line in text.splitlines() if line.startswith(("TCP ", "UDP ")))
    return [int(x) for x in line.split()[2:]]


def within(value, expected, tolerance=0.10) -> bool:
    return abs(value - expected) <= tolerance * expected


def test_rate_is_the_kernels_estimate_of_traffic_at_a_known_rate(lab):
    # 1000 datagrams/s and 40 new TCP connections/s for 26 s. The kernel's estimator is an EWMA
    # of weight 1/4 over 2-second samples: after k samples of a steady rate it shows
    # 1 - (3/4)^k of it, so it is read after 11 samples or more (within 5 % then), not sooner.
    pps, cps, secs, size = 1000, 40, 26, 100
    with LabDirector(lab) as d:
        udp_service(d, servers=(11,))
        ok(d.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr"))
        ok(d.lbadm("-a", "-t", f"{VIP}:80", "-r", "198.18.0.12:80", "-m"))
        opener = lab.popen("client", [sys.executable, "-c", TCP_OPENER, VIP, cps, secs],
                           stdout=subprocess.PIPE, text=True)
        sender = start_sender(lab, pps * secs, pps, size)
        time.sleep(secs - 3)
        udp, tcp = rate_row(d, "-u", UDP_PORT), rate_row(d, "-t", 80)
        result = sender_result(sender, timeout=60)
        opened = opener.communicate(timeout=60)[0].split()
        stats = ok(d.lbadm("-L", "-n", "--stats", "-u", f"{VIP}:{UDP_PORT}", "--exact")).stdout
    sent_rate = result["sent"] / result["seconds"]
    print(f"sent {sent_rate:.0f} datagrams/s, {float(opened[0]) / float(opened[1]):.1f} "
          f"connections/s; --rate UDP {udp}, TCP {tcp}")
    out_size = [int(x) for x in stats.splitlines()[2].split()[2:]]   # conns inpkts outpkts inbytes outbytes
    reply_bytes = out_size[4] / out_size[2]
    cps_, inpps, outpps, inbps, outbps = udp
    assert within(inpps, pps) and within(outpps, pps), udp
    assert within(inbps, pps * (28 + size)) and within(outbps, pps * reply_bytes), udp
    assert within(tcp[0], cps), tcp                      # CPS of the TCP service
    assert cps_ == 0                                     # one UDP connection, made long ago


# --- lbadm top ---------------------------------------------------------------------------------

def run_in_pty(argv, timeout, keys=None, after=None, sig=None):
    """Run argv on a new pseudo-terminal; type `keys` (or send `sig`) once `after` appears in
    its output. Returns (exit status, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:                                   # the child: exec on the terminal
        os.environ["COLUMNS"], os.environ["LINES"] = "160", "50"
        os.execvp(argv[0], argv)
    out, deadline, sent, open_ = b"", time.monotonic() + timeout, False, True
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.1) if open_ else (None, None, time.sleep(0.05))
            if ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:                    # EIO: the child closed the terminal
                    chunk = b""
                open_ = bool(chunk)
                out += chunk
            if after and not sent and after.encode() in out:
                sent = True
                if keys:
                    os.write(fd, keys)
                if sig:
                    os.kill(pid, sig)
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                pid = None
                return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
        raise AssertionError(f"still running after {timeout}s:\n{out.decode(errors='replace')}")
    finally:
        if pid is not None:                        # only the child forked here, by its PID
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(fd)


def test_lbadm_top_under_a_terminal(lab, director):
    udp_service(director)
    assert lab.udp_query("client", VIP, UDP_PORT, b"hello")
    top = [sys.executable, "-m", "lb.director.cli", "top", "--socket", director.socket]
    rc, out = run_in_pty(top + ["--iterations", "2", "--interval", "0.5"], timeout=30)
    assert rc == 0, out
    assert out.count("lbadm top") >= 2, out           # two frames, the second over the first
    assert f"UDP {VIP}:{UDP_PORT}" in out and f"-> 198.18.0.11:{UDP_PORT}" in out
    assert re.search(r"fast path: rx \d+", out)
    rc, out = run_in_pty(top, timeout=30, keys=b"q", after="frames by reason")
    assert rc == 0, out
    rc, out = run_in_pty(top, timeout=30, sig=signal.SIGTERM, after="frames by reason")
    assert rc == 0, out
    rc, out = run_in_pty(top, timeout=30, sig=signal.SIGINT, after="frames by reason")
    assert rc == 0 and "Traceback" not in out, out


def test_lbadm_top_without_lbd(tmp_path):
    r = subprocess.run([sys.executable, "-m", "lb.director.cli", "top", "--socket",
                        str(tmp_path / "none.sock"), "--iterations", "1"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot reach lbd" in r.stderr


# --- every way out leaves the machine clean ----------------------------------------------------

def test_sighup_then_sigterm_leave_the_machine_clean(lab, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text(f"-A -u {VIP}:{UDP_PORT} -s rr\n-a -u {VIP}:{UDP_PORT} -r 198.18.0.11:{UDP_PORT} -m -w 1\n")
    d = LabDirector(lab, extra_args=["--config", str(rules), "--metrics", METRICS]).start()
    try:
        assert lab.udp_query("client", VIP, UDP_PORT, b"x")
        rules.write_text(rules.read_text() + f"-a -u {VIP}:{UDP_PORT} -r 198.18.0.12:{UDP_PORT} -m -w 1\n")
        os.kill(d.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "198.18.0.12" not in ok(d.lbadm("-S", "-n")).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "198.18.0.12" in ok(d.lbadm("-S", "-n")).stdout
        assert pid_alive(d.pid)
        os.kill(d.pid, signal.SIGTERM)
        assert d.proc.wait(timeout=15) == 0
        assert_clean(lab, d)
        r = lab.run("director", ["curl", "-sS", "--max-time", "2", f"http://{METRICS}/metrics"], timeout=10)
        assert r.returncode != 0                           # the metrics port is closed too
        assert "reloaded" in d.log_tail() and "stopped; counters:" in d.log_tail()
    finally:
        d.stop()


def test_a_start_that_fails_after_the_table_is_installed_removes_it(lab, tmp_path):
    rules = tmp_path / "rules"
    rules.write_text(f"-A -u {VIP}:{UDP_PORT} -s rr\n-a -u {VIP}:{UDP_PORT + 1} -r 198.18.0.11 -m\n")
    r = lab.run("director", [sys.executable, "-m", "lb.director.daemon", "-i", lab.director_ifname,
                             "--socket", f"/run/lbd/{lab.prefix}-f.sock", "--config", rules],
                timeout=30)
    assert r.returncode == 1 and "line 2: no such service" in r.stderr, r.stderr
    assert nft.table_name([lab.director_ifname]) not in tables(lab)
    # the metrics address already taken: refused once the table and the threads are up
    squatter = lab.popen("director", [sys.executable, "-c", PORT_SQUATTER, METRICS],
                         stdout=subprocess.PIPE, text=True)
    try:
        assert squatter.stdout.readline().strip() == "ready"
        d = LabDirector(lab, extra_args=["--metrics", METRICS])
        with pytest.raises(LabError, match="exited with 1") as e:
            d.start(timeout=20)
        assert f"lbd: --metrics {METRICS}: " in str(e.value)
        assert_clean(lab, d)
    finally:
        lab.stop_process(squatter.pid)


PORT_SQUATTER = r"""
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)    # as lbd's server does
s.bind((host, int(port)))
s.listen(1)
print("ready", flush=True)
time.sleep(60)
"""


def test_sigterm_while_starting_removes_the_table(lab, tmp_path):
    # A configuration big enough that loading it takes a while; the daemon is frozen (SIGSTOP)
    # once its table exists and before its socket does, so the SIGTERM lands inside start().
    rules = tmp_path / "rules"
    rules.write_text("".join(f"-A -t 198.18.20.{i}:80 -s wlc\n"
                             + "".join(f"-a -t 198.18.20.{i}:80 -r 198.18.0.{r}:80 -m\n" for r in (11, 12, 13))
                             for i in range(1, 201)))
    d = LabDirector(lab, extra_args=["--config", str(rules)])
    argv = [sys.executable, "-m", "lb.director.daemon", "-i", lab.director_ifname, "--socket",
            d.socket, "--config", rules]
    with open(lab.logfile("lbd"), "wb") as log:
        proc = lab.popen("director", argv, stdout=log, stderr=subprocess.STDOUT)
    table = nft.table_name([lab.director_ifname])
    try:
        deadline = time.monotonic() + 20
        while table not in tables(lab) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        starting = table in tables(lab) and not os.path.exists(d.socket)
        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        assert proc.wait(timeout=20) == 0
        if not starting:
            pytest.skip("lbd was already serving when it was frozen: nothing proven")
        assert "SIGTERM while starting" in d.log_tail(), d.log_tail()
        assert_clean(lab, d)
    finally:
        if proc.poll() is None:
            lab.stop_process(proc.pid)


# Runs lbd with a packet loop that dies a second after it starts (a stand-in for a crash).
CRASHING_LBD = r"""
import sys, time
import lb.director.daemon as daemon
def dying_loop(self, cpu):
    time.sleep(1)
    raise RuntimeError("simulated crash of the packet loop")
daemon.Lbd._packet_loop = dying_loop
sys.exit(daemon.main(sys.argv[1:]))
"""


def test_a_dead_packet_thread_stops_lbd_and_removes_the_table(lab):
    d = LabDirector(lab)
    argv = [sys.executable, "-c", CRASHING_LBD, "-i", lab.director_ifname, "--socket", d.socket]
    with open(lab.logfile("lbd"), "wb") as log:
        proc = lab.popen("director", argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        assert proc.wait(timeout=20) == 1
        assert "the fastpath thread died (RuntimeError: simulated crash" in d.log_tail(), d.log_tail()
        assert_clean(lab, d)
    finally:
        if proc.poll() is None:
            lab.stop_process(proc.pid)


def test_cleanup_after_an_lbd_that_was_killed(lab):
    d = LabDirector(lab).start()
    cleanup = [sys.executable, "-m", "lb.director.daemon", "--cleanup", "-i", lab.director_ifname,
               "--socket", d.socket]
    table = nft.table_name([lab.director_ifname])
    try:
        r = lab.run("director", cleanup, timeout=30)        # a live lbd: nothing is touched
        assert r.returncode == 0 and "nothing to clean up" in r.stderr, r.stderr
        assert table in tables(lab) and ok(d.lbadm("-L", "-n"))
        os.kill(d.pid, signal.SIGKILL)                      # what no handler can clean up after
        d.proc.wait(timeout=10)
        assert table in tables(lab) and os.path.exists(d.socket)
        r = lab.run("director", cleanup, timeout=30)
        assert r.returncode == 0 and f"removed nftables table {table}" in r.stderr, r.stderr
        assert_clean(lab, d)
    finally:
        d.stop()
