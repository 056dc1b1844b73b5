"""lb.decap.decapsulate(): scapy-built IPIP packets in, (inner packet or None, reason) out."""
from __future__ import annotations

import json
import os
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP

from lb.inet import checksum
from lb.realserver.decap import (BAD_INNER, BAD_OUTER, FORWARDED, NOT_A_VIP, NOT_IPIP, REASONS, TRUNCATED,
                      Decapsulator, decapsulate, packed_vips)

VIP = "198.18.0.102"
VIPS = packed_vips([VIP, "198.18.0.103"])
DIP, RIP, CIP = "198.18.0.2", "198.18.0.11", "198.18.1.2"


def inner(dst=VIP, **kw):
    return IP(src=CIP, dst=dst, **kw) / UDP(sport=40000, dport=5353) / b"ping"


def outer(payload, **kw) -> bytes:
    return bytes(IP(src=DIP, dst=RIP, proto=4, **kw) / payload)


def test_valid_udp_is_forwarded_unchanged():
    pkt = bytes(inner())
    got, reason = decapsulate(outer(pkt), VIPS)
    assert reason == FORWARDED and got == pkt
    assert IP(got)[UDP].load == b"ping" and IP(got).dst == VIP


def test_valid_tcp_syn_and_second_vip():
    pkt = bytes(IP(src=CIP, dst="198.18.0.103") / TCP(sport=40000, dport=80, flags="S"))
    assert decapsulate(outer(pkt), VIPS) == (pkt, FORWARDED)


def test_vips_as_dotted_strings_and_buffer_types():
    pkt = bytes(inner())
    for data in (outer(pkt), bytearray(outer(pkt)), memoryview(outer(pkt))):
        assert decapsulate(data, {VIP}) == (pkt, FORWARDED)


def test_outer_options_are_skipped():
    pkt = bytes(inner())
    data = bytes(IP(src=DIP, dst=RIP, proto=4, options=[b"\x01\x01\x01\x00"]) / pkt)
    assert data[0] & 0x0F == 6
    assert decapsulate(data, VIPS) == (pkt, FORWARDED)


def test_trailing_bytes_after_the_inner_packet_are_cut():
    pkt = bytes(inner())
    data = outer(pkt + b"\0" * 6)            # the outer length covers 6 bytes of padding
    assert decapsulate(data, VIPS) == (pkt, FORWARDED)
    data = outer(pkt) + b"\0" * 6            # bytes beyond the outer total length
    assert decapsulate(data, VIPS) == (pkt, FORWARDED)


def test_inner_fragment_passes():
    pkt = bytes(IP(src=CIP, dst=VIP, flags="MF", proto=17) / (b"x" * 16))
    assert decapsulate(outer(pkt), VIPS) == (pkt, FORWARDED)


def test_not_a_vip():
    assert decapsulate(outer(inner(dst="198.18.0.200")), VIPS) == (None, NOT_A_VIP)
    assert decapsulate(outer(inner()), frozenset()) == (None, NOT_A_VIP)


def test_not_ipip():
    data = bytes(IP(src=DIP, dst=RIP) / UDP() / b"hello")
    assert decapsulate(data, VIPS) == (None, NOT_IPIP)


def _csum(header) -> bytes:
    h = bytearray(header)
    h[10:12] = b"\0\0"
    return checksum(h).to_bytes(2, "big")

def patched(data: bytes, offset: int, value: bytes, fix_checksum=True) -> bytes:
    """data with value written at offset; the first header's checksum recomputed unless told not to."""
    raw = bytearray(data)
    raw[offset:offset + len(value)] = value
    if fix_checksum:
        raw[10:12] = _csum(raw[:20])
    return bytes(raw)


GOOD = outer(inner())
INNER_AT = 20


@pytest.mark.parametrize("data, reason", [
    (b"", TRUNCATED),
    (GOOD[:19], TRUNCATED),                                          # shorter than an IPv4 header
    (patched(GOOD, 0, b"\x65"), BAD_OUTER),                          # version 6
    (patched(GOOD, 0, b"\x44"), BAD_OUTER),                          # IHL 4 (< 5)
    (patched(GOOD, 0, b"\x4f")[:40], TRUNCATED),                     # IHL 15 = 60 bytes > packet
    (patched(GOOD, 2, (19).to_bytes(2, "big")), BAD_OUTER),          # total length < header length
    (patched(GOOD, 2, (len(GOOD) + 1).to_bytes(2, "big")), TRUNCATED),  # total length > packet
    (patched(GOOD, 10, b"\xde\xad", fix_checksum=False), BAD_OUTER),    # outer checksum
    (patched(GOOD, 6, b"\x20\x00"), BAD_OUTER),                      # outer MF set
    (patched(GOOD, 6, b"\x00\x10"), BAD_OUTER),                      # outer fragment offset
    (outer(b""), TRUNCATED),                                         # IPIP with nothing inside
    (outer(bytes(inner())[:19]), TRUNCATED),                         # inner shorter than a header
    (outer(b"\x60" + bytes(inner())[1:]), BAD_INNER),                # inner version 6
    (outer(b"\x43" + bytes(inner())[1:]), BAD_INNER),                # inner IHL 3
    (outer(patched(bytes(inner()), 2, (10).to_bytes(2, "big"))), BAD_INNER),     # inner total < IHL
    (outer(patched(bytes(inner()), 2, (500).to_bytes(2, "big"))), TRUNCATED),    # inner total > data
    (outer(patched(bytes(inner()), 10, b"\x00\x01", fix_checksum=False)), BAD_INNER),  # inner checksum
    (outer(patched(bytes(inner()), 12, socket.inet_aton("1.2.3.4"), fix_checksum=False)), BAD_INNER),
])
def test_malformed(data, reason):
    assert decapsulate(data, VIPS) == (None, reason)


def test_inner_ihl_longer_than_what_is_left_is_truncated():
    short = bytes(IP(src=CIP, dst=VIP, proto=17))        # 20 bytes, no payload
    data = outer(b"\x46" + short[1:])                     # IHL 6 = 24 bytes, only 20 there
    assert decapsulate(data, VIPS) == (None, TRUNCATED)


def test_every_reason_is_listed():
    assert set(REASONS) == {"not_ipip", "truncated", "bad_outer", "bad_inner", "not_a_vip", "forwarded"}


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_verdict(data):
    got, reason = decapsulate(data, VIPS)
    assert reason in REASONS
    assert (got is None) == (reason != FORWARDED)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255)), max_size=6), st.integers(0, 60))
def test_mutated_valid_packets_give_a_verdict(flips, cut):
    raw = bytearray(GOOD)
    for pos, value in flips:
        raw[pos % len(raw)] = value
    data = bytes(raw[:len(raw) - cut])
    got, reason = decapsulate(data, VIPS)
    assert reason in REASONS
    if got is not None:
        assert reason == FORWARDED and IP(got).dst == VIP


def test_handle_counts_and_writes(tmp_path):
    """Decapsulator.handle() with a pipe standing in for the TUN device."""
    r, w = os.pipe()
    d = Decapsulator([VIP], stats_file=str(tmp_path / "stats.json"))
    d.tun_fd = w
    try:
        assert d.handle(GOOD) == FORWARDED
        assert os.read(r, 4096) == bytes(inner())
        assert d.handle(b"junk") == TRUNCATED
        assert d.handle(outer(inner(dst="10.0.0.1"))) == NOT_A_VIP
        os.close(r)
        r = None
        assert d.handle(GOOD) == "write_failed"              # EPIPE: counted, not raised
        d.flush(force=True)
        counters = json.loads((tmp_path / "stats.json").read_text())["counters"]
        assert counters == {"not_ipip": 0, "truncated": 1, "bad_outer": 0, "bad_inner": 0,
                            "not_a_vip": 1, "forwarded": 1, "write_failed": 1}
    finally:
        os.close(w)
        if r is not None:
            os.close(r)
