# cython: language_level=3
"""The ENAT agent's reply path in C: TUN in, rewrite, raw socket out, a batch at a time.

:mod:`lb.realserver.enat_packets` keeps the sans-IO reference (``rewrite()``) and
:mod:`lb.realserver.enat_flows` the connection table (``FlowTable.outbound``); this module
does the same per-packet work without a Python object per packet on the common path (a TCP
or UDP reply of a known connection), so that a bulk transfer's ACK stream costs a read, a
few field loads and a share of one ``sendmmsg``:

- :func:`outbound` (table, packet, now) -> (bytes | None, reason): exactly what
  ``FlowTable.outbound`` returns and does to the table (checked byte for byte by the unit tests).
- :class:`ReplyPath`: the shell the agent's loop calls; :meth:`ReplyPath.drain` reads up to
  `budget` packets from the non-blocking TUN fd, rewrites each in its slot and sends them with
  one ``sendmmsg`` per slot batch (each with its IP_PKTINFO ``ipi_spec_dst`` = VIP, so the route
  is looked up as if from the VIP, as ``Agent.send`` does).

What is not the common path goes back to Python, packet by packet, in order (the batch so far is
sent first): ICMP (``rewrite_icmp_error``), and any packet whose connection is not in the table
or whose entry has expired -- ``Agent.reply`` then drains the learning socket and looks once more,
and ``FlowTable.get`` removes the expired entry and counts it. Malformed packets are counted
here, under the same reasons, in the same order of checks as ``_ip_header`` / ``_reply_key``.
"""
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from lbsys cimport (CLOCK_MONOTONIC, EAGAIN, EINTR, clock_gettime, errno, iovec, mmsghdr,
                   msghdr, sendmmsg, timespec)

from lb.realserver import enat_packets as _packets


cdef extern from "<unistd.h>" nogil:
    ssize_t read(int fd, void* buf, size_t n)


# One message's destination and control block: sockaddr_in (the client) and an IP_PKTINFO cmsg
# whose ipi_spec_dst is the VIP (ip_cmsg_send(): the source for the route lookup; the raw
# socket's header is sent as it is, IP_HDRINCL).
cdef extern from *:
    """
    #include <netinet/in.h>
    #include <sys/socket.h>
    #include <string.h>
    typedef struct {
        struct sockaddr_in to;
        union { char buf[CMSG_SPACE(sizeof(struct in_pktinfo))]; struct cmsghdr align; } ctl;
    } enat_dest;

    static void enat_dest_init(enat_dest *d, struct msghdr *m, struct iovec *iov) {
        memset(d, 0, sizeof(*d));
        d->to.sin_family = AF_INET;
        m->msg_name = &d->to;
        m->msg_namelen = sizeof(d->to);
        m->msg_iov = iov;
        m->msg_iovlen = 1;
        m->msg_control = d->ctl.buf;
        m->msg_controllen = sizeof(d->ctl.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(m);
        c->cmsg_level = IPPROTO_IP;
        c->cmsg_type = IP_PKTINFO;
        c->cmsg_len = CMSG_LEN(sizeof(struct in_pktinfo));
    }

    /* addresses as they are on the wire (network order, 4 bytes each) */
    static void enat_dest_set(enat_dest *d, const unsigned char *vip, const unsigned char *cip) {
        struct in_pktinfo *pi = (struct in_pktinfo *)CMSG_DATA((struct cmsghdr *)d->ctl.buf);
        memcpy(&pi->ipi_spec_dst, vip, 4);
        memcpy(&d->to.sin_addr, cip, 4);
    }
    """
    ctypedef struct enat_dest:
        pass
    void enat_dest_init(enat_dest* d, msghdr* m, iovec* iov) nogil
    void enat_dest_set(enat_dest* d, const uint8_t* vip, const uint8_t* cip) nogil

cdef enum:
    SLOT = 65536           # a TUN read holds one IP packet: at most 65535 bytes
    SLOTS = 64             # packets rewritten before one sendmmsg

cdef enum:
    TCP = 6
    UDP = 17
    ICMP = 1
    FIN = 0x01
    RST = 0x04

# verdicts of classify(): a reason index, or one of these
cdef enum:
    R_REWRITTEN, R_TRUNCATED, R_NOT_IPV4, R_BAD_IP_HEADER, R_FRAGMENT, R_NOT_TCP_UDP, R_BAD_L4_HEADER, \
        R_SEND_FAILED, N_REASONS
    TO_PYTHON = 100        # ICMP, or a connection the table does not hold (live) yet

REASON_NAMES = (_packets.REWRITTEN, _packets.TRUNCATED, _packets.NOT_IPV4, _packets.BAD_IP_HEADER,
                _packets.FRAGMENT, _packets.NOT_TCP_UDP, _packets.BAD_L4_HEADER, _packets.SEND_FAILED)
cdef str S_CLOSE = "close", S_FIN = "fin", S_EST = "established", S_UDP = "udp"


cdef inline uint16_t ld16(const uint8_t* p) noexcept nogil:
    return (<uint16_t>p[0] << 8) | p[1]


cdef inline void st16(uint8_t* p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF


cdef inline uint64_t fold(uint64_t s) noexcept nogil:
    # lb.inet.fold: end-around carry until 16 bits are left
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


cdef inline uint16_t ip_header_sum(const uint8_t* p, uint32_t ihl) noexcept nogil:
    # lb.inet.ones_sum over the header (ihl is a multiple of 4, so no odd tail)
    cdef uint64_t s = 0
    cdef uint32_t i
    for i in range(0, ihl, 2):
        s += ld16(p + i)
    return <uint16_t>fold(s)


cdef inline int ip_header(const uint8_t* p, Py_ssize_t n, uint32_t* ihl_out, uint32_t* end_out) noexcept nogil:
    """enat_packets._ip_header(need_total=True), the same checks in the same order."""
    if n < 20:
        return R_TRUNCATED
    if p[0] >> 4 != 4:
        return R_NOT_IPV4
    cdef uint32_t ihl = (p[0] & 0x0F) * 4, total = ld16(p + 2)
    if ihl < 20 or total < ihl:
        return R_BAD_IP_HEADER
    if n < ihl or total > n:
        return R_TRUNCATED
    if ip_header_sum(p, ihl) != 0xFFFF:
        return R_BAD_IP_HEADER
    if ld16(p + 6) & 0x3FFF:             # MF or an offset: no ports in every piece
        return R_FRAGMENT
    ihl_out[0], end_out[0] = ihl, total
    return R_REWRITTEN


cdef inline int classify(const uint8_t* p, Py_ssize_t n, uint32_t* ihl_out, uint32_t* end_out) noexcept nogil:
    """enat_packets.rewrite() up to the table lookup: TO_PYTHON for ICMP, a reason for what is
    dropped, R_REWRITTEN for a TCP/UDP reply whose key the caller looks up."""
    if n >= 20 and p[9] == ICMP:
        return TO_PYTHON
    cdef int why = ip_header(p, n, ihl_out, end_out)
    if why != R_REWRITTEN:
        return why
    cdef uint32_t ihl = ihl_out[0], end = end_out[0], ulen
    if p[9] == TCP:
        if end < ihl + 20 or p[ihl + 12] >> 4 < 5 or end < ihl + (p[ihl + 12] >> 4) * 4:
            return R_BAD_L4_HEADER
    elif p[9] == UDP:
        ulen = ld16(p + ihl + 4) if end >= ihl + 8 else 0
        if ulen < 8 or ihl + ulen > end:
            return R_BAD_L4_HEADER
    else:
        return R_NOT_TCP_UDP
    return R_REWRITTEN


cdef inline void rewrite_in_place(uint8_t* p, uint32_t ihl, const uint8_t* cip, uint16_t cport,
                                  uint16_t vport) noexcept nogil:
    """RIP:rport -> VIP:lport becomes VIP:vport -> CIP:cport, as enat_packets.rewrite(): the L4
    checksum by RFC 1624 eqn. 3 over the six words that change (a UDP checksum of 0, "none",
    kept; a computed 0 sent as 0xFFFF, RFC 768), the IP header checksum computed afresh."""
    cdef uint8_t* l4 = p + ihl
    cdef bint tcp = p[9] == TCP
    cdef uint8_t* field = l4 + (16 if tcp else 6)
    cdef uint16_t csum = ld16(field)
    cdef uint64_t s
    cdef uint32_t i
    cdef uint8_t new[12]
    memcpy(new, p + 16, 4)               # the VIP, now the source
    memcpy(new + 4, cip, 4)
    st16(new + 8, vport)
    st16(new + 10, cport)
    if tcp or csum:
        s = <uint16_t>~csum
        for i in range(0, 8, 2):
            s += <uint16_t>~ld16(p + 12 + i)
            s += ld16(new + i)
        for i in range(0, 4, 2):
            s += <uint16_t>~ld16(l4 + i)
            s += ld16(new + 8 + i)
        csum = <uint16_t>~fold(s)
        if csum == 0 and not tcp:
            csum = 0xFFFF
        st16(field, csum)
    memcpy(p + 12, new, 8)
    memcpy(l4, new + 8, 4)
    st16(p + 10, 0)
    st16(p + 10, <uint16_t>~ip_header_sum(p, ihl))


cdef inline object reply_key(const uint8_t* p, uint32_t ihl):
    """(proto, VIP, lport, RIP, rport) as enat_packets._reply_key builds it."""
    return (p[9], PyBytes_FromStringAndSize(<const char*>p + 16, 4), ld16(p + ihl + 2),
            PyBytes_FromStringAndSize(<const char*>p + 12, 4), ld16(p + ihl))


cdef inline double monotonic() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)       # the clock of time.monotonic()
    return ts.tv_sec + ts.tv_nsec * 1e-9


cdef class Core:
    """The table side: look up, rewrite, move the entry's state as FlowTable.outbound does."""
    cdef object table, entries, timeouts
    cdef uint64_t pending[N_REASONS]          # counts not yet added to table.counters

    def __init__(self, table):
        self.table, self.entries, self.timeouts = table, table.entries, table.timeouts
        memset(self.pending, 0, sizeof(self.pending))

    cdef int process(self, uint8_t* p, Py_ssize_t n, double now, uint32_t* end_out, uint8_t* cip_out) except -1:
        """One packet, rewritten in place: a reason index (counted in `pending`, except
        R_REWRITTEN, which the caller counts once it knows the send), or TO_PYTHON."""
        cdef uint32_t ihl = 0, end = 0
        self.table.now = now                  # FlowTable.outbound sets it for every packet
        cdef int why = classify(p, n, &ihl, &end)
        if why != R_REWRITTEN:
            if why != TO_PYTHON:
                self.pending[why] += 1
            return why
        key = reply_key(p, ihl)
        entry = self.entries.get(key)
        if entry is None or <double>entry.expires <= now:
            return TO_PYTHON                  # FlowTable.get() removes and counts an expired one
        cip = <bytes>entry.cip
        memcpy(cip_out, PyBytes_AS_STRING(cip), 4)
        rewrite_in_place(p, ihl, cip_out, <uint16_t>entry.cport, <uint16_t>entry.vport)
        # FlowTable.outbound -> _set_state(): close is final, fin never goes back to established
        if p[9] == UDP:
            state = S_UDP
        else:
            state = S_CLOSE if p[ihl + 13] & RST else S_FIN if p[ihl + 13] & FIN else S_EST
        old = entry.state
        if old != S_CLOSE and not (old == S_FIN and state == S_EST):
            entry.state = old = state
        cdef double expires = now + <double>self.timeouts[old]
        entry.expires = expires
        if expires < <double>entry.due:       # sooner than the expiry heap looks at it
            self.table._schedule(key, entry)
        end_out[0] = end
        return R_REWRITTEN

    cdef void flush_counts(self) except *:
        cdef int i
        counters = self.table.counters
        for i in range(N_REASONS):
            if self.pending[i]:
                name = REASON_NAMES[i]
                counters[name] = counters[name] + self.pending[i]
                self.pending[i] = 0


def outbound(table, packet, double now):
    """FlowTable.outbound(packet, now) done by the C path: (rewritten bytes | None, reason)."""
    cdef bytearray buf = bytearray(memoryview(packet).cast("B"))
    cdef Core core = Core(table)
    cdef uint32_t end = 0
    cdef uint8_t cip[4]
    cdef uint8_t* p = <uint8_t*><char*>buf if len(buf) else cip     # cip: any valid pointer for 0 bytes
    cdef int why = core.process(p, len(buf), now, &end, cip)
    if why == TO_PYTHON:
        return table.outbound(packet, now)
    if why == R_REWRITTEN:
        core.pending[R_REWRITTEN] += 1
    core.flush_counts()
    return (bytes(buf[:end]) if why == R_REWRITTEN else None), REASON_NAMES[why]


cdef class ReplyPath:
    """The agent's TUN -> raw socket loop body. `slow(packet)` is Agent.reply: what the C
    path leaves to Python goes there, in order."""
    cdef Core core
    cdef int tun_fd, raw_fd
    cdef object slow
    cdef uint8_t* slots
    cdef iovec iov[SLOTS]
    cdef mmsghdr msgs[SLOTS]
    cdef enat_dest dests[SLOTS]
    cdef unsigned int queued

    def __cinit__(self):
        self.slots = <uint8_t*>malloc(<size_t>SLOT * SLOTS)
        if self.slots == NULL:
            raise MemoryError()

    def __init__(self, table, int tun_fd, int raw_fd, slow):
        self.core, self.tun_fd, self.raw_fd, self.slow = Core(table), tun_fd, raw_fd, slow
        cdef int i
        for i in range(SLOTS):
            self.iov[i].iov_base = self.slots + <size_t>i * SLOT
            enat_dest_init(&self.dests[i], &self.msgs[i].msg_hdr, &self.iov[i])
        self.queued = 0

    def __dealloc__(self):
        free(self.slots)

    cdef void send_queued(self) noexcept:
        """sendmmsg what is queued; a message the kernel refuses counts as send_failed (as
        Agent.send counts a failed sendmsg) and the rest are tried again."""
        cdef unsigned int done = 0
        cdef int r
        while done < self.queued:
            r = sendmmsg(self.raw_fd, &self.msgs[done], self.queued - done, 0)
            if r > 0:
                self.core.pending[R_REWRITTEN] += r
                done += r
            elif r < 0 and errno == EINTR:
                continue
            else:                             # the first one failed (a later one is reported next call)
                self.core.pending[R_SEND_FAILED] += 1
                done += 1
        self.queued = 0

    def drain(self, int budget):
        """Up to `budget` packets from the TUN fd: (how many were read, whether a read failed
        otherwise than with EAGAIN -- the device may be gone, tun_chr_read_iter's EBADFD)."""
        cdef int count = 0
        cdef bint failed = False
        cdef ssize_t n
        cdef uint32_t end
        cdef uint8_t* p
        cdef int why
        cdef uint8_t cip[4]
        try:
            while count < budget:
                p = self.slots + <size_t>self.queued * SLOT
                n = read(self.tun_fd, p, SLOT)
                if n < 0:
                    if errno == EINTR:
                        continue
                    failed = errno != EAGAIN        # EWOULDBLOCK is EAGAIN on Linux
                    break
                if n == 0:                            # no packet (a TUN read never returns 0)
                    break
                count += 1
                end = 0
                why = self.core.process(p, n, monotonic(), &end, cip)
                if why == R_REWRITTEN:
                    self.iov[self.queued].iov_len = end
                    enat_dest_set(&self.dests[self.queued], p + 12, p + 16)
                    self.queued += 1
                    if self.queued == SLOTS:
                        self.send_queued()
                elif why == TO_PYTHON:
                    self.send_queued()            # keep the order of the server's packets
                    self.core.flush_counts()
                    self.slow(PyBytes_FromStringAndSize(<const char*>p, n))
        finally:
            self.send_queued()
            self.core.flush_counts()
        return count, failed
