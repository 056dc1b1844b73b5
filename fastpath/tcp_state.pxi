# Connection states: the IPVS TCP state machine and the UDP state, all of it in this file, laid
# out as net/netfilter/ipvs/ip_vs_proto_tcp.c so that it can be checked against the kernel line
# by line. The states are S_* (_names.pxi, from STATES in names.py), numbered as the kernel's
# IP_VS_TCP_S_*; UDP's one state comes after them.
#
# Rules (the kernel's tcp_conn_schedule(), tcp_state_idx(), set_tcp_state(), is_new_conn_expected):
# - Only a SYN without RST opens a TCP connection; anything else without a connection is dropped
#   (no sloppy_tcp).
# - A packet's event is the first of RST, SYN, FIN, ACK that it carries; with none of them the
#   state stays, and the timer is re-armed all the same.
# - Rows by direction: INPUT (client -> RS) and OUTPUT (RS -> client) where the director carries
#   both (NAT, FULLNAT); INPUT-ONLY where replies bypass it (DR, TUN, ENAT: IP_VS_CONN_F_NOOUTPUT).
# - ActiveConn/InActConn follow the state: only ESTABLISHED is active (docs ipvs-reference.md;
#   newer kernels' tcp_state_active_table also counts SYN_SENT, SYN_RECV and SYNACK).
# - Every transition, or none, re-arms the connection's timer with the new state's timeout.
# - A SYN on the key of a TIME_WAIT or CLOSE connection that no template controls is a new
#   connection: the old one goes and the SYN is scheduled afresh (conn_reuse_mode).
# - UDP: one state, its timer re-armed by every datagram (ip_vs_proto_udp.c).
# - secure_tcp (expiry.pxi), in the manner of the kernel's tcp_states_dos[]: input-only,
#   SYN_RECV + ACK without data stays SYN_RECV; the first data makes it ESTABLISHED.
# Not here: the kernel's conn_reuse_mode & 2 case (FIN_WAIT without output).

# IPVS default timeouts in seconds, by state (tcp_timeouts[], udp_timeouts[]).
DEFAULT_TIMEOUTS = {"NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60,
                    "FIN_WAIT": 120, "TIME_WAIT": 120, "CLOSE": 10, "CLOSE_WAIT": 60,
                    "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120, "UDP": 300}
assert sorted(DEFAULT_TIMEOUTS) == sorted(STATE_NAMES), "a state without a default timeout"

cdef enum:
    TCP_NSTATES = S_UDP     # the kernel's IP_VS_TCP_S_LAST: the TCP states are those before UDP
    EV_SYN = 0              # tcp_state_idx()'s events: the rows of each direction's block
    EV_FIN = 1
    EV_ACK = 2
    EV_RST = 3
    TCP_NEVENTS = 4

# The kernel's short names, so that the rows below read as ip_vs_proto_tcp.c's.
cdef enum:
    sNO = S_NONE
    sES = S_ESTABLISHED
    sSS = S_SYN_SENT
    sSR = S_SYN_RECV
    sFW = S_FIN_WAIT
    sTW = S_TIME_WAIT
    sCL = S_CLOSE
    sCW = S_CLOSE_WAIT
    sLA = S_LAST_ACK
    sLI = S_LISTEN
    sSA = S_SYNACK

# The next state by [direction][event][current state]: the kernel's tcp_states[]. Cython checks
# at compile time that every row has TCP_NSTATES entries.
# *: NONE + ACK -> CLOSE, as the kernel's table had it before sloppy TCP; current kernels have
#    sES there (INPUT and INPUT-ONLY). Kept as it was (no behaviour change); it matters only
#    for a connection whose opening SYN was dropped after the connection was made (TTL, MTU,
#    no neighbour): otherwise that SYN moves it from NONE to SYN_RECV at once.
cdef uint8_t TCP_NEXT[3][TCP_NEVENTS][TCP_NSTATES]
#                                      sNO  sES  sSS  sSR  sFW  sTW  sCL  sCW  sLA  sLI  sSA
#   INPUT
TCP_NEXT[DIR_IN][EV_SYN][:] =         [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR]
TCP_NEXT[DIR_IN][EV_FIN][:] =         [sCL, sCW, sSS, sTW, sTW, sTW, sCL, sCW, sLA, sLI, sTW]
TCP_NEXT[DIR_IN][EV_ACK][:] =         [sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES]  # *
TCP_NEXT[DIR_IN][EV_RST][:] =         [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sSR]
#   OUTPUT
TCP_NEXT[DIR_OUT][EV_SYN][:] =        [sSS, sES, sSS, sSR, sSS, sSS, sSS, sSS, sSS, sLI, sSR]
TCP_NEXT[DIR_OUT][EV_FIN][:] =        [sTW, sFW, sSS, sTW, sFW, sTW, sCL, sTW, sLA, sLI, sTW]
TCP_NEXT[DIR_OUT][EV_ACK][:] =        [sES, sES, sSS, sES, sFW, sTW, sCL, sCW, sLA, sES, sES]
TCP_NEXT[DIR_OUT][EV_RST][:] =        [sCL, sCL, sSS, sCL, sCL, sTW, sCL, sCL, sCL, sCL, sCL]
#   INPUT-ONLY
TCP_NEXT[DIR_INPUT_ONLY][EV_SYN][:] = [sSR, sES, sES, sSR, sSR, sSR, sSR, sSR, sSR, sSR, sSR]
TCP_NEXT[DIR_INPUT_ONLY][EV_FIN][:] = [sCL, sFW, sSS, sTW, sFW, sTW, sCL, sCW, sLA, sLI, sTW]
TCP_NEXT[DIR_INPUT_ONLY][EV_ACK][:] = [sCL, sES, sSS, sES, sFW, sTW, sCL, sCW, sCL, sLI, sES]  # *
TCP_NEXT[DIR_INPUT_ONLY][EV_RST][:] = [sCL, sCL, sCL, sSR, sCL, sCL, sCL, sCL, sLA, sLI, sCL]


cdef inline uint8_t conn_first_state(uint8_t proto) noexcept nogil:
    # A TCP connection starts in NONE and its SYN moves it on; UDP has its one state.
    return S_NONE if proto == 6 else S_UDP

cdef inline bint tcp_opens(uint8_t flags) noexcept nogil:
    # tcp_conn_schedule() without sloppy_tcp: a SYN, and no RST.
    return (flags & 0x06) == 0x02

cdef inline bint tcp_reopens(Conn* c, uint8_t flags) noexcept nogil:
    # is_new_conn_expected(): a client that reuses its port after the connection ended. A
    # controlled connection (persistence) is not replaced: its template decides.
    if (flags & 0x16) != 0x02:         # a SYN without ACK or RST; tested first: it is rare
        return False
    return (c.state == S_TIME_WAIT or c.state == S_CLOSE) and not c.control

cdef inline int tcp_event(uint8_t flags) noexcept nogil:
    # tcp_state_idx(): RST wins, then SYN, FIN, ACK; -1 for none of them.
    if flags & 0x04:
        return EV_RST
    if flags & 0x02:
        return EV_SYN
    if flags & 0x01:
        return EV_FIN
    if flags & 0x10:
        return EV_ACK
    return -1

cdef inline void conn_set_state(FP* fp, Conn* c, uint8_t state) noexcept nogil:
    # set_tcp_state()'s accounting: a connection leaving ESTABLISHED moves from the
    # destination's active count to its inactive one, and back when it returns.
    if state != c.state:
        if not (c.flags & CONN_INACTIVE) and state != S_ESTABLISHED:
            fp.active[c.dest] -= 1
            fp.inactive[c.dest] += 1
            c.flags |= CONN_INACTIVE
        elif (c.flags & CONN_INACTIVE) and state == S_ESTABLISHED:
            fp.active[c.dest] += 1
            fp.inactive[c.dest] -= 1
            c.flags &= ~CONN_INACTIVE
        if state == S_ESTABLISHED:
            embryo_del(fp, c)           # past its handshake: never evicted as an embryo again
        c.state = state

cdef inline void conn_state_update(FP* fp, Conn* c, int direction, const uint8_t* tcp_flags,
                                   uint64_t now, uint32_t payload=1) noexcept nogil:
    # ip_vs_set_state() for a packet of connection c going `direction` (DIR_IN or DIR_OUT);
    # tcp_flags: the flags byte of its TCP header (byte 13), read only for TCP; payload: its
    # TCP data length (read only by secure_tcp, expiry.pxi: only data, not a bare ACK, takes an
    # input-only connection from SYN_RECV to ESTABLISHED).
    cdef int ev
    cdef uint8_t nxt
    if c.proto == 6:
        ev = tcp_event(tcp_flags[0])
        if ev >= 0:
            if not sees_replies(c.fwd):
                direction = DIR_INPUT_ONLY
            nxt = TCP_NEXT[direction][ev][c.state]
            if (direction == DIR_INPUT_ONLY and nxt == S_ESTABLISHED and c.state == S_SYN_RECV
                    and payload == 0 and secure_input_only(fp)):
                nxt = S_SYN_RECV
            conn_set_state(fp, c, nxt)
    conn_arm(fp, c, now + state_timeout(fp, c))
