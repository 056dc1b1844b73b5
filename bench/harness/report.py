"""The report of a run: the summary row per mode, the printed table and its warnings, the JSON file.

Every mode is summarized as a ratio to kernel forwarding in the same run (median over the
undisturbed trials), with the per-round paired ratios as its range.
"""

from __future__ import annotations

import json
import statistics


def summarize(results, modes):
    def usable(m):
        ok = [r for r in results if r["mode"] == m and "error" not in r]
        clean = [r for r in ok if not r.get("disturbed")]
        return (clean or ok), len(ok) - len(clean)

    by = {m: usable(m) for m in modes}
    kern = by["kernel"][0]
    kmed = statistics.median(r["sink_rx_pps"] for r in kern) if kern else None
    rows = []
    for m in modes:
        rs, n_disturbed = by[m]
        row = {"mode": m, "trials": len(rs), "disturbed_trials": n_disturbed,
               "used_disturbed": bool(rs) and all(r.get("disturbed") for r in rs)}
        errs = [r["error"] for r in results if r["mode"] == m and "error" in r]
        if errs:
            row["errors"] = errs
        if rs:
            row["median_pps"] = statistics.median(r["sink_rx_pps"] for r in rs)
            row["median_offered_pps"] = statistics.median(r["offered_pps"] for r in rs)
            row["ratio_to_kernel"] = row["median_pps"] / kmed if kmed else None
            # paired ratios: each trial against the kernel trial of the same round
            paired = []
            for r in rs:
                k = [x for x in kern if x["trial"] == r["trial"]]
                if k:
                    paired.append(r["sink_rx_pps"] / k[-1]["sink_rx_pps"])
            if paired:
                row["paired_ratio_min"], row["paired_ratio_max"] = min(paired), max(paired)
                row["paired_ratio_median"] = statistics.median(paired)
            row["delivered_of_offered"] = statistics.median(
                r["sink_rx_pps"] / r["offered_pps"] for r in rs if r["offered_pps"])
            row["median_out_frame_len"] = statistics.median(r["out_frame_len"] for r in rs)
            row["out_frame_len_expected"] = rs[0]["out_frame_len_expected"]
            row["median_cpu_busy"] = [statistics.median(r["cpu"][i]["busy"] for r in rs)
                                      for i in range(len(rs[0]["cpu"]))]
        checks = [r["frame_check"] for r in results
                  if r["mode"] == m and "error" not in r and r.get("frame_check")]
        if checks:
            fc = {"captured": sum(c["captured"] for c in checks), "bad": sum(c["bad"] for c in checks),
                  "problems": {}}
            for c in checks:
                for k, v in c["problems"].items():
                    fc["problems"][k] = fc["problems"].get(k, 0) + v
            row["frame_check"] = fc
        rows.append(row)
    return rows


def print_table(rows, cmdline, unavailable, unit="pps"):
    """unit: what the sink counts, for the header (cps.py: "syn/s"; offered is always frames/s)."""
    print()
    print(f"command: {cmdline}")
    print(f"{'mode':<9} {'median_' + unit:>11} {'ratio_to_kernel':>15} {'trials':>6}   "
          f"{'ratio_range':>13} {'offered_pps':>11} {'delivered':>9}  cpu_busy")
    for r in rows:
        if r["mode"] in unavailable and not r.get("median_pps"):
            print(f"{r['mode']:<9} {'-':>11} {'unavailable':>15} {0:>6}   {unavailable[r['mode']][:200]}")
            continue
        if "median_pps" not in r:
            print(f"{r['mode']:<9} {'-':>11} {'failed':>15} {0:>6}   {r.get('errors', [''])[0][:200]}")
            continue
        rng = (f"{r['paired_ratio_min']:.2f}-{r['paired_ratio_max']:.2f}"
               if "paired_ratio_min" in r else "")
        print(f"{r['mode']:<9} {r['median_pps']:>11.0f} {r['ratio_to_kernel']:>15.2f} {r['trials']:>6}   "
              f"{rng:>13} {r['median_offered_pps']:>11.0f} {r['delivered_of_offered']:>9.2f}  "
              + "/".join(f"{b:.2f}" for b in r["median_cpu_busy"]))
    print("ratio_to_kernel = median sink pps of the mode / median sink pps of kernel forwarding in this run;"
          "\nratio_range = min-max of per-trial ratios to the kernel trial run just before it;"
          "\ndelivered = sink rx / offered (well below 1: the forwarder, not the generator, is the limit);"
          "\ncpu_busy = busy fraction of each CPU during the window (whole VM, other users included).")
    print_warnings(rows)


def print_warnings(rows):
    """What makes a row not what it seems (generator-limited, merged frames, disturbed, bad frames)."""
    for r in rows:
        if r.get("median_pps") and r["delivered_of_offered"] > 0.95:
            print(f"WARNING: {r['mode']} delivered >95% of what was offered: the generator, not the "
                  f"forwarder, may be the limit" + (" (every ratio is then compressed towards 1)"
                                                   if r["mode"] == "kernel" else
                                                   f" ({r['mode']}'s ratio is a lower bound)"))
        if r.get("median_pps") and abs(r["median_out_frame_len"] - r["out_frame_len_expected"]) > 0.5:
            print(f"WARNING: {r['mode']} sent {r['median_out_frame_len']:.1f} bytes per frame at f1, expected "
                  f"{r['out_frame_len_expected']}: frames were merged (GRO) or not forwarded as this mode "
                  f"should, so its pps is not comparable")
        if r.get("used_disturbed"):
            print(f"WARNING: every {r['mode']} trial was disturbed by other load on the forwarder CPU")
        fc = r.get("frame_check")
        if fc and (fc["bad"] or not fc["captured"]):
            print(f"WARNING: {r['mode']}: {fc['bad']} of {fc['captured']} frames captured at the sink are not "
                  f"what the mode should send: {fc['problems']}")
    checked = [f"{r['mode']} {r['frame_check']['captured'] - r['frame_check']['bad']}/"
               f"{r['frame_check']['captured']}" for r in rows if r.get("frame_check")]
    if checked:
        print("frames checked at the sink (good/captured): " + ", ".join(checked))


def write_json(path, cmdline, args, meta, rows, unavailable, results):
    """Everything per trial, and the summary, as bench/README.md describes it."""
    with open(path, "w") as f:
        json.dump({"command": cmdline, "args": {k: v for k, v in vars(args).items()},
                   "meta": meta, "summary": rows, "unavailable": unavailable, "trials": results},
                  f, indent=2)
    print(f"wrote {path}")
