"""The lab's director process: :class:`LabDirector` runs lbd (lb.director.daemon) in the lab's
director namespace and drives it with lbadm (lb.director.cli) over its socket."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from lb.lab.net import LabError

LBD_SOCKET_DIR = Path("/run/lbd")


class LabDirector:
    """lbd running in `lab`'s director namespace (a lb.lab.topology.Lab), driven with lbadm."""

    def __init__(self, lab, socket_path: str | None = None, extra_args=(), role: str = "director"):
        self.lab = lab
        self.role = role            # the namespace it runs in ("director2": Lab(backup_director=True))
        self.socket = str(socket_path or LBD_SOCKET_DIR / f"{lab.prefix}{'' if role == 'director' else '-' + role}.sock")
        self.extra_args = list(extra_args)
        self.proc = None

    @property
    def _log_name(self) -> str:
        return "lbd" if self.role == "director" else f"lbd-{self.role}"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self, timeout: float = 15.0) -> "LabDirector":
        """Start the daemon and wait until ``lb.director.cli -L -n`` answers (at most `timeout` s)."""
        LBD_SOCKET_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "lb.director.daemon", "--interface", self.lab.director_ifname,
                "--socket", self.socket, *self.extra_args]
        with open(self.lab.logfile(self._log_name), "wb") as log:
            self.proc = self.lab.popen(self.role, argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError(f"lb.director.daemon exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.socket) and self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise LabError(f"lb.director.daemon not answering on {self.socket} after {timeout}s:\n{self.log_tail()}")

    def _answers(self) -> bool:
        try:
            return self.lbadm("-L", "-n", timeout=5).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def lbadm(self, *args, timeout: float = 10.0) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "lb.director.cli", "--socket", self.socket, *map(str, args)]
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.lab.env())

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.lab.logfile(self._log_name).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM by PID, SIGKILL after `timeout`; removes a socket file left behind."""
        if self.proc is not None and self.proc.pid in self.lab._procs:
            self.lab.stop_process(self.proc.pid, timeout)
        with contextlib.suppress(OSError):
            os.unlink(self.socket)
