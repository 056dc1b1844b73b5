"""The shell of ``lb trace``: a lab with lbd, the modes configured as ``lb demo`` does, one TCP
connection and one UDP exchange per mode captured at every hop (:mod:`lb.lab.capture`), and
the result handed to the pure core (:mod:`lb.lab.trace`).

    with TraceSession("lan", ["nat", "dr", "tun"]) as session:
        result = session.trace("dr")          # a ModeTrace: journeys, checks, frames
        write_files(result, Path("lb-trace"))  # pcaps per capture point and a diagram

NAT, DR and TUN run in the default lab (the real servers' gateway is the director, as NAT
needs); FULLNAT and ENAT in ``Lab(rs_net="routed")``, where the real servers share no segment
with the director. ENAT's client address reaches the agent in the SYN's TOA, and for UDP in
the UOA IP option of the first datagrams (fastpath/uoa.pxi).
"""
from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from lb import modes
from lb.lab import demo
from lb.lab import trace as core
from lb.lab.capture import Capture, lab_points, write_pcap
from lb.lab.lbd import LabDirector
from lb.lab.net import LabError, iproute
from lb.lab.topology import Lab

MODES = ("nat", "dr", "tun", "fullnat", "enat")
LAB_OF = {"nat": "lan", "dr": "lan", "tun": "lan", "fullnat": "routed", "enat": "routed"}
DECAP_IF, AGENT_IF = "lbtun0", "lbenat0"
NOTES = {}       # mode -> {proto: why it is not traced}: every mode is traced for TCP and UDP


@dataclass
class Exchange:
    """One traced TCP connection or UDP exchange and what came of it."""
    traced: core.Traced
    vip: str
    vport: int
    answer: str                 # the server's answer, or what went wrong
    ok: bool
    journeys: list = field(default_factory=list)
    checks: list = field(default_factory=list)    # (journey, "director"|"agent", problems)
    show_all: bool = False      # lb trace --all-packets: every packet, not only the highlights

    @property
    def shown(self) -> list:
        return self.journeys if self.show_all else core.highlights(self.journeys)

    def journey(self, label: str):
        return next((j for j in self.journeys if j.label == label), None)


@dataclass
class ModeTrace:
    mode: object                # the lb.modes class instance
    rs_net: str
    exchanges: list
    frames: list
    points: list
    names: core.Names
    values: dict
    notes: list = field(default_factory=list)
    arp: list = field(default_factory=list)       # ARP frames seen during the trace
    files: list = field(default_factory=list)     # written by write_files


def preflight() -> None:
    """One clear line when `lb trace` cannot run here (raised as LabError)."""
    if os.geteuid() != 0:
        raise LabError("needs root: it builds network namespaces and captures in them (try: sudo lb trace ...)")
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0).close()
    except (OSError, AttributeError) as e:
        raise LabError(f"cannot capture: no AF_PACKET sockets here ({e})") from None


class TraceSession:
    """A lab (lan or routed), its test servers and lbd, with `modes` configured; always torn down."""

    def __init__(self, rs_net: str, mode_names, prefix: str | None = None, lbd_args=(), offloads: str = "on"):
        self.rs_net, self.mode_names, self.offloads = rs_net, list(mode_names), offloads
        self.prefix, self.lbd_args = prefix, list(lbd_args)
        self.lab = self.director = None
        self.unavailable: dict = {}

    def __enter__(self) -> "TraceSession":
        self.lab = Lab(prefix=self.prefix, rs_net=self.rs_net, offloads=self.offloads).up()
        try:
            self.lab.start_servers()
            self.director = LabDirector(self.lab, extra_args=self.lbd_args).start()
            _, notes = demo._setup_modes(self.lab, self.director, self.mode_names)
            for note in notes:
                name, _, why = note.partition(": unavailable ")
                if why:
                    self.unavailable[name] = why.strip("()")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def close(self) -> None:
        try:
            if self.director:
                self.director.stop()
        finally:
            self.lab.down()

    # -- one mode ------------------------------------------------------------------------------
    def points(self) -> list:
        return lab_points(self.lab, self._devices(DECAP_IF), self._devices(AGENT_IF))

    def _devices(self, ifname: str) -> dict:
        found = {}
        for name in self.lab.rs_names:
            with iproute(self.lab.ns(name)) as ipr:
                if ipr.link_lookup(ifname=ifname):
                    found[name] = ifname
        return found

    def names(self) -> core.Names:
        return lab_names(self.lab)

    def trace(self, mode_name: str, protos=("tcp", "udp"), vip: str | None = None,
              client_role: str = "client", warmup=None, timeout: float = 3.0,
              ask_arp: bool = True) -> ModeTrace:
        """One TCP connection and one UDP exchange to the mode's VIP, captured everywhere.

        `warmup(session)`, if given, runs inside the capture before the traced exchanges
        (lb break uses it to make the mistake bite); `timeout` bounds each exchange. With
        `ask_arp` the router first forgets the VIP's MAC, so the trace shows who answers ARP."""
        if mode_name in self.unavailable:
            raise LabError(f"{mode_name}: the lab cannot run it ({self.unavailable[mode_name]})")
        mode = modes.by_short(mode_name)
        vip = vip or self.lab.addr["vips"][mode_name]
        notes = [NOTES[mode_name][p] for p in protos if p in NOTES.get(mode_name, {})]
        protos = [p for p in protos if p not in NOTES.get(mode_name, {})]
        points = self.points()
        if ask_arp:
            forget_neighbour(self.lab, "router", vip)
        with Capture(self.lab, points) as cap:
            if warmup:
                warmup(self)
            done = [self._exchange(proto, vip, client_role, timeout) for proto in protos]
        names, values = self.names(), lab_values(self.lab, vip)
        exchanges = [_analyse(mode, ex, cap.frames, names, values) for ex in done]
        arp = core.arp_frames(cap.frames, {vip})
        if cap.truncated:
            notes.append(f"capture stopped at {cap.max_frames} frames")
        return ModeTrace(mode, self.rs_net, exchanges, cap.frames, points, names, values, notes, arp)

    def _exchange(self, proto: str, vip: str, client_role: str, timeout: float) -> Exchange:
        src = self.lab.addr["client"] if client_role == "client" else self.lab.addr["router_lan"]
        if proto == "tcp":
            cport, answer, ok = tcp_get(self.lab, client_role, src, vip, Lab.HTTP_PORT, timeout)
            return Exchange(core.Traced("tcp", src, cport), vip, Lab.HTTP_PORT, answer, ok)
        token = f"lb-trace {secrets.token_hex(6)}".encode()
        cport, answer, ok = udp_ask(self.lab, client_role, src, vip, Lab.UDP_PORT, token, timeout)
        return Exchange(core.Traced("udp", src, cport, token), vip, Lab.UDP_PORT, answer, ok)


def _analyse(mode, ex: Exchange, frames, names, values) -> Exchange:
    ex.journeys = core.journeys(frames, ex.traced, names)
    vals = dict(values, cip=ex.traced.cip, cport=ex.traced.cport, vip=ex.vip, vport=ex.vport, rport=ex.vport)
    for j in ex.journeys:
        pair = core.director_rewrite(j)
        who = "director"
        if pair is None and j.direction == "out" and mode.out_by == "agent":
            pair, who = core.agent_rewrite(j), "agent"
        if pair is not None:
            problems = core.check_rewrite(mode, j.direction, j.proto, j.syn, pair[0].fields, pair[1].fields, vals)
            ex.checks.append((j, who, problems))
    return ex


# -- traffic -------------------------------------------------------------------------------------

def tcp_get(lab, role: str, src: str, vip: str, port: int, timeout: float = 3.0):
    """GET / on a fresh connection from `src` in the role's namespace: (cport, answer, ok)."""
    with lab.socket(role, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        cport = s.getsockname()[1]
        try:
            s.connect((vip, port))
            s.sendall(f"GET / HTTP/1.0\r\nHost: {vip}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        except OSError as e:
            return cport, f"no answer ({e.strerror or e})", False
    body = data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()
    return cport, body, bool(body)


def udp_ask(lab, role: str, src: str, vip: str, port: int, token: bytes, timeout: float = 2.0):
    """One datagram and its answer, on a socket connected to VIP:port as real clients (DNS
    resolvers) use: the kernel then takes answers from that address only."""
    with lab.socket(role, socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind((src, 0))
        cport = s.getsockname()[1]
        s.connect((vip, port))
        try:
            s.send(token)
            data = s.recv(65535)
        except socket.timeout:
            return cport, "no answer", False
        except OSError as e:
            return cport, f"no answer ({e.strerror or e})", False
    return cport, data.decode(errors="replace"), True


def forget_neighbour(lab, role: str, address: str) -> None:
    """Drop the role's ARP entry for `address` (if any): the next packet asks again."""
    with iproute(lab.ns(role)) as ipr:
        for entry in ipr.get_neighbours(dst=address):
            with contextlib.suppress(Exception):
                ipr.neigh("del", dst=address, ifindex=entry["ifindex"])


# -- who is who ------------------------------------------------------------------------------------

def lab_names(lab) -> core.Names:
    """Labels for the lab's addresses (CIP, VIP, DIP, LIP, RIP) and the node of every MAC."""
    ips = {lab.addr["client"]: "CIP client", lab.addr["router"]: "router",
           lab.addr["router_lan"]: "router", lab.addr["director"]: "DIP director"}
    if "router_rs" in lab.addr:
        ips[lab.addr["router_rs"]] = "router"
    ips.update({vip: f"VIP {mode}" for mode, vip in lab.addr["vips"].items()})
    ips.update({lip: f"LIP {i}" for i, lip in enumerate(lab.addr["lips"], start=1)})
    ips.update({rip: f"RIP {name}" for name, rip in zip(lab.rs_names, lab.addr["rs"])})
    macs = {}
    for role in lab.roles:
        with iproute(lab.ns(role)) as ipr:
            for link in ipr.get_links():
                mac = link.get_attr("IFLA_ADDRESS")
                if mac and link.get_attr("IFLA_IFNAME") != "lo":
                    macs.setdefault(mac, role)
    return core.Names(ips, macs)


def lab_values(lab, vip: str) -> dict:
    """What the rewrite symbols of lb/modes may stand for in this lab (see trace.resolve)."""
    names = lab_names(lab)
    rs_macs = {mac for mac, node in names.macs.items() if node in lab.rs_names}
    return {"vip": vip, "rip": set(lab.addr["rs"]), "lip": set(lab.addr["lips"]), "lport": core.ANY,
            "dip": lab.addr["director"], "rs_mac": rs_macs}


# -- files ---------------------------------------------------------------------------------------------

def write_files(result: ModeTrace, out_dir: Path, stem: str | None = None) -> list:
    """A pcap per capture point that saw the traced frames (and ARP), and the diagram (SVG)."""
    from lb.lab.diagram import sequence_svg
    stem = stem or result.mode.short
    out_dir = Path(out_dir) / stem
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = {id(f) for ex in result.exchanges for f in core.flow_frames(result.frames, ex.traced)}
    keep |= {id(f) for f in result.arp}
    files = []
    for i, point in enumerate(result.points, start=1):
        frames = [f for f in result.frames if id(f) in keep and f.point == point]
        if frames:
            path = out_dir / f"{i:02d}-{point.role}-{point.ifname}.pcap"
            write_pcap(path, sorted(frames, key=lambda f: f.ts))
            files.append(path)
    svg = out_dir / f"{stem}-sequence.svg"
    svg.write_text(sequence_svg(result))
    files.append(svg)
    result.files = files
    return files


def sessions_for(mode_names, prefix=None, offloads: str = "on"):
    """One TraceSession per lab the modes need (lan first), one after the other."""
    for rs_net in ("lan", "routed"):
        wanted = [m for m in mode_names if LAB_OF[m] == rs_net]
        if wanted:
            with TraceSession(rs_net, wanted, prefix, offloads=offloads) as session:
                yield session, wanted


# -- lb trace -----------------------------------------------------------------------------------------

def parse_modes(text: str) -> list:
    if text == "all":
        return list(MODES)
    if text not in MODES:
        raise LabError(f"unknown mode {text!r} (choose {', '.join(MODES)} or all)")
    return [text]


def cmd_trace(a) -> int:
    """``lb trace MODE|all``: trace, print, write the files; 1 if any exchange failed or a
    rewrite disagreed with its mode's class."""
    from rich.console import Console
    from lb.lab.traceview import render_trace
    wanted = parse_modes(a.mode)
    preflight()
    console, ok = Console(), True
    protos = ("tcp", "udp") if a.proto == "both" else (a.proto,)
    for session, names in sessions_for(wanted, a.prefix, getattr(a, "offloads", "on")):
        for name in names:
            if name in session.unavailable:
                print(f"lb trace: {name}: the lab cannot run it ({session.unavailable[name]})", file=sys.stderr)
                ok = False
                continue
            result = session.trace(name, protos)
            if a.all_packets:
                for ex in result.exchanges:
                    ex.show_all = True
            if a.out:
                write_files(result, Path(a.out))
            render_trace(console, result, a.lang)
            ok &= all(ex.ok and not any(p for _, _, p in ex.checks) for ex in result.exchanges)
    return 0 if ok else 1
