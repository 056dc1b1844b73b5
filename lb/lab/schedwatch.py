"""``lb trace --scheduler NAME``: a burst of new connections through lbd, and for each the server
it went to and why: the weights, the load figures the scheduler compared, the hash bucket.

lbd decides in its own process; the *why* comes from a shadow: the same scheduler class
(lb/schedulers/NAME.py) on a model of the same service, fed before each connection with the
counters lbd reports (``lbadm -L -n``: ActiveConn, InActConn). Both start with the service, so
they see the same history and pick alike; each row says whether they did (twos draws at random,
so its shadow can only show the figures, not lbd's draw). Connections stay open until the
burst ends, so each one adds to the load the next decision sees. The client speaks from
several addresses, so that source hashing has different keys to hash.

:func:`explain_pick` is pure: (scheduler name, the shadow service, the flow, counters) -> words.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table
from rich.text import Text

from lb import schedulers
from lb.director.model import Flow, RealServer, Service
from lb.lab import demo
from lb.lab.lbd import LabDirector
from lb.lab.net import LabError, iproute
from lb.lab.topology import Lab
from lb.lab.tracerun import LAB_OF, MODES, preflight
from lb.schedulers import dh, mh, sh
from lb.schedulers.base import hash_32, ipv4_int

EXTRA_CLIENTS = [f"198.18.1.{i}" for i in range(10, 14)]   # added to the client for the burst
LOAD = ("lc", "wlc", "sed", "nq", "lblc", "lblcr", "twos", "ovf")


class Counters:
    """What a scheduler reads: `.active` / `.inactive` by slot (the Forwarder's views)."""

    def __init__(self, n: int):
        self.active, self.inactive = [0] * n, [0] * n


@dataclass
class Pick:
    n: int
    client: str
    loads: list                 # (active, inactive) per server, as lbd reported them
    shadow: str                 # the shadow's pick (name)
    why: str
    actual: str = "-"           # who answered


def shadow_service(name: str, vip: str, rips, weights) -> Service:
    """The service as lbd's configuration built it: created, then one server added at a time
    (each add tells the scheduler, as lbadm -a does: wrr's state depends on that history)."""
    svc = Service("tcp", vip, 80, name)
    stats = Counters(len(rips))
    for i, (rip, w) in enumerate(zip(rips, weights)):
        svc.dests.append(RealServer(rip, 80, weight=w, slot=i, stats=stats))
        svc.dests_changed()
    return svc


def configure(director: LabDirector, lab: Lab, name: str, mode: str, weights, vport: int = 80) -> None:
    """TCP VIP:vport with the scheduler, then each server (port 80) with its weight, in the
    order the shadow adds them. Another vport than 80 needs a mode that maps ports."""
    vs = f"{lab.addr['vips'][mode]}:{vport}"
    demo._lbadm(director, "-A", "-t", vs, "-s", name)
    if mode == "fullnat":
        for lip in lab.addr["lips"]:
            demo._lbadm(director, "--add-laddr", "-t", vs, "-z", lip)
    for rip, w in zip(lab.addr["rs"], weights):
        demo._lbadm(director, "-a", "-t", vs, "-r", f"{rip}:80", demo.FWD_FLAGS[mode], "-w", w)


def figure(name: str, active: int, inactive: int, weight: int) -> str:
    """The load figure a least-connection scheduler compares, as the kernel computes it."""
    if name in ("sed", "nq"):
        return f"({active}+1)/{weight}"
    if name == "lc":
        return f"{(active << 8) + inactive}"
    return f"{(active << 8) + inactive}/{weight}"


def explain_pick(name: str, svc: Service, flow: Flow, labels: dict, state: dict) -> str:
    """Why the shadow picked what it picked; `state` is what the scheduler held before it."""
    dests = svc.dests
    label = lambda d: labels.get(d.addr, d.addr) if d else "none"   # noqa: E731
    active, inactive = dests[0].stats.active, dests[0].stats.inactive
    if name == "rr":
        return f"the next one after {label(state.get('last'))} in list order"
    if name == "wrr":
        return f"current weight cw={svc.sched.cw} (max {svc.sched.mw}, step {svc.sched.di}): the next with weight ≥ cw"
    if name == "sh":
        return f"bucket hash_32({flow.caddr}) = {hash_32(ipv4_int(flow.caddr), sh.BITS)} of {sh.SIZE}"
    if name == "dh":
        return f"bucket hash_32({flow.vaddr}) = {hash_32(ipv4_int(flow.vaddr), dh.BITS)} of {dh.SIZE} (one VIP: always the same)"
    if name == "mh":
        return f"Maglev entry {mh.bucket(ipv4_int(flow.caddr) & mh.U32)} of {mh.M}"
    if name == "fo":
        return "the available server with the highest weight"
    figures = ", ".join(f"{label(d)} {figure(name, active[d.slot], inactive[d.slot], d.weight)}" for d in dests)
    if name in LOAD:
        head = {"ovf": "highest weight with active ≤ weight", "twos": "two random draws, lower figure wins",
                "lblc": "the VIP's last server unless overloaded, else wlc", "lblcr": "least loaded of the VIP's set",
                "nq": "an idle server first, else least"}.get(name, "least")
        return f"{head}: {figures}"
    return ""


def read_loads(director: LabDirector, vip: str, rips, vport: int = 80) -> list:
    """(ActiveConn, InActConn) per real server of TCP VIP:vport, from ``lbadm -L -n``."""
    text = demo._lbadm(director, "-L", "-n")
    rows, inside = {}, False
    for line in text.splitlines():
        if not line.startswith("  ->"):
            inside = line.startswith("TCP") and f" {vip}:{vport} " in f"{line} "
        elif inside:
            cols = line.split()
            rows[cols[1].rsplit(":", 1)[0]] = (int(cols[4]), int(cols[5]))
    return [rows.get(rip, (0, 0)) for rip in rips]


def add_clients(lab: Lab) -> None:
    """EXTRA_CLIENTS on the client's interface (again: no harm); they go with the lab."""
    with iproute(lab.ns("client")) as ipr:
        index = ipr.link_lookup(ifname="eth0")[0]
        have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index)}
        for address in EXTRA_CLIENTS:
            if address not in have:
                ipr.addr("add", index=index, address=address, prefixlen=24)


def burst(lab: Lab, director: LabDirector, name: str, mode: str, weights, count: int, vport: int = 80) -> list:
    """`count` new connections to the mode's VIP:vport, held open until all are made; a Pick each."""
    vip, rips = lab.addr["vips"][mode], lab.addr["rs"]
    labels = dict(zip(rips, lab.rs_names))
    add_clients(lab)
    svc = shadow_service(name, vip, rips, weights)
    stats = svc.dests[0].stats
    picks, held = [], []
    try:
        for n in range(count):
            client = EXTRA_CLIENTS[n % len(EXTRA_CLIENTS)]
            loads = read_loads(director, vip, rips, vport)
            for i, (a, ina) in enumerate(loads):
                stats.active[i], stats.inactive[i] = a, ina
            s = lab.socket("client", socket.AF_INET, socket.SOCK_STREAM)
            held.append(s)
            s.settimeout(3)
            s.bind((client, 0))
            flow = Flow("tcp", client, s.getsockname()[1], vip, vport)
            state = {"last": getattr(svc.sched, "last", None)}
            dest = svc.schedule(flow)
            picks.append(Pick(n + 1, f"{client}:{flow.cport}", loads, labels.get(dest.addr, "-") if dest else "-",
                              explain_pick(name, svc, flow, labels, state)))
            s.connect((vip, vport))
        for s, pick in zip(held, picks):
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            pick.actual = _answer(s).split(" ", 1)[0] or "-"
    finally:
        for s in held:
            s.close()
    return picks


def _answer(s: socket.socket) -> str:
    data = b""
    try:
        while chunk := s.recv(4096):
            data += chunk
    except OSError:
        pass
    return data.split(b"\r\n\r\n", 1)[-1].decode(errors="replace").strip()


def render(console: Console, name: str, mode: str, lab: Lab, weights, picks: list) -> None:
    console.rule(Text(f"lb trace --scheduler {name} ({mode}, weights "
                      + ", ".join(f"{n}={w}" for n, w in zip(lab.rs_names, weights)) + ")", style="bold"))
    console.print(" ".join(explain_scheduler(name).split()), style="dim")
    table = Table(expand=True)
    table.add_column("#", justify="right")
    table.add_column("client", no_wrap=True)
    table.add_column("load\n" + " ".join(lab.rs_names) + "\n(act/inact)", no_wrap=True)
    table.add_column("why", ratio=1)
    table.add_column("shadow")
    table.add_column("lbd")
    for p in picks:
        loads = " ".join(f"{a}/{i}" for a, i in p.loads)
        agree = p.shadow == p.actual
        table.add_row(str(p.n), p.client, loads, p.why, p.shadow,
                      Text(p.actual, style="green" if agree else "bold red"))
    console.print(table)
    counts = {n: sum(p.actual == n for p in picks) for n in lab.rs_names}
    agreed = sum(p.shadow == p.actual for p in picks)
    console.print(f"went to: {', '.join(f'{n} {c}' for n, c in counts.items())}; "
                  f"the shadow agreed with lbd on {agreed} of {len(picks)}"
                  + (" (twos draws at random)" if name == "twos" else ""))


def explain_scheduler(name: str) -> str:
    from lb.lab.explain import scheduler_text
    return scheduler_text(name)


def parse_weights(text: str, n: int) -> list:
    try:
        weights = [int(w) for w in text.split(",")]
    except ValueError:
        raise LabError(f"bad --weights {text!r} (want integers, e.g. 3,2,1)") from None
    if len(weights) != n or any(w < 0 for w in weights):
        raise LabError(f"--weights needs {n} weights of 0 or more")
    return weights


def cmd_watch(a) -> int:
    mode = a.mode or "nat"
    if a.scheduler not in schedulers.names():
        raise LabError(f"unknown scheduler {a.scheduler!r} (choose {', '.join(schedulers.names())})")
    if mode not in MODES:
        raise LabError(f"unknown mode {mode!r} (choose {', '.join(MODES)})")
    weights = parse_weights(a.weights, 3)
    preflight()
    with Lab(prefix=a.prefix, rs_net=LAB_OF[mode]) as lab:
        lab.start_servers()
        with LabDirector(lab) as director:
            configure(director, lab, a.scheduler, mode, weights)
            if mode in ("dr", "tun", "enat"):
                lab.setup_realservers(mode, udp_echo=False)
            picks = burst(lab, director, a.scheduler, mode, weights, a.count)
    render(Console(), a.scheduler, mode, lab, weights, picks)
    return 0 if all(p.actual != "-" for p in picks) else 1
