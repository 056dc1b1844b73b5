"""The namespace lab: the project's built-in default topology, built with pyroute2.

```
 client ns ─veth─ router ns ─ br0 (LAN 198.18.0.0/24) ─┬─ director ns  eth0 198.18.0.2 + VIPs/32
 198.18.1.2       198.18.1.1 / 198.18.0.1              ├─ rs1 ns       eth0 198.18.0.11
                                                       ├─ rs2 ns       eth0 198.18.0.12
                                                       └─ rs3 ns       eth0 198.18.0.13
```
One VIP per forwarding mode, all held by the director on eth0 (its kernel answers ARP for
them; the router reaches them on-link): NAT 198.18.0.100, DR 198.18.0.101, TUN 198.18.0.102,
FULLNAT 198.18.0.103, ENAT 198.18.0.104; and FULLNAT's local addresses (the source of what
the director sends on to the real servers), LIPs 198.18.0.3 and .4 (``addr["lips"]``).
The real servers' default gateway stays the director (NAT needs it);
:meth:`Lab.setup_realservers` runs ``lb realserver setup`` in every RS so that DR and TUN
replies, which leave from the VIP, go straight to the router by a policy rule.

``Lab(rs_net="routed")`` puts the real servers on a network of their own, which the director
reaches only through the router (FULLNAT and ENAT need no shared segment):

```
 client ns ─veth─ router ns ─ br0 (LAN 198.18.0.0/24) ── director ns  eth0 198.18.0.2 + VIPs + LIPs
 198.18.1.2       198.18.1.1 ├ 198.18.0.1
                             └ br1 (198.18.2.0/24) ─┬─ rs1 ns  eth0 198.18.2.11
                               198.18.2.1           ├─ rs2 ns  eth0 198.18.2.12
                                                    └─ rs3 ns  eth0 198.18.2.13
```
There the real servers' default gateway is the router, the director routes 198.18.2.0/24
via the router, and the router's ``rp_filter`` is 0: ENAT replies come from the RS network
with the VIP (whose route points at the LAN) as source, and go straight to the client.

Every namespace is called ``<prefix>-<role>``; all links are created from inside the
router namespace, so the host namespace never holds a lab interface. Teardown kills the
processes living in the lab's namespaces (by PID, checked against the namespace), then
removes every namespace whose name starts with ``<prefix>-``. A state file in
``/run/lb-lab/<prefix>.json`` lets ``lb lab down`` in another process do the same.

By default (``Lab(offloads="on")``) the offloads stay as veths come (tx checksumming, TSO/GSO
on), as in any container:
lbd takes partial checksums and GSO aggregates through PACKET_VNET_HDR, and lb trace marks a
partial checksum "partial (offloaded)" when it holds the right pseudo-header sum (the capture
knows it from PACKET_AUXDATA, :mod:`lb.lab.capture`). ``Lab(offloads="off")`` (``--offloads
off``) turns them off on every lab interface (:func:`disable_offloads`), for comparisons:
complete checksums and wire-sized frames everywhere.

The namespace helpers are in :mod:`lb.lab.net`, the test servers in :mod:`lb.lab.servers`,
the lab's lbd process in :mod:`lb.lab.lbd` and ``lb demo`` in :mod:`lb.lab.demo`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

from pyroute2 import netns
from pyroute2.ethtool import Ethtool

from lb.lab.net import (NETNS_DIR, LabError, disable_offloads,
                       icmp_checksum, in_netns, iproute, offloads_on, pid_alive, pids_in_netns,
                       signals_deferred, write_sysctls)

STATE_DIR = Path("/run/lb-lab")
PKG_ROOT = Path(__file__).resolve().parent.parent
HTTP_PORT = 80
UDP_PORT = 5353
LAN_IF = "eth0"          # the single interface of client, director and every RS
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{1,15}$")


# The VIP of each forwarding mode (the NAT one is also addr["vip"], as before).
VIPS = {"nat": "198.18.0.100", "dr": "198.18.0.101", "tun": "198.18.0.102",
        "fullnat": "198.18.0.103", "enat": "198.18.0.104"}
LIPS = ["198.18.0.3", "198.18.0.4"]     # FULLNAT local addresses of the director
RS_NETS = ("lan", "routed")


def new_prefix() -> str:
    return "lb" + secrets.token_hex(3)


class Lab:
    """The lab topology. ``with Lab() as lab:`` builds it and always removes it."""

    HTTP_PORT = HTTP_PORT
    UDP_PORT = UDP_PORT

    def __init__(self, prefix: str | None = None, n_rs: int = 3, rs_gateway: str | None = None,
                 rs_net: str = "lan", offloads: str = "on", backup_director: bool = False):
        self.prefix = prefix or new_prefix()
        if not PREFIX_RE.match(self.prefix):
            raise ValueError(f"bad lab prefix {self.prefix!r} (want [a-z][a-z0-9]{{1,15}})")
        if not 1 <= n_rs <= 80:
            raise ValueError("n_rs must be 1..80")
        if offloads not in ("on", "off"):
            raise ValueError("offloads must be 'on' (as the veths come) or 'off'")
        self.offloads = offloads
        if rs_net not in RS_NETS:
            raise ValueError("rs_net must be 'lan' or 'routed'")
        rs_gateway = rs_gateway or ("director" if rs_net == "lan" else "router")
        if rs_gateway not in ("director", "router"):
            raise ValueError("rs_gateway must be 'director' or 'router'")
        if rs_net == "routed" and rs_gateway == "director":
            raise ValueError("routed real servers cannot have the director as gateway (it is not on their network)")
        self.n_rs, self.rs_gateway, self.rs_net = n_rs, rs_gateway, rs_net
        self.rs_names = [f"rs{i}" for i in range(1, n_rs + 1)]
        # backup_director: a second director, "director2" (eth0 198.18.0.5, no VIP), on the
        # LAN next to the first, for an active/backup pair (VRRP moves the VIPs between them).
        self.directors = ["director", "director2"] if backup_director else ["director"]
        self.roles = ["client", "router", *self.directors, *self.rs_names]
        self.addr = {
            "client": "198.18.1.2", "router": "198.18.1.1", "router_lan": "198.18.0.1",
            "director": "198.18.0.2", "director2": "198.18.0.5", "vip": VIPS["nat"], "vips": dict(VIPS), "lips": list(LIPS),
            "rs": [f"198.18.{0 if rs_net == 'lan' else 2}.{10 + i}" for i in range(1, n_rs + 1)],
        }
        if rs_net == "routed":
            self.addr.update({"router_rs": "198.18.2.1", "rs_net": "198.18.2.0/24"})
        self.director_ifname = LAN_IF
        self.state_file = STATE_DIR / f"{self.prefix}.json"
        self.log_dir = STATE_DIR / self.prefix
        self._procs = {}          # pid -> {"role", "argv", "popen" (None if from state file)}
        self._vip_echo = {}       # mode -> [pid of a UDP echo bound to that mode's VIP, per RS]
        self._lock = threading.RLock()
        self._owner_pid = os.getpid()
        self._creator_pid = os.getpid()

    # -- names -------------------------------------------------------------------
    def ns(self, role: str) -> str:
        if role not in self.roles:
            raise KeyError(f"no role {role!r} in lab {self.prefix} (roles: {', '.join(self.roles)})")
        return f"{self.prefix}-{role}"

    @property
    def ns_prefix(self) -> str:
        return f"{self.prefix}-"

    def namespaces(self) -> list:
        """Namespaces of this lab that exist now (any name with the prefix)."""
        return sorted(n for n in netns.listnetns() if n.startswith(self.ns_prefix))

    def rs_addr(self, name: str) -> str:
        return self.addr["rs"][self.rs_names.index(name)]

    def logfile(self, name: str) -> Path:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        return self.log_dir / f"{name}.log"

    # -- life cycle ----------------------------------------------------------------
    def __enter__(self):
        return self.up()

    def __exit__(self, *exc):
        self.down()
        return False

    def up(self) -> "Lab":
        """Build the topology; on any failure (or Ctrl-C) remove what was built and re-raise.

        Signals wait until the build (about 0.1 s) ends: a namespace being created by
        pyroute2's forked helper when Ctrl-C comes would otherwise appear after teardown.
        """
        try:
            with signals_deferred():
                self._save_state()
                self._create_namespaces()
                self._build_links()
                if self.offloads == "off":       # for comparisons: lbd needs it not
                    self._disable_all_offloads()
                self._configure()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Stop the lab's processes, remove its namespaces and state. Safe to call twice."""
        if os.getpid() != self._creator_pid:
            return  # a forked copy of this process (library helper) unwinding: not its lab
        with signals_deferred(), self._lock:
            self._stop_processes()
            for name in self.namespaces():
                self._forget_realserver_state(name)
                with contextlib.suppress(OSError):
                    netns.remove(name)
            self.state_file.unlink(missing_ok=True)
            shutil.rmtree(self.log_dir, ignore_errors=True)

    # -- building ------------------------------------------------------------------
    def _create_namespaces(self) -> None:
        for role in self.roles:
            netns.create(self.ns(role))
            with in_netns(self.ns(role)):
                # No IPv6: link-local, DAD and MLD frames would be noise for the fast path.
                write_sysctls({"net.ipv6.conf.all.disable_ipv6": 1, "net.ipv6.conf.default.disable_ipv6": 1})

    def _build_links(self) -> None:
        """All veths are made in the router ns with the peer placed straight in its namespace."""
        with iproute(self.ns("router")) as ipr:
            for br in self._bridges():
                ipr.link("add", ifname=br, kind="bridge", br_stp_state=0, br_forward_delay=0)
            ipr.link("add", ifname="to-client", kind="veth",
                     peer={"ifname": LAN_IF, "net_ns_fd": self.ns("client")})
            for role in [*self.directors, *self.rs_names]:
                port = f"p-{role}"
                ipr.link("add", ifname=port, kind="veth", peer={"ifname": LAN_IF, "net_ns_fd": self.ns(role)})
                ipr.link("set", index=ipr.link_lookup(ifname=port)[0],
                         master=ipr.link_lookup(ifname=self._bridge_of(role))[0])

    def _bridges(self) -> list:
        return ["br0"] if self.rs_net == "lan" else ["br0", "br1"]

    def _bridge_of(self, role: str) -> str:
        return "br1" if self.rs_net == "routed" and role in self.rs_names else "br0"

    def _disable_all_offloads(self) -> None:
        router_ifs = [*self._bridges(), "to-client", *(f"p-{r}" for r in [*self.directors, *self.rs_names])]
        for role in self.roles:
            with in_netns(self.ns(role)):
                left = disable_offloads(router_ifs if role == "router" else [LAN_IF])
            bad = {k: v for k, v in left.items() if v}
            if bad:
                raise LabError(f"offloads still on in {self.ns(role)}: {bad}")

    def _configure(self) -> None:
        routed = self.rs_net == "routed"
        gw = {"director": self.addr["director"], "router": self.addr.get("router_rs", self.addr["router_lan"])}
        self._setup("router", [("to-client", self.addr["router"], 24), ("br0", self.addr["router_lan"], 24),
                               *([("br1", self.addr["router_rs"], 24)] if routed else [])],
                    up=[f"p-{r}" for r in [*self.directors, *self.rs_names]])
        self._setup("client", [(LAN_IF, self.addr["client"], 24)], gateway=self.addr["router"])
        self._setup("director", [(LAN_IF, self.addr["director"], 24),
                                 *((LAN_IF, a, 32) for a in [*self.addr["vips"].values(), *self.addr["lips"]])],
                    gateway=self.addr["router_lan"])
        if "director2" in self.directors:
            self._setup("director2", [(LAN_IF, self.addr["director2"], 24)],
                        gateway=self.addr["router_lan"])
        for name, rip in zip(self.rs_names, self.addr["rs"]):
            self._setup(name, [(LAN_IF, rip, 24)], gateway=gw[self.rs_gateway])
        if routed:
            with iproute(self.ns("director")) as ipr:
                ipr.route("add", dst=self.addr["rs_net"], gateway=self.addr["router_lan"])
        with iproute(self.ns("router")) as ipr:
            # The director owns the VIPs and LIPs: say so explicitly (covered by the /24
            # today, but later modes may move one out of the LAN prefix).
            for address in [*self.addr["vips"].values(), *self.addr["lips"]]:
                ipr.route("add", dst=address, dst_len=32, oif=ipr.link_lookup(ifname="br0")[0], scope=253)
        for role, values in self._sysctls().items():
            with in_netns(self.ns(role)):
                write_sysctls(values)

    def _setup(self, role, addrs, up=(), gateway=None) -> None:
        with iproute(self.ns(role)) as ipr:
            for ifname in ["lo", *up, *dict.fromkeys(a[0] for a in addrs)]:
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")
            for ifname, address, plen in addrs:
                ipr.addr("add", index=ipr.link_lookup(ifname=ifname)[0], address=address, prefixlen=plen)
            if gateway:
                ipr.route("add", dst="0.0.0.0/0", gateway=gateway)

    def _sysctls(self) -> dict:
        no_redirects = {f"net.ipv4.conf.{d}.send_redirects": 0 for d in ("all", "default", LAN_IF)}
        # A host accepting ICMP redirects would learn to bypass the director (NAT replies
        # must come back through it); the director must not send them (it forwards on the
        # interface the frame arrived on, which is exactly when the kernel redirects).
        no_accept = {f"net.ipv4.conf.{d}.accept_redirects": 0 for d in ("all", "default", LAN_IF)}
        # Routed: ENAT replies enter the router from the RS network with the VIP (routed to
        # the LAN) as source; a strict reverse-path filter would drop every one of them.
        rp_off = {f"net.ipv4.conf.{d}.rp_filter": 0 for d in ("all", "default", *self._bridges())}
        out = {"router": {"net.ipv4.ip_forward": 1, **(rp_off if self.rs_net == "routed" else {})}, "client": {},
               "director": {"net.ipv4.ip_forward": 0, **no_redirects}}
        if "director2" in self.directors:
            out["director2"] = dict(out["director"])
        out.update({name: dict(no_accept) for name in self.rs_names})
        return out

    # -- state file ----------------------------------------------------------------
    def _save_state(self) -> None:
        with self._lock:
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            state = {
                "prefix": self.prefix, "ns_prefix": self.ns_prefix, "n_rs": self.n_rs,
                "rs_gateway": self.rs_gateway, "rs_net": self.rs_net, "owner_pid": self._owner_pid,
                "namespaces": [self.ns(r) for r in self.roles], "addr": self.addr,
                "processes": {str(p): {"role": v["role"], "argv": v["argv"]} for p, v in self._procs.items()},
            }
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=1) + "\n")
            tmp.replace(self.state_file)

    @classmethod
    def from_state(cls, prefix: str) -> "Lab":
        """A handle on a lab another process built (for ``lb lab down`` / ``status``)."""
        state = json.loads((STATE_DIR / f"{prefix}.json").read_text())
        lab = cls(prefix=state["prefix"], n_rs=state["n_rs"], rs_gateway=state["rs_gateway"],
                  rs_net=state.get("rs_net", "lan"))
        lab._owner_pid = state.get("owner_pid")
        for pid, info in state.get("processes", {}).items():
            lab._procs[int(pid)] = {"role": info["role"], "argv": info["argv"], "popen": None}
        return lab

    # -- processes -----------------------------------------------------------------
    def env(self) -> dict:
        """Environment for lab processes: `lb` importable from this source tree."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PKG_ROOT), env.get("PYTHONPATH")]))
        return env

    def _argv(self, role: str, argv) -> list:
        return ["ip", "netns", "exec", self.ns(role), *map(str, argv)]

    def popen(self, role: str, argv, **kw) -> subprocess.Popen:
        """Start argv inside the role's namespace; the lab stops it on down()."""
        kw.setdefault("env", self.env())
        kw.setdefault("start_new_session", True)  # Ctrl-C reaches us; we stop children in order
        proc = subprocess.Popen(self._argv(role, argv), **kw)
        with self._lock:
            self._procs[proc.pid] = {"role": role, "argv": [str(a) for a in argv], "popen": proc}
            self._save_state()
        return proc

    def run(self, role: str, argv, timeout: float, **kw) -> subprocess.CompletedProcess:
        kw.setdefault("env", self.env())
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self._argv(role, argv), timeout=timeout, **kw)

    def stop_process(self, pid: int, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; only PIDs this lab started."""
        with self._lock:
            info = self._procs.get(pid)
        if info is None:
            raise LabError(f"pid {pid} was not started by lab {self.prefix}")
        self._terminate({pid: info}, timeout)

    def _stop_processes(self, timeout: float = 5.0) -> None:
        names = self.namespaces()
        own_ns = pids_in_netns(names)
        targets = {}
        for pid, info in self._procs.items():
            # A PID from a state file is only ours while it still lives in our namespace.
            if info["popen"] is not None or pid in own_ns:
                targets[pid] = info
        for pid in own_ns - set(targets):
            targets[pid] = {"role": "?", "argv": [], "popen": None}
        self._terminate(targets, timeout)

    def _terminate(self, targets: dict, timeout: float) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid, info in targets.items():
                if self._reap(pid, info) is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and any(self._reap(p, i) is None for p, i in targets.items()):
                time.sleep(0.05)
        with self._lock:
            for pid in targets:
                self._procs.pop(pid, None)
            if self.state_file.exists():
                self._save_state()

    @staticmethod
    def _reap(pid: int, info: dict):
        """None while running, else an exit status (or True if not our child and gone)."""
        if info["popen"] is not None:
            return info["popen"].poll()
        return None if pid_alive(pid) else True

    def start_servers(self, http_port: int = HTTP_PORT, udp_port: int = UDP_PORT, timeout: float = 10.0,
                      names=None) -> dict:
        """Start lb.lab.servers on every RS (or those in `names`) and wait until each listens.
        Returns {name: Popen}."""
        procs = {}
        for name in names or self.rs_names:
            with open(self.logfile(name), "wb") as log:
                procs[name] = self.popen(name, [sys.executable, "-m", "lb.lab.servers", "--name", name,
                                                "--http-port", http_port, "--udp-port", udp_port],
                                         stdout=subprocess.PIPE, stderr=log)
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            self._wait_ready(name, proc, deadline)
        return procs

    def server_pids(self, name: str) -> list:
        """The PIDs of the lab servers (lb.lab.servers) this lab runs on RS `name`."""
        with self._lock:
            return [pid for pid, info in self._procs.items() if info["role"] == name
                    and "lb.lab.servers" in [str(a) for a in info["argv"]]]

    def _wait_ready(self, name: str, proc: subprocess.Popen, deadline: float) -> None:
        import selectors
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            ready = sel.select(max(0.0, deadline - time.monotonic()))
        line = proc.stdout.readline() if ready else b""
        proc.stdout.close()
        if line.strip() != b"ready":
            log = self.logfile(name).read_text(errors="replace")[-2000:]
            raise LabError(f"lab server on {name} did not start (rc={proc.poll()}):\n{log}")

    # -- real servers for DR and TUN ----------------------------------------------------
    def setup_realservers(self, mode: str, vip: str | None = None, udp_echo: bool | None = None,
                          timeout: float = 30.0, enat_reply: str = "userspace") -> None:
        """``lb realserver setup --mode M --vip VIP --reply-gateway <router>`` in every RS.

        Modes dr, tun, enat (the ENAT agent) and fullnat (nothing to change). With
        `udp_echo` (default: for dr and tun), also a lab UDP echo bound to the VIP on
        UDP_PORT in every RS: the lab servers' wildcard socket answers from the address
        routing picks (the RIP), and a DR/TUN reply must come from the VIP (a TCP
        connection does so by itself).
        """
        if mode not in ("dr", "tun", "enat", "fullnat"):
            raise ValueError("mode must be 'dr', 'tun', 'enat' or 'fullnat'")
        vip = vip or self.addr["vips"][mode]
        gw = self.addr.get("router_rs", self.addr["router_lan"])
        # TUN: the userspace decapsulator, not the faster XDP program `auto` would choose: its
        # TUN device is where the lab's traces show each packet as decapsulated. ENAT likewise:
        # every reply through the agent, none taken by its tc program before the capture point
        # (`enat_reply="tc"` for tests of that program)
        how = {"tun": ["--decap", "userspace"], "enat": ["--enat-reply", enat_reply]}.get(mode, [])
        for name in self.rs_names:
            r = self.run(name, [sys.executable, "-m", "lb", "realserver", "setup", "--mode", mode,
                                "--vip", vip, "--reply-gateway", gw, *how], timeout=timeout)
            if r.returncode:
                raise LabError(f"lb realserver setup on {name} failed: {r.stderr.strip() or r.stdout.strip()}")
        if udp_echo if udp_echo is not None else mode in ("dr", "tun"):
            self._start_vip_echo(mode, vip)

    def _start_vip_echo(self, mode: str, vip: str, timeout: float = 10.0) -> None:
        procs = {}
        for name in self.rs_names:
            with open(self.logfile(f"{name}-{mode}-udp"), "wb") as log:
                procs[name] = self.popen(name, [sys.executable, "-m", "lb.lab.servers", "--udp-only", "--name", name, "--host", vip, "--udp-port", UDP_PORT],
                                         stdout=subprocess.PIPE, stderr=log)
            self._vip_echo.setdefault(mode, []).append(procs[name].pid)
        deadline = time.monotonic() + timeout
        for name, proc in procs.items():
            self._wait_ready(f"{name}-{mode}-udp", proc, deadline)

    def teardown_realservers(self, mode: str | None = None, timeout: float = 30.0) -> None:
        """Undo setup_realservers (one mode, or all): every RS exactly as before."""
        for m in [mode] if mode else list(self._vip_echo):
            for pid in self._vip_echo.pop(m, []):
                with contextlib.suppress(LabError):
                    self.stop_process(pid)
        errors = []
        for name in self.rs_names:
            argv = [sys.executable, "-m", "lb", "realserver", "teardown", *(["--mode", mode] if mode else [])]
            r = self.run(name, argv, timeout=timeout)
            if r.returncode:
                errors.append(f"{name}: {r.stderr.strip() or r.stdout.strip()}")
        if errors:
            raise LabError("lb realserver teardown failed: " + "; ".join(errors))

    @staticmethod
    def _forget_realserver_state(name: str) -> None:
        """The namespace goes, and the changes lb realserver made in it with it: drop its files."""
        from lb.realserver import undo
        with contextlib.suppress(OSError):
            undo.forget_netns(os.stat(NETNS_DIR / name).st_ino)

    # -- probes ----------------------------------------------------------------------
    def socket(self, role: str, family=socket.AF_INET, type=socket.SOCK_DGRAM, proto=0) -> socket.socket:
        """A socket living in the role's namespace (usable from this process)."""
        with in_netns(self.ns(role)):
            return socket.socket(family, type, proto)

    def ping(self, role: str, dst: str, tries: int = 3, interval: float = 1.0) -> bool:
        """ICMP echo from the role's namespace, one request per `interval` until a reply.

        A raw socket, so no ping binary is needed. The identifier is random, so replies
        to another lab's pings (same addresses, other namespace) cannot be mistaken.
        """
        ident = secrets.randbits(16)
        with self.socket(role, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as s:
            for seq in range(1, tries + 1):
                body = struct.pack("!HH", ident, seq) + b"lb-lab"
                s.sendto(struct.pack("!BBH", 8, 0, icmp_checksum(b"\x08\0\0\0" + body)) + body, (dst, 0))
                if self._echo_reply(s, dst, ident, time.monotonic() + interval):
                    return True
        return False

    @staticmethod
    def _echo_reply(s: socket.socket, dst: str, ident: int, deadline: float) -> bool:
        while (left := deadline - time.monotonic()) > 0:
            s.settimeout(left)
            try:
                data, peer = s.recvfrom(2048)
            except socket.timeout:
                return False
            icmp = data[(data[0] & 0x0F) * 4:]
            if peer[0] == dst and icmp[:1] == b"\0" and icmp[4:6] == struct.pack("!H", ident):
                return True
        return False

    def udp_query(self, role: str, dst: str, port: int, payload: bytes, timeout: float = 2.0):
        """Send one datagram from a fresh socket (new source port = new flow); the reply or None."""
        with self.socket(role, socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(payload, (dst, port))
            try:
                return s.recvfrom(65535)[0]
            except socket.timeout:
                return None

    def http_get(self, role: str, url: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
        """curl inside the role's namespace (a real client, one TCP connection per call)."""
        return self.run(role, ["curl", "-sS", "--max-time", timeout, url], timeout=timeout + 5)

    # -- kernel baseline -----------------------------------------------------------------
    def enable_kernel_lb(self, ports=(("tcp", HTTP_PORT), ("udp", UDP_PORT))) -> None:
        """Kernel baseline: ip_forward=1 and an nftables DNAT round robin in the director."""
        targets = ", ".join(f"{i} : {a}" for i, a in enumerate(self.addr["rs"]))
        rules = "".join(f"    ip daddr {self.addr['vip']} {proto} dport {port} "
                        f"dnat to numgen inc mod {self.n_rs} map {{ {targets} }}\n" for proto, port in ports)
        script = ("table ip lb_kernel {\n  chain prerouting {\n"
                  "    type nat hook prerouting priority dstnat; policy accept;\n" + rules + "  }\n}\n")
        r = self.run("director", ["nft", "-f", "-"], timeout=10, input=script)
        if r.returncode:
            raise LabError(f"nft failed: {r.stderr}")
        with in_netns(self.ns("director")):
            write_sysctls({"net.ipv4.ip_forward": 1})

    def disable_kernel_lb(self) -> None:
        with in_netns(self.ns("director")):
            write_sysctls({"net.ipv4.ip_forward": 0})
        self.run("director", ["nft", "delete", "table", "ip", "lb_kernel"], timeout=10)

    # -- reporting -------------------------------------------------------------------------
    def status(self) -> str:
        present = set(self.namespaces())
        owner = self._owner_pid
        vips = " ".join(f"{m}={v}" for m, v in self.addr["vips"].items())
        lines = [f"lab {self.prefix}: rs_net={self.rs_net} rs_gateway={self.rs_gateway} vips {vips} "
                 f"owner pid {owner} ({'alive' if owner and pid_alive(owner) else 'gone'})"]
        for role in self.roles:
            name = self.ns(role)
            addrs = self._addresses(name) if name in present else "(missing)"
            lines.append(f"  {role:<9} {name:<22} {addrs}")
        for pid, info in sorted(self._procs.items()):
            state = "running" if pid_alive(pid) else "gone"
            lines.append(f"  pid {pid:<7} {info['role']:<9} {state:<8} {' '.join(info['argv'])}")
        return "\n".join(lines)

    @staticmethod
    def _addresses(name: str) -> str:
        with iproute(name) as ipr:
            names = {l["index"]: l.get("ifname") for l in ipr.get_links()}
            return " ".join(f"{names.get(a['index'])}:{a.get('address')}/{a['prefixlen']}"
                            for a in ipr.get_addr(family=socket.AF_INET) if names.get(a["index"]) != "lo")

    def offload_report(self) -> dict:
        """{namespace: {ifname: [MUST_BE_OFF features that are on]}} — all empty when right."""
        out = {}
        for role in self.roles:
            with iproute(self.ns(role)) as ipr:
                ifs = [l.get("ifname") for l in ipr.get_links() if l.get("ifname") != "lo"]
            with in_netns(self.ns(role)), Ethtool() as et:
                out[self.ns(role)] = {i: offloads_on(et, i) for i in ifs}
        return out


# -- every lab on this machine ---------------------------------------------------------------
def list_labs() -> list:
    """Prefixes of the labs recorded in STATE_DIR."""
    if not STATE_DIR.is_dir():
        return []
    return sorted(p.stem for p in STATE_DIR.glob("*.json") if PREFIX_RE.match(p.stem))


def down_lab(prefix: str) -> None:
    """Remove a lab by prefix, with or without its state file."""
    try:
        lab = Lab.from_state(prefix)
    except (OSError, ValueError, KeyError):
        lab = Lab(prefix=prefix)
    lab.down()


def down_all() -> list:
    """Remove every lab recorded in STATE_DIR; returns their prefixes."""
    prefixes = list_labs()
    for prefix in prefixes:
        down_lab(prefix)
    return prefixes


def status_all() -> str:
    out = []
    for prefix in list_labs():
        try:
            out.append(Lab.from_state(prefix).status())
        except (OSError, ValueError, KeyError) as e:
            out.append(f"lab {prefix}: unreadable state ({e})")
    return "\n".join(out) or "no labs"

