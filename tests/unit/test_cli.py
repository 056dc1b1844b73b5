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


@pytest.mark.parametrize("argv, message", [
    ("-A -t 198.18.0:80", "bad address '198.18.0': must be a dotted IPv4 address"),
    ("-A -t example.com:80", "bad address 'example.com': must be a dotted IPv4 address"),
    ("-A -t 198.18.0.256:80", "bad address '198.18.0.256': must be a dotted IPv4 address"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.x -m", "bad address '198.18.0.x': must be a dotted IPv4 address"),
    ("-A -t 198.18.0.100", "bad service address '198.18.0.100' for -t: needs a port (VIP:port)"),
    ("-A -t 198.18.0.100:http", "bad port 'http' in '198.18.0.100:http': must be a number 1..65535"),
    ("-A -t 198.18.0.100:65536", "bad port '65536' in '198.18.0.100:65536': must be a number 1..65535"),
    ("-A -t 198.18.0.100:-1", "bad port '-1' in '198.18.0.100:-1': must be a number 1..65535"),
    ("-A -t 198.18.0.100:0",
     "bad port '0' in '198.18.0.100:0': " + cli.ZERO_SERVICE_PORT),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:0 -m",
     "bad port '0' in '198.18.0.11:0': " + cli.ZERO_SERVER_PORT),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11: -m", "bad port '' in '198.18.0.11:': must be a number 1..65535"),
    ("-A -t 198.18.0.100:80 -s 'wrr;'", "bad scheduler name ''wrr;'': expected a short name such as rr or wrr"),
    ("-A -t 198.18.0.100:80 -s WRR", "bad scheduler name 'WRR': expected a short name such as rr or wrr"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w 65536", "bad weight '65536': must be an integer 0..65535"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w -1", "bad weight '-1': must be an integer 0..65535"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w x", "bad weight 'x': must be an integer 0..65535"),
    ("-A", "-A needs a virtual service: -t|-u VIP:port"),
    ("-A -s rr", "-A needs a virtual service: -t|-u VIP:port"),
    ("-d -r 198.18.0.11", "-d needs a virtual service: -t|-u VIP:port"),
    ("-a -t 198.18.0.100:80 -m", "-a needs a real server: -r RIP[:port]"),
    ("-A -D -t 198.18.0.100:80", "two commands given: -A and -D (give one)"),
    ("-C -L", "two commands given: -C and -L (give one)"),
    ("-Ln -a", "two commands given: -L and -a (give one)"),
    ("-A -t 198.18.0.100:80 -u 198.18.0.100:80", "-t and -u both given (give one)"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -m -g", "-m and -g both given (give one)"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -w 1 -w 2", "option -w given twice (give one)"),
    ("-A -t 198.18.0.100:80 -q 5", "unknown option '-q'"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:8080 -g",
     "forwarding method 'route' cannot map ports: real server port 8080 must equal the virtual port 80"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11:81 -i",
     "forwarding method 'tunnel' cannot map ports: real server port 81 must equal the virtual port 80"),
    ("-A -t 198.18.0.100:80 -z 198.18.0.3", "option -z cannot be used with -A"),
    ("--add-laddr -t 198.18.0.100:80", "--add-laddr needs a local address: -z LIP"),
    ("--add-laddr -t 198.18.0.100:80 -z 198.18.0.300", "bad address '198.18.0.300': must be a dotted IPv4 address"),
    ("-A -t 198.18.0.100:80 -x 5", "option -x cannot be used with -A"),
    ("-A -t 198.18.0.100:80 --persistance", "unknown option '--persistance'"),
    ("-A -t 198.18.0.100:80 -p 0", "bad persistence timeout '0': must be a number of seconds 1..2147483647"),
    ("-A -t 198.18.0.100:80 -p -M 255.0.255.0", "bad netmask '255.0.255.0': must be a contiguous netmask such as 255.255.255.0"),
    ("-A -f 0 --match tcp:198.18.0.100:80", "bad firewall mark '0': must be an integer 1..4294967295"),
    ("-A -f 3 --match icmp:198.18.0.100:80", "bad match 'icmp:198.18.0.100:80': expected tcp:VIP:port or udp:VIP:port"),
    ("--set 900 120", "option --set needs 3 arguments"),
    ("--set 900 x 300", "bad tcpfin timeout 'x': must be a number of seconds 0..2147483647"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -p", "option -p cannot be used with -a"),
    ("-A -t 198.18.0.100:80 -w 3", "option -w cannot be used with -A"),
    ("-D -t 198.18.0.100:80 -s rr", "option -s cannot be used with -D"),
    ("-d -t 198.18.0.100:80 -r 198.18.0.11 -m", "option -m cannot be used with -d"),
    ("-C -t 198.18.0.100:80", "option -t cannot be used with -C"),
    ("-L -r 198.18.0.11", "option -r cannot be used with -L"),
    ("-A -t", "option -t needs an argument"),
    ("--list --numeric=yes", "option --numeric takes no argument"),
    ("-A -t 198.18.0.100:80 extra", "unexpected argument 'extra'"),
    ("-t 198.18.0.100:80", "no command given: use one of -A -E -D -a -e -d -C -L"),
    ("-A -t 198.18.0.100:80 -s sh -b sh-bogus",
     "unknown scheduler flag 'sh-bogus' (known: sh-fallback, sh-port, mh-fallback, mh-port)"),
    ("-A -t 198.18.0.100:80 -s sh -b flag-1",
     "unknown scheduler flag 'flag-1' (known: sh-fallback, sh-port, mh-fallback, mh-port)"),
    ("-A -t 198.18.0.100:80 -s mh -b mh-port,sh-port",
     "scheduler flag 'sh-port' needs -s sh (the scheduler is mh)"),
    ("-A -t 198.18.0.100:80 -b sh-fallback",       # no -s: wlc, as ipvsadm checks it
     "scheduler flag 'sh-fallback' needs -s sh (the scheduler is wlc)"),
    ("-E -t 198.18.0.100:80 -s rr -b mh-port", "scheduler flag 'mh-port' needs -s mh (the scheduler is rr)"),
    ("-A -t 198.18.0.100:80 -s sh -b ,", "bad scheduler flags ',': expected e.g. sh-fallback,sh-port"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -b sh-port", "unexpected argument 'sh-port'"),
    ("-D -t 198.18.0.100:80 -b sh-port", "option -b cannot be used with -D"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x 2147483648",
     "bad u-threshold '2147483648': must be an integer 0..2147483647"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x -1", "bad u-threshold '-1': must be an integer 0..2147483647"),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -y ten", "bad l-threshold 'ten': must be an integer 0..2147483647"),
    ("-e -t 198.18.0.100:80 -r 198.18.0.11 -y 1.5", "bad l-threshold '1.5': must be an integer 0..2147483647"),
    ("-d -t 198.18.0.100:80 -r 198.18.0.11 -x 5", "option -x cannot be used with -d"),
    ("-E -t 198.18.0.100:80 -y 5", "option -y cannot be used with -E"),
    ("-a -t 198.18.0.100:80 -r 198.18.0.11 -x 1 --u-threshold 2", "-x and --u-threshold both given (give one)"),
])
def test_usage_errors(argv, message):
    with pytest.raises(UsageError) as err:
        parse(argv.split())
    assert str(err.value) == message
    assert "\n" not in str(err.value)


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
    assert (out, err) == ("", "lbadm: bad address '1.2.3': must be a dotted IPv4 address\n")


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
    assert (proc.returncode, proc.stderr) == (2, "lbadm: -A needs a virtual service: -t|-u VIP:port\n")


def test_b_is_fullnat_for_servers_and_sched_flags_for_services():
    assert parse(["-a", "-t", "198.18.0.100:80", "-r", "10.0.0.1:8080", "-b"])["fwd"] == "fullnat"
    assert parse(["-e", "-t", "198.18.0.100:80", "-r", "10.0.0.1", "--enat"])["fwd"] == "enat"
    assert parse(["-A", "-t", "198.18.0.100:80", "-s", "sh", "-b", "sh-port"])["sched_flags"] == ["sh-port"]
    assert parse(["--add-laddr", "-t", "198.18.0.100:80", "-z", "198.18.0.3"]) == {
        "op": "add_laddr", "proto": "tcp", "vip": "198.18.0.100", "port": 80, "laddr": "198.18.0.3"}
    assert parse(["--get-laddr"]) == {"op": "get_laddr"}
