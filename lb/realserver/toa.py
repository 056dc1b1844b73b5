"""TOA (TCP option address): the client address a FULLNAT or ENAT director hides in the SYN.

A FULLNAT director replaces the client's address with one of its own (LIP:lport), an ENAT
director with the VIP (VIP:lport); either puts the client's address in a TCP option right
after the fixed TCP header of the SYN (DPVS, Alibaba toa.ko):

    kind 254, length 8, client port (2 bytes), client IPv4 address (4 bytes), network order

IPv6 variants are read too: kind 254 (DPVS) or 253 (Alibaba), length 20, port then a
16-byte address. Other lengths of kind 253/254 are someone else's experiment (RFC 4727,
RFC 6994 ExIDs such as TCP Fast Open's) and are skipped, not taken for an address.

On the real server, toa.ko hooks getpeername(); this module needs no kernel module: a
listener with ``TCP_SAVE_SYN`` keeps each connection's SYN (its IP and TCP headers), which
``getsockopt(TCP_SAVED_SYN)`` on the accepted socket hands over once (Linux >= 4.2).

    listener = socket.create_server(("0.0.0.0", 80)); enable_saved_syn(listener)
    conn, _ = listener.accept(); ip, port = peer_address(conn)   # the client, not the LIP

:func:`parse_toa` is pure and never raises on any bytes.
"""
from __future__ import annotations

import ipaddress
import socket

from lb.inet import checksum_ok

TCP_SAVE_SYN = 27
TCP_SAVED_SYN = 28
TOA_KIND = 254
TOA_KIND_V6_ALIBABA = 253
TOA_LEN, TOA_LEN_V6 = 8, 20
SAVED_SYN_MAX = 512        # IPv4 60 + TCP 60; IPv6 with extension headers stays well below
TCPOPT_EOL, TCPOPT_NOP = 0, 1


def toa_from_options(options):
    """The TOA in raw TCP option bytes (what follows the fixed 20-byte header) -> (ip, port) | None.

    Walks the options as the kernel does (tcp_parse_options): EOL ends them, NOP is one
    byte, every other option has a length byte that must be at least 2 and fit; a
    malformed length ends the walk (what came before it still counts).
    """
    opts = bytes(options)
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == TCPOPT_EOL:
            return None
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n or opts[i + 1] < 2 or i + opts[i + 1] > n:
            return None
        length = opts[i + 1]
        found = _decode(kind, opts[i + 2:i + length])
        if found is not None:
            return found
        i += length
    return None


def _decode(kind: int, body: bytes):
    """(ip, port) of one TOA option body (after kind and length), None if it is not one."""
    if kind == TOA_KIND and len(body) == TOA_LEN - 2:
        addr = ipaddress.IPv4Address(body[2:6])
    elif kind in (TOA_KIND, TOA_KIND_V6_ALIBABA) and len(body) == TOA_LEN_V6 - 2:
        addr = ipaddress.IPv6Address(body[2:18])
    else:
        return None
    if addr.is_unspecified:
        return None          # 0.0.0.0 names no client: rather the peer address than that
    return str(addr), int.from_bytes(body[:2], "big")


def tcp_options_of(packet):
    """The TCP option bytes of an IPv4 or IPv6 TCP packet (headers at least), or None.

    IPv6 extension headers are not walked: the saved SYN of a TCP socket has TCP as the
    next header in every case the kernel produces for us.
    """
    data = bytes(packet)
    if len(data) < 20:
        return None
    version = data[0] >> 4
    if version == 4:
        ihl = (data[0] & 0x0F) * 4
        if ihl < 20 or data[9] != socket.IPPROTO_TCP or (data[6] << 8 | data[7]) & 0x1FFF:
            return None
        tcp = data[ihl:]
    elif version == 6 and len(data) >= 40 and data[6] == socket.IPPROTO_TCP:
        tcp = data[40:]
    else:
        return None
    if len(tcp) < 20 or (tcp[12] >> 4) < 5:
        return None
    return tcp[20:min(len(tcp), (tcp[12] >> 4) * 4)]


def looks_like_ip_packet(data) -> bool:
    """True when `data` starts with a whole IPv4 header (checksum right) carrying TCP, or an
    IPv6 header whose next header is TCP.

    An option block could start with 0x45 (kind 69, TCP-ENO, RFC 8547), so for IPv4 the
    header checksum decides too: a SYN as the kernel saved it always has a right one.
    Option kinds 0x60..0x6F are unassigned (IANA), so IPv6 needs no such check.
    """
    data = bytes(data[:60])
    if len(data) < 20:
        return False
    if data[0] >> 4 == 6:
        return len(data) >= 40 and data[6] == socket.IPPROTO_TCP
    ihl = (data[0] & 0x0F) * 4
    if data[0] >> 4 != 4 or ihl < 20 or len(data) < ihl or data[9] != socket.IPPROTO_TCP:
        return False
    return checksum_ok(data[:ihl])


def parse_toa(data):
    """(ip, port) from a TOA, or None.

    `data` is either a whole SYN as TCP_SAVED_SYN returns it (IPv4/IPv6 header, TCP header,
    maybe payload) or just the TCP option bytes. Any bytes-like input; never raises.
    """
    try:
        data = bytes(data)
        if looks_like_ip_packet(data):
            options = tcp_options_of(data)
            return toa_from_options(options) if options else None
        return toa_from_options(data)
    except (TypeError, ValueError):
        return None


def enable_saved_syn(listen_sock: socket.socket) -> bool:
    """Ask the kernel to keep each SYN for :func:`peer_address` (set before listen()).

    Returns False where the kernel has no TCP_SAVE_SYN (the peer address is then all we get).
    """
    try:
        listen_sock.setsockopt(socket.IPPROTO_TCP, TCP_SAVE_SYN, 1)
        return True
    except OSError:
        return False


def saved_syn(sock: socket.socket):
    """The SYN of an accepted connection (IP + TCP headers) or None. The kernel gives it once."""
    try:
        data = sock.getsockopt(socket.IPPROTO_TCP, TCP_SAVED_SYN, SAVED_SYN_MAX)
    except OSError:
        return None
    return data or None


def client_address(sock: socket.socket):
    """(toa, peer): the TOA address of an accepted socket, or None; and getpeername()."""
    peer = sock.getpeername()[:2]
    syn = saved_syn(sock)
    return (parse_toa(syn) if syn else None), peer


def peer_address(sock: socket.socket) -> tuple:
    """The client's (ip, port): the TOA of the saved SYN if there is one, else getpeername()."""
    toa, peer = client_address(sock)
    return toa or peer
