"""Every frame accounted (hypothesis over the core): received = forwarded + each drop and pass
reason, whatever arrives (ICMP errors quoting the flows too), through process() and
process_batch(), in NAT and DR, with the table small enough to fill. (A longer run: bench/fuzz_accounting.py.)"""
from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether

from lb._forward import NOT_VERDICTS, REASON_NAMES
from tests.vectors import dr as D
from tests.vectors import fixtures as fx
from tests.vectors import nat as V


def unaccounted(f):
    c = f.counters()
    counted = c["forwarded"] + sum(c[r] for r in REASON_NAMES if r not in NOT_VERDICTS)
    return c["rx_frames"] - counted


def valid_frames():
    """Frames the director may serve, built by scapy: the fuzz starts from these and mutates."""
    src = st.sampled_from(["203.0.113.7", "198.19.0.1", "198.19.0.2", V.RIP])
    dst = st.sampled_from([V.VIP, V.RIP, "198.19.9.9", V.CLIENT])
    ports = st.sampled_from([80, 8080, 5000, 5001, 40000])
    flags = st.sampled_from(["S", "SA", "A", "PA", "F", "FA", "R", "", "SR"])

    def tcp(s, d, sp, dp, fl, data):
        return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=s, dst=d)
                     / TCP(sport=sp, dport=dp, flags=fl) / data)

    def udp(s, d, sp, dp, data):
        return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=s, dst=d)
                     / UDP(sport=sp, dport=dp) / data)

    def icmp(s, d, type_, code, ttl, quoted):
        # an ICMP error (or not) quoting a packet of the flows above (fastpath/icmp.pxi)
        return bytes(Ether(src=V.ROUTER_MAC, dst=V.DIRECTOR_MAC) / IP(src=s, dst=d, ttl=ttl)
                     / ICMP(type=type_, code=code) / quoted[14:14 + 48])

    arp = st.just(bytes(Ether(dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=V.VIP, psrc=V.ROUTER_IP)))
    data = st.binary(max_size=40)
    packets = st.one_of(st.builds(tcp, src, dst, ports, ports, flags, data),
                        st.builds(udp, src, dst, ports, ports, data))
    icmps = st.builds(icmp, src, dst, st.sampled_from([3, 3, 11, 4, 0, 8, 12]),
                      st.sampled_from([3, 4, 0]), st.sampled_from([64, 1]), packets)
    return st.one_of(packets, icmps, arp)


def mutated(frame, edits):
    b = bytearray(frame)
    for pos, val in edits:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


frames = st.one_of(
    valid_frames(),
    st.builds(mutated, valid_frames(), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                                min_size=1, max_size=4)),
    st.binary(max_size=80),
    st.builds(lambda f, n: f[:n], valid_frames(), st.integers(0, 60)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(frames, st.sampled_from([0, 0, 0, 3, 4]), st.integers(0, 120)),
                max_size=60),
       st.sampled_from(["nat", "dr"]))
def test_every_frame_is_accounted(batch, mode):
    setup = V.DIRECTOR if mode == "nat" else D.DIRECTOR
    f = fx.provision(replace(setup, max_conns=16))
    t = V.NOW
    for frame, pkttype, dt in batch:
        t += dt / 10
        f.process(frame, now=t, pkttype=pkttype)
        f.expire(t)
    assert unaccounted(f) == 0
    f.process_batch([fr for fr, _, _ in batch], now=t + 1)
    assert unaccounted(f) == 0
