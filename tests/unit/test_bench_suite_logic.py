"""The benchmark suite's pure parts: frames of many flows, the plan, targets, folklore, report.md."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.analysis import e2e_rows, folklore, headline, targets  # noqa: E402
from harness.flows import build_udp_frames, client_of, payload  # noqa: E402
from harness.frames import build_frames, parse_frame  # noqa: E402
from harness.generator import FlowMap  # noqa: E402
from harness.memory import lbd_conns  # noqa: E402
from harness.plan import sections  # noqa: E402
from harness.report_md import render  # noqa: E402

MACS = ("02:00:00:00:00:01", "02:00:00:00:00:02")


def test_small_flow_sets_are_the_old_frames():
    old = b"".join(build_frames(*MACS, "198.18.10.2", "198.18.11.2", 9, 300))
    assert build_udp_frames(*MACS, "198.18.10.2", "198.18.11.2", 9, 300, 60).tobytes() == old


@pytest.mark.parametrize("flows,frame_len", [(10, 60), (60000, 60), (10, 1500), (70000, 1514)])
def test_many_flows_and_big_frames_have_good_checksums_and_distinct_clients(flows, frame_len):
    f = build_udp_frames(*MACS, "198.18.10.2", "198.18.11.2", 9, flows, frame_len)
    assert f.shape == (flows, frame_len)
    for i in (0, flows // 2, flows - 1):
        p = parse_frame(f[i].tobytes())
        assert p["ip_csum_ok"] and p["l4_csum_ok"] and p["payload"] == payload(frame_len)
        assert (p["saddr"], p["sport"]) == client_of(i, flows, "198.18.10.2")
    m = FlowMap(flows, "198.18.11.2")
    assert m.get(client_of(flows - 1, flows, "198.18.10.2")) == "198.18.11.2"
    assert m.get(("198.18.99.99", 1)) is None


def test_plan_ids_are_unique_and_quick_keeps_every_reference():
    for quick in (True, False):
        s = sections(quick)
        assert len({x.id for x in s}) == len(s)
        modes = {m for x in s for m in x.modes}
        assert {"kernel", "nftdnat", "ring", "haproxy", "nat"} <= modes
    full = {x.id: x for x in sections(False)}
    assert {x.x for x in full.values() if x.curve == "flows"} == {1, 1000, 100_000, 1_000_000}
    assert {x.x for x in full.values() if x.curve == "real_servers"} == {3, 32, 256}
    assert {x.x for x in full.values() if x.curve == "table_fill"} == {0, 50, 90}


def _report(pps, cpu, share):
    """A report with a pps section and a 100 KB HTTP section of the given values per mode."""
    def sec(sid, kind, unit, rows):
        return {"id": sid, "title": sid, "kind": kind, "unit": unit, "modes": [r["mode"] for r in rows],
                "rows": rows, "unavailable": {}, "trials": [], "argv": [], "curve": "", "x": None}
    prows = [{"mode": m, "value": v, "ratio_to_kernel": v / pps["kernel"], "trials": 1, "disturbed_trials": 0,
              "status": "ok"} for m, v in pps.items()]
    trials = [{"mode": m, "conns_per_s": 1000.0, "cpu_per_1000_conns": c, "director_byte_share": share[m],
               "director_cpu_share": 0.5, "director_cpu_s": 1.0, "fwd_cpu_foreign": 0.0, "seconds": 1.0}
              for m, c in cpu.items()]
    e = sec("e2e_http_100k", "e2e", "conn/s", [])
    e["modes"] = list(cpu)
    e["rows"] = e2e_rows(e, trials, {})
    return {"command": "x", "quick": False, "started": "now", "duration_s": 1,
            "machine": {"nproc": 2, "kernel": "k", "loadavg_start": ["0", "0", "0"], "loadavg_end": ["0"] * 3},
            "total_trials": 1, "disturbed_trials": 0,
            "sections": {"pps64_napi": sec("pps64_napi", "pps", "pps", prows), "e2e_http_100k": e}}


def test_folklore_is_computed_from_the_numbers():
    pps = {"kernel": 1e6, "ring": 3e5, "dr": 2.9e5, "tun": 2.8e5, "nat": 2.7e5, "fullnat": 2.6e5}
    cpu = {"nat": 1.0, "dr": 0.1, "tun": 0.12, "fullnat": 1.1}
    share = {"nat": 1.0, "dr": 0.01, "tun": 0.012, "fullnat": 1.0}
    text = "\n".join(folklore(_report(pps, cpu, share)))
    assert "64-byte established pps (napi)**: measured DR" in text and "order holds" in text
    assert "8.3x the requests in TUN" in text and "about tenfold holds" in text
    pps_flipped = dict(pps, dr=2.0e5)
    text = "\n".join(folklore(_report(pps_flipped, cpu, share)))
    assert "pps (napi)**: measured TUN" in text and "does not hold" in text.split("\n")[0]


def test_targets_say_met_or_missed_with_the_ratio():
    pps = {"kernel": 1e6, "ring": 3e5, "dr": 3.3e5, "tun": 1.5e5, "nat": 2.7e5, "fullnat": 2.6e5, "enat": 2e5}
    r = _report(pps, {"nat": 1.0}, {"nat": 1.0})
    t = {x["target"]: x for x in targets(r)}
    dr = t["64-byte established, dr >= 1.0x the C ring ceiling (napi)"]
    tun = t["64-byte established, tun >= 1.0x the C ring ceiling (napi)"]
    assert dr["met"] is True and dr["ratio_to_goal"] == pytest.approx(1.1)
    assert tun["met"] is False and tun["ratio_to_goal"] == pytest.approx(0.5)
    assert t["<= 128 bytes per connection"]["met"] is None        # no memory section: not measured
    md = render(r)
    assert md.startswith("# lvs-py benchmark suite") and "**missed**" in md
    hdr, rows = headline(r)
    assert len(hdr) == len(rows[0][1])


def test_lbd_conns_sums_active_and_inactive():
    listing = """IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  198.18.10.100:9 rr
  -> 198.18.11.2:9                Masq    1      3          40000
  -> 198.18.14.1:9                Masq    1      0          7
"""
    assert lbd_conns(listing) == 40010


def test_latency_percentiles_are_nearest_rank():
    from harness.udp_rr import percentile, summary
    xs = list(range(1, 101))                    # 1..100
    assert percentile(xs, 50) == 50 and percentile(xs, 99) == 99 and percentile(xs, 100) == 100
    assert percentile([7], 99) == 7 and percentile([], 50) is None
    s = summary([2000, 1000, 3000], lost=1)     # ns in, µs out
    assert (s["rtt_median_us"], s["rtt_min_us"], s["rtt_max_us"], s["lost"], s["exchanges"]) == (2, 1, 3, 1, 3)


def test_latency_rows_and_targets_compare_median_and_p99_with_nftables():
    sec = {"modes": ("kernel", "nftdnat", "nat"), "unit": "µs"}
    trials = [{"mode": "nftdnat", "rtt_median_us": 100, "rtt_p99_us": 400},
              {"mode": "nftdnat", "rtt_median_us": 120, "rtt_p99_us": 600},
              {"mode": "nat", "rtt_median_us": 140, "rtt_p99_us": 900, "lost": 2},
              {"mode": "nat", "rtt_median_us": 160, "rtt_p99_us": 700}]
    rows = {r["mode"]: r for r in e2e_rows(sec, trials, {})}
    assert rows["nat"]["value"] == 150 and rows["nat"]["rtt_p99_us"] == 800 and rows["nat"]["lost"] == 2
    assert rows["nat"]["ratio_to_nftdnat"] == pytest.approx(150 / 110)
    assert rows["nat"]["p99_ratio_to_nftdnat"] == pytest.approx(800 / 500)
    report = {"sections": {"e2e_udp_rr": {"rows": list(rows.values())}}}
    got = {t["target"]: t for t in targets(report) if "round trip, nat" in t["target"]}
    assert got["light-load round trip, nat median <= 1.5x nftables DNAT"]["met"] is True
    assert got["light-load round trip, nat p99 <= 1.5x nftables DNAT"]["met"] is False   # 800 > 750


def test_bulk_tcp_goal_is_point_three_for_tun_and_point_nine_for_the_rest():
    """issue 10: TUN segments in userspace (0.3x nftables DNAT); every other mode 0.9x."""
    rows = [{"mode": m, "value": v} for m, v in
            (("nftdnat", 20.0), ("nat", 17.0), ("dr", 19.0), ("tun", 7.0), ("fullnat", 18.0), ("enat", 5.0))]
    got = {t["target"]: t for t in targets({"sections": {"e2e_tcp_bulk": {"rows": rows}}})
           if t["target"].startswith("bulk TCP")}
    assert got["bulk TCP, tun >= 0.3x nftables DNAT"]["met"] is True            # 7 >= 6
    assert got["bulk TCP, tun >= 0.3x nftables DNAT"]["ratio_to_goal"] == pytest.approx(7 / 6)
    assert got["bulk TCP, nat >= 0.9x nftables DNAT"]["met"] is False           # 17 < 18
    assert got["bulk TCP, dr >= 0.9x nftables DNAT"]["met"] is True
    assert got["bulk TCP, enat >= 0.9x nftables DNAT"]["met"] is False


def test_modes_option_narrows_only_the_end_to_end_sections():
    import suite
    a = suite.parse_args(["--only", "e2e_tcp_bulk,pps64_napi", "--modes", "nftdnat,tun"])
    got = {s.id: s.modes for s in a.sections}
    assert got["e2e_tcp_bulk"] == ("nftdnat", "tun")
    assert "nat" in got["pps64_napi"]                     # pps sections keep their own --modes
    with pytest.raises(SystemExit):
        suite.parse_args(["--only", "e2e_tcp_bulk", "--modes", "nosuch"])
