"""The rate estimator against the kernel's arithmetic (ip_vs_est.c), worked by hand."""
import threading

from lb.director.estimator import Estimate, Estimator, Sampler
from lb.director.fastpath import FakeFastPath
from lb.director.model import RealServer, Service


def test_one_tick_of_1000_packets_per_second():
    e = Estimate((0, 0, 0, 0, 0))
    e.sample((0, 2000, 0, 0, 0))        # 2000 packets in 2 s
    # rate = 2000 << 9 = 1024000; avg = 0 + (1024000 - 0) >> 2 = 256000; (256000 + 511) >> 10
    assert e.avg[1] == 256000
    assert e.rates()["inpps"] == 250


def test_steady_rate_converges_as_the_kernel_s_does():
    e = Estimate((0, 0, 0, 0, 0))
    total, seen = 0, []
    for _ in range(12):
        total += 2000
        e.sample((0, total, 0, 0, 0))
        seen.append(e.rates()["inpps"])
    # avg_n = 1024000 * (1 - (3/4)^n), in integers: 256000, 448000, 592000, 700000, ...
    assert seen[:4] == [(256000 + 511) >> 10, (448000 + 511) >> 10, (592000 + 511) >> 10,
                        (700000 + 511) >> 10]
    assert seen[-1] >= 968 and seen[-1] <= 1000


def test_bytes_are_scaled_by_2_to_the_5():
    e = Estimate((0, 0, 0, 0, 0))
    e.sample((0, 0, 0, 3000, 1))        # 3000 bytes in 2 s: rate 3000 << 4 = 48000
    assert e.avg[3] == 12000 and e.rates()["inbps"] == (12000 + 15) >> 5 == 375
    assert e.avg[4] == 4 and e.rates()["outbps"] == 0     # (4 + 15) >> 5


def test_falling_traffic_decays_with_an_arithmetic_shift():
    e = Estimate((0, 0, 0, 0, 0))
    e.sample((1, 0, 0, 0, 0))           # one connection in 2 s: 512 -> avg 128
    e.sample((1, 0, 0, 0, 0))           # none: avg += (0 - 128) >> 2 = -32
    assert e.avg[0] == 96
    e.avg[0] = 1
    e.sample((1, 0, 0, 0, 0))           # (0 - 1) >> 2 == -1, as on an s64
    assert e.avg[0] == 0


def test_zeroed_counters_zero_the_rates():
    e = Estimate((0, 0, 0, 0, 0))
    e.sample((10, 2000, 2000, 10**6, 10**6))
    e.sample((0, 5, 0, 0, 0))           # -Z: counters fell
    assert e.rates() == dict(cps=0, inpps=0, outpps=0, inbps=0, outbps=0)
    e.sample((0, 2005, 0, 0, 0))
    assert e.rates()["inpps"] == 250


def table():
    fp = FakeFastPath()
    svc = Service("udp", "198.18.0.100", 53, "rr")
    svc.dests = [RealServer("198.18.0.11", 53, slot=0, stats=fp),
                 RealServer("198.18.0.12", 53, slot=1, stats=fp)]
    return fp, svc


def bump(fp, slot, pkts, size=100):
    c = fp.counts.setdefault(slot, dict(conns=0, inpkts=0, outpkts=0, inbytes=0, outbytes=0))
    c["conns"] += pkts
    c["inpkts"] += pkts
    c["inbytes"] += pkts * size


def test_a_service_is_the_sum_of_what_its_servers_gained():
    fp, svc = table()
    bump(fp, 0, 500)                    # counted before the estimator started: no spike
    est = Estimator()
    est.sample([svc])
    bump(fp, 0, 1000)
    bump(fp, 1, 1000)
    est.sample([svc])
    assert est.rates(svc.key)["inpps"] == (((2000 << 9) >> 2) + 511) >> 10 == 250
    assert est.rates((svc.key, "198.18.0.11", 53))["inpps"] == 125
    assert est.rates((svc.key, "198.18.0.11", 53))["inbps"] == (((100000 << 4) >> 2) + 15) >> 5
    svc.dests = svc.dests[:1]           # a server deleted takes nothing away from the service
    est.sample([svc])
    assert est.rates(svc.key)["inpps"] == ((256000 * 3 // 4) + 511) >> 10
    assert est.rates((svc.key, "198.18.0.12", 53))["inpps"] == 0   # forgotten


def test_a_zeroed_service_starts_again():
    fp, svc = table()
    est = Estimator()
    est.sample([svc])
    bump(fp, 0, 2000)
    est.sample([svc])
    assert est.rates(svc.key)["inpps"] == 250
    fp.zero_dest(0)
    fp.zero_dest(1)
    est.sample([svc])
    assert est.rates(svc.key)["inpps"] == 0
    bump(fp, 0, 2000)
    est.sample([svc])
    assert est.rates(svc.key)["inpps"] == 250


def test_sampler_keeps_a_fixed_schedule():
    now = [0.0]
    ticks = []
    stopping = threading.Event()

    class Clock:
        def __call__(self):
            return now[0]

    class Est:
        def sample(self, services):
            ticks.append(now[0])
            if len(ticks) == 4:
                stopping.set()

    def wait(timeout):                  # time passes as the sampler waits (plus 0.3 s of work)
        now[0] += timeout + 0.3
        return stopping.is_set()

    stopping.wait = wait
    Sampler(Est(), lambda: [], stopping, clock=Clock()).run()
    assert ticks == [0.0, 2.3, 4.3, 6.3]
