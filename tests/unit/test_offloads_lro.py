"""lbd turns LRO off on what it serves and back on when it stops (lb.director.offloads)."""
from types import SimpleNamespace

from lb.director import offloads


class FakeEthtool:
    """pyroute2.ethtool.Ethtool's get/set_features over a dict of {ifname: {feature: on}}."""

    def __init__(self, table):
        self.table = table

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def get_features(self, ifname):
        if ifname not in self.table:
            raise OSError("no such device")
        return SimpleNamespace(features={k: SimpleNamespace(enable=v) for k, v in self.table[ifname].items()})

    def set_features(self, ifname, feats):
        self.table[ifname] = {k: f.enable for k, f in feats.features.items()}


def test_lro_off_only_where_it_was_on_and_back_on_after(monkeypatch):
    table = {"eth0": {"rx-lro": True, "rx-gro": True}, "eth1": {"rx-lro": False}, "veth0": {}}
    monkeypatch.setattr(offloads, "Ethtool", lambda: FakeEthtool(table))
    changed = offloads.disable_lro(["eth0", "eth1", "veth0", "gone0"])
    assert changed == ["eth0"]
    assert table["eth0"] == {"rx-lro": False, "rx-gro": True}      # GRO stays
    offloads.restore_lro(changed)
    assert table["eth0"]["rx-lro"] is True and table["eth1"]["rx-lro"] is False
