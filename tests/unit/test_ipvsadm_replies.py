"""lbd's replies to one lbadm command: ipvsadm's words and exit status where the kernel would
refuse the same command, lbd's own (naming the line) inside a rule file."""
from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress


def test_a_single_command_gets_ipvsadms_words_a_batch_line_lbds():
    d = Director(FakeFastPath(), FakeIngress())
    d.reconcile()
    add = {"op": "add_service", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "scheduler": "rr"}
    assert d.apply(add)["rc"] == 0
    assert d.apply(add) == {"rc": 255, "out": "", "err": "Service already exists\n"}
    reply = d.apply({"op": "batch", "commands": [add], "lines": [4]})
    assert reply == {"rc": 1, "out": "",
                     "err": "lbadm: line 4: service TCP 198.18.0.100:80 already exists\n"}
    listing = {"op": "list", "proto": "tcp", "vip": "198.18.0.100", "port": 81}
    assert d.apply(listing) == {"rc": 1, "out": "", "err": "No such service\n"}
