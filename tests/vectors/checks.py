"""Checking a frame the fast path sent: scapy recomputes every checksum it carries (the first IP
header, and its TCP, UDP or ICMP), and the frame must be byte for byte what scapy builds."""
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether


def recomputed(frame):
    """`frame` with scapy's own IP and L4 checksums (chksum deleted, packet rebuilt)."""
    p = Ether(frame)
    del p[IP].chksum
    for layer in (TCP, UDP, ICMP):
        if layer in p:
            if layer is UDP and p[UDP].chksum == 0:
                continue                  # no checksum: nothing to recompute (RFC 768)
            del p[layer].chksum
    return Ether(bytes(p))


def assert_checksums(frame):
    got, want = Ether(frame), recomputed(frame)
    assert got[IP].chksum == want[IP].chksum, \
        f"IP checksum {got[IP].chksum:#06x}, scapy computes {want[IP].chksum:#06x}"
    for layer in (TCP, UDP, ICMP):
        if layer in got:
            assert got[layer].chksum == want[layer].chksum, \
                f"{layer.__name__} checksum {got[layer].chksum:#06x}, scapy computes {want[layer].chksum:#06x}"
    assert bytes(want) == frame
