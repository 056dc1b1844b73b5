"""Forwarding modes, one file each, registered by the name the configuration uses."""
from __future__ import annotations

from lb.modes.base import ForwardingMode, service_drops, service_keys
from lb.modes.enat import EnhancedNat
from lb.modes.fullnat import FullNat
from lb.modes.nat import Masquerade
from lb.modes.route import DirectRouting
from lb.modes.tunnel import Tunnel

_MODES: dict[str, ForwardingMode] = {}


def register(mode: ForwardingMode) -> None:
    _MODES[mode.name] = mode


def get(name: str) -> ForwardingMode:
    return _MODES[name]


def names() -> list[str]:
    return sorted(_MODES)


def by_short(short: str) -> ForwardingMode:
    """The mode people call `short` ("nat", "dr", "tun", "fullnat", "enat")."""
    return next(m for m in _MODES.values() if m.short == short)


register(Masquerade())
register(DirectRouting())
register(Tunnel())
register(FullNat())
register(EnhancedNat())

__all__ = ["ForwardingMode", "get", "names", "register", "service_drops", "service_keys"]
