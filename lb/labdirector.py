"""Processes the lab runs for the tests and ``lb demo``: :class:`Director`, lb.daemon in the
director namespace driven with lb.cli, and :func:`udp_echo`, the UDP echo bound to one VIP
(``python -m lb.lab udp-echo``). Both are re-exported by :mod:`lb.lab`.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from lb.labnet import LabError

if TYPE_CHECKING:
    from lb.lab import Lab

LBD_SOCKET_DIR = Path("/run/lbd")


class Director:
    """lb.daemon running in the lab's director namespace, driven with lb.cli over its socket."""

    def __init__(self, lab: Lab, socket_path: str | None = None, extra_args=()):
        self.lab = lab
        self.socket = str(socket_path or LBD_SOCKET_DIR / f"{lab.prefix}.sock")
        self.extra_args = list(extra_args)
        self.proc = None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, timeout: float = 15.0) -> "Director":
        """Start the daemon and wait until ``lb.cli -L -n`` answers (at most `timeout` s)."""
        LBD_SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "lb.daemon", "--interface", self.lab.director_ifname,
                "--socket", self.socket, *self.extra_args]
        with open(self.lab.logfile("lbd"), "wb") as log:
            self.proc = self.lab.popen("director", argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"lb.daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.socket) and self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise LabError(f"lb.daemon not answering on {self.socket} after {timeout}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            return self.lbadm("-L", "-n", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def lbadm(self, *args, timeout: float = 10.0) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "lb.cli", "--socket", self.socket, *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.lab.env())

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.lab.logfile("lbd").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`; removes a socket file left behind."""
        if self.proc is not None and self.proc.pid in self.lab._procs:
            self.lab.stop_process(self.proc.pid, timeout)
        with contextlib.suppress(OSError):
            os.unlink(self.socket)


def udp_echo(name: str, host: str, port: int) -> int:
    """The lab servers' UDP echo on one address only (``python -m lb.lab udp-echo NAME HOST PORT``).

    Bound to a VIP it answers from the VIP, as DR and TUN need. (lb.labservers --host would
    also start an HTTP server, whose bind does a reverse DNS lookup of the address: 10 s in
    the lab, where no nameserver answers.)
    """
    import selectors
    from lb.labservers import make_udp, udp_echo_once
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sock = make_udp(port, host)
    print("ready", flush=True)
    with sock, selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            if sel.select(timeout=0.2):
                udp_echo_once(sock, name)
    return 0
