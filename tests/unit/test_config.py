"""Config.apply: every op, and every refusal leaves the configuration exactly as it was."""
import pytest

from lb.director.config import Config, ConfigError
from lb.director.model import OVERLOAD

VIP = {"proto": "tcp", "vip": "198.18.0.100", "port": 80}
ALL_SCHEDULERS = "dh, fo, lblc, lblcr, lc, mh, nq, ovf, rr, sed, sh, twos, wlc, wrr"


def add_service(sched="wrr", **kw):
    return {"op": "add_service", **VIP, "scheduler": sched, **kw}


def server(op, rip="198.18.0.11", rport=80, **kw):
    return {"op": op, **VIP, "rip": rip, "rport": rport, **kw}


def snapshot(cfg):
    """Everything a command could change, including scheduler state."""
    return [(s.key, s.scheduler, s.sched_flags, id(s.sched),
             dict(vars(s.sched)) if s.sched else None,
             [(d.addr, d.port, d.weight, d.fwd, d.u_threshold, d.l_threshold, set(d.flags), id(d))
              for d in s.dests])
            for s in cfg.services]


@pytest.fixture
def cfg():
    c = Config()
    c.apply(add_service())
    c.apply(server("add_server", weight=3, fwd="masq"))
    c.apply(server("add_server", rip="198.18.0.12", weight=1, fwd="masq"))
    return c


def test_build_and_list(cfg):
    assert cfg.apply({"op": "list", "numeric": True}) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 wrr\n"
        "  -> 198.18.0.11:80               Masq    3      0          0         \n"
        "  -> 198.18.0.12:80               Masq    1      0          0         \n")


def test_list_one_service(cfg):
    text = cfg.apply({"op": "list", **VIP})
    assert text.startswith("Prot LocalAddress:Port")
    assert "198.18.0.12:80" in text


def test_find_service(cfg):
    svc = cfg.find_service("tcp", "198.18.0.100", 80)
    assert svc is cfg.services[0]
    assert cfg.find_service("udp", "198.18.0.100", 80) is None


def test_edit_server_updates_scheduler(cfg):
    svc = cfg.services[0]
    cfg.apply(server("edit_server", weight=6, fwd="masq"))
    assert svc.find_dest("198.18.0.11", 80).weight == 6
    assert (svc.sched.di, svc.sched.mw) == (1, 6)


def test_delete_server_and_service(cfg):
    cfg.apply(server("del_server"))
    assert [d.addr for d in cfg.services[0].dests] == ["198.18.0.12"]
    assert cfg.services[0].sched.mw == 1
    cfg.apply({"op": "del_service", **VIP})
    assert cfg.services == []


def test_edit_service_changes_scheduler_only_when_different(cfg):
    svc = cfg.services[0]
    sched = svc.sched
    cfg.apply({"op": "edit_service", **VIP, "scheduler": "wrr"})
    assert svc.sched is sched                 # same scheduler: the kernel keeps its state
    cfg.apply({"op": "edit_service", **VIP, "scheduler": "rr"})
    assert svc.scheduler == "rr" and svc.sched.name == "rr"
    assert [svc.schedule(None).addr for _ in range(3)] == ["198.18.0.11", "198.18.0.12", "198.18.0.11"]


def test_clear(cfg):
    assert cfg.apply({"op": "clear"}) == ""
    assert cfg.services == []


def test_rport_defaults_to_vport_and_stats_attached():
    stats = object()
    c = Config(stats=stats)
    c.apply(add_service("rr"))
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.13", "fwd": "masq"})
    dest = c.services[0].dests[0]
    assert (dest.port, dest.weight, dest.stats) == (80, 1, stats)


@pytest.mark.parametrize("cmd, message", [
    (add_service(), "service TCP 198.18.0.100:80 already exists"),
    (add_service("foo", port=81), f"unknown scheduler 'foo' (available: {ALL_SCHEDULERS})"),
    ({"op": "edit_service", **VIP, "scheduler": "lcx"},
     f"unknown scheduler 'lcx' (available: {ALL_SCHEDULERS})"),
    ({"op": "edit_service", **VIP, "port": 81, "scheduler": "rr"}, "no such service TCP 198.18.0.100:81"),
    ({"op": "del_service", **VIP, "proto": "udp"}, "no such service UDP 198.18.0.100:80"),
    (server("add_server", weight=1, fwd="masq"),
     "real server 198.18.0.11:80 already exists in service TCP 198.18.0.100:80"),
    (server("add_server", rip="198.18.0.13", rport=8080, fwd="route"),
     "forwarding method 'route' cannot map ports: real server port 8080 must equal the virtual port 80"),
    (server("add_server", rip="198.18.0.13", rport=8080, fwd="tunnel"),
     "forwarding method 'tunnel' cannot map ports: real server port 8080 must equal the virtual port 80"),
    (server("add_server", rip="198.18.0.13", fwd="fullnat"),
     "service TCP 198.18.0.100:80 has no local address for FULLNAT: add one first with --add-laddr -z LIP"),
    (server("add_server", rip="198.18.0.13", rport=8080, fwd="enat"),
     "forwarding method 'enat' cannot map ports: real server port 8080 must equal the virtual port 80"),
    ({"op": "del_laddr", **VIP, "laddr": "198.18.0.3"}, "no local address 198.18.0.3 in service TCP 198.18.0.100:80"),
    ({"op": "add_laddr", **VIP, "laddr": "198.18.0.100"}, "local address 198.18.0.100 is a virtual IP: it cannot be both"),
    (server("add_server", rip="198.18.0.13", fwd="warp"), "unknown forwarding method 'warp'"),
    (server("edit_server", fwd="fullnat"),
     "service TCP 198.18.0.100:80 has no local address for FULLNAT: add one first with --add-laddr -z LIP"),
    (server("edit_server", rip="198.18.0.13", fwd="masq"),
     "no such real server 198.18.0.13:80 in service TCP 198.18.0.100:80"),
    (server("del_server", rport=8080), "no such real server 198.18.0.11:8080 in service TCP 198.18.0.100:80"),
    ({**server("add_server", rip="198.18.0.13"), "port": 81}, "no such service TCP 198.18.0.100:81"),
    (server("add_server", rip="198.18.0.13", weight=70000), "bad weight 70000: must be an integer 0..65535"),
    (server("add_server", rip="198.18.0.13", weight="3"), "bad weight '3': must be an integer 0..65535"),
    (server("add_server", rip="nope"), "bad rip 'nope': must be a dotted IPv4 address"),
    ({**add_service("rr"), "port": 0}, "bad port 0: must be an integer 1..65535"),
    ({**add_service("rr"), "proto": "sctp"}, "bad proto 'sctp': must be one of tcp, udp"),
    ({"op": "list", **VIP, "port": 81}, "no such service TCP 198.18.0.100:81"),
    ({"op": "reboot"}, "unknown command 'reboot'"),
    (["op"], "bad command: expected a JSON object"),
    ({**add_service("sh", port=81), "sched_flags": ["sh-bogus"]},
     "unknown scheduler flag 'sh-bogus' (known: sh-fallback, sh-port, mh-fallback, mh-port)"),
    ({**add_service("mh", port=81), "sched_flags": ["sh-port"]},
     "scheduler flag 'sh-port' is not for scheduler 'mh'"),
    ({"op": "edit_service", **VIP, "scheduler": "wrr", "sched_flags": ["mh-port"]},
     "scheduler flag 'mh-port' is not for scheduler 'wrr'"),
    ({"op": "edit_service", **VIP, "scheduler": "sh", "sched_flags": "sh-port"},
     "bad sched_flags 'sh-port': must be a list of flag names"),
    ({"op": "edit_service", **VIP, "scheduler": "sh", "sched_flags": [1]},
     "bad sched_flags [1]: must be a list of flag names"),
    (server("add_server", rip="198.18.0.13", u_threshold=2**31),
     "bad u_threshold 2147483648: must be an integer 0..2147483647"),
    (server("add_server", rip="198.18.0.13", l_threshold=-1),
     "bad l_threshold -1: must be an integer 0..2147483647"),
    (server("edit_server", fwd="masq", u_threshold="5"),
     "bad u_threshold '5': must be an integer 0..2147483647"),
    (server("edit_server", fwd="masq", weight=2, l_threshold=1.5),
     "bad l_threshold 1.5: must be an integer 0..2147483647"),
])
def test_errors_leave_config_untouched(cfg, cmd, message):
    before = snapshot(cfg)
    with pytest.raises(ConfigError) as err:
        cfg.apply(cmd)
    assert str(err.value) == message
    assert snapshot(cfg) == before


def test_dr_and_tun_servers_keep_the_virtual_port():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.13", "fwd": "route"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.14", "fwd": "tunnel"})
    c.apply({"op": "add_server", **VIP, "rip": "198.18.0.15", "rport": 8080, "fwd": "masq"})
    assert [(d.port, d.fwd) for d in c.services[0].dests] == [(80, "route"), (80, "tunnel"),
                                                              (8080, "masq")]
    # a NAT server with a mapped port cannot become DR: refused, nothing changes
    with pytest.raises(ConfigError, match="cannot map ports"):
        c.apply({"op": "edit_server", **VIP, "rip": "198.18.0.15", "rport": 8080, "fwd": "route"})
    assert c.services[0].dests[2].fwd == "masq"


# --- scheduler flags (-b) and thresholds (-x/-y) ------------------------------------------

def test_default_scheduler_is_wlc():
    c = Config()
    c.apply({"op": "add_service", **VIP})
    assert c.services[0].scheduler == "wlc"
    assert c.apply({"op": "list"}).endswith("TCP  198.18.0.100:80 wlc\n")


def test_sched_flags_stored_and_listed(cfg):
    cfg.apply({**add_service("sh", port=81), "sched_flags": ["sh-port", "sh-fallback"]})
    svc = cfg.find_service("tcp", "198.18.0.100", 81)
    assert svc.sched_flags == {"sh-fallback", "sh-port"}
    assert "TCP  198.18.0.100:81 sh (sh-fallback,sh-port)\n" in cfg.apply({"op": "list"})


def test_edit_service_replaces_flags_and_keeps_scheduler_state(cfg):
    cfg.apply({"op": "edit_service", **VIP, "scheduler": "mh", "sched_flags": ["mh-port"]})
    svc = cfg.services[0]
    sched = svc.sched
    cfg.apply({"op": "edit_service", **VIP, "scheduler": "mh", "sched_flags": ["mh-fallback"]})
    assert (svc.sched_flags, svc.sched) == ({"mh-fallback"}, sched)
    cfg.apply({"op": "edit_service", **VIP, "scheduler": "mh"})   # ipvsadm -E without -b
    assert svc.sched_flags == frozenset()


def test_thresholds_stored_and_defaulted(cfg):
    cfg.apply(server("add_server", rip="198.18.0.13", fwd="masq", u_threshold=10, l_threshold=4))
    dest = cfg.services[0].find_dest("198.18.0.13", 80)
    assert (dest.u_threshold, dest.l_threshold) == (10, 4)
    assert cfg.services[0].limited == [dest]
    cfg.apply(server("edit_server", rip="198.18.0.13", fwd="masq"))  # -e without -x/-y: 0
    assert (dest.u_threshold, dest.l_threshold) == (0, 0)
    assert cfg.services[0].limited == []


@pytest.mark.parametrize("old, new, lifted", [
    (10, 20, True),    # raised: lifted at once (__ip_vs_update_dest)
    (10, 0, True),     # removed
    (10, 10, False),   # unchanged: left to the next decision
    (10, 5, False),    # lowered
])
def test_edit_server_threshold_lifts_overload(cfg, old, new, lifted):
    cfg.apply(server("edit_server", fwd="masq", u_threshold=old))
    dest = cfg.services[0].find_dest("198.18.0.11", 80)
    dest.flags.add(OVERLOAD)
    cfg.apply(server("edit_server", fwd="masq", u_threshold=new))
    assert (OVERLOAD not in dest.flags) == lifted


def test_last_weight_kept_through_weight_zero(cfg):
    dest = cfg.services[0].find_dest("198.18.0.11", 80)
    cfg.apply(server("edit_server", fwd="masq", weight=0))
    assert (dest.weight, dest.last_weight) == (0, 3)
    cfg.apply(server("edit_server", fwd="masq", weight=7))
    assert (dest.weight, dest.last_weight) == (7, 7)
    cfg.apply(server("add_server", rip="198.18.0.13", fwd="masq", weight=0))
    assert cfg.services[0].find_dest("198.18.0.13", 80).last_weight == 0


def test_fullnat_local_addresses():
    c = Config()
    c.apply({"op": "add_service", **VIP, "scheduler": "rr"})
    c.apply({"op": "add_laddr", **VIP, "laddr": "198.18.0.3"})
    c.apply({"op": "add_server", **VIP, "rip": "10.0.0.1", "rport": 8080, "fwd": "fullnat"})
    with pytest.raises(ConfigError, match="already exists"):
        c.apply({"op": "add_laddr", **VIP, "laddr": "198.18.0.3"})
    with pytest.raises(ConfigError, match="last local address"):
        c.apply({"op": "del_laddr", **VIP, "laddr": "198.18.0.3"})
    c.apply({"op": "add_laddr", **VIP, "laddr": "198.18.0.4"})
    c.apply({"op": "del_laddr", **VIP, "laddr": "198.18.0.3"})
    assert c.services[0].laddrs == ["198.18.0.4"]
    text = c.apply({"op": "get_laddr"})
    assert text.splitlines() == [
        "VIP:VPORT            TOTAL    SNAT_IP              CONFLICTS  CONNS",
        "198.18.0.100:80      1       ",
        "                              198.18.0.4           0          0"]


# --- what ipvsadm prints when the kernel refuses the same command --------------------------

@pytest.mark.parametrize("cmd, ipvsadm", [
    (add_service(), "Service already exists"),
    (add_service("foo", port=81), "Scheduler or persistence engine not found"),
    ({"op": "edit_service", **VIP, "scheduler": "lcx"}, "Scheduler or persistence engine not found"),
    ({"op": "edit_service", **VIP, "port": 81, "scheduler": "lcx"}, "No such service"),   # ESRCH first
    ({"op": "del_service", **VIP, "port": 81}, "No such service"),
    ({"op": "zero", **VIP, "port": 81}, "No such service"),
    ({**server("add_server", rip="198.18.0.13"), "port": 81}, "Service not defined"),
    ({**server("edit_server"), "port": 81}, "Service not defined"),
    ({**server("del_server"), "port": 81}, "Service not defined"),
    (server("add_server", fwd="masq"), "Destination already exists"),
    (server("edit_server", rip="198.18.0.13", fwd="masq"), "No such destination"),
    (server("del_server", rip="198.18.0.13"), "No such destination"),
    # ip_vs_add_dest / ip_vs_edit_dest: ERANGE for -y above -x, even with no -x at all
    (server("add_server", rip="198.18.0.13", fwd="masq", u_threshold=4, l_threshold=5),
     "Numerical result out of range"),
    (server("add_server", rip="198.18.0.13", fwd="masq", l_threshold=5), "Numerical result out of range"),
    (server("edit_server", fwd="masq", l_threshold=1), "Numerical result out of range"),
])
def test_kernel_refusals_carry_ipvsadms_words(cfg, cmd, ipvsadm):
    before = snapshot(cfg)
    with pytest.raises(ConfigError) as err:
        cfg.apply(cmd)
    assert (err.value.ipvsadm, err.value.rc) == (ipvsadm, 255)
    assert snapshot(cfg) == before


def test_listing_a_missing_service_exits_1_as_ipvsadm(cfg):
    with pytest.raises(ConfigError) as err:
        cfg.apply({"op": "list", **VIP, "port": 81})
    assert (err.value.ipvsadm, err.value.rc) == ("No such service", 1)


def test_lbds_own_refusals_have_no_ipvsadm_words(cfg):
    with pytest.raises(ConfigError) as err:
        cfg.apply(server("add_server", rip="198.18.0.13", fwd="fullnat"))
    assert err.value.ipvsadm is None


def test_thresholds_and_persistent_conn_listings():
    class Conns:
        active = inactive = [0] * 8

        def dest_counters(self, slot):
            return {"active": 0, "inactive": 0, "conns": 0, "inpkts": 0, "outpkts": 0,
                    "inbytes": 0, "outbytes": 0}

        def conns(self):
            tmpl = {"template": True, "dest_slot": 1}
            return [tmpl, dict(tmpl), {"template": False, "dest_slot": 1}, {"template": True, "dest_slot": 0}]

    c = Config(stats=Conns())
    c.apply(add_service("rr", persistent=300))
    c.apply(server("add_server", fwd="masq", u_threshold=9, l_threshold=3))
    c.apply(server("add_server", rip="198.18.0.12", fwd="masq"))
    c.services[0].dests[0].slot, c.services[0].dests[1].slot = 0, 1
    lines = c.apply({"op": "list", "persistent_conn": True}).splitlines()
    assert lines[4].split() == ["->", "198.18.0.11:80", "1", "1", "0", "0"]   # one template
    assert lines[5].split() == ["->", "198.18.0.12:80", "1", "2", "0", "0"]   # two templates
    lines = c.apply({"op": "list", "thresholds": True}).splitlines()
    assert lines[4].split() == ["->", "198.18.0.11:80", "9", "3", "0", "0"]
    assert c.apply({"op": "list", "daemon": True}) == ""
