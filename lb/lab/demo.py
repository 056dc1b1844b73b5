"""``lb demo`` (this module) runs two namespace labs one after the other, each with its own director daemon
(lb.director.daemon) and test servers on the real servers, each always torn down:

- the default lab, real servers on the director's LAN with the director as their gateway
  (NAT needs that): NAT (-m) on 198.18.0.100, DR (-g) on 198.18.0.101, TUN (-i) on
  198.18.0.102, the real servers prepared with ``lb realserver setup``;
- ``Lab(rs_net="routed")``, real servers on 198.18.2.0/24, reached only through the router:
  FULLNAT (-b, from the local addresses 198.18.0.3 and .4) on 198.18.0.103 and ENAT
  (--enat, the real servers running the ENAT agent) on 198.18.0.104.

Each mode gets a TCP and a UDP virtual service with round robin (ENAT's UDP client address
reaches the real server's agent in the UOA IP option, not the server's socket). Requests go
from the client namespace; one table shows which real server answered each, the peer
address it saw and, for FULLNAT and ENAT, the client address it learned from the TOA; then
each lab's ``lbadm -L -n`` listing. A mode lbadm refuses is reported as unavailable in one
line. ``--kernel`` uses the kernel instead of lb.director.daemon (ip_forward=1 and nftables DNAT in
the director of the default lab, NAT only): the baseline to compare against.
"""
from __future__ import annotations

import os
import signal

from lb import modes
from lb.lab.lbd import LabDirector
from lb.lab.net import LabError
from lb.lab.topology import Lab

PROTOS = (("tcp", "-t", Lab.HTTP_PORT), ("udp", "-u", Lab.UDP_PORT))
_MAIN_PID = os.getpid()


def _raise_interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:   # a forked helper (pyroute2) inherited this handler
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


# lbadm's forwarding-method flag of each mode, by the name the lab gives it
FWD_FLAGS = {m.short: m.lbadm_flags[0] or m.lbadm_flags[1] for m in map(modes.get, modes.names())}
MODE_PROTOS = {}    # mode -> the protocols it is shown for (default both)
MODE_NOTES = {"fullnat": "fullnat: no toa for UDP (TOA is a TCP option): the RS sees only LIP:lport",
              "enat": "enat: no toa for UDP; the client rides in UOA (an IP option of the first "
                      "datagrams) to the RS's agent, which answers it; the RS's socket sees VIP:lport"}


def mode_protos(mode: str) -> list:
    """The (proto, flag, port) of PROTOS the demo runs in `mode`."""
    return [p for p in PROTOS if p[0] in MODE_PROTOS.get(mode, ("tcp", "udp"))]


def configure(director: LabDirector, lab: Lab, scheduler: str = "rr", mode: str = "nat") -> None:
    """TCP :80 and UDP :5353 on the mode's VIP, every RS with weight 1 (same ports: DR, TUN and
    ENAT cannot map them); FULLNAT services get every lab LIP as a local address first."""
    for _, flag, port in mode_protos(mode):
        vs = f"{lab.addr['vips'][mode]}:{port}"
        _lbadm(director, "-A", flag, vs, "-s", scheduler)
        if mode == "fullnat":
            for lip in lab.addr["lips"]:
                _lbadm(director, "--add-laddr", flag, vs, "-z", lip)
        for rip in lab.addr["rs"]:
            _lbadm(director, "-a", flag, vs, "-r", f"{rip}:{port}", FWD_FLAGS[mode], "-w", "1")


def try_configure(director: LabDirector, lab: Lab, mode: str):
    """configure(); if lbadm refuses (e.g. "not supported yet"), remove the mode's services
    again and return why (one line), else None."""
    try:
        configure(director, lab, mode=mode)
        return None
    except LabError as e:
        for _, flag, port in mode_protos(mode):
            director.lbadm("-D", flag, f"{lab.addr['vips'][mode]}:{port}")
        return str(e).splitlines()[0]


def _lbadm(director: LabDirector, *args) -> str:
    r = director.lbadm(*args)
    if r.returncode:
        raise LabError(f"lbadm {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def probe(lab: Lab, count: int, vip: str | None = None, protos=("tcp", "udp")) -> list:
    """`count` HTTP requests (curl) and `count` UDP datagrams from the client to `vip`.

    Returns rows (proto, n, real server or '-', peer address seen or the error, TOA client or '-').
    """
    vip = vip or lab.addr["vip"]
    rows = []
    for n in range(1, count + 1 if "tcp" in protos else 1):
        r = lab.http_get("client", f"http://{vip}:{Lab.HTTP_PORT}/", timeout=3)
        rows.append(("tcp", n, *_parse(r.stdout if r.returncode == 0 else None, r.stderr.strip())))
    for n in range(1, count + 1 if "udp" in protos else 1):
        reply = lab.udp_query("client", vip, Lab.UDP_PORT, f"ping {n}".encode(), timeout=2)
        rows.append(("udp", n, *_parse(reply.decode(errors="replace") if reply else None, "no reply")))
    return rows


def _parse(answer, error):
    """'rs1 client=198.18.0.3:1025 toa=198.18.1.2:43210 ...' -> ('rs1', '198.18.0.3:1025',
    '198.18.1.2:43210'); without a TOA the third is '-'."""
    parts = (answer or "").split()
    if len(parts) >= 2 and parts[1].startswith("client="):
        toa = parts[2][len("toa="):] if len(parts) >= 3 and parts[2].startswith("toa=") else "-"
        return parts[0], parts[1][len("client="):], toa
    return "-", f"FAILED: {error or answer!r}", "-"


def print_table(rows) -> None:
    """rows: (mode, proto, n, real server, peer address seen, client address from TOA)."""
    print(f"{'mode':<13} {'proto':<5} {'#':>2}  {'answered by':<11} {'peer (seen by the RS)':<22} "
          f"toa (client the RS learned from TOA)")
    for mode, proto, n, rs, seen, toa in rows:
        print(f"{mode:<13} {proto:<5} {n:>2}  {rs:<11} {seen:<22} {toa}")


def _setup_modes(lab: Lab, director: LabDirector, modes=("nat", "dr", "tun")) -> tuple[list, list]:
    """The modes through lbd: ([(label, vip, protos)] to probe, ["mode: unavailable (why)"]).

    DR, TUN and ENAT real servers are prepared with ``lb realserver setup``; NAT and FULLNAT
    need nothing there."""
    probes, notes = [], []
    for mode in modes:
        why = try_configure(director, lab, mode)
        if why:
            notes.append(f"{mode}: unavailable ({why})")
            continue
        if mode in ("dr", "tun", "enat"):
            lab.setup_realservers(mode)
        probes.append((f"{mode} (lbd)", lab.addr["vips"][mode], [p for p, _, _ in mode_protos(mode)]))
        if mode in MODE_NOTES:
            notes.append(MODE_NOTES[mode])
    return probes, notes


def _lab_line(lab: Lab, probes) -> str:
    vips = ", ".join(f"{label.split()[0]} {vip}" for label, vip, _ in probes)
    if any(label.startswith("fullnat") for label, _, _ in probes):
        vips += f"; FULLNAT from {' '.join(lab.addr['lips'])}"
    where = ("real servers on the director's LAN, gateway the director" if lab.rs_net == "lan" else
             f"real servers on {lab.addr['rs_net']}, reached through the router")
    return (f"lab {lab.prefix} ({where}):\n  client {lab.addr['client']} -> VIP ({vips}) "
            f"-> {', '.join(lab.addr['rs'])}")


def run_lab(a, rs_net: str, modes, report: dict) -> None:
    """One lab with its own lbd (or the kernel baseline): probe `modes`, add to `report`
    (lab lines, rows, notes, listings); the lab is always torn down."""
    director = None
    with Lab(prefix=a.prefix, rs_net=rs_net, offloads=getattr(a, "offloads", "on")) as lab:
        try:
            lab.start_servers()
            if a.kernel:
                lab.enable_kernel_lb()
                probes, notes = [("kernel-dnat", lab.addr["vip"], ["tcp", "udp"])], []
            else:
                director = LabDirector(lab).start()
                probes, notes = _setup_modes(lab, director, modes)
            report["labs"].append(_lab_line(lab, probes))
            report["notes"] += notes
            for label, vip, protos in probes:
                report["rows"] += [(label, *row) for row in probe(lab, a.count, vip, protos)]
            if director:
                report["listings"].append(f"$ lbadm -L -n    # lab {lab.prefix}\n" + _lbadm(director, "-L", "-n"))
            else:
                nft = lab.run("director", ["nft", "list", "table", "ip", "lb_kernel"], timeout=10).stdout
                report["listings"].append(f"$ nft list table ip lb_kernel    # lab {lab.prefix}\n{nft}")
        finally:
            if director:
                director.stop()


def print_report(report: dict) -> None:
    print("\n".join(report["labs"]) + "\n")
    print_table(report["rows"])
    print("\n".join(["", *report["notes"], ""]) if report["notes"] else "")
    print("\n".join(report["listings"]), end="")


def cmd_demo(a) -> int:
    """NAT, DR and TUN in the default lab, then FULLNAT and ENAT in a routed one (not with
    --kernel: the kernel baseline is NAT only). The labs run one after the other, so a
    --prefix is used by both."""
    signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown also on `kill <pid>`
    report = {"labs": [], "rows": [], "notes": [], "listings": []}
    try:
        run_lab(a, "lan", ("nat", "dr", "tun"), report)
        if not a.kernel:
            run_lab(a, "routed", ("fullnat", "enat"), report)
    except LabError:
        if report["rows"]:
            print_report(report)       # what the finished lab showed, then the error
        raise
    print_report(report)
    return 0 if report["rows"] and all(row[3] != "-" for row in report["rows"]) else 1
