# Persistence (ipvsadm -p [timeout] -M netmask), as the kernel's ip_vs_sched_persist(): a template
# connection keyed by (protocol, client address & netmask, port 0, VIP, vport) pins a client to
# one real server. It lives while it controls connections and `timeout` after the last one ends;
# a template whose server was deleted is never matched again and the client is scheduled afresh:
# it names its service and its server's generation (Dest.gen), so a slot given to another
# server (of this service or another) is never mistaken for the old one, and it goes at once
# when nothing it controls is left (else when its last connection has).
# A fwmark service's template has protocol 0, the mark as its address and port 0, so a client
# sticks to one server across every port and protocol of the service (HTTP and HTTPS, say).

cdef inline void template_key(Service* s, uint8_t* proto, uint32_t* vaddr, uint16_t* vport) noexcept nogil:
    if s.fwmark:
        proto[0] = 0
        vaddr[0] = s.fwmark
        vport[0] = 0

cdef Conn* template_lookup(FP* fp, Service* s, uint8_t proto, uint32_t caddr, uint32_t vaddr,
                           uint16_t vport, uint64_t now) noexcept nogil:
    cdef uint32_t masked = caddr & s.persist_mask
    template_key(s, &proto, &vaddr, &vport)
    cdef uint32_t i = fp.bucket_in[flow_hash(fp, proto, masked, 0, vaddr, vport)]
    cdef Conn* c
    while i:
        c = &fp.conns[i - 1]
        if ((c.flags & CONN_TEMPLATE) and not (c.flags & CONN_STALE) and c.caddr == masked
                and c.vaddr == vaddr and c.vport == vport and c.proto == proto
                and c.svc == <uint16_t>(s - fp.services)):
            if dest_gone(fp, c) or fp.dests[c.dest].svc != c.svc:
                if c.n_control == 0:
                    conn_free(fp, c)        # its server is deleted: it dies with it
                else:
                    c.flags |= CONN_STALE   # goes once its last connection has (the wheel)
                return NULL
            if c.expires <= now and c.n_control == 0:
                return NULL                 # expired: the wheel frees it
            return c
        i = c.next_in
    return NULL

cdef Conn* template_create(FP* fp, Service* s, Pending* p, Dest* d, uint64_t now) noexcept nogil:
    cdef uint8_t proto = p.proto
    cdef uint32_t vaddr = p.vaddr
    cdef uint16_t vport = p.vport
    template_key(s, &proto, &vaddr, &vport)
    cdef int r = conn_slot(fp, proto, p.caddr & s.persist_mask, 0, vaddr, vport, 0, 0, 0, 0, False)
    if r < 0:
        return NULL
    cdef uint32_t idx = <uint32_t>r
    cdef Conn* t = &fp.conns[idx]
    memset(t, 0, sizeof(Conn))
    t.caddr = p.caddr & s.persist_mask
    t.vaddr = vaddr
    t.vport = vport
    t.proto = proto
    t.daddr = d.rip
    t.dport = d.rport
    t.dest = <uint16_t>p.dest
    t.dgen = d.gen
    t.svc = p.svc
    t.fwd = d.fwd
    t.flags = CONN_IN_USE | CONN_TEMPLATE
    t.state = S_NONE
    t.tmpl_timeout = s.persist_ms
    conn_arm(fp, t, now + s.persist_ms)
    t.hash = flow_hash(fp, t.proto, t.caddr, 0, t.vaddr, t.vport)
    t.next_in = fp.bucket_in[t.hash]
    fp.bucket_in[t.hash] = idx + 1
    fp.templates += 1
    fp.dest_tmpl[t.dest] += 1
    return t

cdef int persist_bind(FP* fp, Conn* c, Pending* p, uint64_t now) noexcept nogil:
    # Put a new connection under its client's template (made now if the client had none).
    cdef Service* s = &fp.services[p.svc]
    cdef Conn* t = template_lookup(fp, s, p.proto, p.caddr, p.vaddr, p.vport, now)
    if t == NULL or t.dest != c.dest:
        t = template_create(fp, s, p, &fp.dests[c.dest], now)
        if t == NULL:
            return R_TABLE_FULL
    t.n_control += 1
    conn_arm(fp, t, now + t.tmpl_timeout)
    c.control = <uint32_t>(t - fp.conns) + 1
    return R_NONE
