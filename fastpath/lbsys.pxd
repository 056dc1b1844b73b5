# C declarations the fast path needs: sockets, AF_PACKET rings, poll, mmap, clocks, a mutex,
# a memory barrier.
# Only declarations live here (cimported by _forward.pyx); everything is nogil.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "<errno.h>" nogil:
    int errno
    enum: EINTR, EAGAIN, ENOBUFS, ENETDOWN, ENODEV, ENXIO

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    enum: CLOCK_MONOTONIC
    int clock_gettime(int clk, timespec* ts)

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t* m, void* attr)
    int pthread_mutex_lock(pthread_mutex_t* m)
    int pthread_mutex_unlock(pthread_mutex_t* m)
    int pthread_mutex_destroy(pthread_mutex_t* m)

cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    enum: POLLIN, POLLERR, POLLHUP, POLLNVAL
    int poll(pollfd* fds, unsigned long nfds, int timeout)

cdef extern from "<sys/mman.h>" nogil:
    enum: PROT_READ, PROT_WRITE, MAP_SHARED, MAP_LOCKED
    void* MAP_FAILED
    void* mmap(void* addr, size_t length, int prot, int flags, int fd, long offset)
    int munmap(void* addr, size_t length)

cdef extern from "<unistd.h>" nogil:
    int close(int fd)

cdef extern from "<sys/uio.h>" nogil:
    struct iovec:
        void* iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    struct sockaddr:
        pass
    struct msghdr:
        void* msg_name
        socklen_t msg_namelen
        iovec* msg_iov
        size_t msg_iovlen
        void* msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    enum: AF_PACKET, SOCK_RAW, MSG_DONTWAIT, SOL_SOCKET, SO_ERROR, SO_MARK
    int socket(int domain, int type, int protocol)
    int setsockopt(int fd, int level, int name, const void* val, socklen_t len)
    int getsockopt(int fd, int level, int name, void* val, socklen_t* len)
    int bind(int fd, const sockaddr* addr, socklen_t len)
    int sendmmsg(int fd, mmsghdr* msgvec, unsigned int vlen, int flags)
    long send(int fd, const void* buf, size_t n, int flags)

cdef extern from "<arpa/inet.h>" nogil:
    uint16_t htons(uint16_t)

cdef extern from "<linux/if_ether.h>" nogil:
    enum: ETH_P_ALL

cdef extern from "<linux/if_packet.h>" nogil:
    enum: SOL_PACKET, PACKET_VERSION, PACKET_RX_RING, PACKET_RESERVE, PACKET_QDISC_BYPASS
    enum: PACKET_IGNORE_OUTGOING, PACKET_STATISTICS, TPACKET_V2, TPACKET_V3, PACKET_VNET_HDR
    enum: TP_STATUS_KERNEL, TP_STATUS_USER, TP_STATUS_CSUMNOTREADY
    enum: PACKET_HOST, PACKET_OTHERHOST, PACKET_OUTGOING
    struct sockaddr_ll:
        unsigned short sll_family
        unsigned short sll_protocol
        int sll_ifindex
        unsigned short sll_hatype
        unsigned char sll_pkttype
        unsigned char sll_halen
        unsigned char sll_addr[8]
    struct tpacket_req3:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
        unsigned int tp_retire_blk_tov
        unsigned int tp_sizeof_priv
        unsigned int tp_feature_req_word
    struct tpacket_req:
        unsigned int tp_block_size
        unsigned int tp_block_nr
        unsigned int tp_frame_size
        unsigned int tp_frame_nr
    struct tpacket2_hdr:
        uint32_t tp_status
        uint32_t tp_len
        uint32_t tp_snaplen
        uint16_t tp_mac
        uint16_t tp_net
        uint32_t tp_sec
        uint32_t tp_nsec
    struct tpacket_stats_v3:
        unsigned int tp_packets
        unsigned int tp_drops
        unsigned int tp_freeze_q_cnt
    struct tpacket_hdr_v1:
        uint32_t block_status
        uint32_t num_pkts
        uint32_t offset_to_first_pkt
    union tpacket_bd_header_u:
        tpacket_hdr_v1 bh1
    struct tpacket_block_desc:
        uint32_t version
        uint32_t offset_to_priv
        tpacket_bd_header_u hdr
    struct tpacket3_hdr:
        uint32_t tp_next_offset
        uint32_t tp_sec
        uint32_t tp_nsec
        uint32_t tp_snaplen
        uint32_t tp_len
        uint32_t tp_status
        uint16_t tp_mac
        uint16_t tp_net

cdef extern from * nogil:
    void __sync_synchronize()       # GCC's full memory barrier

cdef extern from "<linux/filter.h>" nogil:
    # classic BPF, for SO_ATTACH_FILTER (ring.pxi splits frames by length between two rings)
    struct sock_filter:
        uint16_t code
        uint8_t jt
        uint8_t jf
        uint32_t k
    struct sock_fprog:
        unsigned short len
        sock_filter* filter
    enum: SO_ATTACH_FILTER, BPF_LD, BPF_W, BPF_LEN, BPF_JMP, BPF_JGT, BPF_K, BPF_RET
