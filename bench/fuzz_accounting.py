"""A bounded fuzz run of the fast path's core (issue 11): --frames frames (default 10 M),
mutated from valid NAT and DR traffic or random bytes, through Forwarder.process_batch in this
process (no frame leaves it), checking after every batch that nothing crashed and that every
frame is accounted: received = forwarded + drops and passes by reason. Prints one JSON line.

    python3 bench/fuzz_accounting.py [--frames 10000000] [--seed 1]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scapy.layers.inet import IP, TCP, UDP             # noqa: E402
from scapy.layers.l2 import ARP, Ether                  # noqa: E402

from lb._forward import NOT_VERDICTS, REASON_NAMES     # noqa: E402
from tests.vectors import dr as D                       # noqa: E402
from tests.vectors import fixtures as fx                # noqa: E402
from tests.vectors import nat as V                      # noqa: E402


def seeds(rng):
    """Valid frames of every kind the director sees, to mutate."""
    out = []
    for i in range(400):
        src = rng.choice([V.CLIENT, "198.19.0.1", "198.19.0.2", V.RIP, "198.19.3.4"])
        dst = rng.choice([V.VIP, V.VIP, V.RIP, V.CLIENT, "198.19.9.9"])
        sp, dp = rng.choice([80, 8080, 40000 + i % 50]), rng.choice([80, 80, 8080, 40000 + i % 50])
        eth = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC)
        if i % 3:
            l4 = TCP(sport=sp, dport=dp, flags=rng.choice(["S", "SA", "A", "PA", "FA", "R", ""]))
        else:
            l4 = UDP(sport=sp, dport=dp)
        out.append(bytes(eth / IP(src=src, dst=dst, ttl=rng.choice([64, 1, 2])) / l4
                         / bytes(rng.randrange(60))))
    out.append(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=V.VIP, psrc=V.ROUTER_IP)))
    return out


def mutate(rng, base):
    kind = rng.randrange(6)
    if kind == 0:
        return base
    if kind == 1:
        return rng.randbytes(rng.randrange(100))
    if kind == 2:
        return base[:rng.randrange(len(base) + 1)]
    b = bytearray(base)
    for _ in range(rng.randrange(1, 5)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


def unaccounted(f):
    c = f.counters()
    return c["rx_frames"] - c["forwarded"] - sum(c[r] for r in REASON_NAMES if r not in NOT_VERDICTS)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10_000_000)
    p.add_argument("--seed", type=int, default=1)
    a = p.parse_args(argv)
    if a.frames > 100_000_000:
        p.error("at most 100 M frames")
    rng = random.Random(a.seed)
    base = seeds(rng)
    fwds = [fx.provision(replace(V.DIRECTOR, max_conns=4096)),
            fx.provision(replace(D.DIRECTOR, max_conns=4096))]
    t0, done, now = time.monotonic(), 0, V.NOW
    while done < a.frames:
        batch = [mutate(rng, rng.choice(base)) for _ in range(min(256, a.frames - done))]
        f = fwds[(done // 256) % 2]
        now += rng.random() * 2
        f.process_batch(batch, now=now)
        f.expire(now)
        done += len(batch)
        bad = unaccounted(f)
        if bad:
            print(json.dumps({"error": "unaccounted frames", "count": bad, "after": done}))
            return 1
    c = [f.counters() for f in fwds]
    print(json.dumps({"frames": done, "seconds": round(time.monotonic() - t0, 1),
                      "rx": sum(x["rx_frames"] for x in c),
                      "forwarded": sum(x["forwarded"] for x in c), "unaccounted": 0,
                      "new_conns": sum(x["new_conns"] for x in c)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
