"""The live figures (lb.director.figures), their Prometheus exposition (lb.director.metrics) and
one frame of `lbadm top` (lb.director.top), from fixed counters: no daemon, no terminal."""
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from lb.director import figures, metrics, top
from lb.director.fastpath import FakeFastPath
from lb.director.model import RealServer, Service


class FastPath(FakeFastPath):
    def counters(self):
        return {"not_ours": 4, "tcp_no_conn": 3, "no_dest": 0, "toa_no_room": 1,
                "rx_frames": 1000, "tx_frames": 990, "new_conns": 12, "expired_conns": 2,
                "templates": 1, "arp_replies": 5, "conns": 10, "ring_drops": 0}


def table():
    fp = FastPath()
    fp.load_counters(0, 2, 5)
    fp.load_counters(1, 1, 0)
    fp.counts[0] = dict(conns=7, inpkts=700, outpkts=650, inbytes=70000, outbytes=900000)
    fp.counts[1] = dict(conns=5, inpkts=300, outpkts=340, inbytes=30000, outbytes=100000)
    svc = Service("tcp", "198.18.0.100", 80, "wrr")
    svc.dests = [RealServer("198.18.0.11", 80, 3, slot=0, stats=fp),
                 RealServer("198.18.0.12", 8080, 1, slot=1, stats=fp, fwd="route")]
    rates = {svc.key: dict(cps=6, inpps=500, outpps=495, inbps=50000, outbps=500000),
             (svc.key, "198.18.0.11", 80): dict(cps=4, inpps=350, outpps=330, inbps=35000,
                                                outbps=450000)}
    zero = dict(cps=0, inpps=0, outpps=0, inbps=0, outbps=0)
    return figures.snapshot([svc], fp, lambda key: rates.get(key, zero))


def test_snapshot_sums_servers_and_sorts_reasons():
    fig = table()
    svc = fig["services"][0]
    assert svc["service"] == "TCP 198.18.0.100:80"
    assert (svc["active"], svc["inactive"], svc["conns"], svc["inpkts"], svc["outbytes"]) == \
        (3, 5, 12, 1000, 1000000)
    assert [s["server"] for s in svc["servers"]] == ["198.18.0.11:80", "198.18.0.12:8080"]
    assert svc["servers"][1]["fwd"] == "Route" and svc["rates"]["inpps"] == 500
    assert fig["drops"]["tcp_no_conn"] == 3 and "not_ours" not in fig["drops"]
    assert fig["passes"] == {"not_ipv4": 0, "not_ours": 4, "not_for_us": 0, "icmp_not_error": 0,
                             "icmp_bad_quote": 0, "icmp_about_icmp": 0, "icmp_no_conn": 0}
    assert fig["forwarded_anyway"] == {"toa_no_room": 1, "uoa_no_room": 0, "icmp_relayed": 0}
    assert fig["fastpath"]["rx_frames"] == 1000 and "tcp_no_conn" not in fig["fastpath"]


def scrape(fig) -> dict:
    registry = CollectorRegistry()
    registry.register(metrics.FiguresCollector(lambda: fig))
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_read_the_figures_at_scrape_time():
    fig = table()
    m = scrape(fig)
    s = 'service="TCP 198.18.0.100:80"'
    srv = 'forward="Masq",server="198.18.0.11:80",service="TCP 198.18.0.100:80"'
    assert m[f"lbd_service_active_connections{{{s}}}"] == 3
    assert m[f"lbd_service_inactive_connections{{{s}}}"] == 5
    assert m[f"lbd_service_connections_total{{{s}}}"] == 12
    assert m[f'lbd_service_packets_total{{direction="in",{s}}}'] == 1000
    assert m[f'lbd_service_bytes_total{{direction="out",{s}}}'] == 1000000
    assert m[f"lbd_service_connections_per_second{{{s}}}"] == 6
    assert m[f'lbd_service_packets_per_second{{direction="out",{s}}}'] == 495
    assert m[f'lbd_server_packets_total{{direction="in",{srv}}}'] == 700
    assert m[f'lbd_server_bytes_per_second{{direction="out",{srv}}}'] == 450000
    assert m[f"lbd_server_weight{{{srv}}}"] == 3
    assert m['lbd_frames_dropped_total{reason="tcp_no_conn"}'] == 3
    assert m['lbd_frames_passed_total{reason="not_ours"}'] == 4
    assert m["lbd_frames_forwarded_without_toa_total"] == 1
    assert m["lbd_rx_frames_total"] == 1000 and m["lbd_connections"] == 10
    fig["services"][0]["servers"][0]["inpkts"] = 701           # a later scrape sees later figures
    assert scrape(fig)[f'lbd_server_packets_total{{direction="in",{srv}}}'] == 701


@pytest.mark.parametrize("text, address", [("127.0.0.1:9400", ("127.0.0.1", 9400)),
                                           (":9400", ("0.0.0.0", 9400)),
                                           ("[::1]:9400", ("::1", 9400))])
def test_metrics_address(text, address):
    assert metrics.parse_address(text) == address


@pytest.mark.parametrize("text", ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:http", "x:70000"])
def test_bad_metrics_address(text):
    with pytest.raises(ValueError, match="expected HOST:PORT"):
        metrics.parse_address(text)


def test_top_renders_one_frame_of_fixed_figures():
    prev = table()
    fig = table()
    fig["time"] = prev["time"] + 2.0
    fig["drops"]["tcp_no_conn"] = 13                      # 10 more in 2 s: 5 per second
    text = top.render_text(fig, prev, width=140, source="/run/lbd/lbd.sock")
    lines = text.splitlines()
    assert lines[0].startswith("lbadm top  /run/lbd/lbd.sock  ")
    assert lines[1].startswith("fast path: rx 1K (0/s)  tx 990 (0/s)  connections 10")
    svc = next(line for line in lines if line.startswith("TCP 198.18.0.100:80"))
    assert svc.split() == ["TCP", "198.18.0.100:80", "wrr", "3", "5", "6", "500", "495", "50K",
                           "500K", "12", "1K", "990"]
    srv = next(line for line in lines if "-> 198.18.0.11:80" in line)
    assert srv.split()[2:5] == ["Masq", "3", "2"]
    assert any(line.split() == ["drop", "tcp_no_conn", "13", "5"] for line in lines), text
    assert any(line.split()[:3] == ["pass", "not_ours", "4"] for line in lines), text
    assert not any("no_dest" in line for line in lines)   # reasons never seen are left out


def test_top_frame_without_services():
    fig = table()
    fig["services"] = []
    assert "(no virtual services)" in top.render_text(fig, width=120)
