# -*- test-case-name: tests.test_http2 -*-
"""
Tests for L{netd.http.h2}: HTTP/2 connections of the http service, in
memory. A client-side C{h2} connection talks to the real protocol stack (the
session wrapper, L{HTTPConnection} handing over when ALPN said C{h2}) over a
L{StringTransport}, on a L{Clock}; the attacks are sent as raw frames
(C{hyperframe}, C{hpack}) where a well-behaved client library would refuse
to send them.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netd.http.h2 import PREFACE, HTTP2Connection
from netd.http.protocol import HTTPConnection
from netd.http.responses import httpDate
from netd.services.http import alpnProtocols
from netd.sessions import Session
from tests.httpsupport import (
    LARGE_SIZE,
    SMALL,
    H2Responses,
    PausingTransport,
    connect,
    h2Client,
    h2Request,
    largeContent,
    makeFactory,
    makeTree,
)


class H2TestCase(SynchronousTestCase):
    """
    A document root with known files, an http service serving it, and an
    HTTP/2 client connection to it.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.root, self.secret = makeTree(base)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)

    def open(self, transportClass: type = PausingTransport, **settings: Any) -> None:
        """
        Serve, connect as a TLS client that negotiated C{h2}, exchange the
        prefaces.

        @param transportClass: The server's transport.
        @param settings: http settings over C{root = self.root}.
        """
        settings.setdefault("root", self.root)
        self.factory, self.context = makeFactory(None, self.clock, **settings)
        self.session, self.transport = connect(
            self.factory, self.context, transportClass=transportClass
        )
        self.transport.negotiatedProtocol = b"h2"
        http = self.session.wrappedProtocol
        assert isinstance(http, HTTPConnection)
        http.handshakeCompleted()
        self.server = http._channel
        assert isinstance(self.server, HTTP2Connection)
        self.client = h2Client()
        self.responses = H2Responses()
        self.acknowledge = True
        self.talk()

    def talk(self) -> None:
        """
        Exchange bytes until neither side has more to say (the client reads
        everything the server wrote).
        """
        for _ in range(10_000):
            out = self.client.data_to_send()
            if out and not self.transport.disconnecting:
                self.session.dataReceived(out)
            data = self.transport.value()
            self.transport.clear()
            if isinstance(self.transport, PausingTransport):
                if self.transport.producerPaused:
                    self.transport.producerPaused = False
                    self.transport.producer.resumeProducing()
                    data += self.transport.value()
                    self.transport.clear()
            if data:
                self.responses.receive(self.client, data, self.acknowledge)
            if not out and not data:
                return

    def send(self, *frames: Any) -> None:
        """
        Send raw frames to the server (after the client's own bytes), and
        read what it answers.

        @param frames: C{hyperframe} frames.
        """
        raw = self.client.data_to_send() + b"".join(f.serialize() for f in frames)
        self.session.dataReceived(raw)
        data = self.transport.value()
        self.transport.clear()
        if data:
            self.responses.receive(self.client, data)

    def get(self, path: str, *headers: tuple[str, str], method: str = "GET") -> int:
        """
        Send one request and exchange until it is answered.

        @param path: The target.
        @param headers: More fields.
        @param method: The method.
        @return: Its stream.
        """
        stream = h2Request(self.client, path, list(headers), method)
        self.talk()
        return stream

    def rawHeaders(
        self, encoder: Encoder, streamId: int, path: str = "/small.html", **kw: Any
    ) -> HeadersFrame:
        """
        @param encoder: The client's HPACK encoder for raw frames.
        @param streamId: The stream.
        @param path: The target.
        @param kw: More fields (C{_} in names for C{-}).
        @return: A complete C{HEADERS} frame opening a GET.
        """
        fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", path),
        ] + [(k.replace("_", "-"), v) for k, v in kw.items()]
        return HeadersFrame(
            streamId, encoder.encode(fields), flags=["END_HEADERS", "END_STREAM"]
        )


class BasicTests(H2TestCase):
    """
    The same answers as HTTP/1.1, framed as HTTP/2.
    """

    def test_get(self) -> None:
        """
        A GET answers 200 with the file, its validators, type, length, the
        C{date} and C{server} fields, over HTTP/2.
        """
        self.open()
        stream = self.get("/small.html")
        headers = self.responses.headers[stream]
        self.assertEqual(self.responses.status[stream], 200)
        self.assertEqual(self.responses.bodies[stream], SMALL)
        self.assertIn(stream, self.responses.ended)
        self.assertEqual(headers["content-type"], "text/html; charset=utf-8")
        self.assertEqual(headers["content-length"], str(len(SMALL)))
        self.assertEqual(headers["server"], "netd")
        self.assertEqual(headers["date"], httpDate(self.clock.seconds()))
        self.assertEqual(headers["accept-ranges"], "bytes")
        self.assertTrue(headers["etag"].startswith('"'))
        self.assertIn("last-modified", headers)
        self.assertEqual(self.factory.requests, 1)

    def test_sessionAroundIt(self) -> None:
        """
        The session wrapper outside is the same as for HTTP/1.1: it counts
        the HTTP/2 bytes.
        """
        self.open()
        self.get("/small.html")
        self.assertIsInstance(self.session, Session)
        self.assertGreater(self.session.bytesOut, len(SMALL))
        self.assertGreater(self.session.bytesIn, len(PREFACE))

    def test_large(self) -> None:
        """
        A file larger than every window arrives whole, its sha256 intact.
        """
        self.open()
        stream = self.get("/large.bin")
        self.assertEqual(self.responses.status[stream], 200)
        self.assertEqual(
            hashlib.sha256(self.responses.bodies[stream]).hexdigest(),
            hashlib.sha256(largeContent()).hexdigest(),
        )

    def test_concurrentStreams(self) -> None:
        """
        Many requests at once on one connection are all answered, each with
        its own body.
        """
        self.open()
        streams = {
            h2Request(self.client, path): body
            for path, body in [
                ("/large.bin", largeContent()),
                ("/small.html", SMALL),
                ("/notes.txt", b"plain text\n"),
                ("/dir/", b"dir index\n"),
            ]
        }
        self.talk()
        for stream, body in streams.items():
            self.assertEqual(self.responses.bodies[stream], body, stream)
            self.assertIn(stream, self.responses.ended)

    def test_head(self) -> None:
        """
        HEAD answers the fields of GET and no body.
        """
        self.open()
        stream = self.get("/large.bin", method="HEAD")
        self.assertEqual(self.responses.status[stream], 200)
        self.assertEqual(
            self.responses.headers[stream]["content-length"], str(LARGE_SIZE)
        )
        self.assertEqual(self.responses.bodies[stream], b"")
        self.assertIn(stream, self.responses.ended)

    def test_errors(self) -> None:
        """
        The HTTP/1.1 rules apply: a missing file 404, a dotfile 404, a path
        escaping the root 400, another method 405 with C{allow}, a directory
        without its slash 301 to it.
        """
        self.open()
        missing = self.get("/nope")
        dotfile = self.get("/.env")
        escape = self.get("/%2e%2e/secret.txt")
        post = self.get("/small.html", method="POST")
        directory = self.get("/dir")
        status = self.responses.status
        self.assertEqual(status[missing], 404)
        self.assertEqual(self.responses.bodies[missing], b"404 Not Found\n")
        self.assertEqual(status[dotfile], 404)
        self.assertEqual(status[escape], 400)
        self.assertEqual(status[post], 405)
        self.assertEqual(self.responses.headers[post]["allow"], "GET, HEAD")
        self.assertEqual(status[directory], 301)
        self.assertEqual(self.responses.headers[directory]["location"], "/dir/")
        for stream in self.responses.status:
            self.assertNotIn(b"hunter2", self.responses.bodies[stream])

    def test_conditional(self) -> None:
        """
        C{if-none-match} with the entity tag answers 304; C{if-match} with
        another tag 412.
        """
        self.open()
        first = self.get("/small.html")
        etag = self.responses.headers[first]["etag"]
        again = self.get("/small.html", ("if-none-match", etag))
        failed = self.get("/small.html", ("if-match", '"other"'))
        self.assertEqual(self.responses.status[again], 304)
        self.assertEqual(self.responses.bodies[again], b"")
        self.assertEqual(self.responses.headers[again]["etag"], etag)
        self.assertEqual(self.responses.status[failed], 412)

    def test_ranges(self) -> None:
        """
        A byte range answers 206 with C{content-range} and those bytes; an
        unsatisfiable one 416 with the size.
        """
        self.open()
        part = self.get("/large.bin", ("range", "bytes=1000-1999"))
        bad = self.get("/large.bin", ("range", f"bytes={LARGE_SIZE + 5}-"))
        self.assertEqual(self.responses.status[part], 206)
        self.assertEqual(self.responses.bodies[part], largeContent()[1000:2000])
        self.assertEqual(
            self.responses.headers[part]["content-range"],
            f"bytes 1000-1999/{LARGE_SIZE}",
        )
        self.assertEqual(self.responses.status[bad], 416)
        self.assertEqual(
            self.responses.headers[bad]["content-range"], f"bytes */{LARGE_SIZE}"
        )

    def test_statusPage(self) -> None:
        """
        The status endpoint answers its JSON over HTTP/2 too.
        """
        self.open(status_path="/.netd/status")
        stream = self.get("/.netd/status")
        self.assertEqual(self.responses.status[stream], 200)
        self.assertEqual(self.responses.headers[stream]["cache-control"], "no-store")
        self.assertIn(b'"netd"', self.responses.bodies[stream])

    def test_accessLog(self) -> None:
        """
        Each response is one access record, its version C{HTTP/2}.
        """
        events: list[dict[str, Any]] = []
        self.open(access_log_events=True)
        self.patch(self.factory.accessLog, "_log", Logger(observer=events.append))
        self.get("/small.html", ("user-agent", "h2-test"))
        records = [e for e in events if e.get("status") == 200]
        self.assertEqual(len(records), 1, events)
        self.assertEqual(records[0]["version"], "2")
        self.assertEqual(records[0]["bytes"], len(SMALL))
        self.assertEqual(records[0]["userAgent"], "h2-test")

    def test_headerLimits(self) -> None:
        """
        The HTTP/1.1 header-field limits apply to each request: too many
        fields answer 431.
        """
        self.open(max_headers=5)
        fields = [(f"x-{i}", "v") for i in range(6)]
        stream = self.get("/small.html", *fields)
        self.assertEqual(self.responses.status[stream], 431)


class ALPNTests(SynchronousTestCase):
    """
    Which ALPN names an http service offers.
    """

    def test_default(self) -> None:
        """
        By default: C{h2}, then C{http/1.1}.
        """
        self.assertEqual(alpnProtocols({"http2": True}), (b"h2", b"http/1.1"))

    def test_off(self) -> None:
        """
        With C{http2 = false}, or a chat page mounted: C{http/1.1} only.
        """
        self.assertEqual(alpnProtocols({"http2": False}), (b"http/1.1",))
        self.assertEqual(alpnProtocols({"http2": True, "chat": "chat"}), (b"http/1.1",))

    def test_notNegotiated(self) -> None:
        """
        A TLS connection that did not negotiate C{h2} stays HTTP/1.1.
        """
        base = self.mktemp()
        os.makedirs(base)
        root, _ = makeTree(base)
        factory, context = makeFactory(None, Clock(), root=root)
        session, transport = connect(factory, context)
        transport.negotiatedProtocol = b"http/1.1"  # type: ignore[attr-defined]
        http = session.wrappedProtocol
        http.handshakeCompleted()
        self.assertIsNone(http._channel)
