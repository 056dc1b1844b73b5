"""FULLNAT and ENAT in the core, with TOA, checked with scapy: addresses and ports both ways,
the TOA option (kind 254, length 8, client port then address) right after the fixed TCP header,
both checksums right, existing options kept, no room -> no TOA (counted), port pools that run out
cleanly and recover."""
import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from lb._forward import Forwarder
from tests.vectors import nat as V
from tests.vectors.checks import assert_checksums

FULLNAT, ENAT = 3, 4
LIP1, LIP2 = "198.18.0.3", "198.18.0.4"
NOW = V.NOW


def make(fwd_code, lips=(LIP1,), ports=(1025, 65535), mtu=1500):
    f = Forwarder(max_conns=64, scheduler_cb=lambda flows: [0] * len(flows))
    f.set_interface(0, 5, V.mac(V.DIRECTOR_MAC), mtu)
    f.set_routes(V.ROUTES)
    for ip, m in V.NEIGHBOURS:
        f.set_neighbour(ip, 0, V.mac(m))
    for i, lip in enumerate(lips):
        f.set_laddr(i, lip, *ports)
    f.set_laddr(10, V.VIP, *ports)
    f.set_service(0, 6, V.VIP, 80, laddrs=range(len(lips)), enat_laddr=10)
    f.set_service(1, 17, V.VIP, 80, laddrs=range(len(lips)), enat_laddr=10)
    f.set_dest(0, 0, V.RIP, 8080, fwd_code)
    f.set_dest(1, 1, V.RIP, 8080, fwd_code)
    f.scheduler_cb = lambda flows: [0 if svc == 0 else 1 for svc, *_ in flows]
    return f


def seg(sport=40000, flags="S", options=(("MSS", 1460),), payload=b"", src=V.CLIENT):
    pkt = (Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=src, dst=V.VIP, ttl=50)
           / TCP(sport=sport, dport=80, flags=flags, seq=100, options=list(options)))
    return Ether(bytes(pkt / Raw(payload) if payload else pkt))      # built: dataofs is known


def toa_of(tcp):
    for name, value in tcp.options:
        if name == 254 or name == "254":
            return value
    raw = bytes(tcp)[20:(tcp.dataofs or 5) * 4]
    return raw[:8] if raw[:2] == b"\xfe\x08" else None


SYN_OPTIONS = [
    (),
    (("MSS", 1460),),
    (("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("NOP", None), ("WScale", 7)),
    (("NOP", None), ("NOP", None), ("Timestamp", (99, 0))),
]


@pytest.mark.parametrize("options", SYN_OPTIONS)
def test_fullnat_syn_gets_toa_and_both_nats(options):
    f = make(FULLNAT)
    pin = seg(options=options)
    verdict, reason, out = f.process(bytes(pin), now=NOW)
    assert (verdict, reason) == ("forward", None)
    got = Ether(out[0][1])
    assert (got[IP].src, got[IP].dst, got[IP].ttl) == (LIP1, V.RIP, 49)
    assert got[TCP].dport == 8080 and 1025 <= got[TCP].sport <= 65535
    raw_tcp = bytes(got[TCP])
    assert raw_tcp[20:28] == bytes([254, 8]) + (40000).to_bytes(2, "big") + bytes(map(int, V.CLIENT.split(".")))
    assert raw_tcp[28:got[TCP].dataofs * 4] == bytes(pin[TCP])[20:pin[TCP].dataofs * 4]  # kept
    assert got[TCP].dataofs == pin[TCP].dataofs + 2
    assert got[IP].len == len(bytes(pin)) - 14 + 8
    assert_checksums(out[0][1])
    (conn,) = f.conns(now=NOW)
    assert conn["local"] == (LIP1, got[TCP].sport)


def test_fullnat_reply_and_later_segments():
    f = make(FULLNAT)
    out = Ether(f.process(bytes(seg()), now=NOW)[2][0][1])
    lport = out[TCP].sport
    reply = (Ether(src=V.RS_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.RIP, dst=LIP1, ttl=64)
             / TCP(sport=8080, dport=lport, flags="SA", seq=5, ack=101))
    verdict, _, back = f.process(bytes(reply), now=NOW)
    got = Ether(back[0][1])
    assert verdict == "forward" and got.dst == V.ROUTER_MAC
    assert (got[IP].src, got[IP].dst, got[TCP].sport, got[TCP].dport) == (V.VIP, V.CLIENT, 80, 40000)
    assert_checksums(back[0][1])
    ack = Ether(f.process(bytes(seg(flags="A", options=(), payload=b"GET /")), now=NOW)[2][0][1])
    assert ack[TCP].dataofs == 5 and ack[Raw].load == b"GET /"   # no TOA after the SYN
    assert (ack[IP].src, ack[TCP].sport) == (LIP1, lport)
    assert_checksums(bytes(ack))
    assert f.conns(now=NOW)[0]["state"] == "ESTABLISHED"


def test_toa_on_the_first_ack_when_asked():
    f = make(FULLNAT)
    f.set_toa(syn=False, ack=True)
    syn = Ether(f.process(bytes(seg()), now=NOW)[2][0][1])
    assert syn[TCP].dataofs == 6                                 # just the MSS option
    ack = Ether(f.process(bytes(seg(flags="A", options=())), now=NOW)[2][0][1])
    assert bytes(ack[TCP])[20:22] == bytes([254, 8]) and ack[TCP].dataofs == 7
    assert_checksums(bytes(ack))
    again = Ether(f.process(bytes(seg(flags="A", options=())), now=NOW)[2][0][1])
    assert again[TCP].dataofs == 5                               # only the first


def test_no_room_for_toa_is_forwarded_without_and_counted():
    f = make(FULLNAT)
    full = (("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7),
            ("SAck", (1, 2, 3, 4)), ("NOP", None), ("NOP", None))      # 36 bytes of options
    pin = seg(options=full)
    assert pin[TCP].dataofs * 4 + 8 > 60
    verdict, _, out = f.process(bytes(pin), now=NOW)
    got = Ether(out[0][1])
    assert verdict == "forward" and got[TCP].dataofs == pin[TCP].dataofs
    assert_checksums(out[0][1])
    assert f.counters()["toa_no_room"] == 1
    g = make(FULLNAT, mtu=100)
    big = seg(sport=40001, payload=b"x" * (100 - 44))            # exactly the MTU
    assert Ether(g.process(bytes(big), now=NOW)[2][0][1])[TCP].dataofs == 6
    assert g.counters()["toa_no_room"] == 1


def test_many_clients_get_distinct_local_ports_over_two_lips():
    f = make(FULLNAT, lips=(LIP1, LIP2))
    seen = set()
    for i in range(20):
        got = Ether(f.process(bytes(seg(sport=20000 + i)), now=NOW)[2][0][1])
        seen.add((got[IP].src, got[TCP].sport))
    assert len(seen) == 20 and {s for s, _ in seen} == {LIP1, LIP2}


def test_a_tiny_port_pool_runs_out_cleanly_and_recovers():
    f = make(FULLNAT, ports=(2000, 2002))
    outs = [f.process(bytes(seg(sport=30000 + i)), now=NOW) for i in range(5)]
    assert [o[0] for o in outs] == ["forward"] * 3 + ["drop"] * 2
    assert outs[3][1] == "lport_exhausted" and f.counters()["lport_exhausted"] == 2
    assert f.laddr_used(0) == 3
    f.expire(NOW + 61)                                           # SYN_RECV: 60 s
    assert f.laddr_used(0) == 0
    assert f.process(bytes(seg(sport=30009)), now=NOW + 62)[0] == "forward"


def test_udp_fullnat_has_no_toa():
    f = make(FULLNAT)
    pin = Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.CLIENT, dst=V.VIP) / UDP(sport=5, dport=80) / Raw(b"q")
    got = Ether(f.process(bytes(pin), now=NOW)[2][0][1])
    assert (got[IP].src, got[IP].dst, got[UDP].dport, got[UDP].load) == (LIP1, V.RIP, 8080, b"q")
    assert_checksums(bytes(got))


def test_enat_in_path_comes_from_the_vip_with_toa():
    f = make(ENAT)
    verdict, _, out = f.process(bytes(seg()), now=NOW)
    got = Ether(out[0][1])
    assert verdict == "forward"
    assert (got[IP].src, got[IP].dst, got[TCP].dport) == (V.VIP, V.RIP, 8080)
    assert bytes(got[TCP])[20:28] == bytes([254, 8]) + (40000).to_bytes(2, "big") + bytes(map(int, V.CLIENT.split(".")))
    assert_checksums(out[0][1])
    lport = got[TCP].sport
    reply = (Ether(src=V.RS_MAC, dst=V.DIRECTOR_MAC) / IP(src=V.RIP, dst=V.VIP)
             / TCP(sport=8080, dport=lport, flags="SA"))
    assert f.process(bytes(reply), now=NOW)[:2] == ("pass", "not_ours")   # replies bypass us
    assert f.dest_counters(0)["outpkts"] == 0
    assert f.laddr_used(10) == 1
