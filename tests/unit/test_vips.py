"""VIP ownership (lb.director.vips, Director.set_owned): a VIP's services reach the fast path
only while this director holds the address, and come back when it does again; the
gratuitous ARP announces it."""
import socket

from lb.director import vips
from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress

A, B = "198.18.0.100", "198.18.0.101"


def director():
    d = Director(FakeFastPath(), FakeIngress())
    d.owned = frozenset()
    d.reconcile()
    for vip in (A, B):
        assert d.apply({"op": "add_service", "proto": "tcp", "vip": vip, "port": 80})["rc"] == 0
        assert d.apply({"op": "add_server", "proto": "tcp", "vip": vip, "port": 80,
                        "rip": "198.18.0.11", "rport": 80, "fwd": "masq"})["rc"] == 0
    return d


def pushed(d) -> set:
    return {key[1] for key in d.applied.services}


def test_only_held_vips_are_pushed_and_taking_one_pushes_it():
    d = director()
    assert pushed(d) == set() and len(d.config.services) == 2    # configured, withheld
    assert not d.ingress.drops                                   # the kernel gets their frames
    assert d.set_owned({A, "198.18.0.2"}) == [A]
    assert pushed(d) == {A} and d.ingress.drops
    assert d.set_owned({A, B}) == [B]
    assert pushed(d) == {A, B}
    assert d.set_owned({B}) == []
    assert pushed(d) == {B}
    assert "not held (services withheld): 198.18.0.100" in d.apply({"op": "list_checks"})["out"]
    assert d.set_owned(None) == [A]                              # --vip-ownership always
    assert pushed(d) == {A, B}


def test_a_fwmark_service_is_served_while_one_of_its_vips_is_held():
    d = Director(FakeFastPath(), FakeIngress())
    d.owned = frozenset()
    d.reconcile()
    assert d.apply({"op": "add_service", "fwmark": 3, "match": [["tcp", A, 80], ["tcp", B, 443]]})["rc"] == 0
    assert d.applied.services == {}
    assert d.set_owned({B}) == [B]
    assert ("fwm", 3) in d.applied.services


def test_the_gratuitous_arp_frame():
    mac = bytes.fromhex("02aabbccddee")
    frame = vips.garp_frame(mac, A)
    assert len(frame) == 60 and frame[:6] == b"\xff" * 6 and frame[6:12] == mac
    assert frame[12:14] == b"\x08\x06"
    arp = frame[14:42]
    assert arp[6:8] == b"\x00\x01"                               # a request (RFC 5227 2.4)
    assert arp[8:14] == mac and arp[14:18] == socket.inet_aton(A)
    assert arp[18:24] == b"\x00" * 6 and arp[24:28] == socket.inet_aton(A)
