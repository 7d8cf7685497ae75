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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from h2.settings import SettingCodes
from hpack import Decoder, Encoder
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
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
    frames,
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

    def open(
        self,
        transportClass: type = PausingTransport,
        exchange: bool = True,
        **settings: Any,
    ) -> None:
        """
        Serve, connect as a TLS client that negotiated C{h2}, exchange the
        prefaces.

        @param transportClass: The server's transport.
        @param exchange: Whether to exchange the prefaces now (else the
            client's preface goes with whatever is sent first).
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
        if exchange:
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

    def test_metricsCounted(self) -> None:
        """
        HTTP/2 responses are counted for the metrics endpoint by status
        class, with their latency, as HTTP/1.1's are.
        """
        self.open()
        self.get("/small.html")
        self.get("/missing")
        stats = self.factory.stats
        self.assertEqual(stats.statusClasses[2], 1)
        self.assertEqual(stats.statusClasses[4], 1)
        self.assertEqual(stats.latencies.count, 2)

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


class RequestBodyTests(H2TestCase):
    """
    A request body is not used, and cannot outlive its response.
    """

    def test_bodyAfterResponse(self) -> None:
        """
        A GET whose body goes on after the response is complete gets its
        stream reset with C{NO_ERROR}; the connection stays open and serves
        the next request.
        """
        self.open()
        stream = self.client.get_next_available_stream_id()
        self.client.send_headers(
            stream,
            [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/notes.txt"),
            ],
        )
        self.talk()
        self.assertEqual(self.responses.bodies[stream], b"plain text\n")
        self.assertIn(stream, self.responses.ended)
        self.client.send_data(stream, b"x" * 1000)
        self.talk()
        self.assertEqual(self.responses.reset[stream], ErrorCodes.NO_ERROR)
        self.assertFalse(self.transport.disconnecting)
        again = self.get("/notes.txt")
        self.assertEqual(self.responses.status[again], 200)


class FlowControlTests(H2TestCase):
    """
    Bodies go out as the client's windows allow, never more, and a body
    that cannot progress is cut at C{send_timeout}.
    """

    def test_connectionWindow(self) -> None:
        """
        A client that gives nothing back to the windows receives exactly the
        initial connection window (65535 bytes) of a large file, then
        nothing; once it does, the rest arrives, intact.
        """
        self.open()
        self.acknowledge = False
        stream = self.get("/large.bin")
        self.assertEqual(len(self.responses.bodies[stream]), 65535)
        self.talk()
        self.assertEqual(len(self.responses.bodies[stream]), 65535)
        self.acknowledge = True
        self.client.increment_flow_control_window(65535)
        self.client.increment_flow_control_window(65535, stream)
        self.talk()
        self.assertEqual(self.responses.bodies[stream][:65535], largeContent()[:65535])
        self.assertGreater(len(self.responses.bodies[stream]), 65535)

    def test_streamWindow(self) -> None:
        """
        With a stream window of 1000 bytes (the client's
        C{SETTINGS_INITIAL_WINDOW_SIZE}), each stream gets 1000 bytes until
        the client opens its window.
        """
        self.open()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        self.talk()
        self.acknowledge = False
        first = h2Request(self.client, "/large.bin")
        second = h2Request(self.client, "/large.bin", [("range", "bytes=5000-")])
        self.talk()
        self.assertEqual(self.responses.bodies[first], largeContent()[:1000])
        self.assertEqual(self.responses.bodies[second], largeContent()[5000:6000])

    def test_transportFull(self) -> None:
        """
        A client that does not read (the transport pauses the connection)
        gets no more than about the transport's buffer and one chunk, however
        large its windows: a body is never buffered whole.
        """
        self.open()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.talk()
        self.client.increment_flow_control_window(2**31 - 1 - 65535)
        h2Request(self.client, "/large.bin")
        self.session.dataReceived(self.client.data_to_send())
        self.assertTrue(self.transport.producerPaused)
        self.assertLess(self.transport.highWater, PausingTransport.bufferSize + 70_000)
        self.assertLess(self.transport.highWater, LARGE_SIZE // 10)

    def test_notReadingStopsReading(self) -> None:
        """
        While the transport is full, the connection stops reading the
        client (each request or PING read would only add to what waits);
        once the client reads, reading resumes.
        """
        self.open()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1})
        self.talk()
        self.client.increment_flow_control_window(2**31 - 1 - 65535)
        h2Request(self.client, "/large.bin")
        self.session.dataReceived(self.client.data_to_send())
        self.assertEqual(self.transport.producerState, "paused")
        received = b""
        for _ in range(1000):
            received += self.transport.drain()
            if not self.transport.producerPaused:
                break
        self.assertGreater(len(received), LARGE_SIZE)
        self.assertEqual(self.transport.producerState, "producing")

    def test_zeroWindowStall(self) -> None:
        """
        A body that cannot progress because the client keeps its window at
        zero is cut at C{send_timeout}; one that progresses is not.
        """
        self.open(send_timeout=5)
        self.acknowledge = False
        self.get("/large.bin")
        self.clock.advance(3)
        self.factory.tick()
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(3)
        self.factory.tick()
        self.assertTrue(self.transport.disconnected)

    def test_noStallWhileProgressing(self) -> None:
        """
        A slow client that keeps giving window back is not cut, whatever the
        total time.
        """
        self.open(send_timeout=5)
        self.acknowledge = False
        stream = self.get("/large.bin")
        for _ in range(10):
            self.clock.advance(3)
            self.factory.tick()
            self.client.increment_flow_control_window(16384)
            self.client.increment_flow_control_window(16384, stream)
            self.talk()
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(len(self.responses.bodies[stream]), 65535 + 10 * 16384)


class LimitTests(H2TestCase):
    """
    The known HTTP/2 attacks, each cut.
    """

    def test_maxConcurrentStreams(self) -> None:
        """
        The server announces C{http2_max_streams}; a client opening more
        streams at once is cut with C{GOAWAY}.
        """
        self.open(http2_max_streams=2)
        self.assertEqual(self.client.remote_settings.max_concurrent_streams, 2)
        self.acknowledge = False
        self.get("/large.bin")
        self.get("/large.bin")
        self.assertFalse(self.transport.disconnecting)
        encoder = Encoder()
        self.send(self.rawHeaders(encoder, 5, "/large.bin"))
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNotNone(self.responses.goaway)
        self.assertEqual(self.responses.goaway.error_code, ErrorCodes.PROTOCOL_ERROR)

    def test_hpackBomb(self) -> None:
        """
        A header block of a few kilobytes that decodes to far more than the
        header list limit (one large field indexed, then referenced again
        and again) is refused while decoding: C{GOAWAY}, close.
        """
        for exchange in (True, False):
            self.bomb(exchange)

    def bomb(self, exchange: bool) -> None:
        """
        Send an HPACK bomb and check that it is refused.

        @param exchange: Whether the client has acknowledged the server's
            settings first (else the bomb comes with its preface, before h2
            applies the acknowledged header list size).
        """
        self.open(exchange=exchange)
        encoder = Encoder()
        block = encoder.encode(
            [
                (":method", "GET"),
                (":scheme", "https"),
                (":authority", "localhost"),
                (":path", "/small.html"),
            ]
        )
        # 48 kB decoded: over the limit (about 28 kB by default), under the
        # 64 KiB that h2 would allow on its own.
        block += encoder.encode([("x-bomb", "a" * 4000)] * 12)
        self.assertLess(len(block), 5000)
        self.send(HeadersFrame(1, block, flags=["END_HEADERS", "END_STREAM"]))
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.responses.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)
        self.assertNotIn(1, self.responses.status)
        self.assertIsNone(self.transport.producer)

    def test_continuationFlood(self) -> None:
        """
        A header block that never ends (CONTINUATION frames without
        C{END_HEADERS}) is cut after 64 of them, before it grows further.
        """
        self.open()
        encoder = Encoder()
        first = HeadersFrame(1, encoder.encode([(":method", "GET")]))
        flood = [ContinuationFrame(1, b"") for _ in range(100)]
        self.send(first, *flood)
        self.assertTrue(self.transport.disconnecting)
        self.assertIsNotNone(self.responses.goaway)

    def test_rapidReset(self) -> None:
        """
        A client that opens and resets streams in a loop (CVE-2023-44487) is
        cut with C{GOAWAY ENHANCE_YOUR_CALM} past C{http2_max_resets} a
        second; fewer a second, spread over time, are fine.
        """
        self.open(http2_max_resets=10)
        encoder = Encoder()
        stream = 1
        for _ in range(3):
            batch = []
            for _ in range(8):
                batch.append(self.rawHeaders(encoder, stream, "/large.bin"))
                batch.append(RstStreamFrame(stream, error_code=ErrorCodes.CANCEL))
                stream += 2
            self.send(*batch)
            self.assertFalse(self.transport.disconnecting)
            self.clock.advance(1)
            self.factory.tick()
        batch = []
        for _ in range(11):
            batch.append(self.rawHeaders(encoder, stream, "/large.bin"))
            batch.append(RstStreamFrame(stream, error_code=ErrorCodes.CANCEL))
            stream += 2
        self.send(*batch)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.responses.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_pingFlood(self) -> None:
        """
        More than C{http2_max_control_frames} PING frames a second: cut with
        C{GOAWAY ENHANCE_YOUR_CALM}.
        """
        self.open(http2_max_control_frames=50)
        self.send(*[PingFrame(0, opaque_data=b"%08d" % i) for i in range(40)])
        self.assertFalse(self.transport.disconnecting)
        self.send(*[PingFrame(0, opaque_data=b"%08d" % i) for i in range(20)])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.responses.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_settingsFlood(self) -> None:
        """
        The same for SETTINGS frames.
        """
        self.open(http2_max_control_frames=50)
        self.send(*[SettingsFrame(0, settings={0x4: 65535}) for _ in range(60)])
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.responses.goaway.error_code, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_idleTimeout(self) -> None:
        """
        A connection with no stream open for C{keepalive_timeout} is closed
        with C{GOAWAY NO_ERROR}; one with a stream being answered is not.
        """
        self.open(keepalive_timeout=5)
        self.get("/small.html")
        self.clock.advance(3)
        self.factory.tick()
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(3)
        self.factory.tick()
        self.assertTrue(self.transport.disconnecting)
        [goaway] = [f for f in frames(self.transport.value()) if f.type == 0x7]
        self.assertEqual(goaway.error_code, 0)
        # No longer the transport's producer: the TLS layer closes only then.
        self.assertIsNone(self.transport.producer)

    def test_drain(self) -> None:
        """
        When the listeners close, an open stream gets C{GOAWAY NO_ERROR}
        naming it as the last stream, then finishes; a stream opened after
        the C{GOAWAY} is refused; the connection closes after the last
        response.
        """
        self.open()
        self.acknowledge = False
        stream = self.get("/large.bin")
        self.factory.stopFactory()
        sent = frames(self.transport.value())
        self.transport.clear()
        [goaway] = [f for f in sent if f.type == 0x7]
        self.assertEqual((goaway.last_stream_id, goaway.error_code), (stream, 0))
        self.assertFalse(self.transport.disconnecting)
        late = self.rawHeaders(Encoder(), stream + 2, "/small.html")
        self.session.dataReceived(late.serialize())
        sent = frames(self.transport.value())
        self.transport.clear()
        self.assertEqual(
            [(f.type, f.stream_id, f.error_code) for f in sent],
            [(0x3, stream + 2, ErrorCodes.REFUSED_STREAM)],
        )
        received = len(self.responses.bodies[stream])
        while not self.transport.disconnecting:
            self.session.dataReceived(
                WindowUpdateFrame(0, window_increment=1 << 20).serialize()
                + WindowUpdateFrame(stream, window_increment=1 << 20).serialize()
            )
            for frame in frames(self.transport.drain()):
                if frame.type == 0x0:
                    received += len(frame.data)
        for frame in frames(self.transport.value()):
            if frame.type == 0x0:
                received += len(frame.data)
        self.assertEqual(received, LARGE_SIZE)


class PriorKnowledgeTests(SynchronousTestCase):
    """
    h2c with prior knowledge on a plain connection: only with C{h2c = true}.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.root, _ = makeTree(base)

    def test_on(self) -> None:
        """
        With C{h2c = true}, a connection whose first bytes are the HTTP/2
        preface is HTTP/2: the request on it is answered over HTTP/2.
        """
        factory, context = makeFactory(None, Clock(), root=self.root, h2c=True)
        session, transport = connect(factory, context)
        client = h2Client()
        stream = h2Request(client, "/notes.txt")
        session.dataReceived(client.data_to_send())
        responses = H2Responses()
        responses.receive(client, transport.value())
        self.assertEqual(responses.status[stream], 200)
        self.assertEqual(responses.bodies[stream], b"plain text\n")
        self.assertIsInstance(session.wrappedProtocol._channel, HTTP2Connection)

    def test_offByDefault(self) -> None:
        """
        By default the preface is a malformed HTTP/1.1 request: C{400}, close.
        """
        factory, context = makeFactory(None, Clock(), root=self.root)
        session, transport = connect(factory, context)
        client = h2Client()
        h2Request(client, "/notes.txt")
        session.dataReceived(client.data_to_send())
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 400 "))
        self.assertIsNone(session.wrappedProtocol._channel)

    def test_notWithChat(self) -> None:
        """
        A service that mounts a chat page speaks no HTTP/2 (its mount needs
        HTTP/1.1), even with C{http2} and C{h2c} on.
        """
        factory, context = makeFactory(None, Clock(), root=self.root, h2c=True)
        self.assertTrue(factory.http2 and factory.h2c)
        from netd.http.server import HTTPConfig, HTTPFactory

        config = HTTPConfig(root=self.root, h2c=True, chat="chat")
        chatty = HTTPFactory(context, config)
        self.assertFalse(chatty.http2)
        self.assertFalse(chatty.h2c)


def frameBytes(kind: int, flags: int, streamId: int, payload: bytes) -> bytes:
    """
    @return: A raw frame, built by hand (for frames no library would send).
    """
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + streamId.to_bytes(4, "big")
        + payload
    )


class CountingTransport(PausingTransport):
    """
    A transport that counts the writes it is given and records
    C{setTcpNoDelay}.
    """

    noDelay = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes = 0

    def write(self, data: bytes) -> None:
        """
        Count, then buffer.
        """
        self.writes += 1
        super().write(data)

    def setTcpNoDelay(self, enabled: bool) -> None:
        """
        Record the option.
        """
        self.noDelay = enabled


class FrameTests(H2TestCase):
    """
    netd's own frame layer (L{netd.http.h2frames}) on a connection: what
    RFC 9113 requires of each frame, and the protocol errors, each answered
    with C{GOAWAY} and its code (or C{RST_STREAM} for a stream's).
    """

    def raw(self, *chunks: bytes) -> list[Any]:
        """
        Send raw bytes after the client's own, and parse what the server
        answers as raw frames.

        @param chunks: Frames as bytes.
        @return: The C{hyperframe} frames answered.
        """
        self.session.dataReceived(self.client.data_to_send() + b"".join(chunks))
        sent = frames(self.transport.value())
        self.transport.clear()
        return sent

    def assertGoaway(self, sent: list[Any], code: int) -> None:
        """
        @param sent: Frames the server sent.
        @param code: The error code its C{GOAWAY} must carry.
        """
        goaways = [f for f in sent if f.type == 0x7]
        self.assertEqual([f.error_code for f in goaways], [code], sent)
        self.assertTrue(self.transport.disconnecting)

    def statusOf(self, sent: list[Any]) -> dict[int, int]:
        """
        @param sent: Frames the server sent (from a fresh decoder's view:
            netd's blocks never use the dynamic table).
        @return: Stream to the C{:status} of its C{HEADERS}.
        """
        decoder = Decoder()
        return {
            f.stream_id: int(dict(decoder.decode(f.data, raw=True))[b":status"])
            for f in sent
            if f.type == 0x1
        }

    def test_frameTooLarge(self) -> None:
        """
        A frame longer than the 16384 bytes netd allows (its
        C{SETTINGS_MAX_FRAME_SIZE}) is C{FRAME_SIZE_ERROR}.
        """
        self.open()
        sent = self.raw(frameBytes(0x0, 0, 1, b"x" * 16385))
        self.assertGoaway(sent, ErrorCodes.FRAME_SIZE_ERROR)

    def test_unknownFrameIgnored(self) -> None:
        """
        A frame of an unknown type is ignored, even on stream 0; the next
        request is answered.
        """
        self.open()
        sent = self.raw(
            frameBytes(0xFA, 0xFF, 0, b"whatever"),
            self.rawHeaders(Encoder(), 1).serialize(),
        )
        self.assertEqual(self.statusOf(sent), {1: 200})
        self.assertFalse(self.transport.disconnecting)

    def test_paddingAndPriority(self) -> None:
        """
        C{HEADERS} with padding and a priority is read past both;
        C{PRIORITY} frames are accepted (netd does not prioritise), but
        one on stream 0, of the wrong length or naming its own stream is
        a protocol error.
        """
        self.open()
        encoder = Encoder()
        fields = [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "localhost"),
            (":path", "/notes.txt"),
        ]
        padded = HeadersFrame(
            1,
            encoder.encode(fields),
            flags=["END_HEADERS", "END_STREAM", "PADDED", "PRIORITY"],
            pad_length=7,
            depends_on=0,
            stream_weight=200,
        )
        sent = self.raw(padded.serialize(), PriorityFrame(9, depends_on=1).serialize())
        self.assertEqual(self.statusOf(sent), {1: 200})
        [data] = [f for f in sent if f.type == 0x0]
        self.assertEqual(data.data, b"plain text\n")
        for bad, code in [
            (frameBytes(0x2, 0, 0, b"\x00" * 5), ErrorCodes.PROTOCOL_ERROR),
            (frameBytes(0x2, 0, 11, b"\x00" * 4), ErrorCodes.FRAME_SIZE_ERROR),
            (PriorityFrame(13, depends_on=13).serialize(), ErrorCodes.PROTOCOL_ERROR),
        ]:
            self.open()
            self.assertGoaway(self.raw(bad), code)

    def test_paddedHeadersTooShort(self) -> None:
        """
        Padding as long as the C{HEADERS} frame is C{PROTOCOL_ERROR}.
        """
        self.open()
        sent = self.raw(frameBytes(0x1, 0x4 | 0x1 | 0x8, 1, b"\x05abc"))
        self.assertGoaway(sent, ErrorCodes.PROTOCOL_ERROR)

    def test_windowUpdateOverflow(self) -> None:
        """
        A C{WINDOW_UPDATE} taking the connection window past 2^31-1 is a
        C{FLOW_CONTROL_ERROR} of the connection; taking a stream's window
        past it resets that stream only (C{RST_STREAM FLOW_CONTROL_ERROR});
        an increment of 0 on the connection is C{PROTOCOL_ERROR}.
        """
        self.open()
        self.acknowledge = False
        stream = self.get("/large.bin")
        # The stream's window is at 0: 2^31-1 fits, one more does not.
        sent = self.raw(
            WindowUpdateFrame(stream, window_increment=2**31 - 1).serialize(),
            WindowUpdateFrame(stream, window_increment=1).serialize(),
        )
        resets = [(f.stream_id, f.error_code) for f in sent if f.type == 0x3]
        self.assertEqual(resets, [(stream, ErrorCodes.FLOW_CONTROL_ERROR)])
        self.assertFalse(self.transport.disconnecting)
        # The connection window: 65535 at first, all spent on the stream.
        sent = self.raw(WindowUpdateFrame(0, window_increment=2**31 - 1).serialize())
        self.assertFalse(self.transport.disconnecting)
        sent = self.raw(WindowUpdateFrame(0, window_increment=1).serialize())
        self.assertGoaway(sent, ErrorCodes.FLOW_CONTROL_ERROR)
        self.open()
        self.assertGoaway(
            self.raw(frameBytes(0x8, 0, 0, b"\x00\x00\x00\x00")),
            ErrorCodes.PROTOCOL_ERROR,
        )

    def test_dataOnClosedStream(self) -> None:
        """
        C{DATA} on a stream the client has ended and that is answered is
        C{RST_STREAM STREAM_CLOSED}, once: what follows it on that stream is
        ignored (RFC 9113 section 5.1); the connection goes on, and its
        window is given back. On a stream never opened, or on stream 0, it is a
        C{PROTOCOL_ERROR} of the connection.
        """
        self.open()
        stream = self.get("/notes.txt")
        self.assertIn(stream, self.responses.ended)
        sent = self.raw(*[DataFrame(stream, b"x" * 16000).serialize()] * 3)
        self.assertEqual(
            [(f.type, f.stream_id, f.error_code) for f in sent if f.type == 0x3],
            [(0x3, stream, ErrorCodes.STREAM_CLOSED)],
        )
        self.assertIn(0, [f.stream_id for f in sent if f.type == 0x8])
        self.assertFalse(self.transport.disconnecting)
        self.assertGoaway(
            self.raw(DataFrame(99, b"x").serialize()), ErrorCodes.PROTOCOL_ERROR
        )
        self.open()
        self.assertGoaway(
            self.raw(frameBytes(0x0, 0, 0, b"x")), ErrorCodes.PROTOCOL_ERROR
        )

    def test_requestBodyWindows(self) -> None:
        """
        A request body larger than the initial windows is taken: netd gives
        the connection's and the stream's windows back as the data arrive
        (C{WINDOW_UPDATE} on both), so the client is not stalled.
        """
        self.open()
        self.acknowledge = False
        encoder = Encoder()
        opening = self.rawHeaders(encoder, 1, path="/large.bin", content_length="98304")
        opening.flags.discard("END_STREAM")
        sent = self.raw(
            opening.serialize(), *[DataFrame(1, b"x" * 16384).serialize()] * 6
        )
        updates = {f.stream_id for f in sent if f.type == 0x8}
        self.assertEqual(updates, {0, 1})
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual([f for f in sent if f.type == 0x3], [])

    def test_headersOnClosedStream(self) -> None:
        """
        A new header block on a stream already closed is C{STREAM_CLOSED};
        on an even (server) stream C{PROTOCOL_ERROR}.
        """
        self.open()
        stream = self.get("/notes.txt")
        self.assertGoaway(
            self.raw(self.rawHeaders(Encoder(), stream).serialize()),
            ErrorCodes.STREAM_CLOSED,
        )
        self.open()
        self.assertGoaway(
            self.raw(self.rawHeaders(Encoder(), 2).serialize()),
            ErrorCodes.PROTOCOL_ERROR,
        )

    def test_continuation(self) -> None:
        """
        A header block split over C{HEADERS} and C{CONTINUATION} frames is
        one request; any other frame between them is C{PROTOCOL_ERROR}, as
        is a C{CONTINUATION} with no block open.
        """
        self.open()
        block = self.rawHeaders(Encoder(), 1).data
        sent = self.raw(
            HeadersFrame(1, block[:5], flags=["END_STREAM"]).serialize(),
            ContinuationFrame(1, block[5:10]).serialize(),
            ContinuationFrame(1, block[10:], flags=["END_HEADERS"]).serialize(),
        )
        self.assertEqual(self.statusOf(sent), {1: 200})
        self.open()
        sent = self.raw(
            HeadersFrame(1, block[:5]).serialize(),
            PingFrame(0, opaque_data=b"12345678").serialize(),
        )
        self.assertGoaway(sent, ErrorCodes.PROTOCOL_ERROR)
        self.open()
        sent = self.raw(ContinuationFrame(1, block, flags=["END_HEADERS"]).serialize())
        self.assertGoaway(sent, ErrorCodes.PROTOCOL_ERROR)

    def test_badPreface(self) -> None:
        """
        A connection that does not start with the HTTP/2 preface, or whose
        preface is not followed by C{SETTINGS}, is C{PROTOCOL_ERROR}.
        """
        self.open(exchange=False)
        self.session.dataReceived(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertGoaway(frames(self.transport.value()), ErrorCodes.PROTOCOL_ERROR)
        self.open(exchange=False)
        self.session.dataReceived(PREFACE[:10])
        self.assertFalse(self.transport.disconnecting)
        self.session.dataReceived(PREFACE[10:] + PingFrame(0).serialize())
        self.assertGoaway(frames(self.transport.value()), ErrorCodes.PROTOCOL_ERROR)

    def test_badSettings(self) -> None:
        """
        C{SETTINGS_INITIAL_WINDOW_SIZE} past 2^31-1 is C{FLOW_CONTROL_ERROR};
        a C{SETTINGS_MAX_FRAME_SIZE} outside 16384..2^24-1, or
        C{SETTINGS_ENABLE_PUSH} other than 0 or 1, C{PROTOCOL_ERROR}; a
        C{SETTINGS ACK} with a payload, or a length not a multiple of 6,
        C{FRAME_SIZE_ERROR}; so is a C{PUSH_PROMISE} from a client
        (C{PROTOCOL_ERROR}).
        """
        for payload, code in [
            (b"\x00\x04\x80\x00\x00\x00", ErrorCodes.FLOW_CONTROL_ERROR),
            (b"\x00\x05\x00\x00\x00\x64", ErrorCodes.PROTOCOL_ERROR),
            (b"\x00\x02\x00\x00\x00\x02", ErrorCodes.PROTOCOL_ERROR),
            (b"\x00\x02\x00\x00\x00", ErrorCodes.FRAME_SIZE_ERROR),
        ]:
            self.open()
            self.assertGoaway(self.raw(frameBytes(0x4, 0, 0, payload)), code)
        self.open()
        self.assertGoaway(
            self.raw(frameBytes(0x4, 0x1, 0, b"\x00" * 6)), ErrorCodes.FRAME_SIZE_ERROR
        )
        self.open()
        self.assertGoaway(
            self.raw(frameBytes(0x5, 0x4, 1, b"\x00\x00\x00\x02\x82")),
            ErrorCodes.PROTOCOL_ERROR,
        )

    def test_initialWindowChange(self) -> None:
        """
        A new C{SETTINGS_INITIAL_WINDOW_SIZE} moves the send window of every
        open stream by the difference (RFC 9113 section 6.9.2): a stream
        stalled at 1000 bytes goes on once the setting grows.
        """
        self.open()
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 1000})
        self.talk()
        self.acknowledge = False
        stream = self.get("/large.bin")
        self.assertEqual(len(self.responses.bodies[stream]), 1000)
        self.client.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 5000})
        self.talk()
        self.assertEqual(self.responses.bodies[stream], largeContent()[:5000])

    def test_malformedRequest(self) -> None:
        """
        A malformed request (RFC 9113 section 8.1.1: uppercase name,
        connection-specific field, C{te} other than C{trailers}, empty
        C{:path}, a pseudo-header after a field) is reset with
        C{RST_STREAM PROTOCOL_ERROR}, never answered; the connection goes on.
        """
        self.open()
        encoder = Encoder()
        bad = [
            [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("X-Up", "1")],
            [(":method", "GET"), (":scheme", "https"), (":path", "/")]
            + [("connection", "keep-alive")],
            [(":method", "GET"), (":scheme", "https"), (":path", "/"), ("te", "gzip")],
            [(":method", "GET"), (":scheme", "https"), (":path", "")],
            [(":method", "GET"), ("x", "1"), (":scheme", "https"), (":path", "/")],
        ]
        streams = list(range(1, 2 * len(bad), 2))
        sent = self.raw(
            *[
                HeadersFrame(
                    stream, encoder.encode(fields), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
                for stream, fields in zip(streams, bad)
            ]
        )
        self.assertEqual(
            [(f.stream_id, f.error_code) for f in sent if f.type == 0x3],
            [(s, ErrorCodes.PROTOCOL_ERROR) for s in streams],
        )
        self.assertEqual(self.statusOf(sent), {})
        self.assertFalse(self.transport.disconnecting)
        good = self.raw(self.rawHeaders(encoder, streams[-1] + 2).serialize())
        self.assertEqual(self.statusOf(good), {streams[-1] + 2: 200})

    def test_malformedRequestsCounted(self) -> None:
        """
        Resets the client makes netd send (malformed requests in a loop,
        "MadeYouReset") count against C{http2_max_resets} like its own.
        """
        self.open(http2_max_resets=10)
        encoder = Encoder()
        fields = [(":method", "GET"), (":scheme", "https"), (":path", "")]
        sent = self.raw(
            *[
                HeadersFrame(
                    stream, encoder.encode(fields), flags=["END_HEADERS", "END_STREAM"]
                ).serialize()
                for stream in range(1, 24, 2)
            ]
        )
        self.assertGoaway(sent, ErrorCodes.ENHANCE_YOUR_CALM)

    def test_resetAfterRequestNotAnswered(self) -> None:
        """
        A request reset in the same read as its C{HEADERS} gets no response
        at all (nothing is read from its file).
        """
        self.open()
        encoder = Encoder()
        sent = self.raw(
            self.rawHeaders(encoder, 1).serialize(),
            RstStreamFrame(1, error_code=ErrorCodes.CANCEL).serialize(),
        )
        self.assertEqual([f for f in sent if f.stream_id == 1], [])
        self.assertEqual(self.factory.requests, 0)

    def test_tableSizeUpdate(self) -> None:
        """
        After the client's C{SETTINGS_HEADER_TABLE_SIZE}, the next header
        block netd sends starts with a dynamic table size update to 0
        (netd's blocks use no table, so 0 fits any size), and only that one.
        """
        self.open()
        self.client.update_settings({SettingCodes.HEADER_TABLE_SIZE: 0})
        self.talk()
        encoder = Encoder()
        first = self.raw(self.rawHeaders(encoder, 1).serialize())
        second = self.raw(self.rawHeaders(encoder, 3).serialize())
        [block] = [f.data for f in first if f.type == 0x1]
        [again] = [f.data for f in second if f.type == 0x1]
        self.assertEqual(block[:1], b"\x20")
        self.assertEqual(again, block[1:])

    def test_oneWritePerRead(self) -> None:
        """
        Ten requests in one read are answered in one write to the
        transport, each small body's C{DATA} right after its C{HEADERS};
        C{TCP_NODELAY} is set on the connection.
        """
        self.open(transportClass=CountingTransport)
        self.assertTrue(self.transport.noDelay)
        encoder = Encoder()
        self.transport.writes = 0
        sent = self.raw(
            *[self.rawHeaders(encoder, s).serialize() for s in range(1, 21, 2)]
        )
        self.assertEqual(self.transport.writes, 1)
        self.assertEqual(
            [(f.type, f.stream_id) for f in sent],
            [(t, s) for s in range(1, 21, 2) for t in (0x1, 0x0)],
        )
        self.assertEqual(self.factory.requests, 10)

    def test_recordSizedFrames(self) -> None:
        """
        A large body goes in C{DATA} frames of 16375 bytes, each with its
        header exactly one TLS record (16384 bytes), four to a write,
        whatever larger frame size the client allows; the body is intact.
        """
        self.open(transportClass=CountingTransport)
        self.transport.bufferSize = 2**30
        self.client.update_settings(
            {
                SettingCodes.MAX_FRAME_SIZE: 2**20,
                SettingCodes.INITIAL_WINDOW_SIZE: 2**30,
            }
        )
        self.client.increment_flow_control_window(2**30)
        self.talk()
        self.transport.clear()
        self.transport.writes = 0
        h2Request(self.client, "/large.bin")
        self.session.dataReceived(self.client.data_to_send())
        data = [f for f in frames(self.transport.value()) if f.type == 0x0]
        self.assertEqual({len(f.data) for f in data[:-1]}, {16375})
        self.assertEqual(b"".join(f.data for f in data), largeContent())
        self.assertEqual(self.transport.writes, -(-len(data) // 4))

    def test_longResponseHeaders(self) -> None:
        """
        A response header block larger than the client's maximum frame size
        (long configured extra fields) goes as C{HEADERS} and
        C{CONTINUATION} frames; the client reads the fields whole.
        """
        value = "v" * 9000
        names = ["X-Long-One", "X-Long-Two", "X-Long-Three"]
        self.open(headers={name: value for name in names})
        stream = h2Request(self.client, "/notes.txt")
        self.session.dataReceived(self.client.data_to_send())
        data = self.transport.value()
        self.transport.clear()
        kinds = [f.type for f in frames(data) if f.stream_id == stream]
        self.assertEqual(kinds, [0x1, 0x9, 0x0])
        self.responses.receive(self.client, data)
        self.assertEqual(self.responses.status[stream], 200)
        for name in names:
            self.assertEqual(self.responses.headers[stream][name.lower()], value)
        self.assertEqual(self.responses.bodies[stream], b"plain text\n")

    def test_trailers(self) -> None:
        """
        Trailers on a request (a second header block, ending the stream)
        are read and ignored; trailers with a pseudo-header field reset
        the stream.
        """
        self.open()
        encoder = Encoder()
        opening = self.rawHeaders(encoder, 1, path="/notes.txt")
        opening.flags.discard("END_STREAM")
        trailers = HeadersFrame(
            1, encoder.encode([("x-sum", "1")]), flags=["END_HEADERS", "END_STREAM"]
        )
        sent = self.raw(opening.serialize(), trailers.serialize())
        self.assertEqual(self.statusOf(sent), {1: 200})
        self.assertEqual([f for f in sent if f.type == 0x3], [])
        self.assertFalse(self.transport.disconnecting)
        opening = self.rawHeaders(encoder, 3, path="/large.bin")
        opening.flags.discard("END_STREAM")
        bad = HeadersFrame(
            3, encoder.encode([(":path", "/x")]), flags=["END_HEADERS", "END_STREAM"]
        )
        sent = self.raw(opening.serialize(), bad.serialize())
        self.assertIn(
            (3, ErrorCodes.PROTOCOL_ERROR),
            [(f.stream_id, f.error_code) for f in sent if f.type == 0x3],
        )


_frameStrategy = st.tuples(
    st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x4, 0x5, 0x6, 0x7, 0x8, 0x9, 0xFA]),
    st.sampled_from([0x0, 0x1, 0x4, 0x5, 0x8, 0x20, 0x2D, 0xFF]),
    st.sampled_from([0, 0, 1, 1, 3, 2, 2**31 - 1]),
    # The lengths that PRIORITY, RST_STREAM, WINDOW_UPDATE, SETTINGS and PING
    # frames must have, often, so that their handling is reached.
    st.one_of(
        *[st.binary(min_size=n, max_size=n) for n in (0, 4, 5, 6, 8)],
        st.binary(max_size=64),
    ),
)


class FuzzTests(SynchronousTestCase):
    """
    Whatever frames a client sends after a valid preface, the connection
    answers or closes; it never fails with an unexpected error.
    """

    @settings(
        max_examples=500,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(_frameStrategy, max_size=12), st.integers(1, 40))
    def test_randomFrames(
        self, sent: list[tuple[int, int, int, bytes]], cut: int
    ) -> None:
        """
        Random frames (known and unknown types, any flags, a few streams,
        short payloads, split at an arbitrary point) raise nothing and log
        no failure.

        @param sent: C{(type, flags, stream, payload)} of each frame.
        @param cut: Where to split the bytes between two reads.
        """
        base = self.mktemp()
        os.makedirs(base)
        root, _ = makeTree(base)
        clock = Clock()
        clock.advance(1_700_000_000)
        factory, context = makeFactory(None, clock, root=root)
        session, transport = connect(factory, context, transportClass=PausingTransport)
        transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        http = session.wrappedProtocol
        http.handshakeCompleted()
        events: list[dict[str, Any]] = []
        http._channel._log = Logger(observer=events.append)
        request = HeadersFrame(
            1,
            Encoder().encode(
                [(":method", "GET"), (":scheme", "https"), (":path", "/small.html")]
            ),
            flags=["END_HEADERS"],
        ).serialize()
        data = (
            PREFACE
            + SettingsFrame(0).serialize()
            + request
            + b"".join(frameBytes(*frame) for frame in sent)
        )
        session.dataReceived(data[:cut])
        session.dataReceived(data[cut:])
        clock.advance(100)
        factory.tick()
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(failures, [], [e["log_failure"] for e in failures])
