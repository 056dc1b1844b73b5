# DR (ipvsadm -g, "Route"): the IP packet is untouched; only the destination MAC changes to the
# real server's (which holds the VIP on lo and does not answer ARP for it). Replies go from the
# real server straight to the client. The kernel's ip_vs_dr_xmit(); direction, MTU and counters
# are forward()'s (core.pxi).

cdef int xmit_dr(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    set_l2(fp, fr.f, nb)
    return V_FORWARD
