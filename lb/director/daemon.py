"""lbd: the director daemon. It owns the fast path (one AF_PACKET ring per interface, served by
a packet thread), holds the Director (the configuration and its reconcile with the fast path,
lb.director.director), and answers lbadm over a Unix socket only root can open.

lbd never daemonizes itself: it runs in the foreground, logs to stderr through `logging`, and
leaves supervising to systemd (deploy/lbd.service: Type=simple, reload by SIGHUP). Every way
out removes its nftables table: a stop by SIGTERM/SIGINT (also while it is starting), a start
that fails part-way, and a worker thread that dies (then lbd stops itself and exits 1, so that
systemd restarts it rather than leave the VIPs' traffic dropped by a table nobody serves)."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import sys
import threading
import time

from lb._forward import Forwarder
from lb.director import cli, figures, keepalived, nft, offloads, rules, tun_encap, vips
from lb.director.cli import DEFAULT_SOCKET
from lb.director.director import Director
from lb.director.estimator import Estimator, Sampler
from lb.director.health import listing as checks
from lb.director.health.engine import Engine
from lb.director.links import FloodDefence
from lb.director.netlink import Netlink
from lb.director.refresh import EVERYTHING, Changes, Refresher
from lb.netwatch import LinkWatch, own_netns
from lb.schedulers import plugins

log = logging.getLogger("lbd")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LPORT_SWEEP_S = 60.0    # Linux TCP_TIMEWAIT_LEN: how long a real server keeps a closed tuple


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the user."""


class Stopping(BaseException):
    """SIGTERM/SIGINT while lbd is still starting: unwinds the start, then lbd stops cleanly.
    A BaseException, so that no `except Exception` on the way swallows it."""


def _lock_path(ifname: str) -> str:
    return f"/run/lbd/netns-{os.stat('/proc/self/ns/net').st_ino}-{ifname}.lock"


def _interface_lock(ifname: str):
    """One lbd per interface (per network namespace): an flock held for the daemon's life."""
    path = _lock_path(ifname)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise StartupError(f"interface {ifname} is already served by another lbd (pid {other})")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class Lbd:
    """lbd: a Director on the Forwarder, one AF_PACKET ring per interface served by a packet
    thread, routes and neighbours kept current by a refresh thread."""

    def __init__(self, ifnames: list[str], max_conns: int = 1 << 20,
                 lport_range: tuple[int, int] = (1025, 65535), toa: str = "syn",
                 config_file: str | None = None, metrics: str | None = None,
                 keepalived_conf: str | None = None, vip_ownership: str = "always", *,
                 expire_nodest_conn: bool = False, flood: FloodDefence | None = None,
                 rx_ring: str = "split", rx_slots: int | None = None, busy_poll_us: int = 0,
                 uoa_datagrams: int = 3, tun_segment: str = "kernel",
                 lport_sweep_s: float = LPORT_SWEEP_S):
        os.makedirs("/run/lbd", mode=0o700, exist_ok=True)
        self.ifnames = ifnames
        self.expire_nodest_conn = expire_nodest_conn
        self.flood = flood or FloodDefence()
        self.locks = []
        self.metrics_address, self.metrics = metrics, None
        self.vip_ownership = vip_ownership
        self.rx_ring, self.rx_slots = rx_ring, rx_slots or RX_SLOTS[rx_ring]
        self.busy_poll_us = busy_poll_us
        self.uoa_datagrams = uoa_datagrams
        self.tun_segment = tun_segment
        self.lport_sweep_s = lport_sweep_s
        self.tun_encap: dict = {}           # interfaces with lbd's tc egress program (removed)
        nl = Netlink()
        try:
            self.ifaces = [nl.interface(n) for n in ifnames]
        except LookupError as e:
            raise StartupError(str(e)) from None
        finally:
            nl.close()
        try:
            for n in ifnames:
                self.locks.append(_interface_lock(n))
            self._init_fastpath(max_conns, lport_range, toa, config_file, keepalived_conf)
        except BaseException:
            self._release_locks()
            raise

    def _init_fastpath(self, max_conns, lport_range, toa, config_file, keepalived_conf) -> None:
        self.fwd = Forwarder(max_conns=max_conns)
        self.fwd.set_expire_nodest_conn(self.expire_nodest_conn)
        self.fwd.set_busy_poll(self.busy_poll_us)
        self.fwd.set_lport_sweep(self.lport_sweep_s)
        self.fwd.set_uoa(self.uoa_datagrams)
        self.fwd.set_flood_defence(self.flood.pressure, self.flood.embryo_timeout,
                                   self.flood.secure_tcp)
        self.links = LinkWatch(ifnames=list(self.ifnames),
                               indexes=[i.index for i in self.ifaces], netns=own_netns())
        for slot, iface in enumerate(self.ifaces):
            self.fwd.set_interface(slot, iface.index, iface.mac, iface.mtu, iface.source)
        self.ifslots = {iface.index: slot for slot, iface in enumerate(self.ifaces)}
        self.local_addrs = sorted({a for i in self.ifaces for a in i.addrs})
        self.fwd.set_toa(syn=toa in ("syn", "both"), ack=toa in ("ack", "both"))
        self.ingress = nft.Ingress(self.ifnames)
        reload_source = (lambda: rules.read(config_file, cli.parse)) if config_file else None
        if keepalived_conf:      # the table and its health checks (lb.director.keepalived)
            def reload_source():
                return keepalived.read(keepalived_conf)
        self.director = Director(self.fwd, self.ingress, lport_range, resolve=self._resolve_now,
                                 reload_source=reload_source)
        self.config_file = config_file or keepalived_conf
        self.health = Engine(self.director)
        self.fwd.scheduler_cb = self.director.schedule
        self.estimator = Estimator()
        self.director.config.rates = self.estimator.rates     # for lbadm -L --rate
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.failed: str | None = None        # the worker thread that died, if one did
        self.on_failure = lambda: None        # serve() sets it: stop the daemon
        self.stopped = False
        self.lro_off: list[str] = []        # interfaces whose LRO lbd turned off (restored)

    def apply(self, cmd: dict) -> dict:
        if isinstance(cmd, dict) and cmd.get("op") == "figures":   # lbadm top: read only
            return {"rc": 0, "out": json.dumps(self.figures()), "err": ""}
        return self.director.apply(cmd)

    def figures(self) -> dict:
        """Every live figure (lb.director.figures): what the metrics and lbadm top show."""
        return figures.snapshot(list(self.director.config.services), self.fwd,
                                self.estimator.rates,
                                checks.figures(self.director.health, self.director.config))

    def reload(self) -> None:
        """SIGHUP: re-read --config and apply the difference; a bad file changes nothing."""
        if not self.config_file:
            log.warning("SIGHUP: started without --config, nothing to reload")
            return
        reply = self.director.apply({"op": "reload"})
        if reply["rc"]:
            log.error("reload of %s refused, configuration unchanged: %s", self.config_file,
                      reply["err"].strip().removeprefix("lbadm: "))
        else:
            log.info("reloaded %s", self.config_file)

    def _resolve_now(self, hops, timeout: float = 1.0) -> None:
        # A server is usable when lbadm returns: resolve its next hop's MAC now (bounded), rather
        # than drop the first packets as no_neighbour until the refresh thread gets to it.
        pending = {(ip, self.ifaces[ifslot].index): ifslot for ip, ifslot in hops}
        if not pending:
            return
        nl = Netlink()
        try:
            deadline = time.monotonic() + timeout
            for ip, ifindex in pending:
                with contextlib.suppress(Exception):
                    nl.resolve(ip, ifindex)
            while pending and time.monotonic() < deadline:
                known = nl.neighbours()
                for key in [k for k in pending if k in known]:
                    self.fwd.set_neighbour(key[0], pending.pop(key), known[key])
                if pending:
                    time.sleep(0.01)
        finally:
            nl.close()

    # --- routes and neighbours, kept current (lb.director.refresh) ----------------------------
    def _refresh_loop(self) -> None:
        nl, changes = Netlink(), None
        try:
            changes = Changes()
            Refresher(self, nl, changes).run()
        finally:
            if changes is not None:
                changes.close()
            nl.close()

    # --- life cycle ------------------------------------------------------------------------
    def start(self, cpu: int | None = None, checkpoint=lambda: None) -> None:
        """Resolve, install the table, load the configuration, open the rings, start the
        threads. `checkpoint()` runs between the steps: it raises Stopping after a SIGTERM."""
        checkpoint()
        nl = Netlink()
        try:
            Refresher(self, nl, None).reread(EVERYTHING)
        finally:
            nl.close()
        # Gateways too: the first reply to a client must not wait for ARP.
        self._resolve_now([(ip, s) for ip, s, mac in self.fwd.neighbours() if mac is None])
        checkpoint()
        if nft.exists(self.ingress.table):
            log.warning("replacing nftables table %s, left behind by an lbd that died",
                        self.ingress.table)
        self.ingress.install(self.local_addrs)
        checkpoint()
        self.lro_off = offloads.disable_lro(self.ifnames)
        if self.tun_segment == "kernel":
            self._attach_tun_encap()
        checkpoint()
        if self.vip_ownership == "address":     # before the first push: serve only what we hold
            nl = Netlink()
            try:
                self.director.owned = frozenset(vips.addresses(nl.ipr))
            finally:
                nl.close()
        self.director.reconcile()
        checkpoint()
        if self.config_file:
            reply = self.director.apply({"op": "reload"})
            if reply["rc"]:
                raise StartupError(reply["err"].strip().removeprefix("lbadm: "))
            log.info("configuration loaded from %s", self.config_file)
        checkpoint()
        for slot in range(len(self.ifaces)):
            self.fwd.open(slot, version=3 if self.rx_ring == "v3" else 2, slots=self.rx_slots,
                          big_slots=RX_BIG_SLOTS if self.rx_ring == "split" else 0)
        sampler = Sampler(self.estimator, lambda: list(self.director.config.services), self.stopping)
        self.threads = [self._thread("fastpath", self._packet_loop, cpu),
                        self._thread("refresh", self._refresh_loop),
                        self._thread("estimator", sampler.run)]
        if self.vip_ownership == "address":
            watch = vips.AddressWatch(self._addresses_changed)
            self.threads.append(self._thread("vips", watch.run, self.stopping))
        for t in self.threads:
            t.start()
        if self.metrics_address:
            from lb.director.metrics import MetricsServer   # prometheus_client: only if asked
            try:
                self.metrics = MetricsServer(self.metrics_address, self.figures)
            except (OSError, ValueError) as e:
                raise StartupError(f"--metrics {self.metrics_address}: {e}") from None

    def _attach_tun_encap(self) -> None:
        """TUN aggregates leave whole where lbd's tc egress program is on (tun_encap.py)."""
        nl = Netlink()
        try:
            self.tun_encap = tun_encap.attach_all(nl.ipr, [(i.name, i.index) for i in self.ifaces])
        finally:
            nl.close()
        for slot, iface in enumerate(self.ifaces):
            if iface.name in self.tun_encap:
                self.fwd.set_tun_encap(slot, tun_encap.MARK)

    def _detach_tun_encap(self) -> None:
        if not self.tun_encap:
            return
        nl = Netlink()
        try:
            for record in self.tun_encap.values():
                tun_encap.detach(nl.ipr, record)
        finally:
            nl.close()
        self.tun_encap = {}

    def _addresses_changed(self, addresses: dict) -> None:
        """The namespace's addresses changed: serve the VIPs held, announce the new ones on the
        interface that has them (when lbd serves it) with gratuitous ARPs, in the background."""
        for vip in self.director.set_owned(addresses.keys()):
            slot = self.ifslots.get(addresses.get(vip))
            if slot is None:
                continue
            iface = self.ifaces[slot]
            threading.Thread(target=vips.send_garps, args=(iface.name, iface.mac, vip),
                             kwargs={"stopping": self.stopping}, name="garp", daemon=True).start()

    def _thread(self, name: str, target, *args) -> threading.Thread:
        return threading.Thread(target=self._guarded, args=(name, target, *args), name=name,
                                daemon=True)

    def _guarded(self, name: str, target, *args) -> None:
        # A worker that dies leaves lbd unable to do its job (no packets forwarded, or routes
        # and neighbours going stale) while its table still drops the VIPs' traffic: stop.
        try:
            target(*args)
            if not self.stopping.is_set():
                raise RuntimeError("returned while lbd was running")
        except BaseException as e:
            if self.stopping.is_set():
                return
            log.critical("the %s thread died (%s: %s): stopping", name, type(e).__name__, e,
                         exc_info=not isinstance(e, RuntimeError))
            self.failed = self.failed or name
            self.on_failure()

    def _packet_loop(self, cpu) -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        self.fwd.run()

    def stop(self) -> None:
        """Everything start() made, undone; each step whatever the others did, the nftables
        table always (also one a previous lbd left, if the start failed before replacing it)."""
        if self.stopped:
            return
        self.stopped = True
        self.stopping.set()
        steps = [("metrics", self._stop_metrics), ("fast path", self._stop_fastpath),
                 ("nftables table", self.ingress.remove),
                 ("LRO", lambda: offloads.restore_lro(self.lro_off)),
                 ("tc egress program", self._detach_tun_encap), ("locks", self._release_locks)]
        for what, step in steps:
            try:
                step()
            except Exception as e:          # noqa: BLE001 -- go on with the rest
                log.error("stopping: %s: %s", what, e)

    def _stop_metrics(self) -> None:
        if self.metrics is not None:
            self.metrics.close()

    def _stop_fastpath(self) -> None:
        self.fwd.stop()
        for t in self.threads:
            t.join(timeout=5)
        counters = self.fwd.counters()
        self.fwd.close()
        log.info("stopped; counters: %s", " ".join(f"{k}={v}" for k, v in counters.items() if v))

    def _release_locks(self) -> None:
        for name, fd in zip(self.ifnames, self.locks):
            with contextlib.suppress(OSError):
                os.unlink(_lock_path(name))     # still holding it: nobody else owns this file
            os.close(fd)
        self.locks = []


async def serve(daemon: Lbd, path: str, reload_pending: bool = False,
                stop_pending=lambda: False) -> None:
    """Answer lbadm on `path` until SIGTERM/SIGINT, or until a worker thread of `daemon` dies."""
    _claim_socket(path)

    async def handle(reader, writer):
        try:
            line = await reader.readline()
            try:
                cmd = json.loads(line)["cmd"]
                if not isinstance(cmd, dict):
                    raise TypeError
                reply = await asyncio.get_running_loop().run_in_executor(None, daemon.apply, cmd)
            except (ValueError, KeyError, TypeError):
                reply = {"rc": 1, "out": "", "err": "lbd: malformed request\n"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    old = os.umask(0o177)                       # the socket is born 0600: root only
    try:
        server = await asyncio.start_unix_server(handle, path)
    finally:
        os.umask(old)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # systemctl reload sends SIGHUP: reload in a worker, as a command from lbadm would run.
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.run_in_executor(None, daemon.reload))
    daemon.on_failure = lambda: loop.call_soon_threadsafe(stop.set)
    if daemon.failed or stop_pending():
        stop.set()
    if reload_pending:                          # a SIGHUP came while lbd was starting
        loop.run_in_executor(None, daemon.reload)
    daemon.health.attach(loop)                  # the checks run in this loop
    log.info("serving %s on %s", ", ".join(daemon.ifnames), path)
    try:
        async with server:
            await stop.wait()
    finally:
        await daemon.health.close()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        _while_stopping()                       # asyncio put the default actions back
        if os.path.exists(path):
            os.unlink(path)


def _claim_socket(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    if os.path.exists(path):
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(path)
            except OSError:
                os.unlink(path)                 # left by a daemon that died
                return
        raise StartupError(f"another lbd is already listening on {path}")


class _Signals:
    """lbd's handling of SIGTERM, SIGINT and SIGHUP outside serve()'s event loop: while it
    starts, a stop is noted and unwinds the start at its next checkpoint (check(): Stopping),
    and a reload waits for the start to finish; while it stops, more of them change nothing
    (the table and the socket must go). The handler itself never raises: an exception raised
    from a signal handler lands in whatever Python runs then, and one that lands in a
    finalizer (Popen.__del__) is swallowed, so lbd went on to serve after a SIGTERM."""
    hup = False
    stop: str | None = None         # the signal's name, once one came

    @classmethod
    def starting(cls) -> None:
        def stop(signum, frame):
            cls.stop = cls.stop or signal.Signals(signum).name

        def hup(signum, frame):
            cls.hup = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, stop)
        signal.signal(signal.SIGHUP, hup)

    @classmethod
    def check(cls) -> None:
        if cls.stop:
            raise Stopping(cls.stop)


def _while_stopping() -> None:
    def ignore(signum, frame):
        log.info("%s while stopping: already stopping", signal.Signals(signum).name)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, ignore)


class _Formatter(logging.Formatter):
    """'lbd: message' ('lbd: warning: message' above info) on a terminal; under systemd
    (JOURNAL_STREAM set) the syslog priority prefix journald reads, '<4>message'."""
    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3,
                logging.CRITICAL: 2}

    def __init__(self, journal: bool):
        super().__init__()
        self.journal = journal

    def format(self, record) -> str:
        text = super().format(record)
        if self.journal:
            return f"<{self.PRIORITY.get(record.levelno, 6)}>{text}"
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return f"lbd: {level}{text}"


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(journal=bool(os.environ.get("JOURNAL_STREAM"))))
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False


# Frames per receive ring (Forwarder.open): v2's are 68 KB each (35 MB), split's 2 KB (16 MB,
# with RX_BIG_SLOTS of 68 KB beside them); v3 is 64 blocks of 256 KB whatever it is given.
# split is the default: 64-byte NAT pps 1.2-1.3x v2's (bench/pps.py), bulk TCP the same
# (bench/suite.py --only e2e_tcp_bulk, 2026-12-02: DR 21.3 Gbit/s split, 21.3 v2). v2's 512 frames
# of queue overflow whenever the packet thread waits for its CPU.
RX_SLOTS = {"v2": 512, "split": 8192, "v3": 512}
RX_BIG_SLOTS = 64


def _arguments(argv):
    p = argparse.ArgumentParser(prog="lbd", description="the lvs-py director daemon. It always "
                                "runs in the foreground (never forks), as systemd wants.")
    p.add_argument("-i", "--interface", action="append", required=True,
                   help="interface to serve (repeat for several)")
    p.add_argument("--socket", default=DEFAULT_SOCKET, help="lbadm's Unix socket")
    p.add_argument("--max-conns", type=int, default=1 << 20)
    p.add_argument("--cpu", type=int, default=None, help="pin the packet thread to this CPU")
    p.add_argument("--lport-range", default="1025-65535", metavar="LOW-HIGH",
                   help="ports each FULLNAT local address (and ENAT VIP) lends to connections")
    p.add_argument("--toa", choices=("syn", "ack", "both"), default="syn",
                   help="where FULLNAT/ENAT put the client address option")
    p.add_argument("--config", metavar="FILE",
                   help="ipvsadm rules (lbadm -S output) to load at start and on SIGHUP / "
                        "lbadm --reload; a file with an error is refused whole")
    p.add_argument("--keepalived-conf", metavar="FILE",
                   help="keepalived.conf virtual_server blocks (the table and its health "
                        "checks) to load at start and on SIGHUP / lbadm --reload, instead of "
                        "--config; what lbd cannot do is refused with its line")
    p.add_argument("--vip-ownership", choices=vips.MODES, default="always",
                   help="always: serve every VIP configured (default); address: serve a VIP "
                        "only while it is an address of this namespace (moved by keepalived's "
                        "VRRP), announcing it with gratuitous ARPs when it arrives")
    p.add_argument("--metrics", metavar="ADDR:PORT",
                   help="serve Prometheus metrics on http://ADDR:PORT/metrics (off by default)")
    p.add_argument("--cleanup", action="store_true",
                   help="remove what an lbd on these interfaces left when it was killed (its "
                        "nftables table, lock and socket), unless one is running; then exit "
                        "(systemd's ExecStopPost)")
    p.add_argument("--expire-nodest-conn", action="store_true",
                   help="drop the next packet of a connection whose real server was deleted, "
                        "and the connection (IPVS's expire_nodest_conn; off: they keep flowing)")
    p.add_argument("--flood-pressure", type=float, default=FloodDefence.pressure,
                   metavar="FRACTION", help="connection table fill (0..1) above which "
                   "half-open connections get --embryo-timeout and secure_tcp applies")
    p.add_argument("--embryo-timeout", type=float, default=FloodDefence.embryo_timeout,
                   metavar="SECONDS", help="a half-open connection's timeout under pressure")
    p.add_argument("--secure-tcp", type=int, choices=(0, 1, 2), default=FloodDefence.secure_tcp,
                   help="DR/TUN/ENAT: only data, not a bare ACK, makes a connection "
                        "ESTABLISHED: 1 under pressure, 2 always, 0 never")
    p.add_argument("--rx-ring", choices=tuple(RX_SLOTS), default="split",
                   help="receive ring: split (default) hands each frame over as it is written, in "
                        "2 KB slots, with a second ring of 68 KB slots for GSO aggregates; v2: one "
                        "ring of 68 KB slots; v3 hands over blocks, full or after 1 ms (for comparison)")
    p.add_argument("--rx-slots", type=int, default=None, metavar="N",
                   help="v2/split: frames the ring holds (default %s): what the kernel can queue "
                        "while the packet thread waits for its CPU" % ", ".join(
                            f"{k} {v}" for k, v in RX_SLOTS.items() if k != "v3"))
    p.add_argument("--lport-sweep", type=float, default=LPORT_SWEEP_S, metavar="SECONDS",
                   help="FULLNAT/ENAT: each local port pool's cursor keeps up with a line that "
                        "sweeps the --lport-range once in SECONDS (default %(default)s, the real "
                        "server's TIME_WAIT), read off the system's monotonic clock, so a "
                        "restarted lbd does not lend again the ports the last one has just used; "
                        "0: start at the range's low end")
    p.add_argument("--busy-poll", type=int, default=0, metavar="USEC",
                   help="after frames, keep looking at the rings USEC microseconds before "
                        "sleeping (0..1000000, default 0): a reply back within it is taken "
                        "without a thread wake-up, for that much CPU after each burst")
    p.add_argument("--uoa-datagrams", type=int, default=3, metavar="N",
                   help="ENAT UDP: the first N datagrams of each connection carry the client's "
                        "address in a UOA IP option for the real server's agent (0..255, default "
                        "3, as DPVS; 0: none, the agent then cannot answer UDP clients)")
    p.add_argument("--tun-segment", choices=["kernel", "lbd"], default="kernel",
                   help="TUN: a client's TCP aggregate leaves whole and the kernel or the NIC cuts "
                        "it into IPIP segments, marked so by a tc egress program lbd attaches "
                        "(kernel, the default; lbd cuts them itself where it cannot attach it), or "
                        "lbd always cuts them (lbd)")
    p.add_argument("--foreground", action="store_true",
                   help="run in the foreground: accepted for init scripts, lbd always does")
    p.add_argument("--scheduler-module", action="append", default=[], metavar="MODULE",
                   help="load schedulers of your own from MODULE (a dotted name or a .py file; "
                        "repeat for several): see docs/schedulers.md")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("-v", "--verbose", action="store_true", help="the same as --log-level debug")
    args = p.parse_args(argv)
    if not 0 <= args.busy_poll <= 1000000:
        p.error(f"--busy-poll {args.busy_poll}: microseconds from 0 to 1000000")
    if not 0 <= args.lport_sweep <= 86400:
        p.error(f"--lport-sweep {args.lport_sweep}: seconds from 0 to 86400")
    if not 0 <= args.uoa_datagrams <= 255:
        p.error(f"--uoa-datagrams {args.uoa_datagrams}: from 0 to 255")
    return args


def _lport_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    lport_range = (int(low), int(high))
    if not 1 <= lport_range[0] <= lport_range[1] <= 65535:
        raise ValueError
    return lport_range


def cleanup(ifnames: list[str], socket_path: str) -> int:
    """After an lbd that could not clean up (SIGKILL, a crash of the interpreter): its table,
    lock files and socket. Nothing is touched while an lbd holds one of the interfaces."""
    os.makedirs("/run/lbd", mode=0o700, exist_ok=True)
    locks = []
    try:
        for name in ifnames:
            locks.append(_interface_lock(name))
    except StartupError as e:
        for fd in locks:
            os.close(fd)
        log.info("nothing to clean up: %s", e)
        return 0
    try:
        table = nft.table_name(ifnames)
        if nft.exists(table):
            nft.Ingress(ifnames).remove()
            log.warning("removed nftables table %s, left behind by an lbd that died", table)
        with contextlib.suppress(StartupError, OSError):
            _claim_socket(socket_path)          # unlinks it if nobody listens
    except nft.NftError as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    finally:
        for name, fd in zip(ifnames, locks):
            with contextlib.suppress(OSError):
                os.unlink(_lock_path(name))
            os.close(fd)
    return 0


def main(argv=None) -> int:
    args = _arguments(argv)
    setup_logging("debug" if args.verbose else args.log_level)
    if os.geteuid() != 0:
        print("lbd: must run as root (AF_PACKET and nftables)", file=sys.stderr)
        return 1
    try:
        lport_range = _lport_range(args.lport_range)
    except ValueError:
        print(f"lbd: bad --lport-range {args.lport_range!r}: expected LOW-HIGH within 1-65535",
              file=sys.stderr)
        return 2
    try:
        flood = FloodDefence(args.flood_pressure, args.embryo_timeout, args.secure_tcp)
    except ValueError as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 2
    if args.cleanup:
        return cleanup(args.interface, args.socket)
    for module in args.scheduler_module:
        try:
            log.info("scheduler module %s: %s", module, ", ".join(plugins.load(module)))
        except plugins.PluginError as e:
            print(f"lbd: {e}", file=sys.stderr)
            return 2
    if args.config and args.keepalived_conf:
        print("lbd: --config and --keepalived-conf both name the configuration: give one",
              file=sys.stderr)
        return 2
    _Signals.starting()
    try:
        daemon = Lbd(args.interface, args.max_conns, lport_range, args.toa, args.config,
                     args.metrics, args.keepalived_conf, args.vip_ownership,
                     expire_nodest_conn=args.expire_nodest_conn, flood=flood, rx_ring=args.rx_ring,
                     rx_slots=args.rx_slots, busy_poll_us=args.busy_poll,
                     uoa_datagrams=args.uoa_datagrams, tun_segment=args.tun_segment,
                     lport_sweep_s=args.lport_sweep)
    except (StartupError, OSError) as e:    # a SIGTERM meanwhile: start()'s first checkpoint
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    return _run(daemon, args)


def _run(daemon: Lbd, args) -> int:
    rc = 0
    try:
        _claim_socket(args.socket)
        daemon.start(args.cpu, checkpoint=_Signals.check)
        _Signals.check()
        asyncio.run(serve(daemon, args.socket, reload_pending=_Signals.hup,
                          stop_pending=lambda: _Signals.stop))
        if daemon.failed:
            rc = 1
    except Stopping as e:
        _while_stopping()
        log.info("%s while starting: stopping", e)
    except (StartupError, nft.NftError, OSError) as e:
        _while_stopping()
        print(f"lbd: {e}", file=sys.stderr)
        rc = 1
    except Exception:               # noqa: BLE001 -- a bug: say where, and still clean up
        _while_stopping()
        log.critical("lbd failed", exc_info=True)
        rc = 1
    finally:
        _while_stopping()
        daemon.stop()
    return rc


if __name__ == "__main__":
    sys.exit(main())
