"""ENAT UDP in the core: the client rides in UOA (fastpath/uoa.pxi), an IPv4 option of type 31,
length 8, client port then client address, right after the fixed IP header of the first three
datagrams of each connection; with no room (a 60-byte IP header, the egress MTU) the datagram
goes without and uoa_no_room counts it. scapy recomputes every checksum and dissects the option."""
import socket
import struct

import pytest
from scapy.layers.inet import IP, UDP, IPOption
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.unit.test_fastpath_offloads import complete, partial, unpack, vnet
from tests.vectors import enat as E
from tests.vectors import fixtures as fx
from tests.vectors import fullnat as F
from tests.vectors.topology import CLIENT, MTU, RIP, VIP, eth_in

NOW = fx.NOW
TRAIL = 3


def datagram(cport, payload=b"query", options=(), chksum=None, **ip_kw):
    udp = UDP(sport=cport, dport=80) if chksum is None else UDP(sport=cport, dport=80, chksum=chksum)
    return bytes(eth_in() / IP(src=CLIENT, dst=VIP, ttl=50, options=list(options), **ip_kw)
                 / udp / Raw(payload))


def sent(fwd, frame, now=NOW, **kw) -> Ether:
    verdict, reason, out = fwd.process(frame, now=now, **kw)
    assert (verdict, reason, len(out)) == ("forward", None, 1), (verdict, reason)
    return out[0][1]


def checked(raw: bytes) -> IP:
    """The IP packet of a frame whose IP and UDP checksums are what scapy computes."""
    ip = Ether(raw)[IP]
    again = ip.copy()
    del again.chksum, again[UDP].chksum
    again = IP(bytes(again))
    assert ip.chksum == again.chksum, "IP checksum"
    if ip[UDP].chksum:
        assert ip[UDP].chksum == again[UDP].chksum, "UDP checksum"
    assert ip.len == len(bytes(ip)) and ip.ihl * 4 == 20 + sum(len(bytes(o)) for o in ip.options)
    return ip


def uoa(cport, caddr=CLIENT) -> bytes:
    return bytes([31, 8]) + struct.pack("!H", cport) + socket.inet_aton(caddr)


def options(ip: IP) -> list:
    return [bytes(o) for o in ip.options]


def test_the_first_three_datagrams_carry_the_client_the_rest_not():
    f = fx.provision(E.DIRECTOR)
    got = [checked(sent(f, datagram(5000, b"q%d" % i), now=NOW + i)) for i in range(5)]
    for i, ip in enumerate(got):
        assert (ip.src, ip.dst, ip.ttl, ip[UDP].sport, ip[UDP].dport) == (VIP, RIP, 49, 1025, F.RPORT)
        assert bytes(ip[UDP].payload) == b"q%d" % i
        assert ip[UDP].len == 8 + 2
    assert [options(ip) for ip in got] == [[uoa(5000)]] * TRAIL + [[]] * 2
    first = got[0]
    assert first.ihl == 7 and first.len == 28 + 8 + 2
    (opt,) = first.options                      # scapy dissects it as an IP option
    assert isinstance(opt, IPOption)
    assert (opt.copy_flag, opt.optclass, opt.option, opt.length) == (0, 0, 31, 8)
    assert bytes(opt.value) == struct.pack("!H", 5000) + socket.inet_aton(CLIENT)
    assert f.counters()["uoa_no_room"] == 0


def test_every_connection_starts_its_own_trail():
    f = fx.provision(E.DIRECTOR)
    for cport in (6000, 6001, 6002):
        ip = checked(sent(f, datagram(cport)))
        assert options(ip) == [uoa(cport)]
    assert len({c["local"] for c in f.conns(now=NOW)}) == 3         # lports from the VIP's pool


@pytest.mark.parametrize("trail", [0, 1, 5])
def test_the_trail_is_configurable(trail):
    f = fx.provision(E.DIRECTOR)
    f.set_uoa(trail)
    got = [options(checked(sent(f, datagram(7000), now=NOW + i))) for i in range(6)]
    assert got == [[uoa(7000)]] * trail + [[]] * (6 - trail)
    with pytest.raises(ValueError):
        f.set_uoa(256)


def test_options_the_datagram_had_follow_the_uoa():
    f = fx.provision(E.DIRECTOR)
    ra = IPOption(b"\x94\x04\x00\x00")          # router alert, 4 bytes
    ip = checked(sent(f, datagram(7100, options=[ra])))
    assert ip.ihl == 5 + 1 + 2 and options(ip) == [uoa(7100), b"\x94\x04\x00\x00"]


def test_a_udp_datagram_without_checksum_keeps_none():
    f = fx.provision(E.DIRECTOR)
    ip = checked(sent(f, datagram(7200, chksum=0)))
    assert ip[UDP].chksum == 0 and options(ip) == [uoa(7200)]


def test_no_room_sends_without_and_counts():
    f = fx.provision(E.DIRECTOR)
    # an IP header with 36 bytes of options already: 56 + 8 > 60
    full = datagram(7300, options=[IPOption(b"\x01" * 36)])
    ip = checked(sent(f, full))
    assert ip.ihl == 14 and uoa(7300) not in options(ip)
    # a datagram of exactly the egress MTU: 8 more bytes would not fit
    big = datagram(7301, payload=b"x" * (MTU - 28))
    ip = checked(sent(f, big))
    assert ip.len == MTU and ip.options == []
    assert f.counters()["uoa_no_room"] == 2
    # a no-room datagram is one of the trail: the next two small ones carry it, then none
    got = [options(checked(sent(f, datagram(7301), now=NOW + i))) for i in (1, 2, 3)]
    assert got == [[uoa(7301)], [uoa(7301)], []]


def test_a_partial_checksum_stays_partial_and_completes_right():
    f = fx.provision(E.DIRECTOR)
    data = bytes(range(256)) * 2
    raw, off, start = partial(eth_in() / IP(src=CLIENT, dst=VIP) / UDP(sport=7400, dport=80) / Raw(data))
    out = sent(f, raw, vnet=vnet(1, 0, 0, 0, start, off))
    head, frame = out[:10], out[10:]
    h = unpack(head)
    assert h["flags"] == 1 and (h["csum_start"], h["csum_offset"]) == (14 + 28, 6)
    ip = checked(complete(frame, head))
    assert ip[UDP].chksum != 0 and options(ip) == [uoa(7400)] and bytes(ip[UDP].payload) == data


def test_fullnat_udp_and_enat_tcp_carry_no_uoa():
    f = fx.provision(F.DIRECTOR)
    assert checked(sent(f, datagram(7500))).options == []
    e = fx.provision(E.DIRECTOR)
    syn, _ = F.tcp_in(7501, 1025, "S", F.MSS)
    ip = Ether(sent(e, bytes(syn)))[IP]
    assert ip.ihl == 5                          # TCP's client rides in TOA
