# Schedulers in C: the decision for a new flow, without the GIL, from a per-service program that
# the scheduler's Python class prepared (lb/schedulers/program.py) when the service's servers,
# weights, thresholds or flags changed -- the kernel's own split, where ip_vs_*_dest_changed /
# *_reassign rebuild the tables and ip_vs_*_schedule only reads them.
#
# A program is built whole outside the lock and swapped in under it (Forwarder.set_scheduler):
# the packet thread never sees one half-written. What a scheduler changes as it decides (rr's
# position, wrr's current weight, twos' random state) lives in the program and is carried into
# the next one by the rules of the kernel's dest_changed hooks (sched_carry()).
#
# Servers are indexed in the service's list order (`slot[i]` is the fast-path destination of
# server i); a table entry or a decision is such an index, -1 for none. Thresholds (-x/-y) and
# OVERLOAD are evaluated here from the live counters (sched_thresholds()), so no decision needs
# Python; the flag itself is per destination slot (fp.overload), as the kernel's is per dest.

# The kinds (SCHED_PY, SCHED_RR, ...) are generated from fastpath/names.py into _names.pxi.
cdef enum:
    SF_FALLBACK = 1     # sh-fallback / mh-fallback (ipvsadm -b)
    SF_PORT = 2         # sh-port / mh-port

cdef struct Sched:
    uint8_t kind
    uint8_t flags
    int n                   # servers, in the service's list order
    int* slot               # [n] fast-path destination slot
    int* weight             # [n] current weight (0: takes no new connection)
    int* uthr               # [n] -x (0: none)
    int* lthr               # [n] -y (0: 3/4 of -x)
    int nlimited
    int* limited            # [nlimited] servers with an upper threshold
    int ncand
    int* cand               # [ncand] servers a least-connection walk looks at, in its order
    int64_t* sums           # [ncand] twos: running sums of the candidates' weights
    int max_weight          # sed: the largest candidate weight
    int ntable
    int16_t* table          # sh/dh: 256 entries; mh: its Maglev table (M entries)
    # State the decisions change, carried across updates (sched_carry).
    int pos                 # rr, wrr: the last pick (-1: the list head)
    int last_slot           # rr: the destination slot of the last pick
    int cw, mw, di          # wrr: current weight, max weight - (gcd - 1), gcd
    uint64_t rng            # twos: splitmix64 state

cdef inline bint sched_available(FP* fp, Sched* s, int i) noexcept nogil:
    # ipvs: a destination takes new connections while its weight > 0 and it is not OVERLOADed.
    return s.weight[i] > 0 and not fp.overload[s.slot[i]]

cdef inline int64_t dest_total(FP* fp, int slot) noexcept nogil:
    return fp.active[slot] + fp.inactive[slot]

cdef void sched_thresholds(FP* fp, Sched* s) noexcept nogil:
    # Service.schedule's rule (lb/director/model.py): ip_vs_bind_dest sets OVERLOAD at
    # active + inactive >= -x; ip_vs_unbind_dest clears it below -y (below 3/4 of -x if -y is 0).
    cdef int k, i, slot
    cdef int64_t total
    for k in range(s.nlimited):
        i = s.limited[k]
        slot = s.slot[i]
        total = dest_total(fp, slot)
        if total >= s.uthr[i]:
            fp.overload[slot] = 1
        elif (total < s.lthr[i]) if s.lthr[i] else (total * 4 < <int64_t>s.uthr[i] * 3):
            fp.overload[slot] = 0

cdef int sched_pick(FP* fp, int svc, Pending* p) noexcept nogil:
    # The destination slot for a new flow of service `svc`, -1 for none. Only for a service
    # whose program has a C decision (kind != SCHED_PY).
    cdef Sched* s = fp.sched[svc]
    cdef int i = -1
    if s.nlimited:
        sched_thresholds(fp, s)
    if s.kind == SCHED_RR:
        i = pick_rr(fp, s)
    elif s.kind == SCHED_WRR:
        i = pick_wrr(fp, s)
    elif s.kind <= SCHED_NQ:
        i = pick_least(fp, s, s.kind)
    elif s.kind == SCHED_FO:
        i = pick_fo(fp, s)
    elif s.kind == SCHED_OVF:
        i = pick_ovf(fp, s)
    elif s.kind == SCHED_TWOS:
        i = pick_twos(fp, s)
    elif s.kind == SCHED_SH:
        i = pick_sh(fp, s, p)
    elif s.kind == SCHED_DH:
        i = pick_dh(fp, s, p)
    elif s.kind == SCHED_MH:
        i = pick_mh(fp, s, p)
    if i < 0:
        return -1
    if s.uthr[i] and dest_total(fp, s.slot[i]) + 1 >= s.uthr[i]:
        fp.overload[s.slot[i]] = 1      # ip_vs_bind_dest, for the connection about to be bound
    return s.slot[i]

cdef void sched_carry(Sched* new, Sched* old) noexcept nogil:
    # What survives an update. rr (ip_vs_rr_del_dest): the position stays on the last pick, or
    # moves to the entry before it when it was removed. wrr (ip_vs_wrr_dest_changed): back to
    # the head, cw kept in step with the new gcd. twos: its random state. Another kind starts
    # afresh (ipvsadm -E -s: a new scheduler instance).
    cdef int i
    if old == NULL or old.kind != new.kind:
        return
    if new.kind == SCHED_RR:
        new.pos = -1
        new.last_slot = old.last_slot
        if old.pos < 0:
            return
        for i in range(new.n):
            if new.slot[i] == old.last_slot:
                new.pos = i
                return
        new.pos = (old.pos if old.pos < new.n else new.n) - 1
        new.last_slot = new.slot[new.pos] if new.pos >= 0 else -1
    elif new.kind == SCHED_WRR:
        if old.cw > new.mw or old.cw == 0:
            new.cw = new.mw
        elif new.di > 1:
            new.cw = (old.cw // new.di) * new.di + 1
        else:
            new.cw = old.cw
    elif new.kind == SCHED_TWOS:
        new.rng = old.rng

cdef void sched_lift_overload(FP* fp, Sched* new, Sched* old) noexcept nogil:
    # __ip_vs_update_dest: an upper threshold removed or raised lifts OVERLOAD at once (one
    # lowered takes effect at the next decision). Config._edit_server does the same in Python.
    cdef int i
    cdef int* before
    if old == NULL:
        return
    before = <int*>malloc(MAX_DESTS * sizeof(int))
    if before == NULL:
        return
    for i in range(new.n):
        before[new.slot[i]] = -1
    for i in range(old.n):
        before[old.slot[i]] = old.uthr[i]
    for i in range(new.n):
        if before[new.slot[i]] >= 0 and (new.uthr[i] == 0 or new.uthr[i] > before[new.slot[i]]):
            fp.overload[new.slot[i]] = 0
    free(before)

cdef void sched_free(Sched* s) noexcept nogil:
    if s == NULL:
        return
    free(s.slot)
    free(s.weight)
    free(s.uthr)
    free(s.lthr)
    free(s.limited)
    free(s.cand)
    free(s.sums)
    free(s.table)
    free(s)
