"""lb.inet, the one Internet checksum of lb/ and tests/, and the lab's raw SYN builder on it:
checked against scapy, which computes its checksums on its own (RFC 1071, RFC 793)."""
from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP

from lb.inet import checksum, checksum_ok, fold, ones_sum
from lb.lab.flood import ipv4_tcp, tcp_frame


def test_rfc1071_worked_example():
    # RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2 (end-around carry folded in)
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert ones_sum(data) == 0xDDF2
    assert checksum(data) == 0x220D


def test_an_odd_tail_is_padded_with_a_zero_byte():
    assert ones_sum(b"\x12\x34\x56") == 0x1234 + 0x5600
    assert checksum(b"\xff") == 0x00FF


def test_fold_carries_until_16_bits():
    assert fold(0x1FFFE) == 0xFFFF
    assert fold(0x1FFFF) == 0x0001            # 0xFFFF + 1 carries again
    assert fold(0x12345) == 0x2346


def test_a_header_carrying_its_checksum_is_ok_and_a_flipped_bit_is_not():
    header = bytearray(bytes(IP(src="198.18.1.2", dst="198.18.0.100")))
    assert checksum_ok(header)
    header[8] ^= 1
    assert not checksum_ok(header)


@pytest.mark.parametrize("flags,seq,ack", [(0x02, 1, 0), (0x10, 1001, 5000), (0x12, 2**32 - 1, 7)])
def test_ipv4_tcp_is_the_packet_scapy_builds(flags, seq, ack):
    got = ipv4_tcp("198.19.4.5", "198.18.0.150", 40001, 80, flags, seq, ack)
    want = IP(src="198.19.4.5", dst="198.18.0.150", id=0, flags="DF", ttl=64) / TCP(
        sport=40001, dport=80, flags=flags, seq=seq, ack=ack, window=64240)
    assert got == bytes(want)


def test_tcp_frame_is_ipv4_tcp_behind_ethernet():
    dst, src = bytes.fromhex("020000000002"), bytes.fromhex("020000000001")
    frame = tcp_frame(dst, src, "198.19.0.1", "198.18.0.100", 1024, 80, 0x02, 1000)
    assert frame[:14] == dst + src + b"\x08\x00"
    assert frame[14:] == ipv4_tcp("198.19.0.1", "198.18.0.100", 1024, 80, 0x02, 1000)
