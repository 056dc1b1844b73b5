"""The terminal view of ``lb trace`` (rich): per packet, every hop's Ethernet, IP and TCP/UDP
fields, those changed since the previous hop highlighted (and listed, so that a pipe or a log
keeps them), one line on why each changed, and the mode's reason at the end."""
from __future__ import annotations

from rich.console import Console
from rich.padding import Padding
from rich.text import Text

from lb.lab import explain
from lb.lab import trace as core
from lb.lab import words as W

CHANGED = "bold black on yellow"


def where(point, lang: str = "en") -> str:
    """Where a capture point is and what it shows, in words."""
    return W.say(W.POINT, point.kind, lang, role=point.role, ifname=point.ifname, node=point.node)

ADDED = "bold black on green"
BAD = "bold red"


def _seg(out: Text, label, value, key: str, hop: core.Hop) -> None:
    if label:
        out.append(f"  {label} ", style="dim")
    elif label is not None:
        out.append("  ")
    before = hop.changed.get(key, (0, 0))[0] if key in hop.changed else 0
    style = (ADDED if before is None else CHANGED) if key in hop.changed else ""
    out.append(str(value), style=style)


def _chk(out: Text, key: str, hop: core.Hop, f: dict, lang: str = "en") -> None:
    _seg(out, "chksum", f"0x{f[key]:04x}", key, hop)
    if key in hop.bad_checksums:
        out.append(" ✗", style=BAD)
    elif key in hop.partial_checksums:     # CHECKSUM_PARTIAL: the pseudo-header sum, right
        out.append(f" ✓ {W.say(W.HOP, 'checksum_partial', lang)}", style="yellow")
    else:
        out.append(" ✓", style="green")


def layer_lines(hop: core.Hop, names: core.Names, lang: str = "en") -> list:
    """One Text per layer of the hop's frame."""
    f, lines = hop.fields, []
    if "eth.src" in f:
        t = Text("    Ethernet ", style="cyan")
        _seg(t, None, f"{f['eth.src']} ({names.node(f['eth.src'])})", "eth.src", hop)
        t.append(" → ")
        _seg(t, None, f"{f['eth.dst']} ({names.node(f['eth.dst'])})", "eth.dst", hop)
        lines.append(t)
    for prefix, title in (("outer", "outer IP "), ("ip", "IP       ")):
        if f"{prefix}.src" in f:
            t = Text(f"    {title}", style="cyan")
            _seg(t, None, names.ip(f[f"{prefix}.src"]), f"{prefix}.src", hop)
            t.append(" → ")
            _seg(t, None, names.ip(f[f"{prefix}.dst"]), f"{prefix}.dst", hop)
            if prefix == "outer":
                _seg(t, "proto", f[f"{prefix}.proto"], "outer.proto", hop)
            for name in ("ttl", "id", "len"):
                _seg(t, name, f[f"{prefix}.{name}"], f"{prefix}.{name}", hop)
            _chk(t, f"{prefix}.chksum", hop, f, lang)
            lines.append(t)
    lines += _l4_lines(hop, f, lang)
    return lines


def _l4_lines(hop: core.Hop, f: dict, lang: str) -> list:
    if "tcp.sport" in f:
        t = Text("    TCP      ", style="cyan")
        _seg(t, None, f["tcp.sport"], "tcp.sport", hop)
        t.append(" → ")
        _seg(t, None, f["tcp.dport"], "tcp.dport", hop)
        for label, key in (("flags", "tcp.flags"), ("seq", "tcp.seq"), ("ack", "tcp.ack"), ("hdr", "tcp.dataofs")):
            _seg(t, label, f[key], key, hop)
        if f.get("tcp.options"):
            _seg(t, "opts", f["tcp.options"], "tcp.options", hop)
        if "tcp.toa" in f:
            _seg(t, "TOA", f["tcp.toa"], "tcp.toa", hop)
        _chk(t, "tcp.chksum", hop, f, lang)
        return [t]
    if "udp.sport" in f:
        t = Text("    UDP      ", style="cyan")
        _seg(t, None, f["udp.sport"], "udp.sport", hop)
        t.append(" → ")
        _seg(t, None, f["udp.dport"], "udp.dport", hop)
        _seg(t, "len", f["udp.len"], "udp.len", hop)
        if "ip.uoa" in f:
            _seg(t, "UOA", f["ip.uoa"], "ip.uoa", hop)
        _chk(t, "udp.chksum", hop, f, lang)
        return [t]
    return []


def semantic_changes(hop: core.Hop, names: core.Names, keep=()) -> str:
    """What changed beyond MACs and checksums (unless `keep` names them, as DR's eth.dst),
    e.g. 'ip.dst 198.18.0.100 (VIP nat) → 198.18.0.11 (RIP rs1)'."""
    parts, outer_added = [], False
    for key, (before, after) in hop.changed.items():
        if key in core.NOISE and key not in keep:
            continue
        if key.startswith("eth."):
            parts.append(f"{key} {before} ({names.node(before)}) → {after} ({names.node(after)})")
            continue
        if key.startswith("outer."):
            if before is None and not outer_added:
                outer_added = True
                parts.append(f"+ outer IPv4 header {hop.fields['outer.src']} → {hop.fields['outer.dst']} (IPIP)")
            elif after is None and key == "outer.src":
                parts.append("- outer IPv4 header")
            continue
        show = names.ip if key.endswith((".src", ".dst")) and not key.startswith("eth.") else str
        if before is None:
            parts.append(f"+ {key} {after}")
        else:
            parts.append(f"{key} {show(before)} → {show(after)}")
    return "; ".join(parts) or "-"


def hop_note(i: int, hop: core.Hop, journey: core.Journey, ex, result, lang: str) -> list:
    """Lines (Text) on why this hop looks as it does."""
    names, hops, mode = result.names, journey.hops, result.mode
    prev = hops[i - 1] if i else None
    notes = []
    if len(hop.points) > 1:
        notes.append(W.say(W.HOP, "bridge", lang, points=", ".join(p.name for p in hop.points[1:])))
    if prev is None:
        key = "reply" if journey.direction == "out" else "first"
        notes.insert(0, W.say(W.HOP, key, lang, node=hop.sender, src=names.ip(hop.fields.get("ip.src"))))
        if hop.point.kind == "agent":
            notes.append(W.say(W.HOP, "agent_in", lang, node=hop.point.node, dst=names.ip(hop.fields.get("ip.dst"))))
    elif hop.point.kind == "decap":
        notes.append(W.say(W.HOP, "decap", lang, node=hop.point.node))
    elif hop.point.kind == "agent":
        notes.append(W.say(W.HOP, "agent_in", lang, node=hop.point.node, dst=names.ip(hop.fields.get("ip.dst"))))
    elif prev.point.kind == "agent":
        notes.append(W.say(W.HOP, "agent_out", lang, changes=semantic_changes(hop, names)))
        notes += _check_lines(journey, ex, mode, "agent", lang)
    elif hop.sender == "director" and prev.receiver == "director":
        keep = core.expected_rewrite(mode, journey.direction, journey.proto, journey.syn)
        notes.append(W.say(W.HOP, "director", lang, mode=mode.short, changes=semantic_changes(hop, names, keep)))
        notes += _check_lines(journey, ex, mode, "director", lang)
    elif hop.sender == "router":
        notes.append(W.say(W.HOP, "router", lang))
    else:
        notes.append(W.say(W.HOP, "sent", lang, node=hop.sender))
    if journey.direction == "out" and i == len(hops) - 1 and hop.receiver == "client":
        src = hop.fields.get("ip.src")
        key = "client_ok" if src == ex.vip else "client_bad"
        notes.append(W.say(W.HOP, key, lang, src=names.ip(src), dst=names.ip(hop.fields.get("ip.dst")),
                           vip=names.ip(ex.vip)))
    out = [Text(f"    ▸ {n}", style="italic") if isinstance(n, str) else n for n in notes]
    if hop.bad_checksums:
        out.append(Text("    ✗ " + W.say(W.HOP, "checksum_bad", lang, fields=", ".join(hop.bad_checksums)), style=BAD))
    if hop.copies > 1:
        out.append(Text("    ▸ " + W.say(W.HOP, "copies", lang, n=hop.copies, point=hop.point.name), style="italic"))
    return out


def _check_lines(journey, ex, mode, who: str, lang: str) -> list:
    file = type(mode).__module__.rsplit(".", 1)[1] + ".py"
    attr = "rewrites_in" if journey.direction == "in" else "rewrites_out"
    for j, by, problems in ex.checks:
        if j is journey and by == who:
            if problems:
                return [Text("    ✗ " + W.say(W.HOP, "differs", lang, file=file, problems="; ".join(problems)), style=BAD)]
            return [Text("    ✓ " + W.say(W.HOP, "matches", lang, file=file, attr=attr), style="green")]
    return []


def render_journey(console: Console, journey: core.Journey, ex, result, lang: str) -> None:
    head = Text(f"  {journey.label}", style="bold")
    head.append(f"  ({W.say(W.HOP, journey.direction, lang)})", style="dim")
    if not journey.passes("director"):
        head.append(f"  — {W.say(W.HOP, 'not_director', lang)}", style="magenta")
    console.print(head)
    t0 = journey.hops[0].ts
    for i, hop in enumerate(journey.hops):
        line = Text(f"  {i + 1:>2}  ", style="bold")
        line.append(f"{hop.sender} → {hop.receiver}", style="bold")
        line.append(f"   {W.say(W.POINT, 'at', lang)} {where(hop.point, lang)}", style="dim")
        line.append(f"   +{(hop.ts - t0) * 1000:.3f} ms", style="dim")
        console.print(line)
        for layer in layer_lines(hop, result.names, lang):
            console.print(layer, overflow="fold")
        if hop.changed:
            changed = Text(f"    {W.say(W.HOP, 'changed', lang)}: ", style="dim")
            changed.append(" ".join(hop.changed), style="yellow")
            console.print(changed, overflow="fold")
        for note in hop_note(i, hop, journey, ex, result, lang):
            console.print(note)
    console.print()


def arp_lines(result, lang: str) -> list:
    """'router asked who has VIP; heard by ...; answered by director' per ARP request seen."""
    asked: dict = {}
    for f in result.arp:
        arp = core.dissect(f.data).getlayer(core.ARP)
        if arp.op == 1:
            entry = asked.setdefault((arp.psrc, arp.pdst), {"asker": result.names.node(arp.hwsrc), "heard": [], "by": [],
                                                            "as": result.names.ip(arp.psrc)})
            if f.point.kind == "host" and f.point.node not in entry["heard"]:
                entry["heard"].append(f.point.node)
        elif arp.op == 2 and (arp.pdst, arp.psrc) in asked:
            node = result.names.node(arp.hwsrc)
            answers = asked[(arp.pdst, arp.psrc)]["by"]
            if node not in answers:
                answers.append(node)
    nobody = W.say(W.HOP, "nobody", lang)
    return [W.say(W.HOP, "arp", lang, asker=e["asker"], ip=result.names.ip(ip), heard=", ".join(e["heard"]) or nobody, own=e["as"],
                  answered=", ".join(e["by"]) or nobody) for (_, ip), e in asked.items()]


def path_line(journey: core.Journey) -> str:
    """'TCP SYN: client → router → director → rs1' (the nodes a packet crossed)."""
    nodes = [journey.hops[0].sender] + [h.receiver for h in journey.hops]
    return f"{journey.label}: " + " → ".join(n for i, n in enumerate(nodes) if i == 0 or n != nodes[i - 1])


def render_trace(console: Console, result, lang: str = "en", footer: bool = True) -> None:
    mode = result.mode
    console.rule(Text(f"lb trace {mode.short}: {W.say(W.TITLES, mode.short, lang)}", style="bold"))
    for ex in result.exchanges:
        head = Text(f"{ex.traced.proto.upper()} {ex.traced.cip}:{ex.traced.cport} → {ex.vip}:{ex.vport}", style="bold")
        head.append(f"   {W.say(W.HOP, 'answered', lang)}: ", style="dim")
        head.append(ex.answer, style="green" if ex.ok else BAD)
        console.print(head)
        for journey in ex.shown:
            render_journey(console, journey, ex, result, lang)
        if not ex.journeys:
            console.print(Text(f"  {W.say(W.HOP, 'nothing', lang)}", style=BAD))
    for line in arp_lines(result, lang):
        console.print(Text(line, style="italic"))
    for note in result.notes:
        console.print(Text(note, style="magenta"))
    if footer:
        render_why(console, mode, lang)
        render_points(console, result, lang)


def render_why(console: Console, mode, lang: str) -> None:
    paragraphs = explain.why(mode, lang)
    key = mode.rs_needs[0] if mode.rs_needs else None
    if key:
        console.print(Text(W.say(W.UI, "why", lang), style="cyan"))
        console.print(Padding(W.say(W.NEEDS, key, lang)[1], (0, 0, 0, 2)))
    elif paragraphs:
        console.print(Padding(paragraphs[0], (0, 0, 0, 2)))
    console.print(Text(W.say(W.HOP, "more", lang, mode=mode.short), style="green"))


def render_points(console: Console, result, lang: str) -> None:
    console.print(Text(W.say(W.HOP, "where", lang), style="dim"))
    for point in result.points:
        console.print(Text(f"  {point.name:<20} {where(point, lang)}", style="dim"))
    if result.files:
        console.print(Text(W.say(W.HOP, "files", lang), style="dim"))
        for path in result.files:
            console.print(Text(f"  {path}", style="dim"))
    console.print()
