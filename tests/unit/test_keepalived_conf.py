"""keepalived.conf read as lbd's configuration (lb.director.keepalived): a sample mapped to
lbadm's commands and health checks, and what lbd cannot do refused with its line."""
import pytest

from lb.director.keepalived import KeepalivedError, parse
from lb.director.model import FWM

SAMPLE = """\
! Configuration File for keepalived
global_defs {
   router_id LVS_DEVEL
}
vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        198.18.0.100
    }
}
virtual_server 198.18.0.100 80 {
    delay_loop 2
    lvs_sched wrr
    lvs_method NAT
    persistence_timeout 50
    persistence_granularity 255.255.255.0
    protocol TCP
    quorum 2
    hysteresis 1
    quorum_up "/usr/local/bin/up 80"
    quorum_down /usr/local/bin/down
    sorry_server 198.18.0.50 8080
    alpha

    real_server 198.18.0.11 8080 {
        weight 3
        uthreshold 100
        lthreshold 50
        inhibit_on_failure
        notify_down "/bin/echo down"
        HTTP_GET {
            url {
              path /health
              digest 9b3af2a8c8a8b2b2a2d2e2f2a2b2c2d2
              status_code 200 204-206
            }
            connect_timeout 0.5
            retry 2
            delay_before_retry 0.2
        }
    }
    real_server 198.18.0.12 8080 {
        TCP_CHECK {
            connect_port 8081
            bindto 198.18.0.2
        }
        MISC_CHECK {
            misc_path "/usr/bin/check --fast"
            misc_timeout 3
            misc_dynamic
        }
    }
}
virtual_server 198.18.0.101 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    ops
    real_server 198.18.0.13 53 {
        DNS_CHECK { type A
            name example.org
        }
        UDP_CHECK {
            payload 00ff
            require_reply
        }
    }
}
virtual_server fwmark 7 {
    lbd_match tcp:198.18.0.102:80 tcp:198.18.0.102:443
    lvs_method TUN
    real_server 198.18.0.14 0 {
        SSL_GET { url { path / } }
    }
}
"""


def test_the_sample_maps_to_commands_and_checks():
    batch = parse(SAMPLE, "k.conf")
    cmds = batch["commands"]
    assert batch["replace"] and batch["source"] == "k.conf"
    assert cmds[0] == {"op": "add_service", "proto": "tcp", "vip": "198.18.0.100", "port": 80,
                       "scheduler": "wrr", "persistent": 50, "netmask": "255.255.255.0"}
    assert cmds[1] == {"op": "add_server", "proto": "tcp", "vip": "198.18.0.100", "port": 80,
                       "rip": "198.18.0.11", "rport": 8080, "fwd": "masq", "weight": 3,
                       "u_threshold": 100, "l_threshold": 50}
    assert batch["lines"][:3] == [14, 28, 45]
    assert cmds[3]["onepacket"] and cmds[3]["proto"] == "udp" and cmds[4]["fwd"] == "route"
    assert cmds[5]["match"] == [["tcp", "198.18.0.102", 80], ["tcp", "198.18.0.102", 443]]
    assert cmds[6]["fwd"] == "tunnel" and cmds[6]["rport"] == 0
    health = batch["health"].services
    vs = health[("tcp", "198.18.0.100", 80)]
    assert (vs.delay_loop, vs.quorum, vs.hysteresis) == (2.0, 2, 1)
    assert vs.quorum_up == ("/usr/local/bin/up", "80") and vs.quorum_down == ("/usr/local/bin/down",)
    assert vs.sorry_server.key == ("198.18.0.50", 8080) and vs.sorry_server.fwd == "masq"
    rs1, rs2 = vs.servers
    assert rs1.alpha and rs1.inhibit_on_failure and rs1.notify_down == ("/bin/echo", "down")
    http = rs1.checks[0]
    assert (http.kind, http.connect_timeout, http.retry, http.delay_before_retry) == \
        ("HTTP_GET", 0.5, 2, 0.2)
    assert http.urls[0].status_codes == (200, 204, 205, 206)
    assert [c.kind for c in rs2.checks] == ["TCP_CHECK", "MISC_CHECK"]
    assert rs2.checks[0].connect_port == 8081 and rs2.checks[0].bindto == "198.18.0.2"
    assert rs2.checks[1].misc_path == ("/usr/bin/check", "--fast") and rs2.checks[1].misc_dynamic
    dns, udp = health[("udp", "198.18.0.101", 53)].servers[0].checks
    assert (dns.dns_type, dns.dns_name) == ("A", "example.org")
    assert udp.payload == b"\x00\xff" and udp.require_reply is True
    assert health[(FWM, 7)].servers[0].checks[0].kind == "SSL_GET"


@pytest.mark.parametrize("bad, line, words", [
    ("virtual_server 1.2.3.4 80 {\n  lvs_method GRE\n}\n", 2, "lvs_method GRE"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n   weight -1\n  }\n}\n", 3,
     "weight -1: must be 0..65535"),
    ("virtual_server 1.2.3.4 80 {\n  protocol SCTP\n}\n", 2, "TCP and UDP only"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n   weight 1.5\n  }\n}\n", 3,
     "weight '1.5': not an integer"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n  TCP_CHECK {\n  connect_timeout 0\n"
     "  }\n  }\n}\n", 4, "connect_timeout 0: must be 0.01..3600 seconds"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n  TCP_CHECK {\n  connect_timeout x\n"
     "  }\n  }\n}\n", 4, "connect_timeout 'x': not a number of seconds"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n  SMTP_CHECK {\n  }\n  }\n}\n",
     3, "SMTP_CHECK is not supported in real_server"),
    ("virtual_server fwmark 3 {\n  real_server 1.2.3.5 80\n}\n", 1, "lbd_match"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n  HTTP_GET {\n  connect_timeout 1\n"
     "  }\n  }\n}\n", 3, "needs at least one url"),
    ("virtual_server 1.2.3.4 80 {\n  real_server 1.2.3.5 80 {\n  MISC_CHECK {\n  user nobody\n"
     "  }\n  }\n}\n", 4, "user is not supported in MISC_CHECK"),
    ("virtual_server 1.2.3.4 80 {\n  sorry_server 1.2.3.5\n}\n", 2, "address and a port"),
    ("virtual_server 1.2.3.4 80 {\n", None, "not closed"),
    ("}\n", 1, "without a block"),
    ("vrrp_instance X {\n}\nlvs_sync_daemon eth0\n", 3, "not something lbd reads"),
    ("virtual_server 1.2.3.4 80 {\n  persistence_granularity 255.255.0.0\n}\n", 1,
     "needs persistence_timeout"),
    ("virtual_server ::1 80 {\n}\n", 1, "IPv4 only"),
    ("virtual_server 1.2.3.4 80 {\n  lvs_method DR\n  sorry_server 1.2.3.5 8080\n}\n", 3,
     "must listen on the virtual port 80"),
])
def test_what_lbd_cannot_do_is_refused_with_its_line(bad, line, words):
    with pytest.raises(KeepalivedError) as e:
        parse(bad, "k.conf")
    where = f"k.conf: line {line}: " if line else "k.conf: "
    assert str(e.value).startswith(where) and words in str(e.value), str(e.value)


def test_includes_and_groups():
    files = {"/etc/k/vs.conf": "virtual_server group web {\n real_server 1.2.3.9 80\n}\n"}
    text = "virtual_server_group web {\n  198.18.0.100-101 80\n  198.18.0.110 80\n}\n" \
           "include vs.conf\n"
    batch = parse(text, "/etc/k/main.conf",
                  read=lambda pattern, _: [(f"/etc/k/{pattern}", files[f"/etc/k/{pattern}"])])
    svc = batch["commands"][0]
    assert svc["match"] == [["tcp", "198.18.0.100", 80], ["tcp", "198.18.0.101", 80],
                            ["tcp", "198.18.0.110", 80]]
    assert batch["commands"][1]["rip"] == "1.2.3.9"


def test_an_include_of_a_missing_file_includes_nothing_and_a_loop_is_bounded():
    assert parse("include nothing-here-*.conf\n", "/nonexistent/k.conf")["commands"] == []
    with pytest.raises(KeepalivedError, match="nested deeper"):
        parse("include self\n", "k.conf", read=lambda p, _: [("self", "include self\n")])
