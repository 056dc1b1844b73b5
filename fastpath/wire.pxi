# Wire helpers: big-endian loads/stores and Internet checksums (RFC 1071, RFC 1624).
# All addresses and ports in the fast path's tables are host-order integers read with ld32/ld16.

cdef inline uint16_t ld16(const uint8_t* p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])

cdef inline uint32_t ld32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void st16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF

cdef inline void st32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

cdef inline uint32_t csum_fold(uint64_t s) noexcept nogil:
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return <uint32_t>s

cdef extern from *:
    """
    #include <string.h>
    /* One's-complement sum of n bytes as 16-bit big-endian words, odd tail padded with zero,
       added to s. RFC 1071 2(B): the sum does not depend on byte order, so native 32-bit words
       are added (a 64-bit accumulator cannot overflow below 2^32 words), folded, and swapped
       once on a little-endian machine: 4 bytes an add instead of 2 bytes and two shifts. */
    static inline uint64_t lb_csum_add(uint64_t s, const uint8_t *p, uint32_t n) {
        uint64_t acc = 0;
        uint32_t w;
        uint16_t h;
        for (; n >= 4; p += 4, n -= 4) { memcpy(&w, p, 4); acc += w; }
        if (n >= 2) { memcpy(&h, p, 2); acc += h; p += 2; n -= 2; }
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (n) acc += p[0];
    #else
        if (n) acc += (uint32_t)p[0] << 8;
    #endif
        while (acc >> 16) acc = (acc & 0xFFFF) + (acc >> 16);
    #if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        acc = __builtin_bswap16((uint16_t)acc);
    #endif
        return s + acc;
    }
    """
    uint64_t csum_add "lb_csum_add"(uint64_t s, const uint8_t* p, uint32_t n) nogil

cdef inline bint ip_csum_ok(const uint8_t* ip, uint32_t ihl) noexcept nogil:
    return csum_fold(csum_add(0, ip, ihl)) == 0xFFFF

cdef inline uint64_t pseudo_sum(uint32_t saddr, uint32_t daddr, uint8_t proto, uint32_t l4len) noexcept nogil:
    return ((saddr >> 16) + (saddr & 0xFFFF) + (daddr >> 16) + (daddr & 0xFFFF)
            + proto + l4len)

cdef inline bint l4_csum_ok(const uint8_t* l4, uint32_t l4len, uint32_t saddr,
                            uint32_t daddr, uint8_t proto) noexcept nogil:
    if proto == 17 and ld16(l4 + 6) == 0:
        return True                      # UDP without a checksum (RFC 768)
    return csum_fold(csum_add(pseudo_sum(saddr, daddr, proto, l4len), l4, l4len)) == 0xFFFF

cdef inline void l4_csum_full(uint8_t* l4, uint32_t l4len, uint32_t saddr, uint32_t daddr,
                              uint8_t proto, uint32_t csum_off) noexcept nogil:
    # Used for frames that arrived with a partial checksum (TP_STATUS_CSUMNOTREADY): the field
    # holds only the pseudo-header sum, so an incremental update cannot fix it.
    st16(l4 + csum_off, 0)
    cdef uint16_t c = <uint16_t>(~csum_fold(csum_add(pseudo_sum(saddr, daddr, proto, l4len), l4, l4len)))
    if proto == 17 and c == 0:
        c = 0xFFFF
    st16(l4 + csum_off, c)

cdef inline void csum_replace2(uint8_t* field, uint16_t old, uint16_t new) noexcept nogil:
    # RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')
    cdef uint64_t s = (<uint16_t>~ld16(field)) + (<uint16_t>~old) + new
    st16(field, <uint16_t>~csum_fold(s))

cdef inline void csum_replace4(uint8_t* field, uint32_t old, uint32_t new) noexcept nogil:
    cdef uint64_t s = ((<uint16_t>~ld16(field)) + (<uint16_t>~(old >> 16)) + (<uint16_t>~(old & 0xFFFF))
                       + (new >> 16) + (new & 0xFFFF))
    st16(field, <uint16_t>~csum_fold(s))

cdef inline void l4_csum_replace4(uint8_t* field, uint8_t proto, uint32_t old, uint32_t new) noexcept nogil:
    if proto == 17:
        if ld16(field) == 0:
            return                        # no UDP checksum: leave it absent
        csum_replace4(field, old, new)
        if ld16(field) == 0:
            st16(field, 0xFFFF)
    else:
        csum_replace4(field, old, new)

cdef inline void l4_csum_replace2(uint8_t* field, uint8_t proto, uint16_t old, uint16_t new) noexcept nogil:
    if proto == 17:
        if ld16(field) == 0:
            return
        csum_replace2(field, old, new)
        if ld16(field) == 0:
            st16(field, 0xFFFF)
    else:
        csum_replace2(field, old, new)

# --- partial checksums (CHECKSUM_PARTIAL, virtio_net_hdr NEEDS_CSUM) ---------------------------
# Such a field holds the folded pseudo-header sum itself, not its complement, and the receiver
# (or the NIC) sums the segment over it later. A rewrite keeps it partial by updating only what
# the pseudo-header holds, addresses and length, as IPVS's tcp_partial_csum_update() does
# (ip_vs_proto_tcp.c); ports are not in it.

cdef inline void psum_replace4(uint8_t* field, uint32_t old, uint32_t new) noexcept nogil:
    cdef uint64_t s = (ld16(field) + (<uint16_t>~(old >> 16)) + (<uint16_t>~(old & 0xFFFF))
                       + (new >> 16) + (new & 0xFFFF))
    st16(field, <uint16_t>csum_fold(s))

cdef inline void psum_replace2(uint8_t* field, uint16_t old, uint16_t new) noexcept nogil:
    st16(field, <uint16_t>csum_fold(ld16(field) + (<uint16_t>~old) + new))

# --- virtio_net_hdr: little-endian fields (the kernel's vio_le() on these machines) ------------

cdef inline uint16_t ld16le(const uint8_t* p) noexcept nogil:
    return <uint16_t>(p[0] | (p[1] << 8))

cdef inline void st16le(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v & 0xFF
    p[1] = v >> 8
