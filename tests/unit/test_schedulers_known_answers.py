"""Known answers for the hashing schedulers, from the kernel, not from lb.

Every expected pick here comes from tests/unit/kernel_reference.py, a small transcription of
the kernel's sources (ip_vs_sh.c, ip_vs_dh.c, ip_vs_mh.c, ip_vs_lblc.c, ip_vs_lblcr.c,
lib/siphash.c, include/linux/hash.h) that imports nothing from `lb`; the project's
`Service.schedule()` must pick exactly the same server for thousands of random clients, with
weights (0 included), OVERLOADed servers and every scheduler flag. The reference itself is
pinned first, by numbers it did not produce: the SipHash paper's test vector and the
kernel's own lib/test_siphash.c tables, hash_32 worked by hand, the Maglev paper's 7-entry
example, and mh offsets/tables for a fixed set of servers that an independent C
transcription of ip_vs_mh.c gave as well.

What the kernel says (64-bit x86 kernel, default config):
- sh: 256 buckets; bucket (offset + hash_32(ntohs(port) + ntohl(saddr), 8)) & 255, port only
  with sh-port; buckets dealt in list order, `weight` in a row (0 or 1: one); unavailable =
  weight <= 0 or OVERLOAD; sh-fallback probes (roffset + ihash) & 255 with roffset =
  (offset + ihash) % 256, offset 0..255: so 2*ihash, 2*ihash + 1, ... .
- dh: 256 buckets, bucket i = dests[i % n], bucket hash_32(ntohl(daddr), 8).
- mh: 4093 entries (primes[CONFIG_IP_VS_MH_TAB_INDEX 12 - 8]); keys are NOT random:
  generate_hash_secret() sets hash1 = (2654435761, 2654435761) and hash2 = (2654446892,
  2654446892); hsiphash (SipHash-1-3 on 64-bit) of the u32 offset + ntohs(port) +
  ntohl(addr); Maglev offset/skip/turns with gcd and shift of last_weight (IP_VS_MH_TAB_BITS
  6); mh-fallback rehashes with offset (offset + ihash) % 4093.
- lblc/lblcr: 1024 buckets, hash_32(ntohl(daddr), 10); the first pick for a destination
  address is __ip_vs_lblc(r)_schedule, the weighted least-connection pick.
"""
import random

import pytest

from lb.director.model import OVERLOAD, Flow, RealServer, Service
from lb.schedulers import base, locality, mh

from tests.unit import kernel_reference as K
from tests.unit.schedfakes import CounterViews

VIP = "198.18.0.100"


def ip(a, b, c, d):
    return (a << 24) | (b << 16) | (c << 8) | d


def dotted(addr):
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))


def service(sched, kdests, flags=(), stats=None):
    """The project's service whose servers mirror the reference's Dests (same order)."""
    svc = Service("tcp", VIP, 80, sched, sched_flags=flags)
    svc.dests = [RealServer(dotted(d.addr), d.port, d.weight, last_weight=d.last_weight,
                            slot=i, stats=stats) for i, d in enumerate(kdests)]
    for rs, d in zip(svc.dests, kdests):
        if d.overload:
            rs.flags.add(OVERLOAD)
    svc.dests_changed()
    return svc


def index(svc, dest):
    """Position of the picked server in the service's list (None for no server)."""
    if dest is None:
        return None
    for i, d in enumerate(svc.dests):
        if d is dest:
            return i
    raise AssertionError(f"picked {dest}, not a server of the service")


def clients(rnd, n):
    """n random (host-order address, port), after some that test u32 wrap-around and zero."""
    edge = [(0, 0), (0xFFFFFFFF, 0), (0xFFFFFFFF, 1), (0xFFFFFFFF, 65535), (0xFFFF0000, 65535),
            (1, 0), (ip(192, 0, 2, 1), 40000), (ip(203, 0, 113, 7), 1)]
    return edge + [(rnd.getrandbits(32), rnd.randrange(65536)) for _ in range(n - len(edge))]


def random_dests(rnd, n, weights, overload=0.2, quiesced_last=(0, 1, 3)):
    """n destinations with random addresses/ports; weight 0 ones get a last_weight from
    `quiesced_last` (0: added with weight 0; else set to 0 later, the kernel keeps the last
    non-zero weight). At least one stays available, so fallback walks stay short."""
    out = []
    for _ in range(n):
        w = rnd.choice(weights)
        last = w if w else rnd.choice(quiesced_last)
        port = rnd.choice([80, 443, rnd.randrange(1, 65536)])
        out.append(K.Dest(rnd.getrandbits(32), port, w, last, overload=rnd.random() < overload))
    if all(d.weight <= 0 or d.overload for d in out):
        out[0].weight, out[0].last_weight, out[0].overload = 1, 1, False
    return out


FLAG_SETS = {
    "sh": [(), ("sh-port",), ("sh-fallback",), ("sh-port", "sh-fallback")],
    "mh": [(), ("mh-port",), ("mh-fallback",), ("mh-port", "mh-fallback")],
}


def assert_same_picks(svc, expected_of, pairs, what):
    """svc.schedule() against the reference for every (address, port) client; the first
    mismatch is reported with its vector."""
    for addr, port in pairs:
        got = index(svc, svc.schedule(Flow("tcp", addr, port, VIP, 80)))
        want = expected_of(addr, port)
        assert got == want, (f"{what}: client {dotted(addr)}:{port} -> project {got}, "
                             f"kernel {want}")


# === the reference, pinned by numbers it did not produce ====================================

SIP_KEY = (0x0706050403020100, 0x0F0E0D0C0B0A0908)   # bytes 00 01 .. 0f, little-endian words

# lib/test_siphash.c: test_vectors_siphash[i] = siphash(bytes 00..i-1), i = 0..15 (its table
# is the reference implementation's, github.com/veorq/SipHash).
KERNEL_SIPHASH_VECTORS = [
    0x726FDB47DD0E0E31, 0x74F839C593DC67FD, 0x0D6C8009D9A94F5A, 0x85676696D7FB7E2D,
    0xCF2794E0277187B7, 0x18765564CD99A68D, 0xCBC9466E58FEE3CE, 0xAB0200F58B01D137,
    0x93F5F5799A932462, 0x9E0082DF0BA9E4B0, 0x7A5DBBC594DDB9F3, 0xF4B32F46226BADA7,
    0x751E8FBC860EE5FB, 0x14EA5627C0843D90, 0xF723CA908E7AF2EE, 0xA129CA6149BE45E5,
]
# lib/test_siphash.c, BITS_PER_LONG == 64: test_vectors_hsiphash[i] = hsiphash(00..i-1).
KERNEL_HSIPHASH64_VECTORS = [
    0x050FC4DC, 0x7D57CA93, 0x4DC7D44D, 0xE7DDF7FB, 0x88D38328, 0x49533B67, 0xC59F22A7,
    0x9BB11140, 0x8D299A8E, 0x6C063DE4, 0x92FF097F, 0xF94DC352, 0x57B4D9A2, 0x1229FFA7,
    0xC0F95D34, 0x2A519956,
]


def test_reference_siphash_is_the_papers_siphash_2_4():
    # The SipHash paper (Aumasson, Bernstein), appendix A: key 00..0f, message 00..0e.
    assert K.siphash(bytes(range(15)), SIP_KEY) == 0xA129CA6149BE45E5
    assert [K.siphash(bytes(range(i)), SIP_KEY) for i in range(16)] == KERNEL_SIPHASH_VECTORS


def test_reference_hsiphash_is_the_kernels_64_bit_hsiphash():
    assert [K.hsiphash(bytes(range(i)), SIP_KEY) for i in range(16)] == KERNEL_HSIPHASH64_VECTORS
    # siphash_test_init: hsiphash_1u32(0x03020100) == test_vectors_hsiphash[4], the path
    # hsiphash(&v, 4, key) takes for mh's u32.
    assert K.hsiphash_1u32(0x03020100, SIP_KEY) == KERNEL_HSIPHASH64_VECTORS[4] == 0x88D38328


def test_reference_hash_32_by_hand():
    # hash_32(v, b) = (v * 0x61C88647 mod 2^32) >> (32 - b).
    assert K.hash_32(1, 8) == 0x61
    # 0x0A000001 * G = 0x0A000000 * G + G; 0x0A * 0x47 = 0x2C6 -> 0xC6000000 + 0x61C88647
    # = 0x127C88647 -> 0x27C88647: top 8 bits 0x27 = 39, top 10 bits 0b0010011111 = 159.
    assert (K.hash_32(0x0A000001, 8), K.hash_32(0x0A000001, 10)) == (39, 159)
    # 0xC0000201 * G = 0xC0000000 * G (0x40000000) + (G << 9) (0x910C8E00) + G = 0x32D51447.
    assert K.hash_32(0xC0000201, 8) == 0x32


def test_reference_maglev_populate_on_the_papers_example():
    # The Maglev paper's example (Eisenbud et al., NSDI'16, section 3.4, M = 7): permutations
    # B0 3 0 4 1 5 2 6 (offset 3, skip 4), B1 0 2 4 6 1 3 5 (0, 2), B2 3 4 5 6 0 1 2 (3, 1).
    # By hand: B0 3, B1 0, B2 3->4; B0 3->0->4->1, B1 0->2, B2 4->5; B0 1->5->2->6.
    # Table: B1 B0 B1 B0 B2 B2 B0.
    setups = [K.MhSetup(3, 4, 3, 1), K.MhSetup(0, 2, 0, 1), K.MhSetup(3, 1, 3, 1)]
    assert K.mh_populate(setups, 7) == [1, 0, 1, 0, 2, 2, 0]
    # turns 2, 1, 1: B0 takes 3 and then 0 before B1 (0 taken -> 2), B2 (3 -> 4); B0 0 ->
    # 4 -> 1, 1 -> 5; B1 2 -> 4 -> 6; entries all set: B0 B0 B1 B0 B2 B0 B1.
    setups = [K.MhSetup(3, 4, 3, 2), K.MhSetup(0, 2, 0, 1), K.MhSetup(3, 1, 3, 1)]
    assert K.mh_populate(setups, 7) == [0, 0, 1, 0, 2, 0, 1]


def test_reference_mh_constants():
    assert (K.MH_TAB_SIZE, K.MH_TAB_BITS) == (4093, 6)
    assert K.MH_PRIMES[0] == 251 and K.MH_PRIMES[-1] == 131071


# mh with the kernel's keys for servers 10.0.0.1-3:80. These numbers were also produced by a
# separate C transcription of ip_vs_mh.c / lib/siphash.c (gcc, x86-64), not by Python.
MH_A, MH_B, MH_C = ip(10, 0, 0, 1), ip(10, 0, 0, 2), ip(10, 0, 0, 3)


def test_reference_mh_literal_vectors():
    key1, key2 = K.MH_HASH1_KEY, K.MH_HASH2_KEY
    assert K.mh_hashkey(0, 0, key1, 0) == 0x1D5A77C2
    assert K.mh_hashkey(0, 0, key2, 0) == 0xF882433F
    assert K.mh_hashkey(MH_A, 80, key1, 0) == 0x439C0CBE
    dests = [K.Dest(a, 80, 1) for a in (MH_A, MH_B, MH_C)]
    setups = K.mh_permutate(dests, 1, 0)
    assert [(s.offset, s.skip, s.turns) for s in setups] == [
        (3167, 700, 1), (1231, 3544, 1), (1631, 3453, 1)]
    table = K.mh_reassign(dests)
    assert [table.count(i) for i in range(3)] == [1365, 1364, 1364]
    assert table[:20] == [0, 1, 1, 2, 2, 0, 1, 2, 2, 0, 0, 1, 1, 0, 0, 2, 1, 1, 0, 0]
    entry = lambda addr, port, off=0: K.mh_hashkey(addr, port, key1, off) % 4093  # noqa: E731
    assert [entry(ip(192, 0, 2, 1), 0), entry(ip(198, 51, 100, 200), 0),
            entry(ip(203, 0, 113, 7), 0), entry(ip(203, 0, 113, 7), 40000)] == [
        2891, 3310, 1705, 2964]
    # 203.0.113.7's fallback entries (roffset = offset + 1705): 434 (B), 1941 (C), 290 (B) ...
    assert [entry(ip(203, 0, 113, 7), 0, 1705 + off) for off in range(5)] == [
        434, 1941, 290, 2137, 13]
    weighted = lambda ws: [K.mh_reassign(  # noqa: E731
        [K.Dest(a, 80, w) for a, w in zip((MH_A, MH_B, MH_C), ws)]).count(i) for i in range(3)]
    assert weighted([3, 1, 2]) == [2047, 682, 1364]
    # 1000/1 needs 10 bits: rshift 4, turns 62 and 1 (the `?: (lw != 0)`): 4093 = 63 * 64 + 61
    assert weighted([1000, 1, 0]) == [62 * 64 + 61, 64, 0]


def test_mh_known_answers_for_three_servers():
    # The vectors above, asked of the project: 192.0.2.1 -> entry 2891 (C), 198.51.100.200 ->
    # 3310 (B), 203.0.113.7 -> 1705 (C), and :40000 with mh-port -> 2964 (C).
    dests = [K.Dest(a, 80, 1) for a in (MH_A, MH_B, MH_C)]
    svc = service("mh", dests)
    pick = lambda a, p=0: index(svc, svc.schedule(Flow("tcp", a, p, VIP, 80)))  # noqa: E731
    assert [pick(ip(192, 0, 2, 1)), pick(ip(198, 51, 100, 200)), pick(ip(203, 0, 113, 7))] \
        == [2, 1, 2]
    assert pick(ip(203, 0, 113, 7), 40000) == 2          # no mh-port: the port is ignored
    ported = service("mh", dests, flags=("mh-port",))
    assert index(ported, ported.schedule(Flow("tcp", ip(203, 0, 113, 7), 40000, VIP, 80))) == 2
    # C (index 2) OVERLOADed: 203.0.113.7 gets nothing, or with mh-fallback the first
    # available of its rehash chain: entry 434 = B.
    overloaded = [K.Dest(MH_A, 80, 1), K.Dest(MH_B, 80, 1), K.Dest(MH_C, 80, 1, overload=True)]
    plain = service("mh", overloaded)
    assert plain.schedule(Flow("tcp", ip(203, 0, 113, 7), 1, VIP, 80)) is None
    fb = service("mh", overloaded, flags=("mh-fallback",))
    assert index(fb, fb.schedule(Flow("tcp", ip(203, 0, 113, 7), 1, VIP, 80))) == 1
    # B too: the chain is 434 B, 1941 C, 290 B, 2137 C, 13 A -> A.
    overloaded[1].overload = True
    fb = service("mh", overloaded, flags=("mh-fallback",))
    assert index(fb, fb.schedule(Flow("tcp", ip(203, 0, 113, 7), 1, VIP, 80))) == 0


def test_reference_sh_by_hand():
    # Weights 3, 1: A A A B A A A B ...; weight 0 and 1 both take one bucket; 300 > 256 all.
    assert K.sh_reassign([K.Dest(1, 80, 3), K.Dest(2, 80, 1)])[:8] == [0, 0, 0, 1, 0, 0, 0, 1]
    assert K.sh_reassign([K.Dest(1, 80, 0), K.Dest(2, 80, 2)])[:6] == [0, 1, 1, 0, 1, 1]
    assert set(K.sh_reassign([K.Dest(1, 80, 300), K.Dest(2, 80, 1)])) == {0}
    # 0.0.0.2: hash_32(2, 8) = 0xC3 = 195; fallback probes (roffset + 195) & 255 with
    # roffset = 195, 196, ...: 390 & 255 = 134, then 135, 136.
    assert K.sh_hashkey(2, 0, 0) == 195
    assert K.sh_fallback_probes(2, 0)[:3] == [134, 135, 136]
    # sh-port: 0xFFFFFFFF + 2 wraps to 1: hash_32(1, 8) = 0x61.
    assert K.sh_hashkey(0xFFFFFFFF, 2, 0) == 0x61


def test_reference_dh_and_lblc_by_hand():
    assert K.dh_reassign([K.Dest(1), K.Dest(2), K.Dest(3)])[:5] == [0, 1, 2, 0, 1]
    assert K.dh_hashkey(ip(10, 0, 0, 1)) == 39 and K.lblc_hashkey(ip(10, 0, 0, 1)) == 159
    assert (K.LBLC_TAB_SIZE, K.LBLC_MAX_SIZE) == (1024, 16384)


# === the project against the reference ======================================================

def test_hash_32_matches():
    rnd = random.Random(32)
    for v in [0, 1, 0xFFFFFFFF] + [rnd.getrandbits(32) for _ in range(2000)]:
        for bits in (8, 10):
            assert base.hash_32(v, bits) == K.hash_32(v, bits), (v, bits)


def test_mh_hashes_are_hsiphash_with_the_kernels_keys():
    rnd = random.Random(11)
    for v in [0, 1, 0xFFFFFFFF, MH_A + 80] + [rnd.getrandbits(32) for _ in range(2000)]:
        data = v.to_bytes(4, "little")
        assert mh.hash1(v) == K.hsiphash(data, K.MH_HASH1_KEY), hex(v)
        assert mh.hash2(v) == K.hsiphash(data, K.MH_HASH2_KEY), hex(v)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_mh_hsiphash_with_other_keys(seed):
    # The kernel uses key[0] == key[1]; any such key, not only 0 or the kernel's two.
    rnd = random.Random(seed)
    for _ in range(20):
        k = rnd.getrandbits(64)
        h = mh._hsiphash(k)
        for v in [0, 0xFFFFFFFF] + [rnd.getrandbits(32) for _ in range(50)]:
            assert h(v) == K.hsiphash_1u32(v, (k, k)), (hex(k), hex(v))


@pytest.mark.parametrize("seed", range(4))
def test_mh_schedule_matches_the_kernel(seed):
    rnd = random.Random(100 + seed)
    dests = random_dests(rnd, rnd.randint(2, 10), [0, 1, 1, 2, 3, 4, 6, 10, 100, 1000, 65535])
    table = K.mh_reassign(dests)
    pairs = clients(rnd, 2000)
    for flags in FLAG_SETS["mh"]:
        svc = service("mh", dests, flags)
        fallback, port = "mh-fallback" in flags, "mh-port" in flags
        assert_same_picks(
            svc, lambda a, p: K.mh_schedule(table, dests, a, p, fallback, port), pairs,
            f"mh seed {seed} flags {flags} dests {dests}")


@pytest.fixture
def mh_keys(monkeypatch):
    """Give mh other hash keys, as the kernel's hash1/hash2 would be if they changed: the
    module's hash1/hash2 (and its memo of hash1 buckets) are what a service uses."""
    def use(k1, k2):
        monkeypatch.setattr(mh, "hash1", mh._hsiphash(k1))
        monkeypatch.setattr(mh, "hash2", mh._hsiphash(k2))
        getattr(mh, "_bucket_cache", {}).clear()
    yield use
    monkeypatch.undo()
    getattr(mh, "_bucket_cache", {}).clear()


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_mh_schedule_with_random_keys(mh_keys, seed):
    rnd = random.Random(seed)
    k1, k2 = rnd.getrandbits(64), rnd.getrandbits(64)
    mh_keys(k1, k2)
    key1, key2 = (k1, k1), (k2, k2)
    dests = random_dests(rnd, 5, [0, 1, 2, 3, 5])
    table = K.mh_reassign(dests, key1=key1, key2=key2)
    pairs = clients(rnd, 1000)
    for flags in (("mh-port",), ("mh-port", "mh-fallback")):
        svc = service("mh", dests, flags)
        fallback = "mh-fallback" in flags
        assert_same_picks(
            svc, lambda a, p: K.mh_schedule(table, dests, a, p, fallback, True, key1), pairs,
            f"mh keys {k1:#x}/{k2:#x} flags {flags}")


def test_mh_quiesced_and_overloaded_servers():
    # B set to weight 0 keeps its entries (last_weight 2), C is OVERLOADed, D was added with
    # weight 0 (last_weight 0: no entries). Clients of B and C get nothing, or with
    # mh-fallback the kernel's rehash walk.
    dests = [K.Dest(ip(10, 1, 0, 1), 80, 2), K.Dest(ip(10, 1, 0, 2), 80, 0, 2),
             K.Dest(ip(10, 1, 0, 3), 8080, 4, overload=True), K.Dest(ip(10, 1, 0, 4), 80, 0, 0)]
    table = K.mh_reassign(dests)
    assert table.count(3) == 0 and table.count(1) > 0
    pairs = clients(random.Random(5), 2000)
    for flags in FLAG_SETS["mh"]:
        fallback, port = "mh-fallback" in flags, "mh-port" in flags
        assert_same_picks(
            service("mh", dests, flags),
            lambda a, p: K.mh_schedule(table, dests, a, p, fallback, port), pairs,
            f"mh quiesced/overloaded flags {flags}")


def test_mh_nothing_available():
    # Every entry's server OVERLOADed: the fallback walks all 4093 offsets and finds none.
    dests = [K.Dest(ip(10, 2, 0, 1), 80, 1, overload=True), K.Dest(ip(10, 2, 0, 2), 80, 3, 0)]
    dests[1].weight = 0
    table = K.mh_reassign(dests)
    svc = service("mh", dests, ("mh-fallback",))
    for addr, port in [(ip(192, 0, 2, 9), 1), (0, 0)]:
        assert K.mh_schedule(table, dests, addr, port, True, False) is None
        assert svc.schedule(Flow("tcp", addr, port, VIP, 80)) is None
    # All added with weight 0: gcd 0, the table is reset (all NULL).
    empty = [K.Dest(ip(10, 2, 0, 1), 80, 0), K.Dest(ip(10, 2, 0, 2), 80, 0)]
    assert set(K.mh_reassign(empty)) == {None}
    assert service("mh", empty, ("mh-fallback",)).schedule(Flow("tcp", 1, 1, VIP, 80)) is None


@pytest.mark.parametrize("seed", range(4))
def test_sh_schedule_matches_the_kernel(seed):
    rnd = random.Random(200 + seed)
    dests = random_dests(rnd, rnd.randint(2, 12), [0, 1, 1, 2, 3, 7, 20, 50], overload=0.25)
    if seed == 3:
        dests[0].weight = 300                 # more than the 256 buckets
    buckets = K.sh_reassign(dests)
    pairs = clients(rnd, 2000)
    for flags in FLAG_SETS["sh"]:
        fallback, port = "sh-fallback" in flags, "sh-port" in flags
        assert_same_picks(
            service("sh", dests, flags),
            lambda a, p: K.sh_schedule(buckets, dests, a, p, fallback, port), pairs,
            f"sh seed {seed} flags {flags} dests {dests}")


def test_sh_fallback_when_most_servers_are_out():
    # 10 servers, 7 unavailable (weight 0 or OVERLOAD) between 3 available ones: long probe
    # walks, whose direction and step decide which of the three a client gets.
    dests = [K.Dest(ip(10, 3, 0, i), 80, 1 + i % 4) for i in range(1, 11)]
    for d in dests[0:8:2]:
        d.overload = True
    for d in dests[1:7:2]:
        d.weight = 0
    assert [i for i, d in enumerate(dests) if not K.sh_is_unavailable(d)] == [7, 8, 9]
    buckets = K.sh_reassign(dests)
    pairs = clients(random.Random(6), 2000)
    for flags in (("sh-fallback",), ("sh-port", "sh-fallback")):
        assert_same_picks(
            service("sh", dests, flags),
            lambda a, p: K.sh_schedule(buckets, dests, a, p, True, "sh-port" in flags), pairs,
            f"sh mostly out flags {flags}")
    # Nothing available at all: no server after the whole walk.
    for d in dests[7:]:
        d.overload = True
    svc = service("sh", dests, ("sh-fallback",))
    assert svc.schedule(Flow("tcp", 7, 7, VIP, 80)) is None
    assert K.sh_schedule(K.sh_reassign(dests), dests, 7, 7, True, False) is None


@pytest.mark.parametrize("seed", range(3))
def test_dh_schedule_matches_the_kernel(seed):
    rnd = random.Random(300 + seed)
    dests = random_dests(rnd, rnd.randint(1, 9), [0, 1, 2, 5, 100], overload=0.2)
    buckets = K.dh_reassign(dests)
    svc = service("dh", dests)
    for daddr, _ in clients(rnd, 2000):
        flow = Flow("tcp", rnd.getrandbits(32), rnd.randrange(65536), daddr, 80)
        got = index(svc, svc.schedule(flow))
        want = K.dh_schedule(buckets, dests, daddr)
        assert got == want, f"dh seed {seed}: daddr {dotted(daddr)} -> {got}, kernel {want}"


# --- lblc / lblcr --------------------------------------------------------------------------

class _Used:
    def __init__(self, lastuse):
        self.lastuse = lastuse


@pytest.mark.parametrize("rover", [0, 517, 1023])
def test_locality_table_buckets_are_the_kernels(rover):
    # Which bucket an address is in decides what the over-full check drops: it walks the
    # buckets from rover + 1 and drops every idle entry of a bucket, until 4/3 of the excess
    # is gone. 600 entries over max_size -> goal 800 of the idle ones, bucket by bucket.
    rnd = random.Random(rover)
    now = 10_000.0
    addrs = set()
    while len(addrs) < K.LBLC_MAX_SIZE + 600:
        addrs.add(rnd.getrandbits(32))
    lastuse = {a: now - (400 if rnd.random() < 0.6 else 100) for a in sorted(addrs)}
    table = locality.LocalityTable()
    assert table.max_size == K.LBLC_MAX_SIZE
    table.entries = {a: _Used(t) for a, t in lastuse.items()}
    table.rover, table.counter, table.next_check = rover, 5, now
    table.expire(now)
    dropped, new_rover = K.lblc_shed(lastuse, rover, now)
    assert 800 <= len(dropped) < 900
    assert set(table.entries) == set(lastuse) - dropped
    assert table.rover == new_rover


def lb_service(sched, dests):
    stats = CounterViews(len(dests) + 1)
    svc = service(sched, dests, stats=stats)
    now = [0.0]
    svc.sched.clock = lambda: now[0]
    return svc, stats, now


def set_load(stats, svc, dests):
    for i, d in enumerate(dests):
        slot = svc.dests[i].slot
        stats.active[slot], stats.inactive[slot] = d.active, d.inactive


@pytest.mark.parametrize("sched", ["lblc", "lblcr"])
def test_locality_first_choice_is_the_kernels_wlc_pick(sched):
    # A destination address never seen: __ip_vs_lblc(r)_schedule over the loads, weights
    # (0 skipped) and OVERLOAD flags of the moment.
    rnd = random.Random(41)
    for trial in range(300):
        dests = random_dests(rnd, rnd.randint(1, 7), [0, 1, 2, 3, 5], overload=0.25)
        for d in dests:
            d.active, d.inactive = rnd.randrange(6), rnd.randrange(30)
        if trial % 3 == 0:          # equal load per weight: the earliest server wins ties
            c = rnd.randrange(1, 4)
            for d in dests:
                d.active, d.inactive = c * d.weight, c * d.weight
        if trial % 10 == 0:
            for d in dests:
                d.overload = True
        svc, stats, _ = lb_service(sched, dests)
        set_load(stats, svc, dests)
        daddr = rnd.getrandbits(32)
        got = index(svc, svc.schedule(Flow("tcp", 1, 1, daddr, 80)))
        want = K.lblc_least(dests)
        assert got == want, f"{sched} trial {trial}: {dests} -> {got}, kernel {want}"


def _mirror_sequence(sched, seed, steps=400):
    """Random decisions, load changes, OVERLOAD toggles, weight changes, removals and
    re-adds, on the project and on the reference (ip_vs_lblc(r)_schedule), step by step."""
    rnd = random.Random(seed)
    dests = [K.Dest(ip(10, 4, 0, i), 80, rnd.choice([1, 2])) for i in range(1, 6)]
    svc, stats, now = lb_service(sched, dests)
    of = {id(rs): d for rs, d in zip(svc.dests, dests)}    # project server -> reference Dest
    kernel_of = {id(d): rs for rs, d in zip(svc.dests, dests)}
    present = list(dests)                                   # svc->destinations
    removed = []
    cache = {}
    expiration = 2.0
    svc.sched.table.expiration = expiration
    pool = [ip(198, 51, 100, i) for i in range(6)]
    for step in range(steps):
        op = rnd.random()
        if op < 0.5:
            daddr = rnd.choice(pool)
            if sched == "lblc":
                want = K.lblc_schedule(cache, present, daddr)
            else:
                want = K.lblcr_schedule(cache, present, daddr, now[0], expiration)
            got = svc.schedule(Flow("tcp", 1, 1, daddr, 80))
            got_d = None if got is None else of[id(got)]
            assert got_d is want, f"{sched} seed {seed} step {step}: {got_d} vs kernel {want}"
            if want is not None and rnd.random() < 0.5:      # the connection is bound to it
                want.active += 1
                stats.active[kernel_of[id(want)].slot] += 1
        elif op < 0.7:
            d = rnd.choice(dests)           # few distinct loads: ties are frequent
            d.active, d.inactive = rnd.choice([0, 1, 2, 3, 4]), rnd.choice([0, 0, 1])
            rs = kernel_of[id(d)]
            stats.active[rs.slot], stats.inactive[rs.slot] = d.active, d.inactive
        elif op < 0.8:
            d = rnd.choice(dests)
            d.overload = not d.overload
            kernel_of[id(d)].flags.symmetric_difference_update({OVERLOAD})
        elif op < 0.9:
            d = rnd.choice(present)
            d.weight = rnd.choice([0, 1, 2, 2])
            if d.weight:
                d.last_weight = d.weight
            kernel_of[id(d)].weight = d.weight
            svc.dests_changed()
        elif op < 0.95 and len(present) > 1:
            d = rnd.choice(present)                         # ipvsadm -d: to the trash
            present.remove(d)
            removed.append(d)
            d.available = False
            svc.dests.remove(kernel_of[id(d)])
            svc.dests_changed()
        elif removed:
            d = removed.pop(rnd.randrange(len(removed)))   # ipvsadm -a again: from the trash
            present.append(d)
            d.available = True
            svc.dests.append(kernel_of[id(d)])
            svc.dests_changed()
        now[0] += rnd.choice([0.0, 0.0, 0.05, 0.1, 0.25])
    assert now[0] < 59          # no periodic expiry check ran on either side


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lblc_sequence_matches_the_kernel(seed):
    _mirror_sequence("lblc", seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lblcr_sequence_matches_the_kernel(seed):
    _mirror_sequence("lblcr", seed)


def test_lblcr_set_order_and_ties_by_hand():
    # ip_vs_lblcr_schedule on A, B (weight 1), one destination address X, lblcr_expiration 2 s:
    # t=0  X -> A (wlc, both idle); set {A}.
    # t=0  A has 2 active: is_overloaded(A) (2 > 1, and B: 0 * 2 < 1) -> wlc B, inserted at
    #      the head: {B, A}, lastmod 0.
    # t=3  A and B 1 active each. set_min: B (first), A does not beat it (256 > 256 false);
    #      size 2 and 3 > 0 + 2: set_max: B first, A is not "more" (256 < 256 false) -> B is
    #      erased; the pick made before, B (1 > 1 false: not overloaded), is used.
    # t=3  X -> A, the one member left.
    dests = [K.Dest(ip(10, 6, 0, 1), 80, 1), K.Dest(ip(10, 6, 0, 2), 80, 1)]
    svc, stats, now = lb_service("lblcr", dests)
    svc.sched.table.expiration = 2.0
    x = Flow("tcp", 1, 1, ip(10, 9, 9, 9), 80)
    picks = [index(svc, svc.schedule(x))]
    stats.active[0] = 2
    picks.append(index(svc, svc.schedule(x)))
    now[0] = 3.0
    stats.active[0] = stats.active[1] = 1
    picks += [index(svc, svc.schedule(x)), index(svc, svc.schedule(x))]
    assert picks == [0, 1, 1, 0]
    # The reference, for the same steps.
    cache, ref = {}, []
    for t, loads in [(0.0, (0, 0)), (0.0, (2, 0)), (3.0, (1, 1)), (3.0, (1, 1))]:
        dests[0].active, dests[1].active = loads
        ref.append(dests.index(K.lblcr_schedule(cache, dests, 99, t, 2.0)))
    assert ref == [0, 1, 1, 0]


@pytest.mark.parametrize("sched", ["lblc", "lblcr"])
def test_locality_full_table_still_remembers_new_destinations(sched):
    # 16385 destinations addressed within a minute (no check has run): the kernel keeps an
    # entry for each. Then A has 1 active connection (not overloaded: 1 > 1 is false) and
    # the wlc pick would be B; the last destination address must stay with A.
    dests = [K.Dest(ip(10, 5, 0, 1), 80, 1), K.Dest(ip(10, 5, 0, 2), 80, 1)]
    svc, stats, _ = lb_service(sched, dests)
    last = None
    for n in range(K.LBLC_MAX_SIZE + 2):
        last = ip(100, 64, 0, 0) + n
        assert index(svc, svc.schedule(Flow("tcp", 1, 1, last, 80))) == 0
    stats.active[svc.dests[0].slot] = 1
    assert index(svc, svc.schedule(Flow("tcp", 1, 1, last, 80))) == 0, \
        "the 16386th destination address was not remembered"
