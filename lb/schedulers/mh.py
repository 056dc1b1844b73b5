# Maglev hashing (ip_vs_mh.c): a 4093-entry table; each server walks its own permutation of it
# (offset = h1 % M, skip = h2 % (M-1) + 1, from its address and port) claiming free entries,
# `weight / gcd` at a turn; a client address [+ port with mh-port] then picks entry h1 % M.
from __future__ import annotations

from math import gcd

from lb.schedulers.base import Scheduler, ipv4_int

M = 4093        # primes[CONFIG_IP_VS_MH_TAB_INDEX - 8] with the default index 12
TAB_BITS = 6    # IP_VS_MH_TAB_BITS = CONFIG_IP_VS_MH_TAB_INDEX / 2
U32, U64 = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF


def _hsiphash(key: int):
    """hsiphash() of one u32 with a fixed key, as a 64-bit kernel computes it: SipHash-1-3 with
    the 128-bit key (key, key), over the 4 bytes of the value as a little-endian CPU stores it,
    truncated to 32 bits. (32-bit kernels use HalfSipHash instead and hash differently.)"""
    # The state after the key is mixed in, and the first half-round, do not depend on the value.
    k0 = 0x736F6D6570736575 ^ key
    k1 = 0x646F72616E646F6D ^ key
    k2 = 0x6C7967656E657261 ^ key
    k3 = 0x7465646279746573 ^ key
    k0 = (k0 + k1) & U64
    k1 = (((k1 << 13) | (k1 >> 51)) & U64) ^ k0
    k0 = ((k0 << 32) | (k0 >> 32)) & U64

    def h(value: int) -> int:
        b = (4 << 56) | value                  # message length in the top byte, then the bytes
        v0, v1, v2, v3 = k0, k1, k2, k3 ^ b
        # round 1 (its first half is k0/k1 above), then v0 ^= b, v2 ^= 0xff
        v2 = (v2 + v3) & U64; v3 = (((v3 << 16) | (v3 >> 48)) & U64) ^ v2
        v0 = (v0 + v3) & U64; v3 = (((v3 << 21) | (v3 >> 43)) & U64) ^ v0
        v2 = (v2 + v1) & U64; v1 = (((v1 << 17) | (v1 >> 47)) & U64) ^ v2
        v2 = ((v2 << 32) | (v2 >> 32)) & U64
        v0 ^= b
        v2 ^= 0xFF
        for _ in range(3):                     # finalization rounds
            v0 = (v0 + v1) & U64; v1 = (((v1 << 13) | (v1 >> 51)) & U64) ^ v0
            v0 = ((v0 << 32) | (v0 >> 32)) & U64
            v2 = (v2 + v3) & U64; v3 = (((v3 << 16) | (v3 >> 48)) & U64) ^ v2
            v0 = (v0 + v3) & U64; v3 = (((v3 << 21) | (v3 >> 43)) & U64) ^ v0
            v2 = (v2 + v1) & U64; v1 = (((v1 << 17) | (v1 >> 47)) & U64) ^ v2
            v2 = ((v2 << 32) | (v2 >> 32)) & U64
        return (v0 ^ v1 ^ v2 ^ v3) & U32
    return h


# generate_hash_secret(): the same fixed keys in every kernel, hence the same tables on every
# director with the same servers.
hash1 = _hsiphash(2654435761)
hash2 = _hsiphash(2654446892)

_bucket_cache: dict[int, int] = {}  # hash1(value) % M by value: a pure function, so memoised
_CACHE_MAX = 1 << 16


def bucket(value: int) -> int:
    """ip_vs_mh_hashkey(..., &s->hash1, offset) % M for value = offset + port + address."""
    b = _bucket_cache.get(value)
    if b is None:
        if len(_bucket_cache) >= _CACHE_MAX:
            _bucket_cache.clear()
        b = _bucket_cache[value] = hash1(value) % M
    return b


def populate(dests) -> list:
    """ip_vs_mh_permutate + ip_vs_mh_populate: the lookup table for `dests` (list order).

    A server's share comes from its last non-zero weight (`last_weight`, as the kernel's), so a
    server set to weight 0 keeps its entries and is skipped at lookup; turns = (w / gcd) >> rshift,
    rshift keeping the largest under 2^6, and at least 1 for a non-zero weight.
    """
    weights = [d.weight or d.last_weight for d in dests]
    g = gcd(*weights)
    table = [None] * M
    if g < 1:
        return table
    rshift = max((max(weights) // g).bit_length() - TAB_BITS, 0)
    setup = []
    for dest, w in zip(dests, weights):
        value = (dest.port + ipv4_int(dest.addr)) & U32
        turns = ((w // g) >> rshift) or (1 if w else 0)
        setup.append([dest, hash1(value) % M, hash2(value) % (M - 1) + 1, turns])
    n = 0
    while True:
        for entry in setup:                    # each server claims `turns` entries in a row
            dest, perm, skip, turns = entry
            for _ in range(turns):
                while table[perm] is not None:
                    perm += skip
                    if perm >= M:
                        perm -= M
                table[perm] = dest
                n += 1
                if n == M:
                    return table
            entry[1] = perm


class MaglevHashing(Scheduler):
    name = "mh"

    def update_service(self, service) -> None:
        self.table = populate(service.dests)

    def schedule(self, service, flow):
        flags = service.sched_flags
        key = ipv4_int(flow.caddr) + (flow.cport if "mh-port" in flags else 0)
        ihash = bucket(key & U32)
        dest = self.table[ihash]
        if dest is None or dest.available:
            return dest
        if "mh-fallback" not in flags:
            return None
        # ip_vs_mh_get_fallback: rehash with offset (offset + ihash) % M for offset 0..M-1.
        for offset in range(M):
            dest = self.table[bucket((key + (offset + ihash) % M) & U32)]
            if dest.available:
                return dest
        return None

    def c_program(self, service) -> dict:
        return {"kind": "mh", "table": self.table}
