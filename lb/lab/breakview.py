"""The terminal view of ``lb break``: the broken trace hop by hop, what the capture showed, why,
the fix, and the fixed trace in one line per packet."""
from __future__ import annotations

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from lb.lab import words as W
from lb.lab.traceview import path_line, render_trace


def _say(name: str, key: str, lang: str) -> str:
    return W.BREAKS[name].get(lang, W.BREAKS[name]["en"])[key]


def render_list(console: Console, lang: str = "en") -> None:
    from lb.lab.breakit import SCENARIOS
    console.print(W.say(W.BREAK_UI, "list", lang))
    for name, cls in SCENARIOS.items():
        console.print(f"  [bold]{name:<16}[/bold] {_say(name, 'title', lang)}  (lb trace {cls.mode})")


def _section(console: Console, key: str, text: str, lang: str, style: str = "") -> None:
    console.print(Text(W.say(W.BREAK_UI, key, lang), style="cyan"))
    console.print(Padding(Text(text, style=style), (0, 0, 0, 2)))


def render_break(console: Console, scenario, outcome: dict, lang: str = "en") -> None:
    name = scenario.name
    console.rule(Text(f"lb break {name}: {_say(name, 'title', lang)}", style="bold red"))
    _section(console, "broken", _say(name, "broken", lang), lang)
    render_trace(console, outcome["broken"], lang, footer=False)
    seen = outcome["symptom"] or W.say(W.BREAK_UI, "not_seen", lang, what="-")
    _section(console, "seen", seen, lang, "bold red" if outcome["symptom"] else "yellow")
    _section(console, "wrong", _say(name, "wrong", lang), lang)
    _section(console, "fix", _say(name, "fix", lang), lang, "green")
    console.print(Text(W.say(W.BREAK_UI, "fixed", lang), style="cyan"))
    for ex in outcome["fixed"].exchanges:
        for journey in ex.shown:
            console.print(Padding(path_line(journey), (0, 0, 0, 2)))
    healthy = outcome["healthy"]
    verdict = W.say(W.BREAK_UI, "works" if healthy else "still", lang,
                    what=healthy or "; ".join(ex.answer for ex in outcome["fixed"].exchanges))
    console.print(Padding(Text(verdict, style="bold green" if healthy else "bold red"), (0, 0, 0, 2)))
    for path in outcome["broken"].files + outcome["fixed"].files:
        console.print(Text(f"  {path}", style="dim"))
    console.print()
