"""ipvsadm rule files: what `lbadm -S` writes and `lbadm -R` and `lbd --config FILE` read.

One ipvsadm command per line without the program name ("-A -t 198.18.0.100:80 -s wlc"), as
ipvsadm-save writes and ipvsadm-restore reads; blank lines and lines starting with '#' are
skipped. A file is parsed whole before anything is applied: the first bad line refuses it,
naming its number, and the Director then applies all of it as one change or none of it.
"""
from __future__ import annotations

import shlex

# Commands a rule file may hold: the ones that build a table.
RULE_OPS = {"add_service", "edit_service", "del_service", "add_server", "edit_server",
            "del_server", "clear", "zero", "set", "add_laddr", "del_laddr"}


class RulesError(Exception):
    """A rule file that cannot be applied; the message names the line."""


def parse(text: str, parse_line) -> tuple[list, list]:
    """(commands, their line numbers) of a rule file; RulesError on the first bad line.
    `parse_line` is lbadm's argv parser (lb.director.cli.parse), which raises ValueError."""
    commands, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.strip()
        if not words or words.startswith("#"):
            continue
        try:
            argv = shlex.split(words)
            if argv and argv[0] in ("ipvsadm", "lbadm"):
                argv = argv[1:]
            cmd = parse_line(argv)
        except ValueError as e:
            raise RulesError(f"line {number}: {e}") from None
        if cmd["op"] not in RULE_OPS:
            raise RulesError(f"line {number}: '{words}' does not change the table: "
                             "a rule file holds only commands that do")
        commands.append(cmd)
        lines.append(number)
    return commands, lines


def read(path: str, parse_line) -> dict:
    """The batch command that replaces the configuration with the file's (lbd --config)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise RulesError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        commands, lines = parse(text, parse_line)
    except RulesError as e:
        raise RulesError(f"{path}: {e}") from None
    return {"op": "batch", "replace": True, "commands": commands, "lines": lines,
            "source": path}
