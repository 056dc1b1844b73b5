/* Minimal bounded AF_PACKET frame blaster for bench/pps.py (compiled at run time with gcc).
 *
 *   pktgen IFNAME FRAMES_FILE FRAME_LEN COUNT SECONDS [BATCH [RATE_PPS]]
 *
 * FRAMES_FILE holds N precomputed frames of FRAME_LEN bytes each (one per flow); they are
 * sent round robin with sendmmsg() on an AF_PACKET socket with PACKET_QDISC_BYPASS, until
 * COUNT frames were handed to the kernel or SECONDS elapsed (whichever first), or SIGINT/SIGTERM.
 * RATE_PPS > 0 paces the sending (used for warm-up passes); 0 = as fast as possible.
 * Under overload every frame the receiver's queue drops ends a sendmmsg() batch with ENOBUFS
 * (one extra syscall per drop).  Pausing after a drop was tried and is worse: the forwarder's
 * queue runs empty and its NAPI thread goes to sleep, so the measured rate falls.
 * Blocking socket with a large SO_SNDBUFFORCE: when the receiving CPU lags, the veth backlog
 * overflows and drops (counted by the kernel) before this process blocks.
 * Prints one JSON line with what it did.  Why not trafgen: its TX-ring flush uses MSG_DONTWAIT
 * and aborts on EAGAIN, which happens as soon as the receive softirq runs on another CPU (RPS)
 * and the 212 KiB default send buffer fills (net.core.wmem_* can't be raised inside a netns here).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_QDISC_BYPASS
#define PACKET_QDISC_BYPASS 20
#endif

static volatile sig_atomic_t stop;
static void on_sig(int s) { (void)s; stop = 1; }

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc < 6) {
		fprintf(stderr, "usage: %s IFNAME FRAMES_FILE FRAME_LEN COUNT SECONDS [BATCH [RATE_PPS]]\n",
			argv[0]);
		return 2;
	}
	const char *ifname = argv[1];
	size_t flen = strtoul(argv[3], NULL, 0);
	unsigned long long count = strtoull(argv[4], NULL, 0);
	double seconds = atof(argv[5]);
	int batch = argc > 6 ? atoi(argv[6]) : 64;
	double rate = argc > 7 ? atof(argv[7]) : 0;
	if (batch < 1 || batch > 1024 || flen < 14 || flen > 9000) {
		fprintf(stderr, "bad batch or frame length\n");
		return 2;
	}

	FILE *f = fopen(argv[2], "rb");
	if (!f) { perror("frames file"); return 1; }
	struct stat st;
	fstat(fileno(f), &st);
	size_t nframes = st.st_size / flen;
	if (nframes == 0 || (size_t)st.st_size % flen) {
		fprintf(stderr, "frames file size %lld is not a multiple of %zu\n", (long long)st.st_size, flen);
		return 1;
	}
	unsigned char *frames = malloc(st.st_size);
	if (!frames || fread(frames, 1, st.st_size, f) != (size_t)st.st_size) { perror("read"); return 1; }
	fclose(f);

	int fd = socket(AF_PACKET, SOCK_RAW, 0); /* protocol 0: transmit only, receives nothing */
	if (fd < 0) { perror("socket"); return 1; }
	int one = 1, sndbuf = 64 << 20;
	if (setsockopt(fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, sizeof(one)) < 0)
		perror("PACKET_QDISC_BYPASS (continuing)");
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(sndbuf)) < 0)
		perror("SO_SNDBUFFORCE (continuing)");
	struct sockaddr_ll sll = { .sll_family = AF_PACKET, .sll_ifindex = if_nametoindex(ifname) };
	if (!sll.sll_ifindex) { perror(ifname); return 1; }
	if (bind(fd, (struct sockaddr *)&sll, sizeof(sll)) < 0) { perror("bind"); return 1; }

	struct sigaction sa = { .sa_handler = on_sig };
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct mmsghdr *msgs = calloc(batch, sizeof(*msgs));
	struct iovec *iov = calloc(batch, sizeof(*iov));
	for (int i = 0; i < batch; i++) {
		iov[i].iov_len = flen;
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}

	unsigned long long sent = 0, enobufs = 0, calls = 0;
	size_t next = 0;
	double t0 = now(), deadline = t0 + seconds, t = t0;
	while (!stop && sent + enobufs < count) {
		int n = batch;
		if ((unsigned long long)n > count - sent - enobufs)
			n = count - sent - enobufs;
		if (rate > 0) {
			double due = t0 + (sent + enobufs) / rate;
			while (!stop && (t = now()) < due) {
				double w = due - t;
				struct timespec ts = { (time_t)w, (long)((w - (time_t)w) * 1e9) };
				nanosleep(&ts, NULL);
			}
			if (t >= deadline)
				break;
		}
		for (int i = 0; i < n; i++) {
			iov[i].iov_base = frames + ((next + i) % nframes) * flen;
		}
		int r = sendmmsg(fd, msgs, n, 0);
		calls++;
		if (r > 0) {
			sent += r;
			next = (next + r) % nframes;
		} else if (r < 0 && (errno == ENOBUFS || errno == EAGAIN)) {
			enobufs++;             /* frame dropped on the way out; move on */
			next = (next + 1) % nframes;
		} else if (r < 0 && errno != EINTR) {
			perror("sendmmsg");
			break;
		}
		if ((calls & 15) == 0 && (t = now()) >= deadline)
			break;
	}
	t = now();
	printf("{\"sent\": %llu, \"enobufs\": %llu, \"calls\": %llu, \"elapsed\": %.6f, \"frames\": %zu, "
	       "\"batch\": %d, \"rate\": %.0f, \"stopped_by\": \"%s\"}\n",
	       sent, enobufs, calls, t - t0, nframes, batch, rate,
	       stop ? "signal" : (sent + enobufs >= count ? "count" : "time"));
	return 0;
}
