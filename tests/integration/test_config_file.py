"""lbd --config FILE: loaded at start, re-read on SIGHUP and lbadm --reload, refused whole when
bad; lbadm -S output is a file lbd starts from with the same table; traffic flows meanwhile."""
from __future__ import annotations

import os
import signal
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.net import LabError
from tests.integration.helpers import VIP, many_gets, ok

RULES = f"""\
-A -t {VIP}:80 -s rr
-a -t {VIP}:80 -r 198.18.0.11:80 -m -w 1
-a -t {VIP}:80 -r 198.18.0.12:80 -m -w 1
"""


def saved(director) -> str:
    return ok(director.lbadm("-S", "-n")).stdout


def wait_for(director, text: str, present: bool = True, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = saved(director)
        if (text in out) == present or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_config_file_start_reload_and_refusal(lab, tmp_path):
    path = tmp_path / "lbd.rules"
    path.write_text(RULES)
    with LabDirector(lab, extra_args=["--config", str(path)]) as d:
        assert saved(d) == RULES
        assert set(many_gets(lab, 4)["seen"]) == {"rs1", "rs2"}
        path.write_text(RULES + f"-a -t {VIP}:80 -r 198.18.0.13:80 -m -w 1\n")
        os.kill(d.pid, signal.SIGHUP)                   # systemctl reload
        assert "198.18.0.13:80" in wait_for(d, "198.18.0.13:80")
        assert set(many_gets(lab, 6)["seen"]) == {"rs1", "rs2", "rs3"}
        good = saved(d)
        path.write_text(RULES + "-a -t 198.18.0.250:80 -r 198.18.0.13:80 -m\n")
        r = d.lbadm("--reload")
        assert r.returncode == 1
        assert r.stderr == f"lbadm: {path}: line 4: no such service TCP 198.18.0.250:80\n"
        os.kill(d.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reload of" not in d.log_tail() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "refused, configuration unchanged" in d.log_tail()
        assert saved(d) == good
        path.write_text(RULES)
        ok(d.lbadm("--reload"))
        assert saved(d) == RULES
    # What -S wrote is a file lbd starts from, with the same table.
    path.write_text(good)
    with LabDirector(lab, extra_args=["--config", str(path)]) as d:
        assert saved(d) == good


def test_a_bad_config_file_stops_the_start(lab, tmp_path):
    path = tmp_path / "lbd.rules"
    path.write_text("-A -t 198.18.0.100:80 -s nosuch\n")
    d = LabDirector(lab, extra_args=["--config", str(path)])
    with pytest.raises(LabError, match=r"exited with 1") as e:
        d.start(timeout=10)
    assert f"lbd: {path}: line 1: unknown scheduler 'nosuch'" in str(e.value)
    d.stop()
