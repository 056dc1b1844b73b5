"""lbd's life cycle pieces that need no root: a worker thread that dies stops the daemon, the
command line (--foreground, --metrics, --log-level) and the log format (terminal, journald)."""
import logging
import threading

import pytest

from lb.director import daemon


class Fake:
    """The parts of Lbd that _guarded() uses."""

    def __init__(self):
        self.stopping = threading.Event()
        self.failed = None
        self.stops = 0

    def on_failure(self):
        self.stops += 1


def crash():
    raise ValueError("boom")


def test_a_worker_that_raises_stops_the_daemon(caplog):
    lbd = Fake()
    with caplog.at_level(logging.CRITICAL, logger="lbd"):
        daemon.Lbd._guarded(lbd, "fastpath", crash)
    assert (lbd.failed, lbd.stops) == ("fastpath", 1)
    assert "the fastpath thread died (ValueError: boom): stopping" in caplog.text


def test_a_worker_that_returns_while_lbd_runs_stops_it_too():
    lbd = Fake()
    daemon.Lbd._guarded(lbd, "refresh", lambda: None)
    assert (lbd.failed, lbd.stops) == ("refresh", 1)


def test_a_worker_ending_because_lbd_stops_is_no_failure():
    lbd = Fake()
    lbd.stopping.set()
    daemon.Lbd._guarded(lbd, "fastpath", crash)
    daemon.Lbd._guarded(lbd, "estimator", lambda: None)
    assert (lbd.failed, lbd.stops) == (None, 0)


def test_command_line():
    args = daemon._arguments(["-i", "eth0", "--foreground", "--metrics", "127.0.0.1:9400",
                              "--log-level", "warning", "--config", "/etc/lbd/rules"])
    assert (args.interface, args.foreground, args.metrics, args.log_level, args.config) == \
        (["eth0"], True, "127.0.0.1:9400", "warning", "/etc/lbd/rules")
    assert daemon._arguments(["-i", "eth0"]).metrics is None       # metrics off by default


def test_receive_ring_and_busy_poll_options(capsys):
    args = daemon._arguments(["-i", "eth0"])
    assert (args.rx_ring, args.busy_poll) == ("split", 0)          # the defaults
    assert daemon._arguments(["-i", "eth0", "--busy-poll", "200", "--rx-ring", "v2"]).busy_poll == 200
    with pytest.raises(SystemExit):
        daemon._arguments(["-i", "eth0", "--busy-poll", "1000001"])
    assert "--busy-poll 1000001: microseconds from 0 to 1000000" in capsys.readouterr().err
    from lb._forward import Forwarder
    fwd = Forwarder(max_conns=1024)
    fwd.set_busy_poll(1000000)
    with pytest.raises(ValueError, match="out of range"):
        fwd.set_busy_poll(-1)


def record(level, msg):
    return logging.LogRecord("lbd", level, __file__, 1, msg, (), None)


def test_log_format_on_a_terminal_and_under_journald():
    term, journal = daemon._Formatter(journal=False), daemon._Formatter(journal=True)
    assert term.format(record(logging.INFO, "serving eth0")) == "lbd: serving eth0"
    assert term.format(record(logging.WARNING, "stale table")) == "lbd: warning: stale table"
    assert journal.format(record(logging.ERROR, "nft failed")) == "<3>nft failed"
    assert journal.format(record(logging.DEBUG, "resolve")) == "<7>resolve"


def test_log_level_is_applied():
    try:
        daemon.setup_logging("warning")
        assert daemon.log.level == logging.WARNING and not daemon.log.propagate
    finally:                            # give the logger back to pytest's capture
        daemon.log.handlers[:] = []
        daemon.log.propagate = True
        daemon.log.setLevel(logging.NOTSET)


def test_a_stop_while_starting_is_noted_and_raised_at_the_next_checkpoint():
    """The handler itself never raises (an exception from it could land in a finalizer and be
    swallowed); check() raises Stopping, named after the signal, once one came."""
    import os
    import signal
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        daemon._Signals.stop, daemon._Signals.hup = None, False
        daemon._Signals.starting()
        daemon._Signals.check()                     # nothing came: no stop
        os.kill(os.getpid(), signal.SIGHUP)
        os.kill(os.getpid(), signal.SIGTERM)        # runs the handler here: it must not raise
        os.kill(os.getpid(), signal.SIGINT)         # a second one keeps the first one's name
        assert daemon._Signals.hup
        with pytest.raises(daemon.Stopping, match="SIGTERM"):
            daemon._Signals.check()
    finally:
        daemon._Signals.stop, daemon._Signals.hup = None, False
        for s, h in saved.items():
            signal.signal(s, h)


def test_uoa_datagrams_option(capsys):
    assert daemon._arguments(["-i", "eth0"]).uoa_datagrams == 3                 # DPVS's default
    assert daemon._arguments(["-i", "eth0", "--uoa-datagrams", "0"]).uoa_datagrams == 0
    with pytest.raises(SystemExit):
        daemon._arguments(["-i", "eth0", "--uoa-datagrams", "256"])
    assert "--uoa-datagrams 256: from 0 to 255" in capsys.readouterr().err


def test_lport_sweep_option(capsys):
    assert daemon._arguments(["-i", "eth0"]).lport_sweep == 60.0            # TCP_TIMEWAIT_LEN
    assert daemon._arguments(["-i", "eth0", "--lport-sweep", "0"]).lport_sweep == 0
    with pytest.raises(SystemExit):
        daemon._arguments(["-i", "eth0", "--lport-sweep", "-5"])
    assert "--lport-sweep -5.0: seconds from 0 to 86400" in capsys.readouterr().err
