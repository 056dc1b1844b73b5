"""Schedulers of one's own: `lbd --scheduler-module MODULE` loads them.

MODULE is a dotted module name on Python's path or the path of a .py file. Every class in it
that derives from lb.schedulers.base.Scheduler and sets `name` is registered under that name,
after which `lbadm -A ... -s NAME` uses it like a built-in one. Such a scheduler has no C
decision: the fast path asks it, through the Director, once per batch of new flows (the path
the built-in schedulers no longer take). A class needs only `name`, and `schedule(service,
flow)` returning one of `service.dests` or None; `update_service(service)` is called after
every change of the service's servers. See docs/schedulers.md.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
from pathlib import Path

from lb import schedulers
from lb.schedulers.base import Scheduler

NAME = re.compile(r"[a-z][a-z0-9_]{0,14}\Z")     # as lbadm -s takes it (IP_VS_SCHEDNAME_MAXLEN)


class PluginError(Exception):
    """The module cannot be used; one line naming it and the problem."""


def _import(spec: str):
    if spec.endswith(".py") or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise PluginError(f"scheduler module {spec}: no such file")
        loader_spec = importlib.util.spec_from_file_location(f"lb_plugin_{path.stem}", path)
        module = importlib.util.module_from_spec(loader_spec)
        loader_spec.loader.exec_module(module)
        return module
    return importlib.import_module(spec)


def load(spec: str) -> list[str]:
    """Import `spec` and register its schedulers; returns their names."""
    try:
        module = _import(spec)
    except PluginError:
        raise
    except Exception as e:      # an operator's code: any error is theirs to see, in one line
        raise PluginError(f"scheduler module {spec}: {type(e).__name__}: {e}") from None
    found = [cls for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, Scheduler) and cls.__module__ == module.__name__
             and getattr(cls, "name", "")]
    if not found:
        raise PluginError(f"scheduler module {spec}: defines no Scheduler subclass with a name")
    for cls in found:
        if not NAME.match(cls.name):
            raise PluginError(f"scheduler module {spec}: bad scheduler name {cls.name!r} "
                              "(a-z, 0-9 and _, at most 15, starting with a letter)")
        if cls.name in schedulers.names() and schedulers.get(cls.name) is not cls:
            raise PluginError(f"scheduler module {spec}: {cls.name!r} is already a scheduler")
    for cls in found:
        schedulers.register(cls)
    return [cls.name for cls in found]
