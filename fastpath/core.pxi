# The per-frame core: parse -> look up -> rewrite -> verdict. Works on a byte buffer; the ring
# loop and Forwarder.process() are two shells around it.

cdef enum:
    DIR_IN = 0      # client -> real server
    DIR_OUT = 1     # real server -> client

# IPVS TCP state transitions, by direction, event (syn, fin, ack, rst) and current state, as in the
# kernel's tcp_states table (net/netfilter/ipvs/ip_vs_proto_tcp.c); columns follow ConnState order.
cdef uint8_t TCP_NEXT[2][4][11]
_TCP_NEXT = [
    [   # in (client -> server)
        [S_SYN_RECV, S_ESTABLISHED, S_ESTABLISHED, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV, S_SYN_RECV],
        [S_CLOSE, S_CLOSE_WAIT, S_SYN_SENT, S_TIME_WAIT, S_TIME_WAIT, S_TIME_WAIT, S_CLOSE, S_CLOSE_WAIT, S_LAST_ACK, S_LISTEN, S_TIME_WAIT],
        [S_CLOSE, S_ESTABLISHED, S_SYN_SENT, S_ESTABLISHED, S_FIN_WAIT, S_TIME_WAIT, S_CLOSE, S_CLOSE_WAIT, S_CLOSE, S_LISTEN, S_ESTABLISHED],
        [S_CLOSE, S_CLOSE, S_CLOSE, S_SYN_RECV, S_CLOSE, S_CLOSE, S_CLOSE, S_CLOSE, S_LAST_ACK, S_LISTEN, S_SYN_RECV],
    ],
    [   # out (server -> client)
        [S_SYN_SENT, S_ESTABLISHED, S_SYN_SENT, S_SYN_RECV, S_SYN_SENT, S_SYN_SENT, S_SYN_SENT, S_SYN_SENT, S_SYN_SENT, S_LISTEN, S_SYN_RECV],
        [S_TIME_WAIT, S_FIN_WAIT, S_SYN_SENT, S_TIME_WAIT, S_FIN_WAIT, S_TIME_WAIT, S_CLOSE, S_TIME_WAIT, S_LAST_ACK, S_LISTEN, S_TIME_WAIT],
        [S_ESTABLISHED, S_ESTABLISHED, S_SYN_SENT, S_ESTABLISHED, S_FIN_WAIT, S_TIME_WAIT, S_CLOSE, S_CLOSE_WAIT, S_LAST_ACK, S_ESTABLISHED, S_ESTABLISHED],
        [S_CLOSE, S_CLOSE, S_SYN_SENT, S_CLOSE, S_CLOSE, S_TIME_WAIT, S_CLOSE, S_CLOSE, S_CLOSE, S_CLOSE, S_CLOSE],
    ],
]

cdef void _init_tcp_table():
    cdef int d, e, s
    for d in range(2):
        for e in range(4):
            for s in range(11):
                TCP_NEXT[d][e][s] = _TCP_NEXT[d][e][s]

_init_tcp_table()

cdef inline int tcp_event(uint8_t flags) noexcept nogil:
    # The kernel's tcp_state_idx(): RST wins, then SYN, FIN, ACK; anything else changes nothing.
    if flags & 0x04:
        return 3
    if flags & 0x02:
        return 0
    if flags & 0x01:
        return 1
    if flags & 0x10:
        return 2
    return -1

cdef inline void conn_update(FP* fp, Conn* c, int direction, const uint8_t* l4, uint64_t now) noexcept nogil:
    cdef int ev
    if c.proto == 6:
        ev = tcp_event(l4[13])
        if ev >= 0:
            conn_set_state(fp, c, TCP_NEXT[direction][ev][c.state])
    c.expires = now + fp.timeouts[c.state]

cdef inline int find_service(FP* fp, uint8_t proto, uint32_t daddr, uint16_t dport) noexcept nogil:
    cdef int i
    cdef Service* s
    for i in range(MAX_SERVICES):
        s = &fp.services[i]
        if s.in_use and s.vip == daddr and s.vport == dport and s.proto == proto:
            return i
    return -1

cdef inline bint is_vip(FP* fp, uint32_t daddr) noexcept nogil:
    cdef int i
    for i in range(MAX_SERVICES):
        if fp.services[i].in_use and fp.services[i].vip == daddr:
            return True
    return False

cdef inline int drop(FP* fp, int reason) noexcept nogil:
    fp.reasons[reason] += 1
    fp.last_reason = reason
    return V_DROP

cdef inline int pass_(FP* fp, int reason) noexcept nogil:
    fp.reasons[reason] += 1
    fp.last_reason = reason
    return V_PASS

cdef inline void nat_rewrite(uint8_t* ip, uint8_t* l4, uint8_t proto, int partial,
                             int addr_off, uint32_t new_addr, int port_off, uint16_t new_port,
                             uint32_t l4len) noexcept nogil:
    # NAT: replace one address and one port; IP and L4 checksums updated incrementally (RFC 1624),
    # except for frames with a partial checksum, which get theirs computed in full.
    cdef uint32_t csum_off = 16 if proto == 6 else 6
    cdef uint32_t old_addr = ld32(ip + addr_off)
    cdef uint16_t old_port = ld16(l4 + port_off)
    st32(ip + addr_off, new_addr)
    st16(l4 + port_off, new_port)
    csum_replace4(ip + 10, old_addr, new_addr)
    if partial:
        l4_csum_full(l4, l4len, ld32(ip + 12), ld32(ip + 16), proto, csum_off)
    else:
        l4_csum_replace4(l4 + csum_off, proto, old_addr, new_addr)
        l4_csum_replace2(l4 + csum_off, proto, old_port, new_port)

cdef int handle(FP* fp, uint8_t* f, uint32_t flen, int partial, uint64_t now,
                int* tx_if, Pending* p) noexcept nogil:
    cdef uint32_t ihl, tot, l4len, saddr, daddr
    cdef uint16_t sport, dport, ttl_word
    cdef uint8_t proto
    cdef uint8_t* ip
    cdef uint8_t* l4
    cdef Conn* c
    cdef int direction, svc
    cdef Neigh* nb
    cdef Iface* out
    cdef Dest* d

    if flen < 14:
        return drop(fp, R_SHORT_FRAME)
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

    if c == NULL:
        svc = find_service(fp, proto, daddr, dport)
        if svc < 0:
            return pass_(fp, R_NOT_OURS)
        if not ip_csum_ok(ip, ihl):
            return drop(fp, R_BAD_IP_CSUM)
        # Only a SYN opens a TCP connection (IPVS without sloppy_tcp does the same).
        if proto == 6 and ((l4[13] & 0x06) != 0x02):
            return drop(fp, R_TCP_NO_CONN)
        if not partial and not l4_csum_ok(l4, l4len, saddr, daddr, proto):
            return drop(fp, R_BAD_L4_CSUM)
        p.svc = <uint16_t>svc
        p.proto = proto
        p.caddr = saddr
        p.cport = sport
        p.vaddr = daddr
        p.vport = dport
        return V_NEW

    if not ip_csum_ok(ip, ihl):
        return drop(fp, R_BAD_IP_CSUM)
    if ip[8] <= 1:
        return drop(fp, R_TTL_EXCEEDED)
    d = &fp.dests[c.dest]
    if direction == DIR_IN:
        nb = &fp.neigh[c.nh_in]
    else:
        nb = &fp.neigh[c.nh_out]
    if nb.state != NEIGH_VALID:
        return drop(fp, R_NO_NEIGH)
    out = &fp.ifaces[nb.ifslot]
    if tot > out.mtu:
        return drop(fp, R_TOO_BIG)

    # TTL - 1: the 16-bit word (ttl, protocol) changes by 0x0100.
    ttl_word = ld16(ip + 8)
    ip[8] -= 1
    csum_replace2(ip + 10, ttl_word, ld16(ip + 8))
    if direction == DIR_IN:
        nat_rewrite(ip, l4, proto, partial, 16, c.daddr, 2, c.dport, l4len)
        d.inpkts += 1
        d.inbytes += tot
    else:
        nat_rewrite(ip, l4, proto, partial, 12, c.vaddr, 0, c.vport, l4len)
        d.outpkts += 1
        d.outbytes += tot
    conn_update(fp, c, direction, l4, now)

    memcpy(f, nb.mac, 6)
    memcpy(f + 6, out.mac, 6)
    tx_if[0] = nb.ifslot
    return V_FORWARD

cdef int conn_create(FP* fp, Pending* p, uint64_t now) noexcept nogil:
    # Install the connection the scheduler chose for a pending new flow; returns a Reason.
    cdef Dest* d
    cdef Conn* c
    cdef int nh_in, nh_out
    cdef uint32_t idx
    if p.dest < 0 or p.dest >= MAX_DESTS or not fp.dests[p.dest].in_use:
        return R_NO_DEST
    d = &fp.dests[p.dest]
    if fp.nfree == 0:
        return R_TABLE_FULL
    nh_in = nexthop_for(fp, d.rip)
    nh_out = nexthop_for(fp, p.caddr)
    if nh_in < 0 or nh_out < 0:
        return R_NO_ROUTE
    fp.nfree -= 1
    idx = fp.free_list[fp.nfree]
    c = &fp.conns[idx]
    c.caddr = p.caddr
    c.cport = p.cport
    c.vaddr = p.vaddr
    c.vport = p.vport
    c.daddr = d.rip
    c.dport = d.rport
    c.proto = p.proto
    c.dest = <uint16_t>p.dest
    c.svc = p.svc
    c.nh_in = <uint16_t>nh_in
    c.nh_out = <uint16_t>nh_out
    c.flags = CONN_IN_USE | CONN_INACTIVE
    c.state = S_NONE if p.proto == 6 else S_UDP
    # at least 1 ms: the frame that opened the connection must find it (even with a 0 timeout)
    c.expires = now + (fp.timeouts[c.state] if fp.timeouts[c.state] else 1)
    c.hash = flow_hash(fp, c.proto, c.caddr, c.cport, c.vaddr, c.vport)
    c.next_in = fp.bucket_in[c.hash]
    fp.bucket_in[c.hash] = idx + 1
    cdef uint32_t ho = flow_hash(fp, c.proto, c.daddr, c.dport, c.caddr, c.cport)
    c.next_out = fp.bucket_out[ho]
    fp.bucket_out[ho] = idx + 1
    d.conns += 1
    fp.inactive[p.dest] += 1
    fp.new_conns += 1
    return R_NONE
