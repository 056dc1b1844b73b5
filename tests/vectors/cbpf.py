"""Classic BPF (Documentation/networking/filter.rst, net/core/filter.c) over a SOCK_DGRAM packet
socket's view (the IP header first), for the ENAT agent's learn filter: registers A and X,
pc += jt or jf after a jump. A load past the packet's end ends the program with 0, as the
kernel's does. Only the opcodes a socket filter of this shape needs; any other fails the test.
Written for the tests from the kernel's documentation, not from lb's bpf_program()."""
from __future__ import annotations


def run_bpf(prog, packet: bytes) -> int:
    a = x = pc = 0

    def load(at, size):
        if at + size > len(packet):
            raise IndexError(at)
        return int.from_bytes(packet[at:at + size], "big")
    while True:
        code, jt, jf, k = prog[pc]
        pc += 1
        try:
            if code == 0x30:            # ldb [k]
                a = load(k, 1)
            elif code == 0x28:          # ldh [k]
                a = load(k, 2)
            elif code == 0x20:          # ld [k]
                a = load(k, 4)
            elif code == 0xB1:          # ldxb 4*([k]&0xf)
                x = 4 * (load(k, 1) & 0x0F)
            elif code == 0x50:          # ldb [x + k]
                a = load(x + k, 1)
            elif code == 0x54:          # and #k
                a &= k
            elif code == 0x15:          # jeq #k
                pc += jt if a == k else jf
            elif code == 0x25:          # jgt #k
                pc += jt if a > k else jf
            elif code == 0x45:          # jset #k
                pc += jt if a & k else jf
            elif code == 0x06:          # ret #k
                return k
            else:
                raise AssertionError(f"unexpected opcode {code:#x}")
        except IndexError:
            return 0
