# -*- test-case-name: tests.test_http_mount -*-
"""
Tests for mounting another service's web resource under an http service
(L{netd.http.mount}), with stand-in resources: a page, a form target and a
WebSocket echo, so that nothing here depends on the chat service.
"""

from __future__ import annotations

import base64
import hashlib
import os
import struct
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.websocket import WebSocketResource

import netd.services
from netd.http.mount import mountRoot, rebuildRequest
from netd.http.request import Request
from netd.servicetype import ServiceType
from netd.services import echo
from tests.httpsupport import connect, get, makeFactory, makeTree, readResponses
from tests.support import makeContext

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Page(Resource):
    """
    A page that says where it was asked for, and echoes a posted form.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        """
        @param request: The request.
        @return: A fixed body naming the path.
        """
        return b"mounted page at " + request.path

    def render_POST(self, request: Any) -> bytes:
        """
        @param request: The request.
        @return: The body it received.
        """
        return b"posted " + request.content.read()


class EchoSocket:
    """
    A WebSocket protocol that sends every message back.
    """

    def negotiationStarted(self, transport: Any) -> None:
        """
        @param transport: The WebSocket transport.
        """
        self.transport = transport

    def negotiationFinished(self) -> None:
        """
        Nothing to do.
        """

    def textMessageReceived(self, message: str) -> None:
        """
        @param message: Sent back.
        """
        self.transport.sendTextMessage("echo: " + message)

    def bytesMessageReceived(self, data: bytes) -> None:
        """
        @param data: Sent back.
        """
        self.transport.sendBytesMessage(data)

    def pongReceived(self, payload: bytes) -> None:
        """
        @param payload: Ignored.
        """

    def connectionLost(self, reason: Any) -> None:
        """
        @param reason: Ignored.
        """


class EchoSocketFactory:
    """
    Builds L{EchoSocket}s.
    """

    def buildProtocol(self, request: Any) -> EchoSocket:
        """
        @param request: The upgrade request.
        @return: A new protocol.
        """
        return EchoSocket()


def frontEnd(context: Any) -> Resource:
    """
    A stand-in for the chat service's C{buildWebResource}.

    @param context: The service's context.
    @return: A resource with a page at C{""} and a WebSocket at C{"ws"}.
    """
    root = Resource()
    root.putChild(b"", Page())
    root.putChild(b"form", Page())
    root.putChild(b"ws", WebSocketResource(EchoSocketFactory()))
    return root


def webType() -> ServiceType:
    """
    @return: A service type with L{frontEnd} as its web resource.
    """
    return ServiceType(
        name="web",
        description="a stand-in service with a browser front end",
        buildStreamFactory=echo.buildStreamFactory,
        buildWebResource=frontEnd,
    )


def upgradeRequest(path: str = "/chat/ws") -> tuple[bytes, bytes]:
    """
    A WebSocket opening handshake, as a browser sends it.

    @param path: The target.
    @return: The request and the C{Sec-WebSocket-Accept} value expected.
    """
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
    request = (
        (
            f"GET {path} HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        ).encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\n\r\n"
    )
    return request, accept


def clientFrame(text: str) -> bytes:
    """
    A masked text frame, as a client must send it.

    @param text: The message (under 126 bytes).
    @return: The frame.
    """
    payload = text.encode("utf-8")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def serverFrame(text: str) -> bytes:
    """
    An unmasked text frame, as the server sends it.

    @param text: The message (under 126 bytes).
    @return: The frame.
    """
    payload = text.encode("utf-8")
    return struct.pack("!BB", 0x81, len(payload)) + payload


class MountTestCase(SynchronousTestCase):
    """
    An http service mounting a stand-in web service at C{/chat/}.
    """

    def setUp(self) -> None:
        types = dict(netd.services.serviceTypes())
        types["web"] = webType()
        self.patch(netd.services, "serviceTypes", lambda: types)
        base = self.mktemp()
        os.makedirs(base)
        self.root, _ = makeTree(base)
        self.clock = Clock()
        self.factory, self.context = makeFactory(
            root=self.root, chat="talk", clock=self.clock
        )
        talk = makeContext("echo", reactor=self.clock)
        talk.config = type(talk.config)(
            "talk", "web", (), talk.config.limits, {}, types["web"]
        )
        self.context.instances["talk"] = talk

    def open(self) -> Any:
        """
        @return: A new session and its transport.
        """
        return connect(self.factory, self.context)


class PageTests(MountTestCase):
    """
    Plain requests under the mount.
    """

    def test_page(self) -> None:
        """
        A request under the mount path is answered by the mounted resource,
        with C{Connection: close}: the next request, on a new connection,
        reaches netd's own protocol again.
        """
        session, transport = self.open()
        session.dataReceived(get("/chat/"))
        responses, _ = readResponses(transport.value())
        self.assertEqual(responses[0].status, 200)
        self.assertEqual(responses[0].body, b"mounted page at /chat/")
        self.assertEqual(responses[0].header("connection"), "close")
        self.assertTrue(transport.disconnecting)
        self.assertNotIn(session.wrappedProtocol, self.factory.connections)

    def test_afterOwnRequests(self) -> None:
        """
        Requests before the mounted one on the same connection are netd's;
        the mounted one is handed over after their responses, in order.
        """
        session, transport = self.open()
        session.dataReceived(get("/notes.txt") + get("/large.bin") + get("/chat/"))
        responses, _ = readResponses(transport.value())
        self.assertEqual([r.status for r in responses], [200, 200, 200])
        self.assertEqual(responses[2].body, b"mounted page at /chat/")

    def test_redirectToSlash(self) -> None:
        """
        The mount path without its slash is redirected to it.
        """
        session, transport = self.open()
        session.dataReceived(get("/chat?room=1"))
        responses, _ = readResponses(transport.value())
        self.assertEqual(responses[0].status, 301)
        self.assertEqual(responses[0].header("location"), "/chat/?room=1")

    def test_post(self) -> None:
        """
        A request body (chunked here) reaches the mounted resource whole.
        """
        session, transport = self.open()
        session.dataReceived(
            b"POST /chat/form HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
        )
        responses, _ = readResponses(transport.value())
        self.assertEqual(responses[0].body, b"posted abcde")

    def test_limitsStillApply(self) -> None:
        """
        netd's own rules apply before the handover: no C{Host} is C{400},
        a dot segment is C{400}.
        """
        for request in (
            b"GET /chat/ HTTP/1.1\r\n\r\n",
            get("/chat/../notes.txt"),
            get("/chat/%2e%2e/notes.txt"),
        ):
            session, transport = self.open()
            session.dataReceived(request)
            self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "), request)

    def test_encodedPrefix(self) -> None:
        """
        The mount matches decoded paths.
        """
        session, transport = self.open()
        session.dataReceived(get("/ch%61t/"))
        responses, _ = readResponses(transport.value())
        self.assertEqual(responses[0].body, b"mounted page at /ch%61t/")

    def test_rebuild(self) -> None:
        """
        The rebuilt request is in origin form, drops framing and hop-by-hop
        fields, and carries its body with a length.
        """
        req = Request()
        req.method = b"POST"
        req.url = b"http://example.com/chat/x?y=1"
        req.version = "1.1"
        req.headers = [
            (b"Host", b"example.com"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"keep-alive"),
            (b"X-A", b"b"),
        ]
        req.body = [b"ab", b"c"]
        self.assertEqual(
            rebuildRequest(req, close=True),
            b"POST /chat/x?y=1 HTTP/1.1\r\nHost: example.com\r\nX-A: b\r\n"
            b"Content-Length: 3\r\nConnection: close\r\n\r\nabc",
        )

    def test_mountRoot(self) -> None:
        """
        A deeper mount path nests the resource.
        """
        leaf = Page()
        root = mountRoot(leaf, b"/apps/chat/")
        self.assertIs(root.children[b"apps"].children[b"chat"], leaf)


class WebSocketTests(MountTestCase):
    """
    A WebSocket upgrade under the mount.
    """

    def test_upgrade(self) -> None:
        """
        The upgrade is answered C{101} by C{twisted.web.websocket}, and
        messages then flow both ways over the same connection, including a
        frame sent right behind the handshake.
        """
        session, transport = self.open()
        request, accept = upgradeRequest()
        session.dataReceived(request + clientFrame("first"))
        head, _, rest = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"sec-websocket-accept: " + accept.lower(), head.lower())
        self.assertEqual(rest, serverFrame("echo: first"))
        transport.clear()
        session.dataReceived(clientFrame("second"))
        self.assertEqual(transport.value(), serverFrame("echo: second"))
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)

    def test_upgradeElsewhereIgnored(self) -> None:
        """
        An upgrade request outside the mount is answered as a plain request
        (RFC 9110 lets a server ignore C{Upgrade}), and the connection goes
        on.
        """
        session, transport = self.open()
        request, _ = upgradeRequest("/notes.txt")
        session.dataReceived(request + get("/small.html"))
        responses, _ = readResponses(transport.value())
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(responses[0].body, b"plain text\n")
