"""The PNG plots of a suite run (matplotlib, Agg backend: no display needed).

One bar chart per section (the mode's value, its ratio to kernel forwarding on the bar), the
connection workloads' director CPU per 1000 connections and byte share, and the cost curves.
Returns the file names written; a missing matplotlib is reported, not fatal.
"""

from __future__ import annotations

import os
import textwrap

from harness.analysis import NAMES

COLORS = {"kernel": "#555555", "nftdnat": "#8c6d31", "ring": "#17becf", "haproxy": "#9467bd",
          "nat": "#1f77b4", "dr": "#2ca02c", "tun": "#98df8a", "fullnat": "#d62728", "enat": "#ff9896"}


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def bars(plt, path, title, rows, key, ylabel, ratio_key=None, fmt="{:.2f}"):
    rows = [r for r in rows if r.get(key) is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    xs = range(len(rows))
    ax.bar(xs, [r[key] for r in rows], color=[COLORS.get(r["mode"], "#999999") for r in rows])
    ax.set_xticks(list(xs), [NAMES.get(r["mode"], r["mode"]) for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    for x, r in zip(xs, rows):
        label = fmt.format(r[ratio_key]) + "×" if ratio_key and r.get(ratio_key) is not None else ""
        if label:
            ax.annotate(label, (x, r[key]), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def curve(plt, path, title, secs, xlabel, logx):
    modes = list(dict.fromkeys(m for s in secs for m in s["modes"]))
    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for m in modes:
        pts = [(s["x"], r["value"]) for s in secs for r in s["rows"] if r["mode"] == m and r.get("value")]
        if pts:
            ax.plot(*zip(*pts), marker="o", label=NAMES.get(m, m), color=COLORS.get(m))
            drawn = True
    if not drawn:
        plt.close(fig)
        return False
    if logx:
        ax.set_xscale("symlog", linthresh=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(secs[0]["unit"])
    ax.set_title(textwrap.fill(title, 90), fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_plots(report, outdir):
    try:
        plt = _plt()
    except ImportError as e:
        return [], f"matplotlib missing ({e}); pip install matplotlib"
    files = []
    for sid, sec in report["sections"].items():
        if not sec.get("rows") or sec.get("curve") or sec["kind"] == "memory":
            continue
        name = f"{sid}.png"
        if bars(plt, os.path.join(outdir, name), sec["title"], sec["rows"], "value", sec["unit"], "ratio_to_kernel"):
            files.append(name)
        if sec["kind"] == "e2e" and sec["unit"] != "Gbit/s":
            name = f"{sid}_cpu.png"
            if bars(plt, os.path.join(outdir, name), "Director CPU seconds per 1000 connections: " + sec["title"],
                    sec["rows"], "cpu_per_1000_conns", "CPU s / 1000 conns"):
                files.append(name)
            name = f"{sid}_bytes.png"
            if bars(plt, os.path.join(outdir, name), "Director's share of the bytes: " + sec["title"],
                    sec["rows"], "director_byte_share", "share"):
                files.append(name)
    for c, label, logx in (("flows", "concurrent flows", True), ("real_servers", "real servers", True),
                           ("table_fill", "lbd table fill (%)", False)):
        secs = sorted((s for s in report["sections"].values() if s.get("curve") == c and s.get("rows")),
                      key=lambda s: s["x"])
        if secs and curve(plt, os.path.join(outdir, f"curve_{c}.png"), f"Cost curve: {label}", secs, label, logx):
            files.append(f"curve_{c}.png")
    return files, None
