"""What the table must hold for the checks' verdicts, and the commands that make a
configuration hold it. Pure: the Director runs `commands` on its trial copy after every
command (an operator's, a reload, a check's change), in the same all-or-nothing change.

The rule (keepalived's): the checker owns the presence of the servers it checks, the
configuration owns their weight.
- alive (and the quorum held, or no sorry server): in the table, with its configured weight
  (the file's, or the latest `lbadm -e -w`), or misc_dynamic's;
- down, or withdrawn while the sorry server stands in: out of the table, or in it with
  weight 0 with inhibit_on_failure;
- the sorry server: in the table while the quorum is lost, else out.
A server the checks do not know (added with lbadm -a) is left as the operator put it.
"""
from __future__ import annotations

from lb.director.model import FWM

ABSENT = None


def wanted(svc_state) -> dict:
    """(addr, port) -> weight, or ABSENT, for every server the checks manage in one service;
    and for each, the Server spec to add it from."""
    out = {}
    sorry = svc_state.sorry_active
    for key, server in svc_state.servers.items():
        if server.alive and not sorry:
            weight = server.weight
        else:
            weight = 0 if server.spec.inhibit_on_failure else ABSENT
        out[key] = (weight, server.spec)
    if svc_state.spec.sorry_server is not None:
        spec = svc_state.spec.sorry_server
        if spec.key not in out:
            out[spec.key] = (spec.weight if sorry else ABSENT, spec)
    return out


def service_fields(key: tuple) -> dict:
    return {"fwmark": key[1]} if key[0] == FWM else {"proto": key[0], "vip": key[1],
                                                     "port": key[2]}


def commands(config, health) -> list:
    """The lbadm commands that take `config` to what `health` (a HealthState) wants."""
    out = []
    for key, svc_state in health.services.items():
        svc = config.find_service(*key)
        if svc is None:
            continue                 # the operator deleted it: nothing to manage
        base = service_fields(key)
        for (addr, port), (weight, spec) in wanted(svc_state).items():
            dest = svc.find_dest(addr, port)
            server = {**base, "rip": addr, "rport": port}
            if weight is ABSENT:
                if dest is not None:
                    out.append({"op": "del_server", **server})
            elif dest is None:
                out.append({"op": "add_server", **server, "fwd": spec.fwd, "weight": weight,
                            "u_threshold": spec.u_threshold, "l_threshold": spec.l_threshold})
            elif dest.weight != weight:
                out.append({"op": "edit_server", **server, "fwd": dest.fwd, "weight": weight,
                            "u_threshold": dest.u_threshold, "l_threshold": dest.l_threshold})
    return out
