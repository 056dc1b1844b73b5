"""dh, sh and mh against tables and buckets worked out by hand from ip_vs_dh.c / ip_vs_sh.c /
ip_vs_mh.c. hash_32(v, 8) = ((v * 0x61C88647) mod 2^32) >> 24, so for the addresses 0.0.0.v:
v=0 -> 0, v=1 -> 0x61 = 97, v=2 -> 0xC3 = 195, v=3 -> (0x1255992D5 mod 2^32) >> 24 = 0x25 = 37."""
import os
import random
import subprocess
import sys
from collections import Counter

from lb.director.model import OVERLOAD, Flow, RealServer, Service
from lb.schedulers import mh
from lb.schedulers.base import hash_32

VIP = "198.18.0.100"


def flow(caddr="203.0.113.7", cport=40000, vaddr=VIP):
    return Flow("tcp", caddr, cport, vaddr, 80)


def make(sched, weights, flags=(), net="10.0.0"):
    """Servers A, B, C... at net.1, net.2, ...; picks are reported by letter."""
    svc = Service("tcp", VIP, 80, sched, sched_flags=flags)
    svc.dests = [RealServer(f"{net}.{i}", 80, w) for i, w in enumerate(weights, 1)]
    svc.dests_changed()
    return svc


def name(svc, dest):
    return "-" if dest is None else "ABCDEFGHIJ"[svc.dests.index(dest)]


def pick(svc, **kw):
    return name(svc, svc.schedule(flow(**kw)))


def test_hash_32():
    assert [hash_32(v, 8) for v in range(4)] == [0, 97, 195, 37]
    assert hash_32(0xFFFFFFFF, 8) == ((0xFFFFFFFF * 0x61C88647) % 2**32) >> 24


# --- dh -----------------------------------------------------------------------------------

def test_dh_hashes_the_destination_address():
    # 3 servers: bucket i holds i mod 3. 0.0.0.1 -> 97 -> B, .2 -> 195 -> A, .3 -> 37 -> B.
    svc = make("dh", [1, 1, 1])
    assert [pick(svc, vaddr=f"0.0.0.{v}") for v in range(4)] == ["A", "B", "A", "B"]
    assert pick(svc, vaddr="0.0.0.1", caddr="192.0.2.99", cport=1) == "B"  # client irrelevant


def test_dh_weights_do_not_change_the_share():
    svc = make("dh", [5, 1, 1])
    assert [pick(svc, vaddr=f"0.0.0.{v}") for v in range(4)] == ["A", "B", "A", "B"]
    assert Counter(name(svc, d) for d in svc.sched.table) == {"A": 86, "B": 85, "C": 85}


def test_dh_unavailable_server_gives_none():
    svc = make("dh", [1, 0, 1])
    assert pick(svc, vaddr="0.0.0.1") == "-"
    svc.dests[1].weight = 1
    svc.dests_changed()
    svc.dests[1].flags.add(OVERLOAD)
    assert pick(svc, vaddr="0.0.0.1") == "-"
    assert make("dh", []).schedule(flow()) is None


def test_dh_removing_one_server_moves_most_buckets():
    # A B C D, remove C: bucket i goes from [ABCD][i % 4] to [ABD][i % 3]. Over a period of 12
    # they agree at i = 0, 1, 11 only; 256 = 21 * 12 + 4, so 21 * 3 + 2 = 65 buckets stay, and
    # of the 192 buckets that A, B and D held, 192 - 65 = 127 move too: not consistent hashing.
    svc = make("dh", [1, 1, 1, 1])
    before = list(svc.sched.table)
    removed = svc.dests.pop(2)
    svc.dests_changed()
    after = svc.sched.table
    stayed = sum(b is a for b, a in zip(before, after))
    moved_others = sum(b is not a and b is not removed for b, a in zip(before, after))
    assert (stayed, moved_others) == (65, 127)


# --- sh -----------------------------------------------------------------------------------

def test_sh_weights_take_consecutive_buckets():
    # Weights 3, 1: A A A B A A A B ... -> bucket i is B when i mod 4 == 3.
    svc = make("sh", [3, 1])
    assert Counter(name(svc, d) for d in svc.sched.table) == {"A": 192, "B": 64}
    # 0.0.0.1 -> 97 (mod 4 = 1) A; 0.0.0.2 -> 195 (3) B; 0.0.0.3 -> 37 (1) A
    assert [pick(svc, caddr=f"0.0.0.{v}") for v in (1, 2, 3)] == ["A", "B", "A"]
    assert pick(svc, caddr="0.0.0.2", vaddr="192.0.2.1", cport=7) == "B"  # source only


def test_sh_weight_zero_still_takes_a_bucket():
    svc = make("sh", [0, 1])                # A B A B ...
    assert pick(svc, caddr="0.0.0.0") == "-"   # bucket 0: A, quiesced
    assert pick(svc, caddr="0.0.0.1") == "B"   # bucket 97


def test_sh_port_adds_the_source_port():
    # 0.0.0.0 + port 1 hashes as 1 -> bucket 97 (A); + port 2 -> 195 (B). Without the flag
    # the port is ignored: bucket 0 (A) for both.
    plain, ported = make("sh", [3, 1]), make("sh", [3, 1], flags={"sh-port"})
    assert [pick(plain, caddr="0.0.0.0", cport=p) for p in (1, 2)] == ["A", "A"]
    assert [pick(ported, caddr="0.0.0.0", cport=p) for p in (1, 2)] == ["A", "B"]


def test_sh_port_sum_wraps_at_32_bits():
    svc = make("sh", [3, 1], flags={"sh-port"})
    assert pick(svc, caddr="255.255.255.255", cport=2) == pick(svc, caddr="0.0.0.1", cport=0)


def test_sh_fallback_probe_order():
    # A B C A B C ... (A quiesced). 0.0.0.2 -> bucket 195 = A. The kernel's fallback probes
    # bucket (roffset + 195) & 255 with roffset = (offset + 195) % 256: first 390 & 255 = 134,
    # 134 mod 3 = 2 -> C (a plain "next bucket" would give 196 -> B).
    svc = make("sh", [0, 1, 1])
    assert pick(svc, caddr="0.0.0.2") == "-"
    svc.sched_flags = frozenset({"sh-fallback"})   # read per decision: no rebuild needed
    assert pick(svc, caddr="0.0.0.2") == "C"
    assert pick(svc, caddr="0.0.0.1") == "B"       # available: no probing


def test_sh_fallback_with_nothing_available():
    svc = make("sh", [1, 1], flags={"sh-fallback"})
    for dest in svc.dests:
        dest.flags.add(OVERLOAD)
    assert svc.schedule(flow()) is None
    assert make("sh", [], flags={"sh-fallback"}).schedule(flow()) is None


# --- mh -----------------------------------------------------------------------------------

def test_hsiphash_is_siphash_1_3():
    # CPython hashes bytes with SipHash-1-3 and, under PYTHONHASHSEED=0, a zero key: the same
    # function as the kernel's 64-bit hsiphash() with key (0, 0), truncated to 32 bits.
    values = [0, 1, 0xC6120102, 0xFFFFFFFF, 12345678]
    code = f"print([hash(v.to_bytes(4, 'little')) for v in {values}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONHASHSEED": "0"}, check=True).stdout
    assert [h & 0xFFFFFFFF for h in eval(out)] == [mh._hsiphash(0)(v) for v in values]


def test_mh_table_shares_follow_weights():
    # The table fills round-robin, each server claiming weight/gcd entries per turn until all
    # 4093 are taken: weights 2, 1 -> turns 2, 1; 4093 = 3 * 1364 + 1 -> A 2729, B 1364.
    for weights, shares in [([2, 1], [2729, 1364]), ([1, 1, 1], [1365, 1364, 1364]),
                            ([4, 2], [2729, 1364]),
                            # 192/1 needs 8 bits: rshift 2 -> turns 48, 1. 4093 = 49 * 83 + 26
                            ([192, 1], [48 * 83 + 26, 83])]:
        svc = make("mh", weights)
        counts = Counter(name(svc, d) for d in svc.sched.table)
        assert [counts[c] for c in "ABC"[:len(weights)]] == shares, weights


def test_mh_lookup_is_hash1_of_the_client_address():
    svc = make("mh", [1, 1, 1])
    for caddr in ("192.0.2.1", "198.51.100.200", "203.0.113.7"):
        key = int.from_bytes(bytes(map(int, caddr.split("."))), "big")
        assert svc.schedule(flow(caddr=caddr)) is svc.sched.table[mh.hash1(key) % mh.M]


def test_mh_same_servers_same_answers_on_another_director():
    rnd = random.Random(5)
    clients = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}"
               for _ in range(200)]
    one, two = make("mh", [3, 1, 2]), make("mh", [3, 1, 2])
    assert [pick(one, caddr=c) for c in clients] == [pick(two, caddr=c) for c in clients]


def test_mh_spread_over_clients_follows_weights():
    rnd = random.Random(9)
    svc = make("mh", [2, 1])
    counts = Counter(pick(svc, caddr=f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.1")
                     for _ in range(3000))
    assert 1850 < counts["A"] < 2150       # 2/3 of 3000 = 2000


def test_mh_port():
    plain, ported = make("mh", [1, 1, 1, 1]), make("mh", [1, 1, 1, 1], flags={"mh-port"})
    assert len({pick(plain, caddr="192.0.2.1", cport=p) for p in range(1000, 1100)}) == 1
    assert len({pick(ported, caddr="192.0.2.1", cport=p) for p in range(1000, 1100)}) == 4


def test_mh_removing_one_of_ten_moves_about_a_tenth():
    svc = make("mh", [1] * 10, net="10.0.1")
    before = list(svc.sched.table)
    removed = svc.dests.pop(4)
    svc.dests_changed()
    after = svc.sched.table
    theirs = sum(b is removed for b in before)
    others_moved = sum(b is not a and b is not removed for b, a in zip(before, after))
    assert 350 < theirs < 470              # ~ 4093 / 10
    assert others_moved < 4093 // 50       # Maglev: a little disruption besides (29 here)


def test_mh_quiesced_server_keeps_its_entries():
    # weight 0 through the config keeps last_weight: the table is unchanged, its clients
    # get no server (or another one with mh-fallback)...
    svc = make("mh", [1, 1, 1])
    before = list(svc.sched.table)
    b = svc.dests[1]
    b.weight = 0
    svc.dests_changed()
    assert svc.sched.table == before
    caddr = next(f"192.0.2.{i}" for i in range(256) if pick(make("mh", [1, 1, 1]),
                                                            caddr=f"192.0.2.{i}") == "B")
    assert pick(svc, caddr=caddr) == "-"
    svc.sched_flags = frozenset({"mh-fallback"})
    again = {pick(svc, caddr=caddr) for _ in range(3)}
    assert len(again) == 1 and again <= {"A", "C"}
    # ... while a server added with weight 0 has no entries at all.
    late = make("mh", [1, 1, 0])
    assert Counter(name(late, d) for d in late.sched.table) == {"A": 2047, "B": 2046}


def test_mh_nothing_available():
    svc = make("mh", [1, 1], flags={"mh-fallback"})
    for dest in svc.dests:
        dest.flags.add(OVERLOAD)
    assert svc.schedule(flow()) is None
    assert make("mh", []).schedule(flow()) is None
    assert make("mh", [0, 0]).schedule(flow()) is None
