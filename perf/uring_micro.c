/*
 * uring_micro: what each io_uring choice costs per operation, on one thread and one ring
 * (the same flags as a ringcas core), so the choices the issue lists are measured apart
 * from everything else a request does:
 *
 *   - socket round trips (send + recv on a TCP loopback pair): plain fds vs fixed files,
 *     with and without a linked timeout on each op, into a user buffer vs a provided buffer;
 *   - 4 KiB reads of a cached file: a plain buffer vs a registered (fixed) buffer;
 *   - 1 MiB reads of a file: buffered (page cache) vs O_DIRECT.
 *
 * Prints a Markdown table of ns per operation (median of 5 runs of N operations each).
 *   uring_micro [--ops N] [--file PATH]
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

#include "base/clock.h"

#define RUNS     5
#define MSG      64
#define BGID     7
#define NBUF     16
#define BUF_SIZE 4096

struct opts {
    bool fixed;    /* IOSQE_FIXED_FILE on registered sockets */
    bool timeout;  /* a LINK_TIMEOUT after each op */
    bool provided; /* recv into a provided buffer */
};

static _Noreturn void die(const char *what, int err)
{
    (void)fprintf(stderr, "uring_micro: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static void ring_init(struct io_uring *ring)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN |
              IORING_SETUP_CQSIZE;
    p.cq_entries = 1024;
    int rc = io_uring_queue_init_params(256, ring, &p);
    if (rc < 0) die("io_uring_queue_init_params", rc);
}

/* A connected TCP loopback pair. */
static void tcp_pair(int fds[2])
{
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&a, &len))
        die("listen", errno);
    fds[0] = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(fds[0], (struct sockaddr *)&a, sizeof(a))) die("connect", errno);
    fds[1] = accept(l, NULL, NULL);
    close(l);
    int one = 1;
    setsockopt(fds[0], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fds[1], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static struct __kernel_timespec ts = { .tv_sec = 30 };

static void add_timeout(struct io_uring *ring, struct io_uring_sqe *sqe, const struct opts *o)
{
    if (!o->timeout) return;
    sqe->flags |= IOSQE_IO_LINK;
    struct io_uring_sqe *t = io_uring_get_sqe(ring);
    io_uring_prep_link_timeout(t, &ts, 0);
    t->flags |= IOSQE_CQE_SKIP_SUCCESS;
    io_uring_sqe_set_data64(t, 0);
}

static void prep_send(struct io_uring *ring, int fd, const char *buf, const struct opts *o)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_send(sqe, fd, buf, MSG, MSG_NOSIGNAL);
    if (o->fixed) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, 1);
    add_timeout(ring, sqe, o);
}

static void prep_recv(struct io_uring *ring, int fd, char *buf, const struct opts *o)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (o->provided) {
        io_uring_prep_recv(sqe, fd, NULL, BUF_SIZE, 0);
        sqe->flags |= IOSQE_BUFFER_SELECT;
        sqe->buf_group = BGID;
    } else {
        io_uring_prep_recv(sqe, fd, buf, MSG, 0);
    }
    if (o->fixed) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, 2);
    add_timeout(ring, sqe, o);
}

/* Waits for the send and the recv of one hop; recycles a provided buffer. */
static void reap_hop(struct io_uring *ring, struct io_uring_buf_ring *br, char *bufs)
{
    int seen = 0;
    while (seen < 2) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_submit_and_wait(ring, 1);
        if (rc < 0) die("submit_and_wait", rc);
        while (io_uring_peek_cqe(ring, &cqe) == 0) {
            if (cqe->user_data == 0) {
                io_uring_cqe_seen(ring, cqe);
                continue;
            }
            if (cqe->res <= 0) die("op", cqe->res);
            if (cqe->flags & IORING_CQE_F_BUFFER) {
                int bid = (int)(cqe->flags >> IORING_CQE_BUFFER_SHIFT);
                io_uring_buf_ring_add(br, bufs + bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                                      io_uring_buf_ring_mask(NBUF), 0);
                io_uring_buf_ring_advance(br, 1);
            }
            io_uring_cqe_seen(ring, cqe);
            seen++;
        }
    }
}

static struct io_uring_buf_ring *setup_bufs(struct io_uring *ring, char **bufs)
{
    void *br = mmap(NULL, NBUF * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
                    MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    *bufs = aligned_alloc(4096, NBUF * BUF_SIZE);
    struct io_uring_buf_reg reg = { .ring_addr = (unsigned long)br,
                                    .ring_entries = NBUF,
                                    .bgid = BGID };
    int rc = io_uring_register_buf_ring(ring, &reg, 0);
    if (rc < 0) die("register_buf_ring", rc);
    io_uring_buf_ring_init(br);
    for (int i = 0; i < NBUF; i++)
        io_uring_buf_ring_add(br, *bufs + i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(NBUF), i);
    io_uring_buf_ring_advance(br, NBUF);
    return br;
}

/* ns per socket op (a hop is one send and one recv) */
static double socket_run(const struct opts *o, long ops)
{
    struct io_uring ring;
    ring_init(&ring);
    int fds[2];
    tcp_pair(fds);
    int use[2] = { fds[0], fds[1] };
    if (o->fixed) {
        int rc = io_uring_register_files(&ring, fds, 2);
        if (rc < 0) die("register_files", rc);
        use[0] = 0;
        use[1] = 1;
    }
    char *bufs = NULL;
    struct io_uring_buf_ring *br = setup_bufs(&ring, &bufs);
    char msg[MSG];
    char in[MSG];
    memset(msg, 'm', sizeof(msg));
    long hops = ops / 2;
    uint64_t t0 = base_clock_now_ns();
    for (long i = 0; i < hops; i++) {
        int from = (int)(i & 1);
        prep_send(&ring, use[from], msg, o);
        prep_recv(&ring, use[!from], in, o);
        reap_hop(&ring, br, bufs);
    }
    double ns = (double)(base_clock_now_ns() - t0) / (double)(hops * 2);
    io_uring_queue_exit(&ring);
    close(fds[0]);
    close(fds[1]);
    free(bufs);
    munmap(br, NBUF * sizeof(struct io_uring_buf));
    return ns;
}

/* ns per read of <size> bytes at rotating offsets of <fd> */
static double read_run(int fd, size_t size, bool fixed_buf, long ops, off_t file_size)
{
    struct io_uring ring;
    ring_init(&ring);
    void *buf = aligned_alloc(4096, size);
    memset(buf, 0, size);
    if (fixed_buf) {
        struct iovec v = { buf, size };
        int rc = io_uring_register_buffers(&ring, &v, 1);
        if (rc < 0) die("register_buffers", rc);
    }
    long slots = (long)(file_size / (off_t)size);
    uint64_t t0 = base_clock_now_ns();
    for (long i = 0; i < ops; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        uint64_t off = (uint64_t)(i % slots) * size;
        if (fixed_buf)
            io_uring_prep_read_fixed(sqe, fd, buf, (unsigned)size, off, 0);
        else
            io_uring_prep_read(sqe, fd, buf, (unsigned)size, off);
        struct io_uring_cqe *cqe = NULL;
        int rc = io_uring_submit_and_wait(&ring, 1);
        if (rc < 0 || io_uring_peek_cqe(&ring, &cqe) != 0) die("read", rc);
        if (cqe->res != (int)size) die("short read", cqe->res < 0 ? cqe->res : EIO);
        io_uring_cqe_seen(&ring, cqe);
    }
    double ns = (double)(base_clock_now_ns() - t0) / (double)ops;
    io_uring_queue_exit(&ring);
    free(buf);
    return ns;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a;
    double y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median5(double v[RUNS])
{
    qsort(v, RUNS, sizeof(double), cmp_double);
    return v[RUNS / 2];
}

static void socket_row(const char *name, struct opts o, long ops, double base)
{
    double v[RUNS];
    for (int r = 0; r < RUNS; r++)
        v[r] = socket_run(&o, ops);
    double m = median5(v);
    printf("| %s | %.0f | %.2f |\n", name, m, base > 0 ? m / base : 1.0);
    (void)fflush(stdout);
}

static double read_row(const char *name, int fd, size_t size, bool fixed, long ops, off_t fs,
                       double base)
{
    double v[RUNS];
    for (int r = 0; r < RUNS; r++)
        v[r] = read_run(fd, size, fixed, ops, fs);
    double m = median5(v);
    printf("| %s | %.0f | %.2f |\n", name, m, base > 0 ? m / base : 1.0);
    (void)fflush(stdout);
    return m;
}

int main(int argc, char **argv)
{
    long ops = 200000;
    const char *path = "/var/tmp/uring_micro.dat";
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
            ops = strtol(argv[++i], NULL, 10);
        } else if (strcmp(argv[i], "--file") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else {
            (void)fprintf(stderr, "usage: uring_micro [--ops N] [--file PATH]\n");
            return 2;
        }
    }
    printf("| operation | ns/op | × first row of its group |\n|---|---|---|\n");
    struct opts plain = { 0 };
    double base = 0;
    {
        double v[RUNS];
        for (int r = 0; r < RUNS; r++)
            v[r] = socket_run(&plain, ops);
        base = median5(v);
        printf("| socket op (send or recv, 64 B), plain fd | %.0f | 1.00 |\n", base);
    }
    socket_row("socket op, fixed file", (struct opts){ .fixed = true }, ops, base);
    socket_row("socket op, linked timeout", (struct opts){ .timeout = true }, ops, base);
    socket_row("socket op, provided buffer", (struct opts){ .provided = true }, ops, base);
    socket_row("socket op, fixed file + linked timeout + provided buffer (ringcas: no fixed)",
               (struct opts){ .fixed = true, .timeout = true, .provided = true }, ops, base);
    socket_row("socket op, linked timeout + provided buffer (ringcas today)",
               (struct opts){ .timeout = true, .provided = true }, ops, base);
    /* A 64 MiB file: cached reads for the 4 KiB rows, O_DIRECT vs buffered for 1 MiB. */
    off_t fs = 64 << 20;
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) die(path, errno);
    char *chunk = malloc(1 << 20);
    memset(chunk, 'f', 1 << 20);
    for (off_t off = 0; off < fs; off += 1 << 20)
        if (pwrite(fd, chunk, 1 << 20, off) != 1 << 20) die("pwrite", errno);
    fsync(fd);
    free(chunk);
    double rb = read_row("read 4 KiB, page cache, plain buffer", fd, 4096, false, ops, fs, 0);
    read_row("read 4 KiB, page cache, registered buffer", fd, 4096, true, ops, fs, rb);
    double b1 = read_row("read 1 MiB, page cache", fd, 1 << 20, false, ops / 100, fs, 0);
    int dfd = open(path, O_RDONLY | O_DIRECT);
    if (dfd >= 0) {
        read_row("read 1 MiB, O_DIRECT", dfd, 1 << 20, false, ops / 100, fs, b1);
        read_row("read 1 MiB, O_DIRECT, registered buffer", dfd, 1 << 20, true, ops / 100, fs, b1);
        close(dfd);
    }
    close(fd);
    unlink(path);
    return 0;
}
