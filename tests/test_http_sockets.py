# -*- test-case-name: tests.test_http_sockets -*-
"""
The http service with real sockets on 127.0.0.1 port 0 (plain and TLS),
and end to end through the real C{twistd -n netd} process.

Clients are plain blocking sockets run in threads, so that what is tested
is what a real client sees on the wire: statuses delivered before a close,
no reset, bytes intact, a non-reader cut.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import time

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

import netd.daemon
import tests.test_listeners
import netd.services
from netd.tls import MOZILLA_INTERMEDIATE_CIPHERS
from tests.httpsupport import LARGE_SIZE, SMALL, largeContent, makeTree, readResponses
from tests.support import escape, writeSelfSignedCertificate
from tests.test_endtoend import Daemon, freePorts
from tests.test_http_mount import clientFrame, serverFrame, upgradeRequest, webType
from tests.test_listeners import LOOPBACK, NetdTestMixin, tcpExchange, waitFor


def request(path: str, *headers: str, method: str = "GET") -> bytes:
    """
    @param path: The target.
    @param headers: Extra C{Name: value} lines.
    @param method: The method.
    @return: An HTTP/1.1 request with C{Host}.
    """
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def tlsExchange(port: int, payload: bytes, context: ssl.SSLContext) -> bytes:
    """
    Send bytes over TLS and read until the server closes. Blocking.

    @param port: The server's port on 127.0.0.1.
    @param payload: What to send.
    @param context: The client's TLS context.
    @return: Everything received.
    """
    with socket.create_connection((LOOPBACK, port), timeout=20) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(payload)
            chunks = []
            while True:
                try:
                    data = tls.recv(1 << 16)
                except (ssl.SSLEOFError, ConnectionResetError):
                    break
                if not data:
                    break
                chunks.append(data)
            return b"".join(chunks)


def clientContext() -> ssl.SSLContext:
    """
    @return: A TLS client context that accepts the self-signed test
        certificate.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def nonReader(port: int, payload: bytes, wait: float) -> tuple[bool, float]:
    """
    Send a request, never read, and see when the server gives up. Blocking.

    @param port: The server's port on 127.0.0.1.
    @param payload: The request.
    @param wait: The most seconds to wait.
    @return: Whether the server cut the connection, and after how long.
    """
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect((LOOPBACK, port))
        sock.sendall(payload)
        started = time.monotonic()
        while time.monotonic() - started < wait:
            time.sleep(0.2)
            try:
                sock.send(b"x")
            except OSError:
                return True, time.monotonic() - started
        return False, time.monotonic() - started


class SocketTests(NetdTestMixin, TestCase):
    """
    An http service on a real loopback port.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.root, self.secret = makeTree(base)
        self.base = os.path.abspath(base)

    def serve(
        self, settings: str = "", listen: str = "tcp:0:interface=127.0.0.1"
    ) -> int:
        """
        Start an http service serving the test tree.

        @param settings: Extra TOML lines for the service.
        @param listen: Its listener.
        @return: Its port.
        """
        service = self.startNetd(
            f'[services.www]\ntype = "http"\nlisten = ["{listen}"]\n'
            f"root = {json.dumps(self.root)}\n{settings}\n"
        )
        self.netd = service
        return self.portNumber(service, "www", "stream")

    async def test_keepAliveOverSocket(self) -> None:
        """
        Pipelined requests on one socket get their responses in order,
        including a large file sent with C{sendfile}, and the session's byte
        count includes it.
        """
        events = self.captureEvents()
        port = self.serve()
        payload = request("/small.html") + request("/large.bin") + request("/notes.txt")
        exchange = await deferToThread(tcpExchange, LOOPBACK, port, payload)
        responses, rest = readResponses(exchange.received)
        self.assertEqual(rest, b"")
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        self.assertEqual(responses[0].body, SMALL)
        self.assertEqual(responses[1].body, largeContent())
        self.assertFalse(exchange.reset)
        await waitFor(
            lambda: any(e.get("service") == "www" and "bytesOut" in e for e in events),
            what="the session event",
        )
        session = [e for e in events if e.get("service") == "www" and "bytesOut" in e]
        self.assertEqual(session[0]["bytesOut"], len(exchange.received))

    async def test_largeFileStartsWithSendfile(self) -> None:
        """
        On a plain socket, whose transport writes the head straight through
        (L{netd.transport.WriteThroughServer}) and so has nothing queued,
        the body of a large file starts with C{sendfile}, not with reads
        and buffered writes.
        """
        calls: list[str] = []
        realSendfile, realPread = os.sendfile, os.pread

        def sendfile(*args: object) -> int:
            calls.append("sendfile")
            return realSendfile(*args)  # type: ignore[arg-type]

        def pread(*args: object) -> bytes:
            calls.append("pread")
            return realPread(*args)  # type: ignore[arg-type]

        self.patch(os, "sendfile", sendfile)
        self.patch(os, "pread", pread)
        port = self.serve()
        exchange = await deferToThread(
            tcpExchange, LOOPBACK, port, request("/large.bin")
        )
        responses, rest = readResponses(exchange.received)
        self.assertEqual(responses[0].body, largeContent())
        self.assertEqual(calls[0], "sendfile")

    async def test_headAndBodyCorkedTogether(self) -> None:
        """
        A large file's head is written with C{TCP_CORK} set, so that it
        leaves in full segments with the first C{sendfile} bytes, and the
        cork is always taken off again afterwards (or the socket would hold
        back the end of every later response for 200 ms).
        """
        corks: list[int] = []
        realSetsockopt = socket.socket.setsockopt

        def setsockopt(
            self: socket.socket, level: int, option: int, value: object
        ) -> None:
            if level == socket.IPPROTO_TCP and option == socket.TCP_CORK:
                corks.append(int(value))  # type: ignore[call-overload]
            realSetsockopt(self, level, option, value)  # type: ignore[call-overload]

        self.patch(socket.socket, "setsockopt", setsockopt)
        port = self.serve()
        exchange = await deferToThread(
            tcpExchange, LOOPBACK, port, request("/large.bin") + request("/large.bin")
        )
        responses, rest = readResponses(exchange.received)
        self.assertEqual([r.body for r in responses], [largeContent()] * 2)
        self.assertEqual(corks, [1, 0, 1, 0])

    async def test_statusesBeforeClose(self) -> None:
        """
        An oversized request line and header section get their C{414} and
        C{431} on the wire (plain twistd web closes without a status), with
        no reset even though the client was still sending.
        """
        port = self.serve("max_request_line = 1024\nmax_header_size = 1024\n")
        for payload, status in [
            (b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: a\r\n\r\n", b"414"),
            (
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n",
                b"431",
            ),
            (b"GET / HTTP/1.1\r\n\r\n", b"400"),
        ]:
            exchange = await deferToThread(
                tcpExchange, LOOPBACK, port, payload, halfClose=False
            )
            self.assertTrue(
                exchange.received.startswith(b"HTTP/1.1 " + status + b" "),
                exchange.received[:100],
            )
            self.assertFalse(exchange.reset, status)

    async def test_slowlorisCut(self) -> None:
        """
        A client that never finishes its head gets C{408} and is closed
        after C{header_timeout}.
        """
        port = self.serve("header_timeout = 1\n")

        def slowloris() -> tuple[bytes, float]:
            with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                started = time.monotonic()
                sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
                received = b""
                for i in range(40):
                    try:
                        sock.sendall(f"X-{i}: a\r\n".encode())
                    except OSError:
                        break
                    sock.settimeout(0.25)
                    try:
                        data = sock.recv(4096)
                    except socket.timeout:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    received += data
                return received, time.monotonic() - started

        received, elapsed = await deferToThread(slowloris)
        self.assertTrue(received.startswith(b"HTTP/1.1 408 "), received)
        self.assertLess(elapsed, 4)

    async def test_nonReaderCut(self) -> None:
        """
        A client that requests a large file and never reads is cut after
        C{send_timeout} (plain twistd web keeps it forever), and netd keeps
        serving others.
        """
        port = self.serve("send_timeout = 1\n")
        cut, elapsed = await deferToThread(nonReader, port, request("/large.bin"), 10)
        self.assertTrue(cut)
        self.assertLess(elapsed, 5)
        exchange = await deferToThread(
            tcpExchange, LOOPBACK, port, request("/notes.txt")
        )
        self.assertIn(b"plain text\n", exchange.received)

    async def test_symlinkEscapeOverSocket(self) -> None:
        """
        Over a real socket too, a link out of the root leaks nothing.
        """
        port = self.serve()
        payload = request("/escape.txt") + request("/escape-dir/secret.txt")
        exchange = await deferToThread(tcpExchange, LOOPBACK, port, payload)
        responses, _ = readResponses(exchange.received)
        self.assertEqual([r.status for r in responses], [404, 404])
        self.assertNotIn(b"outside the document root", exchange.received)

    async def test_tls(self) -> None:
        """
        The same service on an C{ssl:} listener serves over TLS 1.2 or later,
        with Mozilla's intermediate ciphers; large files arrive intact.
        """
        key, cert = writeSelfSignedCertificate(self.base)
        port = self.serve(
            listen=f"ssl:0:privateKey={escape(key)}:certKey={escape(cert)}"
            ":interface=127.0.0.1".replace("\\", "\\\\")
        )
        payload = request("/small.html") + request("/large.bin", "Connection: close")
        received = await deferToThread(tlsExchange, port, payload, clientContext())
        responses, rest = readResponses(received)
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(responses[1].body, largeContent())

        def negotiated(context: ssl.SSLContext) -> tuple[str, str]:
            with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    return tls.version() or "", (tls.cipher() or ("",))[0]

        version, cipher = await deferToThread(negotiated, clientContext())
        self.assertIn(version, ("TLSv1.2", "TLSv1.3"))
        twelve = clientContext()
        twelve.maximum_version = ssl.TLSVersion.TLSv1_2
        version, cipher = await deferToThread(negotiated, twelve)
        self.assertEqual(version, "TLSv1.2")
        self.assertIn(cipher, MOZILLA_INTERMEDIATE_CIPHERS.split(":"))
        legacy = clientContext()
        legacy.maximum_version = ssl.TLSVersion.TLSv1_2
        legacy.set_ciphers("AES128-SHA:AES256-SHA:AES128-GCM-SHA256")
        with self.assertRaises((ssl.SSLError, ConnectionResetError)):
            await deferToThread(negotiated, legacy)

    async def test_webSocketMount(self) -> None:
        """
        A WebSocket under the mount path is upgraded over a real socket and
        echoes messages; the static files on the same port still work.
        """
        types = dict(netd.services.serviceTypes())
        types["web"] = webType()
        for module in (netd.services, netd.daemon, tests.test_listeners):
            self.patch(module, "serviceTypes", lambda: types)
        port = self.serve(
            'chat = "talk"\n[services.talk]\ntype = "web"\n'
            'listen = ["tcp:0:interface=127.0.0.1"]\n'
        )

        def talk() -> tuple[bytes, bytes]:
            handshake, accept = upgradeRequest()
            with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                sock.sendall(handshake)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(4096)
                head, _, rest = head.partition(b"\r\n\r\n")
                sock.sendall(clientFrame("hello"))
                expected = serverFrame("echo: hello")
                while len(rest) < len(expected):
                    rest += sock.recv(4096)
                return head, rest

        head, frame = await deferToThread(talk)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertEqual(frame, serverFrame("echo: hello"))
        exchange = await deferToThread(
            tcpExchange, LOOPBACK, port, request("/notes.txt")
        )
        self.assertIn(b"plain text\n", exchange.received)


class EndToEndTests(TestCase):
    """
    The http service in the real C{twistd -n netd} process.
    """

    timeout = 60

    async def test_serves(self) -> None:
        """
        netd started by twistd serves files, its status page and its access
        log; on C{SIGTERM} it stops cleanly, having written the log.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        root, _ = makeTree(directory)
        (port,) = freePorts(1)
        log = os.path.join(directory, "access.log")
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(
                f'[services.www]\ntype = "http"\n'
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
                f"root = {json.dumps(root)}\n"
                f"access_log_file = {json.dumps(log)}\n"
                'status_path = "/.netd/status"\n'
            )
        args = ["-n", "--pidfile=", "netd"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        daemon = Daemon(args + ["--config", config], directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(rf"www listening on tcp:127\.0\.0\.1:{port}")
        payload = (
            request("/small.html")
            + request("/large.bin", "Range: bytes=10-19")
            + request("/.netd/status")
            + request("/missing")
        )
        exchange = await deferToThread(tcpExchange, LOOPBACK, port, payload)
        responses, _ = readResponses(exchange.received)
        self.assertEqual([r.status for r in responses], [200, 206, 200, 404])
        self.assertEqual(responses[0].body, SMALL)
        self.assertEqual(responses[1].body, largeContent()[10:20])
        status = json.loads(responses[2].body)
        self.assertIn("www", status["services"])
        self.assertGreaterEqual(status["uptime"], 0)
        code = await daemon.stop()
        output = daemon.stdout + daemon.stderr
        self.assertIn(code, (0, -15), output)
        self.assertNotIn("Traceback", output)
        with open(log) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 4, lines)
        self.assertIn('"GET /large.bin HTTP/1.1" 206 10', lines[1])
        self.assertEqual(LARGE_SIZE, os.path.getsize(os.path.join(root, "large.bin")))

    async def test_defaultPage(self) -> None:
        """
        Without a root, netd's page lists the services running.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        port, echoPort = freePorts(2)
        config = os.path.join(directory, "netd.toml")
        with open(config, "w") as f:
            f.write(
                f'[services.http]\ntype = "http"\n'
                f'listen = ["tcp:{port}:interface=127.0.0.1"]\n'
                f'[services.echo]\ntype = "echo"\n'
                f'listen = ["tcp:{echoPort}:interface=127.0.0.1"]\n'
            )
        args = ["-n", "--pidfile=", "netd"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        daemon = Daemon(args + ["--config", config], directory)
        self.addCleanup(daemon.kill)
        daemon.start()
        await daemon.waitForOutput(rf"http listening on tcp:127\.0\.0\.1:{port}")
        exchange = await deferToThread(tcpExchange, LOOPBACK, port, request("/"))
        responses, _ = readResponses(exchange.received)
        page = responses[0].body.decode()
        self.assertIn("multi-service network daemon", page)
        self.assertIn(f"tcp:{echoPort}:interface=127.0.0.1", page)
        await daemon.stop()
