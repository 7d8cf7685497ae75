/*
 * chatload: the load generator behind bench/chat.py.
 *
 * One file, libc only.  bench/chat.py compiles it at run time
 * (gcc -O2 -o TMPDIR/chatload bench/chatload.c).
 *
 *   chatload [-p PROCS] [-n] HOST PORT CLIENTS SENDERS RATE SECONDS
 *
 * Opens CLIENTS TCP connections to a chat server (TCP_NODELAY on), sends
 * "u<P>_<N>" as each connection's first line when -n is given (netd takes
 * the first line as the nickname), waits for the joins to settle (3 s after
 * start-up, the same moment in every process), then for
 * SECONDS the first SENDERS connections send RATE lines a second in total,
 * evenly paced, each carrying its send time:
 *
 *     M <send time in ns> <pad to 64 bytes>\n
 *
 * Every connection reads everything it is sent; each line holding
 * "M <time>" is one delivery, and now - time its delivery latency.  After
 * the sending window, one more second is allowed for deliveries to arrive.
 * Lines the server adds ("<nick> ", "<user5> ") before the "M" are
 * ignored, so any broadcast chat can be measured.
 *
 * With -p PROCS the connections, the senders and the rate are split between
 * PROCS forked processes (each its own epoll loop), so that the generator
 * is not the bottleneck.  They count into one shared histogram of 10 us
 * latency buckets up to 5 s, and the parent prints one line of JSON.
 *
 * With -P PORT2 (and -p 2 or more), the odd-numbered processes connect to
 * PORT2 instead and send nothing: two chat servers sharing rooms (netd
 * with a Redis hub), senders on the first; what those processes receive is
 * also counted apart ("remote_*": publish on one server, receipt on the
 * other).
 *
 * Safety: HOST must be a loopback address, SECONDS is capped at 120, and an
 * alarm() kills the process if it overruns its time budget.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_PER_S 1000000000LL
#define MAX_CLIENTS 20000
#define MAX_SECONDS 120
#define BUCKET_NS 10000LL
#define BUCKETS 500000
#define LINE_BYTES 64
#define BUFSZ 65536

typedef struct {
    int fd;
    char in[BUFSZ];
    size_t inLen;
    char out[BUFSZ];
    size_t outLen;
} Conn;

/* Shared by every process (an anonymous shared mapping made before fork). */
typedef struct {
    long long deliveries, sent, tooLate, sendStalls, remoteDeliveries;
    uint32_t histogram[BUCKETS];
    uint32_t remoteHistogram[BUCKETS];
} Totals;

/* Whether this process's connections go to the second server (-P). */
static int remote;

static Conn *conns;
static Totals *totals;
#define ADD(field, n) __atomic_fetch_add(&totals->field, (n), __ATOMIC_RELAXED)

static long long now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void flush(Conn *c) {
    while (c->outLen) {
        ssize_t n = send(c->fd, c->out, c->outLen, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                return;
            die("send");
        }
        memmove(c->out, c->out + n, c->outLen - n);
        c->outLen -= n;
    }
}

static void queue(Conn *c, const char *data, size_t len) {
    if (c->outLen + len > BUFSZ) {
        ADD(sendStalls, 1);
        return;
    }
    memcpy(c->out + c->outLen, data, len);
    c->outLen += len;
    flush(c);
}

static void parse(Conn *c, long long windowStart, long long windowEnd) {
    char *p = c->in, *end = c->in + c->inLen, *nl;
    while ((nl = memchr(p, '\n', end - p))) {
        char *m = p;
        while (m + 2 < nl && !(m[0] == 'M' && m[1] == ' '))
            m++;
        if (m + 2 < nl) {
            long long t = strtoll(m + 2, NULL, 10);
            if (t >= windowStart && t < windowEnd) {
                long long latency = now() - t;
                long long bucket = latency / BUCKET_NS;
                if (bucket < 0)
                    bucket = 0;
                if (bucket >= BUCKETS)
                    bucket = BUCKETS - 1;
                ADD(histogram[bucket], 1);
                ADD(deliveries, 1);
                if (remote) {
                    ADD(remoteHistogram[bucket], 1);
                    ADD(remoteDeliveries, 1);
                }
            } else if (t >= windowEnd) {
                ADD(tooLate, 1);
            }
        }
        p = nl + 1;
    }
    c->inLen = end - p;
    memmove(c->in, p, c->inLen);
}

static double percentileOf(const uint32_t *histogram, double q) {
    long long total = 0, seen = 0;
    for (int i = 0; i < BUCKETS; i++)
        total += histogram[i];
    if (!total)
        return 0;
    long long rank = (long long)(q * total);
    if (rank >= total)
        rank = total - 1;
    for (int i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (seen > rank)
            return (i + 0.5) * BUCKET_NS / 1e6;
    }
    return BUCKETS * BUCKET_NS / 1e6;
}

static double percentile(double q) { return percentileOf(totals->histogram, q); }

static int run(const char *host, int port, int nclients, int senders,
               double rate, int seconds, int nick, int id, long long start) {
    conns = calloc(nclients, sizeof(Conn));
    if (!conns)
        die("calloc");
    int ep = epoll_create1(0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    for (int i = 0; i < nclients; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0)
            die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
            die("connect");
        /* Pace the connections: a full accept queue makes the kernel reset
         * connections the server then fails to accept (ncat quits on that). */
        usleep(2000);
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
        if (nick) {
            char line[64];
            int n = snprintf(line, sizeof line, "u%d_%d\n", id, i);
            queue(&conns[i], line, n);
        }
    }
    struct epoll_event events[256];
    /* Settle: read greetings and join notices until the common start. */
    while (now() < start) {
        int n = epoll_wait(ep, events, 256, 50);
        for (int k = 0; k < n; k++) {
            Conn *c = &conns[events[k].data.u32];
            ssize_t r = recv(c->fd, c->in, BUFSZ, 0);
            if (r == 0)
                die("server closed a connection while settling");
        }
    }
    for (int i = 0; i < nclients; i++)
        conns[i].inLen = 0;
    long long windowEnd = start + seconds * NS_PER_S;
    long long stop = windowEnd + NS_PER_S;
    double interval = rate > 0 ? NS_PER_S / rate : 0;
    long long next = start;
    long long k = 0;
    char line[LINE_BYTES + 1];
    while (1) {
        long long t = now();
        if (t >= stop)
            break;
        long long wait = (next > t && next < windowEnd) ? (next - t) / 1000000 : 1;
        if (wait > 5)
            wait = 5;
        int n = epoll_wait(ep, events, 256, (int)wait);
        for (int e = 0; e < n; e++) {
            Conn *c = &conns[events[e].data.u32];
            for (;;) {
                ssize_t r = recv(c->fd, c->in + c->inLen, BUFSZ - c->inLen, 0);
                if (r > 0) {
                    c->inLen += r;
                    parse(c, start, windowEnd);
                    if (c->inLen == BUFSZ)
                        c->inLen = 0; /* an absurd line: drop it */
                    continue;
                }
                if (r == 0)
                    die("server closed a connection");
                if (errno == EAGAIN || errno == EINTR)
                    break;
                die("recv");
            }
        }
        /* Lines due now are stamped just before they are sent, after the
         * deliveries above were read, so that the time spent reading them
         * is not counted as the server's latency. */
        t = now();
        while (rate > 0 && senders > 0 && t >= next && next < windowEnd) {
            Conn *c = &conns[k % senders];
            int m = snprintf(line, sizeof line, "M %lld ", t);
            memset(line + m, 'x', LINE_BYTES - 1 - m);
            line[LINE_BYTES - 1] = '\n';
            queue(c, line, LINE_BYTES);
            ADD(sent, 1);
            k++;
            next = start + (long long)(k * interval);
        }
        for (int i = 0; i < senders && i < nclients; i++)
            if (conns[i].outLen)
                flush(&conns[i]);
    }
    return 0;
}

int main(int argc, char **argv) {
    int procs = 1, nick = 0, opt, port2 = 0;
    while ((opt = getopt(argc, argv, "p:nP:")) != -1) {
        if (opt == 'p')
            procs = atoi(optarg);
        else if (opt == 'P')
            port2 = atoi(optarg);
        else if (opt == 'n')
            nick = 1;
        else
            return 2;
    }
    if (argc - optind != 6) {
        fprintf(stderr, "usage: chatload [-p PROCS] [-n] [-P PORT2] HOST PORT CLIENTS SENDERS RATE SECONDS\n");
        return 2;
    }
    const char *host = argv[optind];
    int port = atoi(argv[optind + 1]);
    int clients = atoi(argv[optind + 2]);
    int senders = atoi(argv[optind + 3]);
    double rate = atof(argv[optind + 4]);
    int seconds = atoi(argv[optind + 5]);
    if (strncmp(host, "127.", 4) != 0) {
        fprintf(stderr, "chatload: HOST must be a loopback address\n");
        return 2;
    }
    if (seconds < 1 || seconds > MAX_SECONDS || clients < 1 || clients > MAX_CLIENTS ||
        procs < 1 || procs > 64 || senders > clients) {
        fprintf(stderr, "chatload: arguments out of range\n");
        return 2;
    }
    struct rlimit rl = {clients + 64, clients + 64};
    setrlimit(RLIMIT_NOFILE, &rl);
    alarm(seconds + 30);
    totals = mmap(NULL, sizeof(Totals), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (totals == MAP_FAILED)
        die("mmap");
    /* Every process connects, then all start sending at the same moment. */
    long long start = now() + 3 * NS_PER_S;
    int sendProcs = port2 ? (procs + 1) / 2 : procs;
    for (int p = 0; p < procs; p++) {
        int share = clients / procs + (p < clients % procs);
        int sendShare = senders / procs + (p < senders % procs);
        if (port2) {
            remote = p % 2;
            sendShare = remote ? 0 : senders / sendProcs + (p / 2 < senders % sendProcs);
        }
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            alarm(seconds + 30);
            return run(host, remote ? port2 : port, share, sendShare,
                       rate * sendShare / (senders ? senders : 1),
                       seconds, nick, p, start);
        }
    }
    int status, failed = 0;
    while (wait(&status) > 0)
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            failed = 1;
    if (failed)
        return 1;
    printf("{\"sent\": %lld, \"deliveries\": %lld, \"seconds\": %d, \"clients\": %d, "
           "\"p50_ms\": %.3f, \"p99_ms\": %.3f, \"max_ms\": %.3f, "
           "\"late\": %lld, \"send_stalls\": %lld, \"remote_deliveries\": %lld, "
           "\"remote_p50_ms\": %.3f, \"remote_p99_ms\": %.3f}\n",
           totals->sent, totals->deliveries, seconds, clients, percentile(0.5),
           percentile(0.99), percentile(1.0), totals->tooLate, totals->sendStalls,
           totals->remoteDeliveries, percentileOf(totals->remoteHistogram, 0.5),
           percentileOf(totals->remoteHistogram, 0.99));
    return 0;
}
