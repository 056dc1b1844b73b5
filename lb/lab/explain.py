"""``lb explain MODE|all|terms|arp|schedulers [--lang en|zh]``: what a forwarding mode asks of the
network and the real servers, and what it costs, told from the mode classes themselves.

Every line comes from an attribute the code uses (lb/modes/*.py): ``same_segment``,
``replies_via_director``, ``port_mapping``, ``rs_sees``, ``toa``, ``rs_needs``,
``director_needs``, ``rewrites_in``/``rewrites_out``/``out_by`` (which ``lb trace`` checks
against captured frames), ``lbadm_flags``, ``listing`` and the module's own docstring. The
words for them are in :mod:`lb.lab.words`. Schedulers are told from the header comment of
their module in lb/schedulers/. No root, no lab: pure text.
"""
from __future__ import annotations

import importlib
import inspect
import sys

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from lb import modes, schedulers
from lb.lab import words as W

ORDER = ("nat", "dr", "tun", "fullnat", "enat")
TOPICS = ("all", "terms", "arp", "schedulers")


def mode_of(short: str):
    return modes.by_short(short)


def flag_of(mode) -> str:
    short, long = mode.lbadm_flags
    return short or long


def rewrite_text(spec: dict, lang: str) -> str:
    """{"ip.dst": "rip", ...} -> 'ip.dst ← the server's address, ...'."""
    if not spec:
        return W.say(W.UI, "nothing", lang)
    return ", ".join(f"{name} ← {W.say(W.SYMBOLS, sym, lang)}" for name, sym in spec.items())


def out_text(mode, lang: str) -> str:
    if mode.out_by is None:
        return W.say(W.UI, "out_none", lang)
    fields = rewrite_text(mode.rewrites_out, lang)
    return W.say(W.UI, "out_by_agent", lang, fields=fields) if mode.out_by == "agent" else fields


def replies_text(mode, lang: str) -> str:
    if mode.replies_via_director:
        return W.say(W.UI, "replies_director", lang)
    return W.say(W.UI, "replies_agent" if mode.out_by == "agent" else "replies_server", lang)


def facts(mode, lang: str = "en") -> list:
    """(label, value) rows for one mode, every value read from the mode's class."""
    yes_no = lambda b: W.say(W.UI, "yes" if b else "no", lang)  # noqa: E731
    return [
        (W.say(W.UI, "same_segment", lang), yes_no(mode.same_segment)),
        (W.say(W.UI, "replies", lang), replies_text(mode, lang)),
        (W.say(W.UI, "port_mapping", lang), yes_no(mode.port_mapping)),
        (W.say(W.UI, "sees", lang), W.say(W.SEES, mode.rs_sees, lang)),
        (W.say(W.UI, "addresses", lang),
         W.say(W.UI, "addresses_private" if mode.replies_via_director else "addresses_exposed", lang)),
        (W.say(W.UI, "toa", lang), W.say(W.UI, "toa_yes" if mode.toa else "toa_no", lang)),
        (W.say(W.UI, "in", lang), rewrite_text(mode.rewrites_in, lang)),
        (W.say(W.UI, "out", lang), out_text(mode, lang)),
    ]


def why(mode, lang: str = "en") -> list:
    """The paragraphs behind the mode's requirements (director's first), in order."""
    return [W.say(W.NEEDS, code, lang)[1] for code in (*mode.director_needs, *mode.rs_needs)]


def render_mode(console: Console, short: str, lang: str = "en") -> None:
    mode = mode_of(short)
    title = W.say(W.UI, "title", lang, mode=W.say(W.TITLES, short, lang), flag=flag_of(mode), listing=mode.listing)
    console.rule(Text(title, style="bold"))
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    for label, value in facts(mode, lang):
        table.add_row(label, value)
    console.print(table)
    for key, codes in (("director_needs", mode.director_needs), ("rs_needs", mode.rs_needs)):
        console.print(Text(W.say(W.UI, key, lang), style="cyan"))
        for code in codes or ("-",):
            line = W.say(W.NEEDS, code, lang)[0] if code != "-" else W.say(W.UI, "nothing", lang)
            console.print(f"  • {line}")
    console.print(Text(W.say(W.UI, "why", lang), style="cyan"))
    for paragraph in why(mode, lang):
        console.print(Padding(paragraph, (0, 0, 1, 2)))
    doc = inspect.getdoc(sys.modules[type(mode).__module__])
    if doc:
        console.print(Text(W.say(W.UI, "how", lang, file=type(mode).__module__.rsplit(".", 1)[1] + ".py"),
                           style="cyan"))
        console.print(Padding(Text(" ".join(doc.split()), style="dim"), (0, 0, 0, 2)))
    console.print(Text(W.say(W.UI, "try", lang, mode=short), style="green"))
    console.print()


SHORT = {"cip": "CIP", "cport": "cport", "vip": "VIP", "vport": "vport", "rip": "RIP", "rport": "rport",
         "lip": "LIP", "lport": "lport", "dip": "DIP", "rs_mac": "RS MAC", "ttl-1": "TTL-1",
         "cip:cport": "CIP:cport"}


def short_rewrites(spec: dict) -> str:
    return "\n".join(f"{name} ← {SHORT[sym]}" for name, sym in spec.items()) or "-"


def comparison(lang: str = "en") -> Table:
    """Every mode's facts side by side, in short forms: the columns are the mode classes."""
    table = Table(title=W.say(W.UI, "compare", lang), show_lines=True)
    table.add_column("")
    for short in ORDER:
        table.add_column(short.upper())
    yes_no = lambda b: W.say(W.UI, "yes" if b else "no", lang)  # noqa: E731
    ms = [mode_of(short) for short in ORDER]
    rows = [
        ("same_segment", [yes_no(m.same_segment) for m in ms]),
        ("replies", ["director" if m.replies_via_director else f"RS{' agent' if m.out_by == 'agent' else ''} → client"
                     for m in ms]),
        ("port_mapping", [yes_no(m.port_mapping) for m in ms]),
        ("sees", [{"cip": "CIP", "lip": "LIP:lport", "vip": "VIP:lport"}[m.rs_sees] for m in ms]),
        ("addresses", ["private" if m.replies_via_director else "own route out" for m in ms]),
        ("toa", ["TOA" if m.toa else "IP src" for m in ms]),
        ("in", [short_rewrites(m.rewrites_in) for m in ms]),
        ("out", [short_rewrites(m.rewrites_out) if m.out_by else "-" for m in ms]),
        ("rs_needs", ["\n".join(m.rs_needs) or "-" for m in ms]),
        ("director_needs", ["\n".join(m.director_needs) or "-" for m in ms]),
    ]
    for key, values in rows:
        table.add_row(W.say(W.UI, key, lang), *values)
    return table


def render_terms(console: Console, lang: str = "en") -> None:
    console.print(W.INTRO.get(lang, W.INTRO["en"]) + "\n")
    table = Table(show_header=False, box=None)
    for term, text in W.TERMS:
        table.add_row(Text(term, style="bold cyan"), text.get(lang, text["en"]))
    console.print(table)


def render_arp(console: Console, lang: str = "en") -> None:
    for title, text in W.ARP.get(lang, W.ARP["en"]):
        console.print(Text(title, style="cyan"))
        console.print(Padding(text, (0, 0, 1, 2)))


def scheduler_text(name: str, lang: str = "en") -> str:
    """The header comment of lb/schedulers/<name>.py (the kernel rule it follows); zh: words.py."""
    if lang == "zh" and name in W.SCHEDULERS_ZH:
        return W.SCHEDULERS_ZH[name]
    module = importlib.import_module(schedulers.get(name).__module__)
    comment = inspect.getcomments(module) or ""
    return " ".join(line.lstrip("# ").strip() for line in comment.splitlines())


def render_schedulers(console: Console, lang: str = "en") -> None:
    table = Table(show_header=False, box=None)
    for name in schedulers.names():
        table.add_row(Text(name, style="bold cyan"), scheduler_text(name, lang))
    console.print(table)
    console.print(Text("lb trace --scheduler NAME", style="green"))


def run(topic: str, lang: str = "en", console: Console | None = None) -> int:
    console = console or Console()
    if topic == "terms":
        render_terms(console, lang)
    elif topic == "schedulers":
        render_schedulers(console, lang)
    elif topic == "arp":
        render_arp(console, lang)
    elif topic == "all":
        render_terms(console, lang)
        console.print(comparison(lang))
        for short in ORDER:
            render_mode(console, short, lang)
        render_arp(console, lang)
        render_schedulers(console, lang)
    else:
        render_mode(console, topic, lang)
    return 0


def cmd_explain(a) -> int:
    """``lb explain TOPIC``: one line and 1 for a topic it does not know."""
    from lb.lab.net import LabError
    if a.topic not in (*ORDER, *TOPICS):
        raise LabError(f"unknown topic {a.topic!r} (choose {', '.join(ORDER + TOPICS)})")
    return run(a.topic, a.lang)
