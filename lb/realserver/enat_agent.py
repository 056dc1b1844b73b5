"""ENAT reply agent for real servers: replies go straight to the client, not through the director.

    python -m lb.realserver.enat_agent --vip VIP [--vip VIP2 ...] [--map-port RPORT:VPORT ...]
                            [--ifname lbenat0] [--stats-file PATH] [--max-conns N]

An ENAT director turns CIP:cport -> VIP:vport into VIP:lport -> RIP:rport and puts CIP:cport
in the SYN's TOA (kind 254, see :mod:`lb.realserver.toa`), or for UDP in an IP option of the
first three datagrams (UOA, type 31, see :mod:`lb.realserver.uoa`). The server here accepts a
connection (or a datagram) from VIP:lport and answers it; this agent turns each answer
RIP:rport -> VIP:lport into VIP:vport -> CIP:cport, which routing takes to the client
directly (the "triangle"). The server's own ICMP errors about a connection (port
unreachable, fragmentation needed: to VIP:lport, so into our device too, and the director
never sees them) are translated the same way, as the director translates a NAT server's
(:func:`rewrite_icmp_error`).

Mechanism, and why:

- **Learning** -- an AF_PACKET socket (SOCK_DGRAM, ETH_P_IP, every interface, outgoing
  frames ignored) with a classic BPF filter that passes only TCP from a VIP with SYN, FIN or
  RST set, or a TOA right after the fixed header, and UDP from a VIP whose first IP option is
  of UOA's type (other datagrams cost no copy). The kernel copies each such packet to us
  *before* its own IP stack sees it (packet taps run first in __netif_receive_skb), so by the
  time the server's SYN-ACK comes out, the SYN that told us the client is already queued:
  the loop always drains this socket before reading replies, and once more on a miss. No
  netfilter, no kernel module, and the server's packets are not delayed.
- **Catching replies** -- a TUN device (IFF_TUN, no packet info) owned by the agent and a
  route ``VIP/32 dev lbenat0``: everything the server sends to a VIP lands in our file
  descriptor instead of leaving for the director. The device is not persistent, so the
  device and its route go away with the process, even on SIGKILL.
- **Sending** -- a raw socket (IPPROTO_RAW, i.e. IP_HDRINCL) with the rewritten packet;
  its route lookup is made with the VIP as source (IP_PKTINFO ``ipi_spec_dst``, allowed
  for header-including sockets), so a ``from VIP`` policy rule (``lb realserver setup
  --reply-gateway``) steers replies as it does for DR and TUN; without one the main table
  (the default gateway) is used.
- **Reverse-path filter** -- the SYN comes in on eth0 from the VIP, and the best route back
  to the VIP is now the TUN device: strict ``rp_filter`` (1) would drop every SYN. Loose
  (2) or off (0) is needed; ``lb realserver setup --mode enat`` turns strict into loose.

The connection table ((proto, VIP, lport, RIP, rport) -> (CIP, cport, vport)) follows the
part of a TCP conversation the agent sees: SYN -> ``syn`` (60 s), a reply -> ``established``
(900 s idle), a FIN either way -> ``fin`` (120 s, the server's last ACK must still pass), an
RST either way -> ``close`` (10 s). vport is rport unless ``--map-port`` says otherwise (a
director may map VIP:80 to RIP:8080).

UDP: a datagram with a UOA makes (or, with another client, replaces) the entry of its
(VIP, lport, RIP, rport); it lives 300 s (``udp``), restarted by every reply the agent
rewrites and by every datagram with a UOA (the director sends it on the first three of each
of its connections only, so on a busy flow the replies keep it alive). A UOA of the wrong
length, or IP options that do not parse, teach nothing and are counted ``uoa_malformed``.
After 300 s without a reply the entry is gone: a later reply of that flow is dropped and
counted ``unknown_flow`` until the director's connection ends too (its UDP timeout, 300 s
by default, after the client's last datagram) and the client's next datagram opens a new
one, whose first datagrams carry the UOA again. So a UDP service whose server stays silent for more
than 300 s and then speaks first loses that reply; request/response (DNS, QUIC, games) does
not. If the director's first three datagrams of a connection are all lost, or none had room
for the option (uoa_no_room on the director), the agent never learns that flow either.

Every packet is counted under one reason (:data:`IN_REASONS`, :data:`OUT_REASONS`); bad
input is dropped and counted, never raised. ``ready`` on stdout once the device and route
are up; counters as JSON in ``--stats-file`` (every 0.2 s while they change, and at exit);
SIGTERM/SIGINT stop it cleanly with ``lb.realserver.enat_agent: stopped; counters: ...`` on stderr;
its device or its network namespace deleted under it, it says so and exits 3 (``EXIT_GONE``).
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import heapq
import ipaddress
import itertools
import os
import socket
import struct
import sys
import time
from typing import NamedTuple

from lb.inet import checksum as ip_checksum, checksum_ok, fold
from lb.realserver import enat_tc
from lb.realserver.daemon import FLUSH_INTERVAL, Daemon, disable_ipv6, open_tun, rp_filter, serve
from lb.realserver.toa import toa_from_options
from lb.realserver.uoa import UOA_TYPE, uoa_from_ip_options

DEFAULT_IFNAME = "lbenat0"
REPLY_PATHS = ("auto", "tc", "userspace")
ETH_P_IP = 0x0800
SOL_PACKET = 263
PACKET_IGNORE_OUTGOING = 23
PACKET_OUTGOING = 4
SO_ATTACH_FILTER = 26
IP_PKTINFO = 8
TCP, UDP = socket.IPPROTO_TCP, socket.IPPROTO_UDP
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10
RCVBUF = 4 << 20
BATCH = 256
EXPIRE_INTERVAL = 1.0
MAX_VIPS = 64
SNAPLEN = 256              # IP + TCP headers are all learning needs

TIMEOUTS = {"syn": 60, "established": 900, "fin": 120, "close": 10, "udp": 300}

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
# the kernel's reply program, when it is there (counted there; see lb.realserver.enat_tc)
OFFLOAD_REFUSED = "offload_refused"
ICMP = socket.IPPROTO_ICMP
ICMP_ERRORS = (3, 4, 11)     # what ip_vs_out_icmp() takes: unreachable, source quench, time exceeded
EXPIRED = "expired"


class Entry:
    """Where replies of one connection go: the client (4-byte CIP, cport) and the vport."""
    __slots__ = ("cip", "cport", "vport", "state", "expires", "due")

    def __init__(self, cip: bytes, cport: int, vport: int, state: str, expires: float):
        self.cip, self.cport, self.vport, self.state, self.expires = cip, cport, vport, state, expires
        self.due = None       # when the expiry heap looks at it next (its one live heap item)

    def __repr__(self):
        return f"Entry({socket.inet_ntoa(self.cip)}:{self.cport} vport={self.vport} {self.state})"


class Seen(NamedTuple):
    """What one client-side packet told."""
    key: tuple              # (TCP or UDP, VIP, lport, RIP, rport), addresses packed
    client: tuple | None    # (4-byte CIP, cport) from the TOA (UDP: the UOA)
    vport: int
    flags: int              # TCP flags (UDP: 0)


# -- the per-packet logic (pure) ------------------------------------------------------------------

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


# -- the connection table (sans-IO: the caller gives `now`) -----------------------------------------

def offload_key(key) -> bytes:
    """The kernel map's key of a table key."""
    proto, vip, lport, rip, rport = key
    return enat_tc.key(vip, rip, lport, rport, proto)


class FlowTable:
    def __init__(self, vips, port_map=None, max_conns: int = 1 << 18, timeouts=None):
        self.vips = frozenset(socket.inet_aton(str(ipaddress.IPv4Address(v))) for v in vips)
        self.port_map = dict(port_map or {})
        self.max_conns = max_conns
        self.timeouts = {**TIMEOUTS, **(timeouts or {})}
        self.entries = {}
        self.counters = dict.fromkeys((*IN_REASONS, *OUT_REASONS, EXPIRED, OFFLOAD_REFUSED), 0)
        self.now = 0.0
        self._heap, self._seq = [], itertools.count()
        self.offload = None    # where replies are rewritten in the kernel (lb.realserver.enat_tc)

    def __len__(self):
        return len(self.entries)

    def get(self, key):
        """The live entry for `key` (an expired one is removed and not returned)."""
        entry = self.entries.get(key)
        if entry is not None and entry.expires <= self.now and not self._used_in_kernel(key, entry):
            self._forget(key)
            self.counters[EXPIRED] += 1
            return None
        return entry

    def _used_in_kernel(self, key, entry: Entry) -> bool:
        """An entry past its time whose replies the kernel's program (`offload`) has rewritten
        since, which this table did not see: its time restarts from that reply."""
        if self.offload is None:
            return False
        last = self.offload.last_used(offload_key(key))
        if last is None or last + self.timeouts[entry.state] <= self.now:
            return False
        entry.expires = last + self.timeouts[entry.state]
        return True

    def _forget(self, key) -> None:
        del self.entries[key]
        if self.offload is not None:
            self.offload.delete(offload_key(key))

    def add(self, key, cip: bytes, cport: int, vport: int, now: float, state: str | None = None):
        """Install or replace an entry; False (counted table_full) when the table is full."""
        self.now = now
        if key not in self.entries and len(self.entries) >= self.max_conns:
            self.expire(now)
            if len(self.entries) >= self.max_conns:
                self.counters[TABLE_FULL] += 1
                return False
        state = state or ("syn" if key[0] == TCP else "udp")
        entry = Entry(cip, cport, vport, state, now + self.timeouts[state])
        self.entries[key] = entry
        self._schedule(key, entry)
        if self.offload is not None and not self.offload.put(offload_key(key), cip, cport, vport):
            self.counters[OFFLOAD_REFUSED] += 1       # its replies come to us instead
        return True

    def _schedule(self, key, entry: Entry) -> None:
        entry.due = entry.expires
        heapq.heappush(self._heap, (entry.due, next(self._seq), key, entry))

    def _set_state(self, entry: Entry, state: str, key=None) -> None:
        """Move to `state` (close is final, fin never goes back) and restart its timeout."""
        if entry.state != "close" and not (entry.state == "fin" and state == "established"):
            entry.state = state
        entry.expires = self.now + self.timeouts[entry.state]
        if key is not None and entry.expires < entry.due:     # sooner than the heap expects
            self._schedule(key, entry)

    def inbound(self, packet, now: float) -> str:
        """A client-side packet (from the AF_PACKET socket): learn or close. Returns the reason."""
        self.now = now
        seen, reason = learn(packet, self.vips, self.port_map)
        if reason == LEARNED:
            old = self.get(seen.key)
            # A SYN starts a connection afresh (a director reuses lports); a TOA on a later
            # segment (DPVS puts it on the first ACK) only teaches what is not known yet.
            fresh = bool(seen.flags & SYN) or old is None or (old.cip, old.cport) != seen.client
            if fresh and not self.add(seen.key, *seen.client, seen.vport, now):
                return TABLE_FULL
            entry = self.entries[seen.key]
            self._set_state(entry, "close" if seen.flags & RST else "fin" if seen.flags & FIN else entry.state,
                            seen.key)
        elif reason in (IN_FIN, IN_RST):
            entry = self.get(seen.key)
            if entry is None:
                reason = IN_NO_CONN
            else:
                self._set_state(entry, "close" if reason == IN_RST else "fin", seen.key)
        self.counters[reason] += 1
        return reason

    def outbound(self, packet, now: float):
        """A server reply (from the TUN device) -> (rewritten bytes | None, reason)."""
        self.now = now
        out, reason, key = rewrite(packet, self)
        if reason == REWRITTEN:
            entry = self.entries[key]
            if key[0] == UDP:
                self._set_state(entry, "udp", key)
            else:
                flags = out[(out[0] & 0x0F) * 4 + 13]
                self._set_state(entry, "close" if flags & RST else "fin" if flags & FIN else "established", key)
        self.counters[reason] += 1
        return out, reason

    def expire(self, now: float) -> int:
        """Remove entries idle past their timeout; returns how many went."""
        self.now, gone = now, 0
        while self._heap and self._heap[0][0] <= now:
            due, _, key, entry = heapq.heappop(self._heap)
            if self.entries.get(key) is not entry or due != entry.due:
                continue                               # replaced, removed, or rescheduled sooner
            if entry.expires <= now and not self._used_in_kernel(key, entry):
                self._forget(key)
                gone += 1
            else:
                self._schedule(key, entry)
        self.counters[EXPIRED] += gone
        return gone


# -- the kernel side: BPF filter, TUN device, sockets ---------------------------------------------------

# classic BPF opcodes (linux/filter.h): BPF_LD|BPF_B|BPF_ABS and the rest, by what they do
LDB, LDH, LDW, LDXB_MSH, LDB_IND, AND_K = 0x30, 0x28, 0x20, 0xB1, 0x50, 0x54
JEQ_K, JGT_K, JSET_K, RET_K = 0x15, 0x25, 0x45, 0x06


def bpf_program(vips) -> list:
    """Classic BPF (code, jt, jf, k) passing, from a VIP and unfragmented, TCP with SYN/FIN/RST
    or a TOA first, and UDP whose IP header has options, the first of them of UOA's type.

    Offsets are from the IP header (SOCK_DGRAM packet sockets see no link header). Only a
    pre-filter: :func:`learn` checks everything again (a UOA of the wrong length passes here
    so that learn() counts it).
    """
    vips = list(vips)
    if not 1 <= len(vips) <= MAX_VIPS:
        raise ValueError(f"1..{MAX_VIPS} VIPs")
    n = len(vips)
    hdr = 6 + n                        # where the VIP test lands: the protocol again
    tcp, udp = hdr + 2, hdr + 7
    accept, drop = hdr + 12, hdr + 13
    prog = [(LDB, 0, 0, 9), (JEQ_K, 1, 0, TCP), (JEQ_K, 0, drop - 3, UDP),
            (LDH, 0, 0, 6), (JSET_K, drop - 5, 0, 0x3FFF), (LDW, 0, 0, 12)]
    for i, vip in enumerate(vips):
        at = 6 + i
        prog.append((JEQ_K, hdr - at - 1, (drop - at - 1) if i == n - 1 else 0, int.from_bytes(vip, "big")))
    prog += [(LDB, 0, 0, 9), (JEQ_K, 0, udp - (hdr + 1) - 1, TCP),
             # TCP: flags, or the first option's kind
             (LDXB_MSH, 0, 0, 0), (LDB_IND, 0, 0, 13), (JSET_K, accept - (tcp + 2) - 1, 0, SYN | FIN | RST),
             (LDB_IND, 0, 0, 20), (JEQ_K, accept - (tcp + 4) - 1, drop - (tcp + 4) - 1, 254),
             # UDP: IHL > 5, and the first option's type at offset 20
             (LDB, 0, 0, 0), (AND_K, 0, 0, 0x0F), (JGT_K, 0, drop - (udp + 2) - 1, 5),
             (LDB, 0, 0, 20), (JEQ_K, 0, drop - (udp + 4) - 1, UOA_TYPE),
             (RET_K, 0, 0, SNAPLEN), (RET_K, 0, 0, 0)]
    assert len(prog) == drop + 1
    return prog


def attach_filter(sock: socket.socket, prog) -> None:
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
    fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)


def open_learn_socket(vips) -> socket.socket:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    try:
        attach_filter(s, bpf_program(vips))
        # the filter was attached after the socket started queueing: drop what came before it
        s.setblocking(False)
        _drain_socket(s)
        with contextlib.suppress(OSError):      # Linux >= 4.20; the pkttype check covers older ones
            s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)   # our own sends (src VIP) too
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    except BaseException:
        s.close()
        raise
    return s


def _drain_socket(s) -> None:
    try:
        while True:
            s.recv(1)
    except (BlockingIOError, InterruptedError):
        pass


def configure_tun(ifname: str, vips, mtu: int) -> None:
    """Up, no IPv6, and ``VIP/32 dev IFNAME`` for each VIP (they go with the device)."""
    from pyroute2 import IPRoute
    disable_ipv6(ifname)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=ifname)[0]
        ipr.link("set", index=index, mtu=mtu, state="up")
        for vip in vips:
            ipr.route("add", dst=vip, dst_len=32, oif=index, scope=253)


def strict_rp_filter(ifnames) -> list:
    """Interfaces where the effective rp_filter (max of all and the device) is strict (1)."""
    return [dev for dev in ifnames if max(rp_filter("all"), rp_filter(dev)) == 1]


class Agent(Daemon):
    """The shell around :class:`FlowTable`: packet socket and TUN in, raw socket out."""

    name = "lb.realserver.enat_agent"

    def __init__(self, vips, port_map=None, ifname: str = DEFAULT_IFNAME, stats_file: str | None = None,
                 max_conns: int = 1 << 18, mtu: int = 1500, reply_path: str = "auto"):
        super().__init__(list(dict.fromkeys(str(ipaddress.IPv4Address(v)) for v in vips)), ifname, stats_file)
        if len(self.vips) > MAX_VIPS:
            raise ValueError(f"at most {MAX_VIPS} VIPs")
        if reply_path not in REPLY_PATHS:
            raise ValueError(f"--reply-path is one of {', '.join(REPLY_PATHS)}")
        self.table = FlowTable(self.vips, port_map, max_conns)
        self.mtu, self.reply_path = mtu, reply_path
        self.tun_fd = self.learn_sock = self.raw = self.fast = None
        self._expired = self._polled = 0.0
        self._kernel_counts = None

    def open(self) -> None:
        from lb.realserver._enat_reply import ReplyPath     # built by setup.py next to lb._forward
        self.tun_fd = open_tun(self.ifname, nonblock=True)
        configure_tun(self.ifname, self.vips, self.mtu)
        if self.reply_path != "userspace":
            try:
                self.table.offload = enat_tc.ReplyOffload(self.ifname, self.table.max_conns)
                self.reply_path = "tc"
            except Exception as e:  # OSError, NetlinkError: no eBPF here; every reply comes to us
                if self.reply_path == "tc":
                    raise
                print(f"{self.name}: replies rewritten here, not in the kernel ({e})", file=sys.stderr)
                self.reply_path = "userspace"
        self.ready_note = f"reply={self.reply_path}"
        self.learn_sock = open_learn_socket(self.table.vips)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, RCVBUF)
        self.fast = ReplyPath(self.table, self.tun_fd, self.raw.fileno(), self.reply)

    def close(self) -> None:
        self.fast = None
        if self.table.offload is not None:
            self._poll_kernel()                # for the stop line, said after close()
            self.table.offload.close()         # the program and its filter go with the device
            self.table.offload = None
        for s in (self.learn_sock, self.raw):
            if s is not None:
                s.close()
        self.learn_sock = self.raw = None
        if self.tun_fd is not None:
            os.close(self.tun_fd)          # not persistent: device and VIP routes go away
            self.tun_fd = None

    def drain_learn(self) -> None:
        for _ in range(BATCH):
            try:
                data, addr = self.learn_sock.recvfrom(SNAPLEN)
            except (BlockingIOError, InterruptedError):
                return
            if addr[2] != PACKET_OUTGOING:
                self.table.inbound(data, time.monotonic())
                self._dirty = True

    def drain_tun(self) -> None:
        """Up to BATCH server packets through the C reply path (:mod:`lb.realserver._enat_reply`,
        the same work as :meth:`FlowTable.outbound` and :meth:`send`); what it leaves to Python
        (ICMP, a connection not learned yet) comes to :meth:`reply`, in order."""
        count, failed = self.fast.drain(BATCH)
        if failed:                 # EBADFD: the device was deleted (tun_chr_read_iter)
            self.recheck = True
        if count:
            self._dirty = True

    def reply(self, packet: bytes) -> str:
        out, reason = self.table.outbound(packet, time.monotonic())
        if reason == UNKNOWN_FLOW:
            # Its SYN may still wait in the packet socket (queued there before the server
            # saw it): learn what is waiting and look once more; the packet counts once.
            self.table.counters[UNKNOWN_FLOW] -= 1
            self.drain_learn()
            out, reason = self.table.outbound(packet, time.monotonic())
        if out is not None:
            reason = self.send(out)
        self._dirty = True
        return reason

    def send(self, out: bytes) -> str:
        info = struct.pack("I4s4s", 0, out[12:16], b"\0\0\0\0")   # route as if from the VIP
        try:
            self.raw.sendmsg([out], [(socket.IPPROTO_IP, IP_PKTINFO, info)], 0, (socket.inet_ntoa(out[16:20]), 0))
            return REWRITTEN
        except OSError:
            self.table.counters[REWRITTEN] -= 1
            self.table.counters[SEND_FAILED] += 1
            return SEND_FAILED

    def sources(self) -> list:
        return [self.learn_sock, self.tun_fd]

    def step(self, ready: set) -> None:
        self.drain_learn()              # always first: SYNs before their replies
        if self.tun_fd in ready:
            self.drain_tun()
        self.housekeeping()

    def housekeeping(self) -> None:
        now = time.monotonic()
        if now - self._expired >= EXPIRE_INTERVAL:
            if self.table.expire(now):
                self._dirty = True
            self._expired = now
        if now - self._polled >= FLUSH_INTERVAL:
            self._poll_kernel()
            self._polled = now
        self.flush()

    def _poll_kernel(self) -> None:
        """The tc program's counters (the kernel's work: nothing here sees it happen)."""
        if self.table.offload is not None:
            counts = self.table.offload.counts()
            if counts != self._kernel_counts:
                self._kernel_counts, self._dirty = counts, True

    def flush(self, force: bool = False) -> None:
        if force:
            self._poll_kernel()               # the last word (at exit) is exact
        super().flush(force)

    def stats(self) -> dict:
        return {"pid": os.getpid(), "ifname": self.ifname, "vips": self.vips, "conns": len(self.table),
                "reply_path": self.reply_path, "counters": self.counters()}

    def counters(self) -> dict:
        """The table's counters, and the kernel program's as last polled (rewritten_tc and the rest)."""
        return {**self.table.counters, **(self._kernel_counts or {})}

    def status_line(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.counters().items() if v) or "nothing seen"

    def warning(self) -> str | None:
        strict = strict_rp_filter(d for d in os.listdir("/proc/sys/net/ipv4/conf")
                                  if d not in ("all", "default", "lo", self.ifname))
        if strict:
            return (f"strict rp_filter on {', '.join(strict)}: SYNs from the VIP will be "
                    "dropped (lb realserver setup --mode enat makes it loose)")
        return None


def parse_port_map(items) -> dict:
    out = {}
    for item in items or ():
        try:
            rport, vport = (int(x) for x in item.split(":"))
        except ValueError:
            raise ValueError(f"bad --map-port {item!r} (want RPORT:VPORT)") from None
        if not (0 < rport < 65536 and 0 < vport < 65536):
            raise ValueError(f"bad --map-port {item!r}: ports are 1..65535")
        out[rport] = vport
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.realserver.enat_agent", description=__doc__.split("\n")[0])
    p.add_argument("--vip", action="append", required=True, help="a VIP (repeat for several)")
    p.add_argument("--map-port", action="append", metavar="RPORT:VPORT",
                   help="replies from local port RPORT leave as VPORT (default: the same port)")
    p.add_argument("--ifname", default=DEFAULT_IFNAME, help=f"TUN device to create (default {DEFAULT_IFNAME})")
    p.add_argument("--stats-file", help="write the counters here as JSON")
    p.add_argument("--max-conns", type=int, default=1 << 18)
    p.add_argument("--mtu", type=int, default=1500, help="the TUN device's MTU (as the server's uplink)")
    p.add_argument("--reply-path", choices=REPLY_PATHS, default="auto",
                   help="where replies of learned connections are rewritten: tc (a tc program on the "
                        "device, lb.realserver.enat_tc), userspace (this process, each one), auto (tc "
                        "where the kernel takes it; default)")
    a = p.parse_args(argv)
    try:
        agent = Agent(a.vip, parse_port_map(a.map_port), a.ifname, a.stats_file, a.max_conns, a.mtu,
                      a.reply_path)
    except ValueError as e:
        p.error(str(e))
    return serve(agent)


if __name__ == "__main__":
    sys.exit(main())
