"""The little of eBPF the project needs, by hand: an assembler with labels, and bpf(2)'s
BPF_PROG_LOAD and map commands through ctypes. No clang, no libbpf: the programs
(lb.realserver.xdp_decap, lb.director.tun_encap, lb.realserver.enat_tc) are a few dozen
instructions each, assembled where they are used.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct

BPF_MAP_CREATE, BPF_MAP_LOOKUP_ELEM, BPF_MAP_UPDATE_ELEM, BPF_MAP_DELETE_ELEM, BPF_PROG_LOAD = 0, 1, 2, 3, 5
PROG_TYPE_SCHED_CLS, PROG_TYPE_XDP = 3, 6     # include/uapi/linux/bpf.h, enum bpf_prog_type
MAP_TYPE_HASH, MAP_TYPE_ARRAY = 1, 2          # enum bpf_map_type
PSEUDO_MAP_FD = 1                             # src_reg of a 64-bit load whose immediate is a map's fd
TC_ACT_OK, TC_ACT_SHOT = 0, 2                 # what a SCHED_CLS program in direct-action mode returns
TC_H_CLSACT_EGRESS = 0xFFFF_FFF3              # TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_EGRESS)
TC_PRIO, TC_HANDLE = 0x4C42, 1                # our filters' priority and handle on that hook
SYS_BPF = 321                                 # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)

# eBPF encoding (Documentation/bpf/standardization/instruction-set.rst): one 8-byte instruction,
# opcode, dst and src registers in one byte, a 16-bit offset, a 32-bit immediate.
LDXW, LDXH, LDXB, LDXDW, STXW, STXH, STXB, STXDW = 0x61, 0x69, 0x71, 0x79, 0x63, 0x6b, 0x73, 0x7b
STW_K, STH_K, STB_K, STDW_K, LD_IMM64 = 0x62, 0x6a, 0x72, 0x7a, 0x18
ATOMIC_ADD_DW = 0xdb                          # BPF_STX | BPF_DW | BPF_ATOMIC, imm BPF_ADD (0)
MOV_X, MOV_K, ADD_K, AND_K, RSH_K, ADD_X = 0xbf, 0xb7, 0x07, 0x57, 0x77, 0x0f
JGT_X, JNE_K, JEQ_K, JSET_K, JEQ32_K, JNE32_X, JA, CALL, EXIT = (0x2d, 0x55, 0x15, 0x45, 0x16, 0x5e,
                                                                0x05, 0x85, 0x95)


def le16(value: int) -> int:
    """A 16-bit field in network order as a little-endian load sees it."""
    return struct.unpack("<H", struct.pack("!H", value))[0]


class Asm:
    """Instructions appended in order; jumps name a label, resolved by bytes(labels)."""

    def __init__(self):
        self.code, self.fixups = [], []

    def op(self, code, dst=0, src=0, off=0, imm=0):
        self.code.append([code, dst, src, off, imm])

    def jump(self, code, dst, target, src=0, imm=0):
        self.fixups.append((len(self.code), target))
        self.op(code, dst, src, 0, imm)

    def load_map(self, dst, fd: int):
        """dst = the map whose fd is `fd` (a two-slot 64-bit load the verifier resolves)."""
        self.op(LD_IMM64, dst, PSEUDO_MAP_FD, 0, fd)
        self.op(0, 0, 0, 0, 0)

    def call(self, helper: int, *args) -> None:
        """r1, r2, ... = args, then call `helper`. An argument is an immediate, ("r", n) a
        register, ("fp", off) the stack address r10 + off, ("ld", off) the word there, or None
        (set already, as a map by load_map())."""
        for reg, arg in enumerate(args, start=1):
            if arg is None:
                continue
            if isinstance(arg, int):
                self.op(MOV_K, reg, imm=arg)
            elif arg[0] == "r":
                self.op(MOV_X, reg, arg[1])
            elif arg[0] == "fp":
                self.op(MOV_X, reg, 10)
                self.op(ADD_K, reg, imm=arg[1])
            else:
                self.op(LDXW, reg, 10, arg[1])
        self.op(CALL, imm=helper)

    def label(self):
        return len(self.code)

    def exits(self, labels: dict, returns: dict) -> None:
        """A label per {name: return value}, each `r0 = value; exit`."""
        for name, value in returns.items():
            labels[name] = self.label()
            self.op(MOV_K, 0, imm=value)
            self.op(EXIT)

    def bytes(self, labels: dict) -> bytes:
        for at, target in self.fixups:
            self.code[at][3] = labels[target] - at - 1
        return b"".join(struct.pack("<BBhi", c, d | (s << 4), o, i) for c, d, s, o, i in self.code)


_libc = ctypes.CDLL(None, use_errno=True)


def _bpf(cmd: int, attr, what: str, absent_ok: bool = False) -> int:
    """bpf(cmd, attr); -1 for ENOENT when `absent_ok` (no such key), else OSError on failure."""
    r = _libc.syscall(SYS_BPF, cmd, attr, len(attr))
    if r < 0:
        err = ctypes.get_errno()
        if absent_ok and err == errno.ENOENT:
            return -1
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return r


def create_map(map_type: int, key_size: int, value_size: int, max_entries: int, name: str) -> int:
    """bpf(BPF_MAP_CREATE): the map's fd (the caller closes it)."""
    attr = ctypes.create_string_buffer(struct.pack("<IIIIIII16s", map_type, key_size, value_size,
                                                   max_entries, 0, 0, 0, name.encode()[:15]), 72)
    return _bpf(BPF_MAP_CREATE, attr, f"creating map {name}")


def _elem_attr(fd: int, key: bytes, value, flags: int = 0):
    k = ctypes.create_string_buffer(key, len(key))
    v = value if isinstance(value, ctypes.Array) else ctypes.create_string_buffer(value, len(value))
    attr = ctypes.create_string_buffer(struct.pack("<IIQQQ", fd, 0, ctypes.addressof(k),
                                                   ctypes.addressof(v), flags), 32)
    return attr, (k, v)


def map_update(fd: int, key: bytes, value: bytes) -> None:
    """Put key -> value (BPF_ANY: made or replaced). OSError when the kernel refuses."""
    attr, _keep = _elem_attr(fd, key, value)
    _bpf(BPF_MAP_UPDATE_ELEM, attr, "map update")


def map_lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value of `key`, or None when the map has none."""
    out = ctypes.create_string_buffer(value_size)
    attr, _keep = _elem_attr(fd, key, out)
    return None if _bpf(BPF_MAP_LOOKUP_ELEM, attr, "map lookup", absent_ok=True) < 0 else out.raw


def map_delete(fd: int, key: bytes) -> bool:
    """Remove `key`; False when it was not there."""
    k = ctypes.create_string_buffer(key, len(key))
    attr = ctypes.create_string_buffer(struct.pack("<IIQ", fd, 0, ctypes.addressof(k)), 32)   # no value
    return _bpf(BPF_MAP_DELETE_ELEM, attr, "map delete", absent_ok=True) >= 0


def load(code: bytes, prog_type: int, name: str, what: str) -> int:
    """bpf(BPF_PROG_LOAD): the program's fd; the verifier's log in the error when refused."""
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)          # union bpf_attr, the BPF_PROG_LOAD part
    struct.pack_into("<IIQQIIQII16s", attr, 0, prog_type, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(lic), 1, len(log),
                     ctypes.addressof(log), 0, 0, name.encode()[:15])
    fd = _libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"loading {what}: {os.strerror(err)}: "
                           f"{log.value.decode(errors='replace')[-400:]}")
    return fd


def attach_egress(ipr, index: int, fd: int, name: str) -> dict:
    """The program `fd` as our filter on the interface's tc egress hook, and a clsact qdisc
    first if it has none. Returns what detach_egress() needs."""
    made_qdisc = False
    try:
        ipr.tc("add", "clsact", index)
        made_qdisc = True
    except Exception as e:          # NetlinkError EEXIST: someone's clsact is there; share it
        if getattr(e, "code", None) != errno.EEXIST:
            raise
    try:
        # replace: one a process killed before its exit left behind (the same priority and handle)
        ipr.tc("replace-filter", "bpf", index, TC_HANDLE, fd=fd, name=name,
               parent=TC_H_CLSACT_EGRESS, prio=TC_PRIO, classid=1, direct_action=True)
    except Exception:
        if made_qdisc:
            ipr.tc("del", "clsact", index)
        raise
    return {"index": index, "made_qdisc": made_qdisc}


def detach_egress(ipr, record: dict) -> None:
    """Our filter off again, and the qdisc if we made it. An interface gone took both."""
    index = record["index"]
    steps = [lambda: ipr.tc("del-filter", "bpf", index, TC_HANDLE, parent=TC_H_CLSACT_EGRESS, prio=TC_PRIO)]
    if record["made_qdisc"]:
        steps.append(lambda: ipr.tc("del", "clsact", index))
    for step in steps:
        try:
            step()
        except Exception as e:      # gone already (the interface with it, or by hand)
            if getattr(e, "code", None) not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
                raise
