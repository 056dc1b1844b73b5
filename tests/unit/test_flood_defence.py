"""The defence against floods of half-open connections (fastpath/expiry.pxi) through
Forwarder.process(): embryos evicted oldest first from a full table, their short timeout under
pressure, established connections never touched, the input-only secure_tcp table."""
from dataclasses import replace

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from tests.vectors import dr as D
from tests.vectors import fixtures as fx
from tests.vectors import nat as V

NOW = V.NOW


def spoofed_syn(i, dst=V.VIP, dport=80):
    """A SYN from a spoofed source in 198.18.0.0/15 (never answered)."""
    src = f"198.19.{i // 250 % 250}.{1 + i % 250}"
    return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=src, dst=dst)
                 / TCP(sport=1024 + i % 60000, dport=dport, flags="S"))


def nat(max_conns=64, **flood):
    f = fx.provision(replace(V.DIRECTOR, max_conns=max_conns))
    if flood:
        f.set_flood_defence(**flood)
    return f


def legit(f, cport, now):
    """A client's handshake through NAT: SYN in, SYN+ACK out, ACK in; True if all forwarded."""
    steps = [V.tcp_in(cport, "S")[0], V.tcp_out(cport, "SA")[0], V.tcp_in(cport, "A")[0]]
    return all(f.process(bytes(p), now=now)[0] == "forward" for p in steps)


def test_a_full_table_gives_its_oldest_embryo_to_a_new_flow():
    f = nat()
    for i in range(64):
        assert f.process(spoofed_syn(i), now=NOW)[0] == "forward"
    assert f.counters()["embryos"] == 64
    assert f.process(spoofed_syn(64), now=NOW)[0] == "forward"
    c = f.counters()
    assert (c["embryos_evicted"], c["table_full"], c["conns"]) == (1, 0, 64)
    clients = {x["client"] for x in f.conns(NOW)}
    assert ("198.19.0.1", 1024) not in clients and ("198.19.0.65", 1088) in clients


def test_established_connections_are_never_evicted():
    f = nat()
    for port in range(32):
        assert legit(f, 41000 + port, NOW)
    for i in range(500):                                  # a flood, 16x what is left
        assert f.process(spoofed_syn(i), now=NOW)[0] == "forward"
    states = [x["state"] for x in f.conns(NOW)]
    assert states.count("ESTABLISHED") == 32 and len(states) == 64
    assert f.counters()["embryos_evicted"] == 500 - 32
    for port in range(32):                                # all of them still forward
        assert f.process(bytes(V.tcp_in(41000 + port, "PA", b"x")[0]), now=NOW)[0] == "forward"


def test_legitimate_clients_connect_during_and_right_after_a_flood():
    """Every legitimate handshake interleaved with a flood 10x its rate succeeds, and so does
    every one right after it: the flood only ever displaces other embryos (the table, 128,
    holds the 70 legitimate ones and whatever embryos fit beside them)."""
    f = nat(max_conns=128)
    ok = 0
    for k in range(50):
        for i in range(10):
            f.process(spoofed_syn(10 * k + i), now=NOW + k * 0.01)
        ok += legit(f, 42000 + k, NOW + k * 0.01)
    assert ok == 50
    after = sum(legit(f, 43000 + k, NOW + 1) for k in range(20))
    assert after == 20


def test_under_pressure_embryos_get_the_short_timeout():
    f = nat(pressure=0.5, embryo_timeout=3.0)
    for i in range(32):                                   # 32 of 64: not yet over the level
        f.process(spoofed_syn(i), now=NOW)
    assert f.counters()["under_pressure"] == 0
    assert max(x["expires_in"] for x in f.conns(NOW)) == pytest.approx(60)
    f.process(spoofed_syn(32), now=NOW)
    f.process(spoofed_syn(33), now=NOW)
    assert f.counters()["under_pressure"] == 1
    short = [x for x in f.conns(NOW) if x["expires_in"] <= 3]
    assert len(short) >= 1
    f.expire(NOW + 3)
    assert f.counters()["conns"] <= 33


def test_an_established_connection_keeps_its_timeout_under_pressure():
    f = nat(pressure=0.0)
    assert legit(f, 41000, NOW)
    (c,) = f.conns(NOW)
    assert c["state"] == "ESTABLISHED" and c["expires_in"] == pytest.approx(900)


def test_flood_defence_settings_are_checked():
    f = nat()
    for bad in ({"pressure": 1.5}, {"embryo_timeout": 0}, {"secure_tcp": 3}):
        with pytest.raises(ValueError):
            f.set_flood_defence(**bad)


# --- input-only (DR): secure_tcp --------------------------------------------------------------
def dr(secure):
    f = fx.provision(replace(D.DIRECTOR, max_conns=64))
    f.set_flood_defence(secure_tcp=secure)
    return f


def dr_seg(flags, payload=b""):
    return bytes(D.tcp_in(40000, flags, payload, seq=8, ack=501)[0])


def test_secure_tcp_a_blind_syn_and_ack_stay_embryonic():
    f = dr(secure=2)
    for flags in ("S", "A"):
        assert f.process(dr_seg(flags), now=NOW)[0] == "forward"
    (c,) = f.conns(NOW)
    assert c["state"] == "SYN_RECV" and c["expires_in"] == pytest.approx(60)
    assert f.counters()["embryos"] == 1
    assert f.process(dr_seg("PA", b"GET /"), now=NOW)[0] == "forward"     # the client's data
    (c,) = f.conns(NOW)
    assert c["state"] == "ESTABLISHED" and f.counters()["embryos"] == 0


def test_without_secure_tcp_the_kernels_table():
    f = dr(secure=0)
    for flags in ("S", "A"):
        f.process(dr_seg(flags), now=NOW)
    assert f.conns(NOW)[0]["state"] == "ESTABLISHED"


def test_secure_tcp_auto_only_under_pressure():
    f = dr(secure=1)
    f.set_flood_defence(pressure=0.0, secure_tcp=1)
    for flags in ("S", "A"):
        f.process(dr_seg(flags), now=NOW)
    assert f.conns(NOW)[0]["state"] == "SYN_RECV"
    g = dr(secure=1)                                   # default level: half the table
    for flags in ("S", "A"):
        g.process(dr_seg(flags), now=NOW)
    assert g.conns(NOW)[0]["state"] == "ESTABLISHED"


def test_dr_flood_of_syn_and_ack_pairs_leaves_room_for_clients():
    """A blind spoofer sending SYN then ACK from each address: under secure_tcp they stay
    embryos and give way; a legitimate client that sends data gets in."""
    f = dr(secure=1)
    for i in range(300):
        syn = spoofed_syn(i)
        pkt = Ether(syn)                                   # the ACK from the same address
        pkt[TCP].flags = "A"
        del pkt[IP].chksum, pkt[TCP].chksum
        f.process(syn, now=NOW)
        f.process(bytes(pkt), now=NOW)
    states = [x["state"] for x in f.conns(NOW)]
    # while the table was under half full the kernel's table made them ESTABLISHED; from then
    # on (pressure) they stayed embryos and gave way to each other
    assert states.count("ESTABLISHED") <= 33 and f.counters()["embryos_evicted"] > 200
    for flags, data in (("S", b""), ("A", b""), ("PA", b"GET /")):
        assert f.process(dr_seg(flags, data), now=NOW)[0] == "forward"
    mine = [x for x in f.conns(NOW) if x["client"][1] == 40000 and x["client"][0] == D.CLIENT]
    assert mine and mine[0]["state"] == "ESTABLISHED"
