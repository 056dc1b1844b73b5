"""The little of eBPF the project needs, by hand: an assembler with labels and bpf(2)'s
BPF_PROG_LOAD through ctypes. No clang, no libbpf: the programs (lb.realserver.xdp_decap,
lb.director.tun_encap) are a few dozen instructions each, assembled where they are used.
"""
from __future__ import annotations

import ctypes
import os
import struct

BPF_PROG_LOAD = 5
PROG_TYPE_SCHED_CLS, PROG_TYPE_XDP = 3, 6     # include/uapi/linux/bpf.h, enum bpf_prog_type
SYS_BPF = 321                                 # x86_64 (arch/x86/entry/syscalls/syscall_64.tbl)

# eBPF encoding (Documentation/bpf/standardization/instruction-set.rst): one 8-byte instruction,
# opcode, dst and src registers in one byte, a 16-bit offset, a 32-bit immediate.
LDXW, LDXH, LDXB, STXW, STXH, STW_K = 0x61, 0x69, 0x71, 0x63, 0x6b, 0x62
MOV_X, MOV_K, ADD_K, AND_K, RSH_K, ADD_X = 0xbf, 0xb7, 0x07, 0x57, 0x77, 0x0f
JGT_X, JNE_K, JEQ32_K, JNE32_X, JA, CALL, EXIT = 0x2d, 0x55, 0x16, 0x5e, 0x05, 0x85, 0x95


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


def load(code: bytes, prog_type: int, name: str, what: str) -> int:
    """bpf(BPF_PROG_LOAD): the program's fd; the verifier's log in the error when refused."""
    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(code, len(code))
    lic = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)          # union bpf_attr, the BPF_PROG_LOAD part
    struct.pack_into("<IIQQIIQII16s", attr, 0, prog_type, len(code) // 8,
                     ctypes.addressof(insns), ctypes.addressof(lic), 1, len(log),
                     ctypes.addressof(log), 0, 0, name.encode()[:15])
    fd = libc.syscall(SYS_BPF, BPF_PROG_LOAD, attr, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"loading {what}: {os.strerror(err)}: "
                           f"{log.value.decode(errors='replace')[-400:]}")
    return fd
