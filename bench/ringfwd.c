/* The userspace ceiling: a minimal AF_PACKET IPv4 forwarder (built by bench/harness/ringfwd.py with gcc).
 *
 *   ringfwd SECONDS IN_IF OUT_IF DST_MAC [IN_IF OUT_IF DST_MAC]
 *
 * Each IN_IF gets a TPACKET_V3 receive ring (blocks of frames, one poll() per block, as
 * Documentation/networking/packet_mmap.rst describes).  The IPv4 frames of a retired block are
 * sent out of OUT_IF straight from the ring: one iovec per frame, sendmmsg() in batches, on a
 * socket with PACKET_QDISC_BYPASS.  Per frame it rewrites only what a router must: the
 * destination MAC (DST_MAC, the next hop given on the command line: no ARP, no routing), the
 * source MAC (OUT_IF's), TTL - 1 and the IP header checksum, updated incrementally (RFC 1624
 * eqn. 3).  Frames with TTL <= 1, non-IPv4 frames and frames this host sent are left alone.
 * There is no connection table, no lookup and no scheduler: what it costs is the I/O method,
 * which is why the benchmark calls it the ceiling of an AF_PACKET forwarder.
 * Stops after SECONDS or on SIGINT/SIGTERM and prints one JSON line of counters.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif

#define BLOCK_SIZE (1 << 20)
#define BLOCK_NR 16
#define FRAME_SIZE 2048
#define BATCH 256
#define MAXPATH 2

struct path {
	int rx, tx;
	uint8_t *ring;
	unsigned next_block;
	uint8_t dmac[6], smac[6];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long rx_frames, tx_frames, tx_errors, skipped;
};

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int parse_mac(const char *s, uint8_t *m)
{
	return sscanf(s, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &m[0], &m[1], &m[2], &m[3], &m[4], &m[5]) == 6 ? 0 : -1;
}

static int bound_socket(const char *ifname, int proto, int *ifindex)
{
	int fd = socket(AF_PACKET, SOCK_RAW, proto);
	if (fd < 0) { perror("socket"); exit(1); }
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = proto,
				   .sll_ifindex = if_nametoindex(ifname) };
	if (!sll.sll_ifindex) { perror(ifname); exit(1); }
	*ifindex = sll.sll_ifindex;
	if (proto == 0) {
		int one = 1, sndbuf = 64 << 20;
		setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf));
	}
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) { perror("bind"); exit(1); }
	return fd;
}

static void open_path(struct path *p, const char *in, const char *out, const char *dmac)
{
	int out_idx;
	if (parse_mac(dmac, p->dmac)) { fprintf(stderr, "bad MAC %s\n", dmac); exit(2); }
	p->tx = bound_socket(out, 0, &out_idx);
	struct ifreq ifr = { 0 };
	snprintf(ifr.ifr_name, IFNAMSIZ, "%s", out);
	if (ioctl(p->tx, SIOCGIFHWADDR, &ifr) < 0) { perror("SIOCGIFHWADDR"); exit(1); }
	memcpy(p->smac, ifr.ifr_hwaddr.sa_data, 6);

	p->rx = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));  /* taps of all protocols run before netdev ingress; ETH_P_IP handlers after it */
	if (p->rx < 0) { perror("socket"); exit(1); }
	int v = TPACKET_V3;
	if (setsockopt(p->rx, SOL_PACKET, PACKET_VERSION, &v, sizeof(v)) < 0) { perror("PACKET_VERSION"); exit(1); }
	struct tpacket_req3 req = { .tp_block_size = BLOCK_SIZE, .tp_block_nr = BLOCK_NR,
				    .tp_frame_size = FRAME_SIZE,
				    .tp_frame_nr = BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
				    .tp_retire_blk_tov = 1 /* ms: a block is handed over at the latest after 1 ms */ };
	if (setsockopt(p->rx, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0) { perror("PACKET_RX_RING"); exit(1); }
	p->ring = mmap(NULL, (size_t)BLOCK_SIZE * BLOCK_NR, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, p->rx, 0);
	if (p->ring == MAP_FAILED)
		p->ring = mmap(NULL, (size_t)BLOCK_SIZE * BLOCK_NR, PROT_READ | PROT_WRITE, MAP_SHARED, p->rx, 0);
	if (p->ring == MAP_FAILED) { perror("mmap"); exit(1); }
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_protocol = htons(ETH_P_ALL),
				   .sll_ifindex = if_nametoindex(in) };
	if (!sll.sll_ifindex) { perror(in); exit(1); }
	if (bind(p->rx, (struct sockaddr *)&sll, sizeof(sll)) < 0) { perror("bind"); exit(1); }
	for (int i = 0; i < BATCH; i++) {
		p->msgs[i].msg_hdr.msg_iov = &p->iov[i];
		p->msgs[i].msg_hdr.msg_iovlen = 1;
	}
	(void)out_idx;
}

/* RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), here for the 16-bit word holding TTL and protocol. */
static void ttl_dec(uint8_t *ip)
{
	uint16_t old = (uint16_t)(ip[8] << 8 | ip[9]);
	ip[8]--;
	uint16_t new = (uint16_t)(ip[8] << 8 | ip[9]);
	uint32_t sum = (uint16_t)~(ip[10] << 8 | ip[11]);
	sum += (uint16_t)~old;
	sum += new;
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	uint16_t c = (uint16_t)~sum;
	ip[10] = c >> 8;
	ip[11] = c & 0xff;
}

static void flush(struct path *p, int n)
{
	int off = 0;
	while (off < n) {
		int r = sendmmsg(p->tx, p->msgs + off, n - off, 0);
		if (r > 0) {
			p->tx_frames += r;
			off += r;
		} else if (r < 0 && errno == EINTR) {
			continue;
		} else {
			p->tx_errors++;     /* receiver queue full (ENOBUFS): drop this frame, go on */
			off++;
		}
	}
}

/* Forward every frame of one retired block, then give the block back to the kernel. */
static void serve_block(struct path *p, struct tpacket_block_desc *bd)
{
	uint32_t n = bd->hdr.bh1.num_pkts;
	struct tpacket3_hdr *h = (struct tpacket3_hdr *)((uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt);
	int k = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *f = (uint8_t *)h + h->tp_mac;
		uint32_t len = h->tp_snaplen;
		struct sockaddr_ll *sll = (struct sockaddr_ll *)((uint8_t *)h + TPACKET_ALIGN(sizeof(*h)));
		p->rx_frames++;
		if (sll->sll_pkttype == PACKET_OUTGOING || len < 34 || len != h->tp_len
		    || f[12] != 0x08 || f[13] != 0x00 || (f[14] >> 4) != 4 || f[22] <= 1) {
			p->skipped++;
		} else {
			memcpy(f, p->dmac, 6);
			memcpy(f + 6, p->smac, 6);
			ttl_dec(f + 14);
			p->iov[k].iov_base = f;
			p->iov[k].iov_len = len;
			if (++k == BATCH) {
				flush(p, k);
				k = 0;
			}
		}
		h = (struct tpacket3_hdr *)((uint8_t *)h + h->tp_next_offset);
	}
	if (k)
		flush(p, k);
	__atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
}

int main(int argc, char **argv)
{
	if (argc < 5 || (argc - 2) % 3) {
		fprintf(stderr, "usage: %s SECONDS IN_IF OUT_IF DST_MAC [IN_IF OUT_IF DST_MAC]\n", argv[0]);
		return 2;
	}
	double deadline = now() + atof(argv[1]);
	int np = (argc - 2) / 3;
	if (np > MAXPATH) { fprintf(stderr, "at most %d paths\n", MAXPATH); return 2; }
	static struct path paths[MAXPATH];
	struct pollfd pfd[MAXPATH];
	for (int i = 0; i < np; i++) {
		open_path(&paths[i], argv[2 + 3 * i], argv[3 + 3 * i], argv[4 + 3 * i]);
		pfd[i] = (struct pollfd){ .fd = paths[i].rx, .events = POLLIN | POLLERR };
	}
	struct sigaction sa = { .sa_handler = on_sig };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	printf("ready\n");
	fflush(stdout);
	while (!stop && now() < deadline) {
		int busy = 0;
		for (int i = 0; i < np; i++) {
			struct path *p = &paths[i];
			struct tpacket_block_desc *bd =
				(struct tpacket_block_desc *)(p->ring + (size_t)p->next_block * BLOCK_SIZE);
			while (__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) {
				serve_block(p, bd);
				p->next_block = (p->next_block + 1) % BLOCK_NR;
				bd = (struct tpacket_block_desc *)(p->ring + (size_t)p->next_block * BLOCK_SIZE);
				busy = 1;
			}
		}
		if (!busy)
			poll(pfd, np, 100);
	}
	unsigned long long rx = 0, tx = 0, err = 0, skip = 0, drops = 0;
	for (int i = 0; i < np; i++) {
		struct tpacket_stats_v3 st;
		socklen_t sl = sizeof(st);
		if (getsockopt(paths[i].rx, SOL_PACKET, PACKET_STATISTICS, &st, &sl) == 0)
			drops += st.tp_drops;
		rx += paths[i].rx_frames;
		tx += paths[i].tx_frames;
		err += paths[i].tx_errors;
		skip += paths[i].skipped;
	}
	printf("{\"rx_frames\": %llu, \"tx_frames\": %llu, \"tx_errors\": %llu, \"skipped\": %llu, "
	       "\"ring_drops\": %llu}\n", rx, tx, err, skip, drops);
	return 0;
}
