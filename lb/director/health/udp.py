"""UDP_CHECK (keepalived check_udp.c): a datagram is sent to the server; an ICMP port
unreachable back means it is down. With `require_reply` the server must answer within
connect_timeout (and with the given bytes, if any); without it, silence passes."""
from __future__ import annotations

import asyncio
import socket

from lb.director.health.probe import Result, target


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        try:
            if check.bindto:
                s.bind((check.bindto, 0))
            s.connect((host, port))      # connected: the kernel hands ICMP errors to recv
            await loop.sock_sendall(s, check.payload)
            reply = await asyncio.wait_for(loop.sock_recv(s, 65536), check.connect_timeout)
        except asyncio.TimeoutError:
            if check.require_reply:
                return Result(False, f"no reply within {check.connect_timeout:g} s")
            return Result(True, "no port unreachable")
        except ConnectionRefusedError:
            return Result(False, "port unreachable")
        except OSError as e:
            return Result(False, f"udp: {e.strerror or e}")
    if isinstance(check.require_reply, bytes) and reply != check.require_reply:
        return Result(False, f"reply {reply[:16].hex()} is not the one required")
    return Result(True, f"reply of {len(reply)} bytes")
