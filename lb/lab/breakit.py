"""``lb break SCENARIO|all|list``: the classic LVS mistakes, switched on in the lab and traced,
then fixed and traced again, so that the learner sees the failure on the wire and what cures it.

    dr-arp           DR real server without arp_ignore/arp_announce: it claims the VIP in
                     ARP and the router sends the clients past the director
    nat-gateway      NAT real server whose default gateway is the router: replies from the RIP
    nat-same-subnet  NAT client on the real servers' subnet: the reply skips the gateway
    fullnat-toa      FULLNAT server that does not read the TOA: it sees only the local address
    tun-rp-filter    TUN real server with a strict rp_filter: the decapsulated SYN is dropped

Each :class:`Scenario` has ``break_`` and ``fix`` (changes to the lab, undone by ``fix``),
and reads its failure from the capture (``symptom``) rather than assuming it. The words are
in lb.lab.words.BREAKS. ``python -m lb.lab.breakit plain-server --name N --port P`` is the
scenario fullnat-toa's server: HTTP that answers with the peer its socket sees, nothing else.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import subprocess
import sys
from pathlib import Path

from lb.lab import demo
from lb.lab import trace as core
from lb.lab.net import LabError, in_netns, iproute, write_sysctls
from lb.lab.tracerun import TraceSession, forget_neighbour, preflight, tcp_get, write_files

PLAIN_PORT = 8081
VICTIM = "rs1"


# -- changes to the lab --------------------------------------------------------------------------

def sysctls(session, role: str, values: dict) -> None:
    with in_netns(session.lab.ns(role)):
        write_sysctls(values)


def arp_sysctls(session, role: str, ignore: int, announce: int) -> None:
    with in_netns(session.lab.ns(role)):
        devices = ["all", "default", *os.listdir("/proc/sys/net/ipv4/conf")]
        write_sysctls({f"net.ipv4.conf.{d}.{k}": v for d in dict.fromkeys(devices)
                       for k, v in (("arp_ignore", ignore), ("arp_announce", announce))})


def flush_neighbours(session, role: str) -> None:
    with iproute(session.lab.ns(role)) as ipr:
        for entry in ipr.get_neighbours():
            with contextlib.suppress(Exception):
                ipr.neigh("del", dst=entry.get_attr("NDA_DST"), ifindex=entry["ifindex"])


def default_gateway(session, role: str, gateway: str) -> None:
    with iproute(session.lab.ns(role)) as ipr:
        ipr.route("replace", dst="0.0.0.0/0", gateway=gateway)


def weights(session, mode: str, weight: int, port_of=None, only=None) -> None:
    """Every real server of the mode's services but `only` gets `weight` (lbadm -e)."""
    lab = session.lab
    for _, flag, port in demo.mode_protos(mode):
        for name, rip in zip(lab.rs_names, lab.addr["rs"]):
            if name != only:
                rport = port_of(port) if port_of else port
                demo._lbadm(session.director, "-e", flag, f"{lab.addr['vips'][mode]}:{port}", "-r", f"{rip}:{rport}",
                            demo.FWD_FLAGS[mode], "-w", weight)


def reverse_path_drops(session, role: str) -> int:
    """TcpExt IPReversePathFilter of the role's namespace (/proc/thread-self: this thread's)."""
    with in_netns(session.lab.ns(role)), open("/proc/thread-self/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split()[1:], values.split()[1:])).get("IPReversePathFilter", 0))
    return 0


# -- reading the capture ---------------------------------------------------------------------------

def first(result, label: str):
    for ex in result.exchanges:
        j = ex.journey(label)
        if j:
            return ex, j
    return None, None


def arp_claims(result, address: str) -> list:
    """How nodes other than the director claimed `address` in ARP: 'rs1 asked ARP as VIP ...'."""
    out = []
    for f in result.arp:
        arp = core.dissect(f.data).getlayer(core.ARP)
        node = result.names.node(arp.hwsrc)
        if arp.psrc == address and node != "director":
            how = (f"{node} asked who has {arp.pdst} giving the VIP as its own address" if arp.op == 1
                   else f"{node} answered that the VIP is at its MAC")
            if how not in out:
                out.append(how)
    return out


def reply_escapes(result) -> str | None:
    """NAT's failure: the SYN-ACK did not pass the director and reached the client from the RIP."""
    _, j = first(result, "TCP SYN-ACK")
    if j is None or j.passes("director"):
        return None
    src = j.hops[-1].fields.get("ip.src")
    rst = first(result, "TCP RST")[1] is not None
    return (f"the SYN-ACK went {' → '.join([j.hops[0].sender] + [h.receiver for h in j.hops])} "
            f"from {result.names.ip(src)}, past the director" + ("; the client answered RST" if rst else ""))


def all_ok(result) -> str | None:
    if all(ex.ok for ex in result.exchanges):
        return "; ".join(f"{ex.traced.proto.upper()}: {ex.answer}" for ex in result.exchanges)
    return None


# -- the scenarios ----------------------------------------------------------------------------------

class Scenario:
    name, mode, rs_net, client_role, protos = "", "", "lan", "client", ("tcp", "udp")
    ask_arp = True              # the router forgets the VIP's MAC before the broken trace

    def break_(self, session) -> None: ...
    def fix(self, session) -> None: ...
    warmup = None

    def symptom(self, result) -> str | None:
        """The failure as the capture shows it, or None if it did not happen."""
        raise NotImplementedError

    def healthy(self, result) -> str | None:
        """What shows it works again, or None if it still does not."""
        ok = all_ok(result)
        return ok if ok and self.symptom(result) is None else None


class DrArp(Scenario):
    name, mode, ask_arp = "dr-arp", "dr", False

    def break_(self, session):
        # The router learns the VIP's true MAC first (one connection while rs1 is still right):
        # the poisoning below then comes only from rs1's own ARP request, not from a race of
        # ARP replies. rs1 forgets its neighbours, so that its next reply must ask for the router.
        lab = session.lab
        tcp_get(lab, "client", lab.addr["client"], lab.addr["vips"]["dr"], 80, 2.0)
        arp_sysctls(session, VICTIM, 0, 0)
        flush_neighbours(session, VICTIM)

    def warmup(self, session):
        # Round robin over three servers: one of three connections is rs1's, whose reply
        # from the VIP makes it ask ARP for the router, giving the VIP as its own address.
        for _ in session.lab.rs_names:
            tcp_get(session.lab, "client", session.lab.addr["client"], session.lab.addr["vips"]["dr"], 80, 2.0)

    def fix(self, session):
        arp_sysctls(session, VICTIM, 1, 2)
        forget_neighbour(session.lab, "router", session.lab.addr["vips"]["dr"])

    def symptom(self, result):
        _, j = first(result, "TCP SYN")
        claims = arp_claims(result, result.values["vip"])
        if j is None or j.passes("director"):
            return None
        said = f" ({'; '.join(claims)})" if claims else ""
        return f"the SYN went router → {j.hops[-1].receiver}, the director never saw it{said}"


class NatGateway(Scenario):
    name, mode = "nat-gateway", "nat"

    def break_(self, session):
        weights(session, "nat", 0, only=VICTIM)
        default_gateway(session, VICTIM, session.lab.addr["router_lan"])

    def fix(self, session):
        default_gateway(session, VICTIM, session.lab.addr["director"])
        weights(session, "nat", 1, only=VICTIM)

    def symptom(self, result):
        return reply_escapes(result)


class NatSameSubnet(Scenario):
    name, mode, client_role = "nat-same-subnet", "nat", "router"

    def fix(self, session):
        self.client_role = "client"

    def break_(self, session):
        self.client_role = "router"

    def symptom(self, result):
        return reply_escapes(result)


class FullnatToa(Scenario):
    name, mode, rs_net, protos = "fullnat-toa", "fullnat", "routed", ("tcp",)

    def __init__(self):
        self.pids = []

    def break_(self, session):
        lab = session.lab
        for name in lab.rs_names:
            self.pids.append(start_plain_server(lab, name, PLAIN_PORT))
        self._move(session, 80, PLAIN_PORT)

    def fix(self, session):
        self._move(session, PLAIN_PORT, 80)
        for pid in self.pids:
            session.lab.stop_process(pid)
        self.pids = []

    @staticmethod
    def _move(session, old: int, new: int) -> None:
        lab, vs = session.lab, f"{session.lab.addr['vips']['fullnat']}:80"
        for rip in lab.addr["rs"]:
            demo._lbadm(session.director, "-a", "-t", vs, "-r", f"{rip}:{new}", demo.FWD_FLAGS["fullnat"], "-w", 1)
            demo._lbadm(session.director, "-d", "-t", vs, "-r", f"{rip}:{old}")

    def symptom(self, result):
        ex, j = first(result, "TCP SYN")
        if ex is None or not ex.ok or "toa=" in ex.answer:
            return None
        toa = j.hops[-1].fields.get("tcp.toa")
        return (f"the SYN reached {j.hops[-1].receiver} with TOA {toa}, "
                f"but the server answered \"{ex.answer}\": it saw only the director's side")


class TunRpFilter(Scenario):
    name, mode = "tun-rp-filter", "tun"

    def break_(self, session):
        weights(session, "tun", 0, only=VICTIM)
        self.drops = reverse_path_drops(session, VICTIM)
        sysctls(session, VICTIM, {"net.ipv4.conf.all.rp_filter": 1})
        self.session = session

    def fix(self, session):
        sysctls(session, VICTIM, {"net.ipv4.conf.all.rp_filter": 0})
        weights(session, "tun", 1, only=VICTIM)

    def symptom(self, result):
        _, j = first(result, "TCP SYN")
        if j is None or first(result, "TCP SYN-ACK")[1] is not None:
            return None
        unwrapped = [h for h in j.hops if h.point.kind == "decap"]
        dropped = reverse_path_drops(self.session, VICTIM) - self.drops
        where = f"reached {unwrapped[0].point.name}" if unwrapped else f"reached {j.hops[-1].receiver}"
        return (f"the SYN {where} (decapsulated) and no SYN-ACK ever came; "
                f"{VICTIM}'s kernel counted {dropped} reverse-path drops")


SCENARIOS = {s.name: s for s in (DrArp, NatGateway, NatSameSubnet, FullnatToa, TunRpFilter)}


def run_scenario(session, scenario: Scenario, timeout: float = 2.0) -> dict:
    """Break, trace, fix, trace. {"broken", "fixed": ModeTrace, "symptom", "healthy": str|None}."""
    scenario.break_(session)
    try:
        broken = session.trace(scenario.mode, scenario.protos, client_role=scenario.client_role,
                               warmup=scenario.warmup, timeout=timeout, ask_arp=scenario.ask_arp)
        symptom = scenario.symptom(broken)
    finally:
        scenario.fix(session)
    fixed = session.trace(scenario.mode, scenario.protos, client_role=scenario.client_role, timeout=timeout)
    return {"broken": broken, "fixed": fixed, "symptom": symptom, "healthy": scenario.healthy(fixed)}


# -- the fullnat-toa scenario's plain server -------------------------------------------------------------

def start_plain_server(lab, name: str, port: int, timeout: float = 10.0) -> int:
    argv = [sys.executable, "-m", "lb.lab.breakit", "plain-server", "--name", name, "--port", port]
    proc = lab.popen(name, argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout) and proc.stdout.readline().strip() == b"ready"
    proc.stdout.close()
    if not ready:
        lab.stop_process(proc.pid)
        raise LabError(f"the plain server on {name} did not start")
    return proc.pid


def plain_server(name: str, port: int) -> int:
    """HTTP/1.0 on `port` answering '<name> client=<the peer its socket sees>', one at a time."""
    import signal
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with socket.create_server(("0.0.0.0", port), reuse_port=True) as srv:
        print("ready", flush=True)
        sys.stdout = open(os.devnull, "w")
        while True:
            conn, peer = srv.accept()
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(4096)
                    body = f"{name} client={peer[0]}:{peer[1]}\n".encode()
                    conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


# -- lb break ----------------------------------------------------------------------------------------------

def cmd_break(a) -> int:
    from rich.console import Console
    from lb.lab.breakview import render_break, render_list
    console = Console()
    if a.scenario == "list":
        render_list(console, a.lang)
        return 0
    names = list(SCENARIOS) if a.scenario == "all" else [a.scenario]
    if any(n not in SCENARIOS for n in names):
        raise LabError(f"unknown scenario {a.scenario!r} (choose {', '.join(SCENARIOS)}, all or list)")
    preflight()
    ok = True
    for rs_net in ("lan", "routed"):
        todo = [SCENARIOS[n]() for n in names if SCENARIOS[n].rs_net == rs_net]
        if not todo:
            continue
        with TraceSession(rs_net, sorted({s.mode for s in todo})) as session:
            for scenario in todo:
                outcome = run_scenario(session, scenario)
                if a.out:
                    write_files(outcome["broken"], Path(a.out), f"break-{scenario.name}")
                    write_files(outcome["fixed"], Path(a.out), f"break-{scenario.name}-fixed")
                render_break(console, scenario, outcome, a.lang)
                ok &= outcome["symptom"] is not None and outcome["healthy"] is not None
    return 0 if ok else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.lab.breakit")
    p.add_argument("what", choices=["plain-server"])
    p.add_argument("--name", required=True)
    p.add_argument("--port", type=int, default=PLAIN_PORT)
    a = p.parse_args(argv)
    return plain_server(a.name, a.port)


if __name__ == "__main__":
    sys.exit(main())
