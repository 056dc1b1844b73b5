"""lbadm: ipvsadm argument parsing, and main() against a fake lbd on a temporary socket."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

from lb.director import cli
from lb.director.cli import UsageError, main, parse

SVC = {"proto": "tcp", "vip": "198.18.0.100", "port": 80}


@pytest.mark.parametrize("argv, expected", [
    ("-A -t 198.18.0.100:80 -s wrr", {"op": "add_service", **SVC, "scheduler": "wrr"}),
    ("-s wrr -t 198.18.0.100:80 -A", {"op": "add_service", **SVC, "scheduler": "wrr"}),
    ("-A -t 198.18.0.100:80", {"op": "add_service", **SVC, "scheduler": "wlc"}),
    ("--add-service --udp-service 198.18.0.100:53 --scheduler=rr",
     {"op": "add_service", "proto": "udp", "vip": "198.18.0.100", "port": 53, "scheduler": "rr"}),
    ("-E -t 198.18.0.100:80 -s rr", {"op": "edit_service", **SVC, "scheduler": "rr"}),
    ("--edit-service -t 198.18.0.100:80", {"op": "edit_service", **SVC, "scheduler": "wlc"}),
    ("-D -t 198.18.0.100:80", {"op": "del_service", **SVC}),
    ("--delete-service -t198.18.0.100:80", {"op": "del_service", **SVC}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m -w 3",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 3}),
    ("-at 198.18.0.100:80 -r 198.18.0.11:8080 -mw3",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 8080, "fwd": "masq", "weight": 3}),
    ("--add-server --tcp-service 198.18.0.100:80 --real-server=198.18.0.11 --masquerading --weight 0",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 0}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11",   # ipvsadm: -g is the default, weight 1
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "route", "weight": 1}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:80 -g",   # DR keeps the virtual port
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "route", "weight": 1}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -i -w 2",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "tunnel", "weight": 2}),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -m -w 5",
     {"op": "edit_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 5}),
    ("--edit-server -t 198.18.0.100:80 -r 198.18.0.11 -m",
     {"op": "edit_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 1}),
    ("-d -t 198.18.0.100:80 -r 198.18.0.11", {"op": "del_server", **SVC, "rip": "198.18.0.11", "rport": 80}),
    ("--delete-server -t 198.18.0.100:80 -r 198.18.0.11:81",
     {"op": "del_server", **SVC, "rip": "198.18.0.11", "rport": 81}),
    ("-C", {"op": "clear"}),
    ("--clear", {"op": "clear"}),
    ("-L -n", {"op": "list", "numeric": True}),
    ("-Ln", {"op": "list", "numeric": True}),
    ("-l", {"op": "list", "numeric": False}),
    ("--list --numeric", {"op": "list", "numeric": True}),
    ("-L -n -t 198.18.0.100:80", {"op": "list", "numeric": True, **SVC}),
    ("", {"op": "list", "numeric": False}),           # bare ipvsadm lists
    ("-A -t 198.18.0.100:80 -s rr --socket /tmp/x.sock", {"op": "add_service", **SVC, "scheduler": "rr"}),
    # -b: listed in the kernel's bit order (fallback, port) whatever the order given
    ("-A -t 198.18.0.100:80 -s sh -b sh-port,sh-fallback",
     {"op": "add_service", **SVC, "scheduler": "sh", "sched_flags": ["sh-fallback", "sh-port"]}),
    ("-E -t 198.18.0.100:80 --scheduler mh --sched-flags=mh-port",
     {"op": "edit_service", **SVC, "scheduler": "mh", "sched_flags": ["mh-port"]}),
    ("-A -t 198.18.0.100:80 -s mh -b mh-fallback,,mh-fallback,",   # empty items skipped
     {"op": "add_service", **SVC, "scheduler": "mh", "sched_flags": ["mh-fallback"]}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m -x 100 -y 50",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 1,
      "u_threshold": 100, "l_threshold": 50}),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -m --u-threshold=2147483647 --l-threshold 0",
     {"op": "edit_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 1,
      "u_threshold": 2147483647, "l_threshold": 0}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -mx0",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 1,
      "u_threshold": 0}),
])
def test_parse(argv, expected):
    cmd = parse(argv.split())
    assert cmd == expected
    assert json.loads(json.dumps(cmd)) == cmd


def test_socket_option():
    assert cli.parse_with_socket(["-C"])[1] == "/run/lbd/lbd.sock"
    assert cli.parse_with_socket(["-C", "--socket", "/tmp/a.sock"])[1] == "/tmp/a.sock"
    assert cli.parse_with_socket(["--socket=/tmp/b.sock", "-C"])[1] == "/tmp/b.sock"


ADDR = "illegal virtual server address[:port] specified"
RADDR = "illegal real server address[:port] specified"
TIMEOUT_RANGE = "must be a number of seconds 1..2678400"


# (argv, the message a rule file gets, what ipvsadm 1.31 prints or None when it has no such
# refusal, exit status)
@pytest.mark.parametrize("argv, message, ipvsadm, rc", [
    ("-A -t 198.18.0:80", "bad address '198.18.0': must be a dotted IPv4 address", ADDR, 2),
    ("-A -t example.com:80", "bad address 'example.com': must be a dotted IPv4 address", ADDR, 2),
    ("-A -t 198.18.0.256:80", "bad address '198.18.0.256': must be a dotted IPv4 address", ADDR, 2),
    ("-A -t 80", "bad address '80': must be a dotted IPv4 address", ADDR, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.x -m", "bad address '198.18.0.x': must be a dotted IPv4 address",
     RADDR, 2),
    ("-A -t 198.18.0.100", "Zero port specified for non-persistent service", "=", 2),
    ("-A -t 198.18.0.100:0", "Zero port specified for non-persistent service", "=", 2),
    ("-A -t 198.18.0.100:0 -p", "bad port '0' in '198.18.0.100:0': " + cli.ZERO_SERVICE_PORT, None, 2),
    ("-A -t 198.18.0.100:nosuchname",
     "bad port 'nosuchname' in '198.18.0.100:nosuchname': must be a number 1..65535",
     ADDR, 2),
    ("-A -t 198.18.0.100:65536",
     "bad port '65536' in '198.18.0.100:65536': must be a number 1..65535", ADDR, 2),
    ("-A -t 198.18.0.100:-1",
     "bad port '-1' in '198.18.0.100:-1': must be a number 1..65535", ADDR, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:0 -m",
     "bad port '0' in '198.18.0.11:0': " + cli.ZERO_SERVER_PORT, None, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11: -m",
     "bad port '' in '198.18.0.11:': must be a number 1..65535", RADDR, 2),
    ("-A -t 198.18.0.100:80 -s 'wrr;'", "bad scheduler name ''wrr;'': expected a short name such as rr or wrr",
     "Scheduler or persistence engine not found", 255),
    ("-A -t 198.18.0.100:80 -s WRR", "bad scheduler name 'WRR': expected a short name such as rr or wrr",
     "Scheduler or persistence engine not found", 255),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w 65536", "bad weight '65536': must be an integer 0..65535",
     "illegal weight specified", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w -1", "bad weight '-1': must be an integer 0..65535",
     "illegal weight specified", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w x", "bad weight 'x': must be an integer 0..65535",
     "illegal weight specified", 2),
    ("-A", "You need to supply the 'service-address' option for the 'add-service' command", "=", 2),
    ("-A -s rr", "You need to supply the 'service-address' option for the 'add-service' command", "=", 2),
    ("-d -r 198.18.0.11", "You need to supply the 'service-address' option for the 'delete-server' command",
     "=", 2),
    ("-a -t 198.18.0.100:80 -m", "You need to supply the 'real-server' option for the 'add-server' command",
     "=", 2),
    ("-A -D -t 198.18.0.100:80", "multiple commands specified", "=", 2),
    ("-C -L", "multiple commands specified", "=", 2),
    ("-Ln -a", "multiple commands specified", "=", 2),
    ("-A -t 198.18.0.100:80 -u 198.18.0.100:80", "multiple 'service-address' options specified", "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m -g", "multiple 'forwarding-method' options specified", "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m --enat", "multiple 'forwarding-method' options specified",
     "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w 1 -w 2", "multiple 'weight' options specified", "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x 1 --u-threshold 2", "multiple 'u-threshold' options specified",
     "=", 2),
    ("-A -t 198.18.0.100:80 -q 5", "-q: unknown option", "=", 255),
    ("-A -t 198.18.0.100:80 --persistance", "--persistance: unknown option", "=", 255),
    ("-A -t", "-t: missing argument", "=", 255),
    ("--list --numeric=yes", "--numeric=yes: option does not take an argument", "=", 255),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g",
     "forwarding method 'route' cannot map ports: real server port 8080 must equal the virtual port 80",
     None, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:81 -i",
     "forwarding method 'tunnel' cannot map ports: real server port 81 must equal the virtual port 80",
     None, 2),
    ("-A -t 198.18.0.100:80 -z 198.18.0.3", "option -z cannot be used with -A", None, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 --match tcp:198.18.0.1:80", "option --match cannot be used with -a",
     None, 2),
    ("--add-laddr -t 198.18.0.100:80", "--add-laddr needs a local address: -z LIP", None, 2),
    ("--add-laddr -t 198.18.0.100:80 -z 198.18.0.300", "bad address '198.18.0.300': must be a dotted IPv4 address",
     None, 2),
    ("--add-laddr -t 198.18.0.100:80 -z 198.18.0.3 -w 1", "option -w cannot be used with --add-laddr", None, 2),
    ("-A -t 198.18.0.100:80 -x 5", "Illegal 'u-threshold' option with the 'add-service' command", "=", 2),
    ("-A -t 198.18.0.100:80 -p 0", f"bad persistence timeout '0': {TIMEOUT_RANGE}",
     "invalid timeout value `0' specified", 2),
    ("-A -t 198.18.0.100:80 -p 2678401", f"bad persistence timeout '2678401': {TIMEOUT_RANGE}",
     "invalid timeout value `2678401' specified", 2),
    ("-A -t 198.18.0.100:80 -p -M 255.0.255.0",
     "bad netmask '255.0.255.0': must be a contiguous netmask such as 255.255.255.0", None, 2),
    ("-A -t 198.18.0.100:80 -p -M mask", "bad netmask 'mask': must be a netmask such as 255.255.255.0",
     "illegal virtual server persistent mask specified", 2),
    ("-A -f 0 --match tcp:198.18.0.100:80", "bad firewall mark '0': must be an integer 1..4294967295",
     "invalid fwmark value `0' specified", 2),
    ("-A -f 3 --match icmp:198.18.0.100:80",
     "bad match 'icmp:198.18.0.100:80': expected tcp:VIP:port or udp:VIP:port", None, 2),
    ("--set 900 120", "--set needs 3 timeouts: tcp tcpfin udp", "--set option requires 3 timeout values", 2),
    ("--set 900 x 300", "bad tcpfin timeout 'x': must be a number of seconds 0..2678400",
     "invalid timeout value `x' specified", 2),
    ("--set 900 120 300 60", "unexpected argument '60'", "unexpected argument 60", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -p", "Illegal 'persistent' option with the 'add-server' command",
     "=", 2),
    ("-A -t 198.18.0.100:80 -w 3", "Illegal 'weight' option with the 'add-service' command", "=", 2),
    ("-D -t 198.18.0.100:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command", "=", 2),
    ("-d -t 198.18.0.100:80 -r 198.18.0.11 -m",
     "Illegal 'forwarding-method' option with the 'delete-server' command", "=", 2),
    ("-C -t 198.18.0.100:80", "Illegal 'service-address' option with the 'flush' command", "=", 2),
    ("-L -r 198.18.0.11", "Illegal 'real-server' option with the 'list' command", "=", 2),
    ("-A -t 198.18.0.100:80 -n", "Illegal 'numeric' option with the 'add-service' command", "=", 2),
    ("-Z -n", "Illegal 'numeric' option with the 'zero' command", "=", 2),
    ("-S --nosort", "Illegal 'nosort' option with the 'save' command", "=", 2),
    ("-S -c", "Illegal 'connection' option with the 'save' command", "=", 2),
    ("-R -n", "Illegal 'numeric' option with the 'restore' command", "=", 2),
    ("--set 1 2 3 -n", "Illegal 'numeric' option with the 'set' command", "=", 2),
    ("-A -t 198.18.0.100:80 extra", "unexpected argument 'extra'", "unexpected argument extra", 2),
    ("-t 198.18.0.100:80", "no command given: use one of -A -E -D -a -e -d -C -L -S -R -Z",
     "Try `lbadm -h' or 'lbadm --help' for more information.", 255),
    # the list command's exclusive options and its conflicts (ipvsadm.c process_options)
    ("-L -c --stats", "options conflicts in the list command", "=", 2),
    ("-L --timeout --stats", "options conflicts in the list command", "=", 2),
    ("-L -c --rate", "options conflicts in the list command", "=", 2),
    ("-L --daemon --thresholds", "options conflicts in the list command", "=", 2),
    ("-L --timeout --persistent-conn", "options conflicts in the list command", "=", 2),
    ("-L -c -t 198.18.0.100:80",
     "The option 'service-address' conflicts with the 'connection' option in the 'list' command", "=", 2),
    ("-L --timeout -c", "The option 'timeout' conflicts with the 'connection' option in the 'list' command",
     "=", 2),
    ("-L --timeout --daemon", "The option 'daemon' conflicts with the 'timeout' option in the 'list' command",
     "=", 2),
    ("-L -s rr", "Illegal 'scheduler' option with the 'list' command", "=", 2),
    # scheduler flags, checked against the scheduler named (or wlc) before anything else
    ("-A -t 198.18.0.100:80 -s sh -b sh-bogus",
     "unknown scheduler flag 'sh-bogus' (known: sh-fallback, sh-port, mh-fallback, mh-port)",
     "invalid scheduler flag `sh-bogus'", 2),
    ("-A -t 198.18.0.100:80 -s sh -b flag-1",
     "scheduler flag 'flag-1' is not supported: lbd's schedulers read only their named flags "
     "(sh-fallback, sh-port, mh-fallback, mh-port)", None, 2),
    ("-A -t 198.18.0.100:80 -s mh -b mh-port,sh-port",
     "scheduler flag 'sh-port' needs -s sh (the scheduler is mh)", "incompatible scheduler flag `sh-port'", 2),
    ("-A -t 198.18.0.100:80 -b sh-fallback",
     "scheduler flag 'sh-fallback' needs -s sh (the scheduler is wlc)", "incompatible scheduler flag `sh-fallback'", 2),
    ("-E -t 198.18.0.100:80 -s rr -b mh-port", "scheduler flag 'mh-port' needs -s mh (the scheduler is rr)",
     "incompatible scheduler flag `mh-port'", 2),
    ("-A -t 198.18.0.100:80 -s sh -b ,", "bad scheduler flags ',': expected e.g. sh-fallback,sh-port", None, 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -b sh-port", "unexpected argument 'sh-port'",
     "unexpected argument sh-port", 2),
    ("-D -t 198.18.0.100:80 -b sh-port", "scheduler flag 'sh-port' needs -s sh (the scheduler is wlc)",
     "incompatible scheduler flag `sh-port'", 2),
    ("-D -t 198.18.0.100:80 -s sh -b sh-port", "Illegal 'scheduler' option with the 'delete-service' command",
     "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x 2147483648",
     "bad u-threshold '2147483648': must be an integer 0..2147483647", "illegal u_threshold specified", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x -1", "bad u-threshold '-1': must be an integer 0..2147483647",
     "illegal u_threshold specified", 2),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -y ten", "bad l-threshold 'ten': must be an integer 0..2147483647",
     "illegal l_threshold specified", 2),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -y 1.5", "bad l-threshold '1.5': must be an integer 0..2147483647",
     "illegal l_threshold specified", 2),
    ("-d -t 198.18.0.100:80 -r 198.18.0.11 -x 5", "Illegal 'u-threshold' option with the 'delete-server' command",
     "=", 2),
    ("-E -t 198.18.0.100:80 -y 5", "Illegal 'l-threshold' option with the 'edit-service' command", "=", 2),
    ("-A -t 198.18.0.100:80 -o", "One-Packet Scheduling is only for UDP virtual services", "=", 2),
    # tunnel options
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m --tun-type ipip", "Tunnel options conflict with forward method",
     "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-nocsum",
     "Illegal 'tun-nocsum' option with the 'ipip' tunnel type", "=", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type vxlan",
     "unknown tunnel type 'vxlan' (ipvsadm knows ipip, gue, gre)", "illegal tunnel type specified", 2),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type gue --tun-port 6080",
     "tunnel type 'gue' is not supported: lbd tunnels are IPIP only", None, 2),
    ("-A -t 198.18.0.100:80 --tun-type ipip", "Illegal 'tun-type' option with the 'add-service' command",
     "=", 2),
    # what a userspace IPv4 director cannot do, with the reason
    ("--start-daemon master", cli.NO_SYNC, None, 2),
    ("--stop-daemon backup --syncid 3", cli.NO_SYNC, None, 2),
    ("--start-daemon primary", "illegal start-daemon parameter specified", "=", 2),
    ("--start-daemon master --syncid 256", "illegal syncid specified", "=", 2),
    ("-L --mcast-interface eth0", "Illegal 'mcast-interface' option with the 'list' command", "=", 2),
    ("-A -t 198.18.0.100:80 --pe sip", cli.NO_PE, None, 2),
    ("-D -t 198.18.0.100:80 --pe sip", "Illegal 'pe' option with the 'delete-service' command", "=", 2),
    ("-A -f 1 -6 --match tcp:198.18.0.100:80", cli.NO_IPV6, None, 2),
    ("-A -6 -f 1", "-6 used before -f", "-6 used before -f\n", 2),
    ("-A -t [2001:db8::1]:80", cli.NO_IPV6, None, 2),
    ("-a -t 198.18.0.100:80 -r 2001:db8::1 -i", cli.NO_IPV6, None, 2),
    ("-A --sctp-service 198.18.0.100:80", cli.NO_SCTP, None, 2),
])
def test_usage_errors(argv, message, ipvsadm, rc):
    with pytest.raises(UsageError) as err:
        parse(argv.split())
    assert str(err.value) == message
    assert "\n" not in str(err.value)
    assert err.value.ipvsadm == (message if ipvsadm == "=" else ipvsadm)
    assert err.value.rc == rc


@pytest.mark.parametrize("argv, expected", [
    ("-A -t 198.18.0.100:http -s rr", {"op": "add_service", **SVC, "scheduler": "rr"}),  # /etc/services
    ("-A -t 198.18.0.100:+80", {"op": "add_service", **SVC, "scheduler": "wlc"}),       # strtol's sign
    ("-A -t 198.18.0.100:80 -p 600", {"op": "add_service", **SVC, "scheduler": "wlc", "persistent": 600}),
    ("-A -t 198.18.0.100:80 -p", {"op": "add_service", **SVC, "scheduler": "wlc", "persistent": 300}),
    ("-A -t 198.18.0.100:80 -p -s rr", {"op": "add_service", **SVC, "scheduler": "rr", "persistent": 300}),
    ("-A -t 198.18.0.100:80 -p 2678400", {"op": "add_service", **SVC, "scheduler": "wlc",
                                          "persistent": 2678400}),
    ("-A -u 198.18.0.100:53 -o", {"op": "add_service", "proto": "udp", "vip": "198.18.0.100", "port": 53,
                                  "scheduler": "wlc", "onepacket": True}),
    ("--set 900 120 300", {"op": "set", "tcp": 900, "tcpfin": 120, "udp": 300}),
    ("-L -n --stats --exact", {"op": "list", "numeric": True, "stats": True, "exact": True}),
    ("-L -n --stats -X", {"op": "list", "numeric": True, "stats": True, "exact": True}),
    ("-L -n --rate", {"op": "list", "numeric": True, "rate": True}),
    ("-L -n --thresholds --nosort", {"op": "list", "numeric": True, "thresholds": True, "nosort": True}),
    ("-L -n --persistent-conn --sort", {"op": "list", "numeric": True, "persistent_conn": True}),
    ("-L -n -c --persistent-conn", {"op": "list", "numeric": True, "connections": True, "persistent_conn": True}),
    ("-L -n --tun-info", {"op": "list", "numeric": True, "tun_info": True}),
    ("-L --timeout", {"op": "list", "numeric": False, "timeout": True}),
    ("-L --daemon", {"op": "list", "numeric": False, "daemon": True}),
    ("-L -n -t 198.18.0.100:80 --stats", {"op": "list", "numeric": True, **SVC, "stats": True}),
    ("-S -n", {"op": "list", "save": True}),
    ("-S --sort", {"op": "list", "save": True}),
    ("-Z -t 198.18.0.100:80", {"op": "zero", **SVC}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -i --tun-type ipip",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "tunnel", "weight": 1}),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m -w +3",
     {"op": "add_server", **SVC, "rip": "198.18.0.11", "rport": 80, "fwd": "masq", "weight": 3}),
])
def test_parse_more(argv, expected):
    assert parse(argv.split()) == expected


def test_main_prints_ipvsadm_words_and_status(capsys):
    assert main(["-L", "-c", "--stats"]) == 2
    assert capsys.readouterr() == ("", "options conflicts in the list command\n")
    assert main(["-A", "-t", "198.18.0.100:80", "--nosuch"]) == 255
    assert capsys.readouterr() == ("", "--nosuch: unknown option\n")
    assert main(["-A", "-6"]) == 2
    assert capsys.readouterr() == ("", "-6 used before -f\n\n")       # ipvsadm's own newline too
    assert main(["--start-daemon", "master"]) == 2
    assert capsys.readouterr() == ("", f"lbadm: {cli.NO_SYNC}\n")


def test_version(capsys):
    assert main(["-v"]) == 0
    assert "ipvsadm v1.31" in capsys.readouterr().out


# --- main() against a fake lbd --------------------------------------------------------------

@pytest.fixture
def sock_dir():
    path = tempfile.mkdtemp(prefix="lbadm-", dir="/tmp")  # short: AF_UNIX paths max 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


class FakeLbd:
    """Accepts one connection, records the request line, sends `reply` (bytes or dict)."""

    def __init__(self, path, reply):
        self.path, self.reply, self.request = path, reply, None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        conn, _ = self.sock.accept()
        with conn:
            self.request = json.loads(conn.makefile("rb").readline())
            reply = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode() + b"\n"
            conn.sendall(reply)

    def close(self):
        self.thread.join(5)
        self.sock.close()


def run_main(argv, path, reply, capsys):
    lbd = FakeLbd(path, reply)
    try:
        rc = main(argv + ["--socket", path])
    finally:
        lbd.close()
    out, err = capsys.readouterr()
    return rc, out, err, lbd.request


def test_main_sends_command_and_prints_output(sock_dir, capsys):
    path = os.path.join(sock_dir, "lbd.sock")
    rc, out, err, request = run_main(["-L", "-n"], path, {"rc": 0, "out": "TABLE\n", "err": ""}, capsys)
    assert (rc, out, err) == (0, "TABLE\n", "")
    assert request == {"cmd": {"op": "list", "numeric": True}}


def test_main_passes_daemon_error_and_rc(sock_dir, capsys):
    path = os.path.join(sock_dir, "lbd.sock")
    reply = {"rc": 1, "out": "", "err": "service TCP 198.18.0.100:80 already exists"}
    rc, out, err, request = run_main(["-A", "-t", "198.18.0.100:80", "-s", "rr"], path, reply, capsys)
    assert (rc, out, err) == (1, "", "service TCP 198.18.0.100:80 already exists\n")
    assert request["cmd"]["op"] == "add_service"


def test_main_bad_reply(sock_dir, capsys):
    path = os.path.join(sock_dir, "lbd.sock")
    rc, out, err, _ = run_main(["-C"], path, b"not json\n", capsys)
    assert rc == 1
    assert err == f"lbadm: bad reply from lbd at {path}\n"


def test_main_usage_error_exits_2(capsys):
    assert main(["-A", "-t", "1.2.3:80"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", "illegal virtual server address[:port] specified\n")
    assert main(["-A", "-t", "1.2.3.4:80", "-p", "-M", "255.0.255.0"]) == 2
    assert capsys.readouterr().err == \
        "lbadm: bad netmask '255.0.255.0': must be a contiguous netmask such as 255.255.255.0\n"


def test_main_no_daemon(sock_dir, capsys):
    path = os.path.join(sock_dir, "missing.sock")
    assert main(["-L", "-n", "--socket", path]) == 1
    assert capsys.readouterr().err == f"lbadm: cannot reach lbd at {path} (is lbd running?)\n"


def test_main_stale_socket(sock_dir, capsys):
    path = os.path.join(sock_dir, "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.close()                                   # file left behind, nobody listening
    assert main(["-C", "--socket", path]) == 1
    assert capsys.readouterr().err == f"lbadm: cannot reach lbd at {path} (is lbd running?)\n"


def test_main_help(capsys):
    assert main(["-h"]) == 0
    assert capsys.readouterr().out.startswith("Usage:")


def test_python_m_lb_cli(sock_dir):
    path = os.path.join(sock_dir, "missing.sock")
    proc = subprocess.run([sys.executable, "-m", "lb.director.cli", "-Ln", "--socket", path],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "cannot reach lbd" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "lb.director.cli", "-A"], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr) == (
        2, "You need to supply the 'service-address' option for the 'add-service' command\n")


def test_b_is_fullnat_for_servers_and_sched_flags_for_services():
    assert parse(["-a", "-t", "198.18.0.100:80", "-r", "10.0.0.1:8080", "-b"])["fwd"] == "fullnat"
    assert parse(["-e", "-t", "198.18.0.100:80", "-r", "10.0.0.1", "--enat"])["fwd"] == "enat"
    assert parse(["-A", "-t", "198.18.0.100:80", "-s", "sh", "-b", "sh-port"])["sched_flags"] == ["sh-port"]
    assert parse(["--add-laddr", "-t", "198.18.0.100:80", "-z", "198.18.0.3"]) == {
        "op": "add_laddr", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "laddr": "198.18.0.3"}
    assert parse(["--get-laddr"]) == {"op": "get_laddr"}
