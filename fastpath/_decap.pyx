# The userspace IPIP decapsulator's loop in C (lb._decap): recvmmsg batches from the raw
# IPPROTO_IPIP socket, decap_core.pxi's checks and GRO, writev to the TUN device (IFF_VNET_HDR).
# lb/realserver/decap.py is the daemon around it; its decapsulate() the sans-IO reference.
# DecapCore.process() runs the same core on a list of packets with no socket (for tests).
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

from lbsys cimport iovec, mmsghdr, errno, EINTR, EAGAIN, MSG_DONTWAIT

cdef extern from "<sys/socket.h>" nogil:
    int recvmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags, void* timeout)

cdef extern from "<sys/uio.h>" nogil:
    long writev(int fd, const iovec* iov, int iovcnt)

include "wire.pxi"
include "decap_core.pxi"

REASONS = ("not_ipip", "truncated", "bad_outer", "bad_inner", "not_a_vip", "forwarded", "write_failed")
DEF RX_BATCH = 64                 # packets per recvmmsg: also the most one aggregate can span
DEF SLOT = 65536                  # a raw socket hands over reassembled packets up to 64 KB


cdef class DecapCore:
    cdef uint32_t vips[64]
    cdef int nvips
    cdef uint64_t counts[D_NREASONS]
    cdef uint64_t _frames
    cdef Gro gro
    cdef uint8_t zero_hdr[VNET_HDR_LEN]   # the vnet header of a frame that goes as it came
    cdef uint8_t partial_hdr[VNET_HDR_LEN]    # ... of one whose TCP checksum is partial
    cdef uint8_t* slots
    cdef mmsghdr msgs[RX_BATCH]
    cdef iovec rx_iov[RX_BATCH]
    cdef int tun_fd
    cdef list out                 # process(): what would have been written, instead of a fd

    def __cinit__(self, packed_vips):
        cdef int i
        cdef bytes b
        vips = list(packed_vips)
        if len(vips) > 64:
            raise ValueError("at most 64 VIPs")
        for i in range(len(vips)):
            v = vips[i]
            b = bytes(v)
            if len(b) != 4:
                raise ValueError(f"not a packed IPv4 address: {v!r}")
            self.vips[i] = ld32(<const uint8_t*><const char*>b)
        self.nvips = len(vips)
        self.slots = <uint8_t*>calloc(RX_BATCH, SLOT)
        if self.slots == NULL:
            raise MemoryError()
        for i in range(RX_BATCH):
            self.rx_iov[i].iov_base = self.slots + i * SLOT
            self.rx_iov[i].iov_len = SLOT
            memset(&self.msgs[i], 0, sizeof(mmsghdr))
            self.msgs[i].msg_hdr.msg_iov = &self.rx_iov[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1
        self.tun_fd = -1

    def __dealloc__(self):
        free(self.slots)

    cdef void emit(self, iovec* iov, int cnt, int nseg):
        # One frame to the TUN device (or to self.out); nseg packets counted forwarded or failed.
        cdef long r
        cdef int i
        if self.out is not None:
            self.out.append(b"".join([(<uint8_t*>iov[i].iov_base)[:iov[i].iov_len] for i in range(cnt)]))
            r = 0
        else:
            r = writev(self.tun_fd, iov, cnt)
        if r < 0:                          # EBADFD once the device was deleted (tun_chr_write_iter)
            self.counts[D_WRITE_FAILED] += nseg
        else:
            self.counts[D_FORWARDED] += nseg
            self._frames += 1

    cdef void flush(self):
        if self.gro.nseg:
            self.emit(self.gro.iov, gro_seal(&self.gro), self.gro.nseg)
            self.gro.nseg = 0

    cdef void one(self, const uint8_t* p, uint32_t n):
        cdef uint32_t off = 0, length = 0, thl
        cdef int why = decap_check(p, n, self.vips, self.nvips, &off, &length)
        cdef iovec single[2]
        if why != D_FORWARDED:
            self.counts[why] += 1
            return
        p += off
        thl = tcp_payload_ok(p, length)
        if thl and gro_joins(&self.gro, p, length, thl):
            gro_append(&self.gro, p, length)
            return
        self.flush()
        if thl:
            gro_start(&self.gro, p, length, thl)
            return
        single[0].iov_base = self.zero_hdr          # not TCP that can merge: as it came
        single[0].iov_len = VNET_HDR_LEN
        thl = tcp_partial(p, length)
        if thl:                                     # ... with its checksum left to the stack
            memset(self.partial_hdr, 0, VNET_HDR_LEN)
            self.partial_hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM
            st16le(self.partial_hdr + 6, <uint16_t>thl)
            st16le(self.partial_hdr + 8, 16)
            single[0].iov_base = self.partial_hdr
        single[1].iov_base = <void*>p
        single[1].iov_len = length
        self.emit(single, 2, 1)

    def process(self, packets):
        """Packets (bytes-like, outer header included) -> the frames a TUN device would get,
        each a virtio_net_hdr and an IPv4 packet. Counted as drain() counts."""
        cdef bytes b
        held = [bytes(p) for p in packets]        # aggregates point into them until flush()
        self.out = []
        try:
            for b in held:
                self.one(<const uint8_t*><const char*>b, len(b))
            self.flush()
            return self.out
        finally:
            self.out = None

    def drain(self, int raw_fd, int tun_fd, int budget):
        """Up to `budget` packets from raw_fd, in recvmmsg batches, each batch's aggregates
        written before the next batch reuses the buffers (GRO flushes at the end of a NAPI poll
        the same way). EAGAIN ends it early; EINTR too (the daemon looks at its signals).
        Returns the packets read."""
        cdef int got, i, done = 0
        self.tun_fd = tun_fd
        while done < budget:
            got = recvmmsg(raw_fd, self.msgs, min(RX_BATCH, budget - done), MSG_DONTWAIT, NULL)
            if got <= 0:
                if got < 0 and errno not in (EAGAIN, EINTR):
                    raise OSError(errno, "recvmmsg")
                break
            for i in range(got):
                self.one(self.slots + i * SLOT, self.msgs[i].msg_len)
            self.flush()
            done += got
            if got < RX_BATCH:
                break
        return done

    def take_counts(self):
        """{reason: packets} since the last call (and the frames written), then zeroed."""
        got = {REASONS[i]: self.counts[i] for i in range(D_NREASONS)}
        frames = self._frames
        memset(self.counts, 0, sizeof(self.counts))
        self._frames = 0
        return got, frames
