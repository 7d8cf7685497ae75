# -*- test-case-name: tests.test_http -*-
"""
One HTTP/1.1 connection: L{HTTPConnection}, a Twisted protocol around the
C{httptools} binding of llhttp (Node.js's parser).

llhttp does the framing and the syntax (it refuses malformed request lines,
header names and values, conflicting C{Content-Length} and
C{Transfer-Encoding}, and so on); this protocol adds what a server needs on
top, in the order a request arrives:

    1. B{Limits while reading}: the request target (C{414}), the header
       fields' size and count (C{431}), the body (C{413}); and, because
       C{httptools} accumulates a header field internally until it is
       complete, a bound on the raw bytes of any request head, so that a
       client cannot make the parser buffer without limit.
    2. B{Rules on the head}: HTTP/1.0 and 1.1 only (C{505}); exactly one
       C{Host} on HTTP/1.1 and at most one on 1.0 (C{400}); C{GET} and
       C{HEAD} only (C{405} with C{Allow}).
    3. B{Responses in order}: pipelined requests are answered in the order
       they arrived. A response is either written at once (a cached file, an
       error, a C{304}) or streamed from disk by this protocol acting as the
       transport's push producer: it writes while the transport accepts and
       stops when the transport pauses it, so memory stays constant whatever
       the file size. Requests that arrive meanwhile wait in a short queue;
       when it is full, reading stops.
    4. B{Deadlines}, checked once a second by the factory's clock rather
       than by a timer per request: a request must arrive completely within
       C{header_timeout} of its first byte (else C{408} and close); an idle
       keep-alive connection is closed after C{keepalive_timeout}; a client
       that stops reading (the transport stays paused) is cut after
       C{send_timeout}; a connection being closed gets C{send_timeout} to
       flush.

Nothing is logged per request unless the access log is on. An unexpected
exception answers C{500} with a one-line body and closes the connection;
the traceback goes to the log, never to the client.

A request under a mount path (the chat service's web front end) hands the
connection over to C{twisted.web}; see L{netd.http.mount}.

Not C{twisted.web} for the rest: its parsing and resources cost about 135 us
of Python per request, this protocol about 6 us (docs/design.md).
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

from httptools import (
    HttpParserCallbackError,
    HttpParserError,
    HttpParserUpgrade,
    HttpRequestParser,
)
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.http.accesslog import describeHost
from netd.http.answer import answer
from netd.http.files import FileEntry
from netd.http.h2 import PREFACE, HTTP2Connection
from netd.http.paths import BadTarget, decodePath, isUnder, splitTarget
from netd.http.request import (
    CLOSING,
    HEAD,
    IDLE,
    NONE,
    SEND,
    Reject,
    Request,
    FieldReader,
)
from netd.interfaces import ISessionTransport
from netd.transport import sendBufferEmpty
from netd.http.responses import (
    CLOSE,
    KEEP_ALIVE,
    STATUS_LINES,
)

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory


STREAM_CHUNK = 65536
MAX_QUEUED = 32
LINGER = 2.0

_GET = b"GET"
_HEAD = b"HEAD"
_STATUS_200 = STATUS_LINES[200]
_STATUS_206 = STATUS_LINES[206]
_STATUS_304 = STATUS_LINES[304]
_STATUS_301 = STATUS_LINES[301]

# Statuses after which the connection is closed: the request could not be
# framed or read, so what follows it on the connection cannot be trusted.
_CLOSING_STATUSES = frozenset((400, 408, 413, 414, 431, 500, 505))


class _Stop(Exception):
    """
    Raised inside a parser callback to stop parsing: the connection is
    closing or being handed over, what follows is not for this parser.
    """


class _Stream:
    """
    A response body being streamed from a file.

    @ivar fd: The open file.
    @ivar offset: The next byte to read.
    @ivar remaining: Bytes still to send.
    @ivar request: The request it answers.
    @ivar status: The response status.
    @ivar close: Whether the connection closes after it.
    """

    __slots__ = ("fd", "offset", "remaining", "request", "status", "close", "sent")

    def __init__(
        self,
        fd: int,
        offset: int,
        remaining: int,
        request: Request,
        status: int,
        close: bool,
    ) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = remaining
        self.request = request
        self.status = status
        self.close = close
        self.sent = 0


@implementer(IPushProducer, IHalfCloseableProtocol, IHandshakeListener)
class HTTPConnection(FieldReader, Protocol):
    """
    One client connection of an http service.

    @ivar factory: The service's shared state.
    @ivar deadline: When the current deadline expires (factory clock), or
        0 for none.
    @ivar deadlineKind: What happens then: L{IDLE}, L{HEAD}, L{SEND} or
        L{CLOSING}.
    """

    _log = Logger()
    factory: HTTPFactory
    transport: Any

    deadline = 0.0
    deadlineKind = NONE
    _req: Request | None = None
    _upgradeRequest: Request | None = None
    _stream: _Stream | None = None
    _writePaused = False
    _readPaused = False
    _noMoreInput = False
    _closing = False
    _closeStarted = False
    _lingering = False
    _headRequest: Request | None = None
    _readClosed = False
    _lost = False
    _handingOver = False
    _channel: Any = None
    _peer: str | None = None
    _headFed = 0
    _socket: int | None = None
    _handle: socket.socket | None = None
    _registered = True
    _session: Any = None

    def connectionMade(self) -> None:
        """
        Start parsing; become the transport's producer; register with the
        factory's clock.
        """
        factory = self.factory
        self._parser = HttpRequestParser(self)
        self._queue: deque[Request] = deque()
        self._pending: list[bytes] = []
        self.transport.registerProducer(self, True)
        factory.connectionOpened(self)
        transport = self.transport
        # Asked of the class: Twisted's protocol wrappers (the TLS layer)
        # copy their transport's interfaces onto themselves when connected
        # (ProtocolWrapper.makeConnection), so providedBy would find the
        # session's declaration on the TLS layer too.
        if ISessionTransport.implementedBy(type(transport)):
            # A plain stream socket (not TLS): file bodies can be sent with
            # sendfile, and the session's byte count kept by hand.
            self._session = transport
            handle = transport.sendfileSocket()
            if handle is not None:
                self._handle = handle
                self._socket = handle.fileno()
        self.deadline = factory.now + factory.headerTimeout
        self.deadlineKind = IDLE

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake is done: if ALPN selected C{h2}, the connection is
        HTTP/2's from its first byte.
        """
        if (
            getattr(self.transport, "negotiatedProtocol", None) == b"h2"
            and self.factory.http2
        ):
            self._switchToHTTP2(b"")

    def _switchToHTTP2(self, data: bytes) -> None:
        """
        Hand the connection to L{HTTP2Connection}.

        @param data: What the client has sent so far (for prior knowledge:
            the preface and what followed it).
        """
        factory = self.factory
        factory.connectionClosed(self)
        self.deadline = 0.0
        self.deadlineKind = NONE
        self._noMoreInput = True
        self._unregister()
        if self._readPaused:
            self._readPaused = False
            self.transport.resumeProducing()
        channel = HTTP2Connection(factory)
        self._channel = channel
        channel.makeConnection(self.transport)
        if data:
            channel.dataReceived(data)

    def drain(self) -> None:
        """
        The listeners closed: an idle connection closes now; one with a
        response owed closes after it (L{_mustClose} sees the drain).
        """
        if self.deadlineKind == IDLE:
            self.deadlineExpired()

    # Receiving.

    def dataReceived(self, data: bytes) -> None:
        """
        Feed the parser; turn its errors into error responses.

        @param data: Bytes from the client.
        """
        if self._channel is not None:
            self._channel.dataReceived(data)
            return
        if self._noMoreInput:
            if self._handingOver and self._upgradeRequest is not None:
                self._pending.append(data)
            return
        try:
            self._parser.feed_data(data)
        except HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, Reject):
                self._fail(cause.status)
            elif not isinstance(cause, _Stop):
                self._unexpected(cause)
            return
        except HttpParserUpgrade as e:
            self._upgraded(data, e.args[0])
            return
        except HttpParserError:
            if (
                self.factory.h2c
                and data.startswith(PREFACE)
                and self._stream is None
                and not self._queue
            ):
                # HTTP/2 with prior knowledge: llhttp stops at the preface.
                self._req = None
                self._switchToHTTP2(data)
                return
            self._fail(400)
            return
        except Exception as e:
            self._unexpected(e)
            return
        req = self._req
        if req is not None and not req.headDone:
            # httptools holds an incomplete header field itself: bound the
            # raw bytes of a head. A head that began in an earlier chunk owns
            # all of this one.
            if req is self._headRequest:
                self._headFed += len(data)
                if self._headFed > self.factory.maxHead:
                    # The target is bounded exactly (on_url), so what
                    # overflows is the header section, unless the target
                    # has not even begun.
                    self._fail(431 if req.url else 414)
            else:
                self._headRequest = req
                self._headFed = 0

    def on_message_begin(self) -> None:
        """
        A request starts: its head must be complete within C{header_timeout}.
        """
        factory = self.factory
        req = self._req = Request()
        if factory.mount is not None:
            req.headers = []
        req.started = factory.clock.seconds()
        if self.deadlineKind != SEND:
            self.deadline = factory.now + factory.headerTimeout
            self.deadlineKind = HEAD

    def on_url(self, part: bytes) -> None:
        """
        Some of the request target (llhttp may deliver it in pieces).

        @param part: The next bytes of the target.
        @raise Reject: C{414} when the target is too long.
        """
        req = self._req
        assert req is not None
        url = req.url = req.url + part
        if len(url) > self.factory.maxRequestLine:
            raise Reject(414)

    def on_headers_complete(self) -> None:
        """
        The head is complete: apply the version, C{Host} and method rules;
        decide whether the request belongs to a mounted resource.
        """
        req = self._req
        assert req is not None
        req.headDone = True
        parser = self._parser
        req.method = method = parser.get_method()
        req.version = version = parser.get_http_version()
        req.keepAlive = parser.should_keep_alive()
        if version != "1.1" and version != "1.0":
            req.error = 505
            return
        if req.hosts > 1 or (req.hosts == 0 and version == "1.1"):
            req.error = 400
            return
        factory = self.factory
        mount = factory.mount
        if mount is not None and isUnder(req.url, mount.prefix):
            try:
                decodePath(splitTarget(req.url).path)
            except BadTarget:
                req.error = 400
                return
            req.mount = True
            req.body = []
        elif method != _GET and method != _HEAD:
            req.error = 405
        hasBody = req.chunked or bool(req.contentLength)
        if req.expect and hasBody:
            if req.error:
                # Answer now rather than make the client send a body that
                # would be thrown away.
                req.keepAlive = False
                self._req = None
                self._noMoreInput = True
                self._dispatch(req)
                raise _Stop()
            if self._stream is None and not self._queue:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, data: bytes) -> None:
        """
        Some of a request body: counted, kept only for a mounted resource.

        @param data: The bytes.
        @raise Reject: C{413} past C{max_body_size}.
        """
        req = self._req
        assert req is not None
        req.bodyBytes += len(data)
        if req.bodyBytes > self.factory.maxBodySize:
            raise Reject(413)
        if req.body is not None:
            req.body.append(data)

    def on_message_complete(self) -> None:
        """
        A request is complete: answer it, or queue it behind the responses
        still being sent.
        """
        req = self._req
        assert req is not None
        self._req = None
        if self.deadlineKind == HEAD:
            self.deadlineKind = NONE
            self.deadline = 0.0
        if self._parser.should_upgrade():
            # HttpParserUpgrade follows, with the offset of what comes next.
            self._upgradeRequest = req
            return
        if req.mount:
            self._noMoreInput = self._handingOver = True
            self._dispatch(req)
            raise _Stop()
        if not req.keepAlive:
            self._noMoreInput = True
        self._dispatch(req)
        if self._noMoreInput:
            raise _Stop()

    def _upgraded(self, data: bytes, offset: int) -> None:
        """
        The parser stopped after a request asking to switch protocols.

        A mounted resource (a WebSocket) gets the connection and the bytes
        after the request. Anywhere else the upgrade is ignored, as RFC 9110
        allows: the request is answered as usual and parsing goes on.

        @param data: The chunk being parsed.
        @param offset: Where the request ended in it.
        """
        req = self._upgradeRequest
        self._upgradeRequest = None
        if req is None:
            self._fail(400)
            return
        rest = data[offset:]
        if req.mount:
            req.upgrade = True
            req.rest = rest
            self._upgradeRequest = req
            self._noMoreInput = self._handingOver = True
            self._dispatch(req)
            return
        self._parser = HttpRequestParser(self)
        if not req.keepAlive:
            self._noMoreInput = True
        self._dispatch(req)
        if rest and not self._noMoreInput:
            self.dataReceived(rest)

    # Answering.

    def _dispatch(self, req: Request) -> None:
        """
        Answer a request now, or queue it behind a response being streamed.

        @param req: The complete request.
        """
        if self._stream is not None or self._queue:
            self._queue.append(req)
            self._updateReading()
            return
        self._answer(req)
        if self._stream is None and not self._closing and self._channel is None:
            self._idle()

    def _answer(self, req: Request) -> None:
        """
        Answer one request.

        @param req: The request.
        """
        if req.mount:
            self._handOver(req)
            return
        if req.error:
            self._error(req, req.error)
            return
        answer(self.factory, req, self)

    def _connectionHeader(self, req: Request, close: bool) -> bytes:
        """
        @param req: The request.
        @param close: Whether the connection closes after this response.
        @return: The C{Connection} line the response needs, if any.
        """
        if close:
            return CLOSE
        if req.version == "1.0":
            return KEEP_ALIVE
        return b""

    def _mustClose(self, req: Request) -> bool:
        """
        @param req: The request being answered.
        @return: Whether the connection closes after its response.
        """
        return (
            not req.keepAlive
            or self._readClosed
            or self.factory.noKeepAlive
            or self.factory.draining
        )

    # Responder: what netd.http.answer decided, written as HTTP/1.1.

    def peer(self) -> Any:
        """
        @return: The client's address.
        """
        return self.transport.getPeer()

    def sendError(self, req: Request, status: int) -> None:
        """
        Answer an error status (see L{_error}).

        @param req: The request.
        @param status: The status.
        """
        self._error(req, status)

    def sendUnsatisfiable(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{416} with the size of the file.

        @param req: The request.
        @param entry: The file.
        """
        self._error(
            req,
            416,
            b"Content-Range: bytes */" + str(entry.size).encode("ascii") + b"\r\n",
        )

    def sendRedirect(self, req: Request, location: bytes) -> None:
        """
        Answer C{301} (see L{_redirect}).

        @param req: The request.
        @param location: Where to.
        """
        self._redirect(req, location)

    def sendNotModified(self, req: Request, entry: FileEntry) -> None:
        """
        Answer C{304} with the file's validators.

        @param req: The request.
        @param entry: The file.
        """
        close = self._mustClose(req)
        self.transport.write(
            _STATUS_304
            + self.factory.dateLine
            + entry.common
            + b"Content-Length: "
            + str(entry.size).encode("ascii")
            + b"\r\n"
            + self._connectionHeader(req, close)
            + b"\r\n"
        )
        self._done(req, 304, 0, close)

    def sendFile(
        self,
        req: Request,
        entry: FileEntry,
        status: int,
        start: int,
        length: int,
        body: bytes | None,
        fd: int | None,
    ) -> None:
        """
        Answer C{200} or C{206}: the head, then the body given or streamed
        from C{fd} (with C{sendfile} on a plain socket).

        @param req: The request.
        @param entry: The file.
        @param status: C{200} or C{206}.
        @param start: The first byte.
        @param length: How many bytes.
        @param body: The bytes, or L{None} to stream from C{fd}.
        @param fd: The open file, or L{None}.
        """
        factory = self.factory
        close = self._mustClose(req)
        if status == 200:
            head = _STATUS_200 + factory.dateLine + entry.headers
        else:
            head = (
                _STATUS_206
                + factory.dateLine
                + entry.common
                + b"Content-Range: bytes %d-%d/%d\r\nContent-Length: %d\r\n"
                % (start, start + length - 1, entry.size, length)
            )
        head += self._connectionHeader(req, close) + b"\r\n"
        if body is not None:
            self.transport.write(head + body if body else head)
            self._done(req, status, len(body), close)
            return
        assert fd is not None
        # Corked, the head and the first sendfile bytes leave in full
        # segments rather than the head alone in a small one.
        handle = self._handle
        if handle is not None:
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.transport.write(head)
        self._stream = _Stream(fd, start, length, req, status, close)
        # A transport that wrote the head through to the socket has nothing
        # queued: the body can start with sendfile at once.
        session = self._session
        self._pump(drained=session is not None and sendBufferEmpty(session.transport))
        if handle is not None and self._socket is not None:
            handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def _pump(self, drained: bool = False) -> None:
        """
        Send file data while the transport accepts it.

        @param drained: Whether the transport has just written everything it
            had buffered (it resumed this producer): then, on a plain socket,
            the file is first sent with C{sendfile} until the socket is full.
        """
        stream = self._stream
        if drained and stream is not None and self._socket is not None:
            if not self._sendfile(stream):
                return
        while stream is not None and not self._writePaused:
            try:
                data = os.pread(
                    stream.fd, min(STREAM_CHUNK, stream.remaining), stream.offset
                )
            except OSError:
                data = b""
            if not data:
                # The file shrank under us: the promised length cannot be
                # sent, so the client must see the connection end.
                self._log.warn(
                    "{service}: a file shrank while being sent; connection aborted",
                    service=self.factory.name,
                )
                self._endStream()
                self._abort()
                return
            size = len(data)
            stream.offset += size
            stream.remaining -= size
            stream.sent += size
            if not stream.remaining:
                self._endStream()
                self.transport.write(data)
                self._done(stream.request, stream.status, stream.sent, stream.close)
                if not self._closing:
                    self._drainQueue()
                return
            self.transport.write(data)
            stream = self._stream

    def _sendfile(self, stream: _Stream) -> bool:
        """
        Send file data straight from the page cache to the socket, until the
        socket is full or the body is sent.

        Only called when the transport's own buffer is empty, so the bytes
        go out in order. The session's byte count is kept up to date.

        @param stream: The body being sent.
        @return: Whether to go on with buffered writes (the body is not
            finished and the connection is still open).
        """
        sent = 0
        out = self._socket
        assert out is not None
        try:
            while stream.remaining:
                n = os.sendfile(out, stream.fd, stream.offset, stream.remaining)
                if not n:
                    break
                stream.offset += n
                stream.remaining -= n
                stream.sent += n
                sent += n
        except BlockingIOError:
            pass
        except OSError:
            self._endStream()
            self._abort()
            return False
        finally:
            if sent and self._session is not None:
                self._session.bytesOut += sent
        if stream.remaining:
            return True
        self._endStream()
        self._done(stream.request, stream.status, stream.sent, stream.close)
        if not self._closing:
            self._drainQueue()
        return False

    def _endStream(self) -> None:
        """
        Release the file of the response being streamed.
        """
        stream = self._stream
        if stream is not None:
            self._stream = None
            os.close(stream.fd)

    def _drainQueue(self) -> None:
        """
        Answer queued requests until one streams, the connection closes or
        the queue is empty.
        """
        queue = self._queue
        while (
            queue
            and self._stream is None
            and not self._closing
            and self._channel is None
        ):
            self._answer(queue.popleft())
        if self._closing or self._channel is not None:
            return
        self._updateReading()
        if self._stream is None and not queue:
            self._idle()

    def _redirect(self, req: Request, location: bytes) -> None:
        """
        Answer C{301} to a directory's URL with its trailing slash.

        @param req: The request.
        @param location: Where to.
        """
        factory = self.factory
        close = self._mustClose(req)
        body = b"301 Moved Permanently\n"
        self.transport.write(
            _STATUS_301
            + factory.dateLine
            + factory.extra
            + b"Location: "
            + location
            + b"\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "
            + str(len(body)).encode("ascii")
            + b"\r\n"
            + self._connectionHeader(req, close)
            + b"\r\n"
            + (body if req.method != _HEAD else b"")
        )
        self._done(req, 301, 0 if req.method == _HEAD else len(body), close)

    def _error(self, req: Request | None, status: int, extra: bytes = b"") -> None:
        """
        Answer an error status with a one-line body.

        @param req: The request, or L{None} if it could not be read.
        @param status: The status.
        @param extra: More header lines for this response.
        """
        factory = self.factory
        close = req is None or status in _CLOSING_STATUSES or self._mustClose(req)
        response = factory.errorResponses[status, close]
        if req is not None and req.version == "1.0" and not close:
            response = KEEP_ALIVE + response
        if req is not None and req.method == _HEAD:
            response = response[: response.index(b"\r\n\r\n") + 4]
        self.transport.write(STATUS_LINES[status] + factory.dateLine + extra + response)
        if req is None:
            req = self._req or Request()
        self._done(req, status, factory.errorBodyLength[status], close)

    def sendStatusPage(self, req: Request, body: bytes) -> None:
        """
        Answer the status endpoint with its JSON.

        @param req: The request.
        @param body: The JSON.
        """
        factory = self.factory
        close = self._mustClose(req)
        head = (
            _STATUS_200
            + factory.dateLine
            + factory.extra
            + b"Content-Type: application/json\r\nCache-Control: no-store\r\n"
            + b"Content-Length: "
            + str(len(body)).encode("ascii")
            + b"\r\n"
            + self._connectionHeader(req, close)
            + b"\r\n"
        )
        if req.method == _HEAD:
            self.transport.write(head)
            self._done(req, 200, 0, close)
        else:
            self.transport.write(head + body)
            self._done(req, 200, len(body), close)

    def _done(self, req: Request, status: int, sent: int, close: bool) -> None:
        """
        A response has been handed to the transport: log it, close if asked.

        @param req: The request.
        @param status: The status sent.
        @param sent: Body bytes sent.
        @param close: Whether to close the connection now.
        """
        factory = self.factory
        factory.requests += 1
        started = req.started
        factory.stats.record(
            status, factory.clock.seconds() - started if started else 0.0
        )
        if factory.accessLog.enabled:
            self._record(req, status, sent)
        if close or self._closing:
            self._startClosing()

    def _record(self, req: Request, status: int, sent: int) -> None:
        """
        Send one access record.

        @param req: The request.
        @param status: The status sent.
        @param sent: Body bytes sent.
        """
        if self._peer is None:
            self._peer = describeHost(self.transport.getPeer())
        self.factory.record(self._peer, req, status, sent)

    def _fail(self, status: int) -> None:
        """
        The request being read is refused (limits, malformed): answer after
        the responses before it, then close.

        @param status: The status.
        """
        req = self._req or Request()
        self._req = None
        req.error = status
        req.keepAlive = False
        req.mount = False
        self._noMoreInput = True
        self._dispatch(req)

    def _unexpected(self, error: BaseException | None) -> None:
        """
        A bug: log it, answer C{500} (never a traceback), close.

        @param error: The exception.
        """
        failure = Failure(error) if error is not None else Failure()
        self._log.failure(
            "{service}: unexpected error in an http connection",
            failure,
            service=self.factory.name,
        )
        if self._stream is not None:
            self._endStream()
            self._abort()
            return
        self._queue.clear()
        self._fail(500)

    # Closing.

    def _startClosing(self) -> None:
        """
        No more requests on this connection: close once the current response
        is out.
        """
        self._closing = self._noMoreInput = True
        self._queue.clear()
        if self._stream is not None or self._lost or self._closeStarted:
            return
        self._closeStarted = True
        self._unregister()
        factory = self.factory
        self.deadline = factory.now + factory.sendTimeout
        self.deadlineKind = CLOSING
        transport = self.transport
        loseWrite = getattr(transport, "loseWriteConnection", None)
        if loseWrite is not None and not self._readClosed and self._session is not None:
            # Lingering close: stop sending, but keep reading (and dropping)
            # what the client still sends for a moment, so that closing with
            # unread data does not reset the connection before the client has
            # read the response.
            self._lingering = True
            if self._readPaused:
                self._readPaused = False
                transport.resumeProducing()
            loseWrite()
        else:
            transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """
        Our sending side is shut (lingering close): give the client a moment
        to close its side.
        """
        if self._lingering:
            self.deadline = min(self.deadline, self.factory.now + LINGER)
        else:
            self.transport.loseConnection()

    def readConnectionLost(self) -> None:
        """
        The client will send no more: finish the responses owed, then close.
        """
        self._readClosed = True
        if self._closeStarted:
            self.transport.loseConnection()
            return
        if self._req is not None and not self._handingOver:
            # A request cut short: nothing to answer.
            self._req = None
        if self._channel is not None:
            self.transport.loseConnection()
            return
        if self._stream is None and not self._queue and not self._handingOver:
            self._startClosing()

    def _unregister(self) -> None:
        """
        Stop being the transport's producer (once).
        """
        if self._registered:
            self._registered = False
            self.transport.unregisterProducer()

    def _abort(self) -> None:
        """
        Drop the connection now.
        """
        self._closing = self._noMoreInput = self._closeStarted = True
        self._queue.clear()
        self._endStream()
        self.transport.abortConnection()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Release the file being sent, forget the deadlines.

        @param reason: Why.
        """
        self._lost = True
        self._endStream()
        self._queue.clear()
        self.factory.connectionClosed(self)
        if self._channel is not None:
            self._channel.connectionLost(reason)

    # Deadlines.

    def _idle(self) -> None:
        """
        Nothing owed and nothing arriving: the keep-alive timer runs.
        """
        if self._req is None and self.deadlineKind != SEND:
            factory = self.factory
            self.deadline = factory.now + factory.keepaliveTimeout
            self.deadlineKind = IDLE

    def deadlineExpired(self) -> None:
        """
        Called by the factory's clock when L{deadline} has passed.
        """
        kind = self.deadlineKind
        self.deadline = 0.0
        self.deadlineKind = NONE
        if kind == IDLE:
            self._startClosing()
        elif kind == HEAD:
            if self._stream is None and not self._queue:
                self._fail(408)
            else:
                self._abort()
        elif kind == SEND or kind == CLOSING:
            self._abort()

    # IPushProducer: the transport says whether it accepts more.

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: stop sending and reading; the send
        timer runs.
        """
        if self._writePaused:
            return
        self._writePaused = True
        factory = self.factory
        if self.deadlineKind != CLOSING:
            self.deadline = factory.now + factory.sendTimeout
            self.deadlineKind = SEND
        self._updateReading()

    def resumeProducing(self) -> None:
        """
        The transport's buffer has drained: go on sending and reading.
        """
        if not self._writePaused:
            return
        self._writePaused = False
        self._updateReading()
        if self.deadlineKind == SEND:
            self.deadlineKind = NONE
            self.deadline = 0.0
            if self._req is not None:
                factory = self.factory
                self.deadline = factory.now + factory.headerTimeout
                self.deadlineKind = HEAD
        if self._stream is not None:
            self._pump(drained=True)
        elif self._queue:
            self._drainQueue()
        elif not self._closing:
            self._idle()

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        self._endStream()

    def _updateReading(self) -> None:
        """
        Read from the client unless the transport is full or too many
        requests wait.
        """
        if self._lost or self._closeStarted:
            return
        # While a body streams, later requests only queue (and the queue is
        # bounded), so reading goes on; otherwise a full transport means the
        # client is not reading its responses: stop reading its requests.
        paused = (
            (self._writePaused and self._stream is None)
            or self._handingOver
            or len(self._queue) >= MAX_QUEUED
        )
        if paused and not self._readPaused:
            self._readPaused = True
            self.transport.pauseProducing()
        elif not paused and self._readPaused:
            self._readPaused = False
            self.transport.resumeProducing()

    # The mount.

    def _handOver(self, req: Request) -> None:
        """
        Give the connection to C{twisted.web} for a mounted resource.

        The request is rebuilt from what the parser delivered (in origin
        form, without transfer coding); a plain request gets C{Connection:
        close}, so that the rest of the site is served by this protocol again
        on the client's next connection; a WebSocket upgrade keeps the
        connection, with the bytes that followed it.

        @param req: The request.
        """
        from netd.http.mount import rebuildRequest

        factory = self.factory
        mount = factory.mount
        assert mount is not None
        try:
            site = mount.site()
        except Exception as e:
            self._handingOver = False
            self._log.failure(
                "{service}: cannot build the mounted resource",
                Failure(e),
                service=factory.name,
            )
            self._fail(503)
            return
        data = rebuildRequest(req, close=not req.upgrade)
        # What followed an upgrade request is for the new protocol: it is
        # delivered separately, once twisted.web has switched the channel
        # over (bytes given together with the request would stay in the
        # HTTP channel's buffer and be lost).
        rest = req.rest + b"".join(self._pending) if req.upgrade else b""
        self._pending = []
        self._queue.clear()
        factory.connectionClosed(self)
        self.deadline = 0.0
        self.deadlineKind = NONE
        self._unregister()
        if self._readPaused:
            self._readPaused = False
            self.transport.resumeProducing()
        channel = site.buildProtocol(self.transport.getPeer())
        self._channel = channel
        self._handingOver = False
        factory.requests += 1
        channel.makeConnection(self.transport)
        channel.dataReceived(data)
        if rest and self._channel is not None:
            channel.dataReceived(rest)
