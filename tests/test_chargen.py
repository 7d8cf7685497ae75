# -*- test-case-name: tests.test_chargen -*-
"""
Tests for L{netd.services.chargen}.
"""

from __future__ import annotations

import io
import socket

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol, IPullProducer
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from netd.config import parseConfig
from netd.services import serviceTypes
from netd.limits import Limits
from netd.probe import probeConfig
from netd.services.chargen import (
    CHUNK,
    CYCLE,
    Chargen,
    buildStreamFactory,
    datagramAnswer,
    patternLine,
)
from netd.sessions import SessionFactory
from tests.support import (
    GuardedRepliesMixin,
    makeContext,
    smallServiceConfig,
)
from tests.test_endtoend import freePorts
from tests.test_listeners import LOOPBACK, NetdTestMixin, echoConfig, settle, waitFor

# RFC 864's own example, its first two lines.
RFC_LINES = [
    b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefgh",
    b"\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghi",
]


def expectedStream(length: int) -> bytes:
    """
    The RFC 864 pattern, built independently of the code under test.

    @param length: How many bytes.
    @return: The first C{length} bytes of the pattern.
    """
    ring = "".join(map(chr, range(32, 127)))  # the 95 printable characters
    out = []
    line = 0
    while sum(map(len, out)) < length:
        start = (line + 1) % 95  # RFC 864's first line starts at "!"
        out.append(((ring * 2)[start : start + 72] + "\r\n").encode("ascii"))
        line += 1
    return b"".join(out)[:length]


class PatternTests(SynchronousTestCase):
    """
    Tests for the RFC 864 pattern.
    """

    def test_rfcExample(self) -> None:
        """
        The first lines are RFC 864's example, 72 characters and CR LF each.
        """
        self.assertEqual(patternLine(0), RFC_LINES[0] + b"\r\n")
        self.assertEqual(patternLine(1), RFC_LINES[1] + b"\r\n")

    def test_rotation(self) -> None:
        """
        Each line starts one character further along the ring of the 95
        printable characters, space included, and after 95 lines the pattern
        repeats.
        """
        self.assertEqual(len(CYCLE), 95 * 74)
        self.assertEqual(CYCLE, expectedStream(len(CYCLE)))
        self.assertEqual(patternLine(95), patternLine(0))
        self.assertEqual(patternLine(94)[:2], b" !")
        self.assertEqual(patternLine(62)[:1], b"_")
        self.assertEqual(len(CHUNK) % len(CYCLE), 0)


class ChargenTests(SynchronousTestCase):
    """
    Tests for the TCP L{Chargen} protocol.
    """

    def setUp(self) -> None:
        self.transport = StringTransport()
        self.protocol = Chargen()
        self.protocol.makeConnection(self.transport)

    def test_pullProducer(self) -> None:
        """
        The protocol is registered on its transport as a pull producer, and
        writes nothing until the transport asks for more.
        """
        self.assertTrue(IPullProducer.providedBy(self.protocol))
        self.assertIs(self.transport.producer, self.protocol)
        self.assertFalse(self.transport.streaming)
        self.assertEqual(self.transport.value(), b"")

    def test_oneChunkPerResume(self) -> None:
        """
        Each C{resumeProducing} writes exactly one chunk, and the chunks
        together are the pattern, uninterrupted.
        """
        self.protocol.resumeProducing()
        self.assertEqual(len(self.transport.value()), len(CHUNK))
        self.protocol.resumeProducing()
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.value(), expectedStream(3 * len(CHUNK)))

    def test_notAskedNothingMore(self) -> None:
        """
        A transport that does not ask for more (its client is not reading)
        gets nothing more: generation stops at one chunk.
        """
        self.protocol.resumeProducing()
        written = len(self.transport.value())
        self.assertEqual(len(self.transport.value()), written)
        self.assertEqual(self.protocol.produced, written)

    def test_stopProducing(self) -> None:
        """
        After C{stopProducing} (the connection is going), nothing more is
        written.
        """
        self.protocol.stopProducing()
        self.protocol.resumeProducing()
        self.assertEqual(self.transport.value(), b"")

    def test_clientCloseEndsSession(self) -> None:
        """
        When the client closes its side, chargen unregisters and closes,
        instead of generating for a client that has gone.
        """
        self.assertTrue(IHalfCloseableProtocol.providedBy(self.protocol))
        self.protocol.resumeProducing()
        self.protocol.readConnectionLost()
        self.assertIsNone(self.transport.producer)
        self.assertTrue(self.transport.disconnecting)
        self.protocol.resumeProducing()
        self.assertEqual(len(self.transport.value()), len(CHUNK))


class ChargenSessionTests(SynchronousTestCase):
    """
    Chargen inside netd's session layer: the generic limits apply.
    """

    def connect(self, limits: Limits) -> tuple[object, StringTransport, object]:
        """
        @param limits: The session limits.
        @return: The session, its transport and the service context.
        """
        context = makeContext("chargen", limits=limits)
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:19")
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        session = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        return session, transport, context

    def test_maxBytes(self) -> None:
        """
        C{max_bytes} cuts a chargen session, though the client sends nothing:
        the session layer checks output too, and no more than the limit is
        written.
        """
        session, transport, context = self.connect(Limits(maxBytes=200_000))
        chargen = session.wrappedProtocol
        for _ in range(10):
            chargen.resumeProducing()
        self.assertEqual(session.closeReason, "maximum session bytes reached")
        self.assertLessEqual(len(transport.value()), 200_000)
        self.assertEqual(transport.value(), expectedStream(len(transport.value())))

    def test_maxDuration(self) -> None:
        """
        C{max_duration} cuts a chargen session however fast it is read.
        """
        session, transport, context = self.connect(Limits(maxDuration=5))
        for _ in range(4):
            session.wrappedProtocol.resumeProducing()
            context.reactor.advance(1)
        self.assertFalse(transport.disconnecting)
        context.reactor.advance(1)
        self.assertEqual(session.closeReason, "maximum session duration reached")
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(context.counters.bytesOut, 4 * len(CHUNK))


class ChargenDatagramTests(GuardedRepliesMixin, SynchronousTestCase):
    """
    Tests for chargen over UDP and its guard.
    """

    serviceType = "chargen"
    ownPort = 10019

    def test_randomLengthOfPattern(self) -> None:
        """
        Each reply is 0 to 512 characters of the pattern, at most the
        request's length, to the request's source.
        """
        protocol = self.makeProtocol()
        for n in range(200):
            protocol.datagramReceived(b"x" * (600 + n), ("127.0.0.1", 40000 + n))
        written = protocol.transport.written
        self.assertEqual(len(written), 200)
        lengths = {len(data) for data, addr in written}
        self.assertLessEqual(max(lengths), 512)
        self.assertGreater(len(lengths), 50)
        for data, addr in written:
            self.assertIn(data, CYCLE + CYCLE)
        self.assertEqual(written[0][1], ("127.0.0.1", 40000))

    def test_rotatesLikeTheStream(self) -> None:
        """
        Successive replies start on successive lines of the pattern.
        """
        protocol = self.makeProtocol()
        protocol.answer = datagramAnswer(512, lambda low, high: high)
        for _ in range(96):
            protocol.datagramReceived(b"x" * 512, ("127.0.0.1", 40000))
        written = [data for data, addr in protocol.transport.written]
        self.assertEqual(written[0], expectedStream(512))
        self.assertEqual(written[1][:74], patternLine(1))
        self.assertEqual(written[95], written[0])
        self.assertEqual(len(written[94]), 512)

    def test_maxReplyCaps(self) -> None:
        """
        C{udp_max_reply} bounds every reply (and so the amplification).
        """
        protocol = self.makeProtocol(udp_max_reply=10)
        for _ in range(100):
            protocol.datagramReceived(b"x" * 100, ("127.0.0.1", 40000))
        self.assertLessEqual(max(len(d) for d, a in protocol.transport.written), 10)
        protocol = self.makeProtocol(udp_max_reply=0)
        protocol.datagramReceived(b"x" * 100, ("127.0.0.1", 40000))
        self.assertEqual(protocol.transport.written, [(b"", ("127.0.0.1", 40000))])

    def test_neverLongerThanTheRequest(self) -> None:
        """
        A reply is never longer than the request's payload, whatever length
        is drawn: UDP chargen does not amplify (an empty request gets an
        empty reply).
        """
        answer = datagramAnswer(512, lambda low, high: high)
        self.assertEqual(answer(b""), b"")
        self.assertEqual(len(answer(b"x" * 7)), 7)
        self.assertEqual(len(answer(b"x" * 1000)), 512)


class ChargenSocketTests(NetdTestMixin, TestCase):
    """
    Chargen on real sockets on 127.0.0.1.
    """

    def startChargen(self) -> object:
        """
        @return: A running netd with chargen on TCP and UDP port 0.
        """
        return self.startNetd(echoConfig(name="chargen", type="chargen"))

    async def test_tcpPattern(self) -> None:
        """
        A TCP client reads the pattern, uninterrupted; when it closes, the
        session ends.
        """
        service = self.startChargen()
        port = self.portNumber(service, "chargen", "stream")
        wanted = 300_000

        def read() -> bytes:
            with socket.create_connection((LOOPBACK, port), timeout=10) as sock:
                received = b""
                while len(received) < wanted:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    received += chunk
            return received[:wanted]

        received = await deferToThread(read)
        self.assertTrue(received == expectedStream(wanted), "not the pattern")
        listener = self.listenerService(service, "chargen", "stream")
        await waitFor(lambda: not listener.factory.protocols, 10, "session end")

    async def test_clientNeverReads(self) -> None:
        """
        A client that connects and never reads makes netd stop generating:
        after the socket buffers fill, no more is produced, and what netd
        holds is at most one chunk.
        """
        service = self.startChargen()
        port = self.portNumber(service, "chargen", "stream")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.connect((LOOPBACK, port))
        listener = self.listenerService(service, "chargen", "stream")
        await waitFor(lambda: listener.factory.protocols, 5, "session")
        (session,) = list(listener.factory.protocols)
        await settle(0.5)
        produced = session.wrappedProtocol.produced
        await settle(0.5)
        self.assertEqual(session.wrappedProtocol.produced, produced)
        self.assertGreater(produced, 0)
        self.assertLess(produced, 16 << 20)
        transport = session.transport
        buffered = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
        self.assertLessEqual(buffered, len(CHUNK))

    async def test_udp(self) -> None:
        """
        A datagram gets one reply of at most 512 characters of the pattern.
        """
        service = self.startChargen()
        port = self.portNumber(service, "chargen", "datagram")
        client = self.udpClient()
        client.transport.write(b"hi", (LOOPBACK, port))
        await waitFor(lambda: client.received, 5, "UDP chargen reply")
        ((data, addr),) = client.received
        self.assertEqual(addr, (LOOPBACK, port))
        self.assertLessEqual(len(data), 512)
        self.assertIn(data, CYCLE + CYCLE)

    async def test_probe(self) -> None:
        """
        The chargen probe passes against chargen over TCP and UDP and fails
        against a service that is not chargen (daytime).
        """
        (port,) = freePorts(1)
        self.startNetd(smallServiceConfig("chargen", port))
        out = io.StringIO()
        config = parseConfig(serviceTypes(), smallServiceConfig("chargen", port), "<t>")
        failed = await deferToThread(probeConfig, config, out, 2.0)
        self.assertEqual(failed, 0, out.getvalue())
        self.assertIn("sent the pattern", out.getvalue())
        self.assertIn("characters of the pattern", out.getvalue())
        (other,) = freePorts(1)
        self.startNetd(smallServiceConfig("daytime", other))
        wrong = parseConfig(
            serviceTypes(), smallServiceConfig("chargen", other), "<wrong>"
        )
        out = io.StringIO()
        failed = await deferToThread(probeConfig, wrong, out, 2.0)
        self.assertEqual(failed, 2, out.getvalue())
        self.assertIn("not the", out.getvalue())
