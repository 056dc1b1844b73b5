"""pytest-benchmark: one scheduling decision (Service.schedule) per round, for every registered
scheduler, with 3, 32 and 1000 real servers of mixed weights and live, non-zero connection
counters in a real Forwarder (what lbd's schedulers read), so the least-connection family walks
the whole list as it would under load.

    python3 -m pytest bench/test_bench_sched.py --benchmark-columns=median,iqr,ops
"""
import random

import pytest

from lb import schedulers
from lb._forward import Forwarder
from lb.director.model import Flow, RealServer, Service

FWD = Forwarder(max_conns=16)


def make_service(name: str, n: int, fwd: Forwarder = FWD) -> Service:
    rng = random.Random(n)
    svc = Service("tcp", "198.18.0.100", 80, scheduler=name)
    for i in range(n):
        svc.dests.append(RealServer(f"198.18.{2 + i // 250}.{1 + i % 250}", 80,
                                    weight=1 + i % 5, slot=i, stats=fwd))
        fwd.load_counters(i, 1 + rng.randrange(50), rng.randrange(400))
    fwd.load_counters(n - 1, 0, 0)   # one idle server, the last: ovf has a pick, lc walks it all
    svc.dests_changed()
    return svc


@pytest.mark.parametrize("n", [3, 32, 1000])
@pytest.mark.parametrize("name", schedulers.names())
def test_schedule(benchmark, name, n):
    svc = make_service(name, n)
    flows = [Flow("tcp", f"198.18.1.{i}", 40000 + i, "198.18.0.100", 80) for i in range(1, 200)]
    it = iter(range(10**9))
    picked = benchmark(lambda: svc.schedule(flows[next(it) % len(flows)]))
    assert picked in svc.dests
