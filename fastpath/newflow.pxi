# New flows, for both shells (the ring loop in ring.pxi, Forwarder.process()/process_batch()).
# A built-in scheduler decides in C (sched.pxi) the moment handle() says V_NEW: the connection is
# installed and the frame forwarded at once, in its place among the batch's frames, with no
# Python and no queue. A flow of a service whose scheduler has no C decision (a plugin written in
# Python) is queued (queue_pending()); at the end of the batch resolve_pending() takes the GIL
# once and asks the control plane for each, installing each flow's connection before the next
# is scheduled (so its own picks are counted) and running the core on the frame again. Frames
# forwarded go to the TX queues (ring.pxi), or into a Sink for the sans-IO shell.

cdef struct Sink:
    int n                       # process()/process_batch(): the frames forwarded, in order,
    Frame frames[MAX_PENDING]   # kept instead of sent

cdef inline void emit(FP* fp, Sink* sink, Frame* fr) noexcept nogil:
    if sink == NULL:
        tx_queue(fp, fr)
    elif sink.n < MAX_PENDING:
        sink.frames[sink.n] = fr[0]
        sink.n += 1

cdef int new_flow(FP* fp, Frame* fr, uint64_t now, Sink* sink) noexcept nogil:
    # handle() said V_NEW and described the flow in fp.pending[fp.npending]. Returns V_FORWARD
    # (sent or in the sink), V_DROP (counted), or V_NEW (queued for Python).
    cdef Pending* p = &fp.pending[fp.npending]
    cdef Sched* s = fp.sched[p.svc]
    if p.dest < 0:                      # no persistence template pins it
        if s == NULL or s.kind == SCHED_PY:
            queue_pending(fp, fr)
            if fp.npending == MAX_PENDING:
                resolve_pending(fp, now, sink)
            return V_NEW
        p.dest = sched_pick(fp, p.svc, p)
        if p.dest < 0:
            return drop(fp, R_NO_DEST)
    return install_now(fp, p, fr, now, sink)

cdef int install_now(FP* fp, Pending* p, Frame* fr, uint64_t now, Sink* sink) noexcept nogil:
    # The flow's destination is known (a C decision or a template): install its connection and
    # send the frame from where handle() left it -- the headers parsed and checked, the
    # connection fresh (its next hops chosen now) -- as handle() would on the connection's
    # first packet, without running it again.
    cdef Conn* c = NULL
    cdef Neigh* nb
    cdef int v, r = conn_create(fp, p, now, &c)
    if r != R_NONE:
        return drop(fp, r)
    nb = &fp.neigh[c.nh_in]
    if nb.state != NEIGH_VALID:
        v = drop(fp, R_NO_NEIGHBOUR)
    else:
        fr.direction = DIR_IN
        fr.out_off = 0
        fr.out_len = fr.flen
        fr.tx_if = nb.ifslot
        v = forward(fp, c, fr, nb, now)
    if fp.services[p.svc].onepacket:
        forget(fp, p)
    if v == V_FORWARD:
        fp.fwd_frames += 1
        emit(fp, sink, fr)
    return v

cdef inline void pending_frame(Pending* q, Frame* fr) noexcept nogil:
    q.frame = fr.f
    q.len = fr.flen
    q.rx_if = fr.rx_if
    q.partial = fr.partial
    q.vnet = fr.vnet
    q.vh = fr.vh

cdef inline void queue_pending(FP* fp, Frame* fr) noexcept nogil:
    pending_frame(&fp.pending[fp.npending], fr)
    fp.npending += 1

cdef void resolve_pending(FP* fp, uint64_t now, Sink* sink) noexcept nogil:
    # Called with fp.lock held, once per batch, for the flows of Python schedulers: one trip
    # into Python for all of them. A flow queued twice in the batch (a retransmitted SYN, a burst
    # of datagrams) is scheduled once: the later ones find the connection the first installed
    # (one hash lookup each, no scan of the queue).
    cdef int k
    cdef Pending* q
    if fp.npending == 0:
        return
    with gil:
        for k in range(fp.npending):
            q = &fp.pending[k]
            if q.dest < 0 and (fp.services[q.svc].onepacket or lookup_in(
                    fp, flow_hash(fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                    q.proto, q.caddr, q.cport, q.vaddr, q.vport) == NULL):
                schedule_one((<Forwarder>fp.owner).scheduler_cb, q)
            resolve_one(fp, q, now, sink)
    fp.npending = 0

cdef bint resolve_one(FP* fp, Pending* q, uint64_t now, Sink* sink) noexcept nogil:
    # Install the flow's connection (a duplicate finds its twin's), then run the core again.
    # True when the frame was forwarded.
    cdef int r, v
    cdef Pending scratch
    cdef Frame fr
    if lookup_in(fp, flow_hash(fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                 q.proto, q.caddr, q.cport, q.vaddr, q.vport) == NULL:
        if q.dest == SCHED_FAILED:
            drop(fp, R_SCHED_ERROR)
            return False
        r = conn_create(fp, q, now)
        if r != R_NONE:
            drop(fp, r)
            return False
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
        fp.fwd_frames += 1
        emit(fp, sink, &fr)
        return True
    return False

cdef void forget(FP* fp, Pending* q) noexcept nogil:
    # -o one-packet scheduling: the connection existed only to carry this datagram.
    cdef Conn* c = lookup_in(fp, flow_hash(fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                             q.proto, q.caddr, q.cport, q.vaddr, q.vport)
    if c != NULL:
        conn_free(fp, c)

cdef enum:
    SCHED_FAILED = -2       # the Python scheduler raised, or named no server of the service

cdef void schedule_one(object scheduler_cb, Pending* q) noexcept:
    # The control plane's scheduler picks a destination slot for one new flow: -1 none
    # available, SCHED_FAILED (-2) the scheduler failed (the Director logs it).
    try:
        picks = (scheduler_cb([(q.svc, q.proto, q.caddr, q.cport, q.vaddr, q.vport)])
                 if scheduler_cb is not None else None)
        q.dest = -1 if not picks or picks[0] is None else int(picks[0])
        if q.dest < SCHED_FAILED or q.dest >= MAX_DESTS:
            q.dest = SCHED_FAILED
    except Exception:
        import traceback
        traceback.print_exc()
        q.dest = SCHED_FAILED
