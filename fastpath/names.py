"""The names the fast path shares with Python: one list each, in numbering order.

setup.py writes fastpath/_names.pxi from this file (render()) before it builds: for each list a
C enum numbered in list order (R_<NAME>, S_<NAME>, V_<NAME>, FWD_<NAME>) and the Python tuple
or dict of the same names (REASON_NAMES, STATE_NAMES, VERDICT_NAMES, FWD_CODES). Both come from
the same row, so a C value and its name cannot drift apart. Edit this file, never the .pxi.
Plain Python with no imports: setup.py runs it before anything is built.
"""

# Why a frame was passed to the kernel or dropped: Forwarder.counters() keys, process()'s reason.
REASONS = [
    ("none", "counted nowhere: the frame went on"),
    ("not_ipv4", "not IPv4 (nor an ARP request for a VIP): the kernel's"),
    ("not_ours", "IPv4 that no service or connection claims: the kernel's"),
    ("short_frame", "shorter than an Ethernet header"),
    ("truncated", "the ring kept only part of it (tp_snaplen < tp_len)"),
    ("bad_ip_header", ""),
    ("bad_ip_checksum", ""),
    ("fragment", "to a VIP: IPVS reassembles, the fast path does not"),
    ("bad_l4_header", ""),
    ("bad_l4_checksum", ""),
    ("ttl_exceeded", "TTL <= 1 where the director routes (every mode, as decrement_ttl()): ICMP "
                     "time exceeded sent in its place (or icmp_ratelimited)"),
    ("tcp_no_conn", "not a SYN, and no connection (IPVS without sloppy_tcp)"),
    ("no_dest", "the scheduler named no (live) destination"),
    ("table_full", "no free connection entry"),
    ("no_route", ""),
    ("no_neighbour", "the next hop's MAC is not known (yet)"),
    ("too_big", "larger than the egress MTU"),
    ("tx_error", "sendmmsg failed, or the egress interface has no socket"),
    ("frag_needed", "DF and too big for the egress (TUN: with IPIP's 20 bytes): ICMP "
                    "fragmentation needed sent in its place (or icmp_ratelimited)"),
    ("lport_exhausted", "FULLNAT/ENAT: every (local address, port) taken; no connection"),
    ("toa_no_room", "forwarded without TOA: header or MTU has no room for 8 more bytes"),
    ("uoa_no_room", "ENAT UDP forwarded without UOA: IP header or MTU has no room for 8 more "
                    "bytes (fastpath/uoa.pxi)"),
    ("bad_vnet_hdr", "a virtio_net_hdr that lies about its frame, or asks for an offload the "
                     "fast path does not do (UFO, USO, checksum not at the L4 header)"),
    ("sched_error", "a scheduler written in Python raised, or named no server of the service"),
    ("hash_chain_full", "no connection: its hash chain holds CHAIN_MAX entries already"),
    ("dest_gone", "expire_nodest_conn: the connection's server was deleted; it goes too"),
    ("not_for_us", "the ring's pkttype says another host's or our own outgoing frame"),
    # ICMP (fastpath/icmp.pxi: ip_vs_in_icmp() / ip_vs_out_icmp())
    ("icmp_not_error", "ICMP that is no error IPVS relays (echo to a VIP, redirect, parameter "
                       "problem...): the kernel's"),
    ("icmp_bad_quote", "an ICMP error whose quote is cut short or no plain IPv4 header with 8 "
                       "bytes after it: the kernel's (IPVS ignores it too)"),
    ("icmp_about_icmp", "an ICMP error quoting an ICMP packet: the kernel's (never an error "
                        "about an error, RFC 1122 3.2.2)"),
    ("icmp_no_conn", "an ICMP error whose quote is of no connection: the kernel's"),
    ("bad_icmp_checksum", "an ICMP error about a connection with a wrong ICMP checksum"),
    ("icmp_relayed", "an ICMP error about a connection, translated and sent on"),
    ("icmp_ratelimited", "the director's own ICMP error (time exceeded, fragmentation needed) "
                         "over the rate limit (1000/s, burst 50): not sent, the frame dropped"),
    ("icmp_expired", "an ICMP error to relay with TTL <= 1: dropped, not answered (RFC 1122 3.2.2)"),
]

# Reasons counted beside a frame's verdict, not instead of one (the frame was forwarded too):
# received = forwarded + every other reason (Forwarder.counters(), the accounting identity).
NOT_VERDICTS = ("none", "tx_error", "toa_no_room", "uoa_no_room", "frag_needed", "ttl_exceeded",
                "icmp_relayed")

# Connection states: the kernel's IP_VS_TCP_S_* in its order (ip_vs.h), then one for UDP.
STATES = [
    ("NONE", ""),
    ("ESTABLISHED", "the only active state (docs: ipvs-reference.md)"),
    ("SYN_SENT", ""),
    ("SYN_RECV", ""),
    ("FIN_WAIT", ""),
    ("TIME_WAIT", ""),
    ("CLOSE", ""),
    ("CLOSE_WAIT", ""),
    ("LAST_ACK", ""),
    ("LISTEN", ""),
    ("SYNACK", ""),
    ("UDP", "every UDP connection (ip_vs_proto_udp.c has one state too)"),
]

# What the core did with a frame (handle()'s result; process()'s first element).
VERDICTS = [
    ("forward", "send fr.f + fr.out_off, fr.out_len bytes, on fr.tx_if"),
    ("pass", "not the fast path's: the kernel has it"),
    ("drop", "counted under a reason"),
    ("new", "opens a flow: queued for the scheduler"),
]

# How a connection's packets leave (ip_vs.h's IP_VS_CONN_F_FWD_MASK methods, plus two of DPVS's).
# The names are the configuration's (lb/modes/*.py take their fwd_code from FWD_CODES).
FORWARDS = [
    ("masq", "NAT (ipvsadm -m)"),
    ("route", "DR (-g)"),
    ("tunnel", "TUN, IPIP (-i)"),
    ("fullnat", "FULLNAT (DPVS -b): SNAT to a local address too, client in TOA"),
    ("enat", "ENAT (\"triangle\"): from the VIP to the RS, client in TOA (UDP: UOA)"),
]

# Which decision a service's scheduler program makes in C (fastpath/sched*.pxi); a scheduler's
# Python class names its kind (lb/schedulers/program.py). "py": no C decision, Python decides.
SCHEDULERS = [
    ("py", "a plugin (or lblc/lblcr): Python, once per batch of new flows"),
    ("rr", ""), ("wrr", ""), ("lc", ""), ("wlc", ""), ("sed", ""), ("nq", ""),
    ("fo", ""), ("ovf", ""), ("twos", ""), ("sh", ""), ("dh", ""), ("mh", ""),
]

# (list, C prefix, name of the count constant or None, Python name, Python form)
TABLES = [
    (REASONS, "R_", "R_NREASONS", "REASON_NAMES", tuple),
    (STATES, "S_", "S_NSTATES", "STATE_NAMES", tuple),
    (VERDICTS, "V_", None, "VERDICT_NAMES", tuple),
    (FORWARDS, "FWD_", None, "FWD_CODES", dict),
    (SCHEDULERS, "SCHED_", "SCHED_NKINDS", "SCHED_KINDS", dict),
]


def _enum(rows, prefix, count):
    out = ["cdef enum:"]
    for value, (name, why) in enumerate(rows):
        line = f"    {prefix}{name.upper()} = {value}"
        out.append(f"{line:<28}# {why}" if why else line)
    if count:
        out.append(f"    {count} = {len(rows)}")
    return out


def _python(rows, pyname, form):
    if form is dict:
        items = [f'    "{name}": {value},' for value, (name, _) in enumerate(rows)]
        return [f"{pyname} = {{"] + items + ["}"]
    return [f"{pyname} = ("] + [f'    "{name}",' for name, _ in rows] + [")"]


def render():
    """The text of _names.pxi."""
    out = ["# GENERATED by setup.py from fastpath/names.py: edit that file, not this one.",
           "# Each C enum below and the Python name after it come from one list there."]
    for rows, prefix, count, pyname, form in TABLES:
        out += [""] + _enum(rows, prefix, count) + [""] + _python(rows, pyname, form)
    out += ["", f"NOT_VERDICTS = {NOT_VERDICTS!r}"]
    return "\n".join(out) + "\n"
