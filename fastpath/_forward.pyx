# cython: language_level=3
"""The fast path: a per-frame core over byte buffers, and an AF_PACKET TPACKET_V3 ring loop.

`Forwarder.process(frame)` runs the core on one frame (no sockets, no root): tests feed it
scapy-built frames. `Forwarder.run()` is the packet loop: it releases the GIL, reads blocks of
frames from the RX rings, rewrites them in place and sends them with sendmmsg; it takes the GIL
once per block, and only when the block holds new flows, to ask the control plane's scheduler.
"""
import ipaddress
import os
import time

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy, memmove, memset

from lbsys cimport *
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ
from cpython cimport array

cdef extern from *:
    void __sync_synchronize() nogil

include "wire.pxi"
include "tables.pxi"
include "persist.pxi"
include "core.pxi"
include "mode_nat.pxi"
include "mode_dr.pxi"
include "mode_tun.pxi"
include "mode_fullnat.pxi"

# The fixed sizes of the fast path's tables, for the control plane that hands out their slots.
LIMITS = {"services": MAX_SERVICES, "dests": MAX_DESTS, "laddrs": MAX_LADDRS,
          "ifaces": MAX_IFACES, "service_keys": MAX_KEYS}

# IPVS default timeouts in seconds, by ConnState (ip_vs_proto_tcp.c, ip_vs_proto_udp.c).
DEFAULT_TIMEOUTS = {"NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60,
                    "FIN_WAIT": 120, "TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60,
                    "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120, "UDP": 300}


cdef inline uint64_t now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>(ts.tv_nsec // 1000000)


def _ip(addr):
    return int(ipaddress.IPv4Address(addr))


def _ipstr(uint32_t v):
    return str(ipaddress.IPv4Address(v))


cdef class Forwarder:
    """One director's data plane. Slots (services, destinations, interfaces) are chosen by the
    control plane; the tables are C arrays guarded by one mutex (see tables.pxi)."""
    cdef FP* fp
    cdef public object scheduler_cb
    cdef bint stopping
    cdef bint running
    cdef int capture_n
    cdef Frame captured[MAX_PENDING]    # process()/process_batch(): what was forwarded, in order
    cdef object ring_drops
    cdef readonly object active
    cdef readonly object inactive

    def __cinit__(self, uint32_t max_conns=1 << 20, scheduler_cb=None):
        self.fp = <FP*>calloc(1, sizeof(FP))
        if self.fp == NULL:
            raise MemoryError()
        fp = self.fp
        pthread_mutex_init(&fp.lock, NULL)
        fp.seed = int.from_bytes(os.urandom(4), "little")
        fp.max_conns = max(max_conns, 16)
        fp.nbuckets = 16
        while fp.nbuckets < fp.max_conns:
            fp.nbuckets <<= 1
        fp.conns = <Conn*>calloc(fp.max_conns, sizeof(Conn))
        fp.bucket_in = <uint32_t*>calloc(fp.nbuckets, sizeof(uint32_t))
        fp.bucket_out = <uint32_t*>calloc(fp.nbuckets, sizeof(uint32_t))
        fp.free_list = <uint32_t*>calloc(fp.max_conns, sizeof(uint32_t))
        if not (fp.conns and fp.bucket_in and fp.bucket_out and fp.free_list):
            raise MemoryError()
        cdef uint32_t i
        for i in range(fp.max_conns):
            fp.free_list[i] = fp.max_conns - 1 - i
        fp.nfree = fp.max_conns
        for i in range(MAX_IFACES):
            fp.ifaces[i].fd = -1
        fp.toa_mode = TOA_ON_SYN
        for i in range(MAX_SERVICES):
            fp.services[i].enat_laddr = -1
        for name, secs in DEFAULT_TIMEOUTS.items():
            fp.timeouts[STATE_NAMES.index(name)] = secs * 1000
        self.scheduler_cb = scheduler_cb
        self.ring_drops = 0
        # Live ActiveConn/InActConn by destination slot, as flat int64 views over the C arrays
        # (the least-connection schedulers read them per decision; no dict, no copy).
        self.active = PyMemoryView_FromMemory(<char*>fp.active, MAX_DESTS * 8, PyBUF_READ).cast("q")
        self.inactive = PyMemoryView_FromMemory(<char*>fp.inactive, MAX_DESTS * 8, PyBUF_READ).cast("q")

    def __dealloc__(self):
        if self.fp == NULL:
            return
        self.close()
        free(self.fp.conns)
        free(self.fp.bucket_in)
        free(self.fp.bucket_out)
        free(self.fp.free_list)
        pthread_mutex_destroy(&self.fp.lock)
        free(self.fp)
        self.fp = NULL

    # --- configuration (control plane) -------------------------------------------------------
    cdef inline void _lock(self) noexcept:
        # Never wait for the mutex while holding the GIL: the packet loop may hold the mutex and
        # be waiting for the GIL to run the scheduler.
        with nogil:
            pthread_mutex_lock(&self.fp.lock)

    cdef inline void _unlock(self) noexcept:
        pthread_mutex_unlock(&self.fp.lock)

    def set_interface(self, int slot, int ifindex, bytes mac, int mtu=1500, addr=None):
        """`addr`: this director's IPv4 address on the interface (source of TUN outer headers)."""
        _check_slot(slot, MAX_IFACES, "interface")
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self._lock()
        cdef Iface* f = &self.fp.ifaces[slot]
        f.in_use = 1
        f.ifindex = ifindex
        memcpy(f.mac, <const char*>mac, 6)
        f.mtu = mtu
        f.addr = _ip(addr) if addr else 0
        self._unlock()

    def set_service(self, int slot, int proto, vip, int vport, int fwd=FWD_MASQ,
                    double persistent=0, netmask="255.255.255.255", bint onepacket=False,
                    unsigned int fwmark=0, keys=None, laddrs=(), int enat_laddr=-1):
        """A virtual service. Packets find it by (proto, vip, vport), or for a fwmark service
        (`fwmark` != 0) by any of `keys` [(proto, vip, port)]. `persistent`: seconds a client
        stays pinned to its server after its last connection (-p); `netmask`: which clients
        share a template (-M); `onepacket`: schedule every datagram (-o)."""
        _check_slot(slot, MAX_SERVICES, "service")
        if not fwmark:
            keys = [(proto, vip, vport)]
        parsed = [(p, _ip(a), port) for p, a, port in keys or ()]
        cdef uint32_t mask = _ip(netmask)
        laddrs = list(laddrs)
        if len(laddrs) > MAX_SVC_LADDRS:
            raise ValueError(f"at most {MAX_SVC_LADDRS} local addresses per service")
        for l in laddrs + ([enat_laddr] if enat_laddr >= 0 else []):
            _check_slot(l, MAX_LADDRS, "local address")
        self._lock()
        try:
            s = &self.fp.services[slot]
            s.vip = parsed[0][1] if parsed and not fwmark else 0
            s.vport = vport if not fwmark else 0
            s.proto = proto
            s.fwd = fwd
            s.persist_ms = <uint32_t>(persistent * 1000)
            s.persist_mask = mask
            s.onepacket = onepacket
            s.fwmark = fwmark
            s.nladdrs = len(laddrs)
            for i, l in enumerate(laddrs):
                s.laddrs[i] = l
            s.lnext = 0
            s.enat_laddr = enat_laddr
            self._set_keys(slot, parsed)
            s.in_use = 1
        finally:
            self._unlock()

    cdef int _set_keys(self, int slot, list parsed) except -1:
        # Called with the lock held. Old keys of the slot go first, so a key may move.
        fp = self.fp
        for i in range(fp.nkeys):
            if fp.keys[i].in_use and fp.keys[i].svc == slot:
                fp.keys[i].in_use = 0
        free = [i for i in range(MAX_KEYS) if not fp.keys[i].in_use]
        if len(parsed) > len(free):
            raise ValueError(f"more than {MAX_KEYS} service keys")
        for (proto, vip, port), i in zip(parsed, free):
            fp.keys[i].proto = proto
            fp.keys[i].vip = vip
            fp.keys[i].vport = port
            fp.keys[i].svc = slot
            fp.keys[i].in_use = 1
            fp.nkeys = max(fp.nkeys, i + 1)
        return 0

    def set_laddr(self, int slot, addr, int low=1025, int high=65535):
        """A local address (FULLNAT's LIP, or an ENAT service's VIP) and the ports it lends:
        each (address, port) belongs to one connection at a time."""
        _check_slot(slot, MAX_LADDRS, "local address")
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"bad port range {low}-{high}")
        cdef uint32_t a = _ip(addr)
        self._lock()
        L = &self.fp.laddrs[slot]
        if not L.in_use or L.addr != a:
            memset(L, 0, sizeof(LAddr))
        L.addr = a
        L.low, L.high = low, high
        if not low <= L.cursor <= high:
            L.cursor = low
        L.in_use = 1
        self._unlock()

    def laddr_used(self, int slot):
        """How many of this local address's ports are lent out now."""
        _check_slot(slot, MAX_LADDRS, "local address")
        return self.fp.laddrs[slot].used

    def set_toa(self, bint syn=True, bint ack=False):
        """Where TOA goes: the SYN (the default), and/or the first ACK (DPVS's choice)."""
        self.fp.toa_mode = (TOA_ON_SYN if syn else 0) | (TOA_ON_ACK if ack else 0)

    def clear_service(self, int slot):
        _check_slot(slot, MAX_SERVICES, "service")
        self._lock()
        try:
            self.fp.services[slot].in_use = 0
            self._set_keys(slot, [])
        finally:
            self._unlock()

    def set_dest(self, int slot, int svc, rip, int rport, int fwd=FWD_MASQ, bint reset=False):
        """Install or edit a destination. Its connections keep their own copy of the address,
        so clearing a destination never breaks established flows."""
        _check_slot(slot, MAX_DESTS, "destination")
        cdef uint32_t r = _ip(rip)
        self._lock()
        d = &self.fp.dests[slot]
        if reset:
            memset(d, 0, sizeof(Dest))
            self.fp.active[slot] = 0
            self.fp.inactive[slot] = 0
        d.rip = r
        d.rport = rport
        d.svc = svc
        d.fwd = fwd
        d.in_use = 1
        self._unlock()

    def clear_dest(self, int slot):
        _check_slot(slot, MAX_DESTS, "destination")
        self._lock()
        self.fp.dests[slot].in_use = 0
        self._unlock()

    def set_routes(self, routes):
        """routes: iterable of (prefix, prefixlen, gateway or None, ifslot); longest prefix wins."""
        rows = sorted(routes, key=lambda r: -r[1])[:MAX_ROUTES]
        parsed = []
        for prefix, plen, gw, ifslot in rows:
            self._check_iface(ifslot)
            mask = (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF if plen else 0
            parsed.append((_ip(prefix) & mask, mask, _ip(gw) if gw else 0, ifslot))
        self._lock()
        for i, (prefix, mask, gw, ifslot) in enumerate(parsed):
            self.fp.routes[i].prefix = prefix
            self.fp.routes[i].mask = mask
            self.fp.routes[i].gw = gw
            self.fp.routes[i].ifslot = ifslot
        self.fp.nroutes = len(parsed)
        self._unlock()

    def want_neighbour(self, addr):
        """Route `addr` and make sure the next hop has a neighbour slot; returns (ip, ifslot) of
        the next hop, or None without a route. Used to resolve MACs before the first packet."""
        cdef uint32_t nh = 0
        self._lock()
        ifslot = route_lookup(self.fp, _ip(addr), &nh)
        if ifslot >= 0:
            i = neigh_slot(self.fp, nh, ifslot)
            if i >= 0:
                self.fp.neigh[i].pinned = 1     # the control plane's: never freed
        self._unlock()
        return (_ipstr(nh), ifslot) if ifslot >= 0 else None

    def set_neighbour(self, addr, int ifslot, bytes mac, bint pin=True):
        """The MAC of a next hop. Pinned (the default), the entry stays even while no connection
        uses it; `pin=False` only refreshes an entry the fast path already has (an on-link
        client's, which goes with its last connection)."""
        if len(mac) != 6:
            raise ValueError("a MAC address is 6 bytes")
        self._check_iface(ifslot)
        self._lock()
        i = neigh_slot(self.fp, _ip(addr), ifslot, pin)
        if i >= 0:
            memcpy(self.fp.neigh[i].mac, <const char*>mac, 6)
            self.fp.neigh[i].state = NEIGH_VALID
            if pin:
                self.fp.neigh[i].pinned = 1
        self._unlock()
        return i >= 0

    def neighbours(self):
        """[(ip, ifslot, mac or None)] for every next hop the fast path knows or wants."""
        out = []
        self._lock()
        for i in range(NEIGH_SIZE):
            n = &self.fp.neigh[i]
            if n.state == NEIGH_WANTED or n.state == NEIGH_VALID:
                mac = bytes(n.mac[:6]) if n.state == NEIGH_VALID else None
                out.append((n.ip, n.ifslot, mac))
        self._unlock()
        return [(_ipstr(ip), s, m) for ip, s, m in out]

    def _check_iface(self, int ifslot):
        # The core indexes fp.ifaces[] with these slots: only configured interfaces may be named.
        _check_slot(ifslot, MAX_IFACES, "interface")
        if not self.fp.ifaces[ifslot].in_use:
            raise ValueError(f"interface slot {ifslot} is not configured (set_interface first)")

    def set_timeout(self, state, double seconds):
        self.fp.timeouts[STATE_NAMES.index(state)] = <uint64_t>(seconds * 1000)

    # --- the core on one frame (sans-IO) --------------------------------------------------------
    def process(self, frame, now=None, bint partial=False, int rx_if=0):
        """Run the core on one Ethernet frame. Returns (verdict, reason, out) where out is a list
        of (ifslot, bytes) frames to send. A new flow asks scheduler_cb, as the loop does.
        `reason` names why a frame was passed or dropped (or "frag_needed" when the frame sent is
        the ICMP error that replaced it)."""
        cdef bytearray buf = bytearray(HEADROOM) + bytearray(frame) + bytearray(1)
        cdef Frame fr
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        cdef int v
        memset(&fr, 0, sizeof(Frame))
        fr.f = <uint8_t*>buf + HEADROOM
        fr.flen = len(buf) - HEADROOM - 1
        fr.partial = <int>partial
        fr.rx_if = rx_if
        with nogil:
            pthread_mutex_lock(&self.fp.lock)
            self.fp.last_reason = R_NONE
            self.capture_n = 0
            self.fp.npending = 0
            v = handle(self.fp, &fr, t, &self.fp.pending[0])
            if v == V_NEW:
                self._queue_pending(fr.f, fr.flen, 0, fr.partial)
                self._resolve_pending(t, True)
                v = V_FORWARD if self.capture_n else V_DROP
                fr = self.captured[0]
            pthread_mutex_unlock(&self.fp.lock)
        reason = REASON_NAMES[self.fp.last_reason] if self.fp.last_reason else None
        out = []
        if v == V_FORWARD:
            start = HEADROOM + fr.out_off
            out = [(fr.tx_if, bytes(buf[start:start + fr.out_len]))]
        return VERDICT_NAMES[v], reason, out

    def process_batch(self, frames, now=None):
        """Run frames through the core as the ring loop runs one block: established flows at
        once, new flows together at the end (one trip into Python). Returns the frames sent,
        [(ifslot, bytes)], in the order the loop would send them. At most 256 frames."""
        if len(frames) > MAX_PENDING:
            raise ValueError(f"at most {MAX_PENDING} frames in a batch")
        bufs = [bytearray(HEADROOM) + bytearray(f) + bytearray(1) for f in frames]
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        cdef Frame fr
        cdef bytearray b
        cdef int v, k
        out = []
        self._lock()
        try:
            self.capture_n = 0
            self.fp.npending = 0
            for b in bufs:
                memset(&fr, 0, sizeof(Frame))
                fr.f = <uint8_t*>b + HEADROOM
                fr.flen = len(b) - HEADROOM - 1
                v = handle(self.fp, &fr, t, &self.fp.pending[self.fp.npending])
                if v == V_FORWARD:
                    out.append((fr.tx_if, bytes(fr.f[fr.out_off:fr.out_off + <int>fr.out_len])))
                elif v == V_NEW:
                    self._queue_pending(fr.f, fr.flen, 0, 0)
            if self.fp.npending:
                with nogil:
                    self._resolve_pending(t, True)
            for k in range(self.capture_n):
                fr = self.captured[k]
                out.append((fr.tx_if, bytes(fr.f[fr.out_off:fr.out_off + <int>fr.out_len])))
        finally:
            self._unlock()
        return out

    def expire(self, now=None):
        """Sweep the whole connection table once (the loop does this a little at a time)."""
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        with nogil:
            pthread_mutex_lock(&self.fp.lock)
            sweep(self.fp, t, self.fp.max_conns)
            pthread_mutex_unlock(&self.fp.lock)

    cdef void _queue_pending(self, uint8_t* frame, uint32_t n, int rx_if, int partial) noexcept nogil:
        cdef Pending* q = &self.fp.pending[self.fp.npending]
        q.frame = frame
        q.len = n
        q.rx_if = rx_if
        q.partial = partial
        self.fp.npending += 1

    cdef void _resolve_pending(self, uint64_t now, bint capture) noexcept nogil:
        # Called with fp.lock held, once per batch: at most one trip into Python for all new
        # flows. Each flow is scheduled and its connection installed before the next flow is
        # scheduled, so least-connection schedulers and thresholds see the batch's own picks.
        cdef FP* fp = self.fp
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
                        self._schedule_one(q)
                    self._resolve_one(q, now, capture)
        else:
            for k in range(fp.npending):
                self._resolve_one(&fp.pending[k], now, capture)
        fp.npending = 0

    cdef void _resolve_one(self, Pending* q, uint64_t now, bint capture) noexcept nogil:
        # Install the flow's connection (a duplicate finds its twin's), then run the core again.
        cdef FP* fp = self.fp
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
        v = handle(fp, &fr, now, &scratch)
        if v == V_NEW:          # cannot happen once the connection exists; never lose a frame silently
            drop(fp, R_NO_DEST)
        if fp.services[q.svc].onepacket:
            self._forget(q, now)
        if v == V_FORWARD:
            if capture:
                if self.capture_n < MAX_PENDING:
                    self.captured[self.capture_n] = fr
                    self.capture_n += 1
            else:
                self._tx(fr.tx_if, fr.f + fr.out_off, fr.out_len)

    cdef void _forget(self, Pending* q, uint64_t now) noexcept nogil:
        # -o one-packet scheduling: the connection existed only to carry this datagram.
        cdef Conn* c = lookup_in(self.fp, flow_hash(self.fp, q.proto, q.caddr, q.cport, q.vaddr, q.vport),
                                 q.proto, q.caddr, q.cport, q.vaddr, q.vport)
        if c != NULL:
            conn_free(self.fp, c)

    cdef void _schedule_one(self, Pending* q) noexcept:
        # The control plane's scheduler picks a destination slot for one new flow (-1: none).
        try:
            picks = (self.scheduler_cb([(q.svc, q.proto, q.caddr, q.cport, q.vaddr, q.vport)])
                     if self.scheduler_cb is not None else None)
            q.dest = -1 if not picks or picks[0] is None else picks[0]
        except Exception:
            import traceback
            traceback.print_exc()
            q.dest = -1

    # --- counters --------------------------------------------------------------------------------
    def counters(self):
        fp = self.fp
        out = {name: fp.reasons[i] for i, name in enumerate(REASON_NAMES) if i}
        out.update(rx_frames=fp.rx_frames, tx_frames=fp.tx_frames, new_conns=fp.new_conns,
                   expired_conns=fp.expired_conns, templates=fp.templates,
                   arp_replies=fp.arp_replies,
                   conns=fp.max_conns - fp.nfree - fp.templates,
                   ring_drops=self._ring_drops())
        return out

    def load_counters(self, int slot, int64_t active, int64_t inactive):
        """Set a destination's ActiveConn/InActConn by hand: for tests and benchmarks of the
        schedulers (the packet loop keeps them itself)."""
        _check_slot(slot, MAX_DESTS, "destination")
        self.fp.active[slot] = active
        self.fp.inactive[slot] = inactive

    def least_loaded(self, array.array slots, array.array weights, int kind):
        """The least-connection family's decision over live counters, in C: the index in
        `slots` of the server the kernel's lc (0), wlc (1), sed (2) or nq (3) would pick, or -1.
        `slots`/`weights` are array('i') of the candidates (weight > 0, none OVERLOADed) in
        list order. Same integer maths as the Python schedulers: overhead (active << 8) +
        inactive (lc, wlc) or active + 1 (sed, nq), cross-multiplied, ties to the earlier."""
        cdef Py_ssize_t n = len(slots), k
        cdef int* s = slots.data.as_ints
        cdef int* w = weights.data.as_ints
        cdef int best = -1, slot
        cdef int64_t loh = 0, doh, a
        if len(weights) != n:
            raise ValueError("slots and weights differ in length")
        for k in range(n):
            slot = s[k]
            if not 0 <= slot < MAX_DESTS:
                raise ValueError(f"destination slot {slot} out of range")
            a = self.fp.active[slot]
            if kind == 3 and a == 0:
                return k                                    # nq: an idle server, at once
            doh = (a << 8) + self.fp.inactive[slot] if kind <= 1 else a + 1
            if best < 0 or (doh < loh if kind == 0 else loh * w[k] > doh * w[best]):
                best, loh = <int>k, doh
                if doh == 0:
                    break                                   # lc/wlc: nothing beats idle
        return best

    def zero_dest(self, int slot):
        """ipvsadm -Z: the cumulative counters (conns, packets, bytes) back to 0."""
        _check_slot(slot, MAX_DESTS, "destination")
        self._lock()
        d = &self.fp.dests[slot]
        d.conns = d.inpkts = d.outpkts = d.inbytes = d.outbytes = 0
        self._unlock()

    def dest_counters(self, int slot):
        _check_slot(slot, MAX_DESTS, "destination")
        d = &self.fp.dests[slot]
        return {"active": self.fp.active[slot], "inactive": self.fp.inactive[slot], "conns": d.conns,
                "inpkts": d.inpkts, "outpkts": d.outpkts, "inbytes": d.inbytes,
                "outbytes": d.outbytes}

    def conns(self, now=None):
        """Every live connection as a dict (for listings and tests)."""
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        rows = []
        self._lock()
        for i in range(self.fp.max_conns):
            c = &self.fp.conns[i]
            if c.flags & CONN_IN_USE:
                rows.append((c.proto, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport,
                             c.state, c.dest, c.svc, c.expires, c.flags & CONN_TEMPLATE,
                             c.n_control, c.laddr, c.lport))
        self._unlock()
        return [{"proto": {6: "TCP", 17: "UDP"}.get(r[0], "IP"), "client": (_ipstr(r[1]), r[2]),
                 "virtual": (_ipstr(r[3]), r[4]), "dest": (_ipstr(r[5]), r[6]),
                 "state": STATE_NAMES[r[7]], "dest_slot": r[8], "svc_slot": r[9],
                 "expires_in": max(0.0, (<int64_t>r[10] - <int64_t>t) / 1000.0),
                 "template": bool(r[11]), "controls": r[12],
                 "local": (_ipstr(r[13]), r[14])} for r in rows]

    cdef object _ring_drops(self):
        cdef tpacket_stats_v3 st
        cdef socklen_t sl = sizeof(st)
        for i in range(MAX_IFACES):
            if self.fp.ifaces[i].fd >= 0:
                if getsockopt(self.fp.ifaces[i].fd, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0:
                    self.ring_drops += st.tp_drops
        return self.ring_drops

    # --- the AF_PACKET ring loop -------------------------------------------------------------------
    def open(self, int slot, uint32_t block_size=1 << 18, uint32_t nblocks=64, uint32_t tov_ms=1):
        """Open a TPACKET_V3 RX ring on interface `slot` (set_interface first). Needs root."""
        _check_slot(slot, MAX_IFACES, "interface")
        cdef Iface* f = &self.fp.ifaces[slot]
        if not f.in_use or f.fd >= 0:
            raise ValueError(f"interface slot {slot} is not configured or already open")
        cdef int fd = socket(AF_PACKET, SOCK_RAW, 0)
        if fd < 0:
            raise OSError(errno, os.strerror(errno))
        cdef int one = 1, version = TPACKET_V3, reserve = HEADROOM
        cdef tpacket_req3 req
        cdef sockaddr_ll sll
        memset(&req, 0, sizeof(req))
        req.tp_block_size = block_size
        req.tp_block_nr = nblocks
        req.tp_frame_size = 2048
        req.tp_frame_nr = (block_size // 2048) * nblocks
        req.tp_retire_blk_tov = tov_ms
        memset(&sll, 0, sizeof(sll))
        sll.sll_family = AF_PACKET
        sll.sll_protocol = htons(ETH_P_ALL)
        sll.sll_ifindex = f.ifindex
        cdef void* ring = MAP_FAILED
        try:
            _sockopt(fd, PACKET_VERSION, &version, sizeof(int), "PACKET_VERSION")
            # Headroom before every frame in the ring: TUN grows frames at the front in place.
            _sockopt(fd, PACKET_RESERVE, &reserve, sizeof(int), "PACKET_RESERVE")
            _sockopt(fd, PACKET_RX_RING, &req, sizeof(req), "PACKET_RX_RING")
            ring = mmap(NULL, <size_t>block_size * nblocks, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if ring == MAP_FAILED:
                raise OSError(errno, "mmap of the RX ring: " + os.strerror(errno))
            _sockopt(fd, PACKET_QDISC_BYPASS, &one, sizeof(int), "PACKET_QDISC_BYPASS")
            _sockopt(fd, PACKET_IGNORE_OUTGOING, &one, sizeof(int), "PACKET_IGNORE_OUTGOING")
            if bind(fd, <sockaddr*>&sll, sizeof(sll)) < 0:
                raise OSError(errno, "bind: " + os.strerror(errno))
        except BaseException:
            if ring != MAP_FAILED:
                munmap(ring, <size_t>block_size * nblocks)
            close(fd)
            raise
        f.fd = fd
        f.ring = <uint8_t*>ring
        f.ring_size = <size_t>block_size * nblocks
        f.block_size = block_size
        f.nblocks = nblocks
        f.cur_block = 0
        f.tx.n = 0

    def close(self):
        for i in range(MAX_IFACES):
            f = &self.fp.ifaces[i]
            if f.fd >= 0:
                munmap(f.ring, f.ring_size)
                close(f.fd)
                f.fd = -1

    def stop(self):
        self.stopping = True

    def run(self):
        """The packet loop; returns after stop(). Call it from a thread of its own."""
        self.stopping = False
        self.running = True
        try:
            with nogil:
                self._loop()
        finally:
            self.running = False

    cdef void _loop(self) noexcept nogil:
        cdef pollfd pfds[MAX_IFACES]
        cdef int nfds = 0, i, busy
        cdef Iface* f
        cdef tpacket_block_desc* blk
        for i in range(MAX_IFACES):
            if self.fp.ifaces[i].fd >= 0:
                pfds[nfds].fd = self.fp.ifaces[i].fd
                pfds[nfds].events = POLLIN
                pfds[nfds].revents = 0
                nfds += 1
        while not self.stopping:
            busy = 0
            for i in range(MAX_IFACES):
                f = &self.fp.ifaces[i]
                if f.fd < 0:
                    continue
                blk = <tpacket_block_desc*>(f.ring + <size_t>f.cur_block * f.block_size)
                if blk.hdr.bh1.block_status & TP_STATUS_USER:
                    self._block(i, blk)
                    busy = 1
            if not busy and poll(pfds, nfds, 100) == 0:
                # Idle for 100 ms: a larger step of the expiry sweep than busy blocks take.
                pthread_mutex_lock(&self.fp.lock)
                sweep(self.fp, now_ms(), (self.fp.max_conns >> 3) + 1)     # all of it in < 1 s
                pthread_mutex_unlock(&self.fp.lock)

    cdef void _block(self, int i, tpacket_block_desc* blk) noexcept nogil:
        cdef FP* fp = self.fp
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
        for k in range(npkts):
            frame = <uint8_t*>h + h.tp_mac
            fp.rx_frames += 1
            if h.tp_snaplen < h.tp_len:
                fp.reasons[R_TRUNCATED] += 1
            else:
                partial = 1 if h.tp_status & TP_STATUS_CSUMNOTREADY else 0
                fr.f = frame
                fr.flen = h.tp_snaplen
                fr.partial = partial
                fr.rx_if = i
                v = handle(fp, &fr, now, &fp.pending[fp.npending])
                if v == V_FORWARD:
                    self._tx(fr.tx_if, frame + fr.out_off, fr.out_len)
                elif v == V_NEW:
                    self._queue_pending(frame, h.tp_snaplen, i, partial)
                    if fp.npending == MAX_PENDING:
                        self._resolve_pending(now, False)
            h = <tpacket3_hdr*>(<uint8_t*>h + h.tp_next_offset)
        if fp.npending:
            self._resolve_pending(now, False)
        for k in range(MAX_IFACES):
            if fp.ifaces[k].tx.n:
                self._flush(k)
        sweep(fp, now, (fp.max_conns >> 10) + 64)      # the whole table every 1024 blocks
        pthread_mutex_unlock(&fp.lock)
        __sync_synchronize()
        blk.hdr.bh1.block_status = TP_STATUS_KERNEL
        f.cur_block = (f.cur_block + 1) % f.nblocks

    cdef void _tx(self, int ifslot, uint8_t* frame, uint32_t n) noexcept nogil:
        cdef TxQueue* q = &self.fp.ifaces[ifslot].tx
        if self.fp.ifaces[ifslot].fd < 0:
            self.fp.reasons[R_TX_ERROR] += 1
            return
        if q.n == TX_BATCH:
            self._flush(ifslot)
        q.iov[q.n].iov_base = frame
        q.iov[q.n].iov_len = n
        memset(&q.msgs[q.n], 0, sizeof(mmsghdr))
        q.msgs[q.n].msg_hdr.msg_iov = &q.iov[q.n]
        q.msgs[q.n].msg_hdr.msg_iovlen = 1
        q.n += 1

    cdef void _flush(self, int ifslot) noexcept nogil:
        cdef Iface* f = &self.fp.ifaces[ifslot]
        cdef int sent = 0, r
        while sent < f.tx.n:
            r = sendmmsg(f.fd, &f.tx.msgs[sent], f.tx.n - sent, 0)
            if r < 0:
                if errno == EINTR:
                    continue
                self.fp.reasons[R_TX_ERROR] += 1     # this frame is lost (e.g. ENOBUFS); go on
                sent += 1
            else:
                self.fp.tx_frames += r
                sent += r
        f.tx.n = 0


cdef _sockopt(int fd, int name, void* val, socklen_t n, what):
    if setsockopt(fd, SOL_PACKET, name, val, n) < 0:
        raise OSError(errno, f"setsockopt {what}: {os.strerror(errno)}")


def _check_slot(int slot, int limit, what):
    if not 0 <= slot < limit:
        raise ValueError(f"{what} slot {slot} out of range 0..{limit - 1}")
