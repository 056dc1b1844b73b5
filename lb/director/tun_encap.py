"""TUN aggregates segmented after lbd, by the kernel or the NIC: a tc egress program that marks
lbd's IPIP GSO frames as what they are.

lbd receives a client's TCP aggregate (GSO, up to 64 KB) whole. For NAT, DR and FULLNAT it sends
it whole with its virtio_net_hdr, and the kernel or the NIC segments it on the way out. TUN
cannot do that by the vnet header alone: it has no IPIP type, and ``ipip_gso_segment()`` refuses
an aggregate not marked SKB_GSO_IPXIP4. Cutting it in lbd costs a send and a copy per MSS-sized
segment (the bound on TUN bulk). So lbd sends it whole, outer header in place, on a socket with
SO_MARK ``MARK`` (``Forwarder.set_tun_encap``), and this program, on the egress of every
interface lbd serves, does for each such skb what an IPIP tunnel device's transmit does to the
skb's metadata, with the helpers the kernel has for it: it takes the outer header out
(``bpf_skb_adjust_room(-20, BPF_ADJ_ROOM_MAC, FIXED_GSO)``), puts it back as an encapsulation
(``bpf_skb_adjust_room(+20, MAC, FIXED_GSO | ENCAP_L3_IPV4)``: skb->encapsulation, the inner
header offsets, SKB_GSO_IPXIP4) and writes the saved bytes into it. Then validate_xmit_skb()
segments it in software if the device cannot (each segment's outer length, ID and checksum by
inet_gso_segment()), or the device takes it whole. Every other skb passes untouched, in one
comparison. lbd attaches it at start (a clsact qdisc if there is none, and the filter) and
removes what it added at exit; where it cannot, lbd cuts TUN aggregates itself as before.
"""
from __future__ import annotations

import logging
import os

from lb import ebpf
from lb.ebpf import JNE32_X, JNE_K, LDXW, MOV_K, MOV_X, STW_K, TC_ACT_OK, TC_ACT_SHOT

log = logging.getLogger("lbd")

MARK = 0x4C42_1E1E                  # "LB" + 1E1E: skb->mark of lbd's TUN aggregates
HELPER_STORE_BYTES, HELPER_LOAD_BYTES, HELPER_ADJUST_ROOM = 9, 26, 50   # enum bpf_func_id
ADJ_ROOM_MAC, F_FIXED_GSO, F_ENCAP_L3_IPV4 = 1, 1 << 0, 1 << 1
SKB_MARK = 8                        # offsetof(struct __sk_buff, mark)
OUTER, ETH = 20, 14


def program() -> bytes:
    """r6 the __sk_buff; the saved outer header at r10 - 24."""
    a = ebpf.Asm()
    a.op(MOV_X, 6, 1)
    a.op(LDXW, 2, 6, SKB_MARK)
    a.op(MOV_K, 3, imm=MARK)                         # (a 64-bit move sign-extends: compare 32)
    a.jump(JNE32_X, 2, "pass", src=3)

    def call(helper, *args):
        a.call(helper, ("r", 6), *args)
        a.jump(JNE_K, 0, "drop")                     # a helper that failed: the frame is half done

    saved = ("fp", -24)
    call(HELPER_LOAD_BYTES, ETH, saved, OUTER)
    call(HELPER_ADJUST_ROOM, -OUTER, ADJ_ROOM_MAC, F_FIXED_GSO)
    call(HELPER_ADJUST_ROOM, OUTER, ADJ_ROOM_MAC, F_FIXED_GSO | F_ENCAP_L3_IPV4)
    call(HELPER_STORE_BYTES, ETH, saved, OUTER, 0)
    a.op(STW_K, 6, 0, SKB_MARK, 0)                   # done: nothing after us takes it for ours
    labels = {}
    a.exits(labels, {"pass": TC_ACT_OK, "drop": TC_ACT_SHOT})
    return a.bytes(labels)


def attach(ipr, index: int, fd: int) -> dict:
    """Our filter on the interface's egress hook (a clsact made if it has none); detach()'s record."""
    return ebpf.attach_egress(ipr, index, fd, "lb_tun_encap")


def detach(ipr, record: dict) -> None:
    ebpf.detach_egress(ipr, record)


def attach_all(ipr, ifaces) -> dict:
    """The program on every (name, index) given; {name: record} of those it went on. One that
    refuses is logged and left to lbd's own segmentation."""
    try:
        fd = ebpf.load(program(), ebpf.PROG_TYPE_SCHED_CLS, "lb_tun_encap", "the TUN encap program")
    except OSError as e:
        log.warning("TUN aggregates are cut by lbd (%s)", e)
        return {}
    done = {}
    try:
        for name, index in ifaces:
            try:
                done[name] = attach(ipr, index, fd)
            except Exception as e:  # noqa: BLE001 -- this interface only
                log.warning("%s: TUN aggregates are cut by lbd (tc egress filter refused: %s)", name, e)
    finally:
        os.close(fd)
    if done:
        log.info("TUN aggregates leave whole, segmented after lbd (tc egress on %s)", ", ".join(done))
    return done
