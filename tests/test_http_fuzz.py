# -*- test-case-name: tests.test_http_fuzz -*-
"""
Property tests for the http protocol: random request bytes, fed whole and
byte by byte, never produce a C{500} or a traceback, and produce the same
bytes either way (plain twistd web answers C{500} with a traceback to
C{GET /%00} and to a non-ASCII method byte).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netd.http.protocol import HTTPConnection
from tests.httpsupport import connect, makeFactory, makeTree

METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"OPTIONS", b"CONNECT", b"G\xe9T", b"get"]
TARGETS = [
    b"/",
    b"/small.html",
    b"/notes.txt",
    b"/dir",
    b"/dir/",
    b"/missing",
    b"/%00",
    b"/%",
    b"/%zz",
    b"/%c0%ae%c0%ae/secret.txt",
    b"/../secret.txt",
    b"/escape.txt",
    b"/.env",
    b"*",
    b"http://example.com/notes.txt",
    b"/a\\b",
    b"/\xff",
    b"/caf%C3%A9.txt",
    b"/name%20with%20space.txt?x=1#frag",
]
VERSIONS = [
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"HTTP/1.2",
    b"",
    b"http/1.1",
]
HEADERS = [
    b"Host: example.com",
    b"Host: a",
    b"Host:",
    b"Range: bytes=0-9",
    b"Range: bytes=-5",
    b"Range: bytes=5000-",
    b"Range: bytes=0-,0-,0-",
    b"Range: bytes=x",
    b'If-None-Match: "x", *',
    b"If-Modified-Since: Sun, 06 Nov 2094 08:49:37 GMT",
    b'If-Range: W/"x"',
    b"Connection: close",
    b"Connection: keep-alive",
    b"Connection: Upgrade",
    b"Upgrade: websocket",
    b"Content-Length: 3",
    b"Content-Length: -1",
    b"Transfer-Encoding: chunked",
    b"Expect: 100-continue",
    b"X-Long: " + b"a" * 300,
    b"Bad Header: x",
    b"X-Null: a\x00b",
]


@st.composite
def requestLike(draw: Any) -> bytes:
    """
    Bytes that look like pipelined requests, with random damage.

    @param draw: Hypothesis's draw function.
    @return: Request bytes.
    """
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        method = draw(st.sampled_from(METHODS))
        target = draw(st.one_of(st.sampled_from(TARGETS), st.binary(max_size=20)))
        version = draw(st.sampled_from(VERSIONS))
        line = method + b" " + target + (b" " + version if version else b"")
        headers = draw(st.lists(st.sampled_from(HEADERS), max_size=5))
        eol = draw(st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n"]))
        body = draw(st.sampled_from([b"", b"abc", b"3\r\nabc\r\n0\r\n\r\n", b"\r\n"]))
        parts.append(line + eol + b"".join(h + eol for h in headers) + eol + body)
    data = b"".join(parts)
    if draw(st.booleans()):
        position = draw(st.integers(0, len(data)))
        data = data[:position] + draw(st.binary(max_size=8)) + data[position:]
    return data


class FuzzTests(SynchronousTestCase):
    """
    Random bytes against the protocol.
    """

    def setUp(self) -> None:
        base = self.mktemp()
        os.makedirs(base)
        self.root, _ = makeTree(base)
        self.events: list[dict[str, Any]] = []
        self.patch(HTTPConnection, "_log", Logger(observer=self.events.append))
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.factory, self.context = makeFactory(
            root=self.root, max_request_line=200, max_header_size=1000, clock=self.clock
        )

    def feed(self, chunks: list[bytes]) -> tuple[bytes, bool]:
        """
        Feed chunks to a new connection.

        @param chunks: The bytes, split.
        @return: What the server wrote, and whether it closed.
        """
        session, transport = connect(self.factory, self.context)
        for chunk in chunks:
            if transport.disconnecting:
                break
            session.dataReceived(chunk)
        session.readConnectionLost()
        result = transport.value(), transport.disconnecting
        session.connectionLost(Failure(ConnectionDone()))
        return result

    def check(self, data: bytes) -> None:
        """
        The properties, for one input.

        @param data: Request bytes.
        """
        whole = self.feed([data])
        bytewise = self.feed([data[i : i + 1] for i in range(len(data))])
        self.assertEqual(whole, bytewise, data)
        output = whole[0]
        self.assertNotIn(b"HTTP/1.1 500 ", output, data)
        self.assertNotIn(b"Traceback", output, data)
        self.assertNotIn(b"outside the document root", output, data)
        self.assertEqual([e for e in self.events if "log_failure" in e], [], data)

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(requestLike())
    def test_requestLike(self, data: bytes) -> None:
        """
        Plausible, damaged, pipelined requests: no C{500}, no traceback, the
        same response bytes whole and byte by byte.
        """
        self.check(data)

    @settings(
        max_examples=250,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(st.binary(max_size=300))
    def test_randomBytes(self, data: bytes) -> None:
        """
        Arbitrary bytes: no C{500}, no traceback, the same response bytes
        whole and byte by byte.
        """
        self.check(data)

    def test_knownCrashers(self) -> None:
        """
        The inputs that made plain twistd web answer C{500}.
        """
        for data in (
            b"GET /%00 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"G\xc3\xa9T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"\xffGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        ):
            self.check(data)
            self.assertTrue(self.feed([data])[0].startswith(b"HTTP/1.1 400 "))
