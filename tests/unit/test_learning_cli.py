"""lb trace / lb explain / lb break on bad input: one clear line on stderr, exit 1, and nothing
built (no lab is brought up before the input and the machine have been checked)."""
from __future__ import annotations

import socket

import pytest

from lb.__main__ import main
from lb.lab import topology


@pytest.fixture(autouse=True)
def no_lab(monkeypatch):
    def refuse(self):
        raise AssertionError("a lab was built")
    monkeypatch.setattr(topology.Lab, "up", refuse)


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("argv, says", [
    (["trace", "foo"], "unknown mode 'foo'"),
    (["trace"], "give a mode"),
    (["trace", "nat", "--proto", "sctp"], "unknown protocol"),
    (["trace", "nat", "--lang", "fr"], "unknown language"),
    (["trace", "--scheduler", "fifo"], "unknown scheduler 'fifo'"),
    (["trace", "--scheduler", "wlc", "--weights", "1,x,3"], "bad --weights"),
    (["trace", "--scheduler", "wlc", "--weights", "1,2"], "needs 3 weights"),
    (["explain", "ipvs"], "unknown topic 'ipvs'"),
    (["break", "everything"], "unknown scenario 'everything'"),
])
def test_bad_input_is_one_line(argv, says, capsys):
    assert main(argv) == 1
    assert says in one_line(capsys)


def test_no_root_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["trace", "nat"]) == 1
    assert "needs root" in one_line(capsys)
    assert main(["break", "dr-arp"]) == 1
    assert "needs root" in one_line(capsys)


def test_no_capture_is_one_line(monkeypatch, capsys):
    real = socket.socket

    def no_packet(family=-1, *a, **kw):
        if family == socket.AF_PACKET:
            raise PermissionError(1, "Operation not permitted")
        return real(family, *a, **kw)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setattr(socket, "socket", no_packet)
    assert main(["trace", "dr"]) == 1
    assert "cannot capture" in one_line(capsys)


def test_explain_and_break_list_need_no_root(monkeypatch, capsys):
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    assert main(["explain", "dr"]) == 0
    assert "arp_ignore=1" in capsys.readouterr().out
    assert main(["break", "list"]) == 0
    assert "tun-rp-filter" in capsys.readouterr().out
