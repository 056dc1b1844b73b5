# UOA, "UDP Option of Address" (DPVS, kmod/uoa): how an ENAT real server learns the client of a
# UDP flow, which has no header option of its own to carry TOA in. An IPv4 option (RFC 791
# layout) right after the fixed IP header, DPVS's IPv4 form:
#     type 31 (copy flag clear, class 0 "control", number 31: not an IANA option),
#     length 8, the client's port (2 bytes), the client's IPv4 address (4 bytes), network order.
# A Linux server's stack skips an option it does not know on receive (ip_options_compile():
# its default case is an error only for options a local socket sets without CAP_NET_RAW), so
# the datagram reaches the socket as usual; the ENAT agent reads the option off its packet
# socket (lb/realserver/enat_agent.py). The UDP checksum covers no IP option (its pseudo-header
# is the addresses, the protocol and the UDP length: RFC 768), so a full checksum and a
# partial one (vnet NEEDS_CSUM: only csum_start moves, vnet_for_tx() takes it from fr.l4)
# stay as they are; the IP header checksum is made again.
#
# Which packets: the first UOA_TRAIL datagrams the director sends toward the server on each
# connection (DPVS's UOA_DEF_MAX_TRAIL is 3 too). One would do on a lossless path; a few
# survive the loss or reordering of the first, and cost 8 bytes on those only. The agent's
# entry then lives on the server's replies. A datagram that has no room (the IP header would
# pass 60 bytes, or the frame the egress MTU) goes without, counted uoa_no_room; it still
# counts as one of the UOA_TRAIL (so a flow of full-size datagrams costs a bounded count).

cdef enum:
    UOA_TYPE = 31
    UOA_LEN = 8
    UOA_TRAIL = 3

cdef inline bint wants_uoa(FP* fp, Conn* c, Frame* fr) noexcept nogil:
    return fr.proto == 17 and c.fwd == FWD_ENAT and c.uoa_sent < fp.uoa_trail

cdef void uoa_insert(FP* fp, Conn* c, Frame* fr, uint32_t mtu) noexcept nogil:
    # The frame grows at the front: Ethernet and the fixed IP header move 8 bytes into the
    # headroom, the option goes in the gap; options the packet had follow it, the UDP header
    # and payload stay where they are.
    cdef uint32_t ihl = (fr.ip[0] & 0x0F) * 4
    c.uoa_sent += 1
    if ihl + UOA_LEN > 60 or fr.seg + UOA_LEN > mtu:
        fp.reasons[R_UOA_NO_ROOM] += 1
        return
    cdef uint8_t* base = fr.f + fr.out_off
    memmove(base - UOA_LEN, base, 14 + 20)
    base -= UOA_LEN
    cdef uint8_t* ip = base + 14
    cdef uint8_t* opt = ip + 20
    opt[0] = UOA_TYPE
    opt[1] = UOA_LEN
    st16(opt + 2, c.cport)
    st32(opt + 4, c.caddr)
    ip[0] = <uint8_t>(0x40 | ((ihl + UOA_LEN) // 4))
    fr.tot += UOA_LEN
    st16(ip + 2, <uint16_t>fr.tot)
    st16(ip + 10, 0)
    st16(ip + 10, <uint16_t>~csum_fold(csum_add(0, ip, ihl + UOA_LEN)))
    fr.out_off -= UOA_LEN
    fr.out_len = 14 + fr.tot
    fr.ip = ip
