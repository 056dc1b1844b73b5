"""Integration tests: real namespaces, real traffic. Root only; everything always removed.

Every test collected under tests/integration is marked `integration` here, and skipped
unless we are root and `ip netns` works.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lb.lab.lbd import LabDirector
from lb.lab.net import pid_alive
from lb.lab.topology import Lab

HERE = Path(__file__).resolve().parent


def _why_not_runnable():
    # Only a missing privilege skips: as root, a broken `ip netns` must fail the run loudly,
    # not turn every integration test into a skip that CI would count as success.
    if os.geteuid() != 0:
        return "integration tests need root"
    return None


def pytest_collection_modifyitems(config, items):
    ours = [item for item in items if HERE in Path(item.path).resolve().parents]
    reason = _why_not_runnable() if ours else None
    for item in ours:
        item.add_marker(pytest.mark.integration)
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def _running_lab(**kwargs):
    """A Lab(**kwargs) up with the test servers running; always taken down, and then no
    namespace of it may be left."""
    lab = Lab(**kwargs)
    try:
        lab.up()
        lab.start_servers()
        yield lab
    finally:
        lab.down()
    assert lab.namespaces() == [], f"namespaces left behind: {lab.namespaces()}"


@pytest.fixture(scope="module")
def lab():
    """The default lab (client, router, director, rs1..rs3) with the test servers running."""
    yield from _running_lab()


@pytest.fixture(scope="module")
def rlab():
    """The routed lab: the real servers on their own network behind the router, which the
    director reaches only through the router (FULLNAT, ENAT); test servers running."""
    yield from _running_lab(rs_net="routed")


@pytest.fixture
def director(lab):
    """lb.director.daemon on the lab's director interface, answering lbadm; stopped by PID at teardown.

    Yields a lb.lab.lbd.LabDirector: `lbadm(*args) -> CompletedProcess`, `pid`, `socket`, `log_tail()`.
    """
    with LabDirector(lab) as d:       # started; stopped on the way out, pass or fail
        yield d
    assert not pid_alive(d.pid), f"lb.director.daemon pid {d.pid} survived teardown"


@pytest.fixture
def realservers(lab):
    """`lab.setup_realservers(mode[, vip])` for DR/TUN tests; every RS is torn down afterwards
    (``lb realserver teardown``: addresses, sysctls, rules, routes and the decapsulator)."""
    try:
        yield lab.setup_realservers
    finally:
        lab.teardown_realservers()


@pytest.fixture
def lab_director_small(lab):
    """lb.director.daemon with a small connection table (--max-conns 4096), so the expiry sweep goes
    round it quickly enough for tests that watch entries expire."""
    with LabDirector(lab, extra_args=["--max-conns", "4096"]) as d:
        yield d
