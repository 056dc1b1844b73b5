# cython: language_level=3
"""The fast path: a per-frame core over byte buffers, and an AF_PACKET TPACKET_V3 ring loop.

`Forwarder.process(frame)` runs the core on one frame (no sockets, no root): tests feed it
scapy-built frames. `Forwarder.run()` is the packet loop: it releases the GIL, reads blocks of
frames from the RX rings, rewrites them in place and sends them with sendmmsg; it takes the GIL
once per block, and only when the block holds new flows for the scheduler.

Where things are: this file holds the Forwarder (its control API, counters and listings, and
thin entry points: sans-IO process()/process_batch()/expire(), the ring's open()/run()/stop()/
close()); _names.pxi (generated from names.py) the reasons, states, verdicts and forwarding
codes; keyed_hash.pxi the tables' SipHash; tables.pxi the C tables; expiry.pxi the timer wheel
and the flood defence; tcp_state.pxi the IPVS state machine; core.pxi the per-frame core;
sched*.pxi the schedulers' C decisions; lport.pxi local ports; mode_*.pxi the per-mode
rewrites; persist.pxi persistence templates; newflow.pxi the
new-flow batch; ring.pxi the ring loop and its sockets; wire.pxi checksums; lbsys.pxd the C
declarations.
"""
import ipaddress
import os
import time

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int16_t, int64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy, memmove, memset

from lbsys cimport *
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ

include "_names.pxi"
include "wire.pxi"
include "keyed_hash.pxi"
include "tables.pxi"
include "expiry.pxi"
include "lport.pxi"
include "sched.pxi"
include "sched_walk.pxi"
include "sched_hash.pxi"
include "tcp_state.pxi"
include "persist.pxi"
include "core.pxi"
include "mode_nat.pxi"
include "mode_dr.pxi"
include "mode_tun.pxi"
include "uoa.pxi"
include "mode_fullnat.pxi"
include "icmp.pxi"
include "newflow.pxi"
include "ring.pxi"

# Entries a listing or Forwarder.expire() handles per hold of the lock.
cdef enum:
    LIST_SLICE = 4096
# The longest timeout of a state, in seconds: ipvsadm's --set takes 0..INT_MAX / HZ (HZ = 1000
# at most), lb/director/config.py refuses the rest with ipvsadm's message.
MAX_TIMEOUT = 2147483

# The fixed sizes of the fast path's tables, for the control plane that hands out their slots.
LIMITS = {"services": MAX_SERVICES, "dests": MAX_DESTS, "laddrs": MAX_LADDRS,
          "ifaces": MAX_IFACES, "service_keys": MAX_KEYS}


cdef inline uint64_t now_ms() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000 + <uint64_t>(ts.tv_nsec // 1000000)


cdef inline uint64_t now_us() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000 + <uint64_t>(ts.tv_nsec // 1000)


def _ip(addr):
    return int(ipaddress.IPv4Address(addr))


def _ipstr(uint32_t v):
    return str(ipaddress.IPv4Address(v))


cdef class Forwarder:
    """One director's data plane. Slots (services, destinations, interfaces) are chosen by the
    control plane; the tables are C arrays guarded by one mutex (see tables.pxi)."""
    cdef FP* fp
    cdef public object scheduler_cb
    cdef bint running
    cdef Sink captured                  # process()/process_batch(): what was forwarded, in order
    cdef object ring_drops
    cdef readonly object active
    cdef readonly object inactive

    def __cinit__(self, uint32_t max_conns=1 << 20, scheduler_cb=None):
        self.fp = <FP*>calloc(1, sizeof(FP))
        if self.fp == NULL:
            raise MemoryError()
        fp = self.fp
        pthread_mutex_init(&fp.lock, NULL)
        fp.owner = <void*>self
        key = os.urandom(16)                # SipHash-1-3 key of every table (keyed_hash.pxi)
        fp.key[0] = int.from_bytes(key[:8], "little")
        fp.key[1] = int.from_bytes(key[8:], "little")
        fp.max_conns = max(max_conns, 16)
        fp.nbuckets = 16
        while fp.nbuckets < fp.max_conns:
            fp.nbuckets <<= 1
        fp.conns = <Conn*>calloc(fp.max_conns, sizeof(Conn))
        fp.bucket_in = <uint32_t*>calloc(fp.nbuckets, sizeof(uint32_t))
        fp.bucket_out = <uint32_t*>calloc(fp.nbuckets, sizeof(uint32_t))
        fp.free_list = <uint32_t*>calloc(fp.max_conns, sizeof(uint32_t))
        fp.segs = <uint8_t*>malloc(SEG_SLOTS * SEG_SLOT)
        fp.pools = <PortPool**>calloc(<size_t>MAX_DESTS * MAX_LADDRS, sizeof(PortPool*))
        if not (fp.conns and fp.bucket_in and fp.bucket_out and fp.free_list and fp.segs
                and fp.pools):
            raise MemoryError()
        cdef uint32_t i
        for i in range(fp.max_conns):
            fp.free_list[i] = fp.max_conns - 1 - i
        fp.nfree = fp.max_conns
        for i in range(MAX_IFACES):
            fp.ifaces[i].fd = -1
            fp.ifaces[i].big_fd = -1
            fp.ifaces[i].gso_fd = -1
            fp.ifaces[i].encap_fd = -1
        fp.toa_mode = TOA_ON_SYN
        fp.uoa_trail = UOA_TRAIL
        for i in range(MAX_SERVICES):
            fp.services[i].enat_laddr = -1
        for name, secs in DEFAULT_TIMEOUTS.items():
            fp.timeouts[STATE_NAMES.index(name)] = secs * 1000
        fp.pressure_level = fp.max_conns // 2      # flood defence (expiry.pxi): see set_flood_defence
        fp.embryo_ms = 3000
        fp.secure_tcp = 1
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
        free(self.fp.segs)
        pools_free_all(self.fp)
        for i in range(MAX_SERVICES):
            sched_free(self.fp.sched[i])
        pthread_mutex_destroy(&self.fp.lock)
        free(self.fp)
        self.fp = NULL

    # --- the control API: configuration -----------------------------------------------------------
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

    def set_tun_encap(self, int slot, uint32_t mark):
        """TUN aggregates leaving through this interface go whole, as GSO frames with the outer
        header in place, on a socket with SO_MARK `mark`, for lbd's tc egress program to mark
        as IPIP so that the kernel or the NIC segments them (lb/director/tun_encap.py); 0: lbd
        cuts them itself (xmit_tun_gso). Before open()."""
        _check_slot(slot, MAX_IFACES, "interface")
        if self.fp.ifaces[slot].fd >= 0:
            raise ValueError("set_tun_encap() before open()")
        self.fp.ifaces[slot].encap_mark = mark

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
        svc_index_build(fp)
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
        L.addr = a              # ports lent stay lent until their connections end
        L.low, L.high = low, high
        L.in_use = 1
        self._unlock()

    def laddr_used(self, int slot):
        """How many of this local address's ports are lent out now (to all real servers)."""
        _check_slot(slot, MAX_LADDRS, "local address")
        return self.fp.laddrs[slot].used

    def set_toa(self, bint syn=True, bint ack=False):
        """Where TOA goes: the SYN (the default), and/or the first ACK (DPVS's choice)."""
        self.fp.toa_mode = (TOA_ON_SYN if syn else 0) | (TOA_ON_ACK if ack else 0)

    def set_uoa(self, int trail=UOA_TRAIL):
        """How many datagrams of each ENAT UDP connection carry the client in UOA (uoa.pxi):
        the first `trail` toward the server (default 3, as DPVS); 0: none."""
        if not 0 <= trail <= 255:
            raise ValueError("UOA trail: 0..255 datagrams")
        self.fp.uoa_trail = <uint8_t>trail

    def clear_service(self, int slot):
        _check_slot(slot, MAX_SERVICES, "service")
        self._lock()
        try:
            self.fp.services[slot].in_use = 0
            self._set_keys(slot, [])
            sched_free(self.fp.sched[slot])
            self.fp.sched[slot] = NULL
        finally:
            self._unlock()

    def set_dest(self, int slot, int svc, rip, int rport, int fwd=FWD_MASQ, bint reset=False):
        """Install or edit a destination. Its connections keep their own copy of the address,
        so clearing a destination never breaks established flows."""
        _check_slot(slot, MAX_DESTS, "destination")
        cdef uint32_t r = _ip(rip)
        self._lock()
        d = &self.fp.dests[slot]
        cdef uint16_t gen
        if reset:
            gen = d.gen + 1             # a new server: what the old one left is not its own
            memset(d, 0, sizeof(Dest))
            d.gen = gen
            self.fp.active[slot] = 0
            self.fp.inactive[slot] = 0
            self.fp.overload[slot] = 0
            pools_drop_dest(self.fp, slot)
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
        self.fp.route_gen += 1          # live connections choose their next hops anew
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

    def iface_gone(self, int slot):
        """The interface of `slot` was deleted: the packet loop closes its ring (at its next
        turn, or here when the loop is not running) and serves the others."""
        _check_slot(slot, MAX_IFACES, "interface")
        self._lock()
        self.fp.ifaces[slot].gone = 1
        self.fp.ifaces_changed = 1
        if not self.running:
            ring_close_one(&self.fp.ifaces[slot])
        self._unlock()

    def iface_status(self, int slot):
        """{open, down, errors}: whether its ring is open, whether its socket last reported an
        error (link down) rather than frames, and how many errors it reported."""
        _check_slot(slot, MAX_IFACES, "interface")
        f = &self.fp.ifaces[slot]
        return {"open": f.fd >= 0, "down": bool(f.down), "errors": f.errors}

    def _check_iface(self, int ifslot):
        # The core indexes fp.ifaces[] with these slots: only configured interfaces may be named.
        _check_slot(ifslot, MAX_IFACES, "interface")
        if not self.fp.ifaces[ifslot].in_use:
            raise ValueError(f"interface slot {ifslot} is not configured (set_interface first)")

    def set_timeout(self, state, double seconds):
        """A state's timeout in seconds: 0 < seconds <= MAX_TIMEOUT (ipvsadm --set refuses the
        rest), 0 meaning the state's default as ipvsadm's 0 keeps the current value is the
        caller's business (lb/director/config.py)."""
        if state not in STATE_NAMES:
            raise ValueError(f"no connection state {state!r}")
        if not 0 <= seconds <= MAX_TIMEOUT:
            raise ValueError(f"timeout {seconds:g} s out of range 0..{MAX_TIMEOUT}")
        self.fp.timeouts[STATE_NAMES.index(state)] = <uint64_t>(seconds * 1000)

    def set_flood_defence(self, double pressure=0.5, double embryo_timeout=3.0, int secure_tcp=1):
        """The defence against floods of half-open connections (expiry.pxi): the table is under
        pressure above `pressure` x its entries; then embryonic connections (TCP, never
        ESTABLISHED) time out after at most `embryo_timeout` s, and `secure_tcp` 1 (2: always,
        0: never) keeps a bare ACK from making an input-only (DR/TUN/ENAT) connection
        ESTABLISHED. A full table always gives its oldest embryo to a new flow."""
        if not 0 <= pressure <= 1:
            raise ValueError(f"pressure {pressure:g} not within 0..1")
        if not 0 < embryo_timeout <= MAX_TIMEOUT:
            raise ValueError(f"embryo timeout {embryo_timeout:g} s out of range")
        if secure_tcp not in (0, 1, 2):
            raise ValueError("secure_tcp is 0, 1 or 2")
        self._lock()
        self.fp.pressure_level = <uint32_t>(self.fp.max_conns * pressure)
        self.fp.embryo_ms = <uint32_t>(embryo_timeout * 1000)
        self.fp.secure_tcp = secure_tcp
        self._unlock()

    def set_expire_nodest_conn(self, bint on):
        """IPVS's expire_nodest_conn (default off): on, a packet of a connection whose server
        was deleted is dropped (dest_gone) and the connection goes; off, it keeps flowing."""
        self.fp.expire_nodest = on

    def set_lport_sweep(self, double seconds):
        """FULLNAT/ENAT local ports: each (local address, real server) pool's cursor keeps up
        with a line that sweeps the port range once in `seconds`, read off CLOCK_MONOTONIC, so a
        restarted director does not lend again the ports its predecessor has just used (which
        the real server may hold in TIME_WAIT; see lport.pxi). 0 (the default): every pool
        starts at the range's low end and only its own lending moves it."""
        if not 0 <= seconds <= 86400:
            raise ValueError(f"local port sweep {seconds} s out of range 0..86400")
        self.fp.lport_sweep_ms = <uint64_t>(seconds * 1000)

    def set_busy_poll(self, int usec):
        """After a ring visit that found frames, keep looking at the rings for `usec`
        microseconds before sleeping in poll() (0: sleep at once, the default). A reply that
        comes back within that time is taken without a thread wake-up (what SO_BUSY_POLL does
        for sockets), at the price of that much CPU after each burst."""
        if not 0 <= usec <= 1000000:
            raise ValueError(f"busy poll {usec} us out of range 0..1000000")
        self.fp.busy_poll_us = usec

    def set_hash_key(self, bytes key):
        """Replace the SipHash key (16 bytes) of an empty table: for tests that need to know
        which keys share a bucket (the key from os.urandom is never shown)."""
        if len(key) != 16:
            raise ValueError("a SipHash key is 16 bytes")
        self._lock()
        try:
            if self.fp.max_conns != self.fp.nfree:
                raise ValueError("the table is not empty")
            self.fp.key[0] = int.from_bytes(key[:8], "little")
            self.fp.key[1] = int.from_bytes(key[8:], "little")
            svc_index_build(self.fp)
        finally:
            self._unlock()

    def chain_stats(self):
        """(longest chain, entries in chains) of the in-key hash table: for tests of the keyed
        hash (a collision attack shows as one long chain)."""
        cdef uint32_t b, n, longest = 0, i
        cdef uint64_t total = 0
        self._lock()
        for b in range(self.fp.nbuckets):
            n = 0
            i = self.fp.bucket_in[b]
            while i:
                n += 1
                i = self.fp.conns[i - 1].next_in
            total += n
            longest = max(longest, n)
        self._unlock()
        return longest, total

    # --- the sans-IO entry points: the core on frames given as bytes ------------------------------
    def process(self, frame, now=None, bint partial=False, int rx_if=0, vnet=None, int pkttype=0):
        """Run the core on one Ethernet frame. Returns (verdict, reason, out) where out is a list
        of (ifslot, bytes) frames to send. A new flow asks scheduler_cb, as the loop does.
        `reason` names why a frame was passed or dropped (or "frag_needed" when the frame sent is
        the ICMP error that replaced it). `vnet`: the 10-byte virtio_net_hdr the frame came with,
        as the ring delivers it; then every frame in `out` starts with the one it leaves with.
        A TUN aggregate gives several frames (its segments). `pkttype`: the ring's sll_pkttype
        (PACKET_HOST 0 ... PACKET_OTHERHOST 3, PACKET_OUTGOING 4)."""
        cdef bytearray buf = bytearray(HEADROOM) + bytearray(frame) + bytearray(1)
        cdef Frame fr
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        cdef int v, k
        memset(&fr, 0, sizeof(Frame))
        fr.f = <uint8_t*>buf + HEADROOM
        fr.flen = len(buf) - HEADROOM - 1
        fr.partial = <int>partial
        fr.rx_if = rx_if
        if vnet is not None:
            if len(vnet) != VNET_LEN:
                raise ValueError(f"a virtio_net_hdr is {VNET_LEN} bytes, not {len(vnet)}")
            vbytes = bytes(vnet)
            fr.vnet = 1
            vnet_load(&fr.vh, <const uint8_t*><char*>vbytes)
        with nogil:
            pthread_mutex_lock(&self.fp.lock)
            self.fp.last_reason = R_NONE
            self.captured.n = 0
            self.fp.npending = 0
            self.fp.nsegs = 0
            self.fp.sink = &self.captured
            self.fp.rx_frames += 1
            v = handle_received(self.fp, &fr, t, &self.fp.pending[0], <uint8_t>pkttype)
            if v == V_NEW:
                v = new_flow(self.fp, &fr, t, &self.captured)
                if v == V_NEW:
                    resolve_pending(self.fp, t, &self.captured)
                    v = V_FORWARD if self.captured.n else V_DROP
            elif v == V_FORWARD:
                self.fp.fwd_frames += 1
                emit(self.fp, &self.captured, &fr)
            self.fp.sink = NULL
            pthread_mutex_unlock(&self.fp.lock)
        reason = REASON_NAMES[self.fp.last_reason] if self.fp.last_reason else None
        out = [self._sent(&self.captured.frames[k], vnet is not None) for k in range(self.captured.n)]
        return VERDICT_NAMES[v], reason, out if v == V_FORWARD else []

    cdef tuple _sent(self, Frame* fr, bint with_vnet):
        cdef uint8_t head[VNET_LEN]
        body = bytes(fr.f[fr.out_off:fr.out_off + <int>fr.out_len])
        if with_vnet:
            vnet_for_tx(fr, head)
            body = bytes(head[:VNET_LEN]) + body
        return (fr.tx_if, body)

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
        self._lock()
        try:
            self.captured.n = 0
            self.fp.npending = 0
            self.fp.nsegs = 0
            self.fp.sink = &self.captured
            for b in bufs:
                memset(&fr, 0, sizeof(Frame))
                fr.f = <uint8_t*>b + HEADROOM
                fr.flen = len(b) - HEADROOM - 1
                self.fp.rx_frames += 1
                v = handle(self.fp, &fr, t, &self.fp.pending[self.fp.npending])
                if v == V_FORWARD:
                    self.fp.fwd_frames += 1
                    emit(self.fp, &self.captured, &fr)
                elif v == V_NEW:
                    new_flow(self.fp, &fr, t, &self.captured)
            if self.fp.npending:
                with nogil:
                    resolve_pending(self.fp, t, &self.captured)
            out = [self._sent(&self.captured.frames[k], False) for k in range(self.captured.n)]
        finally:
            self.fp.sink = NULL
            self._unlock()
        return out

    def expire(self, now=None):
        """Free every entry due at `now` (the loop does this after every batch: expiry.pxi).
        Returns how many entries the timer wheel looked at."""
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        cdef uint32_t seen = 0, step
        while True:
            with nogil:
                pthread_mutex_lock(&self.fp.lock)
                step = wheel_run(self.fp, t, LIST_SLICE, True)
                pthread_mutex_unlock(&self.fp.lock)
            seen += step
            if step < LIST_SLICE:
                return seen

    # --- the control API: counters and listings ---------------------------------------------------
    def counters(self):
        fp = self.fp
        out = {name: fp.reasons[i] for i, name in enumerate(REASON_NAMES) if i}
        out.update(rx_frames=fp.rx_frames, tx_frames=fp.tx_frames, new_conns=fp.new_conns,
                   expired_conns=fp.expired_conns, templates=fp.templates,
                   arp_replies=fp.arp_replies, rx_batches=fp.rx_batches, rx_polls=fp.rx_polls,
                   conns=fp.max_conns - fp.nfree - fp.templates,
                   forwarded=fp.fwd_frames, embryos=fp.embryos,
                   embryos_evicted=fp.embryos_evicted,
                   under_pressure=int(under_pressure(fp)),
                   tx_nobufs=fp.tx_nobufs, tx_again=fp.tx_again, rerouted=fp.rerouted,
                   ring_drops=self._ring_drops())
        return out

    def load_counters(self, int slot, int64_t active, int64_t inactive):
        """Set a destination's ActiveConn/InActConn by hand: for tests and benchmarks of the
        schedulers (the packet loop keeps them itself)."""
        _check_slot(slot, MAX_DESTS, "destination")
        self.fp.active[slot] = active
        self.fp.inactive[slot] = inactive

    def set_scheduler(self, int slot, program):
        """Give service `slot` the scheduler program its Python class prepared
        (lb.schedulers.program.Program). Built here, outside the lock, then swapped in whole;
        what the old one's decisions changed (rr's position, wrr's cw, twos' random state) is
        carried over as the kernel's dest_changed hooks do. kind "py": Python decides."""
        _check_slot(slot, MAX_SERVICES, "service")
        cdef Sched* s = sched_build(program)
        cdef Sched* old
        self._lock()
        old = self.fp.sched[slot]
        sched_carry(s, old)
        sched_lift_overload(self.fp, s, old)
        self.fp.sched[slot] = s
        self._unlock()
        sched_free(old)

    def scheduler_state(self, int slot):
        """The C program's changing state: {"kind", "pos", "last_slot", "cw", "mw", "di"}, or
        None without a program."""
        _check_slot(slot, MAX_SERVICES, "service")
        self._lock()
        s = self.fp.sched[slot]
        out = None if s == NULL else {
            "kind": s.kind, "pos": s.pos, "last_slot": s.last_slot, "cw": s.cw, "mw": s.mw,
            "di": s.di, "rng": s.rng}
        self._unlock()
        return out

    def pick(self, int slot, caddr, int cport=0, vaddr="0.0.0.0", int vport=0, int proto=6):
        """The destination slot service `slot`'s C decision picks for a new flow, as the packet
        path asks it (thresholds included), or -1. No connection is made: for the tests that
        hold each C decision to its Python class, and for benchmarks."""
        _check_slot(slot, MAX_SERVICES, "service")
        cdef Pending p
        memset(&p, 0, sizeof(Pending))
        p.svc = slot
        p.proto = proto
        p.caddr = caddr if type(caddr) is int else _ip(caddr)
        p.cport = cport
        p.vaddr = vaddr if type(vaddr) is int else _ip(vaddr)
        p.vport = vport
        self._lock()
        try:
            if self.fp.sched[slot] == NULL or self.fp.sched[slot].kind == SCHED_PY:
                raise ValueError(f"service slot {slot} has no C scheduler")
            return sched_pick(self.fp, slot, &p)
        finally:
            self._unlock()

    def zero_dest(self, int slot):
        """ipvsadm -Z: the cumulative counters (conns, packets, bytes) back to 0."""
        _check_slot(slot, MAX_DESTS, "destination")
        self._lock()
        d = &self.fp.dests[slot]
        d.conns = d.pkts[DIR_IN] = d.pkts[DIR_OUT] = d.bytes[DIR_IN] = d.bytes[DIR_OUT] = 0
        self._unlock()

    def dest_counters(self, int slot):
        _check_slot(slot, MAX_DESTS, "destination")
        d = &self.fp.dests[slot]
        return {"active": self.fp.active[slot], "inactive": self.fp.inactive[slot], "conns": d.conns,
                "templates": self.fp.dest_tmpl[slot],
                "inpkts": d.pkts[DIR_IN], "outpkts": d.pkts[DIR_OUT],
                "inbytes": d.bytes[DIR_IN], "outbytes": d.bytes[DIR_OUT],
                "overloaded": bool(self.fp.overload[slot])}

    def conns(self, now=None):
        """Every live connection as a dict (for listings and tests). The table is read in
        slices of LIST_SLICE entries, the lock released between them, so that the packet loop
        never waits for a listing longer than one slice takes (well under a millisecond); an
        entry made or freed meanwhile may be listed or not, as with /proc/net/ip_vs_conn."""
        cdef uint64_t t = now_ms() if now is None else <uint64_t>(now * 1000)
        cdef uint32_t start = 0, i, end
        cdef Conn* copy = <Conn*>malloc(LIST_SLICE * sizeof(Conn))
        cdef Conn* c
        if copy == NULL:
            raise MemoryError()
        rows = []
        try:
            while start < self.fp.max_conns:
                end = min(start + LIST_SLICE, self.fp.max_conns)
                self._lock()        # a copy of the slice (a memcpy, tens of microseconds) ...
                memcpy(copy, &self.fp.conns[start], (end - start) * sizeof(Conn))
                self._unlock()      # ... read with the packet loop running
                for i in range(end - start):
                    c = &copy[i]
                    if c.flags & CONN_IN_USE:
                        rows.append((c.proto, c.caddr, c.cport, c.vaddr, c.vport, c.daddr, c.dport,
                                     c.state, c.dest, c.svc, c.expires, c.flags & CONN_TEMPLATE,
                                     c.n_control, c.laddr, c.lport))
                start = end
        finally:
            free(copy)
        return [{"proto": {6: "TCP", 17: "UDP"}.get(r[0], "IP"), "client": (_ipstr(r[1]), r[2]),
                 "virtual": (_ipstr(r[3]), r[4]), "dest": (_ipstr(r[5]), r[6]),
                 "state": STATE_NAMES[r[7]], "dest_slot": r[8], "svc_slot": r[9],
                 "expires_in": max(0.0, (<int64_t>r[10] - <int64_t>t) / 1000.0),
                 "template": bool(r[11]), "controls": r[12],
                 "local": (_ipstr(r[13]), r[14])} for r in rows]

    cdef object _ring_drops(self):
        self.ring_drops += ring_drop_count(self.fp)
        return self.ring_drops

    # --- the ring loop's entry points (ring.pxi) --------------------------------------------------
    def open(self, int slot, uint32_t block_size=1 << 18, uint32_t nblocks=64, uint32_t tov_ms=1,
             int version=2, uint32_t slots=512, uint32_t big_slots=0):
        """Open the RX ring on interface `slot` (set_interface first). Needs root. `version` 2
        (the default): TPACKET_V2, `slots` frames of 68 KB, each served as soon as it is
        written; 3: TPACKET_V3, `nblocks` blocks of `block_size`, served when full or after
        `tov_ms` (the lower latency of V2 is why it is the default; V3 stays for comparison).
        `big_slots` > 0 (V2): split ring, `slots` frames of 2 KB and `big_slots` of 68 KB for
        the frames that do not fit 2 KB (ring.pxi ring_open())."""
        if not 0 < slots <= 1 << 20 or big_slots > 1 << 16:
            raise ValueError("slots must be 1..1048576, big_slots 0..65536")
        if version not in (2, 3):
            raise ValueError("version must be 2 or 3")
        _check_slot(slot, MAX_IFACES, "interface")
        cdef Iface* f = &self.fp.ifaces[slot]
        if not f.in_use or f.fd >= 0:
            raise ValueError(f"interface slot {slot} is not configured or already open")
        ring_open(f, block_size, nblocks, tov_ms, TPACKET_V2 if version == 2 else TPACKET_V3, slots,
                  big_slots if version == 2 else 0)

    def close(self):
        ring_close(self.fp)

    def stop(self):
        self.fp.stopping = 1

    def run(self):
        """The packet loop; returns after stop(). Call it from a thread of its own."""
        self.fp.stopping = 0
        self.running = True
        try:
            with nogil:
                ring_loop(self.fp)
        finally:
            self.running = False


cdef int* _ints(values, int n) except? NULL:
    # A malloc'd copy of `values` (n ints; at least one allocated), for a Sched.
    cdef int* out = <int*>calloc(max(n, 1), sizeof(int))
    cdef int k
    if out == NULL:
        raise MemoryError()
    for k in range(n):
        out[k] = values[k]
    return out


cdef Sched* sched_build(program) except NULL:
    # The C form of a Program; checked here, so a bad one is refused before the swap.
    kind = program.kind
    if not 0 <= kind < SCHED_NKINDS:
        raise ValueError(f"unknown scheduler kind {kind}")
    n = len(program.slots)
    if any(not 0 <= x < MAX_DESTS for x in program.slots):
        raise ValueError("a scheduler names a destination slot out of range")
    if not (len(program.weights) == len(program.uthr) == len(program.lthr) == n):
        raise ValueError("a scheduler program's server lists differ in length")
    if any(not 0 <= i < n for i in program.cand) or any(not -1 <= i < n for i in program.table):
        raise ValueError("a scheduler program names a server it does not have")
    cdef Sched* s = <Sched*>calloc(1, sizeof(Sched))
    if s == NULL:
        raise MemoryError()
    try:
        s.kind, s.flags, s.n = kind, program.flags, n
        s.slot = _ints(program.slots, n)
        s.weight = _ints(program.weights, n)
        s.uthr = _ints(program.uthr, n)
        s.lthr = _ints(program.lthr, n)
        limited = [i for i in range(n) if program.uthr[i] > 0]
        s.nlimited = len(limited)
        s.limited = _ints(limited, s.nlimited)
        s.ncand = len(program.cand)
        s.cand = _ints(program.cand, s.ncand)
        s.sums = <int64_t*>calloc(max(s.ncand, 1), sizeof(int64_t))
        s.ntable = len(program.table)
        s.table = <int16_t*>calloc(max(s.ntable, 1), sizeof(int16_t))
        if s.sums == NULL or s.table == NULL:
            raise MemoryError()
        total = 0
        for k in range(s.ncand):
            total += program.weights[program.cand[k]]
            s.sums[k] = total
        for k in range(s.ntable):
            s.table[k] = program.table[k]
        if kind == SCHED_SH or kind == SCHED_DH:
            if s.ntable != HASH_SIZE:
                raise ValueError(f"an sh/dh table has {HASH_SIZE} entries")
        elif kind == SCHED_MH and s.ntable != MH_M:
            raise ValueError(f"an mh table has {MH_M} entries")
        s.max_weight = max([program.weights[i] for i in program.cand], default=0)
        s.pos, s.last_slot = program.pos, program.last_slot
        s.cw, s.mw, s.di = program.cw, program.mw, program.di
        s.rng = program.rng
    except BaseException:
        sched_free(s)
        raise
    return s


def _check_slot(int slot, int limit, what):
    if not 0 <= slot < limit:
        raise ValueError(f"{what} slot {slot} out of range 0..{limit - 1}")


def attach_length_filter(int fd, uint32_t min_len, uint32_t max_len):
    """The split ring's cBPF length filter (ring.pxi length_filter()) on any socket `fd`:
    the socket then takes only packets of min_len..max_len bytes as its filter sees them
    (0: no bound). For tests: on a UDP socket the filter sees the UDP header and payload."""
    length_filter(fd, min_len, max_len)
