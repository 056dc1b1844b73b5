# The decapsulator's per-packet work in C (lb.realserver.decap.decapsulate() is the reference, and
# tests/unit/test_decap_core.py holds the two to the same verdicts), and userspace GRO: in-order
# TCP segments of one flow become one TSO super-frame for a TUN device opened with IFF_VNET_HDR,
# so the real server's TCP stack takes one skb per aggregate instead of one per segment.
# The merge rules are those of the kernel's inet_gro_receive() and tcp_gro_receive().

DEF MAX_SEGS = 64                 # segments in one aggregate (the kernel's GRO keeps at most 64 too)
DEF VNET_HDR_LEN = 10             # struct virtio_net_hdr, tun's default vnet_hdr_sz
DEF VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
DEF VIRTIO_NET_HDR_GSO_TCPV4 = 1
DEF TCP_FLAG_ACK = 0x10
DEF TCP_FLAG_PSH = 0x08

cdef enum:                      # the order of lb.realserver.decap.REASONS, then write_failed
    D_NOT_IPIP, D_TRUNCATED, D_BAD_OUTER, D_BAD_INNER, D_NOT_A_VIP, D_FORWARDED, D_WRITE_FAILED, D_NREASONS


cdef inline int ip_header(const uint8_t* p, uint32_t n, int bad, uint32_t* ihl, uint32_t* total) noexcept nogil:
    # decap.py _header(): -1 when the IPv4 header is sound (ihl, total set), else the reason.
    if n < 20:
        return D_TRUNCATED
    if p[0] >> 4 != 4 or (p[0] & 0x0F) < 5:
        return bad
    ihl[0] = (p[0] & 0x0F) * 4
    if n < ihl[0]:
        return D_TRUNCATED
    total[0] = ld16(p + 2)
    if total[0] < ihl[0]:
        return bad
    if total[0] > n:
        return D_TRUNCATED
    if not ip_csum_ok(p, ihl[0]):
        return bad
    return -1


cdef inline int decap_check(const uint8_t* p, uint32_t n, const uint32_t* vips, int nvips,
                            uint32_t* off, uint32_t* length) noexcept nogil:
    # decapsulate(): the reason, and for D_FORWARDED where the inner packet is (cut to its length).
    cdef uint32_t ihl, total, iihl, itotal, dst
    cdef int why = ip_header(p, n, D_BAD_OUTER, &ihl, &total)
    if why >= 0:
        return why
    if p[9] != 4:
        return D_NOT_IPIP
    if ld16(p + 6) & 0x3FFF:            # an outer fragment: a raw socket gets reassembled packets
        return D_BAD_OUTER
    why = ip_header(p + ihl, total - ihl, D_BAD_INNER, &iihl, &itotal)
    if why >= 0:
        return why
    dst = ld32(p + ihl + 16)
    for i in range(nvips):
        if vips[i] == dst:
            off[0], length[0] = ihl, itotal
            return D_FORWARDED
    return D_NOT_A_VIP


cdef struct Gro:
    # The aggregate being built: a copy of its first segment's headers (vnet header in front),
    # then its segments' payloads, pointed at where they were received (valid until the batch ends).
    uint8_t head[VNET_HDR_LEN + 60 + 60]
    uint32_t hlen                 # IP + TCP header bytes in head (after the vnet header)
    uint32_t mss                  # payload of the first segment: gso_size
    uint32_t payload              # bytes of payload so far
    uint32_t next_seq
    uint16_t next_id
    int nseg                      # 0: nothing pending
    bint ended                    # a short or PSH segment came: nothing more joins
    iovec iov[MAX_SEGS + 1]


cdef inline uint32_t tcp_payload_ok(const uint8_t* ip, uint32_t n) noexcept nogil:
    # A segment GRO may merge: TCP in an option-less, unfragmented IPv4 header, flags ACK or
    # ACK|PSH only, a payload, a right checksum (tcp4_gro_receive validates it: the aggregate
    # goes up with CHECKSUM_PARTIAL, which the stack does not check again). Its TCP header
    # length, or 0.
    if ip[0] != 0x45 or ip[9] != 6 or ld16(ip + 6) & 0x3FFF or n < 40:
        return 0
    cdef uint32_t thl = (ip[32] >> 4) * 4
    if thl < 20 or 20 + thl >= n or (ip[33] & ~TCP_FLAG_PSH) != TCP_FLAG_ACK:
        return 0
    if not l4_csum_ok(ip + 20, n - 20, ld32(ip + 12), ld32(ip + 16), 6):
        return 0
    return thl


cdef inline uint32_t tcp_partial(const uint8_t* ip, uint32_t n) noexcept nogil:
    # A TCP packet whose checksum is still to be computed (CHECKSUM_PARTIAL): its checksum field
    # holds the pseudo-header sum, as tcp_v4_send_check() leaves it, and the full sum is wrong.
    # A director's IPIP aggregate comes so when a veth hands it over whole (lbd sends TUN
    # aggregates as GSO frames, lb/director/tun_encap.py): the raw socket cannot say so. Its
    # IP header length (csum_start for the TUN device's NEEDS_CSUM), or 0.
    cdef uint32_t ihl = (ip[0] & 0x0F) * 4
    if ip[9] != 6 or n < ihl + 20:
        return 0
    if ld16(ip + ihl + 16) != <uint16_t>csum_fold(pseudo_sum(ld32(ip + 12), ld32(ip + 16), 6, n - ihl)):
        return 0
    return 0 if l4_csum_ok(ip + ihl, n - ihl, ld32(ip + 12), ld32(ip + 16), 6) else ihl


cdef inline bint gro_joins(Gro* g, const uint8_t* ip, uint32_t n, uint32_t thl) noexcept nogil:
    # inet_gro_receive(): same addresses, TOS, TTL, DF and an IP ID that follows (or a fixed ID
    # with DF); tcp_gro_receive(): same ports, ack, header length, flags word (but PSH) and
    # options, the expected sequence number, no more than gso_size, room under 64 KB.
    cdef const uint8_t* h = g.head + VNET_HDR_LEN
    cdef uint16_t ipid = ld16(ip + 4)
    if g.nseg == 0 or g.ended or g.nseg >= MAX_SEGS or 20 + thl != g.hlen:
        return False
    if memcmp(h + 12, ip + 12, 8) or h[1] != ip[1] or h[8] != ip[8] or h[6] != ip[6]:
        return False
    if ipid != g.next_id and not (ip[6] & 0x40 and ipid == ld16(h + 4)):
        return False
    if memcmp(h + 20, ip + 20, 4) or memcmp(h + 28, ip + 28, 4):      # ports; ack
        return False
    if h[32] != ip[32] or (h[33] ^ ip[33]) & ~TCP_FLAG_PSH or memcmp(h + 34, ip + 34, 2):
        return False
    if thl > 20 and memcmp(h + 40, ip + 40, thl - 20):
        return False
    cdef uint32_t plen = n - 20 - thl
    return (ld32(ip + 24) == g.next_seq and plen <= g.mss
            and g.hlen + g.payload + plen <= 65535)


cdef inline void gro_start(Gro* g, const uint8_t* ip, uint32_t n, uint32_t thl) noexcept nogil:
    g.hlen = 20 + thl
    memcpy(g.head + VNET_HDR_LEN, ip, g.hlen)
    g.mss = g.payload = 0
    g.nseg = 0
    g.ended = False
    g.next_seq = ld32(ip + 24)
    g.next_id = ld16(ip + 4)
    gro_append(g, ip, n)


cdef inline void gro_append(Gro* g, const uint8_t* ip, uint32_t n) noexcept nogil:
    cdef uint32_t plen = n - g.hlen
    if g.nseg == 0:
        g.mss = plen
    elif plen < g.mss:
        g.ended = True
    if ip[33] & TCP_FLAG_PSH:
        g.head[VNET_HDR_LEN + 33] |= TCP_FLAG_PSH
        g.ended = True
    g.nseg += 1
    g.iov[g.nseg].iov_base = <void*>(ip + g.hlen)
    g.iov[g.nseg].iov_len = plen
    g.payload += plen
    g.next_seq += plen
    g.next_id = <uint16_t>(g.next_id + 1)


cdef inline int gro_seal(Gro* g) noexcept nogil:
    # Writes the vnet header and fixes up the copied headers; returns the iovec count.
    # One segment goes as it came (its checksum is complete); several as a TSO frame: the IP
    # length and checksum of the whole, the TCP checksum field holding the pseudo-header sum
    # only (CHECKSUM_PARTIAL, what tcp4_gro_complete() leaves), gso_size the first payload.
    cdef uint8_t* v = g.head
    cdef uint8_t* ip = g.head + VNET_HDR_LEN
    cdef uint32_t total = g.hlen + g.payload
    memset(v, 0, VNET_HDR_LEN)
    if g.nseg > 1:
        v[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM
        v[1] = VIRTIO_NET_HDR_GSO_TCPV4
        st16le(v + 2, <uint16_t>g.hlen)                 # hdr_len
        st16le(v + 4, <uint16_t>g.mss)                  # gso_size
        st16le(v + 6, 20)                               # csum_start: the TCP header
        st16le(v + 8, 16)                               # csum_offset: tcphdr.check
        st16(ip + 2, <uint16_t>total)
        st16(ip + 10, 0)
        st16(ip + 10, <uint16_t>~csum_fold(csum_add(0, ip, 20)))
        st16(ip + 36, <uint16_t>csum_fold(pseudo_sum(ld32(ip + 12), ld32(ip + 16), 6, total - 20)))
    g.iov[0].iov_base = g.head
    g.iov[0].iov_len = VNET_HDR_LEN + g.hlen
    return g.nseg + 1
