# The AF_PACKET shell around the core: a TPACKET_V2 (or V3) RX ring per open interface slot, the
# poll loop over them (link errors cleared, not spun on; a deleted interface's ring closed), the walk over one block of frames, and the TX side (a queue of iovecs per
# interface pointing at the frames in place in the RX ring, flushed with sendmmsg). The loop
# runs without the GIL; fp.lock is taken once per block. Forwarder.open()/close()/run()/stop()
# and the ring_drops counter (in _forward.pyx) are thin wrappers over this file.

cdef enum:
    V2_SLOT = 69632         # 17 pages: a 64 KB GSO aggregate and its headers fit one slot
    WHEEL_BATCH = 1024      # timer-wheel entries looked at after each batch (at most 256
                            # frames, each making one entry at most: expiry keeps up)

# Where the kernel puts a frame's sockaddr_ll (its sll_pkttype): right after the frame header,
# TPACKET_ALIGN()ed to 16 (af_packet.c tpacket_rcv(), TPACKET2_HDRLEN / TPACKET3_HDRLEN).
cdef size_t TPACKET2_SLL = (sizeof(tpacket2_hdr) + 15) & ~(<size_t>15)
cdef size_t TPACKET3_SLL = (sizeof(tpacket3_hdr) + 15) & ~(<size_t>15)

cdef int ring_open(Iface* f, uint32_t block_size, uint32_t nblocks, uint32_t tov_ms,
                   int version=TPACKET_V2, uint32_t slots=512) except -1:
    # Socket, ring and mmap for one interface (the caller checked the slot). Needs root.
    cdef int fd = socket(AF_PACKET, SOCK_RAW, 0)
    if fd < 0:
        raise OSError(errno, os.strerror(errno))
    cdef int one = 1, reserve = HEADROOM
    cdef tpacket_req3 req
    cdef sockaddr_ll sll
    memset(&req, 0, sizeof(req))
    req.tp_block_size = block_size
    req.tp_block_nr = nblocks
    req.tp_frame_size = 2048
    req.tp_frame_nr = (block_size // 2048) * nblocks
    req.tp_retire_blk_tov = tov_ms
    if version == TPACKET_V2:
        # A frame is the user's as soon as the kernel has written it (its own tp_status),
        # where a V3 block waits until it is full or its timer (1 ms at least) retires it:
        # at light load every frame would wait up to a millisecond each way. V2 serves it at
        # once and still batches: the loop takes every frame that is ready before it sends.
        block_size = V2_SLOT
        nblocks = slots
        req.tp_block_size = V2_SLOT
        req.tp_block_nr = slots
        req.tp_frame_size = V2_SLOT
        req.tp_frame_nr = slots
    memset(&sll, 0, sizeof(sll))
    sll.sll_family = AF_PACKET
    sll.sll_protocol = htons(ETH_P_ALL)
    sll.sll_ifindex = f.ifindex
    cdef void* ring = MAP_FAILED
    cdef int gso_fd = -1
    try:
        _sockopt(fd, PACKET_VERSION, &version, sizeof(int), "PACKET_VERSION")
        # Headroom before every frame in the ring: TUN and TOA grow frames at the front in place.
        _sockopt(fd, PACKET_RESERVE, &reserve, sizeof(int), "PACKET_RESERVE")
        # A virtio_net_hdr before every frame, both ways (set before the ring: af_packet.c
        # refuses it after): partial checksums and GSO aggregates pass through as they are.
        _sockopt(fd, PACKET_VNET_HDR, &one, sizeof(int), "PACKET_VNET_HDR")
        _sockopt(fd, PACKET_RX_RING, &req,
                 sizeof(tpacket_req) if version == TPACKET_V2 else sizeof(req), "PACKET_RX_RING")
        ring = mmap(NULL, <size_t>block_size * nblocks, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if ring == MAP_FAILED:
            raise OSError(errno, "mmap of the RX ring: " + os.strerror(errno))
        _sockopt(fd, PACKET_QDISC_BYPASS, &one, sizeof(int), "PACKET_QDISC_BYPASS")
        _sockopt(fd, PACKET_IGNORE_OUTGOING, &one, sizeof(int), "PACKET_IGNORE_OUTGOING")
        if bind(fd, <sockaddr*>&sll, sizeof(sll)) < 0:
            raise OSError(errno, "bind: " + os.strerror(errno))
        # GSO aggregates leave through the qdisc: with PACKET_QDISC_BYPASS one that needs
        # software segmentation (an egress without TSO) is dropped silently (__dev_direct_xmit).
        gso_fd = socket(AF_PACKET, SOCK_RAW, 0)
        if gso_fd < 0:
            raise OSError(errno, os.strerror(errno))
        _sockopt(gso_fd, PACKET_VNET_HDR, &one, sizeof(int), "PACKET_VNET_HDR")
        sll.sll_protocol = 0                # sends only: receives nothing
        if bind(gso_fd, <sockaddr*>&sll, sizeof(sll)) < 0:
            raise OSError(errno, "bind: " + os.strerror(errno))
    except BaseException:
        if gso_fd >= 0:
            close(gso_fd)
        if ring != MAP_FAILED:
            munmap(ring, <size_t>block_size * nblocks)
        close(fd)
        raise
    f.fd = fd
    f.gso_fd = gso_fd
    f.version = version
    f.ring = <uint8_t*>ring
    f.ring_size = <size_t>block_size * nblocks
    f.block_size = block_size
    f.nblocks = nblocks
    f.cur_block = 0
    f.tx.n = 0
    return 0

cdef _sockopt(int fd, int name, void* val, socklen_t n, what):
    if setsockopt(fd, SOL_PACKET, name, val, n) < 0:
        raise OSError(errno, f"setsockopt {what}: {os.strerror(errno)}")

cdef void ring_close_one(Iface* f) noexcept nogil:
    if f.fd >= 0:
        munmap(f.ring, f.ring_size)
        close(f.fd)
        f.fd = -1
    if f.gso_fd >= 0:
        close(f.gso_fd)
        f.gso_fd = -1
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
    return n

cdef int poll_set(FP* fp, pollfd* pfds, int* slots) noexcept nogil:
    # The poll set: every open ring; an interface the control plane marked gone is closed here,
    # by the loop itself (nothing else touches a ring while the loop runs).
    cdef int i, nfds = 0
    for i in range(MAX_IFACES):
        if fp.ifaces[i].fd >= 0 and fp.ifaces[i].gone:
            ring_close_one(&fp.ifaces[i])
        if fp.ifaces[i].fd >= 0:
            pfds[nfds].fd = fp.ifaces[i].fd
            pfds[nfds].events = POLLIN
            pfds[nfds].revents = 0
            slots[nfds] = i
            nfds += 1
    return nfds

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
    # poll on all of them; the timer wheel at least every 50 ms, busy or idle.
    cdef pollfd pfds[MAX_IFACES]
    cdef int slots[MAX_IFACES]
    cdef int nfds, i, busy, r
    cdef uint64_t now
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
        if not busy:
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

cdef int ring_slots(FP* fp, int i) noexcept nogil:
    # TPACKET_V2: every frame the kernel has handed over, up to MAX_PENDING, then what they
    # made sent and the slots given back (the TX queue points into them until it is flushed).
    cdef Iface* f = &fp.ifaces[i]
    cdef tpacket2_hdr* h = <tpacket2_hdr*>(f.ring + <size_t>f.cur_block * f.block_size)
    cdef uint32_t first = f.cur_block, n = 0, k
    cdef uint64_t now
    if not (h.tp_status & TP_STATUS_USER):
        return 0
    pthread_mutex_lock(&fp.lock)
    now = now_ms()
    fp.npending = 0
    fp.rx_batches += 1
    while n < MAX_PENDING and (h.tp_status & TP_STATUS_USER):
        __sync_synchronize()            # the status before the frame (the kernel's smp_wmb)
        ring_frame(fp, i, <uint8_t*>h + h.tp_mac, h.tp_snaplen, h.tp_len, h.tp_status, now,
                   (<sockaddr_ll*>(<uint8_t*>h + TPACKET2_SLL)).sll_pkttype)
        n += 1
        f.cur_block = (f.cur_block + 1) % f.nblocks
        h = <tpacket2_hdr*>(f.ring + <size_t>f.cur_block * f.block_size)
    if fp.npending:
        resolve_pending(fp, now, NULL)
    tx_flush_all(fp)
    fp.nsegs = 0
    wheel_run(fp, now, WHEEL_BATCH, False)
    pthread_mutex_unlock(&fp.lock)
    __sync_synchronize()
    for k in range(n):
        (<tpacket2_hdr*>(f.ring + <size_t>((first + k) % f.nblocks) * f.block_size)).tp_status = TP_STATUS_KERNEL
    return n

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
        if send(fp.ifaces[ifslot].gso_fd, frame, n, 0) < 0:
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
