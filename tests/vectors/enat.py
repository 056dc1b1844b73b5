"""ENAT (Alibaba's "triangle" mode) vectors: in, CIP:cport -> VIP:80 becomes VIP:lport ->
RIP:8080, with the client in TOA on the SYN (as FULLNAT, tests/vectors/fullnat.py), lport lent
from the VIP's own port pool; the real server's agent sends the replies straight to the client,
so a reply that reaches the director is not the fast path's.

Services TCP and UDP VIP:80 -> RIP:8080 in mode "enat"; one Forwarder provisioned from
``DIRECTOR`` runs ``VECTORS`` in order (tests/vectors/fixtures.py).
"""
from scapy.layers.inet import IP, TCP

from tests.vectors import fixtures as fx
from tests.vectors.fullnat import MSS, RPORT, director, tcp_in
from tests.vectors.topology import CLIENT, RIP, RS_MAC, VIP, eth_in

DIRECTOR = director(mode="enat")
A = 40000

VECTORS = [
    fx.forwarded("ENAT SYN in: VIP:lport -> RIP:8080, the client in TOA",
                 tcp_in(A, 1025, "S", MSS, with_toa=True, laddr=VIP)),
    fx.not_forwarded("ENAT SYN-ACK from the real server reaching the director: passed (replies "
                     "go straight to the client)",
                     eth_in(RS_MAC) / IP(src=RIP, dst=VIP)
                     / TCP(sport=RPORT, dport=1025, flags="SA"),
                     "pass", "not_ours"),
    fx.not_forwarded("ENAT reply from the VIP to the client, as the agent sends it, reaching the "
                     "director: passed",
                     eth_in(RS_MAC) / IP(src=VIP, dst=CLIENT) / TCP(sport=80, dport=A, flags="SA"),
                     "pass", "not_ours"),
    ESTABLISHED := fx.forwarded("ENAT ACK in with data: no TOA after the SYN",
                                tcp_in(A, 1025, "A", payload=b"GET /", laddr=VIP, seq=101, ack=6)),
]
