"""Light-load latency: sequential UDP request/response, one exchange at a time, 2 ms apart.

    python3 udp_rr.py serve PORT              echo every datagram back (in the sink namespace)
    python3 udp_rr.py ping HOST PORT COUNT GAP_MS   COUNT exchanges; one JSON line of results

The server answers from the address the request was sent to (IP_PKTINFO), as a real service
bound to 0.0.0.0 must where the VIP is on `lo` (DR, TUN) or the reply leaves by another way than
the request came.  The client sends the next request GAP_MS after the previous one started, so
the director sees an idle ring between exchanges: what is measured is how long a lone frame
waits, not throughput.  A lost exchange (no answer within 1 s) is counted, not timed.
Standalone on purpose: run with `ip netns exec ... python3 udp_rr.py`, no harness import.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

PAYLOAD = 32            # bytes per request: a small RPC
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # <linux/in.h>; Python names it from 3.12 on


def percentile(xs, q):
    """The q-th percentile (0..100) of xs by the nearest-rank method (no interpolation)."""
    s = sorted(xs)
    if not s:
        return None
    k = max(1, -(-len(s) * q // 100))       # ceil(n q / 100), at least the first
    return s[int(k) - 1]


def summary(rtts_ns, lost):
    us = [x / 1000 for x in rtts_ns]
    return {"exchanges": len(us), "lost": lost, "rtt_median_us": percentile(us, 50),
            "rtt_p99_us": percentile(us, 99), "rtt_min_us": min(us) if us else None,
            "rtt_max_us": max(us) if us else None}


def serve(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(("0.0.0.0", port))
    while True:
        data, anc, _flags, peer = s.recvmsg(2048, socket.CMSG_SPACE(12))
        info = [d for lvl, typ, d in anc if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO]
        cmsg = []
        if info:
            # struct in_pktinfo {ifindex, spec_dst, addr}: answer from addr (the request's destination)
            addr = info[0][8:12]
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, addr, b"\0" * 4))]
        s.sendmsg([data], cmsg, 0, peer)


def ping(host, port, count, gap_ms):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    s.settimeout(1.0)
    rtts, lost = [], 0
    gap = gap_ms / 1000
    start = time.monotonic()
    for i in range(count):
        msg = struct.pack("!I", i) + b"r" * (PAYLOAD - 4)
        t0 = time.perf_counter_ns()
        s.send(msg)
        try:
            while True:                     # a late answer to an earlier request is not this one's
                if s.recv(2048)[:4] == msg[:4]:
                    break
            rtts.append(time.perf_counter_ns() - t0)
        except (socket.timeout, ConnectionRefusedError):
            lost += 1
        pause = start + (i + 1) * gap - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    return summary(rtts, lost)


def main(argv):
    if argv[:1] == ["serve"] and len(argv) == 2:
        serve(int(argv[1]))
    elif argv[:1] == ["ping"] and len(argv) == 5:
        print(json.dumps(ping(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
