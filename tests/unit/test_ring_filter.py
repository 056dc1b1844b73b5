"""The split receive ring's length filter (ring.pxi length_filter()): classic BPF that keeps
frames of min_len..max_len bytes. A packet socket needs root; a UDP socket runs the same
filter (on the UDP header and payload), so the jumps are checked here without it."""
from __future__ import annotations

import socket

import pytest

from lb._forward import attach_length_filter

UDP_HDR = 8


def _taken(min_len, max_len, sizes):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.bind(("127.0.0.1", 0))
        attach_length_filter(rx.fileno(), min_len, max_len)
        for n in sizes:
            tx.sendto(bytes([n % 256]) * (n - UDP_HDR), rx.getsockname())
        rx.settimeout(0.2)
        got = []
        try:
            while True:
                got.append(len(rx.recv(65536)) + UDP_HDR)
        except socket.timeout:
            return got
    finally:
        rx.close()
        tx.close()


SIZES = [20, 99, 100, 101, 1900, 1901, 3000]


@pytest.mark.parametrize("min_len,max_len,want", [
    (0, 100, [20, 99, 100]),                    # the small ring: up to max_len
    (101, 0, [101, 1900, 1901, 3000]),          # the big ring: from min_len
    (100, 1900, [100, 101, 1900]),              # both bounds, inclusive
])
def test_length_filter_keeps_exactly_its_range(min_len, max_len, want):
    assert _taken(min_len, max_len, SIZES) == want


def test_split_bounds_take_every_length_once():
    small = _taken(0, 1900, SIZES)
    big = _taken(1901, 0, SIZES)
    assert sorted(small + big) == sorted(SIZES) and not set(small) & set(big)
