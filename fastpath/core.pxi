# The per-frame core: parse -> look up -> rewrite -> verdict, on a byte buffer (handle()); the
# part of sending that every forwarding method shares (forward(): the kernel's ip_vs_core.c
# beside the per-mode rewrites of mode_*.pxi, its ip_vs_xmit.c); a new connection's install
# (conn_create()); ARP answers for the VIPs. The ring loop (ring.pxi) and Forwarder.process()
# are two shells around handle(); new flows go through newflow.pxi in both.

cdef inline void vnet_load(Vnet* v, const uint8_t* p) noexcept nogil:
    v.flags = p[0]
    v.gso_type = p[1]
    v.hdr_len = ld16le(p + 2)
    v.gso_size = ld16le(p + 4)
    v.csum_start = ld16le(p + 6)
    v.csum_offset = ld16le(p + 8)

cdef inline void vnet_for_tx(Frame* fr, uint8_t* p) noexcept nogil:
    # The header a frame leaves with (af_packet's packet_snd() reads it): its checksum still to
    # complete where it stayed partial, and the aggregate to segment on the way out (GSO).
    cdef uint8_t* base = fr.f + fr.out_off
    cdef uint16_t start
    memset(p, 0, VNET_LEN)
    if not fr.keep_partial:
        return
    start = <uint16_t>(fr.l4 - base)
    p[0] = VNET_NEEDS_CSUM
    st16le(p + 6, start)
    st16le(p + 8, 16 if fr.proto == 6 else 6)
    if fr.vh.gso_type != GSO_NONE:
        p[1] = fr.vh.gso_type
        st16le(p + 2, <uint16_t>(start + (fr.l4[12] >> 4) * 4))
        st16le(p + 4, fr.vh.gso_size)

cdef inline bint vnet_ok(Frame* fr, uint32_t ihl, uint8_t proto, uint8_t* l4, uint32_t tot) noexcept nogil:
    # What lbd takes from virtio_net_hdr (include/linux/virtio_net.h): a partial checksum exactly
    # at the TCP or UDP checksum field, and TCPv4 aggregates. Anything else lies about the
    # frame or asks for what the fast path does not do (UFO, USO, IPv6 GSO on IPv4).
    cdef Vnet* v = &fr.vh
    cdef uint8_t gso = v.gso_type & ~GSO_ECN
    if v.flags & ~3:                        # NEEDS_CSUM and DATA_VALID only
        return False
    if v.flags & VNET_NEEDS_CSUM:
        if v.csum_start != 14 + ihl or v.csum_offset != (16 if proto == 6 else 6):
            return False
    if gso == GSO_NONE:
        return v.gso_type == GSO_NONE
    if gso != GSO_TCPV4 or proto != 6 or not (v.flags & VNET_NEEDS_CSUM):
        return False
    return 0 < v.gso_size and ihl + (l4[12] >> 4) * 4 + v.gso_size <= 65535 and v.gso_size <= tot

# find_service() and is_vip(): tables.pxi (the keyed service-key index).

cdef inline int drop(FP* fp, int reason) noexcept nogil:
    fp.reasons[reason] += 1
    fp.last_reason = reason
    return V_DROP

cdef inline int pass_(FP* fp, int reason) noexcept nogil:
    fp.reasons[reason] += 1
    fp.last_reason = reason
    return V_PASS

cdef int handle(FP* fp, Frame* fr, uint64_t now, Pending* p) noexcept nogil:
    # fr.f/fr.flen in; on V_FORWARD: fr.out_off/out_len (the frame to send, which a mode may have
    # grown into the HEADROOM bytes before fr.f) and fr.tx_if.
    cdef uint32_t ihl, tot, l4len, saddr, daddr
    cdef uint16_t sport, dport
    cdef uint8_t proto
    cdef uint8_t* f = fr.f
    cdef uint32_t flen = fr.flen
    cdef uint8_t* ip
    cdef uint8_t* l4
    cdef Conn* c
    cdef Conn* tmpl
    cdef int direction, svc
    cdef Neigh* nb

    if flen < 14:
        return drop(fp, R_SHORT_FRAME)
    if ld16(f + 12) == 0x0806:
        return arp_reply(fp, fr)
    if ld16(f + 12) != 0x0800:
        return pass_(fp, R_NOT_IPV4)
    ip = f + 14
    if flen < 34 or (ip[0] >> 4) != 4:
        return drop(fp, R_BAD_IP_HEADER)
    ihl = (ip[0] & 0x0F) * 4
    tot = ld16(ip + 2)
    if ihl < 20 or tot < ihl or tot > flen - 14:
        return drop(fp, R_BAD_IP_HEADER)
    proto = ip[9]
    saddr = ld32(ip + 12)
    daddr = ld32(ip + 16)
    if proto != 6 and proto != 17:
        if proto == 1:
            return icmp_in(fp, fr, ip, ihl, tot, now)  # icmp.pxi: errors about connections
        return pass_(fp, R_NOT_OURS)
    if ld16(ip + 6) & 0x3FFF:
        # Fragments carry no (or only part of the) L4 header; IPVS reassembles, we do not (yet).
        if is_vip(fp, daddr):
            return drop(fp, R_FRAGMENT)
        return pass_(fp, R_NOT_OURS)
    l4 = ip + ihl
    l4len = tot - ihl
    if proto == 6:
        if l4len < 20 or (l4[12] >> 4) * 4 < 20 or (l4[12] >> 4) * 4 > l4len:
            return drop(fp, R_BAD_L4_HEADER) if is_vip(fp, daddr) else pass_(fp, R_NOT_OURS)
    elif l4len < 8 or ld16(l4 + 4) < 8 or ld16(l4 + 4) > l4len:
        return drop(fp, R_BAD_L4_HEADER) if is_vip(fp, daddr) else pass_(fp, R_NOT_OURS)
    else:
        l4len = ld16(l4 + 4)    # the UDP length rules (RFC 768); bytes past it are not checksummed
    if fr.vnet:
        if not vnet_ok(fr, ihl, proto, l4, tot):
            return drop(fp, R_BAD_VNET_HDR)
        fr.partial = (fr.vh.flags & VNET_NEEDS_CSUM) != 0
        fr.keep_partial = fr.partial
    sport = ld16(l4)
    dport = ld16(l4 + 2)

    cdef uint32_t h = flow_hash(fp, proto, saddr, sport, daddr, dport)
    direction = DIR_IN
    c = lookup_in(fp, h, proto, saddr, sport, daddr, dport)
    if c == NULL:
        direction = DIR_OUT
        c = lookup_out(fp, h, proto, saddr, sport, daddr, dport)
    if c != NULL and c.expires <= now:
        conn_free(fp, c)
        c = NULL
        direction = DIR_IN
    elif c != NULL and fp.expire_nodest and dest_gone(fp, c):
        conn_free(fp, c)        # expire_nodest_conn: the server was deleted; the packet goes too
        return drop(fp, R_DEST_GONE)
    elif c != NULL and direction == DIR_IN and proto == 6 and tcp_reopens(c, l4[13]):
        conn_free(fp, c)        # the client reused its port: schedule the SYN afresh
        c = NULL

    if c == NULL:
        svc = find_service(fp, proto, daddr, dport)
        if svc < 0:
            return pass_(fp, R_NOT_OURS)
        if not ip_csum_ok(ip, ihl):
            return drop(fp, R_BAD_IP_CHECKSUM)
        if proto == 6 and not tcp_opens(l4[13]):
            return drop(fp, R_TCP_NO_CONN)
        if not fr.partial and not l4_csum_ok(l4, l4len, saddr, daddr, proto):
            return drop(fp, R_BAD_L4_CHECKSUM)
        p.svc = <uint16_t>svc
        p.proto = proto
        p.caddr = saddr
        p.cport = sport
        p.vaddr = daddr
        p.vport = dport
        p.dest = -1
        if fp.services[svc].persist_ms:
            # A client its template pins to a server needs no scheduler: no trip into Python.
            tmpl = template_lookup(fp, &fp.services[svc], proto, saddr, daddr, dport, now)
            if tmpl != NULL:
                p.dest = tmpl.dest
        # What forward() needs, should the flow be installed now (newflow.pxi install_now()):
        # the frame is then sent without a second pass through handle().
        fr.ip = ip
        fr.l4 = l4
        fr.tot = tot
        fr.l4len = l4len
        fr.proto = proto
        return V_NEW

    if not ip_csum_ok(ip, ihl):
        return drop(fp, R_BAD_IP_CHECKSUM)
    if c.rgen != fp.route_gen and not (c.flags & CONN_TEMPLATE):
        conn_reroute(fp, c)     # the routes changed: its next hops anew (tables.pxi)
    nb = &fp.neigh[c.nh_in if direction == DIR_IN else c.nh_out]
    if nb.state != NEIGH_VALID:
        return drop(fp, R_NO_NEIGHBOUR)
    fr.ip = ip
    fr.l4 = l4
    fr.tot = tot
    fr.l4len = l4len
    fr.proto = proto
    fr.direction = direction
    fr.out_off = 0
    fr.out_len = flen
    fr.tx_if = nb.ifslot
    return forward(fp, c, fr, nb, now)

cdef inline void ttl_decrement(uint8_t* ip) noexcept nogil:
    # The 16-bit word (ttl, protocol) changes by 0x0100: one incremental checksum update.
    cdef uint16_t word = ld16(ip + 8)
    ip[8] -= 1
    csum_replace2(ip + 10, word, ld16(ip + 8))

cdef inline uint32_t error_source(FP* fp, Conn* c, Frame* fr) noexcept nogil:
    # Where the director's own ICMP error comes from (icmp_send()): the packet's destination
    # where that is ours (the VIP in; FULLNAT's local address out), else (NAT replies, which
    # the kernel forwards) 0: the address of the interface it leaves on.
    if fr.direction == DIR_IN or c.fwd == FWD_FULLNAT:
        return ld32(fr.ip + 16)
    return 0

cdef int forward(FP* fp, Conn* c, Frame* fr, Neigh* nb, uint64_t now) noexcept nogil:
    # Send a packet of connection c. What every method shares is done here, once, as the kernel
    # keeps it in ip_vs_core.c (ip_vs_in_hook(), handle_response()) and in ip_vs_xmit.c's
    # common route/TTL/MTU step (__ip_vs_get_out_rt(), decrement_ttl(),
    # ensure_mtu_is_adequate()); the mode's xmit_*() only rewrites the frame.
    cdef uint32_t tot = fr.tot          # as it came: counted before TUN or TOA grow it
    # An aggregate (GSO) leaves as segments of gso_size: the MTU applies to those (IPVS skips
    # the check for GSO skbs for the same reason).
    cdef uint32_t seg = tot
    if fr.vnet and fr.vh.gso_type != GSO_NONE:
        seg = <uint32_t>(fr.l4 - fr.ip) + (fr.l4[12] >> 4) * 4 + fr.vh.gso_size
    fr.seg = seg
    cdef int direction = fr.direction
    cdef uint8_t fwd = c.fwd
    cdef uint32_t mtu = fp.ifaces[nb.ifslot].mtu
    cdef uint8_t tcp_flags
    cdef Dest* d
    cdef int v
    # TCP data carried (secure_tcp, tcp_state.pxi), taken before a mode grows the header (TOA)
    cdef uint32_t payload = fr.l4len - (fr.l4[12] >> 4) * 4 if fr.proto == 6 else 0
    if direction != DIR_IN and not sees_replies(fwd):
        return pass_(fp, R_NOT_OURS)    # their connections have no out key: never happens
    # TTL and MTU as ip_vs_xmit.c's __ip_vs_get_out_rt() checks them for every method:
    # decrement_ttl() (time exceeded at TTL <= 1), then ensure_mtu_is_adequate() ("fragmentation
    # needed" for a DF packet too big for the egress; TUN counts the 20 bytes of IPIP). The
    # error quotes the packet as it came; the state still moves on the packet's flags (the
    # kernel's ip_vs_set_state() runs before the xmit), the counters not.
    if fr.ip[8] <= 1:
        fp.reasons[R_TTL_EXCEEDED] += 1
        v = icmp_error(fp, fr, ICMP_TIME_EXCEEDED, 0, 0, error_source(fp, c, fr), now)
        if v == V_FORWARD:
            fp.last_reason = R_TTL_EXCEEDED
        return v
    # (the first test alone settles every frame that is not within IPIP_OVERHEAD of the MTU)
    if seg + IPIP_OVERHEAD > mtu and seg + (IPIP_OVERHEAD if fwd == FWD_TUNNEL else 0) > mtu:
        if not ld16(fr.ip + 6) & 0x4000:
            return drop(fp, R_TOO_BIG)  # without DF the kernel would fragment; we don't
        fp.reasons[R_FRAG_NEEDED] += 1
        tcp_flags = fr.l4[13] if fr.proto == 6 else 0
        v = icmp_error(fp, fr, ICMP_UNREACH, ICMP_FRAG_NEEDED,
                       mtu - (IPIP_OVERHEAD if fwd == FWD_TUNNEL else 0),
                       error_source(fp, c, fr), now)
        if v == V_FORWARD:
            fp.last_reason = R_FRAG_NEEDED
            conn_state_update(fp, c, direction, &tcp_flags, now, payload)
        return v
    ttl_decrement(fr.ip)
    if fwd == FWD_MASQ:
        v = xmit_nat(fp, c, fr, nb)
    elif fwd == FWD_ROUTE:
        v = xmit_dr(fp, c, fr, nb)
    elif fwd == FWD_TUNNEL:
        if seg == tot:
            v = xmit_tun(fp, c, fr, nb)
        elif fp.ifaces[nb.ifslot].encap_mark and tot + IPIP_OVERHEAD <= 65535:
            v = xmit_tun_encap(fp, c, fr, nb)
        else:
            v = xmit_tun_gso(fp, c, fr, nb)
    else:
        v = xmit_fullnat(fp, c, fr, nb)     # FULLNAT and ENAT
    if v != V_FORWARD:
        return v
    d = &fp.dests[c.dest]               # ip_vs_in_stats() / ip_vs_out_stats()
    d.pkts[direction] += 1
    d.bytes[direction] += tot
    # the rewrites leave the flags byte alone (TOA moves the header, fr.l4 follows it)
    conn_state_update(fp, c, direction, fr.l4 + 13, now, payload)
    return V_FORWARD

cdef int arp_reply(FP* fp, Frame* fr) noexcept nogil:
    # The director answers ARP for its VIPs itself, so a VIP need not be an address of the
    # director's kernel (where it is, the kernel answers too: the same answer twice is harmless).
    # Ethernet/IPv4 requests only; the reply is built in place and leaves where the request came.
    cdef uint8_t* f = fr.f
    cdef uint8_t* a = f + 14
    cdef Iface* out
    if (fr.flen < 42 or ld16(a) != 1 or ld16(a + 2) != 0x0800 or a[4] != 6 or a[5] != 4
            or ld16(a + 6) != 1 or not is_vip(fp, ld32(a + 24))
            or not 0 <= fr.rx_if < MAX_IFACES or not fp.ifaces[fr.rx_if].in_use):
        return pass_(fp, R_NOT_IPV4)
    out = &fp.ifaces[fr.rx_if]
    cdef uint32_t vip = ld32(a + 24)
    memcpy(f, a + 8, 6)                 # to the asker
    memcpy(f + 6, out.mac, 6)
    st16(a + 6, 2)                      # a reply
    memcpy(a + 18, a + 8, 10)           # target := the sender (MAC and address)
    memcpy(a + 8, out.mac, 6)           # sender := us, the VIP
    st32(a + 14, vip)
    fr.out_off = 0
    fr.out_len = fr.flen
    fr.tx_if = fr.rx_if
    fp.arp_replies += 1
    return V_FORWARD

cdef inline void set_l2(FP* fp, uint8_t* f, Neigh* nb) noexcept nogil:
    memcpy(f, nb.mac, 6)
    memcpy(f + 6, fp.ifaces[nb.ifslot].mac, 6)

cdef int conn_create(FP* fp, Pending* p, uint64_t now, Conn** made=NULL) noexcept nogil:
    # Install the connection the scheduler chose for a pending new flow; returns a Reason
    # (and the connection in `made`, if given, on R_NONE).
    cdef Dest* d
    cdef Conn* c
    cdef int nh_in, nh_out
    cdef uint32_t idx
    cdef int r
    if p.dest < 0 or p.dest >= MAX_DESTS or not fp.dests[p.dest].in_use:
        return R_NO_DEST
    d = &fp.dests[p.dest]
    cdef uint8_t lslot = 0
    cdef uint16_t lport = 0
    cdef Service* s = &fp.services[p.svc]
    if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT:
        if not local_port(fp, s, d.fwd, p.dest, &lslot, &lport, now):
            return R_LPORT_EXHAUSTED
    nh_in = nexthop_for(fp, d.rip)
    # Toward the client only where the director sends there: NAT and FULLNAT replies, TUN's
    # ICMP errors. DR and ENAT replies never pass here: no neighbour entry per client.
    if d.fwd == FWD_ROUTE or d.fwd == FWD_ENAT:
        nh_out = nexthop_for(fp, d.rip)
    else:
        nh_out = nexthop_for(fp, p.caddr)
    if nh_in < 0 or nh_out < 0:
        if nh_in >= 0:
            neigh_put(fp, <uint16_t>nh_in)
        if nh_out >= 0:
            neigh_put(fp, <uint16_t>nh_out)
        if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT:
            lport_free(fp, lslot, p.dest, lport)
        return R_NO_ROUTE
    r = conn_slot(fp, p.proto, p.caddr, p.cport, p.vaddr, p.vport, d.rip,
                  d.rport if d.rport else p.vport,
                  fp.laddrs[lslot].addr if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT else p.caddr,
                  lport if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT else p.cport,
                  has_out_key(d.fwd))
    if r < 0:
        neigh_put(fp, <uint16_t>nh_in)
        neigh_put(fp, <uint16_t>nh_out)
        if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT:
            lport_free(fp, lslot, p.dest, lport)
        return -r
    idx = <uint32_t>r
    c = &fp.conns[idx]
    c.caddr = p.caddr
    c.cport = p.cport
    c.vaddr = p.vaddr
    c.vport = p.vport
    c.daddr = d.rip
    c.dport = d.rport if d.rport else p.vport    # port 0: the packet's own (fwmark services)
    c.proto = p.proto
    c.dest = <uint16_t>p.dest
    c.dgen = d.gen
    c.svc = p.svc
    c.nh_in = <uint16_t>nh_in
    c.nh_out = <uint16_t>nh_out
    c.rgen = fp.route_gen
    c.flags = CONN_IN_USE | CONN_INACTIVE
    c.fwd = d.fwd
    c.laddr, c.lport, c.lslot = p.caddr, p.cport, lslot
    if d.fwd == FWD_FULLNAT or d.fwd == FWD_ENAT:
        c.laddr, c.lport = fp.laddrs[lslot].addr, lport
    c.state = conn_first_state(p.proto)
    c.uoa_sent = 0
    if p.proto == 6:
        embryo_add(fp, c)                           # until it first reaches ESTABLISHED
    # at least 1 ms: the frame that opened the connection must find it (even with a 0 timeout)
    conn_arm(fp, c, now + (state_timeout(fp, c) if fp.timeouts[c.state] else 1))
    conn_link(fp, idx)                              # its keys into the hash chains
    c.control = 0
    d.conns += 1
    fp.inactive[p.dest] += 1
    fp.new_conns += 1
    if fp.services[p.svc].persist_ms:
        fp.emb_protect = idx + 1                    # its template's entry must not evict it
        r = persist_bind(fp, c, p, now)
        fp.emb_protect = 0
        if r != R_NONE:
            conn_free(fp, c)
            fp.expired_conns -= 1
            return r
    if made != NULL:
        made[0] = c
    return R_NONE
