# The schedulers that walk their servers: rr, wrr (ip_vs_rr.c, ip_vs_wrr.c), the least-connection
# family lc, wlc, sed, nq (ip_vs_lc.c, ip_vs_wlc.c, ip_vs_sed.c, ip_vs_nq.c), fo, ovf and twos
# (ip_vs_fo.c, ip_vs_ovf.c, ip_vs_twos.c). Each follows its Python class in lb/schedulers/ step
# for step; tests/unit/test_schedulers_c_differential.py holds them to the same picks.

cdef inline int64_t overhead(FP* fp, int slot) noexcept nogil:
    # ip_vs_dest_conn_overhead: active connections weigh 256 inactive ones.
    return (fp.active[slot] << 8) + fp.inactive[slot]

cdef int pick_rr(FP* fp, Sched* s) noexcept nogil:
    # O(1) while the next server is available, as the kernel's list walk.
    cdef int k, i, start = s.pos + 1
    for k in range(s.n):
        i = (start + k) % s.n
        if sched_available(fp, s, i):
            s.pos = i
            s.last_slot = s.slot[i]
            return i
    return -1

cdef inline bint wrr_eligible(FP* fp, Sched* s, int i) noexcept nogil:
    return not fp.overload[s.slot[i]] and s.weight[i] >= s.cw

cdef int pick_wrr(FP* fp, Sched* s) noexcept nogil:
    # ip_vs_wrr_schedule: walk on from the last pick at the current weight cw; at the end of
    # the list lower cw by the gcd; once cw has gone round to mw again, every server has been
    # tried at weight >= 1 (the kernel's err_over) and none is eligible.
    cdef int last = s.pos, stop = -2, i = s.pos
    cdef bint last_pass = False, restarted = False
    if s.mw == 0:
        return -1
    while True:
        i += 1
        while i < s.n:
            if wrr_eligible(fp, s, i):
                s.pos = i
                return i
            if i == stop:
                s.pos = i
                return -1
            i += 1
        i = -1
        s.cw -= s.di
        if s.cw <= 0:
            s.cw = s.mw
            if last_pass or last == -1:
                s.pos = -1
                return -1
            restarted = True
        last_pass = s.cw <= s.di
        if last_pass and restarted and last != -1:
            stop = last         # the first weight >= 1 pass only covered servers after `last`

cdef int pick_least(FP* fp, Sched* s, int kind) noexcept nogil:
    # lc: least overhead; wlc: least overhead / weight (cross-multiplied); sed: least
    # (active + 1) / weight; nq: an idle server at once, else as sed. Ties go to the earlier
    # server; an OVERLOADed one is skipped; lc and wlc stop at an idle server, sed at an idle
    # one of the largest weight.
    cdef int k, i, slot, best = -1, w, bw = 0
    cdef int64_t loh = 0, doh
    for k in range(s.ncand):
        i = s.cand[k]
        slot = s.slot[i]
        if fp.overload[slot]:
            continue
        w = s.weight[i]
        if kind == SCHED_LC or kind == SCHED_WLC:
            doh = overhead(fp, slot)
            if best < 0 or (doh < loh if kind == SCHED_LC else loh * w > doh * bw):
                best, loh, bw = i, doh, w
                if doh == 0:
                    break
        else:
            doh = fp.active[slot] + 1
            if kind == SCHED_NQ and doh == 1:
                return i
            if best < 0 or loh * w > doh * bw:
                best, loh, bw = i, doh, w
                if kind == SCHED_SED and doh == 1 and w == s.max_weight:
                    break
    return best

cdef int pick_fo(FP* fp, Sched* s) noexcept nogil:
    # The available server of the highest weight (candidates are sorted by weight, stable).
    cdef int k
    for k in range(s.ncand):
        if not fp.overload[s.slot[s.cand[k]]]:
            return s.cand[k]
    return -1

cdef int pick_ovf(FP* fp, Sched* s) noexcept nogil:
    # The first available server, by weight, whose active connections do not exceed its weight.
    cdef int k, i
    for k in range(s.ncand):
        i = s.cand[k]
        if not fp.overload[s.slot[i]] and fp.active[s.slot[i]] <= s.weight[i]:
            return i
    return -1

cdef inline uint64_t splitmix64(uint64_t* state) noexcept nogil:
    # Steele, Lea, Flood: "Fast splittable pseudorandom number generators" (2014). twos' Python
    # class draws from the same generator (lb/schedulers/twos.py SplitMix64).
    state[0] += 0x9E3779B97F4A7C15ULL
    cdef uint64_t z = state[0]
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL
    return z ^ (z >> 31)

cdef int twos_draw(FP* fp, Sched* s, bint any_overloaded, int64_t total) noexcept nogil:
    # The candidate whose running weight sum first reaches a draw in 0..total (bisect_left).
    cdef int64_t r = <int64_t>(splitmix64(&s.rng) % <uint64_t>(total + 1)), acc = 0
    cdef int k, lo = 0, hi = s.ncand - 1, mid
    if not any_overloaded:
        while lo < hi:
            mid = (lo + hi) >> 1
            if s.sums[mid] >= r:
                hi = mid
            else:
                lo = mid + 1
        return s.cand[lo]
    for k in range(s.ncand):
        if not fp.overload[s.slot[s.cand[k]]]:
            acc += s.weight[s.cand[k]]
            if acc >= r:
                return s.cand[k]
    return -1

cdef int pick_twos(FP* fp, Sched* s) noexcept nogil:
    # Power of two choices: two weighted random draws, the one with the lower overhead per
    # weight wins (the first on ties). The draw is over 0..total inclusive, as the kernel's.
    cdef int k, i1, i2
    cdef bint any_overloaded = False
    cdef int64_t total = 0
    for k in range(s.ncand):
        if fp.overload[s.slot[s.cand[k]]]:
            any_overloaded = True
        else:
            total += s.weight[s.cand[k]]
    if total == 0:
        return -1
    i1 = twos_draw(fp, s, any_overloaded, total)
    i2 = twos_draw(fp, s, any_overloaded, total)
    if <int64_t>s.weight[i2] * overhead(fp, s.slot[i1]) > <int64_t>s.weight[i1] * overhead(fp, s.slot[i2]):
        return i2
    return i1
