# The keyed hash of every table a packet can aim at (connections, templates, service keys):
# SipHash-1-3 (Aumasson and Bernstein, "SipHash: a fast short-input PRF", 2012; c = 1
# compression round, d = 3 finalization rounds, the variant CPython hashes str/bytes with),
# written here from the paper's description. The 128-bit key comes from os.urandom when the
# Forwarder is made; without it no one can compute which flows share a bucket, and because the
# key enters through the whole ARX permutation (not XORed in at the end, as the old linear seed
# was) it does not cancel out of a collision.

cdef inline uint64_t sip_rotl(uint64_t x, int b) noexcept nogil:
    return (x << b) | (x >> (64 - b))

cdef inline void sip_round(uint64_t* v) noexcept nogil:
    # SipRound (paper, section 2): add, rotate, XOR on the four 64-bit words.
    v[0] += v[1]
    v[1] = sip_rotl(v[1], 13)
    v[1] ^= v[0]
    v[0] = sip_rotl(v[0], 32)
    v[2] += v[3]
    v[3] = sip_rotl(v[3], 16)
    v[3] ^= v[2]
    v[0] += v[3]
    v[3] = sip_rotl(v[3], 21)
    v[3] ^= v[0]
    v[2] += v[1]
    v[1] = sip_rotl(v[1], 17)
    v[1] ^= v[2]
    v[2] = sip_rotl(v[2], 32)

cdef inline uint64_t ld64le(const uint8_t* p) noexcept nogil:
    cdef uint64_t m = 0
    cdef int k
    for k in range(8):
        m |= (<uint64_t>p[k]) << (8 * k)
    return m

cdef inline uint64_t siphash(uint64_t k0, uint64_t k1, const uint8_t* p, size_t n,
                             int crounds, int drounds) noexcept nogil:
    # SipHash-c-d of the n bytes at p: the message as little-endian 64-bit words, the last one
    # padded with zeros and carrying n mod 256 in its top byte.
    cdef uint64_t v[4]
    cdef uint64_t m
    cdef size_t i = 0
    cdef int r, k
    v[0] = k0 ^ 0x736f6d6570736575ULL
    v[1] = k1 ^ 0x646f72616e646f6dULL
    v[2] = k0 ^ 0x6c7967656e657261ULL
    v[3] = k1 ^ 0x7465646279746573ULL
    while i + 8 <= n:
        m = ld64le(p + i)
        v[3] ^= m
        for r in range(crounds):
            sip_round(v)
        v[0] ^= m
        i += 8
    m = (<uint64_t>(n & 0xFF)) << 56
    for k in range(<int>(n - i)):
        m |= (<uint64_t>p[i + k]) << (8 * k)
    v[3] ^= m
    for r in range(crounds):
        sip_round(v)
    v[0] ^= m
    v[2] ^= 0xFF
    for r in range(drounds):
        sip_round(v)
    return v[0] ^ v[1] ^ v[2] ^ v[3]

cdef inline uint64_t tuple_hash(uint64_t k0, uint64_t k1, uint8_t proto, uint32_t a1,
                                uint16_t p1, uint32_t a2, uint16_t p2) noexcept nogil:
    # SipHash-1-3 of the 13 bytes (a1, a2, p1, p2, proto), host-order integers little-endian:
    # one full word and a last one.
    cdef uint8_t b[13]
    cdef int k
    for k in range(4):
        b[k] = (a1 >> (8 * k)) & 0xFF
        b[4 + k] = (a2 >> (8 * k)) & 0xFF
    b[8] = p1 & 0xFF
    b[9] = p1 >> 8
    b[10] = p2 & 0xFF
    b[11] = p2 >> 8
    b[12] = proto
    return siphash(k0, k1, b, 13, 1, 3)


def siphash_bytes(bytes key, bytes data, int crounds=1, int drounds=3):
    """SipHash-c-d of `data` under the 16-byte `key` (k0, k1 little-endian), as the fast path's
    tables compute it: for tests against the paper's and CPython's known answers."""
    if len(key) != 16:
        raise ValueError("a SipHash key is 16 bytes")
    cdef const uint8_t* k = <const uint8_t*><char*>key
    return siphash(ld64le(k), ld64le(k + 8), <const uint8_t*><char*>data, len(data),
                   crounds, drounds)
