# FULLNAT and ENAT local ports, lent per (local address, real server), as DPVS's sa_pool: a
# connection's out key is (RIP:rport -> LIP:lport), so a port need only be unique toward one real
# server, and one local address carries its whole port range to each of them (not once in all).
#
# A pool is made the first time its pair lends a port (calloc'd, 8 KB + 152 bytes) and freed
# with its real server's slot. Taking a port is O(1) however full the pool is: a bitmap of the
# 65 536 ports, a summary bit per 64-port word that is full, and a bit per summary word that is
# full, searched with count-trailing-zeros from a cursor, so a port freed is reused last.
#
# The cursor also never falls behind a line that sweeps the range once per `lport_sweep_ms`
# (lbd: 60 s, the server's TIME_WAIT, Linux TCP_TIMEWAIT_LEN). It is read off the system-wide
# monotonic clock, so an lbd that restarts goes on where the last one was instead of lending
# again, from the range's low end, the (LIP:lport -> RIP:rport) pairs that the real server still
# holds in TIME_WAIT. A recent Linux client's timestamp offset is per connection (its ports are
# hashed too: secure_tcp_seq_and_ts_off), so the server's PAWS check rejects about half of such
# SYNs, and each costs the client a 1 s SYN retransmission. Below the line's rate (range / sweep, ~1075 ports/s for the
# default range), a pair is lent again no sooner than one sweep after it was last lent.

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil

cdef enum:
    POOL_WORDS = 1024       # 65 536 ports / 64
    POOL_GROUPS = 16        # POOL_WORDS / 64

cdef struct PortPool:
    uint64_t taken[POOL_WORDS]      # bit p: port p is lent (or outside the address's range)
    uint64_t full[POOL_GROUPS]      # bit j of full[g]: taken[g * 64 + j] has no free port
    uint32_t top                    # bit g: full[g] is all ones
    uint32_t used                   # ports lent
    uint64_t cursor                 # where the next search starts, unwrapped: low + cursor % span
    uint16_t low, high              # the range the pool was made with

cdef inline void pool_mark(PortPool* P, uint32_t port) noexcept nogil:
    cdef uint32_t w = port >> 6, g = w >> 6
    P.taken[w] |= 1ULL << (port & 63)
    if P.taken[w] == ~0ULL:
        P.full[g] |= 1ULL << (w & 63)
        if P.full[g] == ~0ULL:
            P.top |= 1u << g

cdef inline void pool_unmark(PortPool* P, uint32_t port) noexcept nogil:
    cdef uint32_t w = port >> 6, g = w >> 6
    P.taken[w] &= ~(1ULL << (port & 63))
    P.full[g] &= ~(1ULL << (w & 63))
    P.top &= ~(1u << g)

cdef inline int pool_first_free(PortPool* P, uint32_t pos) noexcept nogil:
    # The lowest free port >= pos, or -1: this word, then the next non-full word of this group,
    # then the first non-full word of a later group. Three ctz at most.
    cdef uint32_t w = pos >> 6, g = w >> 6, j = w & 63, t
    cdef uint64_t bits = ~P.taken[w] & (~0ULL << (pos & 63)), m
    if bits:
        return <int>(w * 64 + __builtin_ctzll(bits))
    m = ~P.full[g] & ((~0ULL << (j + 1)) if j < 63 else 0)
    if not m:
        t = ~P.top & 0xFFFF & ((0xFFFFu << (g + 1)) if g < 15 else 0)
        if not t:
            return -1
        g = __builtin_ctzll(t)
        m = ~P.full[g]
    w = g * 64 + __builtin_ctzll(m)
    return <int>(w * 64 + __builtin_ctzll(~P.taken[w]))

cdef PortPool* pool_new(LAddr* L) noexcept nogil:
    cdef PortPool* P = <PortPool*>calloc(1, sizeof(PortPool))
    cdef uint32_t p
    if P == NULL:
        return NULL
    P.low, P.high, P.cursor = L.low, L.high, 0
    for p in range(L.low):                  # ports outside the range count as taken
        pool_mark(P, p)
    for p in range(<uint32_t>L.high + 1, 65536):
        pool_mark(P, p)
    return P

cdef inline PortPool** pool_ref(FP* fp, uint8_t lslot, int dest) noexcept nogil:
    return &fp.pools[<size_t>dest * MAX_LADDRS + lslot]

cdef int lport_take(FP* fp, uint8_t lslot, int dest, uint16_t* port, uint64_t now) noexcept nogil:
    cdef LAddr* L = &fp.laddrs[lslot]
    cdef PortPool** ref = pool_ref(fp, lslot, dest)
    cdef PortPool* P = ref[0]
    cdef int p
    cdef uint32_t span, start
    cdef uint64_t line
    if not L.in_use:
        return -1
    if P != NULL and P.used == 0 and (P.low != L.low or P.high != L.high):
        free(P)                             # the range changed while it was idle: remade
        P = ref[0] = NULL
    if P == NULL:
        P = ref[0] = pool_new(L)
        if P == NULL:
            return -1
    span = <uint32_t>P.high - P.low + 1
    if fp.lport_sweep_ms:
        line = now * span // fp.lport_sweep_ms
        if P.cursor < line:
            P.cursor = line
    start = P.low + <uint32_t>(P.cursor % span)
    p = pool_first_free(P, start)
    if p < 0:
        p = pool_first_free(P, 0)
        if p < 0:
            return -1
    pool_mark(P, <uint32_t>p)
    P.used += 1
    P.cursor += (<uint32_t>p + span - start) % span + 1
    L.used += 1
    port[0] = <uint16_t>p
    return 0

cdef void lport_free(FP* fp, uint8_t lslot, int dest, uint16_t port) noexcept nogil:
    cdef PortPool* P = pool_ref(fp, lslot, dest)[0]
    if P == NULL or not (P.taken[port >> 6] & (1ULL << (port & 63))):
        return
    if port < P.low or port > P.high:
        return                              # outside the range: never lent
    pool_unmark(P, port)
    P.used -= 1
    fp.laddrs[lslot].used -= 1

cdef void pools_drop_dest(FP* fp, int dest) noexcept nogil:
    # A slot given to a new real server: its idle pools go (they are remade on first use).
    cdef int k
    cdef PortPool** ref
    for k in range(MAX_LADDRS):
        ref = pool_ref(fp, <uint8_t>k, dest)
        if ref[0] != NULL and ref[0].used == 0:
            free(ref[0])
            ref[0] = NULL

cdef void pools_free_all(FP* fp) noexcept nogil:
    cdef size_t k
    if fp.pools == NULL:
        return
    for k in range(<size_t>MAX_DESTS * MAX_LADDRS):
        free(fp.pools[k])
    free(fp.pools)
    fp.pools = NULL

cdef bint local_port(FP* fp, Service* s, uint8_t fwd, int dest, uint8_t* lslot,
                     uint16_t* lport, uint64_t now) noexcept nogil:
    # FULLNAT: the service's local addresses in turn; ENAT: the VIP's own pool.
    cdef int k, n = s.nladdrs
    if fwd == FWD_ENAT:
        if s.enat_laddr < 0:
            return False
        lslot[0] = <uint8_t>s.enat_laddr
        return lport_take(fp, lslot[0], dest, lport, now) == 0
    for k in range(n):
        lslot[0] = s.laddrs[(s.lnext + k) % n]
        if lport_take(fp, lslot[0], dest, lport, now) == 0:
            s.lnext = <uint8_t>((s.lnext + k + 1) % n)
            return True
    return False
