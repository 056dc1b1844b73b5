"""Every built-in scheduler's C decision against its Python class, which stays the definition.

Hypothesis drives both with one random sequence of servers, weights, thresholds, edits, live
loads and flows: the Python side is a Service with its scheduler (lb/director/model.py), the C
side the program lb.schedulers.program.build() makes of it, swapped into a real Forwarder after
every edit as the reconcile step does. Both read the same live counters (the Forwarder's), and
every pick must be the same server -- including OVERLOAD from -x/-y, which each side keeps on
its own (Python in RealServer.flags, C per destination slot).
"""
import dataclasses

import pytest
from hypothesis import given, settings, strategies as st

from lb import schedulers
from lb._forward import Forwarder
from lb.director.model import OVERLOAD, Flow, RealServer, Service
from lb.schedulers import program
from lb.schedulers.twos import SplitMix64

IN_C = ["rr", "wrr", "lc", "wlc", "sed", "nq", "fo", "ovf", "twos", "sh", "dh", "mh"]
VIP = "198.18.0.100"
SVC = 0

weights = st.sampled_from([0, 1, 2, 2, 3, 4, 4, 6])     # shared factors: wrr's gcd > 1
loads = st.integers(0, 9)                   # near the weights and thresholds, where rules bite
steps = st.lists(st.one_of(
    st.tuples(st.just("flow"), st.integers(0, 2**32 - 1), st.integers(0, 65535),
              st.integers(0, 3)),
    st.tuples(st.just("flow"), st.integers(0, 2**32 - 1), st.integers(0, 65535),
              st.integers(0, 3)),                       # flows twice as often as anything else
    st.tuples(st.just("weight"), st.integers(0, 63), weights),
    st.tuples(st.just("thresholds"), st.integers(0, 63), st.integers(0, 8), st.integers(0, 8)),
    st.tuples(st.just("add"), weights, st.integers(0, 8)),
    st.tuples(st.just("delete"), st.integers(0, 63)),
    st.tuples(st.just("load"), st.integers(0, 63), loads, loads),
    st.tuples(st.just("establish"), st.integers(0, 63)),
), min_size=5, max_size=80)


class Pair:
    """One service twice: in Python and as a C program in a Forwarder."""

    def __init__(self, name, flags, rows, seed):
        self.fwd = Forwarder(max_conns=16)
        self.fwd.set_service(SVC, 6, VIP, 80)
        self.svc = Service("tcp", VIP, 80, name, sched_flags=flags)
        self.next_slot = 0
        for w, u in rows:
            self.svc.dests.append(self._server(w, u))
        self.svc.dests_changed()
        if name == "twos":
            self.svc.sched.rng = SplitMix64(seed)
        self.push(rng=seed if name == "twos" else None)

    def _server(self, weight, upper):
        slot, self.next_slot = self.next_slot, self.next_slot + 1
        self.fwd.set_dest(slot, SVC, f"10.0.{slot // 250}.{slot % 250 + 1}", 80, reset=True)
        return RealServer(f"10.0.{slot // 250}.{slot % 250 + 1}", 80, weight, slot=slot,
                          stats=self.fwd, u_threshold=upper)

    def push(self, rng=None):
        dests = self.svc.dests
        made = program.build(self.svc.scheduler, self.svc.sched_flags,
                             [program.spec_of(d) for d in dests], [d.slot for d in dests])
        if rng is not None:
            made = dataclasses.replace(made, rng=rng)
        self.fwd.set_scheduler(SVC, made)

    def dest(self, k):
        return self.svc.dests[k % len(self.svc.dests)] if self.svc.dests else None

    def step(self, op, *args):
        if op == "flow":
            caddr, cport, vhost = args
            vaddr = f"198.18.1.{vhost}"
            want = self.svc.schedule(Flow("tcp", caddr, cport, vaddr, 80))
            got = self.fwd.pick(SVC, caddr, cport, vaddr, 80)
            assert got == (want.slot if want is not None else -1), \
                f"C picked slot {got}, Python {want}"
            if want is not None:            # the connection is bound: one more InActConn
                c = self.fwd.dest_counters(want.slot)
                self.fwd.load_counters(want.slot, c["active"], c["inactive"] + 1)
            return
        dest = self.dest(args[0]) if op != "add" else None
        if op == "weight" and dest is not None:
            if args[1]:
                dest.last_weight = args[1]
            dest.weight = args[1]
        elif op == "thresholds" and dest is not None:
            upper, lower = args[1], min(args[2], args[1])
            if upper == 0 or upper > dest.u_threshold:      # Config._edit_server's rule
                dest.flags.discard(OVERLOAD)
            dest.u_threshold, dest.l_threshold = upper, lower
        elif op == "add":
            self.svc.dests.append(self._server(*args))
        elif op == "delete" and dest is not None:
            self.svc.dests.remove(dest)
        elif op == "load" and dest is not None:
            self.fwd.load_counters(dest.slot, args[1], args[2])
            return                          # counters are live: no program change
        elif op == "establish" and dest is not None:
            c = self.fwd.dest_counters(dest.slot)
            if c["inactive"]:
                self.fwd.load_counters(dest.slot, c["active"] + 1, c["inactive"] - 1)
            return
        else:
            return
        self.svc.dests_changed()
        self.push()


@pytest.mark.parametrize("name", IN_C)
@settings(max_examples=100, deadline=None)
@given(flags=st.sets(st.sampled_from(["fallback", "port"])),
       rows=st.lists(st.tuples(weights, st.integers(0, 8)), min_size=1, max_size=8), seed=st.integers(0, 2**64 - 1),
       ops=steps)
def test_c_decides_as_the_python_class(name, flags, rows, seed, ops):
    own = {f"{name}-{f}" for f in flags} & set(schedulers.SCHED_FLAGS.get(name, ()))
    pair = Pair(name, own, rows, seed)
    for op in ops:
        pair.step(*op)


# Cases a random walk reaches only now and then, written out (each a kernel rule).
SCENARIOS = {
    "rr: the last pick deleted, the walk goes on from the one before it (ip_vs_rr_del_dest)":
        ("rr", [(1, 0)] * 4, [("flow", 1, 1, 0)] * 2 + [("delete", 1), ("flow", 1, 1, 0)]),
    "rr: the last pick, at the end of the list, deleted":
        ("rr", [(1, 0)] * 3, [("flow", 1, 1, 0)] * 3 + [("delete", 2), ("flow", 1, 1, 0)]),
    "wrr: an edit with gcd > 1 keeps cw in step (ip_vs_wrr_dest_changed)":
        ("wrr", [(6, 0), (4, 0), (2, 0)], [("flow", 1, 1, 0)] * 2 + [("weight", 2, 4)]
         + [("flow", 1, 1, 0)] * 8),
    "ovf: a server at exactly its weight in active connections still takes one":
        ("ovf", [(2, 0), (1, 0)], [("load", 0, 2, 0), ("flow", 1, 1, 0), ("load", 0, 3, 0),
                                   ("flow", 1, 1, 0)]),
    "-x/-y: OVERLOAD at -x, cleared only below 3/4 of it when -y is 0":
        ("wlc", [(1, 4), (1, 0)], [("load", 1, 0, 9), ("load", 0, 0, 4), ("flow", 1, 1, 0),
                                   ("load", 0, 0, 3), ("flow", 1, 1, 0), ("load", 0, 0, 2),
                                   ("flow", 1, 1, 0)]),
    "-x raised by an edit lifts OVERLOAD at once":
        ("lc", [(1, 2), (1, 0)], [("load", 0, 0, 2), ("load", 1, 0, 9), ("flow", 1, 1, 0),
                                  ("thresholds", 0, 5, 0), ("flow", 1, 1, 0)]),
}


@pytest.mark.parametrize("case", SCENARIOS)
def test_scenario(case):
    name, rows, ops = SCENARIOS[case]
    pair = Pair(name, set(), rows, seed=1)
    for op in ops:
        pair.step(*op)


@pytest.mark.parametrize("name", IN_C)
def test_many_servers_and_flows(name):
    # The same, with a fixed larger case: 40 servers of mixed weights, 3 000 flows, loads moving.
    pair = Pair(name, set(schedulers.SCHED_FLAGS.get(name, ())), [(k % 5, 0) for k in range(40)],
                seed=7)
    rng = SplitMix64(11)
    for k in range(3000):
        pair.step("flow", rng.next() & 0xFFFFFFFF, rng.randrange(65536), rng.randrange(4))
        if k % 97 == 0:
            pair.step("establish", rng.randrange(40))
        if k % 500 == 0:
            pair.step("weight", rng.randrange(40), rng.randrange(6))


def test_every_built_in_but_the_locality_ones_has_a_c_decision():
    # lblc and lblcr decide in Python (their reason: lb/schedulers/locality.py c_program).
    kinds = program.kinds()
    spec = [program.ServerSpec("10.0.0.1", 80, 1, 1, 0, 0)]
    made = {name: program.build(name, (), spec, [0]).kind for name in schedulers.names()}
    assert {n for n, k in made.items() if k == kinds["py"]} == {"lblc", "lblcr"}
    assert set(IN_C) == {n for n, k in made.items() if k != kinds["py"]}
