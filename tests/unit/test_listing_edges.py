"""lb.director.listings where mutation testing (docs/mutation.md) found nothing pinned: the
service line's persistence mask and "ops" (ipvsadm.c print_service_entry), print_largenum()'s
unit boundaries, and --get-laddr's order and the services it leaves out."""
import pytest

from lb.director.listings import format_laddrs, largenum, service_line
from lb.director.model import Service

VIP = "198.18.0.100"


def svc(port=80, proto="tcp", vip=VIP, **kw):
    s = Service(proto, vip, port, "rr")
    for k, v in kw.items():
        setattr(s, k, v)
    return s


@pytest.mark.parametrize("kw, line", [
    ({}, "TCP  198.18.0.100:80 rr\n"),
    ({"persistent": 300}, "TCP  198.18.0.100:80 rr persistent 300\n"),
    ({"persistent": 300, "netmask": "255.255.255.0"},
     "TCP  198.18.0.100:80 rr persistent 300 mask 255.255.255.0\n"),
    ({"netmask": "255.255.255.0"}, "TCP  198.18.0.100:80 rr\n"),      # a mask only with -p
])
def test_service_line_persistence_and_mask(kw, line):
    assert service_line(svc(**kw)) == line


def test_service_line_one_packet_scheduling():
    assert service_line(svc(proto="udp", onepacket=True)) == "UDP  198.18.0.100:80 rr ops\n"
    assert service_line(svc(proto="udp", onepacket=True, persistent=60, netmask="255.255.0.0")) == \
        "UDP  198.18.0.100:80 rr persistent 60 mask 255.255.0.0 ops\n"


@pytest.mark.parametrize("n, text", [
    (99_999_999, " 99999999"),                  # %9llu up to 10^8 - 1
    (100_000_000, "  100000K"),                 # then %8llu K
    (999_999_999, "  999999K"),
    (1_000_000_000, "    1000M"),              # from 10^9: M
    (99_999_999_999, "   99999M"),
    (100_000_000_000, "     100G"),            # from 10^11: G
    (99_999_999_999_999, "   99999G"),
    (100_000_000_000_000, "     100T"),        # from 10^14: T
])
def test_largenum_units_change_at_the_kernel_tools_limits(n, text):
    assert largenum(n) == text
    assert largenum(n, exact=True) == str(n).rjust(max(9, len(str(n)) + 1))


def test_largenum_exact_width():
    assert largenum(12345678, exact=True) == " 12345678"           # 8 digits: 9 columns
    assert largenum(123456789, exact=True) == " 123456789"         # 9 digits: one more
    assert largenum(5) == largenum(5, exact=False) == "        5"   # not exact by default


def test_get_laddr_sorted_and_without_services_that_have_no_local_address():
    services = [svc(81, laddrs=["198.18.0.4"]), svc(80, laddrs=["198.18.0.3", "198.18.0.5"]),
                svc(79), svc(82, laddrs=["198.18.0.6"])]
    used = {"198.18.0.3": 7, "198.18.0.4": 0, "198.18.0.5": 2, "198.18.0.6": 1}.get
    lines = format_laddrs(services, used).splitlines()
    assert lines[0].startswith("VIP:VPORT")
    assert [l.split()[0] for l in lines[1:] if not l.startswith(" ")] == \
        ["198.18.0.100:80", "198.18.0.100:81", "198.18.0.100:82"]   # by port; :79 left out
    assert [l.split()[-1] for l in lines[1:] if l.startswith(" ")] == ["7", "2", "0", "1"]


def test_get_laddr_of_two_services_leaves_out_the_one_without_local_addresses():
    lines = format_laddrs([svc(79), svc(80, laddrs=["198.18.0.3"])]).splitlines()
    assert [l.split()[0] for l in lines[1:]] == ["198.18.0.100:80", "198.18.0.3"]


def test_get_laddr_of_one_service_shows_it_even_without_local_addresses():
    assert format_laddrs([svc(79)]).splitlines()[1].split() == ["198.18.0.100:79", "0"]


def test_exact_reaches_the_service_line_and_the_servers_rates():
    # --exact prints a service's summed counters and a server's byte rates in full too.
    from tests.unit.test_listing import exact, figures_table
    from lb.director.listings import Format, Live, format_list
    _, svcs = figures_table()
    a = (10, 123456789, 99999999, 100000000000, 123456789012345)
    b = (5, 1, 2, 300, 4000)
    text = format_list(svcs, Format(stats=True, exact=True)).splitlines()
    assert text[3] == f"{'TCP  198.18.0.100:80':<33}" + "".join(exact(x + y) for x, y in zip(a, b))
    big = dict(cps=1, inpps=2, outpps=3, inbps=123456789012, outbps=5)
    live = Live(rates=lambda key: big)
    line = [l for l in format_list(svcs, Format(rate=True, exact=True), live).splitlines()
            if l.startswith("  -> 198.18.0.11:8080")][0]
    assert line.endswith(exact(123456789012) + exact(5))


def test_one_service_rates_without_live_figures_read_zero():
    from tests.unit.test_listing import figures_table
    from lb.director.listings import Format, format_one
    _, svcs = figures_table()
    text = format_one(svcs[1], Format(rate=True))          # no Live given: every rate 0
    lines = text.splitlines()
    assert lines[2].split() == ["TCP", "198.18.0.100:80", "0", "0", "0", "0", "0"]
    assert [l.split()[2:] for l in lines[3:]] == [["0"] * 5] * 2
