# -*- test-case-name: tests.test_discard -*-
"""
Tests for L{netd.services.discard}.
"""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from netd.descriptions import DatagramListener
from netd.services.discard import buildDatagramProtocol, buildStreamFactory
from netd.sessions import SessionFactory
from tests.support import FakeDatagramTransport, makeContext


class DiscardTests(SynchronousTestCase):
    """
    Tests for discard over TCP and UDP.
    """

    def test_streamSendsNothingAndCounts(self) -> None:
        """
        Over TCP nothing is ever sent back, and the bytes received are
        counted for the session and the service.
        """
        context = makeContext("discard")
        factory = SessionFactory(buildStreamFactory(context), context, "tcp:9")
        peer = IPv4Address("TCP", "127.0.0.1", 40000)
        session = factory.buildProtocol(peer)
        transport = StringTransport(peerAddress=peer)
        session.makeConnection(transport)
        session.dataReceived(b"a" * 1000)
        session.dataReceived(b"b" * 24)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(session.bytesIn, 1024)
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(context.counters.bytesIn, 1024)
        self.assertEqual(context.counters.bytesOut, 0)

    def test_datagramsCountedNeverAnswered(self) -> None:
        """
        Over UDP no datagram is answered; each is counted.
        """
        context = makeContext("discard")
        protocol = buildDatagramProtocol(
            context, DatagramListener("udp:9", 9, "127.0.0.1")
        )
        protocol.transport = FakeDatagramTransport()
        for size in (1, 100, 1400):
            protocol.datagramReceived(b"x" * size, ("127.0.0.1", 40000))
        self.assertEqual(protocol.transport.written, [])
        self.assertEqual(context.counters.datagramsIn, 3)
        self.assertEqual(context.counters.datagramBytesIn, 1501)
