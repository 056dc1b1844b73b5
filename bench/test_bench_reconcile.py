"""Configuration churn in the control plane (pytest-benchmark): commands through the Director's
try-plan-push-commit cycle on the fake fast path, so what is timed is the configuration copy,
the desired-state expansion, the plan and the bookkeeping, not the fast path or nft.

    python -m pytest bench/test_bench_reconcile.py -q -p no:cacheprovider

The integration test tests/integration/test_limits.py prints the same 256 additions through a
real lbd (Forwarder, nft deltas, the socket) for the end-to-end figure.
"""
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:               # also runnable as plain `pytest bench/...`
    sys.path.insert(0, str(REPO))

from lb.director.director import Director  # noqa: E402
from lb.director.fastpath import FakeFastPath, FakeIngress  # noqa: E402


def add_services(n: int, servers: int = 0) -> Director:
    d = Director(FakeFastPath(), FakeIngress())
    d.reconcile()
    for i in range(n):
        vip = f"198.18.{10 + i // 250}.{1 + i % 250}"
        assert d.apply({"op": "add_service", "proto": "tcp", "vip": vip, "port": 80})["rc"] == 0
        for k in range(servers):
            cmd = {"op": "add_server", "proto": "tcp", "vip": vip, "port": 80,
                   "rip": f"198.18.2.{1 + k}", "fwd": "masq"}
            assert d.apply(cmd)["rc"] == 0
    return d


def test_add_256_services_one_by_one(benchmark):
    d = benchmark.pedantic(add_services, args=(256,), rounds=3, iterations=1)
    assert len(d.config.services) == 256


def test_add_256_services_with_16_servers_each(benchmark):
    d = benchmark.pedantic(add_services, args=(256, 16), rounds=1, iterations=1)
    assert len(d.applied.dests) == 4096
