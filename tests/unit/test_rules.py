"""ipvsadm rule files: lbadm -S (the text), -R and lbd --config (applied whole or not at all)."""
import pytest

from lb.director import cli, rules
from lb.director.director import Director
from lb.director.fastpath import FakeFastPath, FakeIngress

# Every kind of service and server lbd holds, written as ipvsadm 1.31 -S writes them (plus
# lbadm's own options where ipvsadm has none), already in -S's order: services sorted by
# (fwmark, protocol number, VIP, port), servers by (RIP, port).
SAVED = """\
-A -t 198.18.0.100:80 -s wrr -p 600 -M 255.255.255.0
-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -m -w 3 -x 100 -y 50
-a -t 198.18.0.100:80 -r 198.18.0.12:8080 -m -w 0
-A -t 198.18.0.101:80 -s rr
-a -t 198.18.0.101:80 -r 198.18.0.11:80 -g -w 1
-A -t 198.18.0.103:80 -s wlc
--add-laddr -t 198.18.0.103:80 -z 198.18.0.3
--add-laddr -t 198.18.0.103:80 -z 198.18.0.4
-a -t 198.18.0.103:80 -r 198.18.2.11:8080 --fullnat -w 1
-A -t 198.18.0.104:80 -s lc
-a -t 198.18.0.104:80 -r 198.18.2.12:80 --enat -w 2
-A -u 198.18.0.102:53 -s sh -b sh-fallback,sh-port
-a -u 198.18.0.102:53 -r 198.18.0.13:53 -i -w 1 --tun-type ipip
-A -u 198.18.0.105:5353 -s rr -o
-a -u 198.18.0.105:5353 -r 198.18.0.13:5353 -m -w 1
-A -f 7 -s rr -p 300 --match tcp:198.18.0.106:80,tcp:198.18.0.106:443
-a -f 7 -r 198.18.0.14:0 -m -w 2
"""


def director():
    d = Director(FakeFastPath(), FakeIngress())
    d.reconcile()
    return d


def restore(d, text, **extra):
    commands, lines = rules.parse(text, cli.parse)
    return d.apply({"op": "batch", "commands": commands, "lines": lines, **extra})


def save(d):
    reply = d.apply(cli.parse(["-S", "-n"]))
    assert reply["rc"] == 0, reply
    return reply["out"]


def test_save_restore_save_is_identical():
    d = director()
    assert restore(d, SAVED)["rc"] == 0
    assert save(d) == SAVED
    again = director()
    assert restore(again, save(d))["rc"] == 0
    assert save(again) == SAVED and again.ingress.drops == d.ingress.drops


def test_saved_lines_come_in_ipvsadm_order_whatever_the_order_of_adding():
    shuffled = "\n".join(reversed([line for line in SAVED.splitlines() if line.startswith("-A")]))
    d = director()
    assert restore(d, shuffled)["rc"] == 0
    assert [line for line in save(d).splitlines()] == \
        [line for line in SAVED.splitlines() if line.startswith("-A")]


def test_comments_blank_lines_and_a_program_name_are_skipped():
    d = director()
    assert restore(d, "# ipvsadm-save\n\nipvsadm -A -t 198.18.0.100:80 -s rr\n")["rc"] == 0
    assert save(d) == "-A -t 198.18.0.100:80 -s rr\n"


@pytest.mark.parametrize("text, message", [
    ("-A -t 198.18.0.100:80\n-A -t 198.18.0.100:99999\n",
     "line 2: bad port '99999' in '198.18.0.100:99999': must be a number 1..65535"),
    ("\n# c\n-L -n\n", "line 3: '-L -n' does not change the table: a rule file holds only "
                       "commands that do"),
    ("-A -t 198.18.0.100:80\n-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gre\n",
     "line 2: tunnel type 'gre' is not supported: lbd tunnels are IPIP only"),
    ("-A -t 198.18.0.100:80 -s rr 'unclosed\n", "line 1: No closing quotation"),
])
def test_a_bad_line_is_named(text, message):
    with pytest.raises(rules.RulesError) as e:
        rules.parse(text, cli.parse)
    assert str(e.value) == message


def test_a_half_valid_file_applies_nothing():
    d = director()
    assert restore(d, SAVED)["rc"] == 0
    ops, before = len(d.fastpath.ops), save(d)
    half = "-A -t 198.18.0.200:80 -s rr\n-a -t 198.18.0.200:80 -r 198.18.0.11 -m\n" \
           "-a -t 198.18.0.201:80 -r 198.18.0.11 -m\n"
    reply = restore(d, half)
    assert reply == {"rc": 1, "out": "", "err": "lbadm: line 3: no such service TCP 198.18.0.201:80\n"}
    assert save(d) == before and len(d.fastpath.ops) == ops


def test_reload_applies_only_the_difference_and_keeps_unchanged_schedulers(tmp_path):
    path = tmp_path / "lbd.rules"
    path.write_text(SAVED)
    d = Director(FakeFastPath(), FakeIngress(),
                 reload_source=lambda: rules.read(str(path), cli.parse))
    d.reconcile()
    assert d.apply({"op": "reload"})["rc"] == 0 and save(d) == SAVED
    kept = {svc.key: svc for svc in d.config.services}
    ops = len(d.fastpath.ops)
    path.write_text(SAVED.replace("-r 198.18.0.13:5353 -m -w 1", "-r 198.18.0.13:5353 -m -w 4")
                    .replace("-A -t 198.18.0.101:80 -s rr\n-a -t 198.18.0.101:80 -r 198.18.0.11:80 -g -w 1\n", ""))
    assert d.apply({"op": "reload"})["rc"] == 0
    pushed = d.fastpath.ops[ops:]
    # The deleted service and server go; the weight reaches only the edited service's scheduler.
    assert sorted(op for op, _ in pushed) == ["clear_dest", "clear_service", "set_scheduler"]
    udp_slot = d.applied.service_slot(("udp", "198.18.0.105", 5353))
    assert ("set_scheduler", udp_slot) in pushed
    assert d.fastpath.scheds[udp_slot].weights[0] == 4
    now = {svc.key: svc for svc in d.config.services}
    assert ("tcp", "198.18.0.101", 80) not in now
    assert now[("tcp", "198.18.0.100", 80)] is kept[("tcp", "198.18.0.100", 80)]
    assert now[("udp", "198.18.0.105", 5353)] is not kept[("udp", "198.18.0.105", 5353)]
    assert now[("udp", "198.18.0.105", 5353)].dests[0].weight == 4
    path.write_text(SAVED + "-a -t 198.18.0.250:80 -r 198.18.0.1 -m\n")
    before = save(d)
    reply = d.apply({"op": "reload"})
    assert reply["rc"] == 1 and reply["err"] == \
        f"lbadm: {path}: line 18: no such service TCP 198.18.0.250:80\n"
    assert save(d) == before


def test_reload_without_a_file_is_refused():
    reply = director().apply({"op": "reload"})
    assert reply["err"] == "lbadm: lbd was started without --config: there is nothing to reload\n"


def test_a_service_on_every_port_is_refused_with_the_way_to_do_it():
    with pytest.raises(rules.RulesError, match="use -f MARK --match"):
        rules.parse("-A -t 198.18.0.100:0 -s rr -p 300\n", cli.parse)
