"""The keyed hash of the fast path's tables (fastpath/keyed_hash.pxi): SipHash against known
answers, the collision attack on the old seeded hash, the chain bound, the service index."""
import os
import struct
import subprocess
import sys
from dataclasses import replace

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether

from lb._forward import siphash_bytes
from tests.vectors import fixtures as fx
from tests.vectors import nat as V
from tests.vectors.patch import with_sources

M32 = 0xFFFFFFFF


def test_siphash24_the_papers_answer():
    """SipHash-2-4, key 00..0f, message 00..0e: 0xa129ca6149be45e5 (the paper's appendix A)."""
    assert siphash_bytes(bytes(range(16)), bytes(range(15)), 2, 4) == 0xA129CA6149BE45E5


def test_siphash13_is_cpythons_bytes_hash():
    """CPython 3.11+ hashes bytes with SipHash-1-3; PYTHONHASHSEED=0 makes its key all zeros."""
    out = subprocess.run(
        [sys.executable, "-c", "import sys; [print(hash(m.encode()) & (2**64 - 1)) for m in sys.argv[1:]]",
         "a", "abcdefgh", "thirteen byte", "a longer message of 32 bytes...."],
        env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, check=True)
    for msg, want in zip(["a", "abcdefgh", "thirteen byte", "a longer message of 32 bytes...."],
                         out.stdout.split()):
        got = siphash_bytes(bytes(16), msg.encode())
        if got == M32 << 32 | M32:      # CPython maps -1 to -2
            got -= 1
        assert got == int(want), msg


# --- the attack ---------------------------------------------------------------------------------
def rotl(x, b):
    return ((x << b) | (x >> (32 - b))) & M32


def old_hash(seed, proto, a1, p1, a2, p2):
    """The connection hash before keyed_hash.pxi: the seed XORed in, then multiply-rotate."""
    h = seed ^ proto
    h ^= (a1 * 0x9E3779B1) & M32
    h = rotl(h, 13)
    h ^= (a2 * 0x85EBCA6B) & M32
    h = rotl(h, 13)
    h ^= ((((p1 << 16) | p2) * 0xC2B2AE35) & M32)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & M32
    return h ^ (h >> 16)


def colliding_clients(n, vport):
    """n (client address, port) pairs whose SYNs to VIP:vport share one bucket of the old hash
    for every seed: the seed is XORed in linearly, so rotl26(a1 * K1) ^ (ports * K3) = 0
    cancels it, and the finalizer after it is a bijection."""
    inv = pow(0x9E3779B1, -1, 1 << 32)
    out = []
    for cport in range(1024, 1024 + n):
        x = (((cport << 16) | vport) * 0xC2B2AE35) & M32
        a1 = (rotl(x, 32 - 26) * inv) & M32        # rotl26(a1 * K1) == x
        out.append((a1, cport))
    return out


def syn_from(a1, cport):
    return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=dotted(a1), dst=V.VIP)
                 / TCP(sport=cport, dport=V.VPORT, flags="S"))


def test_the_computed_clients_collide_under_the_old_hash():
    vip = int.from_bytes(bytes(map(int, V.VIP.split("."))), "big")
    pairs = colliding_clients(5000, V.VPORT)
    for seed in (0, 0x12345678, int.from_bytes(os.urandom(4), "little")):
        assert len({old_hash(seed, 6, a1, p, vip, V.VPORT) for a1, p in pairs}) == 1


def dotted(a1):
    return ".".join(str(a1 >> s & 0xFF) for s in (24, 16, 8, 0))


def colliding_syns(n):
    """syn_from() of every colliding client, patched from one scapy SYN (tests/vectors/patch.py)."""
    pairs = colliding_clients(n, V.VPORT)
    return with_sources(syn_from(*pairs[0]), ((dotted(a1), cport) for a1, cport in pairs)), pairs


def test_the_patched_colliding_syns_are_the_ones_scapy_builds():
    syns, pairs = colliding_syns(5000)
    for i in (0, 1, 2500, 4999):
        assert syns[i] == syn_from(*pairs[i]), i


def test_the_collision_attack_spreads_over_the_keyed_table():
    """The 5000 flows all get a connection and no chain holds more than a handful."""
    f = fx.provision(replace(V.DIRECTOR, max_conns=8192))
    for syn in colliding_syns(5000)[0]:
        assert f.process(syn, now=V.NOW)[0] == "forward"
    longest, total = f.chain_stats()
    assert total == 5000 and longest <= 8
    assert f.counters()["hash_chain_full"] == 0


# --- the bound ----------------------------------------------------------------------------------
def bucket(key, nbuckets, proto, a1, p1, a2, p2):
    data = struct.pack("<IIHHB", a1, a2, p1, p2, proto)
    return siphash_bytes(key, data) & (nbuckets - 1)


def test_a_full_chain_refuses_the_insert_and_counts_it():
    """With the key known (set_hash_key), 17 flows aimed at one bucket: 16 fit, the 17th is
    refused (hash_chain_full) and nothing walks a longer chain."""
    key = bytes(range(16))
    f = fx.provision(replace(V.DIRECTOR, max_conns=64))   # 64 buckets
    f.set_hash_key(key)
    client = int.from_bytes(bytes(map(int, V.CLIENT.split("."))), "big")
    vip = int.from_bytes(bytes(map(int, V.VIP.split("."))), "big")
    aim = bucket(key, 64, 6, client, 1024, vip, V.VPORT)
    ports = [p for p in range(1024, 60000) if bucket(key, 64, 6, client, p, vip, V.VPORT) == aim][:17]
    verdicts = [f.process(bytes(V.tcp_in(p, "S")[0]), now=V.NOW)[:2] for p in ports]
    assert verdicts[:16] == [("forward", None)] * 16
    assert verdicts[16] == ("drop", "hash_chain_full")
    assert f.chain_stats()[0] == 16
    assert f.process(bytes(V.tcp_in(ports[0], "A")[0]), now=V.NOW)[0] == "forward"


def test_set_hash_key_only_on_an_empty_table():
    f = fx.provision(V.DIRECTOR)
    assert f.process(bytes(V.tcp_in(40000, "S")[0]), now=V.NOW)[0] == "forward"
    try:
        f.set_hash_key(bytes(16))
    except ValueError as e:
        assert "not empty" in str(e)
    else:
        raise AssertionError("accepted")


# --- services -----------------------------------------------------------------------------------
def test_service_index_with_many_keys_finds_each_and_misses_fast():
    """1000 keys of a fwmark service and a plain one: each key finds its service; traffic to
    a port of no service passes (not_ours) after a bounded probe, not a scan of every key."""
    f = fx.provision(V.DIRECTOR)
    keys = [(6, f"198.18.{1 + i // 200}.{1 + i % 200}", 443) for i in range(1000)]
    f.set_service(2, 0, None, 0, fwmark=9, keys=keys)
    f.set_dest(2, 2, V.RIP, 0)
    f.scheduler_cb = lambda flows: [svc for svc, *_ in flows]     # service n -> dest slot n
    for proto, vip, port in keys[::97]:
        pkt = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=vip) / TCP(sport=5000, dport=port, flags="S")
        assert f.process(bytes(pkt), now=V.NOW)[0] == "forward", vip
    miss = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst="198.18.9.9") / TCP(sport=5000, dport=443, flags="S")
    assert f.process(bytes(miss), now=V.NOW)[:2] == ("pass", "not_ours")
    assert f.process(bytes(V.tcp_in(40000, "S")[0]), now=V.NOW)[0] == "forward"
    f.clear_service(2)
    pkt = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=keys[0][1]) / TCP(sport=5001, dport=443, flags="S")
    assert f.process(bytes(pkt), now=V.NOW)[:2] == ("pass", "not_ours")
