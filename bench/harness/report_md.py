"""report.md of a suite run: the headline, the targets, the folklore, then one table per section.
Pure: the report dict in, markdown text out.
"""

from __future__ import annotations

from harness.analysis import NAMES, folklore, headline, targets


def _fmt(v, unit):
    if v is None:
        return "—"
    if unit in ("pps", "SYN/s"):
        return f"{v:,.0f}"
    if unit == "Gbit/s":
        return f"{v:.2f}"
    return f"{v:,.0f}"


def _ratio(v):
    return f"{v:.2f}" if v is not None else "—"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def lab_section(sec):
    u = sec["unit"]
    rows = []
    for r in sec["rows"]:
        rng = (f"{r['paired_ratio_min']:.2f}–{r['paired_ratio_max']:.2f}" if "paired_ratio_min" in r else "")
        fc = r.get("frame_check")
        rows.append([NAMES.get(r["mode"], r["mode"]), _fmt(r.get("value"), u), _ratio(r.get("ratio_to_kernel")), rng,
                     f"{r['trials']} ({r['disturbed_trials']} disturbed)",
                     f"{r['delivered_of_offered']:.2f}" if r.get("delivered_of_offered") is not None else "—",
                     f"{fc['captured'] - fc['bad']}/{fc['captured']}" if fc else "off",
                     r["status"] if r["status"] != "ok" else ""])
    return table(["forwarder", u, "× kernel", "per-trial range", "trials", "delivered", "frames ok", "note"], rows)


def latency_section(sec):
    rows = []
    for r in sec["rows"]:
        f = lambda k: f"{r[k]:.0f}" if r.get(k) is not None else "—"  # noqa: E731
        rows.append([NAMES.get(r["mode"], r["mode"]), f("value"), _ratio(r.get("ratio_to_nftdnat")), f("rtt_p99_us"),
                     _ratio(r.get("p99_ratio_to_nftdnat")), str(r.get("lost", "—")),
                     f"{r['trials']} ({r['disturbed_trials']} disturbed)", r["status"] if r["status"] != "ok" else ""])
    return table(["path", "median µs", "× nftables DNAT", "p99 µs", "p99 × nftables DNAT", "lost", "trials", "note"],
                 rows)


def e2e_section(sec):
    u = sec["unit"]
    if u == "µs":
        return latency_section(sec)
    rows = []
    for r in sec["rows"]:
        rows.append([NAMES.get(r["mode"], r["mode"]), _fmt(r.get("value"), u), _ratio(r.get("ratio_to_kernel")),
                     _ratio(r.get("ratio_to_haproxy")),
                     f"{r['cpu_per_1000_conns']:.3f}" if r.get("cpu_per_1000_conns") is not None else (
                         f"{r['cpu_s_per_gb']:.3f} /GB" if r.get("cpu_s_per_gb") is not None else "—"),
                     f"{r['director_cpu_share'] * 100:.0f} %" if r.get("director_cpu_share") is not None else "—",
                     f"{r['director_byte_share'] * 100:.0f} %" if r.get("director_byte_share") is not None else "—",
                     f"{r['trials']} ({r['disturbed_trials']} disturbed)",
                     r["status"] if r["status"] != "ok" else ""])
    cpu_col = "director CPU s / GB" if u == "Gbit/s" else "director CPU s / 1000 conns"
    return table(["director", u, "× kernel", "× HAProxy", cpu_col, "director CPU busy", "director's byte share",
                  "trials", "note"], rows)


def curve_tables(report):
    out = []
    for curve, label in (("flows", "concurrent flows"), ("real_servers", "real servers"),
                         ("table_fill", "table fill %")):
        secs = sorted((s for s in report["sections"].values() if s.get("curve") == curve), key=lambda s: s["x"])
        if not secs:
            continue
        modes = list(dict.fromkeys(m for s in secs for m in s["modes"]))
        rows = []
        for s in secs:
            by = {r["mode"]: r for r in s["rows"]}
            cells = []
            for m in modes:
                r = by.get(m, {})
                v = r.get("value")
                cells.append(f"{_fmt(v, s['unit'])} ({_ratio(r.get('ratio_to_kernel'))})" if v is not None
                             else ("failed" if s.get("error") else "—"))
            rows.append([f"{s['x']:,.0f}", *cells])
        out += [f"### Cost curve: {label} ({secs[0]['unit']}, × kernel in brackets)", ""]
        out += table([label, *[NAMES.get(m, m) for m in modes]], rows) + [""]
        notes = [s["note"] for s in secs if s.get("note")]
        out += [f"_{n}_" for n in dict.fromkeys(notes)] + ([""] if notes else [])
    return out


def render(report):
    q = " (--quick: tiny counts, numbers are not comparable)" if report.get("quick") else ""
    out = [f"# lvs-py benchmark suite{q}", "",
           f"Command: `{report['command']}`  ", f"Started {report['started']}, {report.get('duration_s', 0):.0f} s; "
           f"{report['machine']['nproc']} CPUs, kernel {report['machine']['kernel']}; load average at start "
           f"{' '.join(report['machine']['loadavg_start'])}, at end {' '.join(report['machine'].get('loadavg_end', ['?']))}. "
           f"Trials: {report['disturbed_trials']} of {report['total_trials']} disturbed "
           f"(other load on the forwarder CPU), retried and marked.", ""]
    for u in report.get("updates", []):
        out += [f"Re-run later (`--update`): {', '.join(u['sections'])} at {u['started']} with `{u['command']}`.", ""]
    if report.get("interrupted"):
        out += ["**Interrupted: this report is partial.**", ""]
    if report.get("missing_tools"):
        out += ["Missing tools (their references are unavailable): " + ", ".join(
            f"{t} (apt-get install {p})" for t, p in report["missing_tools"].items()), ""]
    hdr, rows = headline(report)
    out += ["## Headline", "", "Medians of the undisturbed trials; every number has its kernel reference from "
            "the same run in its section below. napi = all forwarding work on one CPU (as with a NIC); "
            "none = veth delivers in the sender's context, which flatters userspace forwarders.", ""]
    out += table(["forwarder", *hdr], [[n, *c] for n, c in rows]) + [""]
    out += ["## Targets", ""]
    trows = []
    for t in targets(report):
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        ratio = f"{t['ratio_to_goal']:.2f}" if t.get("ratio_to_goal") is not None else "—"
        meas = f"{t['measured']:,.3f}".rstrip("0").rstrip(".") if isinstance(t.get("measured"), float) else (
            f"{t['measured']:,}" if t.get("measured") is not None else "—")
        goal = f"{t['goal']:,.3f}".rstrip("0").rstrip(".") if t.get("goal") is not None else "—"
        trows.append([t["target"], meas, goal, ratio, met, t.get("note", "")])
    out += table(["target", "measured", "goal", "measured / goal", "", "note"], trows) + [""]
    out += ["## The primer's folklore: \"DR > TUN > NAT > FULLNAT\", and TUN's tenfold", ""]
    out += folklore(report) + [""]
    mem = report.get("memory")
    if mem:
        out += ["## Memory", "", f"lbd --max-conns {mem['max_conns']:,}: {mem['conns']:,} connections "
                f"(of {mem['conns_sent']:,} SYNs sent); resident {mem['rss_empty_mib']:.1f} MiB empty, "
                f"{mem['rss_full_mib']:.1f} MiB with them: "
                + (f"{mem['bytes_per_conn']:.0f} bytes per connection" if mem.get("bytes_per_conn") else "—")
                + (f"; at 1 M connections {mem['rss_at_max_mib']:.1f} MiB"
                   + (" (extrapolated)" if mem.get("rss_at_max_mib") != mem.get("rss_full_mib") else "")
                   if mem.get("rss_at_max_mib") else "")
                + (f". Kernel reference: an nf_conntrack entry is {mem['conntrack_object_bytes']} bytes (slab "
                   "object, before its hash bucket)." if mem.get("conntrack_object_bytes") else "."), ""]
    out += ["## Sections", ""]
    for sec in report["sections"].values():
        if sec["kind"] == "memory":
            continue
        out += [f"### {sec['title']}", "", f"`{sec['id']}`, {sec.get('seconds', 0):.0f} s"
                + (f"; arguments `{' '.join(sec['argv'])}`" if sec.get("argv") else ""), ""]
        if sec.get("error"):
            out += [f"**Section failed:** {sec['error']}", ""]
        if sec["rows"]:
            out += (e2e_section(sec) if sec["kind"] == "e2e" else lab_section(sec)) + [""]
        if sec.get("note"):
            out += [f"_{sec['note']}_", ""]
    out += curve_tables(report)
    out += ["## How to read this", "",
            "- `× kernel`: the median of the mode divided by the median of plain kernel forwarding in the same "
            "section (same lab, interleaved trials). Absolute numbers on a shared 2-CPU VM move 20–50 % between "
            "runs; quote ratios.",
            "- A trial is *disturbed* when other processes took more than --max-foreign of the forwarder's CPU; "
            "it is retried, and kept (marked) only when every attempt was disturbed.",
            "- `frames ok`: frames captured at the sink during the paced warm-up that are exactly what the mode "
            "must send (addresses, ports, TTL, checksums, TOA).",
            "- Director CPU (connection workloads): softirq plus the director's own threads (NAPI kthreads of its "
            "two veths, and lbd or HAProxy) on the forwarder CPU, where nothing else of the lab runs (wrk, nginx, "
            "iperf3 and the end hosts' NAPI are pinned to the other CPU).",
            "- Byte share: bytes the director received (both veths) / bytes the end hosts received.", ""]
    return "\n".join(out) + "\n"
