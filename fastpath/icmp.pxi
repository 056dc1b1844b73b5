# ICMP as IPVS does it. Two halves:
# - icmp_in(): an ICMP error (destination unreachable 3, source quench 4, time exceeded 11: the
#   types ip_vs_in_icmp() and ip_vs_out_icmp() in ip_vs_core.c take) whose quoted header is of a
#   connection is sent where that connection's packets go, translated as ip_vs_nat_icmp() does
#   it: the outer addresses, the quoted addresses and ports and the quote's IP checksum; the
#   quoted L4 checksum is left alone (the kernel leaves it too); the ICMP checksum in full.
#   From the client's side (the quote is what went to the client) it goes to the real server in
#   every mode -- so a router's "fragmentation needed" reaches the server that sent too much:
#   DR with the MAC rewritten, TUN inside IPIP, NAT/FULLNAT/ENAT rewritten to what the server
#   sent. From the server's side (NAT, FULLNAT; ENAT: only routers between us and the server,
#   the server's own errors its agent translates, lb/realserver/enat_agent.py) to the client.
#   An error about a TUN packet's tunnel (icmp_about_tunnel()) goes to its client.
# - icmp_error(): an ICMP error of the director's own (fragmentation needed, time exceeded) in
#   place of the packet that caused it, as icmp_send() does for ip_vs_xmit.c's
#   ensure_mtu_is_adequate() and decrement_ttl(): rate-limited by a token bucket (the kernel's
#   icmp_global_allow(): net.ipv4.icmp_msgs_per_sec 1000, icmp_msgs_burst 50).
# Only frames of protocol 1 come here: the TCP/UDP path is as it was. Never an ICMP error about
# an ICMP error (RFC 1122 3.2.2): relays that cannot go on are dropped without an answer.

cdef enum:
    ICMP_UNREACH = 3
    ICMP_QUENCH = 4
    ICMP_TIME_EXCEEDED = 11
    ICMP_FRAG_NEEDED = 4            # code of type 3
    ICMP_QUOTE_MAX = 548            # 576 - 20 - 8: as much of the packet as fits a minimal
                                    # datagram (RFC 1812 4.3.2.3)
    ICMP_ERR_ROOM = 28              # outer IP + ICMP header, put before the quoted packet
    ICMP_RATE = 1000                # errors per second, and at most ICMP_BURST at once
    ICMP_BURST = 50

cdef inline bint icmp_is_error(uint8_t t) noexcept nogil:
    return t == ICMP_UNREACH or t == ICMP_QUENCH or t == ICMP_TIME_EXCEEDED

cdef inline bint icmp_allow(FP* fp, uint64_t now) noexcept nogil:
    # A token per millisecond at 1000/s, at most ICMP_BURST kept (icmp_global_allow()).
    cdef uint64_t gained
    if now > fp.icmp_last:
        gained = now - fp.icmp_last
        fp.icmp_tokens = ICMP_BURST if gained >= ICMP_BURST else (
            fp.icmp_tokens + <uint32_t>gained if fp.icmp_tokens + gained < ICMP_BURST else ICMP_BURST)
        fp.icmp_last = now
    if fp.icmp_tokens == 0:
        return False
    fp.icmp_tokens -= 1
    return True

cdef inline int neigh_toward(FP* fp, uint32_t addr) noexcept nogil:
    # The known neighbour on the route to addr (no entry is made), or -1.
    cdef uint32_t nh = 0
    cdef int ifslot = route_lookup(fp, addr, &nh)
    cdef int i
    if ifslot < 0:
        return -1
    i = neigh_slot(fp, nh, <uint8_t>ifslot, False)
    if i < 0 or fp.neigh[i].state != NEIGH_VALID:
        return -1
    return i

cdef inline void ip_csum_set(uint8_t* h, uint32_t ihl) noexcept nogil:
    st16(h + 10, 0)
    st16(h + 10, <uint16_t>~csum_fold(csum_add(0, h, ihl)))

cdef int icmp_error(FP* fp, Frame* fr, uint8_t type, uint8_t code, uint32_t info,
                    uint32_t src, uint64_t now) noexcept nogil:
    # The frame becomes ICMP type/code from `src` to its sender, quoting its IP packet as it
    # came (up to 548 bytes). The 28 bytes of headers go in front of the packet, in the
    # headroom, so the quote is not moved. Back to the sender: the neighbour on our route to
    # it, else the host the frame came from (its source MAC, on the interface it came in on).
    # Returns V_FORWARD, or V_DROP (icmp_ratelimited, no_neighbour).
    cdef uint8_t* ip = fr.ip
    cdef uint32_t sender = ld32(ip + 12)
    cdef uint32_t quote = fr.tot if fr.tot < ICMP_QUOTE_MAX else ICMP_QUOTE_MAX
    cdef uint8_t back[6]
    cdef int nb = neigh_toward(fp, sender)
    cdef int ifslot
    if nb < 0 and not (0 <= fr.rx_if < MAX_IFACES and fp.ifaces[fr.rx_if].in_use):
        return drop(fp, R_NO_NEIGHBOUR)
    if not icmp_allow(fp, now):
        return drop(fp, R_ICMP_RATELIMITED)
    memcpy(back, fr.f + 6, 6)
    ifslot = fp.neigh[nb].ifslot if nb >= 0 else fr.rx_if
    cdef uint8_t* base = fr.f - ICMP_ERR_ROOM
    cdef uint8_t* h = base + 14
    cdef uint8_t* icmp = h + 20
    if src == 0:
        src = fp.ifaces[ifslot].addr
    ip_header(fp, h, 0xC0, 28 + quote, 0, 64, 1, src, sender)
    icmp[0] = type
    icmp[1] = code
    st16(icmp + 2, 0)
    st32(icmp + 4, info)
    st16(icmp + 2, <uint16_t>~csum_fold(csum_add(0, icmp, 8 + quote)))
    if nb >= 0:
        memcpy(base, fp.neigh[nb].mac, 6)
    else:
        memcpy(base, back, 6)
    memcpy(base + 6, fp.ifaces[ifslot].mac, 6)
    st16(base + 12, 0x0800)
    fr.keep_partial = 0                     # an ICMP error of ours: complete, not an aggregate
    fr.vh.gso_type = GSO_NONE
    fr.out_off = -ICMP_ERR_ROOM
    fr.out_len = 14 + 28 + quote
    fr.tx_if = ifslot
    return V_FORWARD

cdef inline void quote_rewrite(uint8_t* q, uint32_t qihl, int addr_off, uint32_t addr,
                               int port_off, uint16_t port) noexcept nogil:
    # One address and one port of the quoted packet; its IP checksum is made again after.
    st32(q + addr_off, addr)
    st16(q + qihl + port_off, port)

cdef int icmp_in(FP* fp, Frame* fr, uint8_t* ip, uint32_t ihl, uint32_t tot,
                 uint64_t now) noexcept nogil:
    # An ICMP frame (protocol 1, headers checked by handle()). What is not an error about one of
    # our connections is the kernel's (IPVS returns NF_ACCEPT): echo to a VIP, errors about
    # other traffic, errors the quote of which cannot be read.
    cdef uint8_t* icmp = ip + ihl
    cdef uint32_t ilen = tot - ihl, qihl
    cdef uint8_t* q
    cdef uint8_t qproto
    cdef uint32_t qs, qd, h
    cdef uint16_t qsp, qdp
    cdef Conn* c
    cdef int direction, nbi
    cdef Neigh* nb
    cdef uint32_t mtu
    cdef Dest* d
    if ld16(ip + 6) & 0x3FFF:
        return pass_(fp, R_NOT_OURS)        # an ICMP error is never fragmented; the kernel's
    if ilen < 8 or not icmp_is_error(icmp[0]):
        return pass_(fp, R_ICMP_NOT_ERROR)
    q = icmp + 8
    if ilen < 8 + 20 or (q[0] >> 4) != 4:
        return pass_(fp, R_ICMP_BAD_QUOTE)
    qihl = (q[0] & 0x0F) * 4
    qproto = q[9]
    if qihl < 20 or ilen < 8 + qihl + 8 or ld16(q + 6) & 0x1FFF:
        return pass_(fp, R_ICMP_BAD_QUOTE)  # no ports to read (ip_vs_in_icmp: "looks wrong")
    if qproto == 1:
        return pass_(fp, R_ICMP_ABOUT_ICMP)
    if qproto == 4:
        return icmp_about_tunnel(fp, fr, ip, ihl, tot, q, qihl, now)
    if qproto != 6 and qproto != 17:
        return pass_(fp, R_ICMP_NO_CONN)
    # The quote is a packet we (or the server) sent: its addresses in reverse order are the key
    # of the connection as the other side's packets carry it.
    qs = ld32(q + 12)
    qd = ld32(q + 16)
    qsp = ld16(q + qihl)
    qdp = ld16(q + qihl + 2)
    h = flow_hash(fp, qproto, qd, qdp, qs, qsp)
    direction = DIR_IN
    c = lookup_in(fp, h, qproto, qd, qdp, qs, qsp)
    if c == NULL:
        direction = DIR_OUT
        c = lookup_out(fp, h, qproto, qd, qdp, qs, qsp)
    if c == NULL or c.expires <= now:
        return pass_(fp, R_ICMP_NO_CONN)
    if not ip_csum_ok(ip, ihl):
        return drop(fp, R_BAD_IP_CHECKSUM)
    if csum_fold(csum_add(0, icmp, ilen)) != 0xFFFF:
        return drop(fp, R_BAD_ICMP_CHECKSUM)
    if fr.vnet and (fr.vh.flags & VNET_NEEDS_CSUM or fr.vh.gso_type != GSO_NONE):
        return drop(fp, R_BAD_VNET_HDR)     # virtio offloads TCP and UDP only
    fr.partial = 0
    fr.keep_partial = 0
    if ip[8] <= 1:
        return drop(fp, R_ICMP_EXPIRED)     # decrement_ttl() would answer; not an error, though
    if c.rgen != fp.route_gen:
        conn_reroute(fp, c)
    if direction == DIR_IN:
        nbi = c.nh_in
    elif c.fwd == FWD_ENAT:
        nbi = neigh_toward(fp, c.caddr)     # ENAT's nh_out is the server's (its replies bypass us)
    else:
        nbi = c.nh_out
    if nbi < 0 or fp.neigh[nbi].state != NEIGH_VALID:
        return drop(fp, R_NO_NEIGHBOUR)
    nb = &fp.neigh[nbi]
    mtu = fp.ifaces[nb.ifslot].mtu
    if tot + (IPIP_OVERHEAD if direction == DIR_IN and c.fwd == FWD_TUNNEL else 0) > mtu:
        return drop(fp, R_TOO_BIG)          # no "fragmentation needed" about an ICMP error
    ttl_decrement(ip)
    fr.ip = ip
    fr.l4 = icmp
    fr.tot = tot
    fr.l4len = ilen
    fr.proto = 1
    fr.direction = direction
    fr.out_off = 0
    fr.out_len = fr.flen
    fr.tx_if = nb.ifslot
    if direction == DIR_IN:
        if c.fwd == FWD_MASQ:               # ip_vs_nat_icmp(inout 0)
            st32(ip + 16, c.daddr)
            quote_rewrite(q, qihl, 12, c.daddr, 0, c.dport)
        elif c.fwd == FWD_FULLNAT or c.fwd == FWD_ENAT:
            st32(ip + 12, c.laddr)          # from the local address, as its packets come
            st32(ip + 16, c.daddr)
            quote_rewrite(q, qihl, 12, c.daddr, 0, c.dport)
            quote_rewrite(q, qihl, 16, c.laddr, 2, c.lport)
        elif c.fwd == FWD_TUNNEL:
            xmit_tun(fp, c, fr, nb)         # inside IPIP, the ICMP untouched
    else:
        if c.fwd == FWD_MASQ:               # ip_vs_nat_icmp(inout 1)
            st32(ip + 12, c.vaddr)
            quote_rewrite(q, qihl, 16, c.vaddr, 2, c.vport)
        else:                               # FULLNAT, ENAT: to the client, as from the VIP
            st32(ip + 12, c.vaddr)
            st32(ip + 16, c.caddr)
            quote_rewrite(q, qihl, 16, c.vaddr, 2, c.vport)
            quote_rewrite(q, qihl, 12, c.caddr, 0, c.cport)
    if c.fwd != FWD_ROUTE and c.fwd != FWD_TUNNEL or direction == DIR_OUT:
        ip_csum_set(q, qihl)
        st16(icmp + 2, 0)
        st16(icmp + 2, <uint16_t>~csum_fold(csum_add(0, icmp, ilen)))
        ip_csum_set(ip, ihl)
    if c.fwd != FWD_TUNNEL or direction == DIR_OUT:
        set_l2(fp, fr.f, nb)
    d = &fp.dests[c.dest]                   # ip_vs_in_stats() / ip_vs_out_stats()
    d.pkts[direction] += 1
    d.bytes[direction] += tot
    fp.reasons[R_ICMP_RELAYED] += 1
    fp.last_reason = R_ICMP_RELAYED
    return V_FORWARD

cdef int icmp_about_tunnel(FP* fp, Frame* fr, uint8_t* ip, uint32_t ihl, uint32_t tot,
                           uint8_t* q, uint32_t qihl, uint64_t now) noexcept nogil:
    # An error about one of our IPIP packets (DIP -> RIP) from a router between us and a TUN
    # server: ip_vs_in_icmp()'s "special case for errors for IPIP tunnel packets". The client
    # is told, with the same type and code, from the VIP, quoting its own packet (what the
    # router quoted of it); "fragmentation needed" carries the MTU less the outer header, and
    # only for a client that does path MTU discovery (DF).
    cdef uint8_t* icmp = ip + ihl
    cdef uint32_t ilen = tot - ihl
    cdef uint8_t* iq = q + qihl
    cdef uint32_t have = ilen - 8 - qihl, iqihl, mtu
    cdef uint32_t info = ld32(icmp + 4)
    cdef uint8_t type = icmp[0], code = icmp[1]
    cdef uint32_t h
    cdef Conn* c
    if have < 20 or (iq[0] >> 4) != 4:
        return pass_(fp, R_ICMP_BAD_QUOTE)
    iqihl = (iq[0] & 0x0F) * 4
    if iqihl < 20 or have < iqihl + 8 or ld16(iq + 6) & 0x1FFF:
        return pass_(fp, R_ICMP_BAD_QUOTE)
    if iq[9] != 6 and iq[9] != 17:
        return pass_(fp, R_ICMP_NO_CONN)
    # the inner packet is the client's request: its own in key, not reversed
    h = flow_hash(fp, iq[9], ld32(iq + 12), ld16(iq + iqihl), ld32(iq + 16), ld16(iq + iqihl + 2))
    c = lookup_in(fp, h, iq[9], ld32(iq + 12), ld16(iq + iqihl), ld32(iq + 16), ld16(iq + iqihl + 2))
    if c == NULL or c.expires <= now or c.fwd != FWD_TUNNEL or c.daddr != ld32(q + 16):
        return pass_(fp, R_ICMP_NO_CONN)
    if not ip_csum_ok(ip, ihl):
        return drop(fp, R_BAD_IP_CHECKSUM)
    if csum_fold(csum_add(0, icmp, ilen)) != 0xFFFF:
        return drop(fp, R_BAD_ICMP_CHECKSUM)
    if type == ICMP_UNREACH and code == ICMP_FRAG_NEEDED:
        if not ld16(iq + 6) & 0x4000:
            return pass_(fp, R_ICMP_NO_CONN)    # nothing to tell a client without DF
        mtu = info & 0xFFFF
        info = mtu - IPIP_OVERHEAD if mtu > 68 + IPIP_OVERHEAD else mtu
    # the client's packet goes where icmp_error() quotes from: right after the Ethernet header
    memmove(fr.f + 14, iq, have)
    fr.ip = fr.f + 14
    fr.tot = have
    fr.direction = DIR_IN
    cdef int v = icmp_error(fp, fr, type, code, info, ld32(fr.ip + 16), now)
    if v == V_FORWARD:
        fp.dests[c.dest].pkts[DIR_OUT] += 1     # ip_vs_out_stats(): "ICMP can be shorter ..."
        fp.dests[c.dest].bytes[DIR_OUT] += have
        fp.reasons[R_ICMP_RELAYED] += 1
        fp.last_reason = R_ICMP_RELAYED
    return v
