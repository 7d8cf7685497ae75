# -*- test-case-name: tests.test_tls -*-
"""
Tests for L{netd.tls}: netd's ALPN policy on C{ssl:} listeners.

Two layers:

  - L{ServerTLS.selectProtocol} and L{sslContextFactory} on their own, with
    handshakes between two in-memory pyOpenSSL connections;
  - a matrix against the real C{twistd -n netd}: every service type that
    runs on C{ssl:} (echo, discard, http, chat) x every kind of ALPN offer a
    client makes (none, C{http/1.1}, C{h2,http/1.1} as curl and browsers do,
    C{h2} only, an unknown name) x TLS 1.2 and 1.3, each combination checked
    for a completed handshake, the protocol negotiated, and the service
    really working over it (issue 12: Twisted 26.10 aborted every handshake
    that offered ALPN).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from twisted.protocols.wire import Echo
from twisted.trial.unittest import SynchronousTestCase

from netd.services import serviceTypes
from netd.tls import (
    FLUSH_EVERY,
    RecordBatchingTLS,
    ServerTLS,
    TLSFactory,
    sslContextFactory,
    tlsServerFactory,
)
from tests.chatsupport import Netd
from tests.httpsupport import h2Exchange, readResponses
from tests.support import escape, writeSelfSignedCertificate

LOOPBACK = "127.0.0.1"

#: What clients offer: nothing (C{nc}-style TLS clients, C{curl
#: --no-alpn}), HTTP/1.1 only (C{curl --http1.1}), what curl and browsers
#: offer by default, HTTP/2 only, a name nobody speaks.
OFFERS: tuple[tuple[str, ...] | None, ...] = (
    None,
    ("http/1.1",),
    ("h2", "http/1.1"),
    ("h2",),
    ("foo",),
)

VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)

#: The body of the file the http service of the matrix serves.
FILE_BODY = b"served over TLS\n" * 64

#: The service types that run on an C{ssl:} listener, by their name in
#: the matrix's configuration.
SERVICES = ("echo", "discard", "web", "chat")


def tlsListener(keyPath: str, certPath: str, port: int = 0) -> str:
    """
    @param keyPath: The private key file.
    @param certPath: The certificate file.
    @param port: The port (0: chosen by the system).
    @return: An C{ssl:} listener on the loopback address, as a TOML string.
    """
    return json.dumps(
        f"ssl:{port}:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
        f":interface={LOOPBACK}"
    )


def handshake(
    server: ServerTLS,
    offered: Sequence[bytes] | None,
    maximum: int | None = None,
) -> tuple[bytes, bytes]:
    """
    Run one TLS handshake between a pyOpenSSL client and a server connection
    of C{server}, in memory.

    @param server: The server's connection creator.
    @param offered: The ALPN protocols the client offers (L{None}: no ALPN
        extension at all).
    @param maximum: The client's highest protocol version
        (C{SSL.TLS1_2_VERSION}, ...), or L{None} for OpenSSL's.
    @return: The protocol each side negotiated, the server's first
        (C{b""}: none).
    @raise SSL.Error: If the handshake fails.
    """
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    if offered is not None:
        context.set_alpn_protos(list(offered))
    if maximum is not None:
        context.set_max_proto_version(maximum)
    client = SSL.Connection(context, None)
    client.set_connect_state()
    serving = server.serverConnectionForTLS(None)
    serving.set_accept_state()
    done = {id(client): False, id(serving): False}
    for _ in range(20):
        for connection, peer in ((client, serving), (serving, client)):
            # WantReadError: this side waits for its peer's next flight. (Not a
            # module-level `suppress`: trial reads that name as warning filters.)
            if not done[id(connection)]:
                with contextlib.suppress(SSL.WantReadError):
                    connection.do_handshake()
                    done[id(connection)] = True
            with contextlib.suppress(SSL.WantReadError):
                peer.bio_write(connection.bio_read(1 << 16))
        if all(done.values()):
            return (
                serving.get_alpn_proto_negotiated(),
                client.get_alpn_proto_negotiated(),
            )
    raise AssertionError("the handshake did not finish")


class SelectProtocolTests(SynchronousTestCase):
    """
    Tests for L{ServerTLS.selectProtocol}, the ALPN select callback.
    """

    def test_serverPreference(self) -> None:
        """
        Of the protocols both sides speak, the server's most preferred is
        chosen, whatever the client's order.
        """
        server = ServerTLS(None, (b"h2", b"http/1.1"))
        self.assertEqual(server.selectProtocol(None, [b"http/1.1", b"h2"]), b"h2")
        self.assertEqual(server.selectProtocol(None, [b"h2", b"http/1.1"]), b"h2")

    def test_onlyWhatTheServiceSpeaks(self) -> None:
        """
        A client offering C{h2} first, as curl and browsers do, gets the
        one protocol an HTTP/1.1 service speaks.
        """
        server = ServerTLS(None, (b"http/1.1",))
        self.assertEqual(server.selectProtocol(None, [b"h2", b"http/1.1"]), b"http/1.1")

    def test_noOverlap(self) -> None:
        """
        With no protocol in common, the callback answers
        L{SSL.NO_OVERLAPPING_PROTOCOLS} (go on without ALPN), never an empty
        name (the C{internal_error} alert of issue 12).
        """
        self.assertIs(
            ServerTLS(None, (b"http/1.1",)).selectProtocol(None, [b"h2"]),
            SSL.NO_OVERLAPPING_PROTOCOLS,
        )
        self.assertIs(
            ServerTLS(None, ()).selectProtocol(None, [b"h2", b"http/1.1"]),
            SSL.NO_OVERLAPPING_PROTOCOLS,
        )

    def test_nothingOffered(self) -> None:
        """
        An empty offer selects nothing.
        """
        self.assertIs(
            ServerTLS(None, (b"http/1.1",)).selectProtocol(None, []),
            SSL.NO_OVERLAPPING_PROTOCOLS,
        )

    def test_protocolsKeptInOrder(self) -> None:
        """
        The protocols are kept as a tuple, in the order given.
        """
        self.assertEqual(
            ServerTLS(None, [b"h2", b"http/1.1"]).protocols, (b"h2", b"http/1.1")
        )
        self.assertEqual(ServerTLS(None).protocols, ())


class ContextFactoryTests(SynchronousTestCase):
    """
    Tests for L{sslContextFactory} and the handshakes of the contexts it
    builds.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        self.description = (
            f"ssl:0:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
        )

    def test_serverTLS(self) -> None:
        """
        L{sslContextFactory} returns a L{ServerTLS} with the protocols given,
        whose one context (built once) has netd's select callback and whose
        connections use that context.
        """
        server = sslContextFactory(self.description, (b"http/1.1",))
        self.assertIsInstance(server, ServerTLS)
        self.assertEqual(server.protocols, (b"http/1.1",))
        context = server.context()
        self.assertIs(server.context(), context)
        self.assertIs(server.serverConnectionForTLS(None).get_context(), context)
        self.assertEqual(sslContextFactory(self.description).protocols, ())

    def test_everyServiceType(self) -> None:
        """
        The ALPN names the service types declare: http speaks C{h2} then
        C{http/1.1}, the line and byte services none.
        """
        types = serviceTypes()
        self.assertEqual(types["http"].alpnProtocols, (b"h2", b"http/1.1"))
        for name in ("echo", "discard", "chat"):
            self.assertEqual(types[name].alpnProtocols, (), name)

    def test_handshakes(self) -> None:
        """
        In memory, over TLS 1.2 and 1.3: an http context with HTTP/2 on
        negotiates C{h2} with a client offering C{h2,http/1.1} or C{h2},
        C{http/1.1} with one offering only that; with HTTP/2 off, C{http/1.1}
        with a client offering C{h2,http/1.1} and no protocol with one
        offering only C{h2}; with a client offering nothing, and for a
        service with no ALPN name, the handshake completes with no protocol.
        """
        http2 = sslContextFactory(self.description, (b"h2", b"http/1.1"))
        http = sslContextFactory(self.description, (b"http/1.1",))
        echo = sslContextFactory(self.description, ())
        cases: list[tuple[ServerTLS, list[bytes] | None, bytes]] = [
            (http2, [b"h2", b"http/1.1"], b"h2"),
            (http2, [b"h2"], b"h2"),
            (http2, [b"http/1.1"], b"http/1.1"),
            (http2, None, b""),
            (http, [b"h2", b"http/1.1"], b"http/1.1"),
            (http, [b"http/1.1"], b"http/1.1"),
            (http, [b"h2"], b""),
            (http, None, b""),
            (echo, [b"h2", b"http/1.1"], b""),
            (echo, None, b""),
        ]
        for maximum in (SSL.TLS1_2_VERSION, SSL.TLS1_3_VERSION):
            for server, offered, expected in cases:
                self.assertEqual(
                    handshake(server, offered, maximum),
                    (expected, expected),
                    (server.protocols, offered, maximum),
                )


def clientContext(
    certPath: str, offered: Sequence[str] | None, version: ssl.TLSVersion
) -> ssl.SSLContext:
    """
    @param certPath: The server's self-signed certificate, trusted.
    @param offered: The ALPN protocols to offer, or L{None} for none.
    @param version: The one TLS version to speak.
    @return: A verifying client context.
    """
    context = ssl.create_default_context(cafile=certPath)
    context.minimum_version = version
    context.maximum_version = version
    if offered is not None:
        context.set_alpn_protocols(list(offered))
    return context


def receiveAll(tls: ssl.SSLSocket) -> bytes:
    """
    @param tls: A TLS socket.
    @return: Everything until the server closes.
    """
    chunks = []
    while True:
        data = tls.recv(1 << 16)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def receiveLine(tls: ssl.SSLSocket) -> bytes:
    """
    @param tls: A TLS socket.
    @return: One line, its C{\\n} included (less if the stream ends).
    """
    line = b""
    while not line.endswith(b"\n"):
        data = tls.recv(1)
        if not data:
            break
        line += data
    return line


def useEcho(tls: ssl.SSLSocket, label: str) -> str | None:
    """
    @param tls: A connection to echo.
    @param label: Unique text for this combination.
    @return: What went wrong, or L{None}.
    """
    token = (label * 100).encode("ascii")
    tls.sendall(token)
    echoed = b""
    while len(echoed) < len(token):
        data = tls.recv(1 << 16)
        if not data:
            break
        echoed += data
    return None if echoed == token else f"echoed {echoed[:60]!r}"


def useDiscard(tls: ssl.SSLSocket, label: str) -> str | None:
    """
    @param tls: A connection to discard.
    @param label: Unique text for this combination.
    @return: What went wrong, or L{None}.
    """
    tls.sendall(b"d" * 65536)
    tls.settimeout(0.3)
    try:
        answer = tls.recv(4096)
    except socket.timeout:
        answer = None
    tls.settimeout(10)
    if answer is not None:
        return f"answered {answer[:60]!r}"
    # A TLS close in both directions: netd answers the client's close_notify.
    tls.unwrap()
    return None


def useHTTP(tls: ssl.SSLSocket, label: str) -> str | None:
    """
    @param tls: A connection to the http service.
    @param label: Unique text for this combination.
    @return: What went wrong, or L{None}.
    """
    tls.sendall(
        b"GET /f.txt HTTP/1.1\r\nHost: localhost\r\n"
        b"User-Agent: " + label.encode("ascii") + b"\r\nConnection: close\r\n\r\n"
    )
    responses, _ = readResponses(receiveAll(tls))
    if [r.status for r in responses] != [200]:
        return f"answered {[r.status for r in responses]}"
    if responses[0].body != FILE_BODY:
        return f"served {responses[0].body[:60]!r}"
    return None


def useHTTP2(tls: ssl.SSLSocket, label: str) -> str | None:
    """
    @param tls: A connection to the http service that negotiated C{h2}.
    @param label: Unique text for this combination.
    @return: What went wrong, or L{None}.
    """
    [(status, _, body)] = h2Exchange(
        tls, [("/f.txt", [("user-agent", label)])], close=True
    )
    if status != 200:
        return f"answered {status}"
    if body != FILE_BODY:
        return f"served {body[:60]!r}"
    return None


def useChat(tls: ssl.SSLSocket, label: str) -> str | None:
    """
    @param tls: A connection to chat.
    @param label: Unique text for this combination (the nickname).
    @return: What went wrong, or L{None}.
    """
    greeting = receiveLine(tls)
    if b"Welcome" not in greeting:
        return f"greeted {greeting!r}"
    tls.sendall(label.encode("ascii") + b"\n")
    joined = f"*** {label} joined #lobby".encode("ascii")
    lines = []
    for _ in range(20):
        line = receiveLine(tls)
        lines.append(line)
        if joined in line or not line:
            break
    if not any(joined in line for line in lines):
        return f"did not join: {lines!r}"
    return None


#: How each service of the matrix is used, by the ALPN protocol negotiated
#: (C{None}: none), and the protocols it negotiates, most preferred first.
USES: dict[
    str,
    tuple[dict[str | None, Callable[[ssl.SSLSocket, str], str | None]], list[str]],
] = {
    "echo": ({None: useEcho}, []),
    "discard": ({None: useDiscard}, []),
    "web": ({None: useHTTP, "http/1.1": useHTTP, "h2": useHTTP2}, ["h2", "http/1.1"]),
    "chat": ({None: useChat}, []),
}


class MatrixTests(SynchronousTestCase):
    """
    Every C{ssl:} service type x ALPN offer x TLS version, against one real
    C{twistd -n netd}.
    """

    def test_matrix(self) -> None:
        """
        For each of echo, discard, http and chat on an C{ssl:} listener, each
        ALPN offer of L{OFFERS} and TLS 1.2 and 1.3: the handshake completes
        at that version; http negotiates C{h2} when it is offered, else
        C{http/1.1} when that is, every other combination no protocol; and
        the service works over the connection (echo echoes, discard swallows
        and closes cleanly, http answers 200 with the file, over HTTP/2 when
        C{h2} was negotiated, chat greets and a nickname joins). Every
        failing combination is named in the one failure. netd stops cleanly
        afterwards.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(directory, "root"))
        with open(os.path.join(directory, "root", "f.txt"), "wb") as f:
            f.write(FILE_BODY)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        listen = tlsListener(keyPath, certPath)
        netd = Netd(
            "[netd]\nstats_interval = 3600\n"
            f'[services.echo]\ntype = "echo"\nlisten = [{listen}]\n'
            f'[services.discard]\ntype = "discard"\nlisten = [{listen}]\n'
            f'[services.web]\ntype = "http"\nlisten = [{listen}]\n'
            f"root = {json.dumps(os.path.join(directory, 'root'))}\n"
            f'[services.chat]\ntype = "chat"\nlisten = [{listen}]\n',
            directory,
        )
        self.addCleanup(netd.stop)
        netd.waitListening(len(SERVICES))
        failures = []
        combinations = 0
        for service in SERVICES:
            uses, alpns = USES[service]
            port = netd.addresses[(service, "ssl")]
            for version in VERSIONS:
                for offered in OFFERS:
                    combinations += 1
                    label = f"u{combinations}"
                    name = f"{service} over {version.name} offering {offered}"
                    expected = next(
                        (alpn for alpn in alpns if offered and alpn in offered), None
                    )
                    use = uses[expected]
                    problem = self.combination(
                        port,
                        clientContext(certPath, offered, version),
                        version,
                        expected,
                        lambda tls, use=use, label=label: use(tls, label),
                    )
                    if problem is not None:
                        failures.append(f"{name}: {problem}")
        self.assertEqual(combinations, 40)
        self.assertEqual(failures, [], "\n".join(failures))
        self.assertEqual(netd.stop(), 0, netd.output)
        self.assertNotIn("Traceback", netd.output)
        # Counted below TLS: records, not the 65536 bytes of plaintext.
        self.assertEqual(
            len(re.findall(r"discard session from .* \(closed\)", netd.output)),
            len(VERSIONS) * len(OFFERS),
            netd.output,
        )

    def combination(
        self,
        port: int,
        context: ssl.SSLContext,
        version: ssl.TLSVersion,
        expected: str | None,
        use: Callable[[ssl.SSLSocket], str | None],
    ) -> str | None:
        """
        Connect once and check the handshake, then use the service.

        @param port: The listener.
        @param context: The client's context.
        @param version: The TLS version it must negotiate.
        @param expected: The ALPN protocol it must negotiate.
        @param use: Uses the service; returns what went wrong, or L{None}.
        @return: What went wrong, or L{None}.
        """
        try:
            with socket.create_connection((LOOPBACK, port), timeout=10) as raw:
                with context.wrap_socket(raw, server_hostname="localhost") as tls:
                    negotiated = tls.version()
                    if negotiated != version.name.replace("TLSv1_", "TLSv1."):
                        return f"negotiated {negotiated}"
                    selected = tls.selected_alpn_protocol()
                    if selected != expected:
                        return f"ALPN selected {selected!r}, not {expected!r}"
                    return use(tls)
        except (OSError, ssl.SSLError) as e:
            return f"{type(e).__name__}: {e}"


class FlushOnCloseNotifyTests(SynchronousTestCase):
    """
    L{RecordBatchingTLS}: a client that sends its last data and its
    C{close_notify} together (C{echo hi | socat - OPENSSL:...}) gets the
    reply before netd's own C{close_notify}.
    """

    def exchange(self, protocol: type) -> tuple[bytes, bool]:
        """
        Handshake an in-memory pyOpenSSL client with a server of
        L{tlsServerFactory} over C{Echo}; send C{b"hi"} and C{close_notify}
        in one flight.

        @param protocol: The TLS transport class the factory uses.
        @return: What the client read, and whether it then read the server's
            C{close_notify}.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        description = json.loads(tlsListener(keyPath, certPath))
        clock = Clock()
        factory = tlsServerFactory(
            sslContextFactory(description), Factory.forProtocol(Echo), clock
        )
        factory.protocol = protocol
        server = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        assert server is not None
        transport = StringTransport()
        server.makeConnection(transport)
        client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        client.set_connect_state()

        def pump() -> None:
            for _ in range(10):
                with contextlib.suppress(SSL.WantReadError):
                    client.do_handshake()
                with contextlib.suppress(SSL.WantReadError):
                    server.dataReceived(client.bio_read(1 << 16))
                clock.advance(0)
                sent = transport.value()
                transport.clear()
                if sent:
                    client.bio_write(sent)

        pump()
        client.send(b"hi")
        client.shutdown()
        server.dataReceived(client.bio_read(1 << 16))
        clock.advance(0)
        client.bio_write(transport.value())
        got = b""
        closed = False
        for _ in range(5):
            try:
                got += client.recv(1 << 16)
            except SSL.ZeroReturnError:
                closed = True
                break
            except SSL.WantReadError:
                break
        return got, closed

    def test_replyBeforeCloseNotify(self) -> None:
        """
        The echo arrives, then the server's C{close_notify}.
        """
        self.assertEqual(self.exchange(RecordBatchingTLS), (b"hi", True))

    def test_twistedDropsIt(self) -> None:
        """
        Canary: Twisted's own L{BufferingTLSTransport} still drops the
        reply (if a Twisted release fixes it, L{RecordBatchingTLS} can
        go); its C{_shutdownTLS} and C{_aggregator} are what
        L{RecordBatchingTLS} relies on.
        """
        self.assertEqual(self.exchange(BufferingTLSTransport), (b"", True))
        self.assertTrue(callable(BufferingTLSTransport._shutdownTLS))


class CountingTransport(StringTransport):
    """
    A transport that counts the writes it is given.
    """

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        """
        Count, then buffer.
        """
        self.writes += 1
        super().write(data)


class RecordBatchingTests(SynchronousTestCase):
    """
    L{netd.tls.RecordBatchingTLS}: each application write is one write to
    the socket, whatever its number of TLS records, and the client reads
    exactly what was written.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        keyPath, certPath = writeSelfSignedCertificate(directory)
        self.server = sslContextFactory(
            f"ssl:0:privateKey={escape(keyPath)}:certKey={escape(certPath)}"
        )

    def connect(self, factoryClass: type) -> tuple[Protocol, CountingTransport, Any]:
        """
        Handshake a pyOpenSSL client with a server connection of
        C{factoryClass}, in memory.

        @param factoryClass: L{TLSFactory} or Twisted's
            L{TLSMemoryBIOFactory}.
        @return: The application protocol, the server's transport and the
            client connection.
        """
        factory = factoryClass(
            self.server, False, Factory.forProtocol(Protocol), clock=Clock()
        )
        tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = CountingTransport()
        tls.makeConnection(transport)
        client = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
        client.set_connect_state()
        for _ in range(20):
            with contextlib.suppress(SSL.WantReadError):
                client.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                tls.dataReceived(client.bio_read(1 << 16))
            if transport.value():
                client.bio_write(transport.value())
                transport.clear()
            if tls.wrappedProtocol.transport is not None and client.get_finished():
                with contextlib.suppress(SSL.WantReadError):
                    client.recv(1)
                break
        transport.writes = 0
        return tls.wrappedProtocol, transport, client

    def read(self, client: Any, transport: CountingTransport) -> bytes:
        """
        @return: What the client decrypts of what the server wrote.
        """
        client.bio_write(transport.value())
        transport.clear()
        received = b""
        with contextlib.suppress(SSL.WantReadError):
            while True:
                received += client.recv(1 << 16)
        return received

    def test_oneWritePerWrite(self) -> None:
        """
        100 KiB (seven records) written at once reach the socket in one
        write, where Twisted's own TLS transport makes seven; the client
        reads them intact.
        """
        data = os.urandom(100 * 1024)
        app, transport, client = self.connect(TLSFactory)
        app.transport.write(data)
        self.assertEqual(transport.writes, 1)
        self.assertEqual(self.read(client, transport), data)
        app, transport, client = self.connect(TLSMemoryBIOFactory)
        app.transport.write(data)
        self.assertEqual(transport.writes, 7)
        self.assertEqual(self.read(client, transport), data)

    def test_largeWriteInParts(self) -> None:
        """
        A write larger than L{FLUSH_EVERY} reaches the socket in parts of
        about that size (the records are not all held), in order.
        """
        data = os.urandom(3 * FLUSH_EVERY + 5)
        app, transport, client = self.connect(TLSFactory)
        app.transport.write(data)
        self.assertEqual(transport.writes, 4)
        self.assertEqual(self.read(client, transport), data)

    def test_smallWritesAggregated(self) -> None:
        """
        Small writes are still gathered by Twisted's aggregation (one write
        at the next reactor turn).
        """
        app, transport, client = self.connect(TLSFactory)
        for _ in range(10):
            app.transport.write(b"line\n")
        self.assertEqual(transport.writes, 0)
        app.transport._aggregator.flush()
        self.assertEqual(transport.writes, 1)
        self.assertEqual(self.read(client, transport), b"line\n" * 10)
