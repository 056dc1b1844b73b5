"""lb.modes' registry: the five modes by their configuration and short names, and a mode
registered later found by both (lb/modes/__init__.py)."""
import pytest

from lb import modes
from lb.modes.base import ForwardingMode


def test_the_five_modes_by_name_and_short_name():
    assert modes.names() == ["enat", "fullnat", "masq", "route", "tunnel"]
    assert [modes.by_short(s).name for s in ("nat", "dr", "tun", "fullnat", "enat")] == \
        ["masq", "route", "tunnel", "fullnat", "enat"]
    assert sorted(modes.get(n).fwd_code for n in modes.names()) == [0, 1, 2, 3, 4]


def test_a_registered_mode_is_found_and_an_unknown_one_is_a_key_error():
    class Probe(ForwardingMode):
        name, short = "probe-mode", "probe"
    probe = Probe()
    modes.register(probe)
    try:
        assert modes.get("probe-mode") is probe and modes.by_short("probe") is probe
        assert "probe-mode" in modes.names()
    finally:
        del modes._MODES["probe-mode"]
    with pytest.raises(KeyError):
        modes.get("probe-mode")


def test_a_fwmark_service_answers_and_replies_on_each_of_its_keys():
    from lb.director.model import FWM, RealServer, Service
    from lb.modes.base import reply_ports, service_drops, service_keys
    svc = Service(FWM, "0.0.0.0", 0, "rr", fwmark=1)
    svc.match = [("tcp", "198.18.0.100", 80), ("udp", "198.18.0.100", 53)]
    assert service_keys(svc) == svc.match          # not its placeholder (fwm, 0.0.0.0, 0)
    assert service_drops(svc) == [("svc_tcp", ("198.18.0.100", 80)), ("svc_udp", ("198.18.0.100", 53))]
    assert reply_ports(svc, RealServer("198.18.0.11", 0, 1)) == [("tcp", 80), ("udp", 53)]
    assert reply_ports(svc, RealServer("198.18.0.12", 8080, 1)) == [("tcp", 8080), ("udp", 8080)]
