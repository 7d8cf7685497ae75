# -*- test-case-name: tests.test_http3 -*-
"""
Tests for L{netd.http.h3}: HTTP/3 driven in memory, with an aioquic client
C{QuicConnection} and C{H3Connection} on one side, netd's L{HTTP3Server} on
a fake datagram transport and a L{Clock} on the other (no sockets).
"""

from __future__ import annotations

import hashlib
import os
import ssl
from typing import Any

from aioquic.buffer import Buffer
from aioquic.h3.connection import H3_ALPN, ErrorCode
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.quic.events import ConnectionTerminated, StreamReset
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from attrs import evolve
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from netd.config import ConfigError, parseConfig
from netd.descriptions import parseListener
from netd.http.h3 import CHUNK, HTTP3Server
from netd.limits import Limits
from netd.listeners import DatagramListenerService
from netd.services import serviceTypes
from netd.services.http import buildDatagramProtocol, buildStreamFactory
from tests.httpsupport import largeContent
from tests.support import FakeDatagramTransport, makeContext, writeSelfSignedCertificate
from tests.test_bench import loadBench
from tests.test_tls import tlsListener

ClientH3Connection = loadBench("h3client").ClientH3Connection

SERVER = ("127.0.0.1", 8443)
CLIENT = ("127.0.0.1", 50000)


class FakeUDPPort(FakeDatagramTransport):
    """
    What L{HTTP3Server} writes to, recorded.
    """


def h3Service(
    testCase: SynchronousTestCase,
    settings: dict[str, Any] | None = None,
    limits: Limits | None = None,
    files: dict[str, bytes] | None = None,
) -> tuple[HTTP3Server, Clock, dict[str, bytes]]:
    """
    An http service with an C{ssl:} and a C{udp:} listener, its HTTP/3
    protocol started on a fake transport.

    @param testCase: The test (for its temporary directory).
    @param settings: http settings over the defaults.
    @param limits: Its limits.
    @param files: Files of its document root.
    @return: The protocol, its clock and the files.
    """
    directory = os.path.abspath(testCase.mktemp())
    root = os.path.join(directory, "root")
    os.makedirs(root)
    if files is None:
        files = {
            "small.txt": b"hello over HTTP/3\n",
            "large.bin": largeContent(),
        }
    for name, content in files.items():
        with open(os.path.join(root, name), "wb") as f:
            f.write(content)
    keyPath, certPath = writeSelfSignedCertificate(directory)
    clock = Clock()
    values = {"root": root}
    values.update(settings or {})
    context = makeContext("http", limits=limits, settings=values, reactor=clock)
    tls = parseListener(eval(tlsListener(keyPath, certPath)))
    udp = parseListener("udp:8443:interface=127.0.0.1")
    context.config = evolve(context.config, listeners=(tls, udp))
    assert isinstance(udp, type(parseListener("udp:1")))
    server = buildDatagramProtocol(context, udp)  # type: ignore[arg-type]
    server.transport = FakeUDPPort()
    server.doStart()
    testCase.addCleanup(server.doStop)
    return server, clock, files


class Client:
    """
    An in-memory HTTP/3 client of an L{HTTP3Server}.

    @ivar quic: Its QUIC connection.
    @ivar h3: Its HTTP/3 layer.
    @ivar responses: What each stream received: its header fields and body.
    """

    def __init__(
        self, server: HTTP3Server, clock: Clock, addr: tuple[str, int] = CLIENT
    ) -> None:
        self.server = server
        self.clock = clock
        self.addr = addr
        configuration = QuicConfiguration(
            is_client=True,
            alpn_protocols=list(H3_ALPN),
            server_name="localhost",
            verify_mode=ssl.CERT_NONE,
        )
        self.quic = QuicConnection(configuration=configuration)
        self.h3 = ClientH3Connection(self.quic)
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.bodies: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.terminated: ConnectionTerminated | None = None
        self.sentToServer = 0
        self.receivedFromServer = 0
        self.quic.connect(SERVER, now=clock.seconds())

    def exchange(self, rounds: int = 200, deliver: bool = True) -> None:
        """
        Move datagrams both ways until neither side has any to send.

        @param rounds: The most round trips.
        @param deliver: Whether the server's datagrams reach the client.
        """
        transport = self.server.transport
        for _ in range(rounds):
            moved = False
            for data, _addr in self.quic.datagrams_to_send(now=self.clock.seconds()):
                moved = True
                self.sentToServer += len(data)
                self.server.datagramReceived(data, self.addr)
            written, transport.written[:] = list(transport.written), []
            for data, addr in written:
                if addr != self.addr:
                    transport.written.append((data, addr))
                    continue
                moved = True
                self.receivedFromServer += len(data)
                if deliver:
                    self.quic.receive_datagram(data, SERVER, now=self.clock.seconds())
            self._events()
            if not moved:
                return

    def _events(self) -> None:
        """
        Collect QUIC and HTTP/3 events.
        """
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, StreamReset):
                self.resets[event.stream_id] = event.error_code
            for h3Event in self.h3.handle_event(event):
                if isinstance(h3Event, HeadersReceived):
                    self.headers[h3Event.stream_id] = dict(h3Event.headers)
                    self.bodies.setdefault(h3Event.stream_id, bytearray())
                elif isinstance(h3Event, DataReceived):
                    self.bodies.setdefault(h3Event.stream_id, bytearray()).extend(
                        h3Event.data
                    )
                else:
                    continue
                if h3Event.stream_ended:
                    self.ended.add(h3Event.stream_id)

    def request(
        self, path: bytes, method: bytes = b"GET", extra: tuple[Any, ...] = ()
    ) -> int:
        """
        Send a request.

        @param path: Its target.
        @param method: Its method.
        @param extra: More header fields.
        @return: Its stream.
        """
        streamId = self.quic.get_next_available_stream_id()
        if method == b"HEAD":
            self.h3.headStreams.add(streamId)
        self.h3.send_headers(
            streamId,
            [
                (b":method", method),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", path),
                *extra,
            ],
            end_stream=True,
        )
        return streamId

    def get(
        self, path: bytes, method: bytes = b"GET", extra: tuple[Any, ...] = ()
    ) -> tuple[dict[bytes, bytes], bytes]:
        """
        Send a request and exchange until it is answered.

        @return: The response's fields and body.
        """
        streamId = self.request(path, method, extra)
        for _ in range(500):
            self.exchange()
            if streamId in self.ended:
                break
            # The congestion window reopens as acknowledgements come in;
            # lost nothing, but timers (delayed ACKs) move it too.
            self.advance(0.03)
        return self.headers[streamId], bytes(self.bodies[streamId])

    def advance(self, seconds: float, deliver: bool = True) -> None:
        """
        Let time pass on both sides (their timers fire: pacing, delayed
        acknowledgements, loss detection).

        @param seconds: How long.
        @param deliver: Whether the server's datagrams reach the client.
        """
        self.clock.advance(seconds)
        timer = self.quic.get_timer()
        if timer is not None and timer <= self.clock.seconds():
            self.quic.handle_timer(now=self.clock.seconds())
        self.exchange(deliver=deliver)

    def settle(self, seconds: float = 0.3, deliver: bool = True) -> None:
        """
        Exchange in steps of 10 ms for a while (both sides pace what they
        send).

        @param seconds: How long.
        @param deliver: Whether the server's datagrams reach the client.
        """
        self.exchange(deliver=deliver)
        for _ in range(int(seconds / 0.01)):
            self.advance(0.01, deliver)


class HandshakeTests(SynchronousTestCase):
    """
    The QUIC handshake and the requests over it.
    """

    def setUp(self) -> None:
        self.server, self.clock, self.files = h3Service(self)
        self.client = Client(self.server, self.clock)

    def test_handshake(self) -> None:
        """
        The handshake completes with ALPN C{h3}; the connection is known by
        its connection IDs and counted against the service's sessions.
        """
        self.client.exchange()
        self.assertEqual(self.client.quic._state, QuicConnectionState.CONNECTED)
        self.assertEqual(self.client.quic.tls.alpn_negotiated, "h3")
        self.assertEqual(len(set(self.server.connections.values())), 1)
        self.assertEqual(self.server.handshaking, 0)
        self.assertEqual(self.server.context.policy.active, 1)

    def test_getFile(self) -> None:
        """
        C{GET} of a file larger than the chunk is answered C{200} with the
        file's bytes (sha256 checked), its length and type.
        """
        headers, body = self.client.get(b"/large.bin")
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(
            hashlib.sha256(body).hexdigest(),
            hashlib.sha256(self.files["large.bin"]).hexdigest(),
        )
        self.assertEqual(headers[b"content-length"], b"%d" % len(body))
        self.assertIn(b"etag", headers)
        self.assertEqual(self.server.factory.requests, 1)

    def test_small(self) -> None:
        """
        A small file (held in memory by the cache) is served too.
        """
        headers, body = self.client.get(b"/small.txt")
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(body, self.files["small.txt"])
        self.assertTrue(headers[b"content-type"].startswith(b"text/plain"))

    def test_head(self) -> None:
        """
        C{HEAD} gets the fields of C{GET} and no body.
        """
        headers, body = self.client.get(b"/large.bin", b"HEAD")
        self.assertEqual(headers[b":status"], b"200")
        self.assertEqual(
            headers[b"content-length"], b"%d" % len(self.files["large.bin"])
        )
        self.assertEqual(body, b"")

    def test_notFound(self) -> None:
        """
        A missing file is C{404}.
        """
        headers, body = self.client.get(b"/missing")
        self.assertEqual(headers[b":status"], b"404")
        self.assertEqual(body, b"404 Not Found\n")

    def test_range(self) -> None:
        """
        C{Range} is answered C{206} with C{Content-Range} and those bytes.
        """
        headers, body = self.client.get(
            b"/large.bin", extra=((b"range", b"bytes=100000-100099"),)
        )
        self.assertEqual(headers[b":status"], b"206")
        self.assertEqual(
            headers[b"content-range"],
            b"bytes 100000-100099/%d" % len(self.files["large.bin"]),
        )
        self.assertEqual(body, self.files["large.bin"][100000:100100])

    def test_methodNotAllowed(self) -> None:
        """
        A method other than C{GET} and C{HEAD} is C{405}, like HTTP/1.1 and
        HTTP/2 (the same checks).
        """
        headers, _ = self.client.get(b"/small.txt", b"DELETE")
        self.assertEqual(headers[b":status"], b"405")
        self.assertEqual(headers[b"allow"], b"GET, HEAD")

    def test_metricsCounted(self) -> None:
        """
        HTTP/3 responses are counted for the metrics endpoint by status
        class, with their latency, as HTTP/1.1's and HTTP/2's are.
        """
        self.client.get(b"/small.txt")
        self.client.get(b"/missing")
        stats = self.server.factory.stats
        self.assertEqual(stats.statusClasses[2], 1)
        self.assertEqual(stats.statusClasses[4], 1)
        self.assertEqual(stats.latencies.count, 2)

    def test_headerLimits(self) -> None:
        """
        The HTTP/1.1 header-field limits (L{FieldReader
        <netd.http.request.FieldReader>}) apply to each request: too many
        fields answer C{431}.
        """
        self.server.factory.maxHeaders = 5
        fields = tuple((b"x-%d" % i, b"v") for i in range(6))
        headers, _ = self.client.get(b"/small.txt", extra=fields)
        self.assertEqual(headers[b":status"], b"431")
        headers, _ = self.client.get(b"/small.txt", extra=fields[:4])
        self.assertEqual(headers[b":status"], b"200")

    def test_pathEscape(self) -> None:
        """
        The same path safety: C{..} does not leave the root.
        """
        headers, _ = self.client.get(b"/../secret.txt")
        self.assertIn(headers[b":status"], (b"400", b"404"))

    def test_connectionIDRotation(self) -> None:
        """
        The server issues spare connection IDs; a client that switches to
        one (C{change_connection_id}) is still served, and the ID it left is
        forgotten once retired.
        """
        self.client.settle()
        before = set(self.server.connections)
        self.assertGreater(len(before), 2)
        old = self.client.quic._peer_cid.cid
        self.client.quic.change_connection_id()
        headers, body = self.client.get(b"/small.txt")
        self.assertEqual(headers[b":status"], b"200")
        self.assertNotEqual(self.client.quic._peer_cid.cid, old)
        self.assertNotIn(old, self.server.connections)

    def test_idleTimeout(self) -> None:
        """
        A connection with nothing to do is closed after C{keepalive_timeout}
        by the reactor's timers; its session and IDs are released.
        """
        self.client.exchange()
        self.assertEqual(self.server.context.policy.active, 1)
        # The client stays silent (its own idle timer is later than netd's).
        for _ in range(40):
            self.clock.advance(1)
        self.assertEqual(self.server.context.policy.active, 0)
        self.assertEqual(self.server.connections, {})
        self.assertEqual(self.server.factory.connections, set())

    def test_timersOnReactor(self) -> None:
        """
        The QUIC timer is a C{callLater} on the injected reactor.
        """
        self.client.exchange()
        calls = self.clock.getDelayedCalls()
        self.assertTrue(calls)
        connection = next(iter(self.server.connections.values()))
        self.assertIn(connection._timer, calls)
        self.assertAlmostEqual(
            connection._timer.getTime(), connection.quic.get_timer() or 0.0
        )


class ProtectionTests(SynchronousTestCase):
    """
    QUIC's protections: Retry, the amplification limit, connection caps,
    bounded sending.
    """

    def test_retryAlways(self) -> None:
        """
        With C{http3_retry_threshold = 0}, a new client's first Initial is
        answered with a Retry and no connection state; the client echoes the
        token and is served.
        """
        server, clock, _ = h3Service(self, {"http3_retry_threshold": 0})
        client = Client(server, clock)
        ((data, _),) = client.quic.datagrams_to_send(now=clock.seconds())
        server.datagramReceived(data, CLIENT)
        ((reply, _),) = server.transport.written
        header = pull_quic_header(Buffer(data=reply), host_cid_length=8)
        self.assertEqual(header.packet_type, QuicPacketType.RETRY)
        self.assertEqual(server.connections, {})
        self.assertEqual(server.context.policy.active, 0)
        client.quic.receive_datagram(reply, SERVER, now=clock.seconds())
        server.transport.written.clear()
        headers, _ = client.get(b"/small.txt")
        self.assertEqual(headers[b":status"], b"200")

    def test_retryUnderLoad(self) -> None:
        """
        Below the threshold no Retry is asked; once that many handshakes are
        in progress, new clients get a Retry.
        """
        server, clock, _ = h3Service(self, {"http3_retry_threshold": 2})
        for port in (40001, 40002):
            client = Client(server, clock, ("127.0.0.1", port))
            ((data, _),) = client.quic.datagrams_to_send(now=clock.seconds())
            server.datagramReceived(data, client.addr)
        self.assertEqual(server.handshaking, 2)
        server.transport.written.clear()
        third = Client(server, clock, ("127.0.0.1", 40003))
        ((data, _),) = third.quic.datagrams_to_send(now=clock.seconds())
        server.datagramReceived(data, third.addr)
        ((reply, _),) = server.transport.written
        header = pull_quic_header(Buffer(data=reply), host_cid_length=8)
        self.assertEqual(header.packet_type, QuicPacketType.RETRY)
        self.assertEqual(server.handshaking, 2)

    def test_badRetryToken(self) -> None:
        """
        A token that netd did not issue (or issued to another address) is
        dropped: no connection.
        """
        server, clock, _ = h3Service(self, {"http3_retry_threshold": 0})
        client = Client(server, clock)
        ((data, _),) = client.quic.datagrams_to_send(now=clock.seconds())
        server.datagramReceived(data, CLIENT)
        ((reply, _),) = server.transport.written
        server.transport.written.clear()
        client.quic.receive_datagram(reply, SERVER, now=clock.seconds())
        ((retried, _),) = client.quic.datagrams_to_send(now=clock.seconds())
        # The same token from another address.
        server.datagramReceived(retried, ("127.0.0.1", 50001))
        self.assertEqual(server.connections, {})
        self.assertEqual(server.transport.written, [])
        self.assertEqual(server.counters.datagramsDropped, 1)

    def test_amplificationLimit(self) -> None:
        """
        Before the client's address is validated, netd sends at most three
        times what it received, however large its handshake flight (a big
        certificate chain) is, and whatever time passes.
        """
        server, clock, _ = h3Service(self)
        # A certificate chain far larger than 3 x 1200 bytes.
        server.configuration.certificate_chain = [server.configuration.certificate] * 8
        client = Client(server, clock)
        ((data, _),) = client.quic.datagrams_to_send(now=clock.seconds())
        server.datagramReceived(data, CLIENT)
        for _ in range(5):
            clock.advance(1)
        sent = sum(len(each) for each, _ in server.transport.written)
        self.assertGreater(sent, 0)
        self.assertLessEqual(sent, 3 * len(data))

    def test_connectionsPerSource(self) -> None:
        """
        A source at C{max_sessions_per_peer} opens no more connections; its
        Initial is dropped and counted.
        """
        server, clock, _ = h3Service(self, limits=Limits(maxSessionsPerPeer=2))
        for port in (40001, 40002, 40003):
            client = Client(server, clock, ("127.0.0.1", port))
            client.exchange()
        self.assertEqual(server.context.policy.active, 2)
        self.assertEqual(len(set(server.connections.values())), 2)
        other = Client(server, clock, ("127.0.0.2", 40001))
        other.exchange()
        self.assertEqual(server.context.policy.active, 3)

    def test_connectionsInTotal(self) -> None:
        """
        At C{max_sessions} no connection is opened from any source.
        """
        server, clock, _ = h3Service(self, limits=Limits(maxSessions=1))
        Client(server, clock, ("127.0.0.1", 40001)).exchange()
        Client(server, clock, ("127.0.0.2", 40001)).exchange()
        self.assertEqual(server.context.policy.active, 1)

    def test_deny(self) -> None:
        """
        The service's deny list applies to QUIC clients.
        """
        from netd.settings import networks

        server, clock, _ = h3Service(
            self, limits=Limits(deny=networks(["127.0.0.0/8"]))
        )
        Client(server, clock).exchange()
        self.assertEqual(server.connections, {})

    def test_boundedSending(self) -> None:
        """
        A client that stops reading (its datagrams lost, no ACKs) holds at
        most a chunk per stream queued in netd: the file is never read
        whole; the connection is then cut (QUIC's idle timeout, as nothing
        is acknowledged, before C{send_timeout}) and the file closed.
        """
        server, clock, files = h3Service(self)
        client = Client(server, clock)
        client.settle()
        streamId = client.request(b"/large.bin")
        client.settle(deliver=False)
        connection = next(iter(server.connections.values()))
        body = connection._bodies[streamId]
        self.assertLessEqual(body.sent, CHUNK)
        stream = connection.quic._streams[streamId]
        self.assertLessEqual(len(stream.sender._buffer), CHUNK + 1024)
        for _ in range(40):
            clock.advance(1)
            client.exchange(deliver=False)
        self.assertEqual(connection._bodies, {})
        self.assertIsNone(body.fd)
        self.assertEqual(server.context.policy.active, 0)

    def test_maxStreams(self) -> None:
        """
        C{http3_max_streams}: the client is allowed that many request
        streams at once (the transport parameter netd announces), is granted
        one more as each ends, and all its requests are answered.
        """
        server, clock, _ = h3Service(self, settings={"http3_max_streams": 2})
        client = Client(server, clock)
        client.settle()
        self.assertEqual(client.quic._remote_max_streams_bidi, 2)
        (connection,) = server.protocols
        streams = [client.request(b"/small.txt") for _ in range(5)]
        most = 0
        for _ in range(100):
            client.advance(0.01)
            most = max(most, len(connection._open))
            if all(streamId in client.ended for streamId in streams):
                break
        for streamId in streams:
            self.assertEqual(bytes(client.bodies[streamId]), b"hello over HTTP/3\n")
        self.assertLessEqual(most, 2)
        self.assertGreaterEqual(client.quic._remote_max_streams_bidi, 5)

    def test_notQUIC(self) -> None:
        """
        A datagram that is not QUIC, or a short packet for an unknown
        connection, is dropped without an answer.
        """
        server, clock, _ = h3Service(self)
        server.datagramReceived(b"\x00", CLIENT)
        server.datagramReceived(b"\x40" + b"\x01" * 8 + b"x" * 40, CLIENT)
        self.assertEqual(server.transport.written, [])
        self.assertEqual(server.counters.datagramsDropped, 2)

    def test_stopClosesConnections(self) -> None:
        """
        When the listener stops, every connection is sent CONNECTION_CLOSE
        (the socket goes) and released.
        """
        server, clock, _ = h3Service(self)
        client = Client(server, clock)
        client.exchange()
        transport = server.transport
        server.doStop()
        self.addCleanup(server.doStart)
        server.transport = transport
        client.exchange()
        self.assertIn(
            client.quic._state,
            (QuicConnectionState.DRAINING, QuicConnectionState.TERMINATED),
        )
        self.assertEqual(server.context.policy.active, 0)


class FakeListeningPort(FakeUDPPort):
    """
    A UDP port a listener service can hand over and close: its protocol,
    packet size and whether it stopped listening.
    """

    maxPacketSize = 65535
    socket = None

    def __init__(self, protocol: Any) -> None:
        super().__init__()
        self.protocol = protocol
        self.stopped = False

    def stopListening(self) -> None:
        self.stopped = True


class DrainTests(SynchronousTestCase):
    """
    Stopping (SIGTERM) or replacing (a reload) an HTTP/3 listener: open
    connections are sent GOAWAY and finish on the open socket.
    """

    def downloading(self) -> tuple[HTTP3Server, Clock, Client, int, bytes]:
        """
        @return: A server, its clock, a client part-way through downloading
            C{large.bin}, that stream and the file's content.
        """
        server, clock, files = h3Service(self)
        client = Client(server, clock)
        client.settle()
        streamId = client.request(b"/large.bin")
        client.advance(0.01)
        client.advance(0.01)
        self.assertNotIn(streamId, client.ended)
        self.assertTrue(client.bodies.get(streamId))
        return server, clock, client, streamId, files["large.bin"]

    def finish(self, client: Client, streamId: int | None) -> None:
        """
        Exchange until the stream (if any) has ended and the connection
        closed (the client's draining period over).
        """
        for _ in range(2000):
            if (streamId is None or streamId in client.ended) and (
                client.terminated is not None
            ):
                return
            client.advance(0.03)

    def untilFired(self, clock: Clock, fired: list[object]) -> None:
        """
        Let time pass (closing periods end) until a drain's L{Deferred} has
        fired into C{fired}; fail if it does not within ten seconds.
        """
        for _ in range(100):
            if fired:
                break
            clock.advance(0.1)
        self.assertEqual(fired, [None])

    def goaway(self, client: Client) -> list[int]:
        """
        Exchange until the client has a GOAWAY (it queues behind a body in
        flight, under QUIC's congestion window).

        @return: What the client received.
        """
        for _ in range(50):
            if client.h3.goaways:
                break
            client.advance(0.03)
        goaways: list[int] = client.h3.goaways
        return goaways

    def test_goawayThenFinish(self) -> None:
        """
        C{drainConnections}: the client is sent GOAWAY; the download under
        way completes intact; the connection then closes with
        C{H3_NO_ERROR} and the returned L{Deferred} fires once it is gone.
        """
        server, clock, client, streamId, content = self.downloading()
        drained = server.drainConnections()
        fired: list[object] = []
        drained.addCallback(fired.append)
        self.assertEqual(self.goaway(client), [streamId + 4])
        self.assertNotIn(streamId, client.ended)
        self.assertEqual(fired, [])
        self.finish(client, streamId)
        self.assertEqual(bytes(client.bodies[streamId]), content)
        assert client.terminated is not None
        self.assertEqual(client.terminated.error_code, ErrorCode.H3_NO_ERROR)
        self.untilFired(clock, fired)
        self.assertEqual(server.protocols, set())
        self.assertEqual(server.context.policy.active, 0)

    def test_laterRequestRejected(self) -> None:
        """
        A request on a stream at or after the one GOAWAY named is reset with
        C{H3_REQUEST_REJECTED} (the client may retry it elsewhere); the one
        under way still completes.
        """
        server, clock, client, streamId, content = self.downloading()
        server.drainConnections()
        self.goaway(client)
        later = client.request(b"/small.txt")
        for _ in range(50):
            if later in client.resets:
                break
            client.advance(0.03)
        self.assertEqual(client.resets.get(later), ErrorCode.H3_REQUEST_REJECTED)
        self.finish(client, streamId)
        self.assertEqual(bytes(client.bodies[streamId]), content)

    def test_idleClosesAtOnce(self) -> None:
        """
        A connection with nothing under way is closed at once; the drain is
        over when its closing period ends.
        """
        server, clock, _ = h3Service(self)
        client = Client(server, clock)
        client.settle()
        fired: list[object] = []
        server.drainConnections().addCallback(fired.append)
        self.finish(client, None)
        assert client.terminated is not None
        self.assertEqual(client.terminated.error_code, ErrorCode.H3_NO_ERROR)
        self.untilFired(clock, fired)

    def test_noDrainNeeded(self) -> None:
        """
        With no connection, the drain is over at once.
        """
        server, _, _ = h3Service(self)
        fired: list[object] = []
        server.drainConnections().addCallback(fired.append)
        self.assertEqual(fired, [None])

    def test_noNewConnections(self) -> None:
        """
        While draining, a new client's Initial is dropped (counted, with
        its reason): it gets no answer and no state.
        """
        server, clock, client, streamId, _ = self.downloading()
        server.drainConnections()
        self.goaway(client)
        before = len(server.protocols)
        late = Client(server, clock, ("127.0.0.1", 50001))
        late.exchange()
        self.assertEqual(len(server.protocols), before)
        self.assertEqual(late.receivedFromServer, 0)
        self.assertGreater(
            server.drops.totals["netd is draining: no new QUIC connection"], 0
        )

    def test_abortSession(self) -> None:
        """
        What the drain deadline calls: the connection is closed though its
        download is unfinished, its file closed, and the drain ends.
        """
        server, clock, client, streamId, _ = self.downloading()
        fired: list[object] = []
        server.drainConnections().addCallback(fired.append)
        (connection,) = server.protocols
        body = connection._bodies[streamId]
        connection.abortSession("drain deadline reached")
        self.assertIsNone(body.fd)
        self.finish(client, None)
        self.assertIsNotNone(client.terminated)
        self.assertNotIn(streamId, client.ended)
        self.untilFired(clock, fired)

    def test_inheritConnections(self) -> None:
        """
        A reload hands the socket to a new server: the old server's
        connection is still served through it (its datagrams routed back)
        and finishes its download after GOAWAY, while a new client is
        served by the new server; the old one is then forgotten.
        """
        old, clock, client, streamId, content = self.downloading()
        new, _, _ = h3Service(self)
        new.reactor = old.reactor
        new.doStop()
        new.transport = None
        listener = DatagramListenerService(
            new.context, parseListener("udp:8443"), new  # type: ignore[arg-type]
        )
        port = FakeListeningPort(old)
        port.written = old.transport.written
        listener._switchTo(port)  # type: ignore[arg-type]
        self.assertIs(new.transport, port)
        self.assertEqual(new.inherited, [old])
        client.server = new
        fresh = Client(new, clock, ("127.0.0.1", 50002))
        fresh.settle()
        self.finish(client, streamId)
        self.assertEqual(bytes(client.bodies[streamId]), content)
        self.assertEqual(client.h3.goaways, [streamId + 4])
        for _ in range(100):
            if not new.inherited:
                break
            fresh.advance(0.1)
        self.assertEqual(new.inherited, [])
        self.assertEqual(fresh.get(b"/small.txt")[1], b"hello over HTTP/3\n")
        self.assertEqual(len(new.protocols), 1)

    def test_otherProtocolStopped(self) -> None:
        """
        A port handed from a protocol of another kind stops that protocol.
        """
        new, _, _ = h3Service(self)
        new.doStop()
        new.transport = None
        listener = DatagramListenerService(
            new.context, parseListener("udp:8443"), new  # type: ignore[arg-type]
        )
        stopped: list[bool] = []

        class Other:
            def doStop(self) -> None:
                stopped.append(True)

        listener._switchTo(FakeListeningPort(Other()))  # type: ignore[arg-type]
        self.assertEqual(stopped, [True])
        self.assertEqual(new.inherited, [])

    def test_listenerWaits(self) -> None:
        """
        The listener service's C{stopService} closes the socket only once
        the drain is over.
        """
        server, clock, client, streamId, content = self.downloading()
        listener = DatagramListenerService(
            server.context, parseListener("udp:8443"), server  # type: ignore[arg-type]
        )
        port = FakeListeningPort(server)
        listener.port = port  # type: ignore[assignment]
        stopping = listener.stopService()
        assert stopping is not None
        fired: list[object] = []
        stopping.addCallback(fired.append)
        self.assertFalse(port.stopped)
        self.finish(client, streamId)
        for _ in range(100):
            if fired:
                break
            clock.advance(0.1)
        self.assertTrue(port.stopped)
        self.assertEqual(bytes(client.bodies[streamId]), content)


class CertificateTests(SynchronousTestCase):
    """
    The certificate comes from the service's C{ssl:} listener and reloads.
    """

    def test_reload(self) -> None:
        """
        L{HTTP3Server.reloadCertificate} reads the files again: new
        connections get the new certificate.
        """
        server, clock, _ = h3Service(self)
        before = server.configuration
        keyPath, certPath = writeSelfSignedCertificate(
            os.path.dirname(server.certificate.split("certKey=")[1].split(":")[0])
        )
        self.assertTrue(server.reloadCertificate())
        self.assertIsNot(server.configuration, before)
        self.assertNotEqual(
            server.configuration.certificate.fingerprint(
                server.configuration.certificate.signature_hash_algorithm
            ),
            before.certificate.fingerprint(before.certificate.signature_hash_algorithm),
        )
        client = Client(server, clock)
        headers, _ = client.get(b"/small.txt")
        self.assertEqual(headers[b":status"], b"200")


class ConfigTests(SynchronousTestCase):
    """
    HTTP/3 in the configuration: a C{udp:} listener needs an C{ssl:} one;
    C{Alt-Svc} follows the UDP port and C{alt_svc}.
    """

    def setUp(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        self.keyPath, self.certPath = writeSelfSignedCertificate(directory)

    def parse(self, listen: str, extra: str = "") -> Any:
        """
        @param listen: The C{listen} array's TOML.
        @param extra: More service keys.
        @return: The configuration.
        """
        return parseConfig(
            serviceTypes(),
            f'[services.web]\ntype = "http"\nlisten = {listen}\n{extra}',
            "netd.toml",
        )

    def test_udpNeedsSSL(self) -> None:
        """
        An http service with a C{udp:} listener and no C{ssl:} one is a
        configuration error naming its C{listen} and what to add.
        """
        with self.assertRaises(ConfigError) as caught:
            self.parse('["tcp:0:interface=127.0.0.1", "udp:0:interface=127.0.0.1"]')
        (line,) = caught.exception.lines()
        self.assertIn("services.web.listen", line)
        self.assertIn("add an ssl: listener", line)

    def test_udpWithSSL(self) -> None:
        """
        With an C{ssl:} listener the C{udp:} one is accepted.
        """
        tls = tlsListener(self.keyPath, self.certPath)
        config = self.parse(f'[{tls}, "udp:8443:interface=127.0.0.1"]')
        (service,) = config.services
        self.assertEqual(service.serviceType.transports, {"stream", "datagram"})

    def withWorkers(self, udp: str, extra: str = "", netd: str = "") -> Any:
        """
        @param udp: The TOML of the service's UDP listener.
        @param extra: More service keys.
        @param netd: More C{[netd]} keys.
        @return: The configuration of an http service with an C{ssl:} and
            that listener, with C{workers = 2}.
        """
        tls = tlsListener(self.keyPath, self.certPath)
        return parseConfig(
            serviceTypes(),
            f"[netd]\nworkers = 2\n{netd}\n"
            f'[services.web]\ntype = "http"\nlisten = [{tls}, {udp}]\n{extra}',
            "netd.toml",
        )

    def test_workersNeedOwnSockets(self) -> None:
        """
        With workers, a C{udp:} listener without C{reuse_port}, on an
        ephemeral port, or from systemd would be shared by the workers, so a
        connection's datagrams would reach workers that do not know it: a
        configuration error naming the listener and both fixes.
        """
        for udp in (
            '"udp:8443:interface=127.0.0.1"',
            '{ address = "udp:0:interface=127.0.0.1", reuse_port = true }',
            '"systemd:quic:type=datagram"',
        ):
            with self.assertRaises(ConfigError) as caught:
                self.withWorkers(udp)
            (line,) = caught.exception.lines()
            self.assertIn("services.web.listen", line)
            self.assertIn("with 2 workers", line)
            self.assertIn("reuse_port = true", line)
            self.assertIn("or set workers = 1", line)

    def test_workersWithReusePort(self) -> None:
        """
        C{reuse_port} on a fixed port (on the listener, or for every
        listener in C{[netd]}) gives each worker its own socket: accepted.
        One worker needs nothing.
        """
        self.withWorkers(
            '{ address = "udp:8443:interface=127.0.0.1", reuse_port = true }'
        )
        self.withWorkers('"udp:8443:interface=127.0.0.1"', netd="reuse_port = true")
        tls = tlsListener(self.keyPath, self.certPath)
        self.parse(f'[{tls}, "udp:8443:interface=127.0.0.1"]')

    def test_workersPinned(self) -> None:
        """
        An http service that runs in worker 0 only (it mounts a chat
        service's page) needs no socket per worker.
        """
        self.withWorkers(
            '"udp:8443:interface=127.0.0.1"',
            extra='chat = "chat"\n[services.chat]\ntype = "chat"\n'
            'listen = ["tcp:0:interface=127.0.0.1"]\n',
        )

    def factoryFor(self, listen: str, extra: str = "") -> Any:
        """
        @return: The shared factory of a parsed service.
        """
        (service,) = self.parse(listen, extra).services
        context = makeContext("http")
        context.config = service
        factory = buildStreamFactory(context)
        self.assertIs(
            factory, buildDatagramProtocol(context, service.listeners[1]).factory
        )
        return factory

    def test_altSvc(self) -> None:
        """
        The service's responses carry C{Alt-Svc: h3=":PORT"} for its UDP
        port; the TCP and UDP listeners share one factory.
        """
        tls = tlsListener(self.keyPath, self.certPath)
        factory = self.factoryFor(f'[{tls}, "udp:8443:interface=127.0.0.1"]')
        self.assertIn(b'Alt-Svc: h3=":8443"; ma=86400\r\n', factory.extra)
        self.assertIn((b"alt-svc", b'h3=":8443"; ma=86400'), factory.extraFields)

    def test_altSvcOff(self) -> None:
        """
        C{alt_svc = false}: no C{Alt-Svc}.
        """
        tls = tlsListener(self.keyPath, self.certPath)
        factory = self.factoryFor(
            f'[{tls}, "udp:8443:interface=127.0.0.1"]', "alt_svc = false\n"
        )
        self.assertNotIn(b"Alt-Svc", factory.extra)

    def test_altSvcOwnHeader(self) -> None:
        """
        An C{Alt-Svc} among C{headers} wins over netd's.
        """
        tls = tlsListener(self.keyPath, self.certPath)
        factory = self.factoryFor(
            f'[{tls}, "udp:8443:interface=127.0.0.1"]',
            'headers = { "Alt-Svc" = "clear" }\n',
        )
        self.assertIn(b"Alt-Svc: clear\r\n", factory.extra)
        self.assertNotIn(b"h3=", factory.extra)


class ListenerReloadTests(SynchronousTestCase):
    """
    L{DatagramListenerService.reloadCertificate}: what SIGHUP calls for an
    unchanged service's listeners.
    """

    def test_http3Listener(self) -> None:
        """
        A UDP listener serving HTTP/3 reloads its protocol's certificate.
        """
        server, _, _ = h3Service(self)
        before = server.configuration
        listener = DatagramListenerService(
            server.context, parseListener("udp:0"), server  # type: ignore[arg-type]
        )
        self.assertTrue(listener.reloadCertificate())
        self.assertIsNot(server.configuration, before)

    def test_otherListener(self) -> None:
        """
        A UDP listener of another protocol has no certificate to reload.
        """
        listener = DatagramListenerService(
            makeContext("echo"), parseListener("udp:0"), object()  # type: ignore[arg-type]
        )
        self.assertFalse(listener.reloadCertificate())


class AioquicCanaryTests(SynchronousTestCase):
    """
    The private aioquic API netd's HTTP/3 relies on (pinned: aioquic >=
    1.7.2, < 2): a connection's streams by ID, and whether a stream's sender
    has sent what it was given.
    """

    def test_streamSender(self) -> None:
        """
        C{QuicConnection._streams} maps stream IDs to streams whose
        C{sender.buffer_is_empty} turns false when data is queued and true
        once it is all sent.
        """
        server, clock, _ = h3Service(self)
        client = Client(server, clock)
        client.settle()
        streamId = client.quic.get_next_available_stream_id()
        client.quic.send_stream_data(streamId, b"x" * 100)
        stream = client.quic._streams[streamId]
        self.assertFalse(stream.sender.buffer_is_empty)
        client.quic.datagrams_to_send(now=clock.seconds())
        self.assertTrue(stream.sender.buffer_is_empty)

    def test_controlStreamAndAcknowledged(self) -> None:
        """
        C{H3Connection._local_control_stream_id} is the server's control
        stream (where netd writes GOAWAY); a stream sender's C{is_finished}
        turns true once everything it sent, FIN included, is acknowledged.
        """
        server, clock, _ = h3Service(self)
        client = Client(server, clock)
        client.settle()
        (connection,) = server.protocols
        self.assertEqual(connection.h3._local_control_stream_id % 4, 3)
        streamId = client.request(b"/small.txt")
        client.exchange()
        stream = connection.quic._streams.get(streamId)
        self.assertTrue(stream is None or not stream.sender.is_finished)
        client.settle()
        self.assertIn(streamId, client.ended)
        stream = connection.quic._streams.get(streamId)
        self.assertTrue(stream is None or stream.sender.is_finished)
