"""Test servers run on each real server of the lab.

Both servers report which real server answered and which client address (ip:port) they
saw, so a test can tell the scheduler's choice and the forwarding mode's address
rewriting apart (NAT keeps the client address, FULLNAT replaces it with a local address):

- HTTP (threads): ``GET /`` -> ``rs1 client=198.18.1.2:43210\\n``;
  ``GET /bytes/N`` -> N bytes of :func:`pattern`, streamed in chunks (large transfers).
  The listener keeps each SYN (``TCP_SAVE_SYN``, see :mod:`lb.realserver.toa`); when the SYN carried a
  TOA (FULLNAT, ENAT) the answer adds it: ``rs1 client=198.18.0.3:1025 toa=198.18.1.2:43210``.
- UDP echo: a datagram ``P`` -> ``rs1 client=198.18.1.2:43210 P``.

``python -m lb.lab.servers --name rs1 --http-port 80 --udp-port 5353`` prints ``ready``
on stdout once both sockets listen (the lab waits for that line) and exits cleanly
on SIGTERM or SIGINT.
"""
from __future__ import annotations

import argparse
import hashlib
import http.server
import os
import re
import selectors
import signal
import socket
import sys
import threading

from lb.realserver import toa

# A prime-length block, so the pattern never lines up with MSS, chunk or ring sizes
# and a reordered or duplicated segment shows up as a wrong byte.
_BLOCK_LEN = 65521
_BLOCK = bytes(((i * 31) ^ (i >> 8)) & 0xFF for i in range(_BLOCK_LEN))
CHUNK = 64 * 1024
MAX_BYTES = 1 << 34


def pattern(offset: int, length: int) -> bytes:
    """Bytes [offset, offset+length) of the endless deterministic pattern."""
    out = bytearray()
    while length > 0:
        start = offset % _BLOCK_LEN
        piece = _BLOCK[start:start + length]
        out += piece
        offset += len(piece)
        length -= len(piece)
    return bytes(out)


def pattern_sha256(n: int) -> str:
    """sha256 hex digest of the first n pattern bytes (what GET /bytes/n must return)."""
    h = hashlib.sha256()
    for off in range(0, n, CHUNK):
        h.update(pattern(off, min(CHUNK, n - off)))
    return h.hexdigest()


def answer(name: str, peer: tuple, toa_addr: tuple | None = None) -> str:
    text = f"{name} client={peer[0]}:{peer[1]}"
    return f"{text} toa={toa_addr[0]}:{toa_addr[1]}" if toa_addr else text


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "lb-labserver/1"
    name = "rs"
    toa_addr = None

    def setup(self):
        super().setup()
        # The kernel hands the saved SYN over once: read it when the connection starts.
        self.toa_addr = toa.parse_toa(toa.saved_syn(self.request) or b"")

    def do_GET(self):
        m = re.fullmatch(r"/bytes/(\d+)", self.path)
        if self.path == "/":
            self._send(f"{answer(self.name, self.client_address, self.toa_addr)}\n".encode())
        elif m and int(m.group(1)) <= MAX_BYTES:
            self._stream(int(m.group(1)))
        else:
            self.send_error(404)

    def _send(self, body: bytes):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Real-Server", self.name)
        self.end_headers()
        self.wfile.write(body)

    def _stream(self, n: int):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("X-Real-Server", self.name)
        self.end_headers()
        for off in range(0, n, CHUNK):
            self.wfile.write(pattern(off, min(CHUNK, n - off)))

    def log_message(self, fmt, *args):
        pass  # stdout/stderr stay quiet: the lab does not drain them


class HTTPServer(http.server.ThreadingHTTPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self):
        toa.enable_saved_syn(self.socket)     # before listen(): SYNs from then on are kept
        super().server_bind()


def make_http(name: str, port: int, host: str = "0.0.0.0") -> HTTPServer:
    handler = type("NamedHandler", (Handler,), {"name": name})
    return HTTPServer((host, port), handler)


def make_udp(port: int, host: str = "0.0.0.0") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def udp_echo_once(sock: socket.socket, name: str) -> None:
    """Answer every datagram waiting on sock."""
    while True:
        try:
            data, peer = sock.recvfrom(65535)
        except BlockingIOError:
            return
        try:
            sock.sendto(f"{answer(name, peer)} ".encode() + data, peer)
        except OSError:
            pass  # e.g. no route back: a UDP echo just drops it


def serve(name: str, http_port: int, udp_port: int, host: str = "0.0.0.0") -> int:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    httpd = make_http(name, http_port, host)
    udp = make_udp(udp_port, host)
    web = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    web.start()
    _announce_ready()
    sel = selectors.DefaultSelector()
    sel.register(udp, selectors.EVENT_READ)
    try:
        while not stop.is_set():
            if sel.select(timeout=0.2):
                udp_echo_once(udp, name)
    finally:
        sel.close()
        udp.close()
        httpd.shutdown()
        httpd.server_close()
    return 0


def udp_echo(name: str, host: str, port: int) -> int:
    """The lab servers' UDP echo on one address only (``python -m lb.lab.servers --udp-only``).

    Bound to a VIP it answers from the VIP, as DR and TUN need. (Without --udp-only, --host would
    also start an HTTP server, whose bind does a reverse DNS lookup of the address: 10 s in
    the lab, where no nameserver answers.)
    """
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    sock = make_udp(port, host)
    print("ready", flush=True)
    with sock, selectors.DefaultSelector() as sel:
        sel.register(sock, selectors.EVENT_READ)
        while not stop.is_set():
            if sel.select(timeout=0.2):
                udp_echo_once(sock, name)
    return 0


def _announce_ready() -> None:
    """Tell the parent we listen, then detach stdout so an undrained pipe never blocks us."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lb.lab.servers", description=__doc__.split("\n")[0])
    p.add_argument("--name", required=True, help="name reported in every answer, e.g. rs1")
    p.add_argument("--http-port", type=int, default=80)
    p.add_argument("--udp-port", type=int, default=5353)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--udp-only", action="store_true", help="only the UDP echo (on a VIP: DR, TUN)")
    a = p.parse_args(argv)
    if a.udp_only:
        return udp_echo(a.name, a.host, a.udp_port)
    return serve(a.name, a.http_port, a.udp_port, a.host)


if __name__ == "__main__":
    sys.exit(main())
