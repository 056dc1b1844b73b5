"""Base class for schedulers: the kernel's ip_vs_scheduler ops (init, update, schedule)."""
from __future__ import annotations


class Scheduler:
    """One instance per service; keeps whatever state the algorithm needs between picks.

    The config calls `update_service` after every destination add, edit or delete (the
    kernel's add_dest/upd_dest/del_dest hooks); `schedule` runs once per new connection.
    """

    name = ""

    def __init__(self, service) -> None:
        self.update_service(service)

    def update_service(self, service) -> None:
        """Destinations changed; rebuild derived state. Default: nothing to do."""

    def schedule(self, service, flow):
        """Return the RealServer for a new connection, or None when none is available."""
        raise NotImplementedError
