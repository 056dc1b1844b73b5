"""Frames: the 60-byte UDP frames pps sends, their trafgen form, and the parser of captured ones.

Plain bytes in and out (no sockets): build_frames() for the generator, parse_frame() for the
frames captured at the sink, which Mode.check_frame() then judges.
"""

from __future__ import annotations

import struct

FRAME_LEN = 60  # + 4 bytes FCS = 64 on the wire
SPORT_BASE = 10000
UDP_PAYLOAD = b"lvs-py-bench-pps!!"  # 18 bytes -> 14+20+8+18 = 60
PROTO_NUM = {"udp": 17, "tcp": 6}


def ip_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def aton(a: str) -> bytes:
    return bytes(int(x) for x in a.split("."))


def mac_bytes(m: str) -> bytes:
    return bytes(int(x, 16) for x in m.split(":"))


def build_frames(dst_mac, src_mac, src_ip, dst_ip, dport, flows):
    """One 60-byte frame per flow (source port SPORT_BASE+i), correct IP and UDP checksums."""
    payload = UDP_PAYLOAD
    frames = []
    for i in range(flows):
        sport = SPORT_BASE + i
        udp_len = 8 + len(payload)
        ip_len = 20 + udp_len
        iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, ip_len, i & 0xFFFF, 0x4000, 64, 17, 0,
                          aton(src_ip), aton(dst_ip))
        iph = iph[:10] + struct.pack("!H", ip_checksum(iph)) + iph[12:]
        pseudo = aton(src_ip) + aton(dst_ip) + struct.pack("!BBH", 0, 17, udp_len)
        udph = struct.pack("!HHHH", sport, dport, udp_len, 0)
        csum = ip_checksum(pseudo + udph + payload) or 0xFFFF
        udph = udph[:6] + struct.pack("!H", csum)
        frame = mac_bytes(dst_mac) + mac_bytes(src_mac) + b"\x08\x00" + iph + udph + payload
        assert len(frame) == FRAME_LEN, len(frame)
        frames.append(frame)
    return frames


def trafgen_config(frames) -> str:
    return "\n".join("{ " + ", ".join(f"0x{b:02x}" for b in f) + " }" for f in frames) + "\n"


def parse_frame(f: bytes) -> dict:
    """The fields check_frame() looks at, from one Ethernet/IPv4 frame (IPIP: "inner" too)."""
    p = {"len": len(f), "dmac": ":".join(f"{b:02x}" for b in f[0:6]),
         "smac": ":".join(f"{b:02x}" for b in f[6:12]), "etype": int.from_bytes(f[12:14], "big")}
    p.update(_parse_ip(f[14:]))
    return p


def _parse_ip(ip: bytes) -> dict:
    if len(ip) < 20 or ip[0] >> 4 != 4:
        return {"proto": None}
    ihl, tot = (ip[0] & 15) * 4, int.from_bytes(ip[2:4], "big")
    saddr, daddr = ".".join(map(str, ip[12:16])), ".".join(map(str, ip[16:20]))
    p = {"ihl": ihl, "tot": tot, "ttl": ip[8], "proto": ip[9], "saddr": saddr, "daddr": daddr,
         "ip_csum_ok": ip_checksum(ip[:ihl]) == 0}
    l4 = ip[ihl:tot]
    if ip[9] == 4:
        p["inner"] = _parse_ip(l4)
        return p
    if ip[9] not in (6, 17) or len(l4) < 8:
        return p
    p["sport"], p["dport"] = int.from_bytes(l4[0:2], "big"), int.from_bytes(l4[2:4], "big")
    pseudo = ip[12:20] + struct.pack("!BBH", 0, ip[9], len(l4))
    csum = int.from_bytes(l4[6:8] if ip[9] == 17 else l4[16:18], "big")
    p["l4_csum_ok"] = (ip[9] == 17 and csum == 0) or ip_checksum(pseudo + l4) == 0
    if ip[9] == 17:
        p["payload"] = l4[8:]
    else:
        p["flags"], doff = l4[13], (l4[12] >> 4) * 4
        opts, i, p["toa"] = l4[20:doff], 0, None
        while i < len(opts):
            kind = opts[i]
            if kind == 0:
                break
            if kind == 1:
                i += 1
                continue
            if i + 1 >= len(opts) or opts[i + 1] < 2:
                p["bad_options"] = True
                break
            if kind == 254 and opts[i + 1] == 8:
                p["toa"] = (".".join(map(str, opts[i + 4:i + 8])), int.from_bytes(opts[i + 2:i + 4], "big"))
            i += opts[i + 1]
    return p
