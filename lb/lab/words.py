"""The words of ``lb explain``, ``lb trace`` and ``lb break``, in English and Chinese.

Facts live in the code (lb/modes/*.py: ``rs_needs``, ``rewrites_in``, ``same_segment``...);
this module only says them. Every code a mode class names has an entry in NEEDS, which
tests/unit/test_explain.py checks. ``say(table, key, lang)`` falls back to English.
"""
from __future__ import annotations

LANGS = ("en", "zh")


def say(table: dict, key: str, lang: str = "en", **fmt):
    entry = table[key]
    text = entry.get(lang) or entry["en"]
    if isinstance(text, tuple):
        return tuple(t.format(**fmt) if fmt else t for t in text)
    return text.format(**fmt) if fmt else text


TITLES = {
    "nat": {"en": "NAT: network address translation", "zh": "NAT：网络地址转换"},
    "dr": {"en": "DR: direct routing", "zh": "DR：直接路由"},
    "tun": {"en": "TUN: IP tunnelling (IP in IP)", "zh": "TUN：IP 隧道（IPIP 封装）"},
    "fullnat": {"en": "FULLNAT: both addresses translated", "zh": "FULLNAT：源地址和目的地址都转换"},
    "enat": {"en": "ENAT: enhanced NAT, the \"triangle\"", "zh": "ENAT：增强 NAT（“三角”模式）"},
}

# One line per requirement code (the short form), then a paragraph on why.
NEEDS = {
    "gateway_director": {
        "en": ("its route to the clients (usually the default gateway) is the director",
               "The director turned VIP:vport into RIP:rport on the way in; only the director can turn "
               "RIP:rport back into VIP:vport on the way out. So every reply must pass through it: the "
               "real server's default gateway, or at least its route to the clients, is the director. "
               "A reply that takes another way leaves with the RIP as its source, and the client, which "
               "is talking to the VIP, has no socket for it: its kernel answers with a RST."),
        "zh": ("它到客户端的路由（通常就是默认网关）指向调度器",
               "进来时调度器把 VIP:vport 改成了 RIP:rport，出去时也只有调度器能把 RIP:rport 改回 "
               "VIP:vport。所以每个回包都必须经过调度器：真实服务器的默认网关（至少是去往客户端的路由）"
               "要指向调度器。回包若走了别的路，源地址仍是 RIP，而客户端连的是 VIP，找不到对应的 "
               "socket，内核就回一个 RST。")},
    "client_off_subnet": {
        "en": ("the clients are not on the real servers' subnet",
               "A host on the servers' own subnet is reached directly, by its MAC, without any gateway. "
               "If the client sits there, the server's reply goes straight to it, skips the director and "
               "keeps the RIP as its source: the same failure as a wrong gateway."),
        "zh": ("客户端不在真实服务器所在的子网里",
               "同一子网内的主机是直接按 MAC 二层可达的，不经过网关。客户端若在这个子网里，真实服务器的回包"
               "会直接发给它，绕过调度器，源地址还是 RIP：和网关配错是同一种故障。")},
    "vip_on_lo": {
        "en": ("the VIP as one of its own addresses, on a device that does not announce it (lo, or the tunnel)",
               "The director leaves the destination address alone, so the packet still says VIP when it "
               "arrives; a server accepts it only if the VIP is one of its own addresses. It also makes "
               "the server answer from the VIP, the address the client called. The VIP goes on lo "
               "(scope host) in DR and on the tunnel device in TUN, where no ARP request can reach it."),
        "zh": ("把 VIP 配成自己的地址，放在不会对外宣告它的设备上（lo，或隧道设备）",
               "调度器不改目的地址，包到达时目的地址仍是 VIP；只有 VIP 是本机地址时服务器才会收下。"
               "这样服务器回包时源地址也是 VIP，正是客户端访问的地址。DR 把 VIP 配在 lo 上（scope host），"
               "TUN 配在隧道设备上，ARP 请求都到不了那里。")},
    "arp_rules": {
        "en": ("arp_ignore=1 and arp_announce=2, so it never claims the VIP in ARP",
               "When several hosts on one segment hold the VIP, each of them would answer \"who has VIP?\", "
               "and the router would send clients to whichever answer it believed: traffic bypasses the "
               "director. arp_ignore=1 answers only for addresses configured on the interface the request "
               "came in on; the VIP is on lo, so eth0 stays silent. arp_announce=2 makes the server's own "
               "ARP requests use the best address of the outgoing interface as sender, never the VIP; "
               "with 0 a request sent for a reply from the VIP carries the VIP, and every neighbour that "
               "hears it learns \"VIP is at this server's MAC\". The kernel applies the larger of the "
               "\"all\" and the interface's value, so both are set."),
        "zh": ("arp_ignore=1 且 arp_announce=2，绝不在 ARP 中认领 VIP",
               "同一网段里有多台主机都配了 VIP，“谁是 VIP？”的 ARP 请求它们都会回答，路由器信了谁的回答，"
               "客户端的流量就发给谁：调度器被绕过。arp_ignore=1：只回答配置在收到请求的那个接口上的地址；"
               "VIP 在 lo 上，所以 eth0 不出声。arp_announce=2：服务器自己发 ARP 请求时，用出接口上最合适的"
               "地址作发送方，绝不用 VIP；若为 0，为从 VIP 发出的回包所发的请求会带上 VIP，听到的邻居都会记下"
               "“VIP 在这台服务器的 MAC 上”。内核取 all 与接口两者中较大的值，所以两处都要设。")},
    "own_gateway": {
        "en": ("its own route to the clients, which lets packets from the VIP out",
               "The replies go from the server straight to the client, never through the director, so the "
               "server needs a route to the clients of its own (in the lab: a policy rule \"from VIP\" to "
               "the router), and nothing on that path may drop packets whose source is the VIP."),
        "zh": ("自己去往客户端的路由，并允许源地址为 VIP 的包出去",
               "回包从服务器直接发往客户端，不经过调度器，所以服务器要有自己到客户端的路由（实验环境里是一条"
               "“from VIP”策略路由指向路由器），这条路径上也不能有设备丢弃源地址为 VIP 的包。")},
    "same_port": {
        "en": ("to listen on the virtual port itself (no port mapping)",
               "Nothing on the way rewrites the ports (DR, TUN), or the agent restores the virtual port from "
               "the server's own (ENAT), so the server listens on the virtual port: lbadm refuses a real "
               "server port that differs."),
        "zh": ("直接监听虚拟端口（不能做端口映射）",
               "路上没有任何环节改写端口（DR、TUN），或由代理按服务器端口还原虚拟端口（ENAT），所以服务器必须"
               "监听虚拟端口：lbadm 会拒绝不同的真实服务器端口。")},
    "ipip_decap": {
        "en": ("a tunnel endpoint that unwraps IP-in-IP (protocol 4)",
               "The director wraps the client's packet in a new IPv4 header DIP -> RIP (protocol 4), which "
               "any router can carry, so the server may be anywhere routable. The server must unwrap it: "
               "the kernel's ipip device (tunl0), or on this machine, which has no ipip module, the "
               "userspace decapsulator lb.realserver.decap. The extra 20 bytes are the price."),
        "zh": ("能解开 IP-in-IP（协议号 4）的隧道端点",
               "调度器给客户端的包再套一层 IPv4 头 DIP -> RIP（协议号 4），任何路由器都能转发，所以服务器可以"
               "在任何路由可达的地方。服务器必须解封装：用内核的 ipip 设备（tunl0），在这台没有 ipip 模块的"
               "机器上则用用户态解封装程序 lb.realserver.decap。代价是多出 20 字节。")},
    "rp_filter_off": {
        "en": ("no strict reverse-path filter (rp_filter 0 or 2)",
               "The unwrapped packet appears on the tunnel device with the client's address as source, but "
               "the route back to the client leaves by eth0. A strict reverse-path filter (rp_filter=1) "
               "calls that spoofing and drops it silently; the server never answers. Off (0) or loose (2) "
               "lets it in."),
        "zh": ("不用严格的反向路径过滤（rp_filter 设为 0 或 2）",
               "解封装后的包出现在隧道设备上，源地址是客户端，可回到客户端的路由却走 eth0。严格的反向路径过滤"
               "（rp_filter=1）认为这是伪造源地址，悄悄丢弃；服务器永远不会应答。设为 0（关闭）或 2（宽松）即可。")},
    "toa_reader": {
        "en": ("something that reads the client's address from the TOA option, if the application needs it",
               "The server's socket sees the director's side of the connection as its peer (a local address "
               "in FULLNAT, the VIP in ENAT). The director puts the real client in a TCP option on the SYN "
               "(TOA: kind 254, length 8, port and IPv4 address); an application that logs or filters by "
               "client must read it: Alibaba's toa.ko patches getpeername(), and here TCP_SAVE_SYN keeps "
               "the SYN so lb.realserver.toa reads the option without a kernel module. UDP has no options: "
               "a UDP server sees only the director's address."),
        "zh": ("需要客户端地址时，要有从 TOA 选项读取它的组件",
               "服务器 socket 看到的对端是调度器一侧的地址（FULLNAT 是本地地址 LIP，ENAT 是 VIP）。调度器把真实"
               "客户端地址放进 SYN 的一个 TCP 选项里（TOA：kind 254，长度 8，端口加 IPv4 地址）；要按客户端记录"
               "或过滤的应用必须读它：阿里的 toa.ko 改写 getpeername()，这里用 TCP_SAVE_SYN 保留 SYN，"
               "lb.realserver.toa 无需内核模块就能读出。UDP 没有选项：UDP 服务只能看到调度器的地址。")},
    "enat_agent": {
        "en": ("the ENAT agent, which turns its replies into VIP -> client itself",
               "The director rewrites only the requests (CIP:cport -> VIP:vport becomes VIP:lport -> "
               "RIP:rport, the client in the TOA). The reply RIP:rport -> VIP:lport has to become VIP:vport "
               "-> CIP:cport on the server itself, so that it can go straight to the client: the agent "
               "learns CIP:cport from the SYN's TOA, catches the replies on its TUN device (route VIP/32 "
               "dev lbenat0) and sends them rewritten. Without it the replies go to the VIP, i.e. back "
               "to the director, which does not expect them."),
        "zh": ("ENAT 代理，由服务器自己把回包改成 VIP -> 客户端",
               "调度器只改请求方向（CIP:cport -> VIP:vport 变成 VIP:lport -> RIP:rport，客户端地址放进 TOA）。"
               "回包 RIP:rport -> VIP:lport 必须在服务器上就变成 VIP:vport -> CIP:cport，才能直接发给客户端："
               "代理从 SYN 的 TOA 学到 CIP:cport，用 TUN 设备截住回包（路由 VIP/32 dev lbenat0），改写后发出。"
               "没有它，回包就发往 VIP，也就是回到调度器，而调度器并不等它。")},
    "rp_filter_loose": {
        "en": ("a loose reverse-path filter (rp_filter 2 or 0)",
               "The director's SYN arrives on eth0 from the VIP, but the agent's route sends the VIP to its "
               "TUN device: to a strict filter that SYN came in on the wrong interface. Loose (2) only asks "
               "that some route back exists."),
        "zh": ("宽松的反向路径过滤（rp_filter 设为 2 或 0）",
               "调度器发来的 SYN 从 eth0 进来、源地址是 VIP，而代理的路由把 VIP 指向 TUN 设备：严格过滤会认为"
               "它从错误的接口进来。宽松模式（2）只要求存在一条回去的路由。")},
    "same_segment": {
        "en": ("the real servers on one of its own L2 segments (no router in between)",
               "Only the destination MAC changes: the frame must be delivered by MAC, on the segment the "
               "director and the server share. Behind a router the director could only reach the router's "
               "MAC, and the router, seeing a packet for the VIP, would send it back to the director."),
        "zh": ("和真实服务器在同一个二层网段（中间没有路由器）",
               "只改目的 MAC：帧必须按 MAC 投递，所以调度器与服务器要在同一网段。隔着路由器时调度器只能拿到"
               "路由器的 MAC，而路由器看到目的地是 VIP 的包，又会把它送回调度器。")},
    "mtu_room": {
        "en": ("room for the outer header (20 bytes) on the path to the servers",
               "A full-size packet plus 20 bytes no longer fits a 1500-byte link. lbd answers a DF packet "
               "that would not fit with ICMP \"fragmentation needed\", so path MTU discovery makes the "
               "client send smaller segments."),
        "zh": ("通往服务器的路径要能容下外层头（20 字节）",
               "满长的包再加 20 字节就放不进 1500 字节的链路。lbd 对放不下的 DF 包回 ICMP “需要分片”，"
               "路径 MTU 发现会让客户端改发更小的分段。")},
    "laddrs": {
        "en": ("local addresses (LIPs) that the real servers route back to",
               "The server answers the address it saw: a LIP, one of the director's own. So the servers "
               "need only a route to the LIPs, from any network. Each LIP lends source ports from a pool "
               "(lbd --lport-range); the pool bounds how many connections one LIP can carry to one server."),
        "zh": ("真实服务器能路由回来的本地地址（LIP）",
               "服务器回包给它看到的地址，也就是调度器自己的 LIP，所以服务器只需有到 LIP 的路由，可以在任何网络。"
               "每个 LIP 从端口池借出源端口（lbd --lport-range），端口池大小决定一个 LIP 到一台服务器能承载的"
               "连接数。")},
    "vip_port_pool": {
        "en": ("a port pool on the VIP",
               "The server sees VIP:lport as its peer. Two clients may use the same source port, so the "
               "director lends each connection a port of its own from the VIP's pool; the agent maps it "
               "back to the client's."),
        "zh": ("VIP 上的端口池",
               "服务器看到的对端是 VIP:lport。两个客户端可能用同一个源端口，所以调度器从 VIP 的端口池给每个连接"
               "借一个独占端口，代理再把它映射回客户端的端口。")},
}

SEES = {
    "cip": {"en": "the client's own address (CIP)", "zh": "客户端自己的地址（CIP）"},
    "lip": {"en": "a local address of the director (LIP:lport)", "zh": "调度器的本地地址（LIP:lport）"},
    "vip": {"en": "the VIP with a lent port (VIP:lport)", "zh": "VIP 加借出的端口（VIP:lport）"},
}

SYMBOLS = {
    "cip": {"en": "the client's address", "zh": "客户端地址"},
    "cport": {"en": "the client's port", "zh": "客户端端口"},
    "vip": {"en": "the VIP", "zh": "VIP"},
    "vport": {"en": "the virtual port", "zh": "虚拟端口"},
    "rip": {"en": "the server's address", "zh": "服务器地址"},
    "rport": {"en": "the server's port", "zh": "服务器端口"},
    "lip": {"en": "a local address", "zh": "本地地址 LIP"},
    "lport": {"en": "a port from its pool", "zh": "端口池中的端口"},
    "dip": {"en": "the director's address", "zh": "调度器地址"},
    "rs_mac": {"en": "the server's MAC", "zh": "服务器的 MAC"},
    "ttl-1": {"en": "one less", "zh": "减一"},
    "cip:cport": {"en": "the client, in a TOA option", "zh": "客户端地址（放进 TOA 选项）"},
}

UI = {
    "title": {"en": "{mode} — lbadm {flag}, listed \"{listing}\"", "zh": "{mode} —— lbadm {flag}，列表显示为“{listing}”"},
    "same_segment": {"en": "Same L2 segment as the servers", "zh": "是否要求与服务器同一二层网段"},
    "replies": {"en": "Who carries the replies", "zh": "回包由谁转发"},
    "replies_director": {"en": "the director: both directions pass it, so its capacity bounds the cluster",
                         "zh": "调度器：两个方向都经过它，它的处理能力就是集群的上限"},
    "replies_server": {"en": "the real server, straight to the client: the director carries only the "
                             "requests, usually the smaller half",
                       "zh": "真实服务器直接发给客户端：调度器只转发请求，通常是流量中较小的那部分"},
    "replies_agent": {"en": "the real server's agent, straight to the client: the director carries only "
                            "the requests",
                      "zh": "真实服务器上的代理直接发给客户端：调度器只转发请求"},
    "addresses": {"en": "The real servers' addresses", "zh": "真实服务器的地址"},
    "addresses_private": {"en": "may be private: clients only ever talk to the director, and the servers stay hidden",
                          "zh": "可以是私网地址：客户端只和调度器打交道，服务器对外不可见"},
    "addresses_exposed": {"en": "must reach the clients themselves (their own route out); their replies leave "
                                "from them, so they are more exposed",
                          "zh": "必须自己能到达客户端（有自己的出口路由）；回包从它们直接发出，暴露得更多"},
    "port_mapping": {"en": "Port mapping (RS port ≠ virtual port)", "zh": "端口映射（RS 端口 ≠ 虚拟端口）"},
    "sees": {"en": "The server's socket sees", "zh": "服务器 socket 看到的对端"},
    "in": {"en": "The director writes, client → server", "zh": "调度器改写（客户端 → 服务器）"},
    "out": {"en": "Rewritten on the way back", "zh": "回程改写"},
    "out_none": {"en": "nothing: the server answers as the VIP itself", "zh": "不改：服务器自己以 VIP 身份回答"},
    "out_by_agent": {"en": "by the server's agent: {fields}", "zh": "由服务器上的代理：{fields}"},
    "rs_needs": {"en": "What a real server needs", "zh": "真实服务器需要什么"},
    "director_needs": {"en": "What the director needs", "zh": "调度器需要什么"},
    "why": {"en": "Why", "zh": "为什么"},
    "how": {"en": "How lbd does it (lb/modes/{file})", "zh": "lbd 的实现（lb/modes/{file}，英文）"},
    "yes": {"en": "yes", "zh": "是"},
    "no": {"en": "no", "zh": "否"},
    "nothing": {"en": "nothing", "zh": "无"},
    "try": {"en": "Watch it: lb trace {mode}", "zh": "亲眼看看：lb trace {mode}"},
    "compare": {"en": "The five modes side by side", "zh": "五种模式对比"},
    "toa": {"en": "Client address reaches the server", "zh": "服务器如何得知客户端地址"},
    "toa_yes": {"en": "in the TOA option of the SYN (TCP only)", "zh": "在 SYN 的 TOA 选项里（仅 TCP）"},
    "toa_no": {"en": "as the packet's source address", "zh": "就是包的源地址"},
}

# lb explain arp: the two sysctls DR and TUN real servers set, level by level (kernel's ip-sysctl).
ARP = {
    "en": [
        ("ARP in LVS", "The director and, in DR and TUN, every real server hold the VIP. A router that "
         "wants to send to the VIP asks the segment \"who has VIP?\" and believes an answer; and a host "
         "also learns from requests: the sender's address and MAC of a request addressed to it, and a "
         "fresher MAC for any entry it already has. Two sysctls keep the real servers out of both."),
        ("arp_ignore (answering)", "0 (default): answer for any local address, on any interface. 1: only "
         "for addresses configured on the interface the request came in on (the VIP on lo stays "
         "silent on eth0). 2: as 1, and the sender must be in that interface's subnet. 3: not for "
         "addresses of scope host. 8: never. The larger of conf/all and conf/IF applies."),
        ("arp_announce (asking)", "0 (default): the sender address of an ARP request may be any local "
         "address, usually the source of the packet waiting for it, which for a reply is the VIP. "
         "1: prefer an address of the target's subnet. 2: always the best address of the outgoing "
         "interface, never one that lives elsewhere (the VIP). The larger of all and IF applies."),
        ("So", "arp_ignore=1 and arp_announce=2 on every DR/TUN real server, on all and on each "
         "interface; lb realserver setup does it, lb break dr-arp shows what happens without."),
    ],
    "zh": [
        ("LVS 中的 ARP", "调度器以及 DR、TUN 模式下的每台真实服务器都持有 VIP。路由器要发往 VIP 时，会在网段里问"
         "“谁是 VIP？”并相信某个回答；而且主机也会从 ARP 请求中学习：发给它的请求里发送方的地址和 MAC，"
         "以及已有表项的新 MAC。两个 sysctl 让真实服务器置身事外。"),
        ("arp_ignore（回答）", "0（默认）：任何接口上的任何本机地址都回答。1：只回答配置在收到请求的接口上的地址"
         "（lo 上的 VIP 在 eth0 上保持沉默）。2：同 1，且请求方须在该接口的子网内。3：不回答 scope host 的地址。"
         "8：一律不回答。conf/all 与 conf/接口 取较大者。"),
        ("arp_announce（询问）", "0（默认）：ARP 请求的发送方地址可以是任何本机地址，通常是等待发送的那个包的源地址，"
         "对回包来说就是 VIP。1：尽量用目标子网内的地址。2：总是用出接口上最合适的地址，绝不用别处的地址（VIP）。"
         "all 与接口取较大者。"),
        ("所以", "每台 DR/TUN 真实服务器都在 all 和各接口上设 arp_ignore=1、arp_announce=2；lb realserver setup "
         "会这样做，lb break dr-arp 演示不这样做的后果。"),
    ],
}

INTRO = {
    "en": ("Linux Virtual Server (LVS) is layer-4 load balancing: a director owns a virtual address "
           "(VIP) and spreads the clients' connections over real servers. In Linux it is two parts: "
           "IPVS in the kernel does the forwarding, ipvsadm configures it. This project is the same "
           "idea without the kernel module: lbd forwards in userspace, lbadm speaks ipvsadm. How a "
           "packet reaches the chosen server, and how the reply gets back, is the forwarding mode: "
           "NAT, DR and TUN come from LVS itself; FULLNAT and ENAT were added later (Alibaba, DPVS). "
           "Roughly, the less of each packet the director touches, the more it carries: DR (one MAC, "
           "requests only), then TUN (a 20-byte header, requests only), then NAT (address and port, "
           "both ways), then FULLNAT (both ends, both ways)."),
    "zh": ("LVS（Linux Virtual Server）是四层负载均衡：调度器持有一个虚拟地址（VIP），把客户端的连接分发到"
           "多台真实服务器。在 Linux 里它分两部分：内核里的 IPVS 负责转发，ipvsadm 负责配置。本项目是同样的"
           "思路，但不依赖内核模块：lbd 在用户态转发，lbadm 兼容 ipvsadm 的命令。包如何到达选中的服务器、"
           "回包如何回到客户端，由转发模式决定：NAT、DR、TUN 是 LVS 原生的；FULLNAT 和 ENAT 是后来加的"
           "（阿里、DPVS）。粗略地说，调度器对每个包动得越少，能承载的就越多：DR（改一个 MAC，只管请求）、"
           "TUN（加 20 字节头，只管请求）、NAT（双向改地址和端口）、FULLNAT（双向改两端）。"),
}

TERMS = [
    ("DS", {"en": "director server: the machine running the load balancer (here lbd)", "zh": "调度器：运行负载均衡的机器（这里是 lbd）"}),
    ("RS", {"en": "real server: a backend that does the work", "zh": "真实服务器：真正干活的后端"}),
    ("VIP", {"en": "virtual IP: the address clients connect to, owned by the director", "zh": "虚拟 IP：客户端访问的地址，属于调度器"}),
    ("DIP", {"en": "director IP: the director's own address towards the real servers", "zh": "调度器 IP：调度器面向真实服务器的地址"}),
    ("RIP", {"en": "real server IP", "zh": "真实服务器的 IP"}),
    ("CIP", {"en": "client IP", "zh": "客户端 IP"}),
    ("LIP", {"en": "local IP: a director address FULLNAT uses as the source towards the servers",
             "zh": "本地 IP：FULLNAT 发往服务器时用作源地址的调度器地址"}),
    ("TOA", {"en": "TCP option address: the client's address carried in a TCP option (FULLNAT, ENAT)",
             "zh": "TCP 选项地址：放在 TCP 选项里的客户端地址（FULLNAT、ENAT）"}),
]

SCHEDULERS_ZH = {
    "rr": "轮询：按顺序轮流分给每台可用服务器，不看负载。",
    "wrr": "加权轮询：按权重比例轮流分配，权重高的服务器多分。",
    "lc": "最少连接：选连接数（活动×256＋非活动）最少的服务器。短连接场景下可能一直选同一台。",
    "wlc": "加权最少连接：连接数除以权重最小者胜（交叉相乘比较），ipvsadm 的默认调度器。",
    "sed": "最短期望延迟：(活动连接＋1)/权重 最小者胜。",
    "nq": "永不排队：有空闲服务器就用它，否则同 sed。",
    "lblc": "基于局部性的最少连接：按目的地址记住上次用的服务器，它没有超载就继续用，否则按 wlc 另选（多用于缓存集群）。",
    "lblcr": "带复制的 lblc：每个目的地址对应一组服务器，组内选最少连接者，过载时加入新服务器。",
    "dh": "目的地址散列：目的地址（普通服务就是 VIP）散列到 256 个桶，第 i 个桶对应列表中第 i mod n 台服务器（权重不影响份额）。",
    "sh": "源地址散列：客户端地址散列到 256 个桶，同一客户端总是去同一台服务器。",
    "mh": "Maglev 散列：一致性散列表（4093 项），服务器增减时只有少量客户端换服务器。",
    "fo": "故障转移：总是选权重最高的可用服务器。",
    "ovf": "溢出：选活动连接数不超过其权重的、权重最高的服务器；超过了才轮到下一台。",
    "twos": "二选一（power of two choices）：按权重随机抽两台，第二台的 连接数/权重 更低时才选它。",
}

# What happened at a hop, as ``lb trace`` says it.
HOP = {
    "first": {"en": "as {node} sent it", "zh": "{node} 发出时的样子"},
    "bridge": {"en": "the bridge passed it on unchanged (also seen at {points})",
               "zh": "网桥原样转发（在 {points} 也看到了）"},
    "router": {"en": "the router routed it: next-hop MACs, TTL - 1, so a new IP checksum",
               "zh": "路由器做了三层转发：换成下一跳的 MAC，TTL 减一，所以 IP 校验和也变了"},
    "director": {"en": "lbd ({mode}) rewrote it: {changes}", "zh": "lbd（{mode}）改写了它：{changes}"},
    "matches": {"en": "exactly what lb/modes/{file} says ({attr})", "zh": "与 lb/modes/{file} 所写完全一致（{attr}）"},
    "differs": {"en": "differs from lb/modes/{file}: {problems}", "zh": "与 lb/modes/{file} 不符：{problems}"},
    "decap": {"en": "the decapsulator stripped the outer header and gave the inner packet, for the VIP "
                    "{node} holds, to its kernel",
              "zh": "解封装程序剥掉外层头，把内层包（目的是 {node} 持有的 VIP）交给它的内核"},
    "agent_in": {"en": "{node}'s kernel answered {dst}; the route VIP/32 dev lbenat0 hands it to the ENAT agent",
                 "zh": "{node} 的内核回复 {dst}；路由 VIP/32 dev lbenat0 把它交给 ENAT 代理"},
    "agent_out": {"en": "the ENAT agent rewrote it ({changes}) and sent it straight to the client",
                  "zh": "ENAT 代理改写了它（{changes}），直接发往客户端"},
    "reply": {"en": "{node} answered from {src}", "zh": "{node} 以 {src} 为源地址回复"},
    "client_ok": {"en": "the client gets {src} -> {dst}: the pair it sent to, so its socket takes it",
                  "zh": "客户端收到 {src} -> {dst}：正是它发往的那一对地址，socket 收下"},
    "client_bad": {"en": "the client gets a reply from {src}, but it talked to {vip}: no socket of it "
                         "expects that (TCP answers with a RST)",
                   "zh": "客户端收到来自 {src} 的回包，可它访问的是 {vip}：没有 socket 在等它（TCP 会回 RST）"},
    "sent": {"en": "{node} sent it", "zh": "{node} 发出"},
    "checksum_bad": {"en": "bad checksum: {fields}", "zh": "校验和错误：{fields}"},
    # CHECKSUM_PARTIAL (tx checksum offload): the field holds the right pseudo-header sum and
    # the NIC, or the receiving stack over veth, completes it
    "checksum_partial": {"en": "partial (offloaded)", "zh": "部分（已卸载，由接收方补全）"},
    "copies": {"en": "seen {n} times at {point}: sent again", "zh": "在 {point} 看到 {n} 次：重传"},
    "answered": {"en": "answer", "zh": "应答"},
    "changed": {"en": "changed", "zh": "变化"},
    "not_director": {"en": "the director never saw it", "zh": "调度器根本没看到它"},
    "nothing": {"en": "nothing was captured for it", "zh": "什么也没抓到"},
    "arp": {"en": "ARP: {asker}, as {own}, asked who has {ip}; heard by {heard}; answered by {answered}",
            "zh": "ARP：{asker}（以 {own} 的身份）询问谁是 {ip}；{heard} 收到了请求；回答者：{answered}"},
    "nobody": {"en": "nobody", "zh": "无人"},
    "where": {"en": "Where each capture was taken (lbd sends past the qdisc, so a frame is taken "
                    "where it is received):",
              "zh": "每个抓包点的位置（lbd 发包绕过 qdisc，所以在接收端抓包）："},
    "files": {"en": "Files (Wireshark opens the pcaps):", "zh": "文件（pcap 可用 Wireshark 打开）："},
    "more": {"en": "More: lb explain {mode}", "zh": "更多：lb explain {mode}"},
    "in": {"en": "client → server", "zh": "客户端 → 服务器"},
    "out": {"en": "server → client", "zh": "服务器 → 客户端"},
}

# lb break: for each scenario, its title, what is switched on, what goes wrong and the fix.
BREAKS = {
    "dr-arp": {
        "en": {"title": "DR real server without arp_ignore/arp_announce",
               "broken": "rs1: arp_ignore=0 and arp_announce=0 (the kernel's defaults); its ARP cache flushed",
               "wrong": "rs1 answered one connection from the VIP; to reach the router it asked ARP with the VIP "
                        "as its own address, and the router took note: \"VIP is at rs1's MAC\". From then on the "
                        "router sends the clients straight to rs1 and the director sees nothing: no balancing, "
                        "no connection table, one server takes everything. (With arp_ignore=0 rs1 would also "
                        "answer the router's own \"who has VIP?\", racing the director: the same theft, by chance.)",
               "fix": "arp_ignore=1 and arp_announce=2 on rs1 (lb realserver setup --mode dr sets both); the "
                      "poisoned entry stays in the router until it expires, so it is flushed here (in a real "
                      "network: wait, or have the director send a gratuitous ARP)."},
        "zh": {"title": "DR 真实服务器没有设置 arp_ignore/arp_announce",
               "broken": "rs1：arp_ignore=0、arp_announce=0（内核默认值）；清空它的 ARP 缓存",
               "wrong": "rs1 以 VIP 身份回复了一个连接；为了找到路由器，它发出的 ARP 请求用 VIP 作自己的地址，路由器"
                        "就记下了“VIP 在 rs1 的 MAC 上”。此后路由器把客户端直接送到 rs1，调度器什么也看不到：没有"
                        "负载均衡，没有连接表，一台服务器包揽一切。（arp_ignore=0 时 rs1 还会回答路由器自己发出的“谁是 VIP？”，"
                        "和调度器抢答：同样的劫持，只是看运气。）",
               "fix": "在 rs1 上设置 arp_ignore=1、arp_announce=2（lb realserver setup --mode dr 会同时设置）；"
                      "被污染的表项会留在路由器里直到过期，所以这里手动清掉（真实网络中：等待过期，或让调度器发送"
                      "免费 ARP）。"}},
    "nat-gateway": {
        "en": {"title": "NAT real server whose gateway is not the director",
               "broken": "rs1: default route via the router instead of the director (rs2 and rs3 quiesced, "
                         "weight 0, so that the connection goes to rs1)",
               "wrong": "rs1's reply went to the router, not the director, so nobody turned RIP back into VIP: "
                        "the client, talking to the VIP, got an answer from the RIP, which matches none of its "
                        "sockets. TCP answered with a RST, UDP with ICMP port unreachable.",
               "fix": "rs1's default gateway is the director again (or a route to the clients through it)."},
        "zh": {"title": "NAT 真实服务器的网关不是调度器",
               "broken": "rs1：默认路由指向路由器而不是调度器（rs2、rs3 权重设为 0，让连接只去 rs1）",
               "wrong": "rs1 的回包发给了路由器而不是调度器，没人把 RIP 改回 VIP：客户端访问的是 VIP，收到的却是来自"
                        "RIP 的回包，与它的任何 socket 都对不上。TCP 回了 RST，UDP 回了 ICMP 端口不可达。",
               "fix": "把 rs1 的默认网关改回调度器（或经调度器到达客户端的路由）。"}},
    "nat-same-subnet": {
        "en": {"title": "NAT with a client on the real servers' subnet",
               "broken": "the client is the router itself, 198.18.0.1, on the servers' LAN",
               "wrong": "the director forwarded the request, but rs1 reached the client directly on its own "
                        "subnet, without any gateway: the reply kept the RIP as its source and the client "
                        "dropped it.",
               "fix": "clients off the servers' subnet (here: the real client behind the router); for clients "
                      "that must sit there, FULLNAT, whose replies go to the director's own address."},
        "zh": {"title": "NAT 模式下客户端与真实服务器在同一子网",
               "broken": "客户端就是路由器本身（198.18.0.1），位于服务器所在的局域网",
               "wrong": "调度器转发了请求，但 rs1 在自己的子网内直接找到客户端，不经过任何网关：回包源地址仍是 RIP，"
                        "客户端把它丢了。",
               "fix": "让客户端位于服务器子网之外（这里：路由器后面的真实客户端）；若客户端必须在那里，用 FULLNAT，"
                      "它的回包发往调度器自己的地址。"}},
    "fullnat-toa": {
        "en": {"title": "FULLNAT without a TOA reader",
               "broken": "the real servers run a plain HTTP server (port 8081) that ignores TCP options",
               "wrong": "nothing failed on the wire: the SYN reached rs1 with the client's address in its TOA "
                        "option, but the application only asked its socket, which knows the director's local "
                        "address and port. Logs, ACLs and rate limits by client all see the director.",
               "fix": "read the TOA: here the lab server keeps the SYN (TCP_SAVE_SYN) and lb.realserver.toa "
                      "reads the option; elsewhere toa.ko."},
        "zh": {"title": "FULLNAT 服务器不读取 TOA",
               "broken": "真实服务器运行一个忽略 TCP 选项的普通 HTTP 服务（端口 8081）",
               "wrong": "线路上一切正常：SYN 带着 TOA 选项里的客户端地址到达了 rs1，但应用只问了自己的 socket，而 "
                        "socket 只知道调度器的本地地址和端口。按客户端做的日志、访问控制、限速看到的全是调度器。",
               "fix": "读取 TOA：这里实验服务器保留 SYN（TCP_SAVE_SYN），由 lb.realserver.toa 读出选项；其他环境用 toa.ko。"}},
    "tun-rp-filter": {
        "en": {"title": "TUN real server with a strict rp_filter",
               "broken": "rs1: net.ipv4.conf.all.rp_filter=1 (rs2 and rs3 quiesced, weight 0)",
               "wrong": "the director's IPIP packet reached rs1 and the decapsulator handed the inner packet to "
                        "the kernel on lbtun0, with the client as source. The route back to the client leaves "
                        "by eth0, so the strict reverse-path filter took it for spoofed and dropped it without "
                        "a word (see IPReversePathFilter in /proc/net/netstat): no reply, the client gives up.",
               "fix": "rp_filter 0 (what lb realserver setup --mode tun sets) or 2 (loose)."},
        "zh": {"title": "TUN 真实服务器开启了严格 rp_filter",
               "broken": "rs1：net.ipv4.conf.all.rp_filter=1（rs2、rs3 权重设为 0）",
               "wrong": "调度器的 IPIP 包到达了 rs1，解封装程序把内层包交给内核（从 lbtun0 进入，源地址是客户端）。"
                        "回到客户端的路由走 eth0，严格反向路径过滤认为它是伪造的，悄悄丢弃（见 /proc/net/netstat 中的 "
                        "IPReversePathFilter）：没有回包，客户端最终放弃。",
               "fix": "rp_filter 设为 0（lb realserver setup --mode tun 的做法）或 2（宽松）。"}},
}

BREAK_UI = {
    "broken": {"en": "Broken", "zh": "故障设置"},
    "seen": {"en": "What the capture shows", "zh": "抓包看到的"},
    "wrong": {"en": "What went wrong", "zh": "哪里出了问题"},
    "fix": {"en": "The fix", "zh": "修复"},
    "fixed": {"en": "After the fix", "zh": "修复之后"},
    "works": {"en": "works: {what}", "zh": "恢复正常：{what}"},
    "still": {"en": "still failing: {what}", "zh": "仍然失败：{what}"},
    "not_seen": {"en": "the failure did not show this time: {what}", "zh": "这次没有出现故障：{what}"},
    "list": {"en": "Scenarios (lb break NAME, or all):", "zh": "场景（lb break 名称，或 all）："},
}

# Where a capture point is, by its kind (lb.lab.capture.Point.kind).
POINT = {
    "wire": {"en": "{role} {ifname}: what {node} sent (receive side of the link)",
             "zh": "{role} {ifname}：{node} 发出的帧（在链路接收端抓取）"},
    "host": {"en": "{role} {ifname}: what reached {node}", "zh": "{role} {ifname}：到达 {node} 的帧"},
    "decap": {"en": "{role} {ifname}: what the decapsulator gave {node}'s kernel",
              "zh": "{role} {ifname}：解封装程序交给 {node} 内核的包"},
    "agent": {"en": "{role} {ifname}: what {node}'s kernel gave the ENAT agent",
              "zh": "{role} {ifname}：{node} 内核交给 ENAT 代理的包"},
    "at": {"en": "at", "zh": "抓包点"},
}
