"""`lbadm --list-checks`: the state of every check, in a listing of its own so that `lbadm -L`
keeps ipvsadm's layout. One block per virtual server (its quorum, its sorry server), one line
per checker of each real server:

  TCP  198.18.0.100:80 quorum up (alive weight 3, quorum 1, hysteresis 0)
    -> 198.18.0.11:80     HTTP_GET   up    in table  w 1   ok 12 fail 0  status 200
"""
from __future__ import annotations

from lb.director.model import FWM


def _name(key) -> str:
    return f"FWM  {key[1]}" if key[0] == FWM else f"{key[0].upper():<4} {key[1]}:{key[2]}"


def service_label(key) -> str:
    """As lb.director.figures names services: "TCP 198.18.0.100:80", "FWM 7"."""
    return f"FWM {key[1]}" if key[0] == FWM else f"{key[0].upper()} {key[1]}:{key[2]}"


def figures(health, config) -> list:
    """Every checker as a JSON-able dict, for lb.director.figures (metrics, lbadm top)."""
    out = []
    for row in rows(health, config):
        row = dict(row)
        row["service"] = service_label(row["service"])
        row["server"] = "{}:{}".format(*row["server"])
        out.append(row)
    return out


def rows(health, config) -> list:
    """Every checker as a dict: what the listing, the metrics and lbadm top show."""
    out = []
    for key, svc in list(health.services.items()):
        live = config.find_service(*key)
        for server_key, server in svc.servers.items():
            dest = live.find_dest(*server_key) if live else None
            for check, state in zip(server.spec.checks, server.checks):
                out.append({"service": key, "server": server_key, "checker": check.kind,
                            "up": state.up, "alive": server.alive, "failures": state.failures,
                            "passed": state.passed, "failed": state.failed,
                            "detail": state.detail, "in_table": dest is not None,
                            "weight": dest.weight if dest is not None else None,
                            "quorum_up": svc.quorum_up})
    return out


def format_checks(health, config) -> str:
    lines = []
    for key, svc in health.services.items():
        vs = svc.spec
        sorry = ""
        if vs.sorry_server is not None:
            s = vs.sorry_server
            sorry = f", sorry server {s.addr}:{s.port} {'IN' if svc.sorry_active else 'standby'}"
        lines.append(f"{_name(key)} quorum {'up' if svc.quorum_up else 'DOWN'} (alive weight "
                     f"{svc.alive_weight()}, quorum {vs.quorum}, hysteresis {vs.hysteresis}"
                     f"{sorry})")
        live = config.find_service(*key)
        for server_key, server in svc.servers.items():
            dest = live.find_dest(*server_key) if live else None
            table = "out" if dest is None else f"w {dest.weight}"
            addr = f"{server_key[0]}:{server_key[1]}"
            if not server.spec.checks:
                lines.append(f"  -> {addr:<21} {'(none)':<10} up    {table}")
            for check, state in zip(server.spec.checks, server.checks):
                lines.append(f"  -> {addr:<21} {check.kind:<10} {'up' if state.up else 'DOWN':<5} "
                             f"{table:<6} ok {state.passed} fail {state.failed}  {state.detail}")
    return "".join(line + "\n" for line in lines) if lines else "no health checks configured\n"
