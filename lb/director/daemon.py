"""lbd: the director daemon. It owns the fast path (one AF_PACKET ring per interface, served by
a packet thread), holds the Director (the configuration and its reconcile with the fast path,
lb.director.director), and answers lbadm over a Unix socket only root can open."""
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
from lb.director import cli, nft, rules
from lb.director.cli import DEFAULT_SOCKET
from lb.director.director import Director
from lb.director.netlink import Netlink

log = logging.getLogger("lbd")
REFRESH_SECONDS = 0.2


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the user."""


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
                 config_file: str | None = None):
        os.makedirs("/run/lbd", mode=0o700, exist_ok=True)
        self.ifnames = ifnames
        self.locks = []
        nl = Netlink()
        try:
            self.ifaces = [nl.interface(n) for n in ifnames]
        except LookupError as e:
            raise StartupError(str(e)) from None
        finally:
            nl.close()
        self.locks = [_interface_lock(n) for n in ifnames]
        self.fwd = Forwarder(max_conns=max_conns)
        for slot, iface in enumerate(self.ifaces):
            self.fwd.set_interface(slot, iface.index, iface.mac, iface.mtu, iface.source)
        self.ifslots = {iface.index: slot for slot, iface in enumerate(self.ifaces)}
        self.local_addrs = sorted({a for i in self.ifaces for a in i.addrs})
        self.fwd.set_toa(syn=toa in ("syn", "both"), ack=toa in ("ack", "both"))
        self.ingress = nft.Ingress(ifnames)
        reload_source = (lambda: rules.read(config_file, cli.parse)) if config_file else None
        self.director = Director(self.fwd, self.ingress, lport_range, resolve=self._resolve_now,
                                 reload_source=reload_source)
        self.config_file = config_file
        self.fwd.scheduler_cb = self.director.schedule
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def apply(self, cmd: dict) -> dict:
        return self.director.apply(cmd)

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

    # --- routes and neighbours, kept current ------------------------------------------------
    def _refresh_loop(self) -> None:
        nl = Netlink()
        asked: dict[tuple, float] = {}
        last_routes = None
        try:
            while not self.stopping.wait(REFRESH_SECONDS):
                last_routes = self._refresh(nl, asked, last_routes)
        finally:
            nl.close()

    def _refresh(self, nl: Netlink, asked: dict, last_routes):
        routes = nl.routes(self.ifslots)
        if routes != last_routes:
            self.fwd.set_routes(routes)
            for _, _, gw, _ in routes:
                if gw:
                    self.fwd.want_neighbour(gw)
        kernel = nl.neighbours()
        now = time.monotonic()
        for ip, ifslot, mac in self.fwd.neighbours():
            ifindex = self.ifaces[ifslot].index
            known = kernel.get((ip, ifindex))
            if known and known != mac:
                self.fwd.set_neighbour(ip, ifslot, known, pin=False)   # keep it as it was
            elif not known and now - asked.get((ip, ifindex), 0) > 1.0:
                asked[(ip, ifindex)] = now
                try:
                    nl.resolve(ip, ifindex)
                except Exception as e:  # an address the kernel will not resolve: keep trying
                    log.debug("resolve %s: %s", ip, e)
        self.director.release_idle()
        return routes

    # --- life cycle ------------------------------------------------------------------------
    def start(self, cpu: int | None = None) -> None:
        nl = Netlink()
        try:
            self._refresh(nl, {}, None)
        finally:
            nl.close()
        # Gateways too: the first reply to a client must not wait for ARP.
        self._resolve_now([(ip, s) for ip, s, mac in self.fwd.neighbours() if mac is None])
        if nft.exists(self.ingress.table):
            log.warning("replacing nftables table %s, left behind by an lbd that died",
                        self.ingress.table)
        self.ingress.install(self.local_addrs)
        self.director.reconcile()
        if self.config_file:
            reply = self.director.apply({"op": "reload"})
            if reply["rc"]:
                raise StartupError(reply["err"].strip().removeprefix("lbadm: "))
            log.info("configuration loaded from %s", self.config_file)
        for slot in range(len(self.ifaces)):
            self.fwd.open(slot)
        self.threads = [threading.Thread(target=self._packet_thread, args=(cpu,), name="fastpath"),
                        threading.Thread(target=self._refresh_loop, name="refresh", daemon=True)]
        for t in self.threads:
            t.start()

    def _packet_thread(self, cpu) -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        self.fwd.run()

    def stop(self) -> None:
        self.stopping.set()
        self.fwd.stop()
        for t in self.threads:
            t.join(timeout=5)
        counters = self.fwd.counters()
        self.fwd.close()
        log.info("stopped; counters: %s", " ".join(f"{k}={v}" for k, v in counters.items() if v))
        try:
            self.ingress.remove()
        except nft.NftError as e:
            log.error("%s", e)
        for name, fd in zip(self.ifnames, self.locks):
            with contextlib.suppress(OSError):
                os.unlink(_lock_path(name))     # still holding it: nobody else owns this file
            os.close(fd)
        self.locks = []


async def serve(daemon: Lbd, path: str) -> None:
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
    log.info("serving %s on %s", ", ".join(daemon.ifnames), path)
    try:
        async with server:
            await stop.wait()
    finally:
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lbd", description="the lvs-py director daemon")
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
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="lbd: %(message)s")
    if os.geteuid() != 0:
        print("lbd: must run as root (AF_PACKET and nftables)", file=sys.stderr)
        return 1
    try:
        low, _, high = args.lport_range.partition("-")
        lport_range = (int(low), int(high))
        if not 1 <= lport_range[0] <= lport_range[1] <= 65535:
            raise ValueError
    except ValueError:
        print(f"lbd: bad --lport-range {args.lport_range!r}: expected LOW-HIGH within 1-65535",
              file=sys.stderr)
        return 2
    try:
        daemon = Lbd(args.interface, args.max_conns, lport_range, args.toa, args.config)
    except (StartupError, OSError) as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    try:
        _claim_socket(args.socket)
        daemon.start(args.cpu)
        asyncio.run(serve(daemon, args.socket))
    except (StartupError, nft.NftError, OSError) as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
