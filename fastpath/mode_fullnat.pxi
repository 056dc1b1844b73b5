# FULLNAT (DPVS -b, "FullNat"): in, CIP:cport -> VIP:vport becomes LIP:lport -> RIP:rport; out, the
# reverse. ENAT (Alibaba's "triangle"): in, CIP:cport -> VIP:vport becomes VIP:lport -> RIP:rport
# and the real server's agent sends the replies straight to the client. In both the real server
# learns the client from TOA: kind 254, length 8, client port then client IPv4, put right after
# the fixed TCP header of the SYN (and/or the first ACK), data offset += 2, total length += 8.

cdef enum:
    TOA_KIND = 254
    TOA_LEN = 8
    TOA_ON_SYN = 1
    TOA_ON_ACK = 2

cdef inline bint wants_toa(FP* fp, Conn* c, Frame* fr) noexcept nogil:
    cdef uint8_t flags = fr.l4[13]
    if fr.proto != 6:
        return False
    if (flags & 0x12) == 0x02:                            # SYN
        return (fp.toa_mode & TOA_ON_SYN) != 0
    # the first ACK: the one that completes the handshake (the connection is still SYN_RECV)
    return ((fp.toa_mode & TOA_ON_ACK) != 0 and (flags & 0x17) == 0x10
            and c.state == S_SYN_RECV)

cdef void toa_insert(FP* fp, Conn* c, Frame* fr, uint32_t mtu) noexcept nogil:
    # The frame grows at the front: Ethernet, IP and the fixed TCP header move 8 bytes into the
    # headroom, TOA goes in the gap, the TCP options stay where they are.
    cdef uint32_t ihl = (fr.ip[0] & 0x0F) * 4, thl = (fr.l4[12] >> 4) * 4
    if thl + TOA_LEN > 60 or fr.seg + TOA_LEN > mtu:
        fp.reasons[R_TOA_NO_ROOM] += 1
        return
    cdef uint8_t* base = fr.f + fr.out_off
    memmove(base - TOA_LEN, base, 14 + ihl + 20)
    base -= TOA_LEN
    cdef uint8_t* ip = base + 14
    cdef uint8_t* l4 = ip + ihl
    cdef uint8_t* opt = l4 + 20
    opt[0] = TOA_KIND
    opt[1] = TOA_LEN
    st16(opt + 2, c.cport)
    st32(opt + 4, c.caddr)
    l4[12] = <uint8_t>((((thl + TOA_LEN) // 4) << 4) | (l4[12] & 0x0F))
    fr.tot += TOA_LEN
    st16(ip + 2, <uint16_t>fr.tot)
    st16(ip + 10, 0)
    st16(ip + 10, <uint16_t>~csum_fold(csum_add(0, ip, ihl)))
    if fr.keep_partial:     # only the pseudo-header's length is in a partial sum
        psum_replace2(l4 + 16, <uint16_t>(fr.tot - TOA_LEN - ihl), <uint16_t>(fr.tot - ihl))
    else:                   # in full: the header length, the pseudo-header length, 8 bytes
        l4_csum_full(l4, fr.tot - ihl, ld32(ip + 12), ld32(ip + 16), 6, 16)
    fr.out_off -= TOA_LEN
    fr.out_len = 14 + fr.tot
    fr.ip = ip
    fr.l4 = l4

cdef int xmit_fullnat(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # FULLNAT both ways, ENAT in (forward() in core.pxi passes ENAT replies on, and does the
    # MTU check and the counters).
    cdef bint toa = fr.direction == DIR_IN and wants_toa(fp, c, fr)
    if fr.direction == DIR_IN:
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 16, c.daddr, 2, c.dport, fr.l4len)
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 12, c.laddr, 0, c.lport, fr.l4len)
        if toa:
            toa_insert(fp, c, fr, fp.ifaces[nb.ifslot].mtu)
        elif wants_uoa(fp, c, fr):          # ENAT UDP: the client in an IP option (uoa.pxi)
            uoa_insert(fp, c, fr, fp.ifaces[nb.ifslot].mtu)
    else:
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 12, c.vaddr, 0, c.vport, fr.l4len)
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 16, c.caddr, 2, c.cport, fr.l4len)
    set_l2(fp, fr.f + fr.out_off, nb)
    return V_FORWARD
