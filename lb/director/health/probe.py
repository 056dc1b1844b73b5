"""What every checker shares: its Result, and a TCP connection bounded in time."""
from __future__ import annotations

import asyncio
import contextlib
import os
from typing import NamedTuple


class Result(NamedTuple):
    ok: bool
    detail: str                 # one line: what was seen ("connected", "status 503", ...)
    weight: int | None = None   # MISC_CHECK with misc_dynamic: the weight it asks for


def target(check, addr: str, port: int) -> tuple[str, int]:
    """keepalived's connect_ip / connect_port default to the real server's."""
    return check.connect_ip or addr, check.connect_port or port


def local(check):
    return (check.bindto, 0) if check.bindto else None


async def connect(check, host: str, port: int, ssl=None):
    """(reader, writer), or raises CheckFailed naming why; within connect_timeout."""
    try:
        return await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=local(check), ssl=ssl,
                                    server_hostname="" if ssl else None),
            check.connect_timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"no connection within {check.connect_timeout:g} s") from None
    except OSError as e:      # asyncio's message names the address; errno says what happened
        raise CheckFailed(f"connect: {os.strerror(e.errno) if e.errno else e}") from None


async def close(writer) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 0.5)


class CheckFailed(Exception):
    """A check that failed; the message is its Result's detail."""
