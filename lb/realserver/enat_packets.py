"""The ENAT agent's per-packet logic, pure (no sockets): what a client-side packet teaches
(:func:`learn`) and how a server reply or ICMP error is turned towards the client
(:func:`rewrite`). :mod:`lb.realserver.enat_agent` says why the agent exists and how it is
wired; :mod:`lb.realserver.enat_flows` is the connection table that calls these.

Every packet gets one reason (:data:`IN_REASONS`, :data:`OUT_REASONS`); bad input is a reason,
never an exception.
"""
from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from lb.inet import checksum as ip_checksum, checksum_ok, fold
from lb.realserver.toa import toa_from_options
from lb.realserver.uoa import uoa_from_ip_options

TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
ICMP = socket.IPPROTO_ICMP
ICMP_ERRORS = (3, 4, 11)     # what ip_vs_out_icmp() takes: unreachable, source quench, time exceeded

# client side (AF_PACKET)
LEARNED, SYN_WITHOUT_TOA, TOA_NOT_IPV4, IN_FIN, IN_RST, IN_NO_CONN, IN_OTHER, IN_NOT_FROM_VIP, \
    IN_MALFORMED, TABLE_FULL, UOA_MALFORMED = (
        "learned", "syn_without_toa", "toa_not_ipv4", "in_fin", "in_rst", "in_no_conn", "in_other",
        "in_not_from_vip", "in_malformed", "table_full", "uoa_malformed")
IN_REASONS = (LEARNED, SYN_WITHOUT_TOA, TOA_NOT_IPV4, IN_FIN, IN_RST, IN_NO_CONN, IN_OTHER,
              IN_NOT_FROM_VIP, IN_MALFORMED, TABLE_FULL, UOA_MALFORMED)
# server side (TUN)
REWRITTEN, UNKNOWN_FLOW, TRUNCATED, NOT_IPV4, BAD_IP_HEADER, FRAGMENT, NOT_TCP_UDP, BAD_L4_HEADER, \
    SEND_FAILED, ICMP_REWRITTEN = ("rewritten", "unknown_flow", "truncated", "not_ipv4", "bad_ip_header",
                                   "fragment", "not_tcp_udp", "bad_l4_header", "send_failed",
                                   "icmp_rewritten")
OUT_REASONS = (REWRITTEN, UNKNOWN_FLOW, TRUNCATED, NOT_IPV4, BAD_IP_HEADER, FRAGMENT, NOT_TCP_UDP,
               BAD_L4_HEADER, SEND_FAILED, ICMP_REWRITTEN)


class Seen(NamedTuple):
    """What one client-side packet told."""
    key: tuple              # (TCP or UDP, VIP, lport, RIP, rport), addresses packed
    client: tuple | None    # (4-byte CIP, cport) from the TOA (UDP: the UOA)
    vport: int
    flags: int              # TCP flags (UDP: 0)


def _ip_header(p, need_total=True):
    """(ihl, end of packet, None) of an unfragmented IPv4 header, or (0, 0, reason).

    `need_total`: the whole packet must be there (a capture cut after the headers is not).
    """
    if len(p) < 20:
        return 0, 0, TRUNCATED
    if p[0] >> 4 != 4:
        return 0, 0, NOT_IPV4
    ihl, total = (p[0] & 0x0F) * 4, p[2] << 8 | p[3]
    if ihl < 20 or total < ihl:
        return 0, 0, BAD_IP_HEADER
    if len(p) < ihl or (need_total and total > len(p)):
        return 0, 0, TRUNCATED
    if not checksum_ok(p[:ihl]):
        return 0, 0, BAD_IP_HEADER
    if (p[6] << 8 | p[7]) & 0x3FFF:        # MF or an offset: no ports to rewrite in every piece
        return 0, 0, FRAGMENT
    return ihl, min(total, len(p)), None


def learn(packet, vips, port_map=None):
    """One packet from the client side (IPv4 header first) -> (Seen | None, reason).

    A TOA (on the SYN, or on any segment as DPVS may send it) -> LEARNED with the client;
    FIN / RST -> IN_FIN / IN_RST (the table closes the entry); a UDP datagram with a UOA
    (:mod:`lb.realserver.uoa`) -> LEARNED, one whose IP options do not parse or whose UOA is
    not 8 bytes -> UOA_MALFORMED; everything else is counted. `vips`: packed 4-byte addresses.
    Captures may be cut after the headers. Never raises.
    """
    p = memoryview(packet).cast("B")
    ihl, end, why = _ip_header(p, need_total=False)
    if why is not None:
        return None, IN_MALFORMED
    if p[9] == UDP:
        return _learn_udp(p, ihl, end, vips, port_map)
    if p[9] != TCP:
        return None, IN_OTHER
    src = bytes(p[12:16])
    if src not in vips:
        return None, IN_NOT_FROM_VIP
    if end < ihl + 20 or p[ihl + 12] >> 4 < 5 or end < ihl + (p[ihl + 12] >> 4) * 4:
        return None, IN_MALFORMED
    tcp = p[ihl:end]
    sport, dport, flags = tcp[0] << 8 | tcp[1], tcp[2] << 8 | tcp[3], tcp[13]
    key = (TCP, src, sport, bytes(p[16:20]), dport)
    vport = (port_map or {}).get(dport, dport)
    toa = toa_from_options(tcp[20:(tcp[12] >> 4) * 4])
    if toa is not None:
        if ":" in toa[0]:
            return None, TOA_NOT_IPV4
        return Seen(key, (socket.inet_aton(toa[0]), toa[1]), vport, flags), LEARNED
    if flags & RST:
        return Seen(key, None, vport, flags), IN_RST
    if flags & FIN:
        return Seen(key, None, vport, flags), IN_FIN
    if flags & SYN and not flags & ACK:
        return None, SYN_WITHOUT_TOA
    return None, IN_OTHER


def _learn_udp(p, ihl, end, vips, port_map):
    """learn() for a UDP datagram: the client from its UOA, if it has one."""
    src = bytes(p[12:16])
    if src not in vips:
        return None, IN_NOT_FROM_VIP
    client, malformed = uoa_from_ip_options(p[20:ihl])
    if malformed:
        return None, UOA_MALFORMED
    if client is None:
        return None, IN_OTHER
    if end < ihl + 8:
        return None, IN_MALFORMED
    sport, dport = p[ihl] << 8 | p[ihl + 1], p[ihl + 2] << 8 | p[ihl + 3]
    key = (UDP, src, sport, bytes(p[16:20]), dport)
    return Seen(key, client, (port_map or {}).get(dport, dport), 0), LEARNED


def _csum_update(csum: int, old: bytes, new: bytes) -> int:
    """RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'), over the 16-bit words of `old` -> `new`."""
    n = len(old) // 2
    s = (~csum & 0xFFFF) + sum((~w) & 0xFFFF for w in struct.unpack(f"!{n}H", old))
    s += sum(struct.unpack(f"!{n}H", new))
    return ~fold(s) & 0xFFFF


def _reply_key(p):
    """(ihl, end, key, None) of a server reply, or (0, 0, None, reason)."""
    ihl, end, why = _ip_header(p)
    if why is not None:
        return 0, 0, None, why
    proto = p[9]
    if proto == TCP:
        if end < ihl + 20 or p[ihl + 12] >> 4 < 5 or end < ihl + (p[ihl + 12] >> 4) * 4:
            return 0, 0, None, BAD_L4_HEADER
    elif proto == UDP:
        ulen = p[ihl + 4] << 8 | p[ihl + 5] if end >= ihl + 8 else 0
        if ulen < 8 or ihl + ulen > end:
            return 0, 0, None, BAD_L4_HEADER
    else:
        return 0, 0, None, NOT_TCP_UDP
    sport, dport = p[ihl] << 8 | p[ihl + 1], p[ihl + 2] << 8 | p[ihl + 3]
    return ihl, end, (proto, bytes(p[16:20]), dport, bytes(p[12:16]), sport), None


def _icmp_error_key(p):
    """(ihl, end, key of the quoted packet, None) of an ICMP error the server sends about a
    packet of one of its connections (quoting VIP:lport -> RIP:rport), or (0, 0, None, reason)."""
    ihl, end, why = _ip_header(p)
    if why is not None:
        return 0, 0, None, why
    if end < ihl + 8 + 20 or p[ihl] not in ICMP_ERRORS:
        return 0, 0, None, NOT_TCP_UDP     # echo replies and the like: not a connection's
    q = ihl + 8
    qihl = (p[q] & 0x0F) * 4
    if p[q] >> 4 != 4 or qihl < 20 or end < q + qihl + 8 or (p[q + 6] << 8 | p[q + 7]) & 0x1FFF:
        return 0, 0, None, BAD_L4_HEADER   # no quoted ports to read
    proto, ports = p[q + 9], q + qihl
    if proto not in (TCP, UDP):
        return 0, 0, None, NOT_TCP_UDP     # never an error about an error (RFC 1122 3.2.2)
    key = (proto, bytes(p[q + 12:q + 16]), p[ports] << 8 | p[ports + 1], bytes(p[q + 16:q + 20]),
           p[ports + 2] << 8 | p[ports + 3])
    return ihl, end, key, None


def _lookup(p, key_of, table):
    """(ihl, end, key, entry, why) of a packet by its key parser: why None when the table
    names its connection; UNKNOWN_FLOW with the key when it does not."""
    ihl, end, key, why = key_of(p)
    if why is not None:
        return ihl, end, None, None, why
    entry = table.get(key)
    return ihl, end, key, entry, (UNKNOWN_FLOW if entry is None else None)


def rewrite_icmp_error(packet, table):
    """The server's ICMP error about a connection's packet -> (bytes for the client | None,
    reason, key): as the director translates errors from a NAT server (ip_vs_nat_icmp()), from
    the VIP to the client, quoting CIP:cport -> VIP:vport; the quote's IP checksum made again,
    its L4 checksum left alone (as the kernel leaves it), the ICMP checksum in full. Pure."""
    p = memoryview(packet).cast("B")
    ihl, end, key, entry, why = _lookup(p, _icmp_error_key, table)
    if why is not None:
        return None, why, key
    out = bytearray(p[:end])
    q = ihl + 8
    qihl = (out[q] & 0x0F) * 4
    out[12:16], out[16:20] = key[1], entry.cip
    out[q + 12:q + 16], out[q + 16:q + 20] = entry.cip, key[1]
    out[q + qihl:q + qihl + 4] = struct.pack("!HH", entry.cport, entry.vport)
    out[q + 10:q + 12] = b"\0\0"
    out[q + 10:q + 12] = struct.pack("!H", ip_checksum(out[q:q + qihl]))
    out[ihl + 2:ihl + 4] = b"\0\0"
    out[ihl + 2:ihl + 4] = struct.pack("!H", ip_checksum(out[ihl:end]))
    out[10:12] = b"\0\0"
    out[10:12] = struct.pack("!H", ip_checksum(out[:ihl]))
    return bytes(out), ICMP_REWRITTEN, key


def rewrite(packet, table):
    """(rewritten bytes | None, reason, key | None): the core of :func:`rewrite_reply`."""
    p = memoryview(packet).cast("B")
    if len(p) >= 20 and p[9] == ICMP:
        return rewrite_icmp_error(packet, table)
    ihl, end, key, entry, why = _lookup(p, _reply_key, table)
    if why is not None:
        return None, why, key
    out = bytearray(p[:end])
    old = bytes(out[12:20]) + bytes(out[ihl:ihl + 4])
    new = key[1] + entry.cip + struct.pack("!HH", entry.vport, entry.cport)
    out[12:20], out[ihl:ihl + 4] = new[:8], new[8:]
    at = ihl + (16 if key[0] == TCP else 6)
    csum = out[at] << 8 | out[at + 1]
    if key[0] == TCP or csum:          # a UDP checksum of 0 means "none" (RFC 768): keep it so
        csum = _csum_update(csum, old, new)
        out[at:at + 2] = struct.pack("!H", csum or (0xFFFF if key[0] == UDP else 0))
    out[10:12] = b"\0\0"
    out[10:12] = struct.pack("!H", ip_checksum(out[:ihl]))
    return bytes(out), REWRITTEN, key


def rewrite_reply(packet, table):
    """A reply RIP:rport -> VIP:lport (IPv4 header first) -> (VIP:vport -> CIP:cport | None, reason).

    `table` maps (proto, VIP, lport, RIP, rport) (addresses packed) to an :class:`Entry`
    (anything with ``get``). Both checksums updated (RFC 1624), bytes past the IP total
    length cut. Pure; never raises on any bytes-like input.
    """
    out, reason, _ = rewrite(packet, table)
    return out, reason
