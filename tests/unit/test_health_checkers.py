"""Every checker against a live and a dead server on 127.0.0.1, and against hostile ones (no
answer, half-open, a huge or garbage HTTP reply, a script that hangs): each ends within its
timeout, a failure, and never holds the others up."""
import asyncio
import datetime
import hashlib
import socket
import ssl
import struct
import time

from lb.director.health import dns, engine, http, misc, tcp, udp
from lb.director.health.spec import Check, Url

T = 0.5     # connect_timeout of these checks


def run(coro):
    return asyncio.run(coro)


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def http_reply(body=b"hello", status=b"200 OK"):
    async def handler(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 " + status + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()
        writer.close()
    return handler


def test_tcp_live_and_dead():
    async def go():
        server, port = await serve(lambda r, w: w.close())
        async with server:
            live = await tcp.probe(Check("TCP_CHECK", connect_timeout=T), "127.0.0.1", port)
        dead = await tcp.probe(Check("TCP_CHECK", connect_timeout=T), "127.0.0.1", free_port())
        return live, dead
    live, dead = run(go())
    assert live.ok and not dead.ok and "refused" in dead.detail


def test_http_status_and_digest():
    digest = hashlib.md5(b"hello").hexdigest()
    async def go(url, status=b"200 OK"):
        server, port = await serve(http_reply(status=status))
        async with server:
            return await http.probe(Check("HTTP_GET", connect_timeout=T, urls=(url,)),
                                    "127.0.0.1", port)
    assert run(go(Url("/", digest=digest))).ok
    assert not run(go(Url("/", digest="0" * 32))).ok
    assert not run(go(Url("/"), status=b"503 Busy")).ok
    assert run(go(Url("/", status_codes=(503,)), status=b"503 Busy")).ok
    dead = run(http.probe(Check("HTTP_GET", connect_timeout=T, urls=(Url("/"),)), "127.0.0.1",
                          free_port()))
    assert not dead.ok


def test_http_hostile_servers_fail_within_the_timeout():
    async def half_open(reader, writer):     # accepts, reads, never answers
        await asyncio.sleep(10)

    async def garbage(reader, writer):
        writer.write(b"\x00\xffSSH-2.0-not-http\r\n\r\n")
        await writer.drain()
        writer.close()

    async def huge_header(reader, writer):
        writer.write(b"HTTP/1.0 200 OK\r\nX: " + b"a" * (http.MAX_HEADER * 2))
        await writer.drain()
        await asyncio.sleep(10)

    async def huge_body(reader, writer):
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n")
        try:
            for _ in range(2000):
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass

    async def go(handler, url=Url("/")):
        server, port = await serve(handler)
        async with server:
            start = time.monotonic()
            result = await http.probe(Check("HTTP_GET", connect_timeout=T, urls=(url,)),
                                      "127.0.0.1", port)
            return result, time.monotonic() - start
    for handler, url in ((half_open, Url("/")), (garbage, Url("/")), (huge_header, Url("/")),
                         (huge_body, Url("/", digest="0" * 32))):
        result, took = run(go(handler, url))
        assert not result.ok and took < 2 * T + 0.5, (handler.__name__, result, took)


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lbd-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    return ctx


def test_ssl_get_live_and_a_plain_server(tmp_path):
    ctx = _self_signed(tmp_path)
    check = Check("SSL_GET", connect_timeout=T, urls=(Url("/"),))

    async def go(tls):
        server = await asyncio.start_server(http_reply(), "127.0.0.1", 0, ssl=tls)
        async with server:
            return await http.probe(check, "127.0.0.1", server.sockets[0].getsockname()[1])
    assert run(go(ctx)).ok
    assert not run(go(None)).ok          # not TLS: the handshake fails


class Udp(asyncio.DatagramProtocol):
    def __init__(self, answer):
        self.answer = answer

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.answer(data)
        for datagram in reply if isinstance(reply, list) else [reply] if reply is not None else []:
            self.transport.sendto(datagram, addr)


async def udp_server(answer):
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Udp(answer), local_addr=("127.0.0.1", 0))
    return transport, transport.get_extra_info("sockname")[1]


def test_udp_check():
    async def go(answer, check):
        transport, port = await udp_server(answer)
        try:
            return await udp.probe(check, "127.0.0.1", port)
        finally:
            transport.close()
    def echo(data):
        return data

    def silent(data):
        return None
    assert run(go(echo, Check("UDP_CHECK", connect_timeout=T, payload=b"hi",
                              require_reply=b"hi"))).ok
    assert not run(go(echo, Check("UDP_CHECK", connect_timeout=T, payload=b"hi",
                                  require_reply=b"other"))).ok
    assert run(go(silent, Check("UDP_CHECK", connect_timeout=T))).ok
    assert not run(go(silent, Check("UDP_CHECK", connect_timeout=T, require_reply=True))).ok
    dead = run(udp.probe(Check("UDP_CHECK", connect_timeout=T), "127.0.0.1",
                         free_port(socket.SOCK_DGRAM)))
    assert not dead.ok and "unreachable" in dead.detail


def test_dns_check():
    def answer(data, rcode=0):
        ident, _ = struct.unpack("!HH", data[:4])
        return struct.pack("!HHHHHH", ident, 0x8180 | rcode, 1, 0, 0, 0) + data[12:]

    async def go(answer):
        transport, port = await udp_server(answer)
        try:
            return await dns.probe(Check("DNS_CHECK", connect_timeout=T, dns_name="example.org",
                                         dns_type="A"), "127.0.0.1", port)
        finally:
            transport.close()
    assert run(go(answer)).ok
    assert not run(go(lambda d: answer(d, rcode=2))).ok            # SERVFAIL
    assert not run(go(lambda d: b"\x00garbage")).ok
    assert not run(go(lambda d: None)).ok                          # no answer
    # an answer to another query (another ID) is skipped, and the wait goes on for ours
    def stray(d):
        return answer(bytes([d[0] ^ 0xFF]) + d[1:])
    assert run(go(lambda d: [stray(d), answer(d)])).ok
    alone = run(go(lambda d: [stray(d)]))
    assert not alone.ok and alone.detail.startswith("no answer within")
    other_question = run(go(lambda d: answer(d[:-1] + bytes([d[-1] ^ 1]))))
    assert not other_question.ok and other_question.detail == "reply with another question"
    assert dns.encode_name(".") == b"\0"
    assert dns.encode_name("a.bc.") == b"\x01a\x02bc\0"


def test_misc_check_exit_codes_and_a_hanging_script(tmp_path):
    def check(script, **kw):
        return Check("MISC_CHECK", misc_path=("/bin/sh", "-c", script), **kw)
    assert run(misc.probe(check("exit 0"), "x", 0)).ok
    assert not run(misc.probe(check("exit 1"), "x", 0)).ok
    assert not run(misc.probe(check("exit 5"), "x", 0)).ok
    dyn = run(misc.probe(check("exit 12", misc_dynamic=True), "x", 0))
    assert dyn.ok and dyn.weight == 10
    assert not run(misc.probe(check("exit 1", misc_dynamic=True), "x", 0)).ok
    start = time.monotonic()
    hung = run(misc.probe(check("sleep 30 & sleep 30", misc_timeout=0.3), "x", 0))
    assert not hung.ok and "killed" in hung.detail and time.monotonic() - start < 2
    assert not run(misc.probe(Check("MISC_CHECK", misc_path=(str(tmp_path / "none"),)),
                              "x", 0)).ok


def test_a_hanging_check_does_not_hold_the_others():
    async def go():
        server, port = await serve(lambda r, w: w.close())
        async with server:
            hang = engine.run_probe(Check("MISC_CHECK", misc_path=("/bin/sleep", "30"),
                                          misc_timeout=1.0), "x", 0, 1.0)
            fast = engine.run_probe(Check("TCP_CHECK", connect_timeout=T), "127.0.0.1", port,
                                    1.0)
            hang_task = asyncio.ensure_future(hang)
            start = time.monotonic()
            result = await fast
            fast_took = time.monotonic() - start
            slow = await hang_task
            return result, fast_took, slow
    result, fast_took, slow = run(go())
    assert result.ok and fast_took < 0.5 and not slow.ok
