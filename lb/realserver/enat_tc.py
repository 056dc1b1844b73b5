"""ENAT replies rewritten in the kernel: a tc egress program on the agent's TUN device.

The ENAT agent (:mod:`lb.realserver.enat_agent`) catches the server's replies with a route
``VIP/32 dev lbenat0`` and rewrites them in userspace: a TUN read, a raw-socket send and the
agent's CPU per packet, for every ACK of an upload and every segment of a download (bulk through
ENAT was bound by that, the agent a quarter of the end hosts' CPU). This program runs on the TUN
device's egress, before the packet reaches the agent's file descriptor, and takes the common case:

- an unfragmented IPv4 TCP segment without SYN, FIN or RST, or a UDP datagram, no IP options,
  whose (VIP, RIP, lport, rport, protocol) is in :data:`CONNS`, a hash map the agent fills as it
  learns connections and empties as they expire;
- rewritten RIP:rport -> VIP:lport into VIP:vport -> CIP:cport with the kernel's checksum helpers
  (``bpf_l3_csum_replace``, ``bpf_l4_csum_replace``): with BPF_F_PSEUDO_HDR they update a
  CHECKSUM_PARTIAL TCP checksum's pseudo-header part only (inet_proto_csum_replace_by_diff()),
  so the server's GSO aggregates keep their offload and leave whole;
- routed for the client with ``bpf_fib_lookup`` (from the VIP: a ``from VIP`` policy rule steers
  it, as it steers the agent's raw socket), a link header pushed (``bpf_skb_change_head``, the
  helper's stated purpose: an L3 skb redirected to an L2 device) and sent with
  ``bpf_redirect_neigh`` to the next hop the lookup named (the neighbour layer resolves it);
- the time of that packet written into the map value, which the agent reads before it expires
  an entry: the agent no longer sees those replies.

Everything else (SYN-ACK, FIN, RST: the agent's state machine; ICMP errors; a flow not in the
map yet; a client with no route) passes untouched to the TUN device and the agent, as before. The
fib lookup is an input-side lookup from the TUN device, which needs forwarding enabled on that
device only (conf/lbenat0/forwarding; nothing is ever received on it, and the setting goes with
the device). The program, its maps and the filter belong to the agent's process and device: they
go with them, also on SIGKILL.
"""
from __future__ import annotations

import os
import socket
import struct

from lb import ebpf
from lb.ebpf import (ADD_K, ATOMIC_ADD_DW, CALL, EXIT, JEQ_K, JNE_K, JSET_K, JGT_X, LDXB, LDXH, LDXW, MOV_K,
                     MOV_X, STB_K, STDW_K, STW_K, STXB, STXDW, STXH, STXW, TC_ACT_OK, TC_ACT_SHOT)

# enum bpf_func_id
MAP_LOOKUP, KTIME_GET_NS, STORE_BYTES, L3_CSUM, L4_CSUM, CSUM_DIFF, CHANGE_HEAD, FIB_LOOKUP, \
    REDIRECT_NEIGH = 1, 5, 9, 10, 11, 28, 43, 69, 152
F_PSEUDO_HDR, F_MARK_MANGLED_0 = 1 << 4, 1 << 5           # bpf_l4_csum_replace() flags
FIB_SKIP_NEIGH, FIB_RET_SUCCESS, FIB_RET_NO_NEIGH = 1 << 2, 0, 7
SKB_IFINDEX, SKB_DATA, SKB_DATA_END = 40, 76, 80        # offsetof(struct __sk_buff, ...)
TCP, UDP = 6, 17
KEY = struct.Struct("!4s4sHHB3x")       # VIP, RIP, lport, rport, protocol
VALUE = struct.Struct("=4sHHQ")         # CIP, cport, vport (both in network order), last use (ns)
# the counter array: what the program did, by index
REWRITTEN, UNROUTED, FAILED = 0, 1, 2
COUNTER_NAMES = ("rewritten_tc", "unrouted_tc", "failed_tc")

# stack layout (offsets from r10)
S_KEY, S_FIB, S_OLD_ADDR, S_NEW_ADDR, S_OLD_PORTS, S_NEW_PORTS, S_NH, S_CNT = (
    -16, -80, -112, -104, -96, -92, -140, -144)


def key(vip: bytes, rip: bytes, lport: int, rport: int, proto: int) -> bytes:
    return KEY.pack(vip, rip, lport, rport, proto)


def value(cip: bytes, cport: int, vport: int, last_ns: int = 0) -> bytes:
    return VALUE.pack(cip, socket.htons(cport), socket.htons(vport), last_ns)


def program(conns_fd: int, counters_fd: int) -> bytes:
    """r6 the __sk_buff, r7 the map value, r8/r9 packet pointers, then the two checksum diffs."""
    a, labels = ebpf.Asm(), {}
    skb = ("r", 6)
    a.op(MOV_X, 6, 1)
    a.op(LDXW, 8, 6, SKB_DATA)
    a.op(LDXW, 9, 6, SKB_DATA_END)
    a.op(MOV_X, 2, 8)
    a.op(ADD_K, 2, imm=40)
    a.jump(JGT_X, 2, "pass", src=9)                   # IP and TCP headers in the linear part
    a.op(LDXB, 2, 8, 0)
    a.jump(JNE_K, 2, "pass", imm=0x45)                # IPv4 without options
    a.op(LDXH, 2, 8, 6)
    a.jump(JSET_K, 2, "pass", imm=ebpf.le16(0x3FFF))  # MF or an offset
    a.op(LDXB, 3, 8, 9)
    a.jump(JEQ_K, 3, "tcp", imm=TCP)
    a.jump(JEQ_K, 3, "key", imm=UDP)
    a.jump(ebpf.JA, 0, "pass")
    labels["tcp"] = a.label()
    a.op(LDXB, 2, 8, 20 + 13)
    a.jump(JSET_K, 2, "pass", imm=0x07)               # FIN, SYN, RST: the agent's state machine
    labels["key"] = a.label()
    for dst, src, size in ((0, 16, 4), (4, 12, 4), (8, 22, 2), (10, 20, 2)):   # VIP, RIP, lport, rport
        a.op(LDXW if size == 4 else LDXH, 2, 8, src)
        a.op(STXW if size == 4 else STXH, 10, 2, S_KEY + dst)
    a.op(STW_K, 10, 0, S_KEY + 12, 0)
    a.op(STXB, 10, 3, S_KEY + 12)
    # old and new addresses and ports, for the checksum diffs
    a.op(LDXW, 2, 8, 12)
    a.op(STXW, 10, 2, S_OLD_ADDR)
    a.op(LDXW, 2, 8, 16)
    a.op(STXW, 10, 2, S_OLD_ADDR + 4)
    a.op(STXW, 10, 2, S_NEW_ADDR)                     # the reply leaves from the VIP
    a.op(LDXW, 2, 8, 20)
    a.op(STXW, 10, 2, S_OLD_PORTS)
    a.load_map(1, conns_fd)
    a.call(MAP_LOOKUP, None, ("fp", S_KEY))
    a.jump(JEQ_K, 0, "pass", imm=0)                   # not ours, or not learned yet: the agent's
    a.op(MOV_X, 7, 0)
    a.op(LDXW, 2, 7, 0)
    a.op(STXW, 10, 2, S_NEW_ADDR + 4)                 # CIP
    a.op(LDXH, 2, 7, 6)
    a.op(STXH, 10, 2, S_NEW_PORTS)                    # vport
    a.op(LDXH, 2, 7, 4)
    a.op(STXH, 10, 2, S_NEW_PORTS + 2)                # cport
    # struct bpf_fib_lookup: family, l4_protocol, sport, dport, tot_len 0 (the skb's own MTU
    # check, GSO-aware), ifindex (this device), ipv4_src = VIP, ipv4_dst = CIP
    for off in range(0, 64, 8):
        a.op(STDW_K, 10, 0, S_FIB + off, 0)
    a.op(STB_K, 10, 0, S_FIB, socket.AF_INET)
    a.op(LDXB, 2, 10, S_KEY + 12)
    a.op(STXB, 10, 2, S_FIB + 1)
    a.op(LDXH, 2, 10, S_NEW_PORTS)                    # (stack stores must be aligned: two halves)
    a.op(STXH, 10, 2, S_FIB + 2)
    a.op(LDXH, 2, 10, S_NEW_PORTS + 2)
    a.op(STXH, 10, 2, S_FIB + 4)
    a.op(LDXW, 2, 6, SKB_IFINDEX)
    a.op(STXW, 10, 2, S_FIB + 8)
    a.op(LDXW, 2, 10, S_NEW_ADDR)
    a.op(STXW, 10, 2, S_FIB + 16)
    a.op(LDXW, 2, 10, S_NEW_ADDR + 4)
    a.op(STXW, 10, 2, S_FIB + 32)
    a.call(FIB_LOOKUP, skb, ("fp", S_FIB), 64, FIB_SKIP_NEIGH)
    a.jump(JEQ_K, 0, "routed", imm=FIB_RET_NO_NEIGH)  # (what SKIP_NEIGH answers on success)
    a.jump(JEQ_K, 0, "routed", imm=FIB_RET_SUCCESS)
    count(a, labels, counters_fd, UNROUTED)
    a.jump(ebpf.JA, 0, "pass")
    labels["routed"] = a.label()
    for out, old, new, size in ((8, S_OLD_ADDR, S_NEW_ADDR, 8), (9, S_OLD_PORTS, S_NEW_PORTS, 4)):
        a.call(CSUM_DIFF, ("fp", old), size, ("fp", new), size, 0)
        a.op(MOV_X, out, 0)
    # the L4 checksum: at 36 for TCP, 26 for UDP, whose 0 means "none" (RFC 768) and stays so
    a.op(LDXB, 2, 10, S_KEY + 12)
    a.op(MOV_K, 3, imm=20 + 16)
    a.op(MOV_K, 4, imm=0)
    a.jump(JEQ_K, 2, "l4", imm=TCP)
    a.op(MOV_K, 3, imm=20 + 6)
    a.op(MOV_K, 4, imm=F_MARK_MANGLED_0)
    labels["l4"] = a.label()
    a.op(STXW, 10, 3, S_NH)                           # (scratch until the next hop goes there)
    a.op(ADD_K, 4, imm=F_PSEUDO_HDR)
    a.op(STXW, 10, 4, S_NH + 4)                       # the addresses' flags: pseudo-header too
    a.op(ADD_K, 4, imm=-F_PSEUDO_HDR)
    a.op(STXW, 10, 4, S_NH + 8)                       # the ports': not
    steps = [(L4_CSUM, skb, ("ld", S_NH), 0, ("r", 8), ("ld", S_NH + 4)),
             (L4_CSUM, skb, ("ld", S_NH), 0, ("r", 9), ("ld", S_NH + 8)),
             (L3_CSUM, skb, 10, 0, ("r", 8), 0),
             (STORE_BYTES, skb, 12, ("fp", S_NEW_ADDR), 8, 0),
             (STORE_BYTES, skb, 20, ("fp", S_NEW_PORTS), 4, 0)]
    for helper, *args in steps:
        a.call(helper, *args)
        a.jump(JNE_K, 0, "failed", imm=0)
    a.op(CALL, imm=KTIME_GET_NS)
    a.op(STXDW, 7, 0, 8)                              # the entry's last use, for the agent's expiry
    a.call(CHANGE_HEAD, skb, 14, 0)                   # room for the link header redirect_neigh fills
    a.jump(JNE_K, 0, "failed", imm=0)
    count(a, labels, counters_fd, REWRITTEN)
    # struct bpf_redir_neigh: nh_family, ipv4_nh = the lookup's next hop (gateway, or CIP on-link)
    a.op(STW_K, 10, 0, S_NH, socket.AF_INET)
    a.op(LDXW, 2, 10, S_FIB + 32)
    a.op(STXW, 10, 2, S_NH + 4)
    for off in (8, 12, 16):
        a.op(STW_K, 10, 0, S_NH + off, 0)
    a.call(REDIRECT_NEIGH, ("ld", S_FIB + 8), ("fp", S_NH), 20, 0)   # to the lookup's egress interface
    a.op(EXIT)
    labels["failed"] = a.label()                      # half rewritten: it must not leave
    count(a, labels, counters_fd, FAILED)
    a.op(MOV_K, 0, imm=TC_ACT_SHOT)
    a.op(EXIT)
    a.exits(labels, {"pass": TC_ACT_OK})
    return a.bytes(labels)


def count(a: ebpf.Asm, labels: dict, counters_fd: int, index: int) -> None:
    """counters[index] += 1 (clobbers r0-r5)."""
    a.op(STW_K, 10, 0, S_CNT, index)
    a.load_map(1, counters_fd)
    a.call(MAP_LOOKUP, None, ("fp", S_CNT))
    skip = f"counted{index}_{len(a.code)}"
    a.jump(JEQ_K, 0, skip, imm=0)
    a.op(MOV_K, 1, imm=1)
    a.op(ATOMIC_ADD_DW, 0, 1, 0, 0)
    labels[skip] = a.label()


class ReplyOffload:
    """The program on a TUN device's egress and its two maps; the agent's handle on them."""

    def __init__(self, ifname: str, max_conns: int):
        from pyroute2 import IPRoute
        self.conns = self.counters = None
        prog = -1
        try:
            self.conns = ebpf.create_map(ebpf.MAP_TYPE_HASH, KEY.size, VALUE.size, max_conns, "lb_enat_conns")
            self.counters = ebpf.create_map(ebpf.MAP_TYPE_ARRAY, 4, 8, len(COUNTER_NAMES), "lb_enat_count")
            prog = ebpf.load(program(self.conns, self.counters), ebpf.PROG_TYPE_SCHED_CLS, "lb_enat_reply",
                             "the ENAT reply program")
            with open(f"/proc/sys/net/ipv4/conf/{ifname}/forwarding", "w") as f:
                f.write("1")                          # for bpf_fib_lookup() from this device only
            with IPRoute() as ipr:       # (never detached: the device takes it along)
                ebpf.attach_egress(ipr, ipr.link_lookup(ifname=ifname)[0], prog, "lb_enat_reply")
        except BaseException:
            self.close()
            raise
        finally:
            if prog >= 0:
                os.close(prog)                        # the filter holds it now

    def put(self, k: bytes, cip: bytes, cport: int, vport: int) -> bool:
        try:
            ebpf.map_update(self.conns, k, value(cip, cport, vport))
            return True
        except OSError:
            return False                              # the agent rewrites this one itself

    def delete(self, k: bytes) -> None:
        ebpf.map_delete(self.conns, k)

    def last_used(self, k: bytes) -> float | None:
        """CLOCK_MONOTONIC seconds of the entry's last packet through the program, if any."""
        v = ebpf.map_lookup(self.conns, k, VALUE.size)
        if v is None:
            return None
        ns = VALUE.unpack(v)[3]
        return ns / 1e9 if ns else None

    def counts(self) -> dict:
        out = {}
        for i, name in enumerate(COUNTER_NAMES):
            v = ebpf.map_lookup(self.counters, struct.pack("=I", i), 8)
            out[name] = struct.unpack("=Q", v)[0] if v else 0
        return out

    def close(self) -> None:
        for fd in (self.conns, self.counters):
            if fd is not None:
                os.close(fd)
        self.conns = self.counters = None
