"""lbd's memory: resident size empty and with N connections (--max-conns 1 000 000), bytes per connection.

lbd allocates its connection table with calloc (fastpath/_forward.pyx), so pages become
resident as connections use them: (VmRSS with N connections - VmRSS empty) / N is what a
connection costs, table slot, hash buckets and all.  The connections are TCP SYNs of distinct
flows (cps.py's frames), paced so that lbd keeps up; each stays SYN_RECV for 60 s, longer than
the measurement.  The kernel's figure beside it: the nf_conntrack slab object size
(/proc/slabinfo), what one conntrack entry costs before its hash bucket.
"""

from __future__ import annotations

import re
import time

from harness.modes import NatMode
from harness.topology import VIP


def vm_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def lbd_conns(listing: str) -> int:
    """ActiveConn + InActConn over the real servers of an `lbadm -L -n` listing."""
    total = 0
    for line in listing.splitlines():
        m = re.match(r"\s*->\s+\S+\s+\S+\s+\d+\s+(\d+)\s+(\d+)", line)
        if m:
            total += int(m.group(1)) + int(m.group(2))
    return total


def conntrack_object_size():
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("nf_conntrack "):
                    return int(line.split()[3])
    except OSError:
        pass
    return None


def measure_memory(lab, gen, args, n_conns, max_conns=1_000_000):
    """Fill lbd (NAT, one service) with n_conns connections; the record for the report."""
    mode = NatMode(lab, args)
    try:
        mode.setup()
        time.sleep(0.5)
        rss0 = vm_rss_kib(mode.proc.pid)
        # The same n_conns SYNs, up to three passes: a SYN lbd missed (its ring full for a moment
        # on a busy machine) makes its connection on the next pass, one it has is a retransmission.
        conns, passes = 0, 0
        while passes < 3 and conns < 0.99 * n_conns:
            passes += 1
            gen.burst(VIP, n_conns, timeout=10 + 2 * n_conns / args.warmup_pps, rate=args.warmup_pps)
            # wait until the count settles (the last batch is in the table)
            last, deadline = -1, time.monotonic() + 20
            while time.monotonic() < deadline:
                conns = lbd_conns(mode.cli("-L", "-n", check=False, timeout=10).stdout)
                if conns == last:
                    break
                last = conns
                time.sleep(0.5)
        rss1 = vm_rss_kib(mode.proc.pid)
    finally:
        mode.teardown()
    per_conn = (rss1 - rss0) * 1024 / conns if conns else None
    rec = {"max_conns": max_conns, "conns_sent": n_conns, "passes": passes, "conns": conns,
           "rss_empty_mib": rss0 / 1024, "rss_full_mib": rss1 / 1024,
           "bytes_per_conn": per_conn, "conntrack_object_bytes": conntrack_object_size()}
    if per_conn is not None and conns < max_conns:
        rec["rss_at_max_mib_extrapolated"] = (rss0 * 1024 + per_conn * max_conns) / 2**20
    rec["rss_at_max_mib"] = rec["rss_full_mib"] if conns >= 0.95 * max_conns else rec.get(
        "rss_at_max_mib_extrapolated")
    return rec
