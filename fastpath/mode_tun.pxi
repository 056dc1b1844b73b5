# TUN (ipvsadm -i, "Tunnel"): wrap the packet in an outer IPv4 header DIP -> RIP, protocol 4
# (IPIP), TOS, DF and TTL copied from the inner header (whose TTL forward() has decremented, as
# the kernel's decrement_ttl() does before ip_vs_tunnel_xmit() wraps it). A packet that no longer
# fits the egress MTU with DF set gets ICMP "fragmentation needed" (type 3 code 4, next-hop MTU =
# MTU - 20) back to the client instead: forward() (core.pxi) makes the MTU check for every mode
# and icmp_error() (icmp.pxi) builds the error.

cdef enum:
    IPIP_OVERHEAD = 20

cdef inline void ip_header(FP* fp, uint8_t* h, uint8_t tos, uint32_t tot, uint16_t frag,
                           uint8_t ttl, uint8_t proto, uint32_t saddr, uint32_t daddr) noexcept nogil:
    h[0] = 0x45
    h[1] = tos
    st16(h + 2, <uint16_t>tot)
    st16(h + 4, fp.ip_id)
    fp.ip_id += 1
    st16(h + 6, frag)
    h[8] = ttl
    h[9] = proto
    st16(h + 10, 0)
    st32(h + 12, saddr)
    st32(h + 16, daddr)
    st16(h + 10, <uint16_t>~csum_fold(csum_add(0, h, 20)))

cdef int xmit_tun(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # The kernel's ip_vs_tunnel_xmit(): the frame fits (forward() in core.pxi checked the MTU
    # with IPIP_OVERHEAD, and sent ICMP "fragmentation needed" otherwise).
    cdef Iface* out = &fp.ifaces[nb.ifslot]
    cdef uint8_t* ip = fr.ip
    # virtio_net_hdr has no IPIP checksum offload: a partial inner checksum is completed now.
    if fr.partial:
        l4_csum_full(fr.l4, fr.l4len, ld32(ip + 12), ld32(ip + 16), fr.proto,
                     16 if fr.proto == 6 else 6)
        fr.keep_partial = 0
    # The Ethernet header moves 20 bytes into the headroom; the outer header takes its place.
    memmove(fr.f - IPIP_OVERHEAD, fr.f, 14)
    ip_header(fp, ip - IPIP_OVERHEAD, ip[1], fr.tot + IPIP_OVERHEAD, ld16(ip + 6) & 0x4000,
              ip[8], 4, out.addr, c.daddr)
    fr.out_off = -IPIP_OVERHEAD
    fr.out_len = 14 + IPIP_OVERHEAD + fr.tot
    set_l2(fp, fr.f - IPIP_OVERHEAD, nb)
    return V_FORWARD

cdef int xmit_tun_encap(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # A TCP aggregate for a tunnel, sent whole: the outer header put in front as xmit_tun()
    # does, the inner checksum left partial and the vnet header's GSO fields moved 20 bytes on.
    # As it stands the kernel would refuse to segment it (ipip_gso_segment() wants
    # SKB_GSO_IPXIP4, which no virtio_net_hdr can say); lbd's tc egress program sees the
    # socket's mark and declares it (bpf_skb_adjust_room with BPF_F_ADJ_ROOM_ENCAP_L3_IPV4), so
    # the NIC (tx-ipxip4-segmentation) or the kernel's GSO cuts it after the qdisc: one send
    # per aggregate instead of one per segment. The outer length is the aggregate's; GSO
    # writes each segment's, and its outer ID from this one on.
    cdef Iface* out = &fp.ifaces[nb.ifslot]
    cdef uint8_t* ip = fr.ip
    memmove(fr.f - IPIP_OVERHEAD, fr.f, 14)
    ip_header(fp, ip - IPIP_OVERHEAD, ip[1], fr.tot + IPIP_OVERHEAD, ld16(ip + 6) & 0x4000,
              ip[8], 4, out.addr, c.daddr)
    fr.out_off = -IPIP_OVERHEAD
    fr.out_len = 14 + IPIP_OVERHEAD + fr.tot
    set_l2(fp, fr.f - IPIP_OVERHEAD, nb)
    fr.keep_partial = 1
    fr.encap = 1
    return V_FORWARD

cdef uint8_t* seg_slot(FP* fp) noexcept nogil:
    # Room for one segment; in the ring loop a full store is sent first and then reused.
    if fp.nsegs == SEG_SLOTS:
        if fp.sink != NULL:
            return NULL
        tx_flush_all(fp)
        fp.nsegs = 0
    fp.nsegs += 1
    return fp.segs + <size_t>(fp.nsegs - 1) * SEG_SLOT + HEADROOM

cdef int xmit_tun_gso(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # A TCP aggregate for a tunnel: virtio_net_hdr has no IPIP GSO type, so it is cut here into
    # segments of gso_size, each a complete TCP/IPv4 packet (sequence number, IP length and ID,
    # FIN/PSH on the last, CWR on the first only, checksums in full: what tcp_gso_segment()
    # makes), each wrapped as xmit_tun() wraps one packet. All but the last are emitted; the
    # last becomes the frame forward() sends (and reads the flags of).
    cdef Iface* out = &fp.ifaces[nb.ifslot]
    cdef uint8_t* ip = fr.ip
    cdef uint8_t* l4 = fr.l4
    cdef uint32_t ihl = (ip[0] & 0x0F) * 4, thl = (l4[12] >> 4) * 4
    cdef uint32_t hdrs = ihl + thl, payload = fr.tot - hdrs, mss = fr.vh.gso_size
    cdef uint32_t nseg = (payload + mss - 1) // mss, i, off, n, seg_tot
    cdef uint32_t seq = ld32(l4 + 4), saddr = ld32(ip + 12), daddr = ld32(ip + 16)
    cdef uint16_t id0 = ld16(ip + 4)
    cdef uint8_t flags = l4[13]
    cdef uint8_t* base
    cdef uint8_t* inner
    cdef uint8_t* t
    cdef Frame segfr
    if nseg == 0 or 14 + IPIP_OVERHEAD + hdrs + mss > SEG_SLOT - HEADROOM:
        return drop(fp, R_TOO_BIG)
    for i in range(nseg):
        base = seg_slot(fp)
        if base == NULL:
            return drop(fp, R_TOO_BIG)
        off = i * mss
        n = payload - off if payload - off < mss else mss
        seg_tot = hdrs + n
        inner = base + 14 + IPIP_OVERHEAD
        memcpy(inner, ip, hdrs)
        memcpy(inner + hdrs, l4 + thl + off, n)
        st16(inner + 2, <uint16_t>seg_tot)
        st16(inner + 4, <uint16_t>(id0 + i))
        st16(inner + 10, 0)
        st16(inner + 10, <uint16_t>~csum_fold(csum_add(0, inner, ihl)))
        t = inner + ihl
        st32(t + 4, seq + off)
        t[13] = flags
        if i + 1 < nseg:
            t[13] &= ~0x09                  # FIN, PSH: the last segment's
        if i > 0:
            t[13] &= ~0x80                  # CWR: the first segment's
        l4_csum_full(t, thl + n, saddr, daddr, 6, 16)
        ip_header(fp, base + 14, ip[1], IPIP_OVERHEAD + seg_tot, ld16(ip + 6) & 0x4000,
                  ip[8], 4, out.addr, c.daddr)
        set_l2(fp, base, nb)
        st16(base + 12, 0x0800)
        memset(&segfr, 0, sizeof(Frame))
        segfr.f = base
        segfr.out_len = 14 + IPIP_OVERHEAD + seg_tot
        segfr.tx_if = nb.ifslot
        segfr.ip = inner
        segfr.l4 = t
        segfr.proto = 6
        if i + 1 < nseg:
            emit(fp, <Sink*>fp.sink, &segfr)
        else:
            segfr.direction = fr.direction
            segfr.tot = fr.tot
            fr[0] = segfr
    return V_FORWARD
