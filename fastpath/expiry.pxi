# Expiry and the defence against floods of connections that never complete.
#
# A timer wheel: every entry (connection or template) is filed under the 64 ms tick of its
# expiry, in one of WHEEL_SIZE buckets (tick mod WHEEL_SIZE, a doubly linked list through the
# entries). A packet that re-arms a timer only writes c.expires (O(1), no list work) unless the
# new expiry is earlier than the tick it is filed under, then it moves (O(1) too). wheel_run()
# walks the buckets of the ticks that have passed: an entry due goes, one re-armed since it was
# filed moves to its new tick, one filed a whole turn (262 s) ahead stays. So each entry is
# looked at once per turn plus once when it is due, and is freed within a tick or two of its
# timeout whatever the traffic: the ring loop calls wheel_run() after every batch and at least
# every 50 ms when idle. (The kernel uses a timer per connection, ip_vs_conn_expire().)
#
# Embryonic connections (the kernel's drop_entry/secure_tcp defence, ip_vs_ctl.c, re-thought):
# a TCP connection is embryonic from its SYN until it first reaches ESTABLISHED. Those are on a
# list, oldest first. The table is under pressure when more than pressure_level entries are in
# use (the kernel's amemthresh counts free memory; a fixed table counts entries):
# - under pressure an embryonic connection's timer is at most embryo_ms (default 3 s: a real
#   handshake takes one round trip; a client's first SYN retransmission comes after 1 s);
# - a full table gives its oldest embryonic connection to a new flow (conn_alloc()), so a flood
#   of spoofed SYNs only ever displaces other embryos: established connections stay, and once
#   the flood stops every new SYN finds room at once;
# - secure_tcp (1: under pressure, the default; 2: always; 0: never): where the director sees
#   only the client's side (DR, TUN, ENAT), a pure ACK does not move SYN_RECV to ESTABLISHED;
#   the client's first data does. A blind spoofer's SYN + ACK then stays an embryo (evictable,
#   3 s) instead of an ESTABLISHED entry for 900 s. A spoofer that also sends data still gets
#   through: the director never sees the server's sequence numbers, so nothing it can check
#   tells that ACK from a real one (see docs/internals.md).

# (WHEEL_SIZE buckets, ticks of 1 << TICK_SHIFT ms: their enum is in tables.pxi, the FP needs it.)

cdef inline void wheel_file(FP* fp, Conn* c, uint64_t tick) noexcept nogil:
    cdef uint32_t idx = <uint32_t>(c - fp.conns) + 1
    cdef uint32_t b
    if fp.wheel_tick == 0:
        fp.wheel_tick = tick
    if tick < fp.wheel_tick:
        tick = fp.wheel_tick
    c.tw_tick = <uint32_t>tick
    b = c.tw_tick & (WHEEL_SIZE - 1)
    c.tw_prev = 0
    c.tw_next = fp.wheel[b]
    if c.tw_next:
        fp.conns[c.tw_next - 1].tw_prev = idx
    fp.wheel[b] = idx
    c.flags |= CONN_IN_WHEEL

cdef inline void wheel_del(FP* fp, Conn* c) noexcept nogil:
    if not (c.flags & CONN_IN_WHEEL):
        return
    if c.tw_prev:
        fp.conns[c.tw_prev - 1].tw_next = c.tw_next
    else:
        fp.wheel[c.tw_tick & (WHEEL_SIZE - 1)] = c.tw_next
    if c.tw_next:
        fp.conns[c.tw_next - 1].tw_prev = c.tw_prev
    c.flags &= ~CONN_IN_WHEEL

cdef inline void conn_arm(FP* fp, Conn* c, uint64_t expires) noexcept nogil:
    # Set an entry's expiry; it moves in the wheel only when the new one is earlier than the
    # tick it is filed under (a later one is found when that tick comes: wheel_run()).
    c.expires = expires
    if not (c.flags & CONN_IN_WHEEL):
        wheel_file(fp, c, expires >> TICK_SHIFT)
    elif (expires >> TICK_SHIFT) < c.tw_tick:
        wheel_del(fp, c)
        wheel_file(fp, c, expires >> TICK_SHIFT)

cdef inline bint under_pressure(FP* fp) noexcept nogil:
    return fp.max_conns - fp.nfree > fp.pressure_level

cdef inline uint64_t state_timeout(FP* fp, Conn* c) noexcept nogil:
    # The timeout of c's state, cut to embryo_ms for an embryo while the table is under pressure.
    cdef uint64_t t = fp.timeouts[c.state]
    if (c.flags & CONN_EMBRYO) and t > fp.embryo_ms and under_pressure(fp):
        return fp.embryo_ms
    return t

cdef inline void embryo_add(FP* fp, Conn* c) noexcept nogil:
    cdef uint32_t idx = <uint32_t>(c - fp.conns) + 1
    c.flags |= CONN_EMBRYO
    c.emb_next = 0
    c.emb_prev = fp.emb_tail
    if fp.emb_tail:
        fp.conns[fp.emb_tail - 1].emb_next = idx
    else:
        fp.emb_head = idx
    fp.emb_tail = idx
    fp.embryos += 1

cdef inline void embryo_del(FP* fp, Conn* c) noexcept nogil:
    if not (c.flags & CONN_EMBRYO):
        return
    if c.emb_prev:
        fp.conns[c.emb_prev - 1].emb_next = c.emb_next
    else:
        fp.emb_head = c.emb_next
    if c.emb_next:
        fp.conns[c.emb_next - 1].emb_prev = c.emb_prev
    else:
        fp.emb_tail = c.emb_prev
    c.flags &= ~CONN_EMBRYO
    fp.embryos -= 1

cdef inline bint embryo_evict(FP* fp) noexcept nogil:
    # The oldest embryonic connection goes to make room (conn_alloc()).
    cdef uint32_t victim = fp.emb_head
    if victim and victim == fp.emb_protect:
        victim = fp.conns[victim - 1].emb_next      # not the one being installed now
    if victim == 0:
        return False
    conn_free(fp, &fp.conns[victim - 1])
    fp.expired_conns -= 1           # evicted, not expired: counted apart
    fp.embryos_evicted += 1
    return True

cdef inline bint secure_input_only(FP* fp) noexcept nogil:
    return fp.secure_tcp == 2 or (fp.secure_tcp == 1 and under_pressure(fp))

cdef uint32_t wheel_run(FP* fp, uint64_t now, uint32_t budget, bint inclusive) noexcept nogil:
    # Expire what is due in the ticks before now's (and in now's own with `inclusive`, for
    # Forwarder.expire()), looking at `budget` entries at most; returns how many it looked at.
    # A bucket left half done is taken up again at the next call (the cursor stays on it).
    cdef uint64_t last = now >> TICK_SHIFT, t
    cdef uint32_t seen = 0, b, i, keep = 0, nxt
    cdef Conn* c
    cdef bint left
    if fp.wheel_tick == 0:
        fp.wheel_tick = last
    if not inclusive:
        if last == 0:
            return 0
        last -= 1
    if last >= fp.wheel_tick + WHEEL_SIZE:
        fp.wheel_tick = last - WHEEL_SIZE + 1      # a turn covers every bucket once
    while fp.wheel_tick <= last and seen < budget:
        t = fp.wheel_tick
        b = t & (WHEEL_SIZE - 1)
        keep = 0
        while fp.wheel[b] and seen < budget:
            i = fp.wheel[b]
            c = &fp.conns[i - 1]
            wheel_del(fp, c)
            seen += 1
            if c.expires <= now:
                if (c.flags & CONN_TEMPLATE) and c.n_control:
                    c.expires = now + c.tmpl_timeout    # still controls connections: re-arm
                    wheel_file(fp, c, c.expires >> TICK_SHIFT)
                else:
                    conn_free(fp, c)
            elif (c.expires >> TICK_SHIFT) & (WHEEL_SIZE - 1) == b:
                # due in a later turn of this same bucket: set aside, put back below
                c.tw_tick = <uint32_t>(c.expires >> TICK_SHIFT)
                c.tw_next = keep
                keep = i
            else:
                wheel_file(fp, c, c.expires >> TICK_SHIFT)
        left = fp.wheel[b] != 0
        while keep:
            c = &fp.conns[keep - 1]
            nxt = c.tw_next
            wheel_file(fp, c, c.tw_tick)
            keep = nxt
        if left:
            break                                   # the budget ran out in this bucket
        if t == last and inclusive:
            break                                   # now's own tick stays the cursor
        fp.wheel_tick = t + 1
    return seen
