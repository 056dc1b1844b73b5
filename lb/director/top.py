"""`lbadm top`: a live view of a running lbd, refreshed in place (rich).

It asks lbd for its figures ({"op": "figures"} on the socket, read only; the same snapshot the
Prometheus metrics are made from, lb.director.figures) every --interval seconds and shows the
services with their servers (connections now, the estimator's rates, the cumulative counters),
the fast path's totals, and the frames dropped and passed to the kernel by reason, with their
rate since the last frame. q, Ctrl-C or SIGTERM quit, leaving the terminal as it was.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import select
import signal
import sys
import termios
import time
import tty

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from lb.director import cli


class Quit(Exception):
    """q, or SIGTERM: leave the loop (the terminal is restored on the way out)."""


def _num(n: float) -> str:
    """Compact figures: 987, 12.3K, 4.56M, 7.89G."""
    for div, unit in ((10**9, "G"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:g}" if isinstance(n, float) else str(n)


_COLUMNS = (("Active", "active"), ("InAct", "inactive"), ("CPS", "cps"), ("InPPS", "inpps"),
            ("OutPPS", "outpps"), ("InBPS", "inbps"), ("OutBPS", "outbps"), ("Conns", "conns"),
            ("InPkts", "inpkts"), ("OutPkts", "outpkts"))


def _row(name: str, detail: str, row: dict) -> list:
    figures = {**row, **row["rates"]}
    return [name, detail] + [_num(figures[key]) for _, key in _COLUMNS]


def services_table(fig: dict) -> Table:
    table = Table(title="services and real servers", title_justify="left", expand=True,
                  box=None, header_style="bold", pad_edge=False)
    table.add_column("Service / -> server", no_wrap=True)
    table.add_column("Sched / fwd weight", no_wrap=True)
    for title, _ in _COLUMNS:
        table.add_column(title, justify="right", no_wrap=True)
    for svc in fig["services"]:
        table.add_row(*_row(svc["service"], svc["scheduler"], svc), style="bold")
        for srv in svc["servers"]:
            detail = f"{srv['fwd']} {srv['weight']}" + (" OVERLOAD" if srv["overloaded"] else "")
            table.add_row(*_row(f"  -> {srv['server']}", detail, srv))
    if not fig["services"]:
        table.add_row("(no virtual services)", "", *[""] * len(_COLUMNS))
    return table


def checks_table(fig: dict) -> Table | None:
    """The health checks (lbd --keepalived-conf), when there are any."""
    rows = fig.get("checks") or []
    if not rows:
        return None
    table = Table(title="health checks", title_justify="left", expand=True, box=None,
                  header_style="bold", pad_edge=False)
    for title, justify in (("Service", "left"), ("Server", "left"), ("Checker", "left"),
                           ("State", "left"), ("Table", "left"), ("OK", "right"),
                           ("Fail", "right"), ("Last result", "left")):
        table.add_column(title, justify=justify, no_wrap=True)
    for row in rows:
        state = "up" if row["up"] else "DOWN"
        where = "out" if not row["in_table"] else f"w {row['weight']}"
        table.add_row(row["service"], row["server"], row["checker"], state, where,
                      _num(row["passed"]), _num(row["failed"]), row["detail"],
                      style=None if row["up"] else "red")
    return table


def _per_second(now: int, prev: dict | None, key: str, seconds: float) -> str:
    if prev is None or seconds <= 0:
        return ""
    return _num(round(max(0, now - prev.get(key, now)) / seconds, 1))


def reasons_table(fig: dict, prev: dict | None) -> Table:
    """Drops and passes by reason: those ever seen, with the rate since the last frame."""
    seconds = fig["time"] - prev["time"] if prev else 0.0
    table = Table(title="frames by reason", title_justify="left", box=None,
                  header_style="bold", pad_edge=False)
    for title, justify in (("Verdict", "left"), ("Reason", "left"), ("Total", "right"),
                           ("Per s", "right")):
        table.add_column(title, justify=justify, no_wrap=True)
    shown = 0
    for verdict, key in (("drop", "drops"), ("pass", "passes"),
                         ("sent without TOA", "forwarded_anyway")):
        for reason, n in fig[key].items():
            if n:
                before = prev[key] if prev else None
                table.add_row(verdict, reason, _num(n), _per_second(n, before, reason, seconds))
                shown += 1
    if not shown:
        table.add_row("-", "no frame dropped or passed", "", "")
    return table


def fastpath_line(fig: dict, prev: dict | None) -> Text:
    fp = fig["fastpath"]
    seconds = fig["time"] - prev["time"] if prev else 0.0
    rate = (lambda key: f" ({_per_second(fp.get(key, 0), prev['fastpath'], key, seconds)}/s)"
            if prev else "")
    parts = [f"rx {_num(fp.get('rx_frames', 0))}{rate('rx_frames')}",
             f"tx {_num(fp.get('tx_frames', 0))}{rate('tx_frames')}",
             f"connections {_num(fp.get('conns', 0))}", f"templates {_num(fp.get('templates', 0))}",
             f"new {_num(fp.get('new_conns', 0))}{rate('new_conns')}",
             f"expired {_num(fp.get('expired_conns', 0))}",
             f"ring drops {_num(fp.get('ring_drops', 0))}"]
    return Text("fast path: " + "  ".join(parts))


def render(fig: dict, prev: dict | None = None, source: str = "", note: str = "") -> Group:
    stamp = time.strftime("%H:%M:%S", time.localtime(fig["time"]))
    head = Text(f"lbadm top  {source}  {stamp}  (q quits)", style="bold")
    parts = [head, fastpath_line(fig, prev), Text(""), services_table(fig), Text(""),
             reasons_table(fig, prev)]
    checks = checks_table(fig)
    if checks is not None:
        parts += [Text(""), checks]
    if note:
        parts.append(Text(note, style="red"))
    return Group(*parts)


def render_text(fig: dict, prev: dict | None = None, width: int = 120, source: str = "") -> str:
    """One frame as plain text (no colours, no terminal): what the unit tests read."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=False,
            legacy_windows=False).print(render(fig, prev, source))
    return out.getvalue()


# --- the loop ----------------------------------------------------------------------------------

def fetch(path: str) -> dict:
    reply = cli.request(path, {"op": "figures"}, timeout=5.0)
    if reply["rc"] != 0:
        raise cli.Unreachable(reply.get("err", "").strip() or f"lbd refused: rc {reply['rc']}")
    return json.loads(reply["out"])


@contextlib.contextmanager
def _keys(stream):
    """cbreak mode on a terminal stdin (a key at a time, Ctrl-C still a signal), restored after."""
    if not stream.isatty():
        yield None
        return
    fd = stream.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _wait_for_key(fd, seconds: float) -> None:
    """Sleep `seconds`, or until q is typed (Quit)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if fd is None:
            time.sleep(left)
            return
        ready, _, _ = select.select([fd], [], [], left)
        if ready and os.read(fd, 32).lower().find(b"q") >= 0:
            raise Quit


def run(path: str, interval: float, iterations: int | None, console: Console | None = None) -> int:
    fig = fetch(path)                               # Unreachable: lbd is not there
    prev = None
    console = console or Console()
    with _keys(sys.stdin) as fd, Live(render(fig, prev, path), console=console,
                                      auto_refresh=False, transient=False) as live:
        shown = 1
        while iterations is None or shown < iterations:
            _wait_for_key(fd, interval)
            note = ""
            try:
                prev, fig = fig, fetch(path)
            except cli.Unreachable as e:
                prev, note = None, f"lbd: {e} (still trying)"
            live.update(render(fig, prev, path, note), refresh=True)
            shown += 1
    return 0


def _on_sigterm(signum, frame):
    raise Quit


def main(argv) -> int:
    p = argparse.ArgumentParser(prog="lbadm top", description="a live view of lbd's figures")
    p.add_argument("--socket", default=cli.DEFAULT_SOCKET, help="lbd's socket")
    p.add_argument("--interval", type=float, default=2.0,
                   help="seconds between refreshes (default 2, the estimator's period)")
    p.add_argument("--iterations", type=int, default=None, help="stop after this many frames")
    args = p.parse_args(argv)
    if args.interval <= 0 or (args.iterations is not None and args.iterations < 1):
        p.error("--interval and --iterations must be positive")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return run(args.socket, args.interval, args.iterations)
    except (Quit, KeyboardInterrupt):
        return 0
    except cli.Unreachable as e:
        print(f"lbadm: {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
