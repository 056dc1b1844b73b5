"""The Internet checksum (RFC 1071) for the Python side: real-server daemons, the TOA reader,
the lab's ping and flood, tests. The one copy in lb/ and tests/: the fast path has its own, in C
(fastpath/wire.pxi), and bench/harness/frames.py keeps its own because bench never imports lb."""
from __future__ import annotations

import struct


def fold(s: int) -> int:
    """A sum of 16-bit words -> their 16-bit one's-complement sum (end-around carry)."""
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ones_sum(data) -> int:
    """One's-complement sum of `data` as big-endian 16-bit words, an odd tail padded with 0."""
    data = bytes(data)
    if len(data) % 2:
        data += b"\0"
    return fold(sum(struct.unpack(f"!{len(data) // 2}H", data)))


def checksum(data) -> int:
    """The checksum to put in a header whose checksum field is zero (IP, ICMP, or an L4
    segment behind its pseudo-header)."""
    return ~ones_sum(data) & 0xFFFF


def checksum_ok(data) -> bool:
    """A header (or segment) that carries its checksum sums to 0xFFFF."""
    return ones_sum(data) == 0xFFFF
