"""The agent's table and the kernel's reply program (lb.realserver.enat_tc): what it learns goes
into the program's map, what expires comes out, and an entry whose replies only the program saw
is kept alive by the time the program wrote into the map. A fake map: no root, no kernel."""
from __future__ import annotations

import socket

from scapy.layers.inet import IP

from lb.realserver import enat_flows as ef
from lb.realserver import enat_packets as ep
from lb.realserver import enat_tc
from tests.unit.test_enat_agent import CIP, CPORT, LPORT, NOW, PVIP, RIP, VIP, key, reply, syn


class FakeMap:
    """ReplyOffload's interface over a dict; `used(k, t)` plays the program's timestamp."""

    def __init__(self, refuse=False):
        self.items, self.refuse, self.deleted = {}, refuse, []

    def put(self, k, cip, cport, vport):
        if self.refuse:
            return False
        self.items[k] = [cip, cport, vport, None]
        return True

    def delete(self, k):
        self.deleted.append(k)
        self.items.pop(k, None)

    def last_used(self, k):
        item = self.items.get(k)
        return None if item is None else item[3]

    def used(self, k, t):
        self.items[k][3] = t


def table(**kw):
    t = ef.FlowTable([VIP])
    t.offload = FakeMap(**kw)
    return t


def kkey(lport=LPORT):
    return enat_tc.key(PVIP, socket.inet_aton(RIP), lport, 80, 6)


def test_the_map_key_and_value_are_what_the_program_reads():
    assert ef.offload_key(key()) == kkey()
    k = kkey()
    assert (len(k), k[:8], k[8:10], k[10:12], k[12]) == (16, PVIP + socket.inet_aton(RIP),
                                                         LPORT.to_bytes(2, "big"), b"\0\x50", 6)
    v = enat_tc.value(socket.inet_aton(CIP), CPORT, 80)
    # ports in network order where the program copies them into the packet, last use 0
    assert len(v) == 16 and v[:4] == socket.inet_aton(CIP) and v[4:6] == CPORT.to_bytes(2, "big")
    assert v[6:8] == (80).to_bytes(2, "big") and v[8:] == bytes(8)


def test_learning_puts_the_connection_into_the_map():
    t = table()
    assert t.inbound(syn(), NOW) == ep.LEARNED
    assert t.offload.items[kkey()][:3] == [socket.inet_aton(CIP), CPORT, 80]


def test_a_refusing_map_leaves_the_connection_to_the_agent():
    t = table(refuse=True)
    assert t.inbound(syn(), NOW) == ep.LEARNED and t.counters[ef.OFFLOAD_REFUSED] == 1
    assert t.outbound(reply(), NOW)[1] == ep.REWRITTEN


def test_replies_only_the_program_saw_keep_the_entry():
    t = table()
    t.inbound(syn(), NOW)
    t.outbound(reply(), NOW)                                # the SYN-ACK: through the agent
    assert t.entries[key()].state == "established"
    t.offload.used(kkey(), NOW + 800)                       # then data, in the kernel only
    assert t.expire(NOW + 900) == 0 and key() in t.entries
    assert t.entries[key()].expires == NOW + 800 + 900
    assert t.expire(NOW + 1699) == 0 and t.expire(NOW + 1700) == 1
    assert kkey() not in t.offload.items and t.counters[ef.EXPIRED] == 1


def test_a_lookup_past_the_time_asks_the_map_too():
    """The server's FIN after 900 s of replies the program took: the agent must still know it."""
    t = table()
    t.inbound(syn(), NOW)
    t.outbound(reply(), NOW)
    t.offload.used(kkey(), NOW + 950)
    t.now = NOW + 1000
    assert t.get(key()) is not None
    out, why = t.outbound(reply(flags="FA"), NOW + 1000)
    assert why == ep.REWRITTEN and t.entries[key()].state == "fin"


def test_an_unused_entry_expires_and_leaves_the_map():
    t = table()
    t.inbound(syn(), NOW)
    t.inbound(syn(lport=LPORT + 1), NOW)
    t.now = NOW + 60                                        # syn timeout, nothing since
    assert t.get(key()) is None
    assert t.expire(NOW + 60) == 1 and t.offload.items == {}
    assert sorted(t.offload.deleted) == sorted([kkey(), kkey(LPORT + 1)])


def test_a_new_client_on_the_same_key_replaces_the_map_value():
    t = table()
    t.inbound(syn(), NOW)
    other = bytes(syn())                                    # same VIP:lport, another client in the TOA
    other = other.replace(socket.inet_aton(CIP), socket.inet_aton("198.18.1.9"))
    pkt = IP(other)
    del pkt.chksum, pkt["TCP"].chksum
    assert t.inbound(bytes(pkt), NOW + 1) == ep.LEARNED
    assert t.offload.items[kkey()][0] == socket.inet_aton("198.18.1.9")
