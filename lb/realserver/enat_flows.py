"""The ENAT agent's connection table, sans-IO (the caller gives `now`): (proto, VIP, lport,
RIP, rport) -> the client and vport, with the states and timeouts of the part of a TCP
conversation the agent sees (see :mod:`lb.realserver.enat_agent`), and the kernel's reply
map (:mod:`lb.realserver.enat_tc`) kept in step when there is one.
"""
from __future__ import annotations

import heapq
import ipaddress
import itertools
import socket

from lb.realserver import enat_tc
from lb.realserver.enat_packets import (FIN, IN_FIN, IN_NO_CONN, IN_REASONS, IN_RST, LEARNED, OUT_REASONS,
                                        REWRITTEN, RST, SYN, TABLE_FULL, TCP, UDP, learn, rewrite)

TIMEOUTS = {"syn": 60, "established": 900, "fin": 120, "close": 10, "udp": 300}
# the kernel's reply program, when it is there (counted there; see lb.realserver.enat_tc)
OFFLOAD_REFUSED = "offload_refused"
EXPIRED = "expired"


class Entry:
    """Where replies of one connection go: the client (4-byte CIP, cport) and the vport."""
    __slots__ = ("cip", "cport", "vport", "state", "expires", "due")

    def __init__(self, cip: bytes, cport: int, vport: int, state: str, expires: float):
        self.cip, self.cport, self.vport, self.state, self.expires = cip, cport, vport, state, expires
        self.due = None       # when the expiry heap looks at it next (its one live heap item)

    def __repr__(self):
        return f"Entry({socket.inet_ntoa(self.cip)}:{self.cport} vport={self.vport} {self.state})"


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
        if entry is not None and self._gone(key, entry):
            self.counters[EXPIRED] += 1
            return None
        return entry

    def _gone(self, key, entry: Entry) -> bool:
        """Remove an entry past its time (True), unless the kernel's program (`offload`) has
        rewritten replies of it since, which this table did not see: then its time restarts
        from the last of them (False)."""
        if entry.expires > self.now:
            return False
        if self.offload is not None:
            okey = offload_key(key)
            last = self.offload.last_used(okey)
            if last is not None and last + self.timeouts[entry.state] > self.now:
                entry.expires = last + self.timeouts[entry.state]
                return False
            self.offload.delete(okey)
        del self.entries[key]
        return True

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
            if self._gone(key, entry):
                gone += 1
            else:
                self._schedule(key, entry)
        self.counters[EXPIRED] += gone
        return gone
