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

cdef inline uint32_t hsiphash_u32(uint64_t key, uint32_t value) noexcept nogil:
    # lib/siphash.c hsiphash_1u32() on a 64-bit kernel: SipHash-1-3 keyed (key, key) over the 4
    # bytes of `value` (little-endian, so the message word is (4 << 56) | value), truncated to 32
    # bits. The SipHash of the connection tables (keyed_hash.pxi siphash) computes exactly that.
    cdef uint8_t b[4]
    cdef int k
    for k in range(4):
        b[k] = (value >> (8 * k)) & 0xFF
    return <uint32_t>siphash(key, key, b, 4, 1, 3)

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
