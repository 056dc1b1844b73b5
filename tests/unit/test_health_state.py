"""The health state machines alone (lb.director.health.state): retry, alpha, quorum with
hysteresis (keepalived's update_quorum_state), omega, and a reload keeping verdicts."""
from lb.director.health.probe import Result
from lb.director.health.spec import Check, HealthConfig, Server, VirtualServer
from lb.director.health.state import HealthState

KEY = ("tcp", "198.18.0.100", 80)
OK, FAIL = Result(True, "ok"), Result(False, "refused")


def state(quorum=2, hysteresis=1, alpha=False, omega=False, checks=(Check("TCP_CHECK"),)):
    servers = tuple(Server(f"198.18.0.1{i}", 80, checks=checks, alpha=alpha,
                           notify_down=(f"down{i}",)) for i in (1, 2, 3))
    vs = VirtualServer(KEY, servers, quorum=quorum, hysteresis=hysteresis, quorum_up=("qup",),
                       quorum_down=("qdown",), omega=omega)
    return HealthState(HealthConfig({KEY: vs}))


def record(h, i, result):
    return h.record(KEY, (f"198.18.0.1{i}", 80), 0, result, 0.0)


def test_quorum_with_hysteresis():
    h = state()             # 3 alive, quorum 2, hysteresis 1: lost below 1, gained at 3
    svc = h.services[KEY]
    assert record(h, 1, FAIL) == (True, [("down1",)]) and svc.quorum_up
    assert record(h, 2, FAIL)[1] == [("down2",)] and svc.quorum_up       # weight 1, not < 1
    assert record(h, 3, FAIL)[1] == [("down3",), ("qdown",)] and not svc.quorum_up
    record(h, 1, OK)
    record(h, 2, OK)
    assert not svc.quorum_up                                            # 2 < 3
    assert record(h, 3, OK)[1] == [("qup",)] and svc.quorum_up


def test_alpha_starts_down_and_the_quorum_lost_at_once():
    h = state(quorum=1, hysteresis=0, alpha=True)
    assert not h.services[KEY].quorum_up and h.take_pending() == [("qdown",)]
    assert all(not s.alive for s in h.services[KEY].servers.values())


def test_retry_and_a_reload_that_keeps_the_verdicts():
    h = state(checks=(Check("TCP_CHECK", retry=2),))
    server = h.services[KEY].servers[("198.18.0.11", 80)]
    for _ in range(2):
        assert record(h, 1, FAIL) == (False, []) and server.checks[0].retrying(2)
    assert record(h, 1, FAIL)[0] and not server.alive
    again = HealthState(h.config, previous=h)
    assert not again.services[KEY].servers[("198.18.0.11", 80)].alive
    changed = HealthState(HealthConfig({KEY: VirtualServer(KEY, (Server("198.18.0.11", 80,
                          checks=(Check("TCP_CHECK", retry=5),)),))}), previous=h)
    assert changed.services[KEY].servers[("198.18.0.11", 80)].alive    # new checks: afresh


def test_omega_runs_the_down_notifiers_of_what_is_up():
    h = state(omega=True)
    record(h, 1, FAIL)
    assert sorted(h.omega_scripts()) == [("down2",), ("down3",), ("qdown",)]
    assert state(omega=False).omega_scripts() == []
