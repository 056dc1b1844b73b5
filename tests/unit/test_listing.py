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
