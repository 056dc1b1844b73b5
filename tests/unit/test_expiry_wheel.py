"""Expiry by the timer wheel (fastpath/expiry.pxi): an entry goes within a tick of its timeout,
the work of a run is what is due (not the table), re-armed and shortened timers."""
from dataclasses import replace

import pytest

from tests.vectors import fixtures as fx
from tests.vectors import nat as V

NOW = V.NOW


def nat(max_conns=4096):
    return fx.provision(replace(V.DIRECTOR, max_conns=max_conns))


def opened(f, ports, now=NOW, established=False):
    for p in ports:
        assert f.process(bytes(V.tcp_in(p, "S")[0]), now=now)[0] == "forward"
        if established:
            f.process(bytes(V.tcp_out(p, "SA")[0]), now=now)
            f.process(bytes(V.tcp_in(p, "A")[0]), now=now)


def test_an_entry_goes_at_its_timeout_not_before():
    f = nat()
    f.set_timeout("SYN_RECV", 2)
    opened(f, range(40000, 40100))
    f.expire(NOW + 1.9)
    assert f.counters()["conns"] == 100
    f.expire(NOW + 2.0)
    assert f.counters()["conns"] == 0 and f.counters()["expired_conns"] == 100


def test_work_is_what_is_due_not_the_table():
    """1000 ESTABLISHED connections (900 s) and 10 embryos (2 s). The established ones were
    filed under their SYN's 2 s and re-armed in place (no list work per packet): the run at
    their old tick looks at each once and refiles it; later runs look at nothing until the
    next embryos are due."""
    f = nat()
    f.set_timeout("SYN_RECV", 2)
    opened(f, range(30000, 31000), established=True)
    assert f.expire(NOW + 1) == 0
    assert f.expire(NOW + 3) == 1000 and f.counters()["conns"] == 1000
    opened(f, range(40000, 40010), now=NOW + 4)
    assert f.expire(NOW + 5) == 0
    assert f.expire(NOW + 7) == 10
    assert f.counters()["conns"] == 1000
    assert f.expire(NOW + 100) == 0


def test_a_rearmed_timer_is_looked_at_once_and_refiled():
    f = nat()
    opened(f, [40000], established=True)
    f.set_timeout("ESTABLISHED", 5)
    f.process(bytes(V.tcp_in(40000, "PA", b"x")[0]), now=NOW + 1)    # re-armed: now NOW + 6
    for t in range(4):                       # the original tick (NOW + 900 s) is far away
        f.process(bytes(V.tcp_in(40000, "PA", b"x")[0]), now=NOW + 2 + t)
    f.expire(NOW + 9.9)
    assert f.counters()["conns"] == 1
    f.expire(NOW + 10)
    assert f.counters()["conns"] == 0


def test_a_shorter_timer_moves_the_entry_earlier():
    """ESTABLISHED (900 s) then RST: CLOSE's 10 s, freed at 10 s, not at 900."""
    f = nat()
    opened(f, [40000], established=True)
    f.process(bytes(V.tcp_in(40000, "R")[0]), now=NOW + 1)
    f.expire(NOW + 10.9)
    assert f.counters()["conns"] == 1
    f.expire(NOW + 11)
    assert f.counters()["conns"] == 0


def test_long_timeouts_past_a_turn_of_the_wheel():
    """A UDP connection with a 600 s timeout (over the wheel's 262 s turn) goes at 600 s."""
    f = nat()
    f.set_timeout("UDP", 600)
    assert f.process(bytes(V.udp_in(5000, b"x")[0]), now=NOW)[0] == "forward"
    for t in range(1, 600, 50):
        f.expire(NOW + t)
    assert f.counters()["conns"] == 1
    f.expire(NOW + 600)
    assert f.counters()["conns"] == 0


def test_expire_after_a_long_jump_in_time():
    f = nat()
    opened(f, range(40000, 40050), established=True)
    f.expire(NOW + 10 * 86400)
    assert f.counters()["conns"] == 0


@pytest.mark.parametrize("value", [-1, -0.001, 1e12])
def test_set_timeout_refuses_out_of_range(value):
    f = nat()
    with pytest.raises(ValueError, match="out of range"):
        f.set_timeout("ESTABLISHED", value)
    with pytest.raises(ValueError, match="no connection state"):
        f.set_timeout("NOPE", 1)
