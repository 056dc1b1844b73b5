# DR (ipvsadm -g, "Route"): the IP packet is untouched; only the destination MAC changes to the
# real server's (which holds the VIP on lo and does not answer ARP for it). Replies go from the
# real server straight to the client.

cdef int xmit_dr(FP* fp, Conn* c, Frame* fr, Neigh* nb) noexcept nogil:
    cdef Dest* d = &fp.dests[c.dest]
    if fr.direction != DIR_IN:
        return pass_(fp, R_NOT_OURS)
    if fr.tot > fp.ifaces[nb.ifslot].mtu:
        return drop(fp, R_TOO_BIG)
    d.inpkts += 1
    d.inbytes += fr.tot
    set_l2(fp, fr.f, nb)
    return V_FORWARD
