"""lb.netwatch and lb.director.links: what lbd and the real-server daemons make of their links and
namespace (pure logic, no root)."""
import os

import pytest

from lb.director.links import FloodDefence
from lb.netwatch import LinkWatch, own_netns


def states(table):
    return lambda name: table.get(name)


def test_down_up_and_gone_are_reported_once_each():
    w = LinkWatch(ifnames=["eth0", "eth1"], indexes=[2, 3])
    table = {"eth0": (2, True), "eth1": (3, True)}
    assert w.check(states(table)) == []
    table["eth0"] = (2, False)
    assert w.check(states(table)) == [("down", "eth0")]
    assert w.check(states(table)) == []
    table["eth0"] = (2, True)
    assert w.check(states(table)) == [("up", "eth0")]
    del table["eth1"]
    assert w.check(states(table)) == [("gone", "eth1")]
    assert w.check(states(table)) == [] and w.fatal() is None
    table["eth0"] = (9, True)                      # deleted and made again: another interface
    assert w.check(states(table)) == [("gone", "eth0")]
    assert w.fatal() == "every interface lbd served was deleted"


def test_a_deleted_namespace_name_is_fatal(tmp_path):
    ns = tmp_path / "netns"
    ns.mkdir()
    (ns / "lab-dir").write_text("")
    st = os.stat(ns / "lab-dir")
    w = LinkWatch(ifnames=["eth0"], indexes=[2], netns=("lab-dir", (st.st_dev, st.st_ino)),
                  netns_dir=str(ns))
    w.check(states({"eth0": (2, True)}))
    assert w.fatal() is None
    (ns / "lab-dir").unlink()
    w.check(states({"eth0": (2, True)}))
    assert w.fatal() == "the network namespace lab-dir lbd runs in was deleted"


def test_own_netns_finds_the_name_of_our_namespace(tmp_path):
    (tmp_path / "other").write_text("")
    (tmp_path / "mine").write_text("")
    me = tmp_path / "me"
    os.link(tmp_path / "mine", me)                 # the same inode, as a bind mount would be
    name, _ = own_netns(str(tmp_path), str(me))
    assert name in ("me", "mine")
    assert own_netns(str(tmp_path / "none"), str(me)) is None


@pytest.mark.parametrize("kw,word", [({"pressure": 2}, "--flood-pressure"),
                                     ({"embryo_timeout": 0}, "--embryo-timeout"),
                                     ({"secure_tcp": 5}, "--secure-tcp")])
def test_flood_defence_refuses_bad_values(kw, word):
    with pytest.raises(ValueError, match=word):
        FloodDefence(**kw)


def test_lbd_command_line_flood_and_nodest_options():
    from lb.director import daemon
    args = daemon._arguments(["-i", "eth0", "--expire-nodest-conn", "--secure-tcp", "2",
                              "--flood-pressure", "0.25", "--embryo-timeout", "1.5"])
    assert (args.expire_nodest_conn, args.secure_tcp, args.flood_pressure,
            args.embryo_timeout) == (True, 2, 0.25, 1.5)
    d = daemon._arguments(["-i", "eth0"])
    assert (d.expire_nodest_conn, d.secure_tcp, d.flood_pressure) == (False, 1, 0.5)
