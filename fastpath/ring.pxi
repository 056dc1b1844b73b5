# The AF_PACKET shell around the core: a TPACKET_V2 (or V3) RX ring per open interface slot, the
# poll loop over them (link errors cleared, not spun on; a deleted interface's ring closed), the walk over one block of frames, and the TX side (a queue of iovecs per
# interface pointing at the frames in place in the RX ring, flushed with sendmmsg). The loop
# runs without the GIL; fp.lock is taken once per block. Forwarder.open()/close()/run()/stop()
# and the ring_drops counter (in _forward.pyx) are thin wrappers over this file.

cdef enum:
    V2_SLOT = 69632         # 17 pages: a 64 KB GSO aggregate and its headers fit one slot
    SMALL_SLOT = 2048       # split V2 ring: frames up to SMALL_MAX (an MTU-sized frame and more)
    SMALL_MAX = 1900        # bytes of frame a small slot holds whole: 2048 - 140 (tpacket_rcv's
                            # macoff: TPACKET_ALIGN(52 + 16) + HEADROOM 64 + vnet 10 - 14)
    V2_BLOCK = 1 << 20      # V2 block of small slots (the kernel allocates a ring by blocks)
    RX_BATCH = 1024         # V2: frames per visit at most (a V3 block holds ~900 small ones); the
                            # Python schedulers' queue resolves itself when full (new_flow())
    WHEEL_BATCH = 1024      # timer-wheel entries looked at after each batch (a V2 batch is at
                            # most RX_BATCH frames, each making one entry at most: expiry keeps up)

# Where the kernel puts a frame's sockaddr_ll (its sll_pkttype): right after the frame header,
# TPACKET_ALIGN()ed to 16 (af_packet.c tpacket_rcv(), TPACKET2_HDRLEN / TPACKET3_HDRLEN).
cdef size_t TPACKET2_SLL = (sizeof(tpacket2_hdr) + 15) & ~(<size_t>15)
cdef size_t TPACKET3_SLL = (sizeof(tpacket3_hdr) + 15) & ~(<size_t>15)

cdef int ring_open(Iface* f, uint32_t block_size, uint32_t nblocks, uint32_t tov_ms,
                   int version=TPACKET_V2, uint32_t slots=512, uint32_t big_slots=0) except -1:
    # Socket(s), ring(s) and mmap for one interface (the caller checked the slot). Needs root.
    #   V3: blocks of frames, each served when full or after tov_ms.
    #   V2, big_slots 0: `slots` frames of V2_SLOT, each served as soon as it is written.
    #   V2, big_slots > 0 (split): `slots` frames of SMALL_SLOT for every frame up to
    #       SMALL_MAX bytes and `big_slots` of V2_SLOT for the rest (GSO aggregates, jumbo
    #       frames), on two sockets; a cBPF length filter on each decides, so the kernel copies
    #       a frame once. Why: a V2 ring holds one frame per slot, and at 68 KB a slot 512
    #       slots are only 512 frames of queue, where a V3 ring of the same 35 MB holds 10^5.
    #       When the packet thread waits for its CPU (the NAPI thread has it), a short ring
    #       overflows and the kernel's receive work on every dropped frame is wasted: the
    #       split keeps V2's promptness with a V3-sized queue in 20 MB.
    cdef tpacket_req3 req
    cdef uint8_t* ring = NULL
    cdef uint8_t* big = NULL
    cdef size_t size = 0, big_size = 0
    cdef int fd = -1, big_fd = -1, gso_fd = -1, encap_fd = -1
    cdef uint32_t slot = V2_SLOT
    memset(&req, 0, sizeof(req))
    if version == TPACKET_V3:
        req.tp_block_size = block_size
        req.tp_block_nr = nblocks
        req.tp_frame_size = 2048
        req.tp_frame_nr = (block_size // 2048) * nblocks
        req.tp_retire_blk_tov = tov_ms
    elif big_slots == 0:
        # A frame is the user's as soon as the kernel has written it (its own tp_status),
        # where a V3 block waits until it is full or its timer (1 ms at least) retires it:
        # at light load every frame would wait up to a millisecond each way. V2 serves it at
        # once and still batches: the loop takes every frame that is ready before it sends.
        _v2_req(&req, V2_SLOT, slots)
    else:
        slot = SMALL_SLOT
        _v2_req(&req, SMALL_SLOT, slots)
    try:
        fd = rx_socket(f.ifindex, version, &req, 0, SMALL_MAX if big_slots else 0, &ring, &size)
        if big_slots:
            _v2_req(&req, V2_SLOT, big_slots)
            big_fd = rx_socket(f.ifindex, version, &req, SMALL_MAX + 1, 0, &big, &big_size)
        # GSO aggregates leave through the qdisc: with PACKET_QDISC_BYPASS one that needs
        # software segmentation (an egress without TSO) is dropped silently (__dev_direct_xmit).
        gso_fd = tx_socket(f.ifindex, 0)
        if f.encap_mark:
            encap_fd = tx_socket(f.ifindex, f.encap_mark)
    except BaseException:
        if gso_fd >= 0:
            close(gso_fd)
        if big_fd >= 0:
            munmap(big, big_size)
            close(big_fd)
        if fd >= 0:
            munmap(ring, size)
            close(fd)
        raise
    f.fd = fd
    f.gso_fd = gso_fd
    f.encap_fd = encap_fd
    f.version = version
    f.ring = ring
    f.ring_size = size
    f.block_size = block_size if version == TPACKET_V3 else slot
    f.nblocks = nblocks if version == TPACKET_V3 else req_frames(slots, slot)
    f.cur_block = 0
    f.big_fd = big_fd
    f.big_ring = big
    f.big_size = big_size
    f.big_slots = req_frames(big_slots, V2_SLOT) if big_slots else 0
    f.big_cur = 0
    f.tx.n = 0
    return 0

cdef inline uint32_t per_block(uint32_t slot) noexcept nogil:
    return V2_BLOCK // slot if slot < V2_BLOCK else 1

cdef inline uint32_t req_frames(uint32_t frames, uint32_t slot) noexcept nogil:
    # _v2_req() rounds the frame count up to whole blocks
    cdef uint32_t per = per_block(slot)
    return (frames + per - 1) // per * per

cdef void _v2_req(tpacket_req3* req, uint32_t slot, uint32_t frames) noexcept nogil:
    # V2: blocks of whole frames, mapped back to back, so frame k sits at k * slot
    memset(req, 0, sizeof(tpacket_req3))
    cdef uint32_t per = per_block(slot)
    req.tp_frame_size = slot
    req.tp_block_size = per * slot
    req.tp_frame_nr = req_frames(frames, slot)
    req.tp_block_nr = req.tp_frame_nr // per

cdef int rx_socket(int ifindex, int version, tpacket_req3* req, uint32_t min_len, uint32_t max_len,
                   uint8_t** ring_out, size_t* size_out) except -1:
    # One receiving packet socket with its ring mapped; frames outside [min_len, max_len]
    # (0: no bound) are filtered out before the kernel copies them (sk_filter in tpacket_rcv).
    cdef int fd = socket(AF_PACKET, SOCK_RAW, 0)   # protocol 0: receives nothing until bind
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    cdef int one = 1, reserve = HEADROOM
    cdef sockaddr_ll sll
    cdef size_t size = <size_t>req.tp_block_size * req.tp_block_nr
    cdef void* ring = MAP_FAILED
    try:
        if min_len or max_len:
            length_filter(fd, min_len, max_len)
        _sockopt(fd, PACKET_VERSION, &version, sizeof(int), "PACKET_VERSION")
        # Headroom before every frame in the ring: TUN and TOA grow frames at the front in place.
        _sockopt(fd, PACKET_RESERVE, &reserve, sizeof(int), "PACKET_RESERVE")
        # A virtio_net_hdr before every frame, both ways (set before the ring: af_packet.c
        # refuses it after): partial checksums and GSO aggregates pass through as they are.
        _sockopt(fd, PACKET_VNET_HDR, &one, sizeof(int), "PACKET_VNET_HDR")
        _sockopt(fd, PACKET_RX_RING, req,
                 sizeof(tpacket_req) if version == TPACKET_V2 else sizeof(tpacket_req3), "PACKET_RX_RING")
        ring = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if ring == MAP_FAILED:
            raise OSError(errno, "mmap of the RX ring: " + os.strerror(errno))
        _sockopt(fd, PACKET_QDISC_BYPASS, &one, sizeof(int), "PACKET_QDISC_BYPASS")
        _sockopt(fd, PACKET_IGNORE_OUTGOING, &one, sizeof(int), "PACKET_IGNORE_OUTGOING")
        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_protocol = htons(ETH_P_ALL)
        sll.sll_ifindex = ifindex
        if bind(fd, <sockaddr*>&sll, sizeof(sll)) < 0:
            raise OSError(errno, "bind: " + os.strerror(errno))
    except BaseException:
        if ring != MAP_FAILED:
            munmap(ring, size)
        close(fd)
        raise
    ring_out[0] = <uint8_t*>ring
    size_out[0] = size
    return fd

cdef int tx_socket(int ifindex, uint32_t mark) except -1:
    # A send-only packet socket with vnet headers, through the qdisc (see ring_open); a
    # nonzero mark is every skb's skb->mark (SO_MARK), what lbd's tc program looks for.
    cdef int one = 1
    cdef sockaddr_ll sll
    cdef int fd = socket(AF_PACKET, SOCK_RAW, 0)
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_ifindex = ifindex              # protocol 0: receives nothing
    try:
        _sockopt(fd, PACKET_VNET_HDR, &one, sizeof(int), "PACKET_VNET_HDR")
        if mark and setsockopt(fd, SOL_SOCKET, SO_MARK, &mark, sizeof(uint32_t)) < 0:
            raise OSError(errno, f"setsockopt SO_MARK: {os.strerror(errno)}")
        if bind(fd, <sockaddr*>&sll, sizeof(sll)) < 0:
            raise OSError(errno, "bind: " + os.strerror(errno))
    except BaseException:
        close(fd)
        raise
    return fd

cdef length_filter(int fd, uint32_t min_len, uint32_t max_len):
    # classic BPF: accept the whole frame (the ring's slot bounds the copy) when
    # min_len <= len <= max_len (0: no bound); len is the frame with its Ethernet header
    # (tpacket_rcv() runs the filter after pushing the MAC header back).
    #   0 ld len;  [jgt max_len: drop];  [jgt min_len - 1: accept, else drop];  accept;  drop
    cdef sock_filter prog[5]
    cdef sock_fprog fprog
    cdef int n = 1
    prog[0] = sock_filter(code=BPF_LD | BPF_W | BPF_LEN, jt=0, jf=0, k=0)
    cdef int tests = (1 if max_len else 0) + (1 if min_len else 0)
    # the accept is at 1 + tests, the drop at 2 + tests; a jump goes 1 + offset ahead
    if max_len:
        prog[n] = sock_filter(code=BPF_JMP | BPF_JGT | BPF_K, jt=<uint8_t>(2 + tests - n - 1), jf=0,
                              k=max_len)
        n += 1
    if min_len:
        prog[n] = sock_filter(code=BPF_JMP | BPF_JGT | BPF_K, jt=<uint8_t>(1 + tests - n - 1),
                              jf=<uint8_t>(2 + tests - n - 1), k=min_len - 1)
        n += 1
    prog[n] = sock_filter(code=BPF_RET | BPF_K, jt=0, jf=0, k=0xFFFFFFFF)
    prog[n + 1] = sock_filter(code=BPF_RET | BPF_K, jt=0, jf=0, k=0)
    fprog.len = <unsigned short>(n + 2)
    fprog.filter = prog
    if setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &fprog, sizeof(fprog)) < 0:
        raise OSError(errno, f"setsockopt SO_ATTACH_FILTER: {os.strerror(errno)}")

cdef _sockopt(int fd, int name, void* val, socklen_t n, what):
    if setsockopt(fd, SOL_PACKET, name, val, n) < 0:
        raise OSError(errno, f"setsockopt {what}: {os.strerror(errno)}")

cdef void ring_close_one(Iface* f) noexcept nogil:
    if f.fd >= 0:
        munmap(f.ring, f.ring_size)
        close(f.fd)
        f.fd = -1
    if f.big_fd >= 0:
        munmap(f.big_ring, f.big_size)
        close(f.big_fd)
        f.big_fd = -1
    if f.gso_fd >= 0:
        close(f.gso_fd)
        f.gso_fd = -1
    if f.encap_fd >= 0:
        close(f.encap_fd)
        f.encap_fd = -1
    f.tx.n = 0

cdef void ring_close(FP* fp) noexcept nogil:
    cdef int i
    for i in range(MAX_IFACES):
        ring_close_one(&fp.ifaces[i])

cdef int64_t ring_drop_count(FP* fp) noexcept nogil:
    # Frames the kernel dropped for want of ring space since the last call (PACKET_STATISTICS
    # counts from the previous read).
    cdef tpacket_stats_v3 st
    cdef socklen_t sl = sizeof(st)
    cdef int64_t n = 0
    cdef int i
    for i in range(MAX_IFACES):
        if fp.ifaces[i].fd >= 0:
            if getsockopt(fp.ifaces[i].fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0:
                n += st.tp_drops
        if fp.ifaces[i].big_fd >= 0:
            if getsockopt(fp.ifaces[i].big_fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0:
                n += st.tp_drops
    return n

cdef int poll_set(FP* fp, pollfd* pfds, int* slots) noexcept nogil:
    # The poll set: every open ring; an interface the control plane marked gone is closed here,
    # by the loop itself (nothing else touches a ring while the loop runs).
    cdef int i, nfds = 0
    for i in range(MAX_IFACES):
        if fp.ifaces[i].fd >= 0 and fp.ifaces[i].gone:
            ring_close_one(&fp.ifaces[i])
        if fp.ifaces[i].fd >= 0:
            nfds = poll_add(pfds, slots, nfds, fp.ifaces[i].fd, i)
            if fp.ifaces[i].big_fd >= 0:
                nfds = poll_add(pfds, slots, nfds, fp.ifaces[i].big_fd, i)
    return nfds

cdef inline int poll_add(pollfd* pfds, int* slots, int nfds, int fd, int i) noexcept nogil:
    pfds[nfds].fd = fd
    pfds[nfds].events = POLLIN
    pfds[nfds].revents = 0
    slots[nfds] = i
    return nfds + 1

cdef void ring_errors(FP* fp, pollfd* pfds, int* slots, int nfds) noexcept nogil:
    # POLLERR on a packet socket is its sk_err (ENETDOWN when the link goes down or the device
    # is unregistered: af_packet.c packet_notifier()): reading SO_ERROR clears it, so the next
    # poll sleeps instead of returning at once forever. The socket stays bound: when the link
    # comes back (NETDEV_UP) the kernel hooks it up again and frames flow; a deleted interface
    # is closed when the control plane says so (Forwarder.iface_gone()).
    cdef int k, err = 0
    cdef socklen_t sl = sizeof(int)
    cdef Iface* f
    for k in range(nfds):
        if pfds[k].revents & (POLLERR | POLLHUP | POLLNVAL):
            f = &fp.ifaces[slots[k]]
            f.errors += 1
            f.down = 1
            if getsockopt(pfds[k].fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0 or pfds[k].revents & POLLNVAL:
                pfds[k].fd = -1             # nothing to clear: out of the poll (poll_set again)
        elif pfds[k].revents & POLLIN:
            fp.ifaces[slots[k]].down = 0

cdef void ring_loop(FP* fp) noexcept nogil:
    # Until fp.stopping: every ring's current block when the kernel has handed it over, else a
    # poll on all of them (after fp.busy_poll_us of looking, set_busy_poll); the timer wheel at
    # least every 50 ms, busy or idle.
    cdef pollfd pfds[2 * MAX_IFACES]       # a ring's socket, and a split ring's big one
    cdef int slots[2 * MAX_IFACES]
    cdef int nfds, i, busy, r
    cdef uint64_t now, spin_until = 0
    cdef Iface* f
    cdef tpacket_block_desc* blk
    fp.ifaces_changed = 0
    nfds = poll_set(fp, pfds, slots)
    while not fp.stopping:
        if fp.ifaces_changed:
            pthread_mutex_lock(&fp.lock)
            fp.ifaces_changed = 0
            nfds = poll_set(fp, pfds, slots)
            pthread_mutex_unlock(&fp.lock)
        busy = 0
        for i in range(MAX_IFACES):
            f = &fp.ifaces[i]
            if f.fd < 0:
                continue
            if f.version == TPACKET_V2:
                busy |= ring_slots(fp, i) > 0
                continue
            blk = <tpacket_block_desc*>(f.ring + <size_t>f.cur_block * f.block_size)
            if blk.hdr.bh1.block_status & TP_STATUS_USER:
                ring_block(fp, i, blk)
                busy = 1
        if busy:
            if fp.busy_poll_us:
                spin_until = now_us() + fp.busy_poll_us
        elif not fp.busy_poll_us or now_us() >= spin_until:
            fp.rx_polls += 1
            r = poll(pfds, nfds, 50)
            if r > 0:
                ring_errors(fp, pfds, slots, nfds)
        now = now_ms()
        if now >= fp.last_expiry + 50:
            # Idle (or between batches for 50 ms): the wheel as far as now, in slices.
            pthread_mutex_lock(&fp.lock)
            wheel_run(fp, now, 65536, False)
            fp.last_expiry = now
            pthread_mutex_unlock(&fp.lock)

cdef void ring_block(FP* fp, int i, tpacket_block_desc* blk) noexcept nogil:
    # One block of interface slot i: established flows forwarded at once, in place; new flows
    # queued and resolved together (newflow.pxi); then the TX queues flushed and the block
    # given back to the kernel.
    cdef Iface* f = &fp.ifaces[i]
    cdef uint32_t k, npkts = blk.hdr.bh1.num_pkts
    cdef tpacket3_hdr* h = <tpacket3_hdr*>(<uint8_t*>blk + blk.hdr.bh1.offset_to_first_pkt)
    cdef uint8_t* frame
    cdef int v, partial
    cdef Frame fr
    cdef uint64_t now
    pthread_mutex_lock(&fp.lock)
    now = now_ms()
    fp.npending = 0
    fp.rx_batches += 1
    for k in range(npkts):
        ring_frame(fp, i, <uint8_t*>h + h.tp_mac, h.tp_snaplen, h.tp_len, h.tp_status, now,
                   (<sockaddr_ll*>(<uint8_t*>h + TPACKET3_SLL)).sll_pkttype)
        h = <tpacket3_hdr*>(<uint8_t*>h + h.tp_next_offset)
    if fp.npending:
        resolve_pending(fp, now, NULL)
    tx_flush_all(fp)
    fp.nsegs = 0
    wheel_run(fp, now, WHEEL_BATCH, False)
    pthread_mutex_unlock(&fp.lock)
    __sync_synchronize()    # every access to the block done before the kernel has it again
    blk.hdr.bh1.block_status = TP_STATUS_KERNEL
    f.cur_block = (f.cur_block + 1) % f.nblocks

cdef inline int handle_received(FP* fp, Frame* fr, uint64_t now, Pending* p,
                                uint8_t pkttype) noexcept nogil:
    # A frame the ring saw that is not for this host (promiscuous mode: PACKET_OTHERHOST) or
    # that this host sent (PACKET_OUTGOING, should PACKET_IGNORE_OUTGOING be missing) is not
    # the director's to forward: passed and counted.
    if pkttype == PACKET_OTHERHOST or pkttype == PACKET_OUTGOING:
        return pass_(fp, R_NOT_FOR_US)
    return handle(fp, fr, now, p)

cdef inline void ring_frame(FP* fp, int i, uint8_t* frame, uint32_t snaplen, uint32_t length,
                            uint32_t status, uint64_t now, uint8_t pkttype) noexcept nogil:
    # One frame in place in the ring: forwarded at once, or queued as a new flow.
    cdef Frame fr
    cdef int v
    fp.rx_frames += 1
    if snaplen < length:
        fp.reasons[R_TRUNCATED] += 1
        return
    memset(&fr, 0, sizeof(Frame))
    fr.f = frame
    fr.flen = snaplen
    fr.partial = 1 if status & TP_STATUS_CSUMNOTREADY else 0
    fr.rx_if = i
    fr.vnet = 1
    vnet_load(&fr.vh, frame - VNET_LEN)
    v = handle_received(fp, &fr, now, &fp.pending[fp.npending], pkttype)
    if v == V_FORWARD:
        fp.fwd_frames += 1
        tx_queue(fp, &fr)
    elif v == V_NEW:
        new_flow(fp, &fr, now, NULL)    # a C scheduler: forwarded now; Python: queued

cdef inline tpacket2_hdr* v2_slot(uint8_t* ring, uint32_t slot_size, uint32_t k) noexcept nogil:
    return <tpacket2_hdr*>(ring + <size_t>k * slot_size)

cdef inline bint v2_before(tpacket2_hdr* a, tpacket2_hdr* b) noexcept nogil:
    # a was received before b (the kernel stamps each frame as tpacket_rcv() takes it)
    return a.tp_sec < b.tp_sec or (a.tp_sec == b.tp_sec and a.tp_nsec < b.tp_nsec)

cdef inline void v2_frame(FP* fp, int i, tpacket2_hdr* h, uint64_t now) noexcept nogil:
    __sync_synchronize()                # the status before the frame (the kernel's smp_wmb)
    ring_frame(fp, i, <uint8_t*>h + h.tp_mac, h.tp_snaplen, h.tp_len, h.tp_status, now,
               (<sockaddr_ll*>(<uint8_t*>h + TPACKET2_SLL)).sll_pkttype)

cdef int ring_slots(FP* fp, int i) noexcept nogil:
    # TPACKET_V2: every frame the kernel has handed over, up to RX_BATCH, then what they
    # made sent and the slots given back (the TX queue points into them until it is flushed).
    # A split ring's two rings are taken in the order their frames arrived (their stamps), so
    # that a flow's aggregate and the short segment after it leave in that order.
    cdef Iface* f = &fp.ifaces[i]
    cdef tpacket2_hdr* h = v2_slot(f.ring, f.block_size, f.cur_block)
    cdef tpacket2_hdr* hb = v2_slot(f.big_ring, V2_SLOT, f.big_cur) if f.big_fd >= 0 else NULL
    cdef uint32_t first = f.cur_block, first_b = f.big_cur, n = 0, nb = 0, k
    cdef bint small, big
    cdef uint64_t now
    if not (h.tp_status & TP_STATUS_USER) and not (hb != NULL and hb.tp_status & TP_STATUS_USER):
        return 0
    pthread_mutex_lock(&fp.lock)
    now = now_ms()
    fp.npending = 0
    fp.rx_batches += 1
    while n + nb < RX_BATCH:
        # a slot is the kernel's again only after the batch: never go round a ring in one
        small = n < f.nblocks and h.tp_status & TP_STATUS_USER
        big = hb != NULL and nb < f.big_slots and hb.tp_status & TP_STATUS_USER
        if big and (not small or v2_before(hb, h)):
            v2_frame(fp, i, hb, now)
            nb += 1
            f.big_cur = (f.big_cur + 1) % f.big_slots
            hb = v2_slot(f.big_ring, V2_SLOT, f.big_cur)
        elif small:
            v2_frame(fp, i, h, now)
            n += 1
            f.cur_block = (f.cur_block + 1) % f.nblocks
            h = v2_slot(f.ring, f.block_size, f.cur_block)
        else:
            break
    if fp.npending:
        resolve_pending(fp, now, NULL)
    tx_flush_all(fp)
    fp.nsegs = 0
    wheel_run(fp, now, WHEEL_BATCH, False)
    pthread_mutex_unlock(&fp.lock)
    __sync_synchronize()
    for k in range(n):
        v2_slot(f.ring, f.block_size, (first + k) % f.nblocks).tp_status = TP_STATUS_KERNEL
    for k in range(nb):
        v2_slot(f.big_ring, V2_SLOT, (first_b + k) % f.big_slots).tp_status = TP_STATUS_KERNEL
    return n + nb

cdef void tx_flush_all(FP* fp) noexcept nogil:
    cdef int k
    for k in range(MAX_IFACES):
        if fp.ifaces[k].tx.n:
            tx_flush(fp, k)

cdef void tx_queue(FP* fp, Frame* fr) noexcept nogil:
    # The frame goes out with its virtio_net_hdr in the 10 bytes before it (headroom). A GSO
    # aggregate is sent at once through the qdisc socket, after what is queued (order kept).
    cdef int ifslot = fr.tx_if
    cdef TxQueue* q = &fp.ifaces[ifslot].tx
    cdef uint8_t* frame = fr.f + fr.out_off
    cdef uint32_t n = fr.out_len + VNET_LEN
    if not 0 <= ifslot < MAX_IFACES or fp.ifaces[ifslot].fd < 0:
        fp.reasons[R_TX_ERROR] += 1
        return
    frame -= VNET_LEN
    vnet_for_tx(fr, frame)
    if frame[1] != GSO_NONE:
        if q.n:
            tx_flush(fp, ifslot)
        if send(fp.ifaces[ifslot].encap_fd if fr.encap else fp.ifaces[ifslot].gso_fd, frame, n, 0) < 0:
            tx_failed(fp)
        else:
            fp.tx_frames += 1
        return
    if q.n == TX_BATCH:
        tx_flush(fp, ifslot)
    q.iov[q.n].iov_base = frame
    q.iov[q.n].iov_len = n
    memset(&q.msgs[q.n], 0, sizeof(mmsghdr))
    q.msgs[q.n].msg_hdr.msg_iov = &q.iov[q.n]
    q.msgs[q.n].msg_hdr.msg_iovlen = 1
    q.n += 1

cdef inline void tx_failed(FP* fp) noexcept nogil:
    # A frame sendmmsg/send refused (errno still its): counted, and by cause where it is the
    # device's queue (ENOBUFS) or a would-block (EAGAIN); a link that is down gives ENETDOWN.
    fp.reasons[R_TX_ERROR] += 1
    if errno == ENOBUFS:
        fp.tx_nobufs += 1
    elif errno == EAGAIN:                # (EWOULDBLOCK is EAGAIN on Linux)
        fp.tx_again += 1

cdef void tx_flush(FP* fp, int ifslot) noexcept nogil:
    cdef Iface* f = &fp.ifaces[ifslot]
    cdef int sent = 0, r
    while sent < f.tx.n:
        r = sendmmsg(f.fd, &f.tx.msgs[sent], f.tx.n - sent, 0)
        if r < 0:
            if errno == EINTR:
                continue
            tx_failed(fp)                   # this frame is lost (e.g. ENOBUFS); go on
            sent += 1
        else:
            fp.tx_frames += r
            sent += r
    f.tx.n = 0
