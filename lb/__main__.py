"""``lb``: the lab and the demo.

    lb lab up [--prefix P] [--rs N] [--rs-gateway director|router] [--rs-net lan|routed] [--servers]
              [--offloads on|off]
    lb lab down (--prefix P | --all)
    lb lab status [--prefix P]
    lb demo [--kernel] [--count N] [--prefix P] [--offloads on|off]
    lb realserver setup --mode dr|tun|enat|fullnat --vip VIP [--vip VIP2 ...] [--reply-gateway GW]
                        [--decap auto|kernel|xdp|userspace] [--enat-reply auto|tc|userspace]
                        [--map-port RPORT:VPORT ...]
    lb realserver teardown [--mode dr|tun|enat|fullnat]
    lb realserver status
    lb trace MODE|all [--proto tcp|udp|both] [--out DIR] [--all-packets] [--lang en|zh] [--prefix P]
             [--offloads on|off]
    lb trace --scheduler NAME [--count N] [--weights 3,2,1] [--lang en|zh]
    lb explain MODE|all|terms|schedulers [--lang en|zh]
    lb break SCENARIO|all|list [--out DIR] [--lang en|zh] [--prefix P]

``lb demo``: see :mod:`lb.lab.demo`; ``lb trace``: :mod:`lb.lab.tracerun` (and
:mod:`lb.lab.schedwatch` for ``--scheduler``); ``lb explain``: :mod:`lb.lab.explain`;
``lb break``: :mod:`lb.lab.breakit`.
"""
from __future__ import annotations

import argparse
import signal
import sys

from lb.lab.demo import _raise_interrupt, cmd_demo
from lb.lab.net import LabError
from lb.lab.topology import Lab, down_all, down_lab, status_all


def cmd_lab(a) -> int:
    if a.action == "up":
        try:
            lab = Lab(prefix=a.prefix, n_rs=a.rs, rs_gateway=a.rs_gateway, rs_net=a.rs_net,
                      offloads=a.offloads)
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
    _offloads_option(lab)
    demo = sub.add_parser("demo", help="the end-to-end demo on a fresh lab")
    demo.add_argument("--kernel", action="store_true", help="kernel nftables DNAT instead of lb.director.daemon")
    demo.add_argument("--count", type=int, default=6, help="requests per protocol (max 100)")
    demo.add_argument("--prefix")
    _offloads_option(demo)
    rs = sub.add_parser("realserver", help="prepare this host/namespace as a DR, TUN or ENAT real server")
    rs.add_argument("action", choices=["setup", "teardown", "status"])
    rs.add_argument("--mode", choices=["dr", "tun", "enat", "fullnat"],
                    help="setup: required (fullnat: nothing to do); teardown: only this mode")
    rs.add_argument("--vip", action="append", help="a virtual IP (repeat for several)")
    rs.add_argument("--reply-gateway", metavar="GW", help="replies from the VIPs leave through GW")
    rs.add_argument("--decap", choices=["auto", "kernel", "xdp", "userspace"], default="auto",
                    help="tun: auto = the kernel's ipip device if it has one, else the XDP "
                         "decapsulator (xdp) if it loads, else lb.realserver.decap (userspace)")
    rs.add_argument("--enat-reply", choices=["auto", "tc", "userspace"], default="auto",
                    help="enat: where the agent's replies are rewritten: auto = a tc program on its "
                         "device (tc, lb.realserver.enat_tc) if the kernel takes it, else the agent "
                         "itself (userspace)")
    rs.add_argument("--map-port", action="append", metavar="RPORT:VPORT",
                    help="enat: replies from local port RPORT leave as the virtual port VPORT")
    _learning_parsers(sub)
    return p


def _offloads_option(p) -> None:
    p.add_argument("--offloads", choices=["on", "off"], default="on",
                   help="the lab's veth offloads: as they come (on, the default), or all off "
                        "(for comparisons: complete checksums and wire-sized frames everywhere)")


def _learning_parsers(sub) -> None:
    """lb trace, lb explain, lb break: the teaching commands (lb/lab/tracerun.py and friends)."""
    tr = sub.add_parser("trace", help="watch one TCP connection and one UDP exchange cross every hop")
    tr.add_argument("mode", nargs="?", help="nat, dr, tun, fullnat, enat or all (with --scheduler: the mode, default nat)")
    tr.add_argument("--proto", default="both", help="tcp, udp or both (default)")
    tr.add_argument("--out", default="lb-trace", help="directory for the pcaps and diagrams (default ./lb-trace; '' for none)")
    tr.add_argument("--all-packets", action="store_true", help="show every packet, not only SYN, SYN-ACK, RST, UDP")
    tr.add_argument("--scheduler", help="instead: watch this scheduler place a burst of new connections")
    tr.add_argument("--count", type=int, default=12, help="--scheduler: connections in the burst (max 100)")
    tr.add_argument("--weights", default="3,2,1", help="--scheduler: the real servers' weights")
    tr.add_argument("--lang", default="en", help="en or zh")
    tr.add_argument("--prefix")
    _offloads_option(tr)
    ex = sub.add_parser("explain", help="what a forwarding mode needs and costs, from the mode classes")
    ex.add_argument("topic", nargs="?", default="all", help="nat, dr, tun, fullnat, enat, all, terms, schedulers")
    ex.add_argument("--lang", default="en", help="en or zh")
    br = sub.add_parser("break", help="switch on a classic mistake in the lab, trace the failure, then fix it")
    br.add_argument("scenario", nargs="?", default="list", help="a scenario name, all, or list")
    br.add_argument("--out", default="lb-trace", help="directory for the pcaps and diagrams ('' for none)")
    br.add_argument("--lang", default="en", help="en or zh")
    br.add_argument("--prefix")


def _check_learning_args(a) -> None:
    from lb.lab.words import LANGS
    if getattr(a, "lang", "en") not in LANGS:
        raise LabError(f"unknown language {a.lang!r} (choose {' or '.join(LANGS)})")
    if a.command == "trace" and a.proto not in ("tcp", "udp", "both"):
        raise LabError(f"unknown protocol {a.proto!r} (choose tcp, udp or both)")
    if a.command == "trace" and not a.mode and not a.scheduler:
        raise LabError("give a mode (nat, dr, tun, fullnat, enat or all) or --scheduler NAME")


def _run_learning(a) -> int:
    _check_learning_args(a)
    if a.command == "explain":
        from lb.lab import explain
        return explain.cmd_explain(a)
    if a.command == "break":
        from lb.lab import breakit
        return breakit.cmd_break(a)
    if a.scheduler:
        from lb.lab import schedwatch
        return schedwatch.cmd_watch(a)
    from lb.lab import tracerun
    return tracerun.cmd_trace(a)


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    if getattr(a, "count", 1) not in range(1, 101):
        raise SystemExit("--count must be 1..100")
    if a.command == "realserver":
        from lb.realserver import host as realserver
        return realserver.run(a)
    try:
        if a.command in ("trace", "explain", "break"):
            signal.signal(signal.SIGTERM, _raise_interrupt)   # teardown also on `kill <pid>`
            try:
                return _run_learning(a)
            except OSError as e:     # the machine said no (namespaces, sockets): one line, lab gone
                raise LabError(f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")) from None
        return cmd_lab(a) if a.command == "lab" else cmd_demo(a)
    except LabError as e:
        print(f"lb {a.command}: {e}" if a.command in ("trace", "explain", "break") else f"lb: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("lb: interrupted; lab removed", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
