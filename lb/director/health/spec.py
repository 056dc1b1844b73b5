"""What the health checks are configured with: pure data, as keepalived.conf(5) names it.

Defaults are lbd's, not keepalived's: a real server that stops answering must get no new
connection within 3 s (keepalived's delay_loop 60 s and connect_timeout 5 s would take
over a minute). With delay_loop 1 s, connect_timeout 1 s and retry 0, a server that refuses
connections is out within about 1 s and one that stops answering within about 2 s.
"""
from __future__ import annotations

from dataclasses import dataclass, field

DELAY_LOOP = 1.0            # seconds between two checks of a server
CONNECT_TIMEOUT = 1.0       # seconds a check may take to connect (and each read after)
RETRY = 0                   # failures after the first before a server is down
DELAY_BEFORE_RETRY = 1.0    # seconds between a failure and its retry
QUORUM = 1                  # keepalived: minimum total weight of alive servers
NOTIFY_TIMEOUT = 10.0       # a notify script that runs longer is killed
KINDS = ("TCP_CHECK", "HTTP_GET", "SSL_GET", "UDP_CHECK", "DNS_CHECK", "MISC_CHECK")


@dataclass(frozen=True)
class Url:
    """HTTP_GET/SSL_GET `url {}`: a path, and what the answer must be."""
    path: str = "/"
    digest: str | None = None        # MD5 of the body, lower-case hex (keepalived's genhash)
    status_codes: tuple = ()         # accepted codes; () = any 2xx (keepalived's default)
    virtualhost: str | None = None


@dataclass(frozen=True)
class Check:
    """One checker of one real server (keepalived: TCP_CHECK { ... } inside real_server)."""
    kind: str
    connect_ip: str | None = None    # None: the real server's address
    connect_port: int | None = None  # None: the real server's port
    bindto: str | None = None        # source address (None: the kernel picks, in lbd's netns)
    connect_timeout: float = CONNECT_TIMEOUT
    retry: int = RETRY
    delay_before_retry: float = DELAY_BEFORE_RETRY
    warmup: float = 0.0              # first check after a random delay up to this
    delay_loop: float | None = None  # None: the virtual server's
    urls: tuple = ()                 # HTTP_GET/SSL_GET: Url, at least one
    payload: bytes = b""             # UDP_CHECK: what is sent
    require_reply: bytes | bool = False   # UDP_CHECK: a reply (this one, if bytes) is needed
    dns_name: str = "."              # DNS_CHECK: the name asked for
    dns_type: str = "SOA"            # DNS_CHECK: the type asked for
    misc_path: tuple = ()            # MISC_CHECK: the command, as argv
    misc_timeout: float | None = None     # None: the delay loop
    misc_dynamic: bool = False       # exit 2..255 sets the weight to exit-2


@dataclass(frozen=True)
class Server:
    """A real server as keepalived configures it, and what lbd puts in the table for it."""
    addr: str
    port: int
    weight: int = 1
    fwd: str = "masq"
    u_threshold: int = 0
    l_threshold: int = 0
    checks: tuple = ()
    inhibit_on_failure: bool = False  # weight 0 instead of removal
    alpha: bool = False              # start as failed
    notify_up: tuple = ()            # argv
    notify_down: tuple = ()

    @property
    def key(self) -> tuple:
        return self.addr, self.port


@dataclass(frozen=True)
class VirtualServer:
    """One service's health configuration: its key is the Director's service key."""
    key: tuple
    servers: tuple = ()
    delay_loop: float = DELAY_LOOP
    quorum: int = QUORUM
    hysteresis: int = 0
    quorum_up: tuple = ()
    quorum_down: tuple = ()
    sorry_server: Server | None = None
    omega: bool = False              # run the down notifiers when lbd stops
    line: int = 0                    # where it was configured (for messages)


@dataclass(frozen=True)
class HealthConfig:
    """Every virtual server with health configuration, by service key."""
    services: dict = field(default_factory=dict)

    def checked(self, svc_key, addr: str, port: int) -> bool:
        vs = self.services.get(svc_key)
        return vs is not None and any(s.key == (addr, port) for s in vs.servers)
