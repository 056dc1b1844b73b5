"""Health checks, built into lbd, with keepalived's checkers and semantics (keepalived.conf(5),
its check_*.c and ipwrapper.c): which real servers are alive, the weight they carry, a virtual
server's quorum and its sorry server.

- spec.py: what is configured (a check, a real server, a virtual server), pure data.
- tcp.py, http.py (HTTP_GET, SSL_GET), udp.py, dns.py, misc.py: one checker each, an
  `async probe(check, addr, port) -> Result` bounded in time; every failure is a Result.
- state.py: the pure state machines (retry, alpha, quorum with hysteresis, sorry server).
- overlay.py: the commands that make a configuration match the checks' verdicts (pure).
- engine.py: the asyncio scheduler that runs the probes and feeds the Director.
"""
