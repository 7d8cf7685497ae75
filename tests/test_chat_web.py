# -*- test-case-name: tests.test_chat_web -*-
"""
Tests for L{netd.chat.web}: the page and the WebSocket front end, served by
a real L{Site} on 127.0.0.1 and driven by Twisted's WebSocket client, next
to a real TCP chat listener on the same hub.
"""

from __future__ import annotations

import base64
import os
import re
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.server import Site
from twisted.web.websocket import WebSocketClientEndpoint

from netd.chat.web import CONTENT_SECURITY_POLICY, SCRIPT, ChatWebSocket, sameOrigin
from netd.limits import Limits
from netd.services.chat import buildStreamFactory, buildWebResource, serverFor
from netd.sessions import SessionFactory
from tests.support import makeContext

TIMEOUT = 10.0


class Expecting:
    """
    Collects lines and fires L{Deferred}s when one matches a pattern.
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._waiting: list[tuple[re.Pattern[str], Deferred[str]]] = []
        self._seen = 0
        self.lost: Deferred[None] = Deferred()

    def got(self, line: str) -> None:
        """
        Record a line.

        @param line: The line.
        """
        self.lines.append(line)
        self._check()

    def _check(self) -> None:
        for pattern, d in list(self._waiting):
            for index in range(self._seen, len(self.lines)):
                if pattern.search(self.lines[index]):
                    self._waiting.remove((pattern, d))
                    self._seen = index + 1
                    d.callback(self.lines[index])
                    break

    def expect(self, pattern: str) -> Deferred[str]:
        """
        @param pattern: A regular expression.
        @return: A L{Deferred} firing with the first line (after the last
            one matched) that matches it.
        """
        d: Deferred[str] = Deferred()
        self._waiting.append((re.compile(pattern), d))
        self._check()
        d.addTimeout(TIMEOUT, reactor)
        return d


class WebSocketClient(Expecting):
    """
    A L{WebSocketProtocol} (and its own factory) for tests.
    """

    transport: Any = None

    def buildProtocol(self, url: str) -> WebSocketClient:
        return self

    def negotiationStarted(self, transport: Any) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.got(message)

    def bytesMessageReceived(self, data: bytes) -> None:
        self.got(data.decode("utf-8", "replace"))

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)

    def send(self, text: str) -> None:
        """
        @param text: One message.
        """
        self.transport.sendTextMessage(text)


class LineClient(LineReceiver, Expecting):
    """
    A TCP chat client for tests.
    """

    delimiter = b"\n"

    def __init__(self) -> None:
        Expecting.__init__(self)

    def lineReceived(self, line: bytes) -> None:
        self.got(line.decode("utf-8").rstrip("\r"))

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)

    def say(self, text: str) -> None:
        """
        @param text: One line.
        """
        self.sendLine(text.encode("utf-8"))


class RawClient(Protocol):
    """
    Records raw bytes and the end of the connection.
    """

    def __init__(self) -> None:
        self.data = b""
        self.lost: Deferred[None] = Deferred()
        self.arrived: Deferred[None] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if self.arrived is not None:
            d, self.arrived = self.arrived, None
            d.callback(None)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.callback(None)


def upgradeRequest(path: str, port: int, origin: str | None = None) -> bytes:
    """
    @param path: The WebSocket path.
    @param port: The server port (for C{Host}).
    @param origin: An C{Origin} header, if any.
    @return: A WebSocket upgrade request.
    """
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class WebTests(TestCase):
    """
    The page and the WebSocket on real sockets.
    """

    timeout = 30

    def serve(self, limits: Limits | None = None, **settings: Any) -> None:
        """
        Start a chat service's web resource (in a L{Site}) and a TCP
        listener, on 127.0.0.1, sharing one hub.

        @param limits: The service's limits.
        @param settings: Chat settings.
        """
        self.context = makeContext(
            "chat", limits=limits, settings=settings, reactor=reactor
        )
        self.server = serverFor(self.context)
        self.addCleanup(self.context.policy.refusals.stop)
        site = Site(buildWebResource(self.context))
        site.noisy = False
        self.webPort = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(self.webPort.stopListening)
        factory = SessionFactory(
            buildStreamFactory(self.context), self.context, "tcp:0"
        )
        self.tcpPort = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(self.tcpPort.stopListening)
        self.web = self.webPort.getHost().port

    @inlineCallbacks
    def webSocket(self) -> Any:
        """
        Connect a WebSocket client to C{/ws}.

        @return: A L{Deferred} firing with the L{WebSocketClient}.
        """
        client = WebSocketClient()
        endpoint = WebSocketClientEndpoint.new(reactor, f"ws://127.0.0.1:{self.web}/ws")
        yield Deferred.fromCoroutine(endpoint.connect(client))
        self.addCleanup(self.closeWebSocket, client)
        return client

    def closeWebSocket(self, client: WebSocketClient) -> Deferred[None]:
        if not client.lost.called:
            client.transport.loseConnection()
        return client.lost

    @inlineCallbacks
    def lineClient(self) -> Any:
        """
        Connect a TCP chat client.

        @return: A L{Deferred} firing with the L{LineClient}.
        """
        client = LineClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.tcpPort.getHost().port)
        yield connectProtocol(endpoint, client)
        self.addCleanup(self.closeLine, client)
        return client

    def closeLine(self, client: LineClient) -> Deferred[None]:
        if not client.lost.called:
            client.transport.loseConnection()
        return client.lost

    @inlineCallbacks
    def raw(self, data: bytes) -> Any:
        """
        Open a raw TCP connection to the web port and send bytes.

        @param data: What to send.
        @return: A L{Deferred} firing with the L{RawClient}.
        """
        client = RawClient()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.web)
        yield connectProtocol(endpoint, client)
        self.addCleanup(
            lambda: client.lost if client.transport.abortConnection() is None else None
        )
        client.transport.write(data)
        return client

    @inlineCallbacks
    def test_page(self) -> Any:
        """
        The mount path serves a small HTML page with its script and style
        inline (no external assets), under a strict Content-Security-Policy
        that allows exactly that script; C{ws} is the WebSocket.
        """
        self.serve()
        agent = Agent(reactor)
        response = yield agent.request(b"GET", f"http://127.0.0.1:{self.web}/".encode())
        body = yield readBody(response)
        self.assertEqual(response.code, 200)
        headers = response.headers
        self.assertEqual(
            headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"]
        )
        self.assertEqual(
            headers.getRawHeaders(b"content-security-policy"),
            [CONTENT_SECURITY_POLICY.encode()],
        )
        self.assertIn(SCRIPT.encode(), body)
        self.assertNotRegex(body, rb"(src|href)=\"(https?:)?//")
        self.assertNotIn(b"@import", body)
        self.assertIn(b'new URL("ws", location.href)', body)

    @inlineCallbacks
    def test_redirectToSlash(self) -> Any:
        """
        The resource itself (C{/chat} when mounted at C{/chat/}) redirects to
        its trailing-slash form.
        """
        self.serve()
        from twisted.web.resource import Resource

        root = Resource()
        root.putChild(b"chat", buildWebResource(self.context))
        port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{port.getHost().port}/chat".encode()
        )
        yield readBody(response)
        self.assertEqual(response.code, 302)
        self.assertEqual(response.headers.getRawHeaders(b"location"), [b"/chat/"])

    @inlineCallbacks
    def test_webSocketAndTCPTalk(self) -> Any:
        """
        A WebSocket client and a TCP client in the same room see each
        other's messages, nick changes and private messages; the WebSocket
        client sees its own messages echoed (a page shows what the server
        relayed).
        """
        self.serve()
        ws = yield self.webSocket()
        yield ws.expect(r"^\*\*\* type a nickname")
        ws.send("webby")
        yield ws.expect(r"joined #lobby")
        tcp = yield self.lineClient()
        tcp.say("tcpy")
        yield ws.expect(r"^\*\*\* tcpy joined #lobby$")
        tcp.say("hello web")
        yield ws.expect(r"^<tcpy> hello web$")
        ws.send("hello \x1b[31mtcp")
        line = yield tcp.expect(r"^<webby>")
        self.assertEqual(line, "<webby> hello tcp")
        yield ws.expect(r"^<webby> hello tcp$")
        ws.send("/nick webster")
        yield tcp.expect(r"^\*\*\* webby is now known as webster$")
        tcp.say("/msg WEBSTER psst")
        yield ws.expect(r"^\*tcpy\* psst$")
        ws.send("/quit")
        yield tcp.expect(r"^\*\*\* webster left #lobby \(quit\)$")
        yield ws.lost

    @inlineCallbacks
    def test_longMessageRefused(self) -> Any:
        """
        A message longer than C{max_line_length} is refused with a notice.
        """
        self.serve(max_line_length=100)
        ws = yield self.webSocket()
        ws.send("webby")
        yield ws.expect("joined")
        ws.send("x" * 20_000)
        yield ws.expect(r"^\*\*\* line refused: longer than 100 bytes$")
        ws.send("short")
        yield ws.expect(r"^<webby> short$")

    @inlineCallbacks
    def test_endlessFrameDisconnected(self) -> Any:
        """
        A client that sends far more than C{max_line_length} without ever
        completing a message is disconnected (the WebSocket parser would
        otherwise buffer it all).
        """
        self.serve(max_line_length=100)
        client = yield self.raw(upgradeRequest("/ws", self.web))
        # A masked text frame announcing 1 MiB, then its payload, slowly.
        header = bytes([0x81, 0xFF]) + (1 << 20).to_bytes(8, "big") + b"\0\0\0\0"
        client.transport.write(header)
        for _ in range(10):
            if client.lost.called:
                break
            client.transport.write(b"a" * 1000)
            yield _sleep(0.02)
        yield client.lost
        self.assertIn(b"101 Switching Protocols", client.data)

    @inlineCallbacks
    def test_crossOriginRefused(self) -> Any:
        """
        A browser upgrade from another origin is refused (403); the same
        origin, and clients that send no Origin, are accepted.
        """
        self.serve()
        evil = yield self.raw(upgradeRequest("/ws", self.web, "http://evil.example"))
        evil.arrived = Deferred()
        yield evil.arrived
        self.assertTrue(evil.data.startswith(b"HTTP/1.1 403 "), evil.data)
        good = yield self.raw(
            upgradeRequest("/ws", self.web, f"http://127.0.0.1:{self.web}")
        )
        good.arrived = Deferred()
        yield good.arrived
        self.assertTrue(good.data.startswith(b"HTTP/1.1 101 "), good.data)

    @inlineCallbacks
    def test_crossOriginAllowedWhenConfigured(self) -> Any:
        """
        With C{web_check_origin = false} any origin may connect.
        """
        self.serve(web_check_origin=False)
        client = yield self.raw(
            upgradeRequest("/ws", self.web, "http://elsewhere.example")
        )
        client.arrived = Deferred()
        yield client.arrived
        self.assertTrue(client.data.startswith(b"HTTP/1.1 101 "), client.data)

    @inlineCallbacks
    def test_sessionLimits(self) -> Any:
        """
        WebSocket clients count against C{max_sessions_per_peer} with the
        service's TCP clients; past it the upgrade gets a 503; closing one
        lets the next in.
        """
        self.serve(limits=Limits(maxSessionsPerPeer=2))
        yield self.lineClient()
        ws = yield self.webSocket()
        yield ws.expect("type a nickname")
        refused = yield self.raw(upgradeRequest("/ws", self.web))
        refused.arrived = Deferred()
        yield refused.arrived
        self.assertTrue(refused.data.startswith(b"HTTP/1.1 503 "), refused.data)
        ws.transport.loseConnection()
        yield ws.lost
        yield _sleep(0.05)
        again = yield self.webSocket()
        yield again.expect("type a nickname")


def _sleep(seconds: float) -> Deferred[None]:
    """
    @param seconds: How long.
    @return: A L{Deferred} firing after that long.
    """
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


class FakeChannel:
    """
    Just enough of an L{HTTPChannel} for L{ChatWebSocket}.
    """

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.timeout: Any = "unset"

    def setTimeout(self, timeout: Any) -> None:
        self.timeout = timeout

    def dataReceived(self, data: bytes) -> None:
        pass


class FakeRequest:
    """
    Just enough of an upgraded L{Request} for L{ChatWebSocket}.
    """

    def __init__(self, channel: FakeChannel) -> None:
        self.channel = channel


class FakeWebSocketTransport:
    """
    Records text messages like a WebSocket transport.
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.producer: Any = None
        self.closed: int | None = None

    closing = False

    def sendTextMessage(self, text: str) -> None:
        if self.closing:
            from wsproto.utilities import LocalProtocolError

            raise LocalProtocolError("cannot be sent in state ConnectionState.CLOSED")
        self.messages.append(text)

    def attachProducer(self, producer: Any) -> None:
        self.producer = producer

    def loseConnection(self, code: int = 1000) -> None:
        self.closed = code


class WebSocketProtocolTests(SynchronousTestCase):
    """
    L{ChatWebSocket} in memory, on a fake clock.
    """

    def connect(
        self, limits: Limits | None = None, **settings: Any
    ) -> tuple[ChatWebSocket, Any]:
        """
        @return: A connected, greeted protocol and its TCP transport.
        """
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        self.clock = Clock()
        context = makeContext(
            "chat", limits=limits, settings=settings, reactor=self.clock
        )
        self.server = serverFor(context)
        tcp = StringTransport()
        self.channel = FakeChannel(tcp)
        protocol = ChatWebSocket(self.server, FakeRequest(self.channel), "192.0.2.1")
        self.ws = FakeWebSocketTransport()
        protocol.negotiationStarted(self.ws)
        protocol.negotiationFinished()
        return protocol, tcp

    def test_takesOverTheChannel(self) -> None:
        """
        The HTTP channel's own timeout is switched off (the chat's idle
        timeout applies instead), its bytes go through the protocol's
        guard, and the protocol watches the write buffer.
        """
        protocol, _ = self.connect()
        self.assertIsNone(self.channel.timeout)
        self.assertEqual(self.channel.dataReceived, protocol._rawDataReceived)
        self.assertIs(self.ws.producer, protocol.gate)

    def test_slowConsumerDisconnected(self) -> None:
        """
        While the TCP write buffer is full, more than C{max_pending_output}
        bytes of messages disconnect the client at once.
        """
        protocol, tcp = self.connect(max_pending_output=2000)
        protocol.textMessageReceived("sleepy")
        protocol.gate.pauseProducing()
        for _ in range(30):
            protocol.writeNotice("n" * 100)
        self.assertTrue(tcp.disconnected)
        self.assertTrue(protocol.session.closed)
        self.assertLessEqual(sum(map(len, self.ws.messages)), 2000 + 1000)

    def test_closingWebSocketIsNotWrittenTo(self) -> None:
        """
        Once the WebSocket is closing (a Close frame went either way) but
        the connection is not lost yet, wsproto refuses to send: what the
        rooms deliver meanwhile is dropped, not raised into the hub, and
        nothing more is tried.
        """
        protocol, _ = self.connect()
        protocol.textMessageReceived("alicia")
        sent = len(self.ws.messages)
        self.ws.closing = True
        protocol.writeNotice("one")
        self.ws.closing = False
        protocol.writeNotice("two")
        self.assertEqual(len(self.ws.messages), sent)

    def test_idleTimeout(self) -> None:
        """
        A WebSocket with no traffic either way for C{idle_timeout} seconds
        is closed (after between one and 1.25 times the timeout).
        """
        protocol, _ = self.connect(limits=Limits(idleTimeout=100))
        self.clock.pump([1] * 99)
        self.assertIsNone(self.ws.closed)
        protocol._rawDataReceived(b"")
        self.clock.pump([1] * 99)
        self.assertIsNone(self.ws.closed)
        self.clock.pump([1] * 30)
        self.assertEqual(self.ws.closed, 1000)
        self.assertEqual(self.ws.messages[-1], "*** disconnected: idle timeout")


class SameOriginTests(SynchronousTestCase):
    """
    Tests for L{sameOrigin}.
    """

    def check(self, origin: str | None, host: str | None) -> bool:
        from twisted.web.test.requesthelper import DummyRequest

        request = DummyRequest([b""])
        if origin is not None:
            request.requestHeaders.setRawHeaders(b"origin", [origin.encode()])
        if host is not None:
            request.requestHeaders.setRawHeaders(b"host", [host.encode()])
        return sameOrigin(request)

    def test_cases(self) -> None:
        """
        Same host and port (default ports included) pass; another host,
        another port, a non-web scheme or C{null} do not; no Origin passes.
        """
        self.assertTrue(self.check(None, "example.com"))
        self.assertTrue(self.check("http://example.com", "example.com"))
        self.assertTrue(self.check("http://example.com", "EXAMPLE.com:80"))
        self.assertTrue(self.check("https://example.com", "example.com:443"))
        self.assertTrue(self.check("http://[::1]:8080", "[::1]:8080"))
        self.assertFalse(self.check("http://example.com:8080", "example.com"))
        self.assertFalse(self.check("http://evil.example", "example.com"))
        self.assertFalse(self.check("null", "example.com"))
        self.assertFalse(self.check("file://", "example.com"))
        self.assertFalse(self.check("http://example.com", None))
