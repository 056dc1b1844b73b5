"""UDP frames of many flows and any length, built with numpy (1 000 000 flows in about a second).

Flow i's client is (GEN_IP, SPORT_BASE + i) while the ports last (up to 50 000 flows: the same
frames as frames.build_frames); beyond that, addresses of CLIENT_NET (routed to the fwd
namespace through g0, see prepare_clients) times ports from SPORT_BASE, so that a million
flows are a million distinct 5-tuples.  Pure: bytes out, no sockets.
"""

from __future__ import annotations

import ipaddress

import numpy as np

from harness.frames import SPORT_BASE, UDP_PAYLOAD, aton, mac_bytes

CLIENT_NET = "198.18.64.0/18"
N_CLIENTS = 1 << 14
CLIENT_BASE = int(ipaddress.IPv4Address("198.18.64.0"))
MAX_PORT_FLOWS = 50000          # source ports 10000..59999 from one address


def payload(frame_len):
    """The UDP payload of a frame of frame_len bytes: UDP_PAYLOAD, repeated and cut to fit."""
    n = frame_len - 14 - 20 - 8
    if n < len(UDP_PAYLOAD):
        raise ValueError(f"frame length {frame_len} is below the 60 bytes of the smallest frame")
    return (UDP_PAYLOAD * (n // len(UDP_PAYLOAD) + 1))[:n]


def clients(flows, gen_ip):
    """(addresses as uint32, ports) of flows 0..flows-1."""
    i = np.arange(flows, dtype=np.int64)
    if flows <= MAX_PORT_FLOWS:
        return np.full(flows, int(ipaddress.IPv4Address(gen_ip)), np.int64), SPORT_BASE + i
    if flows > N_CLIENTS * (65536 - SPORT_BASE):
        raise ValueError("too many flows for the client range")
    return CLIENT_BASE + i % N_CLIENTS, SPORT_BASE + i // N_CLIENTS


def client_of(i, flows, gen_ip):
    """Flow i's (address, port) as the sink check wants it."""
    if flows <= MAX_PORT_FLOWS:
        return gen_ip, SPORT_BASE + i
    return str(ipaddress.IPv4Address(CLIENT_BASE + i % N_CLIENTS)), SPORT_BASE + i // N_CLIENTS


def _fold(s):
    s = (s & 0xFFFF) + (s >> 16)
    return (s & 0xFFFF) + (s >> 16)


def build_udp_frames(dst_mac, src_mac, gen_ip, dst_ip, dport, flows, frame_len) -> np.ndarray:
    """flows x frame_len uint8 array: Ethernet, IPv4 (DF, TTL 64, id = i), UDP with checksum."""
    pl = np.frombuffer(payload(frame_len), np.uint8)
    caddr, cport = clients(flows, gen_ip)
    ip_len, udp_len = frame_len - 14, frame_len - 34
    daddr = int.from_bytes(aton(dst_ip), "big")
    ipid = np.arange(flows, dtype=np.int64) & 0xFFFF
    t = np.zeros(frame_len, np.uint8)
    t[0:6] = list(mac_bytes(dst_mac))
    t[6:12] = list(mac_bytes(src_mac))
    t[12:16] = (0x08, 0x00, 0x45, 0x00)
    t[16:18] = (ip_len >> 8, ip_len & 0xFF)
    t[20:24] = (0x40, 0x00, 64, 17)
    t[30:34] = list(aton(dst_ip))
    t[36:38] = (dport >> 8, dport & 0xFF)
    t[38:40] = (udp_len >> 8, udp_len & 0xFF)
    t[42:] = pl
    f = np.tile(t, (flows, 1))

    def put16(col, v):
        f[:, col] = (v >> 8) & 0xFF
        f[:, col + 1] = v & 0xFF

    put16(18, ipid)
    put16(26, caddr >> 16)
    put16(28, caddr & 0xFFFF)
    put16(34, cport)
    words = lambda v: (v >> 16) + (v & 0xFFFF)  # noqa: E731
    put16(24, ~_fold(0x4500 + ip_len + ipid + 0x4000 + 0x4011 + words(caddr) + words(daddr)) & 0xFFFF)
    padded = pl.tobytes() + (b"\0" if len(pl) % 2 else b"")
    pl_sum = int(np.frombuffer(padded, ">u2").astype(np.int64).sum())
    s = words(caddr) + words(daddr) + 17 + udp_len + cport + dport + udp_len + pl_sum
    c = ~_fold(_fold(s)) & 0xFFFF
    put16(40, np.where(c == 0, 0xFFFF, c))
    return f
