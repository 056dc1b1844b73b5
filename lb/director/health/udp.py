"""UDP_CHECK (keepalived check_udp.c): a datagram is sent to the server; an ICMP port
unreachable back means it is down. With `require_reply` the server must answer within
connect_timeout (and with the given bytes, if any); without it, silence passes.

`exchange` is the datagram round trip DNS_CHECK (dns.py) makes too."""
from __future__ import annotations

import asyncio
import socket

from lb.director.health.probe import CheckFailed, Result, target


async def exchange(check, host: str, port: int, payload: bytes, name: str,
                   answers=lambda reply: True) -> bytes | None:
    """Sends `payload` from a connected UDP socket (bound to check.bindto if set) and returns
    the first reply for which answers(reply) holds, or None if none came within
    connect_timeout; a reply it rejects (a stray datagram) does not end the wait. CheckFailed
    ("port unreachable", or "<name>: <error>") when the kernel reports an error."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            if check.bindto:
                s.bind((check.bindto, 0))
            s.connect((host, port))      # connected: the kernel hands ICMP errors to recv
            await loop.sock_sendall(s, payload)
            deadline = loop.time() + check.connect_timeout
            while True:
                reply = await asyncio.wait_for(loop.sock_recv(s, 65536),
                                               max(0.0, deadline - loop.time()))
                if answers(reply):
                    return reply
        except asyncio.TimeoutError:
            return None
        except ConnectionRefusedError:
            raise CheckFailed("port unreachable") from None
        except OSError as e:
            raise CheckFailed(f"{name}: {e.strerror or e}") from None


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    try:
        reply = await exchange(check, host, port, check.payload, "udp")
    except CheckFailed as e:
        return Result(False, str(e))
    if reply is None:
        if check.require_reply:
            return Result(False, f"no reply within {check.connect_timeout:g} s")
        return Result(True, "no port unreachable")
    if isinstance(check.require_reply, bytes) and reply != check.require_reply:
        return Result(False, f"reply {reply[:16].hex()} is not the one required")
    return Result(True, f"reply of {len(reply)} bytes")
