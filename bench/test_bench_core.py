"""Per-frame cost of the fast-path core, through Forwarder.process() (pytest-benchmark).

    python -m pytest bench/test_bench_core.py -q -p no:cacheprovider            # with numbers
    python -m pytest bench/test_bench_core.py -q -p no:cacheprovider --benchmark-disable

What is timed: one Forwarder.process(frame, now) call on
  * one established-flow frame per forwarding mode (nat, dr, tun, fullnat, enat): each mode's
    vector ESTABLISHED from tests/vectors, on the director its vectors run on, after the
    vectors before it (which open the flow);
  * an established-flow UDP frame of 60 bytes (64 on the wire with the FCS), client -> VIP
    (DNAT) and real server -> client (SNAT): tests/vectors/nat.py's UDP_IN and UDP_OUT;
  * a new-flow TCP SYN with a trivial scheduler: every round is a flow the table has not seen,
    so it pays the scheduler call and the connection's creation;
  * a frame the core passes at once (ARP for another address), the floor: the call overhead
    with almost no core.

The first call's result is checked against the vector (frame byte for byte); the rounds after
it only for the verdict, as some outputs change from call to call (TUN's outer IP id).

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
from dataclasses import replace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:               # also runnable as plain `pytest bench/...`
    sys.path.insert(0, str(REPO))

from tests.vectors import dr, enat, fullnat, malformed, nat, tun  # noqa: E402
from tests.vectors import fixtures as fx  # noqa: E402

NOW = fx.NOW
SYN_ROUNDS = 20000
SYN_WARMUP = 200
MODES = {"nat": nat, "dr": dr, "tun": tun, "fullnat": fullnat, "enat": enat}


def director(module, vector):
    """A Forwarder with `module`'s director after the vectors before `vector` (checked), and
    the clock `vector` runs at."""
    i = fx.index_of(module.VECTORS, vector)
    f = fx.provision(replace(module.DIRECTOR, max_conns=1 << 16))
    fx.run(f, module.VECTORS[:i])
    return f, fx.at(i)


def timed(benchmark, f, vector, now):
    """Benchmark f.process on the vector's input; the first result is checked in full."""
    frame = bytes(vector["input"])
    fx.check(f.process(frame, now), vector)
    fx.check(benchmark(f.process, frame, now), vector, frames=False)


@pytest.mark.benchmark(group="fastpath-core-modes")
@pytest.mark.parametrize("mode", MODES)
def test_established_flow(benchmark, mode):
    module = MODES[mode]
    f, now = director(module, module.ESTABLISHED)
    timed(benchmark, f, module.ESTABLISHED, now)


def udp_60(benchmark, vector):
    assert len(bytes(vector["input"])) == len(bytes(vector["expected"])) == 60
    f, now = director(nat, vector)
    timed(benchmark, f, vector, now)


@pytest.mark.benchmark(group="fastpath-core")
def test_established_udp_in(benchmark):
    udp_60(benchmark, nat.UDP_IN)


@pytest.mark.benchmark(group="fastpath-core")
def test_established_udp_out(benchmark):
    udp_60(benchmark, nat.UDP_OUT)


def _csum_replace2(ck, old, new):
    """RFC 1624 eqn. 3 for one 16-bit word."""
    s = (~ck & 0xFFFF) + (~old & 0xFFFF) + new
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frames(n):
    """n SYNs of n different flows (client ports 1024.., one client), checksums patched."""
    base = bytearray(bytes(nat.tcp_in(1024, "S", seq=1, options=[("MSS", 1460)])[0]))
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
        return [nat.TCP_DEST] * len(flows)

    f = fx.provision(replace(nat.DIRECTOR, max_conns=1 << 16), trivial)
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
    vector = fx.named(malformed.BAD, "ARP for another address")
    f = fx.provision(malformed.DIRECTOR)
    timed(benchmark, f, vector, NOW)
