"""deploy/lbd.service: what systemd needs from lbd, and command lines lbd accepts."""
import configparser
import shlex
from pathlib import Path

from lb.director import daemon

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "lbd.service"
DEFAULTS = UNIT.with_name("lbd.default")


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def expand(line: str) -> list:
    """An Exec line with /etc/default/lbd's values, as systemd expands ${X} and $X."""
    env = dict(line.split("=", 1) for line in DEFAULTS.read_text().splitlines()
               if line and not line.startswith("#"))
    env = {k: v.strip('"') for k, v in env.items()}
    words = []
    for word in shlex.split(line):
        if word.startswith("$") and word.strip("${}") in env:
            words += env[word.strip("${}")].split() if not word.startswith("${") \
                else [env[word.strip("${}")]]
        else:
            words.append(word)
    return words


def test_service_is_simple_and_reloads_with_sighup():
    service = unit()["Service"]
    assert service["Type"] == "simple"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["Restart"] == "on-failure"


def test_exec_lines_are_lbd_command_lines():
    service = unit()["Service"]
    start = expand(service["ExecStart"])
    assert start[0].endswith("/lbd") and "--config" in start
    args = daemon._arguments(start[1:])
    assert (args.interface, args.config, args.foreground) == (["eth0"], "/etc/lbd/rules", True)
    assert args.metrics == "127.0.0.1:9400"
    stop = daemon._arguments(expand(service["ExecStopPost"])[1:])
    assert stop.cleanup and stop.interface == args.interface
