# Source hashing (ip_vs_sh.c): 256 buckets dealt in list order, each server taking `weight`
# consecutive buckets (weight 0 still one) until all are filled; bucket hash_32(saddr [+ sport
# with sh-port], 8). sh-fallback: if that server is unavailable, probe the table for another.
from __future__ import annotations

from lb.schedulers.base import Scheduler, hash_32, ipv4_int

BITS = 8
SIZE = 1 << BITS
MASK = SIZE - 1


class SourceHashing(Scheduler):
    name = "sh"

    def update_service(self, service) -> None:
        """ip_vs_sh_reassign: the table is only rebuilt here and read per decision."""
        table, dests = [], service.dests
        while dests and len(table) < SIZE:
            for dest in dests:
                table.extend([dest] * min(max(dest.weight, 1), SIZE - len(table)))
        self.table = table if dests else [None] * SIZE

    def schedule(self, service, flow):
        flags = service.sched_flags
        port = flow.cport if "sh-port" in flags else 0
        ihash = hash_32((ipv4_int(flow.caddr) + port) & 0xFFFFFFFF, BITS)
        dest = self.table[ihash]
        if dest is None or dest.available:
            return dest
        if "sh-fallback" not in flags:
            return None
        # ip_vs_sh_get_fallback: offset 0..255, roffset = (offset + ihash) % 256 and bucket
        # (roffset + ihash) & 255 -- so the probe starts at bucket 2 * ihash, not ihash + 1.
        for offset in range(SIZE):
            dest = self.table[(((offset + ihash) & MASK) + ihash) & MASK]
            if dest.available:
                return dest
        return None

    def c_program(self, service) -> dict:
        return {"kind": "sh", "table": self.table}
