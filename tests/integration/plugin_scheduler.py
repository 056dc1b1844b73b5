"""Schedulers of one's own, loaded by `lbd --scheduler-module` in test_schedulers_c.py."""
from lb.schedulers.base import Scheduler


class LastServer(Scheduler):
    """Every new connection to the last available server of the list."""

    name = "last"

    def schedule(self, service, flow):
        for dest in reversed(service.dests):
            if dest.available:
                return dest
        return None


class Broken(Scheduler):
    """Fails every decision: lbd must drop the flow, count it and keep running."""

    name = "broken"

    def schedule(self, service, flow):
        raise RuntimeError("this scheduler is broken on purpose")
