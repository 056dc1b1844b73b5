"""Health verdicts through the Director (on the fake fast path): a failing server leaves the
table (or goes to weight 0), the sorry server stands in when the quorum is lost, the quorum
and notify scripts are asked for, and the operator's commands and reloads keep the rule
"the checker owns the presence, the configuration owns the weight"."""
import pytest

from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress
from lb.director.health.probe import Result
from lb.director.keepalived import parse

VIP = "198.18.0.100"
SVC = ("tcp", VIP, 80)
CONF = """\
virtual_server 198.18.0.100 80 {
    lvs_sched rr
    quorum 2
    hysteresis 0
    quorum_up /q/up
    quorum_down /q/down
    sorry_server 198.18.0.50 80
    real_server 198.18.0.11 80 {
        weight 1
        notify_down "/n/down 11"
        notify_up "/n/up 11"
        TCP_CHECK { }
    }
    real_server 198.18.0.12 80 {
        weight 1
        %s
        TCP_CHECK { retry 1 }
    }
}
"""
OK, FAIL = Result(True, "connected"), Result(False, "connect: Connection refused")


class Box:
    text = CONF % ""


@pytest.fixture
def d():
    box = Box()
    director = Director(FakeFastPath(), FakeIngress(), reload_source=lambda: parse(box.text, "k.conf"))
    director.box = box
    director.scripts = []
    director.notify = director.scripts.extend
    director.reconcile()
    assert director.apply({"op": "reload"})["rc"] == 0
    return director


def servers(d):
    svc = d.config.find_service(*SVC)
    return {dest.addr: dest.weight for dest in svc.dests}


def report(d, addr, result):
    return d.health_report(d.health_gen, SVC, (addr, 80), 0, result)


def test_a_failing_server_leaves_the_table_and_comes_back(d):
    assert servers(d) == {"198.18.0.11": 1, "198.18.0.12": 1}
    report(d, "198.18.0.11", FAIL)
    # quorum 2 lost with one server: the sorry server stands in, the alive one is withdrawn
    assert servers(d) == {"198.18.0.50": 1}
    assert d.scripts == [("/n/down", "11"), ("/q/down",)]
    assert d.fastpath.dests and all(s.addr == "198.18.0.50" for _, s in d.applied.dests.values())
    report(d, "198.18.0.11", OK)
    assert servers(d) == {"198.18.0.11": 1, "198.18.0.12": 1}
    assert d.scripts[2:] == [("/n/up", "11"), ("/q/up",)]


def test_retry_delays_the_verdict(d):
    assert report(d, "198.18.0.12", FAIL) is True          # retrying: not down yet
    assert "198.18.0.12" in servers(d)
    assert report(d, "198.18.0.12", FAIL) is False
    assert "198.18.0.12" not in servers(d)


def test_inhibit_on_failure_keeps_the_server_at_weight_0(d):
    d.box.text = (CONF % "inhibit_on_failure").replace("quorum 2", "quorum 1")
    assert d.apply({"op": "reload"})["rc"] == 0
    report(d, "198.18.0.12", FAIL)
    report(d, "198.18.0.12", FAIL)
    assert servers(d) == {"198.18.0.11": 1, "198.18.0.12": 0}
    # the operator's weight is kept for when it is back (the configuration owns the weight)
    assert d.apply({"op": "edit_server", "proto": "tcp", "vip": VIP, "port": 80,
                    "rip": "198.18.0.12", "rport": 80, "fwd": "masq", "weight": 5})["rc"] == 0
    assert servers(d)["198.18.0.12"] == 0
    report(d, "198.18.0.12", OK)
    assert servers(d)["198.18.0.12"] == 5


def test_the_operator_cannot_add_or_delete_a_checked_server(d):
    for op in ("del_server", "add_server"):
        reply = d.apply({"op": op, "proto": "tcp", "vip": VIP, "port": 80,
                         "rip": "198.18.0.11", "rport": 80, "fwd": "masq"})
        assert reply["rc"] == 1 and "managed by its health check" in reply["err"]
    # a server the checks do not know is the operator's
    assert d.apply({"op": "add_server", "proto": "tcp", "vip": VIP, "port": 80,
                    "rip": "198.18.0.13", "rport": 80, "fwd": "masq"})["rc"] == 0


def test_a_reload_keeps_the_verdicts_and_a_bad_one_changes_nothing(d):
    report(d, "198.18.0.11", FAIL)
    gen = d.health_gen
    assert d.apply({"op": "reload"})["rc"] == 0
    assert servers(d) == {"198.18.0.50": 1} and d.health_gen == gen + 1
    d.box.text = CONF.replace("lvs_sched rr", "lvs_sched nosuch") % ""
    reply = d.apply({"op": "reload"})
    assert reply["rc"] == 1 and "k.conf: line 1" in reply["err"], reply
    assert servers(d) == {"198.18.0.50": 1} and d.health_gen == gen + 1
    # a result of the replaced checkers is dropped
    assert d.health_report(gen, SVC, ("198.18.0.11", 80), 0, OK) is False
    assert servers(d) == {"198.18.0.50": 1}


def test_misc_dynamic_weight_and_alpha():
    conf = """virtual_server 198.18.0.100 80 {
        alpha
        real_server 198.18.0.11 80 { weight 4
            MISC_CHECK { misc_path /bin/true
                misc_dynamic } }
    }"""
    d = Director(FakeFastPath(), FakeIngress(), reload_source=lambda: parse(conf))
    scripts = []
    d.notify = scripts.extend
    d.reconcile()
    assert d.apply({"op": "reload"})["rc"] == 0
    assert servers(d) == {}                                   # alpha: down until it passes
    report(d, "198.18.0.11", Result(True, "exit 9", weight=7))
    assert servers(d) == {"198.18.0.11": 7}
    report(d, "198.18.0.11", Result(True, "exit 0"))
    assert servers(d) == {"198.18.0.11": 4}
    text = d.apply({"op": "list_checks"})["out"]
    assert "198.18.0.11:80" in text and "MISC_CHECK" in text and "w 4" in text


def test_the_checks_in_the_figures_metrics_and_top(d):
    from prometheus_client import CollectorRegistry, generate_latest

    from lb.director import figures, metrics, top
    from lb.director.health import listing
    report(d, "198.18.0.12", FAIL)
    report(d, "198.18.0.12", FAIL)
    rows = listing.figures(d.health, d.config)
    class Counters:
        def counters(self):
            return {}
    fig = figures.snapshot(list(d.config.services), Counters(), checks=rows)
    by = {r["server"]: r for r in fig["checks"]}
    assert by["198.18.0.12:80"]["up"] is False and by["198.18.0.11:80"]["up"] is True
    assert by["198.18.0.11:80"]["in_table"] is False          # withdrawn: the sorry server is in
    registry = CollectorRegistry()
    registry.register(metrics.FiguresCollector(lambda: fig))
    text = generate_latest(registry).decode()
    assert 'lbd_check_up{checker="TCP_CHECK",server="198.18.0.12:80",service="TCP 198.18.0.100:80"} 0.0' in text
    assert 'lbd_check_failures_total{checker="TCP_CHECK",server="198.18.0.12:80",service="TCP 198.18.0.100:80"} 2.0' in text
    assert 'lbd_service_quorum_up{service="TCP 198.18.0.100:80"} 0.0' in text
    frame = top.render_text(fig, width=160)
    assert "health checks" in frame and "DOWN" in frame and "198.18.0.12:80" in frame
