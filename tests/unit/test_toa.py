"""lb.realserver.toa: the TOA in scapy-built SYNs, whatever options surround it; bad input never raises."""
from __future__ import annotations

import itertools
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from lb.realserver.toa import (enable_saved_syn, looks_like_ip_packet, parse_toa, peer_address, saved_syn,
                    toa_from_options)

CIP, CPORT = "198.18.1.2", 40000
LIP, RIP = "198.18.0.3", "198.18.2.11"


def toa(ip=CIP, port=CPORT) -> bytes:
    return bytes([254, 8]) + struct.pack("!H", port) + socket.inet_aton(ip)


def syn(options=(), toa_first=True) -> bytes:
    """A SYN LIP -> RIP:80 with `options` (names in OPTIONS) and the TOA first or last."""
    raw = b"".join(_opt(o) for o in options)
    raw = toa() + raw if toa_first else raw + toa()
    raw += b"\0" * (-len(raw) % 4)
    fixed = bytes(TCP(sport=1025, dport=80, flags="S"))
    tcp = fixed[:12] + bytes([(5 + len(raw) // 4) << 4]) + fixed[13:] + raw
    return bytes(IP(src=LIP, dst=RIP, proto=6) / Raw(tcp))


OPTIONS = {   # scapy's own encoding of each option, so layouts are what real stacks send
    "MSS": ("MSS", 1460), "SAckOK": ("SAckOK", b""), "Timestamp": ("Timestamp", (123, 0)),
    "WScale": ("WScale", 7), "NOP": ("NOP", None), "SAck": ("SAck", (1, 2)),
}


def _opt(name) -> bytes:
    built = bytes(TCP(options=[OPTIONS[name]]))
    return built[20:20 + _opt_len(built[20:])]


def _opt_len(raw: bytes) -> int:
    return 1 if raw[0] in (0, 1) else raw[1]


def test_scapy_syn_with_toa_option():
    pkt = bytes(IP(src=LIP, dst=RIP) / TCP(flags="S", options=[(254, toa()[2:]), ("MSS", 1460), ("SAckOK", b"")]))
    assert parse_toa(pkt) == (CIP, CPORT)
    assert parse_toa(pkt[40:(IP(pkt)[TCP].dataofs * 4) + 20]) == (CIP, CPORT)   # the options alone


def test_syn_without_toa_is_none():
    for options in ([], [("MSS", 1460)], [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)),
                                          ("NOP", None), ("WScale", 7)]):
        assert parse_toa(bytes(IP(src=CIP, dst=RIP) / TCP(flags="S", options=options))) is None


@pytest.mark.parametrize("combo", [c for r in range(0, 4) for c in itertools.permutations(
    ["MSS", "SAckOK", "Timestamp", "WScale", "NOP", "SAck"], r)][:200])
@pytest.mark.parametrize("toa_first", [True, False])
def test_toa_found_among_any_options(combo, toa_first):
    pkt = syn(combo, toa_first=toa_first)
    if len(pkt) - 20 > 60:
        pytest.skip("header longer than 60 bytes")
    assert parse_toa(pkt) == (CIP, CPORT)


def test_linux_syn_layout_then_toa_at_the_end_and_after_eol():
    linux = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)]
    raw = bytes(TCP(options=linux))[20:]
    assert toa_from_options(toa() + raw) == (CIP, CPORT)
    assert toa_from_options(raw + toa()) == (CIP, CPORT)
    assert toa_from_options(b"\0" + toa()) is None              # EOL ends the list
    assert toa_from_options(b"\1\1\1" + toa()) == (CIP, CPORT)  # NOPs are one byte each


def test_ipv6_toa_variants_and_ipv6_syn():
    addr = socket.inet_pton(socket.AF_INET6, "2001:db8::5")
    for kind in (254, 253):
        opt = bytes([kind, 20]) + struct.pack("!H", 443) + addr
        assert toa_from_options(opt) == ("2001:db8::5", 443)
    pkt = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / TCP(flags="S", options=[(254, toa()[2:])]))
    assert parse_toa(pkt) == (CIP, CPORT)


@pytest.mark.parametrize("opt", [
    bytes([254, 6, 0xF9, 0x89, 1, 2]),       # RFC 6994 ExID (TFO's experimental option), not a TOA
    bytes([254, 10]) + toa()[2:] + b"\0\0",  # wrong length for either family
    bytes([253, 8]) + toa()[2:],             # kind 253 only in its IPv6 form
    bytes([254, 8, 0, 80, 0, 0, 0, 0]),      # 0.0.0.0 names no client
])
def test_kind_254_that_is_not_a_toa(opt):
    assert toa_from_options(opt) is None
    assert toa_from_options(opt + toa()) == (CIP, CPORT)        # a real TOA after it still counts


@pytest.mark.parametrize("raw", [
    b"", b"\x02", b"\x02\x04\x05",           # MSS cut short
    bytes([254]), bytes([254, 8]) + toa()[2:7],  # TOA cut short
    bytes([254, 1]) + toa()[2:],             # length below 2
    bytes([254, 0]) + toa()[2:],             # length 0 would loop for ever
    bytes([2, 40, 5, 180]) + toa(),          # MSS claims 40 bytes: the walk stops
])
def test_truncated_and_malformed_options(raw):
    assert toa_from_options(raw) is None
    assert parse_toa(raw) is None


def test_options_before_a_malformed_one_still_count():
    assert toa_from_options(toa() + bytes([2, 0])) == (CIP, CPORT)


def test_truncated_syn_and_non_tcp_packets():
    pkt = syn(["MSS"])
    for cut in range(len(pkt)):
        assert parse_toa(pkt[:cut]) in (None, (CIP, CPORT))
    assert parse_toa(pkt[:20 + 20 + 8]) == (CIP, CPORT)         # only the TOA kept of the options
    udp = bytearray(pkt)
    udp[9] = 17
    assert not looks_like_ip_packet(bytes(udp))


def test_fragment_is_not_read_as_tcp():
    frag = bytes(IP(src=LIP, dst=RIP, frag=10, proto=6) / toa())
    assert parse_toa(frag) is None


def test_option_block_starting_like_ipv4_is_still_options():
    # kind 69 (TCP-ENO) starts with 0x45; without a right IPv4 checksum it is an option block.
    raw = bytes([69, 10]) + b"\0" * 5 + b"\x06\0\0" + toa()
    assert not looks_like_ip_packet(raw)
    assert parse_toa(raw) == (CIP, CPORT)


def test_buffer_types():
    pkt = syn(["MSS"])
    for data in (pkt, bytearray(pkt), memoryview(pkt)):
        assert parse_toa(data) == (CIP, CPORT)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=120))
def test_any_bytes_give_a_verdict(data):
    got = parse_toa(data)
    assert got is None or (isinstance(got[0], str) and 0 <= got[1] <= 65535)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59), st.integers(0, 255)), max_size=6), st.integers(20, 68))
def test_mutated_syns_give_a_verdict(flips, cut):
    pkt = bytearray(syn(["MSS", "SAckOK", "Timestamp"]))
    for pos, value in flips:
        pkt[pos % len(pkt)] = value
    got = parse_toa(bytes(pkt[:cut]))
    assert got is None or isinstance(got, tuple)


# -- the socket side (loopback, no root) -------------------------------------------------------

def test_peer_address_falls_back_to_getpeername_and_syn_is_saved():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        assert enable_saved_syn(srv)
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5) as cli:
            conn, _ = srv.accept()
            with conn:
                syn_bytes = saved_syn(conn)
                assert syn_bytes and IP(syn_bytes)[TCP].flags == "S"
                assert IP(syn_bytes)[TCP].sport == cli.getsockname()[1]
                assert saved_syn(conn) is None                  # the kernel hands it over once
                assert peer_address(conn) == cli.getsockname()


def test_peer_address_without_saved_syn():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5) as cli:
            conn, _ = srv.accept()
            with conn:
                assert saved_syn(conn) is None
                assert peer_address(conn) == cli.getsockname()
