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


from lb.schedulers import (  # noqa: E402  (the modules import base, not this file)
    dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, twos, wlc, wrr)

register(rr.RoundRobin)
register(wrr.WeightedRoundRobin)
register(lc.LeastConnection)
register(wlc.WeightedLeastConnection)
register(sed.ShortestExpectedDelay)
register(nq.NeverQueue)
register(lblc.LocalityLeastConnection)
register(lblcr.LocalityReplicated)
register(dh.DestinationHashing)
register(sh.SourceHashing)
register(mh.MaglevHashing)
register(fo.FailOver)
register(ovf.Overflow)
register(twos.PowerOfTwoChoices)

# Scheduler flags (ipvsadm -b) by the scheduler that reads them, in ipvsadm's print order.
SCHED_FLAGS = {"sh": ("sh-fallback", "sh-port"), "mh": ("mh-fallback", "mh-port")}
