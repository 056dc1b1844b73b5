"""DR and TUN in the core (Forwarder.process), checked with scapy: DR rewrites only MACs;
TUN wraps the packet in an outer IPv4 header DIP -> RIP, protocol 4, DF/TOS/TTL copied, or
answers a DF packet too big for the tunnel with ICMP 3/4 (next-hop MTU = MTU - 20)."""
import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lb._forward import Forwarder
from tests.vectors import nat as V
from tests.vectors.checks import assert_checksums

DIP = "198.18.0.2"
ROUTE, TUNNEL = 1, 2
NOW = V.NOW


def make(fwd_code, mtu=V.MTU):
    f = Forwarder(max_conns=64, scheduler_cb=lambda flows: [0] * len(flows))
    f.set_interface(V.IFSLOT, V.IFINDEX, V.mac(V.DIRECTOR_MAC), mtu, addr=DIP)
    f.set_routes(V.ROUTES)
    for ip, m in V.NEIGHBOURS:
        f.set_neighbour(ip, V.IFSLOT, V.mac(m))
    f.set_service(0, 6, V.VIP, 80)
    f.set_service(1, 17, V.VIP, 80)
    f.set_dest(0, 0, V.RIP, 80, fwd_code)
    return f


def syn(sport=40000, flags="S", payload=b"", df=True, tos=0x10, ttl=61):
    pkt = (Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC)
           / IP(src=V.CLIENT, dst=V.VIP, ttl=ttl, tos=tos, flags="DF" if df else 0)
           / TCP(sport=sport, dport=80, flags=flags, seq=7, options=[("MSS", 1460)]))
    return pkt / Raw(payload) if payload else pkt


def test_dr_rewrites_only_the_macs():
    f = make(ROUTE)
    pin = syn()
    verdict, reason, out = f.process(bytes(pin), now=NOW)
    assert (verdict, reason) == ("forward", None)
    got = Ether(out[0][1])
    assert got.dst == V.RS_MAC and got.src == V.DIRECTOR_MAC
    assert bytes(got)[14:] == bytes(pin)[14:]            # the IP packet is untouched, TTL too


def test_dr_connection_counts_only_the_input_direction():
    f = make(ROUTE)
    for flags in ("S", "A", "PA"):
        assert f.process(bytes(syn(flags=flags, payload=b"x" if flags == "PA" else b"")), now=NOW)[0] == "forward"
    (conn,) = f.conns(now=NOW)
    assert conn["state"] == "ESTABLISHED"                 # input-only table: SYN, then ACK
    c = f.dest_counters(0)
    assert (c["active"], c["inpkts"], c["outpkts"]) == (1, 3, 0)
    # a reply from the real server is not the director's business in DR
    reply = (Ether(src=V.RS_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.VIP, dst=V.CLIENT)
             / TCP(sport=80, dport=40000, flags="SA"))
    assert f.process(bytes(reply), now=NOW)[:2] == ("pass", "not_ours")
    f.process(bytes(syn(flags="F")), now=NOW)
    assert f.conns(now=NOW)[0]["state"] == "FIN_WAIT"    # input-only: ES + FIN -> FIN_WAIT


@pytest.mark.parametrize("df", [True, False])
def test_tun_wraps_in_ipip(df):
    f = make(TUNNEL)
    pin = syn(payload=b"hello", df=df)
    verdict, reason, out = f.process(bytes(pin), now=NOW)
    assert (verdict, reason) == ("forward", None)
    got = Ether(out[0][1])
    outer = got[IP]
    assert got.dst == V.RS_MAC and got.src == V.DIRECTOR_MAC
    assert (outer.src, outer.dst, outer.proto) == (DIP, V.RIP, 4)
    assert outer.tos == 0x10 and outer.ttl == 61 and bool(outer.flags.DF) == df
    assert outer.len == 20 + len(bytes(pin)) - 14
    assert bytes(outer.payload) == bytes(pin)[14:]        # inner packet untouched
    assert_checksums(bytes(got))


def test_tun_udp_and_padding():
    f = make(TUNNEL)
    f.set_dest(1, 1, V.RIP, 80, TUNNEL)
    f.scheduler_cb = lambda flows: [1] * len(flows)
    pin = V.padded(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP)
                   / UDP(sport=5000, dport=80) / Raw(b"q"))
    verdict, _, out = f.process(bytes(pin), now=NOW)
    got = Ether(out[0][1])
    assert verdict == "forward" and got[IP].proto == 4
    inner = IP(bytes(got[IP].payload))
    assert inner[UDP].load == b"q" and len(bytes(got)) == 14 + 20 + inner.len  # padding dropped


def test_tun_too_big_with_df_gets_icmp_frag_needed():
    f = make(TUNNEL, mtu=1500)
    f.process(bytes(syn()), now=NOW)                      # open the connection
    big = syn(flags="PA", payload=b"z" * (1500 - 40), df=True)   # 1500 bytes: +20 won't fit
    verdict, reason, out = f.process(bytes(big), now=NOW)
    assert (verdict, reason) == ("forward", "frag_needed")
    got = Ether(out[0][1])
    assert got.dst == V.ROUTER_MAC                        # back toward the client
    assert (got[IP].src, got[IP].dst, got[IP].proto) == (V.VIP, V.CLIENT, 1)
    assert (got[ICMP].type, got[ICMP].code, got[ICMP].nexthopmtu) == (3, 4, 1480)
    assert got[IPerror].src == V.CLIENT and got[IPerror].dst == V.VIP
    assert got[TCPerror].sport == 40000
    assert len(bytes(got)) == 14 + 20 + 8 + 548           # quotes as much as fits 576 bytes
    assert_checksums(bytes(got))
    assert f.counters()["frag_needed"] == 1


def test_tun_too_big_without_df_is_dropped_and_counted():
    f = make(TUNNEL)
    f.process(bytes(syn(df=False)), now=NOW)
    big = syn(flags="PA", payload=b"z" * (1500 - 40), df=False)
    assert f.process(bytes(big), now=NOW)[:2] == ("drop", "too_big")


def test_tun_without_neighbour_is_counted():
    f = Forwarder(max_conns=64, scheduler_cb=lambda flows: [0] * len(flows))
    f.set_interface(0, 5, V.mac(V.DIRECTOR_MAC), 1500, addr=DIP)
    f.set_routes(V.ROUTES)
    f.set_service(0, 6, V.VIP, 80)
    f.set_dest(0, 0, V.RIP, 80, TUNNEL)
    assert f.process(bytes(syn()), now=NOW)[:2] == ("drop", "no_neighbour")


def _onlink(fwd_code):
    f = Forwarder(max_conns=8192, scheduler_cb=lambda flows: [0] * len(flows))
    f.set_interface(0, 5, V.mac(V.DIRECTOR_MAC), 1500, addr=DIP)
    f.set_routes([("198.18.0.0", 16, None, 0)])           # every client on link
    f.set_neighbour(V.RIP, 0, V.mac(V.RS_MAC))
    f.set_service(0, 6, V.VIP, 80)
    f.set_dest(0, 0, V.RIP, 80, fwd_code)
    return f


def _client_syn(i):
    src = f"198.18.{100 + i // 250}.{1 + i % 250}"
    return bytes(Ether(src="02:00:00:00:01:01", dst=V.DIRECTOR_MAC) / IP(src=src, dst=V.VIP)
                 / TCP(sport=1000 + i % 50000, dport=80, flags="S"))


def test_on_link_clients_do_not_exhaust_the_neighbour_table():
    # NAT needs the client's MAC (replies), so each on-link client has a neighbour entry; it
    # goes with the client's last connection, so 5000 clients over time fit a 4096 table.
    f = _onlink(0)
    for i in range(5000):
        assert f.process(_client_syn(i), now=NOW)[0] == "forward", i
        if i % 1000 == 999:
            f.expire(NOW + 61)                              # their SYN_RECV entries expire
    assert f.counters()["no_route"] == 0


def test_dr_keeps_no_neighbour_entry_per_client():
    f = _onlink(ROUTE)
    for i in range(5000):                                   # all at once, none expired
        assert f.process(_client_syn(i), now=NOW)[0] == "forward", i
    assert [n[0] for n in f.neighbours()] == [V.RIP]
