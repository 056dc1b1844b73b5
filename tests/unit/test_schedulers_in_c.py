"""lc, wlc, sed and nq decide in C (Forwarder.least_loaded) when they can; the C decision must
be the Python one, for any weights and live counters."""
from hypothesis import given, settings, strategies as st

from lb._forward import Forwarder
from lb.director.model import RealServer, Service
from tests.unit.schedfakes import FLOW, CounterViews

servers = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 6), st.integers(0, 600)),
                   min_size=1, max_size=40)


def service(name, rows, stats):
    svc = Service("tcp", "198.18.0.100", 80, name)
    svc.dests = [RealServer(f"10.0.0.{i}", 80, w, slot=i, stats=stats) for i, (w, _, _) in enumerate(rows)]
    svc.dests_changed()
    return svc


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["lc", "wlc", "sed", "nq"]), rows=servers)
def test_c_and_python_agree(name, rows):
    fake, fwd = CounterViews(64), Forwarder(max_conns=16)
    for i, (_, active, inactive) in enumerate(rows):
        fake.active[i], fake.inactive[i] = active, inactive
        fwd.load_counters(i, active, inactive)
    in_python, in_c = service(name, rows, fake), service(name, rows, fwd)
    assert in_c.sched.in_c is not None and in_python.sched.in_c is None
    want, got = in_python.schedule(FLOW), in_c.schedule(FLOW)
    assert (want and want.addr) == (got and got.addr)


def test_a_threshold_sends_the_decision_back_to_python():
    fwd = Forwarder(max_conns=16)
    svc = service("wlc", [(1, 0, 0), (1, 0, 0)], fwd)
    svc.dests[0].u_threshold = 1
    svc.dests_changed()
    fwd.load_counters(0, 0, 1)                  # A at its limit: OVERLOAD, skipped
    assert svc.schedule(FLOW).addr == "10.0.0.1"
