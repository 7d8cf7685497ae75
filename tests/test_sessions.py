# -*- test-case-name: tests.test_sessions -*-
"""
Tests for L{netd.sessions}: admission, limits and session events.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger
from twisted.protocols import wire
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netd.limits import Limits
from netd.services.echo import Echo
from netd.sessions import Session, SessionFactory, describePeer
from netd.servicetype import ServiceContext
from netd.transport import WriteThroughServer
from tests.support import makeContext
from tests.test_transport import FakeSocket


class SessionTestCase(SynchronousTestCase):
    """
    Builds sessions around echo on a fake clock and captures their events.
    """

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.patch(Session, "_log", Logger(observer=self.events.append))

    def makeFactory(
        self, limits: Limits | None = None, protocol: type = Echo
    ) -> SessionFactory:
        """
        @param limits: The service's limits.
        @param protocol: The service's protocol class.
        @return: A L{SessionFactory} for a test service; its context is
            C{self.context}.
        """
        self.context: ServiceContext = makeContext("echo", limits=limits)
        wrapped = Factory.forProtocol(protocol)
        return SessionFactory(wrapped, self.context, "tcp:7")

    def connect(
        self, factory: SessionFactory, host: str = "192.0.2.1", port: int = 40000
    ) -> tuple[Session, StringTransport]:
        """
        Open a session from C{host}.

        @return: The session and its transport.
        @raise AssertionError: If the session is refused.
        """
        peer = IPv4Address("TCP", host, port)
        session = factory.buildProtocol(peer)
        assert session is not None, "refused"
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        return session, transport


class AdmissionTests(SessionTestCase):
    """
    Tests for L{SessionFactory.buildProtocol}.
    """

    def test_perPeerLimit(self) -> None:
        """
        Past C{max_sessions_per_peer} sessions from one address, new ones
        are refused (L{None}: Twisted closes the socket at once); other
        addresses still get in; closing one lets the next one in.
        """
        factory = self.makeFactory(Limits(maxSessionsPerPeer=2))
        first, _ = self.connect(factory)
        self.connect(factory)
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.connect(factory, host="192.0.2.2")
        first.connectionLost(Failure(ConnectionDone()))
        self.connect(factory)
        self.assertEqual(
            dict(self.context.policy.refusals.totals),
            {"address at its limit of 2 sessions": 1},
        )

    def test_serviceLimit(self) -> None:
        """
        Past C{max_sessions}, every new session is refused.
        """
        factory = self.makeFactory(Limits(maxSessions=2))
        self.connect(factory, host="192.0.2.1")
        self.connect(factory, host="192.0.2.2")
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.3", 1)))
        self.assertEqual(self.context.policy.active, 2)

    def test_refusalsLoggedWithoutFlooding(self) -> None:
        """
        A thousand refusals produce one immediate event and one summary per
        interval, not a thousand events.
        """
        factory = self.makeFactory(Limits(maxSessions=1))
        self.connect(factory)
        refusalEvents: list[dict[str, Any]] = []
        self.patch(
            type(self.context.policy.refusals),
            "_log",
            Logger(observer=refusalEvents.append),
        )
        for port in range(1000):
            factory.buildProtocol(IPv4Address("TCP", "192.0.2.9", port))
        self.assertEqual(len(refusalEvents), 1)
        self.context.reactor.advance(10)
        self.assertEqual(len(refusalEvents), 2)
        self.assertEqual(refusalEvents[1]["count"], 999)
        self.context.reactor.advance(10)
        self.assertEqual(len(refusalEvents), 2)

    def test_wrappedFactoryRefuses(self) -> None:
        """
        If the service's own factory builds no protocol, the admission is
        released again.
        """
        factory = self.makeFactory()
        factory.wrappedFactory.buildProtocol = lambda addr: None
        self.assertIsNone(factory.buildProtocol(IPv4Address("TCP", "192.0.2.1", 1)))
        self.assertEqual(self.context.policy.active, 0)


class SessionLimitTests(SessionTestCase):
    """
    Tests for the limits a L{Session} enforces and the event it logs.
    """

    def test_idleTimeout(self) -> None:
        """
        A session with no traffic in either direction for C{idle_timeout}
        seconds is aborted, at most a quarter of the timeout later; traffic
        in or out restarts the count.
        """
        factory = self.makeFactory(Limits(idleTimeout=10))
        session, transport = self.connect(factory)
        clock = self.context.reactor
        clock.pump([0.5] * 18)
        session.dataReceived(b"x")
        clock.pump([0.5] * 18)
        session.write(b"y")
        clock.pump([0.5] * 20)
        self.assertFalse(transport.disconnecting)
        clock.pump([0.5] * 5)
        self.assertTrue(transport.disconnected)
        self.assertEqual(session.closeReason, "idle timeout")

    def test_idleTimeoutPrecision(self) -> None:
        """
        An idle session is closed no earlier than C{idle_timeout} and no
        later than 1.25 times it after its last traffic.
        """
        factory = self.makeFactory(Limits(idleTimeout=8))
        session, transport = self.connect(factory)
        clock = self.context.reactor
        clock.pump([0.1] * 13)
        session.dataReceived(b"x")
        clock.pump([0.1] * 79)
        self.assertFalse(transport.disconnecting)
        clock.pump([0.1] * 21)
        self.assertTrue(transport.disconnected)

    def test_noIdleTimeout(self) -> None:
        """
        C{idle_timeout = 0} leaves an idle session open and sets no timer.
        """
        factory = self.makeFactory(Limits(idleTimeout=0))
        session, transport = self.connect(factory)
        self.assertEqual(self.context.reactor.getDelayedCalls(), [])
        self.context.reactor.advance(10**6)
        self.assertFalse(transport.disconnecting)

    def test_maxDuration(self) -> None:
        """
        A session is aborted after C{max_duration} seconds, busy or not.
        """
        factory = self.makeFactory(Limits(idleTimeout=0, maxDuration=30))
        session, transport = self.connect(factory)
        for _ in range(29):
            self.context.reactor.advance(1)
            session.dataReceived(b"x")
        self.assertFalse(transport.disconnecting)
        self.context.reactor.advance(1)
        self.assertTrue(transport.disconnected)
        self.assertEqual(session.closeReason, "maximum session duration reached")

    def test_maxBytes(self) -> None:
        """
        A session that carries more than C{max_bytes} (in plus out) is
        aborted, and the excess is not passed to the service.
        """
        factory = self.makeFactory(Limits(maxBytes=100))
        session, transport = self.connect(factory)
        session.dataReceived(b"x" * 50)
        self.assertEqual(transport.value(), b"x" * 50)
        session.dataReceived(b"y" * 10)
        self.assertTrue(transport.disconnected)
        self.assertEqual(transport.value(), b"x" * 50)
        self.assertEqual(session.closeReason, "maximum session bytes reached")

    def test_sessionEvent(self) -> None:
        """
        One structured event is logged when a session ends, with service,
        listener, peer, duration, bytes and reason; the timers are
        cancelled and the service counters updated.
        """
        factory = self.makeFactory(Limits(idleTimeout=10, maxDuration=60))
        session, transport = self.connect(factory)
        self.context.reactor.advance(2.5)
        session.dataReceived(b"hello")
        session.connectionLost(Failure(ConnectionDone()))
        [event] = self.events
        self.assertEqual(event["service"], "echo")
        self.assertEqual(event["listener"], "tcp:7")
        self.assertEqual(event["peer"], "192.0.2.1:40000")
        self.assertEqual(event["duration"], 2.5)
        self.assertEqual((event["bytesIn"], event["bytesOut"]), (5, 5))
        self.assertEqual(event["reason"], "closed")
        self.assertEqual(self.context.reactor.getDelayedCalls(), [])
        self.assertEqual(self.context.counters.sessions, 1)
        self.assertEqual(self.context.counters.bytesIn, 5)
        self.assertEqual(self.context.policy.active, 0)

    def test_sessionEventLostReason(self) -> None:
        """
        A connection lost with an error reports the error as its reason.
        """
        factory = self.makeFactory()
        session, _ = self.connect(factory)
        session.connectionLost(Failure(ConnectionLost("reset by peer")))
        self.assertIn("reset by peer", self.events[0]["reason"])

    def test_halfCloseOfPlainProtocol(self) -> None:
        """
        For a protocol that does not handle half-close, the end of input
        closes the connection gracefully; a half-close aware protocol is
        told instead.
        """
        factory = self.makeFactory(protocol=wire.Discard)
        session, transport = self.connect(factory)
        session.readConnectionLost()
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.disconnected)

    def test_writeSequenceCounted(self) -> None:
        """
        Bytes written with C{writeSequence} are counted too.
        """
        factory = self.makeFactory(protocol=Protocol)
        session, transport = self.connect(factory)
        session.writeSequence([b"ab", b"cde"])
        self.assertEqual(session.bytesOut, 5)
        self.assertEqual(transport.value(), b"abcde")


class DescribePeerTests(SynchronousTestCase):
    """
    Tests for L{describePeer}.
    """

    def test_addresses(self) -> None:
        """
        IPv4 peers are C{host:port}, IPv6 ones C{[host]:port}, UNIX ones
        C{unix:path}.
        """
        self.assertEqual(
            describePeer(IPv4Address("TCP", "127.0.0.1", 7)), "127.0.0.1:7"
        )
        self.assertEqual(describePeer(IPv6Address("TCP", "::1", 7)), "[::1]:7")
        self.assertEqual(
            describePeer(UNIXAddress(b"/run/netd.sock")), "unix:/run/netd.sock"
        )
        self.assertEqual(describePeer(UNIXAddress(None)), "unix:unnamed")


class DirectSessionTests(SessionTestCase):
    """
    On netd's own TCP transport, a session without a byte limit steps out
    of the data path and takes its counts from the transport.
    """

    def connectOver(
        self, factory: SessionFactory
    ) -> tuple[Session, WriteThroughServer, FakeSocket]:
        """
        Open a session over a L{WriteThroughServer} on a fake socket.

        @return: The session, its transport and the socket.
        """
        peer = IPv4Address("TCP", "192.0.2.1", 40000)
        session = factory.buildProtocol(peer)
        assert session is not None
        skt = FakeSocket()
        transport = WriteThroughServer(
            skt, session, ("192.0.2.1", 40000), None, 0, MemoryReactorClock()  # type: ignore[arg-type]
        )
        session.makeConnection(transport)
        return session, transport, skt

    def test_chunksSkipTheSession(self) -> None:
        """
        The transport hands chunks straight to the service's protocol, and
        the protocol's writes go straight to the transport; the session
        still reports the bytes and logs its event.
        """
        session, transport, skt = self.connectOver(self.makeFactory())
        echo = session.wrappedProtocol
        self.assertEqual(echo.transport.write, transport.write)
        # netd's echo binds its dataReceived to its transport's write in
        # connectionMade; the session picks that up, so a chunk goes from
        # the socket to write with no call in between.
        self.assertEqual(transport.protocol.dataReceived, transport.write)
        self.assertEqual(transport._deliver, transport.write)
        skt.incoming = [b"hello", b"there!"]
        transport.doRead()
        transport.doRead()
        self.assertEqual(b"".join(skt.sent), b"hellothere!")
        self.assertEqual((session.bytesIn, session.bytesOut), (11, 11))
        session.connectionLost(Failure(ConnectionDone()))
        [event] = self.events
        self.assertEqual((event["bytesIn"], event["bytesOut"]), (11, 11))
        self.assertEqual(self.context.counters.bytesOut, 11)

    def test_plainProtocolIsCalledDirectly(self) -> None:
        """
        A protocol that keeps its own C{dataReceived} gets chunks from the
        transport with no call through the session.
        """
        session, transport, skt = self.connectOver(self.makeFactory(protocol=wire.Echo))
        echo = session.wrappedProtocol
        self.assertEqual(transport.protocol.dataReceived, echo.dataReceived)
        skt.incoming = [b"hi"]
        transport.doRead()
        self.assertEqual(skt.sent, [b"hi"])

    def test_bytesSentAroundTheTransportAreAdded(self) -> None:
        """
        Bytes a protocol sends itself (C{sendfile}) and adds to
        C{bytesOut} are counted with the transport's.
        """
        session, transport, skt = self.connectOver(self.makeFactory())
        session.wrappedProtocol.transport.write(b"head")
        session.bytesOut += 1000
        self.assertEqual(session.bytesOut, 1004)
        session.wrappedProtocol.transport.writeSequence([b"a", b"b"])
        self.assertEqual(session.bytesOut, 1006)

    def test_idleTimeoutSeesTheTransportsCounts(self) -> None:
        """
        The idle check reads the transport's counts: traffic keeps a
        session open, silence closes it.
        """
        session, transport, skt = self.connectOver(
            self.makeFactory(Limits(idleTimeout=8))
        )
        clock = self.context.reactor
        for _ in range(6):
            clock.advance(2)
            skt.incoming = [b"x"]
            transport.doRead()
        self.assertIsNone(session.closeReason)
        for _ in range(6):
            clock.advance(2)
        self.assertEqual(session.closeReason, "idle timeout")

    def test_byteLimitKeepsTheSessionInThePath(self) -> None:
        """
        With C{max_bytes}, every chunk goes through the session, which
        enforces the limit.
        """
        session, transport, skt = self.connectOver(
            self.makeFactory(Limits(maxBytes=10))
        )
        self.assertEqual(transport.protocol.dataReceived, session.dataReceived)
        self.assertEqual(transport._deliver, session.dataReceived)
        skt.incoming = [b"12345", b"678901"]
        transport.doRead()
        transport.doRead()
        self.assertEqual(session.closeReason, "maximum session bytes reached")
        self.assertEqual(b"".join(skt.sent), b"12345")


class DescribeEndTests(SynchronousTestCase):
    """
    L{describeEnd} says in words why a connection ended.
    """

    def test_words(self) -> None:
        """
        Twisted's C{non-clean fashion} becomes what happened; a clean close is
        C{closed}; an abort by netd says so.
        """
        from twisted.internet.error import ConnectionAborted, ConnectionDone

        from netd.sessions import describeEnd

        self.assertEqual(describeEnd(Failure(ConnectionDone())), "closed")
        self.assertEqual(describeEnd(Failure(ConnectionAborted())), "aborted by netd")
        self.assertEqual(
            describeEnd(Failure(ConnectionLost())),
            "lost: the peer went away without closing",
        )
        self.assertNotIn("non-clean", describeEnd(Failure(ConnectionLost())))
