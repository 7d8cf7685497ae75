# -*- test-case-name: tests.test_http -*-
"""
Helpers for the http service's tests: a service on a fake clock, in-memory
connections through the real session wrapper, a small response reader, and
a document root with known files.
"""

from __future__ import annotations

import os
from typing import Any

from attrs import frozen
from h2.config import H2Configuration
from h2.connection import H2Connection
from hyperframe.frame import Frame
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
)
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from netd.limits import Limits
from netd.http.server import HTTPFactory
from netd.services.http import SETTINGS, buildStreamFactory
from netd.sessions import Session, SessionFactory
from netd.servicetype import ServiceContext
from tests.support import makeContext

SMALL = b"<!DOCTYPE html><title>small</title>\n" + b"x" * 964
SECRET = b"the contents of a file outside the document root\n"
LARGE_SIZE = 3 * 1024 * 1024 + 17


def largeContent(size: int = LARGE_SIZE) -> bytes:
    """
    @param size: The size.
    @return: Bytes that differ at every position modulo 251, so that an
        offset error shows.
    """
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


def makeTree(base: str) -> tuple[str, str]:
    """
    Build a document root with known files, and a secret file beside it.

    @param base: A new directory to build in.
    @return: The root and the secret file's path.
    """
    base = os.path.abspath(base)
    root = os.path.join(base, "root")
    os.makedirs(os.path.join(root, "dir"))
    os.makedirs(os.path.join(root, "empty-dir"))
    os.makedirs(os.path.join(root, ".git"))
    secret = os.path.join(base, "secret.txt")
    files = {
        "index.html": SMALL,
        "small.html": SMALL,
        "notes.txt": b"plain text\n",
        "style.css": b"body {}\n",
        "app.js": b"1;\n",
        "data.json": b"{}\n",
        "image.png": b"\x89PNG\r\n\x1a\n",
        "unknown.zzz": b"?",
        "empty.txt": b"",
        "large.bin": largeContent(),
        "dir/index.html": b"dir index\n",
        "dir/other.txt": b"other\n",
        ".env": b"PASSWORD=hunter2\n",
        ".git/config": b"[core]\n",
        "name with space.txt": b"spaced\n",
        "caf\u00e9.txt": b"accent\n",
    }
    for name, content in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    with open(secret, "wb") as f:
        f.write(SECRET)
    os.symlink(secret, os.path.join(root, "escape.txt"))
    os.symlink(base, os.path.join(root, "escape-dir"))
    os.symlink("small.html", os.path.join(root, "inside.html"))
    os.symlink(".env", os.path.join(root, "to-dotfile"))
    os.mkfifo(os.path.join(root, "fifo"))
    return root, secret


def httpSettings(**raw: Any) -> dict[str, Any]:
    """
    Convert raw (TOML-like) http settings the way the configuration does.

    @param raw: Settings by TOML key.
    @return: Every setting, converted, defaults filled.
    """
    settings = {setting.key: setting.default for setting in SETTINGS}
    byKey = {setting.key: setting for setting in SETTINGS}
    for key, value in raw.items():
        settings[key] = byKey[key].convert(value)
    return settings


def makeFactory(
    limits: Limits | None = None, clock: Clock | None = None, **raw: Any
) -> tuple[HTTPFactory, ServiceContext]:
    """
    Build an http service on a fake clock.

    @param limits: Its session limits.
    @param clock: The clock (a new L{Clock} if L{None}).
    @param raw: Its settings (raw TOML values).
    @return: The factory and the service's context.
    """
    context = makeContext(
        "http",
        limits=limits,
        settings=httpSettings(**raw),
        reactor=clock if clock is not None else Clock(),
    )
    context.instances[context.name] = context
    return buildStreamFactory(context), context


class PausingTransport(StringTransport):
    """
    A L{StringTransport} that, like a TCP transport, pauses its streaming
    producer when more than C{bufferSize} bytes wait, and can be drained
    by hand.

    @ivar bufferSize: Bytes buffered before the producer is paused.
    @ivar highWater: The most bytes ever buffered at once.
    """

    bufferSize = 65536

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.highWater = 0
        self.producerPaused = False

    def write(self, data: bytes) -> None:
        """
        Buffer, and pause the producer past L{bufferSize}.

        @param data: The bytes.
        """
        super().write(data)
        size = len(self.io.getvalue())
        self.highWater = max(self.highWater, size)
        if (
            size > self.bufferSize
            and self.producer is not None
            and self.streaming
            and not self.producerPaused
        ):
            self.producerPaused = True
            self.producer.pauseProducing()

    def drain(self) -> bytes:
        """
        Let the client read everything buffered; resume the producer.

        @return: The bytes read.
        """
        data = self.value()
        self.clear()
        if self.producerPaused and self.producer is not None:
            self.producerPaused = False
            self.producer.resumeProducing()
        return data


def connect(
    factory: HTTPFactory,
    context: ServiceContext,
    host: str = "127.0.0.1",
    transportClass: type = StringTransport,
) -> tuple[Session, StringTransport]:
    """
    Open an in-memory connection through the session wrapper, as the
    listener would.

    @param factory: The http factory.
    @param context: Its service's context.
    @param host: The client's address.
    @param transportClass: The transport to use.
    @return: The session (whose C{wrappedProtocol} is the http connection)
        and the transport.
    """
    sessions = SessionFactory(factory, context, "tcp:80")
    peer = IPv4Address("TCP", host, 40000)
    session = sessions.buildProtocol(peer)
    assert session is not None
    transport = transportClass(peerAddress=peer)
    session.makeConnection(transport)
    return session, transport


@frozen
class Response:
    """
    One response, as a client reads it.

    @ivar status: The status code.
    @ivar reason: The reason phrase.
    @ivar headers: Header fields, lowercase name to list of values.
    @ivar body: The body.
    @ivar raw: The whole response, as received.
    """

    status: int
    reason: str
    headers: dict[str, list[str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        """
        @param name: A header name.
        @return: Its single value, or L{None}.
        """
        values = self.headers.get(name.lower())
        if not values:
            return None
        assert len(values) == 1, values
        return values[0]


def readResponses(
    data: bytes, methods: list[bytes] | None = None
) -> tuple[list[Response], bytes]:
    """
    Split bytes into responses (a test-side reader, independent of the
    server's parser).

    @param data: Bytes from the server.
    @param methods: The methods of the requests, in order (C{HEAD}
        responses have no body); C{GET} for all if L{None}.
    @return: The complete responses and any bytes left over.
    """
    responses = []
    index = 0
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].decode("latin-1").split("\r\n")
        version, status, reason = (head[0].split(" ", 2) + [""])[:3]
        assert version == "HTTP/1.1", head[0]
        headers: dict[str, list[str]] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        method = methods[index] if methods and index < len(methods) else b"GET"
        length = int(headers.get("content-length", ["0"])[0])
        code = int(status)
        if code < 200:
            data = data[end + 4 :]
            continue
        if method == b"HEAD" or code == 304:
            length = 0
        if len(data) < end + 4 + length:
            break
        body = data[end + 4 : end + 4 + length]
        responses.append(
            Response(code, reason, headers, body, data[: end + 4 + length])
        )
        data = data[end + 4 + length :]
        index += 1
    return responses, data


def exchange(
    factory: HTTPFactory,
    context: ServiceContext,
    request: bytes,
    methods: list[bytes] | None = None,
    host: str = "127.0.0.1",
) -> tuple[list[Response], StringTransport]:
    """
    Send bytes on a new connection and read the responses.

    @param factory: The http factory.
    @param context: Its context.
    @param request: The bytes to send.
    @param methods: See L{readResponses}.
    @param host: The client's address.
    @return: The responses and the transport.
    """
    session, transport = connect(factory, context, host)
    session.dataReceived(request)
    responses, rest = readResponses(transport.value(), methods)
    assert rest == b"", rest
    return responses, transport


def get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    """
    Build a request.

    @param path: The target.
    @param headers: C{Name: value} lines; C{Host} is added unless one is
        given.
    @param method: The method.
    @param version: The HTTP version.
    @return: The request bytes.
    """
    lines = [f"{method} {path} HTTP/{version}"]
    if not any(h.lower().startswith("host:") for h in headers):
        lines.append("Host: example.com")
    lines.extend(headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def h2Client() -> H2Connection:
    """
    @return: A client-side C{h2} connection, its preface already queued.
    """
    connection = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    connection.initiate_connection()
    return connection


def h2Request(
    connection: H2Connection,
    path: str,
    headers: list[tuple[str, str]] | None = None,
    method: str = "GET",
) -> int:
    """
    Queue one request on a client connection.

    @param connection: The client connection.
    @param path: The target.
    @param headers: More fields.
    @param method: The method.
    @return: Its stream.
    """
    streamId = connection.get_next_available_stream_id()
    fields = [
        (":method", method),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", path),
        *(headers or []),
    ]
    connection.send_headers(
        streamId, [(n.encode(), v.encode()) for n, v in fields], end_stream=True
    )
    return streamId


class H2Responses:
    """
    What a client connection has received, by stream.

    @ivar status: Stream to status.
    @ivar headers: Stream to header fields (lowercase C{str} names).
    @ivar bodies: Stream to body bytes so far.
    @ivar ended: Streams whose response is complete.
    @ivar reset: Streams the server reset, to their error code.
    @ivar goaway: The server's C{GOAWAY}, if any.
    """

    def __init__(self) -> None:
        self.status: dict[int, int] = {}
        self.headers: dict[int, dict[str, str]] = {}
        self.bodies: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.goaway: ConnectionTerminated | None = None

    def receive(
        self, connection: H2Connection, data: bytes, acknowledge: bool = True
    ) -> None:
        """
        Feed bytes from the server to the client connection.

        @param connection: The client connection.
        @param data: The bytes.
        @param acknowledge: Whether to give body bytes back to the windows.
        """
        for event in connection.receive_data(data):
            if isinstance(event, ResponseReceived):
                fields = {n.decode(): v.decode() for n, v in event.headers}
                self.status[event.stream_id] = int(fields[":status"])
                self.headers[event.stream_id] = fields
                self.bodies.setdefault(event.stream_id, b"")
            elif isinstance(event, DataReceived):
                self.bodies[event.stream_id] = (
                    self.bodies.get(event.stream_id, b"") + event.data
                )
                if acknowledge and event.flow_controlled_length:
                    connection.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, StreamEnded):
                self.ended.add(event.stream_id)
            elif isinstance(event, StreamReset):
                self.reset[event.stream_id] = event.error_code
            elif isinstance(event, ConnectionTerminated):
                self.goaway = event


def h2Exchange(
    sock: Any,
    requests: list[tuple[str, list[tuple[str, str]]]],
    close: bool = False,
    timeout: float = 20.0,
) -> list[tuple[int, dict[str, str], bytes]]:
    """
    Send requests over HTTP/2 on a connected blocking socket (TLS or not)
    and read their responses.

    @param sock: The socket.
    @param requests: C{(path, extra fields)} pairs.
    @param close: Whether to send C{GOAWAY} afterwards.
    @param timeout: Seconds to wait in all.
    @return: C{(status, headers, body)} per request, in order.
    """
    connection = h2Client()
    streams = [h2Request(connection, path, headers) for path, headers in requests]
    sock.sendall(connection.data_to_send())
    responses = H2Responses()
    sock.settimeout(timeout)
    while not all(s in responses.ended or s in responses.reset for s in streams):
        data = sock.recv(1 << 16)
        if not data:
            break
        responses.receive(connection, data)
        sock.sendall(connection.data_to_send())
    if close:
        connection.close_connection()
        sock.sendall(connection.data_to_send())
    return [
        (
            responses.status.get(s, 0),
            responses.headers.get(s, {}),
            responses.bodies.get(s, b""),
        )
        for s in streams
    ]


def frames(data: bytes) -> list[Any]:
    """
    Parse raw HTTP/2 frames (for a client that must read on after a
    C{GOAWAY}, which C{h2}'s own client refuses to).

    @param data: Whole frames.
    @return: The C{hyperframe} frames.
    """
    result = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        result.append(frame)
        data = data[9 + length :]
    return result
