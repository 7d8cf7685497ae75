# -*- test-case-name: tests.test_http -*-
"""
Tests for the http service's protocol (L{netd.http.protocol}) and shared
state (L{netd.http.server}), in memory: L{StringTransport} connections
through the real session wrapper, on a L{Clock}.
"""

from __future__ import annotations

import json
import os
import resource
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from netd.limits import Limits
from netd.http import server as serverModule
from netd.http.accesslog import AccessLog
from netd.http.protocol import MAX_QUEUED, HTTPConnection
from netd.http.responses import httpDate, parseHTTPDate, parseRange
from netd.http.server import raiseFileLimit
from tests.httpsupport import (
    LARGE_SIZE,
    SMALL,
    PausingTransport,
    connect,
    exchange,
    get,
    largeContent,
    makeFactory,
    makeTree,
    readResponses,
)


class HTTPTestCase(SynchronousTestCase):
    """
    A document root with known files, and an http service serving it.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.root, self.secret = makeTree(base)
        self.clock = Clock()
        self.clock.advance(1_700_000_000)

    def serve(self, limits: Limits | None = None, **settings: Any) -> None:
        """
        Build the service under test as C{self.factory}/C{self.context}.

        @param limits: Session limits.
        @param settings: http settings over C{root = self.root}.
        """
        settings.setdefault("root", self.root)
        self.factory, self.context = makeFactory(limits, self.clock, **settings)

    def request(self, data: bytes, methods: list[bytes] | None = None) -> Any:
        """
        Send bytes on a new connection.

        @param data: The request(s).
        @param methods: The methods, for reading HEAD responses.
        @return: The responses.
        """
        if not hasattr(self, "factory"):
            self.serve()
        responses, self.transport = exchange(self.factory, self.context, data, methods)
        return responses

    def one(self, data: bytes, method: bytes = b"GET") -> Any:
        """
        Send one request and return its one response.

        @param data: The request.
        @param method: Its method.
        @return: The response.
        """
        responses = self.request(data, [method])
        self.assertEqual(len(responses), 1, responses)
        return responses[0]


class BasicTests(HTTPTestCase):
    """
    GET, HEAD, methods, index files, types, headers.
    """

    def test_get(self) -> None:
        """
        C{GET} of a file answers C{200} with its bytes, its length, its type,
        a date, validators and C{Accept-Ranges}.
        """
        response = self.one(get("/small.html"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, SMALL)
        self.assertEqual(response.header("content-length"), str(len(SMALL)))
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertEqual(response.header("date"), httpDate(self.clock.seconds()))
        self.assertEqual(response.header("accept-ranges"), "bytes")
        self.assertEqual(response.header("server"), "netd")
        mtime = os.stat(os.path.join(self.root, "small.html")).st_mtime
        self.assertEqual(response.header("last-modified"), httpDate(int(mtime)))
        self.assertTrue(response.header("etag").startswith('"'))

    def test_head(self) -> None:
        """
        C{HEAD} answers the same header fields as C{GET}, without a body.
        """
        head = self.one(get("/small.html", method="HEAD"), b"HEAD")
        got = self.one(get("/small.html"))
        self.assertEqual(head.status, 200)
        self.assertEqual(head.body, b"")
        self.assertEqual(head.headers, got.headers)
        self.assertTrue(head.raw.endswith(b"\r\n\r\n"))

    def test_otherMethods(self) -> None:
        """
        Every other method gets C{405} with C{Allow: GET, HEAD}, and the
        connection stays usable.
        """
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"):
            responses = self.request(
                get("/small.html", method=method) + get("/notes.txt")
            )
            self.assertEqual([r.status for r in responses], [405, 200], method)
            self.assertEqual(responses[0].header("allow"), "GET, HEAD")

    def test_postBodyIsRead(self) -> None:
        """
        A C{POST} body is read and discarded before the next request.
        """
        responses = self.request(
            b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /notes.txt "
            b"HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        self.assertEqual([r.status for r in responses], [405, 200])

    def test_index(self) -> None:
        """
        A directory is served by its index file; without its trailing slash
        it is redirected (keeping the query) to the URL with one.
        """
        self.assertEqual(self.one(get("/")).body, SMALL)
        self.assertEqual(self.one(get("/dir/")).body, b"dir index\n")
        redirect = self.one(get("/dir?a=1"))
        self.assertEqual(redirect.status, 301)
        self.assertEqual(redirect.header("location"), "/dir/?a=1")

    def test_indexOrder(self) -> None:
        """
        C{index} names are tried in order.
        """
        self.serve(index=["other.txt", "index.html"])
        self.assertEqual(self.one(get("/dir/")).body, b"other\n")

    def test_noIndexNoListing(self) -> None:
        """
        A directory without an index file is C{404} unless listing is on.
        """
        self.assertEqual(self.one(get("/empty-dir/")).status, 404)

    def test_listing(self) -> None:
        """
        With C{listing = true} a directory without an index is listed as
        HTML: names escaped, dotfiles and escaping symbolic links left out.
        """
        self.serve(listing=True, index=[])
        response = self.one(get("/"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "text/html; charset=utf-8")
        self.assertIn(b'href="small.html"', response.body)
        self.assertIn(b'href="name%20with%20space.txt"', response.body)
        self.assertIn(b'href="dir/"', response.body)
        self.assertIn(b'href="inside.html"', response.body)
        self.assertNotIn(b".env", response.body)
        self.assertNotIn(b".git", response.body)
        self.assertNotIn(b"escape.txt", response.body)

    def test_types(self) -> None:
        """
        Types come from the extension; unknown ones get C{default_type}; the
        configuration adds its own.
        """
        self.serve(mime_types={"zzz": "text/x-zzz"}, charset="")
        expected = {
            "/notes.txt": "text/plain",
            "/style.css": "text/css",
            "/app.js": "text/javascript",
            "/data.json": "application/json",
            "/image.png": "image/png",
            "/unknown.zzz": "text/x-zzz",
            "/large.bin": "application/octet-stream",
        }
        for path, contentType in expected.items():
            response = self.one(get(path, method="HEAD"), b"HEAD")
            self.assertEqual(response.header("content-type"), contentType, path)

    def test_extraHeaders(self) -> None:
        """
        C{headers} are added to every response, errors included; a
        configured C{Server} replaces netd's.
        """
        self.serve(headers={"X-Frame-Options": "DENY", "Server": "www"})
        for path in ("/small.html", "/missing", "/dir"):
            response = self.one(get(path))
            self.assertEqual(response.header("x-frame-options"), "DENY", path)
            self.assertEqual(response.header("server"), "www", path)

    def test_contentLengthEverywhere(self) -> None:
        """
        Every response carries C{Content-Length}: files, redirects, errors,
        C{304}, C{206}, C{416}, C{405}.
        """
        etag = self.one(get("/small.html")).header("etag")
        requests = [
            get("/small.html"),
            get("/dir"),
            get("/missing"),
            get("/small.html", f"If-None-Match: {etag}"),
            get("/small.html", "Range: bytes=0-1"),
            get("/small.html", "Range: bytes=9999-"),
            get("/small.html", method="PUT"),
            get("/empty.txt"),
        ]
        responses = self.request(b"".join(requests))
        self.assertEqual(
            [r.status for r in responses], [200, 301, 404, 304, 206, 416, 405, 200]
        )
        for response in responses:
            self.assertIsNotNone(response.header("content-length"), response.raw)

    def test_errorBodies(self) -> None:
        """
        Error responses have a short one-line text body: no traceback, no
        echo of the request.
        """
        for request, status in [
            (get("/missing<script>"), 404),
            (get("/%00"), 400),
            (get("/x", method="DELETE"), 405),
        ]:
            response = self.request(request)[0]
            self.assertEqual(response.status, status)
            self.assertEqual(
                response.body, f"{status} {response.reason}\n".encode("ascii")
            )
            self.assertEqual(
                response.header("content-type"), "text/plain; charset=utf-8"
            )

    def test_absoluteForm(self) -> None:
        """
        An absolute-form target (C{http://host/path}) is served by its path.
        """
        self.assertEqual(
            self.one(get("http://example.com/notes.txt")).body, b"plain text\n"
        )

    def test_queryIgnored(self) -> None:
        """
        A query string does not change which file is served.
        """
        self.assertEqual(self.one(get("/notes.txt?v=2")).body, b"plain text\n")

    def test_encodedNames(self) -> None:
        """
        Percent-encoded names (spaces, UTF-8) reach their files.
        """
        self.assertEqual(self.one(get("/name%20with%20space.txt")).body, b"spaced\n")
        self.assertEqual(self.one(get("/caf%C3%A9.txt")).body, b"accent\n")

    def test_fifoNotOpened(self) -> None:
        """
        A FIFO in the root is not a regular file: C{404}, and nothing
        blocks.
        """
        self.assertEqual(self.one(get("/fifo")).status, 404)

    def test_versions(self) -> None:
        """
        Versions other than 1.0 and 1.1 get C{505} and the connection is
        closed; HTTP/0.9 too.
        """
        response = self.one(get("/", version="2.0"))
        self.assertEqual(response.status, 505)
        self.assertTrue(self.transport.disconnecting)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(b"GET /\r\n\r\n")
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 505 "))


class HostTests(HTTPTestCase):
    """
    RFC 9112 section 3.2: the C{Host} rules (plain twistd web answers 200).
    """

    def test_missingHost11(self) -> None:
        """
        An HTTP/1.1 request without C{Host} gets C{400} and the connection
        closes.
        """
        response = self.one(b"GET /small.html HTTP/1.1\r\n\r\n")
        self.assertEqual(response.status, 400)
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(self.transport.disconnecting)

    def test_duplicateHost(self) -> None:
        """
        Two C{Host} fields get C{400}, on HTTP/1.1 and 1.0.
        """
        for version in ("1.1", "1.0"):
            response = self.one(
                f"GET /small.html HTTP/{version}\r\nHost: a\r\nHost: b\r\n\r\n".encode()
            )
            self.assertEqual(response.status, 400, version)

    def test_http10WithoutHost(self) -> None:
        """
        HTTP/1.0 does not need C{Host}.
        """
        response = self.one(b"GET /small.html HTTP/1.0\r\n\r\n")
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, SMALL)


class LimitTests(HTTPTestCase):
    """
    Oversized requests get a status (plain twistd web closes without one).
    """

    def test_longTarget(self) -> None:
        """
        A target longer than C{max_request_line} gets C{414}, then close.
        """
        self.serve(max_request_line=100)
        response = self.one(get("/" + "a" * 100))
        self.assertEqual(response.status, 414)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.one(get("/" + "a" * 98)).status, 404)

    def test_longTargetByteByByte(self) -> None:
        """
        The target limit holds when the target arrives a byte at a time.
        """
        self.serve(max_request_line=100)
        session, transport = connect(self.factory, self.context)
        for byte in b"GET /" + b"a" * 200:
            session.dataReceived(bytes([byte]))
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 414 "))

    def test_largeHeader(self) -> None:
        """
        Header fields past C{max_header_size} bytes get C{431}.
        """
        self.serve(max_header_size=1000)
        response = self.one(get("/small.html", "X-Big: " + "b" * 1000))
        self.assertEqual(response.status, 431)
        self.assertTrue(self.transport.disconnecting)

    def test_manyHeaders(self) -> None:
        """
        More than C{max_headers} fields get C{431}.
        """
        self.serve(max_headers=10)
        fields = [f"X-{i}: v" for i in range(10)]
        self.assertEqual(self.one(get("/small.html", *fields)).status, 431)
        self.assertEqual(self.one(get("/small.html", *fields[:9])).status, 200)

    def test_unterminatedHeaderBounded(self) -> None:
        """
        A header field that never ends is cut at the raw head bound even
        though the parser never reports it: the client cannot make netd
        buffer without limit.
        """
        self.serve(max_header_size=1000, max_request_line=100, max_headers=10)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(b"GET / HTTP/1.1\r\nX-Long: ")
        for _ in range(100):
            session.dataReceived(b"v" * 1000)
            if transport.value():
                break
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 431 "))
        self.assertLess(session.bytesIn, self.factory.maxHead + 2000)

    def test_bodyTooLarge(self) -> None:
        """
        A declared body past C{max_body_size} gets C{413}; so does a chunked
        one once it grows past it.
        """
        self.serve(max_body_size=10)
        response = self.one(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
        self.assertEqual(response.status, 413)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"8\r\n12345678\r\n8\r\n12345678\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 413 "))

    def test_expectContinue(self) -> None:
        """
        C{Expect: 100-continue} on a request that will be refused gets the
        final status at once (the body is not waited for); on one that will
        be read, C{100 Continue} first.
        """
        session, transport = connect(*makeFactory(root=self.root))
        session.dataReceived(
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 405 "))
        session, transport = connect(*makeFactory(root=self.root))
        session.dataReceived(
            b"GET /notes.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        session.dataReceived(b"hello")
        self.assertIn(b"plain text\n", transport.value())

    def test_malformed(self) -> None:
        """
        Malformed requests get C{400} and a closed connection, never C{500}:
        NUL in the target, a non-ASCII method byte, a bad header name,
        conflicting framing.
        """
        for request in [
            get("/%00"),
            b"G\xe9T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Name: a\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            b"GET /a\\..\\b HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ]:
            response = self.request(request)[0]
            self.assertEqual(response.status, 400, request)
            self.assertTrue(self.transport.disconnecting)


class KeepAliveTests(HTTPTestCase):
    """
    Persistent connections, pipelining, HTTP/1.0.
    """

    def test_pipelinedInOrder(self) -> None:
        """
        Pipelined requests, sent at once, are answered in order on one
        connection, whatever their kind.
        """
        paths = ["/notes.txt", "/missing", "/large.bin", "/dir", "/small.html", "/"]
        requests = b"".join(get(p) for p in paths) + get("/notes.txt", method="HEAD")
        responses = self.request(requests, [b"GET"] * 6 + [b"HEAD"])
        self.assertEqual(
            [r.status for r in responses], [200, 404, 200, 301, 200, 200, 200]
        )
        self.assertEqual(responses[0].body, b"plain text\n")
        self.assertEqual(responses[2].body, largeContent())
        self.assertEqual(responses[4].body, SMALL)
        self.assertFalse(self.transport.disconnecting)

    def test_pipelinedBehindStream(self) -> None:
        """
        Requests that arrive while a large body streams wait for it, and
        are answered after it, in order.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        session.dataReceived(get("/notes.txt") + get("/small.html"))
        received = b""
        for _ in range(1000):
            received += transport.drain()
            if not transport.producerPaused:
                break
        responses, rest = readResponses(received)
        self.assertEqual(rest, b"")
        self.assertEqual([len(r.body) for r in responses], [LARGE_SIZE, 11, len(SMALL)])

    def test_http10Closes(self) -> None:
        """
        An HTTP/1.0 request without keep-alive is answered with
        C{Connection: close} and the connection closes.
        """
        response = self.one(b"GET /notes.txt HTTP/1.0\r\n\r\n")
        self.assertEqual(response.header("connection"), "close")
        self.assertTrue(self.transport.disconnecting)

    def test_http10KeepAlive(self) -> None:
        """
        HTTP/1.0 with C{Connection: keep-alive} keeps the connection and
        says so.
        """
        responses = self.request(
            b"GET /notes.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n" * 2
        )
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(responses[0].header("connection"), "keep-alive")
        self.assertFalse(self.transport.disconnecting)

    def test_connectionClose(self) -> None:
        """
        C{Connection: close} is honoured, and requests pipelined after it
        are not answered.
        """
        responses = self.request(get("/notes.txt", "Connection: close") + get("/"))
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0].header("connection"), "close")
        self.assertTrue(self.transport.disconnecting)

    def test_keepAliveOff(self) -> None:
        """
        C{keepalive_timeout = 0} closes after every response.
        """
        self.serve(keepalive_timeout=0)
        responses = self.request(get("/notes.txt") + get("/"))
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0].header("connection"), "close")

    def test_halfClose(self) -> None:
        """
        A client that sends its requests and shuts down its sending side
        still gets every response, then the connection closes.
        """
        self.serve()
        session, transport = connect(self.factory, self.context)
        session.dataReceived(get("/notes.txt") + get("/large.bin"))
        session.readConnectionLost()
        responses, rest = readResponses(transport.value())
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(len(responses[1].body), LARGE_SIZE)
        self.assertTrue(transport.disconnecting)

    def test_halfCloseBeforeAnswer(self) -> None:
        """
        A request still queued when the client half-closes is answered
        with C{Connection: close}.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin") + get("/notes.txt"))
        session.readConnectionLost()
        received = b""
        for _ in range(1000):
            received += transport.drain()
            if not transport.producerPaused:
                break
        responses, rest = readResponses(received)
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(responses[1].header("connection"), "close")
        self.assertTrue(transport.disconnecting)


class ConditionalTests(HTTPTestCase):
    """
    ETag/If-None-Match and Last-Modified/If-Modified-Since; If-Match and
    If-Unmodified-Since.
    """

    def test_ifNoneMatch(self) -> None:
        """
        A matching C{If-None-Match} (strong, weak, in a list, or C{*})
        answers C{304} without a body; another tag answers C{200}.
        """
        etag = self.one(get("/small.html")).header("etag")
        for value in (etag, f"W/{etag}", f'"x", {etag}', "*"):
            response = self.one(get("/small.html", f"If-None-Match: {value}"))
            self.assertEqual(response.status, 304, value)
            self.assertEqual(response.header("etag"), etag)
            self.assertTrue(response.raw.endswith(b"\r\n\r\n"))
        self.assertEqual(
            self.one(get("/small.html", 'If-None-Match: "other"')).status, 200
        )

    def test_ifModifiedSince(self) -> None:
        """
        C{If-Modified-Since} at or after the modification time answers
        C{304}, before it C{200}; an invalid date is ignored; C{If-None-Match}
        wins when both are present.
        """
        mtime = int(os.stat(os.path.join(self.root, "small.html")).st_mtime)
        cases = [
            (httpDate(mtime), 304),
            (httpDate(mtime + 10), 304),
            (httpDate(mtime - 1), 200),
            ("yesterday", 200),
        ]
        for value, status in cases:
            response = self.one(get("/small.html", f"If-Modified-Since: {value}"))
            self.assertEqual(response.status, status, value)
        response = self.one(
            get(
                "/small.html",
                f"If-Modified-Since: {httpDate(mtime)}",
                'If-None-Match: "other"',
            )
        )
        self.assertEqual(response.status, 200)

    def test_ifMatch(self) -> None:
        """
        C{If-Match} with the current tag (alone, in a list, or C{*}) lets
        the request through; any other tag, or a weak one (strong
        comparison), answers C{412} without the file, and keeps the
        connection open.
        """
        etag = self.one(get("/small.html")).header("etag")
        for value in (etag, f'"x", {etag}', "*"):
            response = self.one(get("/small.html", f"If-Match: {value}"))
            self.assertEqual(response.status, 200, value)
            self.assertEqual(response.body, SMALL)
        for value in ('"other"', f"W/{etag}"):
            response = self.one(get("/small.html", f"If-Match: {value}"))
            self.assertEqual(response.status, 412, value)
            self.assertNotIn(SMALL, response.raw)
            self.assertNotEqual(response.header("connection"), "close")

    def test_ifUnmodifiedSince(self) -> None:
        """
        C{If-Unmodified-Since} before the modification time answers C{412};
        at or after it, the file; an invalid date is ignored; C{If-Match}
        wins when both are present; a failed precondition wins over
        C{If-None-Match} and C{Range}.
        """
        mtime = int(os.stat(os.path.join(self.root, "small.html")).st_mtime)
        etag = self.one(get("/small.html")).header("etag")
        cases = [
            (httpDate(mtime - 1), 412),
            (httpDate(mtime), 200),
            (httpDate(mtime + 10), 200),
            ("yesterday", 200),
        ]
        for value, status in cases:
            response = self.one(get("/small.html", f"If-Unmodified-Since: {value}"))
            self.assertEqual(response.status, status, value)
        both = self.one(
            get(
                "/small.html",
                f"If-Match: {etag}",
                f"If-Unmodified-Since: {httpDate(mtime - 1)}",
            )
        )
        self.assertEqual(both.status, 200)
        failed = self.one(
            get(
                "/small.html",
                'If-Match: "other"',
                f"If-None-Match: {etag}",
                "Range: bytes=0-9",
            )
        )
        self.assertEqual(failed.status, 412)

    def test_changeSeenAfterTTL(self) -> None:
        """
        A changed file gets a new validator, within the cache's second.
        """
        path = os.path.join(self.root, "notes.txt")
        first = self.one(get("/notes.txt"))
        with open(path, "wb") as f:
            f.write(b"new text, longer\n")
        os.utime(path, (1_600_000_000, 1_600_000_000))
        self.clock.advance(1.5)
        self.factory.tick()
        second = self.one(get("/notes.txt"))
        self.assertEqual(second.body, b"new text, longer\n")
        self.assertNotEqual(first.header("etag"), second.header("etag"))


class RangeTests(HTTPTestCase):
    """
    Byte ranges: one range honoured, several ignored, never more bytes than
    the file.
    """

    def test_singleRange(self) -> None:
        """
        C{bytes=a-b}, C{bytes=a-} and C{bytes=-n} answer C{206} with the
        bytes and C{Content-Range}; an end past the file is clipped.
        """
        cases = [
            ("bytes=0-9", 0, 10),
            ("bytes=10-", 10, len(SMALL) - 10),
            ("bytes=-5", len(SMALL) - 5, 5),
            ("bytes=990-5000", 990, len(SMALL) - 990),
        ]
        for header, start, length in cases:
            response = self.one(get("/small.html", f"Range: {header}"))
            self.assertEqual(response.status, 206, header)
            self.assertEqual(response.body, SMALL[start : start + length], header)
            self.assertEqual(
                response.header("content-range"),
                f"bytes {start}-{start + length - 1}/{len(SMALL)}",
            )

    def test_rangeOfLargeFile(self) -> None:
        """
        A range of a streamed file is read from the right offset.
        """
        response = self.one(get("/large.bin", "Range: bytes=1000000-1000999"))
        self.assertEqual(response.status, 206)
        self.assertEqual(response.body, largeContent()[1000000:1001000])

    def test_unsatisfiable(self) -> None:
        """
        A range starting past the end answers C{416} with C{Content-Range:
        bytes */size}; the connection stays usable.
        """
        responses = self.request(
            get("/small.html", "Range: bytes=5000-") + get("/notes.txt")
        )
        self.assertEqual([r.status for r in responses], [416, 200])
        self.assertEqual(responses[0].header("content-range"), f"bytes */{len(SMALL)}")

    def test_manyOverlappingRanges(self) -> None:
        """
        200 overlapping ranges in one header (twistd web answered 200 MB for
        a 2 KB request) get the file once: C{200}, never more bytes than the
        file.
        """
        header = "Range: bytes=" + ",".join(["0-999"] * 200)
        response = self.one(get("/small.html", header))
        self.assertEqual(response.status, 200)
        self.assertEqual(
            len(response.raw) - response.raw.index(b"\r\n\r\n") - 4, len(SMALL)
        )

    def test_openRangesRepeated(self) -> None:
        """
        C{bytes=0-,0-,...} (which crashed twistd web's range producer) gets
        the file once, and the connection goes on.
        """
        header = "Range: bytes=" + ",".join(["0-"] * 100)
        responses = self.request(get("/large.bin", header) + get("/notes.txt"))
        self.assertEqual([r.status for r in responses], [200, 200])
        self.assertEqual(len(responses[0].body), LARGE_SIZE)
        self.assertEqual(
            len(self.transport.value()), sum(len(r.raw) for r in responses)
        )
        self.assertLess(len(responses[0].raw), LARGE_SIZE + 1000)

    def test_ignoredRanges(self) -> None:
        """
        Malformed ranges, other units, several C{Range} fields and C{HEAD}
        get the whole file.
        """
        for header in ("bytes=a-b", "items=0-1", "bytes=5-1", "bytes="):
            self.assertEqual(
                self.one(get("/small.html", f"Range: {header}")).status, 200
            )
        self.assertEqual(
            self.one(get("/small.html", "Range: bytes=0-1", "Range: bytes=2-3")).status,
            200,
        )
        head = self.one(get("/small.html", "Range: bytes=0-1", method="HEAD"), b"HEAD")
        self.assertEqual(head.status, 200)

    def test_ifRange(self) -> None:
        """
        C{If-Range} with the current tag or date applies the range; with a
        stale one the whole file is sent.
        """
        first = self.one(get("/small.html"))
        etag, date = first.header("etag"), first.header("last-modified")
        for value, status in [
            (etag, 206),
            (date, 206),
            ('"stale"', 200),
            (f"W/{etag}", 200),
        ]:
            response = self.one(
                get("/small.html", "Range: bytes=0-1", f"If-Range: {value}")
            )
            self.assertEqual(response.status, status, value)

    def test_parseRange(self) -> None:
        """
        L{parseRange} on the edge cases: empty files, zero suffixes, huge
        numbers.
        """
        self.assertEqual(parseRange(b"bytes=0-", 0), (-1, -1))
        self.assertEqual(parseRange(b"bytes=-0", 10), (-1, -1))
        self.assertEqual(parseRange(b"bytes=-100", 10), (0, 9))
        self.assertEqual(parseRange(b"bytes=0-99999999999999999", 10), (0, 9))
        self.assertIsNone(parseRange(b"bytes=" + b"9" * 30 + b"-", 10))
        self.assertEqual(parseRange(b"BYTES = 1-2", 10), (1, 2))


class StreamingTests(HTTPTestCase):
    """
    Large files stream through the producer at constant memory.
    """

    def test_constantMemory(self) -> None:
        """
        A large file is sent in pieces while the transport accepts them:
        never much more than its buffer is held, whatever the file size.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        self.assertTrue(transport.producerPaused)
        received = b""
        while True:
            chunk = transport.drain()
            if not chunk:
                break
            received += chunk
        responses, rest = readResponses(received)
        self.assertEqual(responses[0].body, largeContent())
        self.assertLess(transport.highWater, 300 * 1024)

    def test_fileClosedOnDisconnect(self) -> None:
        """
        A client that goes away in the middle of a body releases the file.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        connection = session.wrappedProtocol
        fd = connection._stream.fd
        from twisted.internet.error import ConnectionLost
        from twisted.python.failure import Failure

        session.connectionLost(Failure(ConnectionLost()))
        self.assertIsNone(connection._stream)
        self.assertRaises(OSError, os.fstat, fd)

    def test_fileShrinks(self) -> None:
        """
        A file that shrinks while it is sent cannot meet its
        C{Content-Length}: the connection is aborted, not padded.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        os.truncate(os.path.join(self.root, "large.bin"), 100_000)
        for _ in range(100):
            transport.drain()
        self.assertTrue(transport.disconnected)


class TimeoutTests(HTTPTestCase):
    """
    The header deadline, the keep-alive timeout and the send timeout.
    """

    def advance(self, seconds: float) -> None:
        """
        Let time pass, a tenth of a second at a time.

        @param seconds: How long.
        """
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)

    def test_slowloris(self) -> None:
        """
        A client sending one header line every few seconds (which twistd
        web keeps forever, its timeout resetting on every byte) gets C{408}
        and is closed once C{header_timeout} has passed since its first byte.
        """
        self.serve(header_timeout=10)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(b"GET / HTTP/1.1\r\n")
        for i in range(4):
            self.advance(2)
            session.dataReceived(f"X-{i}: a\r\n".encode())
        self.assertEqual(transport.value(), b"")
        self.advance(3)
        self.assertTrue(
            transport.value().startswith(b"HTTP/1.1 408 "), transport.value()
        )
        self.assertTrue(transport.disconnecting)

    def test_headerDeadlinePerRequest(self) -> None:
        """
        The header deadline runs per request: a keep-alive client sending a
        request every few seconds is served for as long as it likes.
        """
        self.serve(header_timeout=5, keepalive_timeout=15)
        session, transport = connect(self.factory, self.context)
        for _ in range(10):
            session.dataReceived(get("/notes.txt"))
            self.advance(3)
        responses, _ = readResponses(transport.value())
        self.assertEqual(len(responses), 10)
        self.assertFalse(transport.disconnecting)

    def test_silentConnection(self) -> None:
        """
        A connection that never sends a byte is closed quietly after
        C{header_timeout}.
        """
        self.serve(header_timeout=5)
        session, transport = connect(self.factory, self.context)
        self.advance(4)
        self.assertFalse(transport.disconnecting)
        self.advance(2.5)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")

    def test_keepAliveIdle(self) -> None:
        """
        An idle keep-alive connection is closed quietly after
        C{keepalive_timeout}.
        """
        self.serve(keepalive_timeout=7)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(get("/notes.txt"))
        self.advance(6)
        self.assertFalse(transport.disconnecting)
        self.advance(2.5)
        self.assertTrue(transport.disconnecting)

    def test_nonReader(self) -> None:
        """
        A client that stops reading (twistd web keeps it forever) is cut
        C{send_timeout} after the transport stopped accepting data, and its
        file is released.
        """
        self.serve(send_timeout=20)
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        self.assertTrue(transport.producerPaused)
        self.advance(19)
        self.assertFalse(transport.disconnected)
        self.advance(2.5)
        self.assertTrue(transport.disconnected)
        self.assertIsNone(session.wrappedProtocol._stream)

    def test_slowReaderNotCut(self) -> None:
        """
        A client that reads slowly but steadily is not cut: each time the
        transport drains, the send timer starts again.
        """
        self.serve(send_timeout=5)
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        received = b""
        for _ in range(20):
            self.advance(3)
            received += transport.drain()
        self.assertFalse(transport.disconnected)

    def test_nonReaderPipelining(self) -> None:
        """
        A client that pipelines requests for small files and never reads
        stops being read once the transport is full, and is cut at the send
        timeout: netd does not buffer responses without bound.
        """
        self.serve(send_timeout=10)
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        for _ in range(200):
            if transport.producerState == "paused":
                break
            session.dataReceived(get("/small.html") * 20)
        self.assertEqual(transport.producerState, "paused")
        self.assertLess(len(transport.value()), 200 * 1024)
        self.advance(11.5)
        self.assertTrue(transport.disconnected)

    def test_lingeringCloseBounded(self) -> None:
        """
        A connection being closed is aborted if it is still open
        C{send_timeout} later.
        """
        self.serve(send_timeout=5)
        session, transport = connect(self.factory, self.context)
        session.dataReceived(get("/notes.txt", "Connection: close"))
        self.assertTrue(transport.disconnecting)
        self.advance(6.5)
        self.assertTrue(transport.disconnected)

    def test_noTimerPerRequest(self) -> None:
        """
        Serving requests schedules no timer per request: one clock call
        runs while connections are open, none once they are closed.
        """
        self.serve()
        session, transport = connect(self.factory, self.context)
        for _ in range(50):
            session.dataReceived(get("/notes.txt"))
        calls = self.clock.getDelayedCalls()
        self.assertEqual(
            sorted(
                "tick" if call.func is self.factory._tick else "session idle check"
                for call in calls
            ),
            ["session idle check", "tick"],
        )
        from twisted.internet.error import ConnectionDone
        from twisted.python.failure import Failure

        session.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(self.factory._tick.running)


class AccessLogTests(HTTPTestCase):
    """
    The access log: a Combined Log Format file and structured events.
    """

    def test_offByDefault(self) -> None:
        """
        With access logging off, serving a request logs nothing at all.
        """
        events: list[dict[str, Any]] = []
        self.patch(HTTPConnection, "_log", Logger(observer=events.append))
        self.patch(AccessLog, "_log", Logger(observer=events.append))
        self.request(get("/notes.txt") + get("/missing"))
        self.assertEqual(events, [])

    def test_events(self) -> None:
        """
        With C{access_log_events}, each request is one event with the
        fields peer, method, target, status, bytes, duration, referer and
        userAgent.
        """
        events: list[dict[str, Any]] = []
        self.patch(AccessLog, "_log", Logger(observer=events.append))
        self.serve(access_log_events=True)
        self.request(
            get("/notes.txt", "Referer: http://r/", "User-Agent: ua/1")
            + get("/missing")
        )
        self.assertEqual(len(events), 2)
        first = events[0]
        self.assertEqual(
            {k: first[k] for k in ("peer", "method", "target", "status", "bytes")},
            {
                "peer": "127.0.0.1",
                "method": "GET",
                "target": "/notes.txt",
                "status": 200,
                "bytes": 11,
            },
        )
        self.assertEqual((first["referer"], first["userAgent"]), ("http://r/", "ua/1"))
        self.assertEqual(first["service"], "http")
        self.assertIn("duration", first)
        self.assertEqual(events[1]["status"], 404)

    def test_file(self) -> None:
        """
        With C{access_log_file}, lines in Combined Log Format are written,
        buffered until the clock's next tick, escaped against injection.
        """
        path = os.path.join(self.mktemp() + "-access.log")
        self.serve(access_log_file=path)
        self.factory.startFactory()
        self.request(
            get("/notes.txt", 'User-Agent: evil"\xff agent', "Referer: http://r/")
            + get("/large.bin", method="HEAD"),
            [b"GET", b"HEAD"],
        )
        with open(path) as f:
            self.assertEqual(f.read(), "")
        self.clock.advance(1)
        with open(path) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 2)
        stamp = "14/Nov/2023:22:13:20 +0000"
        self.assertEqual(
            lines[0],
            f'127.0.0.1 - - [{stamp}] "GET /notes.txt HTTP/1.1" 200 11 '
            '"http://r/" "evil\\"\\xff agent"',
        )
        self.assertEqual(
            lines[1],
            f'127.0.0.1 - - [{stamp}] "HEAD /large.bin HTTP/1.1" 200 - "-" "-"',
        )
        self.factory.stopFactory()

    def test_fileReopenedAfterRotation(self) -> None:
        """
        When the log file is moved away, the next flush writes a new one.
        """
        path = os.path.join(self.mktemp() + "-access.log")
        self.serve(access_log_file=path)
        self.factory.startFactory()
        self.request(get("/notes.txt"))
        self.factory.accessLog.flush()
        os.rename(path, path + ".1")
        self.request(get("/notes.txt"))
        self.factory.accessLog.flush()
        with open(path) as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        self.factory.stopFactory()
        self.factory.accessLog.close()


class StatusTests(HTTPTestCase):
    """
    The status endpoint.
    """

    def test_offByDefault(self) -> None:
        """
        Without C{status_path}, C{/.netd/status} is an ordinary (hidden,
        missing) path.
        """
        self.assertEqual(self.one(get("/.netd/status")).status, 404)

    def test_json(self) -> None:
        """
        With C{status_path}, a loopback client gets JSON with netd's
        version, the uptime and every service's counters.
        """
        self.serve(status_path="/.netd/status")
        self.clock.advance(42)
        response = self.one(get("/.netd/status"))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.header("content-type"), "application/json")
        self.assertEqual(response.header("cache-control"), "no-store")
        status = json.loads(response.body)
        self.assertEqual(status["uptime"], 42)
        self.assertEqual(status["service"], "http")
        self.assertEqual(
            set(status["services"]["http"]["counters"]),
            set(self.context.counters.snapshot()),
        )

    def test_otherServicesListed(self) -> None:
        """
        Every service of the process is in the status, from
        C{context.instances}.
        """
        from tests.support import makeContext

        self.serve(status_path="/status")
        echo = makeContext("echo")
        echo.counters.sessions = 7
        self.context.instances["echo"] = echo
        status = json.loads(self.one(get("/status")).body)
        self.assertEqual(status["services"]["echo"]["counters"]["sessions"], 7)
        self.assertEqual(status["services"]["echo"]["type"], "echo")

    def test_loopbackOnly(self) -> None:
        """
        By default only loopback clients may read it; others get C{403}.
        """
        self.serve(status_path="/status")
        responses, _ = exchange(
            self.factory, self.context, get("/status"), host="192.0.2.7"
        )
        self.assertEqual(responses[0].status, 403)
        self.serve(status_path="/status", status_allow=["192.0.2.0/24"])
        responses, _ = exchange(
            self.factory, self.context, get("/status"), host="192.0.2.7"
        )
        self.assertEqual(responses[0].status, 200)


class BundledPageTests(SynchronousTestCase):
    """
    Without C{root}, netd's own page.
    """

    def test_page(self) -> None:
        """
        The page says what netd is and lists the services running.
        """
        from tests.support import makeContext

        factory, context = makeFactory()
        context.instances["echo"] = makeContext("echo")
        factory.startFactory()
        responses, _ = exchange(factory, context, get("/"))
        page = responses[0].body.decode("utf-8")
        self.assertEqual(responses[0].status, 200)
        self.assertIn("multi-service network daemon", page)
        self.assertIn("<td>echo</td>", page)
        self.assertIn("<td>http</td>", page)
        self.assertNotIn("@@", page)
        self.assertEqual(exchange(factory, context, get("/nothing"))[0][0].status, 404)
        self.assertNotIn("<a href", page)
        factory.stopFactory()

    def test_pageLinksMountedChat(self) -> None:
        """
        When the http service mounts a chat service, the page links the chat
        service's row to its browser page.
        """
        from tests.support import makeContext

        factory, context = makeFactory(chat="lobby", chat_path="/talk/")
        context.instances["lobby"] = makeContext("chat")
        factory.startFactory()
        page = exchange(factory, context, get("/"))[0][0].body.decode("utf-8")
        factory.stopFactory()
        self.assertIn('<a href="/talk/">in the browser: <code>/talk/</code></a>', page)


class HelperTests(SynchronousTestCase):
    """
    Small pieces: dates, the file limit.
    """

    def test_httpDates(self) -> None:
        """
        The three date forms RFC 9110 requires are read; garbage is not.
        """
        when = 784111777
        for text in (
            b"Sun, 06 Nov 1994 08:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov  6 08:49:37 1994",
        ):
            self.assertEqual(parseHTTPDate(text), when, text)
        for text in (b"", b"yesterday", b"Sun, 99 Nov 1994 08:49:37 GMT", b"x" * 100):
            self.assertIsNone(parseHTTPDate(text), text)

    def test_raiseFileLimit(self) -> None:
        """
        The soft limit on open files is raised to the hard limit.
        """
        calls: list[tuple[int, tuple[int, int]]] = []
        self.patch(resource, "getrlimit", lambda which: (1024, 524288))
        self.patch(
            resource, "setrlimit", lambda which, limits: calls.append((which, limits))
        )
        self.assertEqual(raiseFileLimit(), (1024, 524288))
        self.assertEqual(calls, [(resource.RLIMIT_NOFILE, (524288, 524288))])
        self.patch(resource, "getrlimit", lambda which: (524288, 524288))
        self.assertIsNone(raiseFileLimit())

    def test_raisedAtStart(self) -> None:
        """
        The factory raises the limit when its listener starts.
        """
        called: list[bool] = []
        self.patch(serverModule, "raiseFileLimit", lambda: called.append(True))
        factory, context = makeFactory()
        factory.startFactory()
        self.assertEqual(called, [True])
        factory.stopFactory()


class QueueTests(HTTPTestCase):
    """
    The pipelining queue is bounded.
    """

    def test_readingStopsWhenQueueFull(self) -> None:
        """
        Behind a streaming body, at most about L{MAX_QUEUED} requests wait
        before reading stops.
        """
        self.serve()
        session, transport = connect(
            self.factory, self.context, transportClass=PausingTransport
        )
        session.dataReceived(get("/large.bin"))
        session.dataReceived(get("/notes.txt") * (MAX_QUEUED + 1))
        self.assertEqual(transport.producerState, "paused")


class SessionTLSTests(SynchronousTestCase):
    """
    The session wrapper under a TLS-style wrapper (a regression found by the
    http service's TLS tests).
    """

    def test_halfCloseThroughWrapper(self) -> None:
        """
        A protocol wrapper inside the session (as C{TLSMemoryBIOProtocol} is)
        copies the session's interfaces onto itself; a half-close must not
        bounce between the two for ever, but close the connection.
        """
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.testing import StringTransport
        from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

        from netd.sessions import SessionFactory
        from tests.support import makeContext

        inner = WrappingFactory(Factory.forProtocol(Protocol))
        context = makeContext("echo")
        sessions = SessionFactory(inner, context, "ssl:443")
        session = sessions.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        session.makeConnection(transport)
        self.assertIsInstance(session.wrappedProtocol, ProtocolWrapper)
        session.readConnectionLost()
        self.assertTrue(transport.disconnecting)


class SessionTransportTests(HTTPTestCase):
    """
    The http connection asks its transport for L{ISessionTransport}: the
    session provides it (byte counts, the socket for C{sendfile}); a TLS
    layer between them does not, even though it copies the session's
    declarations onto itself.
    """

    def test_sessionProvides(self) -> None:
        """
        L{Session} provides L{ISessionTransport}; on an in-memory transport
        it has no socket to hand out.
        """
        from zope.interface.verify import verifyObject

        from netd.interfaces import ISessionTransport

        self.serve()
        session, transport = connect(self.factory, self.context)
        self.assertTrue(verifyObject(ISessionTransport, session))
        self.assertIsNone(session.sendfileSocket())
        self.assertIs(session.wrappedProtocol._session, session)

    def test_notThroughWrapper(self) -> None:
        """
        Under a protocol wrapper (as C{TLSMemoryBIOProtocol} is) the
        connection does not treat its transport as the session: nothing is
        sent around the wrapper.
        """
        from twisted.internet.testing import StringTransport
        from twisted.protocols.policies import WrappingFactory

        from netd.sessions import SessionFactory

        self.serve()
        sessions = SessionFactory(WrappingFactory(self.factory), self.context, "ssl:0")
        session = sessions.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert session is not None
        session.makeConnection(StringTransport())
        connection = session.wrappedProtocol.wrappedProtocol
        self.assertIsInstance(connection, HTTPConnection)
        self.assertIsNone(connection._session)
        self.assertIsNone(connection._socket)


class DrainTests(HTTPTestCase):
    """
    When the listeners close (SIGTERM, a reload retiring the service).
    """

    def test_idleClosedBusyFinish(self) -> None:
        """
        Idle keep-alive connections are closed at once; a connection in the
        middle of a request gets its response with C{Connection: close}.
        """
        self.serve()
        idle, idleTransport = connect(self.factory, self.context)
        idle.dataReceived(get("/notes.txt"))
        busy, busyTransport = connect(self.factory, self.context)
        busy.dataReceived(b"GET /notes.txt HTTP/1.1\r\n")
        self.factory.stopFactory()
        self.assertTrue(idleTransport.disconnecting)
        self.assertFalse(busyTransport.disconnecting)
        busy.dataReceived(b"Host: a\r\n\r\n")
        responses, _ = readResponses(busyTransport.value())
        self.assertEqual(responses[0].status, 200)
        self.assertEqual(responses[0].header("connection"), "close")
        self.assertTrue(busyTransport.disconnecting)
