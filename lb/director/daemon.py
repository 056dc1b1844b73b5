"""lbd: the director daemon. It owns the fast path (one AF_PACKET ring per interface, served by
a packet thread), holds the configuration, and answers lbadm over a Unix socket only root can
open. Every accepted command is applied to the Config first (all or nothing), then the fast
path's tables and the nftables ingress table are brought in line with it (sync)."""
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

from lb import modes
from lb.director import nft
from lb._forward import LIMITS, Forwarder
from lb.director.cli import DEFAULT_SOCKET
from lb.director.config import Config, ConfigError
from lb.director.model import Flow
from lb.director.netlink import Netlink

log = logging.getLogger("lbd")
PROTO_NUMBERS = {"tcp": 6, "udp": 17}
MAX_SERVICES, MAX_DESTS, MAX_LADDRS = LIMITS["services"], LIMITS["dests"], LIMITS["laddrs"]
REFRESH_SECONDS = 0.2
# Commands that change nothing the fast path or nftables hold (-Z writes the counters itself):
# no sync, so a listing does not rewrite the tables and the ingress ruleset.
READ_ONLY = {"list", "get_laddr", "zero", "help"}


class StartupError(Exception):
    """The daemon cannot start; the message is one line for the user."""


class Slots:
    """Free slot numbers of one fast-path table, lowest first."""

    def __init__(self, size: int):
        self.free = list(range(size - 1, -1, -1))

    def take(self) -> int:
        if not self.free:
            raise ConfigError("the fast path's table is full")
        return self.free.pop()

    def give(self, slot: int) -> None:
        self.free.append(slot)
        self.free.sort(reverse=True)


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


class Director:
    def __init__(self, ifnames: list[str], max_conns: int = 1 << 20,
                 lport_range: tuple[int, int] = (1025, 65535), toa: str = "syn"):
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
        self.fwd = Forwarder(max_conns=max_conns, scheduler_cb=self._schedule)
        for slot, iface in enumerate(self.ifaces):
            self.fwd.set_interface(slot, iface.index, iface.mac, iface.mtu, iface.source)
        self.ifslots = {iface.index: slot for slot, iface in enumerate(self.ifaces)}
        self.local_addrs = sorted({a for i in self.ifaces for a in i.addrs})
        self.config = Config(stats=self.fwd)
        self.config.laddr_used = lambda ip: self.fwd.laddr_used(self.laddr_slots[ip]) \
            if ip in self.laddr_slots else 0
        self.lport_range = lport_range
        self.laddr_slots: dict[str, int] = {}   # local address (FULLNAT LIP, ENAT VIP) -> pool
        self.fwd.set_toa(syn=toa in ("syn", "both"), ack=toa in ("ack", "both"))
        self.table = nft.table_name(ifnames)
        self.svc_slots, self.dest_slots = Slots(MAX_SERVICES), Slots(MAX_DESTS)
        self.svc_by_slot: dict[int, object] = {}
        self.dest_by_slot: dict[int, object] = {}
        self.retired: set[int] = set()      # deleted servers whose connections still run
        self.lock = threading.Lock()        # one configuration change at a time
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    # --- commands ------------------------------------------------------------------------
    def apply(self, cmd: dict) -> dict:
        with self.lock:
            try:
                out = self.config.apply(cmd)
                if cmd.get("op") not in READ_ONLY:
                    self._sync()
            except ConfigError as e:
                return {"rc": 1, "out": "", "err": f"lbadm: {e}\n"}
            except nft.NftError as e:
                return {"rc": 1, "out": "", "err": f"lbd: {e}\n"}
        return {"rc": 0, "out": out, "err": ""}

    def _sync(self) -> None:
        """Bring the fast path and the ingress table in line with self.config."""
        services = list(self.config.services)
        dests = [(s, d) for s in services for d in s.dests]
        new_hops = []
        live_svcs = {id(s) for s in services}
        for slot, svc in list(self.svc_by_slot.items()):
            if id(svc) not in live_svcs:
                self.fwd.clear_service(slot)
                del self.svc_by_slot[slot]
                self.svc_slots.give(slot)
        live_dests = {id(d) for _, d in dests}
        for slot, dest in list(self.dest_by_slot.items()):
            if id(dest) not in live_dests:
                self.fwd.clear_dest(slot)
                del self.dest_by_slot[slot]
                self.retired.add(slot)
        self._free_retired()
        self._sync_laddrs(services)
        for svc in services:
            if svc.slot is None or self.svc_by_slot.get(svc.slot) is not svc:
                svc.slot = self.svc_slots.take()
                self.svc_by_slot[svc.slot] = svc
            keys = [(PROTO_NUMBERS[p], vip, port) for p, vip, port in svc.match]
            enat = any(d.fwd == "enat" for d in svc.dests)
            self.fwd.set_service(svc.slot, PROTO_NUMBERS.get(svc.proto, 0), svc.vip, svc.port,
                                 persistent=svc.persistent, netmask=svc.netmask,
                                 onepacket=svc.onepacket, fwmark=svc.fwmark, keys=keys,
                                 laddrs=[self.laddr_slots[a] for a in svc.laddrs],
                                 enat_laddr=self.laddr_slots[svc.vip] if enat else -1)
        for svc, dest in dests:
            fresh = dest.slot is None or self.dest_by_slot.get(dest.slot) is not dest
            if fresh:
                dest.slot = self.dest_slots.take()
                self.dest_by_slot[dest.slot] = dest
            self.fwd.set_dest(dest.slot, svc.slot, dest.addr, dest.port,
                              modes.get(dest.fwd).fwd_code, reset=fresh)
            if fresh:
                nexthop = self.fwd.want_neighbour(dest.addr)
                if nexthop:
                    new_hops.append(nexthop)
        for name, state in (("tcp", "ESTABLISHED"), ("tcpfin", "FIN_WAIT"), ("udp", "UDP")):
            self.fwd.set_timeout(state, self.config.timeouts[name])
        nft.install(self.table, self.ifnames, self._ingress_rules(dests))
        self._resolve_now(new_hops)

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

    def _sync_laddrs(self, services) -> None:
        # One port pool per address, shared by every service that uses it: a (LIP, port) pair
        # must belong to one connection at a time whichever service lent it. A pool no longer
        # named stays until its ports are all back (connections still hold them).
        wanted = {a for s in services for a in s.laddrs}
        wanted |= {s.vip for s in services if any(d.fwd == "enat" for d in s.dests)}
        for addr in sorted(wanted - self.laddr_slots.keys()):
            free = sorted(set(range(MAX_LADDRS)) - set(self.laddr_slots.values()))
            if not free:
                raise ConfigError(f"more than {MAX_LADDRS} local addresses")
            self.laddr_slots[addr] = free[0]
            self.fwd.set_laddr(free[0], addr, *self.lport_range)
        for addr in list(self.laddr_slots.keys() - wanted):
            if self.fwd.laddr_used(self.laddr_slots[addr]) == 0:
                del self.laddr_slots[addr]

    def _ingress_rules(self, dests) -> list[str]:
        rules = [rule for s in self.config.services for rule in modes.service_drops(s)]
        for svc, dest in dests:
            rules += modes.get(dest.fwd).ingress_drops(svc, dest, self.local_addrs)
        return list(dict.fromkeys(rules))

    def _free_retired(self) -> None:
        for slot in list(self.retired):
            c = self.fwd.dest_counters(slot)
            if c["active"] + c["inactive"] == 0:
                self.retired.discard(slot)
                self.dest_slots.give(slot)

    # --- called by the packet thread, once per batch of new flows -----------------------
    def _schedule(self, flows):
        # Never take self.lock here: the packet thread holds the fast path's mutex, which a
        # configuration change may be waiting for.
        picks = []
        for svc_slot, proto, caddr, cport, vaddr, vport in flows:
            svc = self.svc_by_slot.get(svc_slot)
            rs = None
            if svc is not None:
                rs = svc.schedule(Flow(svc.proto, caddr, cport, vaddr, vport))
            picks.append(rs.slot if rs is not None and rs.slot is not None else -1)
        return picks

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
        with self.lock:
            self._free_retired()
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
        nft.install(self.table, self.ifnames, [])
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
            nft.remove(self.table)
        except nft.NftError as e:
            log.error("%s", e)
        for name, fd in zip(self.ifnames, self.locks):
            with contextlib.suppress(OSError):
                os.unlink(_lock_path(name))     # still holding it: nobody else owns this file
            os.close(fd)
        self.locks = []


async def serve(director: Director, path: str) -> None:
    _claim_socket(path)

    async def handle(reader, writer):
        try:
            line = await reader.readline()
            try:
                cmd = json.loads(line)["cmd"]
                if not isinstance(cmd, dict):
                    raise TypeError
                reply = await asyncio.get_running_loop().run_in_executor(None, director.apply, cmd)
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
    log.info("serving %s on %s", ", ".join(director.ifnames), path)
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
        director = Director(args.interface, args.max_conns, lport_range, args.toa)
    except (StartupError, OSError) as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    try:
        _claim_socket(args.socket)
        director.start(args.cpu)
        asyncio.run(serve(director, args.socket))
    except (StartupError, nft.NftError, OSError) as e:
        print(f"lbd: {e}", file=sys.stderr)
        return 1
    finally:
        director.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
