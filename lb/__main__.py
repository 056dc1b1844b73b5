"""``lb``: the lab and the demo.

    lb lab up [--prefix P] [--rs N] [--rs-gateway director|router] [--rs-net lan|routed] [--servers]
    lb lab down (--prefix P | --all)
    lb lab status [--prefix P]
    lb demo [--kernel] [--count N] [--prefix P]
    lb realserver setup --mode dr|tun|enat|fullnat --vip VIP [--vip VIP2 ...] [--reply-gateway GW]
                        [--decap auto|kernel|userspace] [--map-port RPORT:VPORT ...]
    lb realserver teardown [--mode dr|tun|enat|fullnat]
    lb realserver status

``lb demo`` builds the namespace lab, starts the test servers on the real servers and the
director daemon (lb.daemon) in the director namespace, configures a TCP and a UDP virtual
service with round robin in each forwarding mode -- NAT (-m) on 198.18.0.100, DR (-g) on
198.18.0.101, TUN (-i) on 198.18.0.102, the real servers prepared with ``lb realserver
setup`` -- sends requests from the client namespace, prints which real server answered each
and which client address it saw, prints the ``lbadm -L -n`` listing and always tears
everything down. A mode lbadm refuses is reported as unavailable in one line. ``--kernel``
uses the kernel instead of lb.daemon (ip_forward=1 and nftables DNAT in the director, NAT
only): the baseline to compare against.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

from lb.lab import Director, Lab, LabError, down_all, down_lab, status_all

PROTOS = (("tcp", "-t", Lab.HTTP_PORT), ("udp", "-u", Lab.UDP_PORT))


_MAIN_PID = os.getpid()


def _raise_interrupt(signum, frame):
    if os.getpid() != _MAIN_PID:   # a forked helper (pyroute2) inherited this handler
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


def cmd_lab(a) -> int:
    if a.action == "up":
        try:
            lab = Lab(prefix=a.prefix, n_rs=a.rs, rs_gateway=a.rs_gateway, rs_net=a.rs_net)
        except ValueError as e:
            raise SystemExit(f"lb lab up: {e}") from None
        lab.up()
        if a.servers:
            lab.start_servers()
        print(lab.status())
        print(f"remove with: lb lab down --prefix {lab.prefix}")
    elif a.action == "down":
        if a.all == bool(a.prefix):
            raise SystemExit("lb lab down: give --prefix P or --all")
        if a.all:
            removed = down_all()
        else:
            down_lab(a.prefix)
            removed = [a.prefix]
        print("removed:", " ".join(removed) or "nothing")
    else:
        print(Lab.from_state(a.prefix).status() if a.prefix else status_all())
    return 0


FWD_FLAGS = {"nat": "-m", "dr": "-g", "tun": "-i"}   # ipvsadm's forwarding-method flags


def configure(director: Director, lab: Lab, scheduler: str = "rr", mode: str = "nat") -> None:
    """TCP :80 and UDP :5353 on the mode's VIP, every RS with weight 1 (same ports: DR and
    TUN cannot map them)."""
    for _, flag, port in PROTOS:
        vs = f"{lab.addr['vips'][mode]}:{port}"
        _lbadm(director, "-A", flag, vs, "-s", scheduler)
        for rip in lab.addr["rs"]:
            _lbadm(director, "-a", flag, vs, "-r", f"{rip}:{port}", FWD_FLAGS[mode], "-w", "1")


def try_configure(director: Director, lab: Lab, mode: str):
    """configure(); if lbadm refuses (e.g. "not supported yet"), remove the mode's services
    again and return why (one line), else None."""
    try:
        configure(director, lab, mode=mode)
        return None
    except LabError as e:
        for _, flag, port in PROTOS:
            director.lbadm("-D", flag, f"{lab.addr['vips'][mode]}:{port}")
        return str(e).splitlines()[0]


def _lbadm(director: Director, *args) -> str:
    r = director.lbadm(*args)
    if r.returncode:
        raise LabError(f"lbadm {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r.stdout


def probe(lab: Lab, count: int, vip: str | None = None) -> list:
    """`count` HTTP requests (curl) and `count` UDP datagrams from the client to `vip`.

    Returns rows (proto, n, real server or '-', client address seen or the error).
    """
    vip = vip or lab.addr["vip"]
    rows = []
    for n in range(1, count + 1):
        r = lab.http_get("client", f"http://{vip}:{Lab.HTTP_PORT}/", timeout=3)
        rows.append(("tcp", n, *_parse(r.stdout if r.returncode == 0 else None, r.stderr.strip())))
    for n in range(1, count + 1):
        reply = lab.udp_query("client", vip, Lab.UDP_PORT, f"ping {n}".encode(), timeout=2)
        rows.append(("udp", n, *_parse(reply.decode(errors="replace") if reply else None, "no reply")))
    return rows


def _parse(answer, error):
    """'rs1 client=198.18.1.2:43210 ...' -> ('rs1', '198.18.1.2:43210')."""
    parts = (answer or "").split()
    if len(parts) >= 2 and parts[1].startswith("client="):
        return parts[0], parts[1][len("client="):]
    return "-", f"FAILED: {error or answer!r}"


def print_table(rows) -> None:
    """rows: (mode, proto, n, real server, client address seen)."""
    print(f"{'mode':<12} {'proto':<5} {'#':>2}  {'answered by':<11} client address seen by the RS")
    for mode, proto, n, rs, seen in rows:
        print(f"{mode:<12} {proto:<5} {n:>2}  {rs:<11} {seen}")


def _setup_modes(lab: Lab, director: Director) -> tuple[list, list]:
    """NAT, DR and TUN through lbd: ([(label, vip)] to probe, ["mode: unavailable (why)"])."""
    configure(director, lab)
    modes, unavailable = [("nat (lbd)", lab.addr["vips"]["nat"])], []
    for mode in ("dr", "tun"):
        why = try_configure(director, lab, mode)
        if why:
            unavailable.append(f"{mode}: unavailable ({why})")
            continue
        lab.setup_realservers(mode)
        modes.append((f"{mode} (lbd)", lab.addr["vips"][mode]))
    return modes, unavailable


def cmd_demo(a) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)  # teardown also on `kill <pid>`
    director = None
    with Lab(prefix=a.prefix) as lab:
        try:
            lab.start_servers()
            if a.kernel:
                lab.enable_kernel_lb()
                modes, unavailable = [("kernel-dnat", lab.addr["vip"])], []
            else:
                director = Director(lab).start()
                modes, unavailable = _setup_modes(lab, director)
            vips = ", ".join(f"{label.split()[0]} {vip}" for label, vip in modes)
            print(f"lab {lab.prefix}: client {lab.addr['client']} -> VIP ({vips}) "
                  f"-> {', '.join(lab.addr['rs'])}\n")
            rows = [(label, *row) for label, vip in modes for row in probe(lab, a.count, vip)]
            print_table(rows)
            print("\n".join(["", *unavailable, ""]) if unavailable else "")
            if director:
                print("$ lbadm -L -n\n" + _lbadm(director, "-L", "-n"))
            else:
                print(lab.run("director", ["nft", "list", "table", "ip", "lb_kernel"], timeout=10).stdout)
        finally:
            if director:
                director.stop()
    return 0 if all(row[3] != "-" for row in rows) else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lb", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    lab = sub.add_parser("lab", help="build, remove or show the namespace lab")
    lab.add_argument("action", choices=["up", "down", "status"])
    lab.add_argument("--prefix", help="namespace name prefix (default: lb + 6 random hex)")
    lab.add_argument("--all", action="store_true", help="down: every lab recorded in /run/lb-lab")
    lab.add_argument("--rs", type=int, default=3, help="number of real servers")
    lab.add_argument("--rs-gateway", choices=["director", "router"],
                     help="the real servers' default gateway (default: director on the LAN, router when routed)")
    lab.add_argument("--rs-net", choices=["lan", "routed"], default="lan",
                     help="real servers on the director's LAN, or on 198.18.2.0/24 behind the router")
    lab.add_argument("--servers", action="store_true", help="up: also start the test servers")
    demo = sub.add_parser("demo", help="the end-to-end demo on a fresh lab")
    demo.add_argument("--kernel", action="store_true", help="kernel nftables DNAT instead of lb.daemon")
    demo.add_argument("--count", type=int, default=6, help="requests per protocol (max 100)")
    demo.add_argument("--prefix")
    rs = sub.add_parser("realserver", help="prepare this host/namespace as a DR, TUN or ENAT real server")
    rs.add_argument("action", choices=["setup", "teardown", "status"])
    rs.add_argument("--mode", choices=["dr", "tun", "enat", "fullnat"],
                    help="setup: required (fullnat: nothing to do); teardown: only this mode")
    rs.add_argument("--vip", action="append", help="a virtual IP (repeat for several)")
    rs.add_argument("--reply-gateway", metavar="GW", help="replies from the VIPs leave through GW")
    rs.add_argument("--decap", choices=["auto", "kernel", "userspace"], default="auto",
                    help="tun: the kernel's ipip device if it exists (auto), or lb.decap")
    rs.add_argument("--map-port", action="append", metavar="RPORT:VPORT",
                    help="enat: replies from local port RPORT leave as the virtual port VPORT")
    return p


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if getattr(a, "count", 1) not in range(1, 101):
        raise SystemExit("--count must be 1..100")
    if a.command == "realserver":
        from lb import realserver
        return realserver.run(a)
    try:
        return cmd_lab(a) if a.command == "lab" else cmd_demo(a)
    except LabError as e:
        print(f"lb: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lb: interrupted; lab removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
