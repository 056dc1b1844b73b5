# Destination hashing (ip_vs_dh.c): 256 buckets, bucket i holding the server at position
# i mod n in list order (weights do not change the share); a packet's destination address
# (the VIP for an ordinary service) picks bucket hash_32(daddr, 8). Unavailable -> no server.
from __future__ import annotations

from lb.schedulers.base import Scheduler, hash_32, ipv4_int

BITS = 8
SIZE = 1 << BITS


class DestinationHashing(Scheduler):
    """Removing one of n servers re-deals every bucket (i mod n becomes i mod n-1), so most
    destination addresses move, not only the removed server's: dh is not consistent hashing."""

    name = "dh"

    def update_service(self, service) -> None:
        dests = service.dests
        self.table = [dests[i % len(dests)] for i in range(SIZE)] if dests else [None] * SIZE

    def schedule(self, service, flow):
        dest = self.table[hash_32(ipv4_int(flow.vaddr), BITS)]
        return dest if dest is not None and dest.available else None

    def c_program(self, service) -> dict:
        return {"kind": "dh", "table": self.table}
