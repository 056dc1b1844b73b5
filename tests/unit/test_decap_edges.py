"""lb.realserver.decap at its edges, where mutation testing (docs/mutation.md) found nothing
pinned: an inner header of exactly 20 bytes, total lengths above 255, an IHL under 5 with a
checksum that is right over what it claims, and the Decapsulator's counters and stats file."""
import json
import os
import struct

import pytest
from scapy.layers.inet import IP, UDP

from lb.inet import checksum
from lb.realserver import daemon
from lb.realserver.decap import BAD_OUTER, FORWARDED, TRUNCATED, Decapsulator, decapsulate, packed_vips

VIP = "198.18.0.102"
VIPS = packed_vips([VIP])
DIP, RIP, CIP = "198.18.0.2", "198.18.0.11", "198.18.1.2"


def outer(payload: bytes, **kw) -> bytes:
    return bytes(IP(src=DIP, dst=RIP, proto=4, **kw) / payload)


def test_an_inner_packet_that_is_a_bare_20_byte_header_is_forwarded():
    bare = bytes(IP(src=CIP, dst=VIP, proto=17))
    assert len(bare) == 20
    assert decapsulate(outer(bare), VIPS) == (bare, FORWARDED)


@pytest.mark.parametrize("size", [256, 1000, 1480])
def test_total_lengths_above_255_are_read_whole(size):
    inner = bytes(IP(src=CIP, dst=VIP) / UDP(sport=40000, dport=5353) / (b"z" * (size - 28)))
    got, reason = decapsulate(outer(inner), VIPS)
    assert (reason, got) == (FORWARDED, inner)


def test_an_outer_ihl_under_5_is_bad_even_with_a_checksum_right_over_16_bytes():
    pkt = bytearray(outer(bytes(IP(src=CIP, dst=VIP) / UDP() / b"x")))
    pkt[0] = 0x44
    pkt[10:12] = b"\0\0"
    pkt[10:12] = struct.pack("!H", checksum(bytes(pkt[:16])))
    assert decapsulate(bytes(pkt), VIPS) == (None, BAD_OUTER)


def test_counters_count_once_per_packet_and_the_stats_file_says_who(tmp_path, monkeypatch):
    stats = tmp_path / "stats.json"
    d = Decapsulator([VIP], ifname="lbtun-test", stats_file=str(stats))
    r, w = os.pipe()
    d.tun_fd = w
    clock = [1000.0]
    monkeypatch.setattr(daemon.time, "monotonic", lambda: clock[0])
    try:
        d.flush()                                   # dirty from the start: written
        assert json.loads(stats.read_text())["counters"]["truncated"] == 0
        assert d.handle(b"junk") == TRUNCATED and d.handle(b"junk") == TRUNCATED
        d.flush()                                   # within the flush interval: not yet
        assert json.loads(stats.read_text())["counters"]["truncated"] == 0
        clock[0] += daemon.FLUSH_INTERVAL
        d.flush()                                   # the changes are written after it
        got = json.loads(stats.read_text())
        assert got == {"pid": os.getpid(), "ifname": "lbtun-test", "vips": [VIP],
                       "counters": {"not_ipip": 0, "truncated": 2, "bad_outer": 0, "bad_inner": 0,
                                    "not_a_vip": 0, "forwarded": 0, "write_failed": 0},
                       "tun_frames": 0}
        clock[0] += daemon.FLUSH_INTERVAL
        stats.unlink()
        d.flush()                                   # nothing changed since: nothing written
        assert not stats.exists()
        assert d.status_line() == ("not_ipip=0 truncated=2 bad_outer=0 bad_inner=0 not_a_vip=0 "
                                   "forwarded=0 write_failed=0")
    finally:
        os.close(r)
        os.close(w)


def test_close_before_open_closes_nothing():
    # serve() closes the Decapsulator on every exit, also when open() failed half-way.
    d = Decapsulator([VIP])
    d.close()
    assert d.tun_fd is None and d.raw is None


def test_close_closes_the_device_once():
    d = Decapsulator([VIP])
    r, w = os.pipe()
    d.tun_fd = w                                   # a pipe standing in for the TUN device
    try:
        d.close()
        assert d.tun_fd is None
        with pytest.raises(OSError):
            os.fstat(w)                            # closed
        d.close()                                  # and a second close() closes nothing
    finally:
        os.close(r)
