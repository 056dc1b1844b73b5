"""The lab every vector module assumes: one director interface on 198.18.0.0/24, a router to the
rest of the world, two real servers and an on-link client. Addresses and MACs only, and the
Ethernet headers of the frames that cross that link; each mode's module adds its services.

    client 203.0.113.7 --- router 198.18.0.1 --- director 198.18.0.2 (VIP 198.18.0.100)
                                                  |--- real server 198.18.0.11 (on link)
                                                  |--- real server 198.18.0.12 (on link)
                                                  |--- client 198.18.0.50 (on link)
"""
from scapy.layers.l2 import Ether

from tests.vectors.fixtures import NOW, InterfaceSetup, mac_bytes as mac  # noqa: F401  (re-exported)

IFSLOT, IFINDEX, MTU = 0, 5, 1500
DIRECTOR_MAC = "02:00:00:00:00:02"
DIP = "198.18.0.2"                           # the director's own address (TUN outer source)
ROUTER_IP, ROUTER_MAC = "198.18.0.1", "02:00:00:00:00:01"
RIP, RS_MAC = "198.18.0.11", "02:00:00:00:00:11"
RIP2, RS2_MAC = "198.18.0.12", "02:00:00:00:00:12"
LOCAL_CLIENT, LOCAL_CLIENT_MAC = "198.18.0.50", "02:00:00:00:00:50"
CLIENT = "203.0.113.7"                       # off link: reached through the router
VIP = "198.18.0.100"

INTERFACE = InterfaceSetup(IFSLOT, IFINDEX, DIRECTOR_MAC, MTU, addr=DIP)
ROUTES = (("198.18.0.0", 24, None, IFSLOT), ("0.0.0.0", 0, ROUTER_IP, IFSLOT))
NEIGHBOURS = ((ROUTER_IP, ROUTER_MAC), (RIP, RS_MAC), (LOCAL_CLIENT, LOCAL_CLIENT_MAC))
BOTH_SERVERS = NEIGHBOURS + ((RIP2, RS2_MAC),)


def eth_in(src_mac=ROUTER_MAC):
    """The Ethernet header of a frame the director receives."""
    return Ether(src=src_mac, dst=DIRECTOR_MAC)


def eth_to(dst_mac):
    """The Ethernet header of a frame the director sends."""
    return Ether(src=DIRECTOR_MAC, dst=dst_mac)


def padded(pkt, size=60, fill=b"\x00"):
    """The frame as it comes off the wire: short frames padded to 60 bytes (no FCS)."""
    raw = bytes(pkt)
    return Ether(raw + fill * (size - len(raw)))


def built(pkt):
    """`pkt` dissected from its own bytes: every computed field (lengths, checksums, data
    offset) filled in, so a builder can read them."""
    return Ether(bytes(pkt))
