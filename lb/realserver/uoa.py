"""UOA (UDP option of address): the client address an ENAT director puts in a UDP datagram.

UDP has no options of its own, so the director (fastpath/uoa.pxi) puts the client in an IPv4
option, DPVS's UOA in its IPv4 form, right after the fixed IP header of the first datagrams
of each connection:

    type 31 (copy flag clear, class 0, number 31), length 8,
    client port (2 bytes), client IPv4 address (4 bytes), network order

The server's kernel skips an option type it does not know on receive (ip_options_compile()),
so the datagram reaches its socket unchanged; the ENAT agent reads the option from its packet
socket (:mod:`lb.realserver.enat_agent`). :func:`uoa_from_ip_options` is pure and never raises.
"""
from __future__ import annotations

UOA_TYPE = 31
UOA_LEN = 8
IPOPT_EOL, IPOPT_NOP = 0, 1


def uoa_from_ip_options(options) -> tuple:
    """Raw IPv4 option bytes (what follows the fixed 20-byte header) -> (client, malformed).

    `client` is (4-byte address, port) or None. Walks the options as RFC 791 lays them out
    (and ip_options_compile() reads them): EOL ends them, NOP is one byte, every other option
    has a length byte of at least 2 that must fit. `malformed` is True when the walk breaks
    (a length that does not fit, an option cut short) or a type-31 option is not 8 bytes long:
    such a packet teaches nothing (the kernel drops a packet whose options do not parse).
    """
    opts = bytes(options)
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == IPOPT_EOL:
            return None, False
        if kind == IPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n or opts[i + 1] < 2 or i + opts[i + 1] > n:
            return None, True
        length = opts[i + 1]
        if kind == UOA_TYPE:
            if length != UOA_LEN:
                return None, True
            return (opts[i + 4:i + 8], opts[i + 2] << 8 | opts[i + 3]), False
        i += length
    return None, False
