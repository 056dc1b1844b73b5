# New flows, for both shells (the ring loop in ring.pxi, Forwarder.process()/process_batch()):
# while a batch of frames is walked, the frames that open a flow are queued (queue_pending());
# at the end of the batch resolve_pending() takes the GIL once, and only if some flow needs the
# control plane's scheduler, installs each flow's connection before the next flow is scheduled
# (so least-connection schedulers see the batch's own picks), and runs the core on the frame
# again. Frames forwarded go to the TX queues (ring.pxi), or into a Sink for the sans-IO shell.

cdef struct Sink:
    int n                       # process()/process_batch(): the frames forwarded, in order,
    Frame frames[MAX_PENDING]   # kept instead of sent

cdef inline void emit(FP* fp, Sink* sink, Frame* fr) noexcept nogil:
    if sink == NULL:
        tx_queue(fp, fr)
    elif sink.n < MAX_PENDING:
        sink.frames[sink.n] = fr[0]
        sink.n += 1

cdef inline void queue_pending(FP* fp, Frame* fr) noexcept nogil:
    # handle() filled in fp.pending[fp.npending] (the flow) when it said V_NEW; add the frame.
    cdef Pending* q = &fp.pending[fp.npending]
    q.frame = fr.f
    q.len = fr.flen
    q.rx_if = fr.rx_if
    q.partial = fr.partial
    q.vnet = fr.vnet
    q.vh = fr.vh
    fp.npending += 1

cdef void resolve_pending(FP* fp, uint64_t now, Sink* sink) noexcept nogil:
    # Called with fp.lock held, once per batch: at most one trip into Python for all new flows.
    # A flow queued twice in the batch (a retransmitted SYN, a burst of datagrams) is
    # scheduled once; the others find its connection.
    cdef int k, j
    cdef Pending* q
    cdef bint ask = False
    for k in range(fp.npending):
        q = &fp.pending[k]
        q.dup_of = -1
        if not fp.services[q.svc].onepacket:    # -o: every datagram is scheduled on its own
            for j in range(k):
                if (fp.pending[j].caddr == q.caddr and fp.pending[j].cport == q.cport
                        and fp.pending[j].vaddr == q.vaddr and fp.pending[j].vport == q.vport
                        and fp.pending[j].proto == q.proto):
                    q.dup_of = j
                    break
        ask = ask or (q.dup_of < 0 and q.dest < 0)
    if ask:
        with gil:
            for k in range(fp.npending):
                q = &fp.pending[k]
                if q.dup_of < 0 and q.dest < 0:
                    schedule_one((<Forwarder>fp.owner).scheduler_cb, q)
                resolve_one(fp, q, now, sink)
    else:
        for k in range(fp.npending):
            resolve_one(fp, &fp.pending[k], now, sink)
    fp.npending = 0

cdef void resolve_one(FP* fp, Pending* q, uint64_t now, Sink* sink) noexcept nogil:
    # Install the flow's connection (a duplicate finds its twin's), then run the core again.
    cdef int r, v
    cdef Pending scratch
    cdef Frame fr
    if lookup_in(fp, flow_hash(fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                 q.proto, q.caddr, q.cport, q.vaddr, q.vport) == NULL:
        r = conn_create(fp, q, now)
        if r != R_NONE:
            drop(fp, r)
            return
    memset(&fr, 0, sizeof(Frame))
    fr.f = q.frame
    fr.flen = q.len
    fr.partial = q.partial
    fr.vnet = q.vnet
    fr.vh = q.vh
    fr.rx_if = q.rx_if
    v = handle(fp, &fr, now, &scratch)
    if v == V_NEW:          # cannot happen once the connection exists; never lose a frame silently
        drop(fp, R_NO_DEST)
    if fp.services[q.svc].onepacket:
        forget(fp, q)
    if v == V_FORWARD:
        emit(fp, sink, &fr)

cdef void forget(FP* fp, Pending* q) noexcept nogil:
    # -o one-packet scheduling: the connection existed only to carry this datagram.
    cdef Conn* c = lookup_in(fp, flow_hash(fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                             q.proto, q.caddr, q.cport, q.vaddr, q.vport)
    if c != NULL:
        conn_free(fp, c)

cdef void schedule_one(object scheduler_cb, Pending* q) noexcept:
    # The control plane's scheduler picks a destination slot for one new flow (-1: none).
    try:
        picks = (scheduler_cb([(q.svc, q.proto, q.caddr, q.cport, q.vaddr, q.vport)])
                 if scheduler_cb is not None else None)
        q.dest = -1 if not picks or picks[0] is None else picks[0]
    except Exception:
        import traceback
        traceback.print_exc()
        q.dest = -1
