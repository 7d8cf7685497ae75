/*
 * epoll_echo: the "C epoll" column of bench/compare.py, the limit of what a
 * single-threaded echo server can do on this machine.
 *
 * One file, libc only.  bench/compare.py compiles it at run time
 * (gcc -O2 -o TMPDIR/epoll_echo bench/epoll_echo.c); no binary is committed.
 *
 *   epoll_echo PORT
 *
 * Serves TCP echo and UDP echo on 127.0.0.1:PORT with one epoll loop, level
 * triggered.  A TCP read is written straight back; whatever the kernel does
 * not take at once is kept in a per-connection buffer, and the connection
 * stops reading until that buffer has drained (flow control).  It runs until
 * it is killed.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFSIZE 65536

struct conn {
    int fd;
    char *pending; /* bytes read but not yet written back */
    size_t length;
};

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int listenOn(int type, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    int one = 1;
    int fd = socket(AF_INET, type | SOCK_NONBLOCK, 0);

    if (fd < 0)
        die("socket");
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("bind");
    if (type == SOCK_STREAM && listen(fd, 4096) < 0)
        die("listen");
    return fd;
}

static void closeConn(int ep, struct conn *c)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    free(c->pending);
    free(c);
}

/* Write out c->pending; return -1 on a fatal error. */
static int flush(int ep, struct conn *c)
{
    while (c->length > 0) {
        ssize_t n = send(c->fd, c->pending, c->length, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        memmove(c->pending, c->pending + n, c->length - n);
        c->length -= n;
    }
    free(c->pending);
    c->pending = NULL;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    return 0;
}

/* Read once and echo; return -1 when the connection is finished. */
static int echo(int ep, struct conn *c, char *buf)
{
    ssize_t n = recv(c->fd, buf, BUFSIZE, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN))
        return -1;
    if (n < 0)
        return 0;
    ssize_t sent = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (sent < 0 && errno != EAGAIN)
        return -1;
    if (sent < 0)
        sent = 0;
    if (sent < n) { /* keep the rest, wait for writability, stop reading */
        c->pending = malloc(n - sent);
        if (c->pending == NULL)
            return -1;
        memcpy(c->pending, buf + sent, n - sent);
        c->length = n - sent;
        struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    }
    return 0;
}

int main(int argc, char **argv)
{
    static char buf[BUFSIZE];
    struct epoll_event events[256];
    struct conn tcpListener = {0}, udpSocket = {0};

    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    tcpListener.fd = listenOn(SOCK_STREAM, port);
    udpSocket.fd = listenOn(SOCK_DGRAM, port);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &tcpListener};
    epoll_ctl(ep, EPOLL_CTL_ADD, tcpListener.fd, &ev);
    ev.data.ptr = &udpSocket;
    epoll_ctl(ep, EPOLL_CTL_ADD, udpSocket.fd, &ev);
    printf("epoll_echo listening on tcp+udp:127.0.0.1:%d\n", port);
    fflush(stdout);

    for (;;) {
        int count = epoll_wait(ep, events, 256, -1);
        if (count < 0 && errno != EINTR)
            die("epoll_wait");
        for (int i = 0; i < count; i++) {
            struct conn *c = events[i].data.ptr;
            if (c == &tcpListener) {
                int fd;
                while ((fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    struct conn *new = calloc(1, sizeof *new);
                    if (new == NULL) {
                        close(fd);
                        continue;
                    }
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    new->fd = fd;
                    struct epoll_event add = {.events = EPOLLIN, .data.ptr = new};
                    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &add);
                }
            } else if (c == &udpSocket) {
                for (int k = 0; k < 64; k++) { /* bounded, then let TCP run */
                    struct sockaddr_in from;
                    socklen_t fromLength = sizeof from;
                    ssize_t n = recvfrom(c->fd, buf, BUFSIZE, 0,
                                         (struct sockaddr *)&from, &fromLength);
                    if (n < 0)
                        break;
                    sendto(c->fd, buf, n, 0, (struct sockaddr *)&from, fromLength);
                }
            } else if (events[i].events & EPOLLOUT) {
                if (flush(ep, c) < 0)
                    closeConn(ep, c);
            } else if (echo(ep, c, buf) < 0) {
                closeConn(ep, c);
            }
        }
    }
}
