"""DNS_CHECK (keepalived check_dns.c): a query for `name` (default ".") of `type` (default
SOA) over UDP; the server passes when an answer to that query (our ID, the QR bit, the same
question) comes back within connect_timeout with RCODE NOERROR (RFC 1035 4.1.1)."""
from __future__ import annotations

import asyncio
import secrets
import socket
import struct

from lb.director.health.probe import Result, target

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


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    sent = query(secrets.randbelow(65536), check.dns_name, check.dns_type)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            if check.bindto:
                s.bind((check.bindto, 0))
            s.connect((host, port))
            await loop.sock_sendall(s, sent)
            deadline = loop.time() + check.connect_timeout
            while True:         # a stray datagram (another ID) does not end the check
                reply = await asyncio.wait_for(loop.sock_recv(s, 65536),
                                               max(0.0, deadline - loop.time()))
                why = check_reply(reply, sent)
                if why is None:
                    return Result(True, f"{check.dns_type} {check.dns_name} answered")
                if "ID differs" not in why:
                    return Result(False, why)
        except asyncio.TimeoutError:
            return Result(False, f"no answer within {check.connect_timeout:g} s")
        except ConnectionRefusedError:
            return Result(False, "port unreachable")
        except OSError as e:
            return Result(False, f"dns: {e.strerror or e}")
