"""What the real-server packet daemons (:mod:`lb.realserver.decap`, :mod:`lb.realserver.enat_agent`) share.

- IPv4 header checksums (RFC 1071).
- Their TUN device: :func:`open_tun` (IFF_TUN | IFF_NO_PI, not persistent, so the device and
  what hangs on it go away with the file descriptor), :func:`disable_ipv6`, :func:`device_exists`.
- The daemon shell: :class:`Daemon` (stop flag, stats file written as JSON at most every
  0.2 s while the counters change and at exit, a select loop that signals wake through a
  pipe) and :func:`serve`, the body of each daemon's ``main()``: SIGTERM/SIGINT stop it,
  ``ready ...`` on stdout once the device is up (a pipe on stdout is then detached, so an
  undrained pipe never blocks us), ``<name>: stopped; counters: ...`` on stderr at exit.
- Watching what it serves (:class:`lb.netwatch.LinkWatch`, as lbd does): when its TUN device
  is deleted, or the name of the network namespace it runs in (``ip netns delete`` leaves the
  namespace alive while a process is in it, so a daemon would otherwise serve nobody there
  forever), it says why on stderr and exits with :data:`EXIT_GONE`.
"""
from __future__ import annotations

import fcntl
import json
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path

from lb.netwatch import LinkWatch, link_state, own_netns

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000      # every read and write starts with a struct virtio_net_hdr (10 bytes)
FLUSH_INTERVAL = 0.2       # seconds between stats-file writes while counters change
WATCH_INTERVAL = 0.5       # seconds between looks at the device and the namespace
EXIT_GONE = 3              # exit status: its device or its namespace was deleted


# -- the TUN device ----------------------------------------------------------------------------

def open_tun(ifname: str, nonblock: bool = False, vnet_hdr: bool = False) -> int:
    """Create the TUN device `ifname` in this network namespace; returns its fd. `vnet_hdr`: writes
    carry a virtio_net_hdr, so one write can be a TSO aggregate (tun_get_user())."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblock else 0))
    flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def disable_ipv6(ifname: str) -> None:
    """No link-local address, router solicitations or MLD into a fd that does not want them."""
    v6 = Path(f"/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6")
    if v6.exists():
        v6.write_text("1\n")


def device_exists(ifname: str) -> bool:
    return Path(f"/sys/class/net/{ifname}").exists() or Path(f"/proc/sys/net/ipv4/conf/{ifname}").exists()


def rp_filter(dev: str) -> int:
    """net.ipv4.conf.DEV.rp_filter (0 when it cannot be read)."""
    try:
        return int(Path(f"/proc/sys/net/ipv4/conf/{dev}/rp_filter").read_text())
    except (OSError, ValueError):
        return 0


# -- the daemon shell ----------------------------------------------------------------------------

class Daemon:
    """Base of a daemon. A subclass gives ``open()`` and ``close()`` (its device and sockets),
    ``sources()`` (what the loop waits on), ``step(ready)`` (one turn of the loop; `ready`: the
    fds select found readable, maybe none), ``stats()`` (the stats file's JSON object) and
    ``status_line()`` (the counters said at exit); it sets ``_dirty`` when counters change."""

    name: str                # "lb.realserver.decap", ...: what the lines on stderr start with

    def __init__(self, vips: list, ifname: str, stats_file: str | None):
        self.vips, self.ifname = vips, ifname
        self.stats_file = Path(stats_file) if stats_file else None
        self.stopping = False
        self._dirty, self._flushed = True, 0.0
        self.watch: LinkWatch | None = None       # set by watch_from_here() once the device is up
        self.gone: str | None = None              # why it stopped on its own, if it did
        self.recheck = False                      # a read said the device may be gone: look now
        self._watched = 0.0
        self.ready_note = ""                      # words for the ready line, set by open()

    def warning(self) -> str | None:
        """Said on stderr once the device is up, when the host will get in the way."""
        return None

    def watch_from_here(self) -> None:
        """Watch the TUN device as it is now (its ifindex) and the namespace we are in."""
        self.watch = LinkWatch(ifnames=[self.ifname], indexes=[socket.if_nametoindex(self.ifname)],
                               netns=own_netns(), who=self.name)

    def look(self, now: float, states=link_state) -> None:
        """Every WATCH_INTERVAL (or at once after a failed read): a deleted device or namespace
        stops the loop, with the reason in `gone` and on stderr."""
        if self.watch is None or not (self.recheck or now - self._watched >= WATCH_INTERVAL):
            return
        self.recheck, self._watched = False, now
        for event, name in self.watch.check(states):
            what = "was deleted" if event == "gone" else f"is {event}"
            print(f"{self.name}: device {name} {what}", file=sys.stderr, flush=True)
        reason = self.watch.fatal()
        if reason:
            self.gone = reason
            self.stopping = True
            print(f"{self.name}: {reason}: stopping", file=sys.stderr, flush=True)

    def run(self) -> None:
        """Loop until stop() (a signal handler) or look() finds the device or namespace gone;
        signals wake the select through a pipe."""
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        old_wakeup = signal.set_wakeup_fd(wfd)
        try:
            with selectors.DefaultSelector() as sel:
                for source in (*self.sources(), rfd):
                    sel.register(source, selectors.EVENT_READ)
                while not self.stopping:
                    ready = {key.fd for key, _ in sel.select(FLUSH_INTERVAL)}
                    if rfd in ready:
                        drain_pipe(rfd)
                    self.step(ready)
                    self.look(time.monotonic())
        finally:
            signal.set_wakeup_fd(old_wakeup)
            os.close(rfd)
            os.close(wfd)
            self.flush(force=True)

    def stop(self, *_):
        self.stopping = True

    def flush(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.stats_file is None or not (force or (self._dirty and now - self._flushed >= FLUSH_INTERVAL)):
            return
        tmp = self.stats_file.with_name(self.stats_file.name + ".tmp")
        tmp.write_text(json.dumps(self.stats()) + "\n")
        tmp.replace(self.stats_file)
        self._dirty, self._flushed = False, now


def drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def announce_ready(d: Daemon) -> None:
    note = f" {d.ready_note}" if d.ready_note else ""
    print(f"ready ifname={d.ifname} vips={','.join(d.vips)}{note}", flush=True)
    if stat.S_ISFIFO(os.fstat(1).st_mode):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)


def serve(d: Daemon) -> int:
    """Open, announce, run until SIGTERM/SIGINT (exit 0) or until the device or the namespace
    goes (EXIT_GONE), close; the exit status of ``main()``."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, d.stop)
    try:
        d.open()
        d.watch_from_here()
    except Exception as e:  # OSError, or pyroute2's NetlinkError (not an OSError)
        d.close()
        print(f"{d.name}: cannot set up {d.ifname}: {e}", file=sys.stderr)
        return 1
    warning = d.warning()
    if warning:
        print(f"{d.name}: warning: {warning}", file=sys.stderr)
    try:
        announce_ready(d)
        d.run()
    finally:
        d.close()
        left = " (device still present!)" if device_exists(d.ifname) else ""
        print(f"{d.name}: stopped; counters: {d.status_line()}{left}", file=sys.stderr, flush=True)
    return EXIT_GONE if d.gone else 0
