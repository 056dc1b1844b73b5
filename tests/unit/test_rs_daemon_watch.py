"""lb.realserver.daemon's watch (Daemon.look): a real-server daemon stops on its own, and says
why, when its TUN device or its network namespace is deleted; a device that only goes down
does not stop it. Pure: link states and the netns directory are given."""
import os

import pytest

from lb.netwatch import LinkWatch, link_state
from lb.realserver import daemon
from lb.realserver.decap import Decapsulator
from lb.realserver.enat_agent import Agent

VIP = "198.18.0.102"


@pytest.fixture
def netns_dir(tmp_path):
    (tmp_path / "rs1").write_text("")
    return tmp_path


def watched(cls, netns_dir):
    d = cls([VIP], ifname="lbtun9")
    st = os.stat(netns_dir / "rs1")
    d.watch = LinkWatch(ifnames=["lbtun9"], indexes=[7], netns=("rs1", (st.st_dev, st.st_ino)),
                        netns_dir=str(netns_dir), who=d.name)
    return d


@pytest.mark.parametrize("cls", [Decapsulator, Agent])
def test_a_deleted_device_stops_the_daemon(cls, netns_dir, capsys):
    d = watched(cls, netns_dir)
    d.look(1.0, states=lambda name: (7, True))
    assert not d.stopping and d.gone is None
    d.look(2.0, states=lambda name: (7, False))          # down: said, not fatal
    assert not d.stopping
    d.look(3.0, states=lambda name: (8, True))           # another device by its name
    assert d.stopping and d.gone == f"every interface {d.name} served was deleted"
    err = capsys.readouterr().err
    assert f"{d.name}: device lbtun9 is down" in err and f"{d.name}: device lbtun9 was deleted" in err
    assert f"{d.gone}: stopping" in err


def test_a_deleted_namespace_stops_the_daemon(netns_dir):
    d = watched(Decapsulator, netns_dir)
    (netns_dir / "rs1").unlink()
    d.look(1.0, states=lambda name: (7, True))
    assert d.stopping and d.gone == "the network namespace rs1 lb.realserver.decap runs in was deleted"


def test_it_looks_every_interval_or_at_once_after_a_failed_read(netns_dir):
    d = watched(Decapsulator, netns_dir)
    asked = []
    states = lambda name: asked.append(name) or (7, True)   # noqa: E731
    d.look(10.0, states)
    d.look(10.0 + daemon.WATCH_INTERVAL / 2, states)        # too soon: not asked
    assert asked == ["lbtun9"]
    d.recheck = True                                         # a read from the device failed
    d.look(10.0 + daemon.WATCH_INTERVAL / 2, states)
    assert asked == ["lbtun9", "lbtun9"] and not d.recheck


def test_link_state_of_loopback_and_of_nothing():
    index, up = link_state("lo")
    assert index == 1 and up
    assert link_state("no-such-dev0") is None
