"""lbd --config FILE: loaded at start, re-read on SIGHUP and lbadm --reload, refused whole when
bad; lbadm -S output is a file lbd starts from with the same table; traffic flows meanwhile."""
from __future__ import annotations

import os
import signal
import time

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.net import LabError
from lb.lab.servers import pattern_sha256
from tests.integration.helpers import VIP, listing, many_gets, ok, rate_limited_download, wait_until

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


def test_a_download_survives_reloads_good_bad_and_half_good(lab, tmp_path):
    # A rate-limited reader keeps one connection open across the reloads; the file keeps its
    # server in every version, so its connection must go on untouched.
    path = tmp_path / "lbd.rules"
    path.write_text(RULES)
    n = 6 * 1000 * 1000
    with LabDirector(lab, extra_args=["--config", str(path)]) as d:
        download = rate_limited_download(lab, n, 2e6)
        # The reloads must come while the download runs: wait until lbd counts it ESTABLISHED.
        wait_until(lambda: any(l.split()[4] == "1" for l in listing(d).splitlines()
                               if l.startswith("  -> 198.18.0.1")), 10, "the download is established")
        path.write_text(RULES + f"-A -u {VIP}:53 -s rr\n")                          # good
        ok(d.lbadm("--reload"))
        path.write_text(RULES + "-A -t 198.18.0.100:80 -s nosuch\n")                # bad
        assert d.lbadm("--reload").returncode == 1
        path.write_text(RULES + f"-A -u {VIP}:54 -s rr\n-a -u {VIP}:55 -r 198.18.0.11\n")  # half
        assert d.lbadm("--reload").returncode == 1
        assert saved(d) == RULES + f"-A -u {VIP}:53 -s rr\n"
        out, err = download.communicate(timeout=60)
        assert download.returncode == 0 and out.split() == [pattern_sha256(n), str(n)], err
