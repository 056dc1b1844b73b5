"""A small reference of the IPVS hashing schedulers, written for the tests from the Linux
sources and nothing else: it imports nothing from `lb`, and every function names the kernel
function it transcribes. Files read (torvalds/linux):

    include/linux/hash.h              hash_32, GOLDEN_RATIO_32
    lib/siphash.c, include/linux/siphash.h    siphash (SipHash-2-4), hsiphash
    lib/test_siphash.c                the kernel's own test vectors (used by the tests)
    net/netfilter/ipvs/ip_vs_sh.c     ip_vs_sh_hashkey, _reassign, _get, _get_fallback
    net/netfilter/ipvs/ip_vs_dh.c     ip_vs_dh_hashkey, _reassign, _schedule
    net/netfilter/ipvs/ip_vs_mh.c     generate_hash_secret, ip_vs_mh_hashkey, _gcd_weight,
                                      _shift_weight, _permutate, _populate, _get, _get_fallback
    net/netfilter/ipvs/ip_vs_lblc.c   ip_vs_lblc_hashkey, __ip_vs_lblc_schedule, is_overloaded,
                                      ip_vs_lblc_schedule, ip_vs_lblc_new, _check_expire
    net/netfilter/ipvs/ip_vs_lblcr.c  ip_vs_lblcr_hashkey, ip_vs_dest_set_min/_max/_insert/
                                      _erase, ip_vs_lblcr_schedule, ip_vs_lblcr_new
    include/net/ip_vs.h               ip_vs_dest_conn_overhead

Conventions. IPv4 only. Addresses and ports are host-order integers: the kernel always
hashes ntohl(addr) and ntohs(port). The target is a 64-bit little-endian kernel (x86-64):
there hsiphash is SipHash-1-3 on 64-bit words (lib/siphash.c, BITS_PER_LONG == 64), and
`hsiphash(&v, sizeof(v), key)` hashes the four bytes of the u32 v as that CPU stores them,
least significant first. A destination is a `Dest`; tables hold indices into the list of
destinations (the service's list order, the kernel's svc->destinations).
"""
from __future__ import annotations

from dataclasses import dataclass
from math import gcd

U32 = 0xFFFFFFFF
U64 = 0xFFFFFFFFFFFFFFFF


@dataclass
class Dest:
    """The fields of struct ip_vs_dest the schedulers read."""
    addr: int                 # ntohl(dest->addr.ip)
    port: int = 80            # ntohs(dest->port)
    weight: int = 1           # dest->weight
    last_weight: int | None = None   # dest->last_weight (latest non-zero weight, or the one added)
    overload: bool = False    # dest->flags & IP_VS_DEST_F_OVERLOAD
    available: bool = True    # dest->flags & IP_VS_DEST_F_AVAILABLE (still in the service)
    active: int = 0           # dest->activeconns
    inactive: int = 0         # dest->inactconns

    def __post_init__(self):
        # ip_vs_ctl.c __ip_vs_update_dest: "if (add || udest->weight != 0)
        # atomic_set(&dest->last_weight, udest->weight)" -- on add, last_weight = weight.
        if self.last_weight is None:
            self.last_weight = self.weight


# --- include/linux/hash.h ------------------------------------------------------------------

GOLDEN_RATIO_32 = 0x61C88647


def hash_32(val: int, bits: int) -> int:
    """hash_32() / hash_32_generic(): __hash_32(val) = val * GOLDEN_RATIO_32 (u32 arithmetic),
    then "High bits are more random, so use them": >> (32 - bits)."""
    return ((val & U32) * GOLDEN_RATIO_32 & U32) >> (32 - bits)


# --- lib/siphash.c -------------------------------------------------------------------------

def _rol64(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & U64


def _sipround(v: list) -> None:
    """SIPROUND (64-bit; on 64-bit kernels HSIPROUND is the same macro)."""
    v0, v1, v2, v3 = v
    v0 = (v0 + v1) & U64; v1 = _rol64(v1, 13); v1 ^= v0; v0 = _rol64(v0, 32)
    v2 = (v2 + v3) & U64; v3 = _rol64(v3, 16); v3 ^= v2
    v0 = (v0 + v3) & U64; v3 = _rol64(v3, 21); v3 ^= v0
    v2 = (v2 + v1) & U64; v1 = _rol64(v1, 17); v1 ^= v2; v2 = _rol64(v2, 32)
    v[:] = [v0, v1, v2, v3]


def _preamble(length: int, key: tuple) -> tuple:
    """PREAMBLE(len) (HPREAMBLE on 64-bit): the four constants, b = len << 56, and
    v3 ^= key[1]; v2 ^= key[0]; v1 ^= key[1]; v0 ^= key[0]."""
    k0, k1 = key
    v = [0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1,
         0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1]
    b = ((length & 0xFF) << 56) & U64
    return v, b


def _sip(data: bytes, key: tuple, c_rounds: int, d_rounds: int) -> int:
    """The body of __siphash_unaligned / __hsiphash_unaligned (64-bit): every whole u64 read
    little-endian (get_unaligned_le64): v3 ^= m, c rounds, v0 ^= m; the 0..7 bytes left go
    little-endian into b below the length byte; then POSTAMBLE / HPOSTAMBLE: v3 ^= b,
    c rounds, v0 ^= b, v2 ^= 0xff, d rounds, return (v0 ^ v1) ^ (v2 ^ v3)."""
    v, b = _preamble(len(data), key)
    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i:i + 8], "little")
        v[3] ^= m
        for _ in range(c_rounds):
            _sipround(v)
        v[0] ^= m
    b |= int.from_bytes(data[whole:], "little")
    v[3] ^= b
    for _ in range(c_rounds):
        _sipround(v)
    v[0] ^= b
    v[2] ^= 0xFF
    for _ in range(d_rounds):
        _sipround(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


def siphash(data: bytes, key: tuple) -> int:
    """siphash(): SipHash-2-4, 64-bit result (POSTAMBLE: 2 rounds, then 4)."""
    return _sip(data, key, 2, 4)


def hsiphash(data: bytes, key: tuple) -> int:
    """hsiphash() on a 64-bit kernel: "we make HalfSipHash1-3 actually be SipHash1-3"
    (HSIPROUND = SIPROUND, HPOSTAMBLE: 1 round, then 3); the function returns u32, so the
    64-bit (v0 ^ v1) ^ (v2 ^ v3) is truncated to its low 32 bits."""
    return _sip(data, key, 1, 3) & U32


def hsiphash_1u32(first: int, key: tuple) -> int:
    """hsiphash_1u32 (64-bit): HPREAMBLE(4); b |= first; HPOSTAMBLE."""
    v, b = _preamble(4, key)
    b |= first & U32
    v[3] ^= b
    _sipround(v)
    v[0] ^= b
    v[2] ^= 0xFF
    for _ in range(3):
        _sipround(v)
    return (v[0] ^ v[1] ^ v[2] ^ v[3]) & U32


# --- net/netfilter/ipvs/ip_vs_mh.c ---------------------------------------------------------

MH_PRIMES = [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]   # primes[]
CONFIG_IP_VS_MH_TAB_INDEX = 12                        # Kconfig default (range 8..17)
MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX // 2          # IP_VS_MH_TAB_BITS = 6
MH_TAB_SIZE = MH_PRIMES[CONFIG_IP_VS_MH_TAB_INDEX - 8]  # IP_VS_MH_TAB_SIZE = 4093

# generate_hash_secret(): fixed, not random: hash1->key[0] = hash1->key[1] = 2654435761UL,
# hash2->key[0] = hash2->key[1] = 2654446892UL (hsiphash_key_t is unsigned long key[2]).
MH_HASH1_KEY = (2654435761, 2654435761)
MH_HASH2_KEY = (2654446892, 2654446892)


def mh_hashkey(addr: int, port: int, key: tuple, offset: int) -> int:
    """ip_vs_mh_hashkey: unsigned int v = offset + ntohs(port) + ntohl(addr_fold) (u32
    wrap-around); return hsiphash(&v, sizeof(v), key) -- v's 4 bytes, little-endian."""
    v = (offset + port + addr) & U32
    return hsiphash(v.to_bytes(4, "little"), key)


def mh_is_unavailable(d: Dest) -> bool:
    """ip_vs_mh.c is_unavailable: weight <= 0 || flags & IP_VS_DEST_F_OVERLOAD."""
    return d.weight <= 0 or d.overload


def mh_gcd_weight(dests) -> int:
    """ip_vs_mh_gcd_weight: gcd of every last_weight > 0; 0 when there is none."""
    g = 0
    for d in dests:
        if d.last_weight > 0:
            g = gcd(d.last_weight, g) if g > 0 else d.last_weight
    return g


def _fls(x: int) -> int:
    """fls(): position of the most significant set bit, 1-based; fls(0) = 0."""
    return x.bit_length()


def mh_shift_weight(dests, g: int) -> int:
    """ip_vs_mh_shift_weight: shift = fls(max last_weight / gcd) - IP_VS_MH_TAB_BITS, >= 0."""
    if g < 1:
        return 0
    weight = 0
    for d in dests:
        if d.last_weight > weight:
            weight = d.last_weight
    shift = _fls(weight // g) - MH_TAB_BITS
    return shift if shift >= 0 else 0


@dataclass
class MhSetup:
    """struct ip_vs_mh_dest_setup."""
    offset: int
    skip: int
    perm: int
    turns: int


def mh_permutate(dests, g: int, rshift: int, size: int = MH_TAB_SIZE,
                 key1: tuple = MH_HASH1_KEY, key2: tuple = MH_HASH2_KEY) -> list:
    """ip_vs_mh_permutate: per destination, offset = hashkey(hash1) % size,
    skip = hashkey(hash2) % (size - 1) + 1, perm = offset,
    turns = ((lw / gcd) >> rshift) ?: (lw != 0)."""
    setups = []
    if g < 1:
        return setups
    for d in dests:
        offset = mh_hashkey(d.addr, d.port, key1, 0) % size
        skip = mh_hashkey(d.addr, d.port, key2, 0) % (size - 1) + 1
        lw = d.last_weight
        turns = ((lw // g) >> rshift) or (1 if lw != 0 else 0)
        setups.append(MhSetup(offset, skip, offset, turns))
    return setups


def mh_populate(setups: list, size: int = MH_TAB_SIZE) -> list:
    """ip_vs_mh_populate, with its two loops as written: the outer one restarts at the first
    destination until n == size; the inner one walks the destinations, skipping those with
    turns < 1; each claims the first free entry along its permutation (perm += skip, mod
    size; perm is not advanced past the entry it claims), dt_count counting its claims until
    `turns`, then the next destination. Returns the lookup table (indices; None = NULL)."""
    lookup = [None] * size
    if not setups:                      # gcd < 1: ip_vs_mh_reset, every entry NULL
        return lookup
    taken = [False] * size              # the kcalloc'ed bitmap
    n = 0
    dt_count = 0
    while n < size:
        i = 0                           # p = p->next (first dest); ds = &s->dest_setup[0]
        while i < len(setups):
            ds = setups[i]
            if ds.turns < 1:
                i += 1
                continue
            c = ds.perm
            while taken[c]:
                ds.perm += ds.skip
                if ds.perm >= size:
                    ds.perm -= size
                c = ds.perm
            taken[c] = True
            lookup[c] = i
            n += 1
            if n == size:
                return lookup
            dt_count += 1
            if dt_count >= ds.turns:
                dt_count = 0
                i += 1
    return lookup


def mh_reassign(dests, size: int = MH_TAB_SIZE, key1: tuple = MH_HASH1_KEY,
                key2: tuple = MH_HASH2_KEY) -> list:
    """ip_vs_mh_dest_changed / ip_vs_mh_init_svc: gcd, rshift, permutate, populate."""
    g = mh_gcd_weight(dests)
    rshift = mh_shift_weight(dests, g)
    return mh_populate(mh_permutate(dests, g, rshift, size, key1, key2), size)


def mh_get(lookup, dests, addr: int, port: int, key1: tuple = MH_HASH1_KEY):
    """ip_vs_mh_get: entry hashkey(addr, port, hash1, 0) % size; NULL if empty or the
    destination there is unavailable. Returns an index or None."""
    i = lookup[mh_hashkey(addr, port, key1, 0) % len(lookup)]
    return None if i is None or mh_is_unavailable(dests[i]) else i


def mh_get_fallback(lookup, dests, addr: int, port: int, key1: tuple = MH_HASH1_KEY):
    """ip_vs_mh_get_fallback: first the entry at ihash; if its destination is unavailable,
    for offset = 0 .. size-1: roffset = (offset + ihash) % size, and the entry
    hashkey(addr, port, hash1, roffset) % size (a rehash, not a step to a neighbour);
    stop at a NULL entry, return the first available destination."""
    size = len(lookup)
    ihash = mh_hashkey(addr, port, key1, 0) % size
    i = lookup[ihash]
    if i is None:
        return None
    if not mh_is_unavailable(dests[i]):
        return i
    for offset in range(size):
        roffset = (offset + ihash) % size
        i = lookup[mh_hashkey(addr, port, key1, roffset) % size]
        if i is None:
            break
        if not mh_is_unavailable(dests[i]):
            return i
    return None


def mh_schedule(lookup, dests, saddr: int, sport: int, fallback: bool, use_port: bool,
                key1: tuple = MH_HASH1_KEY):
    """ip_vs_mh_schedule: hash the source address (not an inverse packet), with the source
    port only under IP_VS_SVC_F_SCHED_MH_PORT (ip_vs_mh_get_port: ports[0] of TCP/UDP/SCTP)."""
    port = sport if use_port else 0
    if fallback:
        return mh_get_fallback(lookup, dests, saddr, port, key1)
    return mh_get(lookup, dests, saddr, port, key1)


# --- net/netfilter/ipvs/ip_vs_sh.c ---------------------------------------------------------

SH_TAB_BITS = 8                       # CONFIG_IP_VS_SH_TAB_BITS default (Kconfig range 4..20)
SH_TAB_SIZE = 1 << SH_TAB_BITS
SH_TAB_MASK = SH_TAB_SIZE - 1


def sh_hashkey(addr: int, port: int, offset: int) -> int:
    """ip_vs_sh_hashkey: (offset + hash_32(ntohs(port) + ntohl(addr_fold), IP_VS_SH_TAB_BITS))
    & IP_VS_SH_TAB_MASK; the sum handed to hash_32 is a u32 (wraps)."""
    return (offset + hash_32((port + addr) & U32, SH_TAB_BITS)) & SH_TAB_MASK


def sh_is_unavailable(d: Dest) -> bool:
    """ip_vs_sh.c is_unavailable: weight <= 0 || flags & IP_VS_DEST_F_OVERLOAD."""
    return d.weight <= 0 or d.overload


def sh_reassign(dests) -> list:
    """ip_vs_sh_reassign: bucket i gets the current destination; "Don't move to next dest
    until filling weight": if (++d_count >= weight) next one (wrapping to the first), so a
    weight 0 or 1 destination takes one bucket, weight w takes w in a row."""
    buckets = [None] * SH_TAB_SIZE
    if not dests:
        return buckets
    p = 0
    d_count = 0
    for i in range(SH_TAB_SIZE):
        buckets[i] = p
        d_count += 1
        if d_count >= dests[p].weight:
            p = (p + 1) % len(dests)
            d_count = 0
    return buckets


def sh_get(buckets, dests, addr: int, port: int):
    """ip_vs_sh_get: the bucket at hashkey(addr, port, 0); NULL if unavailable."""
    i = buckets[sh_hashkey(addr, port, 0)]
    return None if i is None or sh_is_unavailable(dests[i]) else i


def sh_get_fallback(buckets, dests, addr: int, port: int):
    """ip_vs_sh_get_fallback: ihash = hashkey(addr, port, 0); if unavailable, for offset
    0..255: roffset = (offset + ihash) % IP_VS_SH_TAB_SIZE, bucket hashkey(addr, port,
    roffset) = (roffset + ihash) & mask; stop at NULL, return the first available."""
    ihash = sh_hashkey(addr, port, 0)
    i = buckets[ihash]
    if i is None:
        return None
    if not sh_is_unavailable(dests[i]):
        return i
    for offset in range(SH_TAB_SIZE):
        roffset = (offset + ihash) % SH_TAB_SIZE
        i = buckets[sh_hashkey(addr, port, roffset)]
        if i is None:
            break
        if not sh_is_unavailable(dests[i]):
            return i
    return None


def sh_fallback_probes(addr: int, port: int) -> list:
    """The buckets ip_vs_sh_get_fallback looks at after the first, in order."""
    ihash = sh_hashkey(addr, port, 0)
    return [sh_hashkey(addr, port, (offset + ihash) % SH_TAB_SIZE) for offset in range(SH_TAB_SIZE)]


def sh_schedule(buckets, dests, saddr: int, sport: int, fallback: bool, use_port: bool):
    """ip_vs_sh_schedule: the source address; the source port only under
    IP_VS_SVC_F_SCHED_SH_PORT (ip_vs_sh_get_port: ports[0]); _get_fallback under
    IP_VS_SVC_F_SCHED_SH_FALLBACK."""
    port = sport if use_port else 0
    if fallback:
        return sh_get_fallback(buckets, dests, saddr, port)
    return sh_get(buckets, dests, saddr, port)


# --- net/netfilter/ipvs/ip_vs_dh.c ---------------------------------------------------------

DH_TAB_BITS = 8                       # CONFIG_IP_VS_DH_TAB_BITS default
DH_TAB_SIZE = 1 << DH_TAB_BITS


def dh_hashkey(addr: int) -> int:
    """ip_vs_dh_hashkey: hash_32(ntohl(addr_fold), IP_VS_DH_TAB_BITS)."""
    return hash_32(addr, DH_TAB_BITS)


def dh_reassign(dests) -> list:
    """ip_vs_dh_reassign: bucket i gets the next destination in list order (wrapping): no
    weights."""
    if not dests:
        return [None] * DH_TAB_SIZE
    return [i % len(dests) for i in range(DH_TAB_SIZE)]


def dh_schedule(buckets, dests, daddr: int):
    """ip_vs_dh_schedule: the bucket of the packet's destination address; NULL unless the
    destination there is IP_VS_DEST_F_AVAILABLE, has weight > 0 and is not OVERLOADed."""
    i = buckets[dh_hashkey(daddr)]
    if i is None:
        return None
    d = dests[i]
    if not d.available or d.weight <= 0 or d.overload:
        return None
    return i


# --- net/netfilter/ipvs/ip_vs_lblc.c, ip_vs_lblcr.c ----------------------------------------

LBLC_TAB_BITS = 10                    # CONFIG_IP_VS_LBLC_TAB_BITS / _LBLCR_ default
LBLC_TAB_SIZE = 1 << LBLC_TAB_BITS
LBLC_TAB_MASK = LBLC_TAB_SIZE - 1
LBLC_MAX_SIZE = LBLC_TAB_SIZE * 16    # tbl->max_size
ENTRY_TIMEOUT = 6 * 60                # seconds (6*60*HZ)


def lblc_hashkey(addr: int) -> int:
    """ip_vs_lblc_hashkey / ip_vs_lblcr_hashkey: hash_32(ntohl(addr_fold), 10)."""
    return hash_32(addr, LBLC_TAB_BITS)


def conn_overhead(d: Dest) -> int:
    """include/net/ip_vs.h ip_vs_dest_conn_overhead: (activeconns << 8) + inactconns."""
    return (d.active << 8) + d.inactive


def lblc_least(dests):
    """__ip_vs_lblc_schedule (and __ip_vs_lblcr_schedule, the same text): the first
    destination without OVERLOAD with weight > 0, then every later one without OVERLOAD with
    loh * weight > doh * least->weight (strictly: the earlier wins ties). Index or None."""
    least = None
    for i, d in enumerate(dests):
        if d.overload:
            continue
        if d.weight > 0:
            least, loh = i, conn_overhead(d)
            break
    if least is None:
        return None
    for i in range(least + 1, len(dests)):
        d = dests[i]
        if d.overload:
            continue
        doh = conn_overhead(d)
        if loh * d.weight > doh * dests[least].weight:
            least, loh = i, doh
    return least


def lblc_is_overloaded(d: Dest, dests) -> bool:
    """lblc/lblcr is_overloaded: activeconns > weight while some destination of the service
    has activeconns * 2 < weight."""
    if d.active > d.weight:
        for o in dests:
            if o.active * 2 < o.weight:
                return True
    return False


def lblc_schedule(cache: dict, dests, daddr: int, all_dests=None):
    """ip_vs_lblc_schedule; `cache` maps daddr -> Dest (the entry's en->dest), `dests` the
    service's destinations now. An entry is used if its dest is IP_VS_DEST_F_AVAILABLE, has
    weight > 0 and is not is_overloaded(); else the wlc pick, and ip_vs_lblc_new replaces the
    entry (or keeps it when it names the same dest). No size limit on new entries: max_size
    only drives ip_vs_lblc_check_expire. Returns the chosen Dest or None."""
    en = cache.get(daddr)
    if en is not None:
        if en.available and en.weight > 0 and not lblc_is_overloaded(en, dests):
            return en
    i = lblc_least(dests)
    if i is None:
        return None
    cache[daddr] = dests[i]
    return dests[i]


class DestSet:
    """struct ip_vs_dest_set: members newest first (list_add_rcu adds at the head)."""

    def __init__(self):
        self.members = []
        self.lastmod = 0.0

    def insert(self, d: Dest, now: float, check: bool) -> None:
        """ip_vs_dest_set_insert: with `check`, nothing if already a member; lastmod = now."""
        if check and any(e is d for e in self.members):
            return
        self.members.insert(0, d)
        self.lastmod = now

    def erase(self, d: Dest, now: float) -> None:
        """ip_vs_dest_set_erase."""
        for k, e in enumerate(self.members):
            if e is d:
                del self.members[k]
                self.lastmod = now
                break

    def min(self):
        """ip_vs_dest_set_min: the first member without OVERLOAD with weight > 0 and
        AVAILABLE; then later members without OVERLOAD, AVAILABLE, loh * w > doh * lw."""
        it = iter(self.members)
        least = None
        for d in it:
            if d.overload:
                continue
            if d.weight > 0 and d.available:
                least, loh = d, conn_overhead(d)
                break
        if least is None:
            return None
        for d in it:
            if d.overload:
                continue
            doh = conn_overhead(d)
            if loh * d.weight > doh * least.weight and d.available:
                least, loh = d, doh
        return least

    def max(self):
        """ip_vs_dest_set_max: the first member with weight > 0; then later ones with
        moh * w < doh * mw and weight > 0."""
        it = iter(self.members)
        most = None
        for d in it:
            if d.weight > 0:
                most, moh = d, conn_overhead(d)
                break
        if most is None:
            return None
        for d in it:
            doh = conn_overhead(d)
            if moh * d.weight < doh * most.weight and d.weight > 0:
                most, moh = d, doh
        return most


def lblcr_schedule(cache: dict, dests, daddr: int, now: float, expiration: float):
    """ip_vs_lblcr_schedule; `cache` maps daddr -> DestSet. With an entry: dest = set min;
    if the set has > 1 member and time_after(now, lastmod + expiration), erase the set max;
    use dest unless NULL or is_overloaded; else the wlc pick, inserted (checked) into the
    set. Without an entry: the wlc pick and a new entry (ip_vs_lblcr_new, no size limit)."""
    en = cache.get(daddr)
    if en is not None:
        dest = en.min()
        if len(en.members) > 1 and now > en.lastmod + expiration:
            m = en.max()
            if m is not None:
                en.erase(m, now)
        if dest is not None and not lblc_is_overloaded(dest, dests):
            return dest
        i = lblc_least(dests)
        if i is None:
            return None
        en.insert(dests[i], now, True)
        return dests[i]
    i = lblc_least(dests)
    if i is None:
        return None
    en = cache[daddr] = DestSet()
    en.insert(dests[i], now, False)
    return dests[i]


def lblc_shed(lastuse: dict, rover: int, now: float, max_size: int = LBLC_MAX_SIZE):
    """The over-full branch of ip_vs_lblc_check_expire / ip_vs_lblcr_check_expire (entries >
    max_size, counter not a multiple of 30): goal = min((entries - max_size) * 4 / 3,
    max_size / 2); for i = 0 .. TAB_SIZE-1: j = (j + 1) & mask, drop every entry of bucket j
    with !time_before(now, lastuse + ENTRY_TIMEOUT), goal-- each; stop after a bucket once
    goal <= 0; rover = j. `lastuse` maps daddr -> last use time; returns (dropped, rover)."""
    goal = (len(lastuse) - max_size) * 4 // 3
    if goal > max_size // 2:
        goal = max_size // 2
    buckets = [[] for _ in range(LBLC_TAB_SIZE)]
    for addr in lastuse:
        buckets[lblc_hashkey(addr)].append(addr)
    dropped = set()
    j = rover
    for _ in range(LBLC_TAB_SIZE):
        j = (j + 1) & LBLC_TAB_MASK
        for addr in buckets[j]:
            if now < lastuse[addr] + ENTRY_TIMEOUT:     # time_before: keep
                continue
            dropped.add(addr)
            goal -= 1
        if goal <= 0:
            break
    return dropped, j
