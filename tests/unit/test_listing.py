"""`ipvsadm -L -n` text, byte for byte (widths from ipvsadm.c print_service_entry)."""
from lb.director.fastpath import FakeFastPath
from lb.director.listings import format_list, format_one
from lb.director.model import RealServer, Service

HEAD = ("IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n")


def service(proto, vip, port, sched, dests):
    svc = Service(proto, vip, port, sched)
    svc.dests = dests
    svc.sched.update_service(svc)
    return svc


def test_empty_table():
    assert format_list([]) == HEAD


def test_one_service_exact_columns():
    svc = service("tcp", "198.18.0.100", 80, "wrr", [RealServer("198.18.0.11", 80, 3)])
    assert format_list([svc]) == HEAD + (
        "TCP  198.18.0.100:80 wrr\n"
        "  -> 198.18.0.11:80               Masq    3      0          0         \n")


def test_columns_line_up_under_the_title():
    stats = FakeFastPath()
    stats.load_counters(0, 12345, 7)
    stats.load_counters(1, 0, 1234567890)
    dests = [RealServer("10.0.0.1", 8080, 65535, slot=0, stats=stats),
             RealServer("10.0.0.2", 80, 0, slot=1, stats=stats)]
    text = format_list([service("udp", "10.0.0.100", 53, "rr", dests)])
    lines = text.splitlines()
    assert lines[3] == "UDP  10.0.0.100:53 rr"
    assert lines[4] == "  -> 10.0.0.1:8080                Masq    65535  12345      7         "
    assert lines[5] == "  -> 10.0.0.2:80                  Masq    0      0          1234567890"
    title = lines[2]
    for col in ("Forward", "Weight", "ActiveConn", "InActConn"):
        assert lines[4][title.index(col) - 1] == " "
        assert lines[4][title.index(col)] != " "
    assert lines[4].index("Masq") == title.index("Forward")
    assert lines[4].index("65535") == title.index("Weight")
    assert lines[4].index("12345") == title.index("ActiveConn")
    assert lines[4].index("7 ") == title.index("InActConn")


def test_forwarding_names():
    dests = [RealServer(f"10.0.0.{i}", 80, 1, fwd=fwd)
             for i, fwd in enumerate(["masq", "route", "tunnel", "fullnat"], 1)]
    lines = format_list([service("tcp", "10.0.0.100", 80, "rr", dests)]).splitlines()[4:]
    assert [line[34:42] for line in lines] == ["Masq    ", "Route   ", "Tunnel  ", "FullNat "]


def test_sorted_like_ipvsadm():
    # services by protocol (TCP=6 before UDP=17), then VIP numerically, then port;
    # servers by address numerically, then port -- not by insertion order.
    svcs = [service("udp", "10.0.0.1", 53, "rr", []),
            service("tcp", "10.0.0.10", 80, "rr", []),
            service("tcp", "10.0.0.9", 443, "rr", []),
            service("tcp", "10.0.0.9", 80, "rr", [RealServer("10.0.1.10", 80),
                                                  RealServer("10.0.1.9", 81),
                                                  RealServer("10.0.1.9", 80)])]
    lines = format_list(svcs).splitlines()[3:]
    assert [line.split()[1] for line in lines] == [
        "10.0.0.9:80", "10.0.1.9:80", "10.0.1.9:81", "10.0.1.10:80",
        "10.0.0.9:443", "10.0.0.10:80", "10.0.0.1:53"]


def test_long_addresses_fill_their_columns():
    svc = service("tcp", "255.255.255.255", 65535, "wrr",
                  [RealServer("255.255.255.254", 65535, 1)])
    lines = format_list([svc]).splitlines()
    assert lines[3] == "TCP  255.255.255.255:65535 wrr"
    assert lines[4] == "  -> 255.255.255.254:65535        Masq    1      0          0         "


def test_format_one_has_no_version_line():
    svc = service("tcp", "198.18.0.100", 80, "rr", [])
    assert format_one(svc) == HEAD.split("\n", 1)[1] + "TCP  198.18.0.100:80 rr\n"


def test_scheduler_flags_after_the_scheduler():
    # ipvsadm print_service_entry: " (%s)" of print_sched_flags, in bit order, before persistence
    sh = Service("tcp", "10.0.0.100", 80, "sh", sched_flags=["sh-port", "sh-fallback"])
    mh = Service("tcp", "10.0.0.101", 80, "mh", sched_flags=["mh-port"])
    rr = Service("udp", "10.0.0.100", 53, "rr")
    lines = format_list([sh, mh, rr]).splitlines()[3:]
    assert lines == ["TCP  10.0.0.100:80 sh (sh-fallback,sh-port)",
                     "TCP  10.0.0.101:80 mh (mh-port)",
                     "UDP  10.0.0.100:53 rr"]


# --- every other listing, golden texts written from ipvsadm.c's printf formats ----------------
# printf() below renders a C format string of ipvsadm.c with Python's % operator (the length
# modifiers dropped: %8llu is %8d), so each expected line is ipvsadm's format applied to the
# figures, not a copy of lbd's output.
import re  # noqa: E402

from lb.director.listings import Format, Live, format_conns, format_daemon, format_timeout  # noqa: E402


def printf(fmt: str, *args) -> str:
    return re.sub(r"%(-?\d*|\*)(ll)?[ud]", r"%\1d", fmt) % args


def largenum(i: int) -> str:       # print_largenum() without --exact, case by case
    if i < 100000000:
        return printf("%9llu", i)
    if i < 1000000000:
        return printf("%8lluK", i // 1000)
    if i < 100000000000:
        return printf("%8lluM", i // 1000000)
    if i < 100000000000000:
        return printf("%8lluG", i // 1000000000)
    return printf("%8lluT", i // 1000000000000)


def exact(i: int) -> str:          # print_largenum() with --exact: "%*llu"
    width = 9 if len(str(i)) <= 8 else len(str(i)) + 1
    return printf("%*llu", width, i)


def figures_table():
    """TCP 198.18.0.100:80 (wrr, two NAT servers, the second a tunnel one) and UDP :53."""
    fp = FakeFastPath()
    fp.load_counters(0, 3, 7)
    fp.load_counters(1, 0, 12)
    fp.counts[0] = dict(conns=10, inpkts=123456789, outpkts=99999999, inbytes=100000000000,
                        outbytes=123456789012345)
    fp.counts[1] = dict(conns=5, inpkts=1, outpkts=2, inbytes=300, outbytes=4000)
    web = service("tcp", "198.18.0.100", 80, "wrr", [
        RealServer("198.18.0.12", 80, 2, fwd="tunnel", slot=1, stats=fp, u_threshold=50, l_threshold=40),
        RealServer("198.18.0.11", 8080, 3, slot=0, stats=fp)])
    dns = service("udp", "198.18.0.100", 53, "rr", [])
    return fp, [dns, web]


STATS_HEAD = printf("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
                    "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
RATE_HEAD = printf("%-33s %8s %8s %8s %8s %8s\n  -> RemoteAddress:Port\n",
                   "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
VERSION = "IP Virtual Server version 1.2.1 (size=4096)\n"


def test_stats_golden():
    _, svcs = figures_table()
    a = (10, 123456789, 99999999, 100000000000, 123456789012345)
    b = (5, 1, 2, 300, 4000)
    total = tuple(x + y for x, y in zip(a, b))
    assert format_list(svcs, Format(stats=True)) == (
        VERSION + STATS_HEAD
        + printf("%-33s", "TCP  198.18.0.100:80") + "".join(map(largenum, total)) + "\n"
        + printf("  -> %-28s", "198.18.0.11:8080") + "".join(map(largenum, a)) + "\n"
        + printf("  -> %-28s", "198.18.0.12:80") + "".join(map(largenum, b)) + "\n"
        + printf("%-33s", "UDP  198.18.0.100:53") + largenum(0) * 5 + "\n")
    assert largenum(123456789) == "  123456K" and largenum(123456789012345) == "     123T"


def test_stats_exact_golden():
    _, svcs = figures_table()
    a = (10, 123456789, 99999999, 100000000000, 123456789012345)
    text = format_list(svcs, Format(stats=True, exact=True)).splitlines()
    assert text[4] == printf("  -> %-28s", "198.18.0.11:8080") + "".join(map(exact, a))
    assert exact(123456789) == " 123456789" and exact(12) == "       12"


def test_one_service_stats_has_no_version_line():
    # list_service(): print_title() and the entry; list_all() alone prints the version
    _, svcs = figures_table()
    text = format_one(svcs[1], Format(stats=True))
    assert text.startswith(STATS_HEAD + printf("%-33s", "TCP  198.18.0.100:80"))
    assert "IP Virtual Server" not in text


def test_rate_golden():
    _, svcs = figures_table()
    rates = {("tcp", "198.18.0.100", 80): dict(cps=15, inpps=1000, outpps=999, inbps=123456789,
                                               outbps=7),
             (("tcp", "198.18.0.100", 80), "198.18.0.11", 8080): dict(cps=10, inpps=123456789,
                                                                       outpps=3, inbps=4, outbps=5)}
    live = Live(rates=lambda key: rates.get(key, dict.fromkeys(("cps", "inpps", "outpps", "inbps", "outbps"), 0)))
    assert format_list(svcs, Format(rate=True), live) == (
        VERSION + RATE_HEAD
        + printf("%-33s", "TCP  198.18.0.100:80") + "".join(map(largenum, (15, 1000, 999, 123456789, 7))) + "\n"
        # servers: "  -> %-28s %8llu %8llu %8llu" then print_largenum() of the two BPS
        + printf("  -> %-28s %8llu %8llu %8llu", "198.18.0.11:8080", 10, 123456789, 3)
        + largenum(4) + largenum(5) + "\n"
        + printf("  -> %-28s %8llu %8llu %8llu", "198.18.0.12:80", 0, 0, 0) + largenum(0) * 2 + "\n"
        + printf("%-33s", "UDP  198.18.0.100:53") + largenum(0) * 5 + "\n")


def test_thresholds_golden():
    _, svcs = figures_table()
    assert format_list(svcs, Format(thresholds=True)) == (
        VERSION
        + printf("%-33s %-10s %-10s %-10s %-10s\n  -> RemoteAddress:Port\n", "Prot LocalAddress:Port",
                 "Uthreshold", "Lthreshold", "ActiveConn", "InActConn")
        + "TCP  198.18.0.100:80 wrr\n"
        + printf("  -> %-28s %-10u %-10u %-10u %-10u\n", "198.18.0.11:8080", 0, 0, 3, 7)
        + printf("  -> %-28s %-10u %-10u %-10u %-10u\n", "198.18.0.12:80", 50, 40, 0, 12)
        + "UDP  198.18.0.100:53 rr\n")


def test_persistent_conn_golden():
    _, svcs = figures_table()
    live = Live(persist=lambda dest: {0: 4}.get(dest.slot, 0))
    assert format_list(svcs[1:], Format(persistent_conn=True), live) == (
        VERSION
        + printf("%-33s %-9s %-11s %-10s %-10s\n  -> RemoteAddress:Port\n", "Prot LocalAddress:Port",
                 "Weight", "PersistConn", "ActiveConn", "InActConn")
        + "TCP  198.18.0.100:80 wrr\n"
        + printf("  -> %-28s %-9u %-11u %-10u %-10u\n", "198.18.0.11:8080", 3, 4, 3, 7)
        + printf("  -> %-28s %-9u %-11u %-10u %-10u\n", "198.18.0.12:80", 2, 0, 0, 12))


def test_tun_info_golden():
    _, svcs = figures_table()
    assert format_list(svcs[1:], Format(tun_info=True)) == (
        VERSION
        + "Prot LocalAddress:Port Scheduler Flags\n"
          "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        + "TCP  198.18.0.100:80 wrr\n"
        + printf("  -> %-28s %-7s %-13s %-6d %-10u %-10u\n", "198.18.0.11:8080", "Masq", "n/a", 3, 3, 7)
        + printf("  -> %-28s %-7s %-13s %-6d %-10u %-10u\n", "198.18.0.12:80", "Tunnel", "ipip", 2, 0, 12))


def test_which_layout_wins_is_ipvsadms():
    # print_title / print_service_entry: stats, then rate, then thresholds, persistent-conn, tun-info
    _, svcs = figures_table()
    assert format_list(svcs, Format(stats=True, rate=True)) == format_list(svcs, Format(stats=True))
    assert format_list(svcs, Format(rate=True, thresholds=True)) == format_list(svcs, Format(rate=True))
    assert format_list(svcs, Format(thresholds=True, persistent_conn=True, tun_info=True)) == \
        format_list(svcs, Format(thresholds=True))


def test_nosort_keeps_lbds_order():
    _, svcs = figures_table()
    lines = format_list(svcs, Format(nosort=True)).splitlines()[3:]
    assert [line.split()[1] for line in lines] == [
        "198.18.0.100:53", "198.18.0.100:80", "198.18.0.12:80", "198.18.0.11:8080"]
    lines = format_list(svcs).splitlines()[3:]
    assert [line.split()[1] for line in lines] == [
        "198.18.0.100:80", "198.18.0.11:8080", "198.18.0.12:80", "198.18.0.100:53"]


def conn(proto, secs, state, client, virtual, dest, template=False):
    return {"proto": proto, "expires_in": secs, "state": state, "client": client,
            "virtual": virtual, "dest": dest, "template": template}


def test_connections_golden_and_long_expiries_stay_aligned():
    rows = [conn("TCP", 899.7, "ESTABLISHED", ("198.18.1.2", 40000), ("198.18.0.100", 80), ("198.18.0.11", 8080)),
            conn("UDP", 6000, "UDP", ("198.18.1.2", 5353), ("198.18.0.100", 53), ("198.18.0.12", 53)),
            conn("IP", 99 * 60 + 59, "NONE", ("198.18.1.3", 0), ("0.0.0.7", 0), ("198.18.0.12", 0), True)]

    def line(proto, expires, state, c, v, d):
        expire = printf("%02d:%02d", expires // 60, expires % 60)
        return printf("%-3s %-6s %-11s %-18s %-18s %s\n", proto, expire, state, c, v, d)

    assert format_conns(rows) == (
        "IPVS connection entries\n"
        + printf("pro expire %-11s %-18s %-18s %s\n", "state", "source", "virtual", "destination")
        + line("UDP", 6000, "UDP", "198.18.1.2:5353", "198.18.0.100:53", "198.18.0.12:53")
        + line("TCP", 899, "ESTABLISHED", "198.18.1.2:40000", "198.18.0.100:80", "198.18.0.11:8080")
        + line("IP", 5999, "NONE", "198.18.1.3:0", "0.0.0.7:0", "198.18.0.12:0"))
    lines = format_conns(rows).splitlines()
    assert lines[2].startswith("UDP 100:00 UDP ")       # 100 minutes fill the 6 columns
    assert lines[2].index("198.18.1.2") == lines[3].index("198.18.1.2") == lines[1].index("source")


def test_connections_with_persistent_conn_title():
    assert format_conns([], persistent_conn=True) == (
        "IPVS connection entries\n"
        + printf("pro expire %-11s %-18s %-18s %-18s %-16s %s\n", "state", "source", "virtual",
                 "destination", "pe name", "pe_data"))


def test_timeout_and_daemon():
    assert format_timeout(900, 120, 300) == printf("Timeout (tcp tcpfin udp): %d %d %d\n", 900, 120, 300)
    assert format_daemon() == ""     # no sync daemon runs: list_daemon() prints nothing


def test_rate_exact_prints_the_service_rates_unscaled():
    # ipvsadm.c print_service_entry(): the service's five rates go through print_largenum(...,
    # format), so --exact applies to them as to the counters
    _, svcs = figures_table()
    rates = {("tcp", "198.18.0.100", 80): dict(cps=15, inpps=1000, outpps=999, inbps=123456789,
                                               outbps=7)}
    live = Live(rates=lambda key: rates.get(key, dict.fromkeys(("cps", "inpps", "outpps", "inbps", "outbps"), 0)))
    text = format_list(svcs, Format(rate=True, exact=True), live).splitlines()
    assert text[3] == printf("%-33s", "TCP  198.18.0.100:80") + "".join(map(exact, (15, 1000, 999, 123456789, 7)))
