"""Many TCP frames from one scapy-built template: scapy takes about 0.7 ms a frame, patching the
IPv4 source address and the TCP source port of the template's bytes and recomputing both
checksums (lb.inet, RFC 791 / RFC 793) about 10 us. For tests that need thousands of SYNs."""
from __future__ import annotations

import socket
import struct

from lb.inet import checksum

ETH, IP_LEN = 14, 20          # an Ethernet/IPv4 (no options)/TCP template


def with_sources(template: bytes, sources) -> list:
    """template with (source address, source port) patched in, one frame per pair."""
    out = []
    for src, sport in sources:
        f = bytearray(template)
        tcp = ETH + IP_LEN
        f[ETH + 12:ETH + 16] = socket.inet_aton(src)
        struct.pack_into("!H", f, tcp, sport)
        f[ETH + 10:ETH + 12] = f[tcp + 16:tcp + 18] = b"\0\0"
        struct.pack_into("!H", f, ETH + 10, checksum(bytes(f[ETH:tcp])))
        pseudo = bytes(f[ETH + 12:tcp]) + struct.pack("!BBH", 0, 6, len(f) - tcp)
        struct.pack_into("!H", f, tcp + 16, checksum(pseudo + bytes(f[tcp:])))
        out.append(bytes(f))
    return out
