"""lb.realserver.toa at its edges, one test per boundary that mutation testing (docs/mutation.md)
showed no other test pinned: header lengths exactly at their minimum, fragments by each bit
of the offset, the data offset bounding the options, versions other than 4 and 6, and the
socket side when the saved SYN does carry a TOA."""
from __future__ import annotations

import socket
import struct

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.packet import Raw

from lb.inet import checksum
from lb.realserver import toa as T
from lb.realserver.toa import client_address, enable_saved_syn, looks_like_ip_packet, parse_toa, \
    peer_address, tcp_options_of, toa_from_options

CIP, CPORT = "198.18.1.2", 40000
TOA = bytes([254, 8]) + struct.pack("!H", CPORT) + socket.inet_aton(CIP)


def with_checksum(header: bytearray) -> bytes:
    header[10:12] = b"\0\0"
    header[10:12] = struct.pack("!H", checksum(bytes(header)))
    return bytes(header)


def syn(options=TOA, payload=b"", **ip_kw) -> bytes:
    return bytes(IP(src="198.18.0.3", dst="198.18.2.11", **ip_kw)
                 / TCP(flags="S", options=[(254, options[2:])] if options else []) / Raw(payload))


# --- tcp_options_of ------------------------------------------------------------------------------

def test_options_are_bounded_by_the_data_offset_not_the_packet():
    # A payload after the options (a SYN may carry data: TFO) is not options, even when it
    # looks like a TOA.
    pkt = syn(options=b"", payload=TOA)
    assert tcp_options_of(pkt) == b""
    assert parse_toa(pkt) is None
    pkt = syn(payload=b"x" * 40)
    assert tcp_options_of(pkt) == TOA


def test_a_tcp_header_without_options_gives_empty_options_not_none():
    assert tcp_options_of(bytes(IP() / TCP())) == b""


@pytest.mark.parametrize("doff", [0, 4])
def test_a_data_offset_under_five_words_is_no_tcp_header(doff):
    raw = bytearray(bytes(IP() / TCP() / Raw(TOA + b"\0" * 12)))
    raw[20 + 12] = doff << 4
    assert tcp_options_of(bytes(raw)) is None


# A payload of 0x70 bytes reads as "data offset 7" wherever a TCP header is looked for in the
# wrong place, so a check that let such a packet through would return options, not None.
DECOY = b"\x70" * 60


def test_not_tcp_is_no_options():
    assert tcp_options_of(bytes(IP() / UDP() / Raw(DECOY))) is None
    assert tcp_options_of(bytes(IPv6(nh=17) / UDP() / Raw(DECOY))) is None


def test_a_version_other_than_4_or_6_is_no_options():
    raw = bytearray(syn(payload=DECOY))
    raw[0] = 0x55                                          # version 5, and byte 6 is... TCP
    raw[6] = socket.IPPROTO_TCP
    assert tcp_options_of(bytes(raw)) is None


def test_an_ipv4_header_under_20_bytes_is_no_options():
    # IHL 4 (16 bytes) on a TCP packet whose acknowledgment number's first byte, read from
    # there as a TCP header, would be a data offset of 7.
    raw = bytearray(bytes(IP(src="198.18.0.3", dst="198.18.2.11")
                          / TCP(flags="S", ack=0x70000000, options=[(254, TOA[2:])])))
    raw[0] = 0x44
    assert tcp_options_of(bytes(raw)) is None


@pytest.mark.parametrize("frag, whole", [
    (0x0000, True), (0x4000, True),                        # no flags / DF: the whole packet
    (0x2000, True),                                        # MF, offset 0: the first fragment holds TCP
    (0x0001, False), (0x0100, False), (0x1000, False),     # any offset bit: no TCP header here
    (0x3FFF, False),
])
def test_only_a_packet_with_fragment_offset_zero_has_options(frag, whole):
    raw = bytearray(syn())
    raw[6:8] = struct.pack("!H", frag)
    assert (tcp_options_of(bytes(raw)) == TOA) == whole
    assert (tcp_options_of(bytes(raw)) is None) == (not whole)


# --- looks_like_ip_packet ------------------------------------------------------------------------

def test_a_bare_20_byte_ipv4_tcp_header_is_an_ip_packet():
    assert looks_like_ip_packet(bytes(IP(proto=6))[:20])


def test_a_bare_40_byte_ipv6_tcp_header_is_an_ip_packet_and_udp_is_not():
    assert looks_like_ip_packet(bytes(IPv6(nh=6))[:40])
    assert not looks_like_ip_packet(bytes(IPv6(nh=6))[:39])
    assert not looks_like_ip_packet(bytes(IPv6(nh=17)) + b"\0" * 20)


def test_an_ipv4_udp_header_is_not_a_tcp_packet():
    assert not looks_like_ip_packet(bytes(IP() / UDP()))


def test_a_right_checksum_over_16_bytes_does_not_make_ihl_4_a_header():
    raw = bytearray(bytes(IP(proto=6))[:20])
    raw[0] = 0x44
    raw = bytearray(with_checksum(raw[:16]) + bytes(raw[16:]))
    assert not looks_like_ip_packet(bytes(raw))


def test_version_5_with_a_right_checksum_is_not_ipv4():
    raw = bytearray(bytes(IP(proto=6))[:20])
    raw[0] = 0x55
    assert not looks_like_ip_packet(with_checksum(raw))


# --- toa_from_options ----------------------------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1])
def test_an_option_length_under_2_ends_the_walk_before_a_toa(length):
    assert toa_from_options(bytes([30, length]) + TOA) is None
    assert toa_from_options(bytes([1, 1]) + TOA) == (CIP, CPORT)   # NOPs do not end it


def test_an_option_longer_than_what_is_left_ends_the_walk():
    # An IPv6 TOA's length (20) over only a v4 TOA's worth of bytes: not read as a v4 TOA.
    assert toa_from_options(bytes([254, 20]) + TOA[2:]) is None


# --- the socket side, with a saved SYN that carries a TOA ---------------------------------------

class SavedSynSocket:
    """An accepted socket as the kernel hands it over behind a FULLNAT director: getpeername()
    is the local address, TCP_SAVED_SYN the SYN with the TOA (a lab needs root and a director
    for the real one: tests/integration/test_fullnat_enat.py)."""

    def __init__(self, peer, syn_bytes):
        self.peer, self.syn = peer, syn_bytes

    def getpeername(self):
        return self.peer

    def getsockopt(self, level, name, size):
        assert (level, name, size) == (socket.IPPROTO_TCP, T.TCP_SAVED_SYN, T.SAVED_SYN_MAX)
        syn_bytes, self.syn = self.syn, b""               # handed over once
        return syn_bytes


def test_client_address_reads_the_toa_of_the_saved_syn():
    sock = SavedSynSocket(("198.18.0.3", 1025), syn())
    assert client_address(sock) == ((CIP, CPORT), ("198.18.0.3", 1025))
    assert peer_address(SavedSynSocket(("198.18.0.3", 1025), syn())) == (CIP, CPORT)
    assert peer_address(SavedSynSocket(("198.18.0.3", 1025), syn(options=b""))) == ("198.18.0.3", 1025)


def test_an_ipv6_peer_is_address_and_port_only():
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with socket.socket(socket.AF_INET6) as srv:
        try:
            srv.bind(("::1", 0))
        except OSError:
            pytest.skip("no ::1 here")
        srv.listen(1)
        with socket.create_connection(srv.getsockname()[:2], timeout=5) as cli:
            conn, _ = srv.accept()
            with conn:
                assert client_address(conn) == (None, cli.getsockname()[:2])


def test_enable_saved_syn_says_false_where_the_socket_refuses_it():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert enable_saved_syn(udp) is False
