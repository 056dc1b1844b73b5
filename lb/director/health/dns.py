"""DNS_CHECK (keepalived check_dns.c): a query for `name` (default ".") of `type` (default
SOA) over UDP; the server passes when an answer to that query (our ID, the QR bit, the same
question) comes back within connect_timeout with RCODE NOERROR (RFC 1035 4.1.1)."""
from __future__ import annotations

import secrets
import struct

from lb.director.health.probe import CheckFailed, Result, target
from lb.director.health.udp import exchange

TYPES = {"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28,
         "RP": 17, "SRV": 33, "HINFO": 13, "MINFO": 14}
CLASS_IN = 1


def encode_name(name: str) -> bytes:
    """RFC 1035 3.1: labels, each with its length, ending in the root's empty label."""
    out = b""
    for label in name.strip(".").split(".") if name.strip(".") else []:
        raw = label.encode("idna") if label else b""
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad DNS label {label!r} in {name!r}")
        out += bytes([len(raw)]) + raw
    return out + b"\0"


def query(ident: int, name: str, qtype: str) -> bytes:
    # header: ID, flags RD (as keepalived asks), QDCOUNT 1; then the question
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + encode_name(name) + \
        struct.pack("!HH", TYPES[qtype], CLASS_IN)


def check_reply(reply: bytes, sent: bytes) -> str | None:
    """None if `reply` answers `sent`, else why not."""
    if len(reply) < 12:
        return "reply shorter than a DNS header"
    ident, flags = struct.unpack("!HH", reply[:4])
    if ident != struct.unpack("!H", sent[:2])[0]:
        return "reply to another query (ID differs)"
    if not flags & 0x8000:
        return "not a response (QR unset)"
    if reply[12:len(sent)] != sent[12:]:
        return "reply with another question"
    rcode = flags & 0xF
    if rcode:
        return f"RCODE {rcode}"
    return None


def _ours(reply: bytes, sent: bytes) -> bool:
    """False for a datagram that answers another query (another ID): it does not end the check."""
    return len(reply) < 12 or reply[:2] == sent[:2]


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    sent = query(secrets.randbelow(65536), check.dns_name, check.dns_type)
    try:
        reply = await exchange(check, host, port, sent, "dns", lambda r: _ours(r, sent))
    except CheckFailed as e:
        return Result(False, str(e))
    if reply is None:
        return Result(False, f"no answer within {check.connect_timeout:g} s")
    why = check_reply(reply, sent)
    if why is not None:
        return Result(False, why)
    return Result(True, f"{check.dns_type} {check.dns_name} answered")
