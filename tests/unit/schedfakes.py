"""Stand-ins the scheduler tests share: live counters by slot, services built on them, and a
`picks` helper that can also play the fast path's part (a picked server gains a connection)."""
from lb.director.model import Flow, RealServer, Service

VIP = "198.18.0.100"
FLOW = Flow("tcp", "203.0.113.7", 40000, VIP, 80)


class CounterViews:
    """What schedulers read from the Forwarder: `.active` / `.inactive` indexable by slot."""

    def __init__(self, slots: int = 16):
        self.active = [0] * slots
        self.inactive = [0] * slots

    def dest_counters(self, slot):
        raise AssertionError("schedulers must read the flat views, not build counter dicts")


class ForwarderCounters:
    """The real fast path's counters (lb._forward.Forwarder) in CounterViews' shape: writes go
    through Forwarder.load_counters, so a service deciding in C (InC) reads the same loads."""

    def __init__(self):
        from lb._forward import Forwarder       # the extension, built in the tree
        self.fwd = Forwarder(max_conns=16)
        self.active, self.inactive = _ForwarderView(self, 0), _ForwarderView(self, 1)

    def dest_counters(self, slot):
        raise AssertionError("schedulers must read the flat views, not build counter dicts")


class _ForwarderView:
    def __init__(self, owner, which):
        self.owner, self.which = owner, which

    def __getitem__(self, slot):
        fwd = self.owner.fwd
        return (fwd.active, fwd.inactive)[self.which][slot]

    def __setitem__(self, slot, value):
        fwd = self.owner.fwd
        counts = [fwd.active[slot], fwd.inactive[slot]]
        counts[self.which] = value
        fwd.load_counters(slot, *counts)


class InC:
    """A service deciding in C as lbd's does: the program lb.schedulers.program.build() makes
    of its scheduler, pushed into the Forwarder whenever the servers change (dests_changed, as
    the reconcile step pushes it), and Forwarder.pick for every new flow. `decisions` counts
    the picks made in C. Stands in for the Service in picks(), load(), stats_of()."""

    SVC = 0

    def __init__(self, svc, counters: ForwarderCounters):
        self.svc, self.fwd, self.decisions = svc, counters.fwd, 0
        self.fwd.set_service(self.SVC, 6, VIP, 80)
        for d in svc.dests:
            self.fwd.set_dest(d.slot, self.SVC, f"10.0.0.{d.slot + 1}", 80)
        self.dests_changed()

    @property
    def dests(self):
        return self.svc.dests

    @property
    def sched(self):
        return self.svc.sched

    def dests_changed(self):
        from lb.schedulers import program
        self.svc.dests_changed()
        dests = self.svc.dests
        self.fwd.set_scheduler(self.SVC, program.build(
            self.svc.scheduler, self.svc.sched_flags, [program.spec_of(d) for d in dests],
            [d.slot for d in dests]))

    def schedule(self, flow):
        self.decisions += 1
        slot = self.fwd.pick(self.SVC, flow.caddr, flow.cport, flow.vaddr, flow.vport)
        return next((d for d in self.svc.dests if d.slot == slot), None) if slot >= 0 else None


def make(sched, weights, names="ABCDEFGH", flags=(), stats=None):
    """A service with servers A, B, ... (slots 0, 1, ...) sharing one CounterViews (or the
    `stats` given, e.g. a ForwarderCounters)."""
    svc = Service("tcp", VIP, 80, sched, sched_flags=flags)
    stats = CounterViews() if stats is None else stats
    svc.dests = [RealServer(n, 80, w, slot=i, stats=stats)
                 for i, (n, w) in enumerate(zip(names, weights))]
    svc.dests_changed()
    return svc


def stats_of(svc) -> CounterViews:
    return svc.dests[0].stats


def load(svc, *counts):
    """Set (active, inactive) per server in list order."""
    stats = stats_of(svc)
    for dest, (active, inactive) in zip(svc.dests, counts):
        stats.active[dest.slot], stats.inactive[dest.slot] = active, inactive


def picks(svc, n, flow=FLOW, bind=None):
    """n decisions as a string of server names ('-' for none). bind="active"/"inactive":
    count each new connection on the server picked, as the fast path would."""
    out = []
    for _ in range(n):
        dest = svc.schedule(flow)
        out.append(dest.addr if dest else "-")
        if dest is not None and bind:
            getattr(dest.stats, bind)[dest.slot] += 1
    return "".join(out)
