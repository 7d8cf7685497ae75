# -*- test-case-name: tests.test_http2 -*-
"""
One HTTP/2 connection: L{HTTP2Connection}, a Twisted protocol on netd's own
HTTP/2 server core (L{netd.http.h2frames}: frames, windows, HPACK).

netd goes around the C{h2} library for speed: on it a 1 KiB request cost
about 78 µs of Python and netd reached 0.19x nginx (bench/RESULTS.md).

It is reached two ways, both through L{HTTPConnection
<netd.http.protocol.HTTPConnection>}, which hands its transport over: on an
C{ssl:} listener when ALPN selected C{h2} (the TLS handshake's end), and on
a C{tcp:} listener with C{h2c = true} when a connection opens with the
HTTP/2 preface (prior knowledge, RFC 9113 section 3.3).

Each request is read into the same L{Request<netd.http.request.Request>} as
an HTTP/1.1 one, with the same header-field limits (L{FieldReader
<netd.http.request.FieldReader>}), and answered by the same L{answer
<netd.http.answer.answer>}: this module only frames what it decides.

B{One write per read}. Everything one C{dataReceived} produces (settings
and ping acknowledgements, window updates, every response's C{HEADERS} and,
for a body that fits the windows and one frame, its C{DATA}) is joined and
written to the transport once: over TLS each write is an C{SSL_write} and
a record. The requests of one read are answered after the whole read is
parsed, so that a stream reset in the same read (rapid reset) is never
answered.

B{Flow control, end to end}. A larger body is sent as the peer's windows
allow: for each stream with a body owed, at most C{min(stream window,
connection window, 64 KiB)} bytes are read (C{os.pread} at the stream's
offset, nothing read ahead) and cut into frames of the peer's maximum frame
size; streams take turns, and each chunk is written as it is made. Sending
stops when the transport pauses this producer (its buffer is full: the
client is not reading) and resumes when it drains, so a connection holds at
most about one chunk per stream in memory, whatever the file sizes.
C{sendfile} cannot be used inside TLS (the bytes must pass through OpenSSL
to be encrypted; kernel TLS would allow it, but pyOpenSSL does not expose
it), so file bytes are read into a buffer of at most the window and written
to the TLS layer.

B{Protocol errors} end the connection with C{GOAWAY} and the error's code
(C{PROTOCOL_ERROR}, C{FRAME_SIZE_ERROR}, C{FLOW_CONTROL_ERROR},
C{COMPRESSION_ERROR}, C{STREAM_CLOSED}, ...); errors of one stream (a
malformed request, RFC 9113 section 8.1.1) reset that stream only.

B{Limits} (each tested in C{tests.test_http2}):
    - C{SETTINGS_MAX_CONCURRENT_STREAMS} = C{http2_max_streams}; a client
      opening more: C{GOAWAY PROTOCOL_ERROR};
    - C{SETTINGS_MAX_HEADER_LIST_SIZE} from C{max_header_size}, enforced by
      the HPACK decoder while it decodes, from the first header block (an
      HPACK bomb stops there: C{GOAWAY ENHANCE_YOUR_CALM}), and the
      HTTP/1.1 field limits on top (C{431});
    - rapid reset (CVE-2023-44487): more than C{http2_max_resets} streams
      reset in one second, by the client or by netd because of what the
      client sent (a malformed request, data on a closed stream):
      C{GOAWAY ENHANCE_YOUR_CALM}, close;
    - CONTINUATION flood: a header block of more than 64 CONTINUATION
      frames, or larger than the header list limit, is cut (C{GOAWAY
      ENHANCE_YOUR_CALM}), and the block must arrive within
      C{header_timeout} like any request;
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

from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from netd.http.accesslog import describeHost
from netd.http.fieldresponses import Body, FieldResponder
from netd.http.h2frames import (
    ACK,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME_SIZE,
    DEFAULT_WINDOW,
    ENABLE_PUSH,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_HEADER,
    FRAME_SIZE_ERROR,
    GOAWAY,
    HEADER_TABLE_SIZE,
    HEADERS,
    INITIAL_WINDOW_SIZE,
    INTERNAL_ERROR,
    MAX_CONCURRENT_STREAMS,
    MAX_CONTINUATIONS,
    MAX_FRAME_SIZE,
    MAX_FRAME_SIZE_LIMIT,
    MAX_HEADER_LIST_SIZE,
    MAX_WINDOW,
    NO_ERROR,
    PADDED,
    PING,
    PREFACE,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTINGS,
    SETTINGS_ACK,
    STREAM_CLOSED,
    TABLE_SIZE_ZERO,
    WINDOW_UPDATE,
    ConnectionError,
    HeaderDecoder,
    Headers,
    Stream,
    StreamError,
    encodeHeaders,
    frameHeader,
    goawayFrame,
    headersFrames,
    parseSettings,
    pingAck,
    rstStreamFrame,
    settingsFrame,
    stripPadding,
    unpackU32,
    validateTrailers,
    windowUpdateFrame,
)
from netd.http.request import CLOSING, IDLE, NONE, SEND, Request
from netd.http.responses import STATUS_REASONS

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory

__all__ = ["PREFACE", "CHUNK", "HTTP2Connection"]

#: The payload of a DATA frame: with its 9-byte header, one TLS record
#: (16384 bytes of plaintext at most), so that the TLS layer, which cuts
#: what it is given into 16 KiB records, makes no small record between
#: frames. Larger frames, where the client allows them, would gain nothing
#: over TLS.
DATA_FRAME = 16384 - 9
#: Body bytes read per stream per turn: four records.
CHUNK = 4 * DATA_FRAME
#: Streams netd reset itself that it remembers, to ignore what the client
#: had already sent on them (RFC 9113 section 5.1, "closed").
REMEMBERED_RESETS = 128

_HEAD = b"HEAD"
_STATUS_FIELDS = {
    code: (b":status", str(code).encode("ascii")) for code in STATUS_REASONS
}
_HALF_WINDOW = DEFAULT_WINDOW // 2


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
    _windowStart = -1.0
    _resets = 0
    _controlFrames = 0
    # The client's connection preface and its first SETTINGS.
    _prefaceDone = False
    _settingsSeen = False
    # The highest client stream seen: lower ones not in _streams are closed.
    _lastStream = 0
    # The stream of a header block still waiting for CONTINUATION frames.
    _continuing = 0
    _continuations = 0
    _blockSize = 0
    _blockFlags = 0
    # The connection's windows: what the client allows netd to send, and
    # what netd allows the client to send.
    _sendWindow = DEFAULT_WINDOW
    _recvWindow = DEFAULT_WINDOW
    # The client's settings.
    _initialWindow = DEFAULT_WINDOW
    _maxFrame = DEFAULT_FRAME_SIZE
    # The next header block starts with a table size update (after the
    # client's SETTINGS_HEADER_TABLE_SIZE).
    _tableSizeUpdate = False
    _rest = b""

    def __init__(self, factory: HTTPFactory) -> None:
        self.factory = factory
        self._bodies: dict[int, Body] = {}
        self._open: set[int] = set()
        self._streams: dict[int, Stream] = {}
        self._out: list[bytes | memoryview] = []
        self._pending: list[tuple[int, Headers]] = []
        self._block: list[bytes] = []
        self._resetByUs: dict[int, None] = {}
        self._decoder = HeaderDecoder(factory.maxHeaderList)
        self._maxStreams = factory.http2MaxStreams

    def connectionMade(self) -> None:
        """
        Send the server preface (SETTINGS); become the transport's producer.
        """
        factory = self.factory
        self._out.append(
            settingsFrame(
                {
                    MAX_CONCURRENT_STREAMS: factory.http2MaxStreams,
                    MAX_HEADER_LIST_SIZE: factory.maxHeaderList,
                }
            )
        )
        # Frames are many and small, and a response's last frame must not
        # wait for the client's delayed ACK (Nagle's algorithm): about 25 ms
        # per 1 MiB response on loopback without this.
        setNoDelay = getattr(self.transport, "setTcpNoDelay", None)
        if setNoDelay is not None:
            with contextlib.suppress(OSError):
                setNoDelay(True)
        self.transport.registerProducer(self, True)
        self._registered = True
        factory.connectionOpened(self)
        self.deadline = factory.now + factory.headerTimeout
        self.deadlineKind = IDLE
        self._flush()

    # Receiving.

    def dataReceived(self, data: bytes) -> None:
        """
        Parse the frames received; answer the requests among them; send
        what is owed, in one write.

        @param data: Bytes from the client.
        """
        if self._closed:
            return
        try:
            self._receive(data)
            if self._pending and not self._closed:
                self._answerPending()
            if not self._closed:
                self._pump()
        except ConnectionError as e:
            self._protocolError(e.code, str(e))
        except Exception as e:
            self._unexpected(e)

    def _receive(self, data: bytes) -> None:
        """
        Parse whole frames and act on each; keep a partial one for later.

        @param data: Bytes from the client.
        @raise ConnectionError: If the client broke the protocol.
        """
        if self._rest:
            data = self._rest + data
            self._rest = b""
        pos = 0
        if not self._prefaceDone:
            if len(data) < len(PREFACE):
                if not PREFACE.startswith(data):
                    raise ConnectionError(PROTOCOL_ERROR, "not the HTTP/2 preface")
                self._rest = data
                return
            if not data.startswith(PREFACE):
                raise ConnectionError(PROTOCOL_ERROR, "not the HTTP/2 preface")
            self._prefaceDone = True
            pos = len(PREFACE)
        end = len(data)
        unpack = FRAME_HEADER.unpack_from
        while end - pos >= 9:
            high, low, kind, flags, streamId = unpack(data, pos)
            length = (high << 16) | low
            if length > DEFAULT_FRAME_SIZE:
                # netd announces no larger SETTINGS_MAX_FRAME_SIZE.
                raise ConnectionError(FRAME_SIZE_ERROR, "frame larger than 16384")
            stop = pos + 9 + length
            if stop > end:
                break
            payload = data[pos + 9 : stop]
            pos = stop
            streamId &= 0x7FFFFFFF
            if self._continuing and kind != CONTINUATION:
                raise ConnectionError(PROTOCOL_ERROR, "header block interrupted")
            if not self._settingsSeen:
                if kind != SETTINGS or flags & ACK:
                    raise ConnectionError(PROTOCOL_ERROR, "preface without SETTINGS")
                self._settingsSeen = True
            if kind == HEADERS:
                self._headers(flags, streamId, payload)
            elif kind == WINDOW_UPDATE:
                self._windowUpdate(streamId, payload)
            elif kind == DATA:
                self._data(flags, streamId, payload)
            elif kind == SETTINGS:
                self._settings(flags, streamId, payload)
            elif kind == PING:
                self._ping(flags, streamId, payload)
            elif kind == RST_STREAM:
                self._rstStream(streamId, payload)
            elif kind == PRIORITY:
                self._priority(streamId, payload)
            elif kind == CONTINUATION:
                self._continuation(flags, streamId, payload)
            elif kind == GOAWAY:
                if streamId:
                    raise ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
                self._terminated()
            elif kind == PUSH_PROMISE:
                raise ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # Unknown frame types are ignored (RFC 9113 section 4.1).
            if self._closed:
                return
        if pos < end:
            self._rest = data[pos:]

    def _headers(self, flags: int, streamId: int, payload: bytes) -> None:
        """
        A C{HEADERS} frame: a header block begins.

        @param flags: Its flags.
        @param streamId: Its stream.
        @param payload: Its payload.
        @raise ConnectionError: If it breaks the protocol.
        """
        if not streamId & 1:
            raise ConnectionError(PROTOCOL_ERROR, "HEADERS on an even stream")
        if flags & PADDED:
            payload = stripPadding(payload, flags)
        selfDependent = False
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short")
            selfDependent = unpackU32(payload) & 0x7FFFFFFF == streamId
            payload = payload[5:]
        if flags & END_HEADERS:
            self._headerBlock(streamId, payload, flags, selfDependent)
            return
        self._continuing = streamId
        self._continuations = 0
        self._block = [payload]
        self._blockSize = len(payload)
        self._blockFlags = flags | (PRIORITY_FLAG if selfDependent else 0)
        self._blockLimit()

    def _continuation(self, flags: int, streamId: int, payload: bytes) -> None:
        """
        A C{CONTINUATION} frame: more of the open header block.

        @raise ConnectionError: If no block is open on its stream, or the
            block takes too many frames or bytes.
        """
        if not self._continuing or streamId != self._continuing:
            raise ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._continuations += 1
        if self._continuations > MAX_CONTINUATIONS:
            raise ConnectionError(ENHANCE_YOUR_CALM, "CONTINUATION flood")
        self._block.append(payload)
        self._blockSize += len(payload)
        self._blockLimit()
        if flags & END_HEADERS:
            block = b"".join(self._block)
            self._block = []
            self._continuing = 0
            blockFlags = self._blockFlags
            self._headerBlock(
                streamId, block, blockFlags, bool(blockFlags & PRIORITY_FLAG)
            )

    def _blockLimit(self) -> None:
        """
        @raise ConnectionError: If the header block being received is larger
            than any header list allowed could be.
        """
        if self._blockSize > self.factory.maxHeaderList:
            raise ConnectionError(ENHANCE_YOUR_CALM, "header block too large")

    def _headerBlock(
        self, streamId: int, block: bytes, flags: int, selfDependent: bool
    ) -> None:
        """
        A complete header block: a new request, or trailers.

        @param streamId: Its stream.
        @param block: The HPACK block.
        @param flags: The flags of its C{HEADERS} frame.
        @param selfDependent: Whether its priority names its own stream.
        @raise ConnectionError: If it breaks the protocol.
        """
        decoder = self._decoder
        endStream = bool(flags & END_STREAM)
        stream = self._streams.get(streamId)
        if stream is not None:
            # Trailers: decoded to keep the table in step, then ignored.
            fields = decoder.other(block)
            if stream.remoteClosed:
                raise ConnectionError(STREAM_CLOSED, "HEADERS after END_STREAM")
            try:
                if not endStream:
                    raise StreamError(PROTOCOL_ERROR, "trailers without END_STREAM")
                validateTrailers(fields)
            except StreamError as e:
                self._resetByServer(streamId, e.code)
                return
            stream.remoteClosed = True
            if stream.localClosed:
                del self._streams[streamId]
            return
        if streamId <= self._lastStream:
            decoder.other(block)
            if streamId in self._resetByUs:
                return
            raise ConnectionError(STREAM_CLOSED, "HEADERS on a closed stream")
        self._lastStream = streamId
        if self._goingAway:
            decoder.other(block)
            self._resetByServer(streamId, REFUSED_STREAM, False)
            return
        if len(self._streams) >= self._maxStreams:
            raise ConnectionError(PROTOCOL_ERROR, "more streams than allowed")
        try:
            if selfDependent:
                decoder.other(block)
                raise StreamError(PROTOCOL_ERROR, "stream depends on itself")
            headers, length = decoder.request(block)
            if endStream and length:
                raise StreamError(PROTOCOL_ERROR, "content-length without DATA")
        except StreamError as e:
            self._resetByServer(streamId, e.code)
            return
        self._streams[streamId] = Stream(
            streamId, self._initialWindow, DEFAULT_WINDOW, endStream, length
        )
        self._open.add(streamId)
        self._pending.append((streamId, headers))
        if self.deadlineKind == IDLE:
            self.deadline = 0.0
            self.deadlineKind = NONE

    def _answerPending(self) -> None:
        """
        Answer the requests of this read whose streams are still open.
        """
        pending = self._pending
        self._pending = []
        isOpen = self._open
        for streamId, headers in pending:
            if streamId in isOpen:
                self.answerFields(streamId, headers, "2")
                if self._closed:
                    return

    def _data(self, flags: int, streamId: int, payload: bytes) -> None:
        """
        Request body bytes: not used (C{GET} and C{HEAD} only), but given
        back to the windows so that the client is not stalled while its
        request is answered. Once the response is complete, a body still
        coming is cut (C{RST_STREAM NO_ERROR}, RFC 9113 section 8.1), so
        that a stream cannot be used to send the server bytes for ever.

        @param flags: The frame's flags.
        @param streamId: Its stream.
        @param payload: Its payload.
        @raise ConnectionError: On stream 0 or an idle stream, with bad
            padding, or past the connection's window.
        """
        if not streamId:
            raise ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        data = stripPadding(payload, flags)
        self._recvWindow -= size
        if self._recvWindow < 0:
            raise ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the window")
        if self._recvWindow < _HALF_WINDOW:
            self._out.append(windowUpdateFrame(0, DEFAULT_WINDOW - self._recvWindow))
            self._recvWindow = DEFAULT_WINDOW
        stream = self._streams.get(streamId)
        if stream is None:
            if streamId > self._lastStream:
                raise ConnectionError(PROTOCOL_ERROR, "DATA on an idle stream")
            if streamId not in self._resetByUs:
                self._resetByServer(streamId, STREAM_CLOSED)
            return
        endStream = bool(flags & END_STREAM)
        try:
            stream.receiveData(size, len(data), endStream)
        except StreamError as e:
            self._resetByServer(streamId, e.code)
            return
        if stream.localClosed:
            if endStream:
                del self._streams[streamId]
            else:
                self._resetByServer(streamId, NO_ERROR, False)
            return
        if not endStream and stream.recvWindow < _HALF_WINDOW:
            self._out.append(
                windowUpdateFrame(streamId, DEFAULT_WINDOW - stream.recvWindow)
            )
            stream.recvWindow = DEFAULT_WINDOW

    def _windowUpdate(self, streamId: int, payload: bytes) -> None:
        """
        A C{WINDOW_UPDATE}: the client allows more.

        @raise ConnectionError: For a bad length, an increment of 0 on the
            connection, a connection window beyond 2^31-1, an idle stream.
        """
        if len(payload) != 4:
            raise ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE length")
        increment = unpackU32(payload) & 0x7FFFFFFF
        if not streamId:
            if not increment:
                raise ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._sendWindow += increment
            if self._sendWindow > MAX_WINDOW:
                raise ConnectionError(FLOW_CONTROL_ERROR, "window beyond 2^31-1")
            return
        stream = self._streams.get(streamId)
        if stream is None:
            if streamId > self._lastStream:
                raise ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream")
            return
        try:
            if not increment:
                raise StreamError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            stream.windowUpdate(increment)
        except StreamError as e:
            self._resetByServer(streamId, e.code)

    def _settings(self, flags: int, streamId: int, payload: bytes) -> None:
        """
        The client's C{SETTINGS}: apply them, acknowledge them.

        @raise ConnectionError: For a bad frame or value.
        """
        if streamId:
            raise ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        for key, value in parseSettings(payload):
            if key == INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ConnectionError(
                        FLOW_CONTROL_ERROR, "initial window too large"
                    )
                delta = value - self._initialWindow
                self._initialWindow = value
                for stream in self._streams.values():
                    stream.sendWindow += delta
                    if stream.sendWindow > MAX_WINDOW:
                        raise ConnectionError(
                            FLOW_CONTROL_ERROR, "stream window beyond 2^31-1"
                        )
            elif key == MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= MAX_FRAME_SIZE_LIMIT:
                    raise ConnectionError(PROTOCOL_ERROR, "bad SETTINGS_MAX_FRAME_SIZE")
                self._maxFrame = value
            elif key == ENABLE_PUSH:
                if value > 1:
                    raise ConnectionError(PROTOCOL_ERROR, "bad SETTINGS_ENABLE_PUSH")
            elif key == HEADER_TABLE_SIZE:
                self._tableSizeUpdate = True
        self._out.append(SETTINGS_ACK)
        self._control()

    def _ping(self, flags: int, streamId: int, payload: bytes) -> None:
        """
        A C{PING}: answered, and counted against the flood limit.

        @raise ConnectionError: For a bad frame.
        """
        if streamId:
            raise ConnectionError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise ConnectionError(FRAME_SIZE_ERROR, "PING length")
        if not flags & ACK:
            self._out.append(pingAck(payload))
            self._control()

    def _priority(self, streamId: int, payload: bytes) -> None:
        """
        A C{PRIORITY} frame: netd does not prioritise (RFC 9113 deprecates
        the scheme), but checks and counts it.

        @raise ConnectionError: For a bad frame.
        """
        if not streamId:
            raise ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
        if len(payload) != 5:
            raise ConnectionError(FRAME_SIZE_ERROR, "PRIORITY length")
        if unpackU32(payload) & 0x7FFFFFFF == streamId:
            raise ConnectionError(PROTOCOL_ERROR, "stream depends on itself")
        self._control()

    def _rstStream(self, streamId: int, payload: bytes) -> None:
        """
        The client reset a stream.

        @raise ConnectionError: For a bad frame, or an idle stream.
        """
        if not streamId:
            raise ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM length")
        if streamId > self._lastStream:
            raise ConnectionError(PROTOCOL_ERROR, "RST_STREAM on an idle stream")
        if self._streams.pop(streamId, None) is not None:
            self._reset(streamId, True)

    def _reset(self, streamId: int, remote: bool) -> None:
        """
        A stream was reset: drop its body. Too many resets in a second is
        the rapid reset attack.

        @param streamId: The stream.
        @param remote: Whether the client reset it (or made netd reset it).
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

    def _resetByServer(self, streamId: int, code: int, counted: bool = True) -> None:
        """
        Reset a stream (a stream error, RFC 9113 section 5.4.2).

        @param streamId: The stream.
        @param code: The error code.
        @param counted: Whether it counts against C{http2_max_resets} (a
            reset the client caused: MadeYouReset).
        """
        self._out.append(rstStreamFrame(streamId, code))
        self._streams.pop(streamId, None)
        resets = self._resetByUs
        resets[streamId] = None
        if len(resets) > REMEMBERED_RESETS:
            del resets[next(iter(resets))]
        self._reset(streamId, counted)

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
        self._out.append(goawayFrame(self._lastStream, ENHANCE_YOUR_CALM))
        self._flush()
        self._close()

    def _protocolError(self, code: int, why: str) -> None:
        """
        The client broke the protocol: C{GOAWAY} with the error's code,
        close.

        @param code: The error code.
        @param why: What it did, for the log.
        """
        if self._closed:
            return
        if code == ENHANCE_YOUR_CALM:
            self._calm(why)
            return
        self._log.debug(
            "{service}: HTTP/2 protocol error from {peer}: {error}",
            service=self.factory.name,
            peer=self._describePeer(),
            error=why,
        )
        self._out.append(goawayFrame(self._lastStream, code))
        self._flush()
        self._close()

    def _terminated(self) -> None:
        """
        The client sent C{GOAWAY}: nothing more will be asked; close.
        """
        self._flush()
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
        Send a response's header block, and its body if it fits the windows
        and one frame; else queue the body.

        @param req: The request.
        @param status: The status.
        @param fields: The header fields after C{:status} and C{date}.
        @param data: The body held in memory, or L{None}.
        @param fd: The file to stream the body from, or L{None}.
        @param offset: Where the body starts (in C{data} or the file).
        @param length: Its length (0 for none, as for C{HEAD}).
        """
        streamId = req.streamId
        stream = self._streams.get(streamId)
        if stream is None or streamId not in self._open:
            # Reset while being answered.
            if fd is not None:
                os.close(fd)
            return
        block = encodeHeaders(
            (_STATUS_FIELDS[status], (b"date", self.factory.dateValue), *fields)
        )
        if self._tableSizeUpdate:
            self._tableSizeUpdate = False
            block = TABLE_SIZE_ZERO + block
        end = length == 0 or req.method == _HEAD
        out = self._out
        maxFrame = self._maxFrame
        if len(block) <= maxFrame:
            out.append(
                frameHeader(
                    len(block),
                    HEADERS,
                    END_HEADERS | END_STREAM if end else END_HEADERS,
                    streamId,
                )
            )
            out.append(block)
        else:
            out.extend(headersFrames(streamId, block, end, maxFrame))
        if end:
            if fd is not None:
                os.close(fd)
            self._finished(req, status, 0)
            return
        if (
            data is not None
            and length <= maxFrame
            and length <= self._sendWindow
            and length <= stream.sendWindow
        ):
            # The whole body, in the same write as its HEADERS.
            out.append(frameHeader(length, DATA, END_STREAM, streamId))
            out.append(
                data
                if offset == 0 and len(data) == length
                else data[offset : offset + length]
            )
            self._sendWindow -= length
            stream.sendWindow -= length
            self._finished(req, status, length)
            return
        self._bodies[streamId] = Body(req, status, data, fd, offset, length)

    # Sending.

    def _pump(self) -> None:
        """
        Send body bytes while the windows and the transport allow, streams
        taking turns; then write what is queued.
        """
        bodies = self._bodies
        progressed = False
        while bodies and not self._paused and not self._closed:
            moved = False
            for streamId, body in list(bodies.items()):
                if self._paused or self._closed:
                    break
                stream = self._streams.get(streamId)
                if stream is None:
                    del bodies[streamId]
                    body.close()
                    continue
                window = min(self._sendWindow, stream.sendWindow)
                if window <= 0:
                    continue
                data = self._read(body, min(window, body.remaining, CHUNK))
                if data is None:
                    bodies.pop(streamId, None)
                    continue
                size = len(data)
                body.offset += size
                body.remaining -= size
                body.sent += size
                self._sendWindow -= size
                stream.sendWindow -= size
                last = not body.remaining
                self._dataFrames(streamId, data, last)
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

    def _dataFrames(self, streamId: int, data: bytes, last: bool) -> None:
        """
        Queue body bytes as C{DATA} frames of L{DATA_FRAME} bytes (within
        the client's maximum frame size, 16384 at least).

        @param streamId: The stream.
        @param data: The bytes (within the windows).
        @param last: Whether they end the body.
        """
        out = self._out
        size = len(data)
        maxFrame = DATA_FRAME
        if size <= maxFrame:
            out.append(frameHeader(size, DATA, END_STREAM if last else 0, streamId))
            out.append(data)
            return
        view = memoryview(data)
        for start in range(0, size, maxFrame):
            piece = view[start : start + maxFrame]
            flags = END_STREAM if last and start + maxFrame >= size else 0
            out.append(frameHeader(len(piece), DATA, flags, streamId))
            out.append(piece)

    def _resetStream(self, streamId: int) -> None:
        """
        Reset a stream whose response cannot be completed.

        @param streamId: The stream.
        """
        self._resetByServer(streamId, INTERNAL_ERROR, False)

    def _flush(self) -> None:
        """
        Write what is queued, in one write.
        """
        out = self._out
        if out:
            data = b"".join(out)
            out.clear()
            if not self._lost:
                self.transport.write(data)

    def _finished(self, req: Request, status: int, sent: int) -> None:
        """
        A response is complete: count and log it; close if draining.

        @param req: The request.
        @param status: The status sent.
        @param sent: Body bytes sent.
        """
        streamId = req.streamId
        self._open.discard(streamId)
        stream = self._streams.get(streamId)
        if stream is not None:
            if stream.remoteClosed:
                del self._streams[streamId]
            else:
                stream.localClosed = True
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
        self._out.append(goawayFrame(self._lastStream, NO_ERROR))
        self._flush()
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
        if self._closed:
            return
        try:
            self._out.append(goawayFrame(self._lastStream, INTERNAL_ERROR))
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
        self._streams.clear()
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
            try:
                self._pump()
            except Exception as e:
                self._unexpected(e)

    def stopProducing(self) -> None:
        """
        The connection is going away.
        """
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
