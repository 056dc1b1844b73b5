# DR (ipvsadm -g, "Route"): the IP packet is untouched; only the destination MAC changes to the
# real server's (which holds the VIP on lo and does not answer ARP for it). Replies go from the
# real server straight to the client. The kernel's ip_vs_dr_xmit(); direction, MTU and counters
# are forward()'s (core.pxi).

cdef int xmit_dr(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    # A partial checksum leaves partial with its virtio_net_hdr; without one (no vnet header
    # to tell the receiver) it is completed here, or the real server would drop the packet.
    if fr.partial and not fr.keep_partial:
        l4_csum_full(fr.l4, fr.l4len, ld32(fr.ip + 12), ld32(fr.ip + 16), fr.proto,
                     16 if fr.proto == 6 else 6)
    set_l2(fp, fr.f, nb)
    return V_FORWARD
