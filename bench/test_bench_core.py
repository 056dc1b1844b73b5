"""Per-frame cost of the fast-path core, through Forwarder.process() (pytest-benchmark).

    python -m pytest bench/test_bench_core.py -q -p no:cacheprovider            # with numbers
    python -m pytest bench/test_bench_core.py -q -p no:cacheprovider --benchmark-disable

What is timed: one Forwarder.process(frame, now) call on
  * an established-flow UDP frame of 60 bytes (64 on the wire with the FCS), client -> VIP
    (DNAT) and real server -> client (SNAT);
  * a new-flow TCP SYN with a trivial scheduler: every round is a flow the table has not seen,
    so it pays the scheduler call and the connection's creation;
  * a frame the core passes at once (ARP), the floor: the call overhead with almost no core.

These figures INCLUDE the Python call overhead of process(): argument parsing, copying the
frame into a bytearray, taking the mutex with the GIL released, and building the result tuple
and the output bytes. The AF_PACKET ring loop (Forwarder.run) does not pay any of it: it runs
the same C core (handle() in core.pxi) on frames in place in the RX ring without the GIL, and
enters Python only once per block of frames, and only when that block holds new flows (one
scheduler call for all of them). So these numbers are upper bounds for the core; subtract the
floor for an estimate of the core itself, and use bench/pps.py for packet rates.
"""
import struct
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:               # also runnable as plain `pytest bench/...`
    sys.path.insert(0, str(REPO))

from scapy.layers.l2 import ARP, Ether  # noqa: E402

from lb._forward import Forwarder  # noqa: E402
from tests.vectors import nat as V  # noqa: E402

NOW = V.NOW
SYN_ROUNDS = 20000
SYN_WARMUP = 200


def director(max_conns=1 << 16, scheduler=V.scheduler):
    return V.configure(Forwarder(max_conns=max_conns, scheduler_cb=scheduler))


def udp_pair():
    """60-byte UDP frames of one established flow: (client -> VIP, real server -> client)."""
    payload = b"x" * (60 - 14 - 20 - 8)
    frame_in = bytes(V.udp_in(5000, payload)[0])
    frame_out = bytes(V.udp_out(5000, payload)[0])
    assert len(frame_in) == len(frame_out) == 60
    return frame_in, frame_out


@pytest.fixture(scope="module")
def established():
    f = director()
    frame_in, frame_out = udp_pair()
    assert f.process(frame_in, now=NOW)[0] == "forward"
    return f, frame_in, frame_out


@pytest.mark.benchmark(group="fastpath-core")
def test_established_udp_in(benchmark, established):
    f, frame_in, _ = established
    verdict, reason, out = benchmark(f.process, frame_in, NOW)
    assert (verdict, reason) == ("forward", None) and len(out[0][1]) == 60


@pytest.mark.benchmark(group="fastpath-core")
def test_established_udp_out(benchmark, established):
    f, _, frame_out = established
    verdict, reason, out = benchmark(f.process, frame_out, NOW)
    assert (verdict, reason) == ("forward", None) and len(out[0][1]) == 60


def _csum_replace2(ck, old, new):
    """RFC 1624 eqn. 3 for one 16-bit word."""
    s = (~ck & 0xFFFF) + (~old & 0xFFFF) + new
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frames(n):
    """n SYNs of n different flows (client ports 1024.., one client), checksums patched."""
    base = bytearray(bytes(V.tcp_in(1024, "S", seq=1, options=[("MSS", 1460)])[0]))
    l4 = 14 + 20
    (ck,) = struct.unpack_from("!H", base, l4 + 16)
    frames = []
    for port in range(1024, 1024 + n):
        b = bytearray(base)
        struct.pack_into("!H", b, l4, port)
        struct.pack_into("!H", b, l4 + 16, _csum_replace2(ck, 1024, port))
        frames.append(bytes(b))
    return frames


@pytest.mark.benchmark(group="fastpath-core")
def test_new_flow_syn(benchmark):
    calls = []

    def trivial(flows):
        calls.append(len(flows))
        return [V.TCP_DEST] * len(flows)

    f = director(scheduler=trivial)
    frames = iter(syn_frames(SYN_ROUNDS + SYN_WARMUP + 1))
    first = next(frames)
    assert f.process(first, now=NOW)[:2] == ("forward", None)

    def setup():
        return (next(frames), NOW), {}

    verdict, reason, _ = benchmark.pedantic(f.process, setup=setup, rounds=SYN_ROUNDS,
                                            warmup_rounds=SYN_WARMUP)
    assert (verdict, reason) == ("forward", None)
    assert sum(calls) == len(calls) == f.counters()["new_conns"]       # one call per new flow
    assert f.counters()["table_full"] == 0


@pytest.mark.benchmark(group="fastpath-core")
def test_floor_passed_at_once(benchmark):
    f = director()
    arp = bytes(Ether(dst="ff:ff:ff:ff:ff:ff", src=V.ROUTER_MAC) / ARP(pdst=V.VIP, psrc=V.ROUTER_IP))
    arp += b"\0" * (60 - len(arp))
    verdict, reason, out = benchmark(f.process, arp, NOW)
    assert (verdict, reason, out) == ("pass", "not_ipv4", [])
