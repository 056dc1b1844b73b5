"""pytest-benchmark: each built-in scheduler's C decision (Forwarder.pick: the function the packet
path calls, thresholds included) beside its Python class (Service.schedule), with 3, 32 and 256
real servers of mixed weights and live, non-zero counters, one decision per round.

    python3 -m pytest bench/test_bench_sched_c.py --benchmark-columns=median,iqr,ops \
        --benchmark-group-by=param:name

The Python figure is what a new flow cost before the schedulers moved to C (plus the trip into
Python itself, which this does not count); the C figure includes one Python call (pick()),
which the packet path does not make, so it is an upper bound.
"""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bench_sched import make_service  # noqa: E402

from lb._forward import Forwarder  # noqa: E402
from lb.director.model import Flow  # noqa: E402
from lb.schedulers import program  # noqa: E402

IN_C = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh", "mh"]
VIP = "198.18.0.100"
VIP_INT = 0xC6120064


def make(name: str, n: int):
    fwd = Forwarder(max_conns=16)
    fwd.set_service(0, 6, VIP, 80)
    svc = make_service(name, n, fwd)
    fwd.set_scheduler(0, program.build(name, (), [program.spec_of(d) for d in svc.dests],
                                       [d.slot for d in svc.dests]))
    return fwd, svc


@pytest.mark.parametrize("n", [3, 32, 256])
@pytest.mark.parametrize("side", ["c", "python"])
@pytest.mark.parametrize("name", IN_C)
def test_decision(benchmark, name, side, n):
    fwd, svc = make(name, n)
    flows = [(0xC6120100 + i, 40000 + i) for i in range(1, 200)]
    it = iter(range(10**9))
    if side == "c":
        def decide():
            caddr, cport = flows[next(it) % len(flows)]
            return fwd.pick(0, caddr, cport, VIP_INT, 80)
        assert benchmark(decide) in range(n)
    else:
        py_flows = [Flow("tcp", c, p, VIP, 80) for c, p in flows]
        picked = benchmark(lambda: svc.schedule(py_flows[next(it) % len(py_flows)]))
        assert picked in svc.dests
