"""keepalived.conf, read as lbd's configuration: `virtual_server` blocks become the table (the
same commands `lbadm` sends) and their checkers the health checks (lb.director.health.spec).

Pure: a text in, (commands, their line numbers, a HealthConfig) out, or KeepalivedError naming
the file and line of the first thing lbd cannot do; nothing is half-read. Follows
keepalived.conf(5): `!` and `#` start comments, words are separated by blanks, a quoted string
is one word, `{ ... }` opens a block; `include GLOB` reads other files in place.

What lbd maps: virtual_server IP PORT, virtual_server fwmark N (with `lbd_match`, below),
virtual_server group NAME and virtual_server_group; lvs_sched (lb_algo), lvs_method (lb_kind)
NAT/DR/TUN/FULLNAT (FNAT), persistence_timeout, persistence_granularity, protocol TCP/UDP, ops,
laddr_group_name with local_address_group (keepalived's FULLNAT forks), delay_loop, alpha,
omega, quorum, hysteresis, quorum_up, quorum_down, sorry_server, inhibit_on_failure,
virtualhost; real_server IP PORT with weight, uthreshold, lthreshold, inhibit_on_failure,
notify_up, notify_down and the checkers TCP_CHECK, HTTP_GET, SSL_GET, UDP_CHECK, DNS_CHECK,
MISC_CHECK. Blocks of keepalived's other parts (global_defs, vrrp_*, static_*...) are left
to keepalived: lbd ignores them, so one file can serve both. Anything else inside a
virtual_server is refused with its line.

lbd extension: `lbd_match tcp:VIP:PORT ...` in a `virtual_server fwmark N` block names the
keys that carry the mark (lbd sees no iptables marks: ipvsadm -f --match).
"""
from __future__ import annotations

import glob
import ipaddress
import os
import shlex

from lb.director.health.dns import TYPES as DNS_TYPES
from lb.director.health.spec import KINDS, Check, HealthConfig, Server, Url, VirtualServer
from lb.director.model import FWM
from lb.director.rules import RulesError

METHODS = {"NAT": "masq", "DR": "route", "TUN": "tunnel", "FULLNAT": "fullnat", "FNAT": "fullnat"}
IGNORED_TOP = {"global_defs", "vrrp_script", "vrrp_instance", "vrrp_sync_group", "static_ipaddress",
               "static_routes", "static_rules", "linkbeat_use_polling", "net_namespace",
               "vrrp_track_file", "track_file", "garp_group", "bfd_instance", "use_pid_dir"}
GROUP_MARK_BASE = 0x4C420000      # the mark lbd gives a virtual_server_group (any unused one)
MAX_INCLUDE_DEPTH = 8


class KeepalivedError(RulesError):
    """What lbd cannot do; the message starts with FILE: line N."""


class Node:
    """One statement: its keyword, its words, where it is, and its block (None: no block)."""

    def __init__(self, words, where):
        self.keyword, self.args, self.where = words[0], words[1:], where
        self.children: list[Node] | None = None

    def fail(self, message: str):
        raise KeepalivedError(f"{self.where}: {message}")


# --- reading: words, blocks, includes ----------------------------------------------------

def _words(line: str, where: str) -> list:
    lex = shlex.shlex(line, posix=True, punctuation_chars="{}")
    lex.whitespace_split = True
    lex.commenters = "!#"
    try:
        return list(lex)
    except ValueError as e:
        raise KeepalivedError(f"{where}: {e}") from None


def _lines(text: str, source: str, read, depth: int):
    for number, line in enumerate(text.splitlines(), start=1):
        where = f"{source}: line {number}"
        words = _words(line, where)
        if words[:1] == ["include"]:
            if depth >= MAX_INCLUDE_DEPTH:
                raise KeepalivedError(f"{where}: includes nested deeper than {MAX_INCLUDE_DEPTH}")
            if len(words) != 2:
                raise KeepalivedError(f"{where}: include takes one file name (or pattern)")
            for name, sub in read(words[1], source):
                yield from _lines(sub, name, read, depth + 1)
            continue
        yield words, where


def _tree(text: str, source: str, read) -> list:
    root: list = []
    stack = [root]
    last = None
    for words, where in _lines(text, source, read, 0):
        while words:
            if words[0] == "{":
                if last is None or last.children is not None:
                    raise KeepalivedError(f"{where}: '{{' without a keyword before it")
                last.children = []
                stack.append(last.children)
                words = words[1:]
                last = None
            elif words[0] == "}":
                if len(stack) == 1:
                    raise KeepalivedError(f"{where}: '}}' without a block to close")
                stack.pop()
                words = words[1:]
                last = None
            else:
                cut = next((i for i, w in enumerate(words) if w in "{}"), len(words))
                last = Node(words[:cut], where)
                stack[-1].append(last)
                words = words[cut:]
    if len(stack) > 1:
        raise KeepalivedError(f"{source}: a block is not closed at the end of the file")
    return root


def _file_reader(base_dir: str):
    def read(pattern: str, including: str):
        here = os.path.dirname(including) if os.path.isabs(including) else base_dir
        path = pattern if os.path.isabs(pattern) else os.path.join(here, pattern)
        out = []
        for name in sorted(glob.glob(path)):
            try:
                with open(name, encoding="utf-8") as f:
                    out.append((name, f.read()))
            except (OSError, UnicodeDecodeError) as e:
                raise KeepalivedError(f"{including}: cannot read {name}: "
                                      f"{getattr(e, 'strerror', None) or e}") from None
        return out
    return read


# --- values ------------------------------------------------------------------------------

def _one(node: Node) -> str:
    if len(node.args) != 1:
        node.fail(f"{node.keyword} takes one value")
    return node.args[0]


def _ranged(node: Node, convert, what: str, low, high, unit: str = ""):
    """The node's one value as convert (int or float) reads it, within low..high."""
    text = _one(node)
    try:
        value = convert(text)
    except ValueError:
        node.fail(f"{node.keyword} {text!r}: not {what}")
    if not low <= value <= high:
        show = (lambda v: f"{v:g}") if convert is float else str
        node.fail(f"{node.keyword} {show(value)}: must be {show(low)}..{show(high)}{unit}")
    return value


def _int(node: Node, low: int, high: int) -> int:
    return _ranged(node, int, "an integer", low, high)


def _seconds(node: Node, low: float = 0.0, high: float = 86400.0) -> float:
    return _ranged(node, float, "a number of seconds", float(low), float(high), " seconds")


def _ipv4(node: Node, text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        node.fail(f"{text!r} is not an IPv4 address (lbd is IPv4 only)")


def _port(node: Node, text: str, low: int = 1) -> int:
    if not text.isdigit() or not low <= int(text) <= 65535:
        node.fail(f"{text!r} is not a port {low}..65535")
    return int(text)


def _flag(node: Node) -> bool:
    if node.args:
        node.fail(f"{node.keyword} takes no value")
    return True


def _script(node: Node) -> tuple:
    if not node.args:
        node.fail(f"{node.keyword} needs a script")
    words = node.args if len(node.args) > 1 else shlex.split(node.args[0])
    if not words:
        node.fail(f"{node.keyword} needs a script")
    return tuple(words)


def _hex(node: Node, text: str) -> bytes:
    try:
        return bytes.fromhex(text)
    except ValueError:
        node.fail(f"{text!r} is not hexadecimal bytes")


def _no_block(node: Node) -> None:
    if node.children is not None:
        node.fail(f"{node.keyword} takes no block")


def _unknown_block(node: Node, where: str) -> None:
    # A block under a keyword lbd does not know: say that, rather than "takes no block".
    if node.children is not None:
        node.fail(f"{node.keyword} is not supported in {where}")


def _block(node: Node) -> list:
    if node.children is None:
        node.fail(f"{node.keyword} needs a block {{ ... }}")
    return node.children


# --- checkers ----------------------------------------------------------------------------

def _status_codes(node: Node) -> tuple:
    codes = []
    for word in node.args or [""]:
        low, _, high = word.partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            node.fail(f"status_code {word!r}: expected a code or a range such as 200-299")
        first, last = int(low), int(high or low)
        if not 100 <= first <= last <= 999:
            node.fail(f"status_code {word!r}: codes are 100..999")
        codes += range(first, last + 1)
    return tuple(codes)


def _url(node: Node, virtualhost) -> Url:
    path, digest, codes = None, None, ()
    for n in _block(node):
        _unknown_block(n, "url")
        if n.keyword == "path":
            path = _one(n)
        elif n.keyword == "digest":
            digest = _one(n).lower()
            if len(digest) != 32 or any(c not in "0123456789abcdef" for c in digest):
                n.fail("digest must be an MD5 digest, 32 hexadecimal digits (genhash's)")
        elif n.keyword == "status_code":
            codes = _status_codes(n)
        elif n.keyword == "virtualhost":
            virtualhost = _one(n)
        else:
            n.fail(f"{n.keyword} is not supported in url")
    if path is None:
        node.fail("url needs a path")
    return Url(path, digest, codes, virtualhost)


def _check(node: Node, vs_defaults: dict) -> Check:
    kind = node.keyword
    fields: dict = {"kind": kind}
    urls = []
    for n in _block(node):
        k = n.keyword
        if k == "url" and kind in ("HTTP_GET", "SSL_GET"):
            urls.append(_url(n, vs_defaults.get("virtualhost")))
            continue
        _unknown_block(n, kind)
        if k == "connect_ip":
            fields["connect_ip"] = _ipv4(n, _one(n))
        elif k == "connect_port":
            fields["connect_port"] = _port(n, _one(n))
        elif k == "bindto":
            fields["bindto"] = _ipv4(n, _one(n))
        elif k == "connect_timeout":
            fields["connect_timeout"] = _seconds(n, 0.01, 3600)
        elif k in ("retry", "nb_get_retry"):
            fields["retry"] = _int(n, 0, 1000)
        elif k == "delay_before_retry":
            fields["delay_before_retry"] = _seconds(n, 0.01, 3600)
        elif k == "warmup":
            fields["warmup"] = _seconds(n)
        elif k == "delay_loop":
            fields["delay_loop"] = _seconds(n, 0.05, 86400)
        elif k == "payload" and kind == "UDP_CHECK":
            fields["payload"] = _hex(n, _one(n))
        elif k == "require_reply" and kind == "UDP_CHECK":
            fields["require_reply"] = _hex(n, _one(n)) if n.args else True
        elif k == "name" and kind == "DNS_CHECK":
            fields["dns_name"] = _one(n)
        elif k == "type" and kind == "DNS_CHECK":
            qtype = _one(n).upper()
            if qtype not in DNS_TYPES:
                n.fail(f"DNS type {qtype!r} is not one of {', '.join(DNS_TYPES)}")
            fields["dns_type"] = qtype
        elif k == "misc_path" and kind == "MISC_CHECK":
            fields["misc_path"] = _script(n)
        elif k == "misc_timeout" and kind == "MISC_CHECK":
            fields["misc_timeout"] = _seconds(n, 0.01, 3600)
        elif k == "misc_dynamic" and kind == "MISC_CHECK":
            fields["misc_dynamic"] = _flag(n)
        elif k == "virtualhost" and kind in ("HTTP_GET", "SSL_GET"):
            vs_defaults = {**vs_defaults, "virtualhost": _one(n)}
        else:
            n.fail(f"{k} is not supported in {kind}")
    if kind in ("HTTP_GET", "SSL_GET"):
        if not urls:
            node.fail(f"{kind} needs at least one url {{ path ... }}")
        fields["urls"] = tuple(urls)
    if kind == "MISC_CHECK" and not fields.get("misc_path"):
        node.fail("MISC_CHECK needs a misc_path")
    return Check(**fields)


# --- servers and virtual servers ---------------------------------------------------------

def _real_server(node: Node, vs: dict) -> Server:
    if len(node.args) not in (1, 2):
        node.fail("real_server takes an address and a port")
    addr = _ipv4(node, node.args[0])
    port = _port(node, node.args[1], low=0) if len(node.args) == 2 else vs["port"]
    fields = {"addr": addr, "port": port, "fwd": vs["fwd"], "alpha": vs["alpha"],
              "inhibit_on_failure": vs["inhibit"]}
    checks = []
    for n in node.children or []:
        k = n.keyword
        if k in KINDS:
            checks.append(_check(n, vs))
            continue
        _unknown_block(n, "real_server")
        if k == "weight":
            fields["weight"] = _int(n, 0, 65535)
        elif k == "uthreshold":
            fields["u_threshold"] = _int(n, 0, 2**31 - 1)
        elif k == "lthreshold":
            fields["l_threshold"] = _int(n, 0, 2**31 - 1)
        elif k == "inhibit_on_failure":
            fields["inhibit_on_failure"] = _flag(n)
        elif k == "alpha":
            fields["alpha"] = _flag(n)
        elif k in ("notify_up", "notify_down"):
            fields[k] = _script(n)
        elif k in ("lvs_method", "lb_kind"):
            fields["fwd"] = _method(n)
        else:
            n.fail(f"{k} is not supported in real_server")
    return Server(checks=tuple(checks), **fields)


def _method(node: Node) -> str:
    name = _one(node).upper()
    if name not in METHODS:
        node.fail(f"lvs_method {name}: lbd does {', '.join(METHODS)}")
    return METHODS[name]


def _keys(node: Node, groups: dict) -> tuple:
    """(service fields of its add_service, [(proto placeholder, VIP, port)] of a group)."""
    args = node.args
    if len(args) == 2 and args[0] == "fwmark":
        return {"fwmark": _int(Node(["fwmark", args[1]], node.where), 1, 2**32 - 1)}, None
    if len(args) == 2 and args[0] == "group":
        if args[1] not in groups:
            node.fail(f"no virtual_server_group {args[1]!r} (define it before its use)")
        return None, groups[args[1]]
    if len(args) == 2:
        return {"vip": _ipv4(node, args[0]), "port": _port(node, args[1])}, None
    node.fail("virtual_server takes IP PORT, fwmark N or group NAME")


def _group(node: Node) -> list:
    """virtual_server_group NAME { IP PORT; IP-LAST PORT ... }: [(VIP, port)]."""
    out = []
    for n in _block(node):
        _no_block(n)
        if n.keyword == "fwmark":
            n.fail("fwmark entries of a virtual_server_group are not supported")
        if len(n.args) != 1:
            n.fail("a virtual_server_group entry is IP PORT (or IP-LAST PORT)")
        first, _, last = n.keyword.partition("-")
        start = ipaddress.IPv4Address(_ipv4(n, first))
        end = int(last) if last else int(start) & 0xFF
        if last and not (last.isdigit() and int(start) & 0xFF <= end <= 255):
            n.fail(f"range {n.keyword}: the last byte must follow the first address's")
        base = int(start) & ~0xFF
        for byte in range(int(start) & 0xFF, end + 1):
            out.append((str(ipaddress.IPv4Address(base + byte)), _port(n, n.args[0])))
    if not out:
        node.fail("an empty virtual_server_group")
    return out


def _virtual_server(node: Node, groups: dict, laddr_groups: dict, index: int):
    """(commands [(cmd, line)], VirtualServer)."""
    key_fields, group = _keys(node, groups)
    vs = {"fwd": "masq", "alpha": False, "inhibit": False, "port": 0, "virtualhost": None}
    opts = {"scheduler": None, "persistent": 0, "netmask": None, "proto": "tcp",
            "onepacket": False, "match": None, "laddrs": None}
    health: dict = {}
    servers, sorry = [], None
    children = _block(node)
    for n in children:           # first the options a real server inherits
        if n.keyword in ("lvs_method", "lb_kind"):
            _no_block(n)
            vs["fwd"] = _method(n)
        elif n.keyword in ("alpha", "inhibit_on_failure"):
            _no_block(n)
            vs["alpha" if n.keyword == "alpha" else "inhibit"] = _flag(n)
        elif n.keyword == "virtualhost":
            vs["virtualhost"] = _one(n)
    if key_fields and "port" in key_fields:
        vs["port"] = key_fields["port"]
    elif group:
        vs["port"] = group[0][1] if len({p for _, p in group}) == 1 else 0
    for n in children:
        k = n.keyword
        if k == "real_server":
            servers.append((_real_server(n, vs), n))
            continue
        _unknown_block(n, "virtual_server")
        if k in ("lvs_method", "lb_kind", "alpha", "inhibit_on_failure", "virtualhost"):
            continue
        if k in ("lvs_sched", "lb_algo"):
            opts["scheduler"] = _one(n)
        elif k == "persistence_timeout":
            opts["persistent"] = _int(n, 1, 86400 * 31)
        elif k == "persistence_granularity":
            opts["netmask"] = _one(n)
        elif k == "protocol":
            proto = _one(n).upper()
            if proto not in ("TCP", "UDP"):
                n.fail(f"protocol {proto}: lbd forwards TCP and UDP only")
            opts["proto"] = proto.lower()
        elif k == "ops":
            opts["onepacket"] = _flag(n)
        elif k == "delay_loop":
            health["delay_loop"] = _seconds(n, 0.05, 86400)
        elif k == "omega":
            health["omega"] = _flag(n)
        elif k == "quorum":
            health["quorum"] = _int(n, 0, 2**31 - 1)
        elif k == "hysteresis":
            health["hysteresis"] = _int(n, 0, 2**31 - 1)
        elif k in ("quorum_up", "quorum_down"):
            health[k] = _script(n)
        elif k == "sorry_server":
            if len(n.args) != 2:
                n.fail("sorry_server takes an address and a port")
            sorry = (_ipv4(n, n.args[0]), _port(n, n.args[1], low=0), n)
        elif k == "lbd_match" and key_fields and "fwmark" in key_fields:
            opts["match"] = [_match_key(n, w) for w in n.args] or n.fail("lbd_match needs keys")
        elif k == "laddr_group_name":
            name = _one(n)
            if name not in laddr_groups:
                n.fail(f"no local_address_group {name!r} (define it before its use)")
            opts["laddrs"] = laddr_groups[name]
        else:
            n.fail(f"{k} is not supported in virtual_server")
    line = _line(node)
    if group is not None:
        if len(group) == 1:
            key_fields = {"vip": group[0][0], "port": group[0][1]}
        else:           # several keys: one service answering on all of them (ipvsadm -f)
            key_fields = {"fwmark": GROUP_MARK_BASE + index}
            opts["match"] = [[opts["proto"], vip, port] for vip, port in group]
    if "fwmark" in key_fields and opts["match"] is None:
        node.fail("virtual_server fwmark: lbd sees no iptables marks; name the keys that carry "
                  "the mark with `lbd_match tcp:VIP:PORT ...` in the block")
    if "fwmark" in key_fields:
        svc = {"fwmark": key_fields["fwmark"]}
        key = (FWM, key_fields["fwmark"])
    else:
        svc = {"proto": opts["proto"], "vip": key_fields["vip"], "port": key_fields["port"]}
        key = (opts["proto"], key_fields["vip"], key_fields["port"])
    add = {"op": "add_service", **svc, "scheduler": opts["scheduler"] or "wlc"}
    if opts["persistent"]:
        add["persistent"] = opts["persistent"]
        if opts["netmask"]:
            add["netmask"] = opts["netmask"]
    elif opts["netmask"]:
        node.fail("persistence_granularity needs persistence_timeout")
    if opts["onepacket"]:
        add["onepacket"] = True
    if opts["match"] is not None:
        add["match"] = opts["match"]
    commands = [(add, line)]
    for laddr in opts["laddrs"] or []:
        commands.append(({"op": "add_laddr", **svc, "laddr": laddr}, line))
    seen = set()
    for server, n in servers:
        if server.key in seen:
            n.fail(f"real_server {server.addr}:{server.port} twice in this virtual_server")
        seen.add(server.key)
        commands.append(({"op": "add_server", **svc, "rip": server.addr, "rport": server.port,
                          "fwd": server.fwd, "weight": server.weight,
                          "u_threshold": server.u_threshold, "l_threshold": server.l_threshold},
                         _line(n)))
    sorry_server = None
    if sorry is not None:
        addr, port, n = sorry
        if (addr, port or vs["port"]) in seen:
            n.fail("the sorry_server is also a real_server of this virtual_server")
        sorry_server = Server(addr, port or vs["port"], weight=1, fwd=vs["fwd"])
        if vs["fwd"] in ("route", "tunnel") and sorry_server.port != vs["port"]:
            n.fail(f"a DR or TUN sorry_server must listen on the virtual port {vs['port']}")
    spec = VirtualServer(key, tuple(s for s, _ in servers), sorry_server=sorry_server,
                         line=line, **health)
    return commands, spec


def _match_key(node: Node, word: str) -> list:
    proto, _, rest = word.partition(":")
    vip, _, port = rest.rpartition(":")
    if proto not in ("tcp", "udp"):
        node.fail(f"lbd_match {word!r}: expected tcp:VIP:PORT or udp:VIP:PORT")
    return [proto, _ipv4(node, vip), _port(node, port)]


def _line(node: Node) -> int:
    return int(node.where.rsplit("line ", 1)[1])


def _laddr_group(node: Node) -> list:
    out = []
    for n in _block(node):
        _no_block(n)
        if n.args:
            n.fail("a local_address_group entry is one address")
        out.append(_ipv4(n, n.keyword))
    return out


# --- the whole file ----------------------------------------------------------------------

def parse(text: str, source: str = "keepalived.conf", read=None) -> dict:
    """The batch command (as lb.director.rules.read makes) that replaces lbd's configuration
    with the file's, its checks in "health". `read(pattern, including_file)` -> [(name, text)]
    resolves includes (default: the file system, relative to the including file)."""
    read = read or _file_reader(os.path.dirname(os.path.abspath(source)))
    groups: dict = {}
    laddr_groups: dict = {}
    commands, lines, services = [], [], {}
    for node in _tree(text, source, read):
        k = node.keyword
        if k in IGNORED_TOP:
            continue                 # keepalived's VRRP and globals: keepalived's job
        if k == "virtual_server_group":
            if len(node.args) != 1:
                node.fail("virtual_server_group takes a name")
            groups[node.args[0]] = _group(node)
        elif k == "local_address_group":
            if len(node.args) != 1:
                node.fail("local_address_group takes a name")
            laddr_groups[node.args[0]] = _laddr_group(node)
        elif k == "virtual_server":
            cmds, spec = _virtual_server(node, groups, laddr_groups, len(services))
            if spec.key in services:
                node.fail("this virtual_server is configured twice")
            services[spec.key] = spec
            commands += [c for c, _ in cmds]
            lines += [n for _, n in cmds]
        else:
            node.fail(f"{k} is not something lbd reads from keepalived.conf")
    return {"op": "batch", "replace": True, "commands": commands, "lines": lines,
            "source": source, "health": HealthConfig(services)}


def read(path: str) -> dict:
    """lbd --keepalived-conf FILE: the file parsed (KeepalivedError names what is wrong)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise KeepalivedError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    return parse(text, path)
