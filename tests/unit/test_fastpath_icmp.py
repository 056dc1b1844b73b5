"""ICMP in the core (fastpath/icmp.pxi), mode by mode, with scapy-built frames: errors about a
connection relayed both ways as ip_vs_in_icmp()/ip_vs_out_icmp() do (ip_vs_nat_icmp(): outer and
quoted addresses and ports, the quote's IP checksum made again, its L4 checksum left as it was,
the ICMP checksum in full), the director's own "fragmentation needed" and "time exceeded" in
every mode, their rate limit, and ICMP the director must leave alone or drop."""
from dataclasses import replace

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.vectors import dr, fullnat, nat, tun
from tests.vectors import fixtures as fx
from tests.vectors.checks import assert_icmp_checksums, icmp_parts
from tests.vectors.topology import (CLIENT, DIP, DIRECTOR_MAC, INTERFACE, RIP, ROUTER_IP,
                                    ROUTER_MAC, RS_MAC, VIP, eth_in, eth_to)

NOW = fx.NOW
C = 40000                                   # the client's port
SETUPS = {"nat": nat.DIRECTOR, "dr": dr.DIRECTOR, "tun": tun.DIRECTOR,
          "fullnat": fullnat.DIRECTOR, "enat": fullnat.director(mode="enat")}
MODES = list(SETUPS)
SEES_REPLIES = ("nat", "fullnat")


def director(mode, mtu=None):
    setup = SETUPS[mode]
    if mtu is not None:
        setup = replace(setup, interfaces=(replace(INTERFACE, mtu=mtu),))
    return fx.provision(setup)


def client_datagram(payload=b"hello", ttl=64, df=False, sport=C):
    return bytes(eth_in() / IP(src=CLIENT, dst=VIP, ttl=ttl, flags="DF" if df else 0)
                 / UDP(sport=sport, dport=80) / Raw(payload))


def open_flow(f):
    """The client's first datagram; returns the IP packet the real server gets (what it sees
    as the connection: TUN's inner packet)."""
    verdict, _, out = f.process(client_datagram(), now=NOW)
    assert verdict == "forward"
    got = Ether(out[0][1])[IP]
    return got[IP].payload if got.proto == 4 else got


def rs_view(f):
    seen = open_flow(f)
    return seen.src, seen[UDP].sport, seen.dst, seen[UDP].dport


def icmp_frame(src, dst, type_, code, quote, ttl=64, src_mac=ROUTER_MAC, **icmp_kw):
    return eth_in(src_mac) / IP(src=src, dst=dst, ttl=ttl) / ICMP(type=type_, code=code, **icmp_kw) / Raw(quote)


def udp_quote(src, sport, dst, dport, payload=b"answer", chksum=None, df=True):
    """An IP packet as a quote carries it: bytes, its checksums as its sender made them."""
    return bytes(IP(src=src, dst=dst, ttl=64, flags="DF" if df else 0)
                 / UDP(sport=sport, dport=dport, chksum=chksum) / Raw(payload))


def requoted(quote, src, sport, dst, dport):
    """`quote` with new addresses and ports, its IP checksum made again, its UDP checksum kept
    (what ip_vs_nat_icmp() does to it)."""
    p = IP(quote)
    udp_sum = p[UDP].chksum
    p.src, p.dst, p[UDP].sport, p[UDP].dport = src, dst, sport, dport
    del p.chksum
    p[UDP].chksum = udp_sum
    return bytes(p)


def check(out, expected):
    (slot, frame), = out
    assert slot == 0
    assert_icmp_checksums(frame)
    fx.assert_same_fields(frame, expected)
    assert frame == bytes(expected)


# --- from the real server's side to the client (NAT, FULLNAT; ENAT: a router on the way) ----------
@pytest.mark.parametrize("mode", SEES_REPLIES)
def test_port_unreachable_from_the_server_reaches_the_client_translated(mode):
    f = director(mode)
    src, sport, dst, dport = rs_view(f)             # the datagram as the server got it
    sent = udp_quote(src, sport, dst, dport, b"hello")
    got = f.process(bytes(icmp_frame(RIP, src, 3, 3, sent, src_mac=RS_MAC)), now=NOW + 0.01)
    assert got[:2] == ("forward", "icmp_relayed")
    want = requoted(sent, CLIENT, C, VIP, 80)
    check(got[2], eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, ttl=63) / ICMP(type=3, code=3) / Raw(want))
    _, icmp, _ = icmp_parts(got[2][0][1])
    assert icmp[8 + 20 + 6:8 + 28] == sent[26:28]   # the quoted UDP checksum as it was
    assert f.dest_counters(1)["outpkts"] == 1


@pytest.mark.parametrize("mode", ["fullnat", "enat"])
def test_a_router_before_the_server_reaches_the_client_translated(mode):
    # Errors about our packets to the server go to their source: FULLNAT's LIP, ENAT's VIP.
    f = director(mode)
    src, sport, dst, dport = rs_view(f)
    sent = udp_quote(src, sport, dst, dport, b"hello")
    got = f.process(bytes(icmp_frame(ROUTER_IP, src, 11, 0, sent)), now=NOW + 0.01)
    assert got[:2] == ("forward", "icmp_relayed")
    want = requoted(sent, CLIENT, C, VIP, 80)
    check(got[2], eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, ttl=63) / ICMP(type=11, code=0) / Raw(want))


# --- from the client's side to the real server, every mode --------------------------------------
def to_server(mode, f, frame, quote):
    """What the real server must get for `frame` (ICMP from the router to the VIP quoting
    `quote`, a packet VIP:80 -> CLIENT:C that went to the client)."""
    src, sport, dst, dport = rs_view(f)
    pkt = Ether(bytes(frame))[IP]
    ttl = pkt.ttl - 1
    if mode in ("dr", "tun"):
        inner = pkt.copy()
        inner.ttl = ttl
        del inner.chksum
        if mode == "dr":
            return eth_to(RS_MAC) / inner
        inner = IP(bytes(inner))
        return eth_to(RS_MAC) / IP(src=DIP, dst=RIP, proto=4, id=1, ttl=ttl) / inner
    # NAT: to the server (from whoever sent it); FULLNAT/ENAT: from the local address
    outer_src = pkt.src if mode == "nat" else src
    want = requoted(quote, dst, dport, src, sport)
    return (eth_to(RS_MAC) / IP(src=outer_src, dst=RIP, ttl=ttl)
            / ICMP(type=3, code=4, nexthopmtu=1300) / Raw(want))


@pytest.mark.parametrize("mode", MODES)
def test_frag_needed_from_the_client_path_reaches_the_server(mode):
    f = director(mode)
    open_flow(f)                                    # the IP id of TUN's first header is 0
    quote = udp_quote(VIP, 80, CLIENT, C, b"x" * 1400)[:548]
    frame = icmp_frame(ROUTER_IP, VIP, 3, 4, quote, nexthopmtu=1300)
    expected = to_server(mode, fx.provision(SETUPS[mode]), frame, quote)
    got = f.process(bytes(frame), now=NOW + 0.01)
    assert got[:2] == ("forward", "icmp_relayed")
    check(got[2], expected)
    assert f.dest_counters(1)["inpkts"] == 2


# --- the director's own errors -------------------------------------------------------------------
def own_error(type_, code, pin, src=VIP, dst=CLIENT, mac=ROUTER_MAC, **icmp_kw):
    quote = bytes(Ether(pin)[IP])[:548]
    return (eth_to(mac) / IP(src=src, dst=dst, tos=0xC0, ttl=64, id=icmp_kw.pop("id", 0))
            / ICMP(type=type_, code=code, **icmp_kw) / Raw(quote))


@pytest.mark.parametrize("mode", MODES)
def test_ttl_1_gets_time_exceeded_from_the_vip_in_every_mode(mode):
    f = director(mode)
    pin = client_datagram(ttl=1)
    got = f.process(pin, now=NOW)                   # a new flow: installed, then refused
    assert got[:2] == ("forward", "ttl_exceeded")
    check(got[2], own_error(11, 0, pin))
    assert f.counters()["ttl_exceeded"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_df_too_big_gets_frag_needed_in_every_mode(mode):
    f = director(mode, mtu=1000)
    open_flow(f)
    ip_id = 1 if mode == "tun" else 0               # TUN's tunnel took id 0
    pin = client_datagram(b"y" * 1000, df=True)
    got = f.process(pin, now=NOW + 0.01)
    assert got[:2] == ("forward", "frag_needed")
    check(got[2], own_error(3, 4, pin, nexthopmtu=980 if mode == "tun" else 1000, id=ip_id))
    assert f.process(client_datagram(b"y" * 1000), now=NOW + 0.02)[:2] == ("drop", "too_big")


@pytest.mark.parametrize("mode", SEES_REPLIES)
def test_replies_too_big_or_expired_are_refused_to_the_server(mode):
    f = director(mode, mtu=1000)
    src, sport, dst, dport = rs_view(f)
    # NAT's replies pass through as routed (ip_forward()): from our address; FULLNAT's are to a
    # local address of ours: from it.
    own = DIP if mode == "nat" else src
    big = bytes(eth_in(RS_MAC) / IP(src=RIP, dst=src, flags="DF") / UDP(sport=dport, dport=sport)
                / Raw(b"z" * 1000))
    got = f.process(big, now=NOW + 0.01)
    assert got[:2] == ("forward", "frag_needed")
    check(got[2], own_error(3, 4, big, src=own, dst=RIP, mac=RS_MAC, nexthopmtu=1000))
    old = bytes(eth_in(RS_MAC) / IP(src=RIP, dst=src, ttl=1) / UDP(sport=dport, dport=sport) / Raw(b"z"))
    got = f.process(old, now=NOW + 0.02)
    assert got[:2] == ("forward", "ttl_exceeded")
    check(got[2], own_error(11, 0, old, src=own, dst=RIP, mac=RS_MAC, id=1))


def test_own_errors_are_rate_limited_by_a_token_bucket():
    f = director("nat")
    verdicts = [f.process(client_datagram(ttl=1, sport=C + i), now=NOW)[:2] for i in range(60)]
    assert verdicts.count(("forward", "ttl_exceeded")) == 50
    assert verdicts[50:] == [("drop", "icmp_ratelimited")] * 10
    later = [f.process(client_datagram(ttl=1), now=NOW + 0.005)[0] for _ in range(6)]
    assert later == ["forward"] * 5 + ["drop"]      # one token a millisecond
    assert f.counters()["ttl_exceeded"] == 66 and f.counters()["icmp_ratelimited"] == 11


def test_the_error_goes_back_where_the_frame_came_from_without_a_route():
    f = fx.provision(replace(nat.DIRECTOR, routes=(("198.18.0.0", 24, None, 0),)))
    pin = bytes(eth_in("02:00:00:00:00:50") / IP(src="198.18.0.77", dst=VIP, ttl=1)
                / UDP(sport=C, dport=80) / Raw(b"q"))
    got = f.process(pin, now=NOW)                   # an on-link client whose MAC is not known yet
    assert got[:2] == ("forward", "ttl_exceeded")
    assert Ether(got[2][0][1]).dst == "02:00:00:00:00:50"
    f = director("dr")
    open_flow(f)
    f.set_routes([("198.18.0.0", 24, None, 0)])     # no way to the client any more
    got = f.process(client_datagram(ttl=1), now=NOW + 0.01)
    assert got[:2] == ("forward", "ttl_exceeded")
    assert Ether(got[2][0][1]).dst == ROUTER_MAC    # the frame's own source


# --- what is left alone or dropped ---------------------------------------------------------------
def conn_quote(f):
    """A quote of what went to the client of the open flow (NAT: VIP:80 -> CLIENT:C)."""
    open_flow(f)
    return udp_quote(VIP, 80, CLIENT, C)


def bad_checksum(frame):
    b = bytearray(bytes(frame))
    b[14 + 20 + 2] ^= 0x55
    return bytes(b)


def nested():
    inner = bytes(IP(src=VIP, dst=CLIENT) / ICMP(type=3, code=1) / Raw(udp_quote(CLIENT, C, VIP, 80)[:28]))
    return icmp_frame(ROUTER_IP, VIP, 3, 4, inner)


BAD = [
    ("the quote cut after its IP header: no ports", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, q[:20]),
     "pass", "icmp_bad_quote"),
    ("the quote 4 bytes into its UDP header", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, q[:24]),
     "pass", "icmp_bad_quote"),
    ("the quote not IPv4", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, b"\x65" + q[1:]),
     "pass", "icmp_bad_quote"),
    ("the quote a later fragment", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, q[:6] + b"\x00\x10" + q[8:]),
     "pass", "icmp_bad_quote"),
    ("a quote of no connection", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, udp_quote(VIP, 80, CLIENT, C + 1)),
     "pass", "icmp_no_conn"),
    ("a quote of a protocol IPVS does not serve", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 2, q[:9] + b"\x2f" + q[10:]),
     "pass", "icmp_no_conn"),
    ("an error about an ICMP error", lambda q: nested(), "pass", "icmp_about_icmp"),
    ("a wrong ICMP checksum", lambda q: bad_checksum(icmp_frame(ROUTER_IP, VIP, 3, 4, q)),
     "drop", "bad_icmp_checksum"),
    ("echo to the VIP: the kernel answers it", lambda q: eth_in() / IP(src=CLIENT, dst=VIP) / ICMP(),
     "pass", "icmp_not_error"),
    ("parameter problem: IPVS does not take it", lambda q: icmp_frame(ROUTER_IP, VIP, 12, 0, q),
     "pass", "icmp_not_error"),
    ("an ICMP header of 4 bytes", lambda q: eth_in() / IP(src=CLIENT, dst=VIP, proto=1) / Raw(b"\x03\x04\x00\x00"),
     "pass", "icmp_not_error"),
    ("an error about a connection with TTL 1: not answered", lambda q: icmp_frame(ROUTER_IP, VIP, 3, 4, q, ttl=1),
     "drop", "icmp_expired"),
    ("an error too big for the egress: no error about it", lambda q: icmp_frame(
        ROUTER_IP, VIP, 3, 4, udp_quote(VIP, 80, CLIENT, C, b"x" * 1100)), "drop", "too_big"),
]


@pytest.mark.parametrize("make, verdict, reason", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_icmp_the_director_leaves_or_drops(make, verdict, reason):
    f = director("nat", mtu=1000)
    frame = bytes(make(conn_quote(f)))
    before = f.counters()
    got = f.process(frame, now=NOW + 0.01)
    assert got == (verdict, reason, [])
    grew = {k: v - before[k] for k, v in f.counters().items() if v != before[k] and k in before}
    assert grew[reason] == 1 and "ttl_exceeded" not in grew and "frag_needed" not in grew


def test_no_error_answers_an_expired_icmp_error_of_no_connection():
    f = director("nat")
    got = f.process(bytes(icmp_frame(ROUTER_IP, VIP, 3, 4, udp_quote(VIP, 80, CLIENT, 9), ttl=1)), now=NOW)
    assert got == ("pass", "icmp_no_conn", [])


def test_an_icmp_frame_with_a_vnet_header_asking_for_offloads_is_dropped():
    f = director("nat")
    frame = bytes(icmp_frame(ROUTER_IP, VIP, 3, 4, conn_quote(f)))
    assert f.process(frame, now=NOW, vnet=bytes(10))[:2] == ("forward", "icmp_relayed")
    gso = bytes([0, 1]) + bytes(8)
    assert f.process(frame, now=NOW, vnet=gso)[:2] == ("drop", "bad_vnet_hdr")
    assert DIRECTOR_MAC                              # (the frames above are addressed to it)


# --- TUN: an error about our IPIP packet, from a router between us and the server ------------------
def tunnel_error(inner_df=True, type_=3, code=4, mtu=1400):
    inner = udp_quote(CLIENT, C, VIP, 80, b"hello" * 100, df=inner_df)
    ipip = bytes(IP(src=DIP, dst=RIP, proto=4, flags="DF" if inner_df else 0, ttl=63) / Raw(inner))
    return icmp_frame(ROUTER_IP, DIP, type_, code, ipip[:548], nexthopmtu=mtu), inner


def test_tun_frag_needed_for_the_tunnel_goes_to_the_client_less_20():
    # ip_vs_in_icmp(): "Special case for errors for IPIP ... tunnel packets": the client's
    # packet no longer fits the tunnel; it is told the path MTU less the outer header.
    f = director("tun")
    open_flow(f)                                    # IP id 0: its tunnel header
    frame, inner = tunnel_error()
    got = f.process(bytes(frame), now=NOW + 0.01)
    assert got[:2] == ("forward", "icmp_relayed")
    quote = inner[:548 - 20]                        # what the router's quote held of it
    check(got[2], eth_to(ROUTER_MAC) / IP(src=VIP, dst=CLIENT, tos=0xC0, ttl=64, id=1)
          / ICMP(type=3, code=4, nexthopmtu=1380) / Raw(quote))


def test_tun_other_errors_for_the_tunnel_go_to_the_client_as_they_are():
    f = director("tun")
    open_flow(f)
    frame, inner = tunnel_error(type_=3, code=1, mtu=0)
    got = f.process(bytes(frame), now=NOW + 0.01)
    assert got[:2] == ("forward", "icmp_relayed")
    assert (Ether(got[2][0][1])[ICMP].type, Ether(got[2][0][1])[ICMP].code) == (3, 1)


def test_tun_frag_needed_for_a_client_without_df_is_not_sent_on():
    f = director("tun")
    open_flow(f)
    frame, _ = tunnel_error(inner_df=False)
    assert f.process(bytes(frame), now=NOW + 0.01) == ("pass", "icmp_no_conn", [])
