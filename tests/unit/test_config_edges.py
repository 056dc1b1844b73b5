"""Config.apply at its edges (the survivors of a mutation run over lb/director/config.py):
firewall-mark services and the keys they own, persistence and one-packet rules, both ends of
each range, what a change prints (nothing, as ipvsadm), and the listings that read the fast
path's live figures. A refusal is one line naming the problem; nothing changes."""
import pytest

from lb.director.config import Config, ConfigError
from lb.director.fastpath import FakeFastPath

VIP = {"proto": "tcp", "vip": "198.18.0.100", "port": 80}
KEY80 = ["tcp", "198.18.0.100", 80]


def fwmark_service(mark=1, *keys, **kw):
    return {"op": "add_service", "fwmark": mark, "scheduler": "rr",
            "match": [list(k) for k in keys] or [KEY80], **kw}


def refusal(cfg, cmd) -> ConfigError:
    before = [(s.key, list(s.match), s.persistent, s.onepacket, list(s.laddrs),
               [(d.addr, d.port, d.weight) for d in s.dests]) for s in cfg.services]
    with pytest.raises(ConfigError) as err:
        cfg.apply(cmd)
    after = [(s.key, list(s.match), s.persistent, s.onepacket, list(s.laddrs),
              [(d.addr, d.port, d.weight) for d in s.dests]) for s in cfg.services]
    assert after == before
    return err.value


# --- ranges: the top of each is allowed, one past it is not ---------------------------------

def test_fwmark_and_port_ranges_end_where_ipvsadm_s_do():
    c = Config()
    c.apply(fwmark_service(2**32 - 1))                   # the mark is a u32
    assert c.services[0].fwmark == 2**32 - 1
    c.apply({"op": "add_service", **VIP, "port": 81, "scheduler": "rr"})
    c.apply({"op": "add_server", **VIP, "port": 81, "rip": "198.18.0.11", "rport": 65535,
             "weight": 65535})
    c.apply({"op": "add_server", **VIP, "port": 81, "rip": "198.18.0.12", "rport": 1})
    assert [(d.port, d.weight) for d in c.services[1].dests] == [(65535, 65535), (1, 1)]
    assert str(refusal(c, fwmark_service(2**32, ["udp", "198.18.0.100", 53]))) == \
        "bad fwmark 4294967296: must be an integer 1..4294967295"
    for rport in (0, 65536):       # port 0 only means "the packet's port" in a fwmark service
        assert str(refusal(c, {"op": "add_server", **VIP, "port": 81, "rip": "198.18.0.13",
                               "rport": rport})) == \
            f"bad rport {rport}: must be an integer 1..65535"


def test_a_fwmark_server_may_take_port_0():
    c = Config()
    c.apply(fwmark_service(7))
    c.apply({"op": "add_server", "fwmark": 7, "rip": "198.18.0.11", "rport": 0})
    assert c.services[0].dests[0].port == 0


def test_forwarding_defaults_to_masquerading():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.11"})      # ipvsadm -a without -m/-g/-i
    assert c.services[0].dests[0].fwd == "masq"


# --- firewall-mark services and the keys they own ---------------------------------------------

def test_fwmark_service_names_and_flags():
    c = Config()
    c.apply(fwmark_service(1, KEY80, scheduler="sh", sched_flags=["sh-port"]))
    assert (c.services[0].scheduler, c.services[0].sched_flags) == ("sh", {"sh-port"})
    assert str(refusal(c, fwmark_service(1, ["udp", "198.18.0.100", 53]))) == \
        "service FWM 1 already exists"
    assert str(refusal(c, {"op": "del_service", "fwmark": 7})) == "no such service FWM 7"


@pytest.mark.parametrize("match, message", [
    ([], "firewall-mark service 1 needs the keys that carry the mark (--match tcp:VIP:port[,...])"),
    ("tcp:198.18.0.100:80",
     "firewall-mark service 1 needs the keys that carry the mark (--match tcp:VIP:port[,...])"),
    ([["tcp", "198.18.0.100"]], "bad match ['tcp', '198.18.0.100']: expected [proto, VIP, port]"),
    ([["sctp", "198.18.0.100", 80]], "bad proto 'sctp': must be one of tcp, udp"),
])
def test_bad_match_lists_are_refused_by_name(match, message):
    assert str(refusal(Config(), {**fwmark_service(1), "match": match})) == message


def test_a_key_belongs_to_one_service_only():
    c = Config()
    c.apply(fwmark_service(1, KEY80))
    # a port service on a key a mark owns, and a second mark on it: both refused
    assert str(refusal(c, {"op": "add_service", **VIP, "scheduler": "rr"})) == \
        "TCP 198.18.0.100:80 already belongs to service FWM 1"
    assert str(refusal(c, fwmark_service(2, ["udp", "198.18.0.100", 53], KEY80))) == \
        "TCP 198.18.0.100:80 already belongs to service FWM 1"
    # and a mark on a port service's key
    c.apply({"op": "add_service", **VIP, "port": 443, "scheduler": "rr"})
    assert str(refusal(c, fwmark_service(3, ["tcp", "198.18.0.100", 443]))) == \
        "TCP 198.18.0.100:443 already belongs to service TCP 198.18.0.100:443"


def test_match_only_for_a_fwmark_service():
    c = Config()
    message = "--match only applies to a firewall-mark service (-f)"
    assert str(refusal(c, {"op": "add_service", **VIP, "scheduler": "rr", "match": [KEY80]})) == message
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    assert str(refusal(c, {"op": "edit_service", **VIP, "scheduler": "rr", "match": [KEY80]})) == message


def test_editing_a_fwmark_service_replaces_its_keys():
    c = Config()
    c.apply(fwmark_service(1, KEY80))
    key443 = ["tcp", "198.18.0.100", 443]
    # its own keys again (plus one): not "already belongs" to itself
    c.apply({**fwmark_service(1, KEY80, key443), "op": "edit_service"})
    assert c.services[0].match == [("tcp", "198.18.0.100", 80), ("tcp", "198.18.0.100", 443)]
    c.apply({**fwmark_service(1, key443), "op": "edit_service"})
    assert c.services[0].match == [("tcp", "198.18.0.100", 443)]
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})     # port 80 is free again


# --- persistence (-p, -M) and one-packet scheduling (-o) ---------------------------------------

@pytest.mark.parametrize("extra, message", [
    ({"persistent": 300, "netmask": "255.0.255.0"},
     "bad netmask '255.0.255.0': must be a contiguous IPv4 netmask such as 255.255.255.0"),
    ({"netmask": "255.255.255.0"}, "a netmask (-M) only applies to a persistent service (-p)"),
    ({"onepacket": True}, "one-packet scheduling (-o) is only for UDP services"),
    ({"proto": "udp", "onepacket": True, "persistent": 60},
     "a one-packet (-o) service keeps no connections: it cannot be persistent (-p)"),
])
def test_persistence_refusals_name_the_option(extra, message):
    assert str(refusal(Config(), {"op": "add_service", **VIP, "scheduler": "rr", **extra})) == message


def test_edit_sets_and_clears_persistence_and_one_packet():
    c = Config()
    c.apply({"op": "add_service", **VIP, "proto": "udp", "scheduler": "rr", "persistent": 300})
    c.apply({"op": "edit_service", **VIP, "proto": "udp", "scheduler": "rr", "persistent": 0})
    assert c.services[0].persistent == 0                 # -p 0 is no persistence
    c.apply({"op": "edit_service", **VIP, "proto": "udp", "scheduler": "rr", "onepacket": True})
    assert c.services[0].onepacket is True               # -o on a UDP service's edit


def test_lower_threshold_above_upper_names_both():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    err = refusal(c, {"op": "add_server", **VIP, "rip": "198.18.0.11", "u_threshold": 4,
                      "l_threshold": 5})
    assert str(err) == "the lower threshold (-y 5) is above the upper threshold (-x 4)"


# --- FULLNAT local addresses --------------------------------------------------------------------

def test_sixteen_local_addresses_at_most():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    for i in range(16):
        c.apply({"op": "add_laddr", **VIP, "laddr": f"198.18.0.{i + 1}"})
    assert str(refusal(c, {"op": "add_laddr", **VIP, "laddr": "198.18.0.17"})) == \
        "service TCP 198.18.0.100:80 has 16 local addresses already"


def test_last_local_address_of_fullnat_servers_is_kept():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply({"op": "add_laddr", **VIP, "laddr": "198.18.0.3"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.11", "fwd": "fullnat"})
    assert str(refusal(c, {"op": "del_laddr", **VIP, "laddr": "198.18.0.3"})) == \
        "198.18.0.3 is the last local address of service TCP 198.18.0.100:80, which has FULLNAT servers"


def test_local_address_commands_on_a_missing_service():
    # DPVS's commands: no kernel refusal to quote; --get-laddr lists, so exits 1 as -L does
    c = Config()
    for op in ("add_laddr", "del_laddr"):
        err = refusal(c, {"op": op, **VIP, "laddr": "198.18.0.3"})
        assert (str(err), err.ipvsadm, err.rc) == ("no such service TCP 198.18.0.100:80", None, 255)
    err = refusal(c, {"op": "get_laddr", **VIP})
    assert (err.ipvsadm, err.rc) == ("No such service", 1)


# --- what a change prints, and the listings -----------------------------------------------------

def test_every_change_prints_nothing():
    c = Config(stats=FakeFastPath())
    cmds = [{"op": "add_service", **VIP, "scheduler": "rr"},
            {"op": "edit_service", **VIP, "scheduler": "wrr"},
            {"op": "add_laddr", **VIP, "laddr": "198.18.0.3"},
            {"op": "add_server", **VIP, "rip": "198.18.0.11"},
            {"op": "edit_server", **VIP, "rip": "198.18.0.11", "weight": 2},
            {"op": "zero"},
            {"op": "set", "tcp": 100, "tcpfin": 0, "udp": 0},
            {"op": "del_server", **VIP, "rip": "198.18.0.11"},
            {"op": "del_laddr", **VIP, "laddr": "198.18.0.3"},
            {"op": "del_service", **VIP}]
    assert [c.apply(cmd) for cmd in cmds] == [""] * len(cmds)


def test_zero_resets_the_counters_of_the_service_named():
    fp = FakeFastPath()
    c = Config(stats=fp)
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply(fwmark_service(1, ["udp", "198.18.0.100", 53]))
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.11"})
    c.apply({"op": "add_server", "fwmark": 1, "rip": "198.18.0.12", "rport": 0})
    c.apply({"op": "add_server", "fwmark": 1, "rip": "198.18.0.13", "rport": 0})
    for slot, dest in enumerate([c.services[0].dests[0], c.services[1].dests[0]]):
        dest.slot = slot                  # the reconcile step gives slots; .13 has none yet
        fp.counts[slot] = {**fp.dest_counters(slot), "conns": 5, "inpkts": 9}
    c.apply({"op": "zero", "fwmark": 1})              # -Z -f 1: only that service
    assert [fp.dest_counters(s)["conns"] for s in (0, 1)] == [5, 0]
    c.apply({"op": "zero"})                           # -Z: every service
    assert [fp.dest_counters(s)["inpkts"] for s in (0, 1)] == [0, 0]


def test_list_names_a_fwmark_service_and_the_timeouts():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply(fwmark_service(1, ["udp", "198.18.0.100", 53]))
    assert c.apply({"op": "list", "fwmark": 1, "numeric": True}).splitlines()[2:] == ["FWM  1 rr"]
    assert c.apply({"op": "list", "timeout": True}) == "Timeout (tcp tcpfin udp): 900 120 300\n"
    c.apply({"op": "set", "tcp": 0, "tcpfin": 30, "udp": 0})
    assert c.apply({"op": "list", "timeout": True}) == "Timeout (tcp tcpfin udp): 900 30 300\n"


class FastPathWithConns(FakeFastPath):
    """The fake fast path holding two connections bound to slot 0 and their template, in the
    shape Forwarder.conns() gives them."""

    def conns(self, now=None):
        row = {"proto": "TCP", "expires_in": 60, "state": "ESTABLISHED", "client": ("198.18.1.2", 40000),
               "virtual": ("198.18.0.100", 80), "dest": ("198.18.0.11", 80), "template": False,
               "dest_slot": 0}
        return [row, {**row, "client": ("198.18.1.3", 40000)},
                {**row, "proto": "TCP", "state": "NONE", "client": ("198.18.1.2", 0), "template": True}]


def service_with_two_servers(stats):
    c = Config(stats=stats)
    c.apply({"op": "add_service", **VIP, "scheduler": "rr", "persistent": 300})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.11"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.12"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.13"})
    c.services[0].dests[0].slot, c.services[0].dests[1].slot = 0, 1   # .13: no slot yet
    return c


def test_connection_listing_reads_the_fast_path():
    c = service_with_two_servers(FastPathWithConns())
    lines = c.apply({"op": "list", "connections": True, "numeric": True}).splitlines()
    assert len(lines) == 2 + 3 and lines[2].split()[:2] == ["TCP", "01:00"]
    pe = c.apply({"op": "list", "connections": True, "persistent_conn": True}).splitlines()
    assert "pe name" in pe[1] and "pe name" not in lines[1]
    assert Config().apply({"op": "list", "connections": True}).count("\n") == 2   # no fast path


def test_persistent_conn_counts_templates_per_server():
    # PersistConn: 1 template on .11 (slot 0), none on .12 (slot 1), .13 has no slot
    for cfg in (service_with_two_servers(FastPathWithConns()),
                service_with_two_servers(FastPathWithConns()).copy()):   # a planning copy too
        lines = cfg.apply({"op": "list", "persistent_conn": True}).splitlines()
        assert [line.split()[3] for line in lines[4:]] == ["1", "0", "0"]
        one = cfg.apply({"op": "list", **VIP, "persistent_conn": True}).splitlines()
        assert [line.split()[3] for line in one[3:]] == ["1", "0", "0"]
    lines = service_with_two_servers(None).apply({"op": "list", "persistent_conn": True}).splitlines()
    assert [line.split()[3] for line in lines[4:]] == ["0", "0", "0"]


def test_rate_listing_reads_the_estimator():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    zero = c.apply({"op": "list", "rate": True, "numeric": True}).splitlines()
    assert zero[3].split()[2:] == ["0"] * 5                # no estimator yet: zeros
    c.rates = lambda key: dict(cps=3, inpps=4, outpps=5, inbps=6, outbps=7)
    for cfg in (c, c.copy()):
        for cmd in ({"op": "list", "rate": True, "numeric": True},
                    {"op": "list", **VIP, "rate": True, "numeric": True}):
            row = next(line for line in cfg.apply(cmd).splitlines() if line.startswith("TCP"))
            assert row.split()[2:] == ["3", "4", "5", "6", "7"]


def test_a_planning_copy_sees_the_daemons_figures():
    c = service_with_two_servers(FastPathWithConns())
    c.apply({"op": "add_laddr", **VIP, "laddr": "198.18.0.3"})
    c.laddr_used = lambda lip: 42
    twin = c.copy()
    assert twin.apply({"op": "get_laddr"}).splitlines()[2].split() == ["198.18.0.3", "0", "42"]
    assert twin.apply({"op": "list", "connections": True}) == c.apply({"op": "list", "connections": True})
