# NAT (ipvsadm -m): in, the destination VIP:vport becomes RIP:rport; out, the source RIP:rport
# becomes VIP:vport (TTL - 1 in forward(), core.pxi), checksums updated incrementally (RFC 1624).

cdef enum:
    CSUM_DONE = 0           # a complete checksum: updated incrementally (RFC 1624)
    CSUM_TO_FILL = 1        # partial, and leaving without a virtio_net_hdr: computed in full
    CSUM_KEEP_PARTIAL = 2   # partial, and leaving with one: the pseudo-header part only

cdef inline int csum_mode(Frame* fr) noexcept nogil:
    return CSUM_KEEP_PARTIAL if fr.keep_partial else (CSUM_TO_FILL if fr.partial else CSUM_DONE)

cdef inline void nat_rewrite(uint8_t* ip, uint8_t* l4, uint8_t proto, int partial,
                             int addr_off, uint32_t new_addr, int port_off, uint16_t new_port,
                             uint32_t l4len) noexcept nogil:
    # Replace one address and one port; `partial` is a csum_mode().
    cdef uint32_t csum_off = 16 if proto == 6 else 6
    cdef uint32_t old_addr = ld32(ip + addr_off)
    cdef uint16_t old_port = ld16(l4 + port_off)
    st32(ip + addr_off, new_addr)
    st16(l4 + port_off, new_port)
    csum_replace4(ip + 10, old_addr, new_addr)
    if partial == CSUM_KEEP_PARTIAL:
        psum_replace4(l4 + csum_off, old_addr, new_addr)
    elif partial == CSUM_TO_FILL:
        l4_csum_full(l4, l4len, ld32(ip + 12), ld32(ip + 16), proto, csum_off)
    else:
        l4_csum_replace4(l4 + csum_off, proto, old_addr, new_addr)
        l4_csum_replace2(l4 + csum_off, proto, old_port, new_port)

cdef int xmit_nat(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # The kernel's ip_vs_nat_xmit() (in) and handle_response() (out): MTU and counters are
    # forward()'s (core.pxi).
    if fr.direction == DIR_IN:
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 16, c.daddr, 2, c.dport, fr.l4len)
    else:
        nat_rewrite(fr.ip, fr.l4, fr.proto, csum_mode(fr), 12, c.vaddr, 0, c.vport, fr.l4len)
    set_l2(fp, fr.f, nb)
    return V_FORWARD
