/*
 * loadgen: the load generator behind bench/run.py.
 *
 * One file, libc only, one epoll loop per thread.  bench/run.py compiles it
 * at run time (gcc -O2 -pthread -o TMPDIR/loadgen bench/loadgen.c).
 *
 *   loadgen [-t THREADS] tcp-echo         HOST PORT CONNS SIZE SECONDS
 *   loadgen [-t THREADS] tcp-bulk-echo    HOST PORT CONNS SECONDS
 *   loadgen [-t THREADS] tcp-bulk-discard HOST PORT CONNS SECONDS
 *   loadgen [-t THREADS] udp-echo         HOST PORT SENDERS SIZE SECONDS
 *
 * tcp-echo          each connection sends SIZE bytes, waits until the same
 *                   SIZE bytes are back, and repeats (ping-pong).
 * tcp-bulk-echo     each connection streams bytes into echo and reads them
 *                   back concurrently, with at most 4 MiB outstanding.
 * tcp-bulk-discard  each connection writes into discard as fast as it can.
 * udp-echo          each sender keeps WINDOW (32) datagrams in flight; one
 *                   not echoed within 50 ms counts as lost and is replaced.
 *                   Each datagram starts with a 16-byte header (sender,
 *                   slot, sequence number), so SIZE is at least 16.
 *
 * All connections are established before the clock starts; the measurement
 * then lasts exactly SECONDS and only work completed inside it is counted.
 * Every byte read back is compared with what was sent.  The result is one
 * line of JSON on stdout.
 *
 * Safety: HOST must be a loopback address, SECONDS is capped at 120, and an
 * alarm() kills the process if it overruns its time budget for any reason.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_SECONDS 120
#define MAX_CONNS 10000
#define MAX_THREADS 16
#define CONNECT_TIMEOUT_NS (10 * NS_PER_S)
#define NS_PER_S 1000000000LL
#define NS_PER_MS 1000000LL

/* The byte stream of connection ID at offset N is (N + ID) % PERIOD.  A
 * prime period makes shifted, repeated or dropped 64 KiB chunks visible. */
#define PERIOD 251
#define CHUNK 65536

#define BULK_MAX_OUTSTANDING (4 << 20)

#define UDP_WINDOW 32
#define UDP_TIMEOUT_NS (50 * NS_PER_MS)
#define UDP_SCAN_NS (5 * NS_PER_MS)
#define UDP_HEADER 16 /* uint32 sender, uint32 slot, uint64 sequence */
#define UDP_MAX_SIZE 65507

enum mode { TCP_ECHO, TCP_BULK_ECHO, TCP_BULK_DISCARD, UDP_ECHO };

static const char *const modeNames[] = {
    "tcp-echo", "tcp-bulk-echo", "tcp-bulk-discard", "udp-echo"};

/* Log-linear latency histogram over nanoseconds: values below 64 have
 * their own bucket, every power of two above is split into 64 buckets
 * (under 1.6% relative error). */
#define HIST_SUB_BITS 6
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_BUCKETS (HIST_SUB + (64 - HIST_SUB_BITS) * HIST_SUB)

struct histogram {
    uint64_t counts[HIST_BUCKETS];
};

struct stats {
    uint64_t messages;         /* round trips (tcp-echo), echoed datagrams */
    uint64_t bytes;            /* bulk: bytes echoed back / bytes written */
    uint64_t sent;             /* udp: datagrams sent */
    uint64_t lost;             /* udp: datagrams not echoed within 50 ms */
    uint64_t late;             /* udp: echoes arriving after their timeout */
    uint64_t mismatchedBytes;  /* bytes read back that differ from sent */
    uint64_t connErrors;       /* failed connects, resets, unexpected EOF */
    uint64_t sendErrors;       /* udp: datagrams the local kernel refused */
    struct histogram rtt;
};

struct slot {
    uint64_t seq;    /* sequence number of the datagram in flight */
    int64_t sentAt;  /* when it was sent, 0 if nothing is in flight */
};

struct conn {
    int fd;
    uint32_t id;
    uint64_t tx;       /* stream offset: bytes written */
    uint64_t rx;       /* stream offset: bytes read back */
    int64_t msgStart;  /* tcp-echo: when the current message was started */
    int wantOut;       /* EPOLLOUT currently registered */
    struct slot *slots;
    uint64_t nextSeq;
};

struct worker {
    pthread_t thread;
    int epfd;
    int nconns;
    struct conn *conns;
    struct stats stats;
};

static enum mode mode;
static struct sockaddr_storage target;
static socklen_t targetLen;
static long size;
static long seconds;
static unsigned char pattern[CHUNK + PERIOD];
static pthread_barrier_t connected;

static int64_t nowNs(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: loadgen [-t THREADS] tcp-echo HOST PORT CONNS SIZE SECONDS\n"
            "       loadgen [-t THREADS] tcp-bulk-echo HOST PORT CONNS SECONDS\n"
            "       loadgen [-t THREADS] tcp-bulk-discard HOST PORT CONNS SECONDS\n"
            "       loadgen [-t THREADS] udp-echo HOST PORT SENDERS SIZE SECONDS\n"
            "HOST must be a loopback address; SECONDS is at most %d.\n",
            MAX_SECONDS);
    exit(2);
}

static long parseLong(const char *text, long min, long max, const char *name)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 10);
    if (errno != 0 || *text == '\0' || *end != '\0' || value < min ||
        value > max) {
        fprintf(stderr, "loadgen: %s must be an integer in [%ld, %ld]\n",
                name, min, max);
        exit(2);
    }
    return value;
}

/* Fill TARGET from HOST and PORT, refusing anything but loopback. */
static void parseTarget(const char *host, long port)
{
    struct sockaddr_in *v4 = (struct sockaddr_in *)&target;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&target;

    memset(&target, 0, sizeof(target));
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        if ((ntohl(v4->sin_addr.s_addr) >> 24) != 127) {
            fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
            exit(2);
        }
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        targetLen = sizeof(*v4);
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        if (!IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr)) {
            fprintf(stderr, "loadgen: %s is not a loopback address\n", host);
            exit(2);
        }
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        targetLen = sizeof(*v6);
    } else {
        fprintf(stderr, "loadgen: cannot parse address %s\n", host);
        exit(2);
    }
}

static void histRecord(struct histogram *h, uint64_t value)
{
    int bucket;

    if (value < HIST_SUB) {
        bucket = (int)value;
    } else {
        int exponent = 63 - __builtin_clzll(value);
        int shift = exponent - HIST_SUB_BITS;

        bucket = HIST_SUB + shift * HIST_SUB +
                 (int)((value >> shift) - HIST_SUB);
    }
    h->counts[bucket]++;
}

/* Midpoint, in nanoseconds, of the bucket holding the P-th quantile. */
static double histQuantile(const struct histogram *h, double p)
{
    uint64_t total = 0, rank, seen = 0;
    int bucket;

    for (bucket = 0; bucket < HIST_BUCKETS; bucket++)
        total += h->counts[bucket];
    if (total == 0)
        return 0.0;
    rank = (uint64_t)(p * (double)total);
    if (rank < 1)
        rank = 1;
    for (bucket = 0; bucket < HIST_BUCKETS; bucket++) {
        seen += h->counts[bucket];
        if (seen >= rank)
            break;
    }
    if (bucket < HIST_SUB)
        return (double)bucket;
    {
        int shift = (bucket - HIST_SUB) / HIST_SUB;
        uint64_t low = (uint64_t)(HIST_SUB + (bucket - HIST_SUB) % HIST_SUB)
                       << shift;

        return (double)low + (double)(1ULL << shift) / 2.0;
    }
}

/* Count the bytes of DATA that differ from the pattern at OFFSET. */
static uint64_t mismatches(uint64_t offset, const unsigned char *data,
                           size_t length)
{
    const unsigned char *expected = pattern + offset % PERIOD;
    uint64_t count = 0;
    size_t i;

    if (memcmp(data, expected, length) == 0)
        return 0;
    for (i = 0; i < length; i++)
        count += data[i] != expected[i];
    return count;
}

static void setEvents(struct worker *w, struct conn *c, int wantOut)
{
    struct epoll_event event = {
        .events = EPOLLIN | (wantOut ? EPOLLOUT : 0), .data.ptr = c};

    if (c->wantOut == wantOut)
        return;
    c->wantOut = wantOut;
    if (epoll_ctl(w->epfd, EPOLL_CTL_MOD, c->fd, &event) < 0)
        die("epoll_ctl");
}

static void closeConn(struct worker *w, struct conn *c)
{
    if (c->fd < 0)
        return;
    epoll_ctl(w->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static void connFailed(struct worker *w, struct conn *c)
{
    w->stats.connErrors++;
    closeConn(w, c);
}

/* Start a non-blocking socket for C and register it with epoll. */
static void openSocket(struct worker *w, struct conn *c, int type)
{
    int one = 1;
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};

    c->fd = socket(target.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    if (type == SOCK_STREAM) {
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    } else {
        int buffer = 4 << 20; /* silently capped at net.core.rmem_max */

        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &buffer, sizeof(buffer));
    }
    if (connect(c->fd, (struct sockaddr *)&target, targetLen) < 0 &&
        errno != EINPROGRESS)
        die("connect");
    c->wantOut = 1;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, c->fd, &event) < 0)
        die("epoll_ctl");
}

/* Establish every TCP connection of W (or give up after 10 s). */
static void connectAll(struct worker *w)
{
    struct epoll_event events[256];
    int64_t deadline = nowNs() + CONNECT_TIMEOUT_NS;
    int pending = w->nconns, i;

    for (i = 0; i < w->nconns; i++)
        openSocket(w, &w->conns[i], SOCK_STREAM);
    while (pending > 0 && nowNs() < deadline) {
        int n = epoll_wait(w->epfd, events, 256, 100);

        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            int error = 0;
            socklen_t length = sizeof(error);

            if (!c->wantOut)
                continue;
            getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &length);
            pending--;
            if (error != 0)
                connFailed(w, c);
            else
                setEvents(w, c, 0);
        }
    }
    for (i = 0; i < w->nconns; i++)
        if (w->conns[i].fd >= 0 && w->conns[i].wantOut)
            connFailed(w, &w->conns[i]);
}

/* Write as much of the stream of C as allowed, up to offset LIMIT.  Return
 * the number of bytes written, or -1 if the connection failed. */
static long writeStream(struct worker *w, struct conn *c, uint64_t limit)
{
    long total = 0;

    while (c->tx < limit) {
        size_t length = limit - c->tx < CHUNK ? limit - c->tx : CHUNK;
        ssize_t n = send(c->fd, pattern + (c->tx + c->id) % PERIOD, length,
                         MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                break;
            connFailed(w, c);
            return -1;
        }
        c->tx += (uint64_t)n;
        total += n;
    }
    return total;
}

/* Read what is available on C, checking it.  Return the number of bytes
 * read, or -1 if the connection failed or was closed by the server. */
static long readStream(struct worker *w, struct conn *c)
{
    static __thread unsigned char buffer[CHUNK];
    long total = 0;

    for (;;) {
        ssize_t n = recv(c->fd, buffer, sizeof(buffer), 0);

        if (n > 0) {
            w->stats.mismatchedBytes += mismatches(c->rx + c->id, buffer, (size_t)n);
            c->rx += (uint64_t)n;
            total += n;
            if ((size_t)n < sizeof(buffer))
                return total;
        } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            return total;
        } else {
            connFailed(w, c);
            return -1;
        }
    }
}

static void startMessage(struct worker *w, struct conn *c, int64_t now)
{
    c->msgStart = now;
    if (writeStream(w, c, c->tx + (uint64_t)size) >= 0)
        setEvents(w, c, c->tx % (uint64_t)size != 0);
}

static void tcpEchoEvent(struct worker *w, struct conn *c, uint32_t events,
                         int64_t now, int64_t deadline)
{
    if (events & EPOLLOUT) {
        if (writeStream(w, c, c->tx + (size - c->tx % size) % size) < 0)
            return;
        setEvents(w, c, c->tx % (uint64_t)size != 0);
    }
    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        long n = readStream(w, c);

        if (n <= 0)
            return;
        if (c->rx > c->tx) {
            /* More came back than was sent: count it as garbage. */
            w->stats.mismatchedBytes += c->rx - c->tx;
            c->rx = c->tx;
        }
        if (c->rx == c->tx && c->tx % (uint64_t)size == 0 && now < deadline) {
            w->stats.messages++;
            histRecord(&w->stats.rtt, (uint64_t)(now - c->msgStart));
            startMessage(w, c, now);
        }
    }
}

static void tcpBulkEvent(struct worker *w, struct conn *c, uint32_t events,
                         int64_t now, int64_t deadline)
{
    int echo = mode == TCP_BULK_ECHO;

    if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        long n = readStream(w, c);

        if (n < 0)
            return;
        if (!echo) {
            /* Discard never answers; whatever arrives is wrong. */
            w->stats.mismatchedBytes += (uint64_t)n;
        } else if (now < deadline) {
            w->stats.bytes += (uint64_t)n;
        }
    }
    if ((events & EPOLLOUT) && now < deadline) {
        uint64_t limit = echo ? c->rx + BULK_MAX_OUTSTANDING : UINT64_MAX;
        long n = writeStream(w, c, limit);

        if (n < 0)
            return;
        if (!echo)
            w->stats.bytes += (uint64_t)n;
    }
    if (echo && c->fd >= 0)
        setEvents(w, c, c->tx < c->rx + BULK_MAX_OUTSTANDING);
}

/* Send a fresh datagram in slot INDEX of sender C. */
static void udpSend(struct worker *w, struct conn *c, uint32_t index,
                    int64_t now)
{
    static __thread unsigned char datagram[UDP_MAX_SIZE];
    struct slot *s = &c->slots[index];
    uint64_t seq = c->nextSeq++;
    long i;

    memcpy(datagram, &c->id, 4);
    memcpy(datagram + 4, &index, 4);
    memcpy(datagram + 8, &seq, 8);
    for (i = UDP_HEADER; i < size; i += CHUNK) {
        long length = size - i < CHUNK ? size - i : CHUNK;

        memcpy(datagram + i, pattern + (seq + c->id + i) % PERIOD, length);
    }
    s->seq = seq;
    s->sentAt = now;
    w->stats.sent++;
    if (send(c->fd, datagram, (size_t)size, 0) < 0) {
        /* Left in flight: it will time out and be replaced. */
        if (errno == ECONNREFUSED)
            w->stats.connErrors++; /* nobody listens on the port */
        else
            w->stats.sendErrors++; /* e.g. ENOBUFS: the local kernel's fault */
    }
}

static void udpEvent(struct worker *w, struct conn *c, int64_t now,
                     int64_t deadline)
{
    static __thread unsigned char datagram[UDP_MAX_SIZE + 1];

    for (;;) {
        ssize_t n = recv(c->fd, datagram, sizeof(datagram), 0);
        uint32_t sender, index;
        uint64_t seq;
        struct slot *s;

        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            w->stats.connErrors++; /* e.g. ECONNREFUSED: nobody listens */
            continue;
        }
        if (n != size) {
            w->stats.mismatchedBytes += (uint64_t)n;
            continue;
        }
        memcpy(&sender, datagram, 4);
        memcpy(&index, datagram + 4, 4);
        memcpy(&seq, datagram + 8, 8);
        if (sender != c->id || index >= UDP_WINDOW) {
            w->stats.mismatchedBytes += (uint64_t)n;
            continue;
        }
        s = &c->slots[index];
        if (s->sentAt == 0 || s->seq != seq) {
            w->stats.late++;
            continue;
        }
        w->stats.mismatchedBytes +=
            mismatches(seq + c->id + UDP_HEADER, datagram + UDP_HEADER,
                       (size_t)(size - UDP_HEADER));
        if (now < deadline) {
            w->stats.messages++;
            histRecord(&w->stats.rtt, (uint64_t)(now - s->sentAt));
            udpSend(w, c, index, now);
        } else {
            s->sentAt = 0;
        }
    }
}

/* Count and replace every datagram of W that has been waiting too long. */
static void udpExpire(struct worker *w, int64_t now)
{
    int i;
    uint32_t index;

    for (i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];

        for (index = 0; index < UDP_WINDOW; index++) {
            if (c->slots[index].sentAt != 0 &&
                now - c->slots[index].sentAt > UDP_TIMEOUT_NS) {
                w->stats.lost++;
                udpSend(w, c, index, now);
            }
        }
    }
}

static void *runWorker(void *argument)
{
    struct worker *w = argument;
    struct epoll_event events[256];
    int64_t start, deadline, lastScan;
    int i;

    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (w->epfd < 0)
        die("epoll_create1");
    if (mode == UDP_ECHO) {
        for (i = 0; i < w->nconns; i++) {
            openSocket(w, &w->conns[i], SOCK_DGRAM);
            setEvents(w, &w->conns[i], 0);
        }
    } else {
        connectAll(w);
    }
    pthread_barrier_wait(&connected);

    start = lastScan = nowNs();
    deadline = start + seconds * NS_PER_S;
    for (i = 0; i < w->nconns; i++) {
        struct conn *c = &w->conns[i];
        uint32_t index;

        if (c->fd < 0)
            continue;
        if (mode == TCP_ECHO)
            startMessage(w, c, start);
        else if (mode == UDP_ECHO)
            for (index = 0; index < UDP_WINDOW; index++)
                udpSend(w, c, index, start);
        else
            setEvents(w, c, 1);
    }

    for (;;) {
        int64_t now = nowNs();
        int timeout, n;

        if (now >= deadline)
            break;
        timeout = (int)((deadline - now + NS_PER_MS - 1) / NS_PER_MS);
        if (mode == UDP_ECHO && timeout > UDP_SCAN_NS / NS_PER_MS)
            timeout = UDP_SCAN_NS / NS_PER_MS;
        n = epoll_wait(w->epfd, events, 256, timeout);
        if (n < 0 && errno != EINTR)
            die("epoll_wait");
        now = nowNs();
        for (i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;

            if (c->fd < 0)
                continue;
            if (mode == TCP_ECHO)
                tcpEchoEvent(w, c, events[i].events, now, deadline);
            else if (mode == UDP_ECHO)
                udpEvent(w, c, now, deadline);
            else
                tcpBulkEvent(w, c, events[i].events, now, deadline);
        }
        if (mode == UDP_ECHO && now - lastScan >= UDP_SCAN_NS &&
            now < deadline) {
            udpExpire(w, now);
            lastScan = now;
        }
    }

    for (i = 0; i < w->nconns; i++)
        closeConn(w, &w->conns[i]);
    close(w->epfd);
    return NULL;
}

static void merge(struct stats *total, const struct stats *part)
{
    int bucket;

    total->messages += part->messages;
    total->bytes += part->bytes;
    total->sent += part->sent;
    total->lost += part->lost;
    total->late += part->late;
    total->mismatchedBytes += part->mismatchedBytes;
    total->connErrors += part->connErrors;
    total->sendErrors += part->sendErrors;
    for (bucket = 0; bucket < HIST_BUCKETS; bucket++)
        total->rtt.counts[bucket] += part->rtt.counts[bucket];
}

static void report(const struct stats *s, long conns, long threads)
{
    struct rusage usage;
    double cpu;

    getrusage(RUSAGE_SELF, &usage);
    cpu = (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6 +
          (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6;

    printf("{\"mode\": \"%s\", \"conns\": %ld, \"threads\": %ld, "
           "\"seconds\": %ld",
           modeNames[mode], conns, threads, seconds);
    if (mode == TCP_ECHO || mode == UDP_ECHO)
        printf(", \"size\": %ld, \"messages\": %llu, "
               "\"messages_per_s\": %.1f, \"p50_us\": %.1f, \"p99_us\": %.1f",
               size, (unsigned long long)s->messages,
               (double)s->messages / (double)seconds,
               histQuantile(&s->rtt, 0.50) / 1e3,
               histQuantile(&s->rtt, 0.99) / 1e3);
    else
        printf(", \"bytes\": %llu, \"mb_per_s\": %.1f",
               (unsigned long long)s->bytes,
               (double)s->bytes / (double)seconds / 1e6);
    if (mode == UDP_ECHO)
        printf(", \"window\": %d, \"sent\": %llu, \"lost\": %llu, "
               "\"late\": %llu, \"send_errors\": %llu, \"loss_pct\": %.3f",
               UDP_WINDOW, (unsigned long long)s->sent,
               (unsigned long long)s->lost, (unsigned long long)s->late,
               (unsigned long long)s->sendErrors,
               s->messages + s->lost
                   ? 100.0 * (double)s->lost / (double)(s->messages + s->lost)
                   : 0.0);
    printf(", \"mismatched_bytes\": %llu, \"conn_errors\": %llu, "
           "\"errors\": %llu, \"client_cpu_s\": %.3f}\n",
           (unsigned long long)s->mismatchedBytes,
           (unsigned long long)s->connErrors,
           (unsigned long long)(s->mismatchedBytes + s->connErrors), cpu);
}

int main(int argc, char **argv)
{
    struct worker workers[MAX_THREADS];
    struct stats total;
    long threads = 1, conns, port, t;
    int arg = 1, sized;

    if (argc > 2 && strcmp(argv[1], "-t") == 0) {
        threads = parseLong(argv[2], 1, MAX_THREADS, "THREADS");
        arg = 3;
    }
    if (arg >= argc)
        usage();
    for (t = 0; t < 4; t++)
        if (strcmp(argv[arg], modeNames[t]) == 0)
            break;
    if (t == 4)
        usage();
    mode = (enum mode)t;
    sized = mode == TCP_ECHO || mode == UDP_ECHO;
    if (argc - arg != (sized ? 6 : 5))
        usage();

    port = parseLong(argv[arg + 2], 1, 65535, "PORT");
    parseTarget(argv[arg + 1], port);
    conns = parseLong(argv[arg + 3], 1, MAX_CONNS, "CONNS");
    if (sized)
        size = mode == UDP_ECHO
                   ? parseLong(argv[arg + 4], UDP_HEADER, UDP_MAX_SIZE, "SIZE")
                   : parseLong(argv[arg + 4], 1, 1 << 30, "SIZE");
    seconds = parseLong(argv[argc - 1], 1, MAX_SECONDS, "SECONDS");
    if (threads > conns)
        threads = conns;

    /* Watchdog: connecting takes at most 10 s, closing is immediate. */
    alarm((unsigned)(seconds + 30));
    signal(SIGPIPE, SIG_IGN);
    for (t = 0; t < (long)sizeof(pattern); t++)
        pattern[t] = (unsigned char)(t % PERIOD);

    pthread_barrier_init(&connected, NULL, (unsigned)threads);
    memset(workers, 0, sizeof(workers));
    for (t = 0; t < threads; t++) {
        struct worker *w = &workers[t];
        int i;

        w->nconns = (int)(conns / threads + (t < conns % threads));
        w->conns = calloc((size_t)w->nconns, sizeof(struct conn));
        if (w->conns == NULL)
            die("calloc");
        for (i = 0; i < w->nconns; i++) {
            w->conns[i].fd = -1;
            w->conns[i].id = (uint32_t)(i * threads + t);
            if (mode == UDP_ECHO) {
                w->conns[i].slots = calloc(UDP_WINDOW, sizeof(struct slot));
                if (w->conns[i].slots == NULL)
                    die("calloc");
            }
        }
    }
    for (t = 1; t < threads; t++)
        if (pthread_create(&workers[t].thread, NULL, runWorker, &workers[t]))
            die("pthread_create");
    runWorker(&workers[0]);
    for (t = 1; t < threads; t++)
        pthread_join(workers[t].thread, NULL);

    memset(&total, 0, sizeof(total));
    for (t = 0; t < threads; t++)
        merge(&total, &workers[t].stats);
    report(&total, conns, threads);
    return 0;
}
