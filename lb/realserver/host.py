"""The real-server side of DR, TUN and ENAT: ``lb realserver setup | teardown | status``.

    lb realserver setup --mode dr|tun|enat|fullnat --vip VIP [--vip VIP2 ...] [--reply-gateway GW]
                        [--decap auto|kernel|xdp|userspace] [--enat-reply auto|tc|userspace]
                        [--map-port RPORT:VPORT ...]
    lb realserver teardown [--mode dr|tun|enat]
    lb realserver status

Works on the network namespace it runs in (a host, or ``ip netns exec NS lb realserver ...``).

- **DR**: each VIP /32 on ``lo`` with scope host. ``lo`` rather than a dummy device: it
  exists everywhere (this kernel has no ``dummy`` driver), and scope host keeps the kernel
  from ever choosing the VIP as the source of the server's own connections; accepted
  connections still answer from the VIP. ``arp_ignore=1`` (answer only for addresses of the
  receiving interface) and ``arp_announce=2`` (never use the VIP as ARP source) on ``all``
  and on every other interface: the kernel uses the larger of ``all`` and the device's
  value, so values already higher are left alone. A strict ``rp_filter`` (1) made loose (2)
  on ``all``, ``default`` and every interface: the client's packets come in from the
  director, and the reply route to the client may use another interface.
- **TUN**: the same ARP settings (the VIP is a local address, so without them the server
  would answer ARP for it on a shared LAN), ``rp_filter`` 0 on ``all`` (decapsulated
  packets come in on the tunnel from clients routed elsewhere), then the kernel's ``ipip``
  device if it can make one (VIPs on it, up, its ``rp_filter`` 0), else the XDP decapsulator
  (:mod:`lb.realserver.xdp_decap`) on every interface but lo (VIPs on lo, a strict
  ``rp_filter`` made loose), else -- or with ``--decap userspace`` -- the userspace
  decapsulator ``python -m lb.realserver.decap`` started in the background (its TUN device holds the
  VIPs and goes away with the process).
- **ENAT**: the ENAT reply agent ``python -m lb.realserver.enat_agent`` started in the background (its
  TUN device and the routes ``VIP/32 dev lbenat0`` go away with the process), and a strict
  ``rp_filter`` (1) made loose (2) on ``all``, ``default`` and every interface: the director's
  SYNs come from the VIP, whose route now points at the agent's device. The VIPs must not
  be addresses here (a packet from a local address is a martian). ``--map-port 8080:80``
  when the director maps the virtual port to another real-server port. The replies of the
  connections it has learned are rewritten by a tc program on its device
  (:mod:`lb.realserver.enat_tc`) unless ``--enat-reply userspace``, or the kernel refuses it.
- **FULLNAT** needs nothing here: the server reads the client address from the TOA
  (:mod:`lb.realserver.toa`); setup says so and changes nothing.
- ``--reply-gateway GW``: ``ip rule from VIP lookup T`` and ``default via GW table T``, so
  replies from the VIP leave through GW while everything else keeps the main table (in the
  lab the main default route points at the director, which NAT needs).

Every change is recorded, with the old value, in ``/run/lb-rs/netns-<inode>.json`` before
the next one is made (:mod:`lb.realserver.undo`); teardown undoes exactly those, in reverse order.
DR and TUN may be set up side by side (two VIPs): a change both need (e.g. ``arp_ignore``)
is undone when the last mode using it is torn down. A failed setup is rolled back.
"""
from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lb.realserver import decap, enat_agent, xdp_decap
from lb.realserver.undo import UndoLog, describe, locked, netns_inode, side_file

PKG_ROOT = Path(__file__).resolve().parent.parent
MODES = ("dr", "tun", "enat")
NOOP_MODES = ("fullnat",)
DECAP_CHOICES = ("auto", "kernel", "xdp", "userspace")
ENAT_REPLY_CHOICES = enat_agent.REPLY_PATHS
TABLE_BASE = 4700          # first routing table tried for --reply-gateway replies
RULE_PRIORITY = 1000       # before main (32766)
IPIP_IFNAME, IPIP_FALLBACK = "lbipip0", "tunl0"
RT_SCOPE_HOST = 254
ARP = {"arp_ignore": 1, "arp_announce": 2}


class RealServerError(RuntimeError):
    """A setup/teardown that cannot go on; one line for the user."""


# -- sysctls and processes --------------------------------------------------------------------------

def _sysctl_path(key: str) -> Path:
    return Path("/proc/sys") / key.replace(".", "/")


def read_sysctl(key: str):
    try:
        return _sysctl_path(key).read_text().strip()
    except FileNotFoundError:
        return None


def interfaces() -> list:
    """IPv4 interfaces other than lo, from /proc/sys/net/ipv4/conf."""
    names = os.listdir("/proc/sys/net/ipv4/conf")
    return sorted(n for n in names if n not in ("all", "default", "lo"))


def _start_time(pid: int):
    """Field 22 of /proc/PID/stat: with the PID, names one process for good."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def _netns_of(pid: int):
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


# -- the live namespace ---------------------------------------------------------------------------

class Host:
    """The live namespace: makes one change and returns its undo record, or undoes one."""

    def __init__(self, ipr, inode: int):
        self.ipr, self.inode = ipr, inode

    def index(self, ifname: str):
        found = self.ipr.link_lookup(ifname=ifname)
        return found[0] if found else None

    def addresses(self) -> dict:
        """{address: ifname} of every IPv4 address here."""
        names = {l["index"]: l.get_attr("IFLA_IFNAME") for l in self.ipr.get_links()}
        return {a.get_attr("IFA_ADDRESS"): names.get(a["index"]) for a in self.ipr.get_addr(family=socket.AF_INET)}

    # making changes: each returns the undo record, or None when nothing had to change
    def raise_sysctl(self, key: str, value: int):
        old = read_sysctl(key)
        if old is None or int(old) >= value:
            return None
        return self.set_sysctl(key, value)

    def loosen_rp_filter(self, key: str):
        """Strict (1) -> loose (2); 0 and 2 already let packets from the VIP in."""
        return self.set_sysctl(key, 2) if read_sysctl(key) == "1" else None

    def set_sysctl(self, key: str, value: int):
        old = read_sysctl(key)
        if old is None or int(old) == value:
            return None
        _sysctl_path(key).write_text(f"{value}\n")
        return {"old": old, "new": str(value)}

    def add_addr(self, ifname: str, address: str):
        self.ipr.addr("add", index=self.index(ifname), address=address, prefixlen=32, scope=RT_SCOPE_HOST)
        return {"prefixlen": 32}

    def add_route(self, table: int, gateway: str):
        self.ipr.route("add", dst="0.0.0.0/0", gateway=gateway, table=table)
        return {}

    def add_rule(self, src: str, table: int):
        self.ipr.rule("add", src=src, src_len=32, table=table, priority=RULE_PRIORITY)
        return {"priority": RULE_PRIORITY}

    def link_up(self, ifname: str):
        link = self.ipr.get_links(self.index(ifname))[0]
        if link["flags"] & 1:   # IFF_UP
            return None
        self.ipr.link("set", index=link["index"], state="up")
        return {}

    def attach_xdp(self, ifname: str, fd: int):
        try:
            prog_id, how = xdp_decap.attach(self.ipr, self.index(ifname), fd)
        except Exception as e:
            raise RealServerError(f"cannot attach the XDP decapsulator to {ifname}: {e}"
                                  + (" (it has an XDP program of its own; --decap userspace leaves it alone)"
                                     if getattr(e, "code", None) == errno.EBUSY else "")) from None
        return {"prog_id": prog_id, "xdp_mode": how}

    def free_table(self) -> int:
        used = {r.get_attr("FRA_TABLE") or r["table"] for r in self.ipr.get_rules(family=socket.AF_INET)}
        used |= {r.get_attr("RTA_TABLE") for r in self.ipr.get_routes(family=socket.AF_INET, table=None)}
        return next(t for t in range(TABLE_BASE, TABLE_BASE + 10000) if t not in used)

    # undoing
    def undo(self, item: dict) -> str:
        getattr(self, f"_undo_{item['kind']}")(item)
        return f"undone: {describe(item)}"

    def _undo_sysctl(self, item):
        now = read_sysctl(item["key"])
        if now is None:
            return          # the interface is gone, and its setting with it
        if now != item["new"]:
            raise RealServerError(f"{item['key']} is {now} now, not {item['new']}: changed since setup, left alone")
        _sysctl_path(item["key"]).write_text(f"{item['old']}\n")

    def _undo_addr(self, item):
        index = self.index(item["ifname"])
        if index is not None and item["address"] in self.addresses():
            self.ipr.addr("del", index=index, address=item["address"], prefixlen=item["prefixlen"])

    def _undo_route(self, item):
        with _absent_ok():
            self.ipr.route("del", dst="0.0.0.0/0", gateway=item["gateway"], table=item["table"])

    def _undo_rule(self, item):
        with _absent_ok():
            self.ipr.rule("del", src=item["src"], src_len=32, table=item["table"], priority=item["priority"])

    def _undo_link(self, item):
        index = self.index(item["ifname"])
        if index is not None:
            self.ipr.link("del", index=index)

    def _undo_link_up(self, item):
        index = self.index(item["ifname"])
        if index is not None:
            self.ipr.link("set", index=index, state="down")

    def _undo_xdp(self, item):
        index = self.index(item["ifname"])
        if index is not None and not xdp_decap.detach(self.ipr, index, item["prog_id"], item["xdp_mode"]):
            raise RealServerError(f"{item['ifname']} has another XDP program now, not ours "
                                  f"(id {item['prog_id']}): left alone")

    def _undo_process(self, item):
        item["last_words"] = stop_process(item["pid"], item["start"], self.inode, Path(item["log"]))
        still = self.index(item["ifname"])
        Path(item["stats"]).unlink(missing_ok=True)
        Path(item["log"]).unlink(missing_ok=True)
        if still is not None:
            raise RealServerError(f"{item['ifname']} still exists after {item['name']} stopped")


@contextlib.contextmanager
def _absent_ok():
    """Deleting what is already gone is fine (ENOENT, ESRCH)."""
    try:
        yield
    except Exception as e:
        if getattr(e, "code", None) not in (errno.ENOENT, errno.ESRCH):
            raise


def stop_process(pid: int, start: str, inode: int, log: Path, timeout: float = 5.0) -> str:
    """SIGTERM, then SIGKILL, to `pid` only while it is still the process we started here."""
    if _start_time(pid) != start or _netns_of(pid) != inode:
        return "(already gone)"
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while _start_time(pid) == start and time.monotonic() < deadline:
            time.sleep(0.05)
        if _start_time(pid) != start:
            break
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1] if lines else "(no output)"




# -- setup ------------------------------------------------------------------------------------------

def _check_vips(vips) -> list:
    if not vips:
        raise RealServerError("give at least one --vip")
    try:
        out = [str(ipaddress.IPv4Address(v)) for v in vips]
    except ValueError as e:
        raise RealServerError(f"bad VIP: {e}") from None
    return list(dict.fromkeys(out))


def _check_gateway(gw):
    if gw is None:
        return None
    try:
        return str(ipaddress.IPv4Address(gw))
    except ValueError as e:
        raise RealServerError(f"bad --reply-gateway: {e}") from None


def _need_root() -> None:
    if os.geteuid() != 0:
        raise RealServerError("needs root (it changes addresses, sysctls and routing)")


def setup(mode: str, vips, reply_gateway: str | None = None, decap_how: str = "auto", port_map=None,
          enat_reply: str = "auto") -> str:
    """Prepare this namespace for `mode`; all or nothing. Returns a report."""
    if mode in NOOP_MODES:
        return (f"{mode}: nothing to set up on a real server: the director sends from its own "
                f"addresses and the client address comes in the SYN's TOA (lb.realserver.toa reads it)")
    if mode not in MODES or decap_how not in DECAP_CHOICES or enat_reply not in ENAT_REPLY_CHOICES:
        raise RealServerError(f"bad mode {mode!r}, decap {decap_how!r} or enat reply {enat_reply!r}")
    vips, gw = _check_vips(vips), _check_gateway(reply_gateway)
    port_map = _check_port_map(port_map)
    _need_root()
    from pyroute2 import IPRoute
    inode = netns_inode()
    with locked(), IPRoute() as ipr:
        log, host = UndoLog.load(inode), Host(ipr, inode)
        if log.stale:
            log.path.unlink()
            log = UndoLog.load(inode)
        _refuse_conflicts(log, host, mode, vips)
        log.data["modes"][mode] = {"vips": vips, "reply_gateway": gw, "decap": None}
        if mode == "enat":
            log.data["modes"][mode]["port_map"] = port_map
        log.save()
        lines = []
        try:
            _setup_mode(log, host, mode, vips, gw, decap_how, lines, port_map, enat_reply)
        except BaseException as e:
            undone, errors = log.release(mode, host)
            del log.data["modes"][mode]
            log.save()
            why = e if isinstance(e, RealServerError) else f"{type(e).__name__}: {e}"
            raise RealServerError(f"setup {mode} failed ({why}); rolled back"
                                  + (f"; NOT undone: {'; '.join(errors)}" if errors else "")) from e
    return "\n".join([f"{mode}: set up for {', '.join(vips)} (state {log.path})", *filter(None, lines)])


def _check_port_map(items) -> dict:
    try:
        return {str(k): v for k, v in enat_agent.parse_port_map(items).items()}
    except ValueError as e:
        raise RealServerError(str(e)) from None


def _refuse_conflicts(log: UndoLog, host: Host, mode: str, vips: list) -> None:
    if mode in log.data["modes"]:
        raise RealServerError(f"{mode} is already set up here; run `lb realserver teardown --mode {mode}` first")
    for other, info in log.data["modes"].items():
        if set(vips) & set(info["vips"]):
            raise RealServerError(f"VIP {', '.join(sorted(set(vips) & set(info['vips'])))} is already used by {other}")
    present = host.addresses()
    for vip in vips:
        where = present.get(vip)
        if where and mode == "enat":
            raise RealServerError(f"{vip} is an address on {where}; enat needs it not to be local "
                                  "(the director's packets come from it)")
        if where and not (mode == "dr" and where == "lo"):
            raise RealServerError(f"{vip} is already an address on {where}; {mode} needs it "
                                  f"{'on lo only' if mode == 'dr' else 'on the tunnel device only'}")


def _setup_mode(log, host, mode, vips, gw, decap_how, lines, port_map=None, enat_reply="auto") -> None:
    if mode == "enat":
        _setup_enat(log, host, vips, port_map, lines, enat_reply)
        if gw:
            _setup_reply_route(log, host, mode, vips, gw, lines)
        return
    for key, value in ARP.items():
        for dev in ("all", *interfaces()):
            k = f"net.ipv4.conf.{dev}.{key}"
            lines.append(log.acquire(mode, {"kind": "sysctl", "key": k}, lambda: host.raise_sysctl(k, value)))
    if mode == "dr":
        # The client's packets arrive where the director sends them, which need not be where
        # the reply to the client leaves (the kernel selftest's DR server has a second leg on
        # the client's LAN): strict rp_filter (1) drops them there. Loose (2) keeps the check
        # that the client is routable at all.
        _loosen_rp_filter(log, host, mode, ("all", "default", *interfaces()), lines)
        for vip in vips:
            if host.addresses().get(vip) == "lo":
                lines.append(f"kept: {vip} was already on lo")
                continue
            lines.append(log.acquire(mode, {"kind": "addr", "ifname": "lo", "address": vip},
                                     lambda: host.add_addr("lo", vip)))
    else:
        k = "net.ipv4.conf.all.rp_filter"
        lines.append(log.acquire(mode, {"kind": "sysctl", "key": k}, lambda: host.set_sysctl(k, 0)))
        log.data["modes"][mode]["decap"] = _setup_tunnel(log, host, vips, decap_how, lines)
        log.save()
    if gw:
        _setup_reply_route(log, host, mode, vips, gw, lines)


def _loosen_rp_filter(log, host, mode, devs, lines) -> None:
    """A strict rp_filter made loose on each of `devs` (recorded for `mode`)."""
    for dev in devs:
        k = f"net.ipv4.conf.{dev}.rp_filter"
        lines.append(log.acquire(mode, {"kind": "sysctl", "key": k}, lambda: host.loosen_rp_filter(k)))


def _setup_reply_route(log, host, mode, vips, gw, lines) -> None:
    route = next((c for c in log.data["changes"] if c["kind"] == "route" and c["gateway"] == gw), None)
    table = route["table"] if route else host.free_table()
    try:
        lines.append(log.acquire(mode, {"kind": "route", "table": table, "gateway": gw},
                                 lambda: host.add_route(table, gw)))
    except Exception as e:
        raise RealServerError(f"cannot add default via {gw} (table {table}): {e}") from None
    for vip in vips:
        lines.append(log.acquire(mode, {"kind": "rule", "src": vip, "table": table},
                                 lambda: host.add_rule(vip, table)))


# -- TUN: the kernel's ipip device, or the userspace decapsulator ----------------------------------

def _setup_tunnel(log, host, vips, how, lines) -> str:
    ifname = _kernel_ipip(log, host, lines) if how in ("auto", "kernel") else None
    if ifname is None and how == "kernel":
        raise RealServerError("this kernel cannot make an ipip device (--decap kernel)")
    if ifname is None and how in ("auto", "xdp"):
        done = _setup_xdp(log, host, vips, how, lines)
        if done:
            return done
    if ifname is None:
        lines.append(log.acquire("tun", {"kind": "process", "name": "decap"},
                                 lambda: start_decap(host.inode, vips)))
        return "userspace"
    for vip in vips:
        lines.append(log.acquire("tun", {"kind": "addr", "ifname": ifname, "address": vip},
                                 lambda: host.add_addr(ifname, vip)))
    k = f"net.ipv4.conf.{ifname}.rp_filter"
    lines.append(log.acquire("tun", {"kind": "sysctl", "key": k}, lambda: host.set_sysctl(k, 0)))
    lines.append(log.acquire("tun", {"kind": "link_up", "ifname": ifname}, lambda: host.link_up(ifname)))
    return f"kernel ({ifname})"


def _setup_xdp(log, host, vips, how, lines):
    """The XDP decapsulator (lb.realserver.xdp_decap) on every interface but lo, the VIPs on lo
    (scope host, as for DR: the inner packets are for a local address), a strict rp_filter made
    loose where they come in. None when the program cannot be loaded here and `how` is auto
    (the userspace decapsulator then)."""
    try:
        fd = xdp_decap.load(xdp_decap.program(vips))
    except (OSError, ValueError) as e:
        if how == "xdp":
            raise RealServerError(str(e)) from None
        lines.append(f"xdp: not used ({e}); the userspace decapsulator instead")
        return None
    devs = [d for d in interfaces() if host.index(d) is not None]
    try:
        for vip in vips:        # first: a packet decapsulated must find its address here
            lines.append(log.acquire("tun", {"kind": "addr", "ifname": "lo", "address": vip},
                                     lambda: host.add_addr("lo", vip)))
        _loosen_rp_filter(log, host, "tun", ("default", *devs), lines)   # (all: 0 already)
        for dev in devs:
            lines.append(log.acquire("tun", {"kind": "xdp", "ifname": dev}, lambda: host.attach_xdp(dev, fd)))
    finally:
        os.close(fd)
    return f"xdp ({', '.join(devs) or 'no interface yet'})"


def _kernel_ipip(log, host, lines):
    """Our own ipip device (recorded), the fallback tunl0 if it takes every IPIP packet
    already, or None when the kernel has no ipip."""
    if host.index(IPIP_IFNAME) is not None:
        raise RealServerError(f"{IPIP_IFNAME} exists but is not ours (not in {log.path})")

    def create():
        host.ipr.link("add", ifname=IPIP_IFNAME, kind="ipip")
        return {"link_kind": "ipip"}
    try:
        lines.append(log.acquire("tun", {"kind": "link", "ifname": IPIP_IFNAME}, create))
        return IPIP_IFNAME
    except Exception as e:
        code = getattr(e, "code", None)
        if code == errno.EEXIST and host.index(IPIP_FALLBACK) is not None:
            return IPIP_FALLBACK   # tunl0 (no local/remote) already owns what ours would match
        if code in (errno.EOPNOTSUPP, errno.ENODEV, errno.EINVAL):
            return None
        raise


def start_decap(inode: int, vips, timeout: float = 10.0) -> dict:
    """Start lb.realserver.decap in the background (own session) and wait for its ``ready`` line."""
    return _start_daemon("decap", inode, [f"--vip={v}" for v in vips], decap.DEFAULT_IFNAME, timeout)


def _setup_enat(log, host, vips, port_map, lines, reply_path: str = "auto") -> None:
    _loosen_rp_filter(log, host, "enat", ("all", "default", *interfaces()), lines)
    started = {}

    def start():
        started.update(start_enat_agent(host.inode, vips, port_map, reply_path=reply_path))
        return started

    lines.append(log.acquire("enat", {"kind": "process", "name": "enat_agent"}, start))
    # the agent says where replies are rewritten ("reply=tc": its tc program, lb.realserver.enat_tc)
    words = dict(w.split("=", 1) for w in started.get("ready", "").split()[1:] if "=" in w)
    log.data["modes"]["enat"]["agent"] = words.get("reply", "userspace")
    log.save()


def start_enat_agent(inode: int, vips, port_map=None, timeout: float = 10.0, reply_path: str = "auto") -> dict:
    """Start lb.realserver.enat_agent in the background (own session) and wait for its ``ready`` line."""
    args = [f"--vip={v}" for v in vips] + [f"--map-port={r}:{v}" for r, v in (port_map or {}).items()]
    args.append(f"--reply-path={reply_path}")
    return _start_daemon("enat_agent", inode, args, enat_agent.DEFAULT_IFNAME, timeout)


def _start_daemon(name: str, inode: int, args, ifname: str, timeout: float) -> dict:
    """``python -m lb.<name> --ifname IF --stats-file F ARGS`` in its own session; the undo record."""
    stats, log = side_file(inode, f"{name}.json"), side_file(inode, f"{name}.log")
    stats.unlink(missing_ok=True)
    argv = [sys.executable, "-m", f"lb.realserver.{name}", "--ifname", ifname, "--stats-file", str(stats), *args]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PKG_ROOT), env.get("PYTHONPATH")]))
    with open(log, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=env, start_new_session=True, cwd="/")
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        line = proc.stdout.readline() if sel.select(timeout) else b""
    proc.stdout.close()
    if not line.startswith(b"ready"):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        text = log.read_text(errors="replace").strip()
        log.unlink(missing_ok=True)
        raise RealServerError(f"lb.realserver.{name} did not start: {text[-500:] or 'no output'}")
    return {"pid": proc.pid, "start": _start_time(proc.pid), "argv": argv, "ifname": ifname,
            "stats": str(stats), "log": str(log), "ready": line.decode(errors="replace").strip()}


# -- teardown and status ------------------------------------------------------------------------------

def teardown(mode: str | None = None) -> tuple[str, bool]:
    """Undo what setup recorded for `mode` (all modes if None). Returns (report, all undone)."""
    _need_root()
    from pyroute2 import IPRoute
    inode = netns_inode()
    with locked(), IPRoute() as ipr:
        log = UndoLog.load(inode)
        if log.stale:
            log.path.unlink()
            return "stale state of a namespace that no longer exists removed; nothing undone", True
        if not log.data["modes"] and not log.data["changes"]:
            return "nothing set up in this network namespace", True
        if mode in NOOP_MODES:
            return f"{mode}: nothing was set up for it", True
        if mode is not None and mode not in log.data["modes"]:
            raise RealServerError(f"{mode} is not set up here (set up: {', '.join(log.data['modes']) or 'none'})")
        out, errors = [], []
        for m in [mode] if mode else list(reversed(log.data["modes"])):
            done, failed = log.release(m, Host(ipr, inode))
            del log.data["modes"][m]
            log.save()
            out += [f"{m}: torn down", *done]
            errors += failed
        if mode is None and log.data["changes"]:
            done, failed = log.release(None, Host(ipr, inode))   # retry leftovers of earlier runs
            out += done
            errors += failed
    return "\n".join(out + errors), not errors


def status() -> str:
    inode = netns_inode()
    log = UndoLog.load(inode)
    head = f"network namespace inode {inode}, state {log.path}"
    if log.stale:
        return f"{head}: stale (recorded for a namespace that is gone)"
    if not log.data["modes"] and not log.data["changes"]:
        return f"{head}: nothing set up"
    lines = [head]
    for mode, info in log.data["modes"].items():
        gw = f" replies via {info['reply_gateway']}" if info["reply_gateway"] else ""
        how = f" decap {info['decap']}" if info["decap"] else ""
        how += f" agent {info['agent']}" if info.get("agent") else ""
        how += f" ports {info['port_map']}" if info.get("port_map") else ""
        lines.append(f"{mode}: vips {', '.join(info['vips'])}{gw}{how}")
    for item in log.data["changes"]:
        lines.append(f"  {describe(item)}  [{', '.join(item['users']) or 'orphan'}]{_live(item, inode)}")
    return "\n".join(lines)


def _live(item: dict, inode: int) -> str:
    if item["kind"] == "sysctl":
        now = read_sysctl(item["key"])
        return "" if now == item["new"] else f"  (now {now})"
    if item["kind"] != "process":
        return ""
    alive = _start_time(item["pid"]) == item["start"] and _netns_of(item["pid"]) == inode
    try:
        counters = json.loads(Path(item["stats"]).read_text())["counters"]
        text = " ".join(f"{k}={v}" for k, v in counters.items())
    except (OSError, ValueError, KeyError):
        text = "no counters yet"
    return f"  {'running' if alive else 'NOT RUNNING'}; {text}"


def run(a) -> int:
    """``lb realserver`` with the parsed arguments (see lb/__main__.py)."""
    try:
        if a.action == "setup":
            if not a.mode:
                raise RealServerError("setup needs --mode dr|tun|enat|fullnat")
            print(setup(a.mode, a.vip or [], a.reply_gateway, a.decap, getattr(a, "map_port", None),
                        getattr(a, "enat_reply", "auto")))
            return 0
        if a.action == "teardown":
            text, ok = teardown(a.mode)
            print(text)
            return 0 if ok else 1
        print(status())
        return 0
    except RealServerError as e:
        print(f"lb realserver: {e}", file=sys.stderr)
        return 1
