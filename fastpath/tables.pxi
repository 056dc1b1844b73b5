# The fast path's tables: services (and the keyed index packets find them by), destinations
# (with their live counters), neighbours, routes, and the connection table with its lookups,
# entry allocation (conn_alloc) and its inverse (conn_free); the structs a frame and a new flow
# travel in (Frame, Pending). Hashes are keyed (keyed_hash.pxi); expiry and the embryonic
# connections' accounting are in expiry.pxi. Fixed-size C arrays; the
# control plane writes them under fp.lock, the packet loop reads them under the same lock
# (taken once per batch). The enums of reasons, states, verdicts and FWD_* are in _names.pxi.

cdef enum:
    MAX_SERVICES = 256
    MAX_KEYS = 1024            # (protocol, VIP, port) keys; a fwmark service has several
    MAX_LADDRS = 64            # FULLNAT local addresses (and ENAT VIPs) with a port pool each
    MAX_SVC_LADDRS = 16
    MAX_DESTS = 4096
    MAX_IFACES = 8
    MAX_ROUTES = 256
    NEIGH_SIZE = 4096          # open addressing, power of two
    TX_BATCH = 64
    MAX_PENDING = 256
    HEADROOM = 64              # bytes before each frame the core may grow into (TUN 20, TOA 8, UOA 8,
                               # and the 10-byte virtio_net_hdr in front of what is sent)
    SEG_SLOTS = 256            # TUN segments of GSO aggregates made per batch
    SEG_SLOT = 2048            # bytes each, headroom included
    CHAIN_MAX = 16             # entries per hash chain at most: a lookup walks no further. With a
                               # keyed hash and as many buckets as entries a chain of 16 has odds
                               # of ~1e-14 per bucket (Poisson(1)); an insert that would make one
                               # is refused and counted (hash_chain_full), never a longer walk
    SVC_INDEX = 2048           # the service-key index: open addressing, 2x MAX_KEYS, keyed hash
    WHEEL_SIZE = 4096          # timer-wheel buckets (expiry.pxi): a turn of 4096 ticks is 262 s
    TICK_SHIFT = 6             # a tick is 64 ms

cdef enum:
    DIR_IN = 0              # client -> real server (the kernel's IP_VS_DIR_INPUT)
    DIR_OUT = 1             # real server -> client (IP_VS_DIR_OUTPUT)
    DIR_INPUT_ONLY = 2      # DR/TUN/ENAT: the director sees only client -> real server

cdef enum:
    CONN_IN_USE = 1
    CONN_INACTIVE = 2       # counted in the destination's inactive figure, not active
    CONN_TEMPLATE = 4       # a persistence template, not a flow
    CONN_STALE = 8          # a template whose server was deleted: never matched again
    CONN_EMBRYO = 16        # TCP, never ESTABLISHED yet: on the embryonic list (expiry.pxi)
    CONN_IN_WHEEL = 32      # filed in the timer wheel (expiry.pxi)
    NEIGH_FREE = 0
    NEIGH_WANTED = 1        # the fast path needs it; the control plane resolves it
    NEIGH_VALID = 2
    NEIGH_GONE = 3          # a freed slot: lookups probe past it, inserts may reuse it

cdef struct Service:
    uint32_t vip
    uint16_t vport
    uint8_t proto
    uint8_t fwd
    uint8_t in_use
    uint8_t onepacket       # -o: schedule every datagram, keep no connection
    uint32_t persist_ms     # -p: persistence timeout, 0 = not persistent
    uint32_t persist_mask   # -M: client netmask of the persistence template
    uint32_t fwmark         # -f: a service of several keys (0: one VIP:port)
    uint8_t nladdrs         # FULLNAT: its local addresses (slots of FP.laddrs), used in turn
    uint8_t lnext
    uint8_t laddrs[MAX_SVC_LADDRS]
    int16_t enat_laddr      # ENAT: the port pool of the VIP (-1: none)

# A local address and its port range; the ports are lent per real server (lport.pxi).
cdef struct LAddr:
    uint32_t addr
    uint8_t in_use
    uint16_t low
    uint16_t high
    uint32_t used           # ports lent, over every real server's pool (lport.pxi)

# What a packet's (protocol, destination, port) says about which service it is for.
cdef struct ServiceKey:
    uint32_t vip
    uint16_t vport
    uint8_t proto
    uint8_t in_use
    uint16_t svc

cdef struct Dest:
    uint32_t rip
    uint16_t rport
    uint16_t svc
    uint8_t in_use
    uint8_t fwd
    uint16_t gen            # bumped when the slot is given to a new server (set_dest reset): a
                            # connection or template of the old one tells by its own copy (dgen)
    int64_t conns
    int64_t pkts[2]         # by direction: [DIR_IN] InPkts, [DIR_OUT] OutPkts (ipvsadm --stats)
    int64_t bytes[2]        # InBytes, OutBytes: IP total lengths as received

# 96 bytes per connection (sizeof(Conn); issue 3's budget: at most 128).
cdef struct Conn:
    uint32_t caddr
    uint32_t vaddr
    uint32_t daddr
    uint16_t cport
    uint16_t vport
    uint16_t dport
    uint8_t proto
    uint8_t state
    uint16_t dest
    uint16_t svc
    uint16_t nh_in          # neighbour slot toward the real server
    uint16_t nh_out         # neighbour slot toward the client
    uint8_t flags
    uint8_t fwd             # FWD_*: how this connection's packets leave
    uint16_t dgen           # the generation of fp.dests[dest] it was made for (Dest.gen)
    uint32_t next_in        # hash chains: index + 1, 0 ends the chain
    uint32_t next_out
    uint32_t hash
    uint32_t control        # the persistence template controlling this connection: index + 1
    uint64_t expires        # monotonic milliseconds
    uint32_t n_control      # a template: how many connections it controls
    uint32_t tmpl_timeout   # a template: its persistence timeout (ms)
    uint32_t laddr          # the address the RS sees as the client's (NAT: caddr; FULLNAT: LIP;
    uint16_t lport          # ENAT: VIP) and its port: the out key is (daddr:dport -> laddr:lport)
    uint8_t lslot           # FULLNAT/ENAT: the port pool lport came from
    uint8_t rgen            # fp.route_gen when its next hops were chosen (conn_reroute)
    uint32_t tw_tick        # the timer-wheel tick it is filed under (expiry.pxi)
    uint32_t tw_next        # that tick's bucket: a doubly linked list, index + 1
    uint32_t tw_prev
    uint32_t emb_next       # the embryonic list, oldest first: index + 1
    uint32_t emb_prev
    uint8_t uoa_sent        # ENAT UDP: datagrams toward the server that tried UOA (uoa.pxi)

cdef struct Neigh:
    uint32_t ip
    uint8_t mac[6]
    uint8_t ifslot
    uint8_t state
    uint8_t pinned          # wanted by the control plane (a gateway, a real server): kept
    uint32_t refs           # connections using it; an unpinned entry goes when none do

cdef struct Route:
    uint32_t prefix
    uint32_t mask
    uint32_t gw             # 0: on link, the destination itself is the neighbour
    uint8_t ifslot

cdef struct TxQueue:
    int n
    mmsghdr msgs[TX_BATCH]
    iovec iov[TX_BATCH]

cdef struct Iface:
    uint8_t in_use
    int ifindex
    uint8_t mac[6]
    uint32_t mtu
    uint32_t addr           # our IPv4 address here: source of TUN outer headers
    int fd
    uint8_t* ring
    size_t ring_size
    uint8_t version         # TPACKET_V2: a frame per slot; TPACKET_V3: blocks of frames
    uint32_t block_size     # V2: the slot size
    uint32_t nblocks        # V2: the number of slots
    uint32_t cur_block      # V2: the next slot
    int big_fd              # split V2 ring: the socket of frames over SMALL_MAX, or -1 (ring.pxi)
    uint8_t* big_ring       # its slots: V2_SLOT each
    size_t big_size
    uint32_t big_slots
    uint32_t big_cur
    TxQueue tx
    int gso_fd              # a send socket through the qdisc, for GSO aggregates (see ring.pxi)
    uint32_t encap_mark     # TUN aggregates leave whole, marked so, for lbd's tc program to
                            # declare IPIP (lb/director/tun_encap.py); 0: cut here instead
    int encap_fd            # the send socket with that SO_MARK, through the qdisc
    uint8_t down            # the kernel reported an error on its socket (link down): ring.pxi
    uint8_t gone            # the control plane says the interface was deleted: the loop closes it
    int64_t errors          # POLLERR reports (each cleared by reading SO_ERROR)

# include/uapi/linux/virtio_net.h: what PACKET_VNET_HDR puts right before each frame's MAC
# header, and what the kernel reads before each frame sent (little-endian: vio_le()).
cdef enum:
    VNET_LEN = 10
    VNET_NEEDS_CSUM = 1
    GSO_NONE = 0
    GSO_TCPV4 = 1
    GSO_ECN = 0x80

cdef struct Vnet:
    uint8_t flags
    uint8_t gso_type
    uint16_t hdr_len
    uint16_t gso_size
    uint16_t csum_start
    uint16_t csum_offset

cdef struct Sched         # sched.pxi
cdef struct PortPool      # lport.pxi

# A new-flow frame waiting for the scheduler (once per batch, with the GIL).
cdef struct Pending:
    uint8_t* frame
    uint32_t len
    uint8_t rx_if
    uint8_t partial
    uint8_t vnet
    Vnet vh
    uint8_t proto
    uint16_t svc
    uint32_t caddr
    uint32_t vaddr
    uint16_t cport
    uint16_t vport
    int dest                # chosen by the scheduler, or preset by a persistence template
    int dup_of

cdef struct FP:
    pthread_mutex_t lock
    void* owner             # the Forwarder (borrowed: FP dies with it); its scheduler_cb decides
    int stopping            # Forwarder.stop(): the ring loop returns
    uint64_t key[2]         # the SipHash key of every table (os.urandom, at start)
    Service services[MAX_SERVICES]
    LAddr laddrs[MAX_LADDRS]
    uint8_t toa_mode        # 1: TOA on the SYN, 2: on the first ACK (DPVS), 3: both
    uint8_t uoa_trail       # ENAT UDP: the first this many datagrams carry UOA (uoa.pxi)
    ServiceKey keys[MAX_KEYS]
    int nkeys               # keys in use are all below this
    int16_t svc_index[SVC_INDEX]    # (proto, VIP, port) -> keys[] slot + 1; 0: empty
    uint32_t vip_index[SVC_INDEX]   # the VIPs of the keys (is_vip); 0: empty (0.0.0.0 no VIP)
    int svc_probe           # the longest probe any key needed: a miss looks no further
    int vip_probe
    Dest dests[MAX_DESTS]
    int64_t active[MAX_DESTS]       # ActiveConn / InActConn per destination: arrays of their own so
    int64_t inactive[MAX_DESTS]     # the control plane reads them as two flat int64 memoryviews
    int64_t dest_tmpl[MAX_DESTS]    # templates naming each slot: it is not free while any does
    Iface ifaces[MAX_IFACES]
    Route routes[MAX_ROUTES]
    int nroutes
    Neigh neigh[NEIGH_SIZE]
    Conn* conns
    uint32_t max_conns
    uint32_t nbuckets       # power of two
    uint32_t* bucket_in
    uint32_t* bucket_out
    uint32_t* free_list
    uint32_t nfree
    uint64_t timeouts[S_NSTATES]   # milliseconds
    uint32_t wheel[WHEEL_SIZE]      # the timer wheel (expiry.pxi): bucket heads, index + 1
    uint64_t wheel_tick             # the next tick to expire (0: not started)
    uint32_t emb_head               # the embryonic list (expiry.pxi), oldest first
    uint32_t emb_tail
    uint32_t embryos
    uint32_t emb_protect            # the embryo being installed (conn_create): never the victim
    uint32_t pressure_level         # entries in use from which the table is under pressure
    uint32_t embryo_ms              # an embryonic connection's timeout under pressure
    uint8_t secure_tcp              # 0 off, 1 under pressure, 2 always (expiry.pxi)
    uint8_t expire_nodest           # expire_nodest_conn: a deleted server's conns go
    int64_t embryos_evicted
    int64_t fwd_frames              # frames forwarded (each received frame once at most)
    int64_t tx_nobufs               # sendmmsg/send ENOBUFS (the device queue full): frame lost
    int64_t tx_again                # EAGAIN: likewise
    uint64_t last_expiry            # when the ring loop last ran the timer wheel (ms)
    int ifaces_changed              # the control plane closed or opened a ring: poll set anew
    uint8_t route_gen               # bumped by set_routes: live connections choose next hops anew
    int64_t rerouted                # connections whose next hop a route change moved
    int64_t reasons[R_NREASONS]
    int last_reason         # of the latest pass/drop, for Forwarder.process()
    int64_t rx_frames
    int64_t tx_frames
    int64_t new_conns
    int64_t expired_conns
    int64_t templates
    int64_t arp_replies
    int64_t rx_batches      # ring visits that found frames: rx_frames / rx_batches = batch size
    int64_t rx_polls        # poll() calls of the ring loop (it found every ring empty)
    uint32_t busy_poll_us   # after a busy visit, look at the rings this long before poll()
    Pending pending[MAX_PENDING]
    int npending
    Sched* sched[MAX_SERVICES]      # each service's scheduler program (sched.pxi)
    uint8_t overload[MAX_DESTS]     # OVERLOAD (-x/-y) per destination, set by sched.pxi
    PortPool** pools        # [MAX_DESTS * MAX_LADDRS]: ports lent per (LIP, RS), lport.pxi
    uint64_t lport_sweep_ms # a pool's cursor keeps up with a line sweeping it this often (0: off)
    uint16_t ip_id          # IP ID for headers we build (TUN outer, ICMP)
    uint32_t icmp_tokens    # the ICMP errors the director may still send now (icmp.pxi)
    uint64_t icmp_last      # when the bucket was last filled (ms)
    void* sink              # where frames the core makes itself go (TUN segments): a Sink, or
                            # NULL for the TX queues
    uint8_t* segs           # room for those frames (SEG_SLOTS of SEG_SLOT bytes), reused per batch
    int nsegs

# One frame on its way through the core (see handle()).
cdef struct Frame:
    uint8_t* f              # the Ethernet frame; HEADROOM bytes before it are ours to use
    uint32_t flen
    int partial             # L4 checksum not filled in yet (TP_STATUS_CSUMNOTREADY)
    uint8_t vnet            # it came with a virtio_net_hdr (vh), and leaves with one
    Vnet vh                 # as it came
    uint8_t keep_partial    # the L4 checksum stays partial: the receiver (or NIC) completes it
    uint8_t encap           # a TUN aggregate sent whole through the interface's encap_fd
    uint32_t seg            # the IP length of the packets that leave (an aggregate's segments)
    uint8_t* ip
    uint8_t* l4
    uint32_t tot
    uint32_t l4len
    uint8_t proto
    int direction           # DIR_IN or DIR_OUT: which key of the connection it matched
    int out_off             # the frame to send starts at f + out_off ...
    uint32_t out_len        # ... and is this long
    int tx_if
    int rx_if               # the interface slot it came in on (ARP replies go back there)

cdef inline uint32_t flow_hash(FP* fp, uint8_t proto, uint32_t a1, uint16_t p1,
                               uint32_t a2, uint16_t p2) noexcept nogil:
    # The bucket of a connection's (or template's) key: SipHash-1-3 under the table's key.
    return <uint32_t>tuple_hash(fp.key[0], fp.key[1], proto, a1, p1, a2, p2) & (fp.nbuckets - 1)

cdef inline uint32_t chain_len(FP* fp, uint32_t* buckets, uint32_t h, bint out) noexcept nogil:
    # How long a chain is, counted up to CHAIN_MAX (no further: that is the bound it enforces).
    cdef uint32_t i = buckets[h], n = 0
    while i and n < CHAIN_MAX:
        n += 1
        i = fp.conns[i - 1].next_out if out else fp.conns[i - 1].next_in
    return n

cdef inline Conn* lookup_in(FP* fp, uint32_t h, uint8_t proto, uint32_t saddr, uint16_t sport,
                            uint32_t daddr, uint16_t dport) noexcept nogil:
    cdef uint32_t i = fp.bucket_in[h]
    cdef Conn* c
    while i:
        c = &fp.conns[i - 1]
        if (c.caddr == saddr and c.vaddr == daddr and c.cport == sport and c.vport == dport
                and c.proto == proto and not (c.flags & CONN_TEMPLATE)):
            return c
        i = c.next_in
    return NULL

cdef inline Conn* lookup_out(FP* fp, uint32_t h, uint8_t proto, uint32_t saddr, uint16_t sport,
                             uint32_t daddr, uint16_t dport) noexcept nogil:
    cdef uint32_t i = fp.bucket_out[h]
    cdef Conn* c
    while i:
        c = &fp.conns[i - 1]
        if (c.daddr == saddr and c.laddr == daddr and c.dport == sport and c.lport == dport
                and c.proto == proto):
            return c
        i = c.next_out
    return NULL

cdef inline void unlink_chain_in(FP* fp, uint32_t idx) noexcept nogil:
    cdef Conn* c = &fp.conns[idx]
    cdef uint32_t* link = &fp.bucket_in[c.hash]
    while link[0] and link[0] != idx + 1:
        link = &fp.conns[link[0] - 1].next_in
    if link[0]:
        link[0] = c.next_in

cdef inline void unlink_chain_out(FP* fp, uint32_t idx) noexcept nogil:
    cdef Conn* c = &fp.conns[idx]
    cdef uint32_t h = flow_hash(fp, c.proto, c.daddr, c.dport, c.laddr, c.lport)
    cdef uint32_t* link = &fp.bucket_out[h]
    while link[0] and link[0] != idx + 1:
        link = &fp.conns[link[0] - 1].next_out
    if link[0]:
        link[0] = c.next_out

cdef inline bint sees_replies(uint8_t fwd) noexcept nogil:
    # NAT and FULLNAT replies come back through the director: their connections have an out key
    # and their state machine reads both directions. DR, TUN and ENAT replies go straight to
    # the client (the kernel marks such connections IP_VS_CONN_F_NOOUTPUT).
    return fwd == FWD_MASQ or fwd == FWD_FULLNAT

cdef inline bint has_out_key(uint8_t fwd) noexcept nogil:
    # Connections findable by the real server's side of their addresses: those whose replies
    # come back (sees_replies), and ENAT's, whose replies bypass us but whose ICMP errors from
    # routers on the way to the server (to the VIP, quoting VIP:lport -> RIP) come here
    # (icmp.pxi).
    return sees_replies(fwd) or fwd == FWD_ENAT

cdef inline void conn_free(FP* fp, Conn* c) noexcept nogil:
    cdef uint32_t idx = <uint32_t>(c - fp.conns)
    unlink_chain_in(fp, idx)
    if c.control:
        fp.conns[c.control - 1].n_control -= 1
        c.control = 0
    wheel_del(fp, c)
    embryo_del(fp, c)
    if c.flags & CONN_TEMPLATE:
        fp.templates -= 1               # templates count in neither ActiveConn nor InActConn
        fp.dest_tmpl[c.dest] -= 1
    else:
        neigh_put(fp, c.nh_in)
        neigh_put(fp, c.nh_out)
        if has_out_key(c.fwd):
            unlink_chain_out(fp, idx)
        if c.fwd == FWD_FULLNAT or c.fwd == FWD_ENAT:
            lport_free(fp, c.lslot, c.dest, c.lport)
        if c.flags & CONN_INACTIVE:
            fp.inactive[c.dest] -= 1
        else:
            fp.active[c.dest] -= 1
    c.flags = 0
    fp.free_list[fp.nfree] = idx
    fp.nfree += 1
    fp.expired_conns += 1

cdef inline int conn_alloc(FP* fp) noexcept nogil:
    # A free entry's index, or -1. A full table gives up its oldest embryonic connection first
    # (the defence against SYN floods, expiry.pxi): a new flow evicts one that never got past
    # its handshake, never an established one.
    cdef uint32_t idx
    if fp.nfree == 0:
        if not embryo_evict(fp):
            return -1
    fp.nfree -= 1
    idx = fp.free_list[fp.nfree]
    return <int>idx

cdef inline int conn_slot(FP* fp, uint8_t proto, uint32_t caddr, uint16_t cport, uint32_t vaddr,
                          uint16_t vport, uint32_t daddr, uint16_t dport, uint32_t laddr,
                          uint16_t lport, bint out) noexcept nogil:
    # An entry for a connection with these keys: its index, or -R_HASH_CHAIN_FULL when a chain
    # it would join is at CHAIN_MAX already, -R_TABLE_FULL when no entry is free (nor embryonic).
    if chain_len(fp, fp.bucket_in, flow_hash(fp, proto, caddr, cport, vaddr, vport), False) >= CHAIN_MAX:
        return -R_HASH_CHAIN_FULL
    if out and chain_len(fp, fp.bucket_out, flow_hash(fp, proto, daddr, dport, laddr, lport),
                         True) >= CHAIN_MAX:
        return -R_HASH_CHAIN_FULL
    cdef int idx = conn_alloc(fp)
    return idx if idx >= 0 else -R_TABLE_FULL

cdef inline void conn_link(FP* fp, uint32_t idx) noexcept nogil:
    # A new connection's in key (and out key where replies come back) into the hash chains.
    cdef Conn* c = &fp.conns[idx]
    cdef uint32_t ho
    c.hash = flow_hash(fp, c.proto, c.caddr, c.cport, c.vaddr, c.vport)
    c.next_in = fp.bucket_in[c.hash]
    fp.bucket_in[c.hash] = idx + 1
    if has_out_key(c.fwd):
        ho = flow_hash(fp, c.proto, c.daddr, c.dport, c.laddr, c.lport)
        c.next_out = fp.bucket_out[ho]
        fp.bucket_out[ho] = idx + 1

cdef inline bint dest_gone(FP* fp, Conn* c) noexcept nogil:
    # The server c was made for is deleted (its slot free, or given to another server since).
    return not fp.dests[c.dest].in_use or fp.dests[c.dest].gen != c.dgen

cdef inline uint32_t svc_slot(FP* fp, uint8_t proto, uint32_t vip, uint16_t port) noexcept nogil:
    return <uint32_t>tuple_hash(fp.key[0], fp.key[1], proto, vip, port, 0, 0) & (SVC_INDEX - 1)

cdef inline uint32_t vip_slot(FP* fp, uint32_t vip) noexcept nogil:
    return <uint32_t>tuple_hash(fp.key[0], fp.key[1], 0xFF, vip, 0, 0, 0) & (SVC_INDEX - 1)

cdef void svc_index_build(FP* fp) noexcept nogil:
    # Rebuilt by the control plane (under fp.lock) after every change of keys: at most 1024
    # keys in 2048 slots, linear probing; the longest probe is kept so that a miss (every
    # packet of traffic that is no service's) stops there instead of scanning.
    cdef int i, k
    cdef uint32_t h
    cdef ServiceKey* key
    memset(fp.svc_index, 0, sizeof(fp.svc_index))
    memset(fp.vip_index, 0, sizeof(fp.vip_index))
    fp.svc_probe = 0
    fp.vip_probe = 0
    for i in range(fp.nkeys):
        key = &fp.keys[i]
        if not key.in_use:
            continue
        h = svc_slot(fp, key.proto, key.vip, key.vport)
        k = 0
        while fp.svc_index[(h + k) & (SVC_INDEX - 1)]:
            k += 1
        fp.svc_index[(h + k) & (SVC_INDEX - 1)] = <int16_t>(i + 1)
        if k > fp.svc_probe:
            fp.svc_probe = k
        if key.vip == 0:
            continue
        h = vip_slot(fp, key.vip)
        k = 0
        while fp.vip_index[(h + k) & (SVC_INDEX - 1)] and fp.vip_index[(h + k) & (SVC_INDEX - 1)] != key.vip:
            k += 1
        fp.vip_index[(h + k) & (SVC_INDEX - 1)] = key.vip
        if k > fp.vip_probe:
            fp.vip_probe = k

cdef inline int find_service(FP* fp, uint8_t proto, uint32_t daddr, uint16_t dport) noexcept nogil:
    # The service a (protocol, address, port) is for, or -1: at most svc_probe + 1 slots looked at.
    cdef uint32_t h = svc_slot(fp, proto, daddr, dport)
    cdef int k, e
    cdef ServiceKey* key
    for k in range(fp.svc_probe + 1):
        e = fp.svc_index[(h + k) & (SVC_INDEX - 1)]
        if e == 0:
            return -1
        key = &fp.keys[e - 1]
        if key.vip == daddr and key.vport == dport and key.proto == proto:
            return key.svc
    return -1

cdef inline bint is_vip(FP* fp, uint32_t daddr) noexcept nogil:
    cdef uint32_t h = vip_slot(fp, daddr), v
    cdef int k
    if daddr == 0:
        return False
    for k in range(fp.vip_probe + 1):
        v = fp.vip_index[(h + k) & (SVC_INDEX - 1)]
        if v == 0:
            return False
        if v == daddr:
            return True
    return False

cdef int route_lookup(FP* fp, uint32_t daddr, uint32_t* nexthop) noexcept nogil:
    # Longest prefix first: the control plane keeps fp.routes sorted by prefix length.
    cdef int i
    for i in range(fp.nroutes):
        if (daddr & fp.routes[i].mask) == fp.routes[i].prefix:
            nexthop[0] = fp.routes[i].gw if fp.routes[i].gw else daddr
            return fp.routes[i].ifslot
    return -1

cdef int neigh_slot(FP* fp, uint32_t ip, uint8_t ifslot, bint create=True) noexcept nogil:
    # Find or create the entry (open addressing; freed slots are tombstones). An entry never
    # moves while connections use it, so they keep its index.
    cdef uint32_t h = (ip * 0x9E3779B1u) >> 20
    cdef uint32_t k, i
    cdef int reuse = -1
    cdef Neigh* n
    for k in range(NEIGH_SIZE):
        i = (h + k) & (NEIGH_SIZE - 1)
        n = &fp.neigh[i]
        if n.state == NEIGH_FREE:
            break
        if n.state == NEIGH_GONE:
            if reuse < 0:
                reuse = i
        elif n.ip == ip and n.ifslot == ifslot:
            return i
    else:
        if reuse < 0:
            return -1
    if not create:
        return -1
    if reuse >= 0:
        i = reuse
    n = &fp.neigh[i]
    n.ip = ip
    n.ifslot = ifslot
    n.state = NEIGH_WANTED
    n.pinned = 0
    n.refs = 0
    return i

cdef inline void neigh_put(FP* fp, uint16_t i) noexcept nogil:
    cdef Neigh* n = &fp.neigh[i]
    if n.refs:
        n.refs -= 1
    if n.refs == 0 and not n.pinned:
        n.state = NEIGH_GONE    # an on-link client that no connection needs any more

cdef inline void conn_reroute(FP* fp, Conn* c) noexcept nogil:
    # The routes changed since c chose its next hops (a connection keeps neighbour slots, not
    # routes): choose them again, on its next packet, O(1) and once per change. Where no route
    # is left the old next hop stays (the packet goes where it went; the kernel would drop).
    cdef int nh_in, nh_out
    c.rgen = fp.route_gen
    nh_in = nexthop_for(fp, c.daddr)
    nh_out = nexthop_for(fp, c.daddr if c.fwd == FWD_ROUTE or c.fwd == FWD_ENAT else c.caddr)
    if nh_in < 0 or nh_out < 0:
        if nh_in >= 0:
            neigh_put(fp, <uint16_t>nh_in)
        if nh_out >= 0:
            neigh_put(fp, <uint16_t>nh_out)
        return
    if nh_in != c.nh_in or nh_out != c.nh_out:
        fp.rerouted += 1
    neigh_put(fp, c.nh_in)
    neigh_put(fp, c.nh_out)
    c.nh_in = <uint16_t>nh_in
    c.nh_out = <uint16_t>nh_out

cdef int nexthop_for(FP* fp, uint32_t daddr) noexcept nogil:
    # The neighbour slot toward daddr, with a reference taken (neigh_put gives it back).
    cdef uint32_t nh = 0
    cdef int ifslot = route_lookup(fp, daddr, &nh)
    if ifslot < 0:
        return -1
    cdef int i = neigh_slot(fp, nh, <uint8_t>ifslot)
    if i >= 0:
        fp.neigh[i].refs += 1
    return i
