"""Every vector list of tests/vectors through the fixtures: well formed, and the whole list in
one run on one director with every reason counter exact (each mode's own test file runs its
vectors one by one). Then the runner itself: it catches a wrong frame and names the vector."""
import pytest
from scapy.layers.inet import IP

from lb import modes
from tests.vectors import dr, enat, fullnat, malformed, nat, persist, tun
from tests.vectors import fixtures as fx

# name: (director, vectors, reason counters bumped by forwarded frames)
LISTS = {
    "nat": (nat.DIRECTOR, nat.VECTORS, {}),
    "dr": (dr.DIRECTOR, dr.VECTORS, {}),
    "tun": (tun.DIRECTOR, tun.VECTORS, {}),
    "fullnat": (fullnat.DIRECTOR, fullnat.VECTORS, fullnat.SIDE_COUNTS),
    "fullnat-toa-on-ack": (fullnat.TOA_ON_ACK, fullnat.TOA_ON_ACK_VECTORS, {}),
    "enat": (enat.DIRECTOR, enat.VECTORS, {}),
    "persist": (persist.DIRECTOR, persist.VECTORS, {}),
    "malformed": (malformed.DIRECTOR, malformed.VECTORS, {}),
}


@pytest.mark.parametrize("name", LISTS)
def test_vectors_are_well_formed(name):
    fx.well_formed(LISTS[name][1])


@pytest.mark.parametrize("name", LISTS)
def test_a_whole_list_in_one_run_counts_every_reason_once(name):
    director, vectors, side_counts = LISTS[name]
    f = fx.provision(director)
    fx.run(f, vectors)
    assert fx.reason_counts(f) == fx.expected_counts(vectors, side_counts)


def test_every_mode_has_vectors():
    used = {d.mode for director, _, _ in LISTS.values() for d in director.dests}
    assert used == set(fx.FWD_CODES)


def test_the_forwarding_codes_are_the_configurations():
    assert {name: modes.get(name).fwd_code for name in modes.names()} == fx.FWD_CODES


def test_the_runner_names_the_vector_whose_frame_is_wrong():
    wrong = nat.UDP_IN["expected"].copy()
    wrong[IP].ttl += 1
    vectors = [dict(nat.UDP_IN, expected=wrong)]
    named = r"vector 0 'UDP in: DNAT.*IP\.ttl: got 63, expected 64"
    with pytest.raises(AssertionError, match=named):
        fx.run(fx.provision(nat.DIRECTOR), vectors)


def test_the_runner_catches_a_wrong_verdict_and_extra_frames():
    f = fx.provision(nat.DIRECTOR)
    with pytest.raises(AssertionError, match="verdict/reason"):
        fx.run(f, [dict(nat.UDP_IN, verdict="drop", reason="no_dest", expected=None)])
    with pytest.raises(AssertionError, match="1 frames sent, expected 2"):
        fx.run(f, [dict(nat.UDP_IN, expected=[nat.UDP_IN["expected"]] * 2)])


def test_the_scheduler_takes_a_services_destinations_in_turn():
    sched = fx.TurnScheduler(persist.DIRECTOR)
    flows = [(persist.PLAIN, 6, 1, 1, 2, 80), (persist.PINNED, 6, 1, 2, 2, 81),
             (persist.PLAIN, 6, 1, 3, 2, 80), (99, 6, 1, 4, 2, 80)]
    assert sched(flows) == [0, 2, 1, -1]
    assert sched.nflows == 4
