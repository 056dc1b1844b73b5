"""Scheduler registry: name -> Scheduler class.

Explicit on purpose (like aioquic's congestion/): a new scheduler module is imported and
registered at the bottom of this file, so `names()` is exactly what this build offers.
"""
from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    """Make `cls` available under `cls.name`; usable as a class decorator."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"scheduler {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type:
    """The Scheduler class called `name`; KeyError if there is none."""
    return _REGISTRY[name]


def names() -> list[str]:
    return sorted(_REGISTRY)


from lb.schedulers import rr, wrr  # noqa: E402  (the modules import base, not this file)

register(rr.RoundRobin)
register(wrr.WeightedRoundRobin)
