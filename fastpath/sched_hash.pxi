# The hashing schedulers: sh and dh (ip_vs_sh.c, ip_vs_dh.c: 256 buckets, hash_32) and mh
# (ip_vs_mh.c: a Maglev table of M = 4093 entries, hsiphash with the kernel's fixed keys). Their
# Python classes (lb/schedulers/sh.py, dh.py, mh.py) build the tables; this file hashes exactly
# as they do and reads them.

cdef enum:
    HASH_BITS = 8
    HASH_SIZE = 1 << HASH_BITS
    MH_M = 4093

cdef inline uint32_t hash_32(uint32_t value, int bits) noexcept nogil:
    # include/linux/hash.h: multiply by GOLDEN_RATIO_32, keep the top `bits` bits.
    return (value * <uint32_t>0x61C88647) >> (32 - bits)

cdef int pick_sh(FP* fp, Sched* s, Pending* p) noexcept nogil:
    cdef uint32_t port = p.cport if s.flags & SF_PORT else 0
    cdef uint32_t ihash = hash_32(p.caddr + port, HASH_BITS)
    cdef int i = s.table[ihash], offset
    if i < 0 or sched_available(fp, s, i):
        return i
    if not s.flags & SF_FALLBACK:
        return -1
    # ip_vs_sh_get_fallback: roffset = (offset + ihash) % 256, bucket (roffset + ihash) & 255.
    for offset in range(HASH_SIZE):
        i = s.table[(((<uint32_t>offset + ihash) & (HASH_SIZE - 1)) + ihash) & (HASH_SIZE - 1)]
        if i >= 0 and sched_available(fp, s, i):
            return i
    return -1

cdef int pick_dh(FP* fp, Sched* s, Pending* p) noexcept nogil:
    cdef int i = s.table[hash_32(p.vaddr, HASH_BITS)]
    return i if i >= 0 and sched_available(fp, s, i) else -1

cdef inline uint64_t rotl64(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))

cdef inline void sipround(uint64_t* v) noexcept nogil:
    v[0] += v[1]; v[1] = rotl64(v[1], 13) ^ v[0]; v[0] = rotl64(v[0], 32)
    v[2] += v[3]; v[3] = rotl64(v[3], 16) ^ v[2]
    v[0] += v[3]; v[3] = rotl64(v[3], 21) ^ v[0]
    v[2] += v[1]; v[1] = rotl64(v[1], 17) ^ v[2]; v[2] = rotl64(v[2], 32)

cdef inline uint32_t hsiphash_u32(uint64_t key, uint32_t value) noexcept nogil:
    # lib/siphash.c hsiphash_1u32() on a 64-bit kernel: SipHash-1-3 keyed (key, key), one
    # compression round over the 4 bytes (length in the top byte), three finalization rounds,
    # truncated to 32 bits.
    cdef uint64_t v[4]
    cdef uint64_t b = (<uint64_t>4 << 56) | value
    v[0] = 0x736F6D6570736575ULL ^ key
    v[1] = 0x646F72616E646F6DULL ^ key
    v[2] = 0x6C7967656E657261ULL ^ key
    v[3] = 0x7465646279746573ULL ^ key ^ b
    sipround(v)
    v[0] ^= b
    v[2] ^= 0xFF
    sipround(v)
    sipround(v)
    sipround(v)
    return <uint32_t>(v[0] ^ v[1] ^ v[2] ^ v[3])

cdef inline int mh_bucket(uint64_t value) noexcept nogil:
    # ip_vs_mh_hashkey() % M, with generate_hash_secret()'s first fixed key.
    return hsiphash_u32(2654435761ULL, <uint32_t>value) % MH_M

cdef int pick_mh(FP* fp, Sched* s, Pending* p) noexcept nogil:
    cdef uint64_t key = <uint64_t>p.caddr + (p.cport if s.flags & SF_PORT else 0)
    cdef int ihash = mh_bucket(key), i = s.table[ihash], offset
    if i < 0 or sched_available(fp, s, i):
        return i
    if not s.flags & SF_FALLBACK:
        return -1
    # ip_vs_mh_get_fallback: rehash with (offset + ihash) % M added, for offset 0..M-1.
    for offset in range(MH_M):
        i = s.table[mh_bucket(key + <uint64_t>((offset + ihash) % MH_M))]
        if i >= 0 and sched_available(fp, s, i):
            return i
    return -1
