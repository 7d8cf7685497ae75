# -*- test-case-name: tests.test_http3 -*-
"""
HTTP/3 (QUIC) on the C{udp:} listeners of an http service: L{HTTP3Server},
a Twisted L{DatagramProtocol} driving C{aioquic}'s sans-I/O
C{QuicConnection} and C{H3Connection}, one L{HTTP3Connection} per QUIC
connection.

Each request is read into the same L{Request<netd.http.request.Request>}
as an HTTP/1.1 or HTTP/2 one, with the same limits, and answered by the
same L{answer<netd.http.answer.answer>} through the same header fields
(L{FieldResponder<netd.http.fieldresponses.FieldResponder>}): this module
only frames what it decides.

B{Certificate}. A C{udp:} listener serves with the certificate and key of
its service's first C{ssl:} listener (L{quicConfiguration}); a reload
re-reads them for new connections (L{HTTP3Server.reloadCertificate}).

B{QUIC's protections}:
    - address validation with Retry tokens I{under load}: once
      C{http3_retry_threshold} connections are in their handshake (their
      address not yet validated), a new client must first echo a Retry
      token (one more round trip) before any state is kept for it; 0 asks
      every client. Below the threshold a client costs no extra round trip,
      and what a spoofed source can make netd send is bounded by the next
      point;
    - the 3x amplification limit before the address is validated (aioquic
      enforces it: at most three times the bytes received are sent);
    - connection IDs: every ID aioquic issues to the client (it rotates
      them with NEW_CONNECTION_ID) leads to the connection; retired ones
      are forgotten; a datagram for an unknown ID is dropped;
    - idle timeout: C{keepalive_timeout} (QUIC's C{max_idle_timeout}), and a
      handshake must complete within C{header_timeout};
    - connections per source and in total: the service's
      C{max_sessions_per_peer} and C{max_sessions} (C{[limits]}), and its
      allow/deny lists, as for its TCP sessions;
    - streams: a client may have C{http3_max_streams} request streams
      open at once (QUIC's C{initial_max_streams_bidi}, one more granted as
      each ends);
    - bounded memory per connection: a body is read from its file one
      chunk (C{CHUNK}) at a time, and only once the stream has sent what it
      was given (so QUIC's flow control and congestion window decide the
      pace); the receive windows are sized for a request head, not a body.

B{Draining} (SIGTERM, or a reload that changes the service): the socket
stays open while the connections finish (L{HTTP3Server.drainConnections}):
each is sent a C{GOAWAY} naming the first request stream it will not
answer, finishes the requests below it, then closes with C{H3_NO_ERROR};
new connections are not admitted. Those still open at C{drain_timeout} are
closed (L{HTTP3Connection.abortSession}), like every other session. A
reload that keeps the C{udp:} address hands the socket to the new service's
server, which routes the old connections' datagrams back to them
(L{HTTP3Server.inheritConnections}) until they are done.

Timers are the reactor's: C{QuicConnection.get_timer} is armed with
C{reactor.callLater} and fires C{handle_timer}.
"""

from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any

from aioquic.buffer import Buffer, encode_uint_var
from aioquic.h3.connection import (
    H3_ALPN,
    ErrorCode,
    FrameType,
    H3Connection,
    encode_frame,
)
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import SMALLEST_MAX_DATAGRAM_SIZE, QuicConfiguration
from aioquic.quic.connection import Limit, QuicConnection
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionIdRetired,
    ConnectionTerminated,
    HandshakeCompleted,
    QuicEvent,
    StreamReset,
)
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
)
from aioquic.quic.retry import QuicRetryTokenHandler
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import MessageLengthError
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from netd.http.fieldresponses import Body, FieldResponder
from netd.http.request import HEAD, NONE, SEND, Request
from netd.tls import sslContextFactory

if TYPE_CHECKING:
    from netd.http.server import HTTPFactory
    from netd.servicetype import ServiceContext

CHUNK = 65536
# Rounds of (queue body chunks, send datagrams) per event, so that one
# connection cannot hold the reactor.
_ROUNDS = 16
_STATUS = b":status"
_HEAD = b"HEAD"


def quicConfiguration(description: str, factory: HTTPFactory) -> QuicConfiguration:
    """
    The QUIC configuration of a service's C{udp:} listeners: the certificate
    of one of its C{ssl:} listeners (read the way that listener reads it),
    ALPN C{h3}, and the service's timeouts.

    @param description: The C{ssl:} listener's description.
    @param factory: The service.
    @return: The configuration.
    @raise ValueError: If the certificate or key cannot be loaded.
    """
    options = sslContextFactory(description).options
    configuration = QuicConfiguration(
        is_client=False,
        alpn_protocols=list(H3_ALPN),
        idle_timeout=factory.keepaliveTimeout or factory.headerTimeout,
        # What a client may send before netd reads it: requests are heads
        # (GET and HEAD only), so a stream's window is one head.
        max_stream_data=max(16384, factory.maxHead),
        max_data=4 * max(16384, factory.maxHead),
    )
    configuration.certificate = options.certificate.to_cryptography()
    configuration.private_key = options.privateKey.to_cryptography_key()
    configuration.certificate_chain = [
        each.to_cryptography() for each in options.extraCertChain or ()
    ]
    return configuration


def clientAddress(addr: Any) -> IPv4Address | IPv6Address:
    """
    @param addr: A datagram's source, C{(host, port, ...)}.
    @return: It as a Twisted address (for the status endpoint's filter and
        the access log).
    """
    host, port = addr[0], addr[1]
    if ipaddress.ip_address(host).version == 6:
        return IPv6Address("UDP", host, port)
    return IPv4Address("UDP", host, port)


class HTTP3Server(DatagramProtocol):
    """
    One C{udp:} listener of an http service: routes each datagram to its
    QUIC connection by destination connection ID, and admits new ones.

    @ivar context: The service instance.
    @ivar factory: The service's shared state (the same as its TCP
        listeners').
    @ivar configuration: The QUIC configuration of new connections.
    @ivar retryThreshold: Connections in their handshake from which a Retry
        is asked of new clients (0: always).
    @ivar connections: Every open connection by each of its connection IDs.
    @ivar handshaking: How many connections have not completed their
        handshake.
    @ivar maxStreams: Request streams a client may have open at once
        (C{http3_max_streams}).
    @ivar protocols: The open connections (each once): what the drain and
        the status count as this listener's sessions.
    @ivar draining: Whether the listener is stopping (no new connection is
        admitted).
    @ivar inherited: Servers of the configuration a reload replaced, whose
        connections this socket still serves until they end.
    """

    noisy = False
    _log = Logger()
    transport: Any
    _port: Any = None
    draining = False
    _factoryStarted = False
    _drained: Deferred[None] | None = None
    _heir: HTTP3Server | None = None

    def __init__(
        self,
        context: ServiceContext,
        factory: HTTPFactory,
        certificate: str,
        retryThreshold: int,
        maxStreams: int = 100,
    ) -> None:
        """
        @param context: The service instance.
        @param factory: The service's shared state.
        @param certificate: The C{ssl:} description whose certificate and key
            are used.
        @param retryThreshold: See L{retryThreshold}.
        @param maxStreams: See L{maxStreams}.
        @raise ValueError: If the certificate cannot be loaded.
        """
        self.context = context
        self.factory = factory
        self.reactor = context.reactor
        self.counters = context.counters
        self.policy = context.policy
        self.drops = context.datagramDrops
        self.certificate = certificate
        self.retryThreshold = retryThreshold
        self.maxStreams = maxStreams
        self.configuration = quicConfiguration(certificate, factory)
        self.retry = QuicRetryTokenHandler()
        self.connections: dict[bytes, HTTP3Connection] = {}
        self.protocols: set[HTTP3Connection] = set()
        self.inherited: list[HTTP3Server] = []
        self.handshaking = 0

    def startProtocol(self) -> None:
        """
        Listening: the service's shared state starts with its first listener.
        """
        # Kept: Twisted forgets the transport before stopProtocol, when the
        # socket can still send the connections' CONNECTION_CLOSE.
        self._port = self.transport
        if not self._factoryStarted:
            self._factoryStarted = True
            self.factory.doStart()

    def stopProtocol(self) -> None:
        """
        The socket is closing (it is still open now): close every connection
        (a CONNECTION_CLOSE each: without the socket nothing more could be
        sent), then let the service's shared state stop with its last
        listener.
        """
        for server in [self, *self.inherited]:
            for connection in list(server.protocols):
                connection.close(ErrorCode.H3_NO_ERROR, "server stopping")
                connection.terminated()
            server.connections.clear()
            server._port = None
        self.inherited.clear()
        self._releaseFactory()
        self._checkDrained()

    def _releaseFactory(self) -> None:
        """
        This listener no longer holds the service's shared state open (its
        TCP listeners' connections then drain without waiting for these).
        """
        if self._factoryStarted:
            self._factoryStarted = False
            self.factory.doStop()

    def drainConnections(self) -> Deferred[None]:
        """
        The listener is stopping: admit no new connection, send every open
        one (and every inherited one) a C{GOAWAY}; they close once their
        requests are answered.

        @return: A L{Deferred} that fires once no connection is left (the
            socket can then close).
        """
        self.draining = True
        self._releaseFactory()
        for server in [self, *self.inherited]:
            for connection in list(server.protocols):
                connection.drain()
        if self._drained is None:
            self._drained = Deferred()
        drained = self._drained
        self._checkDrained()
        return drained

    def inheritConnections(self, previous: HTTP3Server) -> None:
        """
        A reload gave this server the socket of C{previous} (the replaced
        configuration's): its connections drain, and their datagrams are
        routed back to them.

        @param previous: The old server.
        """
        self.inherited.extend(previous.inherited)
        previous.inherited.clear()
        self.inherited.append(previous)
        previous._heir = self
        previous.drainConnections()

    def connectionEnded(self, connection: HTTP3Connection) -> None:
        """
        A connection is over: forget it.

        @param connection: It.
        """
        self.protocols.discard(connection)
        if self._heir is not None and not self.protocols:
            heir, self._heir = self._heir, None
            if self in heir.inherited:
                heir.inherited.remove(self)
            heir._checkDrained()
        self._checkDrained()

    def _checkDrained(self) -> None:
        """
        Draining and no connection left (inherited ones included): fire
        L{drainConnections}'s L{Deferred}.
        """
        if self._drained is None or not self.draining:
            return
        if self.protocols or any(each.protocols for each in self.inherited):
            return
        drained, self._drained = self._drained, None
        drained.callback(None)

    def reloadCertificate(self) -> bool:
        """
        Re-read the certificate and key: new connections get them, open
        ones keep theirs.

        @return: C{True}.
        @raise ValueError: If they cannot be loaded (the old ones stay).
        """
        self.configuration = quicConfiguration(self.certificate, self.factory)
        return True

    # Receiving.

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Route a datagram to its connection, or start one.

        @param data: The payload.
        @param addr: The source C{(host, port)}.
        """
        counters = self.counters
        counters.datagramsIn += 1
        counters.datagramBytesIn += len(data)
        try:
            header = pull_quic_header(
                Buffer(data=data),
                host_cid_length=self.configuration.connection_id_length,
            )
        except ValueError:
            self.drop("not a QUIC packet", addr[0])
            return
        connection = self.connections.get(header.destination_cid)
        if connection is None:
            for previous in self.inherited:
                connection = previous.connections.get(header.destination_cid)
                if connection is not None:
                    break
        if connection is not None:
            connection.datagramReceived(data, addr)
            return
        if self.draining:
            self.drop("netd is draining: no new QUIC connection", addr[0])
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < SMALLEST_MAX_DATAGRAM_SIZE
        ):
            # Also what a connection that moved here from another worker's
            # socket sends (see docs/services.md): this process does not
            # know it.
            self.drop("no such QUIC connection", addr[0])
            return
        if header.version not in self.configuration.supported_versions:
            # Only for a full-size Initial (RFC 9000 section 6): never to a
            # version negotiation packet, and never more than was received.
            self.send(
                encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=self.configuration.supported_versions,
                ),
                addr,
            )
            return
        host = addr[0]
        reason = self.policy.filter.check(host)
        if reason is not None:
            self.drop(reason, host)
            return
        now = self.reactor.seconds()
        original = header.destination_cid
        retrySource: bytes | None = None
        if header.token:
            try:
                original = self.retry.validate_token(
                    address=addr,
                    destination_cid=header.destination_cid,
                    token=header.token,
                    now=now,
                )
            except ValueError:
                self.drop("invalid QUIC Retry token", host)
                return
            retrySource = header.destination_cid
        elif self.retryThreshold == 0 or self.handshaking >= self.retryThreshold:
            source = os.urandom(8)
            self.send(
                encode_quic_retry(
                    version=header.version,
                    source_cid=source,
                    destination_cid=header.source_cid,
                    original_destination_cid=header.destination_cid,
                    retry_token=self.retry.create_token(
                        address=addr,
                        original_destination_connection_id=header.destination_cid,
                        retry_source_connection_id=source,
                        now=now,
                    ),
                ),
                addr,
            )
            return
        if not self.policy.admit(host):
            counters.datagramsDropped += 1
            return
        quic = QuicConnection(
            configuration=self.configuration,
            original_destination_connection_id=original,
            retry_source_connection_id=retrySource,
        )
        # Private aioquic API (canary: tests.test_http3.AioquicCanaryTests):
        # QuicConfiguration has no setting for it and aioquic fixes 128. Set
        # before the handshake, whose transport parameters announce it.
        quic._local_max_streams_bidi = Limit(
            frame_type=QuicFrameType.MAX_STREAMS_BIDI,
            name="max_streams_bidi",
            value=self.maxStreams,
        )
        connection = HTTP3Connection(self, quic, addr)
        connection.addID(header.destination_cid)
        connection.addID(quic.host_cid)
        connection.datagramReceived(data, addr)

    # Sending.

    def send(self, data: bytes, addr: Any) -> None:
        """
        Send a datagram, counting it or its failure (UDP is lossy: QUIC
        recovers a datagram the socket could not take).

        @param data: The payload.
        @param addr: The destination.
        """
        port = self._port
        if port is None:
            return
        try:
            port.write(data, addr)
        except (OSError, MessageLengthError) as e:
            self.drop(f"send failed ({e})", addr[0])
        else:
            self.counters.datagramsOut += 1
            self.counters.datagramBytesOut += len(data)

    def drop(self, reason: str, host: str) -> None:
        """
        Count a datagram that is not served.

        @param reason: Why.
        @param host: Its source address.
        """
        self.counters.datagramsDropped += 1
        self.drops.record(reason, host)


class HTTP3Connection(FieldResponder):
    """
    One QUIC connection of an http service, speaking HTTP/3.

    @ivar server: Its listener.
    @ivar quic: The QUIC state machine.
    @ivar h3: The HTTP/3 layer over it.
    @ivar deadline: When the current deadline expires (factory clock), or 0.
    @ivar deadlineKind: L{HEAD} (the handshake), L{SEND} (a body owed makes
        no progress) or L{NONE}.
    """

    _log = Logger()
    framing = "HTTP/3"
    deadline = 0.0
    deadlineKind = NONE
    _closed = False
    _closing = False
    _validated = False
    _goingAway = False
    # The first request stream the GOAWAY said will not be answered.
    _goawayFrom = 0
    # The next client-initiated bidirectional stream (what a GOAWAY sent now
    # would name).
    _nextStream = 0
    _peer: str | None = None

    def __init__(self, server: HTTP3Server, quic: QuicConnection, addr: Any) -> None:
        self.server = server
        self.factory = server.factory
        self.reactor = server.reactor
        self.quic = quic
        self.h3 = H3Connection(quic)
        self.addr = addr
        self.host = addr[0]
        self.ids: set[bytes] = set()
        self._bodies: dict[int, Body] = {}
        self._open: set[int] = set()
        # Streams whose request has been answered but whose receiving side
        # has not ended: a second header block on them is trailers.
        self._unended: set[int] = set()
        # Streams with a response sent (or being sent): a draining connection
        # closes only once the client has acknowledged all of it.
        self._answered: set[int] = set()
        self._timer: Any = None
        self._timerAt: float | None = None
        server.handshaking += 1
        server.protocols.add(self)
        factory = self.factory
        factory.connectionOpened(self)
        self.deadline = factory.now + factory.headerTimeout
        self.deadlineKind = HEAD

    def addID(self, cid: bytes) -> None:
        """
        Route datagrams for a connection ID here.

        @param cid: The ID.
        """
        self.ids.add(cid)
        self.server.connections[cid] = self

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        """
        Feed QUIC; act on its events; send what is owed.

        @param data: The datagram.
        @param addr: Its source (a new one if the client moved).
        """
        if self._closed:
            return
        try:
            self.quic.receive_datagram(data, addr, now=self.reactor.seconds())
            self._process()
            self._transmit()
        except Exception as e:
            self._unexpected(e)

    def _process(self) -> None:
        """
        Act on QUIC's events and the HTTP/3 events they carry.
        """
        quic = self.quic
        while (event := quic.next_event()) is not None:
            if isinstance(event, ConnectionIdIssued):
                self.addID(event.connection_id)
            elif isinstance(event, ConnectionIdRetired):
                self.ids.discard(event.connection_id)
                if self.server.connections.get(event.connection_id) is self:
                    del self.server.connections[event.connection_id]
            elif isinstance(event, ConnectionTerminated):
                self.terminated()
                return
            elif isinstance(event, HandshakeCompleted):
                self._handshakeDone()
            elif isinstance(event, StreamReset):
                self._reset(event.stream_id)
            self._h3Event(event)

    def _h3Event(self, event: QuicEvent) -> None:
        """
        Hand a QUIC event to the HTTP/3 layer; answer the requests it reads.

        @param event: The event.
        """
        for h3Event in self.h3.handle_event(event):
            if isinstance(h3Event, HeadersReceived):
                streamId = h3Event.stream_id
                if streamId in self._unended:
                    # Trailers: nothing to do with them.
                    if h3Event.stream_ended:
                        self._unended.discard(streamId)
                    continue
                if not h3Event.stream_ended:
                    self._unended.add(streamId)
                self._request(streamId, h3Event.headers)
            elif isinstance(h3Event, DataReceived) and h3Event.stream_ended:
                # A request body is not read (GET and HEAD only).
                self._unended.discard(h3Event.stream_id)

    def _handshakeDone(self) -> None:
        """
        The handshake is complete (the client's address is validated).
        """
        if not self._validated:
            self._validated = True
            self.server.handshaking -= 1
        if self.deadlineKind == HEAD:
            self.deadline = 0.0
            self.deadlineKind = NONE

    def _request(self, streamId: int, headers: Any) -> None:
        """
        A request's header block: answer it.

        @param streamId: Its stream.
        @param headers: The decoded fields.
        """
        if self._goingAway and streamId >= self._goawayFrom:
            # RFC 9114 section 5.2: not processed, the client may retry it.
            self.quic.reset_stream(streamId, ErrorCode.H3_REQUEST_REJECTED)
            return
        self._nextStream = max(self._nextStream, streamId + 4)
        self._open.add(streamId)
        self.answerFields(streamId, headers, "3")

    def _reset(self, streamId: int) -> None:
        """
        The client reset a stream: drop its body.

        @param streamId: The stream.
        """
        self._open.discard(streamId)
        self._unended.discard(streamId)
        body = self._bodies.pop(streamId, None)
        if body is not None:
            body.close()
        self._closeIfDrained()

    # Responder: what netd.http.answer decided, written as HTTP/3.

    def peer(self) -> Any:
        """
        @return: The client's address.
        """
        return clientAddress(self.addr)

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
        Send a response's HEADERS frame, and queue its body.

        @param req: The request.
        @param status: The status.
        @param fields: The header fields after C{:status} and C{date}.
        @param data: The body held in memory, or L{None}.
        @param fd: The file to stream the body from, or L{None}.
        @param offset: Where the body starts (in C{data} or the file).
        @param length: Its length (0 for none, as for C{HEAD}).
        """
        streamId = req.streamId
        if self._closed or streamId not in self._open:
            if fd is not None:
                os.close(fd)
            return
        head = [(_STATUS, b"%d" % status), (b"date", self.factory.dateValue)]
        head += fields
        end = length == 0 or req.method == _HEAD
        self._answered.add(streamId)
        self.h3.send_headers(streamId, head, end_stream=end)
        if end:
            if fd is not None:
                os.close(fd)
            self._finished(req, status, 0)
            return
        self._bodies[streamId] = Body(req, status, data, fd, offset, length)

    # Sending.

    def _pump(self) -> bool:
        """
        Queue the next chunk of each body whose stream has sent what it was
        given.

        @return: Whether anything was queued.
        """
        # Private aioquic API (the stream's sender; canary:
        # tests.test_http3.AioquicCanaryTests): aioquic has no public way to
        # ask whether a stream has sent what it was given, and without it a
        # file would be queued whole.
        streams = self.quic._streams
        queued = False
        for streamId, body in list(self._bodies.items()):
            stream = streams.get(streamId)
            if stream is None:
                del self._bodies[streamId]
                body.close()
                continue
            if not stream.sender.buffer_is_empty:
                continue
            data = self._read(body, min(CHUNK, body.remaining))
            if data is None:
                del self._bodies[streamId]
                continue
            size = len(data)
            body.offset += size
            body.remaining -= size
            body.sent += size
            last = not body.remaining
            self.h3.send_data(streamId, data, end_stream=last)
            queued = True
            if last:
                del self._bodies[streamId]
                body.close()
                self._finished(body.req, body.status, body.sent)
        return queued

    def _resetStream(self, streamId: int) -> None:
        """
        Reset a stream whose response cannot be completed.

        @param streamId: The stream.
        """
        self.quic.reset_stream(streamId, ErrorCode.H3_INTERNAL_ERROR)

    def _transmit(self) -> None:
        """
        Queue body chunks and send datagrams while either progresses; arm
        the timer QUIC asks for; keep the send deadline.
        """
        if self._closed:
            return
        server = self.server
        progressed = False
        for _ in range(_ROUNDS):
            queued = self._pump()
            datagrams = self.quic.datagrams_to_send(now=self.reactor.seconds())
            for data, addr in datagrams:
                server.send(data, addr)
            # Sending raises events too: the connection IDs it issued
            # (NEW_CONNECTION_ID) must lead here before the client uses them.
            self._process()
            if self._closed:
                return
            progressed = progressed or queued or bool(datagrams)
            if not queued or not datagrams:
                break
        if self._goingAway:
            self._closeIfDrained()
            if self._closed:
                return
        self._arm()
        factory = self.factory
        if self._bodies:
            if progressed or self.deadlineKind != SEND:
                self.deadline = factory.now + factory.sendTimeout
                self.deadlineKind = SEND
        elif self.deadlineKind == SEND:
            self.deadline = 0.0
            self.deadlineKind = NONE

    def _arm(self) -> None:
        """
        Arm the reactor timer at the time QUIC's next timer is due.
        """
        at = self.quic.get_timer()
        if self._timer is not None and self._timerAt != at:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._timer is None and at is not None:
            delay = max(0.0, at - self.reactor.seconds())
            self._timer = self.reactor.callLater(delay, self._timerFired)
        self._timerAt = at

    def _timerFired(self) -> None:
        """
        QUIC's timer: loss detection, acknowledgements, idle timeout, the end
        of closing.
        """
        self._timer = None
        now = max(self._timerAt or 0.0, self.reactor.seconds())
        self._timerAt = None
        if self._closed:
            return
        try:
            self.quic.handle_timer(now=now)
            self._process()
            self._transmit()
        except Exception as e:
            self._unexpected(e)

    def _finished(self, req: Request, status: int, sent: int) -> None:
        """
        A response is complete: count it (for the metrics endpoint too) and
        log it; close if draining.

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
                self._peer = self.host
            factory.record(self._peer, req, status, sent)
        self._closeIfDrained()

    # Closing.

    def _closeIfDrained(self) -> None:
        """
        Draining, nothing owed, and every response acknowledged by the
        client: close. (A CONNECTION_CLOSE ends sending at once: what is
        still queued, or sent but lost, would never arrive.)
        """
        if not self._goingAway or self._open or self._bodies or self._closing:
            return
        # Private aioquic API, as in _pump: whether a stream's sender has had
        # everything it sent acknowledged (aioquic forgets a stream once
        # both of its sides are finished).
        streams = self.quic._streams
        for streamId in list(self._answered):
            stream = streams.get(streamId)
            if stream is None or stream.sender.is_finished:
                self._answered.discard(streamId)
            else:
                return
        self.close(ErrorCode.H3_NO_ERROR, "server draining")

    def close(self, code: int, reason: str) -> None:
        """
        Send CONNECTION_CLOSE; aioquic's closing period ends with
        L{terminated} through the timer.

        @param code: The HTTP/3 error code.
        @param reason: Its reason phrase.
        """
        if self._closed or self._closing:
            return
        self._closing = True
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
        self.quic.close(error_code=code, reason_phrase=reason)
        self._transmit()

    def drain(self) -> None:
        """
        The service's listeners closed: send C{GOAWAY} (once); the requests
        already received finish, later ones are refused, then the
        connection closes.
        """
        if self._closed or self._closing:
            return
        if not self._goingAway:
            self._goingAway = True
            self._goawayFrom = self._nextStream
            # Private aioquic API (canary: tests.test_http3.AioquicCanaryTests):
            # H3Connection has no method to send GOAWAY; its control stream
            # (opened when it was made) is where RFC 9114 section 5.2 puts it.
            control = self.h3._local_control_stream_id
            if control is not None:
                self.quic.send_stream_data(
                    control,
                    encode_frame(FrameType.GOAWAY, encode_uint_var(self._goawayFrom)),
                )
        self._closeIfDrained()
        self._transmit()

    def abortSession(self, reason: str) -> None:
        """
        Close now, whatever is owed (the drain deadline passed).

        @param reason: Why, for the log.
        """
        self._log.info(
            "{service}: HTTP/3 client {peer} cut: {reason}",
            service=self.factory.name,
            peer=self.host,
            reason=reason,
        )
        self.close(ErrorCode.H3_NO_ERROR, reason)

    def deadlineExpired(self) -> None:
        """
        Called by the factory's clock when L{deadline} has passed.
        """
        kind = self.deadlineKind
        self.deadline = 0.0
        self.deadlineKind = NONE
        if kind == HEAD:
            self._log.info(
                "{service}: HTTP/3 client {peer} cut: no handshake within"
                " header_timeout",
                service=self.factory.name,
                peer=self.host,
            )
            self.close(ErrorCode.H3_NO_ERROR, "handshake timeout")
        elif kind == SEND:
            self._log.info(
                "{service}: HTTP/3 client {peer} cut: no progress for send_timeout",
                service=self.factory.name,
                peer=self.host,
            )
            self.close(ErrorCode.H3_REQUEST_CANCELLED, "no progress")

    def terminated(self) -> None:
        """
        The connection is over (closed, timed out, or its listener stopped):
        forget its IDs, its session, its timer and its files.
        """
        if self._closed:
            return
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for body in self._bodies.values():
            body.close()
        self._bodies.clear()
        connections = self.server.connections
        for cid in self.ids:
            if connections.get(cid) is self:
                del connections[cid]
        if not self._validated:
            self.server.handshaking -= 1
            self._validated = True
        self.server.policy.release(self.host)
        self.factory.connectionClosed(self)
        self.server.connectionEnded(self)

    def _unexpected(self, error: BaseException) -> None:
        """
        A bug: log it, close the connection.

        @param error: The exception.
        """
        self._log.failure(
            "{service}: unexpected error in an HTTP/3 connection",
            Failure(error),
            service=self.factory.name,
        )
        try:
            self.close(ErrorCode.H3_INTERNAL_ERROR, "internal error")
        except Exception:
            self.terminated()
