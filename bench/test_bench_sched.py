"""pytest-benchmark: one scheduling decision (Service.schedule) per round, for every registered
scheduler, with 3, 32 and 1000 real servers of mixed weights.

    python3 -m pytest bench/test_bench_sched.py --benchmark-columns=median,iqr,ops
"""
import pytest

from lb import schedulers
from lb.model import Flow, RealServer, Service


def make_service(name: str, n: int) -> Service:
    svc = Service("tcp", "198.18.0.100", 80, scheduler=name)
    for i in range(n):
        svc.dests.append(RealServer(f"198.18.{2 + i // 250}.{1 + i % 250}", 80, weight=1 + i % 5))
    svc.sched.update_service(svc)
    return svc


@pytest.mark.parametrize("n", [3, 32, 1000])
@pytest.mark.parametrize("name", schedulers.names())
def test_schedule(benchmark, name, n):
    svc = make_service(name, n)
    flow = Flow("tcp", "198.18.1.2", 40000, "198.18.0.100", 80)
    picked = benchmark(svc.schedule, flow)
    assert picked in svc.dests
