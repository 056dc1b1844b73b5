"""TCP_CHECK: the server passes when a TCP connection to it completes within connect_timeout
(keepalived check_tcp.c: connect, then close)."""
from __future__ import annotations

from lb.director.health.probe import CheckFailed, Result, close, connect, target


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    try:
        _, writer = await connect(check, host, port)
    except CheckFailed as e:
        return Result(False, str(e))
    await close(writer)
    return Result(True, "connected")
