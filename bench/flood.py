"""Issue 11's measured targets, on this machine's lab (lb.lab.topology: client, router,
director running lbd, rs1..rs3), every load bounded in frames and seconds, every spoofed
source inside 198.19.0.0/16:

  flood     legitimate HTTP clients' success during a spoofed-SYN flood at twice the fast
            path's new-flow capacity (measured first, same run) for --seconds, and within 1 s of
            its end (target: >= 99 %); beside it, the share of the flood's frames the receive
            ring took in (the target for "during").
  live      established-flow packets/s with 1 000 live connections and with --live (1 M)
            (target: ratio >= 0.8).
  collide   frames/s through the core (Forwarder.process_batch, in this process, no frame on
            any wire) for 5 000 flows built to share one chain of the old seeded hash against
            5 000 random flows (target: ratio >= 0.9). In process because such flows need
            source addresses anywhere in IPv4, and nothing outside 198.18.0.0/15 may be sent
            here; flows chosen inside 198.18.0.0/15 cannot collide in numbers under either hash.

    sudo python3 bench/flood.py [--parts flood,live,collide] [--seconds 10] [--live 1000000]
                                [--json out.json]

The generator is bench/pktgen.c (compiled with gcc here), run in the router namespace on the
bridge to the director, paced with its RATE_PPS. Counters come from lbd's figures (the
{"op": "figures"} request lbadm top uses).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lb.lab.flood import frames as syn_frames, tcp_frame       # noqa: E402
from lb.lab.lbd import LabDirector                              # noqa: E402
from lb.lab.topology import Lab                                 # noqa: E402

VIP = "198.18.0.100"
RS = ("198.18.0.11", "198.18.0.12", "198.18.0.13")
FRAME_LEN = 60

GETS = r"""
import http.client, json, sys, time
vip, seconds, timeout = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
rows = []
end = time.monotonic() + seconds
while time.monotonic() < end:
    t = time.monotonic()
    try:
        c = http.client.HTTPConnection(vip, 80, timeout=timeout)
        c.request("GET", "/")
        c.getresponse().read()
        c.close()
        rows.append((t, time.monotonic(), 1))
    except OSError:
        rows.append((t, time.monotonic(), 0))
print(json.dumps(rows))
"""


def figures(sock: str) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(json.dumps({"cmd": {"op": "figures"}}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    return json.loads(json.loads(data)["out"])["fastpath"]


def padded(frame: bytes) -> bytes:
    return frame + bytes(FRAME_LEN - len(frame))


def udp_frame(dst_mac, src_mac, src, dst, sport, dport):
    import struct
    from lb.inet import checksum as _csum
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    payload = b"x" * 4
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    c = _csum(s + d + struct.pack("!BBH", 0, 17, len(udp)) + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", c) + udp[8:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + udp


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="floodbench"))
        self.lab = Lab(n_rs=3)
        self.d = None
        self.results = {}

    def __enter__(self):
        self.lab.up()
        self.lab.start_servers()
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(self.tmp / "pktgen"),
                        str(ROOT / "bench" / "pktgen.c")], check=True)
        self.dmac = bytes.fromhex(self._mac("director", "eth0").replace(":", ""))
        self.rmac = bytes.fromhex(self._mac("router", "br0").replace(":", ""))
        return self

    def __exit__(self, *exc):
        if self.d:
            self.d.stop()
        self.lab.down()
        for p in self.tmp.iterdir():
            p.unlink()
        self.tmp.rmdir()
        return False

    def _mac(self, role, ifname):
        return self.lab.run(role, ["cat", f"/sys/class/net/{ifname}/address"], timeout=5).stdout.strip()

    def start_lbd(self, max_conns):
        if self.d:
            self.d.stop()
        self.d = LabDirector(self.lab, extra_args=["--max-conns", max_conns]).start(timeout=60)

    def lbadm(self, *a):
        r = self.d.lbadm(*a)
        if r.returncode:
            raise RuntimeError(f"lbadm {a}: {r.stderr}")

    def write(self, name, frames) -> Path:
        path = self.tmp / name
        with open(path, "wb") as f:
            for fr in frames:
                f.write(padded(fr))
        return path

    def pktgen(self, path, count, seconds, rate=0):
        return self.lab.popen("router", [str(self.tmp / "pktgen"), "br0", path, FRAME_LEN, count,
                                         seconds, 64, rate],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @staticmethod
    def done(proc, timeout=120):
        out, err = proc.communicate(timeout=timeout)
        if proc.returncode:
            raise RuntimeError(err)
        return json.loads(out)

    # --- flood -------------------------------------------------------------------------
    def flood(self):
        a = self.args
        self.start_lbd(a.table)
        self.lbadm("-A", "-t", f"{VIP}:80", "-s", "rr")
        for rip in RS:
            self.lbadm("-a", "-t", f"{VIP}:80", "-r", f"{rip}:80", "-m")
        syns = self.write("syn.bin", syn_frames(self.dmac, self.rmac, "198.19.0.0/16", VIP, 80,
                                                200_000, False))
        # new-flow capacity: SYNs as fast as pktgen sends, 2 s; connections made per second
        before = figures(self.d.socket)
        sent = self.done(self.pktgen(syns, 10_000_000, 2))
        after = figures(self.d.socket)
        capacity = (after["new_conns"] - before["new_conns"]) / sent["elapsed"]
        offered = sent["sent"] / sent["elapsed"]
        rate = 2 * capacity
        self.lab.run("router", ["true"], timeout=5)
        time.sleep(1)
        before = figures(self.d.socket)
        legit = self.lab.popen("client", [sys.executable, "-c", GETS, VIP, a.seconds + 3, 2.0],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(0.5)
        gen = self.pktgen(syns, int(rate * a.seconds) + 1, a.seconds, rate)
        t_start = time.monotonic()
        flood = self.done(gen, a.seconds + 30)
        t_end = time.monotonic()
        rows = json.loads(legit.communicate(timeout=a.seconds + 60)[0])
        after = figures(self.d.socket)
        # the client's clock is this machine's monotonic clock too (same host)
        during = [ok for t, _, ok in rows if t_start <= t < t_end]
        after_1s = [ok for t, _, ok in rows if t_end <= t < t_end + 1.0]
        dropped = after["ring_drops"] - before["ring_drops"]
        self.results["flood"] = {
            "capacity_new_flows_per_s": round(capacity), "offered_at_capacity_test": round(offered),
            "flood_rate_asked": round(rate), "flood_sent": flood["sent"],
            "flood_rate_sent": round(flood["sent"] / max(flood["elapsed"], 1e-9)),
            # what the receive ring did not drop, of what the flood sent (the legitimate
            # clients' frames and the servers' replies are counted in the drops too)
            "ring_took_in": round(1 - dropped / max(flood["sent"], 1), 4),
            "embryos_evicted": after["embryos_evicted"] - before["embryos_evicted"],
            "conns_at_end": after["conns"], "table": a.table,
            "under_pressure_at_end": after["under_pressure"],
            "legit_during": {"attempts": len(during), "ok": sum(during),
                             "rate": round(sum(during) / max(len(during), 1), 4)},
            "legit_within_1s_after": {"attempts": len(after_1s), "ok": sum(after_1s),
                                      "rate": round(sum(after_1s) / max(len(after_1s), 1), 4)},
        }

    # --- live connections ----------------------------------------------------------------
    def live(self):
        a = self.args
        self.start_lbd(max(2 * a.live, 4096))
        self.lbadm("--set", "0", "0", "900")
        self.lbadm("-A", "-u", f"{VIP}:9", "-s", "rr")
        for rip in RS:
            self.lbadm("-a", "-u", f"{VIP}:9", "-r", f"{rip}:9", "-m")
        out = {}
        for n in (1000, a.live):
            # distinct flows: source 198.19.x.y, ports from 1024 (never more than the /16 holds)
            frames = (udp_frame(self.dmac, self.rmac, f"198.19.{(i // 250) % 256}.{1 + i % 250}",
                                VIP, 1024 + i // 64000, 9) for i in range(n))
            path = self.write(f"udp{n}.bin", frames)
            base = figures(self.d.socket)["conns"]
            for _ in range(3):               # make the connections (paced: none lost)
                self.done(self.pktgen(path, n, 60, 30_000), 120)
                if figures(self.d.socket)["conns"] - base >= 0.98 * n:
                    break
            live = figures(self.d.socket)["conns"] - base
            pps, offered, lost = [], [], []
            for _ in range(a.trials):
                before = figures(self.d.socket)
                sent = self.done(self.pktgen(path, 50_000_000, 3))
                after = figures(self.d.socket)
                pps.append((after["forwarded"] - before["forwarded"]) / sent["elapsed"])
                offered.append(sent["sent"] / sent["elapsed"])
                lost.append(after["ring_drops"] - before["ring_drops"])
            out[n] = {"live_conns": live, "pps_median": round(statistics.median(pps)),
                      "pps": [round(p) for p in pps], "offered": [round(o) for o in offered],
                      "ring_drops": lost}
        out["ratio"] = round(out[a.live]["pps_median"] / out[1000]["pps_median"], 3)
        self.results["live"] = {str(k): v for k, v in out.items()}


def collide(trials=7, n=5000):
    """In process: frames/s of established UDP flows through process_batch, colliding set vs
    random set (same count, same frame sizes)."""
    import random
    from dataclasses import replace
    from tests.unit.test_keyed_hash import colliding_clients
    from tests.vectors import fixtures as fx
    from tests.vectors import nat as V
    from scapy.layers.inet import IP, UDP
    from scapy.layers.l2 import Ether

    def frame(a1, port):
        src = ".".join(str(a1 >> s & 0xFF) for s in (24, 16, 8, 0))
        return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=src, dst=V.VIP)
                     / UDP(sport=port, dport=V.VPORT) / b"x")

    def unicast():
        while True:
            a = random.getrandbits(32)
            if 1 <= a >> 24 <= 223 and a >> 24 != 127:
                return a

    sets = {"collide": [frame(a, p) for a, p in colliding_clients(n, V.VPORT)],
            "random": [frame(unicast(), 1024 + i) for i in range(n)]}
    fwds, batches, rates = {}, {}, {name: [] for name in sets}
    for name, frames in sets.items():
        f = fwds[name] = fx.provision(replace(V.DIRECTOR, max_conns=1 << 16))
        batches[name] = [frames[k:k + 256] for k in range(0, n, 256)]
        for b in batches[name]:
            f.process_batch(b, now=V.NOW)        # the connections
    for t in range(trials):                       # interleaved: the machine's noise hits both
        for name in (("collide", "random") if t % 2 else ("random", "collide")):
            f = fwds[name]
            before = f.counters()["forwarded"]
            t0 = time.perf_counter()
            for b in batches[name]:
                f.process_batch(b, now=V.NOW + 1 + t)
            rates[name].append(n / (time.perf_counter() - t0))
            assert f.counters()["forwarded"] - before == n, f"{name}: not every frame forwarded"
    out = {name: {"frames_per_s_median": round(statistics.median(rates[name])),
                  "longest_chain": fwds[name].chain_stats()[0]} for name in sets}
    out["ratio"] = round(out["collide"]["frames_per_s_median"] / out["random"]["frames_per_s_median"], 3)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--parts", default="flood,live,collide")
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--table", type=int, default=1 << 20)
    p.add_argument("--live", type=int, default=1_000_000)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--json")
    a = p.parse_args(argv)
    if a.seconds > 30 or a.live > 2_000_000:
        p.error("at most 30 s of flood and 2 M live connections")
    parts = a.parts.split(",")
    results = {}
    if "collide" in parts:
        results["collide"] = collide()
        print(json.dumps({"collide": results["collide"]}), flush=True)
    if {"flood", "live"} & set(parts):
        if os.geteuid() != 0:
            p.error("flood and live need root (namespaces)")
        with Bench(a) as b:
            if "flood" in parts:
                b.flood()
                print(json.dumps({"flood": b.results["flood"]}), flush=True)
            if "live" in parts:
                b.live()
                print(json.dumps({"live": b.results["live"]}), flush=True)
            results.update(b.results)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
