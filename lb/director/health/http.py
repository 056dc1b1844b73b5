"""HTTP_GET and SSL_GET (keepalived check_http.c): for every `url`, a GET of its path; the
answer's status must be one of `status_code` (any 2xx when none is given) and, with `digest`,
the MD5 of its body must be that digest (what keepalived's genhash prints). SSL_GET is the same
over TLS, without verifying the server's certificate (keepalived does not either by default).

A hostile server cannot hold the check: the header is limited to MAX_HEADER bytes, the body
read for a digest to MAX_BODY, and every URL to connect_timeout for the connection plus
connect_timeout for the whole answer."""
from __future__ import annotations

import asyncio
import hashlib
import ssl

from lb.director.health.probe import CheckFailed, Result, close, connect, target

MAX_HEADER = 16 * 1024
MAX_BODY = 8 * 1024 * 1024
USER_AGENT = "lbd-health-check"


def _tls_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def parse_status(head: bytes) -> int:
    """The status code of an HTTP/1.x response head; CheckFailed if it is not one."""
    line = head.split(b"\r\n", 1)[0].split(b"\n", 1)[0]
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() \
            or len(parts[1]) != 3:
        raise CheckFailed(f"not an HTTP answer: {line[:40]!r}")
    return int(parts[1])


def content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return int(value.strip())
    return None


def status_ok(status: int, url) -> bool:
    return status in url.status_codes if url.status_codes else 200 <= status <= 299


async def _read_head(reader) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await reader.read(4096)
        if not chunk:
            raise CheckFailed("connection closed before the end of the header")
        data += chunk
        if len(data) > MAX_HEADER and b"\r\n\r\n" not in data[:MAX_HEADER + 4]:
            raise CheckFailed(f"header longer than {MAX_HEADER} bytes")
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


async def _read_body(reader, rest: bytes, length: int | None) -> bytes:
    body = bytearray(rest)
    while length is None or len(body) < length:
        chunk = await reader.read(65536)
        if not chunk:
            break
        body += chunk
        if len(body) > MAX_BODY:
            raise CheckFailed(f"body larger than {MAX_BODY} bytes")
    return bytes(body[:length] if length is not None else body)


async def _get(check, host: str, port: int, url, tls) -> str:
    reader, writer = await connect(check, host, port, ssl=tls)
    try:
        vhost = url.virtualhost or f"{host}:{port}"
        writer.write(f"GET {url.path} HTTP/1.0\r\nHost: {vhost}\r\nUser-Agent: {USER_AGENT}\r\n"
                     "Connection: close\r\n\r\n".encode())

        async def answer():
            head, rest = await _read_head(reader)
            status = parse_status(head)
            if not status_ok(status, url):
                raise CheckFailed(f"{url.path}: status {status}")
            if url.digest is None:
                return f"status {status}"
            body = await _read_body(reader, rest, content_length(head))
            digest = hashlib.md5(body).hexdigest()
            if digest != url.digest:
                raise CheckFailed(f"{url.path}: digest {digest}, expected {url.digest}")
            return f"status {status}, digest matches"
        try:
            return await asyncio.wait_for(answer(), check.connect_timeout)
        except asyncio.TimeoutError:
            raise CheckFailed(f"{url.path}: no complete answer within "
                              f"{check.connect_timeout:g} s") from None
        except (OSError, ssl.SSLError) as e:
            raise CheckFailed(f"{url.path}: {e.strerror or e}") from None
    finally:
        await close(writer)


async def probe(check, addr: str, port: int) -> Result:
    host, port = target(check, addr, port)
    tls = _tls_context() if check.kind == "SSL_GET" else None
    detail = ""
    try:
        for url in check.urls:
            detail = await _get(check, host, port, url, tls)
    except CheckFailed as e:
        return Result(False, str(e))
    return Result(True, detail)
