# -*- test-case-name: tests.test_http2 -*-
"""
One HTTP/2 connection: L{HTTP2Connection}, a Twisted protocol around the
sans-I/O C{h2} library.

It is reached two ways, both through L{HTTPConnection
<netd.http.protocol.HTTPConnection>}, which hands its transport over: on an
C{ssl:} listener when ALPN selected C{h2} (the TLS handshake's end), and on
a C{tcp:} listener with C{h2c = true} when a connection opens with the
HTTP/2 preface (prior knowledge, RFC 9113 section 3.3).

Each request is read into the same L{Request<netd.http.request.Request>} as
an HTTP/1.1 one, with the same header-field limits (L{FieldReader
<netd.http.request.FieldReader>}), and answered by the same L{answer
<netd.http.answer.answer>}: this module only frames what it decides.

B{Flow control, end to end}. A response body is sent as the peer's windows
allow: for each stream with a body owed, at most C{min(stream window,
connection window, 64 KiB)} bytes are read (C{os.pread} at the stream's
offset, nothing read ahead) and cut into frames of the peer's maximum frame
size; streams take turns. Sending stops when the transport pauses this
producer (its buffer is full: the client is not reading) and resumes when it
drains, so a connection holds at most about one chunk per stream in memory,
whatever the file sizes. C{sendfile} cannot be used inside TLS (the bytes
must pass through OpenSSL to be encrypted; kernel TLS would allow it, but
pyOpenSSL does not expose it), so file bytes are read into a buffer of at
most the window and written to the TLS layer.

B{Limits} (each tested in C{tests.test_http2}):
    - C{SETTINGS_MAX_CONCURRENT_STREAMS} = C{http2_max_streams}; a client
      opening more is refused by C{h2} (a connection error);
    - C{SETTINGS_MAX_HEADER_LIST_SIZE} from C{max_header_size}, enforced by
      the HPACK decoder while it decodes (an HPACK bomb stops there), and
      the HTTP/1.1 field limits on top (C{431});
    - rapid reset (CVE-2023-44487): more than C{http2_max_resets} streams
      reset by the client in one second: C{GOAWAY ENHANCE_YOUR_CALM}, close;
    - CONTINUATION flood: C{h2} refuses a header block of more than 64
      CONTINUATION frames (a connection error), and the block must arrive
      within C{header_timeout} like any request;
    - PING, SETTINGS and PRIORITY floods: more than
      C{http2_max_control_frames} a second: C{GOAWAY ENHANCE_YOUR_CALM};
    - zero-window stall: a body owed that could not progress for
      C{send_timeout} (windows at zero, or the transport full) aborts the
      connection; while the transport is full the client is not read
      (what it sends would only add to what waits);
    - idle: no stream open for C{keepalive_timeout}: C{GOAWAY}, close;
    - drain (the listeners close: SIGTERM, a reload): C{GOAWAY} naming the
      last stream accepted, the open streams finish, then the connection
      closes; streams opened after the C{GOAWAY} are refused.
"""

from __future__ import annotations

import contextlib

import os
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    PingReceived,
    PriorityUpdated,
    RemoteSettingsChanged,
    RequestReceived,
    StreamReset,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.http.accesslog import describeHost
from netd.http.fieldresponses import Body, FieldResponder
from netd.http.request import CLOSING, IDLE, NONE, SEND, Request
from netd.http.responses import STATUS_REASONS

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CHUNK = 65536

_HEAD = b"HEAD"
_STATUS = b":status"
_STATUSES = {code: str(code).encode("ascii") for code in STATUS_REASONS}


@implementer(IPushProducer)
class HTTP2Connection(FieldResponder, Protocol):
    """
    One HTTP/2 connection of an http service.

    @ivar factory: The service's shared state.
    @ivar deadline: When the current deadline expires (factory clock), or 0.
    @ivar deadlineKind: L{IDLE}, L{SEND}, L{CLOSING} or L{NONE}.
    """

    _log = Logger()
    framing = "HTTP/2"
    transport: Any

    deadline = 0.0
    deadlineKind = NONE
    _req: Request | None = None
    _paused = False
    _registered = False
    _goingAway = False
    _closed = False
    _lost = False
    _peer: str | None = None
    _lastStream = 0
    _windowStart = -1.0
    _resets = 0
    _controlFrames = 0

    def __init__(self, factory: HTTPFactory) -> None:
        self.factory = factory
        self._bodies: dict[int, Body] = {}
        self._open: set[int] = set()
        config = H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=True,
            normalize_inbound_headers=True,
            # What netd sends is built by netd (lowercase names, no
            # connection-specific fields, values checked when the
            # configuration was read): checking it again per response cost
            # about a fifth of the time of a request.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
            split_outbound_cookies=False,
        )
        self.conn = H2Connection(config)
        # What the client receives in the first SETTINGS frame.
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: factory.http2MaxStreams,
                SettingCodes.MAX_HEADER_LIST_SIZE: factory.maxHeaderList,
            },
        )
        # Enforced from the first header block, not only once the client
        # acknowledges the setting.
        self.conn.decoder.max_header_list_size = factory.maxHeaderList

    def connectionMade(self) -> None:
        """
        Send the server preface (SETTINGS); become the transport's producer.
        """
        factory = self.factory
        self.conn.initiate_connection()
        self.transport.registerProducer(self, True)
        self._registered = True
        factory.connectionOpened(self)
        self.deadline = factory.now + factory.headerTimeout
        self.deadlineKind = IDLE
        self._flush()

    # Receiving.

    def dataReceived(self, data: bytes) -> None:
        """
        Feed C{h2}; act on its events; send what is owed.

        @param data: Bytes from the client.
        """
        if self._closed:
            return
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as e:
            # h2 has queued a GOAWAY with the error's code.
            self._log.debug(
                "{service}: HTTP/2 protocol error from {peer}: {error}",
                service=self.factory.name,
                peer=self._describePeer(),
                error=str(e),
            )
            self._flush()
            self._close()
            return
        except Exception as e:
            self._unexpected(e)
            return
        # Streams reset in this same batch (rapid reset sends HEADERS and
        # RST_STREAM together) are not answered: h2 has already closed them.
        resets = {e.stream_id for e in events if isinstance(e, StreamReset)}
        try:
            for event in events:
                if isinstance(event, RequestReceived):
                    if event.stream_id not in resets:
                        self._request(event.stream_id, event.headers)
                elif isinstance(event, DataReceived):
                    self._data(event)
                elif isinstance(event, StreamReset):
                    self._reset(event.stream_id, event.remote_reset)
                elif isinstance(
                    event, (PingReceived, RemoteSettingsChanged, PriorityUpdated)
                ):
                    self._control()
                elif isinstance(event, ConnectionTerminated):
                    self._terminated()
                if self._closed:
                    return
            self._pump()
        except Exception as e:
            self._unexpected(e)

    def _request(self, streamId: int, headers: Any) -> None:
        """
        A request's header block: read it into a L{Request} and answer it.

        @param streamId: Its stream.
        @param headers: The decoded fields, C{(name, value)} bytes pairs.
        """
        if self._goingAway and streamId > self._lastStream:
            self.conn.reset_stream(streamId, ErrorCodes.REFUSED_STREAM)
            return
        self._open.add(streamId)
        self._lastStream = max(self._lastStream, streamId)
        if self.deadlineKind == IDLE:
            self.deadline = 0.0
            self.deadlineKind = NONE
        self.answerFields(streamId, headers, "2")

    def _data(self, event: DataReceived) -> None:
        """
        Request body bytes: not used (C{GET} and C{HEAD} only), but given
        back to the windows so that the client is not stalled while its
        request is answered. Once the response is complete, a body still
        coming is cut (C{RST_STREAM NO_ERROR}, RFC 9113 section 8.1), so
        that a stream cannot be used to send the server bytes for ever.

        @param event: The event.
        """
        streamId = event.stream_id
        length = event.flow_controlled_length
        # A stream the client reset meanwhile has nothing left to answer.
        with contextlib.suppress(StreamClosedError):
            if length:
                self.conn.acknowledge_received_data(length, streamId)
            if streamId not in self._open and not event.stream_ended:
                self.conn.reset_stream(streamId, ErrorCodes.NO_ERROR)

    def _reset(self, streamId: int, remote: bool) -> None:
        """
        A stream was reset: drop its body. Too many resets by the client in
        a second is the rapid reset attack.

        @param streamId: The stream.
        @param remote: Whether the client reset it.
        """
        self._open.discard(streamId)
        body = self._bodies.pop(streamId, None)
        if body is not None:
            body.close()
        if remote:
            self._roll()
            self._resets += 1
            if self._resets > self.factory.http2MaxResets:
                self._calm("too many stream resets (rapid reset)")
                return
        self._idleIfQuiet()

    def _control(self) -> None:
        """
        A PING, SETTINGS or PRIORITY frame: counted against the flood limit.
        """
        self._roll()
        self._controlFrames += 1
        if self._controlFrames > self.factory.http2MaxControlFrames:
            self._calm("too many PING, SETTINGS or PRIORITY frames")

    def _roll(self) -> None:
        """
        Start new per-second counts when the factory's clock has moved.
        """
        now = self.factory.now
        if now != self._windowStart:
            self._windowStart = now
            self._resets = 0
            self._controlFrames = 0

    def _calm(self, why: str) -> None:
        """
        Cut an abusive client: C{GOAWAY ENHANCE_YOUR_CALM}, close.

        @param why: What it did, for the log.
        """
        self._log.info(
            "{service}: HTTP/2 client {peer} cut: {why}",
            service=self.factory.name,
            peer=self._describePeer(),
            why=why,
        )
        self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
        self._flush()
        self._close()

    def _terminated(self) -> None:
        """
        The client sent C{GOAWAY}: nothing more will be asked; close.
        """
        self._close()

    # Responder: what netd.http.answer decided, written as HTTP/2.

    def peer(self) -> Any:
        """
        @return: The client's address.
        """
        return self.transport.getPeer()

    def _respond(
        self,
        req: Request,
        status: int,
        fields: list[tuple[bytes, bytes]],
        data: bytes | None,
        fd: int | None = None,
        offset: int = 0,
        length: int = 0,
    ) -> None:
        """
        Send a response's header block, and queue its body.

        @param req: The request.
        @param status: The status.
        @param fields: The header fields after C{:status} and C{date}.
        @param data: The body held in memory, or L{None}.
        @param fd: The file to stream the body from, or L{None}.
        @param offset: Where the body starts (in C{data} or the file).
        @param length: Its length (0 for none, as for C{HEAD}).
        """
        streamId = req.streamId
        if streamId not in self._open:
            # Reset while being answered.
            if fd is not None:
                os.close(fd)
            return
        factory = self.factory
        head = [(_STATUS, _STATUSES[status]), (b"date", factory.dateValue)]
        head += fields
        end = length == 0 or req.method == _HEAD
        try:
            self.conn.send_headers(streamId, head, end_stream=end)
        except StreamClosedError:
            self._open.discard(streamId)
            if fd is not None:
                os.close(fd)
            return
        if end:
            if fd is not None:
                os.close(fd)
            self._finished(req, status, 0)
            return
        self._bodies[streamId] = Body(req, status, data, fd, offset, length)

    # Sending.

    def _pump(self) -> None:
        """
        Send body bytes while the windows and the transport allow, streams
        taking turns; then write what C{h2} has queued.
        """
        conn = self.conn
        bodies = self._bodies
        progressed = False
        while bodies and not self._paused and not self._closed:
            moved = False
            for streamId, body in list(bodies.items()):
                if self._paused or self._closed:
                    break
                try:
                    window = conn.local_flow_control_window(streamId)
                except StreamClosedError:
                    del bodies[streamId]
                    body.close()
                    continue
                if window <= 0:
                    continue
                size = min(window, body.remaining, CHUNK)
                data = self._read(body, size)
                if data is None:
                    del bodies[streamId]
                    continue
                size = len(data)
                body.offset += size
                body.remaining -= size
                body.sent += size
                last = not body.remaining
                frame = conn.max_outbound_frame_size
                view = memoryview(data)
                for start in range(0, size, frame):
                    chunk = view[start : start + frame]
                    conn.send_data(
                        streamId,
                        chunk,
                        end_stream=last and start + frame >= size,
                    )
                moved = progressed = True
                if last:
                    del bodies[streamId]
                    body.close()
                    self._finished(body.req, body.status, body.sent)
                self._flush()
            if not moved:
                break
        self._flush()
        if self._closed:
            return
        factory = self.factory
        if bodies:
            # A body is owed: it must progress within send_timeout, whether
            # the windows are at zero or the transport is full.
            if progressed or self.deadlineKind != SEND:
                self.deadline = factory.now + factory.sendTimeout
                self.deadlineKind = SEND
        elif self.deadlineKind == SEND:
            self.deadline = 0.0
            self.deadlineKind = NONE
        self._idleIfQuiet()

    def _resetStream(self, streamId: int) -> None:
        """
        Reset a stream whose response cannot be completed.

        @param streamId: The stream.
        """
        self.conn.reset_stream(streamId, ErrorCodes.INTERNAL_ERROR)

    def _flush(self) -> None:
        """
        Write what C{h2} has queued.
        """
        data = self.conn.data_to_send()
        if data and not self._lost:
            self.transport.write(data)

    def _finished(self, req: Request, status: int, sent: int) -> None:
        """
        A response is complete: count and log it; close if draining.

        @param req: The request.
        @param status: The status sent.
        @param sent: Body bytes sent.
        """
        self._open.discard(req.streamId)
        factory = self.factory
        factory.requests += 1
        factory.stats.record(status, factory.clock.seconds() - req.started)
        if factory.accessLog.enabled:
            if self._peer is None:
                self._peer = self._describePeer()
            factory.record(self._peer, req, status, sent)
        if self._goingAway and not self._open and not self._bodies:
            self._flush()
            self._close()

    def _idleIfQuiet(self) -> None:
        """
        No stream open: the idle timer runs.
        """
        if not self._open and not self._bodies and self.deadlineKind == NONE:
            factory = self.factory
            self.deadline = factory.now + (
                factory.keepaliveTimeout or factory.headerTimeout
            )
            self.deadlineKind = IDLE

    # Closing.

    def drain(self) -> None:
        """
        The listeners closed: C{GOAWAY} naming the last stream accepted; the
        open streams finish, then the connection closes.
        """
        if self._goingAway or self._closed:
            return
        self._goingAway = True
        # Written by hand: h2's close_connection would also stop this side
        # from sending the open streams' remaining DATA.
        self._flush()
        frame = GoAwayFrame(stream_id=0, last_stream_id=self._lastStream, error_code=0)
        self.transport.write(frame.serialize())
        if not self._open and not self._bodies:
            self._close()

    def _close(self) -> None:
        """
        Close once what is written is sent (C{send_timeout} at most).
        """
        if self._closed:
            return
        self._closed = True
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
        factory = self.factory
        self.deadline = factory.now + factory.sendTimeout
        self.deadlineKind = CLOSING
        # The TLS layer closes only once its producer is gone.
        self._unregister()
        self.transport.loseConnection()

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
        self._closed = True
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
        self._unregister()
        self.transport.abortConnection()

    def _unexpected(self, error: BaseException) -> None:
        """
        A bug: log it, C{GOAWAY INTERNAL_ERROR}, close.

        @param error: The exception.
        """
        self._log.failure(
            "{service}: unexpected error in an HTTP/2 connection",
            Failure(error),
            service=self.factory.name,
        )
        try:
            self.conn.close_connection(ErrorCodes.INTERNAL_ERROR)
            self._flush()
        except Exception:
            self._abort()
            return
        self._close()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """
        Release the files being sent; forget the deadlines.

        @param reason: Why.
        """
        self._lost = self._closed = True
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
        self.factory.connectionClosed(self)

    def deadlineExpired(self) -> None:
        """
        Called by the factory's clock when L{deadline} has passed.
        """
        kind = self.deadlineKind
        self.deadline = 0.0
        self.deadlineKind = NONE
        if kind == IDLE:
            self.drain()
            if not self._closed:
                self._close()
        elif kind == SEND or kind == CLOSING:
            self._log.info(
                "{service}: HTTP/2 client {peer} cut: no progress for send_timeout",
                service=self.factory.name,
                peer=self._describePeer(),
            )
            self._abort()

    def _describePeer(self) -> str:
        """
        @return: The client's address, for logs.
        """
        return describeHost(self.transport.getPeer())

    # IPushProducer: the transport says whether it accepts more.

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full (the client is not reading): stop
        sending, and stop reading too, since every frame read (a request, a
        PING) only makes more to send.
        """
        if self._paused:
            return
        self._paused = True
        if not self._closed:
            self.transport.pauseProducing()

    def resumeProducing(self) -> None:
        """
        The transport's buffer has drained: go on reading and sending.
        """
        if not self._paused:
            return
        self._paused = False
        if not self._closed:
            self.transport.resumeProducing()
            self._pump()

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
