"""A bounded spoofed-SYN flood for the lab and bench/flood.py: TCP SYNs (and, with --ack, the
blind ACK after each, as a spoofer attacking an input-only DR/TUN table would send) from
sources spread over a prefix inside 198.18.0.0/15, written with AF_PACKET straight to the
director's MAC. Bounded by --count frames and --seconds, whichever ends first; --rate paces it
(frames per second, 0: as fast as Python sends). Prints one JSON line: what it sent, how long.

    python -m lb.lab.flood --ifname br0 --dst-mac MAC --vip 198.18.0.100 --port 80 \
        --count 200000 --seconds 3 [--rate 50000] [--ack] [--sources 198.19.0.0/16]

Frames are built once (one per source address and port, up to --distinct) and sent round
robin, so that the generator costs one send() per frame.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import socket
import struct
import sys
import time

from lb.inet import checksum

ALLOWED = ipaddress.ip_network("198.18.0.0/15")     # the machine's rule: nothing else spoofed


def ipv4_tcp(src: str, dst: str, sport: int, dport: int, flags: int, seq: int, ack: int = 0) -> bytes:
    """An IPv4/TCP packet, no options, with correct checksums (RFC 791, RFC 793 pseudo-header)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    c = checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return ip + tcp


def tcp_frame(dst_mac: bytes, src_mac: bytes, src: str, dst: str, sport: int, dport: int,
              flags: int, seq: int, ack: int = 0) -> bytes:
    """ipv4_tcp() behind an Ethernet header."""
    return dst_mac + src_mac + b"\x08\x00" + ipv4_tcp(src, dst, sport, dport, flags, seq, ack)


def frames(dst_mac: bytes, src_mac: bytes, sources: str, vip: str, port: int, distinct: int,
           with_ack: bool) -> list:
    net = ipaddress.ip_network(sources)
    if not net.subnet_of(ALLOWED):
        raise ValueError(f"spoofed sources must be inside {ALLOWED}, not {net}")
    hosts = net.num_addresses - 2
    out = []
    for i in range(distinct):
        src = str(net.network_address + 1 + i % hosts)
        sport = 1024 + (i // hosts) % 64000
        out.append(tcp_frame(dst_mac, src_mac, src, vip, sport, port, 0x02, 1000 + i))
        if with_ack:
            out.append(tcp_frame(dst_mac, src_mac, src, vip, sport, port, 0x10, 1001 + i, 5000))
    return out


def blast(ifname: str, pool: list, count: int, seconds: float, rate: float) -> dict:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((ifname, 0))
    sent = errors = 0
    start = time.monotonic()
    end = start + seconds
    n = len(pool)
    try:
        while sent + errors < count:
            now = time.monotonic()
            if now >= end:
                break
            if rate and sent > (now - start) * rate:
                time.sleep(0.001)
                continue
            for k in range(64):                     # a burst between clock reads
                try:
                    s.send(pool[(sent + errors) % n])
                    sent += 1
                except OSError:                     # ENOBUFS: the queue is full; go on
                    errors += 1
    finally:
        s.close()
    return {"sent": sent, "errors": errors, "seconds": round(time.monotonic() - start, 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lb.lab.flood", description=__doc__.split("\n\n")[0])
    p.add_argument("--ifname", required=True)
    p.add_argument("--dst-mac", required=True)
    p.add_argument("--vip", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--rate", type=float, default=0)
    p.add_argument("--ack", action="store_true")
    p.add_argument("--sources", default="198.19.0.0/16")
    p.add_argument("--distinct", type=int, default=60000)
    a = p.parse_args(argv)
    if a.count > 50_000_000 or a.seconds > 60:
        print("lb.lab.flood: at most 50 M frames and 60 s", file=sys.stderr)
        return 2
    if not ipaddress.ip_address(a.vip) in ALLOWED:
        print(f"lb.lab.flood: the target must be inside {ALLOWED}", file=sys.stderr)
        return 2
    with open(f"/sys/class/net/{a.ifname}/address") as f:
        src_mac = bytes.fromhex(f.read().strip().replace(":", ""))
    pool = frames(bytes.fromhex(a.dst_mac.replace(":", "")), src_mac, a.sources, a.vip, a.port,
                  a.distinct, a.ack)
    print(json.dumps(blast(a.ifname, pool, a.count, a.seconds, a.rate)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
