"""The bench's frame check (Mode.check_frame): frames built with scapy as each mode must send
them pass, and each kind of mistake a forwarder could make is named. The bench's `frames ok`
column rests on this check: a check that passed anything would hide a broken mode."""
from __future__ import annotations

import struct
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from harness.flows import payload  # noqa: E402
from harness.frames import FRAME_LEN, parse_frame  # noqa: E402
from harness.modes import MODES  # noqa: E402
from harness.topology import FWD_SINK_IP, PORT, SINK_IP, VIP  # noqa: E402

S0, F1 = "02:00:00:00:00:05", "02:00:00:00:00:04"
CLIENT = ("198.18.64.7", 10001)
LIP = "198.18.11.3"                 # FullnatMode.lip(0)
LPORT = 4242


def mode(name, proto="udp"):
    lab = SimpleNamespace(mac={"s0": S0, "f1": F1}, prefix="checkframe", workdir="/tmp")
    return MODES[name](lab, SimpleNamespace(proto=proto, daemon_arg=[]))


def toa(addr, port):
    return (254, struct.pack("!H4s", port, bytes(int(x) for x in addr.split("."))))


def frame(src, sport, dst, proto="udp", ttl=63, options=(), outer=None, smac=F1, **tcp):
    if proto == "udp":
        l4 = UDP(sport=sport, dport=PORT) / payload(FRAME_LEN)
    else:
        l4 = TCP(sport=sport, dport=PORT, flags=tcp.get("flags", "S"), options=list(options))
    pkt = IP(src=src, dst=dst, ttl=ttl) / l4
    if outer:
        pkt = IP(src=outer[0], dst=outer[1], proto=4) / pkt
    return bytes(Ether(dst=S0, src=smac) / pkt)


def check(m, f, sent=None):
    return m.check_frame(parse_frame(f), sent or {CLIENT: VIP})


GOOD = {
    "nat": ("udp", lambda: frame(*CLIENT, SINK_IP)),
    "dr": ("udp", lambda: frame(*CLIENT, VIP)),
    "tun": ("udp", lambda: frame(*CLIENT, VIP, outer=(FWD_SINK_IP, SINK_IP))),
    "fullnat": ("tcp", lambda: frame(LIP, LPORT, SINK_IP, "tcp", options=[toa(*CLIENT)])),
    "enat": ("tcp", lambda: frame(VIP, LPORT, SINK_IP, "tcp", options=[toa(*CLIENT)])),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_what_each_mode_must_send_passes(name):
    proto, build = GOOD[name]
    assert check(mode(name, proto), build()) == []


@pytest.mark.parametrize("name", ["nat", "dr", "tun"])
def test_an_undecremented_ttl_is_named(name):
    inner = CLIENT + ((SINK_IP,) if name == "nat" else (VIP,))
    outer = (FWD_SINK_IP, SINK_IP) if name == "tun" else None
    assert check(mode(name), frame(*inner, ttl=64, outer=outer)) == ["ttl 64"]


def test_mistakes_of_a_nat_forwarder_are_each_named():
    m = mode("nat")
    good = bytearray(frame(*CLIENT, SINK_IP))
    bad_l4 = bytes(good[:-1]) + bytes([good[-1] ^ 1])                  # payload changed
    assert "l4 checksum" in check(m, bad_l4)
    bad_ip = bytes(good[:24]) + bytes([good[24] ^ 1]) + bytes(good[25:])  # IP checksum field
    assert check(m, bad_ip) == ["ip header or checksum"]
    assert check(m, frame(*CLIENT, SINK_IP, smac="02:00:00:00:00:99")) == ["ethernet addresses"]
    assert check(m, frame(*CLIENT, "198.18.11.9")) == ["destination"]
    assert check(m, frame("198.18.64.8", CLIENT[1], SINK_IP)) == ["not a flow the generator sent"]


def test_a_tunnel_needs_its_outer_header_from_the_director():
    m = mode("tun")
    assert check(m, frame(*CLIENT, VIP)) == ["outer header"]
    assert check(m, frame(*CLIENT, VIP, outer=("198.18.11.77", SINK_IP))) == ["outer header"]


def test_fullnat_source_and_toa_are_checked():
    m = mode("fullnat", "tcp")
    assert check(m, frame(LIP, LPORT, SINK_IP, "tcp")) == ["TOA missing or wrong"]
    assert check(m, frame("198.18.11.4", LPORT, SINK_IP, "tcp", options=[toa(*CLIENT)])) == \
        ["source (local address/port)"]
    assert check(m, frame(LIP, 80, SINK_IP, "tcp", options=[toa(*CLIENT)])) == \
        ["source (local address/port)"]                              # below --lport-range
    assert check(m, frame(LIP, LPORT, SINK_IP, "tcp", options=[toa(*CLIENT)], flags="SA")) == \
        ["tcp flags 0x12"]


def test_a_mode_without_toa_must_not_add_one():
    m = mode("nat", "tcp")
    assert check(m, frame(*CLIENT, SINK_IP, "tcp")) == []
    assert check(m, frame(*CLIENT, SINK_IP, "tcp", options=[toa(*CLIENT)])) == ["unexpected TOA"]
