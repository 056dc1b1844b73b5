"""A sequence diagram (SVG, no dependency) of one ``lb trace`` result, drawn from the captured
hops: one lifeline per node that sent or received a traced frame, one arrow per hop labelled
with the addresses it carried and the fields that changed on it. A hop inside a real server
(the decapsulator, the ENAT agent) is a loop on that server's lifeline.

The diagram is a pure function of the journeys (lb.lab.trace.Journey), so tests build one
from scapy frames and parse the SVG back.
"""
from __future__ import annotations

import time
from xml.sax.saxutils import escape

from lb.lab import trace as core

COL, ROW, TOP, LEFT = 190, 58, 70, 30
ORDER = ("client", "router", "director")
COLOURS = {"in": "#1f5fbf", "out": "#1d8a3a"}


def lifeline(node: str) -> str:
    """'rs1 decap' and 'rs1 agent' live on rs1's lifeline."""
    return node.split()[0]


def lifelines(journeys) -> list:
    seen = []
    for j in journeys:
        for hop in j.hops:
            for node in (hop.sender, hop.receiver):
                name = lifeline(node)
                if name not in seen:
                    seen.append(name)
    fixed = [n for n in ORDER if n in seen]
    return fixed + sorted(n for n in seen if n not in ORDER)


def hop_label(hop: core.Hop) -> tuple:
    """(addresses line, changes line) of one arrow."""
    f = hop.fields
    proto = "tcp" if "tcp.sport" in f else "udp"
    main = f"{f.get('ip.src')}:{f.get(proto + '.sport')} → {f.get('ip.dst')}:{f.get(proto + '.dport')}"
    if "outer.src" in f:
        main = f"[IPIP {f['outer.src']} → {f['outer.dst']}] " + main
    if "tcp.toa" in f:
        main += f"  TOA {f['tcp.toa']}"
    if "ip.uoa" in f:
        main += f"  UOA {f['ip.uoa']}"
    return main, changes_text(hop)


def changes_text(hop: core.Hop) -> str:
    """'changed: ip.dst, ip.ttl, +TOA' with an added or removed outer header as one item."""
    items = []
    for key, (before, after) in hop.changed.items():
        if key in core.NOISE:
            continue
        if key.startswith("outer."):
            item = "+outer IP header" if before is None else "-outer IP header" if after is None else key
        elif before is None:
            item = f"+{key}"
        else:
            item = key
        if item not in items:
            items.append(item)
    return ("changed: " + ", ".join(items)) if items else ""


def sequence_svg(result, journeys=None, title: str | None = None) -> str:
    """The SVG text. `result` is a ModeTrace (or anything with .mode and .exchanges); the
    journeys drawn are each exchange's highlights unless `journeys` is given."""
    if journeys is None:
        journeys = [j for ex in result.exchanges for j in ex.shown]
    lanes = lifelines(journeys)
    x = {name: LEFT + 80 + i * COL for i, name in enumerate(lanes)}
    rows = sum(len(j.hops) + 1 for j in journeys)
    width = LEFT * 2 + 80 + COL * max(1, len(lanes) - 1) + 380
    height = TOP + rows * ROW + 40
    title = title or (f"lb trace {result.mode.short}: what each hop carried "
                      f"(drawn from the capture, {time.strftime('%Y-%m-%d %H:%M:%S')})")
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="monospace" font-size="11">',
           '<defs><marker id="arrow" markerWidth="10" markerHeight="8" refX="9" refY="4" orient="auto">'
           '<path d="M0,0 L10,4 L0,8 z" fill="context-stroke"/></marker></defs>',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{LEFT}" y="24" font-size="14" font-weight="bold">{escape(title)}</text>']
    for name in lanes:
        out.append(f'<text class="lane" x="{x[name]}" y="{TOP - 14}" text-anchor="middle" '
                   f'font-weight="bold">{escape(name)}</text>')
        out.append(f'<line x1="{x[name]}" y1="{TOP - 8}" x2="{x[name]}" y2="{height - 20}" '
                   f'stroke="#999" stroke-dasharray="4 4"/>')
    y = TOP
    for j in journeys:
        colour = COLOURS.get(j.direction, "#333")
        out.append(f'<text x="{LEFT}" y="{y + 14}" font-weight="bold" fill="{colour}">{escape(j.label)}</text>')
        y += ROW // 2
        for hop in j.hops:
            out += _arrow(hop, x, y, colour)
            y += ROW
        y += ROW // 2
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _arrow(hop: core.Hop, x: dict, y: int, colour: str) -> list:
    a, b = x[lifeline(hop.sender)], x[lifeline(hop.receiver)]
    main, changed = hop_label(hop)
    where = hop.point.name
    if a == b:      # inside one node: a loop
        path = f"M{a},{y} h40 v20 h-40"
        text_x, anchor = a + 46, "start"
    else:
        path = f"M{a},{y + 20} L{b},{y + 20}"
        text_x, anchor = (a + b) / 2, "middle"
    lines = [f'<path class="hop" d="{path}" stroke="{colour}" stroke-width="1.6" fill="none" marker-end="url(#arrow)"/>',
             f'<text x="{text_x}" y="{y + 12}" text-anchor="{anchor}" fill="{colour}">{escape(main)}</text>']
    if changed:
        lines.append(f'<text x="{text_x}" y="{y + 34}" text-anchor="{anchor}" fill="#c0392b">{escape(changed)}</text>')
    lines.append(f'<text x="{text_x}" y="{y + 46}" text-anchor="{anchor}" fill="#888" font-size="9">'
                 f'captured at {escape(where)}</text>')
    return lines
